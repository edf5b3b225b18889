//! `kps rewrap` (and `POST /admin/v1/rewrap`): re-seal escrowed private keys under the current master key or
//! a KMS key, without ever writing plaintext anywhere.

use super::escrow::aad_of;
use super::{KeypairService, ServiceError, custody_error};
use crate::custody::{CustodyError, SealWith};
use crate::kms::KeyRef;
use crate::model::{EncryptorKind, SealedKey};

/// Where `kps rewrap` moves escrowed keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewrapTarget {
    /// Records sealed under an older master key move to the current one; KMS-sealed records stay.
    CurrentMasterKey,
    /// Every record moves to the current master key.
    Default,
    /// Every record moves to this KMS key.
    Kms(KeyRef),
}

/// The options of `kps rewrap`, also the JSON body of `POST /admin/v1/rewrap`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewrapOptions {
    #[serde(default)]
    pub to_default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_kms_key: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

impl RewrapOptions {
    pub fn target(&self) -> RewrapTarget {
        match (&self.to_kms_key, self.to_default) {
            (Some(key), _) => RewrapTarget::Kms(crate::kms::KeyRef::parse(key)),
            (None, true) => RewrapTarget::Default,
            (None, false) => RewrapTarget::CurrentMasterKey,
        }
    }
}

/// What `kps rewrap` found and did (with `dry_run`: would do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RewrapReport {
    /// Records with an escrowed private key.
    pub escrowed: u64,
    /// Records re-sealed (or that would be).
    pub rewrapped: u64,
    /// Whether nothing was written, only counted.
    pub dry_run: bool,
}

impl KeypairService {
    /// Re-seals escrowed private keys (`kps rewrap`): plaintext exists only in memory, each record is
    /// replaced conditionally (a record changed meanwhile is re-read and considered again).
    pub async fn rewrap(&self, target: &RewrapTarget, dry_run: bool) -> Result<RewrapReport, ServiceError> {
        let custody =
            self.custody.as_ref().ok_or(ServiceError::Custody(CustodyError::Unavailable(EncryptorKind::Default)))?;
        // While the keyring is sealed only a move onto a KMS key may run (its `default`-sealed records still
        // answer KPS.1801 when they are reached).
        let current_master = match (target, custody.local().current_key_id()) {
            (_, Some(id)) => id.to_owned(),
            (RewrapTarget::Kms(_), None) => String::new(),
            (_, None) => return Err(super::keyring_sealed("the master keyring")),
        };
        let (with, kms_key_id) = match target {
            RewrapTarget::CurrentMasterKey | RewrapTarget::Default => (SealWith::Default, None),
            RewrapTarget::Kms(key) => {
                let kms = custody.kms().ok_or(ServiceError::KmsNotConfigured)?;
                kms.client().clear_cache();
                let resolved = kms
                    .client()
                    .resolve(key)
                    .await
                    .map_err(|error| ServiceError::Kms { error, name: key.as_str().to_owned() })?;
                (SealWith::Kms(KeyRef::Id(resolved.key_id.clone())), Some(resolved.key_id))
            }
        };
        // A record sealed in an older sealed format is re-sealed (in the current one) by any run that would
        // keep it under the same encryptor.
        let needs_rewrap = |sealed: &SealedKey| {
            let outdated = sealed.format_version < crate::custody::SEALED_FORMAT_VERSION;
            match target {
                RewrapTarget::CurrentMasterKey => {
                    sealed.encryptor == EncryptorKind::Default && (sealed.key_ref != current_master || outdated)
                }
                RewrapTarget::Default => {
                    sealed.encryptor != EncryptorKind::Default || sealed.key_ref != current_master || outdated
                }
                RewrapTarget::Kms(_) => {
                    sealed.encryptor != EncryptorKind::Kms || Some(&sealed.key_ref) != kms_key_id.as_ref() || outdated
                }
            }
        };
        let mut report = RewrapReport { dry_run, ..RewrapReport::default() };
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.repo.walk(after.as_deref(), 200).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            for mut loaded in page {
                while let Some(sealed) = loaded.record.sealed.clone() {
                    report.escrowed += 1;
                    if !needs_rewrap(&sealed) {
                        break;
                    }
                    if dry_run {
                        report.rewrapped += 1;
                        break;
                    }
                    let aad = aad_of(&loaded.record);
                    let name = loaded.record.name.clone();
                    let text = custody.open(&aad, &sealed).await.map_err(|error| custody_error(error, &name))?;
                    let resealed =
                        custody.seal(&aad, &text, &with).await.map_err(|error| custody_error(error, &name))?;
                    let mut record = loaded.record.clone();
                    record.sealed = Some(resealed);
                    if self.repo.replace(&loaded, &record).await? {
                        report.rewrapped += 1;
                        break;
                    }
                    // Changed meanwhile (export/clear/delete): look at the current version again.
                    report.escrowed -= 1;
                    let Some(current) = self.repo.reload(loaded).await? else { break };
                    loaded = current;
                }
            }
        }
        Ok(report)
    }
}
