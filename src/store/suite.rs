//! The conformance suite every `Store` implementation must pass: sled and memory run it as unit tests,
//! PostgreSQL from tests/api (it needs a server). It only asserts; it expects a fresh, empty store.

use super::{ApplyError, Space, Store, WriteOp, decode_counter};

fn put(space: Space, key: &str, value: &str) -> WriteOp {
    WriteOp::PutIfAbsent { space, key: key.into(), value: value.into() }
}

/// Runs every check against `store`, which must be empty.
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
    let scanned: Vec<(Vec<u8>, u64)> = scanned
        .into_iter()
        .map(|(k, v)| (k, decode_counter(Some(&v)).expect("8 bytes")))
        .filter(|(_, count)| *count > 0)
        .collect();
    assert_eq!(scanned, [(b"j/2".to_vec(), 1), (b"j/3".to_vec(), 5)], "counters scan like the other spaces");
}

async fn get_many_answers_in_the_order_asked(store: &dyn Store) {
    store.apply(vec![put(Space::NameIndex, "k/1", "one"), put(Space::NameIndex, "k/3", "three")]).await.expect("put");
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
