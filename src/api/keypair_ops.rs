//! What the Nova and V3 APIs share, so that neither copies the other (house style 11): whose key pair a
//! request acts on (`user_id` in a body or the query), the custody switch (KPS.1901), create-and-audit,
//! delete-and-audit, the one authorization path for a stored key pair (errors.md §4 steps 8 and 10), the
//! query checks and `limit` parsing, and the `key_protection` / `algorithm` body rules both APIs accept.
//!
//! It calls the service, the policy and the audit log; it knows no API's response shapes.

use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::AppState;
use super::audit;
use super::auth::Caller;
use super::error::ApiError;
use super::metrics::CustodyAction;
use super::policy::{Action, Decision, Target};
use super::schema::{additional_properties, field_message, not_of_type, not_one_of, repr};
use crate::model::{Algorithm, KeyType, Keypair, Scope};
use crate::service::{Created, EncryptionRequest, NewKeypair, ProtectionRequest, ServiceError};

// ---------------------------------------------------------------------------------------------------------
// Owners, the custody switch, create and delete

/// The user a request acts on: the `user_id` it names (empty = the caller), else the caller.
pub fn owner_of(caller: &Caller, user_id: Option<&str>) -> String {
    match user_id {
        None | Some("") => caller.user_id.clone(),
        Some(user) => user.to_owned(),
    }
}

/// KPS.1901 unless `custody.enabled`.
pub fn custody_switch(state: &AppState) -> Result<(), ApiError> {
    if state.custody_enabled {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::FORBIDDEN, "KPS.1901", "Private key custody is disabled on this server"))
    }
}

/// A create/import body that passed its API's schema step.
pub struct CreateRequest {
    pub name: String,
    pub key_type: KeyType,
    pub public_key: Option<String>,
    pub user_id: Option<String>,
    pub scope: Scope,
    pub algorithm: Option<Algorithm>,
    pub key_protection: Option<ProtectionRequest>,
}

impl CreateRequest {
    /// Whether the request escrows a private key (the custody switch applies).
    pub fn escrows(&self) -> bool {
        self.key_protection.as_ref().is_some_and(|p| p.escrows(self.public_key.is_none()))
    }
}

/// Policy on the new key pair (step 8), the custody switch (step 9), the service's create, and the audit
/// lines of an escrow: an attempt before, a success (or failure) line after; an escrow whose success line
/// cannot be written under `audit.fail_closed` is deleted again and its private key never leaves.
pub async fn create_and_audit(
    state: &AppState,
    caller: &Caller,
    action: Action,
    request_id: &str,
    request: CreateRequest,
) -> Result<Created, ApiError> {
    let owner = owner_of(caller, request.user_id.as_deref());
    state.policy.enforce(action, caller, &Target::new_keypair(&owner, &caller.project_id))?;
    let escrows = request.escrows();
    let escrow = CustodyAction::Escrow.name();
    if escrows {
        custody_switch(state)?;
        audit::attempt(state, caller, escrow, Some(&request.name), request_id).await?;
    }
    let name = request.name.clone();
    let new = NewKeypair {
        name: request.name,
        key_type: request.key_type,
        public_key: request.public_key,
        algorithm: request.algorithm,
        user_id: owner,
        project_id: caller.project_id.clone(),
        scope: request.scope,
        protection: request.key_protection,
    };
    let created = match state.service.create(new).await {
        Ok(created) => created,
        Err(error) => {
            let error = ApiError::from(error);
            if escrows {
                audit::refused(
                    state,
                    Some(caller),
                    escrow,
                    Some(&name),
                    (error.status.as_u16(), error.code),
                    request_id,
                )
                .await;
            }
            return Err(error);
        }
    };
    if created.record.sealed.is_some() {
        let undo = state.service.undo_create(&created.record);
        audit::escrow_or_undo(state, caller, &created.record, request_id, undo).await?;
    }
    Ok(created)
}

/// Policy, the service's delete, and the audit lines when an escrowed key goes with the key pair (the
/// attempt line only with `audit.file`: it costs a read when the policy did not load the record).
pub async fn delete_and_audit(
    state: &AppState,
    caller: &Caller,
    action: Action,
    request_id: &str,
    user: &str,
    name: &str,
) -> Result<(), ApiError> {
    let loaded = authorize_record(state, caller, action, user)?.load(user, name).await?;
    let escrowed = match loaded {
        Some(record) => record.sealed.is_some(),
        // A failed read counts as escrowed: the attempt line is written rather than skipped.
        None if state.audit.writes_file() => match state.service.get(user, &caller.project_id, name).await {
            Ok(record) => record.sealed.is_some(),
            Err(ServiceError::NotFound { .. }) => false,
            Err(_) => true,
        },
        None => false,
    };
    let delete_escrowed = CustodyAction::DeleteEscrowed.name();
    if escrowed {
        audit::attempt(state, caller, delete_escrowed, Some(name), request_id).await?;
    }
    let deleted = match state.service.delete(user, &caller.project_id, name).await {
        Ok(deleted) => deleted,
        Err(error) => {
            let error = ApiError::from(error);
            if escrowed {
                let status = (error.status.as_u16(), error.code);
                audit::refused(state, Some(caller), delete_escrowed, Some(name), status, request_id).await;
            }
            return Err(error);
        }
    };
    if deleted.sealed.is_some() {
        audit::custody_action(state, caller, CustodyAction::DeleteEscrowed, &deleted, request_id).await?;
    }
    Ok(())
}

/// Policy, then the stored key pair `name` of `user`.
pub async fn show_record(
    state: &AppState,
    caller: &Caller,
    action: Action,
    user: &str,
    name: &str,
) -> Result<Keypair, ApiError> {
    match authorize_record(state, caller, action, user)?.load(user, name).await? {
        Some(record) => Ok(record),
        None => Ok(state.service.get(user, &caller.project_id, name).await?),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Policy on a stored key pair

/// The policy of an action on one stored key pair of a user, decided on what the request names (step 8)
/// and, if that left it open, on the record once loaded (step 10). Every route naming a stored key pair
/// goes through [`RecordPolicy::check`], whether the edge loads the record (`load`) or the service does
/// inside its transaction (the check is handed to it).
pub struct RecordPolicy<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    action: Action,
    /// Step 8 allowed whatever the record holds.
    allowed: bool,
}

/// Step 8: policy on the target user; a `Deny` is final (403 before anything says whether the key exists).
pub fn authorize_record<'a>(
    state: &'a AppState,
    caller: &'a Caller,
    action: Action,
    user: &str,
) -> Result<RecordPolicy<'a>, ApiError> {
    let decision = state.policy.enforce(action, caller, &Target::user_before_load(user))?;
    Ok(RecordPolicy { state, caller, action, allowed: decision == Decision::Allow })
}

impl RecordPolicy<'_> {
    /// Step 10: the rule on the loaded record (`creator`, a `domain` key's project).
    pub fn check(&self, record: &Keypair) -> Result<(), ServiceError> {
        match self.state.policy.decide(self.action, self.caller, &Target::keypair(record)) {
            Decision::Allow => Ok(()),
            Decision::Deny | Decision::Undecided => Err(ServiceError::Denied(self.action.name().to_owned())),
        }
    }

    /// Loads and checks the record when step 8 left the decision open (`None` when it allowed). A missing
    /// record is checked as "no key pair" first, so that a denied caller gets 403, not a 404 that tells
    /// which names exist.
    pub async fn load(&self, user: &str, name: &str) -> Result<Option<Keypair>, ApiError> {
        if self.allowed {
            return Ok(None);
        }
        match self.state.service.get(user, &self.caller.project_id, name).await {
            Ok(record) => {
                self.check(&record)?;
                Ok(Some(record))
            }
            Err(error) => {
                self.state.policy.enforce(self.action, self.caller, &Target::user(user))?;
                Err(error.into())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Query parameters

/// KPS.1003 naming every parameter not in `allowed`, once each, in request order.
pub fn reject_unknown_query(query: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    let mut extras: Vec<&str> = Vec::new();
    for (name, _) in query {
        if !allowed.contains(&name.as_str()) && !extras.contains(&name.as_str()) {
            extras.push(name);
        }
    }
    if extras.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::BAD_REQUEST, "KPS.1003", additional_properties(&extras)))
    }
}

/// The first value of a query parameter.
pub fn query_first<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The last value of a query parameter.
pub fn query_last<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// KPS.1004 for a `limit` value.
fn bad_limit(value: &str, reason: &str) -> ApiError {
    ApiError::bad_query_value(format!("Invalid input for query parameters limit. Value: {value}. {reason}"))
}

/// Nova's `limit`: every value must be digits only; the last one is used.
pub fn nova_limit(query: &[(String, String)]) -> Result<usize, ApiError> {
    for (_, value) in query.iter().filter(|(k, _)| k == "limit") {
        if value.is_empty() {
            return Err(bad_limit("", "'' should be non-empty"));
        }
        if !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_limit(value, &format!("{} does not match '^[0-9]*$'", repr(&Value::from(value.as_str())))));
        }
    }
    let value = query_last(query, "limit").unwrap_or("0");
    // Digits only, so the only failure is overflow: anything that large means "as many as allowed".
    Ok(value.parse::<usize>().unwrap_or(usize::MAX))
}

/// The V3 `limit`: an integer from 1 to 9999.
pub fn v3_limit(value: &str) -> Result<usize, ApiError> {
    let shown = repr(&Value::from(value));
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_limit(value, &format!("{shown} does not match '^[0-9]+$'")));
    }
    match value.parse::<usize>() {
        Ok(limit) if (1..=9999).contains(&limit) => Ok(limit),
        Ok(0) => Err(bad_limit(value, &format!("{shown} is less than the minimum of 1"))),
        _ => Err(bad_limit(value, &format!("{shown} is greater than the maximum of 9999"))),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Body rules both APIs share

/// The KPS name rule `^[A-Za-z0-9_-]{1,64}$`.
pub fn is_kps_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A copy of a `keypair` object safe to show in a message: `key_protection.private_key` replaced by `'***'`.
/// The private key itself is never copied. Only built for an error message.
pub fn masked(fields: &Map<String, Value>) -> Value {
    let copy = fields.iter().map(|(name, value)| {
        let value = if name == "key_protection" { masked_protection(value) } else { value.clone() };
        (name.clone(), value)
    });
    Value::Object(copy.collect())
}

/// A `key_protection` value safe to show: its `private_key` replaced by `'***'`, never copied.
fn masked_protection(value: &Value) -> Value {
    let Value::Object(fields) = value else { return value.clone() };
    let copy = fields.iter().map(|(name, value)| {
        let value = if name == "private_key" { Value::from("***") } else { value.clone() };
        (name.clone(), value)
    });
    Value::Object(copy.collect())
}

/// The kps `algorithm` extension: one of `Algorithm::ALL` by name.
pub fn validate_algorithm_value(value: &Value) -> Result<Algorithm, ApiError> {
    let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
    let Value::String(text) = value else {
        return Err(ApiError::schema(field_message("algorithm", value, &not_of_type(value, "string"))));
    };
    Algorithm::from_name(text)
        .ok_or_else(|| ApiError::schema(field_message("algorithm", value, &not_one_of(value, &names))))
}

/// `algorithm` only when generating, and an RSA one for `x509`.
pub fn check_algorithm_use(
    algorithm: Algorithm,
    key_type: KeyType,
    importing: bool,
    keypair: &Map<String, Value>,
) -> Result<(), ApiError> {
    if importing {
        return Err(ApiError::schema(field_message(
            "keypair",
            &masked(keypair),
            "'algorithm' is only allowed when the key pair is generated (without 'public_key')",
        )));
    }
    if key_type == KeyType::X509 && !algorithm.is_rsa() {
        let value = Value::from(algorithm.as_str());
        let rsa: Vec<&str> = Algorithm::ALL.iter().filter(|a| a.is_rsa()).map(|a| a.as_str()).collect();
        return Err(ApiError::schema(field_message("algorithm", &value, &not_one_of(&value, &rsa))));
    }
    Ok(())
}

const KMS_KEY_ID_LEN: [usize; 5] = [8, 4, 4, 4, 12];

fn is_kms_key_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.len() == KMS_KEY_ID_LEN.len()
        && parts
            .iter()
            .zip(KMS_KEY_ID_LEN)
            .all(|(part, len)| part.len() == len && part.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()))
}

/// Shape checks of `key_protection` (§8): unknown properties and wrong JSON types are KPS.1001, every other
/// problem KPS.1401.
pub fn validate_key_protection(value: &Value) -> Result<ProtectionRequest, ApiError> {
    let invalid =
        |detail: &str| ApiError::new(StatusCode::BAD_REQUEST, "KPS.1401", format!("Invalid key_protection: {detail}"));
    let shown = || masked_protection(value);
    let Value::Object(fields) = value else {
        return Err(ApiError::schema(field_message("key_protection", &shown(), &not_of_type(value, "object"))));
    };
    let extras: Vec<&str> =
        fields.keys().map(String::as_str).filter(|k| !["private_key", "encryption"].contains(k)).collect();
    if !extras.is_empty() {
        return Err(ApiError::schema(field_message("key_protection", &shown(), &additional_properties(&extras))));
    }
    let private_key = match fields.get("private_key") {
        None => None,
        Some(Value::String(text)) => {
            if text.chars().count() > 65_535 {
                return Err(invalid("private_key is longer than 65535 characters"));
            }
            Some(zeroize::Zeroizing::new(text.clone()))
        }
        Some(other) => {
            return Err(ApiError::schema(field_message("private_key", other, &not_of_type(other, "string"))));
        }
    };
    let Some(encryption) = fields.get("encryption") else { return Err(invalid("encryption is required")) };
    let Value::Object(settings) = encryption else {
        return Err(ApiError::schema(field_message("encryption", encryption, &not_of_type(encryption, "object"))));
    };
    let extras: Vec<&str> =
        settings.keys().map(String::as_str).filter(|k| !["type", "kms_key_name", "kms_key_id"].contains(k)).collect();
    if !extras.is_empty() {
        return Err(ApiError::schema(field_message("encryption", encryption, &additional_properties(&extras))));
    }
    let text = |name: &str| -> Result<Option<&str>, ApiError> {
        match settings.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(ApiError::schema(field_message(name, other, &not_of_type(other, "string")))),
        }
    };
    let encryption_type = text("type")?;
    let key_name = text("kms_key_name")?;
    let key_id = text("kms_key_id")?;
    let encryption = match encryption_type {
        None => return Err(invalid("encryption.type is required")),
        Some("default") => EncryptionRequest::Default,
        Some("kms") => {
            if key_name.is_some_and(|n| !(1..=255).contains(&n.chars().count())) {
                return Err(invalid("kms_key_name must be 1 to 255 characters"));
            }
            if key_id.is_some_and(|id| !is_kms_key_id(id)) {
                return Err(invalid("kms_key_id is not a KMS key id"));
            }
            if key_name.is_none() && key_id.is_none() {
                return Err(invalid("encryption.type kms requires kms_key_name or kms_key_id"));
            }
            EncryptionRequest::Kms { key_name: key_name.map(str::to_owned), key_id: key_id.map(str::to_owned) }
        }
        Some(_) => return Err(invalid("encryption.type must be default or kms")),
    };
    Ok(ProtectionRequest { private_key, encryption })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_protection_shape_errors() {
        let check = |kp: Value| validate_key_protection(&kp).err().map(|e| (e.code, e.message));
        assert_eq!(check(json!("x")).map(|e| e.0), Some("KPS.1001"));
        assert_eq!(check(json!({"encryption": {"type": "default"}, "x": 1})).map(|e| e.0), Some("KPS.1001"));
        assert_eq!(check(json!({})).map(|e| e.0), Some("KPS.1401"));
        assert_eq!(check(json!({"encryption": {}})).map(|e| e.0), Some("KPS.1401"));
        assert_eq!(check(json!({"encryption": {"type": "aes"}})).map(|e| e.0), Some("KPS.1401"));
        assert_eq!(check(json!({"encryption": {"type": 1}})).map(|e| e.0), Some("KPS.1001"));
        assert_eq!(check(json!({"encryption": {"type": "kms"}})).map(|e| e.0), Some("KPS.1401"));
        assert_eq!(check(json!({"encryption": {"type": "kms", "kms_key_id": "nope"}})).map(|e| e.0), Some("KPS.1401"));
        assert_eq!(check(json!({"encryption": {"type": "default"}, "private_key": 5})).map(|e| e.0), Some("KPS.1001"));
        let ok = json!({"encryption": {"type": "kms", "kms_key_id": "3c1d5a0e-8f6b-4e52-9d7a-21f0c4b8e6a1"}});
        assert!(validate_key_protection(&ok).is_ok());
    }

    #[test]
    fn limit_must_be_digits() {
        let query = |v: &str| vec![("limit".to_owned(), v.to_owned())];
        assert_eq!(nova_limit(&query("5")).ok(), Some(5));
        assert_eq!(nova_limit(&query("0")).ok(), Some(0));
        let error = nova_limit(&query("-1")).expect_err("negative");
        assert_eq!(
            error.message,
            "Invalid input for query parameters limit. Value: -1. '-1' does not match '^[0-9]*$'"
        );
        assert_eq!(error.code, "KPS.1004");
    }

    #[test]
    fn v3_limits_are_1_to_9999() {
        assert_eq!(v3_limit("1").ok(), Some(1));
        assert_eq!(v3_limit("9999").ok(), Some(9999));
        for bad in ["0", "10000", "-1", "", "x"] {
            assert_eq!(v3_limit(bad).expect_err(bad).code, "KPS.1004", "{bad}");
        }
    }
}
