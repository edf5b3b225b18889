//! HTTPS with certificate and key files: a TLS handshake against a test CA, links with `https://`, and the
//! key file's permission check.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// A CA and a server certificate for 127.0.0.1/localhost signed by it, written to `dir`.
fn test_pki(dir: &std::path::Path) -> (Vec<u8>, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let server_key = KeyPair::generate().expect("server key");
    let server_params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("params");
    let issuer = Issuer::new(ca_params, &ca_key);
    let server_cert = server_params.signed_by(&server_key, &issuer).expect("server cert");
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    std::fs::write(&cert_path, server_cert.pem()).expect("cert");
    let mut key_file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&key_path).expect("key");
    key_file.write_all(server_key.serialize_pem().as_bytes()).expect("write key");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (ca_cert.der().to_vec(), cert_path, key_path)
}

async fn https_get(port: u16, ca_der: &[u8], path: &str) -> std::io::Result<String> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_der.to_vec().into()).expect("root");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_der, cert, key) = test_pki(dir.path());
    let port = crate::binary::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path().join("data"))
        .env("KPS_TLS_CERT_FILE", &cert)
        .env("KPS_TLS_KEY_FILE", &key)
        .env("KPS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        match https_get(port, &ca_der, "/healthz").await {
            Ok(response) => break response,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(error) => panic!("no HTTPS answer: {error}"),
        }
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let versions = https_get(port, &ca_der, "/").await.expect("versions");
    assert!(versions.contains(&format!("\"href\":\"https://127.0.0.1:{port}/v2.1/\"")), "{versions}");

    // A client that does not trust the CA fails the handshake; plain HTTP gets no answer.
    let (other_ca, _, _) = test_pki(tempfile::tempdir().expect("other").path());
    assert!(https_get(port, &other_ca, "/healthz").await.is_err());
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    assert!(plain.is_err() || !plain.expect("response").status().is_success());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_readable_key_file_or_a_missing_half_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, cert, key) = test_pki(dir.path());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let run = |envs: &[(&str, &std::path::Path)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kps"));
        command.args(["serve", "--listen", &format!("127.0.0.1:{}", crate::binary::free_port()), "--data-dir"]);
        command.arg(dir.path().join("data"));
        for (name, value) in envs {
            command.env(name, value);
        }
        command.output().expect("run")
    };
    let out = run(&[("KPS_TLS_CERT_FILE", &cert), ("KPS_TLS_KEY_FILE", &key)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0644"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&[("KPS_TLS_CERT_FILE", &cert)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("both tls.cert_file and tls.key_file"));
}

// SIGHUP reload

/// A test CA that issues server certificates for 127.0.0.1 with a given common name and serial.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: Vec<u8>,
}

impl TestCa {
    fn new() -> Self {
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let der = params.self_signed(&key).expect("ca cert").der().to_vec();
        Self { issuer: Issuer::new(params, key), der }
    }

    /// Writes a certificate named `common_name` and its key (0600) to `cert` and `key`; returns its DER.
    fn issue(&self, common_name: &str, serial: u64, cert: &std::path::Path, key: &std::path::Path) -> Vec<u8> {
        let server_key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.serial_number = Some(serial.into());
        let server_cert = params.signed_by(&server_key, &self.issuer).expect("server cert");
        std::fs::write(cert, server_cert.pem()).expect("cert");
        std::fs::write(key, server_key.serialize_pem()).expect("key");
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        server_cert.der().to_vec()
    }

    /// A TLS connection to kps on `port` that trusts this CA.
    async fn connect(&self, port: u16) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone().into()).expect("root");
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
    }
}

/// The leaf certificate the server presented on `stream`.
fn presented(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().expect("server certificate")[0].to_vec()
}

/// One keep-alive request on `stream`: the status code and the body (read by its Content-Length).
async fn keep_alive_get(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    path: &str,
) -> (u16, String) {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await.expect("send");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.expect("response head"));
    }
    let head = String::from_utf8(head).expect("head");
    let status = head[9..12].parse().expect("status");
    let length: usize = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse()))
        .expect("content-length")
        .expect("length");
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.expect("body");
    (status, String::from_utf8(body).expect("utf-8"))
}

fn send_sighup(child: &std::process::Child) {
    let status = Command::new("/bin/kill").args(["-HUP", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
}

/// The value of `series` on the metrics page, or 0 when absent.
fn metric(page: &str, series: &str) -> f64 {
    page.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_open_connections_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let ca = TestCa::new();
    let cert_a = ca.issue("kps-a", 1, &cert, &key);
    let port = crate::binary::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("KPS_CONFIG")
        .env("KPS_TLS_CERT_FILE", &cert)
        .env("KPS_TLS_KEY_FILE", &key)
        .env("KPS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut old = loop {
        match ca.connect(port).await {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(error) => panic!("no HTTPS answer: {error}"),
        }
    };
    assert_eq!(presented(&old), cert_a);
    assert_eq!(keep_alive_get(&mut old, "/healthz").await.0, 200);

    // Certificate B in place of A, then SIGHUP: new handshakes get B.
    let cert_b = ca.issue("kps-b", 2, &cert, &key);
    send_sighup(&child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stream = ca.connect(port).await.expect("new connection during the reload");
        if presented(&stream) == cert_b {
            break;
        }
        assert_eq!(presented(&stream), cert_a, "either the old or the new certificate");
        assert!(Instant::now() < deadline, "the certificate was not reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the reload still answers, on the session it negotiated.
    let (status, page) = keep_alive_get(&mut old, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(presented(&old), cert_a);
    assert_eq!(metric(&page, r#"kps_tls_reloads_total{outcome="ok"}"#), 1.0, "{page}");
    assert_eq!(metric(&page, r#"kps_tls_reloads_total{outcome="error"}"#), 0.0, "{page}");
    assert!(metric(&page, "process_open_fds") > 0.0, "the non-dumpable server reads its own /proc: {page}");
    assert!(metric(&page, "process_resident_memory_bytes") > 0.0, "{page}");

    // A broken certificate file: the reload fails, is counted, and B stays.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n").expect("break");
    send_sighup(&child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let mut stream = ca.connect(port).await.expect("connection after a failed reload");
        assert_eq!(presented(&stream), cert_b, "a failed reload keeps the certificate in use");
        let (_, page) = keep_alive_get(&mut stream, "/metrics").await;
        if metric(&page, r#"kps_tls_reloads_total{outcome="error"}"#) == 1.0 {
            break page;
        }
        assert!(Instant::now() < deadline, "the failed reload was not counted: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(metric(&page, r#"kps_tls_reloads_total{outcome="ok"}"#), 1.0, "{page}");
    assert_eq!(presented(&ca.connect(port).await.expect("still serving")), cert_b);
    assert_eq!(keep_alive_get(&mut old, "/healthz").await.0, 200, "the first connection is still open");
    assert!(child.try_wait().expect("status").is_none(), "kps is still running");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn sighup_without_tls_is_logged_and_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("kps.log");
    let mut server = crate::binary::Server::start_logging(&dir.path().join("data"), &log, "info", &[]);
    send_sighup(&server.child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).expect("log").contains("SIGHUP ignored: TLS is off") {
        assert!(server.child.try_wait().expect("status").is_none(), "SIGHUP terminated kps");
        assert!(Instant::now() < deadline, "no log line for the SIGHUP");
        std::thread::sleep(Duration::from_millis(50));
    }
    let health = reqwest::blocking::get(format!("{}/healthz", server.url)).expect("still serving");
    assert_eq!(health.status(), 200);
    assert!(server.child.try_wait().expect("status").is_none());
    assert!(server.stop().success(), "SIGTERM still stops it cleanly");
}
