//! The version documents: `GET /` (version list), `/v2` and `/v2.1` (`spec/nova-keypairs.md` §3).

use axum::response::Response;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::microversion::MicroVersion;
use super::pipeline::Call;
use super::respond::json_response;

const V2_UPDATED: &str = "2025-07-04T12:00:00Z";
const V21_UPDATED: &str = "2013-07-23T11:33:21Z";

fn v20_summary(base: &str) -> Value {
    json!({"id": "v2.0", "status": "DEPRECATED", "version": "", "min_version": "", "updated": V2_UPDATED,
           "links": [{"rel": "self", "href": format!("{base}/v2/")}]})
}

fn v21_summary(base: &str) -> Value {
    json!({"id": "v2.1", "status": "CURRENT", "version": MicroVersion::MAX.to_string(),
           "min_version": MicroVersion::MIN.to_string(), "updated": V21_UPDATED,
           "links": [{"rel": "self", "href": format!("{base}/v2.1/")}]})
}

/// `GET /`.
pub fn version_list(base: &str) -> Value {
    json!({"versions": [v20_summary(base), v21_summary(base)]})
}

/// `GET /v2.1` and `/v2.1/`.
pub fn v21_document(base: &str) -> Value {
    json!({"version": {
        "id": "v2.1", "status": "CURRENT", "version": MicroVersion::MAX.to_string(),
        "min_version": MicroVersion::MIN.to_string(), "updated": V21_UPDATED,
        "links": [{"rel": "self", "href": format!("{base}/v2.1/")},
                  {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}]
    }})
}

/// `GET /v2` and `/v2/`.
pub fn v20_document(base: &str) -> Value {
    json!({"version": {
        "id": "v2.0", "status": "DEPRECATED", "version": "", "min_version": "", "updated": V2_UPDATED,
        "links": [{"rel": "self", "href": format!("{base}/v2/")},
                  {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2"}]
    }})
}

/// `GET /`.
pub async fn list_versions(_: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    Ok(json_response(&version_list(&call.base_url)))
}

/// `GET /v2` and `/v2/`.
pub async fn show_v20(_: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    Ok(json_response(&v20_document(&call.base_url)))
}

/// `GET /v2.1` and `/v2.1/`.
pub async fn show_v21(_: &AppState, call: &Call<'_>) -> Result<Response, ApiError> {
    Ok(json_response(&v21_document(&call.base_url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_list_claims_2_1_to_2_96() {
        let doc = version_list("http://h");
        assert_eq!(doc["versions"][1]["version"], "2.96");
        assert_eq!(doc["versions"][1]["min_version"], "2.1");
        assert_eq!(doc["versions"][0]["links"][0]["href"], "http://h/v2/");
    }

    #[test]
    fn v21_document_has_media_types() {
        let doc = v21_document("http://h");
        assert_eq!(doc["version"]["media-types"][0]["type"], "application/vnd.openstack.compute+json;version=2.1");
        assert_eq!(doc["version"]["links"][0]["href"], "http://h/v2.1/");
    }
}
