//! The `kms` encryptor: the data key comes from the configured KMS for the key the caller named (one
//! create-datakey call per seal), is used locally to encrypt the private key with the record AAD, and only
//! the KMS-wrapped data key is stored. Opening asks the KMS to unwrap it (decrypt-datakey).

use zeroize::Zeroizing;

use super::envelope::SymmetricKey;
use super::{
    Aad, CustodyError, EncryptorKind, PrivateKeyText, SEALED_FORMAT_VERSION, SealedKey, field_bytes, field_text,
};
use crate::kms::{KeyRef, KmsClient};

pub struct KmsEncryptor {
    client: KmsClient,
}

impl KmsEncryptor {
    pub fn new(client: KmsClient) -> Self {
        Self { client }
    }

    pub fn client(&self) -> &KmsClient {
        &self.client
    }

    /// Resolves `key` (state and spec checked, no data-key call), then seals with a fresh data key.
    pub async fn seal(&self, aad: &Aad, private_key: &PrivateKeyText, key: &KeyRef) -> Result<SealedKey, CustodyError> {
        let resolved = self.client.resolve(key).await?;
        let data_key = self.client.generate_data_key(&resolved.key_id, &aad.encryption_context()).await?;
        let dek = SymmetricKey::from_bytes(data_key.plaintext())?;
        let (nonce, ciphertext) = dek.encrypt(private_key.expose().as_bytes(), &aad.bytes())?;
        let key_name = resolved.alias.clone().or_else(|| match key {
            KeyRef::Alias(alias) => Some(alias.clone()),
            KeyRef::Id(_) => None,
        });
        Ok(SealedKey {
            format_version: SEALED_FORMAT_VERSION,
            encryptor: EncryptorKind::Kms,
            key_ref: resolved.key_id,
            key_name,
            salt: None,
            wrapped_dek: data_key.cipher_text().to_owned(),
            nonce: field_text(&nonce),
            ciphertext: field_text(&ciphertext),
        })
    }

    /// Unwraps the data key through the KMS (the key id stored at escrow time) and decrypts.
    pub async fn open(&self, aad: &Aad, sealed: &SealedKey) -> Result<PrivateKeyText, CustodyError> {
        if sealed.encryptor != EncryptorKind::Kms {
            return Err(CustodyError::Malformed("not a kms envelope".into()));
        }
        // The fields are decoded first: a malformed record makes no KMS call.
        let nonce = field_bytes(sealed, "nonce", &sealed.nonce)?;
        let ciphertext = field_bytes(sealed, "ciphertext", &sealed.ciphertext)?;
        let dek = self.client.decrypt_data_key(&sealed.key_ref, &sealed.wrapped_dek, &aad.encryption_context()).await?;
        let dek = SymmetricKey::from_bytes(dek.as_ref())?;
        let plaintext = dek.decrypt(&nonce, &ciphertext, &aad.bytes())?;
        let text = String::from_utf8(plaintext.to_vec()).map_err(|_| CustodyError::Integrity)?;
        Ok(PrivateKeyText::new(Zeroizing::new(text)))
    }
}
