//! The use cases of kps, shared by every API (Nova v2/v2.1 and KPS V3), knowing no HTTP and no catalogue
//! codes: `keypairs` (create/import, show, list, delete with quotas and the name rules of `spec/kps-v3.md`
//! §2), `escrow` (private-key import, export and clear), `rewrap`, `backup` and `master_keys` (the keyring
//! check at startup), all over `repo` — how key pairs sit in the store.
//!
//! The HTTP edge has already authenticated the caller, validated the request and checked policy; this
//! layer decides everything that needs the store, custody or the KMS. Key pairs belong to their owner
//! *user*; `domain` key pairs of the request's project are visible too. A failed create writes nothing.

pub mod backup;
mod escrow;
mod keypairs;
pub mod master_keys;
pub mod repo;
mod rewrap;

use std::sync::Arc;

pub use keypairs::{Created, EncryptionRequest, NewKeypair, ProtectionRequest, StoredPage, format_timestamp};
pub use rewrap::{RewrapOptions, RewrapReport, RewrapTarget};

use crate::custody::{Custody, CustodyError};
use crate::keypair::KeypairError;
use crate::keypair::pool::RsaKeyPool;
use crate::kms::KmsError;
use crate::model::Keypair;
use crate::page_cache::Stamp;
use crate::store::{Store, StoreError};
use repo::Repo;

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

pub struct KeypairService {
    /// How key pairs sit in the store: layout, name index, generations, domain-key counts.
    repo: Repo,
    /// Key pairs per owner; `None` = unlimited.
    quota: Option<u64>,
    /// `keys.min_rsa_bits`: shorter RSA keys are neither imported nor generated (KPS.1204).
    min_rsa_bits: usize,
    rsa_pool: RsaKeyPool,
    /// The encryptors (the `default` one opens older records even when new `default` seals are disabled).
    custody: Option<Custody>,
    /// `custody.allow_default`: new seals may use the `default` encryptor.
    allow_default: bool,
}

/// A policy check run on a record as soon as it is loaded (errors.md §4 step 8: `creator`, domain keys).
pub type RecordCheck<'a> = &'a (dyn Fn(&Keypair) -> Result<(), ServiceError> + Send + Sync);

impl KeypairService {
    pub fn new(store: Arc<dyn Store>, quota: Option<u64>, rsa_pool: RsaKeyPool) -> Self {
        Self {
            repo: Repo::new(store),
            quota,
            min_rsa_bits: crate::keypair::DEFAULT_MIN_RSA_BITS,
            rsa_pool,
            custody: None,
            allow_default: false,
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
        self.repo.store().group_commit_stats()
    }

    /// Whether the store takes writes and answers a trivial read (`GET /readyz`).
    pub async fn ready(&self) -> Result<(), ServiceError> {
        Ok(self.repo.store().ready().await?)
    }

    /// Streams the backup of the whole store (spec/interface.md, backups) into `sender`, as a task that owns
    /// what it reads (the admin API runs it beside the response that streams the lines).
    pub fn export_backup(
        &self,
        sender: tokio::sync::mpsc::Sender<Vec<u8>>,
    ) -> impl std::future::Future<Output = Result<(), backup::BackupError>> + Send + 'static {
        let store = Arc::clone(self.repo.store());
        async move { backup::export(store.as_ref(), &sender).await }
    }

    /// Readies the store for serving: builds the counters of a store written before they existed (once).
    pub async fn prepare(&self) -> Result<(), ServiceError> {
        self.repo.prepare().await
    }

    /// What a list of `user_id` in `project_id` depends on: the generations of the user's keys and of the
    /// project's `domain` keys, read from the store. Read it before listing; a page is current while the
    /// stamp is unchanged.
    pub async fn list_stamp(&self, user_id: &str, project_id: &str) -> Result<Stamp, ServiceError> {
        self.repo.list_stamp(user_id, project_id).await
    }
}

/// Custody failures keep the key pair's name: KMS errors and failed integrity checks are reported with it.
fn custody_error(error: CustodyError, name: &str) -> ServiceError {
    match error {
        CustodyError::Kms(error) => ServiceError::Kms { error, name: name.to_owned() },
        CustodyError::KeyringSealed => keyring_sealed(name),
        CustodyError::Integrity | CustodyError::Malformed(_) | CustodyError::UnknownMasterKey(_) => {
            tracing::error!(%error, keypair = name, "escrowed private key does not open");
            ServiceError::Undecryptable(name.to_owned())
        }
        other => ServiceError::Custody(other),
    }
}

/// `default` custody while the master keyring waits for the KMS (auto-unseal): KPS.1801, the KMS being what
/// it waits for.
fn keyring_sealed(name: &str) -> ServiceError {
    ServiceError::Kms {
        error: KmsError::Unavailable { detail: crate::custody::KEYRING_SEALED.to_owned() },
        name: name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{KeyType, Scope};
    use crate::store::Space;
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
        // The counts live in the store with the records: a restart (or another replica) reads them.
        assert!(
            restarted.repo.has_domain_keys("p").await.expect("p")
                && !restarted.repo.has_domain_keys("q").await.expect("q")
        );
        assert_eq!(restarted.get("alice", "p", "team").await.expect("found").name, "team");
        let names: Vec<String> =
            restarted.list_summaries("alice", "p", None, 10).await.expect("list").into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["team"]);
        restarted.delete("alice", "p", "team").await.expect("delete");
        assert!(!restarted.repo.has_domain_keys("p").await.expect("p"), "the last domain key of p is gone");
    }

    #[tokio::test]
    async fn a_write_through_one_replica_changes_the_list_stamp_another_reads() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let a = KeypairService::new(Arc::clone(&store), None, RsaKeyPool::disabled());
        let b = KeypairService::new(store, None, RsaKeyPool::disabled());
        let before = b.list_stamp("alice", "p").await.expect("stamp");
        a.create(import("alice", "p", "k1", Scope::User)).await.expect("user key");
        let after_user = b.list_stamp("alice", "p").await.expect("stamp");
        assert_ne!(after_user, before, "alice's own write");
        a.create(import("bob", "p", "team", Scope::Domain)).await.expect("domain key");
        let after_domain = b.list_stamp("alice", "p").await.expect("stamp");
        assert_ne!(after_domain, after_user, "a domain key of alice's project");
        a.create(import("bob", "q", "other", Scope::Domain)).await.expect("domain key elsewhere");
        assert_eq!(b.list_stamp("alice", "p").await.expect("stamp"), after_domain, "other owners leave it");
        a.delete("alice", "p", "k1").await.expect("delete");
        assert_ne!(b.list_stamp("alice", "p").await.expect("stamp"), after_domain, "a delete");
    }

    #[tokio::test]
    async fn a_store_written_before_counters_gets_them_once_at_prepare() {
        use crate::store::WriteOp;
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let mut ops = Vec::new();
        for (id, user, name, scope) in [(1, "bob", "team", Scope::Domain), (2, "bob", "mine", Scope::User)] {
            let record = Keypair { scope, ..Keypair::sample(id, user, name) };
            let key = repo::layout::keypair_key(&record);
            ops.push(WriteOp::PutIfAbsent {
                space: Space::KeyPairs,
                key,
                value: repo::layout::encode(&record).expect("encode"),
            });
        }
        store.apply(ops).await.expect("records without counters");
        let service = KeypairService::new(Arc::clone(&store), Some(3), RsaKeyPool::disabled());
        assert!(!service.repo.has_domain_keys("p").await.expect("p"), "no counters yet");
        service.prepare().await.expect("prepare");
        assert!(service.repo.has_domain_keys("p").await.expect("p"));
        assert_eq!(service.repo.owned_by("bob").await.expect("owned"), 2);
        service.prepare().await.expect("a second prepare changes nothing");
        assert_eq!(service.repo.owned_by("bob").await.expect("owned"), 2);
        service.create(import("bob", "p", "third", Scope::User)).await.expect("third of three");
        let fourth = service.create(import("bob", "p", "fourth", Scope::User)).await;
        assert!(matches!(fourth, Err(ServiceError::QuotaExceeded)), "{fourth:?}");
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
                restarted.prepare().await.expect("load");
            }
            let refused = restarted.create(import("bob", "p", "d3", Scope::Domain)).await;
            assert!(matches!(refused, Err(ServiceError::QuotaExceeded)), "counted {counted}: {refused:?}");
        }
        let restarted = KeypairService::new(Arc::clone(&store), Some(2), RsaKeyPool::disabled());
        restarted.prepare().await.expect("load");
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
