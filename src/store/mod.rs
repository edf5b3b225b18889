//! Storage: the `Store` trait every backend implements, and the backends.
//!
//! The trait is byte-oriented and knows nothing about key pairs; `record` defines what the service stores
//! and how store keys are built. A backend must make `apply` all-or-nothing and durable before it returns
//! `Ok`: a success answered to a client means the write survives a crash.

pub mod commit_hwm;
pub mod memory;
pub mod postgres;
pub mod sled;
#[doc(hidden)]
pub mod suite;

use async_trait::async_trait;

/// The key spaces of the store (a sled tree each). Keys are only unique within a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// Key pair records, keyed by `service::repo::layout::keypair_key`.
    KeyPairs,
    /// The `(project_id, name)` name index of design.md.
    NameIndex,
    /// Facts about the store as a whole: the master key verifiers (`service::master_keys`).
    Meta,
    /// Counters, written only by [`WriteOp::Add`]: derived data (per-owner write generations, key pair
    /// counts) that a write updates in its own atomic batch, so that every replica reads them current.
    Counters,
}

impl Space {
    /// The spaces that hold data of their own (backups carry them); `Counters` is derived from them.
    pub const ALL: [Space; 3] = [Space::KeyPairs, Space::NameIndex, Space::Meta];

    pub fn name(self) -> &'static str {
        match self {
            Space::KeyPairs => "keypairs",
            Space::NameIndex => "name_index",
            Space::Meta => "store_meta",
            Space::Counters => "counters",
        }
    }
}

/// One conditional write of an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Insert `value` under `key`; fails if the key exists.
    PutIfAbsent { space: Space, key: Vec<u8>, value: Vec<u8> },
    /// Overwrite `key`; fails unless its current value is exactly `expected`.
    Replace { space: Space, key: Vec<u8>, expected: Vec<u8>, value: Vec<u8> },
    /// Remove `key`; fails unless its current value is exactly `expected`.
    Delete { space: Space, key: Vec<u8>, expected: Vec<u8> },
    /// Add `delta` to the counter `key` of `Space::Counters` (an absent counter is 0); fails if the result
    /// would be negative or above `max`. A counter that reaches 0 may be removed. At most one operation of a
    /// batch may name a given counter.
    Add { key: Vec<u8>, delta: i64, max: Option<u64> },
}

/// A counter's stored form: 8 bytes, big-endian.
pub fn encode_counter(value: u64) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

/// A counter's value from its stored form (absent = 0).
pub fn decode_counter(stored: Option<&[u8]>) -> Result<u64, StoreError> {
    match stored {
        None => Ok(0),
        Some(bytes) => <[u8; 8]>::try_from(bytes)
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt("a counter is not 8 bytes".into())),
    }
}

impl WriteOp {
    /// The space and key the operation is about.
    pub fn target(&self) -> (Space, &[u8]) {
        match self {
            WriteOp::PutIfAbsent { space, key, .. }
            | WriteOp::Replace { space, key, .. }
            | WriteOp::Delete { space, key, .. } => (*space, key),
            WriteOp::Add { key, .. } => (Space::Counters, key),
        }
    }

    /// What the operation leaves under its key, given the key's `current` value: `Some(Some(value))`, or
    /// `Some(None)` for no key; `None` when its precondition does not hold.
    pub fn outcome(&self, current: Option<&[u8]>) -> Option<Option<Vec<u8>>> {
        match self {
            WriteOp::PutIfAbsent { value, .. } => current.is_none().then(|| Some(value.clone())),
            WriteOp::Replace { expected, value, .. } => {
                (current == Some(expected.as_slice())).then(|| Some(value.clone()))
            }
            WriteOp::Delete { expected, .. } => (current == Some(expected.as_slice())).then_some(None),
            WriteOp::Add { delta, max, .. } => {
                let next = decode_counter(current).ok()?.checked_add_signed(*delta)?;
                if max.is_some_and(|max| next > max) {
                    return None;
                }
                Some((next > 0).then(|| encode_counter(next)))
            }
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend failure: {0}")]
    Backend(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The store takes no writes (KPS.9005): for sled, a write or sync failed and only a restart recovers;
    /// the outcome of the writes that were waiting then is unknown.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store is not whole (it lost acknowledged writes); never served.
    #[error("damaged store: {0}")]
    Damaged(String),
}

/// Why `Store::apply` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The precondition of the operation at this index of the batch did not hold.
    #[error("precondition of operation {op} failed")]
    Conflict { op: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A key/value store with atomic conditional batches and ordered prefix scans.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// [`Store::get`] of several keys of one space, in their order (one round trip where that matters).
    async fn get_many(&self, space: Space, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(space, key).await?);
        }
        Ok(values)
    }

    /// Applies every operation or none, durably. On a failed precondition nothing is written and the
    /// index of the first failing operation is returned.
    async fn apply(&self, ops: Vec<WriteOp>) -> Result<(), ApplyError>;

    /// Up to `limit` entries whose key starts with `prefix` and is strictly greater than `after` (when
    /// given), in ascending key order. Must seek, not scan from the start of the prefix.
    async fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;

    /// Number of keys starting with `prefix`.
    async fn count(&self, space: Space, prefix: &[u8]) -> Result<u64, StoreError>;

    /// A fresh record id: positive, unique across the store's life, never reused after a restart.
    async fn next_id(&self) -> Result<u64, StoreError>;

    /// The id `next_id` would hand out next (ids below it may have been used).
    async fn peek_next_id(&self) -> Result<u64, StoreError>;

    /// Moves the id counter so that every id handed out from now on is at least `next` (never backwards).
    async fn advance_ids(&self, next: u64) -> Result<(), StoreError>;

    /// Makes everything written so far durable (used at shutdown).
    async fn flush(&self) -> Result<(), StoreError>;

    /// Whether the store takes writes and answers a trivial read (`GET /readyz`, which bounds the wait).
    async fn ready(&self) -> Result<(), StoreError> {
        self.get(Space::KeyPairs, b"").await.map(|_| ())
    }

    /// The group committer's counters, for backends that have one (`GET /metrics`).
    fn group_commit_stats(&self) -> Option<&sled::CommitStats> {
        None
    }

    async fn put_if_absent(&self, space: Space, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        conflict_as_false(
            self.apply(vec![WriteOp::PutIfAbsent { space, key: key.to_vec(), value: value.to_vec() }]).await,
        )
    }

    async fn replace(&self, space: Space, key: &[u8], expected: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        let op = WriteOp::Replace { space, key: key.to_vec(), expected: expected.to_vec(), value: value.to_vec() };
        conflict_as_false(self.apply(vec![op]).await)
    }

    async fn delete(&self, space: Space, key: &[u8], expected: &[u8]) -> Result<bool, StoreError> {
        let op = WriteOp::Delete { space, key: key.to_vec(), expected: expected.to_vec() };
        conflict_as_false(self.apply(vec![op]).await)
    }
}

fn conflict_as_false(result: Result<(), ApplyError>) -> Result<bool, StoreError> {
    match result {
        Ok(()) => Ok(true),
        Err(ApplyError::Conflict { .. }) => Ok(false),
        Err(ApplyError::Store(error)) => Err(error),
    }
}

/// The first key after every key that starts with `prefix` (None when there is none).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
