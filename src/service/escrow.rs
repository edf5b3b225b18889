//! Private-key custody on stored key pairs (KPS V3): import a private key for a key pair that has none,
//! export (open) it for its owner, clear it; and the V3 description update. Every change is a conditional
//! replace of the loaded record, retried when the record changed in between.

use super::keypairs::now_micros;
use super::repo::Loaded;
use super::{KeypairService, ProtectionRequest, RecordCheck, ServiceError, custody_error};
use crate::custody::{Aad, CustodyError};
use crate::keypair::parse;
use crate::model::{EncryptorKind, Keypair, PrivateKeyText};

impl KeypairService {
    /// Sets the description of a key pair (V3 update), after `check` on the loaded record.
    pub async fn update_description(
        &self,
        user_id: &str,
        project_id: &str,
        name: &str,
        check: RecordCheck<'_>,
        description: &str,
    ) -> Result<(), ServiceError> {
        self.modify(user_id, project_id, name, check, |record| {
            record.description = description.to_owned();
            Ok(())
        })
        .await
        .map(drop)
    }

    /// Escrows a private key for an existing key pair that has none (V3 private-key import): it must parse
    /// and match the stored public key; it is sealed under the record's identity.
    pub async fn import_private_key(
        &self,
        user_id: &str,
        project_id: &str,
        name: &str,
        check: RecordCheck<'_>,
        protection: ProtectionRequest,
    ) -> Result<Keypair, ServiceError> {
        loop {
            let loaded = self.load(user_id, project_id, name, check).await?;
            let mut record = loaded.record.clone();
            if record.sealed.is_some() {
                return Err(ServiceError::AlreadyEscrowed(record.name));
            }
            let key_type = record.key_type;
            let public_key = parse::parse_public_key(key_type, &record.public_key)?;
            let (custody, with) = self.check_protection(&protection, Some(&public_key), &record.name)?;
            let Some(text) = protection.private_key.as_ref() else {
                return Err(ServiceError::PrivateKeyWithoutPublicKey);
            };
            let sealed = Self::seal(custody, &aad_of(&record), text.clone(), &with).await?;
            record.sealed = Some(sealed);
            record.updated_at_us = Some(now_micros());
            if self.repo.replace(&loaded, &record).await? {
                return Ok(record);
            }
        }
    }

    /// The escrowed private key of a key pair, opened (V3 export). Plaintext leaves only in the result.
    pub async fn export_private_key(
        &self,
        user_id: &str,
        project_id: &str,
        name: &str,
        check: RecordCheck<'_>,
    ) -> Result<(Keypair, PrivateKeyText), ServiceError> {
        let loaded = self.load(user_id, project_id, name, check).await?;
        let record = loaded.record;
        let Some(sealed) = &record.sealed else { return Err(ServiceError::NoEscrow(record.name)) };
        let custody =
            self.custody.as_ref().ok_or(ServiceError::Custody(CustodyError::Unavailable(sealed.encryptor)))?;
        let text = custody.open(&aad_of(&record), sealed).await.map_err(|error| custody_error(error, &record.name))?;
        Ok((record, text))
    }

    /// Removes the escrowed private key; the key pair stays (V3 clear). Returns the record as it was before,
    /// sealed key included (for the audit log: which key it was sealed under).
    pub async fn clear_private_key(
        &self,
        user_id: &str,
        project_id: &str,
        name: &str,
        check: RecordCheck<'_>,
    ) -> Result<Keypair, ServiceError> {
        // While the master keyring is sealed, `default` custody answers as one, clear included (KPS.1801).
        let keyring_sealed = self.custody.as_ref().is_some_and(|custody| custody.local().slot().is_sealed());
        let change = |record: &mut Keypair| match &record.sealed {
            Some(sealed) if keyring_sealed && sealed.encryptor == EncryptorKind::Default => {
                Err(super::keyring_sealed(&record.name))
            }
            Some(_) => {
                record.sealed = None;
                Ok(())
            }
            None => Err(ServiceError::NoEscrow(record.name.clone())),
        };
        self.modify(user_id, project_id, name, check, change).await.map(|(before, _)| before)
    }

    /// Loads a record, runs `check` on it, applies `change` and writes it back conditionally, retrying if
    /// the record changed in between. Returns the record before and after the change.
    async fn modify(
        &self,
        user_id: &str,
        project_id: &str,
        name: &str,
        check: RecordCheck<'_>,
        change: impl Fn(&mut Keypair) -> Result<(), ServiceError>,
    ) -> Result<(Keypair, Keypair), ServiceError> {
        loop {
            let loaded = self.load(user_id, project_id, name, check).await?;
            let mut record = loaded.record.clone();
            change(&mut record)?;
            record.updated_at_us = Some(now_micros());
            if self.repo.replace(&loaded, &record).await? {
                return Ok((loaded.record, record));
            }
        }
    }

    async fn load(
        &self,
        user_id: &str,
        project_id: &str,
        name: &str,
        check: RecordCheck<'_>,
    ) -> Result<Loaded, ServiceError> {
        let loaded = self
            .repo
            .find(user_id, project_id, name)
            .await?
            .ok_or_else(|| ServiceError::NotFound { name: name.to_owned(), user_id: user_id.to_owned() })?;
        check(&loaded.record)?;
        Ok(loaded)
    }
}

/// The identity a record's sealed key is bound to.
pub(super) fn aad_of(record: &Keypair) -> Aad {
    Aad::of_record(record)
}
