//! The real `kps` binary: startup, readiness, persistence, data-directory checks and graceful shutdown.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    pub fn start(data_dir: &Path) -> Self {
        Self::spawn(data_dir, None, &[])
    }

    pub fn start_with_config(data_dir: &Path, config: &Path) -> Self {
        Self::spawn(data_dir, Some(config), &[])
    }

    /// With extra `KPS_*` environment variables.
    pub fn start_with_env(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn(data_dir, None, env)
    }

    /// With its log as JSON lines at `level` in the file `log` (for tests that read what kps logged), and
    /// extra `KPS_*` variables. Blocking: from an async test, call it in `spawn_blocking`.
    pub fn start_logging(data_dir: &Path, log: &Path, level: &str, env: &[(&str, &str)]) -> Self {
        let log = std::fs::File::create(log).expect("log file");
        let mut env = env.to_vec();
        env.extend([("KPS_LOG", level), ("KPS_LOG_FORMAT", "json")]);
        Self::spawn_with(data_dir, None, &env, Stdio::from(log))
    }

    fn spawn(data_dir: &Path, config: Option<&Path>, env: &[(&str, &str)]) -> Self {
        Self::spawn_with(data_dir, config, env, Stdio::null())
    }

    fn spawn_with(data_dir: &Path, config: Option<&Path>, env: &[(&str, &str)], stderr: Stdio) -> Self {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_kps"));
        command.env_remove("KPS_CONFIG").env("KPS_LOG", "warn");
        if let Some(config) = config {
            command.env("KPS_CONFIG", config);
        }
        command.envs(env.iter().copied());
        let child = command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn kps");
        let server = Self { child, url: format!("http://127.0.0.1:{port}") };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if reqwest::blocking::get(format!("{}/healthz", self.url)).is_ok_and(|r| r.status() == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kps did not become ready");
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        self.child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
fn version_flag_prints_the_crate_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_kps")).arg("--version").output().expect("run");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("kps {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn key_pairs_survive_a_restart_and_sigterm_exits_0() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let server = Server::start(&data);
    let client = reqwest::blocking::Client::new();
    let created = client
        .post(format!("{}/v2.1/os-keypairs", server.url))
        .header("x-auth-token", "u:p")
        .header("content-type", "application/json")
        .body(serde_json::json!({"keypair": {"name": "kept", "public_key": crate::ED25519_VECTOR}}).to_string())
        .send()
        .expect("create");
    assert_eq!(created.status(), 200);
    assert!(server.stop().success(), "SIGTERM exits 0");
    let mode = std::fs::metadata(&data).expect("data dir").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);

    let server = Server::start(&data);
    let shown =
        client.get(format!("{}/v2.1/os-keypairs/kept", server.url)).header("x-auth-token", "u:p").send().expect("show");
    assert_eq!(shown.status(), 200);
    let body: serde_json::Value = shown.json().expect("json");
    assert_eq!(body["keypair"]["fingerprint"], crate::ED25519_VECTOR_FINGERPRINT);
    assert!(server.stop().success());
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let server = Server::start(&data);
    let out = Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
        .arg(&data)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another kps process"));
    assert!(server.stop().success());
}

#[test]
fn a_group_readable_data_dir_is_refused() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
        .arg(&data)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0755"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn noauth_refuses_a_non_loopback_listen_address() {
    let parent = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(parent.path().join("data"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_noauth_remote"));
}

#[test]
fn master_key_generate_rotates_and_old_keys_stay() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kps"))
            .args(["master-key", "generate", "--data-dir"])
            .arg(&data)
            .args(extra)
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8")
    };
    run(&[]);
    run(&[]);
    let printed = run(&["--print"]);
    assert_eq!(printed.matches("[[keys]]").count(), 3);
    let file = std::fs::read_to_string(data.join("master.key")).expect("keyring");
    assert_eq!(file.matches("[[keys]]").count(), 2, "--print leaves the file alone");
    let mode = std::fs::metadata(data.join("master.key")).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// Issue 11.12: `kps serve` marks itself non-dumpable before reading any secret. Observed from outside: the
/// kernel hands a non-dumpable process's `/proc/<pid>` entries to root instead of the process's user. So the
/// server runs as a user other than root (`nobody` when the tests run as root) and its `/proc/<pid>` must
/// be root's.
#[test]
fn the_server_process_is_not_dumpable() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let parent = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_kps"));
    let me = std::fs::metadata("/proc/self").expect("/proc").uid();
    let server_uid = if me == 0 {
        std::os::unix::fs::chown(parent.path(), Some(NOBODY), Some(NOBODY)).expect("chown");
        command.uid(NOBODY).gid(NOBODY);
        NOBODY
    } else {
        me
    };
    let port = free_port();
    let child = command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(parent.path().join("data"))
        .env("KPS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kps");
    let server = Server { child, url: format!("http://127.0.0.1:{port}") };
    server.wait_ready();
    let status = std::fs::metadata(format!("/proc/{}/status", server.child.id())).expect("/proc/<pid>/status");
    assert_eq!(status.uid(), 0, "a dumpable server's /proc entries would belong to uid {server_uid}");
    assert!(server.stop().success());
}

/// Runs `kps serve` on `data_dir` with extra `KPS_*` variables, expecting it to refuse to start: its stderr.
/// One still running after 60 s has started, which fails the test.
pub fn refused_start(data_dir: &Path, env: &[(&str, &str)]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
        .arg(data_dir)
        .env_remove("KPS_CONFIG")
        .env("KPS_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kps");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kps started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read stderr");
    assert!(!status.success(), "kps exited 0: {stderr}");
    stderr
}
