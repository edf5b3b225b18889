//! The mock's keys: what one key holds and shows (`describe-key`), where keys come from at start (state
//! file, seed file, `--key`), and the state file rewritten after each change. Knows nothing of HTTP.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use kps::kms::is_key_id;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::config::{MockConfig, MockError};
use crate::lock;

pub const DOMAIN_ID: &str = "b168fe00ff56492495a7d22974df2d0b";
pub const REGION: &str = "mock-region-1";
pub const MATERIAL_LEN: usize = 32;
pub const STATE_ENABLED: &str = "2";
pub const STATE_DISABLED: &str = "3";
pub const STATE_PENDING_DELETION: &str = "4";

/// One key: its identity, state and spec as `describe-key` shows them, and its AES-256 material.
pub struct MockKey {
    pub id: String,
    pub alias: String,
    pub state: String,
    pub spec: String,
    pub description: String,
    pub material: Zeroizing<[u8; MATERIAL_LEN]>,
    creation_date: String,
    pub scheduled_deletion_date: String,
}

impl MockKey {
    pub fn new(
        id: String,
        alias: String,
        state: String,
        spec: String,
        material: Zeroizing<[u8; MATERIAL_LEN]>,
    ) -> Self {
        Self {
            id,
            alias,
            state,
            spec,
            description: String::new(),
            material,
            creation_date: now_ms().to_string(),
            scheduled_deletion_date: String::new(),
        }
    }

    pub fn details(&self) -> Value {
        json!({
            "key_id": self.id,
            "domain_id": DOMAIN_ID,
            "key_alias": self.alias,
            "realm": REGION,
            "key_spec": self.spec,
            "key_usage": "ENCRYPT_DECRYPT",
            "key_description": self.description,
            "creation_date": self.creation_date,
            "scheduled_deletion_date": self.scheduled_deletion_date,
            "key_state": self.state,
            "default_key_flag": "0",
            "key_type": "1",
            "expiration_time": "",
            "origin": "kms",
            "key_rotation_enabled": "false",
            "sys_enterprise_project_id": "0",
            "keystore_id": "0",
        })
    }
}

/// One key in the state file (and, with `material_hex` optional, in the seed file).
#[derive(Serialize, Deserialize)]
struct StoredKey {
    id: String,
    alias: String,
    state: String,
    spec: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    material_hex: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    creation_date: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    scheduled_deletion_date: String,
}

impl StoredKey {
    fn into_key(self, path: &Path) -> Result<MockKey, MockError> {
        let bad = |message: String| MockError::File { path: path.into(), message };
        if !is_key_id(&self.id) {
            return Err(bad(format!("key id {:?} is not in the key id form", self.id)));
        }
        if !valid_alias(&self.alias) {
            return Err(bad(format!("key alias {:?} is invalid", self.alias)));
        }
        let material = match &self.material_hex {
            Some(text) => {
                let mut material = Zeroizing::new([0u8; MATERIAL_LEN]);
                hex::decode_to_slice(text, material.as_mut())
                    .map_err(|_| bad(format!("material_hex of key {} is not 64 hex characters", self.id)))?;
                material
            }
            None => random_material(),
        };
        let mut key = MockKey::new(self.id, self.alias, self.state, self.spec, material);
        key.description = self.description;
        if !self.creation_date.is_empty() {
            key.creation_date = self.creation_date;
        }
        key.scheduled_deletion_date = self.scheduled_deletion_date;
        Ok(key)
    }
}

/// State file keys, then seed keys, then `--key`s; a key whose id or alias is already present is skipped.
pub fn initial_keys(config: &MockConfig) -> Result<Vec<MockKey>, MockError> {
    let mut keys: Vec<MockKey> = Vec::new();
    let read = |path: &Path| -> Result<Vec<StoredKey>, MockError> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| MockError::File { path: path.into(), message: e.to_string() })?,
        );
        serde_json::from_str(&text).map_err(|e| MockError::File { path: path.into(), message: e.to_string() })
    };
    let add = |keys: &mut Vec<MockKey>, key: MockKey| {
        if !keys.iter().any(|k| k.id == key.id || k.alias == key.alias) {
            keys.push(key);
        }
    };
    if let Some(path) = config.state_file.as_deref().filter(|p| p.exists()) {
        let mut loaded = read(path)?.into_iter().map(|k| k.into_key(path)).collect::<Result<Vec<_>, _>>()?;
        loaded.sort_by_key(|k| k.creation_date.parse::<u128>().unwrap_or(0));
        for key in loaded {
            add(&mut keys, key);
        }
    }
    if let Some(path) = config.seed.as_deref() {
        for stored in read(path)? {
            add(&mut keys, stored.into_key(path)?);
        }
    }
    for arg in &config.keys {
        let (alias, id) = match arg.split_once('=') {
            Some((alias, id)) => (alias, id.to_owned()),
            None => (arg.as_str(), uuid::Uuid::new_v4().to_string()),
        };
        if !valid_alias(alias) || !is_key_id(&id) {
            return Err(MockError::Config(format!("--key {arg}: expected ALIAS[=UUID]")));
        }
        let key = MockKey::new(id, alias.to_owned(), STATE_ENABLED.into(), "AES_256".into(), random_material());
        add(&mut keys, key);
    }
    Ok(keys)
}

/// The keys in creation order (list-keys paging order), and the state file that mirrors them.
pub struct KeyStore {
    keys: Mutex<Vec<MockKey>>,
    state_file: Option<PathBuf>,
}

impl KeyStore {
    pub fn new(keys: Vec<MockKey>, state_file: Option<PathBuf>) -> Self {
        Self { keys: Mutex::new(keys), state_file }
    }

    pub fn lock(&self) -> MutexGuard<'_, Vec<MockKey>> {
        lock(&self.keys)
    }

    /// Rewrites the state file, if any, atomically (temp file + rename), mode 0600.
    pub fn save(&self) -> Result<(), MockError> {
        let Some(path) = self.state_file.as_deref() else {
            return Ok(());
        };
        let stored: Vec<StoredKey> = lock(&self.keys)
            .iter()
            .map(|k| StoredKey {
                id: k.id.clone(),
                alias: k.alias.clone(),
                state: k.state.clone(),
                spec: k.spec.clone(),
                material_hex: Some(hex::encode(k.material.as_ref())),
                description: k.description.clone(),
                creation_date: k.creation_date.clone(),
                scheduled_deletion_date: k.scheduled_deletion_date.clone(),
            })
            .collect();
        let text = Zeroizing::new(serde_json::to_vec_pretty(&stored).unwrap_or_default());
        let file_error = |e: std::io::Error| MockError::File { path: path.into(), message: e.to_string() };
        let tmp = path.with_extension("tmp");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(file_error)?;
            file.write_all(&text).map_err(file_error)?;
            file.sync_all().map_err(file_error)?;
        }
        std::fs::rename(&tmp, path).map_err(file_error)
    }
}

pub fn valid_alias(alias: &str) -> bool {
    (1..=255).contains(&alias.len())
        && alias.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'_' | b'-'))
}

pub fn random_material() -> Zeroizing<[u8; MATERIAL_LEN]> {
    let mut material = Zeroizing::new([0u8; MATERIAL_LEN]);
    OsRng.fill_bytes(material.as_mut());
    material
}

pub fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_key_arguments_are_refused() {
        let config = MockConfig { keys: vec!["alias=NOT-A-UUID".into()], ..MockConfig::default() };
        assert!(matches!(initial_keys(&config), Err(MockError::Config(_))));
    }
}
