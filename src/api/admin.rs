//! The admin API (`/admin/v1/*`, policy `kps:admin:*`, served on `admin_listen` when that is set):
//! `POST /admin/v1/backup` streams the backup of `service::backup`; `POST /admin/v1/rewrap` re-seals
//! escrowed keys as `kps rewrap` does, and is what that command calls while a server holds the data
//! directory.
//!
//! The rewrap request is `RewrapOptions` as serde writes it (the CLI sends exactly that); the rule that
//! serde cannot say — `to_default` and `to_kms_key` exclude each other — is checked here, and the answer is
//! `RewrapReport` as serde writes it. It calls the service only.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::Value;
use tracing::Instrument;

use super::AppState;
use super::audit::Outcome;
use super::error::ApiError;
use super::pipeline::Call;
use super::policy::Target;
use super::respond::json_ok;
use crate::service::RewrapOptions;

/// `POST /admin/v1/rewrap`: `{"to_default": bool, "to_kms_key": "NAME", "dry_run": bool}` (all optional)
/// → the counts of `kps rewrap`.
pub async fn rewrap(state: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    let caller = call.caller()?;
    state.policy.enforce(call.action()?, caller, &Target::nothing())?;
    let options = rewrap_options(&call.json).map_err(ApiError::schema)?;
    let report = state.service.rewrap(&options.target(), options.dry_run).await?;
    let detail = serde_json::json!({"options": &options, "report": &report}).to_string();
    state.audit.admin_action(Some(caller), "rewrap", Outcome::Success, &detail, call.request_id).await?;
    Ok(json_ok(StatusCode::OK, &report))
}

/// Reads the rewrap request (`null`/empty = no options); the message says what is wrong.
pub fn rewrap_options(value: &Value) -> Result<RewrapOptions, String> {
    if value.is_null() {
        return Ok(RewrapOptions::default());
    }
    // serde also reads a struct from an array of its fields in order (`[]`, `[true]`); the body is an object.
    if value.is_array() {
        return Err("Invalid rewrap options: invalid type: sequence, expected struct RewrapOptions".into());
    }
    let options: RewrapOptions =
        serde_json::from_value(value.clone()).map_err(|e| format!("Invalid rewrap options: {e}"))?;
    if options.to_default && options.to_kms_key.is_some() {
        return Err("Invalid rewrap options: to_default and to_kms_key exclude each other".into());
    }
    Ok(options)
}

/// `POST /admin/v1/backup`: streams the backup lines of `service::backup`.
pub async fn backup(state: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    let caller = call.caller()?;
    state.policy.enforce(call.action()?, caller, &Target::nothing())?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let (failed_sender, failed) = tokio::sync::oneshot::channel::<()>();
    let export = state.service.export_backup(sender);
    let (audit, caller, request_id) = (state.audit.clone(), caller.clone(), call.request_id.to_owned());
    // The export outlives this handler's future: it takes the request's span along, so its lines carry the id.
    // Its audit line is written once the last record is out; a line that cannot be written (with
    // `audit.fail_closed`) breaks the transfer like a failed export.
    tokio::spawn(
        async move {
            let (outcome, detail) = match export.await {
                Ok(()) => (Outcome::Success, "backup streamed whole".to_owned()),
                Err(error) => {
                    tracing::error!(%error, "backup stream failed");
                    (Outcome::Failed, format!("backup stream failed: {error}"))
                }
            };
            let audited = audit.admin_action(Some(&caller), "backup", outcome, &detail, &request_id).await;
            if outcome == Outcome::Failed || audited.is_err() {
                let _ = failed_sender.send(());
            }
        }
        .in_current_span(),
    );
    // After the last chunk, a failed export ends the body with an error, so the client sees a broken
    // transfer, never a short backup that looks complete.
    let stream = futures_util::stream::unfold((receiver, Some(failed)), |(mut receiver, failed)| async move {
        match receiver.recv().await {
            Some(chunk) => Some((Ok(Bytes::from(chunk)), (receiver, failed))),
            None => match failed?.await {
                Ok(()) => Some((Err(std::io::Error::other("backup failed")), (receiver, None))),
                Err(_) => None,
            },
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrap_options_are_an_object_or_nothing() {
        assert_eq!(rewrap_options(&json!(null)), Ok(RewrapOptions::default()));
        assert_eq!(rewrap_options(&json!({})), Ok(RewrapOptions::default()));
        assert!(rewrap_options(&json!({"dry_run": true})).is_ok_and(|o| o.dry_run));
        for bad in [json!([]), json!([true]), json!([false, "k", true]), json!(5), json!({"x": 1})] {
            assert!(rewrap_options(&bad).is_err(), "{bad}");
        }
        assert!(rewrap_options(&json!({"to_default": true, "to_kms_key": "k"})).is_err());
    }
}
