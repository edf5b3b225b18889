//! Rendered list pages, kept until a write makes them stale.
//!
//! Key pair lists are read far more often than key pairs change (consoles list on every page view), and a
//! page costs a range scan, one decode per record and a 10 KB body; a cached page costs a map lookup.
//! Correctness rests on the write generations of `service::repo`: one counter per key owner (a user's keys,
//! a project's `domain` keys) in the store, bumped in the same atomic batch as every write under that owner.
//! A page is stored with the generations read *before* its scan and served only while they are unchanged, so
//! a page that may predate a write is never served after that write was acknowledged — on any replica, since
//! the generations are read from the shared store on each request.
//!
//! The cache is bounded by the bytes of the bodies it holds (`cache.list_pages_mb`); the oldest pages go
//! first. Its lookups are counted (hits and misses, `GET /metrics`) while it is enabled.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

use crate::metrics::CacheCounts;

/// What a cached page was computed from: the generations of the owners it shows.
pub type Stamp = (u64, u64);

struct Entry {
    stamp: Stamp,
    body: Bytes,
}

/// What one entry costs beyond its body and key (map slot, queue slot, `Bytes` header), charged to the
/// budget so that many tiny pages (empty lists) cannot grow the cache past it.
const ENTRY_OVERHEAD: usize = 128;

/// The budget an entry uses.
fn cost(key: &str, body: &Bytes) -> usize {
    2 * key.len() + body.len() + ENTRY_OVERHEAD
}

#[derive(Default)]
struct Pages {
    map: HashMap<String, Entry>,
    /// Insertion order, for eviction (a key may appear more than once; stale positions are skipped).
    order: VecDeque<String>,
    bytes: usize,
}

/// Rendered pages by request key, bounded by total body bytes.
pub struct PageCache {
    max_bytes: usize,
    pages: Mutex<Pages>,
    counts: CacheCounts,
}

impl PageCache {
    /// A cache holding at most `max_bytes` of bodies; 0 disables it.
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes, pages: Mutex::new(Pages::default()), counts: CacheCounts::default() }
    }

    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pages> {
        // Every critical section leaves the maps consistent, so a poisoned lock is still usable.
        self.pages.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The page stored under `key`, if it was computed at exactly `stamp`.
    pub fn get(&self, key: &str, stamp: Stamp) -> Option<Bytes> {
        if !self.enabled() {
            return None;
        }
        let found = {
            let pages = self.lock();
            pages.map.get(key).filter(|entry| entry.stamp == stamp).map(|entry| entry.body.clone())
        };
        if found.is_some() {
            self.counts.hit()
        } else {
            self.counts.miss()
        }
        found
    }

    /// Lookups answered with a page and lookups that found none (or a stale one).
    pub fn counts(&self) -> &CacheCounts {
        &self.counts
    }

    /// Stores a page computed at `stamp` (read before the page was computed). Pages costing more than an
    /// eighth of the budget are not kept.
    pub fn insert(&self, key: String, stamp: Stamp, body: Bytes) {
        let added = cost(&key, &body);
        if !self.enabled() || added > self.max_bytes / 8 {
            return;
        }
        let mut pages = self.lock();
        let pages = &mut *pages;
        pages.bytes += added;
        match pages.map.insert(key.clone(), Entry { stamp, body }) {
            Some(old) => pages.bytes -= cost(&key, &old.body),
            None => pages.order.push_back(key),
        }
        while pages.bytes > self.max_bytes {
            let Some(oldest) = pages.order.pop_front() else { break };
            if let Some(evicted) = pages.map.remove(&oldest) {
                pages.bytes -= cost(&oldest, &evicted.body);
            }
        }
    }

    /// Budget in use: bodies, keys (counted twice: map and eviction queue) and per-entry overhead.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_served_only_at_the_stamp_it_was_computed_at() {
        let cache = PageCache::new(1 << 20);
        let stamp = (3, 7);
        cache.insert("alice".into(), stamp, Bytes::from_static(b"page"));
        assert_eq!(cache.get("alice", stamp).as_deref(), Some(&b"page"[..]));
        assert_eq!(cache.get("bob", stamp), None);
        assert_eq!(cache.get("alice", (4, 7)), None, "a write to the owner makes the page stale");
        assert_eq!(cache.get("alice", (3, 8)), None, "a domain-key write of the project too");
        assert_eq!((cache.counts().hits(), cache.counts().misses()), (1, 3));
    }

    #[test]
    fn the_cache_stays_within_its_byte_budget_oldest_first() {
        let entry = cost("page-0", &Bytes::from(vec![b'x'; 100]));
        let cache = PageCache::new(8 * entry);
        for page in 0..10 {
            cache.insert(format!("page-{page}"), (0, 0), Bytes::from(vec![b'x'; 100]));
        }
        assert!(cache.bytes() <= 8 * entry, "{}", cache.bytes());
        assert_eq!(cache.get("page-0", (0, 0)), None, "the oldest pages are evicted first");
        assert!(cache.get("page-9", (0, 0)).is_some());
        cache.insert("page-9".into(), (1, 0), Bytes::from(vec![b'y'; 50]));
        assert_eq!(cache.get("page-9", (1, 0)).as_deref(), Some(&[b'y'; 50][..]), "replaced in place");
        cache.insert("huge".into(), (0, 0), Bytes::from(vec![b'z'; 200]));
        assert_eq!(cache.get("huge", (0, 0)), None, "pages over an eighth of the budget are not kept");
    }

    #[test]
    fn tiny_pages_are_charged_their_overhead() {
        let cache = PageCache::new(64 * 1024);
        for page in 0..100_000 {
            cache.insert(format!("an-empty-list-{page}"), (0, 0), Bytes::from_static(b"{\"keypairs\":[]}"));
        }
        assert!(cache.bytes() <= 64 * 1024);
        assert!(cache.lock().map.len() < 64 * 1024 / ENTRY_OVERHEAD, "{} entries", cache.lock().map.len());
    }

    #[test]
    fn a_disabled_cache_keeps_nothing() {
        let cache = PageCache::new(0);
        cache.insert("k".into(), (0, 0), Bytes::from_static(b"page"));
        assert_eq!(cache.get("k", (0, 0)), None);
        assert_eq!(cache.bytes(), 0);
        assert_eq!((cache.counts().hits(), cache.counts().misses()), (0, 0), "a disabled cache counts nothing");
    }
}
