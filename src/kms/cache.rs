//! The per-process key resolution cache (spec/kms-huawei.md §3): key reference → what the KMS said about
//! the key (id, alias, state, spec), kept for a TTL (60 s), at most 1,024 entries, least recently used
//! evicted first. Only found keys are cached; a miss always asks the KMS again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::transport::Failure;
use super::{KeyRef, KmsError, ResolvedKey};

pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
pub const DEFAULT_CAPACITY: usize = 1024;

struct Entry {
    key: ResolvedKey,
    stored_at: Instant,
    last_used: u64,
}

struct Entries {
    map: HashMap<KeyRef, Entry>,
    clock: u64,
}

pub struct KeyCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<Entries>,
}

impl KeyCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { ttl, capacity: capacity.max(1), entries: Mutex::new(Entries { map: HashMap::new(), clock: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the map inconsistent (each operation is one map call).
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached resolution of `key`, if fresh.
    pub fn get(&self, key: &KeyRef) -> Option<ResolvedKey> {
        let mut entries = self.lock();
        entries.clock += 1;
        let now = entries.clock;
        match entries.map.get_mut(key) {
            Some(entry) if entry.stored_at.elapsed() < self.ttl => {
                entry.last_used = now;
                Some(entry.key.clone())
            }
            Some(_) => {
                entries.map.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: KeyRef, resolved: ResolvedKey) {
        let mut entries = self.lock();
        entries.clock += 1;
        let now = entries.clock;
        if !entries.map.contains_key(&key) && entries.map.len() >= self.capacity {
            // Linear scan: at 1,024 entries this is cheaper than the KMS round trip that precedes an insert.
            let oldest = entries.map.iter().min_by_key(|(_, entry)| entry.last_used).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                entries.map.remove(&oldest);
            }
        }
        entries.map.insert(key, Entry { key: resolved, stored_at: Instant::now(), last_used: now });
    }

    /// The cached resolution of `key`, else `lookup`'s answer, which is cached if it found the key.
    pub async fn get_or_resolve<F>(&self, key: &KeyRef, lookup: impl FnOnce() -> F) -> Result<ResolvedKey, KmsError>
    where
        F: Future<Output = Result<ResolvedKey, KmsError>>,
    {
        if let Some(found) = self.get(key) {
            return Ok(found);
        }
        let found = lookup().await?;
        self.insert(key.clone(), found.clone());
        Ok(found)
    }

    /// The error of a failed data-key call under `key_id`; an answer saying the key is gone, disabled or
    /// unusable also makes every cached resolution of that key stale (§3 step 7).
    pub(super) fn data_key_error(&self, key_id: &str, failure: Failure) -> KmsError {
        let error = failure.into_error(key_id);
        if matches!(error, KmsError::KeyNotFound { .. } | KmsError::KeyDisabled { .. } | KmsError::KeyUnusable { .. }) {
            self.evict_key_id(key_id);
        }
        error
    }

    /// Drops every entry resolving to `key_id` (its id entry and every alias pointing to it).
    pub fn evict_key_id(&self, key_id: &str) {
        self.lock().map.retain(|_, entry| entry.key.key_id != key_id);
    }

    pub fn clear(&self) {
        self.lock().map.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(id: &str) -> ResolvedKey {
        ResolvedKey { key_id: id.into(), alias: None, state: "2".into(), spec: "AES_256".into() }
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = KeyCache::new(Duration::from_millis(30), 8);
        cache.insert(KeyRef::Alias("a".into()), resolved("1"));
        assert_eq!(cache.get(&KeyRef::Alias("a".into())), Some(resolved("1")));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&KeyRef::Alias("a".into())), None);
        assert_eq!(cache.len(), 0, "expired entries are dropped");
    }

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let cache = KeyCache::new(DEFAULT_TTL, 2);
        cache.insert(KeyRef::Alias("a".into()), resolved("1"));
        cache.insert(KeyRef::Alias("b".into()), resolved("2"));
        assert!(cache.get(&KeyRef::Alias("a".into())).is_some());
        cache.insert(KeyRef::Alias("c".into()), resolved("3"));
        assert!(cache.get(&KeyRef::Alias("a".into())).is_some());
        assert!(cache.get(&KeyRef::Alias("b".into())).is_none(), "b was least recently used");
        assert!(cache.get(&KeyRef::Alias("c".into())).is_some());
    }

    #[test]
    fn evicting_a_key_id_drops_every_alias_of_it() {
        let cache = KeyCache::new(DEFAULT_TTL, DEFAULT_CAPACITY);
        cache.insert(KeyRef::Alias("a".into()), resolved("1"));
        cache.insert(KeyRef::Id("1".into()), resolved("1"));
        cache.insert(KeyRef::Alias("b".into()), resolved("2"));
        cache.evict_key_id("1");
        assert_eq!(cache.len(), 1);
        cache.clear();
        assert_eq!(cache.len(), 0);
    }
}
