//! The record layout: versioned key pair records and name-index entries as stored, and the byte layout of
//! their store keys.
//!
//! Encoding: one format-version byte, then JSON. Readers accept every version up to `FORMAT_VERSION`; a
//! newer version is an error, never a silent misreading. Records hold ciphertext only (the sealed private
//! key, once custody exists); nothing in here is secret.

use serde::{Deserialize, Serialize};

use crate::model::{Keypair, Scope};
use crate::store::StoreError;

/// Current record format.
pub const FORMAT_VERSION: u8 = 1;

/// A name-index entry for `(project_id, name)`: the users whose `user` key of that name was created in
/// that project, or the `domain` key holding the name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameIndexEntry {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_key: Option<u64>,
}

impl NameIndexEntry {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.domain_key.is_none()
    }
}

/// Serializes a record value with its format version.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![FORMAT_VERSION];
    serde_json::to_writer(&mut bytes, value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(bytes)
}

/// Reads a record value written by `encode` at any known format version.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    decode_borrowed(bytes)
}

/// [`decode`] into a value that may borrow from `bytes` (such as [`ListFields`]).
pub fn decode_borrowed<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, json)) => serde_json::from_slice(json).map_err(|e| StoreError::Corrupt(e.to_string())),
        Some((version, _)) => Err(StoreError::Corrupt(format!(
            "record format version {version} is not supported by this kps (max {FORMAT_VERSION})"
        ))),
        None => Err(StoreError::Corrupt("empty record".into())),
    }
}

/// `len(owner) as u16 BE | owner`: the prefix under which one owner's entries sort by name.
fn owner_prefix(tag: u8, owner: &str) -> Vec<u8> {
    let len = u16::try_from(owner.len()).unwrap_or(u16::MAX);
    let mut key = Vec::with_capacity(3 + owner.len() + 64);
    key.push(tag);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(owner.as_bytes());
    key
}

/// Prefix of every `user` key pair of `user_id`.
pub fn user_prefix(user_id: &str) -> Vec<u8> {
    owner_prefix(b'u', user_id)
}

/// Store key of the `user` key pair `name` of `user_id`.
pub fn user_key(user_id: &str, name: &str) -> Vec<u8> {
    let mut key = user_prefix(user_id);
    key.extend_from_slice(name.as_bytes());
    key
}

/// Prefix of every `domain` key pair of `project_id`.
pub fn domain_prefix(project_id: &str) -> Vec<u8> {
    owner_prefix(b'd', project_id)
}

/// Store key of the `domain` key pair `name` of `project_id`.
pub fn domain_key(project_id: &str, name: &str) -> Vec<u8> {
    let mut key = domain_prefix(project_id);
    key.extend_from_slice(name.as_bytes());
    key
}

/// Name-index key of `(project_id, name)`.
pub fn name_index_key(project_id: &str, name: &str) -> Vec<u8> {
    let mut key = owner_prefix(b'n', project_id);
    key.extend_from_slice(name.as_bytes());
    key
}

/// The owner prefix (`user_prefix` or `domain_prefix`) of a key pair's store key.
pub fn owner_prefix_of(key: &[u8]) -> Option<&[u8]> {
    let len = usize::from(u16::from_be_bytes([*key.get(1)?, *key.get(2)?]));
    key.get(..3 + len)
}

/// Splits a name-index key into `(project_id, name)`.
pub fn split_name_index_key(key: &[u8]) -> Option<(&str, &str)> {
    let (&tag, rest) = key.split_first()?;
    if tag != b'n' || rest.len() < 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let rest = &rest[2..];
    if rest.len() < len {
        return None;
    }
    let (owner, name) = rest.split_at(len);
    Some((std::str::from_utf8(owner).ok()?, std::str::from_utf8(name).ok()?))
}

/// `Space::Counters`: set to 1 once the counters below were built for the records of the store.
pub const COUNTERS_READY: &[u8] = b"ready/v1";

/// `Space::Counters` key of the write generation of an owner (a `user_prefix` or `domain_prefix`).
pub fn generation_key(owner_prefix: &[u8]) -> Vec<u8> {
    [b"g", owner_prefix].concat()
}

/// `Space::Counters` key of the number of `domain` key pairs of `project_id`.
pub fn domain_count_key(project_id: &str) -> Vec<u8> {
    owner_prefix(b'p', project_id)
}

/// `Space::Counters` key of the number of key pairs counting against `user_id`'s quota: their `user` keys
/// and the `domain` keys they created.
pub fn owned_count_key(user_id: &str) -> Vec<u8> {
    owner_prefix(b'o', user_id)
}

/// The prefixes of the count keys (`owned_count_key`, `domain_count_key`), for a scan of them.
pub const COUNT_PREFIXES: [&[u8]; 2] = [b"o", b"p"];

/// The counts of a set of key pairs, as the counters hold them (for a store built before counters, or
/// records loaded from a backup).
#[derive(Debug, Default)]
pub struct Counts {
    counters: std::collections::BTreeMap<Vec<u8>, u64>,
}

impl Counts {
    pub fn add(&mut self, record: &Keypair) {
        *self.counters.entry(owned_count_key(&record.user_id)).or_default() += 1;
        if record.scope == Scope::Domain {
            *self.counters.entry(domain_count_key(&record.project_id)).or_default() += 1;
        }
    }

    /// The counted values.
    pub fn into_values(self) -> std::collections::BTreeMap<Vec<u8>, u64> {
        self.counters
    }
}

/// `Space::Meta`: the prefix of every master key verifier's key (`service::master_keys`).
const MASTER_KEY_VERIFIER_PREFIX: &[u8] = b"master_key_verifier/";

/// A master key's verifier as stored (HMAC-SHA256 under the key of a fixed label, hex): never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterKeyVerifier {
    pub hmac_sha256: String,
}

/// `Space::Meta` key of the verifier of master key `id`.
pub fn master_key_verifier_key(id: &str) -> Vec<u8> {
    [MASTER_KEY_VERIFIER_PREFIX, id.as_bytes()].concat()
}

/// The prefix under which every verifier is stored (for scans).
pub fn master_key_verifier_prefix() -> &'static [u8] {
    MASTER_KEY_VERIFIER_PREFIX
}

/// The master key id of a `Space::Meta` key, if it is a verifier's.
pub fn master_key_id_of(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key.strip_prefix(MASTER_KEY_VERIFIER_PREFIX)?).ok()
}

/// The store key of a key pair record: by owner user for `user` keys, by project for `domain` keys.
pub fn keypair_key(record: &Keypair) -> Vec<u8> {
    match record.scope {
        Scope::User => user_key(&record.user_id, &record.name),
        Scope::Domain => domain_key(&record.project_id, &record.name),
    }
}

/// The name part of a key built by `user_key`/`domain_key`, given its prefix.
#[cfg(test)]
pub fn name_from_key<'a>(key: &'a [u8], prefix: &[u8]) -> Option<&'a str> {
    std::str::from_utf8(key.strip_prefix(prefix)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Keypair {
        Keypair { id: 7, fingerprint: "f1".into(), ..Keypair::sample(7, "u", "k") }
    }

    #[test]
    fn records_round_trip_with_the_version_byte_first() {
        let bytes = encode(&record()).expect("encode");
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(owner_prefix_of(&user_key("alice", "k1")), Some(&user_prefix("alice")[..]));
        assert_eq!(owner_prefix_of(&domain_key("p1", "k1")), Some(&domain_prefix("p1")[..]));
        assert_eq!(owner_prefix_of(b"u\0"), None);
        assert_eq!(decode::<Keypair>(&bytes).expect("decode"), record());
    }

    #[test]
    fn a_newer_format_version_is_an_error_not_a_misreading() {
        let mut bytes = encode(&record()).expect("encode");
        bytes[0] = FORMAT_VERSION + 1;
        let error = decode::<Keypair>(&bytes).expect_err("newer version");
        assert!(error.to_string().contains("not supported"), "{error}");
    }

    #[test]
    fn one_users_keys_share_a_prefix_that_no_other_user_shares() {
        assert!(user_key("ab", "c").starts_with(&user_prefix("ab")));
        assert!(!user_key("abc", "").starts_with(&user_prefix("ab")));
        assert!(!user_key("a", "bc").starts_with(&user_prefix("ab")));
        assert_eq!(name_from_key(&user_key("ab", "name x"), &user_prefix("ab")), Some("name x"));
    }

    #[test]
    fn name_index_keys_split_back_into_project_and_name() {
        let key = name_index_key("p-42", "a name");
        assert_eq!(split_name_index_key(&key), Some(("p-42", "a name")));
        assert_eq!(split_name_index_key(&user_key("p-42", "a name")), None);
        assert_eq!(split_name_index_key(b"n\x00"), None);
    }

    #[test]
    fn master_key_verifier_keys_give_back_their_id() {
        assert_eq!(master_key_id_of(&master_key_verifier_key("mk-2026-01-02")), Some("mk-2026-01-02"));
        assert!(master_key_verifier_key("a").starts_with(master_key_verifier_prefix()));
        assert_eq!(master_key_id_of(b"store_format"), None);
    }

    #[test]
    fn keys_of_one_owner_sort_by_name_bytes() {
        let mut names = ["b", "a b", "B", "a", "a-"];
        let mut keys: Vec<_> = names.iter().map(|n| user_key("u", n)).collect();
        keys.sort();
        names.sort_unstable();
        let decoded: Vec<_> = keys.iter().filter_map(|k| name_from_key(k, &user_prefix("u"))).collect();
        assert_eq!(decoded, names);
    }
}
