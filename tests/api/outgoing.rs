//! Outgoing TLS and temporary credentials (README "Outgoing TLS and temporary credentials"): `tls.ca_file` as
//! the only trust anchors of the KMS clients (Huawei, AWS) and Keystone, a bad bundle refusing startup, the
//! Huawei security token against a kms-mock that requires it, and the AWS session token on the wire.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use kps::config::{AuthMode, Config};
use kps::kms::aws::AwsSettings;
use kps::kms::{AwsKms, KeyRef, Transport};
use kps::signing::{self, Credentials, SignedRequest};
use kps::tls::CaBundle;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::kms::{AK, ESCROW_ID, KmsMock, PROJECT, SK};
use crate::{ED25519_PRIVATE_KEY, ED25519_PUBLIC_KEY, Kps};

const SECURITY_TOKEN: &str = "temporary-security-token-0123456789";

/// A TLS endpoint on 127.0.0.1 with a certificate from a test CA (written to `ca_file`), forwarding each
/// connection's plaintext to `backend`: kms-mock, Keystone or a capturing server behind HTTPS.
struct TlsFront {
    url: String,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsFront {
    async fn start(backend: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::new(dir.path());
        let ca_file = pki.ca_file.clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.serialize_der()));
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(pki.cert.der().to_vec())], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("https://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust the certificate ends the handshake: nothing to forward.
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(backend).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
        Self { url, ca_file, _dir: dir }
    }
}

/// A test CA (its certificate in `ca_file`) and a server certificate for 127.0.0.1 signed by it.
struct TestPki {
    ca_file: PathBuf,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestPki {
    fn new(dir: &Path) -> Self {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        let cert = params.signed_by(&key, &Issuer::new(ca_params, &ca_key)).expect("server cert");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("ca file");
        Self { ca_file, cert, key }
    }
}

/// The socket address of an `http://host:port` endpoint.
fn addr_of(endpoint: &str) -> SocketAddr {
    endpoint.trim_start_matches("http://").parse().expect("host:port")
}

fn quick() -> Transport {
    Transport {
        attempt_timeout: Duration::from_secs(5),
        backoff: vec![Duration::from_millis(20)],
        max_jitter: Duration::from_millis(5),
        ..Transport::default()
    }
}

async fn escrow(kps: &Kps, name: &str) -> crate::Answer {
    let body = json!({"keypair": {"name": name, "public_key": ED25519_PUBLIC_KEY.trim_end(),
        "key_protection": {"private_key": ED25519_PRIVATE_KEY,
            "encryption": {"type": "kms", "kms_key_name": "kps-escrow"}}}});
    let headers = [("x-auth-token", "u:p"), ("content-type", "application/json")];
    kps.call("POST", "/v3/p/keypairs", &headers, Some(&body.to_string())).await
}

fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

// -------------------------------------------------------------------------------------------------------
// tls.ca_file

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huawei_kms_custody_over_https_trusts_exactly_the_ca_file() {
    let mock = KmsMock::start();
    let front = TlsFront::start(addr_of(&mock.endpoint)).await;
    let with_ca = Kps::with_config(|c| {
        mock.configure(c);
        c.kms.endpoint = Some(front.url.clone());
        c.tls.ca_file = Some(front.ca_file.clone());
    });
    let answer = escrow(&with_ca, "over-tls").await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(mock.calls("create-datakey").await, 1, "the data-key call went through the TLS front");

    // The same KMS with the system roots only: the test CA is not among them, the handshake fails.
    let system_roots = Kps::with_config(|c| {
        mock.configure(c);
        c.kms.endpoint = Some(front.url.clone());
    });
    let refused = escrow(&system_roots, "no-ca").await;
    assert_eq!(refused.status, 503, "{}", String::from_utf8_lossy(&refused.body));
    assert_eq!(refused.json()["error_code"], "KPS.1801");
    assert_eq!(mock.calls("create-datakey").await, 1, "nothing reached the KMS without trust");
}

/// A plain-HTTP server that records each request's head and answers an AWS `NotFoundException`.
struct CapturingAws {
    endpoint: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl CapturingAws {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&heads);
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let mut bytes = Vec::new();
                    let mut buffer = [0u8; 4096];
                    let head_end = loop {
                        let Ok(read) = tcp.read(&mut buffer).await else { return };
                        if read == 0 {
                            return;
                        }
                        bytes.extend_from_slice(&buffer[..read]);
                        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at;
                        }
                    };
                    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .and_then(|value| value.trim().parse().ok())
                        .unwrap_or(0);
                    while bytes.len() < head_end + 4 + length {
                        let Ok(read) = tcp.read(&mut buffer).await else { return };
                        if read == 0 {
                            break;
                        }
                        bytes.extend_from_slice(&buffer[..read]);
                    }
                    recorded.lock().expect("lock").push(head);
                    let body = r#"{"__type":"NotFoundException","message":"Alias is not found."}"#;
                    let answer = format!(
                        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.1\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tcp.write_all(answer.as_bytes()).await;
                });
            }
        });
        Self { endpoint, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }
}

fn aws(endpoint: &str, session_token: Option<&str>, roots: Option<&CaBundle>) -> AwsKms {
    let settings = AwsSettings {
        endpoint: Some(endpoint.to_owned()),
        region: "us-east-1".into(),
        access_key_id: Zeroizing::new("AKIDEXAMPLE".into()),
        secret_access_key: Zeroizing::new("aws-secret-never-sent".into()),
        session_token: session_token.map(|token| Zeroizing::new(token.to_owned())),
        transport: quick(),
    };
    AwsKms::new_trusting(settings, roots).expect("aws client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_kms_over_https_trusts_exactly_the_ca_file() {
    let capture = CapturingAws::start().await;
    let front = TlsFront::start(addr_of(&capture.endpoint)).await;
    let bundle = CaBundle::load(&front.ca_file).expect("bundle");
    let alias = KeyRef::Alias("kps-escrow".into());

    let error = aws(&front.url, None, Some(&bundle)).resolve(&alias).await.expect_err("no such key");
    assert_eq!(error.code(), "KPS.1802", "the request reached AWS over TLS: {error}");
    assert_eq!(capture.heads().len(), 1);

    let error = aws(&front.url, None, None).resolve(&alias).await.expect_err("untrusted");
    assert_eq!(error.code(), "KPS.1801", "{error}");
    assert_eq!(capture.heads().len(), 1, "nothing reached AWS without trust");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_over_https_trusts_exactly_the_ca_file() {
    async fn validate(headers: HeaderMap) -> axum::response::Response {
        use axum::response::IntoResponse;
        let subject = headers.get("x-subject-token").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let token = json!({"token": {"expires_at": "2999-01-01T00:00:00.000000Z", "methods": ["password"],
            "user": {"id": "u-tls", "name": "u-tls"}, "project": {"id": "p-tls", "name": "p"},
            "roles": [{"id": "r", "name": "member"}]}});
        ([("content-type", "application/json"), ("x-subject-token", subject.as_str())], token.to_string())
            .into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend = listener.local_addr().expect("addr");
    let router = Router::new().route("/v3/auth/tokens", get(validate));
    tokio::spawn(async move { axum::serve(listener, router).await.expect("keystone") });
    let front = TlsFront::start(backend).await;
    let keystone = |ca_file: Option<PathBuf>| {
        let url = front.url.clone();
        Kps::with_config(move |c| {
            c.auth.mode = AuthMode::Keystone;
            c.auth.keystone_url = Some(url);
            c.tls.ca_file = ca_file;
        })
    };

    let kps = keystone(Some(front.ca_file.clone()));
    let listed = kps.nova("GET", "/v2.1/os-keypairs", "ks-token", None, None).await;
    assert_eq!(listed.status, 200, "{}", String::from_utf8_lossy(&listed.body));

    let kps = keystone(None);
    let refused = kps.nova("GET", "/v2.1/os-keypairs", "ks-token", None, None).await;
    refused.assert_error(503, "KPS.2005", "The Keystone service is temporarily unavailable.");
}

#[test]
fn a_missing_empty_or_invalid_ca_file_refuses_to_start_and_fails_config_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    let not_a_cert = dir.path().join("garbage.pem");
    std::fs::write(&not_a_cert, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").expect("write");
    let missing = dir.path().join("missing.pem");
    for file in [&empty, &not_a_cert, &missing] {
        let shown = file.display().to_string();
        let stderr = crate::binary::refused_start(&dir.path().join("data"), &[("KPS_TLS_CA_FILE", &shown)]);
        assert!(stderr.contains(&shown) && stderr.contains("tls.ca_file"), "{stderr}");

        let check = Command::new(env!("CARGO_BIN_EXE_kps"))
            .args(["config", "check"])
            .env("KPS_CONFIG", "/dev/null")
            .env("KPS_TLS_CA_FILE", &shown)
            .output()
            .expect("config check");
        assert_eq!(check.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&check.stderr).contains(&shown), "{check:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_reports_a_sound_ca_file() {
    let front = TlsFront::start("127.0.0.1:9".parse().expect("addr")).await;
    let check = Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(["config", "check"])
        .env("KPS_CONFIG", "/dev/null")
        .env("KPS_TLS_CA_FILE", &front.ca_file)
        .output()
        .expect("config check");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    assert!(stdout.contains(&format!("tls.ca_file {}: CA bundle", front.ca_file.display())), "{stdout}");
}

/// PostgreSQL with `sslmode=verify-full`: the server's certificate chains to `tls.ca_file`, not to the system.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_trusts_exactly_the_ca_file() {
    let Some(mut server) = crate::pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    server.enable_ssl(&pki.cert.pem(), &pki.key.serialize_pem());
    let url = format!("{}?sslmode=verify-full", server.url());
    let bundle = CaBundle::load(&pki.ca_file).expect("bundle");
    let store = kps::store::postgres::PostgresStore::open_trusting(&url, 2, Some(&bundle)).await;
    assert!(store.is_ok(), "{:?}", store.err());
    let untrusted = kps::store::postgres::PostgresStore::open_trusting(&url, 2, None).await;
    assert!(untrusted.is_err(), "the test CA is not among the system roots");
}

// -------------------------------------------------------------------------------------------------------
// Huawei security token

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huawei_security_token_is_sent_signed_and_custody_works_with_it() {
    let mock =
        KmsMock::start_with_args(&[format!("kps-escrow={ESCROW_ID}")], None, &["--security-token", SECURITY_TOKEN]);
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = secret_file(dir.path(), "kms.token", &format!("{SECURITY_TOKEN}\n"));
    let kps = Kps::with_config(|c| {
        mock.configure(c);
        c.kms.security_token_file = Some(token_file.clone());
    });
    let answer = escrow(&kps, "temporary").await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let exported = kps
        .call(
            "POST",
            "/v3/p/keypairs/private-key/export",
            &[("x-auth-token", "u:p"), ("content-type", "application/json")],
            Some(&json!({"keypair": {"name": "temporary"}}).to_string()),
        )
        .await;
    assert_eq!(exported.json()["keypair"]["private_key"], ED25519_PRIVATE_KEY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_security_token_is_refused_as_huawei_iam_would() {
    let mock =
        KmsMock::start_with_args(&[format!("kps-escrow={ESCROW_ID}")], None, &["--security-token", SECURITY_TOKEN]);
    let configured = |token: Option<&str>| {
        let mut config = Config::default();
        mock.configure(&mut config);
        config.kms.security_token = token.map(SecretString::from);
        kps::kms::from_config(&config.kms, false, None).expect("valid").expect("a provider")
    };
    let alias = KeyRef::Alias("kps-escrow".into());
    for token in [None, Some("another-token")] {
        let error = configured(token).resolve(&alias).await.expect_err("refused");
        assert_eq!(error.code(), "KPS.1805", "{token:?}: {error}");
        assert!(!error.to_string().contains(SECURITY_TOKEN));
    }
    configured(Some(SECURITY_TOKEN)).resolve(&alias).await.expect("the right token");
}

/// The mock's side of §2.1 step 7: the token must be a signed header, not merely present.
#[tokio::test]
async fn the_mock_refuses_a_security_token_outside_the_signature() {
    let mock = KmsMock::start_with_args(&[], None, &["--security-token", SECURITY_TOKEN]);
    let path = format!("/v1.0/{PROJECT}/kms/list-keys");
    let body = json!({"limit": "10"}).to_string();
    let host = mock.endpoint.trim_start_matches("http://").to_owned();
    let send = |signed_token: bool| {
        let mut headers =
            vec![("Content-Type".to_owned(), "application/json".to_owned()), ("Host".to_owned(), host.clone())];
        if signed_token {
            headers.push((signing::SECURITY_TOKEN_HEADER.to_owned(), SECURITY_TOKEN.to_owned()));
        }
        let request =
            SignedRequest { method: "POST", path: &path, query: "", headers: &headers, body: body.as_bytes() };
        let signature =
            signing::sign(&request, &Credentials::new(AK, SecretString::from(SK)), time::OffsetDateTime::now_utc());
        reqwest::Client::new()
            .post(format!("{}{path}", mock.endpoint))
            .header("Content-Type", "application/json")
            .header(signing::SECURITY_TOKEN_HEADER, SECURITY_TOKEN)
            .header(signing::DATE_HEADER, signature.sdk_date)
            .header("Authorization", signature.authorization)
            .body(body.clone())
            .send()
    };
    let unsigned = send(false).await.expect("answer");
    assert_eq!(unsigned.status().as_u16(), 401);
    let error: Value = unsigned.json().await.expect("json");
    assert_eq!(error["error"]["error_code"], "KMS.0302", "{error}");
    assert_eq!(send(true).await.expect("answer").status().as_u16(), 200);
}

// -------------------------------------------------------------------------------------------------------
// AWS session token

/// The AWS provider at `endpoint` with a static key (the tests add the session token their way).
fn aws_config(endpoint: &str) -> Config {
    let mut config = Config::default();
    config.kms.provider = Some("aws".into());
    config.kms.endpoint = Some(endpoint.to_owned());
    config.kms.region = Some("us-east-1".into());
    config.kms.ak = Some("AKIDEXAMPLE".into());
    config.kms.sk = Some(SecretString::from("aws-secret-never-sent"));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_session_token_is_sent_as_x_amz_security_token_and_signed() {
    const SESSION: &str = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN";
    let capture = CapturingAws::start().await;
    let mut config = aws_config(&capture.endpoint);
    config.kms.security_token = Some(SecretString::from(SESSION));
    let kms = kps::kms::from_config(&config.kms, false, None).expect("valid").expect("aws");
    let error = kms.resolve(&KeyRef::Alias("kps-escrow".into())).await.expect_err("no such key");
    assert_eq!(error.code(), "KPS.1802", "{error}");

    let heads = capture.heads();
    let head = heads.first().expect("one request");
    assert!(head.contains(&format!("x-amz-security-token: {}", SESSION.to_ascii_lowercase())), "{head}");
    let authorization = head.lines().find(|line| line.starts_with("authorization:")).expect("signed");
    let signed = authorization.split("signedheaders=").nth(1).and_then(|rest| rest.split(',').next());
    assert!(signed.is_some_and(|names| names.split(';').any(|n| n == "x-amz-security-token")), "{authorization}");

    config.kms.security_token = None;
    let kms = kps::kms::from_config(&config.kms, false, None).expect("valid").expect("aws");
    let _ = kms.resolve(&KeyRef::Alias("kps-escrow".into())).await;
    let heads = capture.heads();
    assert!(!heads[1].contains("x-amz-security-token"), "no token without temporary credentials: {}", heads[1]);
}

// -------------------------------------------------------------------------------------------------------
// rotation: credential files are followed, no restart

/// Writes `text` as a renewer does: a new 0600 file renamed over the old one.
fn renew(path: &Path, text: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, text).expect("write");
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::rename(&temp, path).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_huawei_token_file_is_used_without_a_restart() {
    let mock =
        KmsMock::start_with_args(&[format!("kps-escrow={ESCROW_ID}")], None, &["--security-token", SECURITY_TOKEN]);
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("kms.token");
    renew(&token_file, "expired-token\n");
    let kps = Kps::with_config(|c| {
        mock.configure(c);
        c.kms.security_token_file = Some(token_file.clone());
    });
    let refused = escrow(&kps, "before").await;
    assert_eq!(refused.status, 500, "{}", String::from_utf8_lossy(&refused.body));
    assert_eq!(refused.json()["error_code"], "KPS.1805");

    renew(&token_file, &format!("{SECURITY_TOKEN}\n"));
    let answer = escrow(&kps, "after").await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_aws_session_token_file_is_used_without_a_restart() {
    let capture = CapturingAws::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("session.token");
    renew(&token_file, "session-one\n");
    let mut config = aws_config(&capture.endpoint);
    config.kms.security_token_file = Some(token_file.clone());
    let kms = kps::kms::from_config(&config.kms, false, None).expect("valid").expect("aws");
    let alias = KeyRef::Alias("kps-escrow".into());
    let _ = kms.resolve(&alias).await;
    renew(&token_file, "session-two-renewed\n");
    kms.clear_cache();
    let _ = kms.resolve(&alias).await;
    let heads = capture.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[0].contains("x-amz-security-token: session-one"), "{}", heads[0]);
    assert!(heads[1].contains("x-amz-security-token: session-two-renewed"), "{}", heads[1]);
}
