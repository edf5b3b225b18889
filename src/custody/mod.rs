//! Private-key custody: sealing a private key for storage and opening it again.
//!
//! A sealed key is an envelope (`envelope`): the private key text encrypted with AES-256-GCM under a fresh
//! random data key (DEK) per record, the DEK itself wrapped by an `Encryptor` — `default` (`local`: a KEK
//! derived with HKDF-SHA256 from the master keyring) or, later, `kms`. Both layers are bound to the record's
//! identity by the AAD, so ciphertext moved to another record fails to open. Only `SealedKey` (ciphertext)
//! ever reaches the store; plaintext lives in `PrivateKeyText` (zeroized, redacted `Debug`).

pub mod envelope;
pub mod keyring;
pub mod kms;
pub mod local;
pub mod wrapped_keyring;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::kms::EncryptionContext;
use crate::model::{EncryptorKind, Keypair, PrivateKeyText, SealedKey};

pub use keyring::{KeyringError, MasterKeyring};
pub use kms::KmsEncryptor;
pub use local::{KeyringSlot, LocalEncryptor};
pub use wrapped_keyring::WrappedKeyring;

/// Format of the `SealedKey`s written now: 2 = the binary fields (`salt`, a `default` envelope's
/// `wrapped_dek`, `nonce`, `ciphertext`) in standard base64. Format 1 (the same fields in hex, twice the
/// size of the bytes) is still read; `kps rewrap` moves such records to format 2.
pub const SEALED_FORMAT_VERSION: u8 = 2;

/// A binary field of a sealed key as stored text (current format).
fn field_text(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A binary field of `sealed` back to bytes, by the format it was written in. A field that does not decode,
/// or a format this build does not know, is `Malformed` (never guessed at).
fn field_bytes(sealed: &SealedKey, field: &str, text: &str) -> Result<Vec<u8>, CustodyError> {
    let decoded = match sealed.format_version {
        1 => hex::decode(text).ok(),
        2 => STANDARD.decode(text).ok(),
        newer => return Err(CustodyError::Malformed(format!("unknown sealed key format {newer}"))),
    };
    decoded.ok_or_else(|| CustodyError::Malformed(field.into()))
}

/// The identity a sealed key is bound to: `kps/v1`, then project, user, name and the decimal record id, each
/// preceded by its length as a big-endian u32 (design.md "Records and keys").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aad {
    pub project_id: String,
    pub user_id: String,
    pub name: String,
    pub record_id: u64,
}

impl Aad {
    /// The identity of a stored key pair record.
    pub fn of_record(record: &Keypair) -> Self {
        Self {
            project_id: record.project_id.clone(),
            user_id: record.user_id.clone(),
            name: record.name.clone(),
            record_id: record.id,
        }
    }

    /// The same identity as the KMS EncryptionContext of spec/kms-huawei.md §7.
    pub fn encryption_context(&self) -> EncryptionContext {
        EncryptionContext::new([
            ("kps:project", self.project_id.clone()),
            ("kps:user", self.user_id.clone()),
            ("kps:name", self.name.clone()),
            ("kps:record", self.record_id.to_string()),
        ])
    }

    pub fn bytes(&self) -> Vec<u8> {
        let record = self.record_id.to_string();
        let mut out = Vec::with_capacity(64 + self.project_id.len() + self.user_id.len() + self.name.len());
        out.extend_from_slice(b"kps/v1");
        for field in [self.project_id.as_str(), self.user_id.as_str(), self.name.as_str(), record.as_str()] {
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    /// The ciphertext or wrapped key failed its integrity check (tampered, moved, or the wrong key).
    #[error("sealed private key failed its integrity check")]
    Integrity,
    #[error("master key {0} is not in the keyring")]
    UnknownMasterKey(String),
    #[error("sealed key format is invalid: {0}")]
    Malformed(String),
    #[error("encryption type {0:?} is not available")]
    Unavailable(EncryptorKind),
    /// The master keyring is wrapped by a KMS key and not unwrapped yet (auto-unseal): `default` custody
    /// waits for the KMS.
    #[error("{KEYRING_SEALED}")]
    KeyringSealed,
    #[error(transparent)]
    Kms(#[from] crate::kms::KmsError),
}

/// Why `default` custody is unavailable while the master keyring is sealed (the detail of its KPS.1801).
pub const KEYRING_SEALED: &str = "the master keyring is sealed, waiting for the KMS";

/// How a new escrow is sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealWith {
    /// The local envelope under the master keyring.
    Default,
    /// A data key from the KMS key named here.
    Kms(crate::kms::KeyRef),
}

/// Both encryptors: seals with the one asked for, opens with the one that sealed.
pub struct Custody {
    local: LocalEncryptor,
    kms: Option<KmsEncryptor>,
}

impl Custody {
    pub fn new(local: LocalEncryptor, kms: Option<KmsEncryptor>) -> Self {
        Self { local, kms }
    }

    pub fn has_kms(&self) -> bool {
        self.kms.is_some()
    }

    pub fn kms(&self) -> Option<&KmsEncryptor> {
        self.kms.as_ref()
    }

    pub fn local(&self) -> &LocalEncryptor {
        &self.local
    }

    pub async fn seal(
        &self,
        aad: &Aad,
        private_key: &PrivateKeyText,
        with: &SealWith,
    ) -> Result<SealedKey, CustodyError> {
        match with {
            SealWith::Default => self.local.seal(aad, private_key),
            SealWith::Kms(key) => {
                self.kms
                    .as_ref()
                    .ok_or(CustodyError::Unavailable(EncryptorKind::Kms))?
                    .seal(aad, private_key, key)
                    .await
            }
        }
    }

    pub async fn open(&self, aad: &Aad, sealed: &SealedKey) -> Result<PrivateKeyText, CustodyError> {
        match sealed.encryptor {
            EncryptorKind::Default => self.local.open(aad, sealed),
            EncryptorKind::Kms => {
                self.kms.as_ref().ok_or(CustodyError::Unavailable(EncryptorKind::Kms))?.open(aad, sealed).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_is_length_prefixed() {
        let aad = Aad { project_id: "p".into(), user_id: "uu".into(), name: "n".into(), record_id: 17 };
        assert_eq!(aad.bytes(), b"kps/v1\0\0\0\x01p\0\0\0\x02uu\0\0\0\x01n\0\0\0\x0217".to_vec());
        let shifted = Aad { project_id: "pu".into(), user_id: "u".into(), ..aad.clone() };
        assert_ne!(aad.bytes(), shifted.bytes(), "moving bytes between fields changes the AAD");
    }

    #[test]
    fn plaintext_debug_is_redacted() {
        let text = PrivateKeyText::new(zeroize::Zeroizing::new("SECRET".into()));
        assert!(!format!("{text:?}").contains("SECRET"));
    }

    #[test]
    fn the_encryption_context_is_the_record_identity() {
        let aad = Aad { project_id: "p-42".into(), user_id: "u-1001".into(), name: "db-admin".into(), record_id: 18 };
        let context: std::collections::HashMap<_, _> = aad.encryption_context().pairs().iter().cloned().collect();
        assert_eq!(context.len(), 4);
        assert_eq!(context["kps:project"], "p-42");
        assert_eq!(context["kps:user"], "u-1001");
        assert_eq!(context["kps:name"], "db-admin");
        assert_eq!(context["kps:record"], "18");
    }
}
