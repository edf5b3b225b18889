//! The data directory: created 0700, refused when group- or world-accessible, and locked so that only one
//! process uses it at a time.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fs2::FileExt;

use crate::store::StoreError;
use crate::store::sled::SledStore;

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data directory {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("data directory {path} has mode {mode:04o}: it must not be group- or world-accessible (chmod 700 {path})")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("data directory {path} is in use by another kps process (lock file {lock})")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("cannot lock data directory {path}: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
}

/// An opened, locked data directory. The lock is released on drop.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    pub fn open(path: &Path) -> Result<Self, DataDirError> {
        let create_error = |source| DataDirError::Create { path: path.into(), source };
        if !path.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(create_error)?;
            // The new directory's entry must be durable before anything stored in it is acknowledged.
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent).and_then(|d| d.sync_all()).map_err(create_error)?;
            }
        }
        let mode = std::fs::metadata(path).map_err(create_error)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(DataDirError::Permissions { path: path.into(), mode });
        }
        let lock_path = path.join("kps.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| DataDirError::Lock { path: path.into(), source })?;
        lock.try_lock_exclusive().map_err(|_| DataDirError::Locked { path: path.into(), lock: lock_path })?;
        Ok(Self { path: path.into(), _lock: lock })
    }

    /// Where the sled database lives.
    pub fn db_path(&self) -> PathBuf {
        self.path.join("db")
    }

    /// The commit high-water mark of the store (`crate::store::commit_hwm`), outside `db/`.
    pub fn commit_hwm_path(&self) -> PathBuf {
        self.path.join("commit.hwm")
    }

    /// Opens the store of this data directory, checked against its commit high-water mark.
    pub fn open_store(&self) -> Result<SledStore, StoreError> {
        SledStore::open_with_high_water_mark(&self.db_path(), &self.commit_hwm_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_the_directory_0700() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("data");
        DataDir::open(&dir).expect("open");
        let mode = std::fs::metadata(&dir).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn refuses_a_group_readable_directory() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("data");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).expect("chmod");
        let error = DataDir::open(&dir).expect_err("group readable");
        assert!(error.to_string().contains("0750"), "{error}");
    }

    #[test]
    fn a_second_open_is_refused_while_the_first_holds_the_lock() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("data");
        let first = DataDir::open(&dir).expect("open");
        assert!(matches!(DataDir::open(&dir), Err(DataDirError::Locked { .. })));
        drop(first);
        DataDir::open(&dir).expect("lock released");
    }
}
