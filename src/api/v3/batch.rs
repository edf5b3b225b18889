//! The KPS V3 batches (kps-v3.md §4.8, §4.9): batch import, each item atomic on its own with a succeeded
//! and a failed list, and batch export, all or nothing, as a ZIP of `<name>.pem` entries built in one
//! zeroizing buffer.
//!
//! Like the rest of V3 it calls the service through `keypair_ops` and renders the answers.

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::validate::{existing_name, keypair_object, validate_create};
use crate::api::AppState;
use crate::api::audit;
use crate::api::error::ApiError;
use crate::api::keypair_ops::{
    CreateRequest, authorize_record, create_and_audit, custody_switch, owner_of, reject_unknown_query,
};
use crate::api::pipeline::Call;
use crate::api::policy::Target;
use crate::api::respond::{json_body, no_store};
use crate::api::schema::not_of_type;
use crate::model::{Keypair, PrivateKeyText};

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
pub async fn batch_import(state: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    reject_unknown_query(&call.query, &[])?;
    let items = batch_items(&call.json)?;
    let parsed: Vec<CreateRequest> = items.iter().map(|item| validate_create(item, true)).collect::<Result<_, _>>()?;
    let (caller, action) = (call.caller()?, call.action()?);
    // Steps 1–9 for the request as a whole, then 10–15 for each item (errors.md §4).
    for item in &parsed {
        let owner = owner_of(caller, item.user_id.as_deref());
        state.policy.enforce(action, caller, &Target::new_keypair(&owner, &caller.project_id))?;
        if item.escrows() {
            custody_switch(state)?;
        }
    }
    let mut succeeded = Vec::new();
    let mut failed = Vec::new();
    for item in parsed {
        let name = item.name.clone();
        match create_and_audit(state, caller, action, call.request_id, item).await {
            Ok(created) => {
                let record = created.record;
                succeeded.push(json!({"keypair": {"name": record.name, "type": record.key_type,
                    "public_key": record.public_key, "fingerprint": record.fingerprint, "user_id": record.user_id}}));
            }
            Err(error) => {
                let error = error.with_request_id(call.request_id);
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
pub async fn batch_export(state: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    reject_unknown_query(&call.query, &[])?;
    let items = batch_items(&call.json)?;
    let names: Vec<String> = items
        .iter()
        .map(|item| keypair_object(item, &BATCH_EXPORT_PROPERTIES, &["name"]).and_then(existing_name))
        .collect::<Result<_, _>>()?;
    let caller = call.caller()?;
    let policy = authorize_record(state, caller, call.action()?, &caller.user_id)?;
    custody_switch(state)?;
    let check = |record: &Keypair| policy.check(record);
    let mut keys = Vec::with_capacity(names.len());
    let mut records = Vec::with_capacity(names.len());
    for name in &names {
        let (record, private_key) =
            state.service.export_private_key(&caller.user_id, &caller.project_id, name, &check).await?;
        keys.push((record.name.clone(), private_key));
        records.push(record);
    }
    audit::batch_export(state, caller, &records, call.request_id).await?;
    let zip = build_zip(&keys).map_err(|error| {
        tracing::error!(%error, request_id = call.request_id, "zip failed");
        ApiError::internal()
    })?;
    let mut response = Response::new(Body::from(Bytes::from_owner(zip)));
    no_store(&mut response, "application/zip");
    let disposition = HeaderValue::from_static("attachment; filename=\"keypairs.zip\"");
    response.headers_mut().insert(header::CONTENT_DISPOSITION, disposition);
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
fn build_zip(keys: &[(String, PrivateKeyText)]) -> Result<Zeroizing<Vec<u8>>, zip::result::ZipError> {
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
    fn zip_entry_names_escape_separators_and_leading_dots() {
        assert_eq!(zip_entry_name("db-admin"), "db-admin.pem");
        assert_eq!(zip_entry_name("a/b\\c"), "a%2Fb%5Cc.pem");
        assert_eq!(zip_entry_name("..hidden.key"), "%2E%2Ehidden.key.pem");
    }
}
