//! Black-box tests of the HTTP API: `kps::app()` over a real sled store in a temp dir, called through the
//! router without sockets, plus a few tests of the real `kps` binary on 127.0.0.1 (`binary.rs`).

mod admin_listen;
mod aksk;
mod audit_file;
mod audit_log;
mod auth;
mod binary;
mod config_check;
mod connections;
mod cors;
mod custody;
mod deploy;
mod durability;
mod errors;
mod failover;
mod full_disk;
mod keypairs;
mod kms;
mod kms_custody;
mod kms_huawei;
mod layering;
mod limits;
mod master_keyring;
mod metrics;
mod openapi;
mod outgoing;
mod paging;
mod pg;
mod pg_move;
mod policy_files;
mod replicas;
mod rewrap;
mod routing;
mod store_postgres;
mod tls;
mod unseal;
mod v3;
mod versions;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use kps::config::Config;
use serde_json::Value;
use tower::ServiceExt;

pub const ED25519_VECTOR: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 ops";
/// A private key (PEM, OpenSSH) and its public key, from the keypair unit-test fixtures.
pub const RSA_PRIVATE_KEY: &str = include_str!("../../src/keypair/testdata/rsa2048_pkcs1.pem");
pub const RSA_PUBLIC_KEY: &str = include_str!("../../src/keypair/testdata/rsa2048.pub");
pub const ED25519_PRIVATE_KEY: &str = include_str!("../../src/keypair/testdata/ed25519_openssh.key");
pub const ED25519_PUBLIC_KEY: &str = include_str!("../../src/keypair/testdata/ed25519.pub");
pub const ENCRYPTED_PRIVATE_KEY: &str = include_str!("../../src/keypair/testdata/ed25519_openssh_enc.key");

pub const ED25519_VECTOR_FINGERPRINT: &str = "f1:02:17:de:ef:c1:30:83:11:8b:82:a0:0e:67:7f:d5";

/// A kps application over a fresh store.
pub struct Kps {
    router: Router,
    /// The `admin_listen` application over the same state.
    admin_router: Router,
    pub dir: tempfile::TempDir,
}

/// One answer: status, headers and raw body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a catalogue error: status, code, message and the dual shape.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str, message: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", String::from_utf8_lossy(&self.body));
        let body = self.json();
        let object = body.as_object().expect("error body is an object");
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 3, "{body}");
        assert_eq!(&keys[1..], ["error_code", "error_msg"], "{body}");
        let fault = &body[keys[0]];
        assert_eq!(fault["code"], status, "{body}");
        assert_eq!(fault["message"], message, "{body}");
        assert_eq!(body["error_code"], code, "{body}");
        assert_eq!(body["error_msg"], message, "{body}");
        assert_eq!(self.header("content-type"), Some("application/json"));
    }
}

impl Default for Kps {
    fn default() -> Self {
        Self::new()
    }
}

impl Kps {
    pub fn new() -> Self {
        Self::with_config(|_| {})
    }

    pub fn with_config(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.keygen.rsa_pool_size = 0;
        config.data_dir = dir.path().to_path_buf();
        adjust(&mut config);
        let store = kps::store::sled::SledStore::open(&dir.path().join("db")).expect("store");
        let state = Arc::new(kps::state(&config, Arc::new(store)).expect("state"));
        Self { router: kps::app(Arc::clone(&state)), admin_router: kps::admin_app(state), dir }
    }

    /// A kps application whose KMS is `kms` (its Huawei provider, `KmsMock::configure`).
    pub fn with_kms_mock(kms: &kms::KmsMock) -> Self {
        Self::with_config(|c| kms.configure(c))
    }

    pub async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Answer {
        send(&self.router, method, path, headers, body).await
    }

    /// A request to the `admin_listen` application over the same state.
    pub async fn call_admin(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Answer {
        send(&self.admin_router, method, path, headers, body).await
    }

    /// `method path` as `user:project` at microversion `version` (None = no header), JSON body.
    pub async fn nova(
        &self,
        method: &str,
        path: &str,
        token: &str,
        version: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        let header;
        let mut headers = vec![("x-auth-token", token), ("content-type", "application/json")];
        if let Some(version) = version {
            header = format!("compute {version}");
            headers.push(("openstack-api-version", &header));
        }
        self.call(method, path, &headers, body).await
    }

    /// Imports `public_key` as `name` for `token` at 2.1 and asserts success.
    pub async fn import(&self, token: &str, name: &str, public_key: &str) {
        let body = serde_json::json!({"keypair": {"name": name, "public_key": public_key}}).to_string();
        let answer = self.nova("POST", "/v2.1/os-keypairs", token, None, Some(&body)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    }
}

async fn send(router: &Router, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(path).header("host", "kps.test:8774");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    Answer { status, headers, body }
}
