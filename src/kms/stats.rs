//! Call counts of a KMS client, by operation, for `GET /metrics`: calls made (after retries, one per
//! operation the client was asked for), calls that failed, and how long each whole call took (its retries
//! and their back-off included: the time a request waited on the KMS).

use std::time::Duration;

use crate::metrics::{Counter, Histogram, NETWORK_BOUNDS};

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
    durations: Vec<Histogram>,
}

impl KmsCallStats {
    /// Counters for one adapter's `operations` (the metrics show exactly these).
    pub fn new(operations: &'static [&'static str]) -> Self {
        let counters = || operations.iter().map(|_| Counter::default()).collect();
        let durations = operations.iter().map(|_| Histogram::new(NETWORK_BOUNDS)).collect();
        Self { operations, calls: counters(), errors: counters(), durations }
    }

    /// Counts one finished call of `operation` that took `elapsed` (an unknown name is not counted).
    pub fn record(&self, operation: &str, succeeded: bool, elapsed: Duration) {
        let Some(index) = self.operations.iter().position(|o| *o == operation) else { return };
        self.calls[index].increment();
        self.durations[index].observe(elapsed.as_secs_f64());
        if !succeeded {
            self.errors[index].increment();
        }
    }

    /// `(operation, durations of its calls)` for every operation of the adapter.
    pub fn durations(&self) -> impl Iterator<Item = (&'static str, &Histogram)> + '_ {
        self.operations.iter().copied().zip(&self.durations)
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
        stats.record("GenerateDataKey", true, Duration::from_millis(20));
        stats.record("GenerateDataKey", false, Duration::from_secs(3));
        stats.record("create-datakey", true, Duration::ZERO);
        let snapshot: Vec<_> = stats.snapshot().collect();
        assert_eq!(snapshot.len(), AWS_OPERATIONS.len());
        assert!(snapshot.contains(&("GenerateDataKey", 2, 1)));
        assert!(snapshot.iter().all(|(operation, _, _)| *operation != "create-datakey"));
        let (_, generate) = stats.durations().find(|(operation, _)| *operation == "GenerateDataKey").expect("op");
        assert_eq!(generate.count(), 2);
        assert!((generate.sum() - 3.02).abs() < 1e-9);
    }
}
