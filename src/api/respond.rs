//! Response bodies: JSON serialized straight from borrowed data, and responses that carry a private key,
//! written into one zeroizing buffer and marked `Cache-Control: no-store` (design.md, request path rule 5).
//!
//! It touches nothing but the response being built.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// A JSON body with `Content-Type: application/json`.
pub fn json_body(value: &Value) -> ([(header::HeaderName, HeaderValue); 1], String) {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], value.to_string())
}

/// `200` with a JSON body.
pub fn json_response(value: &Value) -> Response {
    (StatusCode::OK, json_body(value)).into_response()
}

/// A JSON response from an already serialized body.
pub fn json_bytes(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A JSON response serialized straight from borrowed data (no intermediate `Value`).
pub fn json_ok<T: Serialize>(status: StatusCode, body: &T) -> Response {
    // Serializing plain structs of strings and numbers cannot fail.
    json_bytes(status, Bytes::from(serde_json::to_vec(body).unwrap_or_default()))
}

/// An empty `200`: no `Content-Type`, `Content-Length: 0`.
pub fn empty_ok() -> Response {
    let mut response = StatusCode::OK.into_response();
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

/// A response whose body carries a private key: `{"<wrapper>": {..fields.., "private_key": ...}}`.
///
/// The body is serialized straight into one pre-sized, zeroizing buffer (no intermediate `String` or
/// `Value` holds the key) that is wiped when the body has been sent. `private_key` is placed after
/// `public_key`. `Cache-Control: no-store` and `Pragma: no-cache` keep it out of caches.
pub fn private_key_response(
    status: StatusCode,
    fields: Map<String, Value>,
    wrapper: &str,
    private_key: &str,
) -> Response {
    let capacity =
        256 + 2 * private_key.len() + fields.iter().map(|(k, v)| k.len() + v.to_string().len() * 2).sum::<usize>();
    let mut buffer = Zeroizing::new(Vec::with_capacity(capacity));
    let written = write_with_private_key(&mut buffer, &fields, wrapper, private_key);
    if written.is_err() || buffer.capacity() != capacity {
        // A reallocation would have left a copy behind; this cannot happen with the capacity above.
        tracing::error!("private key response buffer was reallocated");
    }
    let body = Body::from(Bytes::from_owner(buffer));
    let mut response = (status, body).into_response();
    no_store(&mut response, "application/json");
    response
}

/// A body holding secrets: its content type, and kept out of every cache.
pub fn no_store(response: &mut Response, content_type: &'static str) {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn write_with_private_key(
    out: &mut Vec<u8>,
    fields: &Map<String, Value>,
    wrapper: &str,
    private_key: &str,
) -> serde_json::Result<()> {
    out.push(b'{');
    serde_json::to_writer(&mut *out, wrapper)?;
    out.extend_from_slice(b":{");
    let mut first = true;
    let mut separator = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    let after_public_key = fields.contains_key("public_key");
    let write_private_key = |out: &mut Vec<u8>, separator: &mut dyn FnMut(&mut Vec<u8>)| {
        separator(out);
        out.extend_from_slice(b"\"private_key\":");
        serde_json::to_writer(&mut *out, private_key)
    };
    for (key, value) in fields {
        separator(out);
        serde_json::to_writer(&mut *out, key)?;
        out.push(b':');
        serde_json::to_writer(&mut *out, value)?;
        if key == "public_key" {
            write_private_key(out, &mut separator)?;
        }
    }
    if !after_public_key {
        write_private_key(out, &mut separator)?;
    }
    out.extend_from_slice(b"}}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_key_body_is_valid_json_with_the_key_after_public_key() {
        let mut fields = Map::new();
        fields.insert("name".into(), "k".into());
        fields.insert("public_key".into(), "ssh-rsa AAAA".into());
        fields.insert("user_id".into(), "u".into());
        let mut out = Vec::new();
        write_with_private_key(&mut out, &fields, "keypair", "-----BEGIN X-----\n\"q\"\n").expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            r#"{"keypair":{"name":"k","public_key":"ssh-rsa AAAA","private_key":"-----BEGIN X-----\n\"q\"\n","user_id":"u"}}"#
        );
    }
}
