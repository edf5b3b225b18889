//! The process figures every Prometheus client library exports (`process_*`), read from `/proc/self` at
//! scrape time: CPU time, resident and virtual memory, open and maximum file descriptors, start time.
//!
//! A few lines of parsing instead of the `procfs` crate, which would bring its own dependency tree for five
//! numbers. On a system without `/proc` (not Linux) [`read`] answers `None` and the family is left out, as
//! the Go and Python clients do.
//!
//! kps is non-dumpable (`crate::process`), which hands its `/proc/<pid>` entries to root; the kernel still
//! lets the process itself read them, `fd/` included.

use std::path::Path;

/// One reading of the process figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    /// Since the Unix epoch.
    pub start_time_seconds: f64,
    pub open_fds: u64,
    /// The soft limit on open files; `None` when unlimited.
    pub max_fds: Option<u64>,
}

/// The calling process's figures, or `None` where `/proc` cannot be read.
pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot_time = boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let open_fds = count_entries(Path::new("/proc/self/fd"))?;
    let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    from_stat(&stat, boot_time, rustix::param::clock_ticks_per_second(), rustix::param::page_size(), open_fds, max_fds)
}

/// The figures from the text of `/proc/self/stat` (proc(5)), the boot time in seconds since the epoch, the
/// clock tick rate and the page size.
#[allow(clippy::cast_precision_loss)] // tick counts and times stay far below 2^53
fn from_stat(
    stat: &str,
    boot_time: u64,
    ticks_per_second: u64,
    page_size: usize,
    open_fds: u64,
    max_fds: Option<u64>,
) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may hold spaces and ')': the fields after it start
    // behind the last ')'. `fields[0]` is then field 3 (state).
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |number: usize| -> Option<u64> { fields.get(number.checked_sub(3)?)?.parse().ok() };
    let ticks = ticks_per_second.max(1) as f64;
    let (utime, stime, start_ticks) = (field(14)?, field(15)?, field(22)?);
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / ticks,
        virtual_memory_bytes: field(23)?,
        resident_memory_bytes: field(24)?.saturating_mul(page_size as u64),
        start_time_seconds: boot_time as f64 + start_ticks as f64 / ticks,
        open_fds,
        max_fds,
    })
}

/// `btime` of `/proc/stat`: the boot time, in seconds since the epoch.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat.lines().find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

fn count_entries(dir: &Path) -> Option<u64> {
    Some(std::fs::read_dir(dir).ok()?.filter(Result::is_ok).count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        // A command name with a space and a ')' in it, as proc(5) warns.
        let stat = "4242 (kps) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 50 0 0 20 0 9 0 1000 \
                    123456789 3000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let stats = from_stat(stat, 1_700_000_000, 100, 4096, 12, Some(1024)).expect("parsed");
        assert!((stats.cpu_seconds - 3.0).abs() < 1e-9, "{stats:?}");
        assert_eq!(stats.virtual_memory_bytes, 123_456_789);
        assert_eq!(stats.resident_memory_bytes, 3000 * 4096);
        assert!((stats.start_time_seconds - 1_700_000_010.0).abs() < 1e-9, "{stats:?}");
        assert_eq!((stats.open_fds, stats.max_fds), (12, Some(1024)));
        assert_eq!(from_stat("garbage", 0, 100, 4096, 0, None), None);
    }

    #[test]
    fn boot_time_is_the_btime_line() {
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"), Some(1_700_000_000));
        assert_eq!(boot_time("cpu  1 2 3\n"), None);
    }

    #[test]
    fn this_process_has_plausible_figures() {
        let stats = read().expect("/proc is readable on Linux");
        assert!(stats.resident_memory_bytes > 0 && stats.virtual_memory_bytes >= stats.resident_memory_bytes);
        assert!(stats.open_fds > 0);
        assert!(stats.start_time_seconds > 1_600_000_000.0, "{stats:?}");
    }
}
