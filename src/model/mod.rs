//! The domain's types, shared by every layer (design.md): key pairs and their kinds, scopes and algorithms,
//! and private keys sealed or in plaintext. No I/O and no layer's rules: the edge, the service, custody and
//! the store all speak these types and nothing of each other's.

mod keypair;
mod sealed;

pub use keypair::{Algorithm, KeyAlgorithm, KeyType, Keypair, KeypairSummary, ListFields, Scope};
pub use sealed::{EncryptorKind, PrivateKeyText, SealedKey};
