//! `audit.file`: the audit trail as its own stream of JSON lines, appended to a file of mode 0600 and synced
//! before the request that wrote a line is answered.
//!
//! One writer thread owns the file. A request hands it a line and waits; the thread takes every line waiting
//! at that moment, writes them with one `write` and one `fdatasync`, and answers them all (a group commit:
//! many custody requests share one sync). A write or sync that fails answers every line of its group with
//! the error and cuts the file back to its last good length, so a failure never leaves half a line behind.
//!
//! It knows bytes and files only; what a line says is `api::audit`'s.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

/// Lines written per group at most, so that one sync's group stays bounded under a flood.
const MAX_GROUP: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum AuditFileError {
    #[error("audit file {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error(
        "audit file {path} has mode {mode:04o}: it must be readable by its owner only (chmod 600 {path}), as it \
         names who revealed which private key"
    )]
    Permissions { path: PathBuf, mode: u32 },
}

/// The open audit file; cloning shares the one writer thread.
#[derive(Debug, Clone)]
pub struct AuditFile {
    sender: mpsc::Sender<Pending>,
    path: PathBuf,
}

struct Pending {
    line: Vec<u8>,
    done: oneshot::Sender<std::io::Result<()>>,
}

impl AuditFile {
    /// Opens `path` for appending (created with mode 0600) and starts its writer thread. An existing file
    /// that its group or others may access is refused.
    pub fn open(path: &Path) -> Result<Self, AuditFileError> {
        let open_error = |source| AuditFileError::Open { path: path.to_owned(), source };
        let existed = path.exists();
        let file = OpenOptions::new().append(true).create(true).mode(0o600).open(path).map_err(open_error)?;
        let mode = file.metadata().map_err(open_error)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AuditFileError::Permissions { path: path.to_owned(), mode });
        }
        if !existed {
            // The new entry itself must survive a crash, or the lines synced into it could vanish with it.
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            File::open(parent).and_then(|dir| dir.sync_all()).map_err(open_error)?;
        }
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("kps-audit-file".into())
            .spawn(move || write_groups(file, &receiver))
            .map_err(open_error)?;
        Ok(Self { sender, path: path.to_owned() })
    }

    /// What [`AuditFile::open`] would say of `path`, without creating it (`kps config check`).
    pub fn check(path: &Path) -> Result<String, AuditFileError> {
        let open_error = |source| AuditFileError::Open { path: path.to_owned(), source };
        match std::fs::metadata(path) {
            Ok(metadata) => {
                let mode = metadata.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(AuditFileError::Permissions { path: path.to_owned(), mode });
                }
                Ok("exists, mode ok".into())
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                std::fs::metadata(parent).map_err(open_error)?;
                Ok("absent, kps serve creates it (mode 0600)".into())
            }
            Err(error) => Err(open_error(error)),
        }
    }

    /// Appends `line` (a newline is added) and returns once it is on disk, or with the error that kept it off.
    pub async fn append(&self, mut line: Vec<u8>) -> std::io::Result<()> {
        line.push(b'\n');
        let (done, answer) = oneshot::channel();
        self.sender
            .send(Pending { line, done })
            .map_err(|_| std::io::Error::other("the audit file's writer has stopped"))?;
        answer.await.map_err(|_| std::io::Error::other("the audit file's writer has stopped"))?
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The writer thread: until every sender is gone, one write and one sync per group of waiting lines.
///
/// A group that fails is cut off again (`set_len` to the length before it, synced), so the file holds whole
/// lines only. Should that cut fail too, the file's end is unknown: every later line is refused rather than
/// appended after a fragment.
fn write_groups(mut file: File, receiver: &mpsc::Receiver<Pending>) {
    let mut broken = false;
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(pending) => group.push(pending),
                Err(_) => break,
            }
        }
        let written = if broken {
            Err(std::io::Error::other("a failed write could not be cut off the audit file; restart kps"))
        } else {
            let bytes: Vec<u8> = group.iter().flat_map(|pending| pending.line.iter().copied()).collect();
            write_group(&mut file, &bytes, &mut broken)
        };
        for pending in group {
            let answer = match &written {
                Ok(()) => Ok(()),
                Err(error) => Err(std::io::Error::new(error.kind(), error.to_string())),
            };
            let _ = pending.done.send(answer);
        }
    }
}

/// Appends `bytes` with one write and one `fdatasync`. On failure the file is cut back to its length before
/// (read each time: it may have been rotated by truncation); `broken` is set when even that fails.
fn write_group(file: &mut File, bytes: &[u8], broken: &mut bool) -> std::io::Result<()> {
    let length = file.metadata()?.len();
    let written = file.write_all(bytes).and_then(|()| file.sync_data());
    if written.is_err() && file.set_len(length).and_then(|()| file.sync_data()).is_err() {
        *broken = true;
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_appended_whole_to_a_private_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "{\"earlier\":1}\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let file = AuditFile::open(&path).expect("open");
        let writes: Vec<_> = (0..50).map(|i| file.append(format!("{{\"n\":{i}}}").into_bytes())).collect();
        for result in futures_util::future::join_all(writes).await {
            result.expect("appended");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 51);
        assert!(text.starts_with("{\"earlier\":1}\n") && text.ends_with("}\n"));
    }

    #[tokio::test]
    async fn a_file_truncated_by_rotation_is_appended_to_from_its_new_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let file = AuditFile::open(&path).expect("open");
        file.append(b"{\"n\":1}".to_vec()).await.expect("appended");
        std::fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(0).expect("copytruncate");
        file.append(b"{\"n\":2}".to_vec()).await.expect("appended");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "{\"n\":2}\n");
    }

    #[test]
    fn a_new_file_is_created_owner_only_and_a_shared_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("new.jsonl");
        AuditFile::open(&path).expect("open");
        assert_eq!(std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
        let shared = dir.path().join("shared.jsonl");
        std::fs::write(&shared, "").expect("write");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let error = AuditFile::open(&shared).expect_err("group-readable");
        assert!(error.to_string().contains("chmod 600"), "{error}");
        assert!(AuditFile::check(&shared).is_err());
        assert!(AuditFile::check(&path).is_ok());
        assert!(AuditFile::check(&dir.path().join("later.jsonl")).expect("absent").contains("creates it"));
        assert!(AuditFile::check(&dir.path().join("no/such/dir.jsonl")).is_err());
    }
}
