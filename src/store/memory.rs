//! An in-memory `Store` for unit tests and ephemeral runs. Same semantics as the durable backends, no
//! durability.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{ApplyError, Space, Store, StoreError, WriteOp};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    spaces: HashMap<Space, BTreeMap<Vec<u8>, Vec<u8>>>,
    last_id: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Backend("memory store lock poisoned".into()))
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock()?.spaces.get(&space).and_then(|tree| tree.get(key).cloned()))
    }

    async fn apply(&self, ops: Vec<WriteOp>) -> Result<(), ApplyError> {
        let mut inner = self.lock()?;
        let mut outcomes = Vec::with_capacity(ops.len());
        for (index, op) in ops.iter().enumerate() {
            let (space, key) = op.target();
            let current = inner.spaces.get(&space).and_then(|tree| tree.get(key));
            let outcome = op.outcome(current.map(Vec::as_slice)).ok_or(ApplyError::Conflict { op: index })?;
            outcomes.push(outcome);
        }
        for (op, outcome) in ops.into_iter().zip(outcomes) {
            let (space, key) = op.target();
            let tree = inner.spaces.entry(space).or_default();
            match outcome {
                Some(value) => tree.insert(key.to_vec(), value),
                None => tree.remove(key),
            };
        }
        Ok(())
    }

    async fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let inner = self.lock()?;
        let Some(tree) = inner.spaces.get(&space) else { return Ok(Vec::new()) };
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        Ok(tree
            .range((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    async fn count(&self, space: Space, prefix: &[u8]) -> Result<u64, StoreError> {
        let inner = self.lock()?;
        let Some(tree) = inner.spaces.get(&space) else { return Ok(0) };
        let count = tree.range(prefix.to_vec()..).take_while(|(key, _)| key.starts_with(prefix)).count();
        Ok(count as u64)
    }

    async fn next_id(&self) -> Result<u64, StoreError> {
        let mut inner = self.lock()?;
        inner.last_id += 1;
        Ok(inner.last_id)
    }

    async fn peek_next_id(&self) -> Result<u64, StoreError> {
        Ok(self.lock()?.last_id + 1)
    }

    async fn advance_ids(&self, next: u64) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        inner.last_id = inner.last_id.max(next.saturating_sub(1));
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_passes_the_store_suite() {
        super::super::suite::run(&super::MemoryStore::new()).await;
    }
}
