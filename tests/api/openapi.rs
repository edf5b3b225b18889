//! `GET /openapi.json` against the real routes: every documented path and method is routed (neither 404
//! KPS.1010 nor 405 KPS.1011), every route of `ROUTE_TABLE` is documented, and every `$ref` resolves; the
//! 501s it documents are exactly the routes that need servers, and a few of its constraints are checked
//! against kps's answers here. The whole document is fuzzed with schemathesis by
//! `tests/client_compat.rs` (README "OpenAPI document and its fuzz check").

use std::collections::BTreeSet;

use kps::api::router::{Endpoint, ROUTE_TABLE};
use serde_json::Value;

use crate::Kps;

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

async fn document(kps: &Kps) -> Value {
    let answer = kps.call("GET", "/openapi.json", &[], None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    answer.json()
}

/// `(METHOD, template)` of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS {
            if item.get(method).is_some() {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

#[tokio::test]
async fn the_document_and_the_route_table_list_the_same_operations() {
    let kps = Kps::new();
    let doc = document(&kps).await;
    assert_eq!(doc["openapi"], "3.0.3");
    let served: BTreeSet<(String, String)> = ROUTE_TABLE
        .iter()
        .flat_map(|spec| spec.methods.iter().map(|m| (m.as_str().to_owned(), spec.template.to_owned())))
        // HEAD is implied by GET (stated in info.description).
        .filter(|(method, _)| method != "HEAD")
        .collect();
    let in_document = documented(&doc);
    let undocumented: Vec<_> = served.difference(&in_document).collect();
    let not_served: Vec<_> = in_document.difference(&served).collect();
    assert!(undocumented.is_empty(), "routes missing from openapi.json: {undocumented:?}");
    assert!(not_served.is_empty(), "documented but not in ROUTE_TABLE: {not_served:?}");
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let kps = Kps::new();
    let doc = document(&kps).await;
    for (method, template) in documented(&doc) {
        let path = template.replace("{project_id}", "p").replace("{keypair_name}", "k").replace("{task_id}", "t");
        let answer = kps
            .call(&method, &path, &[("x-auth-token", "admin:p:admin"), ("content-type", "application/json")], None)
            .await;
        let code = serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .and_then(|b| b["error_code"].as_str().map(str::to_owned));
        assert!(
            !matches!(code.as_deref(), Some("KPS.1010" | "KPS.1011")),
            "{method} {path}: {} {code:?}",
            answer.status
        );
        assert_ne!(answer.status, 405, "{method} {path}");
    }
}

#[tokio::test]
async fn every_reference_resolves_and_errors_use_the_error_schema() {
    let kps = Kps::new();
    let doc = document(&kps).await;
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("external ref {reference}"));
        assert!(doc.pointer(pointer).is_some(), "{reference} does not resolve");
    }
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], serde_json::json!(["error_code", "error_msg"]));
    // The example is a real error body.
    let answer = kps.nova("GET", "/v2.1/os-keypairs/nope", "u-1001:p", None, None).await;
    let body = answer.json();
    assert_eq!(
        body.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
        error["example"].as_object().map(|o| o.keys().cloned().collect())
    );
}

#[tokio::test]
async fn the_documented_501s_are_the_operations_that_need_servers() {
    let kps = Kps::new();
    let doc = document(&kps).await;
    for spec in ROUTE_TABLE {
        for method in spec.methods.iter().filter(|m| m.as_str() != "HEAD") {
            let operation = &doc["paths"][spec.template][method.as_str().to_lowercase()];
            let documents_501 = operation["responses"].get("501").is_some();
            let needs_servers = matches!(spec.endpoint, Endpoint::NeedsServers(_));
            assert_eq!(documents_501, needs_servers, "{method} {}", spec.template);
        }
    }
}

/// The issue's findings, both ways: what the document declares about them is what kps answers.
#[tokio::test]
async fn the_document_and_kps_agree_on_the_fuzzers_findings() {
    let kps = Kps::new();
    let doc = document(&kps).await;
    let parameters = &doc["components"]["parameters"];

    // Legacy v2 ignores `limit=-1` as Nova does: its parameters are declared without constraints.
    for name in ["v2_user_id", "v2_limit", "v2_marker"] {
        assert_eq!(parameters[name]["schema"], serde_json::json!({"type": "string"}), "{name}");
    }
    let answer = kps.nova("GET", "/v2/p/os-keypairs?limit=-1&marker=nope&user_id=x", "u:p", None, None).await;
    assert_eq!(answer.status, 200);
    // /v2.1 refuses it (from 2.35, where `limit` exists), as its `minimum` says.
    assert_eq!(parameters["nova_limit"]["schema"]["minimum"], 0);
    let answer = kps.nova("GET", "/v2.1/p/os-keypairs?limit=-1", "u:p", Some("2.96"), None).await;
    assert_eq!(answer.status, 400);

    // The version headers have a pattern (the fuzz check tests it value by value); free text is refused.
    for name in ["OpenStackApiVersion", "XOpenStackNovaApiVersion"] {
        assert!(parameters[name]["schema"]["pattern"].is_string(), "{name}");
    }
    let answer = kps.call("GET", "/v2.1/", &[("x-openstack-nova-api-version", "abc")], None).await;
    assert_eq!(answer.status, 400);

    // `kms` custody needs a key name or id, in the document and in kps.
    let kms = &doc["components"]["schemas"]["EncryptionKms"];
    assert_eq!(kms["anyOf"], serde_json::json!([{"required": ["kms_key_name"]}, {"required": ["kms_key_id"]}]));
    let body = r#"{"keypair": {"name": "k", "key_protection": {"encryption": {"type": "kms"}}}}"#;
    let answer = kps.call("POST", "/v3/p/keypairs", &[("x-auth-token", "u:p")], Some(body)).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error_code"], "KPS.1401");
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(reference)) => out.push(reference.clone()),
                    _ => collect_refs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, out)),
        _ => {}
    }
}
