//! Where log lines go: stderr, and never at the cost of a request, the committer or the process.
//!
//! tracing-subscriber's fmt layer reports a failed write of a log line with `eprintln!`, which panics when
//! stderr itself cannot be written (stderr on a full filesystem: "failed printing to stderr"), so a full
//! log disk dropped connections without an answer. kps's writer never reports a failure upward: a line that
//! cannot be written is dropped and counted (`kps_log_lines_dropped_total` in `GET /metrics`), and the layer's
//! internal error printing is switched off as well (`main.rs`).

use std::io::Write;

use tracing_subscriber::fmt::MakeWriter;

use crate::metrics::Counter;

/// Log lines that could not be written, process-wide (logging is process-wide too).
static LINES_DROPPED: Counter = Counter::new();

/// How many log lines could not be written since the process started.
pub fn lines_dropped() -> u64 {
    LINES_DROPPED.get()
}

/// The fmt layer's writer: stderr, dropping (and counting) what it cannot take.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = DroppingWriter<std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        DroppingWriter { out: std::io::stderr(), dropped: &LINES_DROPPED }
    }
}

/// Writes each buffer whole to `out`, or drops it and counts one line: it never returns an error. The fmt
/// layer hands over one formatted event per `write` call.
pub struct DroppingWriter<W> {
    out: W,
    dropped: &'static Counter,
}

impl<W: Write> Write for DroppingWriter<W> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        if self.out.write_all(line).is_err() {
            self.dropped.increment();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.out.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails like stderr on a full filesystem.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::Error::from_raw_os_error(28))
        }
    }

    #[test]
    fn a_line_that_cannot_be_written_is_dropped_and_counted_never_an_error() {
        static DROPPED: Counter = Counter::new();
        let mut writer = DroppingWriter { out: Full, dropped: &DROPPED };
        for _ in 0..3 {
            writer.write_all(b"2026-12-06T09:15:49Z INFO kps: request\n").expect("never an error");
        }
        writer.flush().expect("never an error");
        assert_eq!(DROPPED.get(), 3);

        let mut kept = DroppingWriter { out: Vec::new(), dropped: &DROPPED };
        kept.write_all(b"line\n").expect("write");
        assert_eq!((kept.out.as_slice(), DROPPED.get()), (b"line\n".as_slice(), 3));
    }

    /// The whole chain as `main` builds it, over a failing writer: events are dropped, nothing panics.
    #[test]
    fn the_fmt_layer_over_a_failing_writer_neither_panics_nor_reports() {
        static DROPPED: Counter = Counter::new();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| DroppingWriter { out: Full, dropped: &DROPPED })
            .log_internal_errors(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..5 {
                tracing::info!(i, "a line for a full disk");
            }
        });
        assert_eq!(DROPPED.get(), 5);
    }
}
