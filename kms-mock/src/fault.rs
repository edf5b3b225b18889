//! Fault injection (spec/kms-huawei.md §5.4): a test sets, over `POST /_mock/fault`, what the next `count`
//! KMS calls answer instead of being served — an error status, a delay, or a malformed success. Touches only
//! its own slot; the server decides where a fault applies.

use std::sync::Mutex;

use serde::Deserialize;
use serde_json::Value;

use crate::lock;

/// A fault to inject into the next `count` KMS calls (§5.4).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Answer this status with `KMS.0101` instead of serving.
    #[serde(default)]
    pub status: Option<u16>,
    /// Sleep this long before serving (or failing).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Answer 200 with this JSON document instead of serving (a malformed reply, e.g. `{}`).
    #[serde(default)]
    pub answer: Option<Value>,
    #[serde(default = "one")]
    pub count: u64,
}

fn one() -> u64 {
    1
}

/// The fault waiting for the next KMS calls, if any.
#[derive(Default)]
pub struct FaultSlot(Mutex<Option<Fault>>);

impl FaultSlot {
    /// Replaces the waiting fault (`None` clears it).
    pub fn set(&self, fault: Option<Fault>) {
        *lock(&self.0) = fault;
    }

    /// Takes one use of the injected fault, if any.
    pub fn take(&self) -> Option<Fault> {
        let mut slot = lock(&self.0);
        let fault = slot.as_mut()?;
        if fault.count == 0 {
            *slot = None;
            return None;
        }
        fault.count -= 1;
        let taken = fault.clone();
        if fault.count == 0 {
            *slot = None;
        }
        Some(taken)
    }
}
