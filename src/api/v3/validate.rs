//! Validation of KPS V3 bodies (spec/kps-v3.md): the `{"keypair": {...}}` object of each operation, checked
//! in the order of Nova's validator (each property's own checks, then required, then unexpected ones), the
//! V3 name and `user_id` rules, and descriptions. The `key_protection` and `algorithm` rules shared with
//! Nova live in `keypair_ops`.
//!
//! Pure: it reads JSON values and returns parsed requests or the catalogue error.

use serde_json::{Map, Value};

use crate::api::error::ApiError;
use crate::api::keypair_ops::{
    CreateRequest, check_algorithm_use, is_kps_name, masked, validate_algorithm_value, validate_key_protection,
};
use crate::api::schema::{additional_properties, field_message, not_of_type, not_one_of, repr, str_repr};
use crate::model::{KeyType, Scope};

const USER_ID_PATTERN: &str = "^[0-9a-zA-Z_-]{1,64}$";

fn is_v3_user_id(text: &str) -> bool {
    text.is_empty()
        || ((1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
}

/// `{"keypair": {...}}` with the keypair object's properties checked by `check_properties`, then
/// unexpected ones (the order of Nova's validator: properties, required, additional).
pub fn keypair_object<'v>(
    body: &'v Value,
    allowed: &[&str],
    required: &[&str],
) -> Result<&'v Map<String, Value>, ApiError> {
    let Value::Object(root) = body else { return Err(ApiError::schema(not_of_type(body, "object"))) };
    let Some(keypair) = root.get("keypair") else { return Err(ApiError::schema("'keypair' is a required property")) };
    let Value::Object(fields) = keypair else {
        return Err(ApiError::schema(field_message("keypair", keypair, &not_of_type(keypair, "object"))));
    };
    if let Some(missing) = required.iter().find(|p| !fields.contains_key(**p)) {
        return Err(ApiError::schema(field_message(
            "keypair",
            &masked(fields),
            &format!("'{missing}' is a required property"),
        )));
    }
    let extras: Vec<&str> = fields.keys().map(String::as_str).filter(|k| !allowed.contains(k)).collect();
    if !extras.is_empty() {
        return Err(ApiError::schema(field_message("keypair", &masked(fields), &additional_properties(&extras))));
    }
    let extras: Vec<&str> = root.keys().map(String::as_str).filter(|k| *k != "keypair").collect();
    if !extras.is_empty() {
        return Err(ApiError::schema(additional_properties(&extras)));
    }
    Ok(fields)
}

fn optional_string<'v>(fields: &'v Map<String, Value>, name: &str) -> Result<Option<&'v str>, ApiError> {
    match fields.get(name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(ApiError::schema(field_message(name, other, &not_of_type(other, "string")))),
    }
}

fn enum_field<'v>(fields: &'v Map<String, Value>, name: &str, options: &[&str]) -> Result<Option<&'v str>, ApiError> {
    let value = optional_string(fields, name)?;
    match value {
        Some(text) if !options.contains(&text) => {
            let shown = Value::from(text);
            Err(ApiError::schema(field_message(name, &shown, &not_one_of(&shown, options))))
        }
        other => Ok(other),
    }
}

pub fn user_id_field(fields: &Map<String, Value>) -> Result<Option<&str>, ApiError> {
    let user_id = optional_string(fields, "user_id")?;
    if let Some(text) = user_id.filter(|t| !is_v3_user_id(t)) {
        let shown = Value::from(text);
        return Err(ApiError::schema(field_message(
            "user_id",
            &shown,
            &format!("{} does not match {}", repr(&shown), str_repr(USER_ID_PATTERN)),
        )));
    }
    Ok(user_id)
}

/// A name that identifies an existing key pair: any string of 1–255 characters (KPS.1001 otherwise).
pub fn existing_name(fields: &Map<String, Value>) -> Result<String, ApiError> {
    let value = fields.get("name").unwrap_or(&Value::Null);
    let Value::String(name) = value else {
        return Err(ApiError::schema(field_message("name", value, &not_of_type(value, "string"))));
    };
    if name.is_empty() {
        return Err(ApiError::schema(field_message("name", value, "'' should be non-empty")));
    }
    if name.chars().count() > 255 {
        return Err(ApiError::schema(field_message("name", value, &format!("{} is too long", repr(value)))));
    }
    Ok(name.clone())
}

const CREATE_PROPERTIES: [&str; 7] = ["name", "type", "public_key", "scope", "algorithm", "user_id", "key_protection"];

pub fn validate_create(body: &Value, require_public_key: bool) -> Result<CreateRequest, ApiError> {
    let required: &[&str] = if require_public_key { &["name", "public_key"] } else { &["name"] };
    // Property checks come first in Nova's order; run them on the raw object before required/additional.
    if let Some(Value::Object(fields)) = body.get("keypair") {
        check_create_properties(fields)?;
    }
    let fields = keypair_object(body, &CREATE_PROPERTIES, required)?;
    let parsed = check_create_properties(fields)?;
    if let Some(algorithm) = parsed.algorithm {
        check_algorithm_use(algorithm, parsed.key_type, parsed.public_key.is_some(), fields)?;
    }
    Ok(parsed)
}

fn check_create_properties(fields: &Map<String, Value>) -> Result<CreateRequest, ApiError> {
    let name = match fields.get("name") {
        Some(value) => validate_v3_name(value)?,
        None => String::new(),
    };
    let key_type = match enum_field(fields, "type", &["ssh", "x509"])? {
        Some("x509") => KeyType::X509,
        _ => KeyType::Ssh,
    };
    let public_key = optional_string(fields, "public_key")?.map(str::to_owned);
    let scope = match enum_field(fields, "scope", &["user", "domain"])? {
        Some("domain") => Scope::Domain,
        _ => Scope::User,
    };
    let algorithm = fields.get("algorithm").map(validate_algorithm_value).transpose()?;
    let user_id = user_id_field(fields)?.map(str::to_owned);
    let key_protection = fields.get("key_protection").map(validate_key_protection).transpose()?;
    Ok(CreateRequest { name, key_type, public_key, user_id, scope, algorithm, key_protection })
}

/// The V3 name rule for new key pairs: `^[A-Za-z0-9_-]{1,64}$`, with Nova's type/empty/length texts.
fn validate_v3_name(value: &Value) -> Result<String, ApiError> {
    let invalid = |reason: String| ApiError::invalid_name(field_message("name", value, &reason));
    let Value::String(name) = value else { return Err(invalid(not_of_type(value, "string"))) };
    if name.is_empty() {
        return Err(invalid(format!("{} should be non-empty", repr(value))));
    }
    if name.chars().count() > 255 {
        return Err(invalid(format!("{} is too long", repr(value))));
    }
    if !is_kps_name(name) {
        return Err(invalid(format!("{} does not match '^[A-Za-z0-9_-]{{1,64}}$'", repr(value))));
    }
    Ok(name.clone())
}

pub fn check_description(fields: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let Some(value) = fields.get("description") else { return Ok(None) };
    let Value::String(text) = value else {
        return Err(ApiError::schema(field_message("description", value, &not_of_type(value, "string"))));
    };
    if text.chars().count() > 255 {
        return Err(ApiError::schema(field_message("description", value, &format!("{} is too long", repr(value)))));
    }
    Ok(Some(text.clone()))
}
