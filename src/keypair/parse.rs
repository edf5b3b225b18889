//! Parsing of imported key material (nova-keypairs.md §6.1 import rules): one OpenSSH public key line for
//! `type=ssh`, a PEM certificate for `type=x509`. A parsed [`PublicKey`] carries the Nova fingerprint, the
//! V3 algorithm and the key material that escrowed private keys are matched against
//! ([`parse_private_key`], §8). The text itself is stored by the caller exactly as received.

use super::fingerprint::{ssh_fingerprint, x509_fingerprint};
use super::material::{EcCurve, PublicKeyMaterial, SpkiError};
use super::ssh_wire::WireReader;
use super::{KeyAlgorithm, KeyType, KeypairError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use x509_cert::der::Decode;

pub use super::private_key::{PrivateKey, parse_private_key};

/// A validated public key or certificate.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub key_type: KeyType,
    /// Nova fingerprint: MD5 colon hex (ssh) or SHA-1 colon hex (x509).
    pub fingerprint: String,
    pub algorithm: KeyAlgorithm,
    pub(crate) material: PublicKeyMaterial,
}

/// Validates `text` as a key of `key_type` and computes its fingerprint and algorithm.
///
/// Errors: `ssh` → [`KeypairError::InvalidPublicKey`] or [`KeypairError::UnsupportedKeyType`];
/// `x509` → [`KeypairError::InvalidCertificate`] or, for a certificate whose key is not RSA, P-256/384/521
/// or Ed25519, [`KeypairError::UnsupportedKeyType`].
pub fn parse_public_key(key_type: KeyType, text: &str) -> Result<PublicKey, KeypairError> {
    match key_type {
        KeyType::Ssh => parse_ssh_public_key(text),
        KeyType::X509 => parse_x509_certificate(text),
    }
}

fn parse_ssh_public_key(text: &str) -> Result<PublicKey, KeypairError> {
    let (algorithm, blob) = split_ssh_line(text).ok_or(KeypairError::InvalidPublicKey)?;
    let material = decode_ssh_blob(algorithm, &blob)?;
    Ok(PublicKey {
        key_type: KeyType::Ssh,
        fingerprint: ssh_fingerprint(&blob),
        algorithm: material.algorithm(),
        material,
    })
}

/// Splits `<algo> <base64>[ <comment>]` with an optional final `\n`/`\r\n` and decodes the blob.
/// `None` for every shape the spec calls invalid.
fn split_ssh_line(text: &str) -> Option<(&str, Vec<u8>)> {
    let line = text.strip_suffix("\r\n").or_else(|| text.strip_suffix('\n')).unwrap_or(text);
    if line.contains(['\t', '\n', '\r']) {
        return None;
    }
    let (algorithm, rest) = line.split_once(' ')?;
    let (encoded_blob, comment) = match rest.split_once(' ') {
        Some((blob, comment)) => (blob, Some(comment)),
        None => (rest, None),
    };
    // An empty field means a leading space or two spaces between fields.
    if algorithm.is_empty() || encoded_blob.is_empty() || comment.is_some_and(|c| c.starts_with(' ')) {
        return None;
    }
    let blob = STANDARD.decode(encoded_blob).ok()?;
    Some((algorithm, blob))
}

fn decode_ssh_blob(algorithm: &str, blob: &[u8]) -> Result<PublicKeyMaterial, KeypairError> {
    let mut reader = WireReader::new(blob);
    let inner_algorithm = reader.string().ok_or(KeypairError::InvalidPublicKey)?;
    if inner_algorithm != algorithm.as_bytes() {
        return Err(KeypairError::InvalidPublicKey);
    }
    let material = match algorithm {
        "ssh-rsa" => {
            let e = reader.positive_mpint();
            let n = reader.positive_mpint();
            e.zip(n).and_then(|(e, n)| PublicKeyMaterial::rsa(n, e))
        }
        "ecdsa-sha2-nistp256" => decode_ecdsa(&mut reader, EcCurve::P256),
        "ecdsa-sha2-nistp384" => decode_ecdsa(&mut reader, EcCurve::P384),
        "ecdsa-sha2-nistp521" => decode_ecdsa(&mut reader, EcCurve::P521),
        "ssh-ed25519" => reader.string().and_then(PublicKeyMaterial::ed25519),
        // Nova cannot load DSA keys either, so they are "invalid", not "unsupported".
        "ssh-dss" => None,
        other if is_ssh_algorithm_name(other) => {
            return Err(KeypairError::UnsupportedKeyType(other.to_string()));
        }
        _ => None,
    };
    match material {
        Some(material) if reader.is_finished() => Ok(material),
        _ => Err(KeypairError::InvalidPublicKey),
    }
}

fn decode_ecdsa(reader: &mut WireReader<'_>, curve: EcCurve) -> Option<PublicKeyMaterial> {
    let curve_name = reader.string()?;
    if curve_name != curve.ssh_curve_name().as_bytes() {
        return None;
    }
    PublicKeyMaterial::ec(curve, reader.string()?)
}

/// RFC 4251 §6: algorithm names are 1–64 printable US-ASCII characters. Anything else is not a
/// "well-formed key of another algorithm" and must not be echoed into the KPS.1203 message.
fn is_ssh_algorithm_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic())
}

const PEM_CERTIFICATE_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_CERTIFICATE_END: &str = "-----END CERTIFICATE-----";

fn parse_x509_certificate(text: &str) -> Result<PublicKey, KeypairError> {
    let der = pem_certificate_der(text).map_err(|d| KeypairError::InvalidCertificate(d.into()))?;
    let certificate = x509_cert::Certificate::from_der(&der)
        .map_err(|e| KeypairError::InvalidCertificate(format!("not a valid X.509 certificate: {e}")))?;
    let material =
        PublicKeyMaterial::from_spki(&certificate.tbs_certificate.subject_public_key_info).map_err(|e| match e {
            SpkiError::Unsupported(name) => KeypairError::UnsupportedKeyType(name),
            SpkiError::Malformed => {
                KeypairError::InvalidCertificate("the certificate's public key is malformed".into())
            }
        })?;
    Ok(PublicKey {
        key_type: KeyType::X509,
        fingerprint: x509_fingerprint(&der),
        algorithm: material.algorithm(),
        material,
    })
}

/// DER of the first `CERTIFICATE` block in `text`. Text around the block is ignored, as OpenSSL's PEM
/// reader (used by Nova) does; the body may be wrapped at any width with LF or CRLF.
fn pem_certificate_der(text: &str) -> Result<Vec<u8>, &'static str> {
    let start = text.find(PEM_CERTIFICATE_BEGIN).ok_or("no PEM CERTIFICATE block found")?;
    let after_begin = &text[start + PEM_CERTIFICATE_BEGIN.len()..];
    let end = after_begin.find(PEM_CERTIFICATE_END).ok_or("the PEM CERTIFICATE block has no END line")?;
    let body: String = after_begin[..end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if body.is_empty() {
        return Err("the PEM CERTIFICATE block is empty");
    }
    STANDARD.decode(body).map_err(|_| "the PEM CERTIFICATE body is not valid base64")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 ops";
    const SPEC_ED25519_FINGERPRINT: &str = "f1:02:17:de:ef:c1:30:83:11:8b:82:a0:0e:67:7f:d5";

    const RSA_2048: &str = include_str!("testdata/rsa2048.pub");
    const P256: &str = include_str!("testdata/p256.pub");
    const P384: &str = include_str!("testdata/p384.pub");
    const P521: &str = include_str!("testdata/p521.pub");
    const ED25519: &str = include_str!("testdata/ed25519.pub");
    const DSA: &str = include_str!("testdata/dsa.pub");
    const ED25519_CERT: &str = include_str!("testdata/ed25519_cert.pub");
    const SK_ED25519: &str = include_str!("testdata/sk_ed25519.pub");
    const SK_ECDSA: &str = include_str!("testdata/sk_ecdsa.pub");

    const CERT_RSA_2048: &str = include_str!("testdata/cert_rsa2048.pem");
    const CERT_P256: &str = include_str!("testdata/cert_p256.pem");
    const CERT_P521: &str = include_str!("testdata/cert_p521.pem");
    const CERT_ED25519: &str = include_str!("testdata/cert_ed25519.pem");
    const CERT_DSA: &str = include_str!("testdata/cert_dsa.pem");

    fn ssh(text: &str) -> Result<PublicKey, KeypairError> {
        parse_public_key(KeyType::Ssh, text)
    }

    fn assert_invalid(text: &str) {
        match ssh(text) {
            Err(KeypairError::InvalidPublicKey) => {}
            other => panic!("{text:?}: expected InvalidPublicKey, got {other:?}"),
        }
    }

    fn field(text: &str, index: usize) -> &str {
        text.trim_end().split(' ').nth(index).expect("field")
    }

    #[test]
    fn spec_ed25519_test_vector_has_the_spec_fingerprint() {
        let key = ssh(SPEC_ED25519).expect("valid");
        assert_eq!(key.fingerprint, SPEC_ED25519_FINGERPRINT);
        assert_eq!(key.key_type, KeyType::Ssh);
        assert_eq!(key.algorithm, KeyAlgorithm::Ed25519);
    }

    /// Fingerprints from `ssh-keygen -l -E md5 -f <file>` (OpenSSH 9.2).
    #[test]
    fn every_accepted_algorithm_imports_with_the_ssh_keygen_md5_fingerprint() {
        let table = [
            (RSA_2048, "da:23:fe:a9:86:3c:47:56:a4:5d:1e:d3:2d:08:cc:5c", "RSA_2048"),
            (P256, "0f:73:34:f3:7e:b0:69:2b:3c:ec:81:34:64:24:57:89", "EC_P256"),
            (P384, "37:b2:65:8a:44:b5:25:f3:14:38:5b:5a:a5:7f:f1:7c", "EC_P384"),
            (P521, "3a:5f:a4:9b:e4:24:c4:e5:16:12:6c:71:2f:ad:2f:43", "EC_P521"),
            (ED25519, "7a:51:f8:d9:62:ad:17:1d:eb:6b:5b:e5:50:df:16:ac", "ED25519"),
        ];
        for (text, fingerprint, algorithm) in table {
            let key = ssh(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(key.fingerprint, fingerprint, "{text}");
            assert_eq!(key.algorithm.to_string(), algorithm);
        }
    }

    #[test]
    fn line_endings_and_comments_that_the_spec_allows_are_accepted() {
        let blob = field(SPEC_ED25519, 1);
        let table = [
            format!("ssh-ed25519 {blob}"),
            format!("ssh-ed25519 {blob}\n"),
            format!("ssh-ed25519 {blob}\r\n"),
            format!("ssh-ed25519 {blob} ops\n"),
            format!("ssh-ed25519 {blob} ops\r\n"),
            format!("ssh-ed25519 {blob} comment with  inner   spaces"),
            format!("ssh-ed25519 {blob} "),
        ];
        for text in table {
            let key = ssh(&text).unwrap_or_else(|e| panic!("{text:?}: {e:?}"));
            assert_eq!(key.fingerprint, SPEC_ED25519_FINGERPRINT, "{text:?}");
        }
    }

    #[test]
    fn malformed_lines_are_invalid_public_keys() {
        let blob = field(SPEC_ED25519, 1);
        let table = [
            String::new(),
            "\n".into(),
            " ".into(),
            format!(" ssh-ed25519 {blob} ops"),
            format!("ssh-ed25519\t{blob} ops"),
            format!("ssh-ed25519 {blob}\tops"),
            format!("ssh-ed25519 {blob} o\tps"),
            format!("ssh-ed25519  {blob} ops"),
            format!("ssh-ed25519 {blob}  ops"),
            format!("ssh-ed25519 {blob} ops\n\n"),
            format!("ssh-ed25519 {blob} ops\r"),
            format!("ssh-ed25519 {blob} ops\n\r\n"),
            format!("ssh-ed25519 {blob}\nssh-ed25519 {blob}"),
            format!("ssh-ed25519 {blob} o\rps"),
            format!("\nssh-ed25519 {blob} ops"),
            "ssh-ed25519".into(),
            "ssh-ed25519 ".into(),
            blob.to_string(),
            format!("{blob} ops"),
        ];
        for text in table {
            assert_invalid(&text);
        }
    }

    #[test]
    fn garbage_pem_and_bad_base64_are_invalid_public_keys() {
        let blob = field(SPEC_ED25519, 1);
        let table = [
            "garbage".to_string(),
            "hello world".into(),
            CERT_RSA_2048.into(),
            include_str!("testdata/ed25519_seed_pkcs8.pem").into(),
            format!("ssh-ed25519 {}", &blob[..blob.len() - 1]),
            format!("ssh-ed25519 {}=", blob),
            format!("ssh-ed25519 {}!{}", &blob[..10], &blob[10..]),
            "ssh-ed25519 AAAA".into(),
            "ssh-ed25519 ====".into(),
        ];
        for text in table {
            assert_invalid(&text);
        }
    }

    #[test]
    fn truncated_or_padded_blobs_are_invalid_public_keys() {
        for text in [RSA_2048, P256, P384, P521, ED25519] {
            let algorithm = field(text, 0);
            let blob = STANDARD.decode(field(text, 1)).expect("base64");
            for cut in [1, 2, 4, blob.len() / 2] {
                assert_invalid(&format!("{algorithm} {}", STANDARD.encode(&blob[..blob.len() - cut])));
            }
            let mut padded = blob.clone();
            padded.extend_from_slice(&[0, 0, 0, 0]);
            assert_invalid(&format!("{algorithm} {}", STANDARD.encode(&padded)));
        }
    }

    #[test]
    fn algorithm_mismatch_between_field_and_blob_is_invalid() {
        let table = [
            format!("ssh-rsa {}", field(ED25519, 1)),
            format!("ssh-ed25519 {}", field(RSA_2048, 1)),
            format!("ecdsa-sha2-nistp384 {}", field(P256, 1)),
            format!("ecdsa-sha2-nistp256 {}", field(P521, 1)),
            format!("sk-ssh-ed25519@openssh.com {}", field(ED25519, 1)),
            format!("ssh-dss {}", field(ED25519, 1)),
            format!("unknown-algo {}", field(ED25519, 1)),
        ];
        for text in table {
            assert_invalid(&text);
        }
    }

    #[test]
    fn ecdsa_blob_with_wrong_curve_name_or_point_off_the_curve_is_invalid() {
        let blob = STANDARD.decode(field(P256, 1)).expect("base64");
        // name(4+19) then curve name(4+8): rewrite "nistp256" as "nistp384".
        let mut wrong_curve = blob.clone();
        wrong_curve[4 + 19 + 4 + 5..4 + 19 + 4 + 8].copy_from_slice(b"384");
        assert_invalid(&format!("ecdsa-sha2-nistp256 {}", STANDARD.encode(&wrong_curve)));
        let mut off_curve = blob;
        let last = off_curve.len() - 1;
        off_curve[last] ^= 1;
        assert_invalid(&format!("ecdsa-sha2-nistp256 {}", STANDARD.encode(&off_curve)));
    }

    #[test]
    fn rsa_blob_with_even_exponent_is_invalid() {
        use super::super::ssh_wire::WireWriter;
        let blob = WireWriter::default().string(b"ssh-rsa").positive_mpint(&[2]).positive_mpint(&[0xc5; 256]).finish();
        assert_invalid(&format!("ssh-rsa {}", STANDARD.encode(&blob)));
        let ok =
            WireWriter::default().string(b"ssh-rsa").positive_mpint(&[1, 0, 1]).positive_mpint(&[0xc5; 256]).finish();
        assert!(ssh(&format!("ssh-rsa {}", STANDARD.encode(&ok))).is_ok());
    }

    #[test]
    fn dsa_keys_are_invalid_not_unsupported() {
        assert_invalid(DSA);
    }

    #[test]
    fn well_formed_keys_of_other_algorithms_are_unsupported() {
        let table = [
            (SK_ED25519, "sk-ssh-ed25519@openssh.com"),
            (SK_ECDSA, "sk-ecdsa-sha2-nistp256@openssh.com"),
            (ED25519_CERT, "ssh-ed25519-cert-v01@openssh.com"),
        ];
        for (text, algorithm) in table {
            match ssh(text) {
                Err(KeypairError::UnsupportedKeyType(name)) => assert_eq!(name, algorithm),
                other => panic!("{algorithm}: expected UnsupportedKeyType, got {other:?}"),
            }
        }
        let blob = super::super::ssh_wire::WireWriter::default().string(b"ssh-foo").string(b"anything").finish();
        match ssh(&format!("ssh-foo {} c", STANDARD.encode(&blob))) {
            Err(KeypairError::UnsupportedKeyType(name)) => assert_eq!(name, "ssh-foo"),
            other => panic!("expected UnsupportedKeyType, got {other:?}"),
        }
    }

    /// Fingerprints from `openssl x509 -noout -fingerprint -sha1`, lowercased.
    #[test]
    fn x509_certificates_import_with_the_openssl_sha1_fingerprint() {
        let table = [
            (CERT_RSA_2048, "99:e6:7a:bc:a4:1d:c2:4c:e2:4b:4b:3e:1d:be:51:66:24:aa:74:2c", "RSA_2048"),
            (CERT_P256, "41:87:d3:3f:f2:5f:81:e5:37:2e:be:8e:1a:3f:f6:22:53:14:f9:79", "EC_P256"),
            (CERT_P521, "74:d0:fe:88:ba:38:d7:c5:7b:06:c9:a9:6c:36:5b:b7:e8:7c:fc:9f", "EC_P521"),
            (CERT_ED25519, "3d:4c:86:92:db:81:fb:f2:0d:ec:50:fa:09:1c:55:1b:7d:cb:f5:e1", "ED25519"),
        ];
        for (pem, fingerprint, algorithm) in table {
            let key = parse_public_key(KeyType::X509, pem).expect("valid certificate");
            assert_eq!(key.key_type, KeyType::X509);
            assert_eq!(key.fingerprint, fingerprint);
            assert_eq!(key.fingerprint.len(), 59);
            assert_eq!(key.algorithm.to_string(), algorithm);
        }
    }

    #[test]
    fn x509_certificate_with_surrounding_text_and_crlf_is_accepted() {
        let text = format!("subject=CN = cert\r\n{}", CERT_P256.replace('\n', "\r\n"));
        let key = parse_public_key(KeyType::X509, &text).expect("valid certificate");
        assert_eq!(key.fingerprint, "41:87:d3:3f:f2:5f:81:e5:37:2e:be:8e:1a:3f:f6:22:53:14:f9:79");
    }

    #[test]
    fn x509_non_certificates_are_invalid_certificates() {
        let body_start = CERT_P256.find('\n').expect("newline") + 1;
        let table = [
            String::new(),
            "garbage".into(),
            SPEC_ED25519.into(),
            include_str!("testdata/ed25519_seed_pkcs8.pem").into(),
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
            "-----BEGIN CERTIFICATE-----\nMIIB\n".into(),
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".into(),
            "-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n".into(),
            format!("-----BEGIN CERTIFICATE-----\nAAAA{}", &CERT_P256[body_start..]),
        ];
        for text in table {
            match parse_public_key(KeyType::X509, &text) {
                Err(KeypairError::InvalidCertificate(detail)) => assert!(!detail.is_empty()),
                other => panic!("{text:?}: expected InvalidCertificate, got {other:?}"),
            }
        }
    }

    #[test]
    fn x509_certificate_with_a_dsa_key_is_unsupported() {
        match parse_public_key(KeyType::X509, CERT_DSA) {
            Err(KeypairError::UnsupportedKeyType(name)) => assert_eq!(name, "DSA"),
            other => panic!("expected UnsupportedKeyType, got {other:?}"),
        }
    }
}
