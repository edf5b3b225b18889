//! Auto-unseal: the master keyring wrapped by a KMS key, so that the keyring file holds only KMS ciphertext
//! (`custody.master_key_kms_key`, README "Auto-unseal").
//!
//! The file (TOML, still a 0600 secret file) is an envelope over the plaintext keyring TOML:
//! * `wrap` makes one create-datakey call under the named key, bound to [`keyring_context`] (AWS binds it to
//!   the data key; Huawei's API has no context, so it is also part of the local AAD), and seals the keyring
//!   text with AES-256-GCM under that data key;
//! * `unwrap` makes exactly one decrypt-datakey call, pinned to the key id stored at wrap time, then opens.
//!
//! The AAD binds the sealed keyring to the format, the context and the KMS key id, so a field moved from
//! another file or edited does not open. The data key and the keyring text live only in `Zeroizing` memory
//! and never appear in `Debug` output or logs.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::CustodyError;
use super::envelope::SymmetricKey;
use super::keyring::KeyringText;
use crate::kms::{DATA_KEY_LEN, DataKey, EncryptionContext, KeyRef, KmsClient};

/// The `format` of a wrapped keyring file written by this build.
pub const WRAPPED_FORMAT: &str = "kms-wrapped/v1";

/// The encryption context of the keyring's data key: `{"kps": "master-keyring"}`.
pub fn keyring_context() -> EncryptionContext {
    EncryptionContext::new([("kps", "master-keyring")])
}

/// A wrapped keyring file: ciphertext and references only, nothing secret (`Debug` shows it all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKeyring {
    /// [`WRAPPED_FORMAT`].
    pub format: String,
    /// The KMS key as configured (alias or id) when it was wrapped: what a re-wrap (new master key) uses.
    pub kms_key: String,
    /// The resolved KMS key id: unwrapping is pinned to it.
    pub key_id: String,
    /// The data key as the KMS wrapped it (provider text: hex for Huawei, base64 for AWS).
    pub wrapped_data_key: String,
    /// AES-GCM nonce, base64.
    pub nonce: String,
    /// The keyring TOML sealed under the data key, base64 (tag included).
    pub sealed_keyring: String,
}

/// Only the `format` field, to tell a wrapped file from a plaintext keyring.
#[derive(Deserialize)]
struct FormatProbe {
    format: Option<String>,
}

/// Whether the text of a keyring file is a wrapped keyring (it has a `format` field; a plaintext keyring
/// has none). Text that is no TOML at all is neither: `None`.
pub fn is_wrapped(text: &str) -> Option<bool> {
    toml::from_str::<FormatProbe>(text).ok().map(|probe| probe.format.is_some())
}

impl WrappedKeyring {
    /// Parses a wrapped keyring file; another format (a newer build's) is refused, never guessed at.
    pub fn parse(text: &str) -> Result<Self, String> {
        let wrapped: Self = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        if wrapped.format != WRAPPED_FORMAT {
            return Err(format!("unknown format {:?} (this build reads {WRAPPED_FORMAT:?})", wrapped.format));
        }
        Ok(wrapped)
    }

    /// The file's text.
    pub fn render(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Seals `keyring` under `data_key` (fresh from the KMS for the key `kms_key` resolved to).
    pub fn seal(keyring: &KeyringText, kms_key: &str, data_key: &DataKey) -> Result<Self, CustodyError> {
        let dek = SymmetricKey::from_bytes(data_key.plaintext())?;
        let aad = aad(&keyring_context(), &data_key.key_id);
        let (nonce, sealed) = dek.encrypt(keyring.expose().as_bytes(), &aad)?;
        Ok(Self {
            format: WRAPPED_FORMAT.to_owned(),
            kms_key: kms_key.to_owned(),
            key_id: data_key.key_id.clone(),
            wrapped_data_key: data_key.cipher_text().to_owned(),
            nonce: STANDARD.encode(nonce),
            sealed_keyring: STANDARD.encode(sealed),
        })
    }

    /// Opens the sealed keyring with its unwrapped data key, bound to `context`. Any mismatch (another data
    /// key, an edited field, another context) is `Integrity`.
    pub fn open(
        &self,
        data_key: &[u8; DATA_KEY_LEN],
        context: &EncryptionContext,
    ) -> Result<KeyringText, CustodyError> {
        let decode = |field: &str, text: &str| {
            STANDARD.decode(text).map_err(|_| CustodyError::Malformed(format!("{field} is not base64")))
        };
        let nonce = decode("nonce", &self.nonce)?;
        let sealed = decode("sealed_keyring", &self.sealed_keyring)?;
        let plaintext = SymmetricKey::from_bytes(data_key)?.decrypt(&nonce, &sealed, &aad(context, &self.key_id))?;
        let text = std::str::from_utf8(&plaintext).map_err(|_| CustodyError::Integrity)?;
        Ok(KeyringText::new(zeroize::Zeroizing::new(text.to_owned())))
    }

    /// Wraps `keyring` under `kms_key` (alias or id): the key is resolved (state and spec checked), then one
    /// create-datakey call.
    pub async fn wrap(keyring: &KeyringText, kms_key: &str, client: &KmsClient) -> Result<Self, CustodyError> {
        let resolved = client.resolve(&KeyRef::parse(kms_key)).await?;
        let data_key = client.generate_data_key(&resolved.key_id, &keyring_context()).await?;
        Self::seal(keyring, kms_key, &data_key)
    }

    /// Unwraps: exactly one decrypt-datakey call pinned to the stored key id (inside the client's retry
    /// budget), then AES-GCM open.
    pub async fn unwrap(&self, client: &KmsClient) -> Result<KeyringText, CustodyError> {
        // The local fields are decoded before the KMS is asked: a malformed file makes no call.
        for (field, text) in [("nonce", &self.nonce), ("sealed_keyring", &self.sealed_keyring)] {
            STANDARD.decode(text).map_err(|_| CustodyError::Malformed(format!("{field} is not base64")))?;
        }
        let context = keyring_context();
        let data_key = client.decrypt_data_key(&self.key_id, &self.wrapped_data_key, &context).await?;
        self.open(&data_key, &context)
    }
}

/// `kps/master-keyring/<format>`, then each context name and value and the KMS key id, each preceded by its
/// length as a big-endian u32.
fn aad(context: &EncryptionContext, key_id: &str) -> Vec<u8> {
    let mut out = format!("kps/master-keyring/{WRAPPED_FORMAT}").into_bytes();
    let fields = context.pairs().iter().flat_map(|(name, value)| [name.as_str(), value.as_str()]);
    for field in fields.chain([key_id]) {
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;

    const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn keyring() -> KeyringText {
        KeyringText::new(Zeroizing::new(format!(
            "current = \"mk-1\"\n\n[[keys]]\nid = \"mk-1\"\nkey_hex = \"{KEY_HEX}\"\n"
        )))
    }

    fn data_key() -> DataKey {
        DataKey::new(
            "3c1d5a0e-8f6b-4e52-9d7a-21f0c4b8e6a1".into(),
            Zeroizing::new([7u8; DATA_KEY_LEN]),
            "c1ph3r".into(),
        )
    }

    fn sealed() -> WrappedKeyring {
        WrappedKeyring::seal(&keyring(), "kps-master", &data_key()).expect("seal")
    }

    #[test]
    fn seal_then_open_gives_the_keyring_and_the_file_holds_no_key() {
        let wrapped = sealed();
        let text = wrapped.render();
        assert!(!text.contains(KEY_HEX) && !text.contains("key_hex"), "{text}");
        assert!(text.contains("format = \"kms-wrapped/v1\""), "{text}");
        let parsed = WrappedKeyring::parse(&text).expect("parse");
        assert_eq!(parsed, wrapped);
        assert_eq!(parsed.key_id, data_key().key_id);
        assert_eq!(parsed.kms_key, "kps-master");
        let opened = parsed.open(data_key().plaintext(), &keyring_context()).expect("open");
        assert_eq!(opened.expose(), keyring().expose());
        assert_eq!(is_wrapped(&text), Some(true));
        assert_eq!(is_wrapped(keyring().expose()), Some(false));
    }

    #[test]
    fn a_tampered_file_does_not_open() {
        let wrapped = sealed();
        let flip = |text: &str| {
            let mut bytes = STANDARD.decode(text).expect("base64");
            bytes[0] ^= 1;
            STANDARD.encode(bytes)
        };
        let cases = [
            WrappedKeyring { sealed_keyring: flip(&wrapped.sealed_keyring), ..wrapped.clone() },
            WrappedKeyring { nonce: flip(&wrapped.nonce), ..wrapped.clone() },
            WrappedKeyring { key_id: "11111111-1111-4111-8111-111111111111".into(), ..wrapped.clone() },
        ];
        for case in cases {
            let error = case.open(data_key().plaintext(), &keyring_context()).expect_err("tampered");
            assert!(matches!(error, CustodyError::Integrity), "{error:?}");
        }
        let other_key = Zeroizing::new([8u8; DATA_KEY_LEN]);
        assert!(matches!(wrapped.open(&other_key, &keyring_context()), Err(CustodyError::Integrity)));
        let garbage = WrappedKeyring { nonce: "%%%".into(), ..wrapped };
        assert!(matches!(garbage.open(data_key().plaintext(), &keyring_context()), Err(CustodyError::Malformed(_))));
    }

    #[test]
    fn another_context_does_not_open() {
        let wrapped = sealed();
        for context in [
            EncryptionContext::default(),
            EncryptionContext::new([("kps", "other")]),
            EncryptionContext::new([("kps", "master-keyring"), ("extra", "x")]),
        ] {
            let error = wrapped.open(data_key().plaintext(), &context).expect_err("wrong context");
            assert!(matches!(error, CustodyError::Integrity), "{context:?}: {error:?}");
        }
    }

    #[test]
    fn unknown_formats_and_fields_are_refused() {
        let text = sealed().render();
        let newer = text.replace(WRAPPED_FORMAT, "kms-wrapped/v2");
        assert!(WrappedKeyring::parse(&newer).expect_err("newer").contains("unknown format"));
        let extra = format!("{text}key_hex = \"{KEY_HEX}\"\n");
        assert!(WrappedKeyring::parse(&extra).is_err(), "a plaintext key beside the ciphertext is refused");
        assert_eq!(is_wrapped("not toml ["), None);
    }

    #[test]
    fn debug_shows_no_key_material() {
        let text = keyring();
        assert!(!format!("{text:?}").contains(KEY_HEX));
        assert!(!format!("{:?}", data_key()).contains("0707"));
        let wrapped = format!("{:?}", sealed());
        assert!(!wrapped.contains(KEY_HEX) && !wrapped.contains("0707"), "{wrapped}");
    }
}
