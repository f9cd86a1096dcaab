//! The credits ledger: the domain's [`CreditsLedger`] port on Postgres ([`PgLedger`], for
//! production and scale-out) and on SQLite ([`SqliteLedger`], the embedded default), with the
//! same behaviour on both.
//!
//! The model is double-entry and append-only, after TigerBeetle's two-phase transfers. Each firm
//! has four accounts: `available` (spendable), `held` (reserved by pending holds), `spent` (the
//! platform's revenue, net of refunds) and `funding` (where grants come from). Every operation
//! appends one row to `ledger_operations` and two entries to `ledger_entries` that sum to zero;
//! neither table is ever updated or deleted (database triggers refuse it). The firm's account row
//! caches the running balances and is locked by every write, which serialises one firm's
//! operations across threads, processes and replicas, so no balance can go negative; the
//! [`LedgerAudit`] check proves the cache equals the entries.
//!
//! Rules are written once (the private `engine` module) over a small write-transaction trait, and
//! the statements once (`statements`) over the storage engine's driver (`kyc_store_support`'s
//! `Runner` and `Session`), so the two backends differ only in the firm's lock and in how they
//! connect.
//!
//! Wiring: run [`postgres::migrate`] or [`sqlite::migrate`] at start-up (the ledger's migrations
//! are versioned from 1001 and share `_sqlx_migrations` with the storage crate's), then hand
//! `Arc::new(PgLedger::new(pool))` or `Arc::new(SqliteLedger::new(pool))` to the use cases as an
//! `Arc<dyn CreditsLedger>`.
//!
//! [`CreditsLedger`]: kyc_domain::ports::CreditsLedger

mod engine;
pub mod postgres;
pub mod sqlite;
mod statements;

use async_trait::async_trait;
use kyc_domain::ids::FirmId;
use kyc_domain::ports::{Clock, LedgerError};
use time::OffsetDateTime;

pub use postgres::{PgLedger, migrate as migrate_postgres};
pub use sqlite::{SqliteLedger, migrate as migrate_sqlite, sqlite_options};

/// The wall clock, in UTC: the default clock of both ledgers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// What a firm's ledger holds, recomputed from its entries, beside the cached balances: the
/// evidence that the ledger is balanced and that the cache tells the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditReport {
    /// Sum of the firm's entries on its `available` account.
    pub available_from_entries: i64,
    /// Sum of the firm's entries on its `held` account.
    pub held_from_entries: i64,
    /// Sum of the firm's entries on its `spent` account.
    pub spent_from_entries: i64,
    /// Sum of the firm's entries on its `funding` account (minus everything granted).
    pub funding_from_entries: i64,
    /// Sum of all the firm's entries: zero in a balanced ledger.
    pub entries_total: i64,
    /// Operations whose own entries do not sum to zero, or that have no entries: zero when sound.
    pub unbalanced_operations: i64,
    /// How many operations the firm has.
    pub operations: i64,
    /// How many entries the firm has.
    pub entries: i64,
    /// The cached available balance.
    pub cached_available: i64,
    /// The cached held balance.
    pub cached_held: i64,
    /// The cached spent balance.
    pub cached_spent: i64,
    /// The cached funding balance.
    pub cached_funding: i64,
    /// Credits of pending holds, from the holds table: must equal the held account.
    pub pending_hold_credits: i64,
}

impl AuditReport {
    /// Whether the ledger is balanced, every operation is balanced, the cache equals the entries,
    /// pending holds match the held account, and no account that must not be negative is.
    pub fn is_sound(&self) -> bool {
        self.entries_total == 0
            && self.unbalanced_operations == 0
            && self.cached_available == self.available_from_entries
            && self.cached_held == self.held_from_entries
            && self.cached_spent == self.spent_from_entries
            && self.cached_funding == self.funding_from_entries
            && self.pending_hold_credits == self.held_from_entries
            && self.available_from_entries >= 0
            && self.held_from_entries >= 0
            && self.spent_from_entries >= 0
    }
}

/// Recomputes a firm's balances from its entries, for tests, operators and reconciliation.
#[async_trait]
pub trait LedgerAudit: Send + Sync {
    /// The audit of one firm (all zeros for a firm with no operations).
    ///
    /// # Errors
    /// [`LedgerError::Infrastructure`] only.
    async fn audit(&self, firm: FirmId) -> Result<AuditReport, LedgerError>;
}

/// Translates a driver error at the adapter's edge: what may pass if retried later becomes
/// `Unavailable`, everything else `Internal` (the storage engine's reading, shared with the store).
pub(crate) fn infrastructure(error: sqlx::Error) -> LedgerError {
    LedgerError::Infrastructure(kyc_store_support::engine::infra(error))
}
