//! Policy files in oslo.policy's syntax (YAML or JSON), as Nova operators write them.
//!
//! The grammar is oslo.policy's `_parser`: checks `rule:<name>`, `role:<name>`, `<attribute>:<value>` (the
//! value a literal or `%(<target field>)s`), `is_admin:True`, `@`, `!`, joined by `not`, `and`, `or` (in that
//! order of binding) and parentheses; an empty rule allows everyone. kps's own terms (`admin`, `owner`,
//! `creator`, `project_member`, `any`, `none`) are accepted as checks too, so the defaults read the same in
//! both formats. Every entry of a file is a named rule as well; `rule:` references are inlined when the file
//! is loaded (an undefined name or a cycle is refused then, not at request time). Nova's base rules
//! (`context_is_admin`, `admin_api`, `project_member_api`, …) are defined by default, so Nova's keypair
//! rules load unmodified. This module only parses text into the `Expr` its parent evaluates.

use std::collections::BTreeMap;

use super::{Expr, Operand, Term};

/// Nova's base rules (nova/policies/base.py) with their descriptions: `rule:` may name them, a file may
/// override them. `system_*` are the pre-2023 names; no kps caller has a system scope, so they never hold.
pub const NAMED_DEFAULTS: [(&str, &str, &str); 13] = [
    ("context_is_admin", "role:admin", "Decides what is required for the 'is_admin:True' check to succeed."),
    ("admin_or_owner", "is_admin:True or project_id:%(project_id)s", "Default rule for most non-Admin APIs."),
    ("admin_api", "is_admin:True", "Default rule for most Admin APIs."),
    (
        "project_manager_api",
        "role:manager and project_id:%(project_id)s",
        "Default rule for Project level management APIs.",
    ),
    (
        "project_member_api",
        "role:member and project_id:%(project_id)s",
        "Default rule for Project level non admin APIs.",
    ),
    (
        "project_reader_api",
        "role:reader and project_id:%(project_id)s",
        "Default rule for Project level read only APIs.",
    ),
    ("service_api", "role:service", "Default rule for service-to-service APIs."),
    (
        "project_manager_or_admin",
        "rule:project_manager_api or rule:context_is_admin",
        "Default rule for Project Manager or admin APIs.",
    ),
    (
        "project_member_or_admin",
        "rule:project_member_api or rule:context_is_admin",
        "Default rule for Project Member or admin APIs.",
    ),
    (
        "project_reader_or_admin",
        "rule:project_reader_api or rule:context_is_admin",
        "Default rule for Project reader or admin APIs.",
    ),
    ("service_or_admin", "rule:service_api or rule:context_is_admin", "Default rule for service or admin APIs."),
    (
        "system_admin_api",
        "role:admin and system_scope:all",
        "Default rule for System Admin APIs (older Nova releases).",
    ),
    (
        "system_reader_api",
        "role:reader and system_scope:all",
        "Default rule for System level read only APIs (older Nova releases).",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    Open,
    Close,
    And,
    Or,
    Not,
    Check(&'a str),
}

/// oslo.policy splits on whitespace and peels parentheses off the ends of each word.
fn tokenize(text: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    for word in text.split_whitespace() {
        let mut rest = word;
        while let Some(inner) = rest.strip_prefix('(') {
            tokens.push(Token::Open);
            rest = inner;
        }
        let mut closes = 0;
        while let Some(inner) = rest.strip_suffix(')') {
            closes += 1;
            rest = inner;
        }
        if !rest.is_empty() {
            tokens.push(match rest.to_ascii_lowercase().as_str() {
                "and" => Token::And,
                "or" => Token::Or,
                "not" => Token::Not,
                _ => Token::Check(rest),
            });
        }
        tokens.extend(std::iter::repeat_n(Token::Close, closes));
    }
    tokens
}

fn describe(token: Option<&Token<'_>>) -> String {
    match token {
        None => "the end of the rule".into(),
        Some(Token::Open) => "`(`".into(),
        Some(Token::Close) => "`)`".into(),
        Some(Token::And) => "`and`".into(),
        Some(Token::Or) => "`or`".into(),
        Some(Token::Not) => "`not`".into(),
        Some(Token::Check(word)) => format!("`{word}`"),
    }
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    at: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Token<'a>> {
        self.tokens.get(self.at)
    }

    fn or_expr(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.and_expr()?];
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            items.push(self.and_expr()?);
        }
        Ok(Expr::any_of(items))
    }

    fn and_expr(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.not_expr()?];
        while self.peek() == Some(&Token::And) {
            self.at += 1;
            items.push(self.not_expr()?);
        }
        Ok(Expr::all_of(items))
    }

    fn not_expr(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Token::Not) {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.not_expr()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, String> {
        let token = self.peek().cloned();
        self.at += 1;
        match token {
            Some(Token::Open) => {
                let inner = self.or_expr()?;
                if self.peek() != Some(&Token::Close) {
                    return Err(format!("expected `)`, found {}", describe(self.peek())));
                }
                self.at += 1;
                Ok(inner)
            }
            Some(Token::Check(word)) => parse_check(word),
            other => Err(format!("expected a check, found {}", describe(other.as_ref()))),
        }
    }
}

/// Parses one rule; the result may still hold `rule:` references (`Expr::Named`), which `resolve` inlines.
pub(super) fn parse(text: &str) -> Result<Expr, String> {
    let mut parser = Parser { tokens: tokenize(text), at: 0 };
    if parser.tokens.is_empty() {
        // oslo.policy: an empty rule is "always allow".
        return Ok(Expr::Term(Term::Any));
    }
    let expr = parser.or_expr()?;
    match parser.peek() {
        None => Ok(expr),
        Some(token) => Err(format!("unexpected {} after a complete rule", describe(Some(token)))),
    }
}

fn parse_check(word: &str) -> Result<Expr, String> {
    let term = match word {
        "@" | "any" => Term::Any,
        "!" | "none" => Term::Nobody,
        "admin" => Term::Admin,
        "owner" => Term::Owner,
        "creator" => Term::Creator,
        "project_member" => Term::ProjectMember,
        _ => {
            let Some((kind, value)) = word.split_once(':') else {
                return Err(format!(
                    "unknown check `{word}` (checks: rule:<name>, role:<name>, <attribute>:<value>, @, !, and kps's \
                     admin, owner, creator, project_member)"
                ));
            };
            if value.is_empty() {
                return Err(format!("`{kind}:` needs a value"));
            }
            match kind {
                "rule" => return Ok(Expr::Named(value.to_owned())),
                // Nova's `is_admin` credential is the outcome of `context_is_admin`.
                "is_admin" if value == "True" => return Ok(Expr::Named("context_is_admin".into())),
                "is_admin" if value == "False" => {
                    return Ok(Expr::Not(Box::new(Expr::Named("context_is_admin".into()))));
                }
                "is_admin" => Term::Nobody,
                "role" => Term::RoleIgnoringCase(value.to_owned()),
                "http" | "https" => return Err(format!("`{kind}:` checks are not supported")),
                attribute => Term::Match { attribute: attribute.to_owned(), value: parse_operand(value) },
            }
        }
    };
    Ok(Expr::Term(term))
}

fn parse_operand(value: &str) -> Operand {
    match value.strip_prefix("%(").and_then(|rest| rest.strip_suffix(")s")) {
        Some(field) => Operand::Target(field.to_owned()),
        None => Operand::Literal(value.to_owned()),
    }
}

/// Inlines every `rule:` reference of `expr` from `rules`; `stack` holds the names being resolved.
pub(super) fn resolve(expr: &Expr, rules: &BTreeMap<String, Expr>, stack: &mut Vec<String>) -> Result<Expr, String> {
    Ok(match expr {
        Expr::Term(term) => Expr::Term(term.clone()),
        Expr::Not(inner) => Expr::Not(Box::new(resolve(inner, rules, stack)?)),
        Expr::All(items) => Expr::All(items.iter().map(|item| resolve(item, rules, stack)).collect::<Result<_, _>>()?),
        Expr::Any(items) => Expr::Any(items.iter().map(|item| resolve(item, rules, stack)).collect::<Result<_, _>>()?),
        Expr::Named(name) => {
            if stack.contains(name) {
                return Err(format!("rule:{name} refers to itself ({} -> {name})", stack.join(" -> ")));
            }
            let Some(body) = rules.get(name) else {
                return Err(format!("rule:{name} is not defined, neither in the file nor among the defaults"));
            };
            stack.push(name.clone());
            let resolved = resolve(body, rules, stack)?;
            stack.pop();
            resolved
        }
    })
}

/// The entries of a YAML policy file: a mapping of strings (an empty file, or one of comments only, is
/// empty). `Err(Some(name))` names an entry whose value is not a string.
pub(super) fn yaml_entries(text: &str) -> Result<Vec<(String, String)>, Result<String, String>> {
    use yaml_rust2::{Yaml, YamlLoader};
    let documents = YamlLoader::load_from_str(text).map_err(|e| Err(e.to_string()))?;
    let Some(document) = documents.into_iter().next() else {
        return Ok(Vec::new());
    };
    let map = match document {
        Yaml::Hash(map) => map,
        Yaml::Null => return Ok(Vec::new()),
        _ => return Err(Err("the file must be a mapping of \"action or rule name\": \"rule\"".into())),
    };
    let mut entries = Vec::with_capacity(map.len());
    for (key, value) in map {
        let Yaml::String(name) = key else {
            return Err(Err(format!("the name {key:?} is not a string")));
        };
        let Yaml::String(rule) = value else {
            return Err(Ok(name));
        };
        entries.push((name, rule));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_parentheses_and_not_bind_as_oslo_does() {
        let parsed = parse("not (role:a or role:b) and @").expect("parses");
        let expected = Expr::All(vec![
            Expr::Not(Box::new(Expr::Any(vec![
                Expr::Term(Term::RoleIgnoringCase("a".into())),
                Expr::Term(Term::RoleIgnoringCase("b".into())),
            ]))),
            Expr::Term(Term::Any),
        ]);
        assert_eq!(parsed, expected);
        assert_eq!(parse("((@))").expect("parses"), Expr::Term(Term::Any));
        assert_eq!(parse("").expect("empty"), Expr::Term(Term::Any));
    }

    #[test]
    fn malformed_rules_say_where() {
        for (rule, reason) in [
            ("(role:a", "expected `)`, found the end of the rule"),
            ("role:a)", "unexpected `)`"),
            ("role:a or", "expected a check, found the end of the rule"),
            ("and role:a", "expected a check, found `and`"),
            ("role:a role:b", "unexpected `role:b`"),
            ("bogus", "unknown check `bogus`"),
            ("role:", "`role:` needs a value"),
            ("http://example.com", "not supported"),
        ] {
            let error = parse(rule).expect_err(rule);
            assert!(error.contains(reason), "{rule:?}: {error}");
        }
    }

    #[test]
    fn references_are_inlined_and_cycles_refused() {
        let mut rules = BTreeMap::new();
        rules.insert("a".to_owned(), parse("rule:b").expect("a"));
        rules.insert("b".to_owned(), parse("role:x").expect("b"));
        rules.insert("loop".to_owned(), parse("rule:loop2").expect("loop"));
        rules.insert("loop2".to_owned(), parse("@ and rule:loop").expect("loop2"));
        let resolved = resolve(&parse("rule:a").expect("ref"), &rules, &mut Vec::new()).expect("resolves");
        assert_eq!(resolved, Expr::Term(Term::RoleIgnoringCase("x".into())));
        let cycle = resolve(&parse("rule:loop").expect("ref"), &rules, &mut Vec::new()).expect_err("cycle");
        assert!(cycle.contains("refers to itself"), "{cycle}");
        let missing = resolve(&parse("rule:nope").expect("ref"), &rules, &mut Vec::new()).expect_err("missing");
        assert!(missing.contains("rule:nope is not defined"), "{missing}");
    }

    #[test]
    fn yaml_entries_are_strings() {
        assert_eq!(yaml_entries("# only comments\n").expect("empty"), Vec::new());
        assert_eq!(yaml_entries("\"a:b\": \"@\"\n").expect("one"), vec![("a:b".to_owned(), "@".to_owned())]);
        assert_eq!(yaml_entries("\"a:b\": true\n").expect_err("bool"), Ok("a:b".to_owned()));
        assert!(yaml_entries("- a\n").is_err());
        assert!(yaml_entries("\"a\": [\n").is_err());
    }
}
