//! Client compatibility: the unmodified Python OpenStack clients (python-novaclient, openstacksdk) and the
//! Huawei Cloud SDKs (huaweicloudsdkecs, huaweicloudsdkkps; against kps in `aksk` mode) against the `kps`
//! binary built for this test run.
//!
//! The tests themselves are pytest files in `tests/compat/`; this driver only prepares their Python
//! environment and runs them. The venv lives at `<target>/compat-venv` and is rebuilt only when
//! `tests/compat/requirements.txt` or the Python version changes (a stamp file records both). A missing
//! `python3` fails the test with instructions: these clients are part of what kps promises, so a machine
//! that cannot run them must not report green. `KPS_SKIP_CLIENT_COMPAT=1` skips the test for quick local
//! runs; `KPS_COMPAT_PYTHON` names another interpreter than `python3`.
//!
//! The second test fuzzes kps's own `/openapi.json` with schemathesis (`tests/compat/openapi_fuzz.py`, in
//! its own venv `<target>/openapi-fuzz-venv` from `tests/compat/requirements-openapi.txt`): no server error
//! but the documented 501s, no rejected schema-valid request, no accepted schema-violating request, and
//! responses that match their schemas. It is bounded by a number of generated cases per operation
//! (`KPS_OPENAPI_FUZZ_EXAMPLES`, default 100) with a fixed seed, and skipped with `KPS_SKIP_CLIENT_COMPAT=1`
//! or `KPS_SKIP_OPENAPI_FUZZ=1`.

use std::ffi::OsStr;
use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

const SKIP_VAR: &str = "KPS_SKIP_CLIENT_COMPAT";
const FUZZ_SKIP_VAR: &str = "KPS_SKIP_OPENAPI_FUZZ";
const FUZZ_EXAMPLES_VAR: &str = "KPS_OPENAPI_FUZZ_EXAMPLES";
/// Generated cases per operation and generation mode (schemathesis `--max-examples`): under a minute here.
const FUZZ_EXAMPLES: &str = "100";
const FUZZ_SEED: &str = "14";
const FUZZ_VENV_DIR: &str = "openapi-fuzz-venv";
/// A hard stop far above the expected minute; the bound that matters is the number of cases.
const FUZZ_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const PYTHON_VAR: &str = "KPS_COMPAT_PYTHON";
const VENV_DIR: &str = "compat-venv";
const STAMP_FILE: &str = "kps-requirements.stamp";
const PIP_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const PYTEST_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Another `cargo test` may be building the same venv; a lock older than this is left over from a crash.
const STALE_LOCK_AGE: Duration = Duration::from_secs(30 * 60);
/// How long pytest gets after SIGTERM to stop its kps server before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(20);

#[test]
fn python_openstack_clients_work_against_kps() {
    if std::env::var_os(SKIP_VAR).is_some_and(|v| v == "1") {
        println!("client_compat: skipped because {SKIP_VAR}=1 (never set this in CI)");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let kps_bin = Path::new(env!("CARGO_BIN_EXE_kps"));
    let python = std::env::var_os(PYTHON_VAR).map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    let python_version = python_version(&python);

    let started = Instant::now();
    let venv = ensure_venv(&python, &python_version, repo, &target_dir(kps_bin), "requirements.txt", VENV_DIR);
    println!("client_compat: venv {} ready in {:.1?}", venv.display(), started.elapsed());

    let started = Instant::now();
    let mut pytest = Command::new(venv.join("bin/python"));
    pytest
        .args(["-m", "pytest", "-q", "-rfE", "tests/compat"])
        .current_dir(repo)
        .env("KPS_BIN", kps_bin)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("KPS_COMPAT_URL");
    let run = run_with_timeout(&mut pytest, PYTEST_TIMEOUT);
    println!("client_compat: pytest finished in {:.1?}\n{}", started.elapsed(), run.output);
    assert!(run.status.success(), "client-compatibility tests failed ({}); pytest output:\n{}", run.status, run.output);
}

#[test]
fn openapi_document_survives_schemathesis() {
    for var in [SKIP_VAR, FUZZ_SKIP_VAR] {
        if std::env::var_os(var).is_some_and(|v| v == "1") {
            println!("openapi_fuzz: skipped because {var}=1 (never set this in CI)");
            return;
        }
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let kps_bin = Path::new(env!("CARGO_BIN_EXE_kps"));
    let python = std::env::var_os(PYTHON_VAR).map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    let python_version = python_version(&python);
    let examples = std::env::var(FUZZ_EXAMPLES_VAR).unwrap_or_else(|_| FUZZ_EXAMPLES.to_owned());

    let started = Instant::now();
    let target = target_dir(kps_bin);
    let venv = ensure_venv(&python, &python_version, repo, &target, "requirements-openapi.txt", FUZZ_VENV_DIR);
    println!("openapi_fuzz: venv {} ready in {:.1?}", venv.display(), started.elapsed());

    let started = Instant::now();
    let mut fuzz = Command::new(venv.join("bin/python"));
    fuzz.args(["tests/compat/openapi_fuzz.py", "--max-time", "0", "--seed", FUZZ_SEED, "--max-examples", &examples])
        .current_dir(repo)
        .env("KPS_BIN", kps_bin)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let run = run_with_timeout(&mut fuzz, FUZZ_TIMEOUT);
    println!("openapi_fuzz: finished in {:.1?}\n{}", started.elapsed(), run.output);
    assert!(
        run.status.success(),
        "schemathesis found problems in openapi.json ({}); output:\n{}",
        run.status,
        run.output
    );
}

/// `<target>` from `<target>/<profile>/kps` (also right for the shared target directory of this repo).
fn target_dir(kps_bin: &Path) -> PathBuf {
    kps_bin
        .parent()
        .and_then(Path::parent)
        .expect("CARGO_BIN_EXE_kps has the form <target>/<profile>/kps")
        .to_path_buf()
}

fn python_version(python: &Path) -> String {
    let output = match Command::new(python).arg("--version").stdin(Stdio::null()).output() {
        Ok(output) => output,
        Err(err) if err.kind() == ErrorKind::NotFound => panic!(
            "client_compat needs {} (with the venv module) to run python-novaclient and openstacksdk against \
             kps, but it is not on PATH. Install it (Debian: apt-get install python3 python3-venv), point \
             {PYTHON_VAR} at an interpreter, or set {SKIP_VAR}=1 to skip this test locally.",
            python.display()
        ),
        Err(err) => panic!("cannot run {} --version: {err}", python.display()),
    };
    assert!(output.status.success(), "{} --version failed: {}", python.display(), output.status);
    // Python < 3.4 printed the version on stderr.
    let text = if output.stdout.is_empty() { output.stderr } else { output.stdout };
    String::from_utf8_lossy(&text).trim().to_string()
}

/// The venv at `<target>/<venv_dir>` for `tests/compat/<requirements>`, (re)built unless its stamp matches
/// the requirements and Python.
fn ensure_venv(
    python: &Path,
    python_version: &str,
    repo: &Path,
    target: &Path,
    requirements: &str,
    venv_dir: &str,
) -> PathBuf {
    let requirements = repo.join("tests/compat").join(requirements);
    let contents = fs::read(&requirements).unwrap_or_else(|e| panic!("read {}: {e}", requirements.display()));
    let stamp = format!("{:016x} {python_version}\n", fnv1a64(&[&contents, python_version.as_bytes()]));
    let venv = target.join(venv_dir);
    let stamp_path = venv.join(STAMP_FILE);

    let _lock = DirLock::acquire(&target.join(format!("{venv_dir}.lock")));
    if venv.join("bin/python").exists() && fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
        return venv;
    }
    println!("client_compat: building {} from {}", venv.display(), requirements.display());
    if venv.exists() {
        fs::remove_dir_all(&venv).expect("remove outdated compat venv");
    }
    let created = run_with_timeout(
        Command::new(python).args([OsStr::new("-m"), OsStr::new("venv"), venv.as_os_str()]),
        PIP_TIMEOUT,
    );
    assert!(
        created.status.success(),
        "`{} -m venv {}` failed (Debian needs the python3-venv package):\n{}",
        python.display(),
        venv.display(),
        created.output
    );
    let installed = run_with_timeout(
        Command::new(venv.join("bin/python"))
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q", "-r"])
            .arg(&requirements),
        PIP_TIMEOUT,
    );
    assert!(installed.status.success(), "pip install -r {} failed:\n{}", requirements.display(), installed.output);
    // Written last: an interrupted install leaves no stamp and is redone next time.
    fs::write(&stamp_path, stamp).expect("write compat venv stamp");
    venv
}

/// FNV-1a, 64 bit: a stable content hash without extra dependencies (not for security).
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// A directory used as a cross-process lock (`mkdir` is atomic); removed on drop.
struct DirLock {
    path: PathBuf,
}

impl DirLock {
    fn acquire(path: &Path) -> Self {
        let deadline = Instant::now() + PIP_TIMEOUT + Duration::from_secs(60);
        loop {
            match fs::create_dir(path) {
                Ok(()) => return Self { path: path.to_path_buf() },
                Err(err) if err.kind() == ErrorKind::AlreadyExists => {
                    let age = fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok());
                    if age.is_some_and(|age| age > STALE_LOCK_AGE) {
                        println!("client_compat: removing stale lock {}", path.display());
                        let _ = fs::remove_dir(path);
                        continue;
                    }
                    assert!(Instant::now() < deadline, "timed out waiting for lock {}", path.display());
                    thread::sleep(Duration::from_millis(500));
                }
                Err(err) => panic!("cannot create lock {}: {err}", path.display()),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.path);
    }
}

struct RunResult {
    status: ExitStatus,
    /// stdout followed by stderr.
    output: String,
}

/// Runs a command with its output captured; past `timeout` it gets SIGTERM, then SIGKILL, and the test fails.
fn run_with_timeout(command: &mut Command, timeout: Duration) -> RunResult {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {description}: {err}"));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let mut terminated_at: Option<Instant> = None;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        match terminated_at {
            None if Instant::now() > deadline => {
                // SIGTERM first so pytest's teardown stops the kps server it started.
                let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
                terminated_at = Some(Instant::now());
            }
            Some(at) if at.elapsed() > TERM_GRACE => {
                let _ = child.kill();
            }
            _ => {}
        }
        thread::sleep(Duration::from_millis(100));
    };
    let output =
        format!("{}{}", stdout.join().expect("stdout reader thread"), stderr.join().expect("stderr reader thread"));
    assert!(terminated_at.is_none(), "{description} timed out after {timeout:?}; output so far:\n{output}");
    RunResult { status, output }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
