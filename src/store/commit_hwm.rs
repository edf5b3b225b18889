//! The commit high-water mark: a small file outside the store (`<data_dir>/commit.hwm`) holding a commit
//! sequence number that the store is known to have made durable.
//!
//! Why: sled treats a corrupt log entry as the end of its log and silently drops everything after it, so a
//! damaged `db` file opens as a whole, shorter store. The sled backend numbers its group commits inside the
//! committed batches themselves; this file remembers how far the numbers went. At open, a store that
//! recovers a lower number than the file has lost acknowledged commits, and kps refuses to serve it.
//!
//! The file is written off the acknowledgement path — by a thread at most once a second when the number
//! moved, and at shutdown — through `crate::atomic_file` (temporary `commit.hwm.new`, fsync, rename). It can
//! lag the store by up to a second (a crash in that window plus a damaged log goes unnoticed), never lead it:
//! only numbers the store has already made durable are written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::StoreError;
use crate::atomic_file::AtomicFile;

/// How often the writer thread looks whether the durable sequence moved.
const INTERVAL: Duration = Duration::from_secs(1);

const HEADER: &str = "kps commit high-water mark";

/// The file, and the last number written to it.
pub struct HighWaterMark {
    path: PathBuf,
    /// The number in the file (or read from it at open); guards the writes too.
    written: Mutex<u64>,
    /// Whether the last write failed (a failure is logged once, not every second).
    failing: std::sync::atomic::AtomicBool,
}

impl HighWaterMark {
    /// Reads the file at `path`; a missing file is a mark of 0 (a new data dir, or one written by a kps
    /// without the file).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let written = match std::fs::read_to_string(path) {
            Ok(text) => parse(&text).ok_or_else(|| {
                StoreError::Damaged(format!(
                    "{} is not a commit high-water mark (expected \"{HEADER}\" and a number); if it was damaged \
                     and the store is known to be whole, remove it",
                    path.display()
                ))
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(error) => return Err(StoreError::Backend(format!("read {}: {error}", path.display()))),
        };
        Ok(Self { path: path.into(), written: Mutex::new(written), failing: false.into() })
    }

    /// The number the file holds.
    pub fn value(&self) -> u64 {
        *self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The refusal when the store recovered `recovered` but the mark says more was acknowledged.
    pub fn check(&self, recovered: u64, store: &Path) -> Result<(), StoreError> {
        let expected = self.value();
        if recovered >= expected {
            return Ok(());
        }
        Err(StoreError::Damaged(format!(
            "the store in {} has lost acknowledged writes: its last commit is number {recovered}, but commits up \
             to at least number {expected} were acknowledged ({}), so {} or more commits are missing — the log \
             was damaged and sled stopped reading it there. kps refuses to serve a shortened history. Restore \
             from a backup: README, \"Operating kps\", \"A damaged store\"",
            store.display(),
            self.path.display(),
            expected - recovered,
        )))
    }

    /// Writes `durable` if it is above what the file holds; a failure is logged (once) and retried later.
    pub fn record(&self, durable: u64) {
        let mut written = self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if durable <= *written {
            return;
        }
        match write(&self.path, durable) {
            Ok(()) => {
                *written = durable;
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(path = %self.path.display(), "commit high-water mark written again");
                }
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(path = %self.path.display(), %error, "cannot write the commit high-water mark");
                }
            }
        }
    }
}

fn parse(text: &str) -> Option<u64> {
    let mut lines = text.lines();
    (lines.next()? == HEADER).then_some(())?;
    let value = lines.next()?.trim().parse().ok()?;
    lines.next().is_none().then_some(value)
}

fn write(path: &Path, value: u64) -> std::io::Result<()> {
    let mut file = AtomicFile::create(path, ".new")?;
    file.write(format!("{HEADER}\n{value}\n").as_bytes())?;
    file.commit().map(|_| ())
}

/// The thread that records `durable` into the mark once a second while it moves, and a last time when
/// stopped (dropped).
pub struct Writer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub fn start(mark: Arc<HighWaterMark>, durable: Arc<AtomicU64>) -> Result<Self, StoreError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("kps-commit-hwm".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                    mark.record(durable.load(Ordering::Acquire));
                }
                mark.record(durable.load(Ordering::Acquire));
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the high-water mark thread: {e}")))?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_zero_and_a_written_one_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commit.hwm");
        let mark = HighWaterMark::open(&path).expect("open");
        assert_eq!(mark.value(), 0);
        mark.record(42);
        mark.record(7);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), format!("{HEADER}\n42\n"), "never backwards");
        assert_eq!(HighWaterMark::open(&path).expect("reopen").value(), 42);
    }

    #[test]
    fn a_store_behind_the_mark_is_refused_naming_the_gap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commit.hwm");
        std::fs::write(&path, format!("{HEADER}\n30\n")).expect("write");
        let mark = HighWaterMark::open(&path).expect("open");
        mark.check(30, Path::new("/d/db")).expect("whole");
        mark.check(31, Path::new("/d/db")).expect("ahead: the mark lags by design");
        let error = mark.check(17, Path::new("/d/db")).expect_err("behind").to_string();
        assert!(error.contains("last commit is number 17"), "{error}");
        assert!(error.contains("at least number 30"), "{error}");
        assert!(error.contains("13 or more commits are missing"), "{error}");
        assert!(error.contains("Restore from a backup"), "{error}");
    }

    #[test]
    fn a_damaged_mark_is_refused_not_read_as_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commit.hwm");
        for text in ["", "12\n", &format!("{HEADER}\n1x\n"), &format!("{HEADER}\n1\n2\n")] {
            std::fs::write(&path, text).expect("write");
            assert!(HighWaterMark::open(&path).is_err(), "{text:?}");
        }
    }

    #[test]
    fn the_writer_records_while_running_and_when_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commit.hwm");
        let mark = Arc::new(HighWaterMark::open(&path).expect("open"));
        let durable = Arc::new(AtomicU64::new(5));
        let writer = Writer::start(Arc::clone(&mark), Arc::clone(&durable)).expect("start");
        durable.store(9, Ordering::Release);
        drop(writer);
        assert_eq!(HighWaterMark::open(&path).expect("reopen").value(), 9);
    }
}
