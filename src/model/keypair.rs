//! Key pairs as every layer sees them: their kind (`KeyType`), the algorithm asked for (`Algorithm`) or found
//! (`KeyAlgorithm`), who sees them (`Scope`), the key pair itself (`Keypair`) and the cheap views lists
//! decode (`KeypairSummary`, `ListFields`). No I/O here; the serde forms are the stored record bodies.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::SealedKey;

/// Kind of key pair, as in Nova's `type` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// An OpenSSH public key line.
    Ssh,
    /// A PEM X.509 certificate (Nova's WinRM certificates).
    X509,
}

impl KeyType {
    /// The wire name: `ssh` or `x509`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Ssh => "ssh",
            KeyType::X509 => "x509",
        }
    }

    /// Parses the wire name; anything but `ssh`/`x509` is `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ssh" => Some(KeyType::Ssh),
            "x509" => Some(KeyType::X509),
            _ => None,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Algorithm that can be requested for generation (the `algorithm` extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Nova's only behaviour, and the default when `algorithm` is absent.
    #[default]
    Rsa2048,
    Rsa3072,
    Rsa4096,
    Ed25519,
    EcP256,
    EcP384,
}

impl Algorithm {
    /// Every requestable algorithm, in the order the spec lists them.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::Rsa2048,
        Algorithm::Rsa3072,
        Algorithm::Rsa4096,
        Algorithm::Ed25519,
        Algorithm::EcP256,
        Algorithm::EcP384,
    ];

    /// The wire name (`RSA_2048`, …), identical to the V3 `algorithm` value of the resulting key.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rsa2048 => "RSA_2048",
            Algorithm::Rsa3072 => "RSA_3072",
            Algorithm::Rsa4096 => "RSA_4096",
            Algorithm::Ed25519 => "ED25519",
            Algorithm::EcP256 => "EC_P256",
            Algorithm::EcP384 => "EC_P384",
        }
    }

    /// Parses a wire name exactly (case-sensitive); unknown names are `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// True for the `RSA_*` algorithms, the only ones allowed with `type=x509`.
    pub fn is_rsa(self) -> bool {
        self.rsa_bits().is_some()
    }

    /// Modulus size for the `RSA_*` algorithms.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            Algorithm::Rsa2048 => Some(2048),
            Algorithm::Rsa3072 => Some(3072),
            Algorithm::Rsa4096 => Some(4096),
            Algorithm::Ed25519 | Algorithm::EcP256 | Algorithm::EcP384 => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Algorithm of a stored or imported key as reported by the V3 `algorithm` field: `RSA_<bits>`,
/// `EC_P256`, `EC_P384`, `EC_P521` or `ED25519`. For x509 key pairs it is the certificate key's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// RSA with the bit length of the modulus (2048 for a 2048-bit key).
    Rsa {
        bits: usize,
    },
    EcP256,
    EcP384,
    EcP521,
    Ed25519,
}

impl KeyAlgorithm {
    /// Parses the V3 name back (e.g. from a stored record). `RSA_0` and non-decimal sizes are `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "EC_P256" => Some(KeyAlgorithm::EcP256),
            "EC_P384" => Some(KeyAlgorithm::EcP384),
            "EC_P521" => Some(KeyAlgorithm::EcP521),
            "ED25519" => Some(KeyAlgorithm::Ed25519),
            _ => {
                let digits = name.strip_prefix("RSA_")?;
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let bits: usize = digits.parse().ok()?;
                (bits > 0).then_some(KeyAlgorithm::Rsa { bits })
            }
        }
    }
}

impl From<Algorithm> for KeyAlgorithm {
    fn from(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Rsa2048 => KeyAlgorithm::Rsa { bits: 2048 },
            Algorithm::Rsa3072 => KeyAlgorithm::Rsa { bits: 3072 },
            Algorithm::Rsa4096 => KeyAlgorithm::Rsa { bits: 4096 },
            Algorithm::Ed25519 => KeyAlgorithm::Ed25519,
            Algorithm::EcP256 => KeyAlgorithm::EcP256,
            Algorithm::EcP384 => KeyAlgorithm::EcP384,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::Rsa { bits } => write!(f, "RSA_{bits}"),
            KeyAlgorithm::EcP256 => f.write_str("EC_P256"),
            KeyAlgorithm::EcP384 => f.write_str("EC_P384"),
            KeyAlgorithm::EcP521 => f.write_str("EC_P521"),
            KeyAlgorithm::Ed25519 => f.write_str("ED25519"),
        }
    }
}
impl Serialize for KeyAlgorithm {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyAlgorithm {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        KeyAlgorithm::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown key algorithm {name:?}")))
    }
}

/// Who sees a key pair: its owner user (`user`, Nova's model) or every user of its project (`domain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    User,
    Domain,
}

/// A key pair as the service keeps it: public material, owner, identity and, when escrowed, the sealed
/// private key (ciphertext only). Its serde form is the stored record body (`service::repo` adds the
/// format-version byte).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keypair {
    pub id: u64,
    pub name: String,
    /// Serialized as `ssh` or `x509`.
    pub key_type: KeyType,
    pub public_key: String,
    pub fingerprint: String,
    /// Serialized as `RSA_2048`, `ED25519`, … (kps-v3.md §2).
    pub algorithm: KeyAlgorithm,
    /// Owner (the creator for `domain` keys).
    pub user_id: String,
    /// Project of the creating request.
    pub project_id: String,
    pub scope: Scope,
    #[serde(default)]
    pub description: String,
    /// Microseconds since the Unix epoch, UTC.
    pub created_at_us: i64,
    #[serde(default)]
    pub updated_at_us: Option<i64>,
    /// The escrowed private key, sealed (custody); `None` when nothing is escrowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedKey>,
}

/// The fields of a stored key pair that list views show: decodes without copying the sealed key.
#[derive(Debug, Clone, Deserialize)]
pub struct KeypairSummary {
    pub name: String,
    pub key_type: KeyType,
    pub public_key: String,
    pub fingerprint: String,
    pub scope: Scope,
    #[serde(default)]
    sealed: Option<serde::de::IgnoredAny>,
}

impl KeypairSummary {
    /// Whether a sealed private key is stored with the key pair.
    pub fn is_key_protection(&self) -> bool {
        self.sealed.is_some()
    }
}

/// The fields of a stored key pair that Nova's list shows, borrowed from the stored bytes as JSON text:
/// a page is rendered by copying them, with no string decoding, allocation or re-escaping per record.
#[derive(Debug, Deserialize)]
pub struct ListFields<'a> {
    #[serde(borrow)]
    pub name: &'a serde_json::value::RawValue,
    #[serde(borrow)]
    pub key_type: &'a serde_json::value::RawValue,
    #[serde(borrow)]
    pub public_key: &'a serde_json::value::RawValue,
    #[serde(borrow)]
    pub fingerprint: &'a serde_json::value::RawValue,
}

impl ListFields<'_> {
    /// The name as text (for the `next` link).
    pub fn name_text(&self) -> Result<String, serde_json::Error> {
        serde_json::from_str(self.name.get())
    }
}

#[cfg(test)]
impl Keypair {
    /// A plain user key pair for tests: Ed25519 text that is not a real key, project `p`, no escrow.
    pub fn sample(id: u64, user: &str, name: &str) -> Self {
        Keypair {
            id,
            name: name.into(),
            key_type: KeyType::Ssh,
            public_key: "ssh-ed25519 AAAA".into(),
            fingerprint: "f".into(),
            algorithm: KeyAlgorithm::Ed25519,
            user_id: user.into(),
            project_id: "p".into(),
            scope: Scope::User,
            description: String::new(),
            created_at_us: 1,
            updated_at_us: None,
            sealed: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip_and_match_the_spec_list() {
        let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names, ["RSA_2048", "RSA_3072", "RSA_4096", "ED25519", "EC_P256", "EC_P384"]);
        for algorithm in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(algorithm.as_str()), Some(algorithm));
            assert_eq!(KeyAlgorithm::from(algorithm).to_string(), algorithm.as_str());
        }
    }

    #[test]
    fn algorithm_from_name_rejects_unknown_and_differently_cased_names() {
        for name in ["", "rsa_2048", "RSA_1024", "EC_P521", "DSA", "ED448", " RSA_2048"] {
            assert_eq!(Algorithm::from_name(name), None, "{name:?}");
        }
    }

    #[test]
    fn default_algorithm_is_rsa_2048_as_in_nova() {
        assert_eq!(Algorithm::default(), Algorithm::Rsa2048);
    }

    #[test]
    fn only_rsa_algorithms_are_rsa() {
        let rsa: Vec<Algorithm> = Algorithm::ALL.into_iter().filter(|a| a.is_rsa()).collect();
        assert_eq!(rsa, [Algorithm::Rsa2048, Algorithm::Rsa3072, Algorithm::Rsa4096]);
    }

    #[test]
    fn key_algorithm_names_follow_v3() {
        let table = [
            (KeyAlgorithm::Rsa { bits: 2048 }, "RSA_2048"),
            (KeyAlgorithm::Rsa { bits: 8192 }, "RSA_8192"),
            (KeyAlgorithm::EcP256, "EC_P256"),
            (KeyAlgorithm::EcP384, "EC_P384"),
            (KeyAlgorithm::EcP521, "EC_P521"),
            (KeyAlgorithm::Ed25519, "ED25519"),
        ];
        for (algorithm, name) in table {
            assert_eq!(algorithm.to_string(), name);
            assert_eq!(KeyAlgorithm::from_name(name), Some(algorithm));
        }
        for bad in ["RSA_", "RSA_0", "RSA_-1", "RSA_+2048", "rsa_2048", "EC_P224"] {
            assert_eq!(KeyAlgorithm::from_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn key_type_names() {
        assert_eq!(KeyType::Ssh.as_str(), "ssh");
        assert_eq!(KeyType::X509.as_str(), "x509");
        assert_eq!(KeyType::from_name("x509"), Some(KeyType::X509));
        assert_eq!(KeyType::from_name("SSH"), None);
    }

    #[test]
    fn kinds_and_algorithms_are_stored_by_their_wire_names() {
        let keypair = Keypair {
            key_type: KeyType::X509,
            algorithm: KeyAlgorithm::Rsa { bits: 3072 },
            ..Keypair::sample(1, "u", "k")
        };
        let json = serde_json::to_value(&keypair).expect("serialize");
        assert_eq!(json["key_type"], "x509");
        assert_eq!(json["algorithm"], "RSA_3072");
        let back: Keypair = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, keypair);
    }
}
