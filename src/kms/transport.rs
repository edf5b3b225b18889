//! What every KMS adapter shares (spec/kms-huawei.md §1, §6, §7): the timeouts, retries and budget of one
//! call, the ways a call can fail, and the one table that maps a failure to a catalogue error.
//!
//! Rules that must stay true for every provider: at most `max_attempts` attempts, retried only on connection
//! errors, timeouts, HTTP 429, 5xx and the providers' throttling/internal codes; every attempt is cut off at
//! `attempt_timeout` and by the whole-call `budget`, backoff included; error details carry only the
//! operation, the attempt count and the upstream error code.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;

use super::KmsError;

/// Timeouts, retries and budget of one KMS call (§1). `Default` is the specification; tests shorten it.
#[derive(Debug, Clone)]
pub struct Transport {
    pub connect_timeout: Duration,
    /// Connect + request + response body of one attempt.
    pub attempt_timeout: Duration,
    /// The whole call: attempts and backoff. No attempt starts after it is spent.
    pub budget: Duration,
    pub max_attempts: u32,
    /// Sleep before attempt 2, 3, ... (the last value repeats).
    pub backoff: Vec<Duration>,
    /// Random extra sleep, up to this much, added to each backoff.
    pub max_jitter: Duration,
}

impl Default for Transport {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(10),
            budget: Duration::from_secs(25),
            max_attempts: 3,
            backoff: vec![Duration::from_millis(200), Duration::from_millis(800)],
            max_jitter: Duration::from_millis(100),
        }
    }
}

impl Transport {
    /// Runs `attempt` under the retry rules: the first success, or the last failure with the attempt count.
    pub(super) async fn run<T, F, Fut>(&self, operation: &'static str, mut attempt: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, FailureKind>>,
    {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            let remaining = self.budget.saturating_sub(started.elapsed());
            attempts += 1;
            let kind = match tokio::time::timeout(self.attempt_timeout.min(remaining), attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(kind)) => kind,
                Err(_) => FailureKind::Timeout,
            };
            tracing::debug!(operation, attempts, failure = ?kind, "KMS call failed");
            if !kind.is_retryable() || attempts >= self.max_attempts {
                return Err(Failure { operation, attempts, kind });
            }
            let backoff = self.backoff(attempts);
            if started.elapsed() + backoff >= self.budget {
                return Err(Failure { operation, attempts, kind });
            }
            tokio::time::sleep(backoff).await;
        }
    }

    fn backoff(&self, attempts_so_far: u32) -> Duration {
        let index = usize::try_from(attempts_so_far.saturating_sub(1)).unwrap_or(usize::MAX);
        let base = self.backoff.get(index).or(self.backoff.last()).copied().unwrap_or_default();
        let jitter_ms = u64::try_from(self.max_jitter.as_millis()).unwrap_or(0);
        base + Duration::from_millis(rand::thread_rng().gen_range(0..=jitter_ms))
    }
}

/// Why a KMS call failed after its attempts.
#[derive(Debug)]
pub(super) struct Failure {
    pub operation: &'static str,
    pub attempts: u32,
    pub kind: FailureKind,
}

#[derive(Debug)]
pub(super) enum FailureKind {
    Timeout,
    Connection,
    /// An error answer: the HTTP status and the provider's error code (Huawei `error_code`, AWS `__type`).
    Status {
        status: u16,
        code: Option<String>,
    },
    /// A 2xx answer kps cannot use.
    UnusableBody,
}

/// Upstream codes that mean "try again" whatever their HTTP status (Huawei §6, AWS §7).
const RETRYABLE_CODES: [&str; 6] = [
    "KMS.0101",
    "KMS.0102",
    "ThrottlingException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
];

impl FailureKind {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout | Self::Connection => true,
            Self::Status { status, code } => {
                *status == 429 || *status >= 500 || code.as_deref().is_some_and(|c| RETRYABLE_CODES.contains(&c))
            }
            Self::UnusableBody => false,
        }
    }
}

/// An upstream error code as kps reports it: only a short code-like string, never free text.
pub(super) fn plausible_code(code: &str) -> Option<String> {
    let plausible = !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    plausible.then(|| code.to_owned())
}

impl Failure {
    pub fn unusable(operation: &'static str) -> Self {
        Self { operation, attempts: 1, kind: FailureKind::UnusableBody }
    }

    /// The mapping of §6 (Huawei codes) and §7 (AWS `__type`s): by error code first, then by status. `key`
    /// is the reference as the caller gave it. The decrypt operations are the ones whose "bad ciphertext"
    /// answers mean the stored data key cannot be unwrapped (KPS.1806).
    pub fn into_error(self, key: &str) -> KmsError {
        let Self { operation, attempts, kind } = self;
        let key = key.to_owned();
        let unavailable = |detail: String| KmsError::Unavailable { detail };
        let plural = if attempts == 1 { "attempt" } else { "attempts" };
        let retryable = kind.is_retryable();
        match kind {
            FailureKind::Timeout => unavailable(format!("timeout after {attempts} {plural} calling {operation}")),
            FailureKind::Connection => {
                unavailable(format!("connection failed after {attempts} {plural} calling {operation}"))
            }
            FailureKind::UnusableBody => unavailable(format!("{operation} answered an unusable body")),
            FailureKind::Status { status, code } => {
                let answered = match &code {
                    Some(code) => format!("{operation} answered {code}"),
                    None => format!("{operation} answered HTTP {status}"),
                };
                let decrypting = matches!(operation, "decrypt-datakey" | "Decrypt");
                match code.as_deref() {
                    Some("KMS.0205" | "KMS.0207" | "NotFoundException") => return KmsError::KeyNotFound { key },
                    Some("KMS.0209" | "DisabledException") => return KmsError::KeyDisabled { key },
                    Some("KMS.0210") => return KmsError::KeyUnusable { key, state: "4".into() },
                    Some("KMSInvalidStateException") => {
                        return KmsError::KeyUnusable { key, state: "KMSInvalidStateException".into() };
                    }
                    Some(
                        "KMS.0301"
                        | "KMS.0302"
                        | "KMS.0303"
                        | "KMS.0306"
                        | "AccessDeniedException"
                        | "UnrecognizedClientException"
                        | "InvalidSignatureException",
                    ) => {
                        return KmsError::CredentialsRejected { detail: answered };
                    }
                    Some("KMS.0308") if decrypting => return KmsError::Undecryptable { detail: answered },
                    Some("InvalidCiphertextException" | "IncorrectKeyException") => {
                        return KmsError::Undecryptable { detail: answered };
                    }
                    _ => {}
                }
                if matches!(status, 401 | 403) {
                    return KmsError::CredentialsRejected { detail: answered };
                }
                if retryable {
                    let status_text = match &code {
                        Some(code) => format!("HTTP {status} ({code})"),
                        None => format!("HTTP {status}"),
                    };
                    return unavailable(format!("{operation} answered {status_text} after {attempts} {plural}"));
                }
                unavailable(answered)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(operation: &'static str, status: u16, code: &str) -> KmsError {
        let kind = FailureKind::Status { status, code: Some(code.to_owned()) };
        Failure { operation, attempts: 1, kind }.into_error("k")
    }

    #[test]
    fn aws_types_map_like_their_huawei_counterparts() {
        let table = [
            ("GenerateDataKey", 400, "NotFoundException", "KPS.1802"),
            ("GenerateDataKey", 400, "DisabledException", "KPS.1803"),
            ("GenerateDataKey", 400, "KMSInvalidStateException", "KPS.1804"),
            ("Decrypt", 400, "InvalidCiphertextException", "KPS.1806"),
            ("Decrypt", 400, "IncorrectKeyException", "KPS.1806"),
            ("DescribeKey", 400, "AccessDeniedException", "KPS.1805"),
            ("DescribeKey", 400, "UnrecognizedClientException", "KPS.1805"),
            ("DescribeKey", 400, "InvalidSignatureException", "KPS.1805"),
            ("DescribeKey", 403, "SomethingElse", "KPS.1805"),
            ("DescribeKey", 400, "ThrottlingException", "KPS.1801"),
            ("DescribeKey", 500, "KMSInternalException", "KPS.1801"),
            ("DescribeKey", 400, "ValidationException", "KPS.1801"),
            ("decrypt-datakey", 400, "KMS.0308", "KPS.1806"),
            ("create-datakey", 400, "KMS.0308", "KPS.1801"),
        ];
        for (operation, http, code, expected) in table {
            assert_eq!(status(operation, http, code).code(), expected, "{operation} {http} {code}");
        }
    }

    #[test]
    fn throttling_and_internal_codes_are_retried_whatever_their_status() {
        for code in ["ThrottlingException", "KMS.0101", "KeyUnavailableException"] {
            assert!(FailureKind::Status { status: 400, code: Some(code.into()) }.is_retryable(), "{code}");
        }
        assert!(!FailureKind::Status { status: 400, code: Some("NotFoundException".into()) }.is_retryable());
        assert!(FailureKind::Status { status: 503, code: None }.is_retryable());
        assert!(!FailureKind::UnusableBody.is_retryable());
    }

    #[test]
    fn only_code_like_strings_are_reported() {
        assert_eq!(plausible_code("KMS.0205").as_deref(), Some("KMS.0205"));
        assert_eq!(plausible_code("NotFoundException").as_deref(), Some("NotFoundException"));
        assert_eq!(plausible_code("key arn:aws:kms is gone"), None);
        assert_eq!(plausible_code(""), None);
    }
}
