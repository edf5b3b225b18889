//! CORS for browser consoles, as oslo.middleware's `cors` filter gives Nova: off until `cors.allowed_origins`
//! lists an origin. A request whose `Origin` is listed gets the CORS headers on every answer, error answers
//! included (the pipeline writes them last, next to the request-id headers); a preflight from a listed origin
//! for a method the route serves is answered here, before authentication (a browser sends no token with
//! it). Any other request — no `Origin`, an unlisted one, CORS off — is served exactly as without CORS, so a
//! preflight from an unlisted origin still gets Nova's answer (405 with `Allow`, or 401 on an API path).
//!
//! Credentials mode is not allowed (no `Access-Control-Allow-Credentials`), unlike oslo.middleware's default:
//! consoles authenticate with headers their script sets (`X-Auth-Token`, the signing `Authorization`), which
//! need no credentials mode; kps reads no cookie and no browser-managed HTTP authentication, so allowing it
//! would only let a listed origin's page send ambient credentials kps never uses.
//!
//! This module touches the request's headers and the route's methods only.

use std::collections::HashSet;

use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::router::Matched;
use crate::config::CorsConfig;

/// The request headers a console may send: the OpenStack token and version headers, the request id, and
/// the headers the Huawei SDK signs (`X-Sdk-*`, `X-Project-Id`, `X-Domain-Id`, `X-Security-Token`, `Host`).
pub const ALLOWED_HEADERS: &str = "X-Auth-Token, OpenStack-API-Version, X-OpenStack-Nova-API-Version, \
     Content-Type, X-OpenStack-Request-ID, Authorization, X-Sdk-Date, X-Sdk-Content-Sha256, X-Project-Id, \
     X-Domain-Id, X-Security-Token, Host";

/// The response headers a console's script may read beyond the CORS-safelisted ones: the negotiated
/// microversion and the request ids.
pub const EXPOSED_HEADERS: &str = "OpenStack-API-Version, X-OpenStack-Nova-API-Version, X-OpenStack-Request-ID, \
     X-Compute-Request-Id, X-Request-Id, Vary";

/// `cors.*` with at least one origin.
#[derive(Debug)]
pub struct Cors {
    origins: HashSet<String>,
    max_age: HeaderValue,
}

impl Cors {
    /// `None` when no origin is listed: CORS is off.
    pub fn new(config: &CorsConfig) -> Option<Self> {
        if config.allowed_origins.is_empty() {
            return None;
        }
        Some(Self {
            origins: config.allowed_origins.iter().cloned().collect(),
            max_age: HeaderValue::from(config.max_age_s),
        })
    }

    /// The request's `Origin` when it is listed (compared exactly, as browsers send it).
    pub fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        self.origins.contains(origin.to_str().ok()?).then(|| origin.clone())
    }

    /// The answer to a preflight from a listed origin (`OPTIONS` with `Access-Control-Request-Method`) for a
    /// method `route` serves; `None` for every other request, which the pipeline serves as usual.
    pub fn preflight(&self, parts: &Parts, route: &Matched) -> Option<Response> {
        if parts.method != Method::OPTIONS {
            return None;
        }
        self.allowed_origin(&parts.headers)?;
        let requested = parts.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?.to_str().ok()?;
        let requested = Method::from_bytes(requested.as_bytes()).ok()?;
        route.operation(&requested)?;
        let methods = route.allowed_methods().iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
        let mut response = StatusCode::OK.into_response();
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_str(&methods).ok()?);
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Some(response)
    }
}

/// The headers every answer to a listed origin carries. `Vary: Origin` is added to any `Vary` already
/// there (the microversion headers), so a cache keeps one answer per origin.
pub fn write_headers(origin: HeaderValue, headers: &mut HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
}
