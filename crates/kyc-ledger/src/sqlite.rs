//! The ledger on SQLite: the embedded default. SQLite has no row locks, so every write takes the
//! database's write lock up front (`BEGIN IMMEDIATE`), which serialises writers across processes
//! exactly like the firm-row lock on Postgres; inside one process writers also queue on a mutex
//! first, so they wait in line instead of in SQLite's sleeping busy handler.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kyc_domain::ids::{AttemptNumber, CustomerId, FirmId};
use kyc_domain::ports::{
    Balance, Clock, CreditsLedger, Hold, HoldKey, HoldState, IdempotencyKey, InfrastructureError,
    LedgerError, LedgerReceipt, StatementEntry, StatementPage,
};
use kyc_domain::values::Credits;
use kyc_store_support::turn::{Turn, WriterTurn};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use time::OffsetDateTime;
use tracing::instrument;
use uuid::Uuid;

use crate::engine::{
    self, Backend, Balances, FirmRow, NewOperation, StoredKey, WriteTx, corrupt, credits_from_db,
    hold_from_db, kind_from_str, kind_str, state_str,
};
use crate::{AuditReport, LedgerAudit, SystemClock, infrastructure};

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
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
    writer: WriterTurn,
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
            pool,
            clock: Arc::new(SystemClock),
            writer: WriterTurn::new(),
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
        self.writer = turn;
        self
    }

    /// The turn this ledger's writes take.
    pub fn writer_turn(&self) -> WriterTurn {
        self.writer.clone()
    }

    /// The pool underneath.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// A SQLite write transaction holding the database's write lock (and this process's writer turn).
pub(crate) struct SqliteWriteTx {
    tx: Transaction<'static, Sqlite>,
    _turn: Turn,
}

#[async_trait]
impl Backend for SqliteLedger {
    type Tx = SqliteWriteTx;

    async fn begin(&self) -> Result<SqliteWriteTx, LedgerError> {
        let turn = self.writer.take().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(infrastructure)?;
        Ok(SqliteWriteTx { tx, _turn: turn })
    }
}

fn micros(at: OffsetDateTime) -> i64 {
    // Microseconds since 1970 fit an i64 for ±292,000 years.
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

fn from_micros(value: i64) -> Result<OffsetDateTime, LedgerError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(value) * 1_000)
        .map_err(|error| LedgerError::Infrastructure(InfrastructureError::internal(error)))
}

fn uuid(text: &str) -> Result<Uuid, LedgerError> {
    Uuid::from_str(text)
        .map_err(|error| LedgerError::Infrastructure(InfrastructureError::internal(error)))
}

fn attempt_to_db(attempt: AttemptNumber) -> i64 {
    i64::from(attempt.get())
}

const HOLD_COLUMNS: &str = "firm_id, customer_id, attempt, credits, state, created_at";

fn hold_row(row: &SqliteRow) -> Result<Hold, LedgerError> {
    let firm: String = row.try_get(0).map_err(infrastructure)?;
    let customer: String = row.try_get(1).map_err(infrastructure)?;
    let state: String = row.try_get(4).map_err(infrastructure)?;
    hold_from_db(
        uuid(&firm)?,
        uuid(&customer)?,
        row.try_get(2).map_err(infrastructure)?,
        row.try_get(3).map_err(infrastructure)?,
        &state,
        from_micros(row.try_get(5).map_err(infrastructure)?)?,
    )
}

const FIRM_COLUMNS: &str =
    "daily_cap_credits, available_credits, held_credits, spent_credits, funded_credits";

const SELECT_FIRM: &str = "SELECT daily_cap_credits, available_credits, held_credits, \
     spent_credits, funded_credits FROM ledger_firms WHERE firm_id = ?1";

#[async_trait]
impl WriteTx for SqliteWriteTx {
    async fn lock_firm(&mut self, firm: FirmId) -> Result<FirmRow, LedgerError> {
        // The whole database is already locked for writing by BEGIN IMMEDIATE; this only reads
        // the firm's row, creating it on the firm's first operation.
        let found = sqlx::query(SELECT_FIRM)
            .bind(firm.to_string())
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(infrastructure)?;
        let row = match found {
            Some(row) => row,
            None => sqlx::query(&format!(
                "INSERT INTO ledger_firms (firm_id) VALUES (?1) RETURNING {FIRM_COLUMNS}"
            ))
            .bind(firm.to_string())
            .fetch_one(&mut *self.tx)
            .await
            .map_err(infrastructure)?,
        };
        Ok(FirmRow {
            daily_cap: row.try_get(0).map_err(infrastructure)?,
            balances: Balances {
                available: row.try_get(1).map_err(infrastructure)?,
                held: row.try_get(2).map_err(infrastructure)?,
                spent: row.try_get(3).map_err(infrastructure)?,
                funded: row.try_get(4).map_err(infrastructure)?,
            },
        })
    }

    async fn find_key(
        &mut self,
        firm: FirmId,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredKey>, LedgerError> {
        let row = sqlx::query(
            "SELECT operation, fingerprint, result FROM ledger_idempotency \
             WHERE firm_id = ?1 AND key = ?2",
        )
        .bind(firm.to_string())
        .bind(key.as_str())
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(infrastructure)?;
        row.map(|row| {
            Ok(StoredKey {
                operation: row.try_get(0)?,
                fingerprint: row.try_get(1)?,
                result: row.try_get(2)?,
            })
        })
        .transpose()
        .map_err(infrastructure)
    }

    async fn save_key(
        &mut self,
        firm: FirmId,
        key: &IdempotencyKey,
        stored: &StoredKey,
        at: OffsetDateTime,
    ) -> Result<(), LedgerError> {
        sqlx::query(
            "INSERT INTO ledger_idempotency (firm_id, key, operation, fingerprint, result, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(firm.to_string())
        .bind(key.as_str())
        .bind(&stored.operation)
        .bind(&stored.fingerprint)
        .bind(&stored.result)
        .bind(micros(at))
        .execute(&mut *self.tx)
        .await
        .map_err(infrastructure)?;
        Ok(())
    }

    async fn find_hold(
        &mut self,
        firm: FirmId,
        hold: HoldKey,
    ) -> Result<Option<Hold>, LedgerError> {
        let row = sqlx::query(&format!(
            "SELECT {HOLD_COLUMNS} FROM ledger_holds \
             WHERE firm_id = ?1 AND customer_id = ?2 AND attempt = ?3"
        ))
        .bind(firm.to_string())
        .bind(hold.customer.to_string())
        .bind(attempt_to_db(hold.attempt))
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(infrastructure)?;
        row.as_ref().map(hold_row).transpose()
    }

    async fn insert_hold(&mut self, hold: &Hold) -> Result<(), LedgerError> {
        let credits = i64::try_from(hold.credits.get())
            .map_err(|_| LedgerError::InvalidAmount(hold.credits))?;
        sqlx::query(
            "INSERT INTO ledger_holds (firm_id, customer_id, attempt, credits, state, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(hold.firm_id.to_string())
        .bind(hold.key.customer.to_string())
        .bind(attempt_to_db(hold.key.attempt))
        .bind(credits)
        .bind(state_str(hold.state))
        .bind(micros(hold.created_at))
        .execute(&mut *self.tx)
        .await
        .map_err(infrastructure)?;
        Ok(())
    }

    async fn resolve_hold(
        &mut self,
        firm: FirmId,
        hold: HoldKey,
        state: HoldState,
        at: OffsetDateTime,
    ) -> Result<(), LedgerError> {
        let done = sqlx::query(
            "UPDATE ledger_holds SET state = ?4, resolved_at = ?5 \
             WHERE firm_id = ?1 AND customer_id = ?2 AND attempt = ?3 AND state = 'pending'",
        )
        .bind(firm.to_string())
        .bind(hold.customer.to_string())
        .bind(attempt_to_db(hold.attempt))
        .bind(state_str(state))
        .bind(micros(at))
        .execute(&mut *self.tx)
        .await
        .map_err(infrastructure)?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(corrupt(format!(
                "hold {hold} was not pending under the write lock"
            )))
        }
    }

    async fn reserved_between(
        &mut self,
        firm: FirmId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<i64, LedgerError> {
        sqlx::query_scalar(
            "SELECT COALESCE(SUM(credits), 0) FROM ledger_holds \
             WHERE firm_id = ?1 AND state <> 'voided' AND created_at >= ?2 AND created_at < ?3",
        )
        .bind(firm.to_string())
        .bind(micros(from))
        .bind(micros(to))
        .fetch_one(&mut *self.tx)
        .await
        .map_err(infrastructure)
    }

    async fn refunded(&mut self, firm: FirmId, hold: HoldKey) -> Result<i64, LedgerError> {
        sqlx::query_scalar(
            "SELECT COALESCE(SUM(credits), 0) FROM ledger_operations \
             WHERE firm_id = ?1 AND customer_id = ?2 AND attempt = ?3 AND kind = 'refund'",
        )
        .bind(firm.to_string())
        .bind(hold.customer.to_string())
        .bind(attempt_to_db(hold.attempt))
        .fetch_one(&mut *self.tx)
        .await
        .map_err(infrastructure)
    }

    async fn append(
        &mut self,
        operation: &NewOperation,
        balances: &Balances,
    ) -> Result<(), LedgerError> {
        let id = operation.id.to_string();
        let firm = operation.firm.to_string();
        sqlx::query(
            "INSERT INTO ledger_operations \
             (id, firm_id, kind, credits, available_delta, customer_id, attempt, reference, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(&id)
        .bind(&firm)
        .bind(kind_str(operation.kind))
        .bind(operation.credits)
        .bind(operation.available_delta)
        .bind(operation.hold.map(|hold| hold.customer.to_string()))
        .bind(operation.hold.map(|hold| attempt_to_db(hold.attempt)))
        .bind(operation.reference.as_deref())
        .bind(micros(operation.at))
        .execute(&mut *self.tx)
        .await
        .map_err(infrastructure)?;
        // Every operation is a transfer between two accounts: both entries in one statement.
        let [(from, debit), (to, credit)] = operation.postings.as_slice() else {
            return Err(corrupt(format!(
                "operation {} has {} postings, not two",
                operation.id,
                operation.postings.len()
            )));
        };
        sqlx::query(
            "INSERT INTO ledger_entries (operation_id, firm_id, account, amount_credits) \
             VALUES (?1, ?2, ?3, ?4), (?1, ?2, ?5, ?6)",
        )
        .bind(&id)
        .bind(&firm)
        .bind(from.as_str())
        .bind(debit)
        .bind(to.as_str())
        .bind(credit)
        .execute(&mut *self.tx)
        .await
        .map_err(infrastructure)?;
        sqlx::query(
            "UPDATE ledger_firms SET available_credits = ?2, held_credits = ?3, \
             spent_credits = ?4, funded_credits = ?5 WHERE firm_id = ?1",
        )
        .bind(&firm)
        .bind(balances.available)
        .bind(balances.held)
        .bind(balances.spent)
        .bind(balances.funded)
        .execute(&mut *self.tx)
        .await
        .map_err(infrastructure)?;
        Ok(())
    }

    async fn commit(self) -> Result<(), LedgerError> {
        self.tx.commit().await.map_err(infrastructure)
    }

    async fn rollback(self) -> Result<(), LedgerError> {
        self.tx.rollback().await.map_err(infrastructure)
    }
}

fn statement_entry(row: &SqliteRow) -> Result<StatementEntry, LedgerError> {
    let kind: String = row.try_get("kind").map_err(infrastructure)?;
    let customer: Option<String> = row.try_get("customer_id").map_err(infrastructure)?;
    let attempt: Option<i64> = row.try_get("attempt").map_err(infrastructure)?;
    Ok(StatementEntry {
        id: row.try_get("id").map_err(infrastructure)?,
        at: from_micros(row.try_get("created_at").map_err(infrastructure)?)?,
        kind: kind_from_str(&kind)?,
        credits: credits_from_db(row.try_get("credits").map_err(infrastructure)?)?,
        available_delta: row.try_get("available_delta").map_err(infrastructure)?,
        customer: customer
            .as_deref()
            .map(|text| uuid(text).map(CustomerId::from_uuid))
            .transpose()?,
        attempt: attempt.map(engine::attempt_from_db).transpose()?,
        reference: row.try_get("reference").map_err(infrastructure)?,
    })
}

#[async_trait]
impl CreditsLedger for SqliteLedger {
    #[instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    async fn grant(
        &self,
        firm: FirmId,
        credits: Credits,
        reference: &str,
        key: &IdempotencyKey,
    ) -> Result<LedgerReceipt, LedgerError> {
        engine::grant(self, &*self.clock, firm, credits, reference, key).await
    }

    #[instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm, customer_id = %hold.customer))]
    async fn reserve(
        &self,
        firm: FirmId,
        hold: HoldKey,
        credits: Credits,
        key: &IdempotencyKey,
    ) -> Result<Hold, LedgerError> {
        engine::reserve(self, &*self.clock, firm, hold, credits, key).await
    }

    #[instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm, customer_id = %hold.customer))]
    async fn post(
        &self,
        firm: FirmId,
        hold: HoldKey,
        key: &IdempotencyKey,
    ) -> Result<Hold, LedgerError> {
        engine::resolve(self, &*self.clock, firm, hold, HoldState::Posted, key).await
    }

    #[instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm, customer_id = %hold.customer))]
    async fn void(
        &self,
        firm: FirmId,
        hold: HoldKey,
        key: &IdempotencyKey,
    ) -> Result<Hold, LedgerError> {
        engine::resolve(self, &*self.clock, firm, hold, HoldState::Voided, key).await
    }

    #[instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm, customer_id = %hold.customer))]
    async fn refund(
        &self,
        firm: FirmId,
        hold: HoldKey,
        credits: Credits,
        reason: &str,
        key: &IdempotencyKey,
    ) -> Result<LedgerReceipt, LedgerError> {
        engine::refund(self, &*self.clock, firm, hold, credits, reason, key).await
    }

    async fn hold(&self, firm: FirmId, hold: HoldKey) -> Result<Option<Hold>, LedgerError> {
        let row = sqlx::query(&format!(
            "SELECT {HOLD_COLUMNS} FROM ledger_holds \
             WHERE firm_id = ?1 AND customer_id = ?2 AND attempt = ?3"
        ))
        .bind(firm.to_string())
        .bind(hold.customer.to_string())
        .bind(attempt_to_db(hold.attempt))
        .fetch_optional(&self.pool)
        .await
        .map_err(infrastructure)?;
        row.as_ref().map(hold_row).transpose()
    }

    async fn balance(&self, firm: FirmId) -> Result<Balance, LedgerError> {
        let row = sqlx::query(
            "SELECT available_credits, held_credits, spent_credits, funded_credits \
             FROM ledger_firms WHERE firm_id = ?1",
        )
        .bind(firm.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(infrastructure)?;
        match row {
            None => Ok(Balance::default()),
            Some(row) => Balances {
                available: row.try_get(0).map_err(infrastructure)?,
                held: row.try_get(1).map_err(infrastructure)?,
                spent: row.try_get(2).map_err(infrastructure)?,
                funded: row.try_get(3).map_err(infrastructure)?,
            }
            .to_balance(),
        }
    }

    async fn statement<'a>(
        &self,
        firm: FirmId,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> Result<StatementPage, LedgerError> {
        let limit = engine::page_limit(limit);
        let rows = sqlx::query(
            "SELECT seq, id, kind, credits, available_delta, customer_id, attempt, reference, created_at \
             FROM ledger_operations WHERE firm_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
        )
        .bind(firm.to_string())
        .bind(engine::decode_cursor(cursor))
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(infrastructure)?;
        let shown = usize::try_from(limit).unwrap_or(usize::MAX).min(rows.len());
        let entries = rows[..shown]
            .iter()
            .map(statement_entry)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if rows.len() > shown {
            let last: i64 = rows[shown - 1].try_get("seq").map_err(infrastructure)?;
            Some(engine::encode_cursor(last))
        } else {
            None
        };
        Ok(StatementPage {
            entries,
            next_cursor,
        })
    }

    async fn set_daily_cap(&self, firm: FirmId, cap: Option<Credits>) -> Result<(), LedgerError> {
        let cap = cap
            .map(|cap| i64::try_from(cap.get()).map_err(|_| LedgerError::InvalidAmount(cap)))
            .transpose()?;
        let _turn = self.writer.take().await;
        sqlx::query(
            "INSERT INTO ledger_firms (firm_id, daily_cap_credits) VALUES (?1, ?2) \
             ON CONFLICT (firm_id) DO UPDATE SET daily_cap_credits = excluded.daily_cap_credits",
        )
        .bind(firm.to_string())
        .bind(cap)
        .execute(&self.pool)
        .await
        .map_err(infrastructure)?;
        Ok(())
    }

    async fn pending_holds(
        &self,
        created_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Hold>, LedgerError> {
        let rows = sqlx::query(&format!(
            "SELECT {HOLD_COLUMNS} FROM ledger_holds WHERE state = 'pending' AND created_at < ?1 \
             ORDER BY created_at, firm_id, customer_id, attempt LIMIT ?2"
        ))
        .bind(micros(created_before))
        .bind(engine::page_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(infrastructure)?;
        rows.iter().map(hold_row).collect()
    }
}

#[async_trait]
impl LedgerAudit for SqliteLedger {
    async fn audit(&self, firm: FirmId) -> Result<AuditReport, LedgerError> {
        let row = sqlx::query(
            "SELECT \
               COALESCE((SELECT SUM(amount_credits) FROM ledger_entries WHERE firm_id = ?1 AND account = 'available'), 0), \
               COALESCE((SELECT SUM(amount_credits) FROM ledger_entries WHERE firm_id = ?1 AND account = 'held'), 0), \
               COALESCE((SELECT SUM(amount_credits) FROM ledger_entries WHERE firm_id = ?1 AND account = 'spent'), 0), \
               COALESCE((SELECT SUM(amount_credits) FROM ledger_entries WHERE firm_id = ?1 AND account = 'funding'), 0), \
               COALESCE((SELECT SUM(amount_credits) FROM ledger_entries WHERE firm_id = ?1), 0), \
               (SELECT COUNT(*) FROM ledger_operations o WHERE o.firm_id = ?1 AND ( \
                  COALESCE((SELECT SUM(e.amount_credits) FROM ledger_entries e WHERE e.operation_id = o.id), 0) <> 0 \
                  OR NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.operation_id = o.id))), \
               (SELECT COUNT(*) FROM ledger_operations WHERE firm_id = ?1), \
               (SELECT COUNT(*) FROM ledger_entries WHERE firm_id = ?1), \
               COALESCE((SELECT available_credits FROM ledger_firms WHERE firm_id = ?1), 0), \
               COALESCE((SELECT held_credits FROM ledger_firms WHERE firm_id = ?1), 0), \
               COALESCE((SELECT spent_credits FROM ledger_firms WHERE firm_id = ?1), 0), \
               COALESCE((SELECT funded_credits FROM ledger_firms WHERE firm_id = ?1), 0), \
               COALESCE((SELECT SUM(credits) FROM ledger_holds WHERE firm_id = ?1 AND state = 'pending'), 0)",
        )
        .bind(firm.to_string())
        .fetch_one(&self.pool)
        .await
        .map_err(infrastructure)?;
        let get = |index: usize| row.try_get::<i64, _>(index).map_err(infrastructure);
        Ok(AuditReport {
            available_from_entries: get(0)?,
            held_from_entries: get(1)?,
            spent_from_entries: get(2)?,
            funding_from_entries: get(3)?,
            entries_total: get(4)?,
            unbalanced_operations: get(5)?,
            operations: get(6)?,
            entries: get(7)?,
            cached_available: get(8)?,
            cached_held: get(9)?,
            cached_spent: get(10)?,
            cached_funding: get(11)?,
            pending_hold_credits: get(12)?,
        })
    }
}
