//! Two real `kps` processes on one PostgreSQL database (interface.md, "Replicated store"; design.md, "Growing
//! past one machine"): name uniqueness, visibility of each other's writes through their caches, quotas,
//! SIGKILL of one replica under load, and the shared master keyring. Each test starts its own PostgreSQL
//! (`crate::pg`) and its replicas on free 127.0.0.1 ports, and stops them; without PostgreSQL they skip, except
//! under `CI=true`.
//!
//! [`Replica`] and the request helpers are shared with `failover.rs` and `pg_move.rs`.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::binary::free_port;
use crate::durability::ed25519_public_key;
use crate::pg::PgServer;
use crate::{ED25519_PRIVATE_KEY, ED25519_PUBLIC_KEY};

/// One `kps serve` on PostgreSQL, with a data directory of its own (holding no store) and its stderr in a
/// file there. Killed (SIGKILL) when dropped.
pub struct Replica {
    child: Child,
    pub url: String,
    dir: tempfile::TempDir,
}

impl Replica {
    /// A replica on the database `store_url` with the master keyring `keyring` and extra `KPS_*` variables,
    /// ready (`/healthz` 200). Panics with its stderr when it exits instead.
    pub fn start(store_url: &str, keyring: &Path, env: &[(&str, &str)]) -> Self {
        Self::try_start(store_url, Some(keyring), env).unwrap_or_else(|stderr| panic!("kps did not start: {stderr}"))
    }

    /// As [`Replica::start`], `keyring` None leaving `KPS_MASTER_KEY_FILE` unset; `Err(stderr)` when the
    /// process exits (non-zero, asserted) instead of becoming ready.
    pub fn try_start(store_url: &str, keyring: Option<&Path>, env: &[(&str, &str)]) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr = File::create(dir.path().join("stderr")).expect("stderr file");
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_kps"));
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.path().join("data"))
            .env_remove("KPS_CONFIG")
            .env_remove("KPS_MASTER_KEY_FILE")
            .env("KPS_LOG", "warn")
            .env("KPS_STORE_BACKEND", "postgres")
            .env("KPS_STORE_POSTGRES_URL", store_url);
        if let Some(keyring) = keyring {
            command.env("KPS_MASTER_KEY_FILE", keyring);
        }
        let child = command
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn kps");
        let mut replica = Self { child, url: format!("http://127.0.0.1:{port}"), dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = replica.child.try_wait().expect("wait") {
                let stderr = replica.stderr();
                assert!(!status.success(), "kps exited 0 instead of serving: {stderr}");
                return Err(stderr);
            }
            if reqwest::blocking::get(format!("{}/healthz", replica.url)).is_ok_and(|r| r.status() == 200) {
                return Ok(replica);
            }
            assert!(Instant::now() < deadline, "kps neither started nor exited: {}", replica.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        let mut text = String::new();
        File::open(self.dir.path().join("stderr")).and_then(|mut f| f.read_to_string(&mut text)).ok();
        text
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh master keyring at `dir/master.key` (0600), made by `kps master-key generate`: the one file every
/// replica of a test is given.
pub fn shared_keyring(dir: &Path) -> PathBuf {
    let path = dir.join("master.key");
    let out = Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(["master-key", "generate", "--data-dir"])
        .arg(dir.join("unused"))
        .env("KPS_MASTER_KEY_FILE", &path)
        .env_remove("KPS_CONFIG")
        .output()
        .expect("run kps master-key generate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(path.is_file(), "no keyring at {}", path.display());
    path
}

/// The id of the keyring's current master key.
pub fn current_key_id(keyring: &Path) -> String {
    let text = std::fs::read_to_string(keyring).expect("keyring");
    text.lines().find_map(|l| l.strip_prefix("current = ")).expect("current").trim_matches('"').to_owned()
}

/// One request as `token` with an optional JSON body: the status and the JSON answer (Null when empty).
pub fn call(
    client: &reqwest::blocking::Client,
    method: &str,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), reqwest::Error> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client.request(method, url).header("x-auth-token", token);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    let response = request.send()?;
    let status = response.status().as_u16();
    let bytes = response.bytes()?;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Ok((status, value))
}

/// [`call`] that must reach the server.
#[track_caller]
pub fn must(
    client: &reqwest::blocking::Client,
    method: &str,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    call(client, method, url, token, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// A Nova import of `public_key` as `name`.
pub fn nova_import(
    client: &reqwest::blocking::Client,
    base: &str,
    token: &str,
    name: &str,
    public_key: &str,
) -> Result<(u16, Value), reqwest::Error> {
    let body = json!({"keypair": {"name": name, "public_key": public_key}});
    call(client, "POST", &format!("{base}/v2.1/os-keypairs"), token, Some(&body))
}

/// The names of the Nova list of `token` on `base`, in order.
pub fn nova_names(client: &reqwest::blocking::Client, base: &str, token: &str) -> Vec<String> {
    let (status, body) = must(client, "GET", &format!("{base}/v2.1/os-keypairs"), token, None);
    assert_eq!(status, 200, "{body}");
    names(&body, "keypairs")
}

/// The names of the V3 list of `token` in project `p` on `base`, in order.
pub fn v3_names(client: &reqwest::blocking::Client, base: &str, token: &str) -> Vec<String> {
    let (status, body) = must(client, "GET", &format!("{base}/v3/p/keypairs"), token, None);
    assert_eq!(status, 200, "{body}");
    names(&body, "keypairs")
}

fn names(body: &Value, list: &str) -> Vec<String> {
    body[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {body}"))
        .iter()
        .map(|k| k["keypair"]["name"].as_str().expect("name").to_owned())
        .collect()
}

/// PostgreSQL and a shared keyring for two replicas; `None` (skip) without PostgreSQL.
fn database() -> Option<(PgServer, tempfile::TempDir, PathBuf)> {
    let pg = PgServer::start()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let keyring = shared_keyring(dir.path());
    Some((pg, dir, keyring))
}

const UNLIMITED: [(&str, &str); 1] = [("KPS_QUOTA_KEY_PAIRS", "-1")];

#[test]
fn concurrent_creates_of_one_name_on_two_replicas_succeed_once() {
    let Some((pg, _dir, keyring)) = database() else { return };
    let replicas = [Replica::start(&pg.url(), &keyring, &UNLIMITED), Replica::start(&pg.url(), &keyring, &UNLIMITED)];
    let rounds = 50;
    let barrier = Arc::new(Barrier::new(2));
    let answers: Vec<Vec<(u16, Value)>> = std::thread::scope(|scope| {
        let threads: Vec<_> = replicas
            .iter()
            .enumerate()
            .map(|(side, replica)| {
                let (barrier, url) = (Arc::clone(&barrier), replica.url.clone());
                scope.spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    (0..rounds)
                        .map(|round| {
                            let key = ed25519_public_key(round * 2 + side as u64);
                            barrier.wait();
                            nova_import(&client, &url, "racer:p", &format!("race-{round}"), &key).expect("import")
                        })
                        .collect()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("thread")).collect()
    });
    let mut wins = [0, 0];
    for (round, (a, b)) in answers[0].iter().zip(&answers[1]).enumerate() {
        let mut statuses = [a.0, b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "round {round}: one create wins, the other conflicts: {} / {}", a.1, b.1);
        let loser = if a.0 == 409 { &a.1 } else { &b.1 };
        assert_eq!(loser["error_code"], "KPS.1701", "{loser}");
        wins[usize::from(a.0 != 200)] += 1;
    }
    eprintln!("wins: replica A {}, replica B {}", wins[0], wins[1]);

    // Each name once, on both replicas, with distinct ids.
    let client = reqwest::blocking::Client::new();
    let mut expected: Vec<String> = (0..rounds).map(|r| format!("race-{r}")).collect();
    expected.sort();
    for replica in &replicas {
        assert_eq!(nova_names(&client, &replica.url, "racer:p"), expected);
    }
    let mut ids = HashSet::new();
    for name in &expected {
        let (status, shown) =
            must(&client, "GET", &format!("{}/v3/p/keypairs/{name}", replicas[1].url), "racer:p", None);
        assert_eq!(status, 200, "{shown}");
        assert!(ids.insert(shown["keypair"]["id"].as_u64().expect("id")), "id of {name} handed out twice");
    }
}

#[test]
fn a_write_on_one_replica_is_read_by_the_next_request_on_the_other() {
    let Some((pg, _dir, keyring)) = database() else { return };
    let (a, b) = (Replica::start(&pg.url(), &keyring, &[]), Replica::start(&pg.url(), &keyring, &[]));
    let client = reqwest::blocking::Client::new();
    let show =
        |base: &str, name: &str| must(&client, "GET", &format!("{base}/v2.1/os-keypairs/{name}"), "alice:p", None);

    // B warms every cache it has: the show, alice's Nova list, bob's V3 list (the domain keys of p).
    assert_eq!(show(&b.url, "seen").0, 404);
    for _ in 0..2 {
        assert_eq!(nova_names(&client, &b.url, "alice:p"), Vec::<String>::new());
        assert_eq!(v3_names(&client, &b.url, "bob:p"), Vec::<String>::new());
    }

    let (status, created) =
        nova_import(&client, &a.url, "alice:p", "seen", ED25519_PUBLIC_KEY.trim_end()).expect("import");
    assert_eq!(status, 200, "{created}");
    let domain = json!({"keypair": {"name": "shared", "scope": "domain", "public_key": ED25519_PUBLIC_KEY.trim_end(),
        "key_protection": {"private_key": ED25519_PRIVATE_KEY, "encryption": {"type": "default"}}}});
    let (status, body) = must(&client, "POST", &format!("{}/v3/p/keypairs", a.url), "alice:p", Some(&domain));
    assert_eq!(status, 200, "{body}");

    let (status, shown) = show(&b.url, "seen");
    assert_eq!(status, 200, "B's next show sees A's write: {shown}");
    assert_eq!(shown["keypair"]["fingerprint"], created["keypair"]["fingerprint"]);
    assert_eq!(nova_names(&client, &b.url, "alice:p"), ["seen", "shared"], "B's next Nova list");
    assert_eq!(v3_names(&client, &b.url, "bob:p"), ["shared"], "B's next V3 list has A's domain key");
    let (status, exported) = must(
        &client,
        "POST",
        &format!("{}/v3/p/keypairs/private-key/export", b.url),
        "alice:p",
        Some(&json!({"keypair": {"name": "shared"}})),
    );
    assert_eq!(status, 200, "{exported}");
    assert_eq!(exported["keypair"]["private_key"], ED25519_PRIVATE_KEY, "B opens what A sealed");

    // A warms its caches, B deletes: A's next reads no longer see the key pairs.
    for _ in 0..2 {
        assert_eq!(nova_names(&client, &a.url, "alice:p"), ["seen", "shared"]);
        assert_eq!(v3_names(&client, &a.url, "bob:p"), ["shared"]);
    }
    assert_eq!(must(&client, "DELETE", &format!("{}/v2.1/os-keypairs/seen", b.url), "alice:p", None).0, 202);
    assert_eq!(nova_names(&client, &a.url, "alice:p"), ["shared"], "A's next Nova list");
    assert_eq!(show(&a.url, "seen").0, 404, "A's next show");
    assert_eq!(must(&client, "DELETE", &format!("{}/v3/p/keypairs/shared", b.url), "bob:p", None).0, 204);
    assert_eq!(v3_names(&client, &a.url, "bob:p"), Vec::<String>::new(), "A's next V3 list");
    assert_eq!(nova_names(&client, &a.url, "alice:p"), Vec::<String>::new());
}

#[test]
fn a_quota_of_five_holds_across_replicas() {
    let Some((pg, _dir, keyring)) = database() else { return };
    let quota = [("KPS_QUOTA_KEY_PAIRS", "5")];
    let replicas = [Replica::start(&pg.url(), &keyring, &quota), Replica::start(&pg.url(), &keyring, &quota)];
    let barrier = Arc::new(Barrier::new(10));
    let statuses: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..10u64)
            .map(|i| {
                let (barrier, url) = (Arc::clone(&barrier), replicas[(i % 2) as usize].url.clone());
                scope.spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    let key = ed25519_public_key(500 + i);
                    barrier.wait();
                    nova_import(&client, &url, "carol:p", &format!("q{i}"), &key).expect("import")
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("thread")).collect()
    });
    let created = statuses.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(created, 5, "exactly the quota succeeds: {statuses:?}");
    for (status, body) in statuses.iter().filter(|(s, _)| *s != 200) {
        assert_eq!((*status, &body["error_code"]), (403, &json!("KPS.1501")), "{body}");
    }
    let client = reqwest::blocking::Client::new();
    for replica in &replicas {
        assert_eq!(nova_names(&client, &replica.url, "carol:p").len(), 5);
        let (status, _) =
            nova_import(&client, &replica.url, "carol:p", "over", ED25519_PUBLIC_KEY.trim_end()).expect("import");
        assert_eq!(status, 403, "full on every replica");
    }
    // A delete on A frees one place, for B too; then both are full again.
    let victim = nova_names(&client, &replicas[0].url, "carol:p").remove(0);
    assert_eq!(
        must(&client, "DELETE", &format!("{}/v2.1/os-keypairs/{victim}", replicas[0].url), "carol:p", None).0,
        202
    );
    let (status, body) =
        nova_import(&client, &replicas[1].url, "carol:p", "again", ED25519_PUBLIC_KEY.trim_end()).expect("import");
    assert_eq!(status, 200, "{body}");
    let (status, _) =
        nova_import(&client, &replicas[0].url, "carol:p", "over", ED25519_PUBLIC_KEY.trim_end()).expect("import");
    assert_eq!(status, 403);
}

#[test]
fn sigkill_of_one_replica_under_load_loses_no_acknowledged_key_pair() {
    let Some((pg, _dir, keyring)) = database() else { return };
    let victim = Replica::start(&pg.url(), &keyring, &UNLIMITED);
    let survivor = Replica::start(&pg.url(), &keyring, &UNLIMITED);
    let urls = [victim.url.clone(), survivor.url.clone()];
    let acknowledged: Mutex<Vec<(String, String)>> = Mutex::default();
    let (stop, survivor_failures, victim_acks) = (AtomicBool::new(false), AtomicUsize::new(0), AtomicUsize::new(0));
    let load_time = Duration::from_millis(rand::Rng::gen_range(&mut rand::thread_rng(), 800..1600));

    std::thread::scope(|scope| {
        for writer in 0..8u64 {
            let (url, side) = (&urls[(writer % 2) as usize], writer % 2);
            let (acknowledged, stop, survivor_failures, victim_acks) =
                (&acknowledged, &stop, &survivor_failures, &victim_acks);
            scope.spawn(move || {
                let client =
                    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let name = format!("w{writer}-{i}");
                    match nova_import(&client, url, "crash:p", &name, &ed25519_public_key(writer * 1_000_000 + i)) {
                        Ok((200, body)) => {
                            let fingerprint = body["keypair"]["fingerprint"].as_str().expect("fingerprint").to_owned();
                            acknowledged.lock().expect("lock").push((name, fingerprint));
                            if side == 0 {
                                victim_acks.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // The victim's writers stop at its death; the survivor must keep answering.
                        _ if side == 0 => return,
                        answer => {
                            eprintln!("survivor failed {name}: {answer:?}");
                            survivor_failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        std::thread::sleep(load_time);
        victim.kill();
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::Relaxed);
    });

    let acknowledged = acknowledged.into_inner().expect("lock");
    assert!(victim_acks.load(Ordering::Relaxed) > 8, "too few writes through the victim to mean anything");
    assert_eq!(survivor_failures.load(Ordering::Relaxed), 0, "the surviving replica failed requests");
    let client = reqwest::blocking::Client::new();
    let (mut lost, mut ids) = (Vec::new(), HashSet::new());
    for (name, fingerprint) in &acknowledged {
        let (status, shown) = must(&client, "GET", &format!("{}/v3/p/keypairs/{name}", survivor.url), "crash:p", None);
        if status != 200 || shown["keypair"]["fingerprint"].as_str() != Some(fingerprint) {
            lost.push(name.clone());
            continue;
        }
        assert!(ids.insert(shown["keypair"]["id"].as_u64().expect("id")), "id of {name} handed out twice");
    }
    assert!(lost.is_empty(), "{} of {} acknowledged imports lost: {lost:?}", lost.len(), acknowledged.len());
    let listed = nova_names(&client, &survivor.url, "crash:p");
    assert!(listed.len() >= acknowledged.len(), "the list misses acknowledged key pairs");
    eprintln!(
        "{} imports acknowledged ({} through the killed replica), {} stored",
        acknowledged.len(),
        victim_acks.load(Ordering::Relaxed),
        listed.len()
    );
}

/// `keyring` with the same ids and other key bytes (0600).
fn replaced_keyring(keyring: &Path, to: &Path) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let text = std::fs::read_to_string(keyring).expect("keyring");
    let replaced: String = text
        .lines()
        .map(|line| {
            if line.starts_with("key_hex") {
                format!("key_hex = \"{}\"\n", "5a".repeat(32))
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    assert_ne!(replaced, text);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(to).expect("replaced keyring");
    std::io::Write::write_all(&mut file, replaced.as_bytes()).expect("write");
    to.to_owned()
}

#[test]
fn a_replica_with_another_or_no_keyring_refuses_to_start() {
    let Some((pg, dir, keyring)) = database() else { return };
    let first = Replica::start(&pg.url(), &keyring, &[]);
    let client = reqwest::blocking::Client::new();
    let escrow = json!({"keypair": {"name": "sealed", "public_key": ED25519_PUBLIC_KEY.trim_end(),
        "key_protection": {"private_key": ED25519_PRIVATE_KEY, "encryption": {"type": "default"}}}});
    assert_eq!(must(&client, "POST", &format!("{}/v3/p/keypairs", first.url), "u:p", Some(&escrow)).0, 200);
    let id = current_key_id(&keyring);

    let other = replaced_keyring(&keyring, &dir.path().join("other.key"));
    let stderr = Replica::try_start(&pg.url(), Some(&other), &[]).err().expect("another keyring is refused");
    assert!(stderr.contains(&id), "the refusal names the master key id {id}: {stderr}");
    eprintln!("another keyring: {}", stderr.trim());

    // The usual mistake: each replica made its own keyring (`kps master-key generate` on each machine).
    let own_dir = tempfile::tempdir().expect("tempdir");
    let own = shared_keyring(own_dir.path());
    let stderr = Replica::try_start(&pg.url(), Some(&own), &[]).err().expect("a keyring of its own is refused");
    assert!(stderr.contains(&id), "the refusal names the master key id {id}: {stderr}");

    let missing = dir.path().join("missing.key");
    let stderr = Replica::try_start(&pg.url(), Some(&missing), &[]).err().expect("a missing keyring is refused");
    assert!(stderr.contains("missing.key") && stderr.contains("never creates"), "{stderr}");
    eprintln!("a missing keyring file: {}", stderr.trim());
    assert!(!missing.exists(), "kps on PostgreSQL never creates a keyring");

    let stderr = Replica::try_start(&pg.url(), None, &[]).err().expect("no keyring is refused");
    assert!(stderr.contains("master_key_file"), "{stderr}");
    eprintln!("no keyring configured: {}", stderr.trim());

    // The replica with the right keyring still serves, and still opens what it sealed.
    let (status, exported) = must(
        &client,
        "POST",
        &format!("{}/v3/p/keypairs/private-key/export", first.url),
        "u:p",
        Some(&json!({"keypair": {"name": "sealed"}})),
    );
    assert_eq!((status, &exported["keypair"]["private_key"]), (200, &json!(ED25519_PRIVATE_KEY)));
    let second = Replica::start(&pg.url(), &keyring, &[]);
    assert_eq!(v3_names(&client, &second.url, "u:p"), ["sealed"]);
}
