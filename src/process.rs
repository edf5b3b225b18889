//! Process-wide protections for the secrets kps holds in memory (master keys, data keys, KMS and aksk
//! credentials, private keys on their way in and out).
//!
//! [`make_non_dumpable`] clears the kernel's `dumpable` flag (`prctl(PR_SET_DUMPABLE, 0)`): no core dump is
//! written on a crash, other processes of the same user cannot `ptrace` kps or read `/proc/<pid>/mem`,
//! `environ` and the like (its `/proc/<pid>` entries become root's). The flag survives `fork` and is reset
//! by `execve`, so children kps starts are unaffected. The call goes through `rustix`'s safe wrapper:
//! `unsafe_code` stays forbidden in kps. Root on the host is not kept out by this (see README, Security
//! model); `LimitCORE=0` in the systemd unit is the second line for core dumps.

use rustix::process::{DumpableBehavior, dumpable_behavior, set_dumpable_behavior};

/// Marks the calling process non-dumpable. Call it first thing, before any secret is read.
pub fn make_non_dumpable() -> std::io::Result<()> {
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// Whether the calling process is currently marked non-dumpable.
pub fn is_non_dumpable() -> std::io::Result<bool> {
    Ok(dumpable_behavior()? == DumpableBehavior::NotDumpable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_is_non_dumpable_afterwards() {
        // Test binaries start dumpable (the flag is reset by execve), so this fails without the call.
        make_non_dumpable().expect("prctl");
        assert!(is_non_dumpable().expect("prctl"));
        make_non_dumpable().expect("calling it twice is fine");
    }
}
