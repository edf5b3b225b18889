//! The KMS calls (spec/kms-huawei.md §4 data keys, §5.2 key lifecycle, `list-keys` paging) over the
//! [`KeyStore`], their parameter checks, and their Huawei-shaped errors ([`KmsFault`], §6). The server
//! authenticates and routes; everything an action answers is decided here.

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kps::kms::is_key_id;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::keys::{
    DOMAIN_ID, KeyStore, MockKey, REGION, STATE_DISABLED, STATE_ENABLED, STATE_PENDING_DELETION, now_ms,
    random_material, valid_alias,
};

const CIPHER_FORMAT: u8 = 0x01;
const KEY_ID_LEN: usize = 36;
const NONCE_LEN: usize = 12;

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    response
}

/// A Huawei-shaped error answer (§6).
#[derive(Debug)]
pub struct KmsFault {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl KmsFault {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    fn invalid(param: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "KMS.0308", format!("Invalid {param}."))
    }

    fn missing(param: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "KMS.0204", format!("Missing required parameter {param}."))
    }

    fn unknown_key(key_id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "KMS.0207", format!("Key {key_id} does not exist."))
    }
}

impl IntoResponse for KmsFault {
    fn into_response(self) -> Response {
        let body = json!({"error": {"error_code": self.code, "error_msg": self.message}});
        json_response(self.status, &body)
    }
}

/// Request parameters with Huawei's validation errors.
pub struct Params(pub Map<String, Value>);

impl Params {
    fn optional_str(&self, name: &str) -> Result<Option<&str>, KmsFault> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(KmsFault::invalid(name)),
        }
    }

    fn required_str(&self, name: &str) -> Result<&str, KmsFault> {
        self.optional_str(name)?.ok_or_else(|| KmsFault::missing(name))
    }

    /// A decimal number sent as a string (Huawei) or, leniently, as a JSON integer.
    fn optional_number(&self, name: &str) -> Result<Option<u64>, KmsFault> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text))
                if !text.is_empty() && text.len() <= 12 && text.bytes().all(|b| b.is_ascii_digit()) =>
            {
                text.parse().map(Some).map_err(|_| KmsFault::invalid(name))
            }
            Some(Value::Number(number)) => number.as_u64().map(Some).ok_or_else(|| KmsFault::invalid(name)),
            Some(_) => Err(KmsFault::invalid(name)),
        }
    }

    fn required_number(&self, name: &str) -> Result<u64, KmsFault> {
        self.optional_number(name)?.ok_or_else(|| KmsFault::missing(name))
    }

    fn key_id(&self) -> Result<&str, KmsFault> {
        let key_id = self.required_str("key_id")?;
        if !is_key_id(key_id) {
            return Err(KmsFault::new(StatusCode::BAD_REQUEST, "KMS.0205", "Invalid key_id."));
        }
        Ok(key_id)
    }

    /// `additional_authenticated_data`, at most 128 characters.
    fn aad(&self) -> Result<&str, KmsFault> {
        let aad = self.optional_str("additional_authenticated_data")?.unwrap_or("");
        if aad.chars().count() > 128 {
            return Err(KmsFault::invalid("additional_authenticated_data"));
        }
        Ok(aad)
    }
}

fn find<'k>(keys: &'k mut [MockKey], key_id: &str) -> Result<&'k mut MockKey, KmsFault> {
    keys.iter_mut().find(|k| k.id == key_id).ok_or_else(|| KmsFault::unknown_key(key_id))
}

/// Data-key calls need an enabled key.
fn require_enabled(key: &MockKey) -> Result<(), KmsFault> {
    match key.state.as_str() {
        STATE_ENABLED => Ok(()),
        STATE_DISABLED => {
            Err(KmsFault::new(StatusCode::BAD_REQUEST, "KMS.0209", format!("Key {} is disabled.", key.id)))
        }
        STATE_PENDING_DELETION => Err(KmsFault::new(
            StatusCode::BAD_REQUEST,
            "KMS.0210",
            format!("Key {} is scheduled for deletion.", key.id),
        )),
        other => Err(KmsFault::new(
            StatusCode::BAD_REQUEST,
            "KMS.0210",
            format!("Key {} is not usable in state {other}.", key.id),
        )),
    }
}

pub fn serve_action(store: &KeyStore, action: &str, params: &Params) -> Result<Value, KmsFault> {
    let changed;
    let answer = {
        let mut keys = store.lock();
        let keys = &mut *keys;
        match action {
            "create-key" => {
                changed = true;
                create_key(keys, params)
            }
            "enable-key" => {
                changed = true;
                transition(keys, params, &[STATE_DISABLED], STATE_ENABLED).map(|id| key_info_state(&id, STATE_ENABLED))
            }
            "disable-key" => {
                changed = true;
                transition(keys, params, &[STATE_ENABLED], STATE_DISABLED).map(|id| key_info_state(&id, STATE_DISABLED))
            }
            "schedule-key-deletion" => {
                changed = true;
                schedule_deletion(keys, params)
            }
            "cancel-key-deletion" => {
                changed = true;
                transition(keys, params, &[STATE_PENDING_DELETION], STATE_DISABLED).map(|id| {
                    if let Some(key) = keys.iter_mut().find(|k| k.id == id) {
                        key.scheduled_deletion_date.clear();
                    }
                    json!({"key_id": id, "key_state": STATE_DISABLED})
                })
            }
            other => {
                changed = false;
                match other {
                    "describe-key" => {
                        let key_id = params.key_id()?;
                        Ok(json!({"key_info": find(keys, key_id)?.details()}))
                    }
                    "list-keys" => list_keys(keys, params),
                    "create-datakey" => create_datakey(keys, params, true),
                    "create-datakey-without-plaintext" => create_datakey(keys, params, false),
                    "encrypt-datakey" => encrypt_datakey(keys, params),
                    "decrypt-datakey" => decrypt_datakey(keys, params),
                    _ => Err(KmsFault::new(StatusCode::NOT_FOUND, "KMS.0201", "Unknown request path.")),
                }
            }
        }
    }?;
    if changed {
        if let Err(error) = store.save() {
            tracing::error!(%error, "kms-mock cannot write its state file");
            return Err(KmsFault::new(StatusCode::INTERNAL_SERVER_ERROR, "KMS.0101", "State file error."));
        }
    }
    Ok(answer)
}

fn key_info_state(key_id: &str, state: &str) -> Value {
    json!({"key_info": {"key_id": key_id, "key_state": state}})
}

fn create_key(keys: &mut Vec<MockKey>, params: &Params) -> Result<Value, KmsFault> {
    let alias = params.required_str("key_alias")?;
    if !valid_alias(alias) || keys.iter().any(|k| k.alias == alias) {
        return Err(KmsFault::invalid("key_alias"));
    }
    let spec = params.optional_str("key_spec")?.unwrap_or("AES_256");
    if !matches!(spec, "AES_256" | "SM4") {
        return Err(KmsFault::invalid("key_spec"));
    }
    let description = params.optional_str("key_description")?.unwrap_or("");
    if description.chars().count() > 255 {
        return Err(KmsFault::invalid("key_description"));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let mut key = MockKey::new(id.clone(), alias.to_owned(), STATE_ENABLED.into(), spec.to_owned(), random_material());
    key.description = description.to_owned();
    keys.push(key);
    Ok(json!({"key_info": {"key_id": id, "domain_id": DOMAIN_ID, "region_id": REGION}}))
}

/// Moves a key from one of `from` to `to`; any other current state is `Invalid key_state.`
fn transition(keys: &mut [MockKey], params: &Params, from: &[&str], to: &str) -> Result<String, KmsFault> {
    let key = find(keys, params.key_id()?)?;
    if !from.contains(&key.state.as_str()) {
        return Err(KmsFault::invalid("key_state"));
    }
    to.clone_into(&mut key.state);
    Ok(key.id.clone())
}

fn schedule_deletion(keys: &mut [MockKey], params: &Params) -> Result<Value, KmsFault> {
    let key_id = params.key_id()?;
    let days = params.required_number("pending_days")?;
    if !(7..=1096).contains(&days) {
        return Err(KmsFault::invalid("pending_days"));
    }
    let key = find(keys, key_id)?;
    if !matches!(key.state.as_str(), STATE_ENABLED | STATE_DISABLED) {
        return Err(KmsFault::invalid("key_state"));
    }
    key.state = STATE_PENDING_DELETION.into();
    key.scheduled_deletion_date = (now_ms() + u128::from(days) * 86_400_000).to_string();
    Ok(json!({"key_id": key.id, "key_state": STATE_PENDING_DELETION}))
}

fn list_keys(keys: &[MockKey], params: &Params) -> Result<Value, KmsFault> {
    let limit = params.optional_number("limit")?.unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(KmsFault::invalid("limit"));
    }
    let offset = match params.optional_str("marker")? {
        None | Some("") => 0,
        Some(marker) => marker.parse::<usize>().map_err(|_| KmsFault::invalid("marker"))?,
    };
    let state = params.optional_str("key_state")?;
    let spec = params.optional_str("key_spec")?.unwrap_or("AES_256");
    let matching: Vec<&MockKey> = keys
        .iter()
        .filter(|k| state.is_none_or(|s| k.state == s))
        .filter(|k| spec == "ALL" || k.spec == spec)
        .collect();
    let limit = usize::try_from(limit).unwrap_or(1000);
    let page: Vec<&MockKey> = matching.iter().skip(offset).take(limit).copied().collect();
    let next = offset.saturating_add(limit);
    let truncated = next < matching.len();
    Ok(json!({
        "keys": page.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        "key_details": page.iter().map(|k| k.details()).collect::<Vec<_>>(),
        "next_marker": if truncated { next.to_string() } else { String::new() },
        "truncated": if truncated { "true" } else { "false" },
        "total": matching.len(),
    }))
}

/// create-datakey: `datakey_length` in **bits** wins over `key_spec`; default 256 bits.
fn create_datakey(keys: &mut [MockKey], params: &Params, with_plaintext: bool) -> Result<Value, KmsFault> {
    let key_id = params.key_id()?;
    let bits = match params.optional_number("datakey_length")? {
        Some(bits) if (8..=8192).contains(&bits) && bits % 8 == 0 => bits,
        Some(_) => return Err(KmsFault::invalid("datakey_length")),
        None => match params.optional_str("key_spec")? {
            None | Some("AES_256") => 256,
            Some("AES_128") => 128,
            Some(_) => return Err(KmsFault::invalid("key_spec")),
        },
    };
    let aad = params.aad()?;
    let key = find(keys, key_id)?;
    require_enabled(key)?;
    let mut dek = Zeroizing::new(vec![0u8; usize::try_from(bits / 8).unwrap_or(32)]);
    OsRng.fill_bytes(&mut dek);
    let cipher_text = wrap(key, &dek, aad)?;
    let mut answer = json!({"key_id": key.id, "cipher_text": cipher_text});
    if with_plaintext {
        answer["plain_text"] = Value::String(hex::encode(dek.as_slice()));
    }
    Ok(answer)
}

/// encrypt-datakey: `plain_text` = hex(DEK) ‖ hex(SHA-256(DEK)); `datakey_plain_length` in bytes.
fn encrypt_datakey(keys: &mut [MockKey], params: &Params) -> Result<Value, KmsFault> {
    let key_id = params.key_id()?;
    let plain_text = params.required_str("plain_text")?;
    let length = params.required_number("datakey_plain_length")?;
    if !(1..=1024).contains(&length) {
        return Err(KmsFault::invalid("datakey_plain_length"));
    }
    let length = usize::try_from(length).unwrap_or(0);
    let aad = params.aad()?;
    let bytes = Zeroizing::new(hex::decode(plain_text).map_err(|_| KmsFault::invalid("plain_text"))?);
    if bytes.len() != length + 32 || Sha256::digest(&bytes[..length])[..] != bytes[length..] {
        return Err(KmsFault::invalid("plain_text"));
    }
    let key = find(keys, key_id)?;
    require_enabled(key)?;
    let cipher_text = wrap(key, &bytes[..length], aad)?;
    Ok(json!({"key_id": key.id, "cipher_text": cipher_text, "datakey_length": length.to_string()}))
}

fn decrypt_datakey(keys: &mut [MockKey], params: &Params) -> Result<Value, KmsFault> {
    let key_id = params.key_id()?;
    let cipher_text = params.required_str("cipher_text")?;
    let length = params.required_number("datakey_cipher_length")?;
    let aad = params.aad()?;
    let invalid_cipher = || KmsFault::invalid("cipher_text");
    let bytes = hex::decode(cipher_text).map_err(|_| invalid_cipher())?;
    let header = 1 + KEY_ID_LEN + NONCE_LEN;
    if bytes.len() < header + 16 || bytes[0] != CIPHER_FORMAT || &bytes[1..=KEY_ID_LEN] != key_id.as_bytes() {
        return Err(invalid_cipher());
    }
    let key = find(keys, key_id)?;
    require_enabled(key)?;
    let nonce: [u8; NONCE_LEN] = bytes[1 + KEY_ID_LEN..header].try_into().map_err(|_| invalid_cipher())?;
    let dek = Zeroizing::new(
        cipher(key)
            .decrypt(&Nonce::from(nonce), Payload { msg: &bytes[header..], aad: &wrap_aad(&key.id, aad) })
            .map_err(|_| invalid_cipher())?,
    );
    if u64::try_from(dek.len()).ok() != Some(length) {
        return Err(KmsFault::invalid("datakey_cipher_length"));
    }
    Ok(json!({
        "data_key": hex::encode(dek.as_slice()),
        "datakey_length": dek.len().to_string(),
        "datakey_dgst": hex::encode(Sha256::digest(dek.as_slice())),
    }))
}

fn cipher(key: &MockKey) -> Aes256Gcm {
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key.material))
}

fn wrap_aad(key_id: &str, aad: &str) -> Vec<u8> {
    [key_id.as_bytes(), aad.as_bytes()].concat()
}

/// §5.3: `0x01` ‖ key id (36 ASCII bytes) ‖ nonce (12) ‖ AES-256-GCM(material, AAD = key id ‖ aad) with tag.
fn wrap(key: &MockKey, dek: &[u8], aad: &str) -> Result<String, KmsFault> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let sealed = cipher(key)
        .encrypt(&nonce, Payload { msg: dek, aad: &wrap_aad(&key.id, aad) })
        .map_err(|_| KmsFault::new(StatusCode::INTERNAL_SERVER_ERROR, "KMS.0101", "Encryption failed."))?;
    let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + sealed.len());
    out.push(CIPHER_FORMAT);
    out.extend_from_slice(key.id.as_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(hex::encode(out))
}
