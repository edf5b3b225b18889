//! Validation of the Nova create body (`spec/nova-keypairs.md` §4.4, §5, §6.1, §8): the name rules of each
//! version with Nova's literal messages, and the properties each microversion accepts, checked in the order
//! Nova's jsonschema validator finds errors. The `key_protection` and `algorithm` rules shared with V3 live
//! in `keypair_ops`.
//!
//! Pure: it reads a JSON value and returns a `CreateRequest` or the catalogue error.

use serde_json::Value;

use super::NovaApi;
use crate::api::error::ApiError;
use crate::api::keypair_ops::{
    CreateRequest, check_algorithm_use, is_kps_name, masked, validate_algorithm_value, validate_key_protection,
};
use crate::api::schema::{self, additional_properties, field_message, not_of_type, not_one_of, repr, str_repr};
use crate::model::{KeyType, Scope};

// ---------------------------------------------------------------------------------------------------------
// Name rules (§5)

const NAME_PATTERN_21: &str = r"^[_\- a-zA-Z0-9]+$";
const NAME_PATTERN_292: &str = r"^[_\-\@\. a-zA-Z0-9]+$";
const KPS_NAME_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";
const INVALID_NAME_21: &str = "An invalid 'name' value was provided. The name must be: printable characters. Can not \
                               start or end with whitespace.";
const INVALID_NAME_V2: &str = "An invalid 'name' value was provided. The name must be: printable characters with \
                               at least one non space character";

fn name_chars_allowed(name: &str, allow_at_and_dot: bool) -> bool {
    name.chars().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ' ') || (allow_at_and_dot && matches!(c, '@' | '.'))
    })
}

/// Nova's `name` format: printable, no leading or trailing whitespace.
fn is_valid_nova_name_format(name: &str) -> bool {
    let starts_or_ends_with_space =
        name.chars().next().is_some_and(char::is_whitespace) || name.chars().last().is_some_and(char::is_whitespace);
    !starts_or_ends_with_space && name.chars().all(schema::is_printable)
}

/// Validates `keypair.name` and returns the name to store.
fn validate_name(api: NovaApi, value: &Value, with_protection: bool) -> Result<String, ApiError> {
    let invalid = |reason: String| ApiError::invalid_name(field_message("name", value, &reason));
    let Value::String(name) = value else { return Err(invalid(not_of_type(value, "string"))) };
    // Legacy v2's name format is checked before the length (Nova's v2.0 schema).
    if api == NovaApi::Legacy && (name.trim().is_empty() || !name.chars().all(schema::is_printable)) {
        return Err(ApiError::invalid_name(INVALID_NAME_V2));
    }
    if name.is_empty() {
        return Err(invalid(format!("{} should be non-empty", repr(value))));
    }
    if name.chars().count() > 255 {
        return Err(invalid(format!("{} is too long", repr(value))));
    }
    let stored = match api {
        NovaApi::Legacy => name.trim().to_owned(),
        NovaApi::V21(version) => {
            if !is_valid_nova_name_format(name) {
                return Err(ApiError::invalid_name(INVALID_NAME_21));
            }
            let wide = version.at_least(92);
            if !name_chars_allowed(name, wide) {
                let pattern = if wide { NAME_PATTERN_292 } else { NAME_PATTERN_21 };
                return Err(invalid(format!("{} does not match {}", repr(value), str_repr(pattern))));
            }
            name.clone()
        }
    };
    if with_protection && !is_kps_name(&stored) {
        return Err(invalid(format!("{} does not match {}", repr(value), str_repr(KPS_NAME_PATTERN))));
    }
    Ok(stored)
}

// ---------------------------------------------------------------------------------------------------------
// Create body (§4.4, §5.1, §6.1, §8)

const KEYPAIR_PROPERTIES: [&str; 6] = ["name", "public_key", "key_protection", "algorithm", "type", "user_id"];

/// Validates a create body; returns the first error in the order Nova's jsonschema validator finds it: at
/// each level the value's type, then each known property's own checks (in schema order: `name`, `type`,
/// `public_key`, `user_id`, then the kps extensions), then missing required properties, then unexpected
/// ones.
pub fn validate_create(api: NovaApi, body: &Value) -> Result<CreateRequest, ApiError> {
    let relaxed = api == NovaApi::Legacy;
    let Value::Object(root) = body else { return Err(ApiError::schema(not_of_type(body, "object"))) };
    let parsed = root.get("keypair").map(|keypair| validate_keypair(api, keypair)).transpose()?;
    let Some(parsed) = parsed else { return Err(ApiError::schema("'keypair' is a required property")) };
    let extras: Vec<&str> = root.keys().map(String::as_str).filter(|k| *k != "keypair").collect();
    if !extras.is_empty() && !relaxed {
        return Err(ApiError::schema(additional_properties(&extras)));
    }
    Ok(parsed)
}

/// The `keypair` object of a create body.
fn validate_keypair(api: NovaApi, keypair: &Value) -> Result<CreateRequest, ApiError> {
    let relaxed = api == NovaApi::Legacy;
    let Value::Object(fields) = keypair else {
        return Err(ApiError::schema(field_message("keypair", keypair, &not_of_type(keypair, "object"))));
    };
    let keypair_error = |reason: String| ApiError::schema(field_message("keypair", &masked(fields), &reason));
    let allowed = &KEYPAIR_PROPERTIES[..4 + usize::from(api.at_least(2)) + usize::from(api.at_least(10))];
    let field = |name: &str| if allowed.contains(&name) { fields.get(name) } else { None };

    // Each known property's own checks.
    let protection_value = field("key_protection");
    let name = fields.get("name").map(|value| validate_name(api, value, protection_value.is_some())).transpose()?;
    let key_type = match field("type") {
        None => KeyType::Ssh,
        Some(Value::String(t)) if t == "ssh" => KeyType::Ssh,
        Some(Value::String(t)) if t == "x509" => KeyType::X509,
        Some(value @ Value::String(_)) => {
            return Err(ApiError::schema(field_message("type", value, &not_one_of(value, &["ssh", "x509"]))));
        }
        Some(value) => return Err(ApiError::schema(field_message("type", value, &not_of_type(value, "string")))),
    };
    let string_field = |name: &str| -> Result<Option<String>, ApiError> {
        match field(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(value) => Err(ApiError::schema(field_message(name, value, &not_of_type(value, "string")))),
        }
    };
    let public_key = string_field("public_key")?;
    let user_id = string_field("user_id")?;
    let key_protection = protection_value.map(validate_key_protection).transpose()?;
    let algorithm = field("algorithm").map(validate_algorithm_value).transpose()?;

    // Then required, then unexpected properties.
    let mut required = vec!["name"];
    if api.at_least(92) {
        required.push("public_key");
    }
    if let Some(missing) = required.iter().find(|p| !fields.contains_key(**p)) {
        return Err(keypair_error(format!("'{missing}' is a required property")));
    }
    let extras: Vec<&str> = fields.keys().map(String::as_str).filter(|k| !allowed.contains(k)).collect();
    if !extras.is_empty() && !relaxed {
        return Err(keypair_error(additional_properties(&extras)));
    }

    // Cross-property rules of the `algorithm` extension.
    if let Some(algorithm) = algorithm {
        check_algorithm_use(algorithm, key_type, public_key.is_some(), fields)?;
    }
    let name = name.unwrap_or_default();
    Ok(CreateRequest { name, key_type, public_key, user_id, scope: Scope::User, key_protection, algorithm })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::microversion::MicroVersion;
    use serde_json::json;

    const V2_1: NovaApi = NovaApi::V21(MicroVersion::new(2, 1));
    const V2_2: NovaApi = NovaApi::V21(MicroVersion::new(2, 2));
    const V2_10: NovaApi = NovaApi::V21(MicroVersion::new(2, 10));
    const V2_92: NovaApi = NovaApi::V21(MicroVersion::new(2, 92));

    fn error(api: NovaApi, body: Value) -> (String, String) {
        let error = validate_create(api, &body).err().expect("validation error");
        (error.code.to_owned(), error.message)
    }
    #[test]
    fn root_level_errors_have_no_field_prefix() {
        let table = [
            (json!(null), "None is not of type 'object'"),
            (json!([]), "[] is not of type 'object'"),
            (json!({}), "'keypair' is a required property"),
            (json!({"keypair": {"name": "a"}, "x": 1}), "Additional properties are not allowed ('x' was unexpected)"),
        ];
        for (body, message) in table {
            assert_eq!(error(V2_1, body), ("KPS.1001".into(), message.into()));
        }
    }

    #[test]
    fn keypair_level_errors_show_the_keypair_value() {
        assert_eq!(
            error(V2_1, json!({"keypair": "x"})).1,
            "Invalid input for field/attribute keypair. Value: x. 'x' is not of type 'object'"
        );
        assert_eq!(
            error(V2_1, json!({"keypair": {}})).1,
            "Invalid input for field/attribute keypair. Value: {}. 'name' is a required property"
        );
        assert_eq!(
            error(V2_92, json!({"keypair": {"name": "a"}})).1,
            "Invalid input for field/attribute keypair. Value: {'name': 'a'}. 'public_key' is a required property"
        );
    }

    #[test]
    fn properties_are_allowed_by_version() {
        let extra = |api, prop: &str| {
            let mut keypair = json!({"name": "a"});
            keypair[prop] = json!("ssh");
            validate_create(api, &json!({ "keypair": keypair })).err().map(|e| e.message)
        };
        assert!(extra(V2_1, "type").expect("type at 2.1").ends_with("('type' was unexpected)"));
        assert!(extra(V2_2, "type").is_none());
        assert!(extra(V2_2, "user_id").expect("user_id at 2.2").ends_with("('user_id' was unexpected)"));
        assert!(extra(V2_10, "user_id").is_none());
        assert!(extra(V2_10, "bogus").is_some());
        assert!(extra(NovaApi::Legacy, "bogus").is_none(), "legacy v2 ignores unknown properties");
    }

    #[test]
    fn name_rules_per_version() {
        let check = |api, name: Value| validate_create(api, &json!({"keypair": {"name": name}})).map(|b| b.name);
        let message = |api, name: Value| check(api, name).err().map(|e| (e.code, e.message));
        assert_eq!(check(V2_1, json!("ok name_-1")).ok(), Some("ok name_-1".into()));
        assert_eq!(
            message(V2_1, json!("bad/name")),
            Some(("KPS.1101", r"Invalid input for field/attribute name. Value: bad/name. 'bad/name' does not match '^[_\\- a-zA-Z0-9]+$'".into()))
        );
        assert_eq!(
            message(V2_1, json!("")),
            Some(("KPS.1101", "Invalid input for field/attribute name. Value: . '' should be non-empty".into()))
        );
        assert_eq!(
            message(V2_1, json!(null)),
            Some((
                "KPS.1101",
                "Invalid input for field/attribute name. Value: None. None is not of type 'string'".into()
            ))
        );
        assert_eq!(message(V2_1, json!(" lead")), Some(("KPS.1101", INVALID_NAME_21.into())));
        assert_eq!(message(V2_1, json!("tab\tin")), Some(("KPS.1101", INVALID_NAME_21.into())));
        let long = "a".repeat(256);
        assert!(message(V2_1, json!(long)).expect("too long").1.ends_with("is too long"));
        assert!(check(V2_1, json!("a".repeat(255))).is_ok());
        assert!(message(V2_1, json!("ops@laptop.1")).is_some());
        assert!(check(V2_92, json!("ops@laptop.1")).is_err(), "2.92 needs public_key");
        let at_292 = validate_create(V2_92, &json!({"keypair": {"name": "ops@laptop.1", "public_key": "k"}}));
        assert_eq!(at_292.ok().map(|b| b.name), Some("ops@laptop.1".into()));
        assert_eq!(check(NovaApi::Legacy, json!("  spaced out  ")).ok(), Some("spaced out".into()));
        assert_eq!(message(NovaApi::Legacy, json!("   ")), Some(("KPS.1101", INVALID_NAME_V2.into())));
    }

    #[test]
    fn key_protection_needs_the_kps_name_rule() {
        let body = json!({"keypair": {"name": "with space", "key_protection": {"encryption": {"type": "default"}}}});
        let error = validate_create(V2_1, &body).err().expect("kps rule");
        assert_eq!(error.code, "KPS.1101");
        assert!(error.message.ends_with("does not match '^[A-Za-z0-9_-]{1,64}$'"), "{}", error.message);
    }

    #[test]
    fn messages_never_show_the_private_key() {
        let body = json!({"keypair": {"key_protection": {"private_key": "SECRET", "encryption": {"type": "default"}}}});
        let error = validate_create(V2_1, &body).err().expect("name missing");
        assert!(!error.message.contains("SECRET"), "{}", error.message);
        assert!(error.message.contains("'***'"), "{}", error.message);
    }

    #[test]
    fn algorithm_rules() {
        let check = |keypair: Value| validate_create(V2_2, &json!({ "keypair": keypair })).err().map(|e| e.code);
        assert_eq!(check(json!({"name": "a", "algorithm": "ED25519"})), None);
        assert_eq!(check(json!({"name": "a", "algorithm": "DSA"})), Some("KPS.1001"));
        assert_eq!(check(json!({"name": "a", "algorithm": "ED25519", "public_key": "x"})), Some("KPS.1001"));
        assert_eq!(check(json!({"name": "a", "algorithm": "ED25519", "type": "x509"})), Some("KPS.1001"));
        assert_eq!(check(json!({"name": "a", "algorithm": "RSA_4096", "type": "x509"})), None);
    }
}
