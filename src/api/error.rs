//! `ApiError`: the one error type of the HTTP edge.
//!
//! Every error response of every route has the dual shape of `spec/errors.md` §1: the Nova fault key for the
//! status (`badRequest`, `itemNotFound`, …) holding `{code, message}`, then `error_code` and `error_msg`, in
//! that order. Lower layers return their own error enums; the conversions at the bottom of this file
//! (`From<ServiceError>`, `From<KeypairError>`) are the only place where they become a status code, a
//! catalogue code and a message, so handlers just use `?`. A 5xx message cites the request id: the
//! conversions mark it, and the pipeline fills the id in (`with_request_id`) before the error is sent.
//!
//! It may touch the service's and the key pair layer's error types (to read them), nothing else below.

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
    /// The message still has to end with ` Request id <id>.` (5xx errors raised below the pipeline).
    cite_request_id: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None, cite_request_id: false }
    }

    /// An error whose message is `<text> Request id <id>.` once the pipeline knows the id.
    fn citing_request_id(status: StatusCode, code: &'static str, text: &str) -> Self {
        Self { cite_request_id: true, ..Self::new(status, code, text) }
    }

    /// Completes a message that cites the request id; other errors are returned unchanged. The pipeline
    /// calls this on every error a handler returns.
    #[must_use]
    pub fn with_request_id(mut self, request_id: &str) -> Self {
        if std::mem::take(&mut self.cite_request_id) {
            self.message = format!("{} Request id {request_id}.", self.message);
        }
        self
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

    /// KPS.9001: a bug. The detail is logged, never sent; the message cites the request id.
    pub fn internal() -> Self {
        Self::citing_request_id(StatusCode::INTERNAL_SERVER_ERROR, "KPS.9001", "Unexpected API Error.")
    }

    /// KPS.9002: the store failed. The detail is logged, never sent; the message cites the request id.
    pub fn storage() -> Self {
        Self::citing_request_id(StatusCode::INTERNAL_SERVER_ERROR, "KPS.9002", "Storage error.")
    }

    /// KPS.9004: the request did not finish within `limits.request_timeout`.
    pub fn timed_out() -> Self {
        Self::citing_request_id(StatusCode::SERVICE_UNAVAILABLE, "KPS.9004", "Request timed out.")
    }

    /// KPS.9006: `audit.fail_closed` and the audit line of a custody request could not be written; nothing
    /// was revealed. The detail is logged, never sent.
    pub fn audit_unavailable() -> Self {
        Self::citing_request_id(StatusCode::SERVICE_UNAVAILABLE, "KPS.9006", "Audit log is unavailable.")
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
    /// Generation failures are internal and logged, never sent; the rest are their catalogue entries.
    fn from(error: KeypairError) -> Self {
        if let KeypairError::Generation(detail) = &error {
            tracing::error!(%detail, "key generation failed");
            return Self::new(StatusCode::INTERNAL_SERVER_ERROR, "KPS.9001", "Unexpected API Error.");
        }
        Self::new(keypair_status(&error), keypair_code(&error), error.to_string())
    }
}

/// The catalogue code of a key material error (errors.md §3.3, §3.4, §3.12).
fn keypair_code(error: &KeypairError) -> &'static str {
    match error {
        KeypairError::InvalidPublicKey => "KPS.1201",
        KeypairError::InvalidCertificate(_) => "KPS.1202",
        KeypairError::UnsupportedKeyType(_) => "KPS.1203",
        KeypairError::RsaKeySize { .. } => "KPS.1204",
        KeypairError::PrivateKeyUnparsable => "KPS.1301",
        KeypairError::PrivateKeyMismatch => "KPS.1302",
        KeypairError::PrivateKeyEncrypted => "KPS.1304",
        KeypairError::Generation(_) => "KPS.9001",
    }
}

/// The HTTP status of a key material error's catalogue entry.
fn keypair_status(error: &KeypairError) -> StatusCode {
    match error {
        KeypairError::Generation(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The catalogue message of a key material error for a request about key pair `keypair_name`. Only the
/// private-key texts mention the name; for [`KeypairError::Generation`] this is the internal detail (log
/// it, do not send it: 5xx bodies are generic).
fn keypair_message(error: &KeypairError, keypair_name: &str) -> String {
    match error {
        KeypairError::PrivateKeyUnparsable => format!("Private key of keypair {keypair_name} could not be parsed"),
        KeypairError::PrivateKeyMismatch => {
            format!("Private key does not match the public key of keypair {keypair_name}")
        }
        other => other.to_string(),
    }
}

impl From<ServiceError> for ApiError {
    /// Every service outcome's catalogue code, status and message. Details of 5xx failures go to the log
    /// (inside the request's span, which carries its id), never to the client.
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::NotFound { name, user_id } => Self::keypair_not_found(&name, &user_id),
            ServiceError::MarkerNotFound(marker) => Self::marker_not_found(&marker),
            ServiceError::Duplicate(name) => Self::duplicate_name(&name),
            ServiceError::QuotaExceeded => Self::quota_exceeded(),
            ServiceError::Keypair(error) => error.into(),
            ServiceError::PrivateKey { error, name } => {
                Self::new(StatusCode::BAD_REQUEST, keypair_code(&error), keypair_message(&error, &name))
            }
            ServiceError::PrivateKeyWithoutPublicKey => {
                Self::bad_request("KPS.1303", "key_protection.private_key requires keypair.public_key")
            }
            ServiceError::KmsNotConfigured => {
                Self::bad_request("KPS.1402", "Encryption type kms is not available: no KMS is configured")
            }
            ServiceError::DefaultEncryptionDisabled => {
                Self::bad_request("KPS.1403", "Encryption type default is disabled on this server")
            }
            ServiceError::Kms { error, name } => {
                if matches!(error.code(), "KPS.1801" | "KPS.1805" | "KPS.1806") {
                    tracing::warn!(%error, keypair = name, "KMS failure");
                }
                let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                Self::new(status, error.code(), error.message_for_keypair(&name))
            }
            ServiceError::Undecryptable(name) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "KPS.1806",
                format!("Escrowed private key of keypair {name} could not be decrypted"),
            ),
            ServiceError::Denied(action) => Self::policy_denied(&action),
            ServiceError::NoEscrow(name) => {
                Self::new(StatusCode::NOT_FOUND, "KPS.1602", format!("Keypair {name} has no escrowed private key"))
            }
            ServiceError::AlreadyEscrowed(name) => Self::new(
                StatusCode::CONFLICT,
                "KPS.1702",
                format!("Keypair {name} already has an escrowed private key; clear it first"),
            ),
            ServiceError::Custody(error) => {
                tracing::error!(%error, "sealing failed");
                Self::internal()
            }
            ServiceError::StoreUnavailable(_) => {
                tracing::error!(%error, "store failure");
                // The store takes no writes: the outcome is unknown, retry (KPS.9005).
                Self::citing_request_id(StatusCode::SERVICE_UNAVAILABLE, "KPS.9005", "Storage is unavailable.")
            }
            ServiceError::Storage(_) => {
                tracing::error!(%error, "store failure");
                Self::storage()
            }
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
        let unavailable =
            ApiError::from(ServiceError::StoreUnavailable("fdatasync failed".into())).with_request_id("req-1");
        assert_eq!((unavailable.status.as_u16(), unavailable.code), (503, "KPS.9005"));
        assert_eq!(unavailable.message, "Storage is unavailable. Request id req-1.", "no detail sent");
        let backend = ApiError::from(ServiceError::Storage("io".into())).with_request_id("req-2");
        assert_eq!((backend.status.as_u16(), backend.code), (500, "KPS.9002"));
    }

    #[test]
    fn key_material_errors_are_their_catalogue_entries() {
        let table = [
            (KeypairError::InvalidPublicKey, "KPS.1201", "Keypair data is invalid: failed to generate fingerprint"),
            (
                KeypairError::InvalidCertificate("bad PEM".into()),
                "KPS.1202",
                "Keypair data is invalid: failed to generate X509 fingerprint. Error message: bad PEM",
            ),
            (
                KeypairError::UnsupportedKeyType("sk-ssh-ed25519@openssh.com".into()),
                "KPS.1203",
                "Keypair data is invalid: unsupported public key type sk-ssh-ed25519@openssh.com",
            ),
            (
                KeypairError::RsaKeySize { bits: 1024, min: 2048 },
                "KPS.1204",
                "Keypair data is invalid: RSA key of 1024 bits is outside the accepted range 2048-16384",
            ),
            (KeypairError::PrivateKeyUnparsable, "KPS.1301", "Private key of keypair kp-1 could not be parsed"),
            (KeypairError::PrivateKeyMismatch, "KPS.1302", "Private key does not match the public key of keypair kp-1"),
            (
                KeypairError::PrivateKeyEncrypted,
                "KPS.1304",
                "Encrypted private keys are not supported; import the key without a passphrase",
            ),
        ];
        for (error, code, message) in table {
            assert_eq!(keypair_code(&error), code);
            assert_eq!(keypair_status(&error).as_u16(), 400);
            assert_eq!(keypair_message(&error, "kp-1"), message);
        }
        assert_eq!(keypair_status(&KeypairError::Generation("x".into())).as_u16(), 500);
    }
}
