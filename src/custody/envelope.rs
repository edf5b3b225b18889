//! AES-256-GCM, the one cipher of custody: data keys encrypt private keys, key-encryption keys wrap data
//! keys. Nonces are 96 random bits, fresh per encryption (a DEK encrypts exactly one private key).

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use zeroize::Zeroizing;

use super::CustodyError;

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 12;

/// A 256-bit symmetric key (DEK or KEK), zeroized on drop and never printed.
pub struct SymmetricKey(Zeroizing<[u8; KEY_LEN]>);

impl SymmetricKey {
    pub fn random() -> Self {
        let key = Aes256Gcm::generate_key(OsRng);
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&key);
        Self(bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CustodyError> {
        let array: [u8; KEY_LEN] = bytes.try_into().map_err(|_| CustodyError::Malformed("key length".into()))?;
        Ok(Self(Zeroizing::new(array)))
    }

    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(*self.0))
    }

    /// Encrypts with a fresh nonce: returns (nonce, ciphertext with tag).
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>), CustodyError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext =
            self.cipher().encrypt(&nonce, Payload { msg: plaintext, aad }).map_err(|_| CustodyError::Integrity)?;
        Ok((nonce.into(), ciphertext))
    }

    /// Decrypts and authenticates; any mismatch (key, nonce, AAD, ciphertext) is `Integrity`.
    pub fn decrypt(&self, nonce: &[u8], ciphertext: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CustodyError> {
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CustodyError::Malformed("nonce length".into()))?;
        let plaintext = self
            .cipher()
            .decrypt(&Nonce::from(nonce), Payload { msg: ciphertext, aad })
            .map_err(|_| CustodyError::Integrity)?;
        Ok(Zeroizing::new(plaintext))
    }
}

impl std::fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SymmetricKey([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let key = SymmetricKey::random();
        let (nonce, ciphertext) = key.encrypt(b"secret", b"aad").expect("encrypt");
        assert_eq!(key.decrypt(&nonce, &ciphertext, b"aad").expect("decrypt").as_slice(), b"secret");
        assert!(matches!(key.decrypt(&nonce, &ciphertext, b"other"), Err(CustodyError::Integrity)));
        let mut flipped = ciphertext.clone();
        flipped[0] ^= 1;
        assert!(matches!(key.decrypt(&nonce, &flipped, b"aad"), Err(CustodyError::Integrity)));
        assert!(matches!(SymmetricKey::random().decrypt(&nonce, &ciphertext, b"aad"), Err(CustodyError::Integrity)));
    }
}
