//! Parsing of private keys offered for custody and matching them to their public key
//! (nova-keypairs.md §8): unencrypted PEM PKCS#1, PKCS#8, SEC1 and OpenSSH keys for RSA, ECDSA
//! P-256/384/521 and Ed25519. The public half is always *derived from the private key* (never read from
//! a public key embedded in the file), so a file whose halves disagree cannot pass the match. The escrowed
//! text itself is sealed by the caller byte-for-byte; nothing secret is kept in [`PrivateKey`].

use super::material::{EcCurve, OID_SECP256R1, OID_SECP384R1, OID_SECP521R1, PublicKeyMaterial};
use super::parse::PublicKey;
use super::ssh_wire::WireReader;
use super::{KeyAlgorithm, KeypairError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::SecretDocument;
use rsa::traits::PublicKeyParts;
use ssh_key::private::{EcdsaKeypair, KeypairData};
use std::fmt;
use x509_cert::der::asn1::{BitStringRef, ObjectIdentifier, OctetStringRef};
use x509_cert::der::{Decode, Reader, SliceReader, TagMode, TagNumber};
use zeroize::Zeroizing;

/// A parsed private key, reduced to its derived public half. Holds no secret bytes; `Debug` is redacted
/// anyway so that nobody starts logging it should that change.
#[derive(Clone)]
pub struct PrivateKey {
    derived_public: PublicKeyMaterial,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl PrivateKey {
    /// True iff this is the private half of `public` (same algorithm and key material; comments and the
    /// encoding are irrelevant). For x509 key pairs `public` is the certificate's key.
    pub fn matches(&self, public: &PublicKey) -> bool {
        self.derived_public == public.material
    }

    /// [`PrivateKey::matches`] as a check: [`KeypairError::PrivateKeyMismatch`] (KPS.1302) if not.
    pub fn check_matches(&self, public: &PublicKey) -> Result<(), KeypairError> {
        if self.matches(public) { Ok(()) } else { Err(KeypairError::PrivateKeyMismatch) }
    }

    /// Algorithm of the key (V3 naming).
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.derived_public.algorithm()
    }
}

/// Parses an escrow candidate. Surrounding whitespace is ignored.
///
/// Errors: passphrase protection (`ENCRYPTED PRIVATE KEY`, `Proc-Type: 4,ENCRYPTED`, OpenSSH cipher other
/// than `none`) → [`KeypairError::PrivateKeyEncrypted`]; anything else that is not an accepted key,
/// including DSA keys, → [`KeypairError::PrivateKeyUnparsable`].
/// RSA keys outside `min_rsa_bits`–[`super::RSA_MAX_BITS`] bits → [`KeypairError::RsaKeySize`].
pub fn parse_private_key(text: &str, min_rsa_bits: usize) -> Result<PrivateKey, KeypairError> {
    let pem = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let label = pem_label(pem).ok_or(KeypairError::PrivateKeyUnparsable)?;
    let derived_public = match label {
        "ENCRYPTED PRIVATE KEY" => return Err(KeypairError::PrivateKeyEncrypted),
        "OPENSSH PRIVATE KEY" => openssh_public(pem)?,
        "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "PRIVATE KEY" => {
            if has_encryption_header(pem) {
                return Err(KeypairError::PrivateKeyEncrypted);
            }
            // SecretDocument zeroizes the decoded DER when dropped.
            let (_, document) = SecretDocument::from_pem(pem).map_err(|_| KeypairError::PrivateKeyUnparsable)?;
            let der = document.as_bytes();
            match label {
                "RSA PRIVATE KEY" => pkcs1_public(der),
                "EC PRIVATE KEY" => sec1_public(der),
                _ => pkcs8_public(der),
            }
            .ok_or(KeypairError::PrivateKeyUnparsable)?
        }
        _ => return Err(KeypairError::PrivateKeyUnparsable),
    };
    super::check_rsa_size(derived_public.algorithm(), min_rsa_bits)?;
    Ok(PrivateKey { derived_public })
}

/// The label of a text that starts with `-----BEGIN <label>-----`.
fn pem_label(pem: &str) -> Option<&str> {
    let first_line = pem.lines().next()?.trim_end();
    first_line.strip_prefix("-----BEGIN ")?.strip_suffix("-----")
}

/// RFC 1421 encapsulated header of OpenSSL's "traditional" encrypted keys.
fn has_encryption_header(pem: &str) -> bool {
    pem.lines()
        .skip(1)
        .take_while(|line| !line.trim().is_empty() && line.contains(':'))
        .any(|line| line.starts_with("Proc-Type:") && line.contains("ENCRYPTED"))
}

/// The public half of an RSA private key given by its components (big-endian), after the consistency
/// checks of `rsa::RsaPrivateKey::validate`: `n = p·q` and `d·e ≡ 1 (mod p−1)` and `(mod q−1)`, so the file
/// is the private key of `(n, e)`. Not `RsaPrivateKey::from_components`: its CRT precomputation (a modular
/// inverse) was three quarters of the cost of an RSA escrow import, for values custody never uses (the text
/// is escrowed as given). Intermediate values are zeroized.
fn rsa_public_checked(n: &[u8], e: &[u8], d: &[u8], p: &[u8], q: &[u8]) -> Option<PublicKeyMaterial> {
    use rsa::BigUint;
    let secret = |bytes: &[u8]| Zeroizing::new(BigUint::from_bytes_be(bytes));
    let (d, p, q) = (secret(d), secret(p), secret(q));
    let (modulus, exponent) = (BigUint::from_bytes_be(n), BigUint::from_bytes_be(e));
    // No key longer than that is ever accepted: do not multiply and divide numbers of any size to find out.
    // Its public half is returned unchecked for its size alone, which `parse_private_key` refuses (KPS.1204)
    // before anything else can see it.
    if modulus.bits() > super::RSA_MAX_BITS {
        return PublicKeyMaterial::rsa(n, e);
    }
    let one = BigUint::from(1u8);
    if *p <= one || *q <= one || *Zeroizing::new(&*p * &*q) != modulus {
        return None;
    }
    let de = Zeroizing::new(&*d * &exponent);
    for prime in [&*p, &*q] {
        let order = Zeroizing::new(prime - &one);
        if *Zeroizing::new(&*de % &*order) != one {
            return None;
        }
    }
    // Re-validates n, e through the same constructor imported public keys use.
    PublicKeyMaterial::rsa(n, e)
}

/// A two-prime PKCS#1 `RSAPrivateKey` (multi-prime keys take the full `rsa` crate path).
fn pkcs1_public(der: &[u8]) -> Option<PublicKeyMaterial> {
    let key = rsa::pkcs1::RsaPrivateKey::try_from(der).ok()?;
    if key.other_prime_infos.is_some() {
        let full = rsa::RsaPrivateKey::from_pkcs1_der(der).ok()?;
        return PublicKeyMaterial::rsa(&full.n().to_bytes_be(), &full.e().to_bytes_be());
    }
    rsa_public_checked(
        key.modulus.as_bytes(),
        key.public_exponent.as_bytes(),
        key.private_exponent.as_bytes(),
        key.prime1.as_bytes(),
        key.prime2.as_bytes(),
    )
}

fn pkcs8_public(der: &[u8]) -> Option<PublicKeyMaterial> {
    if let Ok(info) = rsa::pkcs8::PrivateKeyInfo::try_from(der)
        && info.algorithm.oid == rsa::pkcs1::ALGORITHM_OID
    {
        return pkcs1_public(info.private_key);
    }
    // The elliptic-curve decoders check the curve OID in the AlgorithmIdentifier.
    if let Ok(key) = p256::SecretKey::from_pkcs8_der(der) {
        return p256_public(&key);
    }
    if let Ok(key) = p384::SecretKey::from_pkcs8_der(der) {
        return p384_public(&key);
    }
    if let Ok(key) = p521::SecretKey::from_pkcs8_der(der) {
        return p521_public(&key);
    }
    if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_der(der) {
        return Some(PublicKeyMaterial::Ed25519(key.verifying_key().to_bytes()));
    }
    None
}

fn p256_public(key: &p256::SecretKey) -> Option<PublicKeyMaterial> {
    PublicKeyMaterial::ec(EcCurve::P256, key.public_key().to_encoded_point(false).as_bytes())
}

fn p384_public(key: &p384::SecretKey) -> Option<PublicKeyMaterial> {
    PublicKeyMaterial::ec(EcCurve::P384, key.public_key().to_encoded_point(false).as_bytes())
}

fn p521_public(key: &p521::SecretKey) -> Option<PublicKeyMaterial> {
    PublicKeyMaterial::ec(EcCurve::P521, key.public_key().to_encoded_point(false).as_bytes())
}

/// SEC1 `ECPrivateKey`. The elliptic-curve decoders ignore the `parameters` field, so the named curve is
/// read here: with it present only that curve is tried; without it the scalar length decides.
fn sec1_public(der: &[u8]) -> Option<PublicKeyMaterial> {
    let curve = sec1_named_curve(der).ok()?;
    let try_p256 = || p256::SecretKey::from_sec1_der(der).ok().and_then(|k| p256_public(&k));
    let try_p384 = || p384::SecretKey::from_sec1_der(der).ok().and_then(|k| p384_public(&k));
    let try_p521 = || p521::SecretKey::from_sec1_der(der).ok().and_then(|k| p521_public(&k));
    match curve {
        Some(OID_SECP256R1) => try_p256(),
        Some(OID_SECP384R1) => try_p384(),
        Some(OID_SECP521R1) => try_p521(),
        Some(_) => None,
        None => try_p256().or_else(try_p384).or_else(try_p521),
    }
}

/// The `parameters [0] namedCurve` of an RFC 5915 `ECPrivateKey`, if present.
pub(crate) fn sec1_named_curve(der: &[u8]) -> x509_cert::der::Result<Option<ObjectIdentifier>> {
    let mut reader = SliceReader::new(der)?;
    let curve = reader.sequence(|seq| {
        let _version = u8::decode(seq)?;
        let _private_key = OctetStringRef::decode(seq)?;
        let curve = seq.context_specific::<ObjectIdentifier>(TagNumber::N0, TagMode::Explicit)?;
        let _public_key = seq.context_specific::<BitStringRef<'_>>(TagNumber::N1, TagMode::Explicit)?;
        Ok(curve)
    })?;
    reader.finish(curve)
}

const OPENSSH_MAGIC: &[u8] = b"openssh-key-v1\0";

fn openssh_public(pem: &str) -> Result<PublicKeyMaterial, KeypairError> {
    // The cipher is checked first by hand: ssh-key refuses some ciphers outright, and every encrypted
    // key must be reported as encrypted, not as unparsable.
    let binary = openssh_binary(pem).ok_or(KeypairError::PrivateKeyUnparsable)?;
    if openssh_cipher_is_set(&binary).ok_or(KeypairError::PrivateKeyUnparsable)? {
        return Err(KeypairError::PrivateKeyEncrypted);
    }
    // Parsed from the decoded bytes, not the PEM text: ssh-key insists on OpenSSH's own 70-column lines,
    // while keys written by other tools (Python cryptography, Go) wrap at 64 and OpenSSH reads them all.
    let key = ssh_key::PrivateKey::from_bytes(&binary).map_err(|_| KeypairError::PrivateKeyUnparsable)?;
    if key.is_encrypted() {
        return Err(KeypairError::PrivateKeyEncrypted);
    }
    let derived = match key.key_data() {
        KeypairData::Rsa(keypair) => openssh_rsa_public(keypair),
        KeypairData::Ecdsa(keypair) => openssh_ecdsa_public(keypair),
        // ssh-key (with its `ed25519` feature, on in Cargo.toml) derives the public key from the private seed
        // while decoding and refuses a file whose embedded public half differs, so `public` *is* the derived
        // key; deriving it again would double the cost of an Ed25519 escrow (a scalar multiplication).
        KeypairData::Ed25519(keypair) => Some(PublicKeyMaterial::Ed25519(keypair.public.0)),
        // DSA, security keys and anything newer are not accepted for custody.
        _ => None,
    };
    derived.ok_or(KeypairError::PrivateKeyUnparsable)
}

/// The OpenSSH RSA components through the same checks as PKCS#1 (not `rsa::RsaPrivateKey::try_from(&RsaKeypair)`:
/// ssh-key 0.6.7 passes `p` twice instead of `p, q` there, so every real key fails validation).
fn openssh_rsa_public(keypair: &ssh_key::private::RsaKeypair) -> Option<PublicKeyMaterial> {
    rsa_public_checked(
        keypair.public.n.as_positive_bytes()?,
        keypair.public.e.as_positive_bytes()?,
        keypair.private.d.as_positive_bytes()?,
        keypair.private.p.as_positive_bytes()?,
        keypair.private.q.as_positive_bytes()?,
    )
}

fn openssh_ecdsa_public(keypair: &EcdsaKeypair) -> Option<PublicKeyMaterial> {
    let scalar = keypair.private_key_bytes();
    match keypair {
        EcdsaKeypair::NistP256 { .. } => p256_public(&p256::SecretKey::from_slice(scalar).ok()?),
        EcdsaKeypair::NistP384 { .. } => p384_public(&p384::SecretKey::from_slice(scalar).ok()?),
        EcdsaKeypair::NistP521 { .. } => p521_public(&p521::SecretKey::from_slice(scalar).ok()?),
    }
}

/// Whether an OpenSSH private key names a cipher other than `none`; `None` if it is not an OpenSSH key.
/// The binary `openssh-key-v1` structure inside the PEM armour, whatever the line width.
fn openssh_binary(pem: &str) -> Option<Zeroizing<Vec<u8>>> {
    let mut lines = pem.lines().map(str::trim_end);
    lines.next()?;
    let body: Zeroizing<String> = Zeroizing::new(
        lines
            .take_while(|line| !line.starts_with("-----END "))
            .flat_map(str::chars)
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    Some(Zeroizing::new(STANDARD.decode(body.as_bytes()).ok()?))
}

fn openssh_cipher_is_set(binary: &[u8]) -> Option<bool> {
    let rest = binary.strip_prefix(OPENSSH_MAGIC)?;
    let cipher = WireReader::new(rest).string()?;
    Some(cipher != b"none")
}

#[cfg(test)]
mod tests {
    use super::super::KeyType;

    /// The same OpenSSH key with its base64 body wrapped at `width` columns.
    fn rewrapped(pem: &str, width: usize) -> String {
        let lines: Vec<&str> = pem.lines().collect();
        let body: String = lines[1..lines.len() - 1].concat();
        let wrapped: Vec<String> =
            body.as_bytes().chunks(width).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        format!("{}\n{}\n{}\n", lines[0], wrapped.join("\n"), lines[lines.len() - 1])
    }

    #[test]
    fn openssh_keys_parse_whatever_their_line_width() {
        let public = parse_public_key(KeyType::Ssh, include_str!("testdata/ed25519.pub").trim_end()).expect("public");
        for width in [64, 70, 76, 1000] {
            let pem = rewrapped(include_str!("testdata/ed25519_openssh.key"), width);
            let key = parse_private_key(&pem, crate::keypair::MIN_RSA_BITS_FLOOR)
                .unwrap_or_else(|e| panic!("width {width}: {e}"));
            assert!(key.matches(&public), "width {width}");
        }
    }
    use super::super::parse::parse_public_key;
    use super::*;

    const RSA_PUB: &str = include_str!("testdata/rsa2048.pub");
    const P256_PUB: &str = include_str!("testdata/p256.pub");
    const P384_PUB: &str = include_str!("testdata/p384.pub");
    const P521_PUB: &str = include_str!("testdata/p521.pub");
    const ED25519_PUB: &str = include_str!("testdata/ed25519.pub");
    const SPEC_ED25519_PUB: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 ops";

    const RSA_PKCS1: &str = include_str!("testdata/rsa2048_pkcs1.pem");
    const RSA_PKCS8: &str = include_str!("testdata/rsa2048_pkcs8.pem");
    const RSA_OPENSSH: &str = include_str!("testdata/rsa2048_openssh.key");
    const P256_SEC1: &str = include_str!("testdata/p256_sec1.pem");
    const P256_PKCS8: &str = include_str!("testdata/p256_pkcs8.pem");
    const P256_OPENSSH: &str = include_str!("testdata/p256_openssh.key");
    const P384_SEC1: &str = include_str!("testdata/p384_sec1.pem");
    const P384_PKCS8: &str = include_str!("testdata/p384_pkcs8.pem");
    const P384_OPENSSH: &str = include_str!("testdata/p384_openssh.key");
    const P521_SEC1: &str = include_str!("testdata/p521_sec1.pem");
    const P521_PKCS8: &str = include_str!("testdata/p521_pkcs8.pem");
    const P521_OPENSSH: &str = include_str!("testdata/p521_openssh.key");
    const ED25519_OPENSSH: &str = include_str!("testdata/ed25519_openssh.key");
    const ED25519_SEED_PKCS8: &str = include_str!("testdata/ed25519_seed_pkcs8.pem");

    fn ssh_public(text: &str) -> PublicKey {
        parse_public_key(KeyType::Ssh, text).expect("valid public key")
    }

    /// Every (private key file, its public key) pair of the fixtures.
    fn matching_pairs() -> Vec<(&'static str, &'static str, &'static str)> {
        vec![
            ("RSA PKCS#1", RSA_PKCS1, RSA_PUB),
            ("RSA PKCS#8", RSA_PKCS8, RSA_PUB),
            ("RSA OpenSSH", RSA_OPENSSH, RSA_PUB),
            ("P-256 SEC1", P256_SEC1, P256_PUB),
            ("P-256 PKCS#8", P256_PKCS8, P256_PUB),
            ("P-256 OpenSSH", P256_OPENSSH, P256_PUB),
            ("P-384 SEC1", P384_SEC1, P384_PUB),
            ("P-384 PKCS#8", P384_PKCS8, P384_PUB),
            ("P-384 OpenSSH", P384_OPENSSH, P384_PUB),
            ("P-521 SEC1", P521_SEC1, P521_PUB),
            ("P-521 PKCS#8", P521_PKCS8, P521_PUB),
            ("P-521 OpenSSH", P521_OPENSSH, P521_PUB),
            ("Ed25519 OpenSSH", ED25519_OPENSSH, ED25519_PUB),
            ("Ed25519 PKCS#8", ED25519_SEED_PKCS8, SPEC_ED25519_PUB),
        ]
    }

    #[test]
    fn every_accepted_encoding_parses_and_matches_its_public_key() {
        for (name, private_pem, public_line) in matching_pairs() {
            let private = parse_private_key(private_pem, crate::keypair::MIN_RSA_BITS_FLOOR)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let public = ssh_public(public_line);
            assert!(private.matches(&public), "{name}");
            assert!(private.check_matches(&public).is_ok(), "{name}");
            assert_eq!(private.algorithm(), public.algorithm, "{name}");
        }
    }

    /// The RSA consistency checks that replace `RsaPrivateKey::from_components`: each component that does
    /// not belong to the key makes the file unusable for custody.
    #[test]
    fn rsa_components_must_be_one_consistent_key() {
        use rsa::BigUint;
        use rsa::traits::PrivateKeyParts;
        let key = rsa::RsaPrivateKey::from_pkcs1_pem(RSA_PKCS1).expect("fixture");
        let bytes = |v: &BigUint| v.to_bytes_be();
        let (n, e, d) = (bytes(key.n()), bytes(key.e()), bytes(key.d()));
        let (p, q) = (bytes(&key.primes()[0]), bytes(&key.primes()[1]));
        let good = rsa_public_checked(&n, &e, &d, &p, &q).expect("the fixture is consistent");
        assert_eq!(good, ssh_public(RSA_PUB).material);
        let plus_two = |v: &BigUint| bytes(&(v + BigUint::from(2u8)));
        assert!(rsa_public_checked(&n, &e, &plus_two(key.d()), &p, &q).is_none(), "wrong d");
        assert!(rsa_public_checked(&n, &e, &d, &plus_two(&key.primes()[0]), &q).is_none(), "wrong p");
        assert!(rsa_public_checked(&n, &[3], &d, &p, &q).is_none(), "wrong e");
        assert!(rsa_public_checked(&n, &e, &d, &[1], &n).is_none(), "trivial factorisation");
        assert!(rsa_public_checked(&n, &e, &d, &q, &p).is_some(), "the order of the primes does not matter");
    }

    /// An OpenSSH Ed25519 file whose embedded public halves were swapped for another key's public key
    /// (the attack a "read the public key from the file" shortcut would fall for) does not parse, so it can
    /// match neither key.
    #[test]
    fn an_openssh_ed25519_file_with_a_foreign_public_half_is_refused() {
        let own = ssh_public(ED25519_PUB);
        let foreign = ssh_public(SPEC_ED25519_PUB);
        let (PublicKeyMaterial::Ed25519(own_bytes), PublicKeyMaterial::Ed25519(foreign_bytes)) =
            (&own.material, &foreign.material)
        else {
            panic!("both fixtures are Ed25519 keys");
        };
        let fixture = include_str!("testdata/ed25519_openssh.key");
        let binary = openssh_binary(fixture).expect("binary");
        let mut swapped = binary.to_vec();
        let mut replaced = 0;
        for at in 0..=swapped.len() - 32 {
            if swapped[at..at + 32] == own_bytes[..] {
                swapped[at..at + 32].copy_from_slice(foreign_bytes);
                replaced += 1;
            }
        }
        assert_eq!(replaced, 3, "the public key appears in the public section and twice in the private one");
        // The fixture's own armour lines around the altered body.
        let armour: Vec<&str> = fixture.lines().collect();
        let pem = format!("{}\n{}\n{}\n", armour[0], STANDARD.encode(&swapped), armour[armour.len() - 1]);
        assert!(matches!(
            parse_private_key(&pem, crate::keypair::MIN_RSA_BITS_FLOOR),
            Err(KeypairError::PrivateKeyUnparsable)
        ));
    }

    #[test]
    fn a_private_key_does_not_match_any_other_public_key() {
        let publics = [RSA_PUB, P256_PUB, P384_PUB, P521_PUB, ED25519_PUB, SPEC_ED25519_PUB];
        for (name, private_pem, own_public) in matching_pairs() {
            let private = parse_private_key(private_pem, crate::keypair::MIN_RSA_BITS_FLOOR).expect("valid");
            for other in publics.iter().filter(|p| **p != own_public) {
                let public = ssh_public(other);
                assert!(!private.matches(&public), "{name} vs {other}");
                assert!(matches!(private.check_matches(&public), Err(KeypairError::PrivateKeyMismatch)));
            }
        }
    }

    #[test]
    fn private_key_matches_the_certificate_made_from_it() {
        let table = [
            (RSA_PKCS1, include_str!("testdata/cert_rsa2048.pem")),
            (P256_SEC1, include_str!("testdata/cert_p256.pem")),
            (P521_OPENSSH, include_str!("testdata/cert_p521.pem")),
            (ED25519_SEED_PKCS8, include_str!("testdata/cert_ed25519.pem")),
        ];
        for (private_pem, certificate) in table {
            let public = parse_public_key(KeyType::X509, certificate).expect("certificate");
            let private = parse_private_key(private_pem, crate::keypair::MIN_RSA_BITS_FLOOR).expect("private key");
            assert!(private.matches(&public));
        }
        let other = parse_private_key(P384_SEC1, crate::keypair::MIN_RSA_BITS_FLOOR).expect("private key");
        let certificate = parse_public_key(KeyType::X509, include_str!("testdata/cert_p256.pem")).expect("cert");
        assert!(!other.matches(&certificate));
    }

    #[test]
    fn surrounding_whitespace_and_crlf_line_endings_are_accepted() {
        let crlf = format!("\n  {}\r\n", RSA_PKCS1.replace('\n', "\r\n"));
        let private = parse_private_key(&crlf, crate::keypair::MIN_RSA_BITS_FLOOR).expect("CRLF PKCS#1");
        assert!(private.matches(&ssh_public(RSA_PUB)));
        let crlf = P256_OPENSSH.replace('\n', "\r\n");
        let private = parse_private_key(&crlf, crate::keypair::MIN_RSA_BITS_FLOOR).expect("CRLF OpenSSH");
        assert!(private.matches(&ssh_public(P256_PUB)));
    }

    #[test]
    fn passphrase_protected_keys_are_encrypted() {
        let table = [
            ("PKCS#8 ENCRYPTED PRIVATE KEY", include_str!("testdata/rsa2048_pkcs8_enc.pem")),
            ("Proc-Type: 4,ENCRYPTED", include_str!("testdata/rsa2048_proctype_enc.pem")),
            ("OpenSSH with passphrase", include_str!("testdata/ed25519_openssh_enc.key")),
        ];
        for (name, pem) in table {
            match parse_private_key(pem, crate::keypair::MIN_RSA_BITS_FLOOR) {
                Err(KeypairError::PrivateKeyEncrypted) => {}
                other => panic!("{name}: expected PrivateKeyEncrypted, got {other:?}"),
            }
        }
    }

    #[test]
    fn dsa_and_garbage_are_unparsable() {
        let truncated_pkcs1: String = {
            let lines: Vec<&str> = RSA_PKCS1.lines().collect();
            let mut kept: Vec<&str> = lines[..lines.len() / 2].to_vec();
            kept.push(lines[lines.len() - 1]);
            kept.join("\n")
        };
        let table = [
            ("DSA PEM", include_str!("testdata/dsa_pem.pem").to_string()),
            ("DSA OpenSSH", include_str!("testdata/dsa_openssh.key").to_string()),
            ("empty", String::new()),
            ("garbage", "not a key".into()),
            ("public key", RSA_PUB.into()),
            ("certificate", include_str!("testdata/cert_rsa2048.pem").into()),
            ("truncated PKCS#1", truncated_pkcs1),
            ("wrong label", RSA_PKCS1.replace("RSA PRIVATE KEY", "EC PRIVATE KEY")),
            ("PKCS#8 labelled PKCS#1", RSA_PKCS8.replace("PRIVATE KEY", "RSA PRIVATE KEY")),
            ("no END line", RSA_PKCS1.replace("-----END RSA PRIVATE KEY-----", "")),
            (
                "OpenSSH bad body",
                format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n", label = "OPENSSH PRIVATE KEY"),
            ),
        ];
        for (name, pem) in table {
            match parse_private_key(&pem, crate::keypair::MIN_RSA_BITS_FLOOR) {
                Err(KeypairError::PrivateKeyUnparsable) => {}
                other => panic!("{name}: expected PrivateKeyUnparsable, got {other:?}"),
            }
        }
    }

    #[test]
    fn sec1_key_with_curve_parameters_of_another_curve_is_unparsable() {
        let (_, document) = SecretDocument::from_pem(P256_SEC1).expect("pem");
        let der = document.as_bytes().to_vec();
        let p256_oid = OID_SECP256R1.as_bytes();
        let at = der.windows(p256_oid.len()).position(|w| w == p256_oid).expect("curve OID in SEC1");
        // 1.2.840.10045.3.1.7 → 1.2.840.10045.3.1.1 (prime192v1), same length.
        let mut tampered = der;
        tampered[at + p256_oid.len() - 1] = 1;
        assert!(sec1_public(&tampered).is_none());
    }

    #[test]
    fn debug_output_is_redacted() {
        let private = parse_private_key(RSA_PKCS1, crate::keypair::MIN_RSA_BITS_FLOOR).expect("valid");
        assert_eq!(format!("{private:?}"), "[REDACTED]");
        assert_eq!(format!("{private:#?}"), "[REDACTED]");
    }
}
