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
