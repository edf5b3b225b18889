//! `ApiError`: the one error type of the HTTP edge.
//!
//! Every error response of every route has the dual shape of `spec/errors.md` §1: the Nova fault key for the
//! status (`badRequest`, `itemNotFound`, …) holding `{code, message}`, then `error_code` and `error_msg`, in
//! that order. Lower layers return their own error enums; the conversions at the bottom of this file are the
//! only place where they become a status code, a catalogue code and a message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::keypair::KeypairError;
use crate::service::ServiceError;

/// A catalogue error: HTTP status, `KPS.NNNN` code and the message sent to the client.
///
/// Messages never carry secrets (private keys, tokens, data keys); 5xx messages are generic and the detail
/// goes to the log only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After` (429 only).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// KPS.1001: the body violates the schema.
    pub fn schema(message: impl Into<String>) -> Self {
        Self::bad_request("KPS.1001", message)
    }

    /// KPS.1002.
    pub fn malformed_body() -> Self {
        Self::bad_request("KPS.1002", "Malformed request body")
    }

    /// KPS.1003.
    pub fn unknown_query_parameter(param: &str) -> Self {
        Self::bad_request("KPS.1003", format!("Additional properties are not allowed ('{param}' was unexpected)"))
    }

    /// KPS.1004.
    pub fn bad_query_value(message: impl Into<String>) -> Self {
        Self::bad_request("KPS.1004", message)
    }

    /// KPS.1005.
    pub fn project_mismatch(url_project: &str, token_project: &str) -> Self {
        Self::bad_request(
            "KPS.1005",
            format!(
                "Malformed request URL: URL's project_id '{url_project}' doesn't match Context's project_id \
                 '{token_project}'"
            ),
        )
    }

    /// KPS.1006.
    pub fn malformed_version(value: &str) -> Self {
        Self::bad_request(
            "KPS.1006",
            format!("API Version String {value} is of invalid format. Must be of format MajorNum.MinorNum."),
        )
    }

    /// KPS.1007.
    pub fn unsupported_version(value: &str, min: &str, max: &str) -> Self {
        Self::new(
            StatusCode::NOT_ACCEPTABLE,
            "KPS.1007",
            format!("Version {value} is not supported by the API. Minimum is {min} and maximum is {max}."),
        )
    }

    /// KPS.1008.
    pub fn body_too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "KPS.1008", "Request is too large.")
    }

    /// KPS.1009.
    pub fn unsupported_media_type() -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "KPS.1009", "Unsupported Content-Type")
    }

    /// KPS.1010.
    pub fn not_found_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "KPS.1010", "The resource could not be found.")
    }

    /// KPS.1011 (the caller adds the `Allow` header).
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "KPS.1011",
            format!("Method {method} is not allowed for this resource."),
        )
    }

    /// KPS.1101: the key pair name violates the name rule in use.
    pub fn invalid_name(message: impl Into<String>) -> Self {
        Self::bad_request("KPS.1101", message)
    }

    /// KPS.1501.
    pub fn quota_exceeded() -> Self {
        Self::new(StatusCode::FORBIDDEN, "KPS.1501", "Quota exceeded, too many key pairs.")
    }

    /// KPS.1601.
    pub fn keypair_not_found(name: &str, user_id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "KPS.1601", format!("Keypair {name} not found for user {user_id}"))
    }

    /// KPS.1603.
    pub fn marker_not_found(marker: &str) -> Self {
        Self::bad_request("KPS.1603", format!("Marker {marker} could not be found."))
    }

    /// KPS.1701.
    pub fn duplicate_name(name: &str) -> Self {
        Self::new(StatusCode::CONFLICT, "KPS.1701", format!("Key pair '{name}' already exists."))
    }

    /// KPS.2001.
    pub fn authentication_required() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "KPS.2001", "Authentication required")
    }

    /// KPS.2002.
    pub fn invalid_credentials() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "KPS.2002", "Invalid authentication credentials")
    }

    /// KPS.2003.
    pub fn policy_denied(action: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "KPS.2003", format!("Policy doesn't allow {action} to be performed."))
    }

    /// KPS.9001: a bug. The detail is logged, never sent.
    pub fn internal(request_id: &str) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "KPS.9001",
            format!("Unexpected API Error. Request id {request_id}."),
        )
    }

    /// KPS.9002: the store failed. The detail is logged, never sent.
    pub fn storage(request_id: &str) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "KPS.9002", format!("Storage error. Request id {request_id}."))
    }

    /// KPS.9003.
    pub fn shutting_down() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "KPS.9003", "Service is shutting down")
    }

    /// The Nova fault key for an HTTP status (errors.md §2).
    pub fn nova_key(status: StatusCode) -> &'static str {
        match status.as_u16() {
            400 => "badRequest",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "itemNotFound",
            405 => "badMethod",
            409 => "conflictingRequest",
            413 | 429 => "overLimit",
            415 => "badMediaType",
            501 => "notImplemented",
            503 => "serviceUnavailable",
            _ => "computeFault",
        }
    }

    /// The JSON body, keys in the order clients rely on.
    pub fn body(&self) -> Value {
        let mut fault = Map::new();
        fault.insert("code".into(), Value::from(self.status.as_u16()));
        fault.insert("message".into(), Value::from(self.message.clone()));
        if let Some(seconds) = self.retry_after {
            fault.insert("retryAfter".into(), Value::from(seconds.to_string()));
        }
        let mut body = Map::new();
        body.insert(Self::nova_key(self.status).into(), Value::Object(fault));
        body.insert("error_code".into(), Value::from(self.code));
        body.insert("error_msg".into(), Value::from(self.message.clone()));
        Value::Object(body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<KeypairError> for ApiError {
    /// The keypair layer knows its catalogue codes; generation failures are internal and logged, never sent.
    fn from(error: KeypairError) -> Self {
        if let KeypairError::Generation(detail) = &error {
            tracing::error!(%detail, "key generation failed");
            return Self::new(StatusCode::INTERNAL_SERVER_ERROR, "KPS.9001", "Unexpected API Error.");
        }
        let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        Self::new(status, error.code(), error.to_string())
    }
}

impl ApiError {
    /// Maps a store failure to KPS.9002, or KPS.9005 when the store takes no writes (outcome unknown,
    /// retry), logging the cause with the request id.
    pub fn from_store(error: &ServiceError, request_id: &str) -> Self {
        tracing::error!(%error, request_id, "store failure");
        match error {
            ServiceError::StoreUnavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "KPS.9005",
                format!("Storage is unavailable. Request id {request_id}."),
            ),
            _ => Self::storage(request_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_nova_key_then_error_code_then_error_msg() {
        let error = ApiError::keypair_not_found("nope", "u-1001");
        assert_eq!(
            error.body().to_string(),
            r#"{"itemNotFound":{"code":404,"message":"Keypair nope not found for user u-1001"},"error_code":"KPS.1601","error_msg":"Keypair nope not found for user u-1001"}"#
        );
    }

    #[test]
    fn nova_key_follows_the_status_table() {
        let table = [
            (400, "badRequest"),
            (401, "unauthorized"),
            (403, "forbidden"),
            (404, "itemNotFound"),
            (405, "badMethod"),
            (406, "computeFault"),
            (409, "conflictingRequest"),
            (413, "overLimit"),
            (415, "badMediaType"),
            (429, "overLimit"),
            (500, "computeFault"),
            (501, "notImplemented"),
            (502, "computeFault"),
            (503, "serviceUnavailable"),
        ];
        for (status, key) in table {
            let status = StatusCode::from_u16(status).expect("valid status");
            assert_eq!(ApiError::nova_key(status), key, "{status}");
        }
    }

    #[test]
    fn too_many_requests_carries_retry_after_inside_the_fault() {
        let mut error =
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "KPS.1015", "Rate limit exceeded, retry after 2 seconds.");
        error.retry_after = Some(2);
        let body = error.body();
        assert_eq!(body["overLimit"]["retryAfter"], "2");
        let response = error.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn a_store_taking_no_writes_is_503_kps_9005_and_other_store_failures_500_kps_9002() {
        let unavailable = ApiError::from_store(&ServiceError::StoreUnavailable("fdatasync failed".into()), "req-1");
        assert_eq!((unavailable.status.as_u16(), unavailable.code), (503, "KPS.9005"));
        assert_eq!(unavailable.message, "Storage is unavailable. Request id req-1.", "no detail sent");
        let backend = ApiError::from_store(&ServiceError::Storage("io".into()), "req-2");
        assert_eq!((backend.status.as_u16(), backend.code), (500, "KPS.9002"));
    }
}
