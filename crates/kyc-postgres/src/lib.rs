//! # kyc-postgres
//!
//! The production storage adapter: every storage port of `kyc-domain` on PostgreSQL, for many
//! stateless server replicas sharing one database. It passes the same contract suite
//! (`kyc-store-contract`) as the embedded SQLite adapter.
//!
//! Times are stored as `timestamptz`, which keeps microseconds: values are truncated to the
//! microsecond before they are written or compared, so a cursor built from a customer read back
//! finds its place again. The customer's full state is `jsonb` beside indexed columns that serve
//! the CRM list and polling queries.

mod accounts;
mod customers;
mod delivery;
mod engine;
mod keys;
mod limits;
#[cfg(test)]
mod plans;

use std::sync::Arc;
use std::time::Duration;

use kyc_domain::ports::InfrastructureError;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub use keys::{KEY_CACHE_ENTRIES, KEY_CHANGES_CHANNEL};
pub use kyc_store_support::DEFAULT_STATE_CACHE_ENTRIES;
use kyc_store_support::StateCache;

use crate::keys::KeyCache;

/// How long a request waits for a connection before it is answered 503: while the server is
/// down or restarting, requests fail in this time rather than pile up.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects a pool to the database at `url` (`postgres://user@host:5432/db`).
///
/// # Errors
/// [`InfrastructureError::Unavailable`] when the server cannot be reached or refuses the login.
pub async fn connect(url: &str) -> Result<PgPool, InfrastructureError> {
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect(url)
        .await
        .map_err(InfrastructureError::unavailable)
}

/// Applies the embedded migrations that have not run yet, then the data moves that have not
/// ([`kyc_store_support::times`]).
///
/// # Errors
/// [`InfrastructureError::Internal`] when a migration fails or an applied one was changed;
/// [`InfrastructureError::Unavailable`] when the database fails during a data move.
pub async fn migrate(pool: &PgPool) -> Result<(), InfrastructureError> {
    // Versions 1..=999 belong to this crate; the ledger uses 1001 and up in the same
    // `_sqlx_migrations` table, so its rows must not count as unknown migrations.
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    migrator.set_ignore_missing(true);
    migrator
        .run(pool)
        .await
        .map_err(InfrastructureError::internal)?;
    // Stored times written before RFC 3339, rewritten once (readers accept both meanwhile).
    kyc_store_support::times::upgrade_stored_times(&PostgresStore::with_state_cache(
        pool.clone(),
        0,
    ))
    .await?;
    Ok(())
}

/// Every storage port on one Postgres pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Decoded customer states, shared by the clones of this value (not by other values).
    states: Arc<StateCache>,
    /// API keys by hash, served only while [`PostgresStore::listen_for_key_changes`] listens;
    /// shared by the clones of this value.
    keys: Arc<KeyCache>,
}

impl PostgresStore {
    /// Wraps a pool from [`connect`] (migrated with [`migrate`]), with a cache of up to
    /// [`DEFAULT_STATE_CACHE_ENTRIES`] decoded customer states.
    pub fn new(pool: PgPool) -> Self {
        Self::with_state_cache(pool, DEFAULT_STATE_CACHE_ENTRIES)
    }

    /// Wraps a pool with a cache of up to `entries` decoded customer states (`0` turns it off).
    ///
    /// Reads look a customer up by firm, id and the version its row carries, and parse the stored
    /// JSON only on a miss; a state never changes at a given version, so a hit is what the parse
    /// would give, and a customer saved through another store on the same database is read at its
    /// new version. A typical entry takes 1–2 KiB: 10 000 entries hold roughly 10–20 MiB.
    pub fn with_state_cache(pool: PgPool, entries: usize) -> Self {
        Self {
            pool,
            states: Arc::new(StateCache::new(entries)),
            keys: Arc::new(KeyCache::new(KEY_CACHE_ENTRIES)),
        }
    }

    /// The pool, for health checks and tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

pub(crate) use kyc_store_support::engine::{fit, infra};
pub(crate) use kyc_store_support::rules::state_json;

/// Whether the error is a unique violation of the named constraint.
pub(crate) fn is_unique_violation(error: &sqlx::Error, constraint: &str) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            db.is_unique_violation() && db.constraint() == Some(constraint)
        }
        _ => false,
    }
}

pub(crate) use kyc_store_support::postgres::at_micros;

kyc_store_support::firm_store!(PostgresStore);
kyc_store_support::user_store!(PostgresStore);
kyc_store_support::session_store!(PostgresStore);
kyc_store_support::idempotency_store!(PostgresStore);
kyc_store_support::audit_log!(PostgresStore);
kyc_store_support::webhook_store!(PostgresStore);
