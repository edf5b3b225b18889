//! SDK-HMAC-SHA256 request signing, as Huawei Cloud's `huaweicloudsdkcore` signer does it
//! (spec/kms-huawei.md §2).
//!
//! One implementation serves both sides: the KMS client signs its requests with [`sign`], and the verifiers
//! (kps in `auth.mode = aksk`, and the `kms-mock` crate of this workspace) check them with [`verify`]. Both
//! work on a plain [`SignedRequest`] view (method, raw path, raw query, headers, body) so that neither an HTTP
//! client nor a server framework leaks in here. Secret keys are only ever held as [`SecretString`] and only
//! exposed to feed the HMAC; nothing here logs.

use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use time::{OffsetDateTime, PrimitiveDateTime, format_description::FormatItem, macros::format_description};

/// The `Authorization` scheme and the first line of the string to sign.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// Header carrying the signing time.
pub const DATE_HEADER: &str = "X-Sdk-Date";
/// Optional header that replaces the body hash when a client signs (the SDK sends `UNSIGNED-PAYLOAD` for
/// non-JSON bodies). A verifier never takes it in place of the body's own hash (§2.2 step 4).
pub const CONTENT_SHA256_HEADER: &str = "X-Sdk-Content-Sha256";
/// The `X-Sdk-Content-Sha256` value a client sends for a body it did not hash.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// How far `X-Sdk-Date` may be from the verifier's clock, either way.
pub const MAX_CLOCK_SKEW: time::Duration = time::Duration::minutes(15);
/// SHA-256 of the empty string: the payload hash of a request without a body.
pub const EMPTY_BODY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const SDK_DATE_FORMAT: &[FormatItem<'static>] = format_description!("[year][month][day]T[hour][minute][second]Z");

/// Everything of an HTTP request that the signature covers, as it is (or will be) on the wire.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// HTTP method, any case.
    pub method: &'a str,
    /// The raw (possibly percent-encoded) path, without the query.
    pub path: &'a str,
    /// The raw query string without the leading `?`; empty if none.
    pub query: &'a str,
    /// Header names (any case) and values; a name may occur more than once.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// An access key and its secret key, and for temporary credentials the security token that goes with them
/// (sent as [`SECURITY_TOKEN_HEADER`], a signed header, §2.1 step 7). `Debug` never shows the secrets.
#[derive(Clone)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: SecretString,
    pub security_token: Option<SecretString>,
}

/// The header that carries the security token of temporary credentials.
pub const SECURITY_TOKEN_HEADER: &str = "X-Security-Token";

impl Credentials {
    pub fn new(access_key: impl Into<String>, secret_key: SecretString) -> Self {
        Self { access_key: access_key.into(), secret_key, security_token: None }
    }

    /// Temporary credentials: the same keys with their security token.
    #[must_use]
    pub fn with_security_token(mut self, token: SecretString) -> Self {
        self.security_token = Some(token);
        self
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"[REDACTED]")
            .field("security_token", &self.security_token.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// The headers [`sign`] produces; add both to the request unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    /// Value of `X-Sdk-Date`.
    pub sdk_date: String,
    /// Value of `Authorization`.
    pub authorization: String,
}

/// Why a signed request was refused. The variants follow the distinctions the callers must answer with
/// different error codes (spec/kms-huawei.md §2.2: KMS.0301/0302/0303, KPS.2001/2002/2004).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no Authorization header")]
    Missing,
    #[error("malformed Authorization header")]
    Malformed,
    #[error("X-Sdk-Date missing, malformed or outside the allowed clock skew")]
    Date,
    #[error("unknown access key")]
    UnknownAccessKey,
    #[error("a signed header is absent from the request")]
    SignedHeaderAbsent,
    /// `X-Sdk-Content-Sha256` is present and is not the hash of the received body (`UNSIGNED-PAYLOAD` for a
    /// non-empty body included): the signature would not cover the body, so it is refused outright.
    #[error("X-Sdk-Content-Sha256 does not match the body")]
    PayloadHashMismatch,
    #[error("signature mismatch")]
    Mismatch,
}

/// A request whose signature verified: the access key that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key: String,
}

/// `YYYYMMDDTHHMMSSZ` in UTC.
pub fn format_sdk_date(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(SDK_DATE_FORMAT)
        // The format has only numeric components of a valid date: it cannot fail.
        .unwrap_or_default()
}

/// Parses `YYYYMMDDTHHMMSSZ` as UTC.
pub fn parse_sdk_date(text: &str) -> Option<OffsetDateTime> {
    PrimitiveDateTime::parse(text, SDK_DATE_FORMAT).ok().map(PrimitiveDateTime::assume_utc)
}

/// Signs `request` at time `now` (client side, §2.1). Every header of `request` whose name has no `_` is
/// signed, plus `X-Sdk-Date` (added here unless `request.headers` already carries it, in which case that
/// value is used). The caller must include `Host` exactly as it will be sent on the wire, and must send the
/// returned headers along with the signed ones, unchanged.
pub fn sign(request: &SignedRequest<'_>, credentials: &Credentials, now: OffsetDateTime) -> SignatureHeaders {
    let mut headers = request.headers.to_vec();
    let sdk_date = match header_values(&headers, DATE_HEADER) {
        Some(date) => date,
        None => {
            let date = format_sdk_date(now);
            headers.push((DATE_HEADER.to_owned(), date.clone()));
            date
        }
    };
    let mut signed: Vec<String> =
        headers.iter().map(|(name, _)| name.to_ascii_lowercase()).filter(|name| !name.contains('_')).collect();
    signed.sort();
    signed.dedup();
    let with_date = SignedRequest { headers: &headers, ..*request };
    // Every signed name comes from `headers`, so canonicalisation cannot miss one.
    let canonical = canonical_request(&with_date, &signed, &client_payload_hash(&with_date)).unwrap_or_default();
    let signature = hex::encode(hmac_sha256(&credentials.secret_key, &string_to_sign(&sdk_date, &canonical)));
    let authorization = format!(
        "{ALGORITHM} Access={}, SignedHeaders={}, Signature={signature}",
        credentials.access_key,
        signed.join(";")
    );
    SignatureHeaders { sdk_date, authorization }
}

/// Verifies a received request (server side, §2.2). `lookup` maps an access key to its secret key.
///
/// The payload hash is always computed here from the received body: a client's `X-Sdk-Content-Sha256` is
/// only compared with it, never used in its place, whether or not the client signed that header. Otherwise
/// one captured signature would carry any body for as long as its date is accepted.
pub fn verify<'k>(
    request: &SignedRequest<'_>,
    now: OffsetDateTime,
    lookup: impl FnOnce(&str) -> Option<&'k SecretString>,
) -> Result<Verified, VerifyError> {
    let authorization = header_values(request.headers, "authorization").ok_or(VerifyError::Missing)?;
    let parsed = parse_authorization(&authorization)?;
    if !parsed.signed_headers.iter().any(|h| h == "host") || !parsed.signed_headers.iter().any(|h| h == "x-sdk-date") {
        return Err(VerifyError::Malformed);
    }
    let sdk_date = header_values(request.headers, DATE_HEADER).ok_or(VerifyError::Date)?;
    let signed_at = parse_sdk_date(sdk_date.trim()).ok_or(VerifyError::Date)?;
    if (now - signed_at).abs() > MAX_CLOCK_SKEW {
        return Err(VerifyError::Date);
    }
    let secret_key = lookup(&parsed.access_key).ok_or(VerifyError::UnknownAccessKey)?;
    let payload_hash = received_payload_hash(request)?;
    let canonical =
        canonical_request(request, &parsed.signed_headers, &payload_hash).ok_or(VerifyError::SignedHeaderAbsent)?;
    let Ok(received) = hex::decode(&parsed.signature) else {
        return Err(VerifyError::Mismatch);
    };
    let mut mac = new_mac(secret_key);
    mac.update(string_to_sign(sdk_date.trim(), &canonical).as_bytes());
    // `verify_slice` compares in constant time.
    mac.verify_slice(&received).map_err(|_| VerifyError::Mismatch)?;
    Ok(Verified { access_key: parsed.access_key })
}

struct Authorization {
    access_key: String,
    signed_headers: Vec<String>,
    signature: String,
}

/// `SDK-HMAC-SHA256 Access=<ak>, SignedHeaders=<a;b>, Signature=<hex>`, any whitespace after the commas.
fn parse_authorization(value: &str) -> Result<Authorization, VerifyError> {
    let rest = value.trim().strip_prefix(ALGORITHM).ok_or(VerifyError::Malformed)?;
    if !rest.starts_with(char::is_whitespace) {
        return Err(VerifyError::Malformed);
    }
    let (mut access_key, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, value) = part.trim().split_once('=').ok_or(VerifyError::Malformed)?;
        let slot = match key {
            "Access" => &mut access_key,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(VerifyError::Malformed),
        };
        if slot.replace(value.to_owned()).is_some() {
            return Err(VerifyError::Malformed);
        }
    }
    let (Some(access_key), Some(signed_headers), Some(signature)) = (access_key, signed_headers, signature) else {
        return Err(VerifyError::Malformed);
    };
    if access_key.is_empty() || signed_headers.is_empty() || signature.is_empty() {
        return Err(VerifyError::Malformed);
    }
    let signed_headers = signed_headers.split(';').map(str::to_ascii_lowercase).collect();
    Ok(Authorization { access_key, signed_headers, signature })
}

/// The canonical request of §2.1 step 3 over the given (lowercase) signed header names, in that order, with
/// `payload_hash` as part 6. `None` if a signed header is absent from the request.
pub fn canonical_request(request: &SignedRequest<'_>, signed_headers: &[String], payload_hash: &str) -> Option<String> {
    let mut out = String::with_capacity(256 + request.path.len() + request.query.len());
    out.push_str(&request.method.to_ascii_uppercase());
    out.push('\n');
    out.push_str(&canonical_uri(request.path));
    out.push('\n');
    out.push_str(&canonical_query(request.query));
    out.push('\n');
    for name in signed_headers {
        let value = header_values(request.headers, name)?;
        out.push_str(name);
        out.push(':');
        out.push_str(value.trim());
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    Some(out)
}

/// Characters kept as they are: `A–Z a–z 0–9 - _ . ~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn encode(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, UNRESERVED).to_string()
}

fn canonical_uri(path: &str) -> String {
    let decoded: Vec<u8> = percent_decode_str(path).collect();
    let mut uri = decoded.split(|&b| b == b'/').map(encode).collect::<Vec<_>>().join("/");
    if !uri.ends_with('/') {
        uri.push('/');
    }
    uri
}

/// Pairs split at the first `=`, percent-decoded (`+` stays a plus), sorted by key then value, re-encoded.
/// Empty parts (`a=1&&b=2`) carry no parameter and are skipped.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            (percent_decode_str(key).collect(), percent_decode_str(value).collect())
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

/// Lowercase hex SHA-256 of `body` (the empty-body constant for an empty body).
fn body_sha256(body: &[u8]) -> String {
    if body.is_empty() { EMPTY_BODY_SHA256.to_owned() } else { hex::encode(Sha256::digest(body)) }
}

/// Part 6 as a client signs it (§2.1 step 3.6): the empty-body constant, else `X-Sdk-Content-Sha256` when
/// the client set it, else the body's hash.
fn client_payload_hash(request: &SignedRequest<'_>) -> String {
    if !request.body.is_empty()
        && let Some(value) = header_values(request.headers, CONTENT_SHA256_HEADER)
    {
        return value.trim().to_owned();
    }
    body_sha256(request.body)
}

/// Part 6 as a verifier rebuilds it (§2.2 step 4): always the hash of the received body. A
/// `X-Sdk-Content-Sha256` that says otherwise refuses the request. The one value tolerated besides the hash
/// (either case) is `UNSIGNED-PAYLOAD` on an empty body, where the client rule signs the empty-body constant
/// anyway and there is no body to substitute.
fn received_payload_hash(request: &SignedRequest<'_>) -> Result<String, VerifyError> {
    let computed = body_sha256(request.body);
    if let Some(claimed) = header_values(request.headers, CONTENT_SHA256_HEADER) {
        let claimed = claimed.trim();
        let agrees =
            claimed.eq_ignore_ascii_case(&computed) || (request.body.is_empty() && claimed == UNSIGNED_PAYLOAD);
        if !agrees {
            return Err(VerifyError::PayloadHashMismatch);
        }
    }
    Ok(computed)
}

/// All values of header `name` (case-insensitive) joined with `,`; `None` if absent.
fn header_values(headers: &[(String, String)], name: &str) -> Option<String> {
    let mut values = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let first = values.next()?;
    Some(values.fold(first.to_owned(), |mut joined, v| {
        joined.push(',');
        joined.push_str(v);
        joined
    }))
}

fn string_to_sign(sdk_date: &str, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{sdk_date}\n{}", hex::encode(Sha256::digest(canonical_request.as_bytes())))
}

fn new_mac(secret_key: &SecretString) -> Hmac<Sha256> {
    // HMAC accepts keys of any length: this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(secret_key.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

fn hmac_sha256(secret_key: &SecretString, data: &str) -> Vec<u8> {
    let mut mac = new_mac(secret_key);
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// `utf8_percent_encode` with the canonical character set, for callers building a raw query string to sign.
pub fn encode_query_component(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AK: &str = "HPUAEXAMPLEAK0000001";
    const SK: &str = "ExampleSecretKey0000000000000000000000001";
    const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    const DATE: &str = "20261123T193000Z";

    fn credentials() -> Credentials {
        Credentials::new(AK, SecretString::from(SK))
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
    }

    fn example_time() -> OffsetDateTime {
        parse_sdk_date(DATE).expect("valid date")
    }

    const BODY_1: &[u8] = br#"{"key_id":"3c1d5a0e-8f6b-4e52-9d7a-21f0c4b8e6a1","datakey_length":"256"}"#;

    fn example_1_headers() -> Vec<(String, String)> {
        headers(&[
            ("Content-Type", "application/json;charset=UTF-8"),
            ("Host", "kms.example.internal:8443"),
            ("User-Agent", "huaweicloud-usdk-python/3.0"),
            ("X-Project-Id", PROJECT),
            ("X-Sdk-Date", DATE),
        ])
    }

    fn example_2_headers() -> Vec<(String, String)> {
        headers(&[
            ("Content-Type", "application/json"),
            ("Host", "kps.example.internal:8774"),
            ("User-Agent", "huaweicloud-usdk-python/3.0"),
            ("X-Project-Id", PROJECT),
            ("X-Sdk-Date", DATE),
        ])
    }

    const SIGNED: &str = "content-type;host;user-agent;x-project-id;x-sdk-date";

    fn signed_list() -> Vec<String> {
        SIGNED.split(';').map(str::to_owned).collect()
    }

    #[test]
    fn example_1_post_with_json_body_matches_section_2_3() {
        let headers = example_1_headers();
        let path = format!("/v1.0/{PROJECT}/kms/create-datakey");
        let request = SignedRequest { method: "POST", path: &path, query: "", headers: &headers, body: BODY_1 };
        assert_eq!(
            hex::encode(Sha256::digest(BODY_1)),
            "5ed60521cc8a9bc63e9b8e01452f04d5ccd26440f288cc14405610bcac234328"
        );
        let canonical =
            canonical_request(&request, &signed_list(), &body_sha256(request.body)).expect("all headers present");
        let expected = format!(
            "POST\n/v1.0/{PROJECT}/kms/create-datakey/\n\ncontent-type:application/json;charset=UTF-8\n\
             host:kms.example.internal:8443\nuser-agent:huaweicloud-usdk-python/3.0\nx-project-id:{PROJECT}\n\
             x-sdk-date:{DATE}\n\n{SIGNED}\n5ed60521cc8a9bc63e9b8e01452f04d5ccd26440f288cc14405610bcac234328"
        );
        assert_eq!(canonical, expected);
        assert_eq!(
            string_to_sign(DATE, &canonical),
            "SDK-HMAC-SHA256\n20261123T193000Z\n1b7ecef36d345cdb01951abe9818acf7f7f497716f984b91b6922f19f762cb6a"
        );
        let signed = sign(&request, &credentials(), OffsetDateTime::now_utc());
        assert_eq!(signed.sdk_date, DATE, "an X-Sdk-Date already present is the one signed");
        assert_eq!(
            signed.authorization,
            "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAK0000001, \
             SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, \
             Signature=fd4a87a2b803c47539632c31d046fd5942736da15c7099404d1b045bfbcbebb4"
        );
    }

    #[test]
    fn example_2_get_with_query_matches_section_2_4() {
        let headers = example_2_headers();
        let path = format!("/v3/{PROJECT}/keypairs");
        let request =
            SignedRequest { method: "GET", path: &path, query: "limit=2&marker=key%20b", headers: &headers, body: b"" };
        let canonical =
            canonical_request(&request, &signed_list(), &body_sha256(request.body)).expect("all headers present");
        let expected = format!(
            "GET\n/v3/{PROJECT}/keypairs/\nlimit=2&marker=key%20b\ncontent-type:application/json\n\
             host:kps.example.internal:8774\nuser-agent:huaweicloud-usdk-python/3.0\nx-project-id:{PROJECT}\n\
             x-sdk-date:{DATE}\n\n{SIGNED}\n{EMPTY_BODY_SHA256}"
        );
        assert_eq!(canonical, expected);
        assert!(
            string_to_sign(DATE, &canonical)
                .ends_with("\nc1306a1c7696315b6e741deb5c2640834f164a371c124060f9d61479a597730e")
        );
        let signed = sign(&request, &credentials(), example_time());
        assert!(
            signed
                .authorization
                .ends_with("Signature=7f139193ae698d99aadd51738d8cd055872c0369da3708bcbfa72eef1cb5a43b"),
            "{}",
            signed.authorization
        );
    }

    fn with_authorization(mut headers: Vec<(String, String)>, value: &str) -> Vec<(String, String)> {
        headers.push(("Authorization".into(), value.into()));
        headers
    }

    fn verify_example_1(
        headers: &[(String, String)],
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Verified, VerifyError> {
        let secret = SecretString::from(SK);
        let path = format!("/v1.0/{PROJECT}/kms/create-datakey");
        let request = SignedRequest { method: "POST", path: &path, query: "", headers, body };
        verify(&request, now, |ak| (ak == AK).then_some(&secret))
    }

    const AUTH_1: &str = "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAK0000001, \
        SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, \
        Signature=fd4a87a2b803c47539632c31d046fd5942736da15c7099404d1b045bfbcbebb4";

    #[test]
    fn verifier_accepts_example_1() {
        let headers = with_authorization(example_1_headers(), AUTH_1);
        assert_eq!(verify_example_1(&headers, BODY_1, example_time()), Ok(Verified { access_key: AK.to_owned() }));
    }

    #[test]
    fn verifier_accepts_example_2_with_its_raw_query() {
        let headers = with_authorization(
            example_2_headers(),
            "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAK0000001,SignedHeaders=content-type;host;user-agent;x-project-id;\
             x-sdk-date,   Signature=7f139193ae698d99aadd51738d8cd055872c0369da3708bcbfa72eef1cb5a43b",
        );
        let secret = SecretString::from(SK);
        let path = format!("/v3/{PROJECT}/keypairs");
        // Query parameters in another order still canonicalise to the same string.
        let request =
            SignedRequest { method: "GET", path: &path, query: "marker=key%20b&limit=2", headers: &headers, body: b"" };
        assert!(verify(&request, example_time(), |ak| (ak == AK).then_some(&secret)).is_ok());
    }

    #[test]
    fn verifier_rejects_tampering_and_bad_credentials() {
        let now = example_time();
        let headers = with_authorization(example_1_headers(), AUTH_1);
        let tampered = br#"{"key_id":"3c1d5a0e-8f6b-4e52-9d7a-21f0c4b8e6a1","datakey_length":"512"}"#;
        assert_eq!(verify_example_1(&headers, tampered, now), Err(VerifyError::Mismatch));

        let unknown = with_authorization(example_1_headers(), &AUTH_1.replace("Access=HPUA", "Access=XPUA"));
        assert_eq!(verify_example_1(&unknown, BODY_1, now), Err(VerifyError::UnknownAccessKey));

        let bad_hex = with_authorization(example_1_headers(), &AUTH_1.replace("Signature=fd4a", "Signature=zz4a"));
        assert_eq!(verify_example_1(&bad_hex, BODY_1, now), Err(VerifyError::Mismatch));

        let mut altered = example_1_headers();
        altered[1].1 = "evil.example:8443".into();
        assert_eq!(verify_example_1(&with_authorization(altered, AUTH_1), BODY_1, now), Err(VerifyError::Mismatch));

        let mut without_agent = example_1_headers();
        without_agent.remove(2);
        assert_eq!(
            verify_example_1(&with_authorization(without_agent, AUTH_1), BODY_1, now),
            Err(VerifyError::SignedHeaderAbsent)
        );
    }

    /// Example 1's captured request (signed over `BODY_1`, without `X-Sdk-Content-Sha256`) with `extra`
    /// headers added on the way.
    fn captured_example_1(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut captured = with_authorization(example_1_headers(), AUTH_1);
        captured.extend(headers(extra));
        captured
    }

    #[test]
    fn a_captured_signature_does_not_carry_another_body() {
        let now = example_time();
        let other: &[u8] = br#"{"keypair":{"name":"someone-elses-key"}}"#;
        let body_1_hash = "5ed60521cc8a9bc63e9b8e01452f04d5ccd26440f288cc14405610bcac234328";
        // Replayed as captured, with another body: the body's own hash breaks the signature.
        assert_eq!(verify_example_1(&captured_example_1(&[]), other, now), Err(VerifyError::Mismatch));
        // ...and a forged header claiming the captured body's hash does not stand in for the body's hash.
        let forged = captured_example_1(&[(CONTENT_SHA256_HEADER, body_1_hash)]);
        assert_eq!(verify_example_1(&forged, other, now), Err(VerifyError::PayloadHashMismatch));
        let unsigned = captured_example_1(&[(CONTENT_SHA256_HEADER, UNSIGNED_PAYLOAD)]);
        assert_eq!(verify_example_1(&unsigned, other, now), Err(VerifyError::PayloadHashMismatch));
        assert_eq!(verify_example_1(&unsigned, BODY_1, now), Err(VerifyError::PayloadHashMismatch));
        // A header that tells the truth (in either case) is fine.
        let truthful = captured_example_1(&[(CONTENT_SHA256_HEADER, &body_1_hash.to_ascii_uppercase())]);
        assert!(verify_example_1(&truthful, BODY_1, now).is_ok());
    }

    /// Signs a POST carrying `X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD` (a signed header) over `signed_body`,
    /// then verifies it as received with `received_body`.
    fn verify_unsigned_payload(signed_body: &[u8], received_body: &[u8]) -> Result<Verified, VerifyError> {
        let now = OffsetDateTime::now_utc();
        let mut sent = headers(&[("Host", "kps.test"), (CONTENT_SHA256_HEADER, UNSIGNED_PAYLOAD)]);
        let path = "/v3/p/keypairs";
        let request = SignedRequest { method: "POST", path, query: "", headers: &sent, body: signed_body };
        let signature = sign(&request, &credentials(), now);
        assert!(signature.authorization.contains("SignedHeaders=host;x-sdk-content-sha256;x-sdk-date,"));
        sent.push(("X-Sdk-Date".into(), signature.sdk_date));
        sent.push(("Authorization".into(), signature.authorization));
        let secret = SecretString::from(SK);
        let received = SignedRequest { method: "POST", path, query: "", headers: &sent, body: received_body };
        verify(&received, now, |_| Some(&secret))
    }

    #[test]
    fn a_signed_unsigned_payload_header_is_refused_for_a_body() {
        // Such a signature covers no body at all: the verifier refuses it rather than accept any body.
        assert_eq!(verify_unsigned_payload(b"{}", b"{}"), Err(VerifyError::PayloadHashMismatch));
        assert_eq!(verify_unsigned_payload(b"{}", b"{\"x\":1}"), Err(VerifyError::PayloadHashMismatch));
        // Without a body the client rule signs the empty-body hash, which is what the verifier computes.
        assert!(verify_unsigned_payload(b"", b"").is_ok(), "UNSIGNED-PAYLOAD on an empty body");
        assert_eq!(verify_unsigned_payload(b"", b"{}"), Err(VerifyError::PayloadHashMismatch));
    }

    #[test]
    fn verifier_distinguishes_missing_malformed_and_date_errors() {
        let now = example_time();
        assert_eq!(verify_example_1(&example_1_headers(), BODY_1, now), Err(VerifyError::Missing));
        for bad in [
            "Bearer x",
            "SDK-HMAC-SHA256",
            "SDK-HMAC-SHA256Access=a, SignedHeaders=host;x-sdk-date, Signature=00",
            "SDK-HMAC-SHA256 Access=a, Signature=00",
            "SDK-HMAC-SHA256 Access=a, SignedHeaders=content-type;x-sdk-date, Signature=00",
            "SDK-HMAC-SHA256 Access=a, SignedHeaders=host, Signature=00",
            "SDK-HMAC-SHA256 Access=a, SignedHeaders=host;x-sdk-date, Signature=00, Extra=1",
        ] {
            let headers = with_authorization(example_1_headers(), bad);
            assert_eq!(verify_example_1(&headers, BODY_1, now), Err(VerifyError::Malformed), "{bad}");
        }
        let headers = with_authorization(example_1_headers(), AUTH_1);
        let skew = time::Duration::minutes(15);
        assert!(verify_example_1(&headers, BODY_1, now + skew).is_ok(), "15 minutes is still inside");
        assert!(verify_example_1(&headers, BODY_1, now - skew).is_ok());
        let late = now + skew + time::Duration::seconds(1);
        assert_eq!(verify_example_1(&headers, BODY_1, late), Err(VerifyError::Date));
        let mut no_date = with_authorization(example_1_headers(), AUTH_1);
        no_date.retain(|(n, _)| n != "X-Sdk-Date");
        assert_eq!(verify_example_1(&no_date, BODY_1, now), Err(VerifyError::Date));
        let mut bad_date = with_authorization(example_1_headers(), AUTH_1);
        bad_date[4].1 = "2026-11-23T19:30:00Z".into();
        assert_eq!(verify_example_1(&bad_date, BODY_1, now), Err(VerifyError::Date));
    }

    #[test]
    fn sign_then_verify_round_trips_and_adds_the_date() {
        let now = OffsetDateTime::now_utc();
        let mut headers = headers(&[("Host", "127.0.0.1:9600"), ("Content-Type", "application/json"), ("a_b", "x")]);
        let request = SignedRequest { method: "post", path: "/a b/c%2Fd", query: "", headers: &headers, body: b"{}" };
        let signed = sign(&request, &credentials(), now);
        assert_eq!(signed.sdk_date, format_sdk_date(now));
        assert!(signed.authorization.contains("SignedHeaders=content-type;host;x-sdk-date,"), "names with _ unsigned");
        headers.push(("X-Sdk-Date".into(), signed.sdk_date));
        headers.push(("Authorization".into(), signed.authorization));
        let secret = SecretString::from(SK);
        let received = SignedRequest { method: "post", path: "/a b/c%2Fd", query: "", headers: &headers, body: b"{}" };
        assert!(verify(&received, now, |_| Some(&secret)).is_ok());
    }

    #[test]
    fn canonical_uri_and_query_follow_the_sdk() {
        assert_eq!(canonical_uri("/a%20b/c@d/"), "/a%20b/c%40d/");
        assert_eq!(canonical_uri("/v1.0/p/kms/x"), "/v1.0/p/kms/x/");
        assert_eq!(canonical_query("b=2&a=x+y&a=1&flag&&c=%7e"), "a=1&a=x%2By&b=2&c=~&flag=");
        assert_eq!(canonical_query(""), "");
    }

    #[test]
    fn credentials_debug_hides_the_secret() {
        assert!(!format!("{:?}", credentials()).contains(SK));
        let temporary = credentials().with_security_token(SecretString::from("security-token-value"));
        let shown = format!("{temporary:?}");
        assert!(!shown.contains(SK) && !shown.contains("security-token-value"), "{shown}");
    }
}
