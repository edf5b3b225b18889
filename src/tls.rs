//! HTTPS on the API listener: rustls (ring provider) from a PEM certificate chain and a PEM private key
//! (mode 0600, as every secret file). Handshakes run per connection, within the header timeout
//! (`connections`), so a slow or silent client cannot stall other connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

use crate::config::secret_file::{self, SecretFileError};

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

/// The rustls server configuration (HTTP/1.1) from the certificate chain and key files.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    allow_group_readable: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
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
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
