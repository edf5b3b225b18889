//! The command line of `kms-mock` and what it turns into: the settings a mock serves ([`MockConfig`]) and
//! the errors that stop it from starting ([`MockError`]). No I/O here.

use std::path::PathBuf;

use secrecy::SecretString;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9600";
pub const DEFAULT_PROJECT_ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// Command line of `kms-mock` (flag > env > default, §5.1). No `Debug`: it holds the SK.
#[derive(Clone, clap::Parser)]
#[command(name = "kms-mock", version, about = "Huawei Cloud KMS v1.0 data-key API subset for development and tests")]
pub struct MockArgs {
    /// Bind address.
    #[arg(long, env = "KMS_MOCK_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// The only project served; another project in the path answers 403 KMS.0306.
    #[arg(long = "project-id", env = "KMS_MOCK_PROJECT_ID", default_value = DEFAULT_PROJECT_ID)]
    pub project_id: String,
    /// Accepted access key; without --ak/--sk signatures are not checked.
    #[arg(long, env = "KMS_MOCK_AK")]
    pub ak: Option<String>,
    /// Accepted secret key.
    #[arg(long, env = "KMS_MOCK_SK", hide_env_values = true)]
    pub sk: Option<String>,
    /// Also accept `X-Auth-Token: TOKEN` instead of a signature.
    #[arg(long, env = "KMS_MOCK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Temporary credentials: signed requests must also carry `X-Security-Token: TOKEN` as a signed header
    /// (spec/kms-huawei.md §2.1 step 7); without it, or with another token, they are refused (401 KMS.0302).
    #[arg(long = "security-token", env = "KMS_MOCK_SECURITY_TOKEN", hide_env_values = true)]
    pub security_token: Option<String>,
    /// Pre-create an enabled AES_256 key (repeatable); random id unless given.
    #[arg(long = "key", value_name = "ALIAS[=UUID]")]
    pub keys: Vec<String>,
    /// Read-only JSON array of keys to pre-create: [{"id", "alias", "state", "spec", "material_hex"?}].
    #[arg(long, env = "KMS_MOCK_SEED", value_name = "FILE")]
    pub seed: Option<PathBuf>,
    /// JSON file holding the keys: loaded at start, rewritten atomically after each change.
    #[arg(long, env = "KMS_MOCK_STATE", value_name = "FILE")]
    pub state: Option<PathBuf>,
}

/// What a mock server serves, without the listen address.
#[derive(Clone, Default)]
pub struct MockConfig {
    pub project_id: String,
    /// Accepted AK and SK; `None` = signatures are not checked.
    pub credentials: Option<(String, SecretString)>,
    pub token: Option<SecretString>,
    /// `--security-token`: the token temporary credentials must present, signed.
    pub security_token: Option<SecretString>,
    /// `--key ALIAS[=UUID]` values.
    pub keys: Vec<String>,
    pub seed: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
}

impl TryFrom<MockArgs> for MockConfig {
    type Error = MockError;

    fn try_from(args: MockArgs) -> Result<Self, MockError> {
        let credentials = match (args.ak, args.sk) {
            (Some(ak), Some(sk)) => Some((ak, SecretString::from(sk))),
            (None, None) => None,
            _ => return Err(MockError::Config("--ak and --sk must be given together".into())),
        };
        let project_ok =
            (1..=64).contains(&args.project_id.len()) && args.project_id.bytes().all(|b| b.is_ascii_alphanumeric());
        if !project_ok {
            return Err(MockError::Config("--project-id: expected 1-64 letters or digits".into()));
        }
        Ok(Self {
            project_id: args.project_id,
            credentials,
            token: args.token.map(SecretString::from),
            security_token: args.security_token.map(SecretString::from),
            keys: args.keys,
            seed: args.seed,
            state_file: args.state,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MockError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}
