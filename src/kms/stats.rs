//! Call counts of a KMS client, by operation, for `GET /metrics`: calls made (after retries, one per
//! operation the client was asked for) and calls that failed.

use crate::metrics::Counter;

/// The operations of the Huawei adapter, by action name.
pub const HUAWEI_OPERATIONS: &[&str] =
    &["list-keys", "describe-key", "create-datakey", "encrypt-datakey", "decrypt-datakey"];
/// The operations of the AWS adapter, by API name.
pub const AWS_OPERATIONS: &[&str] = &["DescribeKey", "GenerateDataKey", "Encrypt", "Decrypt"];

#[derive(Debug)]
pub struct KmsCallStats {
    operations: &'static [&'static str],
    calls: Vec<Counter>,
    errors: Vec<Counter>,
}

impl KmsCallStats {
    /// Counters for one adapter's `operations` (the metrics show exactly these).
    pub fn new(operations: &'static [&'static str]) -> Self {
        let counters = || operations.iter().map(|_| Counter::default()).collect();
        Self { operations, calls: counters(), errors: counters() }
    }

    /// Counts one finished call of `operation` (an unknown name is not counted).
    pub fn record(&self, operation: &str, succeeded: bool) {
        let Some(index) = self.operations.iter().position(|o| *o == operation) else { return };
        self.calls[index].increment();
        if !succeeded {
            self.errors[index].increment();
        }
    }

    /// `(operation, calls, errors)` for every operation of the adapter.
    pub fn snapshot(&self) -> impl Iterator<Item = (&'static str, u64, u64)> + '_ {
        self.operations
            .iter()
            .enumerate()
            .map(|(index, operation)| (*operation, self.calls[index].get(), self.errors[index].get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_adapters_own_operations() {
        let stats = KmsCallStats::new(AWS_OPERATIONS);
        stats.record("GenerateDataKey", true);
        stats.record("GenerateDataKey", false);
        stats.record("create-datakey", true);
        let snapshot: Vec<_> = stats.snapshot().collect();
        assert_eq!(snapshot.len(), AWS_OPERATIONS.len());
        assert!(snapshot.contains(&("GenerateDataKey", 2, 1)));
        assert!(snapshot.iter().all(|(operation, _, _)| *operation != "create-datakey"));
    }
}
