//! AWS KMS (spec/kms-huawei.md §7) over the official SDK (`aws-sdk-kms`, SigV4): `DescribeKey` resolves a
//! key reference and reports its state and spec; `GenerateDataKey`, `Encrypt` and `Decrypt` make, rewrap
//! and unwrap data keys, always with the record's EncryptionContext (`kps:project`, `kps:user`, `kps:name`,
//! `kps:record`), so AWS itself refuses to unwrap a data key for another record.
//!
//! The SDK's own retries are off: the shared transport rules (`transport.rs`: 3 attempts, 10 s per attempt,
//! 25 s per call, re-signed each time) apply to AWS exactly as to Huawei. TLS is rustls with ring, the
//! crypto provider of the rest of kps. The wrapped data key is stored as base64 of `CiphertextBlob`.
//! Plaintext data keys are moved out of the SDK's output into `Zeroizing` buffers; the SDK's transient
//! response buffers are outside kps's control.

use std::sync::Arc;

use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, IdentityCache, ProvideCredentials, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use super::cache::{DEFAULT_CAPACITY, DEFAULT_TTL, KeyCache, MISS_TTL};
use super::credentials::KmsCredentials;
use super::stats::KmsCallStats;
use super::transport::{Failure, FailureKind, Transport, plausible_code};
use super::{DATA_KEY_LEN, DataKey, EncryptionContext, KeyRef, KmsConfigError, KmsError, ResolvedKey, UsableKey};
use crate::tls::CaBundle;

/// The only state in which a key can make or unwrap data keys, and the one disabled state (§7).
const STATE_ENABLED: &str = "Enabled";
const STATE_DISABLED: &str = "Disabled";
/// The only key spec kps accepts: AES-256-GCM symmetric keys.
const SPEC_SYMMETRIC: &str = "SYMMETRIC_DEFAULT";

/// What the AWS client is built from (`kms.*`, interface.md).
pub struct AwsSettings {
    /// Endpoint override (LocalStack, moto, a VPC endpoint); default: the SDK's regional endpoint.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Zeroizing<String>,
    pub secret_access_key: Zeroizing<String>,
    /// Temporary credentials (STS): the session token, sent as `x-amz-security-token`.
    pub session_token: Option<Zeroizing<String>>,
    pub transport: Transport,
}

pub struct AwsKms {
    client: aws_sdk_kms::Client,
    transport: Transport,
    cache: KeyCache,
    stats: KmsCallStats,
}

impl std::fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKms").field("transport", &self.transport).finish_non_exhaustive()
    }
}

impl AwsKms {
    pub fn new(settings: AwsSettings) -> Result<Self, KmsConfigError> {
        Self::new_trusting(settings, None)
    }

    /// [`AwsKms::new`] whose HTTPS trusts exactly `roots` (`tls.ca_file`) when given, else the system's roots.
    pub fn new_trusting(settings: AwsSettings, roots: Option<&CaBundle>) -> Result<Self, KmsConfigError> {
        let AwsSettings { endpoint, region, access_key_id, secret_access_key, session_token, transport } = settings;
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(KmsConfigError::Invalid { name: "kms.region", message: "expected e.g. eu-west-1".into() });
        }
        // `Credentials` keeps the secret in a zeroizing buffer of its own and redacts it in `Debug`.
        let credentials = Credentials::new(
            access_key_id.as_str(),
            secret_access_key.as_str(),
            session_token.as_deref().map(ToOwned::to_owned),
            None,
            "kps-config",
        );
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .tls_context(tls_context(roots)?)
            .build_https();
        let mut config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(credentials)
            .http_client(http)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(transport.connect_timeout)
                    .operation_attempt_timeout(transport.attempt_timeout)
                    .build(),
            );
        if let Some(endpoint) = endpoint {
            let url = reqwest::Url::parse(&endpoint)
                .map_err(|e| KmsConfigError::Invalid { name: "kms.endpoint", message: e.to_string() })?;
            if !matches!(url.scheme(), "http" | "https") || url.query().is_some() || !url.username().is_empty() {
                return Err(KmsConfigError::Invalid {
                    name: "kms.endpoint",
                    message: "expected an http:// or https:// URL without query or credentials".into(),
                });
            }
            config = config.endpoint_url(endpoint);
        }
        Ok(Self {
            client: aws_sdk_kms::Client::from_conf(config.build()),
            transport,
            cache: KeyCache::new(DEFAULT_TTL, MISS_TTL, DEFAULT_CAPACITY),
            stats: KmsCallStats::new(super::stats::AWS_OPERATIONS),
        })
    }

    /// Signs with the credentials of `source` as they are at each call (rotated temporary credentials): the
    /// SDK asks for them per request (its identity cache off), and `source` looks at the files each time.
    #[must_use]
    pub fn following(self, source: Arc<KmsCredentials>) -> Self {
        let config = self
            .client
            .config()
            .to_builder()
            .credentials_provider(FollowedCredentials(source))
            .identity_cache(IdentityCache::no_cache())
            .build();
        Self { client: aws_sdk_kms::Client::from_conf(config), ..self }
    }

    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// Key resolutions answered from the cache and made anew (`GET /metrics`).
    pub fn cache_counts(&self) -> &crate::metrics::CacheCounts {
        self.cache.counts()
    }

    pub fn call_stats(&self) -> &KmsCallStats {
        &self.stats
    }

    /// DescribeKey on the id or alias (no list call is needed at AWS), cached; then the state and spec checks.
    pub async fn resolve(&self, key: &KeyRef) -> Result<ResolvedKey, KmsError> {
        let found = self.cache.get_or_resolve(key, || self.describe_key(key)).await?;
        found.check_usable(key.as_str(), &USABLE)?;
        Ok(found)
    }

    async fn describe_key(&self, key: &KeyRef) -> Result<ResolvedKey, KmsError> {
        const OPERATION: &str = "DescribeKey";
        let key_id = aws_key_id(key);
        let output = self
            .call(OPERATION, || async {
                self.client.describe_key().key_id(key_id.as_str()).send().await.map_err(classify)
            })
            .await
            .map_err(|failure| failure.into_error(key.as_str()))?;
        // A 200 answer without the id, state or spec is malformed (KPS.1801), never an unusable key.
        let malformed = || Failure::unusable(OPERATION).into_error(key.as_str());
        let metadata = output.key_metadata().ok_or_else(malformed)?;
        let (Some(state), Some(spec)) = (metadata.key_state(), metadata.key_spec()) else {
            return Err(malformed());
        };
        if metadata.key_id().is_empty() {
            return Err(malformed());
        }
        Ok(ResolvedKey {
            key_id: metadata.key_id().to_owned(),
            alias: None,
            state: state.as_str().to_owned(),
            spec: spec.as_str().to_owned(),
        })
    }

    /// Exactly one GenerateDataKey (AES_256) under `key_id`, bound to `record`.
    pub async fn generate_data_key(&self, key_id: &str, context: &EncryptionContext) -> Result<DataKey, KmsError> {
        const OPERATION: &str = "GenerateDataKey";
        let mut output = self
            .data_key_call(OPERATION, key_id, || async {
                let request = self.client.generate_data_key().key_id(key_id).key_spec(DataKeySpec::Aes256);
                send_bound!(request, context)
            })
            .await?;
        let plaintext = output.plaintext.take().map(|blob| Zeroizing::new(blob.into_inner()));
        let unusable = || Failure::unusable(OPERATION).into_error(key_id);
        let plaintext = plaintext.and_then(|bytes| data_key_array(&bytes)).ok_or_else(unusable)?;
        let wrapped = output.ciphertext_blob.as_ref().filter(|b| !b.as_ref().is_empty()).ok_or_else(unusable)?;
        Ok(DataKey::new(key_id.to_owned(), plaintext, BASE64.encode(wrapped.as_ref())))
    }

    /// Decrypt of a stored data key, pinned to the stored key id and the record's EncryptionContext.
    pub async fn decrypt_data_key(
        &self,
        key_id: &str,
        cipher_text: &str,
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
        const OPERATION: &str = "Decrypt";
        let undecryptable = |detail: &str| KmsError::Undecryptable { detail: format!("{OPERATION}: {detail}") };
        let blob = BASE64.decode(cipher_text).map_err(|_| undecryptable("stored data key is not base64"))?;
        let mut output = self
            .data_key_call(OPERATION, key_id, || async {
                let request = self.client.decrypt().key_id(key_id).ciphertext_blob(Blob::new(blob.clone()));
                send_bound!(request, context)
            })
            .await?;
        let plaintext = output.plaintext.take().map(|blob| Zeroizing::new(blob.into_inner()));
        plaintext
            .and_then(|bytes| data_key_array(&bytes))
            .ok_or_else(|| undecryptable("answered a data key that is not 32 bytes"))
    }

    /// Encrypt of an existing data key under `key_id` (`kps rewrap` onto an AWS key), bound to `record`.
    pub async fn encrypt_data_key(
        &self,
        key_id: &str,
        plaintext: &[u8; DATA_KEY_LEN],
        context: &EncryptionContext,
    ) -> Result<String, KmsError> {
        const OPERATION: &str = "Encrypt";
        let output = self
            .data_key_call(OPERATION, key_id, || async {
                // The SDK takes ownership of a plain Vec; it lives only as long as the request.
                let request = self.client.encrypt().key_id(key_id).plaintext(Blob::new(plaintext.to_vec()));
                send_bound!(request, context)
            })
            .await?;
        let wrapped = output
            .ciphertext_blob()
            .filter(|b| !b.as_ref().is_empty())
            .ok_or_else(|| Failure::unusable(OPERATION).into_error(key_id))?;
        Ok(BASE64.encode(wrapped.as_ref()))
    }

    /// A data-key call: an answer saying the key is gone, disabled or unusable also evicts the cached
    /// resolutions of that key, as for Huawei (§3 step 7).
    async fn data_key_call<T, F, Fut>(&self, operation: &'static str, key_id: &str, attempt: F) -> Result<T, KmsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, FailureKind>>,
    {
        match self.call(operation, attempt).await {
            Ok(answer) => Ok(answer),
            Err(failure) => Err(self.cache.data_key_error(key_id, failure).await),
        }
    }

    async fn call<T, F, Fut>(&self, operation: &'static str, attempt: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, FailureKind>>,
    {
        let started = std::time::Instant::now();
        let result = self.transport.run(operation, attempt).await;
        self.stats.record(operation, result.is_ok(), started.elapsed());
        result
    }
}

/// The SDK's view of [`KmsCredentials`].
#[derive(Debug)]
struct FollowedCredentials(Arc<KmsCredentials>);

impl ProvideCredentials for FollowedCredentials {
    fn provide_credentials<'a>(&'a self) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let current = self.0.current();
        let token = current.security_token.as_ref().map(|token| token.expose_secret().to_owned());
        let credentials = Credentials::new(
            current.access_key.as_str(),
            current.secret_key.expose_secret(),
            token,
            None,
            "kps-config-files",
        );
        aws_credential_types::provider::future::ProvideCredentials::ready(Ok(credentials))
    }
}

/// The SDK's TLS trust: exactly `roots` when `tls.ca_file` is set (the system's roots off), else the system's.
fn tls_context(roots: Option<&CaBundle>) -> Result<tls::TlsContext, KmsConfigError> {
    let trust_store = match roots {
        Some(roots) => tls::TrustStore::empty().with_native_roots(false).with_pem_certificate(roots.pem()),
        None => tls::TrustStore::default(),
    };
    tls::TlsContext::builder().with_trust_store(trust_store).build().map_err(|e| KmsConfigError::Http(e.to_string()))
}

/// How a key reference is sent (§7): an id or ARN as given, `alias/...` as given, a bare alias prefixed.
fn aws_key_id(key: &KeyRef) -> String {
    match key {
        KeyRef::Id(id) => id.clone(),
        KeyRef::Alias(name) if name.starts_with("alias/") || name.starts_with("arn:") => name.clone(),
        KeyRef::Alias(name) => format!("alias/{name}"),
    }
}

/// Sends a data-key request builder (GenerateDataKey, Decrypt, Encrypt: three SDK types with the same
/// methods) bound to the record's EncryptionContext, with the error classified for the retry loop.
macro_rules! send_bound {
    ($request:expr, $context:expr) => {
        $request.set_encryption_context(Some(encryption_context($context))).send().await.map_err(classify)
    };
}
use send_bound;

/// The EncryptionContext of §7 as the SDK takes it.
fn encryption_context(context: &EncryptionContext) -> std::collections::HashMap<String, String> {
    context.pairs().iter().cloned().collect()
}

fn data_key_array(bytes: &[u8]) -> Option<Zeroizing<[u8; DATA_KEY_LEN]>> {
    let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
    (bytes.len() == DATA_KEY_LEN).then(|| {
        key.copy_from_slice(bytes);
        key
    })
}

/// An SDK error as a transport failure: timeouts and dispatch failures are retryable, service errors carry
/// their HTTP status and `__type`.
fn classify<E: ProvideErrorMetadata, R>(error: SdkError<E, R>) -> FailureKind
where
    R: HasStatus,
{
    match &error {
        SdkError::TimeoutError(_) => FailureKind::Timeout,
        SdkError::DispatchFailure(failure) if failure.is_timeout() => FailureKind::Timeout,
        SdkError::DispatchFailure(_) => FailureKind::Connection,
        SdkError::ServiceError(service) => {
            FailureKind::Status { status: service.raw().status_code(), code: error.code().and_then(plausible_code) }
        }
        SdkError::ResponseError(response) => FailureKind::Status { status: response.raw().status_code(), code: None },
        // ConstructionFailure and future variants: kps built a request the SDK refused.
        _ => FailureKind::UnusableBody,
    }
}

/// The HTTP status of the SDK's raw response type.
trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_kms::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// What this provider calls a usable key.
const USABLE: UsableKey = UsableKey { enabled: STATE_ENABLED, disabled: STATE_DISABLED, spec: SPEC_SYMMETRIC };

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_references_are_sent_as_section_7_says() {
        let id = "0b5e7a4c-2f1d-4e8a-9c3b-6d2f1a0e5b7c";
        assert_eq!(aws_key_id(&KeyRef::Id(id.into())), id);
        assert_eq!(aws_key_id(&KeyRef::Alias("kps-escrow".into())), "alias/kps-escrow");
        assert_eq!(aws_key_id(&KeyRef::Alias("alias/kps-escrow".into())), "alias/kps-escrow");
        let arn = "arn:aws:kms:eu-west-1:111122223333:alias/kps-escrow";
        assert_eq!(aws_key_id(&KeyRef::Alias(arn.into())), arn);
    }

    #[test]
    fn only_enabled_symmetric_keys_are_usable() {
        let key = |state: &str, spec: &str| ResolvedKey {
            key_id: "k".into(),
            alias: None,
            state: state.into(),
            spec: spec.into(),
        };
        let key_check = |found: &ResolvedKey| found.check_usable("k", &USABLE);
        assert!(key_check(&key("Enabled", "SYMMETRIC_DEFAULT")).is_ok());
        assert_eq!(key_check(&key("Disabled", "SYMMETRIC_DEFAULT")).expect_err("refused").code(), "KPS.1803");
        assert_eq!(key_check(&key("PendingDeletion", "SYMMETRIC_DEFAULT")).expect_err("refused").code(), "KPS.1804");
        assert_eq!(key_check(&key("Enabled", "RSA_2048")).expect_err("refused").code(), "KPS.1401");
    }

    #[test]
    fn config_is_checked_without_contacting_aws() {
        let settings = |endpoint: Option<&str>, region: &str| AwsSettings {
            endpoint: endpoint.map(str::to_owned),
            region: region.into(),
            access_key_id: Zeroizing::new("AKID".into()),
            secret_access_key: Zeroizing::new("SECRET".into()),
            session_token: None,
            transport: Transport::default(),
        };
        assert!(AwsKms::new(settings(None, "eu-west-1")).is_ok());
        assert!(AwsKms::new(settings(Some("http://127.0.0.1:5000"), "us-east-1")).is_ok());
        assert!(AwsKms::new(settings(Some("ftp://x"), "us-east-1")).is_err());
        assert!(AwsKms::new(settings(None, "eu west")).is_err());
    }
}
