//! # kyc-sqlite
//!
//! The embedded storage adapter: every storage port of `kyc-domain` on one SQLite file, so the
//! service runs on a fresh machine with no database server. It passes the same contract suite
//! (`kyc-store-contract`) as the Postgres adapter.
//!
//! Times are stored as integer microseconds (UTC) and ids as hyphenated UUID text, so both sort
//! the way Postgres sorts `timestamptz` and `uuid`. Writes open `BEGIN IMMEDIATE` transactions:
//! SQLite has one writer at a time, and taking the write lock up front makes concurrent writers
//! wait on `busy_timeout` instead of failing when a read lock cannot be upgraded.
//!
//! Writers of one store also take turns before asking SQLite for the lock (see
//! [`SqliteDb::write_turn`]): SQLite's busy handler polls with sleeps of up to 100 ms and
//! serves no one in order, so under a stream of concurrent writes most of a writer's wait was
//! sleep after the lock had been freed, and an unlucky one waited close to a second.

mod accounts;
mod customers;
mod delivery;
mod engine;
#[cfg(test)]
mod plans;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use kyc_domain::customer::CustomerState;
use kyc_domain::ports::InfrastructureError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, SqlitePool};

pub use kyc_store_support::DEFAULT_STATE_CACHE_ENTRIES;
use kyc_store_support::StateCache;
use kyc_store_support::sqlite::SqliteDb;
pub use kyc_store_support::turn::WriterTurn;

/// Opens (creating it if missing) the SQLite database at `url` (`sqlite://path/to/file.db`) in
/// WAL mode with foreign keys on and a busy timeout, as a pool.
///
/// # Errors
/// [`InfrastructureError::Unavailable`] when the file cannot be opened or created.
pub async fn connect(url: &str) -> Result<SqlitePool, InfrastructureError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(InfrastructureError::internal)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new()
        .max_connections(8)
        .after_release(|connection, _| {
            Box::pin(async move {
                // A transaction that failed on a full disk or an I/O error may have been rolled
                // back by SQLite itself; the driver's own ROLLBACK then fails and it still counts
                // the transaction open, so the next `BEGIN` on this connection would be refused.
                // Such a connection is closed rather than returned to the pool. (The ping waits
                // for a rollback the driver queued when the transaction was dropped.)
                if connection.is_in_transaction() {
                    connection.ping().await?;
                }
                Ok(!connection.is_in_transaction())
            })
        })
        .connect_with(options)
        .await
        .map_err(InfrastructureError::unavailable)
}

/// Applies the embedded migrations that have not run yet, then the data moves that have not
/// ([`kyc_store_support::times`]).
///
/// # Errors
/// [`InfrastructureError::Internal`] when a migration fails or an applied one was changed;
/// [`InfrastructureError::Unavailable`] when the database fails during a data move.
pub async fn migrate(pool: &SqlitePool) -> Result<(), InfrastructureError> {
    // Versions 1..=999 belong to this crate; the ledger uses 1001 and up in the same
    // `_sqlx_migrations` table, so its rows must not count as unknown migrations.
    let mut migrator = sqlx::migrate!("./migrations/sqlite");
    migrator.set_ignore_missing(true);
    migrator
        .run(pool)
        .await
        .map_err(InfrastructureError::internal)?;
    // Stored times written before RFC 3339, rewritten once (readers accept both meanwhile).
    kyc_store_support::times::upgrade_stored_times(&SqliteStore::with_state_cache(pool.clone(), 0))
        .await?;
    Ok(())
}

/// Every storage port on one SQLite pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The pool and the turn of this database's writers in this process (shared by its clones,
    /// and by the ledger on the same file when handed [`SqliteStore::writer_turn`]), taken in
    /// arrival order.
    db: SqliteDb,
    /// Decoded customer states, shared by the clones of this value (not by other values).
    states: Arc<StateCache>,
}

impl SqliteStore {
    /// Wraps a pool from [`connect`] (migrated with [`migrate`]), with a cache of up to
    /// [`DEFAULT_STATE_CACHE_ENTRIES`] decoded customer states.
    pub fn new(pool: SqlitePool) -> Self {
        Self::with_state_cache(pool, DEFAULT_STATE_CACHE_ENTRIES)
    }

    /// Wraps a pool with a cache of up to `entries` decoded customer states (`0` turns it off).
    ///
    /// Reads look a customer up by firm, id and the version its row carries, and parse the stored
    /// JSON only on a miss; a state never changes at a given version, so a hit is what the parse
    /// would give, and a customer saved through another store on the same database is read at its
    /// new version. A typical entry takes 1–2 KiB: 10 000 entries hold roughly 10–20 MiB.
    pub fn with_state_cache(pool: SqlitePool, entries: usize) -> Self {
        Self {
            db: SqliteDb::new(pool),
            states: Arc::new(StateCache::new(entries)),
        }
    }

    /// The turn this store's writers take, to hand to every other writer of the same file in
    /// this process (the credits ledger), so they all queue in one line.
    pub fn writer_turn(&self) -> WriterTurn {
        self.db.writer.clone()
    }

    /// The pool, for health checks and tests.
    pub fn pool(&self) -> &SqlitePool {
        &self.db.pool
    }

    /// A write transaction: this store's turn, then `BEGIN IMMEDIATE` (the database's write lock).
    async fn begin_write(&self) -> Result<WriteTx, InfrastructureError> {
        self.db.begin_write().await
    }
}

pub(crate) use kyc_store_support::engine::infra;

/// Whether the error is a unique violation on the named table and column.
pub(crate) fn is_unique_violation(error: &sqlx::Error, column: &str) -> bool {
    match error {
        // SQLite names the columns, not the constraint: "UNIQUE constraint failed: t.c, …".
        sqlx::Error::Database(db) => db.is_unique_violation() && db.message().contains(column),
        _ => false,
    }
}

pub(crate) use kyc_store_support::sqlite::{WriteTx, from_micros, micros};

/// A value serialized for a JSON column.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, InfrastructureError> {
    serde_json::to_string(value).map_err(InfrastructureError::internal)
}

/// A customer's state as stored (see [`kyc_store_support::rules::state_json`]), as text.
pub(crate) fn state_json(state: &CustomerState) -> Result<String, InfrastructureError> {
    to_json(&kyc_store_support::rules::state_json(state)?)
}

kyc_store_support::firm_store!(SqliteStore);
kyc_store_support::user_store!(SqliteStore);
kyc_store_support::session_store!(SqliteStore);
kyc_store_support::idempotency_store!(SqliteStore);
kyc_store_support::audit_log!(SqliteStore);
kyc_store_support::webhook_store!(SqliteStore);
