//! Request bodies as the edge reads them: the size limit (KPS.1008), the JSON content types (KPS.1009) and
//! parse (KPS.1002), and the wiping of body bytes and parsed JSON, which may carry a private key
//! (`key_protection.private_key`, batch items).
//!
//! It touches nothing but the request: no service, no state.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use zeroize::Zeroize;

use super::error::ApiError;

/// Reads the whole body, refusing more than `limit` bytes (declared or actual) with 413.
pub async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<RequestBody, ApiError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::body_too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(RequestBody(collected.to_bytes())),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::body_too_large()),
        Err(_) => Err(ApiError::malformed_body()),
    }
}

/// Content types whose bodies are parsed as JSON (nova-keypairs.md §1).
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return true };
    let Ok(text) = value.to_str() else { return false };
    let media_type = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(media_type.as_str(), "" | "text/plain" | "application/json" | "application/vnd.openstack.compute+json")
}

/// A request body as read: it may carry a private key (`key_protection.private_key`, batch items), so its
/// bytes are wiped when the request is done, if kps holds the only reference to them (a body that is a view
/// into hyper's read buffer is not kps's to wipe; design.md §5).
pub struct RequestBody(Bytes);

impl std::ops::Deref for RequestBody {
    type Target = Bytes;
    fn deref(&self) -> &Bytes {
        &self.0
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Ok(mut bytes) = std::mem::take(&mut self.0).try_into_mut() {
            Zeroize::zeroize(bytes.as_mut());
        }
    }
}

/// A parsed JSON request body whose strings are wiped when it is dropped (it may carry a private key).
pub struct RequestJson(Value);

impl RequestJson {
    /// No body was parsed for this request: JSON `null`.
    pub fn none() -> Self {
        Self(Value::Null)
    }
}

impl std::ops::Deref for RequestJson {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0
    }
}

impl Drop for RequestJson {
    fn drop(&mut self) {
        fn wipe(value: &mut Value) {
            match value {
                Value::String(text) => text.zeroize(),
                Value::Array(items) => items.iter_mut().for_each(wipe),
                Value::Object(fields) => fields.values_mut().for_each(wipe),
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
        wipe(&mut self.0);
    }
}

/// KPS.1009 for a foreign content type, KPS.1002 for text that is not JSON; an empty body is JSON `null`.
pub fn parse_json_body(headers: &HeaderMap, body: &Bytes) -> Result<RequestJson, ApiError> {
    if !is_json_content_type(headers) {
        return Err(ApiError::unsupported_media_type());
    }
    if body.is_empty() {
        return Ok(RequestJson::none());
    }
    serde_json::from_slice(body).map(RequestJson).map_err(|_| ApiError::malformed_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_content_types() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).expect("header"));
            is_json_content_type(&headers)
        };
        assert!(is_json_content_type(&HeaderMap::new()));
        for ok in [
            "application/json",
            "Application/JSON; charset=UTF-8",
            "text/plain",
            "application/vnd.openstack.compute+json",
            "",
        ] {
            assert!(with(ok), "{ok}");
        }
        for bad in ["application/xml", "text/html", "multipart/form-data"] {
            assert!(!with(bad), "{bad}");
        }
    }
}
