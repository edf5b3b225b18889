//! The `kms` encryptor: the data key comes from the configured KMS for the key the caller named (one
//! create-datakey call per seal), is used locally to encrypt the private key with the record AAD, and only
//! the KMS-wrapped data key is stored. Opening asks the KMS to unwrap it (decrypt-datakey).

use zeroize::Zeroizing;

use super::envelope::SymmetricKey;
use super::{Aad, CustodyError, EncryptorKind, PrivateKeyText, SEALED_FORMAT_VERSION, SealedKey};
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
        let data_key = self.client.generate_data_key(&resolved.key_id, aad).await?;
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
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        })
    }

    /// Unwraps the data key through the KMS (the key id stored at escrow time) and decrypts.
    pub async fn open(&self, aad: &Aad, sealed: &SealedKey) -> Result<PrivateKeyText, CustodyError> {
        if sealed.encryptor != EncryptorKind::Kms || sealed.format_version != SEALED_FORMAT_VERSION {
            return Err(CustodyError::Malformed("not a kms envelope of a known version".into()));
        }
        let dek = self.client.decrypt_data_key(&sealed.key_ref, &sealed.wrapped_dek, aad).await?;
        let dek = SymmetricKey::from_bytes(dek.as_ref())?;
        let unhex = |field: &str, text: &str| hex::decode(text).map_err(|_| CustodyError::Malformed(field.into()));
        let plaintext =
            dek.decrypt(&unhex("nonce", &sealed.nonce)?, &unhex("ciphertext", &sealed.ciphertext)?, &aad.bytes())?;
        let text = String::from_utf8(plaintext.to_vec()).map_err(|_| CustodyError::Integrity)?;
        Ok(PrivateKeyText::new(Zeroizing::new(text)))
    }
}
