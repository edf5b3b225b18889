//! Huawei Cloud KMS v1.0, the data-key subset kps needs (spec/kms-huawei.md §1, §3, §4, §6): `list-keys` and
//! `describe-key` to resolve key references, `create-datakey`, `encrypt-datakey` and `decrypt-datakey` for
//! data keys. Requests are JSON POSTs signed with SDK-HMAC-SHA256 (`crate::signing`).
//!
//! Transport rules that must stay true: at most 3 attempts, retried only on connection errors, timeouts,
//! HTTP 429, 5xx and KMS.0101/0102, each attempt re-signed; 10 s per attempt and 25 s for the whole call,
//! backoff included. Request and response bodies are never logged, and error details carry only the action,
//! the attempt count and the upstream error code.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::cache::{DEFAULT_CAPACITY, DEFAULT_TTL, KeyCache, Listing, MISS_TTL};
use super::credentials::KmsCredentials;
use super::stats::KmsCallStats;
use super::transport::{Failure, FailureKind, Transport, plausible_code};
use super::{DATA_KEY_LEN, DataKey, KeyRef, KmsConfigError, KmsError, ResolvedKey, UsableKey};
use crate::signing::{self, Credentials, SignedRequest};
use crate::tls::CaBundle;

/// The only state in which a key can make or unwrap data keys.
const STATE_ENABLED: &str = "2";
const STATE_DISABLED: &str = "3";
/// The only key spec kps accepts.
const SPEC_AES_256: &str = "AES_256";
const CONTENT_TYPE: &str = "application/json;charset=UTF-8";
/// Responses are small JSON documents; anything larger is not a KMS answer.
const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// list-keys page size, and the most pages one alias listing reads (§3: 1,000 keys; an account with more is
/// better named by `kms_key_id`).
const LIST_PAGE_SIZE: &str = "100";
pub const MAX_LIST_PAGES: usize = 10;

/// What the Huawei client is built from (`kms.*`, interface.md).
#[derive(Debug)]
pub struct HuaweiSettings {
    /// Base URL; default `https://kms.<region>.myhuaweicloud.com`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub project_id: String,
    pub credentials: Credentials,
    pub transport: Transport,
}

pub struct HuaweiKms {
    http: reqwest::Client,
    /// `<endpoint path>/v1.0/<project_id>/kms/`, to which the action name is appended.
    base: Url,
    /// The `Host` header, exactly as sent (and signed): `host` on the scheme's default port, else `host:port`.
    host: String,
    project_id: String,
    credentials: Credentials,
    /// Set when credentials come from files: they replace `credentials` and follow the files' changes.
    following: Option<Arc<KmsCredentials>>,
    transport: Transport,
    cache: KeyCache,
    stats: KmsCallStats,
}

impl std::fmt::Debug for HuaweiKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HuaweiKms")
            .field("base", &self.base.as_str())
            .field("project_id", &self.project_id)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl HuaweiKms {
    pub fn new(settings: HuaweiSettings) -> Result<Self, KmsConfigError> {
        Self::new_trusting(settings, None)
    }

    /// [`HuaweiKms::new`] whose HTTPS trusts exactly `roots` (`tls.ca_file`) when given, else the system's roots.
    pub fn new_trusting(settings: HuaweiSettings, roots: Option<&CaBundle>) -> Result<Self, KmsConfigError> {
        let HuaweiSettings { endpoint, region, project_id, credentials, transport } = settings;
        if project_id.is_empty() || project_id.len() > 64 || !project_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KmsConfigError::Invalid {
                name: "kms.project_id",
                message: "expected 1-64 letters or digits".into(),
            });
        }
        let endpoint = match (endpoint, region) {
            (Some(endpoint), _) => endpoint,
            (None, Some(region)) => format!("https://kms.{region}.myhuaweicloud.com"),
            (None, None) => return Err(KmsConfigError::Missing("kms.endpoint or kms.region")),
        };
        let invalid = |message: &str| KmsConfigError::Invalid { name: "kms.endpoint", message: message.into() };
        let mut base = Url::parse(&endpoint).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.query().is_some() || !base.username().is_empty() {
            return Err(invalid("expected an http:// or https:// URL without query or credentials"));
        }
        let host_name = base.host_str().ok_or_else(|| invalid("no host"))?;
        let host = match base.port() {
            Some(port) => format!("{host_name}:{port}"),
            None => host_name.to_owned(),
        };
        let path = format!("{}/v1.0/{project_id}/kms/", base.path().trim_end_matches('/'));
        base.set_path(&path);
        let builder = reqwest::Client::builder()
            .connect_timeout(transport.connect_timeout)
            .redirect(reqwest::redirect::Policy::none());
        let http = crate::tls::trusting(builder, roots)
            .map_err(|e| KmsConfigError::Http(e.to_string()))?
            .build()
            .map_err(|e| KmsConfigError::Http(e.to_string()))?;
        Ok(Self {
            http,
            base,
            host,
            project_id,
            credentials,
            following: None,
            transport,
            cache: KeyCache::new(DEFAULT_TTL, MISS_TTL, DEFAULT_CAPACITY),
            stats: KmsCallStats::new(super::stats::HUAWEI_OPERATIONS),
        })
    }

    /// Signs with the credentials of `source` as they are at each call (rotated temporary credentials).
    #[must_use]
    pub fn following(mut self, source: Arc<KmsCredentials>) -> Self {
        self.following = Some(source);
        self
    }

    /// Replaces the resolution cache (tests shorten the TTLs).
    #[must_use]
    pub fn with_cache(mut self, ttl: Duration, miss_ttl: Duration, capacity: u64) -> Self {
        self.cache = KeyCache::new(ttl, miss_ttl, capacity);
        self
    }

    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// Key resolutions answered from the cache and made anew (`GET /metrics`).
    pub fn cache_counts(&self) -> &crate::metrics::CacheCounts {
        self.cache.counts()
    }

    /// Calls and failures by operation (`GET /metrics`).
    pub fn call_stats(&self) -> &KmsCallStats {
        &self.stats
    }

    /// Cached, else (once for concurrent lookups) list-keys for an alias or describe-key for an id; misses
    /// are remembered for 10 s (`cache`). Then the state and spec checks.
    pub async fn resolve(&self, key: &KeyRef) -> Result<ResolvedKey, KmsError> {
        let found = match key {
            KeyRef::Alias(alias) => self.cache.resolve_alias(alias, || self.list_keys_until(alias)).await?,
            KeyRef::Id(key_id) => self.cache.get_or_resolve(key, || self.describe_key(key_id)).await?,
        };
        found.check_usable(key.as_str(), &USABLE)?;
        Ok(found)
    }

    /// Pages through list-keys until an entry's alias equals `alias` exactly, the last page, or
    /// [`MAX_LIST_PAGES`] pages; every key seen is returned (they are all cached).
    async fn list_keys_until(&self, alias: &str) -> Result<Listing, KmsError> {
        const ACTION: &str = "list-keys";
        let malformed = || Failure::unusable(ACTION).into_error(alias);
        let mut listing = Listing::default();
        let mut marker: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let body = match &marker {
                None => json!({"limit": LIST_PAGE_SIZE, "key_spec": "ALL"}),
                Some(marker) => json!({"limit": LIST_PAGE_SIZE, "marker": marker, "key_spec": "ALL"}),
            };
            let page: ListKeysResponse =
                self.call(ACTION, &body_bytes(&body)).await.map_err(|f| f.into_error(alias))?;
            if page.key_details.iter().any(|key| key.key_id.is_empty()) {
                return Err(malformed());
            }
            let matched = page.key_details.iter().any(|key| key.key_alias == alias);
            listing.keys.extend(page.key_details.into_iter().map(ResolvedKey::from));
            if matched {
                return Ok(listing);
            }
            if page.truncated.as_deref() != Some("true") {
                listing.complete = true;
                return Ok(listing);
            }
            // More pages without a marker to reach them: not an answer kps can use, and never "not found".
            marker = Some(page.next_marker.filter(|next| !next.is_empty()).ok_or_else(malformed)?);
        }
        tracing::warn!(
            pages = MAX_LIST_PAGES,
            "list-keys has more keys than one alias listing reads; aliases past them are reported as not found: \
             name such a KMS key by kms_key_id"
        );
        listing.complete = true;
        Ok(listing)
    }

    async fn describe_key(&self, key_id: &str) -> Result<ResolvedKey, KmsError> {
        const ACTION: &str = "describe-key";
        let body = body_bytes(&json!({"key_id": key_id}));
        let answer: DescribeKeyResponse = self.call(ACTION, &body).await.map_err(|f| f.into_error(key_id))?;
        if answer.key_info.key_id.is_empty() {
            return Err(Failure::unusable(ACTION).into_error(key_id));
        }
        Ok(answer.key_info.into())
    }

    pub async fn generate_data_key(&self, key_id: &str) -> Result<DataKey, KmsError> {
        const ACTION: &str = "create-datakey";
        let body = body_bytes(&json!({"key_id": key_id, "datakey_length": "256"}));
        let answer: CreateDatakeyResponse = self.data_key_call(ACTION, key_id, &body).await?;
        let mut plaintext = Zeroizing::new([0u8; DATA_KEY_LEN]);
        if hex::decode_to_slice(answer.plain_text.as_bytes(), plaintext.as_mut()).is_err()
            || answer.cipher_text.is_empty()
        {
            return Err(Failure::unusable(ACTION).into_error(key_id));
        }
        Ok(DataKey::new(key_id.to_owned(), plaintext, answer.cipher_text))
    }

    pub async fn decrypt_data_key(
        &self,
        key_id: &str,
        cipher_text: &str,
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
        const ACTION: &str = "decrypt-datakey";
        let body = body_bytes(&json!({
            "key_id": key_id,
            "cipher_text": cipher_text,
            "datakey_cipher_length": DATA_KEY_LEN.to_string(),
        }));
        let answer: DecryptDatakeyResponse = self.data_key_call(ACTION, key_id, &body).await?;
        let mut plaintext = Zeroizing::new([0u8; DATA_KEY_LEN]);
        let undecryptable = |detail: &str| KmsError::Undecryptable { detail: format!("{ACTION} answered {detail}") };
        if hex::decode_to_slice(answer.data_key.as_bytes(), plaintext.as_mut()).is_err() {
            return Err(undecryptable("a data key that is not 32 bytes of hex"));
        }
        if answer.datakey_length.as_deref().is_some_and(|len| len != DATA_KEY_LEN.to_string()) {
            return Err(undecryptable("a wrong datakey_length"));
        }
        let digest = hex::decode(answer.datakey_dgst.as_bytes()).unwrap_or_default();
        if digest[..] != Sha256::digest(plaintext.as_ref())[..] {
            return Err(undecryptable("a data key that fails its digest check"));
        }
        Ok(plaintext)
    }

    pub async fn encrypt_data_key(&self, key_id: &str, plaintext: &[u8; DATA_KEY_LEN]) -> Result<String, KmsError> {
        const ACTION: &str = "encrypt-datakey";
        // plain_text = hex(DEK) ‖ hex(SHA-256(DEK)) (§4.3), written straight into a zeroized buffer (a `String`
        // built by `hex::encode` and grown by `push_str` would leave copies of the DEK in freed memory).
        let mut hex_text = Zeroizing::new([0u8; 4 * DATA_KEY_LEN]);
        let (dek_hex, digest_hex) = hex_text.split_at_mut(2 * DATA_KEY_LEN);
        // Each half is exactly twice its input's length and hex is ASCII: neither step can fail (were it to, the
        // KMS would refuse the empty plain_text).
        let plain_text = hex::encode_to_slice(plaintext, dek_hex)
            .and_then(|()| hex::encode_to_slice(Sha256::digest(plaintext), digest_hex))
            .ok()
            .and_then(|()| std::str::from_utf8(hex_text.as_ref()).ok())
            .unwrap_or_default();
        let length = DATA_KEY_LEN.to_string();
        let body = body_bytes(&EncryptDatakeyRequest { key_id, plain_text, datakey_plain_length: &length });
        let answer: EncryptDatakeyResponse = self.data_key_call(ACTION, key_id, &body).await?;
        if answer.cipher_text.is_empty() {
            return Err(Failure::unusable(ACTION).into_error(key_id));
        }
        Ok(answer.cipher_text)
    }

    /// A data-key call: an answer saying the key is gone, disabled or pending deletion also evicts the
    /// cached resolutions of that key (§3 step 7).
    async fn data_key_call<T: DeserializeOwned>(
        &self,
        action: &'static str,
        key_id: &str,
        body: &[u8],
    ) -> Result<T, KmsError> {
        match self.call(action, body).await {
            Ok(answer) => Ok(answer),
            Err(failure) => Err(self.cache.data_key_error(key_id, failure).await),
        }
    }

    /// One KMS call under the transport rules, counted in `stats`.
    async fn call<T: DeserializeOwned>(&self, action: &'static str, body: &[u8]) -> Result<T, Failure> {
        // `bytes` is zeroized on drop: create-datakey and decrypt-datakey answers hold a plaintext data key.
        let started = std::time::Instant::now();
        let result = self
            .transport
            .run(action, || self.attempt(action, body))
            .await
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|_| Failure::unusable(action)));
        self.stats.record(action, result.is_ok(), started.elapsed());
        result
    }

    /// One signed attempt: the 2xx body, or why it failed.
    async fn attempt(&self, action: &str, body: &[u8]) -> Result<Zeroizing<Vec<u8>>, FailureKind> {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{action}", self.base.path()));
        let current = self.following.as_ref().map(|source| source.current());
        let credentials = current.as_deref().unwrap_or(&self.credentials);
        let mut headers = vec![
            ("Content-Type".to_owned(), CONTENT_TYPE.to_owned()),
            ("Host".to_owned(), self.host.clone()),
            ("X-Project-Id".to_owned(), self.project_id.clone()),
        ];
        // Temporary credentials: the token is added before signing, so it is a signed header (§2.1 step 7).
        if let Some(token) = &credentials.security_token {
            headers.push((signing::SECURITY_TOKEN_HEADER.to_owned(), token.expose_secret().to_owned()));
        }
        let request = SignedRequest { method: "POST", path: url.path(), query: "", headers: &headers, body };
        let signature = signing::sign(&request, credentials, time::OffsetDateTime::now_utc());
        let mut builder = self.http.post(url.clone());
        for (name, value) in &headers {
            let mut value = reqwest::header::HeaderValue::from_str(value).map_err(|_| FailureKind::UnusableBody)?;
            // Kept out of any debug output of the HTTP client.
            value.set_sensitive(name == signing::SECURITY_TOKEN_HEADER);
            builder = builder.header(name, value);
        }
        let response = builder
            .header(signing::DATE_HEADER, signature.sdk_date)
            .header("Authorization", signature.authorization)
            // The HTTP client owns the body until it is written; its copy is zeroized when dropped (an
            // encrypt-datakey body holds a data key).
            .body(bytes::Bytes::from_owner(Zeroizing::new(body.to_vec())))
            .send()
            .await
            .map_err(|e| if e.is_timeout() { FailureKind::Timeout } else { FailureKind::Connection })?;
        let status = response.status().as_u16();
        let bytes = read_limited(response).await?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        Err(FailureKind::Status { status, code: error_code(&bytes) })
    }
}

/// The response body, at most [`MAX_RESPONSE_BYTES`], in a buffer that is zeroized when dropped and never
/// leaves an unzeroized copy behind when it grows. (The HTTP client's own transient read buffers are outside
/// kps's control.)
async fn read_limited(mut response: reqwest::Response) -> Result<Zeroizing<Vec<u8>>, FailureKind> {
    let expected = response.content_length().and_then(|len| usize::try_from(len).ok()).unwrap_or(4096);
    let mut bytes = Zeroizing::new(Vec::with_capacity(expected.min(MAX_RESPONSE_BYTES)));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| if e.is_timeout() { FailureKind::Timeout } else { FailureKind::Connection })?
    {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(FailureKind::UnusableBody);
        }
        append_zeroizing(&mut bytes, &chunk);
    }
    Ok(bytes)
}

/// Appends `chunk` to `buffer`. When the buffer must grow, its contents move to a new allocation and the old
/// one is zeroized as it is dropped; `Vec`'s own growth would free the old allocation as it is.
fn append_zeroizing(buffer: &mut Zeroizing<Vec<u8>>, chunk: &[u8]) {
    let needed = buffer.len() + chunk.len();
    if needed > buffer.capacity() {
        let mut grown = Zeroizing::new(Vec::with_capacity(needed.max(2 * buffer.capacity())));
        grown.extend_from_slice(buffer);
        *buffer = grown;
    }
    buffer.extend_from_slice(chunk);
}

/// A request body in a zeroized buffer of exactly its size (serialized once to measure, once to write, so
/// the buffer never grows and leaves a copy behind).
fn body_bytes(body: &impl serde::Serialize) -> Zeroizing<Vec<u8>> {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serializing these request bodies (strings and `Value`s) cannot fail; an empty body would be refused by
    // the KMS, never sent with a secret.
    if serde_json::to_writer(&mut counter, body).is_err() {
        return Zeroizing::new(Vec::new());
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(counter.0));
    if serde_json::to_writer(&mut *bytes, body).is_err() {
        bytes.clear();
    }
    bytes
}

/// What this provider calls a usable key.
const USABLE: UsableKey = UsableKey { enabled: STATE_ENABLED, disabled: STATE_DISABLED, spec: SPEC_AES_256 };

/// `error.error_code` (or a top-level `error_code`) of a Huawei error body, if it looks like a code. Only
/// the code is ever reported; the upstream message text is not.
fn error_code(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    plausible_code(value.pointer("/error/error_code").or_else(|| value.get("error_code"))?.as_str()?)
}

/// The fields kps reads of a KMS key. All are required: a 200 answer without them is malformed (KPS.1801),
/// never a missing key.
#[derive(Deserialize)]
struct KeyDetails {
    key_id: String,
    key_alias: String,
    key_state: String,
    key_spec: String,
}

impl From<KeyDetails> for ResolvedKey {
    fn from(details: KeyDetails) -> Self {
        Self {
            key_id: details.key_id,
            alias: Some(details.key_alias).filter(|a| !a.is_empty()),
            state: details.key_state,
            spec: details.key_spec,
        }
    }
}

#[derive(Deserialize)]
struct ListKeysResponse {
    key_details: Vec<KeyDetails>,
    #[serde(default)]
    next_marker: Option<String>,
    #[serde(default)]
    truncated: Option<String>,
}

#[derive(Deserialize)]
struct DescribeKeyResponse {
    key_info: KeyDetails,
}

#[derive(Deserialize)]
struct CreateDatakeyResponse {
    plain_text: Zeroizing<String>,
    cipher_text: String,
}

#[derive(Deserialize)]
struct DecryptDatakeyResponse {
    data_key: Zeroizing<String>,
    #[serde(default)]
    datakey_length: Option<String>,
    datakey_dgst: String,
}

#[derive(serde::Serialize)]
struct EncryptDatakeyRequest<'a> {
    key_id: &'a str,
    plain_text: &'a str,
    datakey_plain_length: &'a str,
}

#[derive(Deserialize)]
struct EncryptDatakeyResponse {
    cipher_text: String,
}

#[cfg(test)]
mod tests;
