//! Prometheus metric primitives: counters and fixed-bucket histograms on atomics, and a writer for the text
//! exposition format 0.0.4.
//!
//! Hand-rolled instead of the `metrics` + `metrics-exporter-prometheus` crates: kps needs a handful of
//! counters and histograms with small, fixed label sets, which is a few dozen lines here; the exporter would
//! add a dozen crates (metrics-util, quanta, sketches-ddsketch, portable-atomic, ...) to every clean build and,
//! above all, a process-global recorder — every `app()` in one test process would share its counts, so tests
//! could not check exact numbers. Here each layer owns its figures (the store its commit stats, the KMS client
//! its call counts, the edge its request counts) and `GET /metrics` reads them all at render time.

pub mod process;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    pub fn increment(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Lookups of one cache that it answered (hits) and that went to the source (misses). The hit ratio is left
/// to the query (`rate(hits) / (rate(hits) + rate(misses))`), as Prometheus' conventions ask.
#[derive(Debug, Default)]
pub struct CacheCounts {
    hits: Counter,
    misses: Counter,
}

impl CacheCounts {
    pub fn hit(&self) {
        self.hits.increment();
    }

    pub fn miss(&self) {
        self.misses.increment();
    }

    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    pub fn misses(&self) -> u64 {
        self.misses.get()
    }
}

/// Observations counted into fixed upper bounds (`le`), plus their count and sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last one is `+Inf`.
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// An `f64`, as bits.
    sum: AtomicU64,
}

/// Request latency bounds, in seconds.
pub const LATENCY_BOUNDS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Network call latency bounds (a KMS call, its retries included), in seconds: 5 ms to 10 s.
pub const NETWORK_BOUNDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Bounds for small counts (batch sizes).
pub const SIZE_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        let index = self.bounds.iter().position(|bound| value <= *bound).unwrap_or(self.bounds.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        // The closure always returns Some, so this cannot fail.
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + value).to_bits()));
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }
}

/// A metrics page being written: families announced once with `# HELP` and `# TYPE`, then their samples.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Exposition {
    /// Announces a family (`kind`: `counter`, `gauge` or `histogram`).
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", format_value(value));
    }

    /// The `_bucket`, `_sum` and `_count` samples of one histogram.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let mut cumulative = 0;
        for (index, bucket) in histogram.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = histogram.bounds.get(index).map_or_else(|| "+Inf".to_owned(), |b| format_value(*b));
            let _ = write!(self.text, "{name}_bucket");
            write_labels(&mut self.text, labels, Some(&le));
            let _ = writeln!(self.text, " {cumulative}");
        }
        let _ = write!(self.text, "{name}_sum");
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", format_value(histogram.sum()));
        let _ = write!(self.text, "{name}_count");
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", histogram.count());
    }

    pub fn finish(self) -> String {
        self.text
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
    for (index, (name, value)) in all.enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn format_value(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    // Integral values print without a fraction, as Prometheus' own clients do.
    if value.fract() == 0.0 && value.abs() < 1e15 { format!("{value:.0}") } else { format!("{value}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_last() {
        let histogram = Histogram::new(&[1.0, 2.0]);
        for value in [0.5, 1.0, 1.5, 7.0] {
            histogram.observe(value);
        }
        let mut page = Exposition::default();
        page.family("x", "histogram", "test");
        page.histogram("x", &[("route", "r")], &histogram);
        let text = page.finish();
        assert!(text.contains("x_bucket{route=\"r\",le=\"1\"} 2\n"), "{text}");
        assert!(text.contains("x_bucket{route=\"r\",le=\"2\"} 3\n"), "{text}");
        assert!(text.contains("x_bucket{route=\"r\",le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("x_sum{route=\"r\"} 10\n"), "{text}");
        assert!(text.contains("x_count{route=\"r\"} 4\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut page = Exposition::default();
        page.sample("y", &[("a", "q\"b\\\n")], 1.5);
        assert_eq!(page.finish(), "y{a=\"q\\\"b\\\\\\n\"} 1.5\n");
    }
}
