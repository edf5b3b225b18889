//! Key pair domain: parsing imported public keys and certificates, parsing and matching escrowed private
//! keys, and generating new key pairs — the rules of nova-keypairs.md §6.1 and §8. Everything here is pure
//! (no I/O, no storage, no HTTP); the API layer (`api/error.rs`) maps [`KeypairError`] to the KPS.12xx/13xx
//! catalogue entries.

pub mod fingerprint;
pub mod generate;
mod material;
pub mod parse;
pub mod pool;
mod private_key;
mod ssh_wire;

use crate::model::{Algorithm, KeyAlgorithm, KeyType};

/// The longest RSA key accepted, imported or stored (KPS.1204). `rsa::RsaPublicKey::new` stops at 4096
/// bits, but 8192-bit SSH keys exist in the wild and Nova accepts them.
pub const RSA_MAX_BITS: usize = 16384;
/// `keys.min_rsa_bits` by default: imported RSA keys shorter than this are refused (KPS.1204).
pub const DEFAULT_MIN_RSA_BITS: usize = 2048;
/// The lowest `keys.min_rsa_bits` the configuration accepts.
pub const MIN_RSA_BITS_FLOOR: usize = 1024;

/// KPS.1204: an RSA key must have `min_rsa_bits` to [`RSA_MAX_BITS`] bits; other algorithms always pass.
pub fn check_rsa_size(algorithm: KeyAlgorithm, min_rsa_bits: usize) -> Result<(), KeypairError> {
    match algorithm {
        KeyAlgorithm::Rsa { bits } if !(min_rsa_bits..=RSA_MAX_BITS).contains(&bits) => {
            Err(KeypairError::RsaKeySize { bits, min: min_rsa_bits })
        }
        _ => Ok(()),
    }
}

/// Why key material was refused or could not be produced. The `Display` texts of the public-key variants
/// are the catalogue messages verbatim (errors.md §3.3); the private-key variants need the key pair name,
/// so the API layer renders them with the name (`api/error.rs`).
#[derive(Debug, thiserror::Error)]
pub enum KeypairError {
    /// KPS.1201: not one well-formed OpenSSH public key line of an accepted algorithm, or `ssh-dss`.
    #[error("Keypair data is invalid: failed to generate fingerprint")]
    InvalidPublicKey,
    /// KPS.1202: not a PEM X.509 certificate. The detail never contains key material.
    #[error("Keypair data is invalid: failed to generate X509 fingerprint. Error message: {0}")]
    InvalidCertificate(String),
    /// KPS.1203: a well-formed key of an algorithm we do not accept (`sk-*`, certificates, …).
    #[error("Keypair data is invalid: unsupported public key type {0}")]
    UnsupportedKeyType(String),
    /// KPS.1204: an RSA key (public, private or certificate key) shorter than `keys.min_rsa_bits` or longer
    /// than [`RSA_MAX_BITS`].
    #[error("Keypair data is invalid: RSA key of {bits} bits is outside the accepted range {min}-{RSA_MAX_BITS}")]
    RsaKeySize { bits: usize, min: usize },
    /// KPS.1301: the private key is in no accepted encoding (or is a DSA key).
    #[error("Private key could not be parsed")]
    PrivateKeyUnparsable,
    /// KPS.1302: the private key is not the counterpart of the public key.
    #[error("Private key does not match the public key")]
    PrivateKeyMismatch,
    /// KPS.1304: the private key is passphrase-protected.
    #[error("Encrypted private keys are not supported; import the key without a passphrase")]
    PrivateKeyEncrypted,
    /// Key generation or encoding failed inside the service (500, KPS.9001). Detail is for logs only.
    #[error("key generation failed: {0}")]
    Generation(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_sizes_outside_min_to_16384_bits_are_refused_other_algorithms_pass() {
        for (bits, min, accepted) in
            [(2048, 2048, true), (2047, 2048, false), (1024, 2048, false), (2048, 3072, false), (16384, 2048, true)]
        {
            let result = check_rsa_size(KeyAlgorithm::Rsa { bits }, min);
            assert_eq!(result.is_ok(), accepted, "{bits} bits with min {min}: {result:?}");
        }
        let error = check_rsa_size(KeyAlgorithm::Rsa { bits: 16392 }, 2048).expect_err("too long");
        assert_eq!(
            error.to_string(),
            "Keypair data is invalid: RSA key of 16392 bits is outside the accepted range 2048-16384"
        );
        check_rsa_size(KeyAlgorithm::Ed25519, 16384).expect("not RSA");
    }
}
