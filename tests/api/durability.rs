//! Durability of the real binary: acknowledged writes survive SIGKILL, and backups round-trip.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use rand::Rng;

use crate::binary::Server;

/// A distinct, valid `ssh-ed25519` public key line for `seed`.
pub fn ed25519_public_key(seed: u64) -> String {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&seed.to_be_bytes());
    let public = ed25519_dalek::SigningKey::from_bytes(&secret).verifying_key();
    let mut blob = Vec::new();
    for field in [b"ssh-ed25519".as_slice(), public.as_bytes().as_slice()] {
        blob.extend_from_slice(&u32::try_from(field.len()).expect("len").to_be_bytes());
        blob.extend_from_slice(field);
    }
    format!("ssh-ed25519 {}", base64::engine::general_purpose::STANDARD.encode(blob))
}

fn import(client: &reqwest::blocking::Client, url: &str, name: &str, public_key: &str) -> Option<String> {
    let body = serde_json::json!({"keypair": {"name": name, "public_key": public_key}}).to_string();
    let response = client
        .post(format!("{url}/v2.1/os-keypairs"))
        .header("x-auth-token", "crash:p")
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    let body: serde_json::Value = response.json().ok()?;
    body["keypair"]["fingerprint"].as_str().map(str::to_owned)
}

#[test]
fn every_acknowledged_import_survives_sigkill() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    std::fs::write(parent.path().join("kps.toml"), "[quota]\nkey_pairs = -1\n").expect("config");
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut seed = 0u64;

    for round in 0..3 {
        let server = Server::start_with_config(&data, &parent.path().join("kps.toml"));
        let url = server.url.clone();
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let (url, acknowledged) = (url.clone(), Arc::clone(&acknowledged));
                let first_seed = seed + writer * 1_000_000;
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    for i in 0..100_000u64 {
                        let name = format!("r{round}-w{writer}-{i}");
                        match import(&client, &url, &name, &ed25519_public_key(first_seed + i)) {
                            Some(fingerprint) => acknowledged.lock().expect("lock").push((name, fingerprint)),
                            None => return,
                        }
                    }
                })
            })
            .collect();
        seed += 100_000_000;
        std::thread::sleep(Duration::from_millis(rand::thread_rng().gen_range(300..1200)));
        server.kill();
        for writer in writers {
            writer.join().expect("writer");
        }
    }

    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() > 24, "too few writes to mean anything: {}", acknowledged.len());
    let server = Server::start_with_config(&data, &parent.path().join("kps.toml"));
    let client = reqwest::blocking::Client::new();
    let mut lost = Vec::new();
    for (name, fingerprint) in &acknowledged {
        let shown = client
            .get(format!("{}/v2.1/os-keypairs/{name}", server.url))
            .header("x-auth-token", "crash:p")
            .send()
            .expect("show");
        let body: serde_json::Value = shown.json().expect("json");
        if body["keypair"]["fingerprint"].as_str() != Some(fingerprint) {
            lost.push(name.clone());
        }
    }
    assert!(lost.is_empty(), "{} of {} acknowledged imports lost: {lost:?}", lost.len(), acknowledged.len());
    assert!(server.stop().success());
}

fn kps(args: &[&str], data: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("KPS_LOG", "warn")
        .output()
        .expect("run kps")
}

/// The backup lines after the header (whose `created_at` differs between exports).
fn records(file: &std::path::Path) -> String {
    std::fs::read_to_string(file).expect("backup").lines().skip(1).collect::<Vec<_>>().join("\n")
}

#[test]
fn backup_exports_online_and_offline_and_imports_into_a_wiped_store() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let server = Server::start(&data);
    let client = reqwest::blocking::Client::new();
    for i in 0..30 {
        assert!(import(&client, &server.url, &format!("k{i}"), &ed25519_public_key(i)).is_some());
    }

    // Online: the running server holds the lock, so the command goes through the admin API.
    let online = parent.path().join("online.jsonl");
    let denied =
        kps(&["backup", "export", online.to_str().expect("path"), "--url", &server.url, "--token", "u:p"], &data);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("kps:admin:backup"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    assert!(!online.exists(), "a failed export leaves no file");
    let out = kps(
        &["backup", "export", online.to_str().expect("path"), "--url", &server.url, "--token", "root:p:admin"],
        &data,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let refused = kps(&["backup", "import", online.to_str().expect("path")], &data);
    assert!(!refused.status.success(), "import needs the server stopped");
    assert!(server.stop().success());

    // Offline: the same records.
    let offline = parent.path().join("offline.jsonl");
    let out = kps(&["backup", "export", offline.to_str().expect("path")], &data);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(records(&online), records(&offline));
    let header: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&offline).expect("read").lines().next().expect("header"))
            .expect("json");
    assert_eq!(header["format_version"], 1);
    assert!(header["next_id"].as_u64().is_some_and(|n| n > 30));

    // Wipe, import, export again: every record comes back identical. The keyring is restored with it (the
    // backup carries its verifier: a new keyring would be refused).
    let keyring = std::fs::read(data.join("master.key")).expect("keyring");
    std::fs::remove_dir_all(&data).expect("wipe");
    let out = kps(&["backup", "import", offline.to_str().expect("path")], &data);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(data.join("master.key"), keyring).expect("restore the keyring");
    std::fs::set_permissions(data.join("master.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let again = parent.path().join("again.jsonl");
    assert!(kps(&["backup", "export", again.to_str().expect("path")], &data).status.success());
    assert_eq!(records(&again), records(&offline));
    let refused = kps(&["backup", "import", offline.to_str().expect("path")], &data);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert!(kps(&["backup", "import", "--force", offline.to_str().expect("path")], &data).status.success());

    // Ids continue after the imported ones.
    let server = Server::start(&data);
    assert!(import(&client, &server.url, "after", &ed25519_public_key(999)).is_some());
    let shown: serde_json::Value = client
        .get(format!("{}/v2.1/os-keypairs/after", server.url))
        .header("x-auth-token", "crash:p")
        .send()
        .expect("show")
        .json()
        .expect("json");
    assert!(shown["keypair"]["id"].as_u64() >= header["next_id"].as_u64());
    assert!(server.stop().success());
}

/// A Nova call as `token` ("user:project"): status and JSON body (null when there is none).
fn nova(method: &str, url: &str, path: &str, token: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let client = reqwest::blocking::Client::new();
    let mut request = client
        .request(method.parse().expect("method"), format!("{url}/v2.1/os-keypairs{path}"))
        .header("x-auth-token", token);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    let response = request.send().expect("send");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(serde_json::Value::Null))
}

fn create(url: &str, token: &str, name: &str, seed: u64) -> (u16, serde_json::Value) {
    let body = serde_json::json!({"keypair": {"name": name, "public_key": ed25519_public_key(seed)}});
    nova("POST", url, "", token, Some(body))
}

/// `backup import --force` into a store that has records replaces them: alice's `k` here and bob's `k` in the
/// backup (same project, same record id) leave exactly bob's, with a name index that knows it. (Before, the
/// two merged: the backup's name-index entry replaced the store's and forgot alice's `k`, whose record stayed.)
#[test]
fn a_forced_import_replaces_a_non_empty_store() {
    let parent = tempfile::tempdir().expect("tempdir");
    let (here, there) = (parent.path().join("here"), parent.path().join("there"));
    let server = Server::start(&here);
    assert_eq!(create(&server.url, "alice:p", "k", 1).0, 200);
    let alices = nova("GET", &server.url, "/k", "alice:p", None).1;
    assert_eq!(create(&server.url, "alice:p", "only-here", 2).0, 200);
    assert!(server.stop().success());
    let server = Server::start(&there);
    assert_eq!(create(&server.url, "bob:p", "k", 3).0, 200);
    let bobs = nova("GET", &server.url, "/k", "bob:p", None).1;
    assert!(server.stop().success());
    let (alices_id, bobs_id) = (&alices["keypair"]["id"], &bobs["keypair"]["id"]);
    assert!(alices_id.is_u64() && alices_id == bobs_id, "two fresh stores hand out the same first id");

    let backup = parent.path().join("there.jsonl");
    assert!(kps(&["backup", "export", backup.to_str().expect("path")], &there).status.success());
    let out = kps(&["backup", "import", "--force", backup.to_str().expect("path")], &here);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The backup's verifiers replaced the store's: its keyring comes with it.
    std::fs::copy(there.join("master.key"), here.join("master.key")).expect("the backup's keyring");

    let server = Server::start(&here);
    let url = server.url.as_str();
    assert_eq!(nova("GET", url, "", "alice:p", None).1["keypairs"], serde_json::json!([]), "nothing of alice's");
    let (status, shown) = nova("GET", url, "/k", "bob:p", None);
    assert_eq!(status, 200);
    assert_eq!((&shown["keypair"]["id"], &shown["keypair"]["fingerprint"]), (bobs_id, &bobs["keypair"]["fingerprint"]));
    assert_eq!(create(url, "bob:p", "k", 4).0, 409, "the name index knows bob's k");
    assert_eq!(create(url, "alice:p", "k", 5).0, 200);
    let (status, created) = nova("GET", url, "/k", "alice:p", None);
    assert_eq!(status, 200);
    assert!(created["keypair"]["id"].as_u64() > bobs_id.as_u64(), "ids move past the imported ones");
    assert_eq!(nova("DELETE", url, "/k", "bob:p", None).0, 202);
    assert_eq!(nova("GET", url, "/k", "alice:p", None).0, 200, "alice's k outlives bob's");
    assert!(server.stop().success());
}

/// The `strace -f -y -ttt` lines of one syscall, completed: a line split by another thread's syscall
/// (`fsync(5</p> <unfinished ...>` ... `<... fsync resumed>) = 0`) is joined, and the timestamp is that of the
/// completion.
fn completed_syscalls(trace: &str) -> Vec<(f64, String)> {
    let mut pending: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut done = Vec::new();
    for line in trace.lines() {
        let (pid, rest) = match line.strip_prefix("[pid ") {
            Some(rest) => rest.split_once("] ").map_or(("main", rest), |(pid, rest)| (pid, rest)),
            None => line.split_once(' ').unwrap_or(("main", line)),
        };
        let Some((time, call)) = rest.trim_start().split_once(' ') else { continue };
        let Ok(time) = time.parse::<f64>() else { continue };
        if let Some(start) = call.strip_suffix(" <unfinished ...>") {
            pending.insert(pid.to_owned(), start.to_owned());
        } else if call.starts_with("<... ") {
            let start = pending.remove(pid).unwrap_or_default();
            let end = call.split_once(" resumed>").map_or("", |(_, end)| end);
            done.push((time, format!("{start}{end}")));
        } else {
            done.push((time, call.to_owned()));
        }
    }
    done
}

fn now_epoch() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64()
}

/// Issue 11 point 4: sled writes a log item larger than a quarter of a segment to `db/blobs/<lsn>`; the
/// blob file and its directory entry must be on disk before the write that needs them is acknowledged.
/// Watched with strace on the real binary: every blob file opened while a ~100 KB-comment import was in
/// flight is fsynced, and so is the `blobs` directory, before the client has its answer. Skipped (with a
/// message) where strace is missing or may not trace.
#[test]
fn a_large_import_answers_only_after_its_blob_file_is_synced() {
    if Command::new("strace").arg("-V").output().is_err() {
        // .ci/run installs strace: in CI this evidence must be checked, not skipped.
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "strace is missing, yet .ci/run installs it");
        eprintln!("skipped: strace is not installed");
        return;
    }
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let trace_file = parent.path().join("trace");
    let port = crate::binary::free_port();
    let mut strace = Command::new("strace")
        .args(["-f", "-y", "-ttt", "-e", "trace=openat,fsync,fdatasync", "-o"])
        .arg(&trace_file)
        .arg(env!("CARGO_BIN_EXE_kps"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data)
        .env("KPS_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn strace");
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while client.get(format!("{url}/healthz")).send().map_or(true, |r| r.status() != 200) {
        if let Ok(Some(status)) = strace.try_wait() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut strace.stderr.take().expect("stderr"), &mut stderr).ok();
            eprintln!("skipped: strace cannot trace here ({status}): {stderr}");
            return;
        }
        assert!(std::time::Instant::now() < deadline, "kps under strace did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }

    let comment = "c".repeat(100_000);
    let mut requests = Vec::new();
    // Each record is below the blob threshold; sled's leaf node holding several of them is not (from the
    // fifth import on, seen with sled 0.34.7's default 512 KiB segments).
    for i in 0..10 {
        let sent = now_epoch();
        let key = format!("{} {comment}", ed25519_public_key(7000 + i));
        assert!(import(&client, &url, &format!("big{i}"), &key).is_some(), "import {i}");
        requests.push((sent, now_epoch()));
    }
    // Stop kps (strace's child) with SIGTERM and let strace finish its output.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id())).expect("children");
    let kps_pid = children.split_whitespace().next().expect("kps pid").to_owned();
    assert!(Command::new("kill").args(["-TERM", &kps_pid]).status().expect("kill").success());
    strace.wait().expect("strace");
    let calls = completed_syscalls(&std::fs::read_to_string(&trace_file).expect("trace"));

    let data = data.canonicalize().expect("data dir");
    // The directories kps created (the data dir, sled's `db`) have durable entries before the first answer.
    let first_answer = requests[0].1;
    for created in [&data, &data.join("db")] {
        let parent = format!("<{}>)", created.parent().expect("parent").display());
        let synced = calls.iter().any(|(time, call)| {
            *time <= first_answer && call.starts_with("fsync(") && call.contains(&parent) && call.ends_with("= 0")
        });
        assert!(synced, "the entry of {} was not made durable (fsync of its parent)", created.display());
    }
    let blobs_dir = format!("{}/db/blobs>", data.display());
    let mut blobs_seen = 0;
    for (sent, answered) in requests {
        let during = |time: f64| time >= sent && time <= answered;
        let opened: Vec<String> = calls
            .iter()
            .filter(|(time, call)| during(*time) && call.starts_with("openat(") && call.contains("/db/blobs/"))
            .filter_map(|(_, call)| call.rsplit_once(" = ").map(|(_, fd)| fd.to_owned()))
            .filter_map(|fd| fd.split_once('<').map(|(_, path)| path.trim_end_matches('>').to_owned()))
            .collect();
        for blob in &opened {
            let synced = calls.iter().any(|(time, call)| {
                *time <= answered
                    && call.starts_with("fsync(")
                    && call.contains(&format!("<{blob}>)"))
                    && call.ends_with("= 0")
            });
            assert!(synced, "blob {blob} was not fsynced before the import was answered");
            let dir_synced = calls.iter().any(|(time, call)| {
                during(*time) && call.starts_with("fsync(") && call.contains(&blobs_dir) && call.ends_with("= 0")
            });
            assert!(dir_synced, "the blobs directory was not fsynced after {blob} was created");
        }
        blobs_seen += opened.len();
    }
    assert!(blobs_seen > 0, "no blob file was written: the test no longer exercises sled's blob path");
}

/// Issue 11 point 11: `FILE.partial` (backup export) and `master.key.new` (master-key generate) are created
/// new, 0600, never through a symlink: a link planted there by someone who can write the directory does
/// not get its target overwritten (or created), and the real file lands in place.
#[test]
fn backup_export_and_master_key_generate_never_write_through_a_planted_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let victim = parent.path().join("victim");
    std::fs::write(&victim, "precious").expect("victim");

    let backup = parent.path().join("backup.jsonl");
    std::os::unix::fs::symlink(&victim, parent.path().join("backup.jsonl.partial")).expect("plant");
    let out = kps(&["backup", "export", backup.to_str().expect("path")], &data);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read_to_string(&backup).expect("backup").contains("format_version"));
    assert_eq!(std::fs::metadata(&backup).expect("meta").permissions().mode() & 0o777, 0o600);

    let planted = parent.path().join("planted-keyring");
    std::os::unix::fs::symlink(&planted, data.join("master.key.new")).expect("plant");
    let out = kps(&["master-key", "generate"], &data);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!planted.exists(), "the keyring was not written through the link");
    let keyring = data.join("master.key");
    assert!(std::fs::symlink_metadata(&keyring).expect("keyring").file_type().is_file());
    assert_eq!(std::fs::metadata(&keyring).expect("meta").permissions().mode() & 0o777, 0o600);

    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "precious");
}

/// Copies a directory tree (files and directories only).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    std::fs::set_permissions(to, std::fs::metadata(from).expect("meta").permissions()).expect("chmod");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Starts kps on `data`; `Err(stderr)` if it exits instead of becoming ready.
fn try_start(data: &std::path::Path) -> Result<Server, String> {
    let port = crate::binary::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .env("KPS_LOG", "warn")
        .env_remove("KPS_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kps");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(_status) = child.try_wait().expect("status") {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read");
            return Err(stderr);
        }
        if reqwest::blocking::get(format!("{url}/healthz")).is_ok_and(|r| r.status() == 200) {
            return Ok(Server { child, url });
        }
        assert!(std::time::Instant::now() < deadline, "kps neither started nor exited");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 11 point 4: sled reads a corrupt log entry as the end of its log. A store whose `db` file has one
/// flipped bit must either be refused at start, naming the gap and pointing to a restore, or serve every
/// acknowledged key pair — never a silently shorter list (before: 16 to 29 of 30 served, without a word).
#[test]
fn a_store_with_a_damaged_log_is_refused_or_whole_never_short() {
    let parent = tempfile::tempdir().expect("tempdir");
    let pristine = parent.path().join("pristine");
    let server = Server::start(&pristine);
    let client = reqwest::blocking::Client::new();
    let names: Vec<String> = (0..30).map(|i| format!("k{i:02}")).collect();
    for (i, name) in (0u64..).zip(&names) {
        assert!(import(&client, &server.url, name, &ed25519_public_key(30_000 + i)).is_some(), "{name}");
    }
    assert!(server.stop().success());

    let size = std::fs::metadata(pristine.join("db/db")).expect("db file").len();
    let (mut refused, mut whole) = (0, 0);
    for trial in 0..8u64 {
        // Spread over the second half of the file, away from round offsets.
        let position = size / 2 + trial * (size / 2) / 8 + 37 * trial % 61;
        let data = parent.path().join(format!("trial{trial}"));
        copy_tree(&pristine, &data);
        let db_file = data.join("db/db");
        let mut bytes = std::fs::read(&db_file).expect("read db");
        bytes[usize::try_from(position).expect("position")] ^= 0x10;
        std::fs::write(&db_file, bytes).expect("write db");

        match try_start(&data) {
            Err(stderr) => {
                assert!(stderr.contains("lost acknowledged writes"), "trial {trial} at {position}: {stderr}");
                assert!(stderr.contains("Restore from a backup"), "{stderr}");
                refused += 1;
            }
            Ok(server) => {
                let listed: serde_json::Value = client
                    .get(format!("{}/v2.1/os-keypairs", server.url))
                    .header("x-auth-token", "crash:p")
                    .send()
                    .expect("list")
                    .json()
                    .expect("json");
                let served: Vec<&str> = listed["keypairs"]
                    .as_array()
                    .expect("keypairs")
                    .iter()
                    .filter_map(|k| k["keypair"]["name"].as_str())
                    .collect();
                assert_eq!(served, names, "trial {trial}: flipped a bit at {position} of {size}");
                assert!(server.stop().success());
                whole += 1;
            }
        }
    }
    eprintln!("{refused} damaged stores refused, {whole} served whole");
    assert!(refused > 0, "no trial damaged a commit: the test no longer exercises the check");
}
