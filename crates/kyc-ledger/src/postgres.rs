//! The ledger on Postgres: the production and scale-out backend. Every write locks the firm's
//! account row (`SELECT ... FOR UPDATE`), so any number of replicas on one database serialise a
//! firm's operations and a balance can never go negative.

use std::sync::Arc;

use kyc_domain::ports::Clock;
use sqlx::PgPool;

use crate::SystemClock;

/// Applies the ledger's migrations (versions 1001 and up). They share `_sqlx_migrations` with the
/// storage crate's migrations on the same database, so the ones this crate does not know are
/// ignored rather than reported missing.
///
/// # Errors
/// The migration error when the schema cannot be brought up to date.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("migrations/postgres");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// The credits ledger on a Postgres pool.
#[derive(Clone)]
pub struct PgLedger {
    db: PgPool,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger").finish_non_exhaustive()
    }
}

impl PgLedger {
    /// A ledger on `pool` (already migrated with [`migrate`]), on the wall clock.
    pub fn new(pool: PgPool) -> Self {
        Self {
            db: pool,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same ledger reading time from `clock` (for tests of day boundaries and recovery).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The pool underneath.
    pub fn pool(&self) -> &PgPool {
        &self.db
    }
}

crate::statements::ledger_ports!(PgLedger);
