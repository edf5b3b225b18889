//! Create, import, show, list and delete: the key pair use cases every API shares (Nova v2/v2.1 and KPS V3),
//! with quotas and the name-uniqueness rules of `spec/kps-v3.md` §2. A failed create writes nothing.

use zeroize::Zeroizing;

use super::repo::InsertError;
use super::repo::layout;
use super::{KeypairService, MAX_LIST_LIMIT, ServiceError, custody_error};
use crate::custody::{Aad, Custody, SealWith};
use crate::keypair::{KeypairError, check_rsa_size, generate, parse};
use crate::kms::KeyRef;
use crate::model::{
    Algorithm, KeyAlgorithm, KeyType, Keypair, KeypairSummary, ListFields, PrivateKeyText, Scope, SealedKey,
};

/// What a create/import asks for, after validation at the edge.
#[derive(Debug)]
pub struct NewKeypair {
    pub name: String,
    pub key_type: KeyType,
    /// `Some` → import exactly this text; `None` → generate.
    pub public_key: Option<String>,
    /// Generation algorithm (`None` = RSA-2048); only with `public_key == None`.
    pub algorithm: Option<Algorithm>,
    /// Owner user.
    pub user_id: String,
    /// Project of the creating request.
    pub project_id: String,
    /// `user` (Nova) or `domain` (KPS V3: visible to every user of `project_id`).
    pub scope: Scope,
    /// `key_protection`: escrow the private key (generated, or given in `private_key`).
    pub protection: Option<ProtectionRequest>,
}

/// What `key_protection` asks for, after shape validation at the edge.
pub struct ProtectionRequest {
    /// The private key to escrow on import (secret).
    pub private_key: Option<Zeroizing<String>>,
    pub encryption: EncryptionRequest,
}

impl std::fmt::Debug for ProtectionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtectionRequest")
            .field("private_key", &self.private_key.as_ref().map(|_| "[REDACTED]"))
            .field("encryption", &self.encryption)
            .finish()
    }
}

/// `key_protection.encryption`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncryptionRequest {
    Default,
    Kms { key_name: Option<String>, key_id: Option<String> },
}

impl ProtectionRequest {
    /// Whether this request escrows a private key: a generated one, or the one it carries.
    pub fn escrows(&self, generating: bool) -> bool {
        generating || self.private_key.is_some()
    }
}

/// A stored key pair and, when it was generated, its private key (returned to the caller once).
pub struct Created {
    pub record: Keypair,
    pub private_key: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Created")
            .field("record", &self.record)
            .field("private_key", &self.private_key.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// A page of key pairs as stored, for views that borrow their fields ([`ListFields`]) instead of decoding
/// every string: Nova's list renders a page by copying JSON text.
pub struct StoredPage(Vec<Vec<u8>>);

impl StoredPage {
    /// The listed fields of each key pair, borrowed from the stored bytes.
    pub fn fields(&self) -> Result<Vec<ListFields<'_>>, ServiceError> {
        self.0.iter().map(|bytes| layout::decode_borrowed(bytes).map_err(ServiceError::from)).collect()
    }
}

impl KeypairService {
    /// Creates (generates) or imports a key pair, escrowing its private key when `protection` asks for it.
    ///
    /// Order (errors.md §4): quota, key material (public key, private key and match, protection settings),
    /// uniqueness pre-check, generation, id, seal, one atomic write. A failure writes nothing.
    pub async fn create(&self, new: NewKeypair) -> Result<Created, ServiceError> {
        self.check_quota(&new.user_id).await?;
        let (imported, algorithm) = match &new.public_key {
            Some(text) => {
                let parsed = parse::parse_public_key(new.key_type, text)?;
                check_rsa_size(parsed.algorithm, self.min_rsa_bits)?;
                (Some(parsed), None)
            }
            None => (None, Some(self.generation_algorithm(new.algorithm)?)),
        };
        let encryptor = match &new.protection {
            Some(protection) => Some(self.check_protection(protection, imported.as_ref(), &new.name)?),
            None => None,
        };
        if self.repo.name_taken(&new.user_id, &new.project_id, &new.name, new.scope).await? {
            return Err(ServiceError::Duplicate(new.name));
        }

        let generating = imported.is_none();
        let (public_key, fingerprint, algorithm, generated_private_key) = match (imported, new.public_key) {
            (Some(parsed), Some(text)) => (text, parsed.fingerprint, parsed.algorithm, None),
            _ => {
                let generated = self.generate(new.key_type, algorithm, &new.user_id).await?;
                let algorithm = generated.algorithm;
                (generated.public_key, generated.fingerprint, algorithm, Some(generated.private_key))
            }
        };

        let id = self.repo.next_id().await?;
        let sealed = match (encryptor, new.protection) {
            (Some((custody, with)), Some(protection)) if protection.escrows(generating) => {
                let text = match (&generated_private_key, protection.private_key) {
                    (Some(generated), _) => Zeroizing::new(generated.as_str().to_owned()),
                    (None, Some(given)) => given,
                    (None, None) => unreachable_escrow()?,
                };
                let aad = Aad {
                    project_id: new.project_id.clone(),
                    user_id: new.user_id.clone(),
                    name: new.name.clone(),
                    record_id: id,
                };
                Some(Self::seal(custody, &aad, text, &with).await?)
            }
            _ => None,
        };

        let record = Keypair {
            id,
            name: new.name,
            key_type: new.key_type,
            public_key,
            fingerprint,
            algorithm,
            user_id: new.user_id,
            project_id: new.project_id,
            scope: new.scope,
            description: String::new(),
            created_at_us: now_micros(),
            updated_at_us: None,
            sealed,
        };
        // The early quota check above only spares the expensive work; the insert's bounded count is exact,
        // on every replica.
        match self.repo.insert(&record, self.quota).await {
            Ok(()) => Ok(Created { record, private_key: generated_private_key }),
            Err(InsertError::Duplicate) => Err(ServiceError::Duplicate(record.name)),
            Err(InsertError::QuotaExceeded) => Err(ServiceError::QuotaExceeded),
            Err(InsertError::Failed(error)) => Err(error),
        }
    }

    /// Step 12 for `key_protection`: the private key parses and matches the public key, and the requested
    /// encryption is available. Returns the encryptor that will seal.
    pub(super) fn check_protection(
        &self,
        protection: &ProtectionRequest,
        public_key: Option<&parse::PublicKey>,
        name: &str,
    ) -> Result<(&Custody, SealWith), ServiceError> {
        if let Some(text) = &protection.private_key {
            let public_key = public_key.ok_or(ServiceError::PrivateKeyWithoutPublicKey)?;
            let private_key = parse::parse_private_key(text, self.min_rsa_bits)
                .map_err(|error| ServiceError::PrivateKey { error, name: name.to_owned() })?;
            private_key
                .check_matches(public_key)
                .map_err(|error| ServiceError::PrivateKey { error, name: name.to_owned() })?;
        }
        let custody = self.custody.as_ref().ok_or(ServiceError::DefaultEncryptionDisabled)?;
        match &protection.encryption {
            EncryptionRequest::Kms { key_id: Some(id), .. } if custody.has_kms() => {
                Ok((custody, SealWith::Kms(KeyRef::Id(id.clone()))))
            }
            EncryptionRequest::Kms { key_name: Some(name), .. } if custody.has_kms() => {
                Ok((custody, SealWith::Kms(KeyRef::Alias(name.clone()))))
            }
            EncryptionRequest::Kms { .. } => Err(ServiceError::KmsNotConfigured),
            // A sealed keyring (auto-unseal waiting for the KMS) is refused before any expensive work.
            EncryptionRequest::Default if self.allow_default && custody.local().slot().is_sealed() => {
                Err(super::keyring_sealed(name))
            }
            EncryptionRequest::Default if self.allow_default => Ok((custody, SealWith::Default)),
            EncryptionRequest::Default => Err(ServiceError::DefaultEncryptionDisabled),
        }
    }

    /// Seals for `record_name`; KMS failures keep the key pair's name for their messages.
    pub(super) async fn seal(
        custody: &Custody,
        aad: &Aad,
        text: Zeroizing<String>,
        with: &SealWith,
    ) -> Result<SealedKey, ServiceError> {
        custody.seal(aad, &PrivateKeyText::new(text), with).await.map_err(|error| custody_error(error, &aad.name))
    }

    /// The key pair `name` visible to `user_id` in `project_id`: the user's own key, else a `domain` key of
    /// the project.
    pub async fn get(&self, user_id: &str, project_id: &str, name: &str) -> Result<Keypair, ServiceError> {
        self.repo
            .find(user_id, project_id, name)
            .await?
            .map(|found| found.record)
            .ok_or_else(|| ServiceError::NotFound { name: name.to_owned(), user_id: user_id.to_owned() })
    }

    /// Up to `limit` key pairs visible to `user_id` in `project_id`, ascending by name, after `marker`, as
    /// the summaries list views show.
    pub async fn list_summaries(
        &self,
        user_id: &str,
        project_id: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeypairSummary>, ServiceError> {
        let page = self.list_encoded(user_id, project_id, marker, limit).await?;
        Ok(page.0.iter().map(|bytes| layout::decode::<KeypairSummary>(bytes)).collect::<Result<_, _>>()?)
    }

    /// [`KeypairService::list_summaries`] as the stored bytes of each record, for views that borrow their
    /// fields ([`StoredPage::fields`]).
    pub async fn list_encoded(
        &self,
        user_id: &str,
        project_id: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<StoredPage, ServiceError> {
        if let Some(marker) = marker
            && !self.repo.is_visible(user_id, project_id, marker).await?
        {
            return Err(ServiceError::MarkerNotFound(marker.to_owned()));
        }
        // One more than a full page, so that callers can tell whether more follow.
        let limit = limit.min(MAX_LIST_LIMIT + 1);
        Ok(StoredPage(self.repo.page_after(user_id, project_id, marker.map(str::as_bytes), limit).await?.values))
    }

    /// Every key pair visible to `user_id` in `project_id`, as stored bytes, ascending by name: Nova's list
    /// before paging (2.35) returns them all. Read in pages of [`MAX_LIST_LIMIT`], each after the last name
    /// of the one before, so that a key pair deleted meanwhile cannot break the walk.
    pub async fn list_all_encoded(&self, user_id: &str, project_id: &str) -> Result<StoredPage, ServiceError> {
        let mut all = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let run = self.repo.page_after(user_id, project_id, after.as_deref(), MAX_LIST_LIMIT).await?;
            let done = run.values.len() < MAX_LIST_LIMIT;
            all.extend(run.values);
            if done {
                return Ok(StoredPage(all));
            }
            after = run.last_name;
        }
    }

    /// Undoes the create of `record` (its audit line could not be written): a future that owns what it needs,
    /// so that it can run to its end in a task of its own. A failure is logged: nothing else can be done.
    pub fn undo_create(&self, record: &Keypair) -> impl std::future::Future<Output = ()> + Send + 'static {
        let repo = self.repo.clone();
        let (user_id, project_id, name, id) =
            (record.user_id.clone(), record.project_id.clone(), record.name.clone(), record.id);
        async move {
            match repo.delete(&user_id, &project_id, &name).await {
                Ok(_) => {
                    tracing::warn!(keypair_id = id, "a key pair whose audit line was not written was deleted again")
                }
                Err(error) => tracing::error!(%error, keypair_id = id, "a key pair whose audit line was not written \
                    could not be deleted"),
            }
        }
    }

    /// Deletes the key pair `name` visible to `user_id` in `project_id`, with its name-index entry. Returns
    /// the deleted record (the audit log notes whether it held an escrowed key).
    pub async fn delete(&self, user_id: &str, project_id: &str, name: &str) -> Result<Keypair, ServiceError> {
        self.repo
            .delete(user_id, project_id, name)
            .await?
            .ok_or_else(|| ServiceError::NotFound { name: name.to_owned(), user_id: user_id.to_owned() })
    }

    async fn check_quota(&self, user_id: &str) -> Result<(), ServiceError> {
        let Some(quota) = self.quota else { return Ok(()) };
        // The owner's key pairs of both scopes (kps-v3.md §2): `user` keys, and the `domain` keys they created.
        let used = self.repo.owned_by(user_id).await?;
        if used >= quota { Err(ServiceError::QuotaExceeded) } else { Ok(()) }
    }

    /// What to generate: the requested algorithm, unless it is an RSA size below `keys.min_rsa_bits`; by
    /// default the shortest generated RSA size that is not (RSA-2048 unless the minimum was raised).
    fn generation_algorithm(&self, requested: Option<Algorithm>) -> Result<Algorithm, KeypairError> {
        if let Some(algorithm) = requested {
            check_rsa_size(KeyAlgorithm::from(algorithm), self.min_rsa_bits)?;
            return Ok(algorithm);
        }
        let longest = Algorithm::Rsa4096;
        Algorithm::ALL
            .into_iter()
            .find(|a| a.rsa_bits().is_some_and(|bits| bits >= self.min_rsa_bits))
            .map_or_else(|| check_rsa_size(KeyAlgorithm::from(longest), self.min_rsa_bits).map(|()| longest), Ok)
    }

    async fn generate(
        &self,
        key_type: KeyType,
        algorithm: Option<Algorithm>,
        user_id: &str,
    ) -> Result<generate::GeneratedKeyPair, ServiceError> {
        let algorithm = algorithm.unwrap_or(Algorithm::Rsa2048);
        let rsa_key = match algorithm {
            Algorithm::Rsa2048 => Some(self.rsa_pool.take().await?),
            _ => None,
        };
        let user_id = user_id.to_owned();
        let span = tracing::Span::current();
        let generated = tokio::task::spawn_blocking(move || {
            let _request = span.enter();
            match (key_type, rsa_key) {
                (KeyType::X509, Some(key)) => generate::generate_x509(&user_id, key),
                (KeyType::X509, None) => {
                    let bits = rsa_bits(algorithm).unwrap_or(2048);
                    generate::generate_x509(&user_id, generate::generate_rsa(bits)?)
                }
                (KeyType::Ssh, Some(key)) => generate::generate_ssh_from_rsa(key),
                (KeyType::Ssh, None) => generate::generate_ssh(algorithm),
            }
        })
        .await
        .map_err(|e| KeypairError::Generation(e.to_string()))??;
        Ok(generated)
    }
}

/// `escrows()` is true with neither a generated nor a given key only through a bug.
fn unreachable_escrow() -> Result<Zeroizing<String>, ServiceError> {
    Err(ServiceError::Keypair(KeypairError::Generation("escrow without a private key".into())))
}

fn rsa_bits(algorithm: Algorithm) -> Option<usize> {
    match algorithm {
        Algorithm::Rsa2048 => Some(2048),
        Algorithm::Rsa3072 => Some(3072),
        Algorithm::Rsa4096 => Some(4096),
        _ => None,
    }
}

pub(super) fn now_micros() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// Formats a timestamp as Nova does: `YYYY-MM-DDTHH:MM:SS.ffffff`, UTC, no zone suffix.
pub fn format_timestamp(micros: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}
