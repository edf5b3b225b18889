//! The KPS V3 custody API (`/v3/{project_id}/keypairs...`, spec/kps-v3.md): key pairs with `scope` and
//! descriptions, and the private-key custody operations (import, export, clear, batch import, batch export).
//!
//! Only the JSON shapes live here; every operation calls the same `crate::service` functions as the Nova API.

use std::io::Write;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::audit;
use super::auth::Caller;
use super::error::ApiError;
use super::metrics::CustodyAction;
use super::nova::{self, check_algorithm_use, json_body, masked, service_error, validate_algorithm_value};
use super::policy::{Action, Decision, Target};
use super::schema::{additional_properties, field_message, not_of_type, not_one_of, repr};
use super::{AppState, private_key_response};
use crate::model::EncryptorKind;
use crate::model::KeyType;
use crate::model::{Keypair, KeypairSummary, Scope};
use crate::service::{EncryptionRequest, NewKeypair, ProtectionRequest, ServiceError};

/// A V3 route below `/v3/{project_id}/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V3Route {
    Keypairs,
    Keypair(String),
    KeypairPrivateKey(String),
    ImportPrivateKey,
    ExportPrivateKey,
    BatchImport,
    BatchExport,
    /// Operations that need servers: answered 501 KPS.1014 after routing.
    NeedsServers(NeedsServers),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeedsServers {
    Associate,
    BatchAssociate,
    Disassociate,
    Task,
    RunningTasks,
    FailedTasks,
    FailedTask,
}

impl V3Route {
    /// Parses the segments after `/v3/{project_id}/`.
    pub fn parse(segments: &[&str]) -> Option<Self> {
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        Some(match segments {
            ["keypairs"] => Self::Keypairs,
            ["keypairs", "batch-import"] => Self::BatchImport,
            ["keypairs", "associate"] => Self::NeedsServers(NeedsServers::Associate),
            ["keypairs", "batch-associate"] => Self::NeedsServers(NeedsServers::BatchAssociate),
            ["keypairs", "disassociate"] => Self::NeedsServers(NeedsServers::Disassociate),
            ["keypairs", name] => Self::Keypair(decode(name)),
            ["keypairs", "private-key", "import"] => Self::ImportPrivateKey,
            ["keypairs", "private-key", "export"] => Self::ExportPrivateKey,
            ["keypairs", "private-key", "batch-export"] => Self::BatchExport,
            ["keypairs", name, "private-key"] => Self::KeypairPrivateKey(decode(name)),
            ["tasks", _] => Self::NeedsServers(NeedsServers::Task),
            ["running-tasks"] => Self::NeedsServers(NeedsServers::RunningTasks),
            ["failed-tasks"] => Self::NeedsServers(NeedsServers::FailedTasks),
            ["failed-tasks", _] => Self::NeedsServers(NeedsServers::FailedTask),
            _ => return None,
        })
    }

    pub fn allowed_methods(&self) -> &'static [axum::http::Method] {
        use axum::http::Method;
        match self {
            Self::Keypairs => &[Method::GET, Method::HEAD, Method::POST],
            Self::Keypair(_) => &[Method::DELETE, Method::GET, Method::HEAD, Method::PUT],
            Self::KeypairPrivateKey(_) => &[Method::DELETE],
            Self::NeedsServers(NeedsServers::Task | NeedsServers::RunningTasks) => &[Method::GET, Method::HEAD],
            Self::NeedsServers(NeedsServers::FailedTasks) => &[Method::DELETE, Method::GET, Method::HEAD],
            Self::NeedsServers(NeedsServers::FailedTask) => &[Method::DELETE],
            _ => &[Method::POST],
        }
    }

    /// KPS.1014 for the routes that need servers, named by the SDK method.
    pub fn needs_servers(&self, method: &axum::http::Method) -> Option<ApiError> {
        let Self::NeedsServers(operation) = self else { return None };
        let name = match operation {
            NeedsServers::Associate => "associate_keypair",
            NeedsServers::BatchAssociate => "batch_associate_keypair",
            NeedsServers::Disassociate => "disassociate_keypair",
            NeedsServers::Task => "list_keypair_task",
            NeedsServers::RunningTasks => "list_running_task",
            NeedsServers::FailedTasks if method == axum::http::Method::DELETE => "delete_all_failed_task",
            NeedsServers::FailedTasks => "list_failed_task",
            NeedsServers::FailedTask => "delete_failed_task",
        };
        Some(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "KPS.1014",
            format!("Operation {name} needs servers and is not supported by this service"),
        ))
    }
}

/// What every V3 handler needs to know about its request.
pub struct V3Request<'a> {
    pub caller: &'a Caller,
    pub query: Vec<(String, String)>,
    pub request_id: &'a str,
}

const USER_ID_PATTERN: &str = "^[0-9a-zA-Z_-]{1,64}$";

fn is_v3_user_id(text: &str) -> bool {
    text.is_empty()
        || ((1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
}

/// Step 8 on what the request names (the target user); a rule that needs the stored record is finished
/// by `record_check` once the service has loaded it.
fn authorize(state: &AppState, caller: &Caller, action: Action, target_user: &str) -> Result<(), ApiError> {
    state.policy.enforce(action, caller, &Target::user_before_load(target_user)).map(drop)
}

/// The policy check on a loaded record (`creator`, a `domain` key's project).
fn record_check<'a>(
    state: &'a AppState,
    caller: &'a Caller,
    action: Action,
) -> impl Fn(&Keypair) -> Result<(), ServiceError> + Send + Sync + 'a {
    move |record| match state.policy.decide(action, caller, &Target::keypair(record)) {
        Decision::Allow => Ok(()),
        Decision::Deny | Decision::Undecided => Err(ServiceError::Denied(action.name().to_owned())),
    }
}

/// V3 routes accept no query parameters except list's `limit` and `marker`.
fn check_query(query: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    let mut extras: Vec<&str> = Vec::new();
    for (name, _) in query {
        if !allowed.contains(&name.as_str()) && !extras.contains(&name.as_str()) {
            extras.push(name);
        }
    }
    if extras.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::BAD_REQUEST, "KPS.1003", additional_properties(&extras)))
    }
}

fn custody_switch(state: &AppState) -> Result<(), ApiError> {
    if state.custody_enabled {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::FORBIDDEN, "KPS.1901", "Private key custody is disabled on this server"))
    }
}

/// An empty `200`: no `Content-Type`, `Content-Length: 0`.
fn empty_ok() -> Response {
    let mut response = StatusCode::OK.into_response();
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

// ---------------------------------------------------------------------------------------------------------
// Body validation

/// `{"keypair": {...}}` with the keypair object's properties checked by `check_properties`, then
/// unexpected ones (the order of Nova's validator: properties, required, additional).
fn keypair_object<'v>(
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

fn user_id_field(fields: &Map<String, Value>) -> Result<Option<&str>, ApiError> {
    let user_id = optional_string(fields, "user_id")?;
    if let Some(text) = user_id.filter(|t| !is_v3_user_id(t)) {
        let shown = Value::from(text);
        return Err(ApiError::schema(field_message(
            "user_id",
            &shown,
            &format!("{} does not match {}", repr(&shown), super::schema::str_repr(USER_ID_PATTERN)),
        )));
    }
    Ok(user_id)
}

/// A name that identifies an existing key pair: any string of 1–255 characters (KPS.1001 otherwise).
fn existing_name(fields: &Map<String, Value>) -> Result<String, ApiError> {
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

struct V3Create {
    name: String,
    key_type: KeyType,
    public_key: Option<String>,
    scope: Scope,
    algorithm: Option<crate::model::Algorithm>,
    user_id: Option<String>,
    key_protection: Option<ProtectionRequest>,
}

fn validate_create(body: &Value, require_public_key: bool) -> Result<V3Create, ApiError> {
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

fn check_create_properties(fields: &Map<String, Value>) -> Result<V3Create, ApiError> {
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
    let key_protection = fields.get("key_protection").map(nova::validate_key_protection).transpose()?;
    Ok(V3Create { name, key_type, public_key, scope, algorithm, user_id, key_protection })
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
    if !nova::is_kps_name(name) {
        return Err(invalid(format!("{} does not match '^[A-Za-z0-9_-]{{1,64}}$'", repr(value))));
    }
    Ok(name.clone())
}

fn owner_of(caller: &Caller, user_id: Option<&str>) -> String {
    match user_id {
        None | Some("") => caller.user_id.clone(),
        Some(user) => user.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Handlers

/// `POST /v3/{p}/keypairs`.
pub async fn create(state: &AppState, request: &V3Request<'_>, body: &Value) -> Result<Response, ApiError> {
    check_query(&request.query, &[])?;
    let parsed = validate_create(body, false)?;
    let created = create_one(state, request, Action::Create, parsed).await?;
    let record = &created.record;
    let mut keypair = Map::new();
    keypair.insert("name".into(), record.name.clone().into());
    keypair.insert("type".into(), record.key_type.as_str().into());
    keypair.insert("public_key".into(), record.public_key.clone().into());
    keypair.insert("fingerprint".into(), record.fingerprint.clone().into());
    keypair.insert("user_id".into(), record.user_id.clone().into());
    Ok(match created.private_key {
        Some(private_key) => private_key_response(StatusCode::OK, keypair, "keypair", &private_key),
        None => (StatusCode::OK, json_body(&json!({ "keypair": keypair }))).into_response(),
    })
}

/// Policy, custody switch and the service call for one create/import item.
async fn create_one(
    state: &AppState,
    request: &V3Request<'_>,
    action: Action,
    parsed: V3Create,
) -> Result<crate::service::Created, ApiError> {
    let owner = owner_of(request.caller, parsed.user_id.as_deref());
    let target = Target::new_keypair(&owner, &request.caller.project_id);
    state.policy.enforce(action, request.caller, &target)?;
    let escrows = parsed.key_protection.as_ref().is_some_and(|p| p.escrows(parsed.public_key.is_none()));
    if escrows {
        custody_switch(state)?;
    }
    let new = NewKeypair {
        name: parsed.name,
        key_type: parsed.key_type,
        public_key: parsed.public_key,
        algorithm: parsed.algorithm,
        user_id: owner,
        project_id: request.caller.project_id.clone(),
        scope: parsed.scope,
        protection: parsed.key_protection,
    };
    let created = state.service.create(new).await.map_err(|e| service_error(e, request.request_id))?;
    if created.record.sealed.is_some() {
        audit::custody_action(state, request.caller, CustodyAction::Escrow, &created.record, request.request_id);
    }
    Ok(created)
}

/// `GET /v3/{p}/keypairs`.
pub async fn list(state: &AppState, request: &V3Request<'_>) -> Result<Response, ApiError> {
    check_query(&request.query, &["limit", "marker"])?;
    let limit = match request.query.iter().rev().find(|(k, _)| k == "limit") {
        None => 50,
        Some((_, value)) => parse_v3_limit(value)?,
    };
    let marker = request.query.iter().rev().find(|(k, _)| k == "marker").map(|(_, v)| v.as_str());
    let caller = request.caller;
    state.policy.enforce(Action::List, caller, &Target::user(&caller.user_id))?;
    let page_size = limit.min(crate::service::MAX_LIST_LIMIT);
    let mut records: Vec<KeypairSummary> = state
        .service
        .list_summaries(&caller.user_id, &caller.project_id, marker, page_size + 1)
        .await
        .map_err(|e| service_error(e, request.request_id))?;
    let more = records.len() > page_size;
    records.truncate(page_size);
    let items: Vec<Value> = records
        .iter()
        .map(|record| {
            json!({"keypair": {
                "name": record.name, "type": record.key_type, "scope": scope_name(record.scope),
                "public_key": record.public_key, "fingerprint": record.fingerprint,
                "is_key_protection": record.is_key_protection(), "frozen_state": "0"}})
        })
        .collect();
    let mut page_info = Map::new();
    page_info.insert("current_count".into(), records.len().into());
    if more && let Some(last) = records.last() {
        page_info.insert("next_marker".into(), last.name.clone().into());
    }
    Ok((StatusCode::OK, json_body(&json!({"keypairs": items, "page_info": page_info}))).into_response())
}

fn parse_v3_limit(value: &str) -> Result<usize, ApiError> {
    let shown = Value::from(value);
    let error = |reason: String| {
        ApiError::bad_query_value(format!("Invalid input for query parameters limit. Value: {value}. {reason}"))
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error(format!("{} does not match '^[0-9]+$'", repr(&shown))));
    }
    match value.parse::<usize>() {
        Ok(limit) if (1..=9999).contains(&limit) => Ok(limit),
        Ok(0) => Err(error(format!("{} is less than the minimum of 1", repr(&shown)))),
        _ => Err(error(format!("{} is greater than the maximum of 9999", repr(&shown)))),
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::User => "user",
        Scope::Domain => "domain",
    }
}

fn millis(micros: i64) -> i64 {
    micros / 1000
}

/// `GET /v3/{p}/keypairs/{name}`.
pub async fn show(state: &AppState, request: &V3Request<'_>, name: &str) -> Result<Response, ApiError> {
    check_query(&request.query, &[])?;
    let caller = request.caller;
    let loaded =
        nova::authorize_keypair(state, caller, request.request_id, Action::Show, &caller.user_id, name).await?;
    let record = match loaded {
        Some(record) => record,
        None => state
            .service
            .get(&caller.user_id, &caller.project_id, name)
            .await
            .map_err(|e| service_error(e, request.request_id))?,
    };
    let mut keypair = Map::new();
    keypair.insert("name".into(), record.name.clone().into());
    keypair.insert("id".into(), record.id.into());
    keypair.insert("type".into(), record.key_type.as_str().into());
    keypair.insert("scope".into(), scope_name(record.scope).into());
    keypair.insert("public_key".into(), record.public_key.clone().into());
    keypair.insert("fingerprint".into(), record.fingerprint.clone().into());
    keypair.insert("is_key_protection".into(), record.sealed.is_some().into());
    keypair.insert("deleted".into(), false.into());
    keypair.insert("description".into(), record.description.clone().into());
    keypair.insert("user_id".into(), record.user_id.clone().into());
    keypair.insert("create_time".into(), millis(record.created_at_us).into());
    keypair.insert("update_time".into(), millis(record.updated_at_us.unwrap_or(record.created_at_us)).into());
    keypair.insert("frozen_state".into(), 0.into());
    if let Some(sealed) = record.sealed.as_ref().filter(|s| s.encryptor == EncryptorKind::Kms) {
        keypair.insert("key_id".into(), sealed.key_ref.clone().into());
    }
    keypair.insert("algorithm".into(), record.algorithm.to_string().into());
    Ok((StatusCode::OK, json_body(&json!({ "keypair": keypair }))).into_response())
}

/// `PUT /v3/{p}/keypairs/{name}`: description.
pub async fn update(state: &AppState, request: &V3Request<'_>, name: &str, body: &Value) -> Result<Response, ApiError> {
    check_query(&request.query, &[])?;
    if let Some(Value::Object(fields)) = body.get("keypair") {
        check_description(fields)?;
    }
    let fields = keypair_object(body, &["description"], &["description"])?;
    let description = check_description(fields)?.unwrap_or_default();
    let caller = request.caller;
    authorize(state, caller, Action::Update, &caller.user_id)?;
    let check = record_check(state, caller, Action::Update);
    state
        .service
        .update_description(&caller.user_id, &caller.project_id, name, &check, &description)
        .await
        .map_err(|e| service_error(e, request.request_id))?;
    Ok(empty_ok())
}

fn check_description(fields: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let Some(value) = fields.get("description") else { return Ok(None) };
    let Value::String(text) = value else {
        return Err(ApiError::schema(field_message("description", value, &not_of_type(value, "string"))));
    };
    if text.chars().count() > 255 {
        return Err(ApiError::schema(field_message("description", value, &format!("{} is too long", repr(value)))));
    }
    Ok(Some(text.clone()))
}

/// `DELETE /v3/{p}/keypairs/{name}`: the key pair and its escrow.
pub async fn delete(state: &AppState, request: &V3Request<'_>, name: &str) -> Result<Response, ApiError> {
    check_query(&request.query, &[])?;
    let caller = request.caller;
    nova::authorize_keypair(state, caller, request.request_id, Action::Delete, &caller.user_id, name).await?;
    let deleted = state
        .service
        .delete(&caller.user_id, &caller.project_id, name)
        .await
        .map_err(|e| service_error(e, request.request_id))?;
    if deleted.sealed.is_some() {
        audit::custody_action(state, caller, CustodyAction::DeleteEscrowed, &deleted, request.request_id);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v3/{p}/keypairs/private-key/import`.
pub async fn import_private_key(state: &AppState, request: &V3Request<'_>, body: &Value) -> Result<Response, ApiError> {
    check_query(&request.query, &[])?;
    let fields = keypair_object(body, &["name", "user_id", "key_protection"], &["name", "key_protection"])?;
    let name = existing_name(fields)?;
    let user_id = user_id_field(fields)?;
    let protection = nova::validate_key_protection(&fields["key_protection"])?;
    if protection.private_key.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "KPS.1401",
            "Invalid key_protection: private_key is required",
        ));
    }
    let caller = request.caller;
    let owner = owner_of(caller, user_id);
    authorize(state, caller, Action::ImportPrivateKey, &owner)?;
    custody_switch(state)?;
    let encryption = protection.encryption.clone();
    let check = record_check(state, caller, Action::ImportPrivateKey);
    let record = state
        .service
        .import_private_key(&owner, &caller.project_id, &name, &check, protection)
        .await
        .map_err(|e| service_error(e, request.request_id))?;
    audit::custody_action(state, caller, CustodyAction::ImportPrivateKey, &record, request.request_id);
    let mut settings = Map::new();
    match (&encryption, &record.sealed) {
        (EncryptionRequest::Kms { key_name, .. }, Some(sealed)) => {
            settings.insert("type".into(), "kms".into());
            settings.insert("kms_key_id".into(), sealed.key_ref.clone().into());
            if let Some(alias) = sealed.key_name.clone().or_else(|| key_name.clone()) {
                settings.insert("kms_key_name".into(), alias.into());
            }
        }
        _ => {
            settings.insert("type".into(), "default".into());
        }
    }
    let body = json!({"keypair": {"name": record.name, "user_id": record.user_id,
        "key_protection": {"encryption": settings}}});
    Ok((StatusCode::OK, json_body(&body)).into_response())
}

/// `POST /v3/{p}/keypairs/private-key/export`.
pub async fn export_private_key(state: &AppState, request: &V3Request<'_>, body: &Value) -> Result<Response, ApiError> {
    check_query(&request.query, &[])?;
    let fields = keypair_object(body, &["name"], &["name"])?;
    let name = existing_name(fields)?;
    let caller = request.caller;
    authorize(state, caller, Action::ExportPrivateKey, &caller.user_id)?;
    custody_switch(state)?;
    let check = record_check(state, caller, Action::ExportPrivateKey);
    let (record, private_key) = state
        .service
        .export_private_key(&caller.user_id, &caller.project_id, &name, &check)
        .await
        .map_err(|e| service_error(e, request.request_id))?;
    audit::custody_action(state, caller, CustodyAction::ExportPrivateKey, &record, request.request_id);
    let mut keypair = Map::new();
    keypair.insert("name".into(), record.name.into());
    Ok(private_key_response(StatusCode::OK, keypair, "keypair", private_key.expose()))
}

/// `DELETE /v3/{p}/keypairs/{name}/private-key`.
pub async fn clear_private_key(state: &AppState, request: &V3Request<'_>, name: &str) -> Result<Response, ApiError> {
    check_query(&request.query, &[])?;
    let caller = request.caller;
    authorize(state, caller, Action::ClearPrivateKey, &caller.user_id)?;
    let check = record_check(state, caller, Action::ClearPrivateKey);
    let cleared = state
        .service
        .clear_private_key(&caller.user_id, &caller.project_id, name, &check)
        .await
        .map_err(|e| service_error(e, request.request_id))?;
    audit::custody_action(state, caller, CustodyAction::ClearPrivateKey, &cleared, request.request_id);
    Ok(empty_ok())
}

/// A batch body: a JSON array of 1–10 `{"keypair": {...}}` items with distinct names.
fn batch_items(body: &Value) -> Result<&Vec<Value>, ApiError> {
    let Value::Array(items) = body else { return Err(ApiError::schema(not_of_type(body, "array"))) };
    if items.is_empty() || items.len() > 10 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "KPS.1012",
            format!("A batch must contain between 1 and 10 key pairs, got {}.", items.len()),
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    for item in items {
        if let Some(name) = item.get("keypair").and_then(|k| k.get("name")).and_then(Value::as_str) {
            if seen.contains(&name) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "KPS.1013",
                    format!("Key pair name {name} appears more than once in the batch."),
                ));
            }
            seen.push(name);
        }
    }
    Ok(items)
}

/// `POST /v3/{p}/keypairs/batch-import`: every item is an import (public_key required), each atomic on its
/// own; the answer is always 200 with the succeeded and failed lists.
pub async fn batch_import(state: &AppState, request: &V3Request<'_>, body: &Value) -> Result<Response, ApiError> {
    check_query(&request.query, &[])?;
    let items = batch_items(body)?;
    let parsed: Vec<V3Create> = items.iter().map(|item| validate_create(item, true)).collect::<Result<_, _>>()?;
    for item in &parsed {
        let owner = owner_of(request.caller, item.user_id.as_deref());
        let target = Target::new_keypair(&owner, &request.caller.project_id);
        state.policy.enforce(Action::BatchImport, request.caller, &target)?;
        if item.key_protection.as_ref().is_some_and(|p| p.escrows(false)) {
            custody_switch(state)?;
        }
    }
    let mut succeeded = Vec::new();
    let mut failed = Vec::new();
    for item in parsed {
        let name = item.name.clone();
        match create_one(state, request, Action::BatchImport, item).await {
            Ok(created) => {
                let record = created.record;
                succeeded.push(json!({"keypair": {"name": record.name, "type": record.key_type,
                    "public_key": record.public_key, "fingerprint": record.fingerprint, "user_id": record.user_id}}));
            }
            Err(error) => {
                let mut reason = format!("{}: {}", error.code, error.message);
                if reason.len() > 512 {
                    let mut cut = 512;
                    while !reason.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    reason.truncate(cut);
                }
                failed.push(json!({"keypair_name": name, "failed_reason": reason}));
            }
        }
    }
    Ok((StatusCode::OK, json_body(&json!({"succeeded_keypairs": succeeded, "failed_keypairs": failed})))
        .into_response())
}

const BATCH_EXPORT_PROPERTIES: [&str; 7] =
    ["name", "type", "scope", "public_key", "fingerprint", "is_key_protection", "frozen_state"];

/// `POST /v3/{p}/keypairs/private-key/batch-export`: all or nothing, a ZIP of `<name>.pem` entries.
pub async fn batch_export(state: &AppState, request: &V3Request<'_>, body: &Value) -> Result<Response, ApiError> {
    check_query(&request.query, &[])?;
    let items = batch_items(body)?;
    let names: Vec<String> = items
        .iter()
        .map(|item| keypair_object(item, &BATCH_EXPORT_PROPERTIES, &["name"]).and_then(existing_name))
        .collect::<Result<_, _>>()?;
    let caller = request.caller;
    authorize(state, caller, Action::BatchExport, &caller.user_id)?;
    custody_switch(state)?;
    let check = record_check(state, caller, Action::BatchExport);
    let mut keys = Vec::with_capacity(names.len());
    let mut records = Vec::with_capacity(names.len());
    for name in &names {
        let (record, private_key) = state
            .service
            .export_private_key(&caller.user_id, &caller.project_id, name, &check)
            .await
            .map_err(|e| service_error(e, request.request_id))?;
        keys.push((record.name.clone(), private_key));
        records.push(record);
    }
    audit::batch_export(state, caller, &records.iter().collect::<Vec<_>>(), request.request_id);
    let zip = build_zip(&keys).map_err(|error| {
        tracing::error!(%error, request_id = request.request_id, "zip failed");
        ApiError::internal(request.request_id)
    })?;
    let mut response = Response::new(Body::from(axum::body::Bytes::from_owner(zip)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"keypairs.zip\""));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// `<name>.pem` with `/`, `\` and leading dots percent-encoded (kps-v3.md §4.9).
pub fn zip_entry_name(name: &str) -> String {
    let trimmed = name.trim_start_matches('.');
    let mut out = "%2E".repeat(name.len() - trimmed.len());
    for c in trimmed.chars() {
        match c {
            '/' => out.push_str("%2F"),
            '\\' => out.push_str("%5C"),
            c => out.push(c),
        }
    }
    out.push_str(".pem");
    out
}

/// A stored (uncompressed) ZIP in one pre-sized zeroizing buffer.
fn build_zip(keys: &[(String, crate::model::PrivateKeyText)]) -> Result<Zeroizing<Vec<u8>>, zip::result::ZipError> {
    let capacity = keys.iter().map(|(name, key)| 3 * name.len() + key.expose().len() + 256).sum::<usize>() + 256;
    let mut buffer = Zeroizing::new(Vec::with_capacity(capacity));
    {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(&mut *buffer));
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, key) in keys {
            writer.start_file(zip_entry_name(name), options)?;
            writer.write_all(key.expose().as_bytes())?;
        }
        writer.finish()?;
    }
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_v3_table() {
        let table: &[(&[&str], Option<V3Route>)] = &[
            (&["keypairs"], Some(V3Route::Keypairs)),
            (&["keypairs", "k%201"], Some(V3Route::Keypair("k 1".into()))),
            (&["keypairs", "private-key"], Some(V3Route::Keypair("private-key".into()))),
            (&["keypairs", "batch-import"], Some(V3Route::BatchImport)),
            (&["keypairs", "private-key", "import"], Some(V3Route::ImportPrivateKey)),
            (&["keypairs", "private-key", "export"], Some(V3Route::ExportPrivateKey)),
            (&["keypairs", "private-key", "batch-export"], Some(V3Route::BatchExport)),
            (&["keypairs", "k", "private-key"], Some(V3Route::KeypairPrivateKey("k".into()))),
            (&["keypairs", "associate"], Some(V3Route::NeedsServers(NeedsServers::Associate))),
            (&["failed-tasks"], Some(V3Route::NeedsServers(NeedsServers::FailedTasks))),
            (&["keypairs", "k", "other"], None),
            (&["nothing"], None),
        ];
        for (segments, expected) in table {
            assert_eq!(&V3Route::parse(segments), expected, "{segments:?}");
        }
    }

    #[test]
    fn zip_entry_names_escape_separators_and_leading_dots() {
        assert_eq!(zip_entry_name("db-admin"), "db-admin.pem");
        assert_eq!(zip_entry_name("a/b\\c"), "a%2Fb%5Cc.pem");
        assert_eq!(zip_entry_name("..hidden.key"), "%2E%2Ehidden.key.pem");
    }

    #[test]
    fn v3_limits_are_1_to_9999() {
        assert_eq!(parse_v3_limit("1").ok(), Some(1));
        assert_eq!(parse_v3_limit("9999").ok(), Some(9999));
        for bad in ["0", "10000", "-1", "", "x"] {
            assert_eq!(parse_v3_limit(bad).expect_err(bad).code, "KPS.1004", "{bad}");
        }
    }
}
