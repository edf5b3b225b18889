//! Baseline for `bench/store.sh`: how many key-pair-sized records per second sled 0.34 itself makes durable
//! when commits are batched, on this machine, with nothing else in the way (no HTTP, no service logic).
//!
//! A fresh sled database in a temporary directory (opened like kps opens its store: `flush_every_ms(None)`),
//! one writer thread. Each round applies a batch of up to `--batch` records, then makes it durable the way
//! kps's committer does (src/store/sled.rs): `Db::flush()` and then `fdatasync` of sled's `db` file, because
//! sled's flush ends in `sync_file_range`, which is not durable on its own. Rounds repeat for `--seconds`.
//!
//! Records are real kps records: a `Keypair` as `POST /v2.1/os-keypairs` with bench/lua/import.lua's
//! Ed25519 public key stores it, encoded with `kps::service::repo::layout::encode` (format byte + JSON), under its
//! real store key (`record::keypair_key`), with a unique name per record.
//!
//! Modes:
//! * `batch` (the baseline): each round is one `sled::Batch` of `--batch` records applied atomically to one
//!   tree (`Tree::apply_batch`).
//! * `kps-tx` (diagnosis): each record is its own sled transaction over the two trees kps writes, as kps's
//!   committer does per request: check-absent + insert of the record, get + insert of its name-index entry;
//!   `--batch` transactions per durable round.
//! * `kps-group` (diagnosis): the same reads and writes as `kps-tx`, but all records of a round in ONE
//!   transaction over the two trees (what a committer that merged its group into one transaction would do).
//! * `import-writes` (diagnosis): the writes an import makes since store format 2, as its committer makes
//!   them: per record, a precondition read of the record key and of its name-index key, then the record and
//!   the name-index entry in ONE `sled::Batch` per round, all in one tree (keys tagged `K`/`N`).
//!
//! `--extra-bytes N` makes each record N bytes larger (in its description), e.g. to see what an escrow
//! record's sealed private key costs sled.
//!
//! Usage: `cargo run --release --example sled_batch -- [--mode batch|kps-tx|kps-group|import-writes] [--batch 64] [--seconds 10]
//! [--extra-bytes 0] [--dir PARENT]`. Prints `key=value` lines; `records_per_s` is the figure.

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kps::model::{KeyAlgorithm, KeyType, Keypair, Scope};
use kps::service::repo::layout::{self as record, NameIndexEntry};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

/// bench/lua/import.lua's public key (nova-keypairs.md §6.1 test vector) and its MD5 fingerprint length.
const PUBLIC_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 bench";
const FINGERPRINT: &str = "f1:02:17:de:ef:c1:30:83:11:8b:82:a0:0e:67:7f:d5";
const USER: &str = "u-bench-import";
const PROJECT: &str = "p-bench-import";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Batch,
    KpsTx,
    KpsGroup,
    ImportWrites,
}

struct Args {
    mode: Mode,
    batch: usize,
    seconds: f64,
    extra_bytes: usize,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { mode: Mode::Batch, batch: 64, seconds: 10.0, extra_bytes: 0, dir: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--mode" => {
                args.mode = match value()?.as_str() {
                    "batch" => Mode::Batch,
                    "kps-tx" => Mode::KpsTx,
                    "kps-group" => Mode::KpsGroup,
                    "import-writes" => Mode::ImportWrites,
                    other => return Err(format!("unknown mode {other}")),
                }
            }
            "--batch" => args.batch = value()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--seconds" => args.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--extra-bytes" => args.extra_bytes = value()?.parse().map_err(|e| format!("--extra-bytes: {e}"))?,
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    Ok(args)
}

/// The record kps stores for import.lua's request number `n` (name shaped like `impm-1-12345`).
fn record(n: u64, extra_bytes: usize) -> Keypair {
    Keypair {
        id: n + 1,
        name: format!("impm-{}-{}", n % 2 + 1, n / 2 + 1),
        key_type: KeyType::Ssh,
        public_key: PUBLIC_KEY.into(),
        fingerprint: FINGERPRINT.into(),
        algorithm: KeyAlgorithm::Ed25519,
        user_id: USER.into(),
        project_id: PROJECT.into(),
        scope: Scope::User,
        description: "x".repeat(extra_bytes),
        created_at_us: 1_790_000_000_000_000 + i64::try_from(n).unwrap_or_default(),
        updated_at_us: None,
        sealed: None,
    }
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("sled_batch: {message}");
    std::process::exit(2);
}

fn percentile(sorted: &[f64], pct: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((pct / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| fail(e));
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new().prefix("sled-batch.").tempdir_in(&parent).unwrap_or_else(|e| fail(e));
    let db = sled::Config::new().path(tmp.path()).flush_every_ms(None).open().unwrap_or_else(|e| fail(e));
    let keypairs = db.open_tree("keypairs").unwrap_or_else(|e| fail(e));
    let name_index = db.open_tree("name_index").unwrap_or_else(|e| fail(e));
    let data = db.open_tree("data").unwrap_or_else(|e| fail(e));
    let log_file = File::open(tmp.path().join("db")).unwrap_or_else(|e| fail(format!("open db file: {e}")));
    File::open(tmp.path()).and_then(|d| d.sync_all()).unwrap_or_else(|e| fail(format!("sync dir: {e}")));

    let sample = record::encode(&record(12_345, args.extra_bytes)).unwrap_or_else(|e| fail(e));
    let sample_key = record::keypair_key(&record(12_345, args.extra_bytes));
    let entry =
        record::encode(&NameIndexEntry { users: vec![USER.into()], domain_key: None }).unwrap_or_else(|e| fail(e));

    let deadline = Duration::from_secs_f64(args.seconds);
    let (mut n, mut rounds) = (0u64, 0u64);
    let (mut apply_s, mut flush_s, mut fdatasync_s) = (0.0f64, 0.0f64, 0.0f64);
    let mut round_ms = Vec::new();
    let started = Instant::now();
    while started.elapsed() < deadline {
        let round_started = Instant::now();
        // Build the round's records first: encoding is not sled's cost.
        let items: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = (0..args.batch as u64)
            .map(|i| {
                let r = record(n + i, args.extra_bytes);
                let value = record::encode(&r).unwrap_or_else(|e| fail(e));
                (record::keypair_key(&r), value, record::name_index_key(PROJECT, &r.name))
            })
            .collect();
        let t0 = Instant::now();
        match args.mode {
            Mode::Batch => {
                let mut batch = sled::Batch::default();
                for (key, value, _) in &items {
                    batch.insert(key.as_slice(), value.as_slice());
                }
                keypairs.apply_batch(batch).unwrap_or_else(|e| fail(e));
            }
            Mode::KpsTx => {
                for (key, value, index_key) in &items {
                    let result = (&keypairs, &name_index).transaction(|(kp, ni)| {
                        if kp.get(key)?.is_some() {
                            return Err(ConflictableTransactionError::Abort(0));
                        }
                        kp.insert(key.as_slice(), value.as_slice())?;
                        let _ = ni.get(index_key)?;
                        ni.insert(index_key.as_slice(), entry.as_slice())?;
                        Ok(())
                    });
                    result.unwrap_or_else(|e| fail(format!("transaction: {e:?}")));
                }
            }
            Mode::ImportWrites => {
                let tagged = |tag: u8, key: &[u8]| [&[tag][..], key].concat();
                let mut batch = sled::Batch::default();
                for (key, value, index_key) in &items {
                    let (key, index_key) = (tagged(b'K', key), tagged(b'N', index_key));
                    if data.get(&key).unwrap_or_else(|e| fail(e)).is_some() {
                        fail("record exists");
                    }
                    let _ = data.get(&index_key).unwrap_or_else(|e| fail(e));
                    batch.insert(key, value.as_slice());
                    batch.insert(index_key, entry.as_slice());
                }
                data.apply_batch(batch).unwrap_or_else(|e| fail(e));
            }
            Mode::KpsGroup => {
                let result = (&keypairs, &name_index).transaction(|(kp, ni)| {
                    for (key, value, index_key) in &items {
                        if kp.get(key)?.is_some() {
                            return Err(ConflictableTransactionError::Abort(0));
                        }
                        kp.insert(key.as_slice(), value.as_slice())?;
                        let _ = ni.get(index_key)?;
                        ni.insert(index_key.as_slice(), entry.as_slice())?;
                    }
                    Ok(())
                });
                result.unwrap_or_else(|e| fail(format!("transaction: {e:?}")));
            }
        }
        let t1 = Instant::now();
        db.flush().unwrap_or_else(|e| fail(e));
        let t2 = Instant::now();
        log_file.sync_data().unwrap_or_else(|e| fail(format!("fdatasync: {e}")));
        let t3 = Instant::now();
        apply_s += (t1 - t0).as_secs_f64();
        flush_s += (t2 - t1).as_secs_f64();
        fdatasync_s += (t3 - t2).as_secs_f64();
        round_ms.push((t3 - round_started).as_secs_f64() * 1000.0);
        n += args.batch as u64;
        rounds += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    round_ms.sort_by(f64::total_cmp);
    let stored = if args.mode == Mode::ImportWrites { data.len() / 2 } else { keypairs.len() };
    if stored as u64 != n {
        fail(format!("{stored} records in the tree, {n} written"));
    }
    let mode = match args.mode {
        Mode::Batch => "batch",
        Mode::KpsTx => "kps-tx",
        Mode::KpsGroup => "kps-group",
        Mode::ImportWrites => "import-writes",
    };
    println!("mode={mode} batch={} seconds={elapsed:.3}", args.batch);
    println!("record_bytes={} key_bytes={} name_index_value_bytes={}", sample.len(), sample_key.len(), entry.len());
    println!("records={n} rounds={rounds}");
    println!(
        "apply_s={apply_s:.3} flush_s={flush_s:.3} fdatasync_s={fdatasync_s:.3} round_p50_ms={:.3} round_p99_ms={:.3}",
        percentile(&round_ms, 50.0),
        percentile(&round_ms, 99.0)
    );
    println!("records_per_s={:.1}", n as f64 / elapsed);
    drop((keypairs, name_index, db));
    drop(tmp);
}
