//! The key pair repository: everything about how key pairs sit in the store and what must stay true when
//! they change — the record layout and codec (`layout`), the name index, record ids, the per-owner write
//! generations behind cached list pages, and the `domain`-key bookkeeping.
//!
//! The use cases (`keypairs`, `escrow`, `rewrap`) never build a store key or a `WriteOp`: they ask this
//! module to find, insert, replace or delete a key pair, and it keeps the record and its name-index entry
//! together in one atomic `Store::apply`. Every write goes through [`Repo::apply`], which bumps the
//! generations of the owners written before the caller can answer (design.md, "Growing past one machine":
//! with a single process owning the store this is exact; a replicated store keeps them in the database).

pub mod layout;

use std::sync::Arc;

use layout::NameIndexEntry;

use super::ServiceError;
use crate::model::{Keypair, Scope};
use crate::page_cache::{Generations, Stamp};
use crate::store::{ApplyError, Space, Store, StoreError, WriteOp};

/// A loaded record with its store key and raw value (for conditional writes).
pub struct Loaded {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub record: Keypair,
}

/// A page of stored key pairs in name order, and the name of the last one (to continue after it).
pub struct StoredRun {
    pub values: Vec<Vec<u8>>,
    pub last_name: Option<Vec<u8>>,
}

pub struct Repo {
    store: Arc<dyn Store>,
    /// Write generations per key owner, for the list page cache (`page_cache`).
    generations: Generations,
    /// The stored `domain` key pairs counted per project and per creator, once at startup
    /// (`load_domain_projects`; until then `None`: every project may have some, and quotas count them from
    /// the store). Lookups and lists skip the domain-key read or scan for projects not in here: most
    /// deployments have none. All domain-key writes go through this repository, which keeps the counts exact.
    domain_counts: std::sync::Mutex<Option<DomainCounts>>,
}

impl Repo {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, generations: Generations::default(), domain_counts: Default::default() }
    }

    /// The store itself, for what works on it as a whole (backup, readiness, its metrics).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A new record id: allocated before sealing (the AAD names it), never reused.
    pub async fn next_id(&self) -> Result<u64, ServiceError> {
        Ok(self.store.next_id().await?)
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
                let found: Keypair = layout::decode(&value)?;
                counts.add(&found, 1);
            }
        }
        Ok(counts)
    }

    /// What a list of `user_id` in `project_id` depends on: the generations of the user's keys and of the
    /// project's `domain` keys. Read it before listing; a page is current while the stamp is unchanged.
    pub fn list_stamp(&self, user_id: &str, project_id: &str) -> Stamp {
        (self.generations.get(&layout::user_prefix(user_id)), self.generations.get(&layout::domain_prefix(project_id)))
    }

    /// Every store write of the service: applies `ops` atomically, then marks the owners of the key pairs
    /// written stale for cached list pages (before the caller can answer).
    async fn apply(&self, ops: Vec<WriteOp>) -> Result<(), ApplyError> {
        let owners: Vec<Vec<u8>> = ops
            .iter()
            .filter_map(|op| match op.target() {
                (Space::KeyPairs, key) => layout::owner_prefix_of(key).map(<[u8]>::to_vec),
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

    pub(super) fn has_domain_keys(&self, project_id: &str) -> bool {
        // Not counted yet, or a poisoned lock (a panic elsewhere): look, to stay correct.
        self.domain_counts
            .lock()
            .ok()
            .and_then(|counts| counts.as_ref().map(|counts| counts.per_project.contains_key(project_id)))
            .unwrap_or(true)
    }

    /// How many key pairs count against `user_id`'s quota: their `user` keys, and the `domain` keys they
    /// created in any project (kps-v3.md §2).
    pub async fn owned_by(&self, user_id: &str) -> Result<u64, ServiceError> {
        let own = self.store.count(Space::KeyPairs, &layout::user_prefix(user_id)).await?;
        Ok(own + self.domain_keys_created_by(user_id).await?)
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

    /// The uniqueness pre-check (kps-v3.md §2): whether `name` is taken for a new key of `scope` — by the
    /// owner's keys or the project's `domain` keys, and for a new `domain` key also by any `user` key of that
    /// name created in the project.
    pub async fn name_taken(
        &self,
        user_id: &str,
        project_id: &str,
        name: &str,
        scope: Scope,
    ) -> Result<bool, ServiceError> {
        if self.is_visible(user_id, project_id, name).await? {
            return Ok(true);
        }
        if scope == Scope::Domain
            && let Some(bytes) = self.store.get(Space::NameIndex, &layout::name_index_key(project_id, name)).await?
        {
            return Ok(!layout::decode::<NameIndexEntry>(&bytes)?.is_empty());
        }
        Ok(false)
    }

    /// Writes a new record and its name-index entry in one atomic apply; the apply decides races on the name.
    pub async fn insert(&self, record: &Keypair) -> Result<(), ServiceError> {
        let key = layout::keypair_key(record);
        let value = layout::encode(record)?;
        let index_key = layout::name_index_key(&record.project_id, &record.name);
        let duplicate = || ServiceError::Duplicate(record.name.clone());
        loop {
            let current = self.store.get(Space::NameIndex, &index_key).await?;
            let mut entry: NameIndexEntry = match &current {
                Some(bytes) => layout::decode(bytes)?,
                None => NameIndexEntry::default(),
            };
            match record.scope {
                Scope::User if entry.domain_key.is_some() => return Err(duplicate()),
                Scope::User if !entry.users.contains(&record.user_id) => entry.users.push(record.user_id.clone()),
                Scope::User => {}
                Scope::Domain if !entry.is_empty() => return Err(duplicate()),
                Scope::Domain => entry.domain_key = Some(record.id),
            }
            let encoded = layout::encode(&entry)?;
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

    /// Deletes the key pair `name` visible to `user_id` in `project_id`, with its name-index entry; `None`
    /// if there is none. Returns the deleted record.
    pub async fn delete(&self, user_id: &str, project_id: &str, name: &str) -> Result<Option<Keypair>, ServiceError> {
        loop {
            let Some(found) = self.find(user_id, project_id, name).await? else { return Ok(None) };
            let mut ops = vec![WriteOp::Delete { space: Space::KeyPairs, key: found.key, expected: found.value }];
            ops.extend(self.index_release(&found.record).await?);
            match self.apply(ops).await {
                Ok(()) => {
                    if found.record.scope == Scope::Domain {
                        self.count_domain_key(&found.record, -1);
                    }
                    return Ok(Some(found.record));
                }
                // The record or its index entry changed under us: look again.
                Err(ApplyError::Conflict { .. }) => {}
                Err(ApplyError::Store(error)) => return Err(error.into()),
            }
        }
    }

    /// The index operation that removes `record` from its name-index entry (none if it is not there).
    async fn index_release(&self, record: &Keypair) -> Result<Option<WriteOp>, ServiceError> {
        let key = layout::name_index_key(&record.project_id, &record.name);
        let Some(current) = self.store.get(Space::NameIndex, &key).await? else { return Ok(None) };
        let mut entry: NameIndexEntry = layout::decode(&current)?;
        match record.scope {
            Scope::User => entry.users.retain(|u| u != &record.user_id),
            Scope::Domain => entry.domain_key = None,
        }
        Ok(Some(if entry.is_empty() {
            WriteOp::Delete { space: Space::NameIndex, key, expected: current }
        } else {
            WriteOp::Replace { space: Space::NameIndex, key, expected: current, value: layout::encode(&entry)? }
        }))
    }

    /// Writes `record` over `loaded` if it is unchanged; `false` when someone else changed it first.
    pub async fn replace(&self, loaded: &Loaded, record: &Keypair) -> Result<bool, ServiceError> {
        let op = WriteOp::Replace {
            space: Space::KeyPairs,
            key: loaded.key.clone(),
            expected: loaded.value.clone(),
            value: layout::encode(record)?,
        };
        match self.apply(vec![op]).await {
            Ok(()) => Ok(true),
            Err(ApplyError::Conflict { .. }) => Ok(false),
            Err(ApplyError::Store(error)) => Err(error.into()),
        }
    }

    /// Looks `name` up as the user's own key, then as a `domain` key of the project (not read for a project
    /// without any). Returns the store key and the raw value, undecoded.
    async fn find_stored(
        &self,
        user_id: &str,
        project_id: &str,
        name: &str,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>, ServiceError> {
        let own = layout::user_key(user_id, name);
        if let Some(value) = self.store.get(Space::KeyPairs, &own).await? {
            return Ok(Some((own, value)));
        }
        if !self.has_domain_keys(project_id) {
            return Ok(None);
        }
        let shared = layout::domain_key(project_id, name);
        Ok(self.store.get(Space::KeyPairs, &shared).await?.map(|value| (shared, value)))
    }

    /// Whether `name` is visible to the user (see [`Repo::find_stored`]), without decoding it.
    pub async fn is_visible(&self, user_id: &str, project_id: &str, name: &str) -> Result<bool, ServiceError> {
        Ok(self.find_stored(user_id, project_id, name).await?.is_some())
    }

    /// The key pair `name` visible to `user_id` in `project_id` (their own, else a `domain` key of the
    /// project), with its store key and raw value for conditional writes.
    pub async fn find(&self, user_id: &str, project_id: &str, name: &str) -> Result<Option<Loaded>, ServiceError> {
        let Some((key, value)) = self.find_stored(user_id, project_id, name).await? else { return Ok(None) };
        let record = layout::decode(&value)?;
        Ok(Some(Loaded { key, value, record }))
    }

    /// The current version of a record loaded before (`None` once deleted).
    pub async fn reload(&self, loaded: Loaded) -> Result<Option<Loaded>, ServiceError> {
        let Some(value) = self.store.get(Space::KeyPairs, &loaded.key).await? else { return Ok(None) };
        Ok(Some(Loaded { key: loaded.key, record: layout::decode(&value)?, value }))
    }

    /// Up to `limit` stored key pairs of every owner after the store key `after`, in store order (a walk
    /// over the whole store, e.g. `kps rewrap`), with the key to continue after.
    pub async fn walk(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<Loaded>, ServiceError> {
        let page = self.store.scan(Space::KeyPairs, b"", after, limit).await?;
        page.into_iter().map(|(key, value)| Ok(Loaded { key, record: layout::decode(&value)?, value })).collect()
    }

    /// Up to `limit` key pairs visible to `user_id` in `project_id` whose name is after `after` (exclusive;
    /// need not exist), ascending by name, as stored, with the name of the last one.
    pub async fn page_after(
        &self,
        user_id: &str,
        project_id: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<StoredRun, ServiceError> {
        let user_prefix = layout::user_prefix(user_id);
        let domain_prefix = layout::domain_prefix(project_id);
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
        let mut values = Vec::with_capacity(limit.min(64));
        // The store key of the last item taken and the length of its prefix (moved, not copied).
        let mut last: Option<(Vec<u8>, usize)> = None;
        while values.len() < limit {
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
                values.push(value);
                last = Some((key, prefix_len));
            }
        }
        let last_name = last.map(|(key, prefix_len)| key[prefix_len..].to_vec());
        Ok(StoredRun { values, last_name })
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
