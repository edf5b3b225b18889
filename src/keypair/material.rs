//! The public half of a key reduced to what decides identity (nova-keypairs.md §8 matching rule): RSA
//! `n,e`; EC curve and point; the 32 Ed25519 bytes. Imported public keys, certificates and the public
//! halves derived from private keys all land here, so matching is one equality test.

use super::KeyAlgorithm;
use super::ssh_wire::WireWriter;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rsa::BigUint;
use rsa::pkcs1::der::Decode;
use rsa::traits::PublicKeyParts;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::spki::SubjectPublicKeyInfoOwned;

/// Largest RSA modulus the parsers read: more than any request body can carry, so that a key longer than
/// [`super::RSA_MAX_BITS`] is reported with its size (KPS.1204, checked by the caller) rather than as
/// unparsable.
const RSA_PARSE_MAX_BITS: usize = 1 << 21;

const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
pub(crate) const OID_SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub(crate) const OID_SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub(crate) const OID_SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// The NIST curves OpenSSH supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EcCurve {
    P256,
    P384,
    P521,
}

impl EcCurve {
    /// The curve identifier inside an SSH blob (`nistp256`, …).
    pub(crate) fn ssh_curve_name(self) -> &'static str {
        match self {
            EcCurve::P256 => "nistp256",
            EcCurve::P384 => "nistp384",
            EcCurve::P521 => "nistp521",
        }
    }

    /// The SSH algorithm name (`ecdsa-sha2-nistp256`, …).
    pub(crate) fn ssh_algorithm(self) -> &'static str {
        match self {
            EcCurve::P256 => "ecdsa-sha2-nistp256",
            EcCurve::P384 => "ecdsa-sha2-nistp384",
            EcCurve::P521 => "ecdsa-sha2-nistp521",
        }
    }

    pub(crate) fn from_oid(oid: ObjectIdentifier) -> Option<Self> {
        match oid {
            OID_SECP256R1 => Some(EcCurve::P256),
            OID_SECP384R1 => Some(EcCurve::P384),
            OID_SECP521R1 => Some(EcCurve::P521),
            _ => None,
        }
    }
}

/// Public key material. Equality is the matching rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublicKeyMaterial {
    Rsa(rsa::RsaPublicKey),
    /// `point` is always the uncompressed SEC1 encoding of a point validated on `curve`.
    Ec {
        curve: EcCurve,
        point: Vec<u8>,
    },
    Ed25519([u8; 32]),
}

/// Why a SubjectPublicKeyInfo could not become [`PublicKeyMaterial`].
#[derive(Debug)]
pub(crate) enum SpkiError {
    /// A key algorithm we do not handle; carries a display name for KPS.1203.
    Unsupported(String),
    /// The algorithm is known but the key bytes are not a valid key.
    Malformed,
}

impl PublicKeyMaterial {
    /// RSA key from big-endian `n` and `e`; `None` unless the rsa crate accepts it (odd `n`, odd `e` with
    /// 3 ≤ e < n and e < 2^33). Any size is read: the accepted range is the caller's check (KPS.1204).
    pub(crate) fn rsa(n: &[u8], e: &[u8]) -> Option<Self> {
        let n = BigUint::from_bytes_be(n);
        let e = BigUint::from_bytes_be(e);
        rsa::RsaPublicKey::new_with_max_size(n, e, RSA_PARSE_MAX_BITS).ok().map(PublicKeyMaterial::Rsa)
    }

    /// EC key from a SEC1 point (compressed or not); `None` unless it is a valid point on `curve`.
    pub(crate) fn ec(curve: EcCurve, sec1_point: &[u8]) -> Option<Self> {
        let point = match curve {
            EcCurve::P256 => {
                p256::PublicKey::from_sec1_bytes(sec1_point).ok()?.to_encoded_point(false).as_bytes().to_vec()
            }
            EcCurve::P384 => {
                p384::PublicKey::from_sec1_bytes(sec1_point).ok()?.to_encoded_point(false).as_bytes().to_vec()
            }
            EcCurve::P521 => {
                p521::PublicKey::from_sec1_bytes(sec1_point).ok()?.to_encoded_point(false).as_bytes().to_vec()
            }
        };
        Some(PublicKeyMaterial::Ec { curve, point })
    }

    /// Ed25519 key; `None` unless exactly 32 bytes (the point itself is not checked, as OpenSSH does not).
    pub(crate) fn ed25519(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(PublicKeyMaterial::Ed25519)
    }

    /// Material of a certificate's SubjectPublicKeyInfo.
    pub(crate) fn from_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<Self, SpkiError> {
        let key_bytes = spki.subject_public_key.as_bytes().ok_or(SpkiError::Malformed)?;
        let oid = spki.algorithm.oid;
        if oid == OID_RSA_ENCRYPTION {
            // Parsed through PKCS#1 rather than `RsaPublicKey::try_from(spki)`, which caps at 4096 bits.
            let key = rsa::pkcs1::RsaPublicKey::from_der(key_bytes).map_err(|_| SpkiError::Malformed)?;
            return Self::rsa(key.modulus.as_bytes(), key.public_exponent.as_bytes()).ok_or(SpkiError::Malformed);
        }
        if oid == OID_EC_PUBLIC_KEY {
            let curve_oid = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .ok_or(SpkiError::Malformed)?;
            let curve =
                EcCurve::from_oid(curve_oid).ok_or_else(|| SpkiError::Unsupported(format!("EC {curve_oid}")))?;
            return Self::ec(curve, key_bytes).ok_or(SpkiError::Malformed);
        }
        if oid == OID_ED25519 {
            return Self::ed25519(key_bytes).ok_or(SpkiError::Malformed);
        }
        Err(SpkiError::Unsupported(spki_algorithm_name(oid)))
    }

    /// The V3 `algorithm` of this key.
    pub(crate) fn algorithm(&self) -> KeyAlgorithm {
        match self {
            PublicKeyMaterial::Rsa(key) => KeyAlgorithm::Rsa { bits: key.n().bits() },
            PublicKeyMaterial::Ec { curve: EcCurve::P256, .. } => KeyAlgorithm::EcP256,
            PublicKeyMaterial::Ec { curve: EcCurve::P384, .. } => KeyAlgorithm::EcP384,
            PublicKeyMaterial::Ec { curve: EcCurve::P521, .. } => KeyAlgorithm::EcP521,
            PublicKeyMaterial::Ed25519(_) => KeyAlgorithm::Ed25519,
        }
    }

    /// The SSH algorithm name of this key (first field of a public key line).
    pub(crate) fn ssh_algorithm(&self) -> &'static str {
        match self {
            PublicKeyMaterial::Rsa(_) => "ssh-rsa",
            PublicKeyMaterial::Ec { curve, .. } => curve.ssh_algorithm(),
            PublicKeyMaterial::Ed25519(_) => "ssh-ed25519",
        }
    }

    /// The SSH wire blob (RFC 4253 §6.6, RFC 5656 §3.1, RFC 8709 §4).
    pub(crate) fn ssh_blob(&self) -> Vec<u8> {
        let writer = WireWriter::default().string(self.ssh_algorithm().as_bytes());
        match self {
            PublicKeyMaterial::Rsa(key) => {
                writer.positive_mpint(&key.e().to_bytes_be()).positive_mpint(&key.n().to_bytes_be())
            }
            PublicKeyMaterial::Ec { curve, point } => writer.string(curve.ssh_curve_name().as_bytes()).string(point),
            PublicKeyMaterial::Ed25519(bytes) => writer.string(bytes),
        }
        .finish()
    }
}

/// A readable name for a certificate key algorithm we refuse (KPS.1203 detail).
fn spki_algorithm_name(oid: ObjectIdentifier) -> String {
    const NAMES: [(&str, &str); 5] = [
        ("1.2.840.10040.4.1", "DSA"),
        ("1.2.840.113549.1.1.10", "RSASSA-PSS"),
        ("1.3.101.113", "ED448"),
        ("1.3.101.110", "X25519"),
        ("1.3.101.111", "X448"),
    ];
    let dotted = oid.to_string();
    NAMES.iter().find(|(known, _)| *known == dotted).map_or(dotted.clone(), |(_, name)| (*name).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_points_are_normalised_to_uncompressed_form() {
        let secret = p256::SecretKey::from_slice(&[7u8; 32]).expect("scalar");
        let public = secret.public_key();
        let compressed = public.to_encoded_point(true);
        let from_compressed = PublicKeyMaterial::ec(EcCurve::P256, compressed.as_bytes()).expect("valid");
        let from_uncompressed =
            PublicKeyMaterial::ec(EcCurve::P256, public.to_encoded_point(false).as_bytes()).expect("valid");
        assert_eq!(from_compressed, from_uncompressed);
    }

    #[test]
    fn ec_point_of_another_curve_is_refused() {
        let public = p256::SecretKey::from_slice(&[7u8; 32]).expect("scalar").public_key();
        assert!(PublicKeyMaterial::ec(EcCurve::P384, public.to_encoded_point(false).as_bytes()).is_none());
    }

    #[test]
    fn rsa_with_even_exponent_or_modulus_is_refused() {
        assert!(PublicKeyMaterial::rsa(&[0xc5; 128], &[0x01, 0x00, 0x01]).is_some());
        assert!(PublicKeyMaterial::rsa(&[0xc5; 128], &[0x01, 0x00, 0x02]).is_none());
        assert!(PublicKeyMaterial::rsa(&[0xc4; 128], &[0x01, 0x00, 0x01]).is_none());
        assert!(PublicKeyMaterial::rsa(&[], &[0x01, 0x00, 0x01]).is_none());
    }

    #[test]
    fn ed25519_needs_exactly_32_bytes() {
        assert!(PublicKeyMaterial::ed25519(&[1; 32]).is_some());
        assert!(PublicKeyMaterial::ed25519(&[1; 31]).is_none());
        assert!(PublicKeyMaterial::ed25519(&[1; 33]).is_none());
    }
}
