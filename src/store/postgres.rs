//! The PostgreSQL backend: one database that any number of kps replicas share (spec/interface.md,
//! "Replicated store"; design.md, "Growing past one machine"). It touches only its own schema `kps`.
//!
//! Layout (migrations/*.sql, embedded, run at startup and by `kps db migrate` under an advisory lock):
//! `kps.entries(space, key, value)` holds every space but `Counters`, with `bytea` keys so that the primary
//! key's order, and therefore scans and pages, are exactly sled's byte order; `kps.counters(key, value
//! bigint)` holds `Space::Counters`; the sequence `kps.record_ids` hands out record ids; the function
//! `kps.apply` runs one batch.
//!
//! `apply` is one statement, `SELECT kps.apply(...)` with the batch as arrays: one round trip, one
//! transaction (autocommit), operations in order; a failed precondition raises SQLSTATE KP001 naming the
//! operation and rolls the whole batch back. The preconditions are the SQL statements' own conditions
//! (`INSERT .. ON CONFLICT DO NOTHING`, `UPDATE/DELETE .. WHERE value = expected`), which PostgreSQL
//! re-checks on the newest row version under concurrent writers, so they hold across replicas.
//! Serialization failures and deadlocks retry the batch.
//!
//! Failover: a lost, refused or read-only connection, a server shutting down or a pool timeout is
//! `StoreError::Unavailable` (503 KPS.9005); a connection lost while the statement (and so its commit) runs
//! is too, since its outcome is unknown. A connection that failed so is never handed back to the pool: the
//! next request connects again, through the multi-host URL and `target_session_attrs`, to the new primary.

mod connect;

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, Timeouts};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::{ApplyError, Space, Store, StoreError, WriteOp, encode_counter, prefix_end};
use crate::tls::CaBundle;

pub use connect::{ConnectOptions, Verify, parse as parse_url};

/// The embedded migrations, in order; the schema version is the number of those applied.
const MIGRATIONS: &[&str] = &[include_str!("postgres/migrations/0001_initial.sql")];

/// The advisory lock the migrations are taken under (any constant that other users of the database are
/// unlikely to pick: "kps" in ASCII).
const MIGRATION_LOCK: i64 = 0x006b_7073;

/// How long a request waits for a pooled connection and for a new one; `/readyz` waits less.
const POOL_WAIT: Duration = Duration::from_secs(5);
const READY_WAIT: Duration = Duration::from_secs(1);

/// How many times a batch is retried after a serialization failure or a deadlock.
const APPLY_ATTEMPTS: usize = 5;

/// The precondition failure raised by `kps.apply`.
const PRECONDITION_FAILED: &str = "KP001";

pub struct PostgresStore {
    pool: Pool,
}

/// What a failed statement means for the store.
enum Failure {
    /// Run it again (serialization failure, deadlock).
    Retry(String),
    Store(StoreError),
    /// `kps.apply`'s precondition failure at this operation.
    Conflict(usize),
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Retry(message) => StoreError::Unavailable(message),
            Failure::Store(error) => error,
            Failure::Conflict(op) => StoreError::Backend(format!("unexpected precondition failure of operation {op}")),
        }
    }
}

/// Classifies a tokio-postgres error (`connected` tells whether the connection may still be used).
fn classify(error: &tokio_postgres::Error) -> (Failure, bool) {
    let Some(db) = error.as_db_error() else {
        // No answer from the server: closed, reset, refused, timed out, TLS, or no host took writes.
        return (Failure::Store(StoreError::Unavailable(format!("database connection: {error}"))), false);
    };
    let code = db.code();
    let message = format!("database: {} ({})", db.message(), code.code());
    if code.code() == PRECONDITION_FAILED {
        return match db.message().parse() {
            Ok(op) => (Failure::Conflict(op), true),
            Err(_) => (Failure::Store(StoreError::Backend(message)), true),
        };
    }
    if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED {
        return (Failure::Retry(message), true);
    }
    let class = &code.code()[..2];
    // 25006: a read-only server (a standby, or a primary being demoted); 57P01-03: shutting down or
    // starting; 08: connection exceptions; 53: out of connections or resources.
    if *code == SqlState::READ_ONLY_SQL_TRANSACTION || matches!(class, "57" | "08" | "53") {
        return (Failure::Store(StoreError::Unavailable(message)), false);
    }
    (Failure::Store(StoreError::Backend(message)), true)
}

fn pool_error(error: PoolError) -> StoreError {
    match error {
        PoolError::Backend(error) => StoreError::from(classify(&error).0),
        PoolError::Timeout(kind) => StoreError::Unavailable(format!("no database connection in time ({kind:?})")),
        other => StoreError::Unavailable(format!("database pool: {other}")),
    }
}

/// Settles `result` of a statement on `client`: a client whose connection failed is dropped from the pool.
fn settle<T>(client: Object, result: Result<T, tokio_postgres::Error>) -> Result<T, Failure> {
    match result {
        Ok(value) => Ok(value),
        Err(error) => {
            let (failure, usable) = classify(&error);
            if !usable {
                drop(Object::take(client));
            }
            Err(failure)
        }
    }
}

fn space_code(space: Space) -> i16 {
    match space {
        Space::KeyPairs => 1,
        Space::NameIndex => 2,
        Space::Meta => 3,
        Space::Counters => 4,
    }
}

fn counter_bytes(value: i64) -> Result<Vec<u8>, StoreError> {
    u64::try_from(value).map(encode_counter).map_err(|_| StoreError::Corrupt("a counter is negative".into()))
}

/// A batch as the arrays `kps.apply` takes.
#[derive(Default)]
struct Batch {
    kinds: Vec<i16>,
    spaces: Vec<i16>,
    keys: Vec<Vec<u8>>,
    expected: Vec<Option<Vec<u8>>>,
    values: Vec<Option<Vec<u8>>>,
    deltas: Vec<i64>,
    maxes: Vec<Option<i64>>,
}

impl Batch {
    fn new(ops: Vec<WriteOp>) -> Result<Self, StoreError> {
        let mut batch = Batch::default();
        for op in ops {
            let (kind, space, key, expected, value, delta, max) = match op {
                WriteOp::Add { key, delta, max } => {
                    let max = max.map(|max| i64::try_from(max).unwrap_or(i64::MAX));
                    (4, Space::Counters, key, None, None, delta, max)
                }
                WriteOp::PutIfAbsent { space, key, value } => (1, space, key, None, Some(value), 0, None),
                WriteOp::Replace { space, key, expected, value } => {
                    (2, space, key, Some(expected), Some(value), 0, None)
                }
                WriteOp::Delete { space, key, expected } => (3, space, key, Some(expected), None, 0, None),
            };
            if kind != 4 && space == Space::Counters {
                return Err(StoreError::Backend("counters are written only by WriteOp::Add".into()));
            }
            batch.kinds.push(kind);
            batch.spaces.push(space_code(space));
            batch.keys.push(key);
            batch.expected.push(expected);
            batch.values.push(value);
            batch.deltas.push(delta);
            batch.maxes.push(max);
        }
        Ok(batch)
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 7] {
        [&self.kinds, &self.spaces, &self.keys, &self.expected, &self.values, &self.deltas, &self.maxes]
    }
}

impl PostgresStore {
    /// Connects to the database of `url` (`store.postgres_url`) with up to `pool_size` connections and
    /// brings its schema up to date (migrations). Refuses a schema newer than this binary.
    pub async fn open(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        Self::open_trusting(url, pool_size, None).await
    }

    /// [`PostgresStore::open`] whose TLS trusts `roots` (`tls.ca_file`) in place of the system roots.
    pub async fn open_trusting(url: &str, pool_size: usize, roots: Option<&CaBundle>) -> Result<Self, StoreError> {
        let store = Self::connect_trusting(url, pool_size, roots)?;
        store.migrate().await?;
        Ok(store)
    }

    /// The pool for `url`, without connecting yet.
    pub fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        Self::connect_trusting(url, pool_size, None)
    }

    /// [`PostgresStore::connect`] whose TLS trusts `roots` (`tls.ca_file`) in place of the system roots.
    pub fn connect_trusting(url: &str, pool_size: usize, roots: Option<&CaBundle>) -> Result<Self, StoreError> {
        let options = connect::parse(url).map_err(|e| StoreError::Backend(format!("store.postgres_url: {e}")))?;
        let tls = connect::tls_config(&options, roots)
            .map_err(|e| StoreError::Backend(format!("store.postgres_url: {e}")))?;
        let manager = Manager::from_config(
            options.config,
            connect::MakeTls(tokio_postgres_rustls::MakeRustlsConnect::new(tls)),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::Backend(format!("database pool: {e}")))?;
        Ok(Self { pool })
    }

    /// Brings the schema `kps` up to this binary's version, under a transaction-scoped advisory lock (two
    /// replicas starting together migrate once). Returns the versions before and after.
    pub async fn migrate(&self) -> Result<(usize, usize), StoreError> {
        let mut client = self.client(None).await?;
        match migrate_on(&mut client).await {
            Ok(versions) => Ok(versions),
            Err(MigrateError::Store(error)) => Err(error),
            Err(MigrateError::Sql(error)) => Err(settle::<()>(client, Err(error))
                .err()
                .map_or_else(|| StoreError::Backend("migration failed".into()), StoreError::from)),
        }
    }

    async fn client(&self, wait: Option<Duration>) -> Result<Object, StoreError> {
        let result = match wait {
            None => self.pool.get().await,
            Some(wait) => {
                let timeouts = Timeouts { wait: Some(wait), create: Some(wait), recycle: Some(wait) };
                self.pool.timeout_get(&timeouts).await
            }
        };
        result.map_err(pool_error)
    }

    /// Runs `sql` with `params` and returns its rows (one attempt; the caller decides on retries).
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<tokio_postgres::Row>, Failure> {
        let client = self.client(None).await.map_err(Failure::Store)?;
        let result = match client.prepare_cached(sql).await {
            Ok(statement) => client.query(&statement, params).await,
            Err(error) => Err(error),
        };
        settle(client, result)
    }

    async fn rows(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.query(sql, params).await.map_err(StoreError::from)
    }
}

enum MigrateError {
    Sql(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(error: tokio_postgres::Error) -> Self {
        MigrateError::Sql(error)
    }
}

async fn migrate_on(client: &mut Object) -> Result<(usize, usize), MigrateError> {
    let transaction = client.transaction().await?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    // Created only when missing: CREATE SCHEMA IF NOT EXISTS would need the CREATE privilege every time.
    let exists = transaction.query_opt("SELECT 1 FROM pg_namespace WHERE nspname = 'kps'", &[]).await?.is_some();
    if !exists {
        transaction.batch_execute("CREATE SCHEMA kps").await?;
    }
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS kps.schema_version (version integer PRIMARY KEY, \
             applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let row = transaction.query_one("SELECT coalesce(max(version), 0) FROM kps.schema_version", &[]).await?;
    let before = usize::try_from(row.get::<_, i32>(0)).unwrap_or(0);
    if before > MIGRATIONS.len() {
        return Err(MigrateError::Store(StoreError::Backend(format!(
            "the database schema kps is at version {before}, newer than this kps knows ({}): run a kps at least \
             as new as the one that migrated it",
            MIGRATIONS.len()
        ))));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(before) {
        transaction.batch_execute(sql).await?;
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        transaction.execute("INSERT INTO kps.schema_version (version) VALUES ($1)", &[&version]).await?;
    }
    transaction.commit().await?;
    if before < MIGRATIONS.len() {
        tracing::info!(from = before, to = MIGRATIONS.len(), "store: migrated the database schema kps");
    }
    Ok((before, MIGRATIONS.len()))
}

#[async_trait]
impl Store for PostgresStore {
    async fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if space == Space::Counters {
            let rows = self.rows("SELECT value FROM kps.counters WHERE key = $1", &[&key]).await?;
            return rows.first().map(|row| counter_bytes(row.get(0))).transpose();
        }
        let rows = self
            .rows("SELECT value FROM kps.entries WHERE space = $1 AND key = $2", &[&space_code(space), &key])
            .await?;
        Ok(rows.into_iter().next().map(|row| row.get(0)))
    }

    async fn get_many(&self, space: Space, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let rows = if space == Space::Counters {
            self.rows("SELECT key, value FROM kps.counters WHERE key = ANY($1)", &[&keys]).await?
        } else {
            let sql = "SELECT key, value FROM kps.entries WHERE space = $1 AND key = ANY($2)";
            self.rows(sql, &[&space_code(space), &keys]).await?
        };
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let value = if space == Space::Counters { counter_bytes(row.get(1))? } else { row.get(1) };
            found.insert(row.get::<_, Vec<u8>>(0), value);
        }
        Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
    }

    async fn apply(&self, ops: Vec<WriteOp>) -> Result<(), ApplyError> {
        if ops.is_empty() {
            return Ok(());
        }
        let batch = Batch::new(ops)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.query("SELECT kps.apply($1, $2, $3, $4, $5, $6, $7)", &batch.params()).await {
                Ok(_) => return Ok(()),
                Err(Failure::Conflict(op)) => return Err(ApplyError::Conflict { op }),
                Err(Failure::Retry(reason)) if attempt < APPLY_ATTEMPTS => {
                    tracing::debug!(%reason, attempt, "store: retrying a batch");
                }
                Err(failure) => return Err(ApplyError::Store(failure.into())),
            }
        }
    }

    async fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Both lower bounds are given; the index scan starts at the greater one.
        let after = after.unwrap_or(b"");
        let end = prefix_end(prefix);
        let (table, space_filter) = table(space);
        let upper = if end.is_some() { "AND key < $4" } else { "AND $4::bytea IS NULL" };
        let sql = format!(
            "SELECT key, value FROM {table} WHERE {space_filter} key >= $2 AND key > $3 {upper} ORDER BY key LIMIT $5"
        );
        let rows = self.rows(&sql, &[&space_code(space), &prefix, &after, &end, &limit]).await?;
        rows.into_iter()
            .map(|row| {
                let value = if space == Space::Counters { counter_bytes(row.get(1))? } else { row.get(1) };
                Ok((row.get(0), value))
            })
            .collect()
    }

    async fn count(&self, space: Space, prefix: &[u8]) -> Result<u64, StoreError> {
        let end = prefix_end(prefix);
        let (table, space_filter) = table(space);
        let upper = if end.is_some() { "AND key < $3" } else { "AND $3::bytea IS NULL" };
        let sql = format!("SELECT count(*) FROM {table} WHERE {space_filter} key >= $2 {upper}");
        let rows = self.rows(&sql, &[&space_code(space), &prefix, &end]).await?;
        let count: i64 = rows.first().map_or(0, |row| row.get(0));
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn next_id(&self) -> Result<u64, StoreError> {
        let rows = self.rows("SELECT nextval('kps.record_ids')", &[]).await?;
        id(rows.first().map(|row| row.get(0)))
    }

    async fn peek_next_id(&self) -> Result<u64, StoreError> {
        let sql = "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM kps.record_ids";
        let rows = self.rows(sql, &[]).await?;
        id(rows.first().map(|row| row.get(0)))
    }

    async fn advance_ids(&self, next: u64) -> Result<(), StoreError> {
        let next = i64::try_from(next).map_err(|_| StoreError::Backend("record id out of range".into()))?;
        // Only ever forwards: setval runs only while the next id is below `next`.
        let sql = "SELECT setval('kps.record_ids', $1, false) FROM kps.record_ids \
                   WHERE (CASE WHEN is_called THEN last_value + 1 ELSE last_value END) < $1";
        self.rows(sql, &[&next]).await.map(drop)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every apply is committed (and as durable as the server's synchronous_commit) when it returns.
        Ok(())
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let client = self.client(Some(READY_WAIT)).await?;
        let result = client.query_one("SELECT pg_is_in_recovery()", &[]).await;
        let in_recovery: bool = match result {
            Ok(row) => row.get(0),
            Err(error) => {
                return Err(settle::<()>(client, Err(error))
                    .err()
                    .map_or_else(|| StoreError::Backend("readiness check failed".into()), StoreError::from));
            }
        };
        if in_recovery {
            // Connected to a standby: the next connection looks for the primary again.
            drop(Object::take(client));
            return Err(StoreError::Unavailable("the database is read-only (in recovery)".into()));
        }
        Ok(())
    }
}

/// The table of `space` and the condition on `space = $1` (always bound, so the parameters line up).
fn table(space: Space) -> (&'static str, &'static str) {
    match space {
        Space::Counters => ("kps.counters", "$1::smallint IS NOT NULL AND"),
        _ => ("kps.entries", "space = $1 AND"),
    }
}

fn id(value: Option<i64>) -> Result<u64, StoreError> {
    value
        .and_then(|value| u64::try_from(value).ok())
        .ok_or_else(|| StoreError::Corrupt("the record id sequence answered no id".into()))
}
