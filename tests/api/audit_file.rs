//! `audit.file` and `audit.fail_closed` (issue 14 point 5), on the real binary: the file is its own JSON-lines
//! stream, mode 0600, with a line for every custody attempt and its outcome — refused (401, 403) and failed
//! (the KMS down) ones included — and for admin backup and rewrap; with `fail_closed`, a custody request
//! whose line cannot be written (a full disk) fails with 503 KPS.9006 and reveals nothing.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::binary::Server;
use crate::full_disk::Tmpfs;
use crate::kms::KmsMock;

const ALICE: &str = "alice:p-42";
const ADMIN: &str = "root:p-42:admin";

fn send(url: &str, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = reqwest::blocking::Client::new().request(method, format!("{url}{path}"));
    if let Some(token) = token {
        request = request.header("x-auth-token", token);
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    let response = request.send().expect("request");
    let status = response.status().as_u16();
    let text = response.text().expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn audit_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("audit file");
    text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
}

/// (action, outcome, status, caller_user, keypair_name) of a line.
fn summary(line: &Value) -> (String, String, Value, Value, Value) {
    let text = |key: &str| line[key].as_str().unwrap_or_default().to_owned();
    (text("action"), text("outcome"), line["status"].clone(), line["caller_user"].clone(), line["keypair_name"].clone())
}

#[test]
fn the_audit_file_has_every_custody_attempt_and_its_outcome() {
    let kms = KmsMock::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let audit_path = dir.path().join("audit.jsonl");
    let audit_file = audit_path.to_str().expect("utf-8").to_owned();
    // Readers may not reveal private keys (oslo.policy YAML): a 403 at the policy step.
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "\"kps:keypairs:export_private_key\": \"not role:reader\"\n").expect("policy");
    let mut env: Vec<(&str, String)> = kms.env().into_iter().collect();
    env.push(("KPS_AUDIT_FILE", audit_file));
    env.push(("KPS_POLICY_FILE", policy.to_str().expect("utf-8").to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_with_env(&dir.path().join("data"), &env);
    let url = server.url.as_str();
    let export = |token, project: &str| {
        let path = format!("/v3/{project}/keypairs/private-key/export");
        send(url, "POST", &path, token, Some(json!({"keypair": {"name": "k1"}})))
    };

    let kms_escrow = json!({"encryption": {"type": "kms", "kms_key_name": "kps-escrow"}});
    let created = send(
        url,
        "POST",
        "/v3/p-42/keypairs",
        Some(ALICE),
        Some(json!({"keypair":
        {"name": "k1", "key_protection": kms_escrow}})),
    );
    assert_eq!(created.0, 200, "{created:?}");
    // Refused: no credential (401) on export, clear and import; the policy (403) on export.
    assert_eq!(export(None, "p-42").0, 401);
    assert_eq!(send(url, "DELETE", "/v3/p-42/keypairs/k1/private-key", None, None).0, 401);
    let import = json!({"keypair": {"name": "k1", "key_protection": {"private_key": "x"}}});
    assert_eq!(send(url, "POST", "/v3/p-42/keypairs/private-key/import", None, Some(import)).0, 401);
    let reader = export(Some("alice:p-42:reader"), "p-42");
    assert_eq!(reader.0, 403, "{reader:?}");
    // Failed: the KMS answers 503 to every call, so the data key cannot be unwrapped.
    let faults = reqwest::blocking::Client::new();
    let fault = faults.post(format!("{}/_mock/fault", kms.endpoint)).json(&json!({"status": 503, "count": 100}));
    assert!(fault.send().expect("fault").status().is_success());
    let unavailable = export(Some(ALICE), "p-42");
    assert_eq!((unavailable.0, &unavailable.1["error_code"]), (503, &json!("KPS.1801")), "{unavailable:?}");
    faults.delete(format!("{}/_mock/fault", kms.endpoint)).send().expect("clear the fault");
    assert_eq!(export(Some(ALICE), "p-42").0, 200);
    // Admin: a backup (read to its end) and a dry-run rewrap.
    let backup = send(url, "POST", "/admin/v1/backup", Some(ADMIN), None);
    assert_eq!(backup.0, 200);
    assert_eq!(send(url, "POST", "/admin/v1/rewrap", Some(ADMIN), Some(json!({"dry_run": true}))).0, 200);
    // The delete of an escrowed key pair.
    assert_eq!(send(url, "DELETE", "/v3/p-42/keypairs/k1", Some(ALICE), None).0, 204);
    assert!(server.stop().success());

    let mode = std::fs::metadata(&audit_path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the audit file is its owner's alone");
    let lines = audit_lines(&audit_path);
    let (alice, k1, none) = (json!("alice"), json!("k1"), Value::Null);
    let row = |action: &str, outcome: &str, status: Value, caller: &Value, name: &Value| {
        (action.to_owned(), outcome.to_owned(), status, caller.clone(), name.clone())
    };
    let expected = vec![
        row("escrow", "attempt", none.clone(), &alice, &k1),
        row("escrow", "success", none.clone(), &alice, &k1),
        row("export_private_key", "denied", json!(401), &none, &none),
        row("clear_private_key", "denied", json!(401), &none, &k1),
        row("import_private_key", "denied", json!(401), &none, &none),
        row("export_private_key", "attempt", none.clone(), &alice, &k1),
        row("export_private_key", "denied", json!(403), &alice, &k1),
        row("export_private_key", "attempt", none.clone(), &alice, &k1),
        row("export_private_key", "failed", json!(503), &alice, &k1),
        row("export_private_key", "attempt", none.clone(), &alice, &k1),
        row("export_private_key", "success", none.clone(), &alice, &k1),
        row("backup", "attempt", none.clone(), &json!("root"), &none),
        row("backup", "success", none.clone(), &json!("root"), &none),
        row("rewrap", "attempt", none.clone(), &json!("root"), &none),
        row("rewrap", "success", none.clone(), &json!("root"), &none),
        row("delete_escrowed", "attempt", none.clone(), &alice, &k1),
        row("delete_escrowed", "success", none.clone(), &alice, &k1),
    ];
    assert_eq!(lines.iter().map(summary).collect::<Vec<_>>(), expected, "{lines:#?}");
    let failed = &lines[8];
    assert_eq!(failed["error_code"], "KPS.1801");
    let success = &lines[10];
    assert_eq!((&success["caller_project"], &success["keypair_user"]), (&json!("p-42"), &json!("alice")));
    assert_eq!((&success["encryptor"], &success["key_ref"]), (&json!("kms"), &json!(crate::kms::ESCROW_ID)));
    assert!(success["request_id"].as_str().is_some_and(|id| id.starts_with("req-")));
    assert!(success["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{success}");
    assert!(lines[14]["detail"].as_str().is_some_and(|d| d.contains("dry_run")), "{}", lines[14]);
}

fn escrow_default(url: &str, name: &str) -> (u16, Value) {
    let body = json!({"keypair": {"name": name, "key_protection": {"encryption": {"type": "default"}}}});
    send(url, "POST", "/v3/p-42/keypairs", Some(ALICE), Some(body))
}

fn metric(url: &str, name: &str) -> f64 {
    let page = reqwest::blocking::get(format!("{url}/metrics")).expect("metrics").text().expect("text");
    page.lines().find_map(|line| line.strip_prefix(&format!("{name} "))?.parse().ok()).expect("metric")
}

#[test]
fn with_fail_closed_a_full_audit_disk_fails_custody_requests_and_reveals_nothing() {
    let Some(tmpfs) = Tmpfs::mount("256k") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let audit_path = tmpfs.path().join("audit.jsonl");
    let audit_file = audit_path.to_str().expect("utf-8");
    let data = dir.path().join("data");
    let env = [("KPS_AUDIT_FILE", audit_file), ("KPS_AUDIT_FAIL_CLOSED", "true")];
    let server = Server::start_with_env(&data, &env);
    let url = server.url.clone();
    assert_eq!(escrow_default(&url, "kept").0, 200);
    let export = || {
        send(
            &url,
            "POST",
            "/v3/p-42/keypairs/private-key/export",
            Some(ALICE),
            Some(json!({"keypair":
            {"name": "kept"}})),
        )
    };
    assert_eq!(export().0, 200);

    let filler = tmpfs.fill(0);
    // The audit file's last page may still have room for a few lines: export until it has none.
    let (status, body) = (0..50).map(|_| export()).find(|(status, _)| *status != 200).expect("the disk fills");
    assert_eq!((status, &body["error_code"]), (503, &json!("KPS.9006")), "{body}");
    let lines_before = audit_lines(&audit_path).len();
    assert!(!body.to_string().contains("PRIVATE KEY"), "nothing revealed: {body}");
    let (status, body) = escrow_default(&url, "new");
    assert_eq!((status, &body["error_code"]), (503, &json!("KPS.9006")), "{body}");
    assert_eq!(send(&url, "GET", "/v3/p-42/keypairs/new", Some(ALICE), None).0, 404, "no record left behind");
    // What is not custody goes on: a Nova import.
    let nova = json!({"keypair": {"name": "plain", "public_key": crate::ED25519_PUBLIC_KEY.trim_end()}});
    assert_eq!(send(&url, "POST", "/v2.1/os-keypairs", Some(ALICE), Some(nova)).0, 200);
    assert!(metric(&url, "kps_audit_write_failures_total") >= 2.0);
    assert_eq!(audit_lines(&audit_path).len(), lines_before, "no partial line was left in the file");

    // Space again: custody works again, with its lines.
    std::fs::remove_file(filler).expect("free the disk");
    assert_eq!(export().0, 200);
    assert_eq!(audit_lines(&audit_path).len(), lines_before + 2);
    assert!(server.stop().success());

    // Without fail_closed, the same full disk costs the line (counted), not the request.
    let filler = tmpfs.fill(0);
    let server = Server::start_with_env(&data, &env[..1]);
    let url = server.url.clone();
    // A page's worth of lines at most still fits; twenty exports write far more than that.
    for _ in 0..20 {
        let (status, body) = send(
            &url,
            "POST",
            "/v3/p-42/keypairs/private-key/export",
            Some(ALICE),
            Some(json!(
            {"keypair": {"name": "kept"}})),
        );
        assert_eq!(status, 200, "{body}");
    }
    assert!(metric(&url, "kps_audit_write_failures_total") >= 1.0, "the lost lines are counted");
    assert!(server.stop().success());
    drop(filler);
}
