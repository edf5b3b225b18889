//! `store.postgres_url` → a tokio-postgres `Config` and the rustls client configuration for it.
//!
//! tokio-postgres parses libpq connection strings and URIs (several hosts, `target_session_attrs`, Unix
//! socket hosts) and knows `sslmode=disable|prefer|require`. libpq's `verify-ca` / `verify-full` and
//! `sslrootcert=<file>` it refuses, so they are taken out here first and become the certificate verifier:
//!
//! | sslmode | without sslrootcert | with sslrootcert |
//! |---|---|---|
//! | `disable` | no TLS | no TLS |
//! | `prefer` (default), `require` | TLS if offered / required, certificate not checked (as libpq) | chain checked against the file (libpq's verify-ca) |
//! | `verify-ca` | chain checked against the system roots | chain checked against the file |
//! | `verify-full` | chain and host name checked against the system roots | chain and host name against the file |
//!
//! `tls.ca_file` (kps's CA bundle for outgoing TLS), when set, takes the place of "the system roots" in this
//! table; a URL's own `sslrootcert` still wins, as it names this database's CA.
//!
//! A URL whose hosts are all Unix sockets uses no TLS, as libpq. The URL may carry a password: no error here quotes a value of it.

use std::path::PathBuf;
use std::sync::Arc;

use crate::tls::CaBundle;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore};

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Not at all (libpq's `prefer` and `require` without a root certificate).
    Nothing,
    /// The chain, not the host name (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// What the URL says, split into what tokio-postgres understands and the certificate check.
pub struct ConnectOptions {
    pub config: tokio_postgres::Config,
    pub verify: Verify,
    /// `sslrootcert`: the CA certificates (PEM) to check against instead of the system roots.
    pub root_cert: Option<PathBuf>,
}

impl std::fmt::Debug for ConnectOptions {
    /// tokio-postgres redacts the password in its own Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("config", &self.config)
            .field("verify", &self.verify)
            .field("root_cert", &self.root_cert)
            .finish()
    }
}

/// Parses `store.postgres_url`; the error names the problem, never the URL.
pub fn parse(url: &str) -> Result<ConnectOptions, String> {
    let is_uri = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (rest, params) = if is_uri { uri_params(url) } else { (String::new(), kv_params(url)?) };
    let mut verify = None;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for param in params {
        match param.key.as_str() {
            "sslmode" => match param.value.as_str() {
                "verify-ca" => verify = Some(Verify::Chain),
                "verify-full" => verify = Some(Verify::Full),
                "disable" | "prefer" | "require" => {
                    verify = None;
                    kept.push(param.raw);
                }
                _ => return Err("sslmode must be disable, prefer, require, verify-ca or verify-full".into()),
            },
            "sslrootcert" => root_cert = Some(PathBuf::from(param.value)),
            _ => kept.push(param.raw),
        }
    }
    if verify.is_some() {
        kept.push(if is_uri { "sslmode=require".into() } else { "sslmode='require'".into() });
    }
    let stripped =
        if is_uri { if kept.is_empty() { rest } else { format!("{rest}?{}", kept.join("&")) } } else { kept.join(" ") };
    let mut config: tokio_postgres::Config =
        stripped.parse().map_err(|e: tokio_postgres::Error| format!("not a PostgreSQL connection string: {e}"))?;
    // libpq never uses TLS on a Unix socket (there is no host name to check either).
    let hosts = config.get_hosts();
    if !hosts.is_empty() && hosts.iter().all(|host| matches!(host, tokio_postgres::config::Host::Unix(_))) {
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    let verify = verify.unwrap_or(if root_cert.is_some() { Verify::Chain } else { Verify::Nothing });
    Ok(ConnectOptions { config, verify, root_cert })
}

/// The rustls configuration for `options` (ring, as the rest of kps). `roots` (`tls.ca_file`) replaces the
/// system roots; `sslrootcert` beats both.
pub fn tls_config(options: &ConnectOptions, roots: Option<&CaBundle>) -> Result<ClientConfig, String> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match options.verify {
        Verify::Nothing => Arc::new(AnyCertificate(provider)),
        Verify::Chain | Verify::Full => {
            let roots = Arc::new(root_store(options.root_cert.as_deref(), roots)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("TLS: {e}"))?;
            if options.verify == Verify::Full { webpki } else { Arc::new(AnyHostName(webpki)) }
        }
    };
    Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}

fn root_store(file: Option<&std::path::Path>, ca_bundle: Option<&CaBundle>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match (file, ca_bundle) {
        (Some(path), _) => roots = CaBundle::read(path, "sslrootcert").map_err(|e| e.to_string())?.root_store(),
        (None, Some(bundle)) => roots = bundle.root_store(),
        (None, None) => {
            let native = rustls_native_certs::load_native_certs();
            if let Some(error) = native.errors.first() {
                tracing::warn!(%error, "store: reading the system's root certificates");
            }
            roots.add_parsable_certificates(native.certs);
        }
    }
    if roots.is_empty() {
        return Err("no root certificates to verify the database server against (sslrootcert)".into());
    }
    Ok(roots)
}

/// tokio-postgres-rustls's connector, which also makes a connector for a Unix-socket host (tokio-postgres asks
/// for one with an empty host name before it knows that TLS is not used there; rustls has no such name).
#[derive(Clone)]
pub struct MakeTls(pub tokio_postgres_rustls::MakeRustlsConnect);

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for MakeTls
where
    tokio_postgres_rustls::MakeRustlsConnect: tokio_postgres::tls::MakeTlsConnect<S>,
{
    type Stream = <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<S>>::Stream;
    type TlsConnect = <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<S>>::TlsConnect;
    type Error = <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<S>>::Error;

    fn make_tls_connect(&mut self, hostname: &str) -> Result<Self::TlsConnect, Self::Error> {
        self.0.make_tls_connect(if hostname.is_empty() { "localhost" } else { hostname })
    }
}

/// `prefer` / `require`: encrypted, the certificate not checked (libpq's meaning of those modes); the
/// handshake signatures are still verified.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked, a certificate for another host name is accepted.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// One `key=value` of the URL: decoded, and as written (to pass on unchanged).
struct Param {
    key: String,
    value: String,
    raw: String,
}

/// A URI's part before `?`, and its query parameters.
fn uri_params(url: &str) -> (String, Vec<Param>) {
    let Some((rest, query)) = url.split_once('?') else { return (url.to_owned(), Vec::new()) };
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let params = query
        .split('&')
        .filter(|raw| !raw.is_empty())
        .map(|raw| {
            let (key, value) = raw.split_once('=').unwrap_or((raw, ""));
            Param { key: decode(key), value: decode(value), raw: raw.to_owned() }
        })
        .collect();
    (rest.to_owned(), params)
}

/// The `key = value` pairs of a libpq key/value connection string (values plain or single-quoted, with
/// backslash escapes).
fn kv_params(s: &str) -> Result<Vec<Param>, String> {
    let mut params = Vec::new();
    let mut chars = s.char_indices().peekable();
    let skip_space = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_space(&mut chars);
        let Some(&(start, _)) = chars.peek() else { break };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        skip_space(&mut chars);
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(format!("connection string: `{key}` has no value"));
        }
        skip_space(&mut chars);
        let mut value = String::new();
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut end = s.len();
        loop {
            match chars.next() {
                None if quoted => return Err(format!("connection string: the value of `{key}` is not closed")),
                None => break,
                Some((_, '\\')) => match chars.next() {
                    Some((_, escaped)) => value.push(escaped),
                    None => return Err(format!("connection string: the value of `{key}` ends in a backslash")),
                },
                Some((at, '\'')) if quoted => {
                    end = at + 1;
                    break;
                }
                Some((at, c)) if !quoted && c.is_whitespace() => {
                    end = at;
                    break;
                }
                Some((_, c)) => value.push(c),
            }
        }
        params.push(Param { key, value, raw: s[start..end].to_owned() });
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use tokio_postgres::config::{Host, SslMode, TargetSessionAttrs};

    use super::*;

    #[test]
    fn a_multi_host_uri_keeps_its_hosts_and_session_attrs() {
        let url = "postgresql://kps:s3cret@db1:5432,db2:5433/kps?target_session_attrs=read-write&sslmode=require";
        let options = parse(url).expect("parse");
        let hosts = options.config.get_hosts();
        assert_eq!(hosts, [Host::Tcp("db1".into()), Host::Tcp("db2".into())]);
        assert_eq!(options.config.get_ports(), [5432, 5433]);
        assert_eq!(options.config.get_target_session_attrs(), TargetSessionAttrs::ReadWrite);
        assert_eq!(options.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(options.config.get_password(), Some(b"s3cret".as_slice()));
        assert_eq!(options.verify, Verify::Nothing);
        assert!(!format!("{options:?}").contains("s3cret"), "{options:?}");
    }

    #[test]
    fn verify_full_and_the_root_cert_are_taken_out_before_tokio_postgres() {
        let options =
            parse("postgres://kps@db/kps?sslmode=verify-full&sslrootcert=%2Fetc%2Fkps%2Fca.pem&connect_timeout=3")
                .expect("parse");
        assert_eq!(options.verify, Verify::Full);
        assert_eq!(options.root_cert, Some(PathBuf::from("/etc/kps/ca.pem")));
        assert_eq!(options.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(options.config.get_connect_timeout(), Some(&std::time::Duration::from_secs(3)));

        let options = parse("host=/run/postgresql dbname=kps sslmode = 'verify-ca' user=kps").expect("parse");
        assert_eq!(options.verify, Verify::Chain);
        assert_eq!(options.config.get_hosts(), [Host::Unix("/run/postgresql".into())]);
        assert_eq!(options.config.get_ssl_mode(), SslMode::Disable, "no TLS on a Unix socket");
        let options = parse("host=db dbname=kps sslmode=verify-ca").expect("parse");
        assert_eq!((options.verify, options.config.get_ssl_mode()), (Verify::Chain, SslMode::Require));
        assert_eq!(options.config.get_dbname(), Some("kps"));
    }

    #[test]
    fn a_root_cert_alone_checks_the_chain_and_disable_turns_tls_off() {
        let options = parse("host=db sslrootcert='/a b/ca.pem' sslmode=require").expect("parse");
        assert_eq!((options.verify, options.root_cert), (Verify::Chain, Some(PathBuf::from("/a b/ca.pem"))));
        let options = parse("postgresql://db/kps?sslmode=disable").expect("parse");
        assert_eq!(options.config.get_ssl_mode(), SslMode::Disable);
        assert_eq!(parse("postgresql://db/kps").expect("parse").config.get_ssl_mode(), SslMode::Prefer);
    }

    #[test]
    fn a_bad_url_is_refused_without_quoting_it() {
        for url in [
            "postgresql://kps:s3cret@db/kps?sslmode=s3cret",
            "host=db password='s3cret",
            "host=db password=s3cret bogus=1",
        ] {
            let error = parse(url).expect_err(url);
            assert!(!error.contains("s3cret"), "{url}: {error}");
        }
    }

    #[test]
    fn the_tls_configurations_build() {
        for url in ["postgresql://db/kps?sslmode=require", "postgresql://db/kps?sslmode=verify-full"] {
            let options = parse(url).expect("parse");
            // The machine may have no system roots; then verify-full says so.
            match tls_config(&options, None) {
                Ok(_) => {}
                Err(error) => assert!(error.contains("no root certificates"), "{error}"),
            }
        }
        let missing = parse("postgresql://db/kps?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem").expect("parse");
        assert!(tls_config(&missing, None).expect_err("no file").contains("/nonexistent/ca.pem"));
    }

    /// `tls.ca_file` takes the place of the system roots; a URL's sslrootcert still names its own CA.
    #[test]
    fn the_ca_bundle_replaces_the_system_roots_and_sslrootcert_beats_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write_ca = |name: &str, count: usize| {
            let path = dir.path().join(name);
            std::fs::write(&path, crate::tls::test_ca_pem(count)).expect("write");
            path
        };
        let bundle = CaBundle::load(&write_ca("bundle.pem", 3)).expect("bundle");
        let own_ca = write_ca("db-ca.pem", 1);
        assert_eq!(root_store(None, Some(&bundle)).expect("bundle").len(), 3);
        assert_eq!(root_store(Some(&own_ca), Some(&bundle)).expect("sslrootcert").len(), 1);
        let options = parse("postgresql://db/kps?sslmode=verify-full").expect("parse");
        assert!(tls_config(&options, Some(&bundle)).is_ok(), "builds without any system root");
    }
}
