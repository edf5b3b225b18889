//! The KPS V3 custody API (`/v3/{project_id}/keypairs...`, spec/kps-v3.md): key pairs with `scope` and
//! descriptions, and the private-key custody operations (import, export, clear; the batches in `batch`).
//! Body validation is in `validate`.
//!
//! Only the JSON shapes live here; every operation calls the same `crate::service` functions as the Nova
//! API, through `keypair_ops` where the two share a step.

pub mod batch;
mod validate;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::AppState;
use super::audit;
use super::error::ApiError;
use super::keypair_ops::{self, authorize_record, custody_switch, owner_of, query_last, reject_unknown_query};
use super::metrics::CustodyAction;
use super::pipeline::Call;
use super::policy::Target;
use super::respond::{empty_ok, json_body, private_key_response};
use crate::model::{EncryptorKind, Keypair, KeypairSummary, Scope};
use crate::service::EncryptionRequest;

/// `POST /v3/{p}/keypairs`.
pub async fn create(state: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    reject_unknown_query(&call.query, &[])?;
    let parsed = validate::validate_create(&call.json, false)?;
    let created = keypair_ops::create_and_audit(state, call.caller()?, call.action()?, call.request_id, parsed).await?;
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

/// `GET /v3/{p}/keypairs`.
pub async fn list(state: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    reject_unknown_query(&call.query, &["limit", "marker"])?;
    let limit = match query_last(&call.query, "limit") {
        None => 50,
        Some(value) => keypair_ops::v3_limit(value)?,
    };
    let marker = query_last(&call.query, "marker");
    let caller = call.caller()?;
    state.policy.enforce(call.action()?, caller, &Target::user(&caller.user_id))?;
    let page_size = limit.min(crate::service::MAX_LIST_LIMIT);
    let mut records: Vec<KeypairSummary> =
        state.service.list_summaries(&caller.user_id, &caller.project_id, marker, page_size + 1).await?;
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
pub async fn show(state: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    reject_unknown_query(&call.query, &[])?;
    let caller = call.caller()?;
    let record = keypair_ops::show_record(state, caller, call.action()?, &caller.user_id, call.name()).await?;
    Ok((StatusCode::OK, json_body(&json!({ "keypair": show_view(&record) }))).into_response())
}

/// The V3 show shape.
fn show_view(record: &Keypair) -> Map<String, Value> {
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
    keypair
}

/// `PUT /v3/{p}/keypairs/{name}`: description.
pub async fn update(state: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    reject_unknown_query(&call.query, &[])?;
    if let Some(Value::Object(fields)) = call.json.get("keypair") {
        validate::check_description(fields)?;
    }
    let fields = validate::keypair_object(&call.json, &["description"], &["description"])?;
    let description = validate::check_description(fields)?.unwrap_or_default();
    let caller = call.caller()?;
    let policy = authorize_record(state, caller, call.action()?, &caller.user_id)?;
    let check = |record: &Keypair| policy.check(record);
    state.service.update_description(&caller.user_id, &caller.project_id, call.name(), &check, &description).await?;
    Ok(empty_ok())
}

/// `DELETE /v3/{p}/keypairs/{name}`: the key pair and its escrow.
pub async fn delete(state: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    reject_unknown_query(&call.query, &[])?;
    let caller = call.caller()?;
    keypair_ops::delete_and_audit(state, caller, call.action()?, call.request_id, &caller.user_id, call.name()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v3/{p}/keypairs/private-key/import`.
pub async fn import_private_key(state: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    reject_unknown_query(&call.query, &[])?;
    let fields =
        validate::keypair_object(&call.json, &["name", "user_id", "key_protection"], &["name", "key_protection"])?;
    let name = validate::existing_name(fields)?;
    let user_id = validate::user_id_field(fields)?;
    let protection = keypair_ops::validate_key_protection(&fields["key_protection"])?;
    if protection.private_key.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "KPS.1401",
            "Invalid key_protection: private_key is required",
        ));
    }
    let caller = call.caller()?;
    let owner = owner_of(caller, user_id);
    let policy = authorize_record(state, caller, call.action()?, &owner)?;
    custody_switch(state)?;
    let encryption = protection.encryption.clone();
    let check = |record: &Keypair| policy.check(record);
    let record = state.service.import_private_key(&owner, &caller.project_id, &name, &check, protection).await?;
    audit::custody_action(state, caller, CustodyAction::ImportPrivateKey, &record, call.request_id).await?;
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
pub async fn export_private_key(state: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    reject_unknown_query(&call.query, &[])?;
    let fields = validate::keypair_object(&call.json, &["name"], &["name"])?;
    let name = validate::existing_name(fields)?;
    let caller = call.caller()?;
    let policy = authorize_record(state, caller, call.action()?, &caller.user_id)?;
    custody_switch(state)?;
    let check = |record: &Keypair| policy.check(record);
    let (record, private_key) =
        state.service.export_private_key(&caller.user_id, &caller.project_id, &name, &check).await?;
    audit::custody_action(state, caller, CustodyAction::ExportPrivateKey, &record, call.request_id).await?;
    let mut keypair = Map::new();
    keypair.insert("name".into(), record.name.into());
    Ok(private_key_response(StatusCode::OK, keypair, "keypair", private_key.expose()))
}

/// `DELETE /v3/{p}/keypairs/{name}/private-key`.
pub async fn clear_private_key(state: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    reject_unknown_query(&call.query, &[])?;
    let caller = call.caller()?;
    let policy = authorize_record(state, caller, call.action()?, &caller.user_id)?;
    let check = |record: &Keypair| policy.check(record);
    let cleared = state.service.clear_private_key(&caller.user_id, &caller.project_id, call.name(), &check).await?;
    audit::custody_action(state, caller, CustodyAction::ClearPrivateKey, &cleared, call.request_id).await?;
    Ok(empty_ok())
}
