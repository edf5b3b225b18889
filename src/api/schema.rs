//! Nova-style validation messages: Python-repr rendering of JSON values and the jsonschema message
//! templates that Nova's validator produces (`spec/nova-keypairs.md` §5.1, `spec/errors.md` §1).

use serde_json::Value;

/// Renders a JSON value as Python's `repr()` of the decoded value.
pub fn repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value);
    out
}

fn write_repr(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(number) => out.push_str(&number_repr(number)),
        Value::String(text) => out.push_str(&str_repr(text)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&str_repr(key));
                out.push_str(": ");
                write_repr(out, item);
            }
            out.push('}');
        }
    }
}

fn number_repr(number: &serde_json::Number) -> String {
    if number.is_i64() || number.is_u64() {
        return number.to_string();
    }
    let float = number.as_f64().unwrap_or(f64::NAN);
    if float.is_finite() && float.fract() == 0.0 && float.abs() < 1e16 {
        format!("{float:.1}")
    } else {
        // Python switches to exponent notation at 1e16 and below 1e-4; Rust's shortest round-trip digits
        // match Python's for the mantissa.
        let text = format!("{float:e}");
        match text.split_once('e') {
            Some((mantissa, exp)) if float.abs() >= 1e16 || float.abs() < 1e-4 => {
                let exp: i32 = exp.parse().unwrap_or(0);
                format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
            }
            _ => float.to_string(),
        }
    }
}

/// Python's `repr(str)`: single quotes unless the text has a `'` and no `"`.
pub fn str_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_printable(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
    out
}

/// Python's `str.isprintable()` for one character, approximated: no control characters and no
/// separators other than the ASCII space.
pub fn is_printable(c: char) -> bool {
    c == ' '
        || !(c.is_control()
            || c.is_whitespace()
            || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}'))
}

/// The `Value: <value>` rendering: a string bare, anything else in repr form.
pub fn value_display(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => repr(other),
    }
}

/// `Invalid input for field/attribute <field>. Value: <value>. <reason>`.
pub fn field_message(field: &str, value: &Value, reason: &str) -> String {
    format!("Invalid input for field/attribute {field}. Value: {}. {reason}", value_display(value))
}

/// `<repr> is not of type '<type>'`.
pub fn not_of_type(value: &Value, type_name: &str) -> String {
    format!("{} is not of type '{type_name}'", repr(value))
}

/// `Additional properties are not allowed (<props> was/were unexpected)`, as jsonschema words it.
pub fn additional_properties(extras: &[&str]) -> String {
    let mut sorted: Vec<&str> = extras.to_vec();
    sorted.sort_unstable();
    let listed: Vec<String> = sorted.iter().map(|p| str_repr(p)).collect();
    let verb = if listed.len() == 1 { "was" } else { "were" };
    format!("Additional properties are not allowed ({} {verb} unexpected)", listed.join(", "))
}

/// `<repr> is not one of [<options>]`.
pub fn not_one_of(value: &Value, options: &[&str]) -> String {
    let listed: Vec<String> = options.iter().map(|o| str_repr(o)).collect();
    format!("{} is not one of [{}]", repr(value), listed.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn repr_matches_python() {
        let table = [
            (json!(null), "None"),
            (json!(true), "True"),
            (json!(false), "False"),
            (json!(42), "42"),
            (json!(-7), "-7"),
            (json!(1.5), "1.5"),
            (json!(2.0), "2.0"),
            (json!(1e20), "1e+20"),
            (json!("x"), "'x'"),
            (json!("it's"), "\"it's\""),
            (json!("both ' and \""), "'both \\' and \"'"),
            (json!("tab\there"), "'tab\\there'"),
            (json!("back\\slash"), "'back\\\\slash'"),
            (json!("\u{1}"), "'\\x01'"),
            (json!("é"), "'é'"),
            (json!([]), "[]"),
            (json!(["a", 1]), "['a', 1]"),
            (json!({"name": "x", "type": "ssh"}), "{'name': 'x', 'type': 'ssh'}"),
            (json!({"a": {"b": [null]}}), "{'a': {'b': [None]}}"),
        ];
        for (value, expected) in table {
            assert_eq!(repr(&value), expected, "{value}");
        }
    }

    #[test]
    fn value_display_shows_strings_bare() {
        assert_eq!(value_display(&json!("bad/name")), "bad/name");
        assert_eq!(value_display(&json!(null)), "None");
        assert_eq!(value_display(&json!({"name": "gen"})), "{'name': 'gen'}");
    }

    #[test]
    fn pattern_repr_doubles_backslashes() {
        assert_eq!(str_repr(r"^[_\- a-zA-Z0-9]+$"), r"'^[_\\- a-zA-Z0-9]+$'");
    }

    #[test]
    fn additional_properties_lists_sorted_extras() {
        assert_eq!(additional_properties(&["x"]), "Additional properties are not allowed ('x' was unexpected)");
        assert_eq!(
            additional_properties(&["b", "a"]),
            "Additional properties are not allowed ('a', 'b' were unexpected)"
        );
    }
}
