//! Use-cases on key pairs, shared by every API (Nova v2/v2.1 and, later, KPS V3): create/import, list,
//! show and delete, with quotas and the name-uniqueness rules of `spec/kps-v3.md` §2.
//!
//! The HTTP edge has already authenticated the caller, validated the request and checked policy; this
//! layer decides everything that needs the store. Key pairs belong to their owner *user*; `domain` key
//! pairs of the request's project are visible too. A failed create writes nothing.

pub mod backup;
pub mod master_keys;

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::custody::{Aad, Custody, CustodyError, SealWith};
use crate::keypair::pool::RsaKeyPool;
use crate::keypair::{KeypairError, check_rsa_size, generate, parse};
use crate::kms::{KeyRef, KmsError};
use crate::model::{
    Algorithm, EncryptorKind, KeyAlgorithm, KeyType, Keypair, KeypairSummary, ListFields, PrivateKeyText, Scope,
    SealedKey,
};
use crate::page_cache::{Generations, Stamp};
use crate::store::record::{self, NameIndexEntry};
use crate::store::{ApplyError, Space, Store, StoreError, WriteOp};

/// The most key pairs one list call returns (Nova's `max_limit`).
pub const MAX_LIST_LIMIT: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("key pair {name} not found for user {user_id}")]
    NotFound { name: String, user_id: String },
    #[error("marker {0} not found")]
    MarkerNotFound(String),
    #[error("key pair {0} already exists")]
    Duplicate(String),
    #[error("quota exceeded")]
    QuotaExceeded,
    #[error(transparent)]
    Keypair(#[from] KeypairError),
    /// A private key problem, reported with the key pair's name (KPS.1301/1302/1304).
    #[error("private key of {name}: {error}")]
    PrivateKey { error: KeypairError, name: String },
    /// `key_protection.private_key` without `public_key` (KPS.1303).
    #[error("key_protection.private_key requires keypair.public_key")]
    PrivateKeyWithoutPublicKey,
    /// `encryption.type = kms` but no KMS is configured (KPS.1402).
    #[error("no KMS is configured")]
    KmsNotConfigured,
    /// `encryption.type = default` is disabled on this server (KPS.1403).
    #[error("encryption type default is disabled")]
    DefaultEncryptionDisabled,
    #[error(transparent)]
    Custody(#[from] CustodyError),
    /// A KMS failure while sealing or opening the key pair `name` (KPS.18xx, KPS.1401 key spec).
    #[error("KMS failure for {name}: {error}")]
    Kms { error: KmsError, name: String },
    /// The escrowed key failed its integrity check (KPS.1806).
    #[error("escrowed private key of {0} could not be decrypted")]
    Undecryptable(String),
    /// Policy denied `action` on the loaded record (evaluated by the caller's check).
    #[error("policy denies {0}")]
    Denied(String),
    /// The key pair has no escrowed private key (KPS.1602).
    #[error("key pair {0} has no escrowed private key")]
    NoEscrow(String),
    /// The key pair already has an escrowed private key (KPS.1702).
    #[error("key pair {0} already has an escrowed private key")]
    AlreadyEscrowed(String),
    /// The store takes no writes (a failed sync or a lost connection): the outcome of a write in flight is
    /// unknown, retry later (KPS.9005). The detail is for logs.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// Any other store failure (KPS.9002). The detail is for logs.
    #[error("store failure: {0}")]
    Storage(String),
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(detail) => Self::StoreUnavailable(detail),
            other @ (StoreError::Backend(_) | StoreError::Corrupt(_) | StoreError::Damaged(_)) => {
                Self::Storage(other.to_string())
            }
        }
    }
}

/// A page of key pairs as stored, for views that borrow their fields ([`ListFields`]) instead of decoding
/// every string: Nova's list renders a page by copying JSON text.
pub struct StoredPage(Vec<Vec<u8>>);

impl StoredPage {
    /// The listed fields of each key pair, borrowed from the stored bytes.
    pub fn fields(&self) -> Result<Vec<ListFields<'_>>, ServiceError> {
        self.0.iter().map(|bytes| record::decode_borrowed(bytes).map_err(ServiceError::from)).collect()
    }
}

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
    /// Reads the admin API body (`null`/empty = no options); the message says what is wrong.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        if value.is_null() {
            return Ok(Self::default());
        }
        let options: Self =
            serde_json::from_value(value.clone()).map_err(|e| format!("Invalid rewrap options: {e}"))?;
        if options.to_default && options.to_kms_key.is_some() {
            return Err("Invalid rewrap options: to_default and to_kms_key exclude each other".into());
        }
        Ok(options)
    }

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

pub struct KeypairService {
    store: Arc<dyn Store>,
    /// Key pairs per owner; `None` = unlimited.
    quota: Option<u64>,
    /// `keys.min_rsa_bits`: shorter RSA keys are neither imported nor generated (KPS.1204).
    min_rsa_bits: usize,
    rsa_pool: RsaKeyPool,
    /// The encryptors (the `default` one opens older records even when new `default` seals are disabled).
    custody: Option<Custody>,
    /// `custody.allow_default`: new seals may use the `default` encryptor.
    allow_default: bool,
    /// The stored `domain` key pairs counted per project and per creator, once at startup
    /// (`load_domain_projects`; until then `None`: every project may have some, and quotas count them from
    /// the store). Lookups and lists skip the domain-key read or scan for projects not in here: most
    /// deployments have none. All domain-key writes go through this service, which keeps the counts exact.
    domain_counts: std::sync::Mutex<Option<DomainCounts>>,
    /// Write generations per key owner, for the list page cache (`page_cache`).
    generations: Generations,
    /// Turns for the final quota check and the write of a create, one stripe per group of users, so that
    /// concurrent creates at the edge of the quota cannot all pass (one process owns the store).
    quota_turns: Vec<tokio::sync::Mutex<()>>,
}

/// Stripes of `quota_turns`: creates of users in different stripes never wait for each other.
const QUOTA_STRIPES: usize = 64;

/// A policy check run on a record as soon as it is loaded (errors.md §4 step 8: `creator`, domain keys).
pub type RecordCheck<'a> = &'a (dyn Fn(&Keypair) -> Result<(), ServiceError> + Send + Sync);

impl KeypairService {
    pub fn new(store: Arc<dyn Store>, quota: Option<u64>, rsa_pool: RsaKeyPool) -> Self {
        Self {
            store,
            quota,
            min_rsa_bits: crate::keypair::DEFAULT_MIN_RSA_BITS,
            rsa_pool,
            custody: None,
            allow_default: false,
            domain_counts: Default::default(),
            generations: Generations::default(),
            quota_turns: (0..QUOTA_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// The encryptors; `allow_default` = `custody.allow_default` (new `default` seals allowed).
    #[must_use]
    pub fn with_custody(mut self, custody: Custody, allow_default: bool) -> Self {
        self.custody = Some(custody);
        self.allow_default = allow_default;
        self
    }

    /// `keys.min_rsa_bits` (default 2048).
    #[must_use]
    pub fn with_min_rsa_bits(mut self, bits: usize) -> Self {
        self.min_rsa_bits = bits;
        self
    }

    /// The KMS encryptor's client, when one is configured.
    pub fn kms_client(&self) -> Option<&crate::kms::KmsClient> {
        self.custody.as_ref().and_then(Custody::kms).map(crate::custody::KmsEncryptor::client)
    }

    /// The group committer's counters, for stores that have one (`GET /metrics`).
    pub fn store_commit_stats(&self) -> Option<&crate::store::sled::CommitStats> {
        self.store.group_commit_stats()
    }

    /// Whether the store takes writes and answers a trivial read (`GET /readyz`).
    pub async fn ready(&self) -> Result<(), ServiceError> {
        Ok(self.store.ready().await?)
    }

    /// Streams the backup of the whole store (spec/interface.md, backups) into `sender`, as a task that owns
    /// what it reads (the admin API runs it beside the response that streams the lines).
    pub fn export_backup(
        &self,
        sender: tokio::sync::mpsc::Sender<Vec<u8>>,
    ) -> impl std::future::Future<Output = Result<(), backup::BackupError>> + Send + 'static {
        let store = Arc::clone(&self.store);
        async move { backup::export(store.as_ref(), &sender).await }
    }

    /// Counts the stored `domain` key pairs per project and per creator (once at startup).
    pub async fn load_domain_projects(&self) -> Result<(), ServiceError> {
        let counts = self.count_domain_keys().await?;
        *self.domain_counts.lock().map_err(|_| StoreError::Backend("domain map poisoned".into()))? = Some(counts);
        Ok(())
    }

    /// Reads every stored `domain` key pair and counts them.
    async fn count_domain_keys(&self) -> Result<DomainCounts, ServiceError> {
        let mut counts = DomainCounts::default();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.store.scan(Space::KeyPairs, b"d", after.as_deref(), 1000).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (_, value) in page {
                let found: Keypair = record::decode(&value)?;
                counts.add(&found, 1);
            }
        }
        Ok(counts)
    }

    /// What a list of `user_id` in `project_id` depends on: the generations of the user's keys and of the
    /// project's `domain` keys. Read it before listing; a page is current while the stamp is unchanged.
    pub fn list_stamp(&self, user_id: &str, project_id: &str) -> Stamp {
        (self.generations.get(&record::user_prefix(user_id)), self.generations.get(&record::domain_prefix(project_id)))
    }

    /// Every store write of the service: applies `ops` atomically, then marks the owners of the key pairs
    /// written stale for cached list pages (before the caller can answer).
    async fn apply(&self, ops: Vec<WriteOp>) -> Result<(), ApplyError> {
        let owners: Vec<Vec<u8>> = ops
            .iter()
            .filter_map(|op| match op.target() {
                (Space::KeyPairs, key) => record::owner_prefix_of(key).map(<[u8]>::to_vec),
                _ => None,
            })
            .collect();
        let result = self.store.apply(ops).await;
        if result.is_ok() {
            for owner in &owners {
                self.generations.bump(owner);
            }
        }
        result
    }

    fn has_domain_keys(&self, project_id: &str) -> bool {
        // Not counted yet, or a poisoned lock (a panic elsewhere): look, to stay correct.
        self.domain_counts
            .lock()
            .ok()
            .and_then(|counts| counts.as_ref().map(|counts| counts.per_project.contains_key(project_id)))
            .unwrap_or(true)
    }

    /// How many `domain` key pairs `user_id` created (in any project).
    async fn domain_keys_created_by(&self, user_id: &str) -> Result<u64, ServiceError> {
        let counted = self
            .domain_counts
            .lock()
            .ok()
            .and_then(|counts| counts.as_ref().map(|counts| counts.per_creator.get(user_id).copied().unwrap_or(0)));
        match counted {
            Some(count) => Ok(count),
            // Not counted yet (or a poisoned lock): count from the store.
            None => Ok(self.count_domain_keys().await?.per_creator.get(user_id).copied().unwrap_or(0)),
        }
    }

    fn count_domain_key(&self, record: &Keypair, delta: i64) {
        if let Ok(mut counts) = self.domain_counts.lock()
            && let Some(counts) = counts.as_mut()
        {
            counts.add(record, delta);
        }
    }

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
        self.check_name_free(&new.user_id, &new.project_id, &new.name, new.scope).await?;

        let generating = imported.is_none();
        let (public_key, fingerprint, algorithm, generated_private_key) = match (imported, new.public_key) {
            (Some(parsed), Some(text)) => (text, parsed.fingerprint, parsed.algorithm, None),
            _ => {
                let generated = self.generate(new.key_type, algorithm, &new.user_id).await?;
                let algorithm = generated.algorithm;
                (generated.public_key, generated.fingerprint, algorithm, Some(generated.private_key))
            }
        };

        let id = self.store.next_id().await?;
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
        // The quota again, now in this user's turn and right before the write: the early check above only
        // spares the expensive work; this one is exact (a concurrent create of the same user waits here).
        let _turn = self.quota_turn(&record.user_id).await;
        self.check_quota(&record.user_id).await?;
        self.insert(&record).await?;
        Ok(Created { record, private_key: generated_private_key })
    }

    /// Step 12 for `key_protection`: the private key parses and matches the public key, and the requested
    /// encryption is available. Returns the encryptor that will seal.
    fn check_protection(
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
            EncryptionRequest::Default if self.allow_default => Ok((custody, SealWith::Default)),
            EncryptionRequest::Default => Err(ServiceError::DefaultEncryptionDisabled),
        }
    }

    /// Seals for `record_name`; KMS failures keep the key pair's name for their messages.
    async fn seal(
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
        self.find(user_id, project_id, name)
            .await?
            .map(|(_, _, record)| record)
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
        Ok(page.0.iter().map(|bytes| record::decode::<KeypairSummary>(bytes)).collect::<Result<_, _>>()?)
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
            && !self.is_visible(user_id, project_id, marker).await?
        {
            return Err(ServiceError::MarkerNotFound(marker.to_owned()));
        }
        // One more than a full page, so that callers can tell whether more follow.
        let limit = limit.min(MAX_LIST_LIMIT + 1);
        Ok(StoredPage(self.page_after(user_id, project_id, marker.map(str::as_bytes), limit).await?.0))
    }

    /// Every key pair visible to `user_id` in `project_id`, as stored bytes, ascending by name: Nova's list
    /// before paging (2.35) returns them all. Read in pages of [`MAX_LIST_LIMIT`], each after the last name
    /// of the one before, so that a key pair deleted meanwhile cannot break the walk.
    pub async fn list_all_encoded(&self, user_id: &str, project_id: &str) -> Result<StoredPage, ServiceError> {
        let mut all = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (page, last) = self.page_after(user_id, project_id, after.as_deref(), MAX_LIST_LIMIT).await?;
            let done = page.len() < MAX_LIST_LIMIT;
            all.extend(page);
            if done {
                return Ok(StoredPage(all));
            }
            after = last;
        }
    }

    /// Up to `limit` key pairs visible to `user_id` in `project_id` whose name is after `after` (exclusive;
    /// need not exist), ascending by name, with the name of the last one.
    async fn page_after(
        &self,
        user_id: &str,
        project_id: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>), ServiceError> {
        let user_prefix = record::user_prefix(user_id);
        let domain_prefix = record::domain_prefix(project_id);
        let after_user = after.map(|name| [user_prefix.as_slice(), name].concat());
        let after_domain = after.map(|name| [domain_prefix.as_slice(), name].concat());
        let own = self.store.scan(Space::KeyPairs, &user_prefix, after_user.as_deref(), limit).await?;
        let shared = if self.has_domain_keys(project_id) {
            self.store.scan(Space::KeyPairs, &domain_prefix, after_domain.as_deref(), limit).await?
        } else {
            Vec::new()
        };

        // Merge the two name-ordered runs; on a shared name the user's own key wins (kps-v3.md §2).
        let mut own = own.into_iter().peekable();
        let mut shared = shared.into_iter().peekable();
        let mut page = Vec::with_capacity(limit.min(64));
        // The store key of the last item taken and the length of its prefix (moved, not copied).
        let mut last: Option<(Vec<u8>, usize)> = None;
        while page.len() < limit {
            let own_name = own.peek().map(|(k, _)| &k[user_prefix.len()..]);
            let shared_name = shared.peek().map(|(k, _)| &k[domain_prefix.len()..]);
            let (take_own, same_name) = match (own_name, shared_name) {
                (None, None) => break,
                (Some(_), None) => (true, false),
                (None, Some(_)) => (false, false),
                (Some(a), Some(b)) => (a <= b, a == b),
            };
            if same_name {
                shared.next();
            }
            let (next, prefix_len) =
                if take_own { (own.next(), user_prefix.len()) } else { (shared.next(), domain_prefix.len()) };
            if let Some((key, value)) = next {
                page.push(value);
                last = Some((key, prefix_len));
            }
        }
        let last_name = last.map(|(key, prefix_len)| key[prefix_len..].to_vec());
        Ok((page, last_name))
    }

    /// Deletes the key pair `name` visible to `user_id` in `project_id`, with its name-index entry. Returns
    /// the deleted record (the audit log notes whether it held an escrowed key).
    pub async fn delete(&self, user_id: &str, project_id: &str, name: &str) -> Result<Keypair, ServiceError> {
        loop {
            let Some((key, value, found)) = self.find(user_id, project_id, name).await? else {
                return Err(ServiceError::NotFound { name: name.to_owned(), user_id: user_id.to_owned() });
            };
            let mut ops = vec![WriteOp::Delete { space: Space::KeyPairs, key, expected: value }];
            ops.extend(self.index_release(&found).await?);
            match self.apply(ops).await {
                Ok(()) => {
                    if found.scope == Scope::Domain {
                        self.count_domain_key(&found, -1);
                    }
                    return Ok(found);
                }
                // The record or its index entry changed under us: look again.
                Err(ApplyError::Conflict { .. }) => {}
                Err(ApplyError::Store(error)) => return Err(error.into()),
            }
        }
    }

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
            if self.replace(&loaded, &record).await? {
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
        loop {
            let loaded = self.load(user_id, project_id, name, check).await?;
            let mut record = loaded.record.clone();
            if record.sealed.take().is_none() {
                return Err(ServiceError::NoEscrow(record.name));
            }
            record.updated_at_us = Some(now_micros());
            if self.replace(&loaded, &record).await? {
                return Ok(loaded.record);
            }
        }
    }

    /// Re-seals escrowed private keys (`kps rewrap`): plaintext exists only in memory, each record is
    /// replaced conditionally (a record changed meanwhile is re-read and considered again).
    pub async fn rewrap(&self, target: &RewrapTarget, dry_run: bool) -> Result<RewrapReport, ServiceError> {
        let custody =
            self.custody.as_ref().ok_or(ServiceError::Custody(CustodyError::Unavailable(EncryptorKind::Default)))?;
        let current_master = custody.local().current_key_id().to_owned();
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
            let page = self.store.scan(Space::KeyPairs, b"", after.as_deref(), 200).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (key, value) in page {
                let mut loaded = Loaded { key, record: record::decode(&value)?, value };
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
                    if self.replace(&loaded, &record).await? {
                        report.rewrapped += 1;
                        break;
                    }
                    // Changed meanwhile (export/clear/delete): look at the current version again.
                    report.escrowed -= 1;
                    let Some(value) = self.store.get(Space::KeyPairs, &loaded.key).await? else { break };
                    loaded = Loaded { key: loaded.key, record: record::decode(&value)?, value };
                }
            }
        }
        Ok(report)
    }

    /// Loads a record, runs `check` on it, applies `change` and writes it back conditionally, retrying if
    /// the record changed in between.
    async fn modify(
        &self,
        user_id: &str,
        project_id: &str,
        name: &str,
        check: RecordCheck<'_>,
        change: impl Fn(&mut Keypair) -> Result<(), ServiceError>,
    ) -> Result<Keypair, ServiceError> {
        loop {
            let loaded = self.load(user_id, project_id, name, check).await?;
            let mut record = loaded.record.clone();
            change(&mut record)?;
            record.updated_at_us = Some(now_micros());
            if self.replace(&loaded, &record).await? {
                return Ok(record);
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
        let (key, value, record) = self
            .find(user_id, project_id, name)
            .await?
            .ok_or_else(|| ServiceError::NotFound { name: name.to_owned(), user_id: user_id.to_owned() })?;
        check(&record)?;
        Ok(Loaded { key, value, record })
    }

    /// Writes `record` over `loaded` if it is unchanged; `false` when someone else changed it first.
    async fn replace(&self, loaded: &Loaded, record: &Keypair) -> Result<bool, ServiceError> {
        let op = WriteOp::Replace {
            space: Space::KeyPairs,
            key: loaded.key.clone(),
            expected: loaded.value.clone(),
            value: record::encode(record)?,
        };
        match self.apply(vec![op]).await {
            Ok(()) => Ok(true),
            Err(ApplyError::Conflict { .. }) => Ok(false),
            Err(ApplyError::Store(error)) => Err(error.into()),
        }
    }

    /// The owner's key pairs of both scopes (kps-v3.md §2): `user` keys, and the `domain` keys they created.
    /// The user's turn for the final quota check and write; `None` (no waiting) without a quota.
    async fn quota_turn(&self, user_id: &str) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        self.quota?;
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(user_id);
        let stripe = usize::try_from(hash % QUOTA_STRIPES as u64).unwrap_or(0);
        Some(self.quota_turns[stripe].lock().await)
    }

    async fn check_quota(&self, user_id: &str) -> Result<(), ServiceError> {
        let Some(quota) = self.quota else { return Ok(()) };
        let used = self.store.count(Space::KeyPairs, &record::user_prefix(user_id)).await?
            + self.domain_keys_created_by(user_id).await?;
        if used >= quota { Err(ServiceError::QuotaExceeded) } else { Ok(()) }
    }

    /// The uniqueness pre-check (kps-v3.md §2): the owner's keys and the project's `domain` keys; a new
    /// `domain` key also conflicts with every `user` key of that name created in the project.
    async fn check_name_free(
        &self,
        user_id: &str,
        project_id: &str,
        name: &str,
        scope: Scope,
    ) -> Result<(), ServiceError> {
        if self.is_visible(user_id, project_id, name).await? {
            return Err(ServiceError::Duplicate(name.to_owned()));
        }
        if scope == Scope::Domain
            && let Some(bytes) = self.store.get(Space::NameIndex, &record::name_index_key(project_id, name)).await?
            && !record::decode::<NameIndexEntry>(&bytes)?.is_empty()
        {
            return Err(ServiceError::Duplicate(name.to_owned()));
        }
        Ok(())
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
        let generated = tokio::task::spawn_blocking(move || match (key_type, rsa_key) {
            (KeyType::X509, Some(key)) => generate::generate_x509(&user_id, key),
            (KeyType::X509, None) => {
                let bits = rsa_bits(algorithm).unwrap_or(2048);
                generate::generate_x509(&user_id, generate::generate_rsa(bits)?)
            }
            (KeyType::Ssh, Some(key)) => generate::generate_ssh_from_rsa(key),
            (KeyType::Ssh, None) => generate::generate_ssh(algorithm),
        })
        .await
        .map_err(|e| KeypairError::Generation(e.to_string()))??;
        Ok(generated)
    }

    /// Writes a new record and its name-index entry in one atomic apply; the apply decides races on the name.
    async fn insert(&self, record: &Keypair) -> Result<(), ServiceError> {
        let key = record::keypair_key(record);
        let value = record::encode(record)?;
        let index_key = record::name_index_key(&record.project_id, &record.name);
        let duplicate = || ServiceError::Duplicate(record.name.clone());
        loop {
            let current = self.store.get(Space::NameIndex, &index_key).await?;
            let mut entry: NameIndexEntry = match &current {
                Some(bytes) => record::decode(bytes)?,
                None => NameIndexEntry::default(),
            };
            match record.scope {
                Scope::User if entry.domain_key.is_some() => return Err(duplicate()),
                Scope::User if !entry.users.contains(&record.user_id) => entry.users.push(record.user_id.clone()),
                Scope::User => {}
                Scope::Domain if !entry.is_empty() => return Err(duplicate()),
                Scope::Domain => entry.domain_key = Some(record.id),
            }
            let encoded = record::encode(&entry)?;
            let index_op = match current {
                None => WriteOp::PutIfAbsent { space: Space::NameIndex, key: index_key.clone(), value: encoded },
                Some(expected) => {
                    WriteOp::Replace { space: Space::NameIndex, key: index_key.clone(), expected, value: encoded }
                }
            };
            let record_op = WriteOp::PutIfAbsent { space: Space::KeyPairs, key: key.clone(), value: value.clone() };
            match self.apply(vec![record_op, index_op]).await {
                Ok(()) => {
                    if record.scope == Scope::Domain {
                        self.count_domain_key(record, 1);
                    }
                    return Ok(());
                }
                Err(ApplyError::Conflict { op: 0 }) => return Err(duplicate()),
                // Another create or delete of this name in this project changed the index entry: look again.
                Err(ApplyError::Conflict { .. }) => {}
                Err(ApplyError::Store(error)) => return Err(error.into()),
            }
        }
    }

    /// The index operation that removes `record` from its name-index entry (none if it is not there).
    async fn index_release(&self, record: &Keypair) -> Result<Option<WriteOp>, ServiceError> {
        let key = record::name_index_key(&record.project_id, &record.name);
        let Some(current) = self.store.get(Space::NameIndex, &key).await? else { return Ok(None) };
        let mut entry: NameIndexEntry = record::decode(&current)?;
        match record.scope {
            Scope::User => entry.users.retain(|u| u != &record.user_id),
            Scope::Domain => entry.domain_key = None,
        }
        Ok(Some(if entry.is_empty() {
            WriteOp::Delete { space: Space::NameIndex, key, expected: current }
        } else {
            WriteOp::Replace { space: Space::NameIndex, key, expected: current, value: record::encode(&entry)? }
        }))
    }

    /// Looks `name` up as the user's own key, then as a `domain` key of the project (not read for a project
    /// without any). Returns the store key and the raw value, undecoded.
    async fn find_stored(
        &self,
        user_id: &str,
        project_id: &str,
        name: &str,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>, ServiceError> {
        let own = record::user_key(user_id, name);
        if let Some(value) = self.store.get(Space::KeyPairs, &own).await? {
            return Ok(Some((own, value)));
        }
        if !self.has_domain_keys(project_id) {
            return Ok(None);
        }
        let shared = record::domain_key(project_id, name);
        Ok(self.store.get(Space::KeyPairs, &shared).await?.map(|value| (shared, value)))
    }

    /// Whether `name` is visible to the user (see [`KeypairService::find_stored`]), without decoding it.
    async fn is_visible(&self, user_id: &str, project_id: &str, name: &str) -> Result<bool, ServiceError> {
        Ok(self.find_stored(user_id, project_id, name).await?.is_some())
    }

    /// [`KeypairService::find_stored`] with the record decoded: the store key, the raw value (for conditional
    /// writes) and the record.
    async fn find(
        &self,
        user_id: &str,
        project_id: &str,
        name: &str,
    ) -> Result<Option<(Vec<u8>, Vec<u8>, Keypair)>, ServiceError> {
        let Some((key, value)) = self.find_stored(user_id, project_id, name).await? else { return Ok(None) };
        let found = record::decode(&value)?;
        Ok(Some((key, value, found)))
    }
}

/// Custody failures keep the key pair's name: KMS errors and failed integrity checks are reported with it.
fn custody_error(error: CustodyError, name: &str) -> ServiceError {
    match error {
        CustodyError::Kms(error) => ServiceError::Kms { error, name: name.to_owned() },
        CustodyError::Integrity | CustodyError::Malformed(_) | CustodyError::UnknownMasterKey(_) => {
            tracing::error!(%error, keypair = name, "escrowed private key does not open");
            ServiceError::Undecryptable(name.to_owned())
        }
        other => ServiceError::Custody(other),
    }
}

/// Stored `domain` key pairs per project and per creator; only non-zero counts are kept.
#[derive(Debug, Default)]
struct DomainCounts {
    per_project: std::collections::HashMap<String, u64>,
    /// Domain keys count against their creator's quota.
    per_creator: std::collections::HashMap<String, u64>,
}

impl DomainCounts {
    fn add(&mut self, record: &Keypair, delta: i64) {
        for (map, key) in [(&mut self.per_project, &record.project_id), (&mut self.per_creator, &record.user_id)] {
            let count = map.entry(key.clone()).or_insert(0);
            *count = count.saturating_add_signed(delta);
            if *count == 0 {
                map.remove(key);
            }
        }
    }
}

/// A loaded record with its store key and raw value (for conditional writes).
struct Loaded {
    key: Vec<u8>,
    value: Vec<u8>,
    record: Keypair,
}

/// The identity a record's sealed key is bound to.
fn aad_of(record: &Keypair) -> Aad {
    Aad::of_record(record)
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

fn now_micros() -> i64 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4";

    fn service() -> Arc<KeypairService> {
        Arc::new(KeypairService::new(Arc::new(MemoryStore::new()), None, RsaKeyPool::disabled()))
    }

    fn import(user: &str, project: &str, name: &str, scope: Scope) -> NewKeypair {
        NewKeypair {
            name: name.into(),
            key_type: KeyType::Ssh,
            public_key: Some(KEY.into()),
            algorithm: None,
            user_id: user.into(),
            project_id: project.into(),
            scope,
            protection: None,
        }
    }

    #[tokio::test]
    async fn a_domain_key_conflicts_with_user_keys_of_its_project() {
        let service = service();
        service.create(import("alice", "p", "shared", Scope::User)).await.expect("user key");
        let clash = service.create(import("bob", "p", "shared", Scope::Domain)).await;
        assert!(matches!(clash, Err(ServiceError::Duplicate(_))), "{clash:?}");
        // Another project's domain key of that name is fine.
        service.create(import("bob", "q", "shared", Scope::Domain)).await.expect("other project");
        // And a user key created in q now clashes with q's domain key.
        let clash = service.create(import("carol", "q", "shared", Scope::User)).await;
        assert!(matches!(clash, Err(ServiceError::Duplicate(_))), "{clash:?}");
    }

    #[tokio::test]
    async fn domain_keys_are_visible_to_every_member_of_their_project() {
        let service = service();
        service.create(import("bob", "p", "team", Scope::Domain)).await.expect("domain key");
        service.create(import("alice", "p", "mine", Scope::User)).await.expect("user key");
        let names: Vec<String> =
            service.list_summaries("alice", "p", None, 10).await.expect("list").into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["mine", "team"]);
        assert_eq!(service.get("alice", "p", "team").await.expect("show").user_id, "bob");
        assert!(service.get("alice", "other", "team").await.is_err());
        service.delete("alice", "p", "team").await.expect("any member may delete");
        service.create(import("alice", "p", "team", Scope::User)).await.expect("name free again");
    }

    #[tokio::test]
    async fn lists_find_domain_keys_stored_before_a_restart() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let first = KeypairService::new(Arc::clone(&store), None, RsaKeyPool::disabled());
        first.create(import("bob", "p", "team", Scope::Domain)).await.expect("domain key");
        let restarted = KeypairService::new(store, None, RsaKeyPool::disabled());
        // Before the startup count, every project may have domain keys: lookups still find them.
        assert!(restarted.has_domain_keys("p") && restarted.has_domain_keys("q"));
        assert_eq!(restarted.get("alice", "p", "team").await.expect("found before the count").name, "team");
        restarted.load_domain_projects().await.expect("load");
        assert!(restarted.has_domain_keys("p") && !restarted.has_domain_keys("q"), "counted: only p has some");
        let names: Vec<String> =
            restarted.list_summaries("alice", "p", None, 10).await.expect("list").into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["team"]);
        restarted.delete("alice", "p", "team").await.expect("delete");
        assert!(!restarted.has_domain_keys("p"), "the last domain key of p is gone");
    }

    #[tokio::test]
    async fn domain_keys_count_against_their_creators_quota_before_and_after_the_startup_count() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let first = KeypairService::new(Arc::clone(&store), Some(2), RsaKeyPool::disabled());
        first.create(import("bob", "p", "d1", Scope::Domain)).await.expect("first");
        first.create(import("bob", "q", "d2", Scope::Domain)).await.expect("second, another project");
        let third = first.create(import("bob", "p", "d3", Scope::Domain)).await;
        assert!(matches!(third, Err(ServiceError::QuotaExceeded)), "{third:?}");
        let user_key = first.create(import("bob", "p", "u1", Scope::User)).await;
        assert!(matches!(user_key, Err(ServiceError::QuotaExceeded)), "{user_key:?}");
        first.create(import("alice", "p", "a1", Scope::Domain)).await.expect("alice has her own quota");

        for counted in [false, true] {
            let restarted = KeypairService::new(Arc::clone(&store), Some(2), RsaKeyPool::disabled());
            if counted {
                restarted.load_domain_projects().await.expect("load");
            }
            let refused = restarted.create(import("bob", "p", "d3", Scope::Domain)).await;
            assert!(matches!(refused, Err(ServiceError::QuotaExceeded)), "counted {counted}: {refused:?}");
        }
        let restarted = KeypairService::new(Arc::clone(&store), Some(2), RsaKeyPool::disabled());
        restarted.load_domain_projects().await.expect("load");
        restarted.delete("carol", "q", "d2").await.expect("any member of q deletes bob's key");
        restarted.create(import("bob", "p", "u1", Scope::User)).await.expect("room again");
        let full = restarted.create(import("bob", "p", "d3", Scope::Domain)).await;
        assert!(matches!(full, Err(ServiceError::QuotaExceeded)), "one domain + one user key: {full:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_user_and_domain_creates_of_one_name_let_exactly_one_win() {
        for round in 0..50 {
            let service = service();
            let name = format!("race{round}");
            let user = tokio::spawn({
                let (service, name) = (Arc::clone(&service), name.clone());
                async move { service.create(import("alice", "p", &name, Scope::User)).await.is_ok() }
            });
            let domain = tokio::spawn({
                let (service, name) = (Arc::clone(&service), name.clone());
                async move { service.create(import("bob", "p", &name, Scope::Domain)).await.is_ok() }
            });
            let wins = [user.await.expect("task"), domain.await.expect("task")];
            assert_eq!(wins.iter().filter(|w| **w).count(), 1, "round {round}: {wins:?}");
        }
    }

    #[test]
    fn timestamps_have_six_fraction_digits_and_no_zone() {
        assert_eq!(format_timestamp(1_795_462_200_123_456), "2026-11-23T19:30:00.123456");
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000000");
    }
}
