//! The audit trail of private-key custody: who (the caller's user and project), what (the action), which key
//! pair (owner, name, record id, project), under which key it is sealed (encryptor and master key id or KMS
//! key id), and the outcome. Never the private key, its ciphertext, a data key or a credential: the only
//! inputs are the caller, the request's names and the stored record's identity fields.
//!
//! Every line is a `tracing` event with target `kps::audit` and, with `audit.file`, a JSON line of that file
//! (`crate::audit_file`), synced before the request is answered. A custody request leaves:
//!
//! * `attempt` — before it acts, once authenticated: export, batch export, clear, private-key import, admin
//!   backup and rewrap (the pipeline, for the routes of [`audited_route`]), an escrowing create and the
//!   delete of an escrowed key pair (their handlers, which alone know);
//! * `success` — one line per key pair touched, written before the answer (so before a private key leaves);
//! * `denied` (401, 403) or `failed` (any other error, KMS and unwrap failures included) with the status and
//!   the error code.
//!
//! With `audit.fail_closed`, an `attempt` or `success` line that cannot be written fails the request with
//! 503 KPS.9006 and nothing is revealed: an attempt line fails it before anything happens, a success line
//! before the answer (an escrowing create is then undone). Without it, the failure is logged and counted.
//!
//! Each success also counts the action for `GET /metrics`.

use std::sync::Arc;

use serde::Serialize;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::metrics::CustodyAction;
use super::policy::Action;
use crate::audit_file::AuditFile;
use crate::metrics::Counter;
use crate::model::{EncryptorKind, Keypair};

/// Where the audit lines go besides the log, whether requests depend on it, and the lines' counts for
/// `GET /metrics`. Cloning shares it (a backup's stream writes its line after the handler returned).
#[derive(Debug, Clone, Default)]
pub struct Audit(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    file: Option<AuditFile>,
    fail_closed: bool,
    /// Lines written, by outcome (in [`Outcome::ALL`] order).
    lines: [Counter; 4],
    write_failures: Counter,
}

impl Audit {
    pub fn new(file: Option<AuditFile>, fail_closed: bool) -> Self {
        Self(Arc::new(Inner { file, fail_closed, ..Inner::default() }))
    }

    /// `audit.file` is set.
    pub fn writes_file(&self) -> bool {
        self.0.file.is_some()
    }

    /// Lines written per outcome, and lines that did not reach `audit.file`.
    pub fn counts(&self) -> (impl Iterator<Item = (Outcome, u64)> + '_, u64) {
        let lines = Outcome::ALL.into_iter().zip(self.0.lines.iter().map(Counter::get));
        (lines, self.0.write_failures.get())
    }

    /// Writes `line` to the log and the audit file. `Err` (KPS.9006) only with `audit.fail_closed` and a line
    /// that did not reach the file.
    async fn write(&self, line: &Line<'_>) -> Result<(), ApiError> {
        let bytes = self.log(line)?;
        self.append(bytes).await
    }

    /// Logs and counts `line`; its JSON for `audit.file`, if one is set.
    fn log(&self, line: &Line<'_>) -> Result<Option<Vec<u8>>, ApiError> {
        tracing::info!(
            target: "kps::audit",
            action = line.action,
            outcome = line.outcome.name(),
            status = line.status,
            error_code = line.error_code,
            caller_user = line.caller_user,
            caller_project = line.caller_project,
            admin = line.admin,
            keypair_user = line.keypair_user,
            keypair_project = line.keypair_project,
            keypair_name = line.keypair_name,
            keypair_id = line.keypair_id,
            encryptor = line.encryptor,
            key_ref = line.key_ref,
            detail = line.detail,
            request_id = line.request_id,
            "custody action"
        );
        self.0.lines[line.outcome as usize].increment();
        match &self.0.file {
            Some(_) => serde_json::to_vec(line).map(Some).map_err(|_| ApiError::internal()),
            None => Ok(None),
        }
    }

    /// Appends logged lines (`bytes`: one or more JSON lines, newline-separated) to `audit.file` in one write
    /// and one sync: all of them or none.
    async fn append(&self, bytes: Option<Vec<u8>>) -> Result<(), ApiError> {
        let (Some(file), Some(bytes)) = (&self.0.file, bytes) else { return Ok(()) };
        match file.append(bytes).await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.0.write_failures.increment();
                tracing::error!(%error, file = %file.path().display(), "audit line not written");
                if self.0.fail_closed { Err(ApiError::audit_unavailable()) } else { Ok(()) }
            }
        }
    }

    /// The line of an admin action (`backup`, `rewrap`) with what it did.
    pub async fn admin_action(
        &self,
        caller: Option<&Caller>,
        action: &str,
        outcome: Outcome,
        detail: &str,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let mut line = Line::new(action, outcome, caller, request_id);
        line.detail = Some(detail);
        self.write(&line).await
    }
}

/// How a custody request ended, or that it is about to act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Attempt = 0,
    Success = 1,
    Denied = 2,
    Failed = 3,
}

impl Outcome {
    pub const ALL: [Self; 4] = [Self::Attempt, Self::Success, Self::Denied, Self::Failed];

    pub fn name(self) -> &'static str {
        match self {
            Self::Attempt => "attempt",
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Failed => "failed",
        }
    }

    /// `denied` for 401 and 403, else `failed`.
    fn of_error(status: u16) -> Self {
        if matches!(status, 401 | 403) { Self::Denied } else { Self::Failed }
    }
}

/// The audit name of a route whose every request is a custody request (the pipeline writes its attempt and
/// refusal lines); `None` for routes that are custody actions only for some bodies or records.
pub fn audited_route(action: Action) -> Option<&'static str> {
    match action {
        Action::ImportPrivateKey => Some(CustodyAction::ImportPrivateKey.name()),
        Action::ExportPrivateKey => Some(CustodyAction::ExportPrivateKey.name()),
        Action::BatchExport => Some(CustodyAction::BatchExport.name()),
        Action::ClearPrivateKey => Some(CustodyAction::ClearPrivateKey.name()),
        Action::AdminBackup => Some("backup"),
        Action::AdminRewrap => Some("rewrap"),
        _ => None,
    }
}

/// One audit line.
#[derive(Debug, Serialize)]
struct Line<'a> {
    time: String,
    action: &'a str,
    outcome: Outcome,
    status: Option<u16>,
    error_code: Option<&'a str>,
    caller_user: Option<&'a str>,
    caller_project: Option<&'a str>,
    admin: bool,
    keypair_user: Option<&'a str>,
    keypair_project: Option<&'a str>,
    keypair_name: Option<&'a str>,
    keypair_id: Option<u64>,
    encryptor: Option<&'static str>,
    key_ref: Option<&'a str>,
    /// What an admin action did (the rewrap report, the backup's record count).
    detail: Option<&'a str>,
    request_id: &'a str,
}

impl<'a> Line<'a> {
    fn new(action: &'a str, outcome: Outcome, caller: Option<&'a Caller>, request_id: &'a str) -> Self {
        Self {
            time: now_rfc3339(),
            action,
            outcome,
            status: None,
            error_code: None,
            caller_user: caller.map(|c| c.user_id.as_str()),
            caller_project: caller.map(|c| c.project_id.as_str()),
            admin: caller.is_some_and(Caller::is_admin),
            keypair_user: None,
            keypair_project: None,
            keypair_name: None,
            keypair_id: None,
            encryptor: None,
            key_ref: None,
            detail: None,
            request_id,
        }
    }

    fn of_record(mut self, record: &'a Keypair) -> Self {
        self.keypair_user = Some(&record.user_id);
        self.keypair_project = Some(&record.project_id);
        self.keypair_name = Some(&record.name);
        self.keypair_id = Some(record.id);
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
        self.encryptor = Some(encryptor);
        self.key_ref = Some(key_ref);
        self
    }
}

/// The `attempt` line of a custody request about to act; `name` is the key pair it names, if one.
pub async fn attempt(
    state: &AppState,
    caller: &Caller,
    action: &str,
    name: Option<&str>,
    request_id: &str,
) -> Result<(), ApiError> {
    let mut line = Line::new(action, Outcome::Attempt, Some(caller), request_id);
    line.keypair_name = name;
    state.audit.write(&line).await
}

/// The `denied`/`failed` line of a custody request that was refused or failed (`caller` is `None` when
/// authentication failed). The request already fails: a line that cannot be written is only logged.
pub async fn refused(
    state: &AppState,
    caller: Option<&Caller>,
    action: &str,
    name: Option<&str>,
    error: (u16, &str),
    request_id: &str,
) {
    let (status, code) = error;
    let mut line = Line::new(action, Outcome::of_error(status), caller, request_id);
    line.keypair_name = name;
    line.status = Some(status);
    line.error_code = (!code.is_empty()).then_some(code);
    let _ = state.audit.write(&line).await;
}

/// The `success` line of a custody action on one key pair (`record` as stored after the action, or as it
/// was before a clear or delete), and its count.
pub async fn custody_action(
    state: &AppState,
    caller: &Caller,
    action: CustodyAction,
    record: &Keypair,
    request_id: &str,
) -> Result<(), ApiError> {
    let line = Line::new(action.name(), Outcome::Success, Some(caller), request_id).of_record(record);
    state.audit.write(&line).await?;
    let revealed = u64::from(matches!(action, CustodyAction::ExportPrivateKey));
    state.metrics.record_custody(action, revealed);
    Ok(())
}

/// The success lines of one batch export, one per key pair revealed, written together (all or none); counted
/// once.
pub async fn batch_export(
    state: &AppState,
    caller: &Caller,
    records: &[Keypair],
    request_id: &str,
) -> Result<(), ApiError> {
    let mut bytes: Option<Vec<u8>> = None;
    for record in records {
        let line = Line::new(CustodyAction::BatchExport.name(), Outcome::Success, Some(caller), request_id);
        if let Some(json) = state.audit.log(&line.of_record(record))? {
            let joined = bytes.get_or_insert_with(Vec::new);
            if !joined.is_empty() {
                joined.push(b'\n');
            }
            joined.extend_from_slice(&json);
        }
    }
    state.audit.append(bytes).await?;
    state.metrics.record_custody(CustodyAction::BatchExport, records.len() as u64);
    Ok(())
}

/// The success line of an escrowing create, with `undo` (deleting the new key pair) when the line cannot be
/// written under `audit.fail_closed`. Both run in a task of their own, so that a request abandoned meanwhile
/// (its timeout, a shutdown) cannot leave an escrow behind that the audit file does not name.
pub async fn escrow_or_undo(
    state: &AppState,
    caller: &Caller,
    record: &Keypair,
    request_id: &str,
    undo: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let line = Line::new(CustodyAction::Escrow.name(), Outcome::Success, Some(caller), request_id).of_record(record);
    // Without audit.file the line is in the log already and nothing can fail: no task needed.
    if let Some(bytes) = state.audit.log(&line)? {
        let audit = state.audit.clone();
        let written = tokio::spawn(async move {
            let written = audit.append(Some(bytes)).await;
            if written.is_err() {
                undo.await;
            }
            written
        });
        written.await.map_err(|_| ApiError::internal())??;
    }
    state.metrics.record_custody(CustodyAction::Escrow, 0);
    Ok(())
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_denied_for_401_and_403_and_failed_otherwise() {
        assert_eq!(Outcome::of_error(401), Outcome::Denied);
        assert_eq!(Outcome::of_error(403), Outcome::Denied);
        assert_eq!(Outcome::of_error(404), Outcome::Failed);
        assert_eq!(Outcome::of_error(500), Outcome::Failed);
    }

    #[test]
    fn every_route_that_reveals_or_changes_an_escrow_is_audited_by_the_pipeline() {
        let audited: Vec<_> = Action::ALL.into_iter().filter_map(audited_route).collect();
        assert_eq!(
            audited,
            ["import_private_key", "export_private_key", "clear_private_key", "batch_export", "backup", "rewrap"]
        );
    }
}
