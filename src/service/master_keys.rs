//! Master key verifiers: the startup use case that checks the master keyring (custody) against what the store
//! records about it, so that a missing or replaced keyring stops kps at startup instead of silently sealing new escrows under a new key while every older
//! one stays undecryptable (spec/interface.md, "Replicated store", master keyring — applied to every
//! backend).
//!
//! For each master key id the store holds that key's verifier (`MasterKeyring::verifier`: an HMAC under the
//! key, never the key) in `Space::Meta`. At startup, [`open_keyring`]:
//! * creates a keyring file only for a store that records no verifier and holds no `default`-sealed record;
//! * refuses a keyring that lacks a recorded id or holds other bytes under it, naming the ids;
//! * for a store with `default`-sealed records but no verifiers yet (written before verifiers existed),
//!   requires every master key id those records name to be in the keyring AND one record sealed under each
//!   to open with it (ids are dates: a keyring recreated the same day has the right ids, other bytes);
//! * records the verifiers of keyring ids not recorded yet (a new store, `kps master-key generate`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::KeypairService;
use super::repo::layout::{self, MasterKeyVerifier};
use crate::custody::keyring::{KeyringError, MasterKeyring, Verifier};
use crate::custody::{Aad, WrappedKeyring, local};
use crate::model::{EncryptorKind, Keypair};
use crate::store::{ApplyError, Space, Store, StoreError, WriteOp};

/// Loads the keyring at `path` for `store` (creating it only for a store that never used one), checks it
/// against the verifiers the store recorded and records the verifiers of new key ids.
pub async fn open_keyring(
    path: &Path,
    allow_group_readable: bool,
    store: &dyn Store,
) -> Result<MasterKeyring, KeyringError> {
    let refuse = |message: String| KeyringError::Mismatch { path: path.into(), message };
    let recorded = recorded_verifiers(store).await.map_err(store_failure)?;
    // The master key ids `default`-sealed records name, read only while no verifier is recorded.
    let mut sealed_ids = None;
    if !path.exists() {
        if !recorded.is_empty() {
            return Err(refuse(format!(
                "it does not exist, but this store records master keys {}. Restore that keyring: kps never creates \
                 a new one for a store that has used one (its escrowed private keys would not open)",
                list(recorded.keys())
            )));
        }
        let ids = default_sealed_key_ids(store).await.map_err(store_failure)?;
        if !ids.is_empty() {
            return Err(refuse(format!(
                "it does not exist, but this store holds {} private keys sealed under master keys {}. Restore that \
                 keyring: kps never creates a new one for a store that has used one",
                ids.values().map(|sealed| sealed.records).sum::<u64>(),
                list(ids.keys())
            )));
        }
        sealed_ids = Some(ids);
    }
    let keyring = MasterKeyring::load_or_create(path, allow_group_readable)?;
    check_against_store(path, &keyring, store, &recorded, sealed_ids).await?;
    Ok(keyring)
}

/// Checks a keyring that did not come from a plaintext file (an unwrapped one, auto-unseal) against the
/// store exactly as [`open_keyring`] checks a loaded one, and records the verifiers of its new key ids.
/// `path` names the keyring file in the messages.
pub async fn check_keyring(path: &Path, keyring: &MasterKeyring, store: &dyn Store) -> Result<(), KeyringError> {
    let recorded = recorded_verifiers(store).await.map_err(store_failure)?;
    check_against_store(path, keyring, store, &recorded, None).await
}

/// The checks of [`open_keyring`] after the keyring is loaded; `sealed_ids` if they were read already.
async fn check_against_store(
    path: &Path,
    keyring: &MasterKeyring,
    store: &dyn Store,
    recorded: &BTreeMap<String, Verifier>,
    sealed_ids: Option<BTreeMap<String, SealedUnder>>,
) -> Result<(), KeyringError> {
    let refuse = |message: String| KeyringError::Mismatch { path: path.into(), message };
    let missing: Vec<&String> = recorded.keys().filter(|id| keyring.get(id).is_none()).collect();
    let replaced: Vec<&String> = recorded
        .iter()
        .filter(|(id, stored)| keyring.verifier(id).is_some_and(|own| !bool::from(own.ct_eq(*stored))))
        .map(|(id, _)| id)
        .collect();
    if !missing.is_empty() || !replaced.is_empty() {
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!("it lacks master keys {} that this store recorded", list(missing)));
        }
        if !replaced.is_empty() {
            problems.push(format!(
                "it holds other key bytes under master keys {} than this store recorded",
                list(replaced)
            ));
        }
        return Err(refuse(format!(
            "{}. Restore the keyring this store was used with (never a new one: its escrowed private keys would not \
             open)",
            problems.join("; ")
        )));
    }
    if recorded.is_empty() {
        let ids = match sealed_ids {
            Some(ids) => ids,
            None => default_sealed_key_ids(store).await.map_err(store_failure)?,
        };
        let unknown: Vec<&String> = ids.keys().filter(|id| keyring.get(id).is_none()).collect();
        if !unknown.is_empty() {
            return Err(refuse(format!(
                "this store holds private keys sealed under master keys {}, which it does not contain. Restore the \
                 keyring this store was used with",
                list(unknown)
            )));
        }
        // The ids match; the bytes are only known to be right once a record sealed under each opens.
        let unopened: Vec<&String> =
            ids.iter().filter(|(_, sealed)| !opens(keyring, &sealed.sample)).map(|(id, _)| id).collect();
        if !unopened.is_empty() {
            return Err(refuse(format!(
                "it holds other key bytes under master keys {} than sealed this store's private keys (a record \
                 sealed under each was tried and does not open). Restore the keyring this store was used with",
                list(unopened)
            )));
        }
    }
    record_new_verifiers(store, keyring, recorded).await
}

/// The background unwrap of a sealed keyring retries after this, doubling each time...
const UNSEAL_FIRST_RETRY: Duration = Duration::from_secs(1);
/// ... up to this.
const UNSEAL_MAX_RETRY: Duration = Duration::from_secs(30);

impl KeypairService {
    /// Whether the master keyring is sealed, waiting for the KMS (auto-unseal); `None` without custody.
    pub fn master_keyring_sealed(&self) -> Option<bool> {
        self.custody.as_ref().map(|custody| custody.local().slot().is_sealed())
    }

    /// Unwraps the keyring `wrapped` (the file at `path`) with the configured KMS — exactly one
    /// decrypt-datakey call, inside the client's retry budget — checks it against the verifiers the store
    /// records, exactly as a plaintext keyring is checked, and opens `default` custody with it.
    pub async fn unseal_master_keyring(&self, path: &Path, wrapped: &WrappedKeyring) -> Result<(), KeyringError> {
        let no_kms = || KeyringError::Invalid {
            path: path.into(),
            message: "it is wrapped by a KMS key, but no KMS is configured (kms.provider and its kms.* settings)"
                .into(),
        };
        let custody = self.custody.as_ref().ok_or_else(no_kms)?;
        let kms = custody.kms().ok_or_else(no_kms)?;
        let text = wrapped.unwrap(kms.client()).await.map_err(|error| KeyringError::kms_failed(path, error))?;
        let keyring = MasterKeyring::from_text(&text, path)?;
        check_keyring(path, &keyring, self.repo.store().as_ref()).await?;
        tracing::info!(
            current = keyring.current_id(),
            kms_key_id = wrapped.key_id,
            "master keyring unwrapped by the KMS: default custody is available"
        );
        custody.local().slot().unseal(keyring);
        Ok(())
    }

    /// Retries [`KeypairService::unseal_master_keyring`] with a capped exponential backoff until it succeeds
    /// (the KMS was unreachable at startup). A failure that is not transient (key disabled, keyring not of
    /// this store) is logged as an error and retried too: it needs an operator, who may fix it without a
    /// restart (re-enabling the key).
    pub async fn unseal_master_keyring_in_background(&self, path: &Path, wrapped: &WrappedKeyring) {
        let mut delay = UNSEAL_FIRST_RETRY;
        loop {
            tokio::time::sleep(delay).await;
            match self.unseal_master_keyring(path, wrapped).await {
                Ok(()) => return,
                Err(error) if error.is_transient() => {
                    tracing::warn!(%error, retry_in_s = delay.as_secs(), "master keyring still sealed");
                }
                Err(error) => {
                    tracing::error!(%error, retry_in_s = delay.as_secs(), "master keyring cannot be unwrapped");
                }
            }
            delay = (delay * 2).min(UNSEAL_MAX_RETRY);
        }
    }
}

/// The verifiers the store records, by master key id.
pub async fn recorded_verifiers(store: &dyn Store) -> Result<BTreeMap<String, Verifier>, StoreError> {
    let prefix = layout::master_key_verifier_prefix();
    let mut recorded = BTreeMap::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan(Space::Meta, prefix, after.as_deref(), 100).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, value) in page {
            let id = layout::master_key_id_of(&key)
                .ok_or_else(|| StoreError::Corrupt("master key verifier key is not UTF-8".into()))?;
            recorded.insert(id.to_owned(), decode_verifier(&layout::decode(&value)?)?);
        }
    }
    Ok(recorded)
}

/// The stored form of a verifier.
pub fn encode_verifier(verifier: &Verifier) -> MasterKeyVerifier {
    MasterKeyVerifier { hmac_sha256: hex::encode(verifier) }
}

/// A stored verifier back to bytes; anything but 32 bytes of hex is corrupt.
pub fn decode_verifier(stored: &MasterKeyVerifier) -> Result<Verifier, StoreError> {
    hex::decode(&stored.hmac_sha256)
        .ok()
        .and_then(|bytes| Verifier::try_from(bytes).ok())
        .ok_or_else(|| StoreError::Corrupt("master key verifier is not 32 bytes of hex".into()))
}

async fn record_new_verifiers(
    store: &dyn Store,
    keyring: &MasterKeyring,
    recorded: &BTreeMap<String, Verifier>,
) -> Result<(), KeyringError> {
    let mut ops = Vec::new();
    let mut added = Vec::new();
    for id in keyring.ids().filter(|id| !recorded.contains_key(*id)) {
        let Some(verifier) = keyring.verifier(id) else { continue };
        ops.push(WriteOp::PutIfAbsent {
            space: Space::Meta,
            key: layout::master_key_verifier_key(id),
            value: layout::encode(&encode_verifier(&verifier)).map_err(store_failure)?,
        });
        added.push(id);
    }
    if ops.is_empty() {
        return Ok(());
    }
    match store.apply(ops).await {
        Ok(()) => {
            tracing::info!(ids = %list(added), "master key verifiers recorded in the store");
            Ok(())
        }
        // The data directory is locked: only another process on a shared store could race us here.
        Err(ApplyError::Conflict { .. }) => Err(store_failure(StoreError::Backend(
            "master key verifiers changed while being recorded; start again".into(),
        ))),
        Err(ApplyError::Store(error)) => Err(store_failure(error)),
    }
}

/// What a record says about its sealed key, decoded without the rest.
#[derive(Deserialize)]
struct SealedRef {
    #[serde(default)]
    sealed: Option<SealedKeyRef>,
}

#[derive(Deserialize)]
struct SealedKeyRef {
    encryptor: EncryptorKind,
    key_ref: String,
}

/// The records sealed under one master key id.
struct SealedUnder {
    records: u64,
    /// The first of them (in key order), to try the keyring on.
    sample: Keypair,
}

/// The master key ids that `default`-sealed records name, with how many records each seals.
async fn default_sealed_key_ids(store: &dyn Store) -> Result<BTreeMap<String, SealedUnder>, StoreError> {
    let mut ids: BTreeMap<String, SealedUnder> = BTreeMap::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan(Space::KeyPairs, b"", after.as_deref(), 1000).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (_, value) in page {
            let found: SealedRef = layout::decode(&value)?;
            let Some(sealed) = found.sealed.filter(|s| s.encryptor == EncryptorKind::Default) else { continue };
            match ids.get_mut(&sealed.key_ref) {
                Some(under) => under.records += 1,
                None => {
                    let sample = layout::decode(&value)?;
                    ids.insert(sealed.key_ref, SealedUnder { records: 1, sample });
                }
            }
        }
    }
    Ok(ids)
}

/// Whether `record`'s sealed private key opens (AEAD-decrypts under its record AAD) with `keyring`. The
/// plaintext is dropped at once (zeroized).
fn opens(keyring: &MasterKeyring, record: &Keypair) -> bool {
    record.sealed.as_ref().is_some_and(|sealed| local::open_with(keyring, &Aad::of_record(record), sealed).is_ok())
}

fn store_failure(error: StoreError) -> KeyringError {
    KeyringError::Store(error.to_string())
}

fn list<T: AsRef<str>>(ids: impl IntoIterator<Item = T>) -> String {
    ids.into_iter().map(|id| id.as_ref().to_owned()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Keypair, SealedKey};
    use crate::store::memory::MemoryStore;

    fn sealed_record(key_ref: &str, encryptor: EncryptorKind) -> WriteOp {
        let record = Keypair {
            sealed: Some(SealedKey {
                format_version: 2,
                encryptor,
                key_ref: key_ref.into(),
                key_name: None,
                salt: None,
                wrapped_dek: String::new(),
                nonce: String::new(),
                ciphertext: String::new(),
            }),
            ..Keypair::sample(1, "u", &format!("k-{key_ref}"))
        };
        WriteOp::PutIfAbsent {
            space: Space::KeyPairs,
            key: layout::keypair_key(&record),
            value: layout::encode(&record).expect("encode"),
        }
    }

    fn refusal(result: Result<MasterKeyring, KeyringError>) -> String {
        match result {
            Err(error @ KeyringError::Mismatch { .. }) => error.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_new_store_gets_a_keyring_and_its_verifier() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let store = MemoryStore::new();
        let keyring = open_keyring(&path, false, &store).await.expect("first start");
        let recorded = recorded_verifiers(&store).await.expect("recorded");
        assert_eq!(recorded.keys().collect::<Vec<_>>(), [keyring.current_id()]);
        assert_eq!(recorded[keyring.current_id()], keyring.verifier(keyring.current_id()).expect("verifier"));
        open_keyring(&path, false, &store).await.expect("second start");
    }

    #[tokio::test]
    async fn a_missing_keyring_is_never_recreated_for_a_store_that_used_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let store = MemoryStore::new();
        let id = open_keyring(&path, false, &store).await.expect("first start").current_id().to_owned();
        std::fs::remove_file(&path).expect("remove");
        let message = refusal(open_keyring(&path, false, &store).await);
        assert!(message.contains("does not exist") && message.contains(&id), "{message}");
        assert!(!path.exists(), "no keyring was created");
    }

    #[tokio::test]
    async fn a_missing_keyring_is_never_created_over_default_sealed_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let store = MemoryStore::new();
        store.apply(vec![sealed_record("mk-old", EncryptorKind::Default)]).await.expect("seed");
        let message = refusal(open_keyring(&path, false, &store).await);
        assert!(message.contains("1 private keys sealed under master keys mk-old"), "{message}");
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn kms_sealed_records_alone_do_not_need_a_keyring() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let store = MemoryStore::new();
        store.apply(vec![sealed_record("3c1d5a0e-kms", EncryptorKind::Kms)]).await.expect("seed");
        open_keyring(&path, false, &store).await.expect("created");
    }

    #[tokio::test]
    async fn a_replaced_key_under_a_recorded_id_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let store = MemoryStore::new();
        let id = open_keyring(&path, false, &store).await.expect("first start").current_id().to_owned();
        std::fs::remove_file(&path).expect("remove");
        MasterKeyring::load_or_create(&path, false).expect("same id (same day), other bytes");
        let message = refusal(open_keyring(&path, false, &store).await);
        assert!(message.contains(&format!("other key bytes under master keys {id}")), "{message}");
    }

    #[tokio::test]
    async fn new_keys_are_recorded_and_a_keyring_without_them_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let store = MemoryStore::new();
        let first = open_keyring(&path, false, &store).await.expect("first start").current_id().to_owned();
        let backup = std::fs::read(&path).expect("read");
        let (_, added) = crate::custody::keyring::generate(&path, false, false).expect("generate");
        open_keyring(&path, false, &store).await.expect("after generate");
        assert_eq!(recorded_verifiers(&store).await.expect("recorded").len(), 2);
        std::fs::write(&path, backup).expect("the old keyring file back");
        let message = refusal(open_keyring(&path, false, &store).await);
        assert!(message.contains(&format!("lacks master keys {added} that")), "only the new one: {message}");
        assert_ne!(first, added);
    }

    /// A record really sealed with the keyring at `path` (its current key).
    fn escrowed_record(path: &Path, id: u64) -> WriteOp {
        let local = crate::custody::LocalEncryptor::new(MasterKeyring::load_or_create(path, false).expect("keyring"));
        let mut record = Keypair::sample(id, "u", &format!("escrowed-{id}"));
        let text = crate::model::PrivateKeyText::new(zeroize::Zeroizing::new("a private key".into()));
        record.sealed = Some(local.seal(&Aad::of_record(&record), &text).expect("seal"));
        WriteOp::PutIfAbsent {
            space: Space::KeyPairs,
            key: layout::keypair_key(&record),
            value: layout::encode(&record).expect("encode"),
        }
    }

    /// The keyring file at `path` with the first hex digit of every key flipped: same ids, other bytes.
    fn replace_key_bytes(path: &Path) {
        let text = std::fs::read_to_string(path).expect("read");
        let flipped: Vec<String> = text
            .lines()
            .map(|line| match line.split_once("key_hex = \"") {
                Some((head, hex)) => {
                    let first = if hex.starts_with('0') { '1' } else { '0' };
                    format!("{head}key_hex = \"{first}{}", &hex[1..])
                }
                None => line.to_owned(),
            })
            .collect();
        assert_ne!(flipped.join("\n"), text.trim_end());
        std::fs::write(path, flipped.join("\n") + "\n").expect("write");
    }

    /// Issue: the upgrade rule trusted a keyring with the right ids (dates) but other bytes. A record sealed
    /// under each id must open with it before its verifier is recorded.
    #[tokio::test]
    async fn a_store_from_before_verifiers_needs_its_records_to_open_with_the_keyring() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let keyring = MasterKeyring::load_or_create(&path, false).expect("keyring");
        let id = keyring.current_id().to_owned();
        let original = std::fs::read(&path).expect("read");
        let store = MemoryStore::new();
        store.apply(vec![escrowed_record(&path, 1), escrowed_record(&path, 2)]).await.expect("seed");

        replace_key_bytes(&path);
        assert_eq!(MasterKeyring::load_or_create(&path, false).expect("other bytes").current_id(), id);
        let message = refusal(open_keyring(&path, false, &store).await);
        assert!(message.contains(&format!("other key bytes under master keys {id} than sealed")), "{message}");
        assert!(recorded_verifiers(&store).await.expect("recorded").is_empty(), "nothing recorded on a refusal");

        std::fs::write(&path, original).expect("the right keyring back");
        let opened = open_keyring(&path, false, &store).await.expect("the right keyring");
        let recorded = recorded_verifiers(&store).await.expect("recorded");
        assert_eq!(recorded.keys().collect::<Vec<_>>(), [&id]);
        assert_eq!(recorded[&id], opened.verifier(&id).expect("verifier"));
    }

    #[tokio::test]
    async fn a_store_from_before_verifiers_is_checked_by_the_ids_its_records_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        MasterKeyring::load_or_create(&path, false).expect("keyring");
        let store = MemoryStore::new();
        store.apply(vec![escrowed_record(&path, 1)]).await.expect("seed");
        open_keyring(&path, false, &store).await.expect("upgrade: every id present");
        assert_eq!(recorded_verifiers(&store).await.expect("recorded").len(), 1);

        let other = MemoryStore::new();
        other.apply(vec![sealed_record("mk-lost", EncryptorKind::Default)]).await.expect("seed");
        let message = refusal(open_keyring(&path, false, &other).await);
        assert!(message.contains("sealed under master keys mk-lost"), "{message}");
        assert!(recorded_verifiers(&other).await.expect("recorded").is_empty(), "nothing recorded on a refusal");
    }
}
