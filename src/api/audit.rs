//! The audit log of private-key custody: one `tracing` event with target `kps::audit` per key pair touched by
//! a custody action that succeeded — who (the caller's user and project), what (the action), which key pair
//! (owner, name, record id, project) and under which key it is sealed (encryptor and master key id or KMS key
//! id). Never the private key, its ciphertext, a data key or a credential: the only inputs are the caller and
//! the stored record's identity fields.
//!
//! Each call also counts the action for `GET /metrics`.

use super::AppState;
use super::auth::Caller;
use super::metrics::CustodyAction;
use crate::model::{EncryptorKind, Keypair};

/// Records a custody action on one key pair (`record` as stored after the action, or as it was before a
/// clear or delete).
pub fn custody_action(state: &AppState, caller: &Caller, action: CustodyAction, record: &Keypair, request_id: &str) {
    let revealed = u64::from(matches!(action, CustodyAction::ExportPrivateKey));
    state.metrics.record_custody(action, revealed);
    log(caller, action, record, request_id);
}

/// Records one batch export: counted once, one audit line per key pair revealed.
pub fn batch_export(state: &AppState, caller: &Caller, records: &[&Keypair], request_id: &str) {
    state.metrics.record_custody(CustodyAction::BatchExport, records.len() as u64);
    for record in records {
        log(caller, CustodyAction::BatchExport, record, request_id);
    }
}

fn log(caller: &Caller, action: CustodyAction, record: &Keypair, request_id: &str) {
    let (encryptor, key_ref) = match &record.sealed {
        Some(sealed) => (
            match sealed.encryptor {
                EncryptorKind::Default => "default",
                EncryptorKind::Kms => "kms",
            },
            sealed.key_ref.as_str(),
        ),
        None => ("none", ""),
    };
    tracing::info!(
        target: "kps::audit",
        action = action.name(),
        caller_user = caller.user_id,
        caller_project = caller.project_id,
        admin = caller.is_admin(),
        keypair_user = record.user_id,
        keypair_project = record.project_id,
        keypair_name = record.name,
        keypair_id = record.id,
        encryptor,
        key_ref,
        request_id,
        "custody action"
    );
}
