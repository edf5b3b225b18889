//! The `kms-mock` binary over raw HTTP: authentication, Huawei error shapes, key lifecycle, data-key
//! validation, paging, faults, the state file and seeds. Each test starts the binary built by this run on
//! 127.0.0.1:0 (which is also why `cargo test` at the workspace root builds `target/<profile>/kms-mock`
//! before kps's own integration tests, which start it too).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use kps::kms::is_key_id;
use kps::signing::{self, Credentials, SignedRequest};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The project the mock serves unless `--project-id` says otherwise.
const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const AK: &str = "MOCKAK";
const SK: &str = "mock-secret";
const KEY_ID: &str = "3c1d5a0e-8f6b-4e52-9d7a-21f0c4b8e6a1";

/// A running `kms-mock` process with the keys it printed at start, in creation order.
struct Mock {
    child: Child,
    addr: String,
    keys: Vec<(String, String)>,
}

impl Mock {
    /// Starts the binary with `args` on a free port and reads its startup lines; no `KMS_MOCK_*` variable of
    /// the caller's environment leaks in.
    fn start(args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kms-mock"));
        command.args(["--listen", "127.0.0.1:0"]).args(args).stdout(Stdio::piped()).stderr(Stdio::null());
        for name in ["LISTEN", "PROJECT_ID", "AK", "SK", "TOKEN", "SEED", "STATE"] {
            command.env_remove(format!("KMS_MOCK_{name}"));
        }
        let mut child = command.spawn().expect("spawn kms-mock");
        let stdout = child.stdout.take().expect("stdout");
        let mut keys = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("line");
            if let Some(addr) = line.strip_prefix("listening on ") {
                return Self { child, addr: addr.to_owned(), keys };
            }
            let parts: Vec<&str> = line.split(' ').collect();
            assert!(parts.len() == 3 && parts[0] == "key", "unexpected startup line {line:?}");
            keys.push((parts[1].to_owned(), parts[2].to_owned()));
        }
        panic!("kms-mock exited before printing its address: {:?}", child.wait());
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// (alias, key id) of the keys present at start, in creation order.
    fn keys(&self) -> &[(String, String)] {
        &self.keys
    }

    /// POST /_mock/fault: the next calls answer `fault` (§5.4).
    async fn inject_fault(&self, fault: Value) {
        reqwest::Client::new()
            .post(format!("{}/_mock/fault", self.endpoint()))
            .json(&fault)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("fault set");
    }

    /// SIGTERM (the graceful stop), then the exit.
    fn shutdown(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        self.child.wait().expect("wait");
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signed_mock() -> Mock {
    Mock::start(["--ak", AK, "--sk", SK, "--token", "TOKEN", "--key", &format!("kps-escrow={KEY_ID}")])
}

/// A raw request: `sign` = Some(sk) signs with AK and that SK; extra headers are added after signing.
async fn request(
    mock: &Mock,
    method: &str,
    path: &str,
    body: &[u8],
    sign: Option<&str>,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let url = format!("{}{path}", mock.endpoint());
    let host = mock.addr.clone();
    let headers = vec![("Content-Type".to_owned(), "application/json".to_owned()), ("Host".to_owned(), host)];
    let mut builder = reqwest::Client::new()
        .request(method.parse().expect("method"), &url)
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    if let Some(sk) = sign {
        let request = SignedRequest { method, path, query: "", headers: &headers, body };
        let credentials = Credentials::new(AK, SecretString::from(sk));
        let signature = signing::sign(&request, &credentials, time::OffsetDateTime::now_utc());
        builder = builder.header("X-Sdk-Date", signature.sdk_date).header("Authorization", signature.authorization);
    }
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    let response = builder.send().await.expect("mock answers");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn call(mock: &Mock, action: &str, body: &Value) -> (u16, Value) {
    let path = format!("/v1.0/{PROJECT}/kms/{action}");
    request(mock, "POST", &path, body.to_string().as_bytes(), Some(SK), &[]).await
}

fn code(answer: &(u16, Value)) -> (u16, &str) {
    (answer.0, answer.1["error"]["error_code"].as_str().unwrap_or("-"))
}

#[tokio::test]
async fn authentication_errors_use_the_kms_codes() {
    let mock = signed_mock();
    let path = format!("/v1.0/{PROJECT}/kms/list-keys");
    let body = b"{}";
    assert_eq!(code(&request(&mock, "POST", &path, body, None, &[]).await), (401, "KMS.0301"));
    let malformed = [("Authorization", "SDK-HMAC-SHA256 nonsense")];
    assert_eq!(code(&request(&mock, "POST", &path, body, None, &malformed).await), (401, "KMS.0301"));
    assert_eq!(code(&request(&mock, "POST", &path, body, Some("wrong"), &[]).await), (401, "KMS.0302"));
    let stale = [
        ("Authorization", "SDK-HMAC-SHA256 Access=MOCKAK, SignedHeaders=host;x-sdk-date, Signature=00"),
        ("X-Sdk-Date", "20200101T000000Z"),
    ];
    assert_eq!(code(&request(&mock, "POST", &path, body, None, &stale).await), (401, "KMS.0303"));
    assert_eq!(request(&mock, "POST", &path, body, Some(SK), &[]).await.0, 200);
    assert_eq!(request(&mock, "POST", &path, body, None, &[("X-Auth-Token", "TOKEN")]).await.0, 200);
    assert_eq!(code(&request(&mock, "POST", &path, body, None, &[("X-Auth-Token", "nope")]).await), (401, "KMS.0302"));
    assert_eq!(request(&mock, "GET", "/healthz", b"", None, &[]).await, (200, json!({"status": "ok"})));
}

/// §2.2 step 4: the mock hashes the received body itself; a signature made over one body does not carry
/// another, and an `X-Sdk-Content-Sha256` that is not the body's hash is KMS.0302.
#[tokio::test]
async fn a_captured_signature_does_not_carry_another_body() {
    let mock = signed_mock();
    let path = format!("/v1.0/{PROJECT}/kms/create-datakey");
    let captured_body = json!({"key_id": KEY_ID, "datakey_length": "256"}).to_string();
    let captured_hash = hex::encode(Sha256::digest(captured_body.as_bytes()));
    let headers =
        vec![("Content-Type".to_owned(), "application/json".to_owned()), ("Host".to_owned(), mock.addr.clone())];
    let request =
        SignedRequest { method: "POST", path: &path, query: "", headers: &headers, body: captured_body.as_bytes() };
    let signature =
        signing::sign(&request, &Credentials::new(AK, SecretString::from(SK)), time::OffsetDateTime::now_utc());
    let send = |body: &str, claimed: Option<&str>| {
        let mut builder = reqwest::Client::new()
            .post(format!("{}{path}", mock.endpoint()))
            .header("Content-Type", "application/json")
            .header("X-Sdk-Date", &signature.sdk_date)
            .header("Authorization", &signature.authorization)
            .body(body.to_owned());
        if let Some(claimed) = claimed {
            builder = builder.header(signing::CONTENT_SHA256_HEADER, claimed);
        }
        async move {
            let response = builder.send().await.expect("mock answers");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let replayed = json!({"key_id": KEY_ID, "datakey_length": "512"}).to_string();
    assert_eq!(code(&send(&replayed, None).await), (401, "KMS.0302"));
    assert_eq!(code(&send(&replayed, Some(&captured_hash)).await), (401, "KMS.0302"));
    assert_eq!(code(&send(&replayed, Some(signing::UNSIGNED_PAYLOAD)).await), (401, "KMS.0302"));
    assert_eq!(code(&send(&captured_body, Some(signing::UNSIGNED_PAYLOAD)).await), (401, "KMS.0302"));
    assert_eq!(send(&captured_body, Some(&captured_hash)).await.0, 200, "a truthful header is fine");
    assert_eq!(send(&captured_body, None).await.0, 200);
}

#[tokio::test]
async fn without_credentials_signatures_are_not_checked() {
    let no_credentials: [&str; 0] = [];
    let mock = Mock::start(no_credentials);
    let path = format!("/v1.0/{PROJECT}/kms/list-keys");
    assert_eq!(request(&mock, "POST", &path, b"{}", None, &[]).await.0, 200);
    assert_eq!(request(&mock, "POST", &path, b"{}", Some("anything"), &[]).await.0, 200);
}

#[tokio::test]
async fn request_errors_have_the_huawei_shape() {
    let mock = signed_mock();
    let other_project = "/v1.0/ffffffffffffffffffffffffffffffff/kms/list-keys";
    assert_eq!(code(&request(&mock, "POST", other_project, b"{}", Some(SK), &[]).await), (403, "KMS.0306"));
    let unknown = format!("/v1.0/{PROJECT}/kms/no-such-action");
    assert_eq!(code(&request(&mock, "POST", &unknown, b"{}", Some(SK), &[]).await), (404, "KMS.0201"));
    assert_eq!(code(&request(&mock, "POST", "/elsewhere", b"{}", Some(SK), &[]).await), (404, "KMS.0201"));
    let list = format!("/v1.0/{PROJECT}/kms/list-keys");
    assert_eq!(code(&request(&mock, "GET", &list, b"", Some(SK), &[]).await), (405, "KMS.0201"));
    assert_eq!(code(&request(&mock, "POST", &list, b"[1]", Some(SK), &[]).await), (400, "KMS.0202"));
    let answer = call(&mock, "describe-key", &json!({})).await;
    assert_eq!(code(&answer), (400, "KMS.0204"));
    assert_eq!(answer.1["error"]["error_msg"], "Missing required parameter key_id.");
    assert_eq!(code(&call(&mock, "describe-key", &json!({"key_id": "KPS"})).await), (400, "KMS.0205"));
    let long = "x".repeat(37);
    assert_eq!(code(&call(&mock, "list-keys", &json!({"sequence": long})).await), (400, "KMS.0206"));
    let unknown_key = json!({"key_id": "00000000-0000-4000-8000-000000000000"});
    let answer = call(&mock, "describe-key", &unknown_key).await;
    assert_eq!(code(&answer), (404, "KMS.0207"));
    assert_eq!(answer.1["error"]["error_msg"], "Key 00000000-0000-4000-8000-000000000000 does not exist.");
}

#[tokio::test]
async fn key_lifecycle_follows_the_state_rules() {
    let mock = signed_mock();
    let created = call(&mock, "create-key", &json!({"key_alias": "new-key", "key_description": "d"})).await;
    assert_eq!(created.0, 200);
    let id = created.1["key_info"]["key_id"].as_str().expect("id").to_owned();
    assert!(is_key_id(&id));
    assert_eq!(code(&call(&mock, "create-key", &json!({"key_alias": "new-key"})).await), (400, "KMS.0308"));
    assert_eq!(code(&call(&mock, "create-key", &json!({"key_alias": "bad alias"})).await), (400, "KMS.0308"));

    let key = json!({"key_id": id});
    assert_eq!(code(&call(&mock, "enable-key", &key).await), (400, "KMS.0308"), "already enabled");
    assert_eq!(call(&mock, "disable-key", &key).await.1, json!({"key_info": {"key_id": id, "key_state": "3"}}));
    let datakey = json!({"key_id": id, "datakey_length": "256"});
    assert_eq!(code(&call(&mock, "create-datakey", &datakey).await), (400, "KMS.0209"));
    assert_eq!(call(&mock, "enable-key", &key).await.0, 200);
    let schedule = json!({"key_id": id, "pending_days": "7"});
    assert_eq!(call(&mock, "schedule-key-deletion", &schedule).await.1, json!({"key_id": id, "key_state": "4"}));
    let described = call(&mock, "describe-key", &key).await.1;
    assert_eq!(described["key_info"]["key_state"], "4");
    assert_eq!(described["key_info"]["scheduled_deletion_date"].as_str().map(str::len), Some(13));
    assert_eq!(code(&call(&mock, "create-datakey", &datakey).await), (400, "KMS.0210"));
    assert_eq!(call(&mock, "cancel-key-deletion", &key).await.1, json!({"key_id": id, "key_state": "3"}));
    let too_soon = json!({"key_id": id, "pending_days": "6"});
    assert_eq!(code(&call(&mock, "schedule-key-deletion", &too_soon).await), (400, "KMS.0308"));
}

#[tokio::test]
async fn data_key_lengths_follow_section_4() {
    let mock = signed_mock();
    let created = call(&mock, "create-datakey", &json!({"key_id": KEY_ID, "datakey_length": "128"})).await;
    assert_eq!(created.1["plain_text"].as_str().map(str::len), Some(32), "128 bits = 16 bytes = 32 hex");
    let by_spec = call(&mock, "create-datakey", &json!({"key_id": KEY_ID, "key_spec": "AES_128"})).await;
    assert_eq!(by_spec.1["plain_text"].as_str().map(str::len), Some(32));
    let default = call(&mock, "create-datakey-without-plaintext", &json!({"key_id": KEY_ID})).await;
    assert!(default.1.get("plain_text").is_none());
    let opened = call(
        &mock,
        "decrypt-datakey",
        &json!({"key_id": KEY_ID, "cipher_text": default.1["cipher_text"], "datakey_cipher_length": "32"}),
    )
    .await;
    assert_eq!(opened.1["datakey_length"], "32", "the default is 256 bits");
    let wrong_length =
        json!({"key_id": KEY_ID, "cipher_text": created.1["cipher_text"], "datakey_cipher_length": "32"});
    let answer = call(&mock, "decrypt-datakey", &wrong_length).await;
    assert_eq!(answer.1["error"]["error_msg"], "Invalid datakey_cipher_length.");
    assert_eq!(
        code(&call(&mock, "create-datakey", &json!({"key_id": KEY_ID, "datakey_length": "12"})).await).1,
        "KMS.0308"
    );

    // encrypt-datakey: the worked example's DEK 00..1f with its SHA-256 appended.
    let dek: Vec<u8> = (0u8..32).collect();
    let plain_text = format!("{}{}", hex::encode(&dek), hex::encode(Sha256::digest(&dek)));
    assert!(plain_text.ends_with("630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd"));
    let encrypted = call(
        &mock,
        "encrypt-datakey",
        &json!({"key_id": KEY_ID, "plain_text": plain_text, "datakey_plain_length": "32"}),
    )
    .await;
    assert_eq!(encrypted.1["datakey_length"], "32");
    let decrypted = call(
        &mock,
        "decrypt-datakey",
        &json!({"key_id": KEY_ID, "cipher_text": encrypted.1["cipher_text"], "datakey_cipher_length": "32"}),
    )
    .await;
    assert_eq!(decrypted.1["data_key"], hex::encode(&dek));
    assert_eq!(decrypted.1["datakey_dgst"], "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd");
    let bad_digest = format!("{}{}", hex::encode(&dek), "00".repeat(32));
    let answer = call(
        &mock,
        "encrypt-datakey",
        &json!({"key_id": KEY_ID, "plain_text": bad_digest, "datakey_plain_length": "32"}),
    )
    .await;
    assert_eq!(answer.1["error"]["error_msg"], "Invalid plain_text.");
}

#[tokio::test]
async fn additional_authenticated_data_must_match() {
    let mock = signed_mock();
    let created =
        call(&mock, "create-datakey", &json!({"key_id": KEY_ID, "additional_authenticated_data": "ctx"})).await;
    let open = |aad: &str| {
        json!({"key_id": KEY_ID, "cipher_text": created.1["cipher_text"], "datakey_cipher_length": "32",
               "additional_authenticated_data": aad})
    };
    assert_eq!(call(&mock, "decrypt-datakey", &open("ctx")).await.0, 200);
    assert_eq!(code(&call(&mock, "decrypt-datakey", &open("other")).await), (400, "KMS.0308"));
}

#[tokio::test]
async fn list_keys_pages_by_offset_markers() {
    let mut args = vec!["--ak".to_owned(), AK.to_owned(), "--sk".to_owned(), SK.to_owned()];
    args.extend((0..5).flat_map(|i| ["--key".to_owned(), format!("k{i}")]));
    let mock = Mock::start(&args);
    let first = call(&mock, "list-keys", &json!({"limit": "2"})).await.1;
    assert_eq!(
        (first["truncated"].as_str(), first["next_marker"].as_str(), first["total"].as_u64()),
        (Some("true"), Some("2"), Some(5))
    );
    assert_eq!(first["key_details"][0]["key_alias"], "k0");
    let last = call(&mock, "list-keys", &json!({"limit": "2", "marker": "4"})).await.1;
    assert_eq!((last["truncated"].as_str(), last["next_marker"].as_str()), (Some("false"), Some("")));
    assert_eq!(last["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(code(&call(&mock, "list-keys", &json!({"limit": "1001"})).await), (400, "KMS.0308"));
    assert_eq!(call(&mock, "list-keys", &json!({"key_spec": "SM4"})).await.1["total"], 0);
}

#[tokio::test]
async fn faults_answer_the_next_calls_then_clear() {
    let mock = signed_mock();
    mock.inject_fault(json!({"status": 503, "count": 1})).await;
    let answer = call(&mock, "list-keys", &json!({})).await;
    assert_eq!(code(&answer), (503, "KMS.0101"));
    assert_eq!(answer.1["error"]["error_msg"], "injected fault");
    assert_eq!(call(&mock, "list-keys", &json!({})).await.0, 200);

    let client = reqwest::Client::new();
    let fault_url = format!("{}/_mock/fault", mock.endpoint());
    let set = client.post(&fault_url).body(r#"{"status": 500, "count": 5}"#).send().await.expect("set");
    assert_eq!(set.status().as_u16(), 204);
    assert_eq!(call(&mock, "list-keys", &json!({})).await.0, 500);
    assert_eq!(client.delete(&fault_url).send().await.expect("clear").status().as_u16(), 204);
    assert_eq!(call(&mock, "list-keys", &json!({})).await.0, 200);
    let calls: Value =
        client.get(format!("{}/_mock/calls", mock.endpoint())).send().await.expect("calls").json().await.expect("json");
    assert_eq!(calls["list-keys"], 4);

    // A malformed success: 200 with the given document, e.g. `{}`.
    let set = client.post(&fault_url).body(r#"{"answer": {}, "count": 1}"#).send().await.expect("set");
    assert_eq!(set.status().as_u16(), 204);
    assert_eq!(call(&mock, "create-datakey", &json!({"key_id": KEY_ID})).await, (200, json!({})));
    assert_eq!(call(&mock, "create-datakey", &json!({"key_id": KEY_ID})).await.1["key_id"], KEY_ID);
}

#[tokio::test]
async fn the_state_file_keeps_keys_and_material_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("kms-state.json");
    let key = format!("kps-escrow={KEY_ID}");
    let args = ["--ak", AK, "--sk", SK, "--key", &key, "--state", state.to_str().expect("UTF-8 path")];
    let mock = Mock::start(args);
    let created = call(&mock, "create-datakey", &json!({"key_id": KEY_ID})).await.1;
    call(&mock, "create-key", &json!({"key_alias": "second"})).await;
    mock.shutdown();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state).expect("state file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    let mock = Mock::start(args);
    let aliases: Vec<&str> = mock.keys().iter().map(|(alias, _)| alias.as_str()).collect();
    assert_eq!(aliases, ["kps-escrow", "second"], "--key does not duplicate a key from the state file");
    let opened = call(
        &mock,
        "decrypt-datakey",
        &json!({"key_id": KEY_ID, "cipher_text": created["cipher_text"], "datakey_cipher_length": "32"}),
    )
    .await;
    assert_eq!(opened.1["data_key"], created["plain_text"], "same material after the restart");
}

#[tokio::test]
async fn seeds_pre_create_keys_in_any_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("seed.json");
    let material = "11".repeat(32);
    std::fs::write(
        &seed,
        json!([
            {"id": KEY_ID, "alias": "seeded", "state": "3", "spec": "AES_256", "material_hex": material},
            {"id": "7d2e0c55-41a9-4f0b-b0de-5a7f4c2e9a10", "alias": "gone", "state": "4", "spec": "AES_256"}
        ])
        .to_string(),
    )
    .expect("seed");
    let mock = Mock::start([OsStr::new("--seed"), seed.as_os_str()]);
    assert_eq!(mock.keys().len(), 2);
    let listed = call(&mock, "list-keys", &json!({"key_spec": "ALL"})).await.1;
    assert_eq!(listed["key_details"][0]["key_state"], "3");
    assert_eq!(listed["key_details"][1]["key_state"], "4");
}
