//! The key pair repository: everything about how key pairs sit in the store and what must stay true when
//! they change — the record layout and codec (`layout`), the name index, record ids, the per-owner write
//! generations behind cached list pages, and the `domain`-key bookkeeping.
//!
//! The use cases (`keypairs`, `escrow`, `rewrap`) never build a store key or a `WriteOp`: they ask this
//! module to find, insert, replace or delete a key pair, and it keeps the record, its name-index entry and
//! the counters derived from them together in one atomic `Store::apply`.
//!
//! Nothing here is cached in the process: N replicas may share the store (design.md, "Growing past one
//! machine"). What used to be in-process bookkeeping lives in `Space::Counters`, updated by the write's own
//! batch and read on each request: the per-owner write generations that cached list pages are keyed by
//! ([`Repo::list_stamp`]), the number of `domain` key pairs per project (lookups and lists skip the
//! domain-key read for projects without any — most deployments have none), and the key pairs each user owns
//! for the quota, which a create checks with a bounded add in its own batch, so a quota is exact across
//! replicas.

pub mod layout;

use std::sync::Arc;

use layout::NameIndexEntry;

use super::ServiceError;
use crate::model::{Keypair, Scope};
use crate::page_cache::Stamp;
use crate::store::{ApplyError, Space, Store, WriteOp, decode_counter};

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

/// Why an insert wrote nothing.
#[derive(Debug)]
pub enum InsertError {
    /// The name is taken (the record or the name index says so).
    Duplicate,
    /// The owner has `quota` key pairs already.
    QuotaExceeded,
    Failed(ServiceError),
}

impl<E: Into<ServiceError>> From<E> for InsertError {
    fn from(error: E) -> Self {
        Self::Failed(error.into())
    }
}

#[derive(Clone)]
pub struct Repo {
    store: Arc<dyn Store>,
}

impl Repo {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The store itself, for what works on it as a whole (backup, readiness, its metrics).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A new record id: allocated before sealing (the AAD names it), never reused.
    pub async fn next_id(&self) -> Result<u64, ServiceError> {
        Ok(self.store.next_id().await?)
    }

    /// Builds the counters of a store written before they existed, or whose records were replaced by a
    /// backup import (once; a store whose counters are ready, or that another replica is preparing at the
    /// same moment, is left as it is). Run before serving: the counts are set to what the records say.
    pub async fn prepare(&self) -> Result<(), ServiceError> {
        loop {
            if self.counter(layout::COUNTERS_READY).await? > 0 {
                return Ok(());
            }
            let mut counts = layout::Counts::default();
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = self.walk(after.as_deref(), 1000).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.key.clone());
                page.iter().for_each(|loaded| counts.add(&loaded.record));
            }
            let mut ops = Vec::new();
            let mut current = std::collections::BTreeMap::new();
            for prefix in layout::COUNT_PREFIXES {
                let mut after: Option<Vec<u8>> = None;
                loop {
                    let page = self.store.scan(Space::Counters, prefix, after.as_deref(), 1000).await?;
                    let Some((last, _)) = page.last() else { break };
                    after = Some(last.clone());
                    for (key, value) in page {
                        current.insert(key, decode_counter(Some(&value))?);
                    }
                }
            }
            let mut targets = counts.into_values();
            for key in current.keys() {
                targets.entry(key.clone()).or_insert(0);
            }
            for (key, target) in targets {
                let now = current.get(&key).copied().unwrap_or(0);
                let delta = i64::try_from(target).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(i64::MAX);
                if delta != 0 {
                    ops.push(WriteOp::Add { key, delta, max: None });
                }
            }
            ops.push(WriteOp::Add { key: layout::COUNTERS_READY.to_vec(), delta: 1, max: Some(1) });
            match self.store.apply(ops).await {
                Ok(()) => return Ok(()),
                // Another replica prepared them first: look again.
                Err(ApplyError::Conflict { .. }) => {}
                Err(ApplyError::Store(error)) => return Err(error.into()),
            }
        }
    }

    async fn counter(&self, key: &[u8]) -> Result<u64, ServiceError> {
        Ok(decode_counter(self.store.get(Space::Counters, key).await?.as_deref())?)
    }

    /// What a list of `user_id` in `project_id` depends on: the generations of the user's keys and of the
    /// project's `domain` keys. Read it before listing; a page is current while the stamp is unchanged.
    pub async fn list_stamp(&self, user_id: &str, project_id: &str) -> Result<Stamp, ServiceError> {
        let keys = [
            layout::generation_key(&layout::user_prefix(user_id)),
            layout::generation_key(&layout::domain_prefix(project_id)),
        ];
        let values = self.store.get_many(Space::Counters, &keys).await?;
        let generation = |index: usize| decode_counter(values.get(index).and_then(Option::as_deref));
        Ok((generation(0)?, generation(1)?))
    }

    /// Every store write of the service: applies `ops` atomically together with a bump of the write
    /// generation of each owner whose key pairs they write, so that no replica serves a list page computed
    /// before this write once it is acknowledged.
    async fn apply(&self, mut ops: Vec<WriteOp>) -> Result<(), ApplyError> {
        let mut owners: Vec<Vec<u8>> = ops
            .iter()
            .filter_map(|op| match op.target() {
                (Space::KeyPairs, key) => layout::owner_prefix_of(key).map(layout::generation_key),
                _ => None,
            })
            .collect();
        owners.sort_unstable();
        owners.dedup();
        ops.extend(owners.into_iter().map(|key| WriteOp::Add { key, delta: 1, max: None }));
        self.store.apply(ops).await
    }

    /// Whether `project_id` has any `domain` key pair.
    pub(super) async fn has_domain_keys(&self, project_id: &str) -> Result<bool, ServiceError> {
        Ok(self.counter(&layout::domain_count_key(project_id)).await? > 0)
    }

    /// How many key pairs count against `user_id`'s quota: their `user` keys, and the `domain` keys they
    /// created in any project (kps-v3.md §2).
    pub async fn owned_by(&self, user_id: &str) -> Result<u64, ServiceError> {
        self.counter(&layout::owned_count_key(user_id)).await
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

    /// Writes a new record, its name-index entry and its counts in one atomic apply, which decides races on
    /// the name and, when `quota` is set, on the owner's last free place.
    pub async fn insert(&self, record: &Keypair, quota: Option<u64>) -> Result<(), InsertError> {
        let key = layout::keypair_key(record);
        let value = layout::encode(record)?;
        let index_key = layout::name_index_key(&record.project_id, &record.name);
        let duplicate = || InsertError::Duplicate;
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
            let owned_op = WriteOp::Add { key: layout::owned_count_key(&record.user_id), delta: 1, max: quota };
            let mut ops = vec![record_op, index_op, owned_op];
            if record.scope == Scope::Domain {
                ops.push(WriteOp::Add { key: layout::domain_count_key(&record.project_id), delta: 1, max: None });
            }
            match self.apply(ops).await {
                Ok(()) => return Ok(()),
                Err(ApplyError::Conflict { op: 0 }) => return Err(duplicate()),
                Err(ApplyError::Conflict { op: 2 }) => return Err(InsertError::QuotaExceeded),
                // Another create or delete of this name in this project changed the index entry: look again.
                Err(ApplyError::Conflict { .. }) => {}
                Err(ApplyError::Store(error)) => return Err(InsertError::Failed(error.into())),
            }
        }
    }

    /// Deletes the key pair `name` visible to `user_id` in `project_id`, with its name-index entry; `None`
    /// if there is none. Returns the deleted record.
    pub async fn delete(&self, user_id: &str, project_id: &str, name: &str) -> Result<Option<Keypair>, ServiceError> {
        loop {
            let Some(found) = self.find(user_id, project_id, name).await? else { return Ok(None) };
            let record = &found.record;
            let mut ops = vec![WriteOp::Delete { space: Space::KeyPairs, key: found.key, expected: found.value }];
            ops.extend(self.index_release(record).await?);
            ops.push(WriteOp::Add { key: layout::owned_count_key(&record.user_id), delta: -1, max: None });
            if record.scope == Scope::Domain {
                ops.push(WriteOp::Add { key: layout::domain_count_key(&record.project_id), delta: -1, max: None });
            }
            match self.apply(ops).await {
                Ok(()) => return Ok(Some(found.record)),
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
        if !self.has_domain_keys(project_id).await? {
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
        let shared = if self.has_domain_keys(project_id).await? {
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
