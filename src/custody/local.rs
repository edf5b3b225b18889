//! The `default` encryptor: the data key is wrapped under a KEK derived from the master keyring with
//! HKDF-SHA256 (ikm = master key, salt = 32 random bytes per record, info = `kps/kek/v1/<master key id>`).
//!
//! The keyring sits in a [`KeyringSlot`]: open from the start, or — a KMS-wrapped keyring whose KMS was
//! unreachable at startup — sealed until the background unwrap puts it in. While sealed, every seal and open
//! is `CustodyError::KeyringSealed`; nothing else changes.

use std::sync::{Arc, OnceLock};

use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::envelope::{KEY_LEN, NONCE_LEN, SymmetricKey};
use super::{
    Aad, CustodyError, EncryptorKind, MasterKeyring, PrivateKeyText, SEALED_FORMAT_VERSION, SealedKey, field_bytes,
    field_text,
};

/// The master keyring as the `default` encryptor holds it: set once, either at construction or by
/// [`KeyringSlot::unseal`] when the KMS has unwrapped it. Clones share the slot.
#[derive(Clone, Default)]
pub struct KeyringSlot(Arc<OnceLock<MasterKeyring>>);

impl KeyringSlot {
    /// A slot holding `keyring`.
    pub fn open(keyring: MasterKeyring) -> Self {
        let slot = Self::default();
        slot.unseal(keyring);
        slot
    }

    /// An empty slot: `default` custody waits for [`KeyringSlot::unseal`].
    pub fn sealed() -> Self {
        Self::default()
    }

    /// Puts the unwrapped keyring in; `false` (and `keyring` dropped) if the slot was already open.
    pub fn unseal(&self, keyring: MasterKeyring) -> bool {
        self.0.set(keyring).is_ok()
    }

    pub fn is_sealed(&self) -> bool {
        self.0.get().is_none()
    }

    /// The keyring, or `KeyringSealed`.
    pub fn get(&self) -> Result<&MasterKeyring, CustodyError> {
        self.0.get().ok_or(CustodyError::KeyringSealed)
    }
}

impl std::fmt::Debug for KeyringSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("KeyringSlot").field(&self.0.get()).finish()
    }
}

pub struct LocalEncryptor {
    keyring: KeyringSlot,
}

impl LocalEncryptor {
    pub fn new(keyring: MasterKeyring) -> Self {
        Self { keyring: KeyringSlot::open(keyring) }
    }

    /// An encryptor over `slot` (sealed or open).
    pub fn with_slot(keyring: KeyringSlot) -> Self {
        Self { keyring }
    }

    /// The slot (the background unwrap fills it).
    pub fn slot(&self) -> &KeyringSlot {
        &self.keyring
    }

    /// The current master key id; `None` while the keyring is sealed.
    pub fn current_key_id(&self) -> Option<&str> {
        self.keyring.get().ok().map(MasterKeyring::current_id)
    }

    pub fn seal(&self, aad: &Aad, private_key: &PrivateKeyText) -> Result<SealedKey, CustodyError> {
        let keyring = self.keyring.get()?;
        let aad = aad.bytes();
        let dek = SymmetricKey::random();
        let (nonce, ciphertext) = dek.encrypt(private_key.expose().as_bytes(), &aad)?;
        let mut salt = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let key_id = keyring.current_id().to_owned();
        let (wrap_nonce, wrapped) = kek(keyring, &key_id, &salt)?.encrypt(dek.expose(), &aad)?;
        let mut wrapped_dek = wrap_nonce.to_vec();
        wrapped_dek.extend(wrapped);
        Ok(SealedKey {
            format_version: SEALED_FORMAT_VERSION,
            encryptor: EncryptorKind::Default,
            key_ref: key_id,
            key_name: None,
            salt: Some(field_text(&salt)),
            wrapped_dek: field_text(&wrapped_dek),
            nonce: field_text(&nonce),
            ciphertext: field_text(&ciphertext),
        })
    }

    pub fn open(&self, aad: &Aad, sealed: &SealedKey) -> Result<PrivateKeyText, CustodyError> {
        open_with(self.keyring.get()?, aad, sealed)
    }
}

/// The KEK of master key `key_id` of `keyring` for a record's `salt`.
fn kek(keyring: &MasterKeyring, key_id: &str, salt: &[u8]) -> Result<SymmetricKey, CustodyError> {
    let master = keyring.get(key_id).ok_or_else(|| CustodyError::UnknownMasterKey(key_id.to_owned()))?;
    let mut okm = Zeroizing::new([0u8; KEY_LEN]);
    Hkdf::<Sha256>::new(Some(salt), master.expose())
        .expand(format!("kps/kek/v1/{key_id}").as_bytes(), okm.as_mut())
        .map_err(|_| CustodyError::Malformed("hkdf length".into()))?;
    SymmetricKey::from_bytes(okm.as_ref())
}

/// Opens a `default` envelope with `keyring` (what `LocalEncryptor::open` does, for a keyring not yet
/// handed to an encryptor: the startup check of `service::master_keys`).
pub fn open_with(keyring: &MasterKeyring, aad: &Aad, sealed: &SealedKey) -> Result<PrivateKeyText, CustodyError> {
    if sealed.encryptor != EncryptorKind::Default {
        return Err(CustodyError::Malformed("not a default-encryptor envelope".into()));
    }
    let bytes = |field: &str, text: &str| field_bytes(sealed, field, text);
    let salt = bytes("salt", sealed.salt.as_deref().unwrap_or_default())?;
    let wrapped = bytes("wrapped_dek", &sealed.wrapped_dek)?;
    if wrapped.len() <= NONCE_LEN {
        return Err(CustodyError::Malformed("wrapped_dek".into()));
    }
    let aad = aad.bytes();
    let (wrap_nonce, wrapped) = wrapped.split_at(NONCE_LEN);
    let dek = kek(keyring, &sealed.key_ref, &salt)?.decrypt(wrap_nonce, wrapped, &aad)?;
    let dek = SymmetricKey::from_bytes(&dek)?;
    let plaintext = dek.decrypt(&bytes("nonce", &sealed.nonce)?, &bytes("ciphertext", &sealed.ciphertext)?, &aad)?;
    let text = String::from_utf8(plaintext.to_vec()).map_err(|_| CustodyError::Integrity)?;
    Ok(PrivateKeyText::new(Zeroizing::new(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encryptor(dir: &std::path::Path) -> LocalEncryptor {
        LocalEncryptor::new(MasterKeyring::load_or_create(&dir.join("master.key"), false).expect("keyring"))
    }

    fn aad(name: &str, id: u64) -> Aad {
        Aad { project_id: "p".into(), user_id: "u".into(), name: name.into(), record_id: id }
    }

    fn secret() -> PrivateKeyText {
        PrivateKeyText::new(Zeroizing::new("an escrowed private key text\nwith lines\n".into()))
    }

    #[test]
    fn seal_then_open_gives_the_exact_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = encryptor(dir.path());
        let sealed = local.seal(&aad("k", 1), &secret()).expect("seal");
        assert!(!serde_json::to_string(&sealed).expect("json").contains("escrowed"));
        assert_eq!(local.open(&aad("k", 1), &sealed).expect("open").expose(), secret().expose());
    }

    #[test]
    fn a_sealed_key_moved_to_another_record_does_not_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = encryptor(dir.path());
        let sealed = local.seal(&aad("k", 1), &secret()).expect("seal");
        for other in [aad("k", 2), aad("other", 1), Aad { user_id: "v".into(), ..aad("k", 1) }] {
            assert!(matches!(local.open(&other, &sealed), Err(CustodyError::Integrity)), "{other:?}");
        }
    }

    #[test]
    fn older_master_keys_still_open_after_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let sealed = encryptor(dir.path()).seal(&aad("k", 1), &secret()).expect("seal");
        crate::custody::keyring::generate(&path, false, false).expect("rotate");
        let rotated = encryptor(dir.path());
        assert_ne!(rotated.current_key_id(), Some(sealed.key_ref.as_str()));
        assert_eq!(rotated.open(&aad("k", 1), &sealed).expect("open").expose(), secret().expose());
    }

    #[test]
    fn a_different_keyring_cannot_open() {
        let (a, b) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"));
        let sealed = encryptor(a.path()).seal(&aad("k", 1), &secret()).expect("seal");
        let mut sealed_same_id = sealed.clone();
        sealed_same_id.key_ref = encryptor(b.path()).current_key_id().expect("open").to_owned();
        assert!(encryptor(b.path()).open(&aad("k", 1), &sealed_same_id).is_err());
    }

    #[test]
    fn a_sealed_slot_refuses_until_unsealed_then_serves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keyring = || MasterKeyring::load_or_create(&dir.path().join("master.key"), false).expect("keyring");
        let sealed = encryptor(dir.path()).seal(&aad("k", 1), &secret()).expect("seal");
        let slot = KeyringSlot::sealed();
        let local = LocalEncryptor::with_slot(slot.clone());
        assert!(slot.is_sealed() && local.current_key_id().is_none());
        assert!(matches!(local.seal(&aad("k", 2), &secret()), Err(CustodyError::KeyringSealed)));
        assert!(matches!(local.open(&aad("k", 1), &sealed), Err(CustodyError::KeyringSealed)));
        assert!(slot.unseal(keyring()), "the first unseal fills the slot");
        assert!(!slot.unseal(keyring()), "a second one changes nothing");
        assert_eq!(local.open(&aad("k", 1), &sealed).expect("open").expose(), secret().expose());
        assert!(!format!("{slot:?}").contains("key_hex"));
    }

    /// The same envelope with its binary fields re-encoded as format 1 wrote them (hex).
    fn as_format_1(sealed: &SealedKey) -> SealedKey {
        use base64::Engine;
        let hex_of = |text: &str| hex::encode(base64::engine::general_purpose::STANDARD.decode(text).expect("base64"));
        SealedKey {
            format_version: 1,
            salt: sealed.salt.as_deref().map(hex_of),
            wrapped_dek: hex_of(&sealed.wrapped_dek),
            nonce: hex_of(&sealed.nonce),
            ciphertext: hex_of(&sealed.ciphertext),
            ..sealed.clone()
        }
    }

    #[test]
    fn format_1_envelopes_still_open_and_unknown_formats_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = encryptor(dir.path());
        let sealed = local.seal(&aad("k", 1), &secret()).expect("seal");
        assert_eq!(sealed.format_version, SEALED_FORMAT_VERSION);
        let old = as_format_1(&sealed);
        assert!(old.ciphertext.len() > sealed.ciphertext.len(), "base64 is denser than hex");
        assert_eq!(local.open(&aad("k", 1), &old).expect("format 1 opens").expose(), secret().expose());
        assert!(matches!(local.open(&aad("k", 2), &old), Err(CustodyError::Integrity)));
        // Fields read in the wrong encoding never open (hex text is also valid base64, of other bytes).
        let mislabelled = SealedKey { format_version: 2, ..old.clone() };
        assert!(local.open(&aad("k", 1), &mislabelled).is_err());
        let newer = SealedKey { format_version: SEALED_FORMAT_VERSION + 1, ..sealed };
        match local.open(&aad("k", 1), &newer) {
            Err(CustodyError::Malformed(message)) => {
                assert!(message.contains("unknown sealed key format"), "{message}")
            }
            other => panic!("newer format opened: {other:?}"),
        }
    }
}
