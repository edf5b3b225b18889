//! The real binary on a full filesystem (a small tmpfs; needs root to mount it, skipped with a message
//! otherwise): the store stops taking writes and says so on `/readyz`, and nothing acknowledged is lost.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::binary::Server;
use crate::durability::ed25519_public_key;

/// A tmpfs of a given size mounted on a fresh directory, unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (after saying why on stderr) where mounting is not allowed.
    pub fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Self { dir }),
            Ok(out) => {
                eprintln!("skipped: cannot mount a tmpfs: {}", String::from_utf8_lossy(&out.stderr).trim());
                None
            }
            Err(error) => {
                eprintln!("skipped: cannot run mount: {error}");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the filesystem with a file but for `leave` bytes (the file is removed later to free space).
    pub fn fill(&self, leave: u64) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![1u8; 64 * 1024];
        while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
        let size = file.metadata().expect("filler size").len();
        file.set_len(size.saturating_sub(leave)).expect("truncate the filler");
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn import(client: &reqwest::blocking::Client, url: &str, name: &str, seed: u64) -> (u16, serde_json::Value) {
    let public_key = format!("{} {}", ed25519_public_key(seed), "c".repeat(20_000));
    let body = serde_json::json!({"keypair": {"name": name, "public_key": public_key}}).to_string();
    let response = client
        .post(format!("{url}/v2.1/os-keypairs"))
        .header("x-auth-token", "disk:p")
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .expect("every request gets an answer");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or_default())
}

fn get(client: &reqwest::blocking::Client, url: &str) -> (u16, String) {
    let response = client.get(url).send().expect("answer");
    (response.status().as_u16(), response.text().unwrap_or_default())
}

/// Issue 11 point 4: writes fail cleanly once the disk is full, and stay refused after space is freed
/// (a failed write or sync is never retried); `/readyz` turns 503 so that a load balancer acts, while
/// `/healthz` (liveness) stays 200. After a restart with free space every acknowledged key pair is there.
#[test]
fn a_full_disk_makes_the_store_unready_for_good_and_loses_nothing_acknowledged() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let data = fs.path().join("data");
    let server = Server::start(&data);
    let client = reqwest::blocking::Client::new();
    assert_eq!(get(&client, &format!("{}/readyz", server.url)), (200, r#"{"status":"ready"}"#.to_owned()));

    let filler = fs.fill(1 << 20);
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for i in 0..400 {
        let (status, body) = import(&client, &server.url, &format!("k{i}"), i);
        if status == 200 {
            acknowledged.push((format!("k{i}"), body["keypair"]["fingerprint"].clone()));
        } else {
            refusal = Some((status, body));
            break;
        }
    }
    let (status, body) = refusal.expect("the full filesystem refused no write");
    assert!(acknowledged.len() > 5, "the test needs some writes before the disk is full: {}", acknowledged.len());
    eprintln!("{} imports acknowledged before the disk was full", acknowledged.len());
    assert_eq!((status, body["error_code"].as_str()), (503, Some("KPS.9005")), "{body}");

    let unready = (503, r#"{"status":"unready","reason":"store"}"#.to_owned());
    assert_eq!(get(&client, &format!("{}/readyz", server.url)), unready);
    assert_eq!(get(&client, &format!("{}/healthz", server.url)).0, 200, "liveness stays");

    std::fs::remove_file(&filler).expect("free the space");
    let (status, body) = import(&client, &server.url, "after-freeing", 10_000);
    assert_eq!((status, body["error_code"].as_str()), (503, Some("KPS.9005")), "never retried: {body}");
    assert_eq!(get(&client, &format!("{}/readyz", server.url)), unready);
    server.stop();

    let server = Server::start(&data);
    assert_eq!(get(&client, &format!("{}/readyz", server.url)).0, 200);
    for (name, fingerprint) in &acknowledged {
        let shown = client
            .get(format!("{}/v2.1/os-keypairs/{name}", server.url))
            .header("x-auth-token", "disk:p")
            .send()
            .expect("show");
        assert_eq!(shown.status(), 200, "{name} was acknowledged");
        let body: serde_json::Value = shown.json().expect("json");
        assert_eq!(&body["keypair"]["fingerprint"], fingerprint);
    }
    assert!(server.stop().success());
}

/// Issue 11 point 4: with stderr on a full filesystem every log line fails; tracing-subscriber used to
/// report that with `eprintln!`, which panics when stderr fails, and connections were dropped unanswered.
/// Now every request is answered, the process lives on, and the lost lines are counted in `/metrics`.
#[test]
fn a_full_log_disk_costs_log_lines_never_an_answer() {
    let Some(fs) = Tmpfs::mount("1m") else { return };
    let parent = tempfile::tempdir().expect("tempdir");
    let log = std::fs::File::create(fs.path().join("kps.log")).expect("log file");
    let port = crate::binary::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(parent.path().join("data"))
        .env("KPS_LOG", "info")
        .env_remove("KPS_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn kps");
    let mut server = Server { child, url: format!("http://127.0.0.1:{port}") };
    let client = reqwest::blocking::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while client.get(format!("{}/healthz", server.url)).send().map_or(true, |r| r.status() != 200) {
        assert!(std::time::Instant::now() < deadline, "kps did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    fs.fill(0);

    for i in 0..30 {
        let answer = if i % 2 == 0 {
            let key = ed25519_public_key(20_000 + i);
            let body = serde_json::json!({"keypair": {"name": format!("k{i}"), "public_key": key}}).to_string();
            client
                .post(format!("{}/v2.1/os-keypairs", server.url))
                .header("x-auth-token", "log:p")
                .header("content-type", "application/json")
                .body(body)
                .send()
        } else {
            client.get(format!("{}/v2.1/os-keypairs", server.url)).header("x-auth-token", "log:p").send()
        };
        let answer = answer.unwrap_or_else(|e| panic!("request {i} got no answer: {e}"));
        assert_eq!(answer.status(), 200, "request {i}");
    }
    assert!(server.child.try_wait().expect("status").is_none(), "kps is still running");
    let metrics = get(&client, &format!("{}/metrics", server.url)).1;
    let dropped: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("kps_log_lines_dropped_total "))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no kps_log_lines_dropped_total in {metrics}"));
    // The log file's last page may still take a dozen lines; the rest are dropped.
    assert!(dropped >= 10.0, "30 request lines, few of them written: {dropped} dropped");
    assert!(server.stop().success());
}
