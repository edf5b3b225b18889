//! The operations endpoints: `GET /healthz` (liveness), `GET /readyz` (the store answers), `GET /metrics`
//! and `GET /openapi.json`. Served on `admin_listen` alone when that is set (`router::Access::Operations`).
//!
//! They read the application state; only `/readyz` calls the service.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::pipeline::Call;
use super::respond::{json_body, json_response};
use super::router::OPENAPI_DOCUMENT;

/// `GET /healthz`: the process answers.
pub async fn health(_: &AppState, _: &Call<'_>) -> Result<Response, ApiError> {
    Ok(json_response(&json!({"status": "ok"})))
}

/// How long `GET /readyz` waits for the store's answer.
const READINESS_DEADLINE: Duration = Duration::from_secs(1);

/// `GET /readyz`: 200 while the store takes writes and answers a trivial read within a second, else 503
/// with the reason, so that a load balancer or orchestrator acts (`/healthz` stays a liveness check).
pub async fn readiness(state: &AppState, _: &Call<'_>) -> Result<Response, ApiError> {
    let unready = match tokio::time::timeout(READINESS_DEADLINE, state.service.ready()).await {
        Ok(Ok(())) => return Ok(json_response(&json!({"status": "ready"}))),
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {READINESS_DEADLINE:?}"),
    };
    tracing::warn!(reason = unready, "not ready: the store");
    let body = json_body(&json!({"status": "unready", "reason": "store"}));
    Ok((StatusCode::SERVICE_UNAVAILABLE, body).into_response())
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn metrics(state: &AppState, _: &Call<'_>) -> Result<Response, ApiError> {
    let mut response = super::metrics::render(state).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    Ok(response)
}

/// `GET /openapi.json`.
pub async fn openapi(_: &AppState, _: &Call<'_>) -> Result<Response, ApiError> {
    let mut response = OPENAPI_DOCUMENT.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
