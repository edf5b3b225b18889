//! The Nova `os-keypairs` API (`/v2`, `/v2.1`, project-less `/v2[.1]/os-keypairs`) with the KPS V2.1
//! `key_protection` and kps `algorithm` extensions: per-microversion differences, query rules, and the JSON
//! shapes of `spec/nova-keypairs.md`. Body validation is in `validate`.
//!
//! Everything here is about the wire: the use cases live in `crate::service`, reached directly or through
//! `keypair_ops`, which this API shares with V3.

mod validate;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, json};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::keypair_ops::{self, nova_limit, query_first, query_last, reject_unknown_query};
use super::microversion::MicroVersion;
use super::pipeline::Call;
use super::policy::Target;
use super::respond::{json_body, json_bytes, json_ok, private_key_response};
use crate::model::ListFields;
use crate::service::{self, MAX_LIST_LIMIT};

/// Which flavour of the compute API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NovaApi {
    /// `/v2/...`: legacy v2 compatibility mode (2.1 behaviour, relaxed body validation).
    Legacy,
    /// `/v2.1/...` at the negotiated microversion.
    V21(MicroVersion),
}

impl NovaApi {
    /// `/v2.1` routes negotiate a microversion; `/v2` routes do not.
    fn of(call: &Call<'_>) -> Self {
        call.version.map_or(Self::Legacy, Self::V21)
    }

    fn at_least(self, minor: u32) -> bool {
        match self {
            Self::Legacy => minor <= 1,
            Self::V21(version) => version.at_least(minor),
        }
    }

    fn path_root(self) -> &'static str {
        match self {
            Self::Legacy => "/v2",
            Self::V21(_) => "/v2.1",
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Query parameters (§6.2–6.4)

/// The query parameters a route accepts at this version.
fn allowed_query(api: NovaApi, list: bool) -> Vec<&'static str> {
    let mut allowed = Vec::new();
    if api.at_least(10) {
        allowed.push("user_id");
    }
    if list && api.at_least(35) {
        allowed.extend(["limit", "marker"]);
    }
    allowed
}

/// From 2.75 unknown query parameters are rejected; before, they are ignored.
fn check_query(api: NovaApi, query: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    if api.at_least(75) { reject_unknown_query(query, allowed) } else { Ok(()) }
}

/// The user a request acts on: `?user_id=` (2.10+, first value; empty = the caller) or the caller.
fn target_user(caller: &Caller, query: &[(String, String)], allowed: &[&str]) -> String {
    let named = query_first(query, "user_id").filter(|_| allowed.contains(&"user_id"));
    keypair_ops::owner_of(caller, named)
}

// ---------------------------------------------------------------------------------------------------------
// Handlers

/// `POST .../os-keypairs`: create (generate) or import.
pub async fn create(state: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    let api = NovaApi::of(call);
    let body = validate::validate_create(api, &call.json)?;
    let caller = call.caller()?;
    let created = keypair_ops::create_and_audit(state, caller, call.action()?, call.request_id, body).await?;

    let with_type = api.at_least(2);
    let record = &created.record;
    let mut keypair = Map::new();
    keypair.insert("name".into(), record.name.clone().into());
    if with_type {
        keypair.insert("type".into(), record.key_type.as_str().into());
    }
    keypair.insert("public_key".into(), record.public_key.clone().into());
    keypair.insert("fingerprint".into(), record.fingerprint.clone().into());
    keypair.insert("user_id".into(), record.user_id.clone().into());
    let status = if with_type { StatusCode::CREATED } else { StatusCode::OK };
    match created.private_key {
        Some(private_key) => Ok(private_key_response(status, keypair, "keypair", &private_key)),
        None => Ok((status, json_body(&json!({ "keypair": keypair }))).into_response()),
    }
}

/// `GET .../os-keypairs`.
pub async fn list(state: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    let api = NovaApi::of(call);
    let query = &call.query;
    let allowed = allowed_query(api, true);
    check_query(api, query, &allowed)?;
    let paging = api.at_least(35);
    let limit = match query_last(query, "limit").filter(|_| paging) {
        None => None,
        Some(_) => Some(nova_limit(query)?),
    };
    let marker = query_last(query, "marker").filter(|_| paging);
    let caller = call.caller()?;
    let user = target_user(caller, query, &allowed);
    state.policy.enforce(call.action()?, caller, &Target::user(&user))?;

    // The page depends on the request's shape (microversion, links, query) and on the two owners' keys:
    // cached by the former, valid while the generations of the latter are unchanged (`page_cache`).
    let project_id = &caller.project_id;
    let stamp = state.service.list_stamp(&user, project_id).await?;
    let cache_key = state
        .list_pages
        .enabled()
        .then(|| format!("{:?}", (api, project_id, &user, &call.base_url, call.url_project(), query)));
    if let Some(body) = cache_key.as_deref().and_then(|key| state.list_pages.get(key, stamp)) {
        return Ok(json_bytes(StatusCode::OK, body));
    }

    // From 2.35 a page of at most 1000; before, every key pair, as Nova (nova-keypairs.md §6.2).
    let page_size = limit.unwrap_or(MAX_LIST_LIMIT).min(MAX_LIST_LIMIT);
    let page = if paging {
        state.service.list_encoded(&user, project_id, marker, page_size).await
    } else {
        state.service.list_all_encoded(&user, project_id).await
    }?;
    let records: Vec<ListFields> = page.fields()?;
    let with_type = api.at_least(2);
    let keypairs = records
        .iter()
        .map(|record| Wrapped {
            keypair: ListItem {
                name: record.name,
                key_type: with_type.then_some(record.key_type),
                public_key: record.public_key,
                fingerprint: record.fingerprint,
            },
        })
        .collect();
    let full_page = paging && page_size > 0 && records.len() == page_size;
    let keypairs_links = match records.last().filter(|_| full_page) {
        Some(last) => {
            let last_name = last.name_text().map_err(|e| service::ServiceError::Storage(e.to_string()))?;
            Some([Link { rel: "next", href: next_link(api, call, &allowed, &last_name) }])
        }
        None => None,
    };
    // Serializing borrowed strings and raw JSON cannot fail.
    let body = Bytes::from(serde_json::to_vec(&ListBody { keypairs, keypairs_links }).unwrap_or_default());
    if let Some(key) = cache_key {
        state.list_pages.insert(key, stamp, body.clone());
    }
    Ok(json_bytes(StatusCode::OK, body))
}

/// `{"keypair": ...}`.
#[derive(Serialize)]
struct Wrapped<T> {
    keypair: T,
}

/// A list item: `type` only from 2.2. The fields are JSON text as stored (already escaped).
#[derive(Serialize)]
struct ListItem<'a> {
    name: &'a RawValue,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    key_type: Option<&'a RawValue>,
    public_key: &'a RawValue,
    fingerprint: &'a RawValue,
}

#[derive(Serialize)]
struct Link {
    rel: &'static str,
    href: String,
}

#[derive(Serialize)]
struct ListBody<'a> {
    keypairs: Vec<Wrapped<ListItem<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keypairs_links: Option<[Link; 1]>,
}

/// The `next` link, built as Nova builds it (§6.2).
///
/// Only the parameters the list accepts at this version are kept: Nova drops the others before building it.
fn next_link(api: NovaApi, call: &Call<'_>, allowed: &[&str], last_name: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = call
        .query
        .iter()
        .filter(|(k, _)| allowed.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.sort_unstable();
    let mut kept: Vec<(&str, &str)> = Vec::new();
    for (name, value) in pairs {
        match kept.last_mut() {
            Some(previous) if previous.0 == name => previous.1 = value,
            _ => kept.push((name, value)),
        }
    }
    match kept.iter_mut().find(|(name, _)| *name == "marker") {
        Some(marker) => marker.1 = last_name,
        None => kept.push(("marker", last_name)),
    }
    let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(kept).finish();
    let project = call.url_project().map(|p| format!("/{p}")).unwrap_or_default();
    format!("{}{}{project}/os-keypairs?{query}", call.base_url, api.path_root())
}

/// `GET .../os-keypairs/{name}`.
pub async fn show(state: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    let api = NovaApi::of(call);
    let allowed = allowed_query(api, false);
    check_query(api, &call.query, &allowed)?;
    let caller = call.caller()?;
    let user = target_user(caller, &call.query, &allowed);
    let record = keypair_ops::show_record(state, caller, call.action()?, &user, call.name()).await?;
    let view = ShowItem {
        name: &record.name,
        public_key: &record.public_key,
        fingerprint: &record.fingerprint,
        user_id: &record.user_id,
        key_type: api.at_least(2).then_some(record.key_type.as_str()),
        id: record.id,
        created_at: service::format_timestamp(record.created_at_us),
        updated_at: None,
        deleted: false,
        deleted_at: None,
    };
    Ok(json_ok(StatusCode::OK, &Wrapped { keypair: view }))
}

/// Show: Nova's fields; `updated_at`/`deleted_at` are always null and `deleted` false (Nova semantics).
#[derive(Serialize)]
struct ShowItem<'a> {
    name: &'a str,
    public_key: &'a str,
    fingerprint: &'a str,
    user_id: &'a str,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    key_type: Option<&'a str>,
    id: u64,
    created_at: String,
    updated_at: Option<()>,
    deleted: bool,
    deleted_at: Option<()>,
}

/// `DELETE .../os-keypairs/{name}`.
pub async fn delete(state: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    let api = NovaApi::of(call);
    let allowed = allowed_query(api, false);
    check_query(api, &call.query, &allowed)?;
    let caller = call.caller()?;
    let user = target_user(caller, &call.query, &allowed);
    keypair_ops::delete_and_audit(state, caller, call.action()?, call.request_id, &user, call.name()).await?;
    let mut response = if api.at_least(2) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        let mut accepted = StatusCode::ACCEPTED.into_response();
        accepted.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        accepted
    };
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_query_parameters_are_rejected_from_2_75() {
        let query = vec![("foo".to_owned(), "1".to_owned())];
        assert!(check_query(NovaApi::V21(MicroVersion::new(2, 74)), &query, &[]).is_ok());
        let error = check_query(NovaApi::V21(MicroVersion::new(2, 75)), &query, &[]).expect_err("2.75");
        assert_eq!(error.message, "Additional properties are not allowed ('foo' was unexpected)");
    }
}
