//! Policy: whether a caller may perform an action on a target (spec/interface.md §Policy).
//!
//! Every route has an `Action`; its `Rule` comes from the built-in default table, overridden per action by
//! `policy.file`. The file is either kps's original TOML (a rule is an `or` of `and`s of kps's terms, `and`
//! binding tighter, no parentheses) or an oslo.policy file in YAML or JSON (`oslo`: Nova's grammar, named
//! rules, `not` and parentheses). Both parse into one expression tree, evaluated here.
//!
//! Policy runs twice for a route that names a stored key pair (errors.md §4 step 8 and step 10): first on
//! what the request names (the target user), where terms about the record (`creator`, `project_member`, a
//! `domain` key's project for `owner`) are *undecided*; then, only if that left the decision open, on the
//! loaded record. The evaluation is three-valued (Kleene logic), so an early `Allow` or `Deny` is final
//! whatever the record turns out to hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::auth::Caller;
use super::error::ApiError;
use crate::model::{Keypair, Scope};

pub mod oslo;

/// A policy action: the Nova and V3 route actions and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    NovaCreate,
    NovaIndex,
    NovaShow,
    NovaDelete,
    Create,
    List,
    Show,
    Update,
    Delete,
    ImportPrivateKey,
    ExportPrivateKey,
    ClearPrivateKey,
    BatchImport,
    BatchExport,
    AdminBackup,
    AdminRewrap,
}

impl Action {
    pub const ALL: [Action; 16] = [
        Self::NovaCreate,
        Self::NovaIndex,
        Self::NovaShow,
        Self::NovaDelete,
        Self::Create,
        Self::List,
        Self::Show,
        Self::Update,
        Self::Delete,
        Self::ImportPrivateKey,
        Self::ExportPrivateKey,
        Self::ClearPrivateKey,
        Self::BatchImport,
        Self::BatchExport,
        Self::AdminBackup,
        Self::AdminRewrap,
    ];

    /// The name used in `policy.file` and in 403 messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::NovaCreate => "os_compute_api:os-keypairs:create",
            Self::NovaIndex => "os_compute_api:os-keypairs:index",
            Self::NovaShow => "os_compute_api:os-keypairs:show",
            Self::NovaDelete => "os_compute_api:os-keypairs:delete",
            Self::Create => "kps:keypairs:create",
            Self::List => "kps:keypairs:list",
            Self::Show => "kps:keypairs:show",
            Self::Update => "kps:keypairs:update",
            Self::Delete => "kps:keypairs:delete",
            Self::ImportPrivateKey => "kps:keypairs:import_private_key",
            Self::ExportPrivateKey => "kps:keypairs:export_private_key",
            Self::ClearPrivateKey => "kps:keypairs:clear_private_key",
            Self::BatchImport => "kps:keypairs:batch_import",
            Self::BatchExport => "kps:keypairs:batch_export",
            Self::AdminBackup => "kps:admin:backup",
            Self::AdminRewrap => "kps:admin:rewrap",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.name() == name)
    }

    /// What the action does, for the policy sample (which adds its routes from the route table).
    pub fn description(self) -> &'static str {
        match self {
            Self::NovaCreate => "Create or import a key pair (Nova)",
            Self::NovaIndex => "List a user's key pairs (Nova)",
            Self::NovaShow => "Show a key pair (Nova)",
            Self::NovaDelete => "Delete a key pair (Nova)",
            Self::Create => "Create or import a key pair (V3)",
            Self::List => "List key pairs (V3)",
            Self::Show => "Show a key pair (V3)",
            Self::Update => "Update a key pair's description (V3)",
            Self::Delete => "Delete a key pair (V3)",
            Self::ImportPrivateKey => "Escrow a key pair's private key (V3)",
            Self::ExportPrivateKey => "Reveal an escrowed private key (V3)",
            Self::ClearPrivateKey => "Delete an escrowed private key (V3)",
            Self::BatchImport => "Import several key pairs at once (V3)",
            Self::BatchExport => "Export several private keys at once (V3)",
            Self::AdminBackup => "Export every record (admin API)",
            Self::AdminRewrap => "Re-seal every escrowed private key (admin API)",
        }
    }

    /// The built-in rule (interface.md, "Default policy").
    fn default_rule(self) -> &'static str {
        match self {
            Self::ImportPrivateKey | Self::ExportPrivateKey | Self::ClearPrivateKey | Self::BatchExport => {
                "admin or creator"
            }
            Self::AdminBackup | Self::AdminRewrap => "admin",
            _ => "admin or owner",
        }
    }
}

/// The Huawei ECS action names accepted as aliases in `policy.file`, and the actions each one sets.
const ALIASES: [(&str, [Action; 2]); 4] = [
    ("ecs:serverKeypairs:create", [Action::NovaCreate, Action::Create]),
    ("ecs:serverKeypairs:list", [Action::NovaIndex, Action::List]),
    ("ecs:serverKeypairs:get", [Action::NovaShow, Action::Show]),
    ("ecs:serverKeypairs:delete", [Action::NovaDelete, Action::Delete]),
];

/// One check of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Admin,
    Owner,
    Creator,
    Role(String),
    /// oslo.policy's `role:<name>`, which compares names ignoring case.
    RoleIgnoringCase(String),
    ProjectMember,
    Any,
    Nobody,
    /// oslo.policy's generic check `<attribute>:<value>`: the caller's `user_id`, `project_id` or `roles`
    /// against a literal or a target field; any other attribute (`system_scope`, `domain_id`) is not one a
    /// kps caller has, so the check does not hold.
    Match {
        attribute: String,
        value: Operand,
    },
}

/// The right side of a generic check.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Operand {
    Literal(String),
    /// `%(<field>)s`: `user_id` (the target user: the key pair's owner, or the user the request names) or
    /// `project_id` (the key pair's project; the caller's own when no key pair is involved, as Nova's
    /// default target has it). Other fields are absent: the check does not hold.
    Target(String),
}

/// A rule's expression; `Named` (`rule:<name>`) only exists between parsing and `oslo::resolve`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Term(Term),
    Not(Box<Expr>),
    All(Vec<Expr>),
    Any(Vec<Expr>),
    Named(String),
}

impl Expr {
    fn all_of(mut items: Vec<Expr>) -> Self {
        if items.len() == 1 { items.remove(0) } else { Self::All(items) }
    }

    fn any_of(mut items: Vec<Expr>) -> Self {
        if items.len() == 1 { items.remove(0) } else { Self::Any(items) }
    }

    /// Kleene logic: `None` = undecided until the key pair is known.
    fn holds(&self, caller: &Caller, target: &Target<'_>) -> Option<bool> {
        match self {
            Self::Term(term) => term.holds(caller, target),
            Self::Not(inner) => inner.holds(caller, target).map(|held| !held),
            Self::All(items) => {
                let mut outcome = Some(true);
                for item in items {
                    match item.holds(caller, target) {
                        Some(false) => return Some(false),
                        None => outcome = None,
                        Some(true) => {}
                    }
                }
                outcome
            }
            Self::Any(items) => {
                let mut outcome = Some(false);
                for item in items {
                    match item.holds(caller, target) {
                        Some(true) => return Some(true),
                        None => outcome = None,
                        Some(false) => {}
                    }
                }
                outcome
            }
            // Inlined when the file is loaded; an unresolved reference allows nothing.
            Self::Named(_) => Some(false),
        }
    }
}

/// A parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    expr: Expr,
}

impl Rule {
    /// A rule in oslo.policy's grammar that names no other rule (`rule:` needs a file: `Policy::from_oslo`).
    pub fn parse_oslo(text: &str) -> Result<Self, String> {
        let expr = oslo::parse(text)?;
        let expr = oslo::resolve(&expr, &BTreeMap::new(), &mut Vec::new())?;
        Ok(Self { expr })
    }
}

impl std::str::FromStr for Rule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut any_of: Vec<Vec<Term>> = vec![Vec::new()];
        let mut expect_term = true;
        let mut previous = "";
        for word in text.split_whitespace() {
            if expect_term {
                let current = any_of.last_mut().expect("any_of is never empty");
                current.push(parse_term(word)?);
            } else {
                match word {
                    "and" => {}
                    "or" => any_of.push(Vec::new()),
                    _ => return Err(format!("expected `and` or `or` after `{previous}`, found `{word}`")),
                }
            }
            expect_term = !expect_term;
            previous = word;
        }
        if previous.is_empty() {
            return Err("the rule is empty (use `any` to allow everyone, `none` to allow no one)".into());
        }
        if expect_term {
            return Err(format!("the rule ends with `{previous}`: a term must follow it"));
        }
        let any_of = any_of.into_iter().map(|all_of| Expr::all_of(all_of.into_iter().map(Expr::Term).collect()));
        Ok(Self { expr: Expr::any_of(any_of.collect()) })
    }
}

fn parse_term(word: &str) -> Result<Term, String> {
    Ok(match word {
        "admin" => Term::Admin,
        "owner" => Term::Owner,
        "creator" => Term::Creator,
        "project_member" => Term::ProjectMember,
        "any" => Term::Any,
        "none" => Term::Nobody,
        "and" | "or" => return Err(format!("expected a term, found `{word}`")),
        _ if word.contains(['(', ')']) => {
            return Err("parentheses are not supported in a TOML policy file (a YAML or JSON file takes oslo.policy \
                        syntax)"
                .into());
        }
        _ => match word.strip_prefix("role:") {
            Some("") => return Err("`role:` needs a role name".into()),
            Some(role) => Term::Role(role.to_owned()),
            None => {
                return Err(format!(
                    "unknown term `{word}` (terms: admin, owner, creator, role:<name>, project_member, any, none)"
                ));
            }
        },
    })
}

/// What the policy knows about the key pair an action is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeypairFacts<'a> {
    /// The record is only loaded later: terms about it are undecided.
    Pending,
    /// No single key pair is involved (a list, the admin API) or the named one does not exist.
    Absent,
    /// The stored key pair.
    Known { creator_user_id: &'a str, project_id: &'a str, scope: Scope },
    /// A key pair about to be created in `project_id` by (and for) `creator_user_id`, of either scope. Its
    /// `owner` is only the user it is created for: the "domain key of the caller's project" clause is about
    /// stored keys, or any member could create domain keys in another user's name.
    New { creator_user_id: &'a str, project_id: &'a str },
}

/// What an action is performed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// The user whose key pairs the request acts on; `None` when there is none (admin API, `domain` keys).
    pub user_id: Option<&'a str>,
    pub keypair: KeypairFacts<'a>,
}

impl<'a> Target<'a> {
    /// Step 8: what the request names; the key pair is loaded later.
    pub fn user_before_load(user_id: &'a str) -> Self {
        Self { user_id: Some(user_id), keypair: KeypairFacts::Pending }
    }

    /// A user's key pairs as a whole (list), or a named key pair that does not exist.
    pub fn user(user_id: &'a str) -> Self {
        Self { user_id: Some(user_id), keypair: KeypairFacts::Absent }
    }

    /// Nothing user- or key-pair-specific (the admin API).
    pub fn nothing() -> Self {
        Self { user_id: None, keypair: KeypairFacts::Absent }
    }

    /// A stored key pair: a `user` key targets its owner; a `domain` key no user, only its project.
    pub fn keypair(record: &'a Keypair) -> Self {
        Self::stored(record.user_id.as_str(), record.project_id.as_str(), record.scope)
    }

    /// A stored key pair created by `user_id` in `project_id` (what `keypair` reads from a record).
    pub fn stored(user_id: &'a str, project_id: &'a str, scope: Scope) -> Self {
        Self {
            user_id: (scope == Scope::User).then_some(user_id),
            keypair: KeypairFacts::Known { creator_user_id: user_id, project_id, scope },
        }
    }

    /// The value of `%(field)s` in an oslo.policy check: `None` = undecided (the record is still to be
    /// loaded), `Some(None)` = the target has no such field.
    fn field<'s>(&'s self, field: &str, caller: &'s Caller) -> Option<Option<&'s str>> {
        match field {
            "user_id" => Some(self.user_id),
            "project_id" => match self.keypair {
                KeypairFacts::Pending => None,
                KeypairFacts::Absent => Some(Some(caller.project_id.as_str())),
                KeypairFacts::Known { project_id, .. } | KeypairFacts::New { project_id, .. } => Some(Some(project_id)),
            },
            _ => Some(None),
        }
    }

    /// A key pair about to be created for `user_id` in `project_id`, of either scope: it targets that user
    /// (its owner and creator), so a foreign `user_id` needs what acting on another user's keys needs.
    pub fn new_keypair(user_id: &'a str, project_id: &'a str) -> Self {
        Self { user_id: Some(user_id), keypair: KeypairFacts::New { creator_user_id: user_id, project_id } }
    }
}

/// The outcome of evaluating a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// Depends on the key pair record, which the target did not describe yet.
    Undecided,
}

impl Term {
    /// `None` = undecided until the key pair is known.
    fn holds(&self, caller: &Caller, target: &Target<'_>) -> Option<bool> {
        let facts = target.keypair;
        match self {
            Term::Admin => Some(caller.is_admin()),
            Term::Role(role) => Some(caller.roles.iter().any(|r| r == role)),
            Term::RoleIgnoringCase(role) => Some(caller.roles.iter().any(|r| r.eq_ignore_ascii_case(role))),
            Term::Match { attribute, value } => {
                let wanted = match value {
                    Operand::Literal(literal) => Some(literal.as_str()),
                    Operand::Target(field) => target.field(field, caller)?,
                };
                let Some(wanted) = wanted else { return Some(false) };
                Some(match attribute.as_str() {
                    "user_id" => caller.user_id == wanted,
                    "project_id" => caller.project_id == wanted,
                    "roles" => caller.roles.iter().any(|role| role == wanted),
                    _ => false,
                })
            }
            Term::Any => Some(true),
            Term::Nobody => Some(false),
            Term::Owner if target.user_id == Some(caller.user_id.as_str()) => Some(true),
            Term::Owner => match facts {
                KeypairFacts::Pending => None,
                KeypairFacts::Absent => Some(false),
                KeypairFacts::Known { project_id, scope, .. } => {
                    Some(scope == Scope::Domain && project_id == caller.project_id)
                }
                KeypairFacts::New { .. } => Some(false),
            },
            Term::Creator => match facts {
                KeypairFacts::Pending => None,
                KeypairFacts::Absent => Some(false),
                KeypairFacts::Known { creator_user_id, .. } | KeypairFacts::New { creator_user_id, .. } => {
                    Some(creator_user_id == caller.user_id)
                }
            },
            Term::ProjectMember => match facts {
                KeypairFacts::Pending => None,
                KeypairFacts::Absent => Some(false),
                KeypairFacts::Known { project_id, .. } | KeypairFacts::New { project_id, .. } => {
                    Some(project_id == caller.project_id)
                }
            },
        }
    }
}

impl Rule {
    pub fn decide(&self, caller: &Caller, target: &Target<'_>) -> Decision {
        match self.expr.holds(caller, target) {
            Some(true) => Decision::Allow,
            Some(false) => Decision::Deny,
            None => Decision::Undecided,
        }
    }
}

/// Why `policy.file` could not be used; names the file and the action or alias at fault.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "invalid policy file {path}: {message} (one `\"action\" = \"rule\"` line per action; action names contain \
         `:`, so quote them)"
    )]
    Parse { path: PathBuf, message: String },
    #[error("invalid policy file {path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("policy file {path}: unknown action {action:?}")]
    UnknownAction { path: PathBuf, action: String },
    #[error("policy file {path}: the rule of {action} must be a string")]
    NotAString { path: PathBuf, action: String },
    #[error("policy file {path}: invalid rule {rule:?} for {action}: {reason}")]
    BadRule { path: PathBuf, action: String, rule: String, reason: String },
}

/// The rule of every action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: BTreeMap<Action, Rule>,
}

impl Default for Policy {
    fn default() -> Self {
        let rules = Action::ALL
            .into_iter()
            .map(|action| (action, action.default_rule().parse().expect("the default rules parse")))
            .collect();
        Self { rules }
    }
}

impl Policy {
    /// The default policy with the overrides of the file at `path`: oslo.policy syntax in a `.yaml`, `.yml`
    /// or `.json` file, kps's original TOML in a `.toml` file; by its content otherwise (`{` starts JSON, a
    /// valid TOML table is TOML, anything else is read as YAML).
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read { path: path.into(), source })?;
        let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("toml") => Self::from_toml(&text, path),
            Some("json") => Self::from_json(&text, path),
            Some("yaml" | "yml") => Self::from_yaml(&text, path),
            _ if text.trim_start().starts_with('{') => Self::from_json(&text, path),
            _ if toml::from_str::<toml::Table>(&text).is_ok() => Self::from_toml(&text, path),
            _ => Self::from_yaml(&text, path),
        }
    }

    /// An oslo.policy file in YAML.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let entries = oslo::yaml_entries(text).map_err(|error| match error {
            Ok(name) => PolicyError::NotAString { path: path.into(), action: name },
            Err(message) => PolicyError::Format { path: path.into(), message },
        })?;
        Self::from_oslo(entries, path)
    }

    /// An oslo.policy file in JSON (oslo.policy's older format).
    pub fn from_json(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| PolicyError::Format { path: path.into(), message: e.to_string() })?;
        let mut entries = Vec::with_capacity(map.len());
        for (name, value) in map {
            let serde_json::Value::String(rule) = value else {
                return Err(PolicyError::NotAString { path: path.into(), action: name });
            };
            entries.push((name, rule));
        }
        Self::from_oslo(entries, path)
    }

    /// oslo.policy semantics: every entry is a named rule (`rule:<name>` may refer to it), over Nova's base
    /// rules and the default rule of every action; the entries that name an action (or an ECS alias) set
    /// its rule. A name in kps's, Nova's keypair or the ECS namespace that is no action is refused as a
    /// typo; other names (a whole Nova policy file's) are only rules.
    pub fn from_oslo(entries: Vec<(String, String)>, path: &Path) -> Result<Self, PolicyError> {
        let bad_rule = |name: &str, rule: &str, reason: String| PolicyError::BadRule {
            path: path.into(),
            action: name.into(),
            rule: rule.into(),
            reason,
        };
        let mut named: BTreeMap<String, Expr> = BTreeMap::new();
        for (name, rule, _) in oslo::NAMED_DEFAULTS {
            named.insert(name.into(), oslo::parse(rule).map_err(|reason| bad_rule(name, rule, reason))?);
        }
        for action in Action::ALL {
            let rule = action.default_rule();
            named.insert(
                action.name().into(),
                oslo::parse(rule).map_err(|reason| bad_rule(action.name(), rule, reason))?,
            );
        }
        let mut explicit = Vec::new();
        let mut aliased = Vec::new();
        for (name, rule) in &entries {
            let expr = oslo::parse(rule).map_err(|reason| bad_rule(name, rule, reason))?;
            if let Some(action) = Action::from_name(name) {
                explicit.push((action, name, rule));
            } else if let Some((_, actions)) = ALIASES.iter().find(|(alias, _)| alias == name) {
                aliased.push((actions, name, rule));
            } else if ["kps:", "os_compute_api:os-keypairs:", "ecs:serverKeypairs:"].iter().any(|p| name.starts_with(p))
            {
                return Err(PolicyError::UnknownAction { path: path.into(), action: name.clone() });
            }
            named.insert(name.clone(), expr);
        }
        let resolve = |name: &String, rule: &String| {
            let mut stack = vec![name.clone()];
            oslo::resolve(&named[name], &named, &mut stack)
                .map(|expr| Rule { expr })
                .map_err(|reason| bad_rule(name, rule, reason))
        };
        let mut policy = Self::default();
        let explicit_actions: Vec<Action> = explicit.iter().map(|(action, _, _)| *action).collect();
        for (action, name, rule) in &explicit {
            policy.rules.insert(*action, resolve(name, rule)?);
        }
        for (actions, name, rule) in aliased {
            let resolved = resolve(name, rule)?;
            for action in actions.iter().filter(|a| !explicit_actions.contains(a)) {
                policy.rules.insert(*action, resolved.clone());
            }
        }
        Ok(policy)
    }

    /// `kps policy check`: whether `caller` may perform the action named `action` on what the rest names
    /// (a stored key pair when `target_project` is given, of `domain` scope when `domain_key`; otherwise the
    /// target user's key pairs as a whole, or nothing for the admin API).
    pub fn check(&self, action: &str, caller: &Caller, target: &CheckTarget) -> Result<bool, String> {
        let Some(action) = Action::from_name(action) else {
            let names: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
            return Err(format!("unknown action {action:?} (actions: {})", names.join(", ")));
        };
        let user = target.user.as_deref().unwrap_or(&caller.user_id);
        let scope = if target.domain_key { Scope::Domain } else { Scope::User };
        let target = match (&target.project, action) {
            (_, Action::AdminBackup | Action::AdminRewrap) => Target::nothing(),
            (Some(project), _) => Target::stored(user, project, scope),
            (None, _) => Target::user(user),
        };
        Ok(self.decide(action, caller, &target) == Decision::Allow)
    }

    /// Explicit actions first; an alias sets the actions of its operation that the file did not set itself.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| PolicyError::Parse { path: path.into(), message: e.message().into() })?;
        let mut policy = Self::default();
        let mut explicit = Vec::new();
        let mut aliased = Vec::new();
        for (name, value) in &table {
            let rule = parse_rule(path, name, value)?;
            if let Some(action) = Action::from_name(name) {
                policy.rules.insert(action, rule);
                explicit.push(action);
            } else if let Some((_, actions)) = ALIASES.iter().find(|(alias, _)| alias == name) {
                aliased.push((actions, rule));
            } else {
                return Err(PolicyError::UnknownAction { path: path.into(), action: name.clone() });
            }
        }
        for (actions, rule) in aliased {
            for action in actions.iter().filter(|a| !explicit.contains(a)) {
                policy.rules.insert(*action, rule.clone());
            }
        }
        Ok(policy)
    }

    pub fn decide(&self, action: Action, caller: &Caller, target: &Target<'_>) -> Decision {
        self.rules.get(&action).map_or(Decision::Deny, |rule| rule.decide(caller, target))
    }

    /// 403 KPS.2003 naming the action when the rule denies; otherwise `Allow`, or `Undecided` when the
    /// target's key pair is still to be loaded and checked (errors.md §4 step 10).
    pub fn enforce(&self, action: Action, caller: &Caller, target: &Target<'_>) -> Result<Decision, ApiError> {
        match self.decide(action, caller, target) {
            Decision::Deny => Err(ApiError::policy_denied(action.name())),
            decision => Ok(decision),
        }
    }
}

/// What `kps policy check` asks about (see `Policy::check`).
#[derive(Debug, Clone, Default)]
pub struct CheckTarget {
    /// The target user (default: the caller).
    pub user: Option<String>,
    /// The project of the target key pair; `None` = no single key pair.
    pub project: Option<String>,
    /// The target key pair is a `domain` key (shared by its project).
    pub domain_key: bool,
}

/// The defaults in oslo.policy's YAML, commented out as oslopolicy-sample-generator writes them: Nova's base
/// rules, then every action with its description and default rule. Uncommented, it loads as the defaults.
pub fn sample() -> String {
    let mut out = String::from(
        "# kps policy file (oslo.policy syntax): the defaults, commented out. Uncomment and change a line to\n\
         # override one rule; set policy.file to this file (a .yaml, .yml or .json name).\n\
         # Checks: rule:<name>, role:<name>, user_id:%(user_id)s (the target user: the key pair's owner),\n\
         # project_id:%(project_id)s (the key pair's project), is_admin:True, @ (anyone), ! (no one), and kps's\n\
         # own: admin (role admin), owner (the target user, or a domain key of the caller's project), creator\n\
         # (who created the key pair), project_member (of the key pair's project); joined by not, and, or,\n\
         # parentheses.\n\n",
    );
    for (name, rule, description) in oslo::NAMED_DEFAULTS {
        out.push_str(&format!("# {description}\n#\"{name}\": \"{rule}\"\n\n"));
    }
    for action in Action::ALL {
        let routes = super::router::ROUTE_TABLE.iter().filter(|spec| spec.action == Some(action));
        let operations: String = routes
            .flat_map(|spec| {
                spec.methods
                    .iter()
                    .filter(|method| **method != axum::http::Method::HEAD)
                    .map(move |method| format!("# {}  {}\n", method.as_str(), spec.template))
            })
            .collect();
        out.push_str(&format!("# {}\n{operations}", action.description()));
        out.push_str(&format!("#\"{}\": \"{}\"\n\n", action.name(), action.default_rule()));
    }
    out
}

fn parse_rule(path: &Path, name: &str, value: &toml::Value) -> Result<Rule, PolicyError> {
    let Some(text) = value.as_str() else {
        return Err(PolicyError::NotAString { path: path.into(), action: name.into() });
    };
    text.parse().map_err(|reason| PolicyError::BadRule {
        path: path.into(),
        action: name.into(),
        rule: text.into(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(token: &str) -> Caller {
        let fields: Vec<&str> = token.split(':').collect();
        let roles = fields.get(2).map(|r| r.split(',').map(str::to_owned).collect()).unwrap_or_default();
        Caller { user_id: fields[0].into(), project_id: fields[1].into(), roles }
    }

    /// Each `(action, caller token, target, expected)` decided as expected.
    fn assert_decisions(policy: &Policy, cases: &[(Action, &str, Target<'_>, Decision)]) {
        for (action, who, target, expected) in cases {
            assert_eq!(
                policy.decide(*action, &caller(who), target),
                *expected,
                "{} by {who} on {target:?}",
                action.name()
            );
        }
    }

    fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        Policy::from_toml(text, Path::new("policy.toml"))
    }

    fn decide(rule: &str, who: &str, target: &Target<'_>) -> Decision {
        rule.parse::<Rule>().expect("rule").decide(&caller(who), target)
    }

    const ALICE: &str = "alice:p";
    const ALICE_IN_Q: &str = "alice:q";
    const BOB: &str = "bob:p";
    const CAROL_OTHER_PROJECT: &str = "carol:q";
    const ADMIN: &str = "root:q:admin";

    fn user_key_of_alice() -> Keypair {
        record("alice", "p", Scope::User)
    }

    fn domain_key_of_p_by_alice() -> Keypair {
        record("alice", "p", Scope::Domain)
    }

    fn record(user: &str, project: &str, scope: Scope) -> Keypair {
        Keypair {
            id: 1,
            name: "k".into(),
            key_type: crate::model::KeyType::Ssh,
            public_key: String::new(),
            fingerprint: String::new(),
            algorithm: crate::model::KeyAlgorithm::Ed25519,
            user_id: user.into(),
            project_id: project.into(),
            scope,
            description: String::new(),
            created_at_us: 0,
            updated_at_us: None,
            sealed: None,
        }
    }

    #[test]
    fn action_names_round_trip_and_match_the_interface_table() {
        let names: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(names.len(), 16);
        for action in Action::ALL {
            assert_eq!(Action::from_name(action.name()), Some(action));
        }
        assert!(names.contains(&"kps:keypairs:batch_export"));
        assert_eq!(Action::from_name("ecs:serverKeypairs:list"), None, "aliases are not actions");
    }

    #[test]
    fn default_policy_matrix() {
        use Decision::{Allow, Deny};
        let policy = Policy::default();
        let user_key = user_key_of_alice();
        let domain_key = domain_key_of_p_by_alice();
        let bob_key = record("bob", "p", Scope::User);
        // (action, caller, target, expected)
        let cases: Vec<(Action, &str, Target<'_>, Decision)> = vec![
            // Nova and V3 owner actions on a user's own key pairs, from any project.
            (Action::NovaIndex, ALICE, Target::user("alice"), Allow),
            (Action::NovaIndex, ALICE_IN_Q, Target::user("alice"), Allow),
            (Action::NovaShow, ALICE, Target::keypair(&user_key), Allow),
            (Action::NovaDelete, ALICE_IN_Q, Target::keypair(&user_key), Allow),
            (Action::List, ALICE, Target::user("alice"), Allow),
            // Another user's key pairs: denied, in the same project too; admin from any project allowed.
            (Action::NovaIndex, BOB, Target::user("alice"), Deny),
            (Action::NovaShow, BOB, Target::keypair(&user_key), Deny),
            (Action::NovaDelete, CAROL_OTHER_PROJECT, Target::keypair(&user_key), Deny),
            (Action::NovaShow, ADMIN, Target::keypair(&user_key), Allow),
            (Action::NovaIndex, ADMIN, Target::user("alice"), Allow),
            (Action::NovaCreate, BOB, Target::new_keypair("alice", "p"), Deny),
            (Action::NovaCreate, ADMIN, Target::new_keypair("alice", "q"), Allow),
            (Action::NovaCreate, ALICE, Target::new_keypair("alice", "p"), Allow),
            // Creating in another user's name needs admin whatever the scope: a domain key too.
            (Action::Create, BOB, Target::new_keypair("alice", "p"), Deny),
            (Action::BatchImport, BOB, Target::new_keypair("alice", "p"), Deny),
            (Action::Create, ADMIN, Target::new_keypair("alice", "q"), Allow),
            (Action::Create, BOB, Target::new_keypair("bob", "p"), Allow),
            // Domain keys: every member of the project owns them; only the creator exports or clears.
            (Action::Show, BOB, Target::keypair(&domain_key), Allow),
            (Action::Delete, BOB, Target::keypair(&domain_key), Allow),
            (Action::Update, BOB, Target::keypair(&domain_key), Allow),
            (Action::Show, CAROL_OTHER_PROJECT, Target::keypair(&domain_key), Deny),
            (Action::ExportPrivateKey, BOB, Target::keypair(&domain_key), Deny),
            (Action::ClearPrivateKey, BOB, Target::keypair(&domain_key), Deny),
            (Action::ExportPrivateKey, ALICE, Target::keypair(&domain_key), Allow),
            (Action::ExportPrivateKey, ADMIN, Target::keypair(&domain_key), Allow),
            // For user keys owner and creator are the same user.
            (Action::ExportPrivateKey, ALICE, Target::keypair(&user_key), Allow),
            (Action::ImportPrivateKey, BOB, Target::keypair(&user_key), Deny),
            (Action::BatchExport, BOB, Target::keypair(&bob_key), Allow),
            (Action::BatchImport, BOB, Target::user("bob"), Allow),
            // Admin API.
            (Action::AdminBackup, ADMIN, Target::nothing(), Allow),
            (Action::AdminBackup, ALICE, Target::nothing(), Deny),
            (Action::AdminRewrap, "x:p:member,reader", Target::nothing(), Deny),
        ];
        assert_decisions(&policy, &cases);
    }

    #[test]
    fn step_8_decides_what_the_request_names_and_leaves_record_terms_open() {
        let policy = Policy::default();
        let early = Target::user_before_load("alice");
        assert_eq!(policy.decide(Action::NovaShow, &caller(ALICE), &early), Decision::Allow);
        assert_eq!(policy.decide(Action::NovaShow, &caller(ADMIN), &early), Decision::Allow);
        // Bob naming alice's key could still be naming a domain key of his project.
        assert_eq!(policy.decide(Action::NovaShow, &caller(BOB), &early), Decision::Undecided);
        // `admin or creator`: undecided for everyone but admins until the record is loaded.
        assert_eq!(policy.decide(Action::ExportPrivateKey, &caller(ALICE), &early), Decision::Undecided);
        assert_eq!(policy.decide(Action::ExportPrivateKey, &caller(ADMIN), &early), Decision::Allow);
        // A rule that is false whatever the record holds is denied early.
        assert_eq!(decide("admin and creator", ALICE, &early), Decision::Deny);
        assert_eq!(decide("role:ops and project_member", ALICE, &early), Decision::Deny);
        assert_eq!(decide("creator or any", ALICE, &early), Decision::Allow);
        let error = policy.enforce(Action::AdminBackup, &caller(ALICE), &Target::nothing()).expect_err("denied");
        assert_eq!((error.status.as_u16(), error.code), (403, "KPS.2003"));
        assert_eq!(error.message, "Policy doesn't allow kps:admin:backup to be performed.");
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let target = Target::user("alice");
        // admin or (role:x and none): an admin passes.
        assert_eq!(decide("admin or role:x and none", ADMIN, &target), Decision::Allow);
        // (none and admin) or owner: the owner passes.
        assert_eq!(decide("none and admin or owner", ALICE, &target), Decision::Allow);
        assert_eq!(decide("none and admin or owner", ADMIN, &Target::user("bob")), Decision::Deny);
        // owner and (role:ops or admin) would allow an admin owner; the real grouping does not need ops.
        assert_eq!(decide("owner and role:ops or admin", "root:p:admin", &Target::user("bob")), Decision::Allow);
        assert_eq!(decide("owner and role:ops or admin", ALICE, &target), Decision::Deny);
        assert_eq!(decide("owner and role:ops or admin", "alice:p:ops", &target), Decision::Allow);
        assert_eq!(decide("any", CAROL_OTHER_PROJECT, &target), Decision::Allow);
        assert_eq!(decide("none", ADMIN, &target), Decision::Deny);
        assert_eq!(decide("role:admin", ADMIN, &target), Decision::Allow);
        let domain_key = domain_key_of_p_by_alice();
        assert_eq!(decide("project_member", BOB, &Target::keypair(&domain_key)), Decision::Allow);
        assert_eq!(decide("project_member", CAROL_OTHER_PROJECT, &Target::keypair(&domain_key)), Decision::Deny);
        assert_eq!(decide("project_member", BOB, &Target::user("bob")), Decision::Deny, "no key pair, no project");
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (rule, reason) in [
            ("", "the rule is empty"),
            ("   ", "the rule is empty"),
            ("admin or", "the rule ends with `or`"),
            ("or admin", "expected a term, found `or`"),
            ("admin owner", "expected `and` or `or` after `admin`, found `owner`"),
            ("admin and and owner", "expected a term, found `and`"),
            ("(admin or owner)", "parentheses are not supported"),
            ("role:", "`role:` needs a role name"),
            ("Admin", "unknown term `Admin`"),
            ("not admin", "unknown term `not`"),
            ("rule:admin_api", "unknown term `rule:admin_api`"),
        ] {
            let error = rule.parse::<Rule>().expect_err(rule);
            assert!(error.contains(reason), "{rule:?}: {error}");
        }
    }

    #[test]
    fn file_overrides_only_the_actions_it_names() {
        let policy = from_toml("\"os_compute_api:os-keypairs:index\" = \"admin\"\n").expect("policy");
        let alice = caller(ALICE);
        let own = Target::user("alice");
        assert_eq!(policy.decide(Action::NovaIndex, &alice, &own), Decision::Deny);
        assert_eq!(policy.decide(Action::List, &alice, &own), Decision::Allow);
        assert_eq!(policy.decide(Action::NovaShow, &alice, &Target::user_before_load("alice")), Decision::Allow);
        assert_eq!(from_toml("").expect("empty file"), Policy::default());
    }

    #[test]
    fn aliases_set_nova_and_v3_unless_set_explicitly() {
        let policy = from_toml(
            "\"ecs:serverKeypairs:list\" = \"role:lister\"\n\
             \"kps:keypairs:list\" = \"any\"\n\
             \"ecs:serverKeypairs:delete\" = \"none\"\n",
        )
        .expect("policy");
        let alice = caller(ALICE);
        let lister = caller("alice:p:lister");
        let own = Target::user("alice");
        assert_eq!(policy.decide(Action::NovaIndex, &alice, &own), Decision::Deny);
        assert_eq!(policy.decide(Action::NovaIndex, &lister, &own), Decision::Allow);
        assert_eq!(policy.decide(Action::List, &alice, &Target::user("bob")), Decision::Allow, "explicit wins");
        let key = user_key_of_alice();
        assert_eq!(policy.decide(Action::NovaDelete, &alice, &Target::keypair(&key)), Decision::Deny);
        assert_eq!(policy.decide(Action::Delete, &alice, &Target::keypair(&key)), Decision::Deny);
        assert_eq!(policy.decide(Action::NovaShow, &alice, &Target::keypair(&key)), Decision::Allow, "untouched");
        // The order in the file does not matter.
        let reversed = from_toml("\"kps:keypairs:list\" = \"any\"\n\"ecs:serverKeypairs:list\" = \"role:lister\"\n")
            .expect("policy");
        assert_eq!(reversed.decide(Action::List, &alice, &Target::user("bob")), Decision::Allow);
        assert_eq!(reversed.decide(Action::NovaIndex, &alice, &own), Decision::Deny);
    }

    #[test]
    fn file_errors_name_the_action_or_the_problem() {
        let cases = [
            (
                "\"os_compute_api:os-keypairs:frobnicate\" = \"admin\"",
                "unknown action \"os_compute_api:os-keypairs:frobnicate\"",
            ),
            ("\"ecs:serverKeypairs:update\" = \"admin\"", "unknown action \"ecs:serverKeypairs:update\""),
            ("\"kps:keypairs:show\" = \"admin or\"", "invalid rule \"admin or\" for kps:keypairs:show"),
            ("\"ecs:serverKeypairs:get\" = \"bogus\"", "for ecs:serverKeypairs:get: unknown term `bogus`"),
            ("\"kps:admin:backup\" = true", "the rule of kps:admin:backup must be a string"),
            ("os_compute_api:os-keypairs:index = \"admin\"", "quote them"),
        ];
        for (text, expected) in cases {
            let error = from_toml(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(error.contains("policy.toml"), "{error}");
        }
        let missing = Policy::load(Path::new("/nonexistent/policy.toml")).expect_err("missing");
        assert!(missing.to_string().contains("cannot read policy file /nonexistent/policy.toml"), "{missing}");
    }

    /// Nova's keypair rules as Nova's sample policy (oslopolicy-sample-generator --namespace nova) writes
    /// them, uncommented and otherwise verbatim.
    const NOVA_KEYPAIR_RULES: &str = "\
# List all keypairs
# GET  /os-keypairs
# Intended scope(s): project
\"os_compute_api:os-keypairs:index\": \"(rule:context_is_admin) or user_id:%(user_id)s\"

# Create a keypair
# POST  /os-keypairs
# Intended scope(s): project
\"os_compute_api:os-keypairs:create\": \"(rule:context_is_admin) or user_id:%(user_id)s\"

# Delete a keypair
# DELETE  /os-keypairs/{keypair_name}
# Intended scope(s): project
\"os_compute_api:os-keypairs:delete\": \"(rule:context_is_admin) or user_id:%(user_id)s\"

# Show details of a keypair
# GET  /os-keypairs/{keypair_name}
# Intended scope(s): project
\"os_compute_api:os-keypairs:show\": \"(rule:context_is_admin) or user_id:%(user_id)s\"
";

    fn from_yaml(text: &str) -> Result<Policy, PolicyError> {
        Policy::from_yaml(text, Path::new("policy.yaml"))
    }

    #[test]
    fn novas_keypair_rules_load_verbatim_and_mean_what_they_mean_in_nova() {
        use Decision::{Allow, Deny};
        let policy = from_yaml(NOVA_KEYPAIR_RULES).expect("Nova's rules load");
        let user_key = user_key_of_alice();
        let domain_key = domain_key_of_p_by_alice();
        let cases: Vec<(Action, &str, Target<'_>, Decision)> = vec![
            (Action::NovaIndex, ALICE, Target::user("alice"), Allow),
            (Action::NovaIndex, ALICE_IN_Q, Target::user("alice"), Allow),
            (Action::NovaShow, ALICE, Target::user_before_load("alice"), Allow),
            (Action::NovaShow, ALICE, Target::keypair(&user_key), Allow),
            (Action::NovaCreate, ALICE, Target::new_keypair("alice", "p"), Allow),
            (Action::NovaDelete, ALICE, Target::keypair(&user_key), Allow),
            // Another user, same project or not: Nova's rule decides on the user alone, before any load.
            (Action::NovaIndex, BOB, Target::user("alice"), Deny),
            (Action::NovaShow, BOB, Target::user_before_load("alice"), Deny),
            (Action::NovaDelete, CAROL_OTHER_PROJECT, Target::keypair(&user_key), Deny),
            (Action::NovaCreate, BOB, Target::new_keypair("alice", "p"), Deny),
            // A domain key has no owning user: Nova's rule knows no shared keys, so only an admin.
            (Action::NovaShow, BOB, Target::keypair(&domain_key), Deny),
            (Action::NovaShow, ADMIN, Target::keypair(&domain_key), Allow),
            // context_is_admin = role:admin.
            (Action::NovaIndex, ADMIN, Target::user("alice"), Allow),
            (Action::NovaShow, ADMIN, Target::user_before_load("alice"), Allow),
            (Action::NovaCreate, ADMIN, Target::new_keypair("alice", "q"), Allow),
            (Action::NovaIndex, "root:q:ADMIN", Target::user("alice"), Allow),
            (Action::NovaIndex, "root:q:member,reader", Target::user("alice"), Deny),
            // The actions the file does not name keep kps's defaults.
            (Action::Show, BOB, Target::keypair(&domain_key), Allow),
        ];
        assert_decisions(&policy, &cases);
    }

    #[test]
    fn the_file_overrides_the_named_rules_its_actions_use() {
        let text = format!("{NOVA_KEYPAIR_RULES}\"context_is_admin\": \"role:cloud_admin\"\n");
        let policy = from_yaml(&text).expect("policy");
        let target = Target::user("alice");
        assert_eq!(policy.decide(Action::NovaIndex, &caller(ADMIN), &target), Decision::Deny);
        assert_eq!(policy.decide(Action::NovaIndex, &caller("root:q:cloud_admin"), &target), Decision::Allow);
        // is_admin:True is what context_is_admin decides, as in Nova.
        let policy = from_yaml("\"context_is_admin\": \"role:boss\"\n\"kps:admin:backup\": \"rule:admin_api\"\n")
            .expect("policy");
        assert_eq!(policy.decide(Action::AdminBackup, &caller("x:p:boss"), &Target::nothing()), Decision::Allow);
        assert_eq!(policy.decide(Action::AdminBackup, &caller(ADMIN), &Target::nothing()), Decision::Deny);
    }

    #[test]
    fn not_and_parentheses() {
        let policy = from_yaml(
            "\"os_compute_api:os-keypairs:index\": \"not (role:suspended or project_id:quarantine) and \
             (user_id:%(user_id)s or role:auditor)\"\n",
        )
        .expect("policy");
        let own = Target::user("alice");
        let decide = |who: &str, target: &Target<'_>| policy.decide(Action::NovaIndex, &caller(who), target);
        assert_eq!(decide(ALICE, &own), Decision::Allow);
        assert_eq!(decide("alice:p:suspended", &own), Decision::Deny);
        assert_eq!(decide("alice:quarantine", &own), Decision::Deny);
        assert_eq!(decide("bob:p:auditor", &own), Decision::Allow);
        assert_eq!(decide("bob:quarantine:auditor", &own), Decision::Deny);
        assert_eq!(decide(BOB, &own), Decision::Deny);
        // `not` of something undecided stays undecided until the record is loaded.
        let rule = Rule::parse_oslo("not project_id:%(project_id)s").expect("rule");
        assert_eq!(rule.decide(&caller(ALICE), &Target::user_before_load("alice")), Decision::Undecided);
        let domain_key = domain_key_of_p_by_alice();
        assert_eq!(rule.decide(&caller(BOB), &Target::keypair(&domain_key)), Decision::Deny);
        assert_eq!(rule.decide(&caller(CAROL_OTHER_PROJECT), &Target::keypair(&domain_key)), Decision::Allow);
        assert_eq!(Rule::parse_oslo("@").expect("@").decide(&caller(BOB), &own), Decision::Allow);
        assert_eq!(Rule::parse_oslo("!").expect("!").decide(&caller(ADMIN), &own), Decision::Deny);
        assert_eq!(Rule::parse_oslo("").expect("empty").decide(&caller(BOB), &own), Decision::Allow);
        assert_eq!(Rule::parse_oslo("system_scope:all").expect("scope").decide(&caller(ADMIN), &own), Decision::Deny);
    }

    #[test]
    fn json_files_are_oslo_policy_files_too() {
        let path = Path::new("policy.json");
        let policy = Policy::from_json(
            r#"{"os_compute_api:os-keypairs:show": "(rule:context_is_admin) or user_id:%(user_id)s",
                "ecs:serverKeypairs:list": "rule:project_member_api"}"#,
            path,
        )
        .expect("policy");
        assert_eq!(policy.decide(Action::NovaShow, &caller(BOB), &Target::user("alice")), Decision::Deny);
        // project_id:%(project_id)s with no key pair involved is the caller's own project (Nova's default target).
        assert_eq!(policy.decide(Action::List, &caller("bob:p:member"), &Target::user("alice")), Decision::Allow);
        assert_eq!(policy.decide(Action::NovaIndex, &caller(ALICE), &Target::user("alice")), Decision::Deny);
        let error = Policy::from_json(r#"{"kps:admin:backup": true}"#, path).expect_err("not a string");
        assert!(error.to_string().contains("the rule of kps:admin:backup must be a string"), "{error}");
        let error = Policy::from_json("{", path).expect_err("syntax");
        assert!(error.to_string().contains("invalid policy file policy.json"), "{error}");
    }

    #[test]
    fn oslo_file_errors_name_the_entry() {
        for (text, expected) in [
            ("\"kps:keypairs:frobnicate\": \"@\"", "unknown action \"kps:keypairs:frobnicate\""),
            (
                "\"kps:keypairs:show\": \"rule:nope\"",
                "invalid rule \"rule:nope\" for kps:keypairs:show: rule:nope is not defined",
            ),
            ("\"a\": \"rule:b\"\n\"b\": \"rule:a\"\n\"kps:keypairs:show\": \"rule:a\"", "refers to itself"),
            ("\"kps:keypairs:show\": \"(role:a\"", "expected `)`"),
            ("\"kps:keypairs:show\": [1]", "must be a string"),
            ("- a", "must be a mapping"),
        ] {
            let error = from_yaml(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(error.contains("policy.yaml"), "{error}");
        }
        // A whole Nova policy file: rules for other Nova APIs are only named rules, even dangling ones.
        let nova = format!("{NOVA_KEYPAIR_RULES}\"os_compute_api:servers:index\": \"rule:not_ours\"\n");
        assert!(from_yaml(&nova).is_ok());
    }

    #[test]
    fn the_sample_uncommented_is_the_default_policy() {
        let sample = sample();
        for action in Action::ALL {
            assert!(sample.contains(&format!("# {}\n", action.description())), "{}", action.name());
            assert!(sample.contains(&format!("\n#\"{}\": ", action.name())), "{}", action.name());
        }
        assert!(sample.contains("#\"context_is_admin\": \"role:admin\""));
        let uncommented: String = sample
            .lines()
            .map(|line| line.strip_prefix("#\"").map_or(line.to_owned(), |rest| format!("\"{rest}")))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(from_yaml(&uncommented).expect("the sample loads"), Policy::default());
        assert_eq!(from_yaml(&sample).expect("commented out"), Policy::default());
    }

    #[test]
    fn load_picks_the_format_by_name_or_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            ("p.toml", "\"kps:admin:backup\" = \"any\"\n"),
            ("p.yaml", "\"kps:admin:backup\": \"@\"\n"),
            ("p.yml", "kps:admin:backup: \"@\"\n"),
            ("p.json", "{\"kps:admin:backup\": \"\"}"),
            ("p.conf", "\"kps:admin:backup\" = \"any\"\n"),
            ("p2.conf", "\"kps:admin:backup\": \"@\"\n"),
            ("p3.conf", "{\"kps:admin:backup\": \"@\"}"),
        ];
        for (name, text) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            let policy = Policy::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(policy.decide(Action::AdminBackup, &caller(BOB), &Target::nothing()), Decision::Allow, "{name}");
        }
    }

    #[test]
    fn check_answers_for_a_caller_and_a_target() {
        let policy = from_yaml(NOVA_KEYPAIR_RULES).expect("policy");
        let to = |user: Option<&str>, project: Option<&str>, domain_key| CheckTarget {
            user: user.map(Into::into),
            project: project.map(Into::into),
            domain_key,
        };
        let show = "os_compute_api:os-keypairs:show";
        assert_eq!(policy.check(show, &caller(ALICE), &to(None, None, false)), Ok(true));
        assert_eq!(policy.check(show, &caller(BOB), &to(Some("alice"), Some("p"), false)), Ok(false));
        assert_eq!(policy.check(show, &caller(ADMIN), &to(Some("alice"), Some("p"), false)), Ok(true));
        assert_eq!(policy.check("kps:keypairs:show", &caller(BOB), &to(Some("alice"), Some("p"), true)), Ok(true));
        assert_eq!(policy.check("kps:admin:backup", &caller(ALICE), &to(None, None, false)), Ok(false));
        let error = policy.check("nope", &caller(ALICE), &to(None, None, false)).expect_err("unknown");
        assert!(error.contains("unknown action \"nope\""), "{error}");
    }
}
