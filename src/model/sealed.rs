//! A private key at rest and in flight: `SealedKey` (ciphertext and what unwraps its data key, nothing secret)
//! and `PrivateKeyText` (plaintext: zeroized on drop, never printed, never serialized).

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Which encryptor wrapped the data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptorKind {
    Default,
    Kms,
}

/// A sealed private key as stored: ciphertext and what is needed to unwrap its data key. Nothing secret.
/// Binary fields are text in the encoding of `format_version` (custody: 1 = hex, 2 = base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    pub format_version: u8,
    pub encryptor: EncryptorKind,
    /// Master key id (`default`) or KMS key id (`kms`).
    pub key_ref: String,
    /// KMS key alias as given or resolved, for display only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// HKDF salt, 32 random bytes per record (`default` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// The wrapped data key: `default`: nonce + AES-GCM ciphertext; `kms`: the KMS's own text form of it.
    pub wrapped_dek: String,
    /// Nonce of the private-key ciphertext.
    pub nonce: String,
    /// AES-256-GCM ciphertext (with tag) of the private key text.
    pub ciphertext: String,
}

/// A private key in plaintext: zeroized on drop, never printed.
pub struct PrivateKeyText(Zeroizing<String>);

impl PrivateKeyText {
    pub fn new(text: Zeroizing<String>) -> Self {
        Self(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PrivateKeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKeyText([REDACTED])")
    }
}
