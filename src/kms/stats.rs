//! Call counts of a KMS client, by operation, for `GET /metrics`: calls made (after retries, one per
//! operation the client was asked for) and calls that failed.

use crate::metrics::Counter;

/// The operations a KMS client performs, by the provider's action names (Huawei, then AWS).
pub const OPERATIONS: [&str; 9] = [
    "list-keys",
    "describe-key",
    "create-datakey",
    "encrypt-datakey",
    "decrypt-datakey",
    "DescribeKey",
    "GenerateDataKey",
    "Encrypt",
    "Decrypt",
];

#[derive(Debug, Default)]
pub struct KmsCallStats {
    calls: [Counter; OPERATIONS.len()],
    errors: [Counter; OPERATIONS.len()],
}

impl KmsCallStats {
    /// Counts one finished call of `operation` (an unknown name is not counted).
    pub fn record(&self, operation: &str, succeeded: bool) {
        let Some(index) = OPERATIONS.iter().position(|o| *o == operation) else { return };
        self.calls[index].increment();
        if !succeeded {
            self.errors[index].increment();
        }
    }

    /// `(operation, calls, errors)` for every operation.
    pub fn snapshot(&self) -> impl Iterator<Item = (&'static str, u64, u64)> + '_ {
        OPERATIONS
            .iter()
            .enumerate()
            .map(|(index, operation)| (*operation, self.calls[index].get(), self.errors[index].get()))
    }
}
