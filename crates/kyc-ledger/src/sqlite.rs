//! The ledger on SQLite: the embedded default. SQLite has no row locks, so every write takes the
//! database's write lock up front (`BEGIN IMMEDIATE`), which serialises writers across processes
//! exactly like the firm-row lock on Postgres; inside one process writers also queue on a mutex
//! first, so they wait in line instead of in SQLite's sleeping busy handler.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kyc_domain::ports::Clock;
use kyc_store_support::sqlite::SqliteDb;
use kyc_store_support::turn::WriterTurn;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use crate::SystemClock;

/// Applies the ledger's migrations (versions 1001 and up). They share `_sqlx_migrations` with the
/// storage crate's migrations on the same database, so the ones this crate does not know are
/// ignored rather than reported missing.
///
/// # Errors
/// The migration error when the schema cannot be brought up to date.
pub async fn migrate(pool: &SqlitePool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("migrations/sqlite");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// Connection options the ledger expects for a database file: WAL (readers never block the
/// writer), foreign keys on, and a generous busy timeout so a writer in another process is waited
/// for rather than reported as a failure.
pub fn sqlite_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(30))
}

/// The credits ledger on a SQLite pool (open it with [`sqlite_options`]).
#[derive(Clone)]
pub struct SqliteLedger {
    db: SqliteDb,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLedger").finish_non_exhaustive()
    }
}

impl SqliteLedger {
    /// A ledger on `pool` (already migrated with [`migrate`]), on the wall clock.
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            db: SqliteDb::new(pool),
            clock: Arc::new(SystemClock),
        }
    }

    /// The same ledger reading time from `clock` (for tests of day boundaries and recovery).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same ledger taking its writes in `turn`: the turn of every other writer of the same
    /// file in this process (`SqliteStore::writer_turn`), so the store and the ledger queue in
    /// one line rather than meeting in SQLite's polling busy handler.
    #[must_use]
    pub fn with_writer_turn(mut self, turn: WriterTurn) -> Self {
        self.db.writer = turn;
        self
    }

    /// The turn this ledger's writes take.
    pub fn writer_turn(&self) -> WriterTurn {
        self.db.writer.clone()
    }

    /// The pool underneath.
    pub fn pool(&self) -> &SqlitePool {
        &self.db.pool
    }
}

crate::statements::ledger_ports!(SqliteLedger);
