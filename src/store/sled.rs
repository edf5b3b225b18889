//! The embedded sled backend: every `Space` in one `data` tree (store keys prefixed with the space's tag
//! byte), writes applied as atomic `sled::Batch`es, acknowledged only once they are durable.
//!
//! Durability (group commit): every `apply` goes to one committer thread, which takes all the batches that
//! are waiting, checks each batch's preconditions against the tree plus the writes staged before it in the
//! group (a batch whose precondition fails stages nothing and gets its conflict), applies everything staged
//! as ONE `apply_batch` (atomic, also across a crash), makes it durable with one flush + `fdatasync` and
//! then answers all of them. Concurrent writers share the log write and the fsync.
//!
//! Why no sled transaction: the committer is the only writer of the `data` tree, so nothing can change a
//! key between its check and the batch; a transaction per group made sled's bookkeeping (read sets,
//! conflict checks, per-tree write buffers) cost half of the store's throughput (`examples/sled_batch.rs`
//! `--mode kps-group` against `--mode batch`). One tree is what makes one batch atomic across spaces.
//!
//! Store format 1 (one tree per space) is migrated to this layout at open (format 2), idempotently.
//!
//! Lost commits: every group's batch also writes the group's number (`COMMIT_SEQ_KEY`, in the same atomic
//! batch, so a recovered store holds the number of the last group it recovered). With a high-water mark
//! (`commit_hwm`, `<data_dir>/commit.hwm`), a store whose recovered number is below the mark lost
//! acknowledged writes — sled reads a corrupt log entry as the end of its log — and is refused at open.
//!
//! Why the extra `fdatasync`: on Linux sled's `flush()` ends in `sync_file_range(WAIT_BEFORE | WRITE |
//! WAIT_AFTER)` on its log file (seen with `strace -e trace=fsync,fdatasync,sync_file_range`), which writes
//! the pages but neither the file's metadata (its size grows as the log is appended) nor the device's write
//! cache: not durable. The committer therefore calls `fdatasync` on the `db` file after every flush.
//!
//! A failed write, flush or `fdatasync` stops the store's writes for good (`Durability`): after a failed
//! fsync the kernel may already have dropped the dirty pages and cleared the error, so a later sync that
//! succeeds proves nothing (PostgreSQL's fsync lesson). The batches of the failed group, every batch waiting
//! and every later one are answered `StoreError::Unavailable` until kps is restarted and sled recovers from
//! what is really on disk.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use async_trait::async_trait;

use super::commit_hwm::{self, HighWaterMark};
use super::{ApplyError, Space, Store, StoreError, WriteOp, prefix_end};

/// Ids are reserved on disk in blocks so that allocating one rarely costs a flush, and a restart never
/// hands out an id that may already have been used (it resumes after the reserved block).
const ID_BLOCK: u64 = 1024;
const ID_RESERVATION_KEY: &[u8] = b"id_reserved_until";
/// Layout version of the whole store (trees, key encodings); records carry their own version too.
const STORE_FORMAT_KEY: &[u8] = b"store_format_version";
const STORE_FORMAT: u8 = 2;
/// The tree holding every space (format 2).
const DATA_TREE: &str = "data";
/// The number of the last group commit, in the `data` tree (tag 0xFF: never a space's tag), big-endian u64.
const COMMIT_SEQ_KEY: &[u8] = b"\xffcommit_seq";

/// The most batches one group commit takes.
const MAX_GROUP: usize = 1024;

pub struct SledStore {
    data: sled::Tree,
    meta: sled::Tree,
    ids: Mutex<IdBlock>,
    /// `None` only while dropping.
    commits: Option<mpsc::Sender<Commit>>,
    committer: Option<std::thread::JoinHandle<()>>,
    stats: Arc<CommitStats>,
    durability: Arc<Durability>,
    /// The number of the last group commit made durable.
    durable_seq: Arc<AtomicU64>,
    /// The high-water mark file and its writer thread, when opened with one.
    high_water_mark: Option<(Arc<HighWaterMark>, commit_hwm::Writer)>,
}

impl Drop for SledStore {
    /// Stops the committer after it has answered every queued commit, so the database is closed when the
    /// store is gone (a reopen right after a drop must not find it still in use).
    fn drop(&mut self) {
        drop(self.commits.take());
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
        // The writer records the final durable number as it stops.
        drop(self.high_water_mark.take());
        // sled flushes its log when the database closes, and after a failed write that flush waits for
        // log space that never becomes stable: closing would hang the process (seen on a full disk). The
        // store took no writes since the failure and its files are as the last sync left them, so it is
        // left unclosed instead (the process is ending or done with it; the OS releases the files).
        if self.durability.failure.get().is_some() {
            std::mem::forget(self.data.clone());
            std::mem::forget(self.meta.clone());
            std::mem::forget(self.durability.db.clone());
        }
    }
}

/// One `apply` waiting for the committer.
struct Commit {
    ops: Vec<WriteOp>,
    reply: tokio::sync::oneshot::Sender<Result<(), ApplyError>>,
}

/// Counters of the group committer: how many batches were committed with how many syncs, and how many
/// batches each sync carried.
#[derive(Debug)]
pub struct CommitStats {
    pub batches: AtomicU64,
    pub syncs: AtomicU64,
    pub group_sizes: crate::metrics::Histogram,
}

impl Default for CommitStats {
    fn default() -> Self {
        Self {
            batches: AtomicU64::default(),
            syncs: AtomicU64::default(),
            group_sizes: crate::metrics::Histogram::new(crate::metrics::SIZE_BOUNDS),
        }
    }
}

struct IdBlock {
    next: u64,
    reserved_until: u64,
}

impl IdBlock {
    /// If `id` lies past the reserved block, reserves a new block that covers it and returns its end, which
    /// must reach the disk before `id` is used.
    fn reserve_for(&mut self, id: u64) -> Option<u64> {
        (id > self.reserved_until).then(|| {
            self.reserved_until = id + ID_BLOCK - 1;
            self.reserved_until
        })
    }
}

fn backend(error: sled::Error) -> StoreError {
    match error {
        sled::Error::Corruption { .. } => StoreError::Corrupt(error.to_string()),
        other => StoreError::Backend(other.to_string()),
    }
}

/// What makes applied writes durable: sled's flush, then `fdatasync` of its log file.
type SyncStep = Box<dyn Fn(&sled::Db, &File) -> Result<(), StoreError> + Send + Sync>;

fn flush_and_fdatasync(db: &sled::Db, log_file: &File) -> Result<(), StoreError> {
    db.flush().map_err(backend)?;
    log_file.sync_data().map_err(|e| StoreError::Backend(format!("fdatasync: {e}")))
}

/// Makes writes durable, and remembers the first failure to do so (or to write at all) for good.
struct Durability {
    db: sled::Db,
    log_file: File,
    step: SyncStep,
    /// Why the store stopped taking writes; set once, never cleared.
    failure: OnceLock<String>,
}

impl Durability {
    /// Flush + `fdatasync`; refused once anything has failed, and a failure here stops the store.
    fn sync(&self) -> Result<(), StoreError> {
        self.check()?;
        (self.step)(&self.db, &self.log_file).map_err(|error| self.stop(&error))
    }

    /// A failed read. sled writes its log while reading too (page consolidation), so an IO error on a read
    /// (a full disk) leaves sled in the same unknown state as a failed write: the store stops taking writes
    /// (503 KPS.9005). Other failures (corruption) stay what they are.
    fn read_error(&self, error: sled::Error) -> StoreError {
        match error {
            sled::Error::Io(_) => self.stop(&error),
            other => backend(other),
        }
    }

    /// `Unavailable` once the store has stopped taking writes.
    fn check(&self) -> Result<(), StoreError> {
        match self.failure.get() {
            Some(reason) => Err(unavailable(reason)),
            None => Ok(()),
        }
    }

    /// Stops the store's writes for good because of `error` (only the first failure is kept and logged).
    fn stop(&self, error: &dyn std::fmt::Display) -> StoreError {
        let reason = error.to_string();
        if self.failure.set(reason.clone()).is_ok() {
            tracing::error!(%reason, "store: a write or sync failed; every write is refused until kps is restarted");
        }
        unavailable(self.failure.get().map_or(&reason, String::as_str))
    }
}

fn unavailable(reason: &str) -> StoreError {
    StoreError::Unavailable(format!("the store stopped taking writes after a failure ({reason}); restart kps"))
}

impl SledStore {
    /// Opens (or creates) the database in `dir`, without a high-water mark (tests, tools). The caller has
    /// already checked the directory.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, None, Box::new(flush_and_fdatasync))
    }

    /// Opens the database in `dir` and checks it against the commit high-water mark in the file `mark` (a
    /// missing file is a mark of 0; it is written once commits happen): a store that lost acknowledged commits
    /// is refused (`StoreError::Damaged`).
    pub fn open_with_high_water_mark(dir: &Path, mark: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, Some(mark), Box::new(flush_and_fdatasync))
    }

    fn open_with(dir: &Path, mark: Option<&Path>, step: SyncStep) -> Result<Self, StoreError> {
        let db = open_db(dir)?;
        let data = db.open_tree(DATA_TREE).map_err(backend)?;
        let meta = db.open_tree("meta").map_err(backend)?;
        match meta.get(STORE_FORMAT_KEY).map_err(backend)?.as_deref() {
            None => {
                meta.insert(STORE_FORMAT_KEY, &[STORE_FORMAT]).map_err(backend)?;
            }
            Some([1]) => migrate_from_format_1(&db, &data, &meta)?,
            Some([version]) if *version <= STORE_FORMAT => {}
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "the store in {} has format version {other:?}, written by a newer kps (this one reads up to \
                     {STORE_FORMAT}); refusing to misread it",
                    dir.display()
                )));
            }
        }
        let reserved = match meta.get(ID_RESERVATION_KEY).map_err(backend)? {
            None => 0,
            Some(bytes) => {
                let array: [u8; 8] = bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("id reservation is not 8 bytes".into()))?;
                u64::from_be_bytes(array)
            }
        };
        let ids = Mutex::new(IdBlock { next: reserved + 1, reserved_until: reserved });
        let recovered_seq = match data.get(COMMIT_SEQ_KEY).map_err(backend)? {
            None => 0,
            Some(bytes) => u64::from_be_bytes(
                bytes.as_ref().try_into().map_err(|_| StoreError::Corrupt("commit number is not 8 bytes".into()))?,
            ),
        };
        let mark = mark.map(HighWaterMark::open).transpose()?.map(Arc::new);
        if let Some(mark) = &mark {
            mark.check(recovered_seq, dir)?;
        }
        let log_file = File::open(dir.join("db")).map_err(|e| StoreError::Backend(format!("open db file: {e}")))?;
        // The directory entries of the files sled created must be durable too, and so must `dir`'s own entry
        // (sled creates the directory itself when it is missing).
        for created in std::iter::once(dir).chain(dir.parent().filter(|p| !p.as_os_str().is_empty())) {
            File::open(created)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::Backend(format!("sync directory {}: {e}", created.display())))?;
        }
        let stats = Arc::new(CommitStats::default());
        let durability = Arc::new(Durability { db: db.clone(), log_file, step, failure: OnceLock::new() });
        // What sled recovered may include a group that was written but never synced (a crash between its
        // write and its fdatasync): it may still be only in the page cache. Sync it before the high-water mark
        // can record its number, or a power loss now would make a healthy store look damaged.
        durability.sync()?;
        let (commits, queue) = mpsc::channel();
        let durable_seq = Arc::new(AtomicU64::new(recovered_seq));
        let committer = Committer {
            data: data.clone(),
            durability: Arc::clone(&durability),
            stats: Arc::clone(&stats),
            applied_seq: AtomicU64::new(recovered_seq),
            durable_seq: Arc::clone(&durable_seq),
        };
        let committer = std::thread::Builder::new()
            .name("kps-store-commit".into())
            .spawn(move || committer.run(&queue))
            .map_err(|e| StoreError::Backend(format!("cannot start the commit thread: {e}")))?;
        let high_water_mark = match mark {
            Some(mark) => {
                let writer = commit_hwm::Writer::start(Arc::clone(&mark), Arc::clone(&durable_seq))?;
                Some((mark, writer))
            }
            None => None,
        };
        Ok(Self {
            data,
            meta,
            ids,
            commits: Some(commits),
            committer: Some(committer),
            stats,
            durability,
            durable_seq,
            high_water_mark,
        })
    }

    /// Writes an id reservation durably; the stored value never goes backwards.
    async fn persist_reservation(&self, until: u64) -> Result<(), StoreError> {
        self.durability.check()?;
        self.meta
            .fetch_and_update(ID_RESERVATION_KEY, |old| {
                let old = old.and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_be_bytes);
                Some(old.max(until).to_be_bytes().to_vec())
            })
            .map_err(|error| self.durability.stop(&error))?;
        self.sync().await
    }

    /// Group-commit counters (for tests, metrics and benchmarks).
    pub fn commit_stats(&self) -> &CommitStats {
        &self.stats
    }

    /// Makes everything applied so far durable (sled's flush, then `fdatasync` of its log file), off the
    /// async runtime.
    async fn sync(&self) -> Result<(), StoreError> {
        let durability = Arc::clone(&self.durability);
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| durability.sync()))
            .await
            .map_err(|e| StoreError::Backend(format!("sync task: {e}")))?
    }
}

/// Opens sled's database. sled releases its file lock only when the last of its background IO tasks for
/// the database has finished, which can be a moment after the `Db` was dropped when its shared IO pool is
/// busy: an in-process reopen (tests, `kps backup import` followed by a check) waits up to 2 s for it.
/// Another process holding the data dir is caught earlier, by the data-dir lock (`datadir`).
fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new().path(dir).flush_every_ms(None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match config.open() {
            // sled reports the failed flock as an `Other` error whose text names it.
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result.map_err(backend),
        }
    }
}

/// The one-byte tag of a space in the `data` tree (format 2). Never reuse or renumber one.
fn space_tag(space: Space) -> u8 {
    match space {
        Space::KeyPairs => b'K',
        Space::NameIndex => b'N',
        Space::Meta => b'M',
        Space::Counters => b'C',
    }
}

/// The `data` tree key of `key` in `space`.
fn data_key(space: Space, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(space_tag(space));
    out.extend_from_slice(key);
    out
}

/// Format 1 kept each space in a tree of its own (named by `Space::name`). Copies every entry into the
/// `data` tree, makes that durable, then records format 2 and drops the old trees; a crash at any point
/// leaves a store that migrates again (copying is idempotent) or is already migrated.
fn migrate_from_format_1(db: &sled::Db, data: &sled::Tree, meta: &sled::Tree) -> Result<(), StoreError> {
    // The spaces format 1 had (`Space::Meta` came later, with format 2).
    const FORMAT_1_SPACES: [Space; 2] = [Space::KeyPairs, Space::NameIndex];
    for space in FORMAT_1_SPACES {
        let old = db.open_tree(space.name()).map_err(backend)?;
        let mut batch = sled::Batch::default();
        let mut pending = 0;
        for entry in old.iter() {
            let (key, value) = entry.map_err(backend)?;
            batch.insert(data_key(space, &key), value);
            pending += 1;
            if pending == 10_000 {
                data.apply_batch(std::mem::take(&mut batch)).map_err(backend)?;
                pending = 0;
            }
        }
        data.apply_batch(batch).map_err(backend)?;
    }
    db.flush().map_err(backend)?;
    meta.insert(STORE_FORMAT_KEY, &[STORE_FORMAT]).map_err(backend)?;
    db.flush().map_err(backend)?;
    for space in FORMAT_1_SPACES {
        db.drop_tree(space.name()).map_err(backend)?;
    }
    db.flush().map_err(backend)?;
    tracing::info!("store migrated from format 1 (one tree per space) to format 2 (one data tree)");
    Ok(())
}

#[async_trait]
impl Store for SledStore {
    async fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.data.get(data_key(space, key)).map_err(|e| self.durability.read_error(e))?.map(|value| value.to_vec()))
    }

    async fn apply(&self, ops: Vec<WriteOp>) -> Result<(), ApplyError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.commits
            .as_ref()
            .ok_or_else(|| StoreError::Backend("the store is closing".into()))?
            .send(Commit { ops, reply })
            .map_err(|_| StoreError::Backend("the commit thread has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Backend("the commit thread dropped a commit".into()))?
    }

    async fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        use std::ops::Bound;
        let prefix = data_key(space, prefix);
        let start = match after {
            Some(after) if after >= &prefix[1..] => Bound::Excluded(data_key(space, after)),
            _ => Bound::Included(prefix.clone()),
        };
        let end = prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
        self.data
            .range::<Vec<u8>, _>((start, end))
            .take(limit)
            .map(|entry| {
                entry.map(|(key, value)| (key[1..].to_vec(), value.to_vec())).map_err(|e| self.durability.read_error(e))
            })
            .collect()
    }

    async fn count(&self, space: Space, prefix: &[u8]) -> Result<u64, StoreError> {
        let mut count = 0;
        for key in self.data.scan_prefix(data_key(space, prefix)).keys() {
            key.map_err(backend)?;
            count += 1;
        }
        Ok(count)
    }

    async fn next_id(&self) -> Result<u64, StoreError> {
        let (id, reserve) = {
            let mut ids = self.ids.lock().map_err(|_| StoreError::Backend("id lock poisoned".into()))?;
            let id = ids.next;
            ids.next += 1;
            (id, ids.reserve_for(id))
        };
        if let Some(until) = reserve {
            self.persist_reservation(until).await?;
        }
        Ok(id)
    }

    async fn peek_next_id(&self) -> Result<u64, StoreError> {
        Ok(self.ids.lock().map_err(|_| StoreError::Backend("id lock poisoned".into()))?.next)
    }

    async fn advance_ids(&self, next: u64) -> Result<(), StoreError> {
        let reserve = {
            let mut ids = self.ids.lock().map_err(|_| StoreError::Backend("id lock poisoned".into()))?;
            ids.next = ids.next.max(next);
            let next = ids.next;
            ids.reserve_for(next)
        };
        if let Some(until) = reserve {
            self.persist_reservation(until).await?;
        }
        Ok(())
    }

    /// Syncs, then records the durable commit number in the high-water mark (shutdown).
    async fn flush(&self) -> Result<(), StoreError> {
        self.sync().await?;
        if let Some((mark, _)) = &self.high_water_mark {
            let (mark, durable) = (Arc::clone(mark), self.durable_seq.load(Ordering::Acquire));
            tokio::task::spawn_blocking(move || mark.record(durable))
                .await
                .map_err(|e| StoreError::Backend(format!("high-water mark task: {e}")))?;
        }
        Ok(())
    }

    /// Not ready once a write or sync has failed, or when the committer is gone; otherwise a read of the
    /// store's format marker, off the async runtime (a hung disk must not block a worker).
    async fn ready(&self) -> Result<(), StoreError> {
        self.durability.check()?;
        if self.committer.as_ref().is_none_or(std::thread::JoinHandle::is_finished) {
            return Err(StoreError::Unavailable("the commit thread has stopped".into()));
        }
        let meta = self.meta.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| meta.get(STORE_FORMAT_KEY).map_err(backend)))
            .await
            .map_err(|e| StoreError::Backend(format!("read task: {e}")))?
            .map(|_| ())
    }

    fn group_commit_stats(&self) -> Option<&CommitStats> {
        Some(&self.stats)
    }
}

/// The single writer of the `data` tree: applies waiting batches, syncs once per group, answers the group.
struct Committer {
    data: sled::Tree,
    durability: Arc<Durability>,
    stats: Arc<CommitStats>,
    /// The number of the last group applied (written with it, `COMMIT_SEQ_KEY`).
    applied_seq: AtomicU64,
    /// The number of the last group made durable.
    durable_seq: Arc<AtomicU64>,
}

/// The writes staged so far in one group, by `data` key: `Some(value)` written, `None` removed. Values are
/// the batch's own `IVec`s (shared, not copied again).
type Staged = std::collections::HashMap<Vec<u8>, Option<sled::IVec>>;

impl Committer {
    fn run(&self, queue: &mpsc::Receiver<Commit>) {
        while let Ok(first) = queue.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(commit) => group.push(commit),
                    Err(_) => break,
                }
            }
            let results = self.commit_group(&group);
            self.stats.batches.fetch_add(group.len() as u64, Ordering::Relaxed);
            self.stats.group_sizes.observe(group.len() as f64);
            for (commit, answer) in group.into_iter().zip(results) {
                // The requester may have given up (timeout); its write stands either way.
                let _ = commit.reply.send(answer);
            }
        }
    }

    /// Applies and syncs one group; the answer for each of its commits. Once the store has failed, nothing
    /// is applied and every commit gets the failure.
    fn commit_group(&self, group: &[Commit]) -> Vec<Result<(), ApplyError>> {
        if let Err(error) = self.durability.check() {
            return group.iter().map(|_| Err(ApplyError::Store(error.clone()))).collect();
        }
        let mut results = self.apply_group(group);
        if results.iter().any(Result::is_ok) {
            self.stats.syncs.fetch_add(1, Ordering::Relaxed);
            match self.durability.sync() {
                Ok(()) => self.durable_seq.store(self.applied_seq.load(Ordering::Relaxed), Ordering::Release),
                Err(error) => {
                    for result in results.iter_mut().filter(|r| r.is_ok()) {
                        *result = Err(ApplyError::Store(error.clone()));
                    }
                }
            }
        }
        results
    }

    /// Applies a whole group as ONE atomic `sled::Batch` (not yet durable), numbered: each commit's
    /// preconditions are checked against the tree and the writes staged by the commits before it; a commit
    /// whose precondition fails stages nothing and gets its conflict, the others still apply. The batch also
    /// writes the group's number (`COMMIT_SEQ_KEY`).
    fn apply_group(&self, group: &[Commit]) -> Vec<Result<(), ApplyError>> {
        let mut staged = Staged::new();
        let mut batch = sled::Batch::default();
        let mut results: Vec<Result<(), ApplyError>> =
            group.iter().map(|commit| self.stage(&commit.ops, &mut staged, &mut batch)).collect();
        if !results.iter().any(Result::is_ok) {
            return results;
        }
        let seq = self.applied_seq.load(Ordering::Relaxed) + 1;
        batch.insert(COMMIT_SEQ_KEY, &seq.to_be_bytes());
        match self.data.apply_batch(batch) {
            Ok(()) => self.applied_seq.store(seq, Ordering::Relaxed),
            Err(error) => {
                // A write sled could not do (its log full, an IO error) leaves sled in an unknown state.
                let error = self.durability.stop(&error);
                for result in results.iter_mut().filter(|r| r.is_ok()) {
                    *result = Err(ApplyError::Store(error.clone()));
                }
            }
        }
        results
    }

    /// One commit: all preconditions first (against the tree as the group has left it so far), then its
    /// writes are staged, so a failed commit leaves nothing behind.
    fn stage(&self, ops: &[WriteOp], staged: &mut Staged, batch: &mut sled::Batch) -> Result<(), ApplyError> {
        let keys: Vec<Vec<u8>> = ops
            .iter()
            .map(|op| {
                let (space, key) = op.target();
                data_key(space, key)
            })
            .collect();
        let mut outcomes = Vec::with_capacity(ops.len());
        for (index, (op, key)) in ops.iter().zip(&keys).enumerate() {
            let outcome = match staged.get(key) {
                Some(pending) => op.outcome(pending.as_deref()),
                None => op.outcome(self.data.get(key).map_err(|e| self.durability.read_error(e))?.as_deref()),
            };
            outcomes.push(outcome.ok_or(ApplyError::Conflict { op: index })?);
        }
        for (outcome, key) in outcomes.into_iter().zip(keys) {
            match outcome {
                Some(value) => {
                    let value = sled::IVec::from(value);
                    batch.insert(key.as_slice(), value.clone());
                    staged.insert(key, Some(value));
                }
                None => {
                    batch.remove(key.as_slice());
                    staged.insert(key, None);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sled_store_passes_the_store_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open");
        super::super::suite::run(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_syncs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SledStore::open(dir.path()).expect("open"));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(
                    async move { store.put_if_absent(Space::KeyPairs, format!("k{i}").as_bytes(), b"v").await },
                )
            })
            .collect();
        for task in tasks {
            assert!(task.await.expect("task").expect("put"));
        }
        let stats = store.commit_stats();
        assert_eq!(stats.batches.load(Ordering::Relaxed), 64);
        assert!(stats.syncs.load(Ordering::Relaxed) < 64, "{stats:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_group_batch_keeps_commits_independent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open");
        let committer = Committer {
            data: store.data.clone(),
            durability: Arc::clone(&store.durability),
            stats: Arc::default(),
            applied_seq: AtomicU64::new(0),
            durable_seq: Arc::default(),
        };
        let put = |key: &str| WriteOp::PutIfAbsent { space: Space::KeyPairs, key: key.into(), value: b"v".to_vec() };
        let commit = |ops| Commit { ops, reply: tokio::sync::oneshot::channel().0 };
        let group =
            [commit(vec![put("a")]), commit(vec![put("b"), put("a")]), commit(vec![put("c")]), commit(vec![put("c")])];
        let results = committer.apply_group(&group);
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(ApplyError::Conflict { op: 1 })), "sees the write of the commit before");
        assert!(results[2].is_ok());
        assert!(matches!(results[3], Err(ApplyError::Conflict { op: 0 })));
        assert_eq!(store.get(Space::KeyPairs, b"b").await.expect("get"), None, "a failed commit writes nothing");
        assert!(store.get(Space::KeyPairs, b"c").await.expect("get").is_some());
    }

    /// A store whose sync step fails (as an `fdatasync` would with EIO) while `failing` is set.
    fn store_with_failing_sync(dir: &Path) -> (SledStore, Arc<std::sync::atomic::AtomicBool>) {
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let switch = Arc::clone(&failing);
        let step: SyncStep = Box::new(move |db, log_file| {
            if switch.load(Ordering::SeqCst) {
                return Err(StoreError::Backend("fdatasync: Input/output error (os error 5)".into()));
            }
            flush_and_fdatasync(db, log_file)
        });
        (SledStore::open_with(dir, None, step).expect("open"), failing)
    }

    fn is_unavailable<T: std::fmt::Debug>(result: &Result<T, StoreError>) -> bool {
        matches!(result, Err(StoreError::Unavailable(reason)) if reason.contains("Input/output error"))
    }

    #[test]
    fn the_recovered_state_is_synced_at_open_before_the_mark_may_record_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let syncs = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&syncs);
        let step: SyncStep = Box::new(move |db, log_file| {
            counted.fetch_add(1, Ordering::SeqCst);
            flush_and_fdatasync(db, log_file)
        });
        let store = SledStore::open_with(dir.path(), Some(&dir.path().join("commit.hwm")), step).expect("open");
        assert_eq!(syncs.load(Ordering::SeqCst), 1, "one sync at open, before any commit");
        drop(store);
    }

    /// PostgreSQL's fsync lesson: once a sync has failed, no write is ever acknowledged again by this
    /// process — not the group that failed, not the ones waiting, not later ones, even once syncing would
    /// work again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_fails_every_waiting_and_later_write_for_good() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, failing) = store_with_failing_sync(dir.path());
        let store = Arc::new(store);
        assert!(store.put_if_absent(Space::KeyPairs, b"before", b"v").await.expect("put"));

        failing.store(true, Ordering::SeqCst);
        let writers: Vec<_> = (0..32)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(
                    async move { store.put_if_absent(Space::KeyPairs, format!("w{i}").as_bytes(), b"v").await },
                )
            })
            .collect();
        for writer in writers {
            let result = writer.await.expect("task");
            assert!(is_unavailable(&result), "{result:?}");
        }

        failing.store(false, Ordering::SeqCst);
        let later = store.put_if_absent(Space::KeyPairs, b"later", b"v").await;
        assert!(is_unavailable(&later), "a sync that would work again is never tried: {later:?}");
        assert!(is_unavailable(&store.advance_ids(1_000_000).await), "id reservations are writes too");
        assert!(is_unavailable(&store.flush().await));
        assert_eq!(store.get(Space::KeyPairs, b"before").await.expect("reads still work"), Some(b"v".to_vec()));
        assert_eq!(store.get(Space::KeyPairs, b"later").await.expect("get"), None, "nothing applied after");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_is_ready_until_a_sync_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, failing) = store_with_failing_sync(dir.path());
        store.ready().await.expect("ready");
        assert!(store.put_if_absent(Space::KeyPairs, b"k", b"v").await.expect("put"));
        store.ready().await.expect("still ready");
        failing.store(true, Ordering::SeqCst);
        assert!(store.put_if_absent(Space::KeyPairs, b"k2", b"v").await.is_err());
        failing.store(false, Ordering::SeqCst);
        assert!(is_unavailable(&store.ready().await), "unready for good");
    }

    /// Every group commit is numbered inside its own batch; the mark follows the durable number, and a
    /// store behind its mark (here: a mark moved ahead by hand, as a lost log tail would leave it) is
    /// refused at open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_are_numbered_and_a_store_behind_its_high_water_mark_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, mark) = (dir.path().join("db"), dir.path().join("commit.hwm"));
        let recovered = |store: &SledStore| {
            u64::from_be_bytes(
                store.data.get(COMMIT_SEQ_KEY).expect("get").expect("numbered").as_ref().try_into().expect("8 bytes"),
            )
        };
        {
            let store = SledStore::open_with_high_water_mark(&db, &mark).expect("open");
            for key in ["a", "b", "c"] {
                assert!(store.put_if_absent(Space::KeyPairs, key.as_bytes(), b"v").await.expect("put"));
            }
            assert!(!store.put_if_absent(Space::KeyPairs, b"a", b"v").await.expect("conflict"));
            assert_eq!(recovered(&store), 3, "one number per group that wrote something");
            store.flush().await.expect("flush");
            assert_eq!(HighWaterMark::open(&mark).expect("mark").value(), 3);
        }
        let store = SledStore::open_with_high_water_mark(&db, &mark).expect("reopen: whole");
        assert!(store.put_if_absent(Space::KeyPairs, b"d", b"v").await.expect("put"));
        assert_eq!(recovered(&store), 4, "numbers continue after a reopen");
        drop(store);
        assert_eq!(HighWaterMark::open(&mark).expect("mark").value(), 4, "recorded when the store closes");

        std::fs::write(&mark, "kps commit high-water mark\n9\n").expect("mark ahead");
        let error = SledStore::open_with_high_water_mark(&db, &mark).err().expect("refused");
        assert!(matches!(error, StoreError::Damaged(_)), "{error}");
        assert!(error.to_string().contains("last commit is number 4, but commits up to at least number 9"), "{error}");
        SledStore::open(&db).expect("without a mark (tools, tests) nothing is checked");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_written_by_a_newer_kps_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStore::open(dir.path()).expect("open");
            store.meta.insert(STORE_FORMAT_KEY, &[STORE_FORMAT + 1]).expect("insert");
            store.flush().await.expect("flush");
        }
        let error = SledStore::open(dir.path()).err().expect("newer format");
        assert!(error.to_string().contains("newer kps"), "{error}");
    }

    /// A data dir written by a kps with store format 1 (one tree per space) opens, with every entry in
    /// place, and is format 2 afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_format_1_store_is_migrated_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = sled::Config::new().path(dir.path()).open().expect("sled");
            let keypairs = db.open_tree(Space::KeyPairs.name()).expect("tree");
            let names = db.open_tree(Space::NameIndex.name()).expect("tree");
            for i in 0..25_000u32 {
                keypairs.insert(format!("u-k{i:05}"), format!("record {i}").as_bytes()).expect("insert");
            }
            names.insert(b"n-k00001", b"entry".as_slice()).expect("insert");
            db.open_tree("meta").expect("meta").insert(STORE_FORMAT_KEY, &[1]).expect("format 1");
            db.flush().expect("flush");
        }
        let store = SledStore::open(dir.path()).expect("migrates");
        assert_eq!(store.meta.get(STORE_FORMAT_KEY).expect("get").as_deref(), Some(&[STORE_FORMAT][..]));
        assert_eq!(store.get(Space::KeyPairs, b"u-k00042").await.expect("get"), Some(b"record 42".to_vec()));
        assert_eq!(store.get(Space::NameIndex, b"n-k00001").await.expect("get"), Some(b"entry".to_vec()));
        assert_eq!(store.get(Space::KeyPairs, b"n-k00001").await.expect("get"), None, "spaces stay apart");
        assert_eq!(store.count(Space::KeyPairs, b"u-").await.expect("count"), 25_000);
        assert!(
            !store.durability.db.tree_names().iter().any(|name| name.as_ref() == Space::KeyPairs.name().as_bytes())
        );
        drop(store);
        let reopened = SledStore::open(dir.path()).expect("reopens as format 2");
        assert_eq!(reopened.count(Space::NameIndex, b"").await.expect("count"), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_continue_after_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = {
            let store = SledStore::open(dir.path()).expect("open");
            let mut last = 0;
            for _ in 0..10 {
                last = store.next_id().await.expect("id");
            }
            last
        };
        let store = SledStore::open(dir.path()).expect("reopen");
        assert!(store.next_id().await.expect("id") > first);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStore::open(dir.path()).expect("open");
            assert!(store.put_if_absent(Space::KeyPairs, b"k", b"v").await.expect("put"));
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(store.get(Space::KeyPairs, b"k").await.expect("get"), Some(b"v".to_vec()));
    }
}
