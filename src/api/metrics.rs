//! `GET /metrics`: what the edge counts (requests by route template, method and status; latency by route;
//! custody actions; per-caller limit rejections) plus, read at render time, the store's group-commit figures,
//! the KMS client's call counts and latencies, the hits and misses of every cache, TLS certificate reloads
//! and the process figures (`process_*`, from `/proc/self`).
//!
//! Labels are bounded by construction: routes are the templates of `ROUTE_TABLE` (never a raw path or a
//! key pair name), methods the standard ones or `other`, statuses three digits.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::Method;

use super::AppState;
use crate::metrics::{CacheCounts, Counter, Exposition, Histogram, LATENCY_BOUNDS};

/// A custody action, as counted here and named in the audit log (`super::audit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustodyAction {
    /// A private key sealed while creating or importing a key pair (Nova `key_protection`, V3 create,
    /// batch import).
    Escrow,
    /// V3 private-key import onto an existing key pair.
    ImportPrivateKey,
    ExportPrivateKey,
    BatchExport,
    ClearPrivateKey,
    /// Deletion of a key pair that held an escrowed private key.
    DeleteEscrowed,
}

impl CustodyAction {
    pub const ALL: [Self; 6] = [
        Self::Escrow,
        Self::ImportPrivateKey,
        Self::ExportPrivateKey,
        Self::BatchExport,
        Self::ClearPrivateKey,
        Self::DeleteEscrowed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Escrow => "escrow",
            Self::ImportPrivateKey => "import_private_key",
            Self::ExportPrivateKey => "export_private_key",
            Self::BatchExport => "batch_export",
            Self::ClearPrivateKey => "clear_private_key",
            Self::DeleteEscrowed => "delete_escrowed",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|a| *a == self).unwrap_or_default()
    }
}

/// Which per-caller limit turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Rate,
    Concurrency,
}

/// The edge's own figures. One per `AppState`, so that every app (and every test) counts on its own.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    requests: Mutex<Requests>,
    custody: [Counter; CustodyAction::ALL.len()],
    keys_exported: Counter,
    rate_limited: Counter,
    concurrency_limited: Counter,
}

#[derive(Debug, Default)]
struct Requests {
    counts: BTreeMap<(&'static str, &'static str, u16), u64>,
    latency: BTreeMap<&'static str, Histogram>,
}

impl ApiMetrics {
    /// Counts one answered request.
    pub fn record_request(&self, route: &'static str, method: &Method, status: u16, elapsed: Duration) {
        let method = method_label(method);
        let Ok(mut requests) = self.requests.lock() else { return };
        *requests.counts.entry((route, method, status)).or_default() += 1;
        requests.latency.entry(route).or_insert_with(|| Histogram::new(LATENCY_BOUNDS)).observe(elapsed.as_secs_f64());
    }

    /// Counts a custody action; `keys` is the number of private keys revealed by it (exports).
    pub fn record_custody(&self, action: CustodyAction, keys_revealed: u64) {
        self.custody[action.index()].increment();
        self.keys_exported.add(keys_revealed);
    }

    pub fn record_limited(&self, kind: LimitKind) {
        match kind {
            LimitKind::Rate => self.rate_limited.increment(),
            LimitKind::Concurrency => self.concurrency_limited.increment(),
        }
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The metrics page.
#[allow(clippy::cast_precision_loss)] // counts stay far below 2^53
pub fn render(state: &AppState) -> String {
    let metrics = &state.metrics;
    let mut page = Exposition::default();

    page.family("kps_build_info", "gauge", "Always 1; the version label is the kps version.");
    page.sample("kps_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    page.family("kps_log_lines_dropped_total", "counter", "Log lines that could not be written (stderr failing).");
    page.sample("kps_log_lines_dropped_total", &[], crate::logging::lines_dropped() as f64);

    {
        // A poisoned lock only means a panic elsewhere while counting; the figures are still usable.
        let requests = metrics.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        page.family(
            "kps_http_requests_total",
            "counter",
            "HTTP requests answered, by route template, method and status.",
        );
        for ((route, method, status), count) in &requests.counts {
            let status = status.to_string();
            page.sample(
                "kps_http_requests_total",
                &[("route", route), ("method", method), ("status", &status)],
                *count as f64,
            );
        }
        page.family(
            "kps_http_request_duration_seconds",
            "histogram",
            "Time from receiving a request to its response headers, by route template.",
        );
        for (route, histogram) in &requests.latency {
            page.histogram("kps_http_request_duration_seconds", &[("route", route)], histogram);
        }
    }

    page.family("kps_http_limited_total", "counter", "Requests refused with 429 KPS.1015, by the limit hit.");
    page.sample("kps_http_limited_total", &[("limit", "rps")], metrics.rate_limited.get() as f64);
    page.sample("kps_http_limited_total", &[("limit", "concurrency")], metrics.concurrency_limited.get() as f64);

    page.family("kps_custody_actions_total", "counter", "Successful private-key custody actions, by action.");
    for action in CustodyAction::ALL {
        page.sample(
            "kps_custody_actions_total",
            &[("action", action.name())],
            metrics.custody[action.index()].get() as f64,
        );
    }
    page.family(
        "kps_private_keys_exported_total",
        "counter",
        "Escrowed private keys revealed by export and batch export.",
    );
    page.sample("kps_private_keys_exported_total", &[], metrics.keys_exported.get() as f64);
    let (audit_lines, audit_write_failures) = state.audit.counts();
    page.family("kps_audit_lines_total", "counter", "Audit lines of custody requests, by outcome.");
    for (outcome, count) in audit_lines {
        page.sample("kps_audit_lines_total", &[("outcome", outcome.name())], count as f64);
    }
    page.family(
        "kps_audit_write_failures_total",
        "counter",
        "Audit lines that could not be written to audit.file (the request failed with audit.fail_closed).",
    );
    page.sample("kps_audit_write_failures_total", &[], audit_write_failures as f64);

    if let Some(sealed) = state.service.master_keyring_sealed() {
        page.family(
            "kps_master_keyring_sealed",
            "gauge",
            "1 while the master keyring waits for the KMS to unwrap it (auto-unseal; default custody answers 503 \
             KPS.1801), else 0.",
        );
        page.sample("kps_master_keyring_sealed", &[], if sealed { 1.0 } else { 0.0 });
    }

    if let Some(stats) = state.service.store_commit_stats() {
        use std::sync::atomic::Ordering::Relaxed;
        page.family("kps_store_commits_total", "counter", "Atomic write batches committed by the store.");
        page.sample("kps_store_commits_total", &[], stats.batches.load(Relaxed) as f64);
        page.family("kps_store_syncs_total", "counter", "Flush + fdatasync rounds of the group committer.");
        page.sample("kps_store_syncs_total", &[], stats.syncs.load(Relaxed) as f64);
        page.family("kps_store_commit_group_size", "histogram", "Write batches made durable by one sync.");
        page.histogram("kps_store_commit_group_size", &[], &stats.group_sizes);
    }

    if let Some(client) = state.service.kms_client() {
        let provider = client.provider();
        page.family("kps_kms_calls_total", "counter", "KMS calls made (retries included in one call), by operation.");
        let snapshot: Vec<_> = client.call_stats().snapshot().collect();
        for (operation, calls, _) in &snapshot {
            page.sample("kps_kms_calls_total", &[("provider", provider), ("operation", operation)], *calls as f64);
        }
        page.family("kps_kms_errors_total", "counter", "KMS calls that failed after their retries, by operation.");
        for (operation, _, errors) in &snapshot {
            page.sample("kps_kms_errors_total", &[("provider", provider), ("operation", operation)], *errors as f64);
        }
        page.family(
            "kps_kms_request_duration_seconds",
            "histogram",
            "Time a KMS call took, its retries and their back-off included, by operation.",
        );
        for (operation, histogram) in client.call_stats().durations() {
            page.histogram(
                "kps_kms_request_duration_seconds",
                &[("provider", provider), ("operation", operation)],
                histogram,
            );
        }
    }

    render_caches(&mut page, state);
    if state.https {
        page.family(
            "kps_tls_reloads_total",
            "counter",
            "TLS certificate reloads on SIGHUP, by outcome (a failed one keeps the previous certificate).",
        );
        page.sample("kps_tls_reloads_total", &[("outcome", "ok")], state.tls_reloads.succeeded.get() as f64);
        page.sample("kps_tls_reloads_total", &[("outcome", "error")], state.tls_reloads.failed.get() as f64);
    }
    render_process(&mut page);
    page.finish()
}

/// Hits and misses of each cache that is on, labelled `cache`: `list_pages` (rendered Nova list pages),
/// `kms_keys` (KMS key resolutions), `keystone_tokens` (token validations).
#[allow(clippy::cast_precision_loss)] // counts stay far below 2^53
fn render_caches(page: &mut Exposition, state: &AppState) {
    let mut caches: Vec<(&str, &CacheCounts)> = Vec::new();
    if state.list_pages.enabled() {
        caches.push(("list_pages", state.list_pages.counts()));
    }
    if let Some(client) = state.service.kms_client() {
        caches.push(("kms_keys", client.key_cache_counts()));
    }
    if let Some(counts) = state.authenticator.token_cache_counts() {
        caches.push(("keystone_tokens", counts));
    }
    if caches.is_empty() {
        return;
    }
    page.family("kps_cache_hits_total", "counter", "Lookups a cache answered, by cache.");
    for (cache, counts) in &caches {
        page.sample("kps_cache_hits_total", &[("cache", cache)], counts.hits() as f64);
    }
    page.family("kps_cache_misses_total", "counter", "Lookups a cache could not answer, by cache.");
    for (cache, counts) in &caches {
        page.sample("kps_cache_misses_total", &[("cache", cache)], counts.misses() as f64);
    }
}

/// The `process_*` families of Prometheus' client libraries; left out where `/proc/self` cannot be read.
#[allow(clippy::cast_precision_loss)] // byte and fd counts stay far below 2^53
fn render_process(page: &mut Exposition) {
    let Some(process) = crate::metrics::process::read() else { return };
    page.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
    page.sample("process_cpu_seconds_total", &[], process.cpu_seconds);
    page.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    page.sample("process_resident_memory_bytes", &[], process.resident_memory_bytes as f64);
    page.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    page.sample("process_virtual_memory_bytes", &[], process.virtual_memory_bytes as f64);
    page.family("process_open_fds", "gauge", "Number of open file descriptors.");
    page.sample("process_open_fds", &[], process.open_fds as f64);
    if let Some(max_fds) = process.max_fds {
        page.family("process_max_fds", "gauge", "Maximum number of open file descriptors.");
        page.sample("process_max_fds", &[], max_fds as f64);
    }
    page.family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
    page.sample("process_start_time_seconds", &[], process.start_time_seconds);
}
