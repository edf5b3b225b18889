//! The embedded sled backend: one tree per `Space`, atomic batches as sled transactions over all trees,
//! acknowledged only after the log is flushed to disk.

use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{ApplyError, Space, Store, StoreError, WriteOp, prefix_end};

/// Ids are reserved on disk in blocks so that allocating one rarely costs a flush, and a restart never
/// hands out an id that may already have been used (it resumes after the reserved block).
const ID_BLOCK: u64 = 1024;
const ID_RESERVATION_KEY: &[u8] = b"id_reserved_until";

pub struct SledStore {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    meta: sled::Tree,
    ids: Mutex<IdBlock>,
}

struct IdBlock {
    next: u64,
    reserved_until: u64,
}

fn backend(error: sled::Error) -> StoreError {
    match error {
        sled::Error::Corruption { .. } => StoreError::Corrupt(error.to_string()),
        other => StoreError::Backend(other.to_string()),
    }
}

impl SledStore {
    /// Opens (or creates) the database in `dir`. The caller has already checked the directory.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).flush_every_ms(None).open().map_err(backend)?;
        let trees = Space::ALL.iter().map(|space| db.open_tree(space.name())).collect::<Result<Vec<_>, _>>();
        let trees = trees.map_err(backend)?;
        let meta = db.open_tree("meta").map_err(backend)?;
        let reserved = match meta.get(ID_RESERVATION_KEY).map_err(backend)? {
            None => 0,
            Some(bytes) => {
                let array: [u8; 8] = bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("id reservation is not 8 bytes".into()))?;
                u64::from_be_bytes(array)
            }
        };
        let ids = Mutex::new(IdBlock { next: reserved + 1, reserved_until: reserved });
        Ok(Self { db, trees, meta, ids })
    }

    fn tree(&self, space: Space) -> &sled::Tree {
        &self.trees[Self::space_index(space)]
    }

    fn space_index(space: Space) -> usize {
        Space::ALL.iter().position(|s| *s == space).unwrap_or_default()
    }
}

#[async_trait]
impl Store for SledStore {
    async fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(space).get(key).map_err(backend)?.map(|value| value.to_vec()))
    }

    async fn apply(&self, ops: Vec<WriteOp>) -> Result<(), ApplyError> {
        let trees: Vec<&sled::Tree> = self.trees.iter().collect();
        let result = trees.as_slice().transaction(|trees| {
            for (index, op) in ops.iter().enumerate() {
                let conflict = || ConflictableTransactionError::Abort(index);
                match op {
                    WriteOp::PutIfAbsent { space, key, value } => {
                        let tree = &trees[Self::space_index(*space)];
                        if tree.get(key)?.is_some() {
                            return Err(conflict());
                        }
                        tree.insert(key.as_slice(), value.as_slice())?;
                    }
                    WriteOp::Replace { space, key, expected, value } => {
                        let tree = &trees[Self::space_index(*space)];
                        if tree.get(key)?.as_deref() != Some(expected.as_slice()) {
                            return Err(conflict());
                        }
                        tree.insert(key.as_slice(), value.as_slice())?;
                    }
                    WriteOp::Delete { space, key, expected } => {
                        let tree = &trees[Self::space_index(*space)];
                        if tree.get(key)?.as_deref() != Some(expected.as_slice()) {
                            return Err(conflict());
                        }
                        tree.remove(key.as_slice())?;
                    }
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(op)) => return Err(ApplyError::Conflict { op }),
            Err(TransactionError::Storage(error)) => return Err(ApplyError::Store(backend(error))),
        }
        self.db.flush_async().await.map_err(backend)?;
        Ok(())
    }

    async fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        let end = prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded);
        self.tree(space)
            .range::<Vec<u8>, _>((start, end))
            .take(limit)
            .map(|entry| entry.map(|(key, value)| (key.to_vec(), value.to_vec())).map_err(backend))
            .collect()
    }

    async fn count(&self, space: Space, prefix: &[u8]) -> Result<u64, StoreError> {
        let mut count = 0;
        for key in self.tree(space).scan_prefix(prefix).keys() {
            key.map_err(backend)?;
            count += 1;
        }
        Ok(count)
    }

    async fn next_id(&self) -> Result<u64, StoreError> {
        let (id, reserve) = {
            let mut ids = self.ids.lock().map_err(|_| StoreError::Backend("id lock poisoned".into()))?;
            let id = ids.next;
            ids.next += 1;
            let reserve = if id > ids.reserved_until {
                ids.reserved_until = id + ID_BLOCK - 1;
                Some(ids.reserved_until)
            } else {
                None
            };
            (id, reserve)
        };
        if let Some(until) = reserve {
            // fetch_and_update keeps the stored reservation monotonic even if two blocks race to disk.
            self.meta
                .fetch_and_update(ID_RESERVATION_KEY, |old| {
                    let old = old.and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_be_bytes);
                    Some(old.max(until).to_be_bytes().to_vec())
                })
                .map_err(backend)?;
            self.db.flush_async().await.map_err(backend)?;
        }
        Ok(id)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await.map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sled_store_passes_the_store_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open");
        super::super::suite::run(&store).await;
    }

    #[tokio::test]
    async fn ids_continue_after_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = {
            let store = SledStore::open(dir.path()).expect("open");
            let mut last = 0;
            for _ in 0..10 {
                last = store.next_id().await.expect("id");
            }
            last
        };
        let store = SledStore::open(dir.path()).expect("reopen");
        assert!(store.next_id().await.expect("id") > first);
    }

    #[tokio::test]
    async fn writes_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStore::open(dir.path()).expect("open");
            assert!(store.put_if_absent(Space::KeyPairs, b"k", b"v").await.expect("put"));
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(store.get(Space::KeyPairs, b"k").await.expect("get"), Some(b"v".to_vec()));
    }
}
