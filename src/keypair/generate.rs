//! Generation of new key pairs (nova-keypairs.md §6.1 "Generate"): SSH key pairs of the requested
//! algorithm in Nova's encodings, and Nova's self-signed WinRM client certificate with its key returned
//! as a base64 PKCS#12 bundle. The private key leaves this module once, inside a `Zeroizing` string.

use super::fingerprint::x509_fingerprint;
use super::material::{EcCurve, OID_SECP256R1, OID_SECP384R1, PublicKeyMaterial};
use super::parse::parse_public_key;
use super::{Algorithm, KeyAlgorithm, KeyType, KeypairError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand::RngCore;
use rand::rngs::OsRng;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding, SecretDocument};
use rsa::traits::PublicKeyParts;
use std::fmt;
use x509_cert::der::asn1::{BitStringRef, ContextSpecific, ObjectIdentifier, OctetStringRef};
use x509_cert::der::{Encode, EncodeValue, FixedTag, Length, Tag, TagMode, TagNumber, Writer};
use zeroize::Zeroizing;

/// Comment of generated RSA public keys: Nova's, so that clients that never ask for another algorithm
/// see exactly Nova's output.
const NOVA_COMMENT: &str = "Generated-by-Nova";
/// Comment of generated keys of the kps-only algorithms.
const KPS_COMMENT: &str = "Generated-by-kps";
/// Validity of the WinRM certificate, as in Nova.
const X509_VALIDITY_DAYS: i64 = 3650;
/// Microsoft User Principal Name, the otherName Windows maps the certificate to a user with.
const OID_UPN: [u64; 10] = [1, 3, 6, 1, 4, 1, 311, 20, 2, 3];

/// A freshly generated key pair. The private key is returned to the client once and otherwise only ever
/// sealed for custody.
pub struct GeneratedKeyPair {
    pub public_key: String,
    pub fingerprint: String,
    pub algorithm: KeyAlgorithm,
    /// `ssh`: PEM (PKCS#1, SEC1 or OpenSSH). `x509`: base64 of a PKCS#12 bundle with an empty password.
    pub private_key: Zeroizing<String>,
}

impl fmt::Debug for GeneratedKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKeyPair")
            .field("public_key", &self.public_key)
            .field("fingerprint", &self.fingerprint)
            .field("algorithm", &self.algorithm)
            .field("private_key", &"[REDACTED]")
            .finish()
    }
}

/// A new RSA key with e = 65537 (slow: callers on the request path use a pre-generated pool).
pub fn generate_rsa(bits: usize) -> Result<rsa::RsaPrivateKey, KeypairError> {
    rsa::RsaPrivateKey::new(&mut OsRng, bits)
        .map_err(|e| KeypairError::Generation(format!("RSA-{bits} generation failed: {e}")))
}

/// A new SSH key pair of `algorithm`.
pub fn generate_ssh(algorithm: Algorithm) -> Result<GeneratedKeyPair, KeypairError> {
    if let Some(bits) = algorithm.rsa_bits() {
        return generate_ssh_from_rsa(generate_rsa(bits)?);
    }
    match algorithm {
        Algorithm::Ed25519 => generate_ssh_ed25519(),
        Algorithm::EcP256 => {
            let key = p256::SecretKey::random(&mut OsRng);
            let point = key.public_key().to_encoded_point(false);
            let scalar = Zeroizing::new(key.to_bytes());
            let private_key = sec1_pem(&scalar, OID_SECP256R1, point.as_bytes())?;
            ssh_key_pair(EcCurve::P256, point.as_bytes(), private_key)
        }
        Algorithm::EcP384 => {
            let key = p384::SecretKey::random(&mut OsRng);
            let point = key.public_key().to_encoded_point(false);
            let scalar = Zeroizing::new(key.to_bytes());
            let private_key = sec1_pem(&scalar, OID_SECP384R1, point.as_bytes())?;
            ssh_key_pair(EcCurve::P384, point.as_bytes(), private_key)
        }
        Algorithm::Rsa2048 | Algorithm::Rsa3072 | Algorithm::Rsa4096 => {
            Err(KeypairError::Generation("RSA algorithm without a key size".into()))
        }
    }
}

/// Nova's SSH key pair from an RSA key: PKCS#1 PEM (64-column lines, LF, final newline) and
/// `ssh-rsa <blob> Generated-by-Nova`.
pub fn generate_ssh_from_rsa(key: rsa::RsaPrivateKey) -> Result<GeneratedKeyPair, KeypairError> {
    let private_key = key.to_pkcs1_pem(LineEnding::LF).map_err(encoding_error)?;
    let material = PublicKeyMaterial::rsa(&key.n().to_bytes_be(), &key.e().to_bytes_be())
        .ok_or_else(|| KeypairError::Generation("generated RSA key is not acceptable".into()))?;
    finish_ssh(&material, NOVA_COMMENT, private_key)
}

fn generate_ssh_ed25519() -> Result<GeneratedKeyPair, KeypairError> {
    let signing_key = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let public = signing_key.verifying_key().to_bytes();
    let keypair = ssh_key::private::Ed25519Keypair::from(&signing_key);
    let openssh = ssh_key::PrivateKey::new(ssh_key::private::KeypairData::Ed25519(keypair), KPS_COMMENT)
        .map_err(encoding_error)?;
    let private_key = openssh.to_openssh(ssh_key::LineEnding::LF).map_err(encoding_error)?;
    finish_ssh(&PublicKeyMaterial::Ed25519(public), KPS_COMMENT, private_key)
}

/// RFC 5915 `ECPrivateKey` PEM *with* the `namedCurve` parameters. elliptic-curve 0.13's `to_sec1_pem`
/// omits them, and OpenSSL, ssh-keygen and Python `cryptography` then refuse the key.
fn sec1_pem(scalar: &[u8], curve: ObjectIdentifier, public_point: &[u8]) -> Result<Zeroizing<String>, KeypairError> {
    let key = Sec1PrivateKey {
        scalar: OctetStringRef::new(scalar).map_err(encoding_error)?,
        curve: ContextSpecific { tag_number: TagNumber::N0, tag_mode: TagMode::Explicit, value: curve },
        public_point: ContextSpecific {
            tag_number: TagNumber::N1,
            tag_mode: TagMode::Explicit,
            value: BitStringRef::from_bytes(public_point).map_err(encoding_error)?,
        },
    };
    let len = usize::try_from(key.encoded_len().map_err(encoding_error)?).map_err(encoding_error)?;
    // Sized up front so that encoding never reallocates and leaves an unzeroized copy behind.
    let mut der = Zeroizing::new(Vec::with_capacity(len));
    key.encode_to_vec(&mut der).map_err(encoding_error)?;
    SecretDocument::try_from(der.as_slice())
        .and_then(|document| document.to_pem("EC PRIVATE KEY", LineEnding::LF))
        .map_err(encoding_error)
}

struct Sec1PrivateKey<'a> {
    scalar: OctetStringRef<'a>,
    curve: ContextSpecific<ObjectIdentifier>,
    public_point: ContextSpecific<BitStringRef<'a>>,
}

impl FixedTag for Sec1PrivateKey<'_> {
    const TAG: Tag = Tag::Sequence;
}

impl EncodeValue for Sec1PrivateKey<'_> {
    fn value_len(&self) -> x509_cert::der::Result<Length> {
        1u8.encoded_len()? + self.scalar.encoded_len()? + self.curve.encoded_len()? + self.public_point.encoded_len()?
    }

    fn encode_value(&self, writer: &mut impl Writer) -> x509_cert::der::Result<()> {
        // version 1 (ecPrivkeyVer1)
        1u8.encode(writer)?;
        self.scalar.encode(writer)?;
        self.curve.encode(writer)?;
        self.public_point.encode(writer)
    }
}

fn ssh_key_pair(
    curve: EcCurve,
    point: &[u8],
    private_key: Zeroizing<String>,
) -> Result<GeneratedKeyPair, KeypairError> {
    let material = PublicKeyMaterial::ec(curve, point)
        .ok_or_else(|| KeypairError::Generation("generated EC point is invalid".into()))?;
    finish_ssh(&material, KPS_COMMENT, private_key)
}

/// Builds the public key line and takes fingerprint and algorithm from the import parser, so generated
/// and imported keys can never disagree on them.
fn finish_ssh(
    material: &PublicKeyMaterial,
    comment: &str,
    private_key: Zeroizing<String>,
) -> Result<GeneratedKeyPair, KeypairError> {
    let public_key = format!("{} {} {comment}", material.ssh_algorithm(), STANDARD.encode(material.ssh_blob()));
    let parsed = parse_public_key(KeyType::Ssh, &public_key)
        .map_err(|e| KeypairError::Generation(format!("generated public key does not parse: {e}")))?;
    Ok(GeneratedKeyPair { public_key, fingerprint: parsed.fingerprint, algorithm: parsed.algorithm, private_key })
}

/// Nova's WinRM certificate for `user_id`: self-signed with `rsa_key` (SHA-256), `CN=<user_id>`, valid
/// 3650 days from now, EKU clientAuth, SAN otherName UPN `<user_id>@localhost`. `public_key` is the
/// certificate PEM, `private_key` the base64 of a PKCS#12 bundle (key + certificate, empty password).
pub fn generate_x509(user_id: &str, rsa_key: rsa::RsaPrivateKey) -> Result<GeneratedKeyPair, KeypairError> {
    // SecretDocument and the Zeroizing PEM wipe themselves; rcgen and p12-keystore keep plain copies
    // (their types have no Zeroize), which are dropped when this function returns.
    let pkcs8 = rsa_key.to_pkcs8_der().map_err(encoding_error)?;
    let pkcs8_pem = pkcs8.to_pem("PRIVATE KEY", LineEnding::LF).map_err(encoding_error)?;
    let signing_key =
        rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8_pem, &rcgen::PKCS_RSA_SHA256).map_err(certificate_error)?;
    let certificate = certificate_params(user_id)?.self_signed(&signing_key).map_err(certificate_error)?;
    let certificate_der = certificate.der().to_vec();
    let bundle = pkcs12_bundle(user_id, pkcs8.as_bytes(), &certificate_der)?;
    Ok(GeneratedKeyPair {
        public_key: certificate.pem(),
        fingerprint: x509_fingerprint(&certificate_der),
        algorithm: KeyAlgorithm::Rsa { bits: rsa_key.n().bits() },
        private_key: Zeroizing::new(STANDARD.encode(bundle.as_slice())),
    })
}

fn certificate_params(user_id: &str) -> Result<rcgen::CertificateParams, KeypairError> {
    let mut params = rcgen::CertificateParams::default();
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, user_id);
    params.distinguished_name = subject;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::days(X509_VALIDITY_DAYS);
    params.serial_number = Some(random_serial());
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.subject_alt_names = vec![rcgen::SanType::OtherName((
        OID_UPN.to_vec(),
        rcgen::OtherNameValue::Utf8String(format!("{user_id}@localhost")),
    ))];
    Ok(params)
}

/// A positive 159-bit serial (RFC 5280: at most 20 octets, positive), random like Nova's
/// `x509.random_serial_number()`; rcgen would otherwise derive it from the key.
fn random_serial() -> rcgen::SerialNumber {
    let mut bytes = [0u8; 20];
    OsRng.fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x40;
    rcgen::SerialNumber::from_slice(&bytes)
}

/// PKCS#12 with one key bag and its certificate, both under the empty password. p12-keystore's defaults
/// (PBES2 PBKDF2-HMAC-SHA256 + AES-256-CBC, HMAC-SHA256 MAC) load in OpenSSL 3 and Python `cryptography`
/// with both `b""` and `None`; verified when this was written, see the module tests for the round trip.
fn pkcs12_bundle(alias: &str, pkcs8_der: &[u8], certificate_der: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeypairError> {
    let key = p12_keystore::PrivateKey::from_der(pkcs8_der).map_err(pkcs12_error)?;
    let certificate = p12_keystore::Certificate::from_der(certificate_der).map_err(pkcs12_error)?;
    // The local key id links key and certificate; the certificate's SHA-1 is what OpenSSL uses.
    let local_key_id = {
        use sha1::Digest;
        sha1::Sha1::digest(certificate_der).to_vec()
    };
    let chain = p12_keystore::PrivateKeyChain::new(local_key_id, key, [certificate]);
    // The alias becomes a BMPString friendlyName, which cannot hold characters beyond U+FFFF.
    let alias = if alias.chars().all(|c| u32::from(c) <= 0xffff) { alias } else { "kps" };
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(alias, p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    store.writer("").write().map(Zeroizing::new).map_err(pkcs12_error)
}

fn encoding_error(e: impl fmt::Display) -> KeypairError {
    KeypairError::Generation(format!("key encoding failed: {e}"))
}

fn certificate_error(e: rcgen::Error) -> KeypairError {
    KeypairError::Generation(format!("certificate generation failed: {e}"))
}

fn pkcs12_error(e: p12_keystore::error::Error) -> KeypairError {
    KeypairError::Generation(format!("PKCS#12 encoding failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keypair::parse::parse_private_key;
    use rsa::pkcs1::DecodeRsaPrivateKey;

    /// RSA generation is slow in debug builds; the tests share one 2048-bit key.
    fn test_rsa_key() -> rsa::RsaPrivateKey {
        static KEY: std::sync::OnceLock<rsa::RsaPrivateKey> = std::sync::OnceLock::new();
        KEY.get_or_init(|| generate_rsa(2048).expect("RSA generation")).clone()
    }

    fn fields(public_key: &str) -> Vec<&str> {
        public_key.split(' ').collect()
    }

    fn assert_pem_shape(pem: &str, label: &str) {
        assert!(pem.starts_with(&format!("-----BEGIN {label}-----\n")), "{pem}");
        assert!(pem.ends_with(&format!("-----END {label}-----\n")));
        assert!(!pem.contains('\r'));
    }

    /// The generated private key parses through our own parser and matches the returned public key.
    fn assert_private_matches_public(generated: &GeneratedKeyPair) {
        let public = parse_public_key(KeyType::Ssh, &generated.public_key).expect("public key");
        assert_eq!(public.fingerprint, generated.fingerprint);
        assert_eq!(public.algorithm, generated.algorithm);
        let private =
            parse_private_key(&generated.private_key, crate::keypair::MIN_RSA_BITS_FLOOR).expect("private key");
        assert!(private.matches(&public));
    }

    #[test]
    fn rsa_ssh_key_pair_is_nova_shaped_and_consistent() {
        let key = test_rsa_key();
        let generated = generate_ssh_from_rsa(key.clone()).expect("generated");
        assert_pem_shape(&generated.private_key, "RSA PRIVATE KEY");
        for line in generated.private_key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(line.len() <= 64);
        }
        assert_eq!(generated.private_key.lines().nth(1).map(str::len), Some(64), "body lines are 64 columns");
        let parts = fields(&generated.public_key);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "ssh-rsa");
        assert_eq!(parts[2], "Generated-by-Nova");
        assert_eq!(generated.algorithm.to_string(), "RSA_2048");
        assert_eq!(generated.fingerprint.len(), 47);

        // Independent path: rsa's PKCS#1 decoder and ssh-key's public key encoder.
        let decoded = rsa::RsaPrivateKey::from_pkcs1_pem(&generated.private_key).expect("PKCS#1");
        assert_eq!(decoded, key);
        assert_eq!(decoded.e(), &rsa::BigUint::from(65537u32));
        let ssh_public =
            ssh_key::public::RsaPublicKey::try_from(decoded.to_public_key()).expect("ssh-key RSA public key");
        let expected = ssh_key::PublicKey::new(ssh_public.into(), "Generated-by-Nova");
        assert_eq!(expected.to_openssh().expect("openssh"), generated.public_key);
        assert_private_matches_public(&generated);
    }

    #[test]
    fn ed25519_ssh_key_pair_is_openssh_and_consistent() {
        let generated = generate_ssh(Algorithm::Ed25519).expect("generated");
        assert_pem_shape(&generated.private_key, "OPENSSH PRIVATE KEY");
        let parts = fields(&generated.public_key);
        assert_eq!((parts[0], parts[2]), ("ssh-ed25519", "Generated-by-kps"));
        assert_eq!(generated.algorithm, KeyAlgorithm::Ed25519);

        let decoded = ssh_key::PrivateKey::from_openssh(&*generated.private_key).expect("OpenSSH");
        assert!(!decoded.is_encrypted());
        let mut public = decoded.public_key().clone();
        public.set_comment("Generated-by-kps");
        assert_eq!(public.to_openssh().expect("openssh"), generated.public_key);
        assert_private_matches_public(&generated);
    }

    #[test]
    fn ec_ssh_key_pairs_are_sec1_and_consistent() {
        let table = [
            (Algorithm::EcP256, "ecdsa-sha2-nistp256", KeyAlgorithm::EcP256),
            (Algorithm::EcP384, "ecdsa-sha2-nistp384", KeyAlgorithm::EcP384),
        ];
        for (algorithm, ssh_name, key_algorithm) in table {
            let generated = generate_ssh(algorithm).expect("generated");
            assert_pem_shape(&generated.private_key, "EC PRIVATE KEY");
            let parts = fields(&generated.public_key);
            assert_eq!((parts[0], parts[2]), (ssh_name, "Generated-by-kps"));
            assert_eq!(generated.algorithm, key_algorithm);

            let point = match algorithm {
                Algorithm::EcP256 => p256::SecretKey::from_sec1_pem(&generated.private_key)
                    .expect("SEC1 P-256")
                    .public_key()
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec(),
                _ => p384::SecretKey::from_sec1_pem(&generated.private_key)
                    .expect("SEC1 P-384")
                    .public_key()
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec(),
            };
            let expected = ssh_key::PublicKey::from_openssh(&generated.public_key).expect("ssh-key");
            let ecdsa = expected.key_data().ecdsa().expect("ecdsa key");
            assert_eq!(ecdsa.as_sec1_bytes(), point.as_slice());
            assert_private_matches_public(&generated);
        }
    }

    #[test]
    fn generated_private_key_does_not_match_another_public_key() {
        let a = generate_ssh(Algorithm::Ed25519).expect("generated");
        let b = generate_ssh(Algorithm::Ed25519).expect("generated");
        let private = parse_private_key(&a.private_key, crate::keypair::MIN_RSA_BITS_FLOOR).expect("private");
        let public = parse_public_key(KeyType::Ssh, &b.public_key).expect("public");
        assert!(!private.matches(&public));
        assert_ne!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn generated_key_pair_debug_redacts_the_private_key() {
        let generated = generate_ssh(Algorithm::EcP256).expect("generated");
        let debug = format!("{generated:?}");
        assert!(debug.contains("[REDACTED]"));
        assert!(!debug.contains("PRIVATE KEY"));
        assert!(debug.contains(&generated.fingerprint));
    }

    #[test]
    fn x509_certificate_is_nova_winrm_shaped() {
        use x509_cert::der::{Decode, DecodePem, Encode};
        use x509_cert::ext::pkix::name::GeneralName;
        use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectAltName};

        let key = test_rsa_key();
        let generated = generate_x509("u-1001", key.clone()).expect("generated");
        assert_pem_shape(&generated.public_key, "CERTIFICATE");
        assert_eq!(generated.algorithm.to_string(), "RSA_2048");
        let certificate = x509_cert::Certificate::from_pem(&generated.public_key).expect("X.509");
        let der = certificate.to_der().expect("DER");
        assert_eq!(generated.fingerprint, x509_fingerprint(&der));
        assert_eq!(generated.fingerprint.len(), 59);

        let tbs = &certificate.tbs_certificate;
        assert_eq!(tbs.subject.to_string(), "CN=u-1001");
        assert_eq!(tbs.issuer, tbs.subject);
        assert_eq!(certificate.signature_algorithm.oid.to_string(), "1.2.840.113549.1.1.11", "sha256WithRSAEncryption");
        let not_before = tbs.validity.not_before.to_unix_duration();
        let not_after = tbs.validity.not_after.to_unix_duration();
        assert_eq!((not_after - not_before).as_secs(), 3650 * 86_400);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
        assert!(not_before <= now && now.as_secs() - not_before.as_secs() < 300);

        let extensions = tbs.extensions.as_ref().expect("extensions");
        let extension = |oid: &str| {
            extensions.iter().find(|e| e.extn_id.to_string() == oid).unwrap_or_else(|| panic!("extension {oid}"))
        };
        let eku = ExtendedKeyUsage::from_der(extension("2.5.29.37").extn_value.as_bytes()).expect("EKU");
        let eku: Vec<String> = eku.0.iter().map(ToString::to_string).collect();
        assert_eq!(eku, ["1.3.6.1.5.5.7.3.2"], "clientAuth only");

        let san = SubjectAltName::from_der(extension("2.5.29.17").extn_value.as_bytes()).expect("SAN");
        assert_eq!(san.0.len(), 1);
        let GeneralName::OtherName(other) = &san.0[0] else {
            panic!("expected otherName, got {:?}", san.0[0]);
        };
        assert_eq!(other.type_id.to_string(), "1.3.6.1.4.1.311.20.2.3");
        let upn = other.value.decode_as::<x509_cert::der::asn1::Utf8StringRef<'_>>().expect("UTF8String");
        assert_eq!(upn.as_str(), "u-1001@localhost");

        // The certificate is the public half of the key given.
        let public = parse_public_key(KeyType::X509, &generated.public_key).expect("import");
        let private_pem = key.to_pkcs1_pem(LineEnding::LF).expect("PEM");
        assert!(parse_private_key(&private_pem, crate::keypair::MIN_RSA_BITS_FLOOR).expect("key").matches(&public));
    }

    #[test]
    fn x509_private_key_is_a_pkcs12_bundle_of_key_and_certificate_with_empty_password() {
        use rsa::pkcs8::DecodePrivateKey;
        use x509_cert::der::{DecodePem, Encode};

        let key = test_rsa_key();
        let generated = generate_x509("u-1001", key.clone()).expect("generated");
        assert!(!generated.private_key.contains(['\n', '-', ' ']));
        let bundle = STANDARD.decode(generated.private_key.as_bytes()).expect("base64");

        let store = p12_keystore::KeyStore::from_pkcs12(&bundle, "", p12_keystore::Pkcs12ImportPolicy::Strict)
            .expect("PKCS#12 with empty password");
        let (_, chain) = store.private_key_chain().expect("key chain");
        let decoded = rsa::RsaPrivateKey::from_pkcs8_der(chain.key().as_der()).expect("PKCS#8");
        assert_eq!(decoded, key);
        let certificate_der =
            x509_cert::Certificate::from_pem(&generated.public_key).expect("X.509").to_der().expect("DER");
        assert_eq!(chain.certs().len(), 1);
        assert_eq!(chain.certs()[0].as_der(), certificate_der.as_slice());
    }

    #[test]
    fn x509_for_a_user_id_outside_the_bmp_still_builds_a_bundle() {
        let generated = generate_x509("u-\u{1F511}", test_rsa_key()).expect("generated");
        let bundle = STANDARD.decode(generated.private_key.as_bytes()).expect("base64");
        let store = p12_keystore::KeyStore::from_pkcs12(&bundle, "", p12_keystore::Pkcs12ImportPolicy::Strict)
            .expect("PKCS#12");
        assert_eq!(store.private_key_chain().map(|(alias, _)| alias), Some("kps"));
        let public = parse_public_key(KeyType::X509, &generated.public_key).expect("import");
        assert_eq!(public.fingerprint, generated.fingerprint);
    }

    #[test]
    fn every_non_rsa_algorithm_generates_without_an_rsa_key() {
        for algorithm in Algorithm::ALL.into_iter().filter(|a| !a.is_rsa()) {
            let generated = generate_ssh(algorithm).expect("generated");
            assert_eq!(generated.algorithm, KeyAlgorithm::from(algorithm));
        }
    }
}
