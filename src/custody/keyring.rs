//! The master keyring of the `default` encryptor: a TOML file (mode 0600) holding 32-byte keys by id and
//! naming the `current` one (spec/interface.md "Data directory and master keyring").
//!
//! New seals use the current key; older keys stay so that older records still open. The file is created
//! with one fresh key on first start and refused when group- or world-readable (group-readable is accepted
//! with `secrets.allow_group_readable`, for systemd credentials and Kubernetes secret mounts).
//!
//! The file may instead hold the keyring wrapped by a KMS key (`super::wrapped_keyring`, auto-unseal):
//! [`read_on_disk`] tells the two apart; the functions that load a keyring directly refuse a wrapped one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::envelope::{KEY_LEN, SymmetricKey};
use super::wrapped_keyring::{self, WrappedKeyring};
use crate::config::secret_file::{self, SecretFileError};
use crate::kms::KmsError;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("master key file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "master key file {path} has mode {mode:04o}: it must not be group- or world-readable (chmod 600 {path}, or \
         set secrets.allow_group_readable for a group-readable secret mount)"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("master key file {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
    /// The keyring does not match what the store recorded or holds (`service::master_keys`).
    #[error("master key file {path}: {message}")]
    Mismatch { path: PathBuf, message: String },
    /// The store could not be read or written while checking (the store's error, as text: custody never
    /// sees the store).
    #[error("cannot check the master keyring against the store: {0}")]
    Store(String),
    /// A wrapped keyring where a plaintext one is read directly (it needs the KMS to open).
    #[error(
        "master key file {path} is wrapped by a KMS key ({format}): it opens only with the configured KMS \
         (kms.*), at kps serve or with kps master-key unwrap"
    )]
    Wrapped { path: PathBuf, format: String },
    /// A KMS call on the keyring's data key failed (`source` says why: KPS.1801 unreachable, ...).
    #[error("master key file {path}: KMS failure: {source}")]
    Kms { path: PathBuf, source: KmsError },
    /// The data key the KMS returned does not open the sealed keyring (edited file, or written for another key).
    #[error("master key file {path} does not open with the data key the KMS returned: {detail}")]
    Undecryptable { path: PathBuf, detail: String },
}

impl KeyringError {
    /// A failed wrap or unwrap of the keyring at `path`.
    pub fn kms_failed(path: &Path, error: super::CustodyError) -> Self {
        match error {
            super::CustodyError::Kms(source) => Self::Kms { path: path.into(), source },
            super::CustodyError::Integrity => Self::Undecryptable {
                path: path.into(),
                detail: "its integrity check failed (an edited file, or one not written for this data key)".into(),
            },
            other => Self::Undecryptable { path: path.into(), detail: other.to_string() },
        }
    }

    /// Whether a later attempt may succeed without anything changing here: the KMS was unreachable
    /// (KPS.1801). Every other failure needs an operator.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Kms { source: KmsError::Unavailable { .. }, .. })
    }
}

/// The plaintext text of a keyring file (TOML): zeroized on drop, never printed.
pub struct KeyringText(Zeroizing<String>);

impl KeyringText {
    pub fn new(text: Zeroizing<String>) -> Self {
        Self(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for KeyringText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyringText([REDACTED])")
    }
}

/// What a keyring file holds.
#[derive(Debug)]
pub enum OnDisk {
    /// The keyring itself (`current`, `[[keys]]`).
    Plain(KeyringText),
    /// The keyring wrapped by a KMS key.
    Wrapped(WrappedKeyring),
}

/// The keyring file at `path` (the secret-file mode rule applies), or `None` when there is none.
pub fn read_on_disk(path: &Path, allow_group_readable: bool) -> Result<Option<OnDisk>, KeyringError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = read_text(path, allow_group_readable)?;
    let invalid = |message: String| KeyringError::Invalid { path: path.into(), message };
    match wrapped_keyring::is_wrapped(&text) {
        Some(true) => Ok(Some(OnDisk::Wrapped(WrappedKeyring::parse(&text).map_err(invalid)?))),
        Some(false) => Ok(Some(OnDisk::Plain(KeyringText::new(text)))),
        None => Err(invalid("it is not TOML".into())),
    }
}

/// A fresh key added to the keyring `text` (or to a new, empty keyring) and made current: the new text and
/// the new key's id. The keyring is validated first.
pub fn add_key(text: Option<&KeyringText>, path: &Path) -> Result<(KeyringText, String), KeyringError> {
    let file = match text {
        Some(text) => {
            let file = parse_text(text, path)?;
            MasterKeyring::from_file(&file).map_err(|message| KeyringError::Invalid { path: path.into(), message })?;
            file
        }
        None => KeyringFile { current: String::new(), keys: Vec::new() },
    };
    let file = with_new_key(file);
    Ok((KeyringText::new(render(&file)), file.current.clone()))
}

fn parse_text(text: &KeyringText, path: &Path) -> Result<KeyringFile, KeyringError> {
    toml::from_str(text.expose())
        .map_err(|e| KeyringError::Invalid { path: path.into(), message: e.message().to_owned() })
}

/// The fixed message whose HMAC under a master key is that key's verifier.
const VERIFIER_LABEL: &[u8] = b"kps/master-key-verifier/v1";

/// A master key's verifier: HMAC-SHA256 under the key of a fixed label. The store records one per key id, so
/// that a missing or replaced keyring is noticed at startup; it reveals nothing of the key.
pub type Verifier = [u8; 32];

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    current: String,
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    key_hex: String,
}

impl Drop for KeyEntry {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key_hex);
    }
}

/// The loaded keyring. `Debug` shows key ids only.
pub struct MasterKeyring {
    current: String,
    keys: BTreeMap<String, SymmetricKey>,
}

impl std::fmt::Debug for MasterKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKeyring").field("current", &self.current).field("ids", &self.keys.keys()).finish()
    }
}

impl MasterKeyring {
    /// Loads the keyring at `path`, creating it with one fresh key if it does not exist.
    pub fn load_or_create(path: &Path, allow_group_readable: bool) -> Result<Self, KeyringError> {
        if !path.exists() {
            let file = KeyringFile { current: String::new(), keys: Vec::new() };
            write_file(path, &with_new_key(file))?;
        }
        Self::load(path, allow_group_readable)
    }

    pub fn load(path: &Path, allow_group_readable: bool) -> Result<Self, KeyringError> {
        let file = read_file(path, allow_group_readable)?;
        Self::from_file(&file).map_err(|message| KeyringError::Invalid { path: path.into(), message })
    }

    /// The keyring of a plaintext keyring text (a file's, or an unwrapped one); `path` names it in errors.
    pub fn from_text(text: &KeyringText, path: &Path) -> Result<Self, KeyringError> {
        Self::from_file(&parse_text(text, path)?)
            .map_err(|message| KeyringError::Invalid { path: path.into(), message })
    }

    fn from_file(file: &KeyringFile) -> Result<Self, String> {
        let mut keys = BTreeMap::new();
        for entry in &file.keys {
            let bytes =
                Zeroizing::new(hex::decode(&entry.key_hex).map_err(|_| format!("key {} is not hex", entry.id))?);
            if bytes.len() != KEY_LEN {
                return Err(format!("key {} is not {} bytes", entry.id, KEY_LEN));
            }
            let key = SymmetricKey::from_bytes(&bytes).map_err(|e| e.to_string())?;
            if keys.insert(entry.id.clone(), key).is_some() {
                return Err(format!("key id {} appears twice", entry.id));
            }
        }
        if !keys.contains_key(&file.current) {
            return Err(format!("current key {:?} is not in the file", file.current));
        }
        Ok(Self { current: file.current.clone(), keys })
    }

    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// The current key: `(id, key)`.
    pub fn current(&self) -> (&str, &SymmetricKey) {
        // `from_file` guarantees the current id is present.
        (&self.current, &self.keys[&self.current])
    }

    pub fn get(&self, id: &str) -> Option<&SymmetricKey> {
        self.keys.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The verifier of the key `id`, if the keyring holds it.
    pub fn verifier(&self, id: &str) -> Option<Verifier> {
        use hmac::Mac;
        let key = self.keys.get(id)?;
        // HMAC takes keys of any length: new_from_slice cannot fail.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.expose()).ok()?;
        mac.update(VERIFIER_LABEL);
        Some(mac.finalize().into_bytes().into())
    }
}

/// `kps master-key generate`: adds a fresh key to the file at `path` and makes it current. With `print`, the
/// resulting file is returned instead of written. Returns the new file's text and the new key's id.
pub fn generate(
    path: &Path,
    print: bool,
    allow_group_readable: bool,
) -> Result<(Zeroizing<String>, String), KeyringError> {
    let file = if path.exists() {
        let file = read_file(path, allow_group_readable)?;
        MasterKeyring::from_file(&file).map_err(|message| KeyringError::Invalid { path: path.into(), message })?;
        file
    } else {
        KeyringFile { current: String::new(), keys: Vec::new() }
    };
    let file = with_new_key(file);
    let text = render(&file);
    if !print {
        write_file(path, &file)?;
    }
    Ok((text, file.current.clone()))
}

/// The text of the keyring file at `path`, read by `config::secret_file` (the secret-file mode rule).
fn read_text(path: &Path, allow_group_readable: bool) -> Result<Zeroizing<String>, KeyringError> {
    secret_file::read_to_string(path, allow_group_readable).map_err(|error| match error {
        SecretFileError::Io { path, source } => KeyringError::Io { path, source },
        SecretFileError::Permissions { path, mode } => KeyringError::Permissions { path, mode },
    })
}

/// The plaintext keyring file at `path`, parsed; a wrapped one is `KeyringError::Wrapped`.
fn read_file(path: &Path, allow_group_readable: bool) -> Result<KeyringFile, KeyringError> {
    let text = KeyringText::new(read_text(path, allow_group_readable)?);
    if wrapped_keyring::is_wrapped(text.expose()) == Some(true) {
        return Err(KeyringError::Wrapped { path: path.into(), format: wrapped_format(text.expose()) });
    }
    parse_text(&text, path)
}

/// The `format` a wrapped keyring text names (for messages).
fn wrapped_format(text: &str) -> String {
    WrappedKeyring::parse(text).map_or_else(|_| "unknown format".into(), |wrapped| wrapped.format)
}

fn with_new_key(mut file: KeyringFile) -> KeyringFile {
    let date = time::OffsetDateTime::now_utc().date();
    let base = format!("mk-{date}");
    let mut id = base.clone();
    let mut n = 2;
    while file.keys.iter().any(|k| k.id == id) {
        id = format!("{base}-{n}");
        n += 1;
    }
    let key = SymmetricKey::random();
    file.keys.push(KeyEntry { id: id.clone(), key_hex: hex::encode(key.expose()) });
    file.current = id;
    file
}

fn render(file: &KeyringFile) -> Zeroizing<String> {
    Zeroizing::new(toml::to_string(file).unwrap_or_default())
}

/// Writes the keyring atomically with mode 0600 (`<path>.new` created new, never through a symlink; fsync,
/// rename: `crate::atomic_file`).
fn write_file(path: &Path, file: &KeyringFile) -> Result<(), KeyringError> {
    write_text(path, render(file).as_bytes())
}

/// Replaces the keyring file at `path` with `text` (plaintext or wrapped) the same way: atomically, 0600,
/// synced.
pub fn write_text(path: &Path, text: &[u8]) -> Result<(), KeyringError> {
    let io = |source| KeyringError::Io { path: path.into(), source };
    let mut out = crate::atomic_file::AtomicFile::create(path, ".new").map_err(io)?;
    out.write(text).map_err(io)?;
    out.commit().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn first_start_creates_a_0600_keyring_with_one_current_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let keyring = MasterKeyring::load_or_create(&path, false).expect("create");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        assert_eq!(keyring.ids().count(), 1);
        assert!(keyring.current_id().starts_with("mk-"));
        let again = MasterKeyring::load_or_create(&path, false).expect("load");
        assert_eq!(again.current().1.expose(), keyring.current().1.expose(), "loaded, not recreated");
    }

    #[test]
    fn generate_adds_a_key_and_keeps_the_old_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let first = MasterKeyring::load_or_create(&path, false).expect("create");
        let (printed, id) = generate(&path, true, false).expect("print");
        assert!(printed.contains(&id));
        assert_eq!(MasterKeyring::load(&path, false).expect("load").ids().count(), 1, "--print changes nothing");
        let (_, id) = generate(&path, false, false).expect("generate");
        let keyring = MasterKeyring::load(&path, false).expect("load");
        assert_eq!(keyring.current_id(), id);
        assert_eq!(keyring.get(first.current_id()).map(|k| *k.expose()), Some(*first.current().1.expose()));
    }

    #[test]
    fn verifiers_tell_keys_apart_and_are_not_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let first = MasterKeyring::load_or_create(&path, false).expect("create");
        let id = first.current_id().to_owned();
        let verifier = first.verifier(&id).expect("verifier");
        assert_eq!(MasterKeyring::load(&path, false).expect("load").verifier(&id), Some(verifier), "stable");
        assert_ne!(&verifier, first.current().1.expose());
        assert_eq!(first.verifier("absent"), None);
        std::fs::remove_file(&path).expect("remove");
        let other = MasterKeyring::load_or_create(&path, false).expect("recreate");
        assert_eq!(other.current_id(), id, "a keyring made the same day reuses the id");
        assert_ne!(other.verifier(&id), Some(verifier), "but not the key");
    }

    #[test]
    fn readable_by_others_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        MasterKeyring::load_or_create(&path, false).expect("create");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(MasterKeyring::load(&path, false), Err(KeyringError::Permissions { mode: 0o640, .. })));
        MasterKeyring::load(&path, true).expect("group-readable allowed explicitly");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(MasterKeyring::load(&path, true).is_err(), "world-readable never");
    }

    #[test]
    fn malformed_files_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let cases = [
            "current = \"a\"\n[[keys]]\nid = \"a\"\nkey_hex = \"zz\"\n",
            "current = \"a\"\n[[keys]]\nid = \"a\"\nkey_hex = \"00\"\n",
            "current = \"b\"\n[[keys]]\nid = \"a\"\nkey_hex = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
        ];
        for text in cases {
            std::fs::write(&path, text).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            let error = MasterKeyring::load(&path, false).expect_err(text);
            assert!(matches!(error, KeyringError::Invalid { .. }), "{error}");
            assert!(!error.to_string().contains("0000000000"), "never print key material");
        }
    }
}
