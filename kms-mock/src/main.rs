//! `kms-mock`: a stand-alone Huawei KMS v1.0 subset for development and tests (spec/kms-huawei.md §5) — the
//! data-key calls of §4, the key lifecycle calls of §5.2, Huawei-shaped errors (§6), SDK-HMAC-SHA256
//! verification through `kps::signing`, fault injection (§5.4) and an optional state file. Not for
//! production: key material lives in memory and, with `--state`, in a plain JSON file.
//!
//! Its own crate, so that nothing of it is in the kps library; it uses kps only for what both sides must
//! share: the signature scheme, the key id form and the SIGTERM/SIGINT wait. Rooms: `config` (command line
//! and settings), `server` (listener, routes, authentication), `actions` (the KMS calls and their errors),
//! `keys` (key state, seed and state file), `fault` (injected faults). Tests drive the built binary
//! (`tests/`), as kps's own integration tests do.

mod actions;
mod config;
mod fault;
mod keys;
mod server;

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Mutex, MutexGuard, PoisonError};

use clap::Parser;

use config::{MockArgs, MockConfig, MockError};
use server::MockServer;

#[tokio::main]
async fn main() -> ExitCode {
    match run(MockArgs::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kms-mock: {error}");
            ExitCode::from(2)
        }
    }
}

/// `kms-mock`: start, print `key <alias> <id>` per key and `listening on <addr>`, serve until SIGTERM/SIGINT.
async fn run(args: MockArgs) -> Result<(), MockError> {
    let listen = args.listen.clone();
    let server = MockServer::start(&listen, MockConfig::try_from(args)?).await?;
    let mut stdout = std::io::stdout().lock();
    for (alias, id) in server.keys() {
        writeln!(stdout, "key {alias} {id}")?;
    }
    writeln!(stdout, "listening on {}", server.addr())?;
    stdout.flush()?;
    drop(stdout);
    kps::connections::shutdown_signal().await;
    server.shutdown().await;
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Handlers never leave the data half-updated across a panic point that matters for a mock.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
