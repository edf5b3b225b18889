//! A PostgreSQL test harness: each `PgServer` is its own cluster (`initdb` into a temp dir), listening on a
//! Unix socket in that dir and on a free 127.0.0.1 port, stopped (`pg_ctl stop -m fast`) when dropped.
//!
//! The binaries come from `/usr/lib/postgresql/*/bin` (Debian puts them there) or PATH. `initdb` refuses to
//! run as root, so as root (CI) every server command runs as the `postgres` user through `runuser`, and the
//! temp dir is handed to that user. Without PostgreSQL the tests that need it skip with a printed reason,
//! except under `CI=true`, where a missing PostgreSQL is a failure ([`PgServer::start`]).
//!
//! Authentication is `trust` (loopback and socket only). Each cluster has a role `kps` (LOGIN, no
//! superuser: kps needs ordinary privileges only) owning a database `kps`; [`PgServer::url`] connects as it.
//! Replication: [`PgServer::start_primary_with_standby`] makes a primary whose commits wait for a
//! synchronous standby (`synchronous_standby_names = '*'`, `synchronous_commit = on`), and a streaming
//! standby made with `pg_basebackup -R` on another port; [`PgServer::stop_immediate`] and
//! [`PgServer::promote`] drive a failover, [`multi_host_url`] is the URL a kps replica uses to follow it.
//!
//! `fsync = off`: the tests crash PostgreSQL processes, never the machine, so the page cache keeps every
//! committed write and the tests need not pay for fsyncs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// One PostgreSQL server (a cluster of its own) for a test.
pub struct PgServer {
    bin: PathBuf,
    /// Holds the data directory, the socket and the log; removed on drop, after the server stopped.
    dir: tempfile::TempDir,
    /// The `postgres` user runs the server commands (we are root).
    as_postgres: bool,
    pub port: u16,
}

/// Where `initdb`, `pg_ctl` & co. are, or why there is no PostgreSQL.
fn bin_dir() -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    // The newest major version first.
    candidates.sort_by_key(|path| {
        std::cmp::Reverse(
            path.parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() && dir.join("postgres").is_file())
        .ok_or_else(|| "no initdb/pg_ctl in /usr/lib/postgresql/*/bin or PATH (apt-get install postgresql)".into())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Whether the tests that need PostgreSQL may run; prints why not (and fails under `CI=true`).
pub fn available() -> bool {
    match bin_dir() {
        Ok(_) if is_root() && !user_exists("postgres") => skip("we are root and there is no `postgres` user"),
        Ok(_) => true,
        Err(reason) => skip(&reason),
    }
}

fn skip(reason: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("PostgreSQL is needed under CI=true: {reason}");
    }
    eprintln!("skipped: PostgreSQL not available: {reason}");
    false
}

fn user_exists(name: &str) -> bool {
    Command::new("id").arg("-u").arg(name).output().is_ok_and(|o| o.status.success())
}

/// `postgresql://kps@127.0.0.1:p1,127.0.0.1:p2/kps?target_session_attrs=read-write`: the URL of a kps
/// replica that follows the primary among `servers`.
pub fn multi_host_url(servers: &[&PgServer]) -> String {
    let hosts: Vec<String> = servers.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
    format!("postgresql://kps@{}/kps?target_session_attrs=read-write&connect_timeout=2", hosts.join(","))
}

impl PgServer {
    /// A running server with the role and database `kps`, or `None` (printed reason) when PostgreSQL is not
    /// installed; under `CI=true` that panics instead.
    pub fn start() -> Option<Self> {
        if !available() {
            return None;
        }
        let server = Self::init();
        server.start_server();
        server.psql("postgres", "CREATE ROLE kps LOGIN");
        server.psql("postgres", "CREATE DATABASE kps OWNER kps");
        Some(server)
    }

    /// A primary whose commits wait for a synchronous standby, and that standby (streaming, made with
    /// `pg_basebackup -R`, on its own port), already in sync; `None` as [`PgServer::start`].
    pub fn start_primary_with_standby() -> Option<(Self, Self)> {
        let primary = Self::start()?;
        primary.append_conf("synchronous_standby_names = '*'\nsynchronous_commit = on\n");
        primary.pg_ctl(&["reload"]);
        let standby = Self::empty();
        let data = standby.data_dir();
        let port = primary.port.to_string();
        let backup = [
            "-D",
            path_str(&data),
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        ];
        standby.run_checked("pg_basebackup", &backup);
        // The standby's copy of the primary's settings, less the wait for a standby of its own (once promoted it
        // is alone and must take writes).
        let conf = format!(
            "port = {}\nunix_socket_directories = '{}'\nsynchronous_standby_names = ''\n",
            standby.port,
            standby.socket_dir()
        );
        standby.append_conf(&conf);
        standby.start_server();
        let deadline = Instant::now() + Duration::from_secs(30);
        while primary.psql("postgres", "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'").trim()
            != "1"
        {
            assert!(Instant::now() < deadline, "the standby did not become synchronous");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some((primary, standby))
    }

    /// `postgresql://kps@127.0.0.1:<port>/kps` (TCP, role `kps`, no password).
    pub fn url(&self) -> String {
        format!("postgresql://kps@127.0.0.1:{}/kps", self.port)
    }

    /// The same database over the Unix socket, as a libpq key/value connection string.
    pub fn socket_url(&self) -> String {
        format!("host={} port={} user=kps dbname=kps", self.socket_dir(), self.port)
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> String {
        path_str(self.dir.path()).to_owned()
    }

    /// Runs `sql` in `database` as the superuser `postgres` (psql, unaligned tuples) and returns stdout.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let args =
            ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d"];
        let mut command = Command::new(self.bin.join("psql"));
        command.args(args).arg(database).arg("-c").arg(sql);
        let output = command.output().expect("run psql");
        assert!(output.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A new empty database owned by `kps`, and its URL (for one more independent store on this server).
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER kps"));
        format!("postgresql://kps@127.0.0.1:{}/{name}", self.port)
    }

    /// Crash-stops the server (`pg_ctl stop -m immediate`: no checkpoint, like a power cut of the process).
    pub fn stop_immediate(&mut self) {
        self.pg_ctl(&["stop", "-m", "immediate"]);
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`).
    pub fn stop(&mut self) {
        self.pg_ctl(&["stop", "-m", "fast"]);
    }

    /// Starts the stopped server again (same data, port and socket).
    pub fn restart(&mut self) {
        self.start_server();
    }

    /// Promotes a standby to primary and waits until it takes writes.
    pub fn promote(&self) {
        self.pg_ctl(&["promote"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.psql("postgres", "SELECT pg_is_in_recovery()").trim() != "f" {
            assert!(Instant::now() < deadline, "the standby was not promoted");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Turns TLS on with a server certificate chain and its key (PEM) and restarts the server: TCP clients may
    /// then use `sslmode=require|verify-ca|verify-full`.
    pub fn enable_ssl(&mut self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data_dir();
        for (name, text) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, text).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            if self.as_postgres {
                let output = Command::new("chown").arg("postgres:postgres").arg(&path).output().expect("chown");
                assert!(output.status.success(), "chown: {}", String::from_utf8_lossy(&output.stderr));
            }
        }
        self.append_conf("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        self.stop();
        self.restart();
    }

    /// Whether the server is running (its postmaster.pid is there).
    pub fn is_running(&self) -> bool {
        self.data_dir().join("postmaster.pid").exists()
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A temp dir owned by the server's user and a free port; no data directory yet.
    fn empty() -> Self {
        let bin = bin_dir().expect("PostgreSQL binaries");
        let dir = tempfile::Builder::new().prefix("kps-pg").tempdir().expect("tempdir");
        let as_postgres = is_root();
        if as_postgres {
            let output = Command::new("chown").arg("postgres:postgres").arg(dir.path()).output().expect("chown");
            assert!(output.status.success(), "chown: {}", String::from_utf8_lossy(&output.stderr));
        }
        Self { bin, dir, as_postgres, port: free_port() }
    }

    /// A fresh cluster (not started) with the harness's settings.
    fn init() -> Self {
        let server = Self::empty();
        let data = server.data_dir();
        let args = ["-D", path_str(&data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "-N"];
        server.run_checked("initdb", &args);
        server.append_conf(&format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\nshared_buffers = 16MB\nmax_connections = 100\n\
             wal_level = replica\nmax_wal_senders = 4\nwal_keep_size = 64MB\nhot_standby = on\n",
            server.port,
            server.socket_dir()
        ));
        server
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn append_conf(&self, lines: &str) {
        use std::io::Write;
        let path = self.data_dir().join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("open postgresql.conf");
        file.write_all(lines.as_bytes()).expect("write postgresql.conf");
    }

    fn start_server(&self) {
        let (data, log) = (self.data_dir(), self.dir.path().join("server.log"));
        let output = self.run("pg_ctl", &["start", "-w", "-t", "60", "-D", path_str(&data), "-l", path_str(&log)]);
        assert!(output.status.success(), "pg_ctl start: {}\n{}", String::from_utf8_lossy(&output.stderr), self.log());
    }

    fn pg_ctl(&self, args: &[&str]) {
        let mut all = args.to_vec();
        let data = self.data_dir();
        all.extend(["-w", "-D", path_str(&data)]);
        self.run_checked("pg_ctl", &all);
    }

    fn run_checked(&self, program: &str, args: &[&str]) {
        let output = self.run(program, args);
        assert!(
            output.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Runs one of the PostgreSQL programs, as `postgres` when we are root.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.args(args).current_dir(self.dir.path()).output().expect("run a PostgreSQL program")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data_dir();
        if self.is_running() {
            let _ = self.run("pg_ctl", &["stop", "-m", "fast", "-w", "-D", path_str(&data)]);
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

#[test]
fn a_primary_with_a_synchronous_standby_fails_over() {
    let Some((mut primary, standby)) = PgServer::start_primary_with_standby() else { return };
    primary.psql("kps", "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    primary.stop_immediate();
    assert!(!primary.is_running());
    standby.promote();
    assert_eq!(standby.psql("kps", "INSERT INTO t VALUES (2); SELECT count(*) FROM t").trim(), "2");
    assert!(multi_host_url(&[&primary, &standby]).contains(&format!(",127.0.0.1:{}/kps?", standby.port)));
}

#[test]
fn a_server_starts_answers_and_stops() {
    let Some(server) = PgServer::start() else { return };
    let mut server = server;
    assert_eq!(server.psql("kps", "SELECT current_database()").trim(), "kps");
    server.stop();
    assert!(!server.is_running());
    server.restart();
    assert_eq!(server.psql("kps", "SELECT 1").trim(), "1");
    let data = server.data_dir();
    drop(server);
    assert!(!data.exists(), "the temp dir is removed after the server stopped");
}
