//! Files replaced whole or not at all: written under a temporary name (`<path>.partial`, `<path>.new`),
//! synced, renamed over the real name, and the directory synced.
//!
//! The temporary file is always created new — `O_CREAT | O_EXCL`, mode 0600 — so it is never an existing
//! file and never reached through a symlink (with `O_EXCL`, open fails on any existing entry, a dangling
//! symlink included; `OpenOptions::create_new`). Someone who can write the directory therefore cannot
//! plant a symlink at the temporary name to have a backup or a keyring written elsewhere, nor hand kps a
//! file they can read. A stale entry at that name (an interrupted run, or a planted link) is unlinked — the
//! entry itself, never what it points to — and the exclusive create tried once more.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A file being written under `<path><suffix>`; `commit` puts it in place, dropping it uncommitted removes it.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    temp: PathBuf,
    file: File,
    written: u64,
    committed: bool,
}

/// Creates `path` new (never an existing file or a symlink), mode 0600, for writing.
pub fn create_new_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

impl AtomicFile {
    /// Starts writing `path` under `<path><suffix>`.
    pub fn create(path: &Path, suffix: &str) -> std::io::Result<Self> {
        let mut temp = path.as_os_str().to_owned();
        temp.push(suffix);
        let temp = PathBuf::from(temp);
        let file = match create_new_private(&temp) {
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(&temp)?;
                create_new_private(&temp)?
            }
            other => other?,
        };
        Ok(Self { path: path.into(), temp, file, written: 0, committed: false })
    }

    /// The temporary name (for error messages).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Syncs the file, renames it over the real name and syncs the directory; the bytes written.
    pub fn commit(mut self) -> std::io::Result<u64> {
        self.file.sync_all()?;
        std::fs::rename(&self.temp, &self.path)?;
        self.committed = true;
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        Ok(self.written)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_committed_file_replaces_the_old_one_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("backup.jsonl");
        std::fs::write(&path, "old").expect("old");
        let mut file = AtomicFile::create(&path, ".partial").expect("create");
        file.write(b"new").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "old", "in place only once committed");
        assert_eq!(file.commit().expect("commit"), 3);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        assert!(!dir.path().join("backup.jsonl.partial").exists());
    }

    #[test]
    fn an_uncommitted_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let mut file = AtomicFile::create(&path, ".new").expect("create");
        file.write(b"half").expect("write");
        drop(file);
        assert!(std::fs::read_dir(dir.path()).expect("list").next().is_none());
    }

    /// Issue 11 point 11: a symlink planted at the temporary name is neither followed nor written through;
    /// its target stays as it was and the file lands where it belongs.
    #[test]
    fn a_symlink_planted_at_the_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").expect("victim");
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let dangling = dir.path().join("nowhere");
        for (name, target) in [("a.jsonl", &victim), ("b.jsonl", &dangling)] {
            let path = dir.path().join(name);
            std::os::unix::fs::symlink(target, dir.path().join(format!("{name}.partial"))).expect("plant");
            let mut file = AtomicFile::create(&path, ".partial").expect("create");
            file.write(b"backup").expect("write");
            file.commit().expect("commit");
            assert_eq!(std::fs::read_to_string(&path).expect("read"), "backup");
            assert!(!std::fs::symlink_metadata(&path).expect("meta").file_type().is_symlink());
        }
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "precious");
        assert_eq!(std::fs::metadata(&victim).expect("meta").permissions().mode() & 0o777, 0o644);
        assert!(!dangling.exists(), "a dangling link is not created through either");
    }

    #[test]
    fn create_new_private_refuses_an_existing_entry_and_a_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let existing = dir.path().join("existing");
        std::fs::write(&existing, "x").expect("write");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("target"), &link).expect("symlink");
        for path in [&existing, &link] {
            let error = create_new_private(path).expect_err("exists");
            assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists, "{}", path.display());
        }
        assert!(!dir.path().join("target").exists());
    }
}
