//! HTTPS on the API listener: rustls (ring provider) from a PEM certificate chain and a PEM private key
//! (mode 0600, as every secret file). Handshakes run per connection, within the header timeout
//! (`connections`), so a slow or silent client cannot stall other connections.
//!
//! The certificate can be replaced while kps runs (SIGHUP, `app`): the server configuration asks
//! [`ServerCertificate`] for the certificate at every handshake, and a reload swaps the one it holds. Open
//! connections keep the session they negotiated; only new handshakes see the new certificate. A reload
//! that fails (unreadable file, wrong mode, no certificate, a key that does not match it) changes nothing:
//! the old certificate stays in use.
//!
//! Also the trust anchors of kps's outgoing TLS, [`CaBundle`] (`tls.ca_file`), loaded here once and handed to
//! each client as data.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use crate::config::secret_file::{self, SecretFileError};
use crate::metrics::Counter;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(
        "TLS key file {path} has mode {mode:04o}: it must not be group- or world-readable (chmod 600 {path}, or \
         set secrets.allow_group_readable for a group-readable secret mount)"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// How many certificate reloads (SIGHUP) succeeded and failed, for `GET /metrics`.
#[derive(Debug, Default)]
pub struct ReloadCounts {
    pub succeeded: Counter,
    pub failed: Counter,
}

/// The certificate and key the API listener presents, read from `tls.cert_file` and `tls.key_file`, and
/// replaceable by [`ServerCertificate::reload`] while handshakes go on.
pub struct ServerCertificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    allow_group_readable: bool,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCertificate {
    /// Reads and checks both files (the key file under the secret-file mode rule).
    pub fn load(cert_file: &Path, key_file: &Path, allow_group_readable: bool) -> Result<Self, TlsError> {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let current = certified_key(cert_file, key_file, allow_group_readable, &provider)?;
        Ok(Self {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            allow_group_readable,
            provider,
            current: RwLock::new(Arc::new(current)),
        })
    }

    /// Reads both files again; on success new handshakes present the new certificate, on failure the old
    /// one stays and the error says why (never with key material in it).
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = certified_key(&self.cert_file, &self.key_file, self.allow_group_readable, &self.provider)?;
        // A poisoned lock held a complete `Arc` all along: the swap is a single assignment.
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(())
    }

    /// The certificate chain presented now (DER, leaf first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current().cert.clone()
    }

    fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCertificate")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The certificate chain and its key, checked to belong together.
fn certified_key(
    cert_file: &Path,
    key_file: &Path,
    allow_group_readable: bool,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let file_error = |path: &Path, message: String| TlsError::File { path: path.into(), message };
    let key_pem = secret_file::read(key_file, allow_group_readable).map_err(|error| match error {
        SecretFileError::Io { path, source } => TlsError::File { path, message: source.to_string() },
        SecretFileError::Permissions { path, mode } => TlsError::Permissions { path, mode },
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| file_error(cert_file, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(cert_file, "no CERTIFICATE in the file".into()));
    }
    // The key's parse error is not echoed: it could quote key material.
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| file_error(key_file, "no usable PEM private key".into()))?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| TlsError::Config(e.to_string()))
}

/// The rustls server configuration (HTTP/1.1) presenting `certificate`'s current certificate.
pub fn server_config(certificate: Arc<ServerCertificate>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::clone(&certificate.provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `tls.ca_file` loaded: the trust anchors of kps's outgoing TLS (the KMS clients, Keystone, PostgreSQL).
///
/// They replace the system's roots, as keystoneauth's `cafile` and requests' `verify=<bundle>` do: a private
/// CA bundle names exactly whom kps trusts, and a public CA elsewhere in the system store cannot vouch for a
/// look-alike KMS or database. Every certificate was checked to be a usable trust anchor when the file was
/// read (once, at startup), so no client can fail on it later. Public data: not a secret file.
#[derive(Clone)]
pub struct CaBundle {
    path: PathBuf,
    certs: Arc<[CertificateDer<'static>]>,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle").field("path", &self.path).field("certificates", &self.certs.len()).finish()
    }
}

impl CaBundle {
    /// `tls.ca_file`, if set, read and checked.
    pub fn from_config(tls: &crate::config::TlsConfig) -> Result<Option<Self>, TlsError> {
        tls.ca_file.as_deref().map(Self::load).transpose()
    }

    /// Reads the PEM bundle of `tls.ca_file`: a missing or unreadable file, one without a certificate, or one
    /// whose certificate is malformed or unusable as a trust anchor is an error naming the file.
    pub fn load(path: &Path) -> Result<Self, TlsError> {
        Self::read(path, "tls.ca_file")
    }

    /// [`CaBundle::load`] for a bundle named by another `setting` (PostgreSQL's `sslrootcert`), which the
    /// errors name.
    pub fn read(path: &Path, setting: &str) -> Result<Self, TlsError> {
        let file_error =
            |message: String| TlsError::File { path: path.into(), message: format!("{setting}: {message}") };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| file_error(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(file_error("no CERTIFICATE in the file".into()));
        }
        let mut roots = RootCertStore::empty();
        for (index, cert) in certs.iter().enumerate() {
            roots
                .add(cert.clone())
                .map_err(|e| file_error(format!("certificate {} is not a usable CA certificate: {e}", index + 1)))?;
        }
        Ok(Self { path: path.into(), certs: certs.into() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The trust anchors for a rustls client.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        // Each certificate was added once in `load`: adding it again cannot fail.
        let (_added, _ignored) = roots.add_parsable_certificates(self.certs.iter().cloned());
        roots
    }

    /// The certificates as PEM, one block each (the AWS SDK's trust store takes PEM).
    pub fn pem(&self) -> Vec<u8> {
        use base64::Engine;
        let mut out = String::new();
        for cert in self.certs.iter() {
            let encoded = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
            out.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in encoded.as_bytes().chunks(64) {
                out.push_str(&String::from_utf8_lossy(line));
                out.push('\n');
            }
            out.push_str("-----END CERTIFICATE-----\n");
        }
        out.into_bytes()
    }

    /// `builder` trusting exactly these certificates (reqwest's built-in and system roots off).
    pub fn trusted_by(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, TlsError> {
        let mut builder = builder.tls_built_in_root_certs(false);
        for cert in self.certs.iter() {
            let cert = reqwest::Certificate::from_der(cert.as_ref())
                .map_err(|e| TlsError::File { path: self.path.clone(), message: format!("tls.ca_file: {e}") })?;
            builder = builder.add_root_certificate(cert);
        }
        Ok(builder)
    }
}

/// An HTTP client builder trusting `roots` when `tls.ca_file` is set, else the system's roots.
pub fn trusting(builder: reqwest::ClientBuilder, roots: Option<&CaBundle>) -> Result<reqwest::ClientBuilder, TlsError> {
    match roots {
        Some(roots) => roots.trusted_by(builder),
        None => Ok(builder),
    }
}

/// `count` fresh self-signed CA certificates as one PEM text (the unit tests' bundles).
#[cfg(test)]
pub(crate) fn test_ca_pem(count: usize) -> String {
    let mut pem = String::new();
    for _ in 0..count {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        pem.push_str(&params.self_signed(&key).expect("cert").pem());
    }
    pem
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A self-signed certificate for `name` and its key, written to `dir` (key 0600).
    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert =
            rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params").self_signed(&key).expect("cert");
        let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert_path, cert.pem()).expect("cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("key");
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        (cert_path, key_path)
    }

    #[test]
    fn a_reload_swaps_the_certificate_and_a_failed_one_keeps_the_old() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = write_pair(dir.path(), "a.example");
        let certificate = ServerCertificate::load(&cert, &key, false).expect("load");
        let first = certificate.chain();

        write_pair(dir.path(), "b.example");
        certificate.reload().expect("reload");
        let second = certificate.chain();
        assert_ne!(first, second);

        std::fs::write(&cert, "not a certificate").expect("break the certificate");
        assert!(matches!(certificate.reload(), Err(TlsError::File { .. })));
        assert_eq!(certificate.chain(), second, "a failed reload keeps the certificate in use");

        let other = tempfile::tempdir().expect("other");
        let (other_cert, _) = write_pair(other.path(), "c.example");
        std::fs::copy(&other_cert, &cert).expect("a certificate that does not match the key");
        assert!(matches!(certificate.reload(), Err(TlsError::Config(_))));
        assert_eq!(certificate.chain(), second);

        write_pair(dir.path(), "d.example");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(certificate.reload(), Err(TlsError::Permissions { mode: 0o644, .. })));
        assert_eq!(certificate.chain(), second, "the mode rule holds for reloads too");
    }

    /// A PEM file holding `count` self-signed CA certificates.
    fn ca_file(dir: &Path, count: usize) -> PathBuf {
        let path = dir.join(format!("ca-{count}.pem"));
        std::fs::write(&path, test_ca_pem(count)).expect("write");
        path
    }

    #[test]
    fn a_bundle_is_read_whole_and_given_to_every_client_form() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = CaBundle::load(&ca_file(dir.path(), 2)).expect("two CAs");
        assert_eq!(bundle.root_store().len(), 2);
        // The PEM the AWS SDK gets parses back to the same certificates.
        let again: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&bundle.pem()).collect::<Result<_, _>>().expect("pem");
        assert_eq!(again, bundle.certs.to_vec());
        assert!(trusting(reqwest::Client::builder(), Some(&bundle)).expect("reqwest").build().is_ok());
        assert!(format!("{bundle:?}").contains("certificates: 2"));
    }

    #[test]
    fn unset_means_the_system_roots_and_bad_bundles_name_the_file() {
        assert!(CaBundle::from_config(&crate::config::TlsConfig::default()).expect("unset").is_none());
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let cases = [
            (dir.path().join("missing.pem"), "No such file"),
            (write("empty.pem", ""), "no CERTIFICATE"),
            (write("key-only.pem", &rcgen::KeyPair::generate().expect("key").serialize_pem()), "no CERTIFICATE"),
            (write("bad-der.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "certificate 1"),
            (write("bad-base64.pem", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"), "tls.ca_file"),
        ];
        for (path, expected) in cases {
            let error = CaBundle::load(&path).expect_err("refused").to_string();
            assert!(error.contains(&path.display().to_string()) && error.contains(expected), "{error}");
        }
    }
}
