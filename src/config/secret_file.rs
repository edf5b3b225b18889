//! Secret files: the one reader of every file that holds a secret — the master keyring
//! (`custody.master_key_file`), the static tokens and AK/SK credentials files (`auth.*_file`), the KMS
//! credentials (`kms.ak_file`, `kms.sk_file`) and the TLS private key (`tls.key_file`).
//!
//! One rule for all of them, garage-style: a world-accessible file is refused, and so is a group-accessible
//! one unless `secrets.allow_group_readable` is set, then for reading only (systemd `LoadCredential` and
//! Kubernetes secret mounts give 0440). A secret that may be given either as a value or as a file follows
//! [`value_or_file`]: the value beats the file, the file beats nothing.
//!
//! This module touches the file system only to read; callers turn [`SecretFileError`] into their own error,
//! which names the setting.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Why a secret file was not read.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("secret file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "secret file {path} has mode {mode:04o}: it must not be group- or world-readable (chmod 600 {path}, or set \
         secrets.allow_group_readable for a group-readable secret mount)"
    )]
    Permissions { path: PathBuf, mode: u32 },
}

/// Whether a secret file's permission bits are acceptable: never world-accessible, and group-accessible only
/// when `secrets.allow_group_readable` is set, then for reading only. Every secret file is held to this one
/// rule.
pub fn mode_ok(mode: u32, allow_group_readable: bool) -> bool {
    let mode = mode & 0o777;
    let group_ok = allow_group_readable && mode & 0o030 == 0;
    mode & 0o007 == 0 && (mode & 0o070 == 0 || group_ok)
}

/// The bytes of the secret file at `path`, once its mode passed [`mode_ok`].
pub fn read(path: &Path, allow_group_readable: bool) -> Result<Zeroizing<Vec<u8>>, SecretFileError> {
    check_mode(path, allow_group_readable)?;
    std::fs::read(path).map(Zeroizing::new).map_err(|source| io_error(path, source))
}

/// The text of the secret file at `path` (UTF-8), once its mode passed [`mode_ok`].
pub fn read_to_string(path: &Path, allow_group_readable: bool) -> Result<Zeroizing<String>, SecretFileError> {
    check_mode(path, allow_group_readable)?;
    std::fs::read_to_string(path).map(Zeroizing::new).map_err(|source| io_error(path, source))
}

/// A secret setting that may be given as a value or as the path of a file holding it (`kms.sk` /
/// `kms.sk_file`): the value beats the file, the file beats nothing (`Ok(None)`). The text is returned as
/// given; what counts as the secret (e.g. without a file's trailing newline) is the caller's rule.
pub fn value_or_file(
    value: Option<&str>,
    file: Option<&Path>,
    allow_group_readable: bool,
) -> Result<Option<Zeroizing<String>>, SecretFileError> {
    match (value, file) {
        (Some(value), _) => Ok(Some(Zeroizing::new(value.to_owned()))),
        (None, Some(path)) => read_to_string(path, allow_group_readable).map(Some),
        (None, None) => Ok(None),
    }
}

fn check_mode(path: &Path, allow_group_readable: bool) -> Result<(), SecretFileError> {
    let mode = std::fs::metadata(path).map_err(|source| io_error(path, source))?.permissions().mode() & 0o777;
    if !mode_ok(mode, allow_group_readable) {
        return Err(SecretFileError::Permissions { path: path.into(), mode });
    }
    Ok(())
}

fn io_error(path: &Path, source: std::io::Error) -> SecretFileError {
    SecretFileError::Io { path: path.into(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_owner_only_unless_group_read_is_allowed() {
        for (mode, strict, relaxed) in [
            (0o600, true, true),
            (0o400, true, true),
            (0o640, false, true),
            (0o440, false, true),
            (0o660, false, false),
            (0o604, false, false),
            (0o644, false, false),
        ] {
            assert_eq!(mode_ok(mode, false), strict, "{mode:o}");
            assert_eq!(mode_ok(mode, true), relaxed, "{mode:o} with group read allowed");
        }
    }

    #[test]
    fn a_refused_file_is_not_read_and_names_its_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "SECRET\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let error = read(&path, false).expect_err("group-readable");
        assert!(matches!(error, SecretFileError::Permissions { mode: 0o640, .. }), "{error}");
        assert_eq!(read(&path, true).expect("allowed").as_slice(), b"SECRET\n");
        let missing = read_to_string(&dir.path().join("missing"), false).expect_err("missing");
        assert!(matches!(missing, SecretFileError::Io { .. }), "{missing}");
    }

    #[test]
    fn a_value_beats_a_file_and_a_file_beats_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "FROM-FILE\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let shown = |got: Option<Zeroizing<String>>| got.map(|text| text.as_str().to_owned());
        let value_and_file = value_or_file(Some("VALUE"), Some(&path), false).expect("value");
        assert_eq!(shown(value_and_file).as_deref(), Some("VALUE"));
        let file_only = value_or_file(None, Some(&path), false).expect("file");
        assert_eq!(shown(file_only).as_deref(), Some("FROM-FILE\n"));
        assert!(value_or_file(None, None, false).expect("nothing").is_none());
    }
}
