//! Storage: the `Store` trait every backend implements, and the backends.
//!
//! The trait is byte-oriented and knows nothing about key pairs; `record` defines what the service stores
//! and how store keys are built. A backend must make `apply` all-or-nothing and durable before it returns
//! `Ok`: a success answered to a client means the write survives a crash.

pub mod commit_hwm;
pub mod memory;
pub mod sled;

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

/// The conformance suite every `Store` implementation must pass.
#[cfg(test)]
pub(crate) mod suite {
    use super::*;

    fn put(space: Space, key: &str, value: &str) -> WriteOp {
        WriteOp::PutIfAbsent { space, key: key.into(), value: value.into() }
    }

    pub async fn run(store: &dyn Store) {
        get_returns_what_apply_wrote(store).await;
        put_if_absent_refuses_an_existing_key(store).await;
        apply_is_all_or_nothing(store).await;
        replace_and_delete_check_the_expected_value(store).await;
        spaces_are_separate(store).await;
        scan_is_ordered_bounded_and_seeks(store).await;
        count_counts_a_prefix(store).await;
        ids_are_unique_and_increasing(store).await;
        counters_add_within_their_bounds(store).await;
        get_many_answers_in_the_order_asked(store).await;
    }

    fn add(key: &str, delta: i64, max: Option<u64>) -> WriteOp {
        WriteOp::Add { key: key.into(), delta, max }
    }

    async fn counter(store: &dyn Store, key: &str) -> u64 {
        decode_counter(store.get(Space::Counters, key.as_bytes()).await.expect("get").as_deref()).expect("counter")
    }

    async fn counters_add_within_their_bounds(store: &dyn Store) {
        assert_eq!(counter(store, "j/1").await, 0, "an absent counter is 0");
        store.apply(vec![add("j/1", 2, None)]).await.expect("add");
        store.apply(vec![add("j/1", 1, Some(3))]).await.expect("up to max");
        assert_eq!(counter(store, "j/1").await, 3);
        let over = store.apply(vec![put(Space::KeyPairs, "j/rec", "r"), add("j/1", 1, Some(3))]).await;
        assert!(matches!(over, Err(ApplyError::Conflict { op: 1 })), "{over:?}");
        assert_eq!(store.get(Space::KeyPairs, b"j/rec").await.expect("get"), None, "nothing written");
        let below = store.apply(vec![add("j/1", -4, None)]).await;
        assert!(matches!(below, Err(ApplyError::Conflict { op: 0 })), "{below:?}");
        store.apply(vec![add("j/1", -3, None), add("j/2", 1, None)]).await.expect("down to 0");
        assert_eq!((counter(store, "j/1").await, counter(store, "j/2").await), (0, 1));
        let failed = store.apply(vec![add("j/2", 1, None), put(Space::KeyPairs, "a/1", "taken")]).await;
        assert!(matches!(failed, Err(ApplyError::Conflict { op: 1 })), "{failed:?}");
        assert_eq!(counter(store, "j/2").await, 1, "a failed batch adds nothing");
        store.apply(vec![add("j/3", 5, None)]).await.expect("add");
        let scanned = store.scan(Space::Counters, b"j/", None, 10).await.expect("scan counters");
        let scanned: Vec<(Vec<u8>, u64)> =
            scanned.into_iter().map(|(k, v)| (k, decode_counter(Some(&v)).expect("8 bytes"))).collect();
        assert_eq!(scanned, [(b"j/2".to_vec(), 1), (b"j/3".to_vec(), 5)], "counters scan like the other spaces");
    }

    async fn get_many_answers_in_the_order_asked(store: &dyn Store) {
        store
            .apply(vec![put(Space::NameIndex, "k/1", "one"), put(Space::NameIndex, "k/3", "three")])
            .await
            .expect("put");
        let keys = [b"k/3".to_vec(), b"k/2".to_vec(), b"k/1".to_vec()];
        let values = store.get_many(Space::NameIndex, &keys).await.expect("get_many");
        assert_eq!(values, [Some(b"three".to_vec()), None, Some(b"one".to_vec())]);
    }

    async fn get_returns_what_apply_wrote(store: &dyn Store) {
        store.apply(vec![put(Space::KeyPairs, "a/1", "one")]).await.expect("apply");
        assert_eq!(store.get(Space::KeyPairs, b"a/1").await.expect("get"), Some(b"one".to_vec()));
        assert_eq!(store.get(Space::KeyPairs, b"a/2").await.expect("get"), None);
    }

    async fn put_if_absent_refuses_an_existing_key(store: &dyn Store) {
        assert!(store.put_if_absent(Space::KeyPairs, b"b/1", b"first").await.expect("put"));
        assert!(!store.put_if_absent(Space::KeyPairs, b"b/1", b"second").await.expect("put"));
        assert_eq!(store.get(Space::KeyPairs, b"b/1").await.expect("get"), Some(b"first".to_vec()));
    }

    async fn apply_is_all_or_nothing(store: &dyn Store) {
        store.apply(vec![put(Space::KeyPairs, "c/exists", "x")]).await.expect("apply");
        let result = store
            .apply(vec![
                put(Space::KeyPairs, "c/new", "y"),
                put(Space::NameIndex, "c/new", "z"),
                put(Space::KeyPairs, "c/exists", "w"),
            ])
            .await;
        assert!(matches!(result, Err(ApplyError::Conflict { op: 2 })), "{result:?}");
        assert_eq!(store.get(Space::KeyPairs, b"c/new").await.expect("get"), None);
        assert_eq!(store.get(Space::NameIndex, b"c/new").await.expect("get"), None);
        assert_eq!(store.get(Space::KeyPairs, b"c/exists").await.expect("get"), Some(b"x".to_vec()));
    }

    async fn replace_and_delete_check_the_expected_value(store: &dyn Store) {
        store.apply(vec![put(Space::KeyPairs, "d/1", "v1")]).await.expect("apply");
        assert!(!store.replace(Space::KeyPairs, b"d/1", b"wrong", b"v2").await.expect("replace"));
        assert!(store.replace(Space::KeyPairs, b"d/1", b"v1", b"v2").await.expect("replace"));
        assert!(!store.replace(Space::KeyPairs, b"d/missing", b"v1", b"v2").await.expect("replace"));
        assert!(!store.delete(Space::KeyPairs, b"d/1", b"v1").await.expect("delete"));
        assert!(store.delete(Space::KeyPairs, b"d/1", b"v2").await.expect("delete"));
        assert_eq!(store.get(Space::KeyPairs, b"d/1").await.expect("get"), None);
        assert!(!store.delete(Space::KeyPairs, b"d/1", b"v2").await.expect("delete"));
    }

    async fn spaces_are_separate(store: &dyn Store) {
        store.apply(vec![put(Space::NameIndex, "e/1", "index")]).await.expect("apply");
        assert_eq!(store.get(Space::KeyPairs, b"e/1").await.expect("get"), None);
        assert!(store.put_if_absent(Space::KeyPairs, b"e/1", b"record").await.expect("put"));
    }

    async fn scan_is_ordered_bounded_and_seeks(store: &dyn Store) {
        let ops = ["f/c", "f/a", "f/b", "f/d", "g/a", "f\x7f"].iter().map(|k| put(Space::KeyPairs, k, k)).collect();
        store.apply(ops).await.expect("apply");
        let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| {
            entries.into_iter().map(|(k, _)| String::from_utf8(k).expect("utf8")).collect::<Vec<_>>()
        };
        let all = store.scan(Space::KeyPairs, b"f/", None, 100).await.expect("scan");
        assert_eq!(keys(all), ["f/a", "f/b", "f/c", "f/d"]);
        let page = store.scan(Space::KeyPairs, b"f/", Some(b"f/a"), 2).await.expect("scan");
        assert_eq!(keys(page), ["f/b", "f/c"]);
        let after_missing = store.scan(Space::KeyPairs, b"f/", Some(b"f/bb"), 10).await.expect("scan");
        assert_eq!(keys(after_missing), ["f/c", "f/d"]);
        let none = store.scan(Space::KeyPairs, b"f/", Some(b"f/d"), 10).await.expect("scan");
        assert!(none.is_empty());
        let zero = store.scan(Space::KeyPairs, b"f/", None, 0).await.expect("scan");
        assert!(zero.is_empty());
    }

    async fn count_counts_a_prefix(store: &dyn Store) {
        let ops = ["h/1", "h/2", "h/3", "i/1"].iter().map(|k| put(Space::KeyPairs, k, k)).collect();
        store.apply(ops).await.expect("apply");
        assert_eq!(store.count(Space::KeyPairs, b"h/").await.expect("count"), 3);
        assert_eq!(store.count(Space::KeyPairs, b"zz").await.expect("count"), 0);
    }

    async fn ids_are_unique_and_increasing(store: &dyn Store) {
        let mut last = 0;
        for _ in 0..2500 {
            let id = store.next_id().await.expect("id");
            assert!(id > last, "{id} after {last}");
            last = id;
        }
        assert!(store.peek_next_id().await.expect("peek") > last);
        store.advance_ids(100_000).await.expect("advance");
        assert_eq!(store.next_id().await.expect("id"), 100_000);
        store.advance_ids(5).await.expect("never backwards");
        assert_eq!(store.next_id().await.expect("id"), 100_001);
    }

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
