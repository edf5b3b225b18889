//! The per-process key resolution cache (spec/kms-huawei.md §3): key reference → what the KMS said about
//! the key (id, alias, state, spec).
//!
//! Callers must not be able to turn lookups into KMS load, so:
//! * found keys are kept for a TTL (60 s), at most 1,024 entries, least recently used evicted first;
//! * a reference the KMS does not know is remembered for [`MISS_TTL`] (10 s), in its own bounded map, so
//!   misses never evict found keys;
//! * concurrent lookups of one reference share one KMS resolution (and its answer, error included);
//! * alias listings (Huawei `list-keys`) run one at a time; every alias a listing sees is cached; after a
//!   listing that read every page, misses in the next [`MISS_TTL`] are answered from its table without
//!   listing again, and lookups that queued behind a failed listing get its error instead of retrying it.
//!
//! Lookups are counted for `GET /metrics`: a hit is answered without a resolution of its own (a cached key,
//! a remembered miss, or the shared answer of a concurrent lookup), a miss runs one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::policy::EvictionPolicy;

use super::transport::Failure;
use super::{KeyRef, KmsError, ResolvedKey};
use crate::metrics::CacheCounts;

pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
pub const DEFAULT_CAPACITY: u64 = 1024;
/// How long a "no such key" answer stands: a miss asks the KMS again at most this often.
pub const MISS_TTL: Duration = Duration::from_secs(10);

/// What one alias listing read.
#[derive(Debug, Default)]
pub struct Listing {
    /// Every key the listing saw, in the KMS's order.
    pub keys: Vec<ResolvedKey>,
    /// The listing read to the last page or to its page bound, not only up to a match: an alias absent from
    /// `keys` is then a miss.
    pub complete: bool,
}

pub struct KeyCache {
    found: Cache<KeyRef, ResolvedKey>,
    missing: Cache<KeyRef, ()>,
    miss_ttl: Duration,
    listing: AliasListing,
    counts: CacheCounts,
}

/// One alias listing at a time, and what the last one left behind.
#[derive(Default)]
struct AliasListing {
    /// Held for the duration of a listing.
    gate: tokio::sync::Mutex<()>,
    /// Listings finished so far: a lookup that queued behind the gate sees whether one ended meanwhile.
    finished: AtomicU64,
    last: Mutex<LastListing>,
}

#[derive(Default)]
struct LastListing {
    /// Why the last listing failed, if it did.
    error: Option<KmsError>,
    /// The aliases of the last complete listing, and when it ended.
    table: Option<(Instant, HashMap<String, ResolvedKey>)>,
}

impl AliasListing {
    fn last(&self) -> MutexGuard<'_, LastListing> {
        // Every update of `LastListing` is a single assignment: a panic cannot leave it half-written.
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KeyCache {
    /// Found keys for `ttl`, at most `capacity` of them (and as many misses, for `miss_ttl`).
    pub fn new(ttl: Duration, miss_ttl: Duration, capacity: u64) -> Self {
        let capacity = capacity.max(1);
        Self {
            found: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .eviction_policy(EvictionPolicy::lru())
                .build(),
            missing: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(miss_ttl)
                .eviction_policy(EvictionPolicy::lru())
                .build(),
            miss_ttl,
            listing: AliasListing::default(),
            counts: CacheCounts::default(),
        }
    }

    /// Lookups answered from the cache and lookups that resolved the key.
    pub fn counts(&self) -> &CacheCounts {
        &self.counts
    }

    /// The cached resolution of `key`, if fresh.
    #[cfg(test)]
    pub async fn get(&self, key: &KeyRef) -> Option<ResolvedKey> {
        self.found.get(key).await
    }

    #[cfg(test)]
    pub async fn insert(&self, key: KeyRef, resolved: ResolvedKey) {
        self.missing.invalidate(&key).await;
        self.found.insert(key, resolved).await;
    }

    /// The cached resolution of `key`, else `lookup`'s answer: a found key is cached for the TTL, "not
    /// found" for [`MISS_TTL`]. Concurrent calls for one `key` run one `lookup` and share its answer.
    pub async fn get_or_resolve<F>(&self, key: &KeyRef, lookup: impl FnOnce() -> F) -> Result<ResolvedKey, KmsError>
    where
        F: Future<Output = Result<ResolvedKey, KmsError>>,
    {
        if let Some(found) = self.found.get(key).await {
            self.counts.hit();
            return Ok(found);
        }
        if self.missing.contains_key(key) {
            self.counts.hit();
            return Err(KmsError::KeyNotFound { key: key.as_str().to_owned() });
        }
        // Set when this caller's own lookup runs; a caller that shares another's lookup got a hit.
        let resolved_here = std::sync::atomic::AtomicBool::new(false);
        let resolve = async {
            resolved_here.store(true, Ordering::Relaxed);
            let answer = lookup().await;
            if matches!(answer, Err(KmsError::KeyNotFound { .. })) {
                // Recorded before the shared answer is handed out, so no later caller starts another lookup.
                self.missing.insert(key.clone(), ()).await;
            }
            answer
        };
        let answer = self.found.try_get_with_by_ref(key, resolve).await.map_err(|shared| (*shared).clone());
        if resolved_here.load(Ordering::Relaxed) {
            self.counts.miss();
        } else {
            self.counts.hit();
        }
        answer
    }

    /// Resolves `alias` from alias listings (Huawei `list-keys`, §3 steps 2-3): cached, else answered by the
    /// last complete listing if it is younger than [`MISS_TTL`], else by a new listing made by `list`, one
    /// at a time. A lookup that waited for another's listing takes that listing's answer (found, or its
    /// error) when it can, rather than listing again.
    pub async fn resolve_alias<F>(&self, alias: &str, list: impl FnOnce() -> F) -> Result<ResolvedKey, KmsError>
    where
        F: Future<Output = Result<Listing, KmsError>>,
    {
        let key = KeyRef::Alias(alias.to_owned());
        self.get_or_resolve(&key, || self.lookup_in_listing(alias, list)).await
    }

    async fn lookup_in_listing<F>(&self, alias: &str, list: impl FnOnce() -> F) -> Result<ResolvedKey, KmsError>
    where
        F: Future<Output = Result<Listing, KmsError>>,
    {
        let not_found = || KmsError::KeyNotFound { key: alias.to_owned() };
        let finished_before = self.listing.finished.load(Ordering::Acquire);
        let _one_listing_at_a_time = self.listing.gate.lock().await;
        let another_listing_ended = self.listing.finished.load(Ordering::Acquire) != finished_before;
        {
            let last = self.listing.last();
            if let Some((listed_at, table)) = &last.table
                && listed_at.elapsed() < self.miss_ttl
            {
                return table.get(alias).cloned().ok_or_else(not_found);
            }
            if another_listing_ended && let Some(error) = &last.error {
                return Err(error.clone());
            }
        }
        if another_listing_ended && let Some(found) = self.found.get(&KeyRef::Alias(alias.to_owned())).await {
            return Ok(found);
        }
        let outcome = list().await;
        if let Ok(listing) = &outcome {
            for key in &listing.keys {
                if let Some(seen) = key.alias.as_deref().filter(|seen| *seen != alias) {
                    self.found.insert(KeyRef::Alias(seen.to_owned()), key.clone()).await;
                }
            }
        }
        let answer = outcome.map(|listing| {
            let table: HashMap<String, ResolvedKey> =
                listing.keys.into_iter().filter_map(|key| Some((key.alias.clone()?, key))).collect();
            let answer = table.get(alias).cloned();
            let mut last = self.listing.last();
            last.error = None;
            if listing.complete {
                last.table = Some((Instant::now(), table));
            }
            answer
        });
        if let Err(error) = &answer {
            self.listing.last().error = Some(error.clone());
        }
        self.listing.finished.fetch_add(1, Ordering::Release);
        answer?.ok_or_else(not_found)
    }

    /// The error of a failed data-key call under `key_id`; an answer saying the key is gone, disabled or
    /// unusable also makes every cached resolution of that key stale (§3 step 7).
    pub(super) async fn data_key_error(&self, key_id: &str, failure: Failure) -> KmsError {
        let error = failure.into_error(key_id);
        if matches!(error, KmsError::KeyNotFound { .. } | KmsError::KeyDisabled { .. } | KmsError::KeyUnusable { .. }) {
            self.evict_key_id(key_id).await;
        }
        error
    }

    /// Drops every entry resolving to `key_id` (its id entry and every alias pointing to it), and the last
    /// listing's table, which may hold the key's old state.
    pub async fn evict_key_id(&self, key_id: &str) {
        let stale: Vec<_> = self.found.iter().filter(|(_, found)| found.key_id == key_id).map(|(key, _)| key).collect();
        for key in stale {
            self.found.invalidate(key.as_ref()).await;
        }
        self.listing.last().table = None;
    }

    pub fn clear(&self) {
        self.found.invalidate_all();
        self.missing.invalidate_all();
        *self.listing.last() = LastListing::default();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn resolved(id: &str) -> ResolvedKey {
        ResolvedKey { key_id: id.into(), alias: None, state: "2".into(), spec: "AES_256".into() }
    }

    fn aliased(alias: &str, id: &str) -> ResolvedKey {
        ResolvedKey { alias: Some(alias.into()), ..resolved(id) }
    }

    fn alias(name: &str) -> KeyRef {
        KeyRef::Alias(name.into())
    }

    fn cache() -> KeyCache {
        KeyCache::new(DEFAULT_TTL, MISS_TTL, DEFAULT_CAPACITY)
    }

    /// A KMS stand-in that counts lookups and answers `answer` after yielding a few times, so that
    /// concurrent callers really overlap.
    struct Counted {
        calls: AtomicUsize,
    }

    impl Counted {
        fn new() -> Arc<Self> {
            Arc::new(Self { calls: AtomicUsize::new(0) })
        }

        async fn answer<T>(&self, answer: T) -> T {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            answer
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let cache = KeyCache::new(Duration::from_millis(30), MISS_TTL, 8);
        cache.insert(alias("a"), resolved("1")).await;
        assert_eq!(cache.get(&alias("a")).await, Some(resolved("1")));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(cache.get(&alias("a")).await, None);
    }

    #[tokio::test]
    async fn the_least_recently_used_entry_goes_first() {
        let cache = KeyCache::new(DEFAULT_TTL, MISS_TTL, 2);
        cache.insert(alias("a"), resolved("1")).await;
        cache.insert(alias("b"), resolved("2")).await;
        // moka applies recorded reads and writes in batches: apply them between the steps.
        cache.found.run_pending_tasks().await;
        assert!(cache.get(&alias("a")).await.is_some());
        cache.found.run_pending_tasks().await;
        cache.insert(alias("c"), resolved("3")).await;
        cache.found.run_pending_tasks().await;
        assert!(cache.get(&alias("a")).await.is_some());
        assert!(cache.get(&alias("b")).await.is_none(), "b was least recently used");
        assert!(cache.get(&alias("c")).await.is_some());
    }

    #[tokio::test]
    async fn evicting_a_key_id_drops_every_alias_of_it() {
        let cache = cache();
        cache.insert(alias("a"), resolved("1")).await;
        cache.insert(KeyRef::Id("1".into()), resolved("1")).await;
        cache.insert(alias("b"), resolved("2")).await;
        cache.evict_key_id("1").await;
        assert_eq!(cache.get(&alias("a")).await, None);
        assert_eq!(cache.get(&KeyRef::Id("1".into())).await, None);
        assert_eq!(cache.get(&alias("b")).await, Some(resolved("2")));
        cache.clear();
        assert_eq!(cache.get(&alias("b")).await, None);
    }

    #[tokio::test]
    async fn concurrent_misses_for_one_key_make_one_lookup() {
        let cache = cache();
        let kms = Counted::new();
        let key = KeyRef::Id("1".into());
        let lookups = (0..16).map(|_| cache.get_or_resolve(&key, || kms.answer(Ok(resolved("1")))));
        for answer in futures_util::future::join_all(lookups).await {
            assert_eq!(answer, Ok(resolved("1")));
        }
        assert_eq!(kms.calls(), 1);
        assert_eq!((cache.counts().hits(), cache.counts().misses()), (15, 1), "sharing a lookup is a hit");
        let _ = cache.get_or_resolve(&key, || kms.answer(Ok(resolved("1")))).await;
        assert_eq!((cache.counts().hits(), cache.counts().misses()), (16, 1));
    }

    #[tokio::test]
    async fn concurrent_lookups_share_one_failure() {
        let cache = cache();
        let kms = Counted::new();
        let key = KeyRef::Id("1".into());
        let down = || KmsError::Unavailable { detail: "down".into() };
        let lookups = (0..8).map(|_| cache.get_or_resolve(&key, || kms.answer(Err(down()))));
        assert!(futures_util::future::join_all(lookups).await.iter().all(|answer| *answer == Err(down())));
        assert_eq!(kms.calls(), 1);
        // A failure is not remembered: the next lookup asks again.
        let _ = cache.get_or_resolve(&key, || kms.answer(Err(down()))).await;
        assert_eq!(kms.calls(), 2);
    }

    #[tokio::test]
    async fn an_unknown_key_is_remembered_for_the_miss_ttl_only() {
        let cache = KeyCache::new(DEFAULT_TTL, Duration::from_millis(50), DEFAULT_CAPACITY);
        let kms = Counted::new();
        let key = KeyRef::Id("gone".into());
        let gone = || KmsError::KeyNotFound { key: "gone".into() };
        for _ in 0..3 {
            assert_eq!(cache.get_or_resolve(&key, || kms.answer(Err(gone()))).await, Err(gone()));
        }
        assert_eq!(kms.calls(), 1, "misses are cached");
        assert_eq!((cache.counts().hits(), cache.counts().misses()), (2, 1), "a remembered miss is a hit");
        tokio::time::sleep(Duration::from_millis(70)).await;
        assert_eq!(cache.get_or_resolve(&key, || kms.answer(Ok(resolved("1")))).await, Ok(resolved("1")));
        assert_eq!(kms.calls(), 2, "...for the miss TTL");
    }

    fn listing(aliases: &[&str], complete: bool) -> Listing {
        let keys = aliases.iter().enumerate().map(|(i, a)| aliased(a, &i.to_string())).collect();
        Listing { keys, complete }
    }

    #[tokio::test]
    async fn one_listing_caches_every_alias_it_saw() {
        let cache = cache();
        let kms = Counted::new();
        let list = || kms.answer(Ok(listing(&["a", "b", "c"], false)));
        assert_eq!(cache.resolve_alias("b", list).await, Ok(aliased("b", "1")));
        assert_eq!(cache.resolve_alias("a", list).await, Ok(aliased("a", "0")));
        assert_eq!(cache.resolve_alias("c", list).await, Ok(aliased("c", "2")));
        assert_eq!(kms.calls(), 1);
    }

    #[tokio::test]
    async fn after_a_complete_listing_misses_are_answered_from_its_table() {
        let cache = KeyCache::new(DEFAULT_TTL, Duration::from_millis(80), DEFAULT_CAPACITY);
        let kms = Counted::new();
        let list = || kms.answer(Ok(listing(&["a"], true)));
        for unknown in ["x", "y", "z", "x"] {
            assert_eq!(cache.resolve_alias(unknown, list).await, Err(KmsError::KeyNotFound { key: unknown.into() }));
        }
        assert_eq!(kms.calls(), 1, "distinct unknown aliases share the listing's table");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(cache.resolve_alias("y", list).await.is_err());
        assert_eq!(kms.calls(), 2, "the table is only trusted for the miss TTL");
    }

    #[tokio::test]
    async fn concurrent_lookups_of_different_aliases_share_one_listing() {
        let cache = cache();
        let kms = Counted::new();
        let list = || kms.answer(Ok(listing(&["a", "b"], true)));
        let names = ["a", "b", "nope-1", "nope-2", "a", "nope-1"];
        let answers = futures_util::future::join_all(names.iter().map(|name| cache.resolve_alias(name, list))).await;
        let found: Vec<bool> = answers.iter().map(Result::is_ok).collect();
        assert_eq!(found, [true, true, false, false, true, false]);
        assert_eq!(kms.calls(), 1);
    }

    #[tokio::test]
    async fn lookups_queued_behind_a_failed_listing_get_its_error() {
        let cache = cache();
        let kms = Counted::new();
        let down = || KmsError::Unavailable { detail: "down".into() };
        let list = || kms.answer(Err(down()));
        let answers = futures_util::future::join_all(["a", "b", "c"].map(|name| cache.resolve_alias(name, list))).await;
        assert!(answers.iter().all(|answer| *answer == Err(down())));
        assert_eq!(kms.calls(), 1);
        let _ = cache.resolve_alias("a", list).await;
        assert_eq!(kms.calls(), 2, "a later lookup lists again");
    }

    #[tokio::test]
    async fn evicting_a_key_forgets_the_listing_table() {
        let cache = cache();
        let kms = Counted::new();
        let list = || kms.answer(Ok(listing(&["a"], true)));
        cache.resolve_alias("a", list).await.expect("found");
        cache.evict_key_id("0").await;
        cache.resolve_alias("a", list).await.expect("found again");
        assert_eq!(kms.calls(), 2, "the stale table was not used");
    }
}
