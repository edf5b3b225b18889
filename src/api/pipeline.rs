//! The check order of `spec/errors.md` §4, run for every request on both listeners: request id, body size
//! (step 1), authentication and the per-caller limits (step 2), routing — 404, 405 with `Allow`, KPS.1014
//! (step 3) — microversion (step 4), content type and JSON parse (step 5) and project match (step 6); then
//! the route's handler, under the request timeout, inside a tracing span carrying the request id; then
//! the request-id headers, the CORS headers for a listed origin, the metrics and the request log line. A
//! CORS preflight from a listed origin is answered after the body-size and listener checks, before
//! authentication (`cors`).
//!
//! What the handler learns about its request is a [`Call`]. This module touches the router, the edge's
//! helpers and the service only through the handlers.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::AppState;
use super::audit;
use super::auth::Caller;
use super::body::{RequestJson, parse_json_body, read_body};
use super::cors;
use super::error::ApiError;
use super::microversion::MicroVersion;
use super::policy::Action;
use super::router::{self, Endpoint, PathParams};

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `listen`: the APIs, and the operations endpoints unless `admin_listen` is set.
    Api,
    /// `admin_listen`: the operations endpoints only.
    Admin,
}

/// What a handler knows about its request once the checks of steps 1–6 have passed.
pub struct Call<'a> {
    /// The authenticated caller; `None` only on routes that need no authentication.
    caller: Option<&'a Caller>,
    /// The path's placeholders (`{project_id}` as written, `{keypair_name}` decoded).
    pub params: &'a PathParams,
    /// Decoded query parameters in request order.
    pub query: Vec<(String, String)>,
    /// The parsed JSON body of a route that takes one, else `null`.
    pub json: RequestJson,
    /// The negotiated microversion on `/v2.1` routes.
    pub version: Option<MicroVersion>,
    /// `public_url` or `http://<Host>`, without a trailing slash.
    pub base_url: String,
    pub request_id: &'a str,
    /// The policy action of the route's row.
    action: Option<Action>,
}

impl Call<'_> {
    /// The authenticated caller (every route with a policy action has one).
    pub fn caller(&self) -> Result<&Caller, ApiError> {
        self.caller.ok_or_else(ApiError::internal)
    }

    /// The policy action of the route, as its row in the route table names it.
    pub fn action(&self) -> Result<Action, ApiError> {
        self.action.ok_or_else(ApiError::internal)
    }

    /// `{keypair_name}` of the path.
    pub fn name(&self) -> &str {
        self.params.name.as_deref().unwrap_or_default()
    }

    /// `{project_id}` of the path, as written in the URL.
    pub fn url_project(&self) -> Option<&str> {
        self.params.project.as_deref()
    }
}

/// Runs one request on `listener`: everything of errors.md §4 and the handler, then headers, metrics, log.
pub async fn dispatch(state: &AppState, request: Request, listener: Listener) -> Response {
    // A v4 UUID from the thread-local CSPRNG: no system call per request (Uuid::new_v4 reads getrandom).
    let request_id = format!("req-{}", uuid::Builder::from_random_bytes(rand::random()).into_uuid());
    let global_request_id = global_request_id(request.headers());
    let cors_origin = state.cors.as_ref().and_then(|cors| cors.allowed_origin(request.headers()));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let matched = router::route(&path);
    let route_label = matched.as_ref().map_or("unmatched", router::Matched::label);
    let started = Instant::now();
    // Every line logged while the request is handled — the service's, the store's, the KMS client's — is
    // inside this span and so carries its ids; tasks spawned for the request take it along.
    let span = tracing::info_span!("request", request_id, global_request_id = global_request_id.as_deref());
    let handled = tokio::time::timeout(state.request_timeout, handle(state, request, matched, &request_id, listener))
        .instrument(span)
        .await;
    let mut response = match handled {
        Ok(response) => response,
        Err(_) => ApiError::timed_out().with_request_id(&request_id).into_response(),
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        for name in ["x-openstack-request-id", "x-compute-request-id", "x-request-id"] {
            headers.insert(name, value.clone());
        }
    }
    if let Some(origin) = cors_origin {
        cors::write_headers(origin, headers);
    }
    let elapsed = started.elapsed();
    state.metrics.record_request(route_label, &method, response.status().as_u16(), elapsed);
    tracing::info!(
        request_id,
        global_request_id = global_request_id.as_deref(),
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// Runs the checks of errors.md §4 and the handler; every failure becomes its catalogue error.
async fn handle(
    state: &AppState,
    request: Request,
    matched: Option<router::Matched>,
    request_id: &str,
    listener: Listener,
) -> Response {
    let (parts, body) = request.into_parts();
    // 1. Body size, whoever is asking.
    let body = match read_body(body, &parts.headers, state.max_body_bytes).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let path = parts.uri.path();
    // The operations endpoints live on exactly one listener; the admin listener serves nothing else.
    let served_here = match (&matched, listener) {
        (Some(route), Listener::Admin) => route.access().is_operations_endpoint(),
        (None, Listener::Admin) => false,
        (Some(route), Listener::Api) => {
            !(route.access().is_operations_endpoint() && state.operations_on_admin_listener)
        }
        // An unknown path: 404, after authentication on API paths (below).
        (None, Listener::Api) => true,
    };
    if !served_here {
        return ApiError::not_found_route().into_response();
    }
    // A CORS preflight from a listed origin carries no credentials: it is answered before authentication.
    if let (Some(cors), Some(route)) = (&state.cors, &matched)
        && let Some(answer) = cors.preflight(&parts, route)
    {
        return answer;
    }

    // The route's row for this method (looked up once: step 3 answers when there is none). A custody route's
    // refusals and attempt are audited (`audit`), whoever is asking.
    let operation = matched.as_ref().and_then(|route| route.operation(&parts.method));
    let audited = operation.and_then(|operation| operation.action).and_then(audit::audited_route);
    let path_name = audited.and(matched.as_ref()).and_then(|route| route.params.name.clone());

    // 2. Authentication for every API path, routed or not.
    let needs_auth = matched.as_ref().map_or_else(|| is_api_path(path), |route| route.access().needs_auth());
    let caller = if needs_auth {
        match state.authenticator.authenticate(&parts, &body).await {
            Ok(caller) => Some(caller),
            Err(error) => {
                if let Some(action) = audited {
                    audit::refused(
                        state,
                        None,
                        action,
                        path_name.as_deref(),
                        (error.status.as_u16(), error.code),
                        request_id,
                    )
                    .await;
                }
                return state.authenticator.reject(error);
            }
        }
    } else {
        None
    };
    // ... then the per-caller limits; the permit holds a concurrency slot until this function returns.
    let _permit = match (&caller, &state.caller_limits) {
        (Some(caller), Some(limits)) => match limits.admit(caller) {
            Ok(permit) => Some(permit),
            Err(limited) => {
                state.metrics.record_limited(limited.kind);
                let error = limited.into_error();
                if let Some(action) = audited {
                    let status = (error.status.as_u16(), error.code);
                    audit::refused(state, Some(caller), action, path_name.as_deref(), status, request_id).await;
                }
                return error.into_response();
            }
        },
        _ => None,
    };

    // 3. Routing: 404, then 405 with Allow, then the operations that need servers.
    let Some(matched) = matched else { return ApiError::not_found_route().into_response() };
    let Some(operation) = operation else {
        let mut response = ApiError::method_not_allowed(parts.method.as_str()).into_response();
        let allow = matched.allowed_methods().iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
        if let Ok(value) = HeaderValue::from_str(&allow) {
            response.headers_mut().insert(header::ALLOW, value);
        }
        return response;
    };
    let handler = match operation.endpoint {
        Endpoint::Handler(handler) => handler,
        Endpoint::NeedsServers(_) => {
            return operation.needs_servers().unwrap_or_else(ApiError::internal).into_response();
        }
    };

    // 4. Microversion (/v2.1 only).
    let version = if operation.negotiates_microversion() {
        match MicroVersion::negotiate(&parts.headers) {
            Ok(version) => Some(version),
            Err((error, echoed)) => {
                let mut response = error.into_response();
                if let Some(echoed) = echoed {
                    echoed.write_headers(response.headers_mut());
                }
                return response;
            }
        }
    } else {
        None
    };

    let call = match prepare(state, &parts, &body, operation, &matched.params, caller.as_ref(), version, request_id) {
        Ok(call) => call,
        Err(error) => {
            if let Some(action) = audited {
                let status = (error.status.as_u16(), error.code);
                audit::refused(state, caller.as_ref(), action, path_name.as_deref(), status, request_id).await;
            }
            return with_version(error.into_response(), version);
        }
    };
    let response = match audited_handler(state, handler, &call, audited).await {
        Ok(response) => response,
        Err(error) => error.with_request_id(request_id).into_response(),
    };
    with_version(response, version)
}

/// The handler of a route; on a custody route (`audited`), between its attempt line (which must be written
/// before anything happens, with `audit.fail_closed`) and, when it fails, its refusal line.
async fn audited_handler(
    state: &AppState,
    handler: router::Handler,
    call: &Call<'_>,
    audited: Option<&'static str>,
) -> Result<Response, ApiError> {
    let (Some(action), Some(caller)) = (audited, call.caller) else { return handler(state, call).await };
    // The key pair it names: in the path (clear) or the body (export, import); none for batches and admin.
    let name = call.params.name.as_deref().or_else(|| call.json.get("keypair")?.get("name")?.as_str());
    audit::attempt(state, caller, action, name, call.request_id).await?;
    let result = handler(state, call).await;
    if let Err(error) = &result {
        audit::refused(state, Some(caller), action, name, (error.status.as_u16(), error.code), call.request_id).await;
    }
    result
}

/// Steps 5 and 6: the JSON body of a route that takes one, then the project of the URL.
#[allow(clippy::too_many_arguments)]
fn prepare<'a>(
    state: &AppState,
    parts: &'a Parts,
    body: &Bytes,
    operation: &router::RouteSpec,
    params: &'a PathParams,
    caller: Option<&'a Caller>,
    version: Option<MicroVersion>,
    request_id: &'a str,
) -> Result<Call<'a>, ApiError> {
    // 5. Content type and JSON parse.
    let json = if operation.json_body { parse_json_body(&parts.headers, body)? } else { RequestJson::none() };
    // 6. Project match.
    if let (Some(project), Some(caller)) = (&params.project, caller) {
        check_project(project, caller)?;
    }
    Ok(Call {
        caller,
        params,
        query: parse_query(parts.uri.query()),
        json,
        version,
        base_url: base_url(state, &parts.headers),
        request_id,
        action: operation.action,
    })
}

/// The microversion headers, on errors as on successes (nova-keypairs.md §4.2).
fn with_version(mut response: Response, version: Option<MicroVersion>) -> Response {
    if let Some(version) = version {
        version.write_headers(response.headers_mut());
    }
    response
}

/// An incoming `X-OpenStack-Request-ID` of the form `req-<lowercase uuid>`: the caller's global request
/// id, logged with the request's own id as oslo.middleware's `request_id` does. Anything else is ignored,
/// and the answer's request-id headers always carry kps's own, fresh id, so they stay unique per request
/// when a client sends one global id with each call of a command.
fn global_request_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("x-openstack-request-id")?.to_str().ok()?;
    let uuid = value.strip_prefix("req-")?;
    let well_formed = uuid.len() == 36
        && uuid.bytes().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => byte == b'-',
            _ => byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte),
        });
    well_formed.then(|| value.to_owned())
}

/// Paths below these prefixes need authentication before anything else is said about them.
fn is_api_path(path: &str) -> bool {
    ["/v2/", "/v2.1/", "/v3/", "/admin/"].iter().any(|prefix| path.starts_with(prefix))
}

/// KPS.1005: the URL's project must be the caller's, administrators included.
fn check_project(url_project: &str, caller: &Caller) -> Result<(), ApiError> {
    let project = router::decode_segment(url_project);
    if project == caller.project_id { Ok(()) } else { Err(ApiError::project_mismatch(&project, &caller.project_id)) }
}

fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// `public_url`, else `http://<Host>`.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let scheme = if state.https { "https" } else { "http" };
    format!("{scheme}://{host}")
}
