//! The PostgreSQL store against a real server (pg.rs): the conformance suite, migrations, and what a lost
//! or read-only database looks like to kps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kps::store::postgres::PostgresStore;
use kps::store::{ApplyError, Space, Store, StoreError, WriteOp};

use crate::pg::PgServer;

fn put(key: &str, value: &str) -> WriteOp {
    WriteOp::PutIfAbsent { space: Space::KeyPairs, key: key.into(), value: value.into() }
}

#[tokio::test]
async fn the_store_suite_passes_on_postgres_over_tcp_and_the_unix_socket() {
    let Some(server) = PgServer::start() else { return };
    let store = PostgresStore::open(&server.socket_url(), 4).await.expect("open over the socket");
    kps::store::suite::run(&store).await;
    let url = server.create_database("kps_tcp");
    let store = PostgresStore::open(&url, 4).await.expect("open over TCP");
    kps::store::suite::run(&store).await;
}

#[tokio::test]
async fn two_replicas_migrate_once_and_a_newer_schema_is_refused() {
    let Some(server) = PgServer::start() else { return };
    let url = server.url();
    let (a, b) = (PostgresStore::connect(&url, 2).expect("pool"), PostgresStore::connect(&url, 2).expect("pool"));
    let (a, b) = tokio::join!(a.migrate(), b.migrate());
    let mut versions = [a.expect("migrate a"), b.expect("migrate b")];
    versions.sort();
    assert_eq!(versions, [(0, 1), (1, 1)], "one of them migrated, the other found the schema current");
    assert_eq!(server.psql("kps", "SELECT count(*) FROM kps.schema_version").trim(), "1");

    server.psql("kps", "INSERT INTO kps.schema_version (version) VALUES (99)");
    let error = PostgresStore::open(&url, 2).await.err().expect("a newer schema is refused");
    assert!(error.to_string().contains("version 99, newer than this kps"), "{error}");
}

#[tokio::test]
async fn two_stores_on_one_database_race_for_a_name_and_one_wins() {
    let Some(server) = PgServer::start() else { return };
    let a = Arc::new(PostgresStore::open(&server.url(), 8).await.expect("open"));
    let b = Arc::new(PostgresStore::open(&server.url(), 8).await.expect("open"));
    for round in 0..50 {
        let key = format!("race/{round}");
        let counter = format!("count/{}", round % 3);
        let batch = |value: &str| {
            vec![put(&key, value), WriteOp::Add { key: counter.clone().into_bytes(), delta: 1, max: None }]
        };
        let (first, second) = tokio::join!(a.apply(batch("a")), b.apply(batch("b")));
        let wins = [&first, &second].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {first:?} {second:?}");
        for result in [first, second] {
            assert!(matches!(result, Ok(()) | Err(ApplyError::Conflict { op: 0 })), "{result:?}");
        }
    }
    let counted: u64 = futures_util::future::join_all((0..3).map(|i| {
        let b = Arc::clone(&b);
        async move {
            kps::store::decode_counter(
                b.get(Space::Counters, format!("count/{i}").as_bytes()).await.expect("get").as_deref(),
            )
            .expect("counter")
        }
    }))
    .await
    .into_iter()
    .sum();
    assert_eq!(counted, 50, "the counters moved with the winning batches only");
    let mut ids = Vec::new();
    for _ in 0..20 {
        let (x, y) = tokio::join!(a.next_id(), b.next_id());
        ids.extend([x.expect("id"), y.expect("id")]);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 40, "ids are unique across stores");
}

/// A database that goes away answers Unavailable (never a Backend error), `ready` fails within its bound,
/// and once the database is back the same store serves again without a restart (the broken connections
/// were not reused).
#[tokio::test]
async fn a_stopped_database_is_unavailable_and_the_store_reconnects_when_it_returns() {
    let Some(mut server) = PgServer::start() else { return };
    let url = format!("{}?connect_timeout=2", server.url());
    let store = PostgresStore::open(&url, 4).await.expect("open");
    store.apply(vec![put("k/1", "v")]).await.expect("apply");
    store.ready().await.expect("ready");

    server.stop_immediate();
    let started = Instant::now();
    let ready = store.ready().await;
    assert!(matches!(ready, Err(StoreError::Unavailable(_))), "{ready:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "ready took {:?}", started.elapsed());
    let write = store.apply(vec![put("k/2", "v")]).await;
    assert!(matches!(write, Err(ApplyError::Store(StoreError::Unavailable(_)))), "{write:?}");
    let read = store.get(Space::KeyPairs, b"k/1").await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");

    server.restart();
    store.ready().await.expect("ready again");
    store.apply(vec![put("k/2", "v")]).await.expect("apply again");
    assert_eq!(store.get(Space::KeyPairs, b"k/1").await.expect("get"), Some(b"v".to_vec()));
}

/// After a failover the pool finds the new primary through the multi-host URL; while only the standby is
/// up, writes and `ready` are Unavailable (read-only), never another error.
#[tokio::test]
async fn after_promotion_the_store_writes_to_the_new_primary() {
    let Some((mut primary, standby)) = PgServer::start_primary_with_standby() else { return };
    let url = crate::pg::multi_host_url(&[&primary, &standby]);
    let store = PostgresStore::open(&url, 4).await.expect("open");
    store.apply(vec![put("f/1", "before")]).await.expect("apply");

    primary.stop_immediate();
    let write = store.apply(vec![put("f/2", "during")]).await;
    assert!(matches!(write, Err(ApplyError::Store(StoreError::Unavailable(_)))), "{write:?}");
    let ready = store.ready().await;
    assert!(matches!(ready, Err(StoreError::Unavailable(_))), "{ready:?}");

    standby.promote();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.apply(vec![put("f/2", "after")]).await {
            Ok(()) => break,
            Err(ApplyError::Store(StoreError::Unavailable(_))) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    store.ready().await.expect("ready on the new primary");
    assert_eq!(store.get(Space::KeyPairs, b"f/1").await.expect("get"), Some(b"before".to_vec()));
}

/// The real binary on PostgreSQL: `kps db migrate`, `kps serve` without a store in `data_dir`, a refused
/// start without a shared keyring, and `kps backup export` straight from the database.
#[test]
fn kps_serves_on_postgres() {
    let Some(server) = PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let keyring = dir.path().join("master.key");
    let data = dir.path().join("data");
    let url = server.url();
    let env = [
        ("KPS_STORE_BACKEND", "postgres"),
        ("KPS_STORE_POSTGRES_URL", url.as_str()),
        ("KPS_MASTER_KEY_FILE", keyring.to_str().expect("utf8")),
    ];
    let kps = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_kps"))
            .args(args)
            .envs(env)
            .env("KPS_LOG", "warn")
            .arg("--data-dir")
            .arg(&data)
            .output()
            .expect("run kps");
        (
            output.status.success(),
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        )
    };

    let (ok, out) = kps(&["serve"]);
    assert!(!ok && out.contains("does not exist") && out.contains("never creates one"), "{out}");
    let (ok, out) = kps(&["master-key", "generate"]);
    assert!(ok, "{out}");
    // The refused start migrated the schema already (it opens the store before it checks the keyring).
    let (ok, out) = kps(&["db", "migrate"]);
    assert!(ok && out.contains("is current (version 1)"), "{out}");

    let replica = crate::binary::Server::start_with_env(&data, &env);
    let client = reqwest::blocking::Client::new();
    let body = serde_json::json!({"keypair": {"name": "pg", "public_key": crate::ED25519_VECTOR}}).to_string();
    let created = client
        .post(format!("{}/v2.1/os-keypairs", replica.url))
        .header("x-auth-token", "u:p")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .expect("create");
    assert_eq!(created.status(), 200, "{:?}", created.text());
    let shown = client.get(format!("{}/v2.1/os-keypairs/pg", replica.url)).header("x-auth-token", "u:p").send();
    assert_eq!(shown.expect("show").status(), 200);
    let ready = client.get(format!("{}/readyz", replica.url)).send().expect("readyz");
    assert_eq!(ready.status(), 200);
    assert!(!data.join("db").exists() && !data.join("kps.lock").exists(), "no sled store, no lock in data_dir");
    assert_eq!(server.psql("kps", "SELECT count(*) FROM kps.entries WHERE space = 1").trim(), "1");

    let backup = dir.path().join("backup.jsonl");
    let (ok, out) = kps(&["backup", "export", backup.to_str().expect("utf8")]);
    assert!(ok && out.contains("from the PostgreSQL database"), "{out}");
    assert!(std::fs::read_to_string(&backup).expect("backup").contains("\"pg\""));
    let (ok, out) = kps(&["backup", "import", backup.to_str().expect("utf8")]);
    assert!(!ok && out.contains("already holds"), "an import refuses a non-empty store: {out}");
    assert_eq!(replica.stop().code(), Some(0));
}
