//! The Nova `os-keypairs` API (`/v2`, `/v2.1`, project-less `/v2[.1]/os-keypairs`) with the KPS V2.1
//! `key_protection` and kps `algorithm` extensions: request validation with Nova's literal messages,
//! per-microversion differences, and the JSON shapes of `spec/nova-keypairs.md`.
//!
//! Everything here is about the wire: the use-cases themselves live in `crate::service`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::auth::Caller;
use super::error::ApiError;
use super::metrics::CustodyAction;
use super::microversion::MicroVersion;
use super::policy::{Action, Decision, Target};
use super::schema::{additional_properties, field_message, not_of_type, not_one_of, repr, str_repr};
use super::{AppState, private_key_response};
use crate::model::{Algorithm, KeyType};
use crate::model::{Keypair, ListFields, Scope};
use crate::service::{self, EncryptionRequest, MAX_LIST_LIMIT, NewKeypair, ProtectionRequest, ServiceError};
use bytes::Bytes;
use serde_json::value::RawValue;

/// Which flavour of the compute API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NovaApi {
    /// `/v2/...`: legacy v2 compatibility mode (2.1 behaviour, relaxed body validation).
    Legacy,
    /// `/v2.1/...` at the negotiated microversion.
    V21(MicroVersion),
}

impl NovaApi {
    fn at_least(self, minor: u32) -> bool {
        match self {
            Self::Legacy => minor <= 1,
            Self::V21(version) => version.at_least(minor),
        }
    }

    fn path_root(self) -> &'static str {
        match self {
            Self::Legacy => "/v2",
            Self::V21(_) => "/v2.1",
        }
    }
}

/// What every os-keypairs handler needs to know about its request.
pub struct NovaRequest<'a> {
    pub api: NovaApi,
    pub caller: &'a Caller,
    /// The `{project_id}` segment exactly as it appeared in the URL, if the route had one.
    pub url_project: Option<&'a str>,
    /// Decoded query parameters in request order.
    pub query: Vec<(String, String)>,
    /// `public_url` or `http://<Host>`, without a trailing slash.
    pub base_url: String,
    pub request_id: &'a str,
}

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
    !starts_or_ends_with_space && name.chars().all(super::schema::is_printable)
}

/// Validates `keypair.name` and returns the name to store.
fn validate_name(api: NovaApi, value: &Value, with_protection: bool) -> Result<String, ApiError> {
    let invalid = |reason: String| ApiError::invalid_name(field_message("name", value, &reason));
    let Value::String(name) = value else { return Err(invalid(not_of_type(value, "string"))) };
    // Legacy v2's name format is checked before the length (Nova's v2.0 schema).
    if api == NovaApi::Legacy && (name.trim().is_empty() || !name.chars().all(super::schema::is_printable)) {
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

/// The KPS name rule `^[A-Za-z0-9_-]{1,64}$`.
pub fn is_kps_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

// ---------------------------------------------------------------------------------------------------------
// Create body (§4.4, §5.1, §6.1, §8)

/// A create/import body that passed the schema step.
pub struct CreateBody {
    pub name: String,
    pub key_type: KeyType,
    pub public_key: Option<String>,
    pub user_id: Option<String>,
    pub key_protection: Option<ProtectionRequest>,
    pub algorithm: Option<Algorithm>,
}

/// A copy of a `keypair` object safe to show in a message: `key_protection.private_key` replaced by `'***'`.
/// The private key itself is never copied. Only built for an error message.
pub(super) fn masked(fields: &Map<String, Value>) -> Value {
    let copy = fields.iter().map(|(name, value)| {
        let value = if name == "key_protection" { masked_protection(value) } else { value.clone() };
        (name.clone(), value)
    });
    Value::Object(copy.collect())
}

/// A `key_protection` value safe to show: its `private_key` replaced by `'***'`, never copied.
fn masked_protection(value: &Value) -> Value {
    let Value::Object(fields) = value else { return value.clone() };
    let copy = fields.iter().map(|(name, value)| {
        let value = if name == "private_key" { Value::from("***") } else { value.clone() };
        (name.clone(), value)
    });
    Value::Object(copy.collect())
}

const KEYPAIR_PROPERTIES: [&str; 6] = ["name", "public_key", "key_protection", "algorithm", "type", "user_id"];

/// Validates a create body; returns the first error in the order Nova's jsonschema validator finds it: at
/// each level the value's type, then each known property's own checks (in schema order: `name`, `type`,
/// `public_key`, `user_id`, then the kps extensions), then missing required properties, then unexpected
/// ones.
pub fn validate_create(api: NovaApi, body: &Value) -> Result<CreateBody, ApiError> {
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
fn validate_keypair(api: NovaApi, keypair: &Value) -> Result<CreateBody, ApiError> {
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
    Ok(CreateBody { name, key_type, public_key, user_id, key_protection, algorithm })
}

pub(super) fn validate_algorithm_value(value: &Value) -> Result<Algorithm, ApiError> {
    let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
    let Value::String(text) = value else {
        return Err(ApiError::schema(field_message("algorithm", value, &not_of_type(value, "string"))));
    };
    Algorithm::from_name(text)
        .ok_or_else(|| ApiError::schema(field_message("algorithm", value, &not_one_of(value, &names))))
}

pub(super) fn check_algorithm_use(
    algorithm: Algorithm,
    key_type: KeyType,
    importing: bool,
    keypair: &Map<String, Value>,
) -> Result<(), ApiError> {
    if importing {
        return Err(ApiError::schema(field_message(
            "keypair",
            &masked(keypair),
            "'algorithm' is only allowed when the key pair is generated (without 'public_key')",
        )));
    }
    if key_type == KeyType::X509 && !algorithm.is_rsa() {
        let value = Value::from(algorithm.as_str());
        let rsa: Vec<&str> = Algorithm::ALL.iter().filter(|a| a.is_rsa()).map(|a| a.as_str()).collect();
        return Err(ApiError::schema(field_message("algorithm", &value, &not_one_of(&value, &rsa))));
    }
    Ok(())
}

const KMS_KEY_ID_LEN: [usize; 5] = [8, 4, 4, 4, 12];

fn is_kms_key_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.len() == KMS_KEY_ID_LEN.len()
        && parts
            .iter()
            .zip(KMS_KEY_ID_LEN)
            .all(|(part, len)| part.len() == len && part.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()))
}

/// Shape checks of `key_protection` (§8): unknown properties and wrong JSON types are KPS.1001, every other
/// problem KPS.1401.
pub fn validate_key_protection(value: &Value) -> Result<ProtectionRequest, ApiError> {
    let invalid =
        |detail: &str| ApiError::new(StatusCode::BAD_REQUEST, "KPS.1401", format!("Invalid key_protection: {detail}"));
    let shown = || masked_protection(value);
    let Value::Object(fields) = value else {
        return Err(ApiError::schema(field_message("key_protection", &shown(), &not_of_type(value, "object"))));
    };
    let extras: Vec<&str> =
        fields.keys().map(String::as_str).filter(|k| !["private_key", "encryption"].contains(k)).collect();
    if !extras.is_empty() {
        return Err(ApiError::schema(field_message("key_protection", &shown(), &additional_properties(&extras))));
    }
    let private_key = match fields.get("private_key") {
        None => None,
        Some(Value::String(text)) => {
            if text.chars().count() > 65_535 {
                return Err(invalid("private_key is longer than 65535 characters"));
            }
            Some(zeroize::Zeroizing::new(text.clone()))
        }
        Some(other) => {
            return Err(ApiError::schema(field_message("private_key", other, &not_of_type(other, "string"))));
        }
    };
    let Some(encryption) = fields.get("encryption") else { return Err(invalid("encryption is required")) };
    let Value::Object(settings) = encryption else {
        return Err(ApiError::schema(field_message("encryption", encryption, &not_of_type(encryption, "object"))));
    };
    let extras: Vec<&str> =
        settings.keys().map(String::as_str).filter(|k| !["type", "kms_key_name", "kms_key_id"].contains(k)).collect();
    if !extras.is_empty() {
        return Err(ApiError::schema(field_message("encryption", encryption, &additional_properties(&extras))));
    }
    let text = |name: &str| -> Result<Option<&str>, ApiError> {
        match settings.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(ApiError::schema(field_message(name, other, &not_of_type(other, "string")))),
        }
    };
    let encryption_type = text("type")?;
    let key_name = text("kms_key_name")?;
    let key_id = text("kms_key_id")?;
    let encryption = match encryption_type {
        None => return Err(invalid("encryption.type is required")),
        Some("default") => EncryptionRequest::Default,
        Some("kms") => {
            if key_name.is_some_and(|n| !(1..=255).contains(&n.chars().count())) {
                return Err(invalid("kms_key_name must be 1 to 255 characters"));
            }
            if key_id.is_some_and(|id| !is_kms_key_id(id)) {
                return Err(invalid("kms_key_id is not a KMS key id"));
            }
            if key_name.is_none() && key_id.is_none() {
                return Err(invalid("encryption.type kms requires kms_key_name or kms_key_id"));
            }
            EncryptionRequest::Kms { key_name: key_name.map(str::to_owned), key_id: key_id.map(str::to_owned) }
        }
        Some(_) => return Err(invalid("encryption.type must be default or kms")),
    };
    Ok(ProtectionRequest { private_key, encryption })
}

// ---------------------------------------------------------------------------------------------------------
// Query parameters (§6.2–6.4)

/// The query parameters a route accepts at this version.
fn allowed_query(api: NovaApi, list: bool) -> Vec<&'static str> {
    let mut allowed = Vec::new();
    if api.at_least(10) {
        allowed.push("user_id");
    }
    if list && api.at_least(35) {
        allowed.extend(["limit", "marker"]);
    }
    allowed
}

/// From 2.75 unknown query parameters are rejected; before, they are ignored.
fn check_query(api: NovaApi, query: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    if !api.at_least(75) {
        return Ok(());
    }
    let mut extras: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).filter(|k| !allowed.contains(k)).collect();
    extras.dedup();
    if extras.is_empty() {
        return Ok(());
    }
    let mut unique: Vec<&str> = Vec::new();
    for extra in extras {
        if !unique.contains(&extra) {
            unique.push(extra);
        }
    }
    Err(ApiError::new(StatusCode::BAD_REQUEST, "KPS.1003", additional_properties(&unique)))
}

fn first<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn last<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The user a request acts on: `?user_id=` (2.10+, first value; empty = the caller) or the caller.
fn target_user(request: &NovaRequest<'_>, allowed: &[&str]) -> String {
    match first(&request.query, "user_id") {
        Some(user) if allowed.contains(&"user_id") && !user.is_empty() => user.to_owned(),
        _ => request.caller.user_id.clone(),
    }
}

/// Policy for a route naming one key pair of `user` (errors.md §4 steps 8 and 10): decided on the target
/// user if the rule allows that; otherwise on the record, loaded here. A missing record is checked as
/// "no key pair" first, so that a denied caller gets 403, not a 404 that tells which names exist.
pub(super) async fn authorize_keypair(
    state: &AppState,
    caller: &Caller,
    request_id: &str,
    action: Action,
    user: &str,
    name: &str,
) -> Result<Option<Keypair>, ApiError> {
    if state.policy.enforce(action, caller, &Target::user_before_load(user))? == Decision::Allow {
        return Ok(None);
    }
    match state.service.get(user, &caller.project_id, name).await {
        Ok(record) => {
            state.policy.enforce(action, caller, &Target::keypair(&record))?;
            Ok(Some(record))
        }
        Err(error) => {
            state.policy.enforce(action, caller, &Target::user(user))?;
            Err(service_error(error, request_id))
        }
    }
}

pub fn service_error(error: ServiceError, request_id: &str) -> ApiError {
    match error {
        ServiceError::NotFound { name, user_id } => ApiError::keypair_not_found(&name, &user_id),
        ServiceError::MarkerNotFound(marker) => ApiError::marker_not_found(&marker),
        ServiceError::Duplicate(name) => ApiError::duplicate_name(&name),
        ServiceError::QuotaExceeded => ApiError::quota_exceeded(),
        ServiceError::Keypair(error) => error.into(),
        ServiceError::PrivateKey { error, name } => {
            ApiError::new(StatusCode::BAD_REQUEST, error.code(), error.message_for(&name))
        }
        ServiceError::PrivateKeyWithoutPublicKey => {
            ApiError::new(StatusCode::BAD_REQUEST, "KPS.1303", "key_protection.private_key requires keypair.public_key")
        }
        ServiceError::KmsNotConfigured => ApiError::new(
            StatusCode::BAD_REQUEST,
            "KPS.1402",
            "Encryption type kms is not available: no KMS is configured",
        ),
        ServiceError::DefaultEncryptionDisabled => {
            ApiError::new(StatusCode::BAD_REQUEST, "KPS.1403", "Encryption type default is disabled on this server")
        }
        ServiceError::Kms { error, name } => {
            if matches!(error.code(), "KPS.1801" | "KPS.1805" | "KPS.1806") {
                tracing::warn!(%error, request_id, keypair = name, "KMS failure");
            }
            let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            ApiError::new(status, error.code(), error.message_for_keypair(&name))
        }
        ServiceError::Undecryptable(name) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "KPS.1806",
            format!("Escrowed private key of keypair {name} could not be decrypted"),
        ),
        ServiceError::Denied(action) => ApiError::policy_denied(&action),
        ServiceError::NoEscrow(name) => {
            ApiError::new(StatusCode::NOT_FOUND, "KPS.1602", format!("Keypair {name} has no escrowed private key"))
        }
        ServiceError::AlreadyEscrowed(name) => ApiError::new(
            StatusCode::CONFLICT,
            "KPS.1702",
            format!("Keypair {name} already has an escrowed private key; clear it first"),
        ),
        ServiceError::Custody(error) => {
            tracing::error!(%error, request_id, "sealing failed");
            ApiError::internal(request_id)
        }
        ServiceError::StoreUnavailable(_) | ServiceError::Storage(_) => ApiError::from_store(&error, request_id),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Handlers

/// `POST .../os-keypairs`: create (generate) or import.
pub async fn create(state: &AppState, request: &NovaRequest<'_>, body: &Value) -> Result<Response, ApiError> {
    let body = validate_create(request.api, body)?;
    let caller = request.caller;
    let owner = match body.user_id.as_deref() {
        None | Some("") => caller.user_id.clone(),
        Some(user) => user.to_owned(),
    };
    let target = Target::new_keypair(&owner, &caller.project_id);
    state.policy.enforce(Action::NovaCreate, caller, &target)?;
    let escrows = body.key_protection.as_ref().is_some_and(|p| p.escrows(body.public_key.is_none()));
    if escrows && !state.custody_enabled {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "KPS.1901", "Private key custody is disabled on this server"));
    }
    let new = NewKeypair {
        name: body.name,
        key_type: body.key_type,
        public_key: body.public_key,
        algorithm: body.algorithm,
        user_id: owner,
        project_id: caller.project_id.clone(),
        scope: Scope::User,
        protection: body.key_protection,
    };
    let created = state.service.create(new).await.map_err(|e| service_error(e, request.request_id))?;
    if created.record.sealed.is_some() {
        super::audit::custody_action(state, caller, CustodyAction::Escrow, &created.record, request.request_id);
    }

    let with_type = request.api.at_least(2);
    let record = &created.record;
    let mut keypair = Map::new();
    keypair.insert("name".into(), record.name.clone().into());
    if with_type {
        keypair.insert("type".into(), record.key_type.as_str().into());
    }
    keypair.insert("public_key".into(), record.public_key.clone().into());
    keypair.insert("fingerprint".into(), record.fingerprint.clone().into());
    keypair.insert("user_id".into(), record.user_id.clone().into());
    let status = if with_type { StatusCode::CREATED } else { StatusCode::OK };
    match created.private_key {
        Some(private_key) => Ok(private_key_response(status, keypair, "keypair", &private_key)),
        None => Ok((status, json_body(&json!({ "keypair": keypair }))).into_response()),
    }
}

/// `GET .../os-keypairs`.
pub async fn list(state: &AppState, request: &NovaRequest<'_>) -> Result<Response, ApiError> {
    let api = request.api;
    let allowed = allowed_query(api, true);
    check_query(api, &request.query, &allowed)?;
    let paging = api.at_least(35);
    let limit = match last(&request.query, "limit").filter(|_| paging) {
        None => None,
        Some(_) => Some(parse_limit(&request.query)?),
    };
    let marker = last(&request.query, "marker").filter(|_| paging);
    let user = target_user(request, &allowed);
    state.policy.enforce(Action::NovaIndex, request.caller, &Target::user(&user))?;

    // The page depends on the request's shape (microversion, links, query) and on the two owners' keys:
    // cached by the former, valid while the generations of the latter are unchanged (`page_cache`).
    let project_id = &request.caller.project_id;
    let stamp = state.service.list_stamp(&user, project_id);
    let cache_key = state
        .list_pages
        .enabled()
        .then(|| format!("{:?}", (api, project_id, &user, &request.base_url, request.url_project, &request.query)));
    if let Some(body) = cache_key.as_deref().and_then(|key| state.list_pages.get(key, stamp)) {
        return Ok(json_bytes(StatusCode::OK, body));
    }

    // From 2.35 a page of at most 1000; before, every key pair, as Nova (nova-keypairs.md §6.2).
    let page_size = limit.unwrap_or(MAX_LIST_LIMIT).min(MAX_LIST_LIMIT);
    let page = if paging {
        state.service.list_encoded(&user, project_id, marker, page_size).await
    } else {
        state.service.list_all_encoded(&user, project_id).await
    }
    .map_err(|e| service_error(e, request.request_id))?;
    let records: Vec<ListFields> = page.fields().map_err(|e| service_error(e, request.request_id))?;
    let with_type = api.at_least(2);
    let keypairs = records
        .iter()
        .map(|record| Wrapped {
            keypair: ListItem {
                name: record.name,
                key_type: with_type.then_some(record.key_type),
                public_key: record.public_key,
                fingerprint: record.fingerprint,
            },
        })
        .collect();
    let full_page = paging && page_size > 0 && records.len() == page_size;
    let keypairs_links = match records.last().filter(|_| full_page) {
        Some(last) => {
            let last_name = last
                .name_text()
                .map_err(|e| service_error(ServiceError::Storage(e.to_string()), request.request_id))?;
            Some([Link { rel: "next", href: next_link(request, &allowed, &last_name) }])
        }
        None => None,
    };
    // Serializing borrowed strings and raw JSON cannot fail.
    let body = Bytes::from(serde_json::to_vec(&ListBody { keypairs, keypairs_links }).unwrap_or_default());
    if let Some(key) = cache_key {
        state.list_pages.insert(key, stamp, body.clone());
    }
    Ok(json_bytes(StatusCode::OK, body))
}

/// A JSON response from an already serialized body.
fn json_bytes(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `{"keypair": ...}`.
#[derive(Serialize)]
struct Wrapped<T> {
    keypair: T,
}

/// A list item: `type` only from 2.2. The fields are JSON text as stored (already escaped).
#[derive(Serialize)]
struct ListItem<'a> {
    name: &'a RawValue,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    key_type: Option<&'a RawValue>,
    public_key: &'a RawValue,
    fingerprint: &'a RawValue,
}

#[derive(Serialize)]
struct Link {
    rel: &'static str,
    href: String,
}

#[derive(Serialize)]
struct ListBody<'a> {
    keypairs: Vec<Wrapped<ListItem<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keypairs_links: Option<[Link; 1]>,
}

/// A JSON response serialized straight from borrowed data (no intermediate `Value`).
pub fn json_ok<T: Serialize>(status: StatusCode, body: &T) -> Response {
    // Serializing plain structs of strings and numbers cannot fail.
    json_bytes(status, Bytes::from(serde_json::to_vec(body).unwrap_or_default()))
}

/// Every `limit` value must be digits only; the last one is used.
fn parse_limit(query: &[(String, String)]) -> Result<usize, ApiError> {
    for (_, value) in query.iter().filter(|(k, _)| k == "limit") {
        let shown = Value::from(value.as_str());
        if !value.bytes().all(|b| b.is_ascii_digit()) {
            let reason = format!("{} does not match '^[0-9]*$'", repr(&shown));
            return Err(ApiError::bad_query_value(format!(
                "Invalid input for query parameters limit. Value: {value}. {reason}"
            )));
        }
        if value.is_empty() {
            return Err(ApiError::bad_query_value(
                "Invalid input for query parameters limit. Value: . '' should be non-empty",
            ));
        }
    }
    let value = last(query, "limit").unwrap_or("0");
    // Digits only, so the only failure is overflow: anything that large means "as many as allowed".
    Ok(value.parse::<usize>().unwrap_or(usize::MAX))
}

/// The `next` link, built as Nova builds it (§6.2).
///
/// Only the parameters the list accepts at this version are kept: Nova drops the others before building it.
fn next_link(request: &NovaRequest<'_>, allowed: &[&str], last_name: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = request
        .query
        .iter()
        .filter(|(k, _)| allowed.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.sort_unstable();
    let mut kept: Vec<(&str, &str)> = Vec::new();
    for (name, value) in pairs {
        match kept.last_mut() {
            Some(previous) if previous.0 == name => previous.1 = value,
            _ => kept.push((name, value)),
        }
    }
    match kept.iter_mut().find(|(name, _)| *name == "marker") {
        Some(marker) => marker.1 = last_name,
        None => kept.push(("marker", last_name)),
    }
    let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(kept).finish();
    let project = request.url_project.map(|p| format!("/{p}")).unwrap_or_default();
    format!("{}{}{project}/os-keypairs?{query}", request.base_url, request.api.path_root())
}

/// `GET .../os-keypairs/{name}`.
pub async fn show(state: &AppState, request: &NovaRequest<'_>, name: &str) -> Result<Response, ApiError> {
    let allowed = allowed_query(request.api, false);
    check_query(request.api, &request.query, &allowed)?;
    let user = target_user(request, &allowed);
    let record =
        match authorize_keypair(state, request.caller, request.request_id, Action::NovaShow, &user, name).await? {
            Some(record) => record,
            None => state
                .service
                .get(&user, &request.caller.project_id, name)
                .await
                .map_err(|e| service_error(e, request.request_id))?,
        };
    let view = ShowItem {
        name: &record.name,
        public_key: &record.public_key,
        fingerprint: &record.fingerprint,
        user_id: &record.user_id,
        key_type: request.api.at_least(2).then_some(record.key_type.as_str()),
        id: record.id,
        created_at: service::format_timestamp(record.created_at_us),
        updated_at: None,
        deleted: false,
        deleted_at: None,
    };
    Ok(json_ok(StatusCode::OK, &Wrapped { keypair: view }))
}

/// Show: Nova's fields; `updated_at`/`deleted_at` are always null and `deleted` false (Nova semantics).
#[derive(Serialize)]
struct ShowItem<'a> {
    name: &'a str,
    public_key: &'a str,
    fingerprint: &'a str,
    user_id: &'a str,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    key_type: Option<&'a str>,
    id: u64,
    created_at: String,
    updated_at: Option<()>,
    deleted: bool,
    deleted_at: Option<()>,
}

/// `DELETE .../os-keypairs/{name}`.
pub async fn delete(state: &AppState, request: &NovaRequest<'_>, name: &str) -> Result<Response, ApiError> {
    let allowed = allowed_query(request.api, false);
    check_query(request.api, &request.query, &allowed)?;
    let user = target_user(request, &allowed);
    authorize_keypair(state, request.caller, request.request_id, Action::NovaDelete, &user, name).await?;
    let deleted = state
        .service
        .delete(&user, &request.caller.project_id, name)
        .await
        .map_err(|e| service_error(e, request.request_id))?;
    if deleted.sealed.is_some() {
        let action = CustodyAction::DeleteEscrowed;
        super::audit::custody_action(state, request.caller, action, &deleted, request.request_id);
    }
    let mut response = if request.api.at_least(2) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        let mut accepted = StatusCode::ACCEPTED.into_response();
        accepted.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        accepted
    };
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// A JSON body with `Content-Type: application/json`.
pub fn json_body(value: &Value) -> ([(header::HeaderName, HeaderValue); 1], String) {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn key_protection_shape_errors() {
        let check = |kp: Value| validate_key_protection(&kp).err().map(|e| (e.code, e.message));
        assert_eq!(check(json!("x")).map(|e| e.0), Some("KPS.1001"));
        assert_eq!(check(json!({"encryption": {"type": "default"}, "x": 1})).map(|e| e.0), Some("KPS.1001"));
        assert_eq!(check(json!({})).map(|e| e.0), Some("KPS.1401"));
        assert_eq!(check(json!({"encryption": {}})).map(|e| e.0), Some("KPS.1401"));
        assert_eq!(check(json!({"encryption": {"type": "aes"}})).map(|e| e.0), Some("KPS.1401"));
        assert_eq!(check(json!({"encryption": {"type": 1}})).map(|e| e.0), Some("KPS.1001"));
        assert_eq!(check(json!({"encryption": {"type": "kms"}})).map(|e| e.0), Some("KPS.1401"));
        assert_eq!(check(json!({"encryption": {"type": "kms", "kms_key_id": "nope"}})).map(|e| e.0), Some("KPS.1401"));
        assert_eq!(check(json!({"encryption": {"type": "default"}, "private_key": 5})).map(|e| e.0), Some("KPS.1001"));
        let ok = json!({"encryption": {"type": "kms", "kms_key_id": "3c1d5a0e-8f6b-4e52-9d7a-21f0c4b8e6a1"}});
        assert!(validate_key_protection(&ok).is_ok());
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

    #[test]
    fn unknown_query_parameters_are_rejected_from_2_75() {
        let query = vec![("foo".to_owned(), "1".to_owned())];
        assert!(check_query(NovaApi::V21(MicroVersion::new(2, 74)), &query, &[]).is_ok());
        let error = check_query(NovaApi::V21(MicroVersion::new(2, 75)), &query, &[]).expect_err("2.75");
        assert_eq!(error.message, "Additional properties are not allowed ('foo' was unexpected)");
    }

    #[test]
    fn limit_must_be_digits() {
        let query = |v: &str| vec![("limit".to_owned(), v.to_owned())];
        assert_eq!(parse_limit(&query("5")).ok(), Some(5));
        assert_eq!(parse_limit(&query("0")).ok(), Some(0));
        let error = parse_limit(&query("-1")).expect_err("negative");
        assert_eq!(
            error.message,
            "Invalid input for query parameters limit. Value: -1. '-1' does not match '^[0-9]*$'"
        );
        assert_eq!(error.code, "KPS.1004");
    }
}
