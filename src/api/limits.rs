//! Per-caller limits (`limits.per_caller_concurrency`, `limits.per_caller_rps`), checked right after
//! authentication (spec/errors.md §4 step 2): a caller over either limit gets 429 KPS.1015 with
//! `Retry-After`. The caller is the authenticated `(user_id, project_id)`.
//!
//! Rate: a token bucket per caller holding at most one second's worth of requests (`rps`), refilled
//! continuously. Concurrency: a count of the caller's requests in flight, released when the handler is done
//! (a `Permit` dropped), also when the request times out.
//!
//! Memory stays bounded by the callers active in about the last second: an entry with nothing in flight and
//! a full bucket is indistinguishable from a fresh one, so sweeps drop it. A sweep runs whenever the table has
//! doubled since the last one, which keeps the cost amortised O(1) per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::StatusCode;

use super::auth::Caller;
use super::error::ApiError;
use super::metrics::LimitKind;

/// The table is not swept below this many callers.
const MIN_SWEEP_SIZE: usize = 1024;

#[derive(Debug)]
pub struct CallerLimits {
    /// In-flight requests per caller; 0 = unlimited.
    concurrency: u32,
    /// Requests per second per caller; 0 = unlimited.
    rps: u32,
    callers: Mutex<Callers>,
}

#[derive(Debug)]
struct Callers {
    by_caller: HashMap<CallerKey, CallerState>,
    sweep_at: usize,
}

type CallerKey = (String, String);

#[derive(Debug)]
struct CallerState {
    in_flight: u32,
    tokens: f64,
    refilled: Instant,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub kind: LimitKind,
    /// Whole seconds until a retry can succeed (at least 1).
    pub retry_after: u64,
}

impl Limited {
    /// 429 KPS.1015 with `Retry-After`.
    pub fn into_error(self) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "KPS.1015",
            format!("Rate limit exceeded, retry after {} seconds.", self.retry_after),
        );
        error.retry_after = Some(self.retry_after);
        error
    }
}

/// One admitted request; releases its concurrency slot when dropped.
#[derive(Debug)]
pub struct Permit<'a> {
    limits: &'a CallerLimits,
    key: Option<CallerKey>,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut callers = self.limits.lock();
        if let Some(state) = callers.by_caller.get_mut(&key) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }
}

impl CallerLimits {
    /// `None` when both limits are 0 (unlimited): nothing to check or remember.
    pub fn new(concurrency: u32, rps: u32) -> Option<Self> {
        (concurrency != 0 || rps != 0).then(|| Self {
            concurrency,
            rps,
            callers: Mutex::new(Callers { by_caller: HashMap::new(), sweep_at: MIN_SWEEP_SIZE }),
        })
    }

    /// Admits one request of `caller`, or says which limit it hit.
    pub fn admit(&self, caller: &Caller) -> Result<Permit<'_>, Limited> {
        self.admit_at(caller, Instant::now())
    }

    fn admit_at(&self, caller: &Caller, now: Instant) -> Result<Permit<'_>, Limited> {
        let key = (caller.user_id.clone(), caller.project_id.clone());
        let rps = f64::from(self.rps);
        let mut callers = self.lock();
        if callers.by_caller.len() >= callers.sweep_at {
            callers.sweep(rps, now);
        }
        let state =
            callers.by_caller.entry(key.clone()).or_insert(CallerState { in_flight: 0, tokens: rps, refilled: now });
        if self.concurrency != 0 && state.in_flight >= self.concurrency {
            return Err(Limited { kind: LimitKind::Concurrency, retry_after: 1 });
        }
        if self.rps != 0 {
            state.refill(rps, now);
            if state.tokens < 1.0 {
                // Whole seconds until one token is back; the cast is of a small positive number.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let retry_after = ((1.0 - state.tokens) / rps).ceil().max(1.0) as u64;
                return Err(Limited { kind: LimitKind::Rate, retry_after });
            }
            state.tokens -= 1.0;
        }
        state.in_flight += 1;
        Ok(Permit { limits: self, key: Some(key) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Callers> {
        // The table only holds counters; after a panic elsewhere it is still usable.
        self.callers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Callers currently remembered (tests).
    pub fn tracked_callers(&self) -> usize {
        self.lock().by_caller.len()
    }
}

impl CallerState {
    fn refill(&mut self, rps: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rps).min(rps);
        self.refilled = now;
    }

    /// Nothing in flight and a full bucket: the same as no entry at all.
    fn is_idle(&mut self, rps: f64, now: Instant) -> bool {
        self.refill(rps, now);
        self.in_flight == 0 && self.tokens >= rps
    }
}

impl Callers {
    fn sweep(&mut self, rps: f64, now: Instant) {
        self.by_caller.retain(|_, state| !state.is_idle(rps, now));
        self.sweep_at = (2 * self.by_caller.len()).max(MIN_SWEEP_SIZE);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn caller(user: &str) -> Caller {
        Caller { user_id: user.into(), project_id: "p".into(), roles: vec![] }
    }

    #[test]
    fn unlimited_needs_no_table() {
        assert!(CallerLimits::new(0, 0).is_none());
    }

    #[test]
    fn rate_allows_a_burst_of_rps_then_refills() {
        let limits = CallerLimits::new(0, 2).expect("limited");
        let start = Instant::now();
        let alice = caller("alice");
        drop(limits.admit_at(&alice, start).expect("1st"));
        drop(limits.admit_at(&alice, start).expect("2nd"));
        let refused = limits.admit_at(&alice, start).expect_err("3rd in the same instant");
        assert_eq!(refused, Limited { kind: LimitKind::Rate, retry_after: 1 });
        assert!(limits.admit_at(&caller("bob"), start).is_ok(), "callers are limited separately");
        assert!(limits.admit_at(&alice, start + Duration::from_millis(500)).is_ok(), "half a second = one token");
        assert!(limits.admit_at(&alice, start + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn retry_after_covers_the_wait_for_one_token() {
        let limits = CallerLimits::new(0, 1).expect("limited");
        let start = Instant::now();
        let alice = caller("alice");
        drop(limits.admit_at(&alice, start).expect("1st"));
        let refused = limits.admit_at(&alice, start + Duration::from_millis(100)).expect_err("2nd");
        assert_eq!(refused.retry_after, 1);
        let error = refused.into_error();
        assert_eq!((error.status.as_u16(), error.code), (429, "KPS.1015"));
        assert_eq!(error.message, "Rate limit exceeded, retry after 1 seconds.");
        assert_eq!(error.retry_after, Some(1));
    }

    #[test]
    fn concurrency_counts_requests_in_flight() {
        let limits = CallerLimits::new(2, 0).expect("limited");
        let alice = caller("alice");
        let first = limits.admit(&alice).expect("1st");
        let second = limits.admit(&alice).expect("2nd");
        let refused = limits.admit(&alice).expect_err("3rd while two are in flight");
        assert_eq!(refused, Limited { kind: LimitKind::Concurrency, retry_after: 1 });
        assert!(limits.admit(&caller("bob")).is_ok());
        drop(first);
        let third = limits.admit(&alice).expect("a slot was released");
        drop((second, third));
    }

    #[test]
    fn a_refused_request_takes_no_slot_and_no_token() {
        let limits = CallerLimits::new(1, 1).expect("limited");
        let start = Instant::now();
        let alice = caller("alice");
        let held = limits.admit_at(&alice, start).expect("1st");
        assert_eq!(limits.admit_at(&alice, start).expect_err("busy").kind, LimitKind::Concurrency);
        drop(held);
        assert_eq!(limits.admit_at(&alice, start).expect_err("no token").kind, LimitKind::Rate);
        assert!(limits.admit_at(&alice, start + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn idle_callers_are_evicted_so_memory_stays_bounded() {
        let limits = CallerLimits::new(4, 10).expect("limited");
        let start = Instant::now();
        for i in 0..5000 {
            drop(limits.admit_at(&caller(&format!("u{i}")), start).expect("admit"));
        }
        let busy = limits.admit_at(&caller("busy"), start).expect("admit");
        assert!(limits.tracked_callers() <= 2 * 5001, "{}", limits.tracked_callers());
        // A second later every bucket is full again: only the caller with a request in flight stays.
        let later = start + Duration::from_secs(2);
        for i in 0..MIN_SWEEP_SIZE * 4 {
            drop(limits.admit_at(&caller(&format!("v{i}")), later + Duration::from_secs(2 + i as u64)).expect("admit"));
        }
        assert!(limits.tracked_callers() < 2 * MIN_SWEEP_SIZE + 2, "{}", limits.tracked_callers());
        drop(busy);
    }
}
