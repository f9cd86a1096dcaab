//! The ledger on Postgres: the production and scale-out backend. Every write locks the firm's
//! account row (`SELECT ... FOR UPDATE`), so any number of replicas on one database serialise a
//! firm's operations and a balance can never go negative.

use std::sync::Arc;

use async_trait::async_trait;
use kyc_domain::ids::{AttemptNumber, CustomerId, FirmId};
use kyc_domain::ports::{
    Balance, Clock, CreditsLedger, Hold, HoldKey, HoldState, IdempotencyKey, LedgerError,
    LedgerReceipt, StatementEntry, StatementPage,
};
use kyc_domain::values::Credits;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};
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
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("migrations/postgres");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// The credits ledger on a Postgres pool.
#[derive(Clone)]
pub struct PgLedger {
    pool: PgPool,
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
            pool,
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
        &self.pool
    }
}

/// A Postgres write transaction holding one firm's row lock.
pub(crate) struct PgWriteTx {
    tx: Transaction<'static, Postgres>,
}

#[async_trait]
impl Backend for PgLedger {
    type Tx = PgWriteTx;

    async fn begin(&self) -> Result<PgWriteTx, LedgerError> {
        let tx = self.pool.begin().await.map_err(infrastructure)?;
        Ok(PgWriteTx { tx })
    }
}

const LOCK_FIRM: &str = "SELECT daily_cap_credits, available_credits, held_credits, \
     spent_credits, funded_credits FROM ledger_firms WHERE firm_id = $1 FOR UPDATE";

fn firm_row(row: &PgRow) -> Result<FirmRow, sqlx::Error> {
    Ok(FirmRow {
        daily_cap: row.try_get(0)?,
        balances: Balances {
            available: row.try_get(1)?,
            held: row.try_get(2)?,
            spent: row.try_get(3)?,
            funded: row.try_get(4)?,
        },
    })
}

const HOLD_COLUMNS: &str = "firm_id, customer_id, attempt, credits, state, created_at";

fn hold_row(row: &PgRow) -> Result<Hold, LedgerError> {
    let state: String = row.try_get(4).map_err(infrastructure)?;
    hold_from_db(
        row.try_get(0).map_err(infrastructure)?,
        row.try_get(1).map_err(infrastructure)?,
        row.try_get(2).map_err(infrastructure)?,
        row.try_get(3).map_err(infrastructure)?,
        &state,
        row.try_get(5).map_err(infrastructure)?,
    )
}

fn attempt_to_db(attempt: AttemptNumber) -> i64 {
    i64::from(attempt.get())
}

#[async_trait]
impl WriteTx for PgWriteTx {
    async fn lock_firm(&mut self, firm: FirmId) -> Result<FirmRow, LedgerError> {
        let found = sqlx::query(LOCK_FIRM)
            .bind(firm.as_uuid())
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(infrastructure)?;
        if let Some(row) = found {
            return firm_row(&row).map_err(infrastructure);
        }
        // First operation of the firm: create its row. A concurrent creator makes this wait
        // for its commit and then do nothing, and the lock below is taken on the one row.
        sqlx::query(
            "INSERT INTO ledger_firms (firm_id) VALUES ($1) ON CONFLICT (firm_id) DO NOTHING",
        )
        .bind(firm.as_uuid())
        .execute(&mut *self.tx)
        .await
        .map_err(infrastructure)?;
        let row = sqlx::query(LOCK_FIRM)
            .bind(firm.as_uuid())
            .fetch_one(&mut *self.tx)
            .await
            .map_err(infrastructure)?;
        firm_row(&row).map_err(infrastructure)
    }

    async fn find_key(
        &mut self,
        firm: FirmId,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredKey>, LedgerError> {
        let row = sqlx::query(
            "SELECT operation, fingerprint, result FROM ledger_idempotency \
             WHERE firm_id = $1 AND key = $2",
        )
        .bind(firm.as_uuid())
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
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(firm.as_uuid())
        .bind(key.as_str())
        .bind(&stored.operation)
        .bind(&stored.fingerprint)
        .bind(&stored.result)
        .bind(at)
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
             WHERE firm_id = $1 AND customer_id = $2 AND attempt = $3"
        ))
        .bind(firm.as_uuid())
        .bind(hold.customer.as_uuid())
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
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hold.firm_id.as_uuid())
        .bind(hold.key.customer.as_uuid())
        .bind(attempt_to_db(hold.key.attempt))
        .bind(credits)
        .bind(state_str(hold.state))
        .bind(hold.created_at)
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
            "UPDATE ledger_holds SET state = $4, resolved_at = $5 \
             WHERE firm_id = $1 AND customer_id = $2 AND attempt = $3 AND state = 'pending'",
        )
        .bind(firm.as_uuid())
        .bind(hold.customer.as_uuid())
        .bind(attempt_to_db(hold.attempt))
        .bind(state_str(state))
        .bind(at)
        .execute(&mut *self.tx)
        .await
        .map_err(infrastructure)?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(corrupt(format!(
                "hold {hold} was not pending under the firm lock"
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
            "SELECT COALESCE(SUM(credits), 0)::BIGINT FROM ledger_holds \
             WHERE firm_id = $1 AND state <> 'voided' AND created_at >= $2 AND created_at < $3",
        )
        .bind(firm.as_uuid())
        .bind(from)
        .bind(to)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(infrastructure)
    }

    async fn refunded(&mut self, firm: FirmId, hold: HoldKey) -> Result<i64, LedgerError> {
        sqlx::query_scalar(
            "SELECT COALESCE(SUM(credits), 0)::BIGINT FROM ledger_operations \
             WHERE firm_id = $1 AND customer_id = $2 AND attempt = $3 AND kind = 'refund'",
        )
        .bind(firm.as_uuid())
        .bind(hold.customer.as_uuid())
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
        sqlx::query(
            "INSERT INTO ledger_operations \
             (id, firm_id, kind, credits, available_delta, customer_id, attempt, reference, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(operation.id)
        .bind(operation.firm.as_uuid())
        .bind(kind_str(operation.kind))
        .bind(operation.credits)
        .bind(operation.available_delta)
        .bind(operation.hold.map(|hold| hold.customer.as_uuid()))
        .bind(operation.hold.map(|hold| attempt_to_db(hold.attempt)))
        .bind(operation.reference.as_deref())
        .bind(operation.at)
        .execute(&mut *self.tx)
        .await
        .map_err(infrastructure)?;
        let accounts: Vec<&str> = operation
            .postings
            .iter()
            .map(|(account, _)| account.as_str())
            .collect();
        let amounts: Vec<i64> = operation
            .postings
            .iter()
            .map(|(_, amount)| *amount)
            .collect();
        sqlx::query(
            "INSERT INTO ledger_entries (operation_id, firm_id, account, amount_credits) \
             SELECT $1, $2, account, amount FROM UNNEST($3::TEXT[], $4::BIGINT[]) AS p(account, amount)",
        )
        .bind(operation.id)
        .bind(operation.firm.as_uuid())
        .bind(&accounts)
        .bind(&amounts)
        .execute(&mut *self.tx)
        .await
        .map_err(infrastructure)?;
        sqlx::query(
            "UPDATE ledger_firms SET available_credits = $2, held_credits = $3, \
             spent_credits = $4, funded_credits = $5 WHERE firm_id = $1",
        )
        .bind(operation.firm.as_uuid())
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

fn statement_entry(row: &PgRow) -> Result<StatementEntry, LedgerError> {
    let kind: String = row.try_get("kind").map_err(infrastructure)?;
    let id: Uuid = row.try_get("id").map_err(infrastructure)?;
    let customer: Option<Uuid> = row.try_get("customer_id").map_err(infrastructure)?;
    let attempt: Option<i64> = row.try_get("attempt").map_err(infrastructure)?;
    Ok(StatementEntry {
        id: id.to_string(),
        at: row.try_get("created_at").map_err(infrastructure)?,
        kind: kind_from_str(&kind)?,
        credits: credits_from_db(row.try_get("credits").map_err(infrastructure)?)?,
        available_delta: row.try_get("available_delta").map_err(infrastructure)?,
        customer: customer.map(CustomerId::from_uuid),
        attempt: attempt.map(engine::attempt_from_db).transpose()?,
        reference: row.try_get("reference").map_err(infrastructure)?,
    })
}

#[async_trait]
impl CreditsLedger for PgLedger {
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
             WHERE firm_id = $1 AND customer_id = $2 AND attempt = $3"
        ))
        .bind(firm.as_uuid())
        .bind(hold.customer.as_uuid())
        .bind(attempt_to_db(hold.attempt))
        .fetch_optional(&self.pool)
        .await
        .map_err(infrastructure)?;
        row.as_ref().map(hold_row).transpose()
    }

    async fn balance(&self, firm: FirmId) -> Result<Balance, LedgerError> {
        let row = sqlx::query(
            "SELECT available_credits, held_credits, spent_credits, funded_credits \
             FROM ledger_firms WHERE firm_id = $1",
        )
        .bind(firm.as_uuid())
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
             FROM ledger_operations WHERE firm_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(firm.as_uuid())
        .bind(engine::decode_cursor(cursor))
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(infrastructure)?;
        page(&rows, limit)
    }

    async fn set_daily_cap(&self, firm: FirmId, cap: Option<Credits>) -> Result<(), LedgerError> {
        let cap = cap
            .map(|cap| i64::try_from(cap.get()).map_err(|_| LedgerError::InvalidAmount(cap)))
            .transpose()?;
        sqlx::query(
            "INSERT INTO ledger_firms (firm_id, daily_cap_credits) VALUES ($1, $2) \
             ON CONFLICT (firm_id) DO UPDATE SET daily_cap_credits = EXCLUDED.daily_cap_credits",
        )
        .bind(firm.as_uuid())
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
            "SELECT {HOLD_COLUMNS} FROM ledger_holds WHERE state = 'pending' AND created_at < $1 \
             ORDER BY created_at, firm_id, customer_id, attempt LIMIT $2"
        ))
        .bind(created_before)
        .bind(engine::page_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(infrastructure)?;
        rows.iter().map(hold_row).collect()
    }
}

fn page(rows: &[PgRow], limit: i64) -> Result<StatementPage, LedgerError> {
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

#[async_trait]
impl LedgerAudit for PgLedger {
    async fn audit(&self, firm: FirmId) -> Result<AuditReport, LedgerError> {
        let row = sqlx::query(
            "SELECT \
               COALESCE((SELECT SUM(amount_credits) FROM ledger_entries WHERE firm_id = $1 AND account = 'available'), 0)::BIGINT, \
               COALESCE((SELECT SUM(amount_credits) FROM ledger_entries WHERE firm_id = $1 AND account = 'held'), 0)::BIGINT, \
               COALESCE((SELECT SUM(amount_credits) FROM ledger_entries WHERE firm_id = $1 AND account = 'spent'), 0)::BIGINT, \
               COALESCE((SELECT SUM(amount_credits) FROM ledger_entries WHERE firm_id = $1 AND account = 'funding'), 0)::BIGINT, \
               COALESCE((SELECT SUM(amount_credits) FROM ledger_entries WHERE firm_id = $1), 0)::BIGINT, \
               (SELECT COUNT(*) FROM ledger_operations o WHERE o.firm_id = $1 AND ( \
                  COALESCE((SELECT SUM(e.amount_credits) FROM ledger_entries e WHERE e.operation_id = o.id), 0) <> 0 \
                  OR NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.operation_id = o.id))), \
               (SELECT COUNT(*) FROM ledger_operations WHERE firm_id = $1), \
               (SELECT COUNT(*) FROM ledger_entries WHERE firm_id = $1), \
               COALESCE((SELECT available_credits FROM ledger_firms WHERE firm_id = $1), 0), \
               COALESCE((SELECT held_credits FROM ledger_firms WHERE firm_id = $1), 0), \
               COALESCE((SELECT spent_credits FROM ledger_firms WHERE firm_id = $1), 0), \
               COALESCE((SELECT funded_credits FROM ledger_firms WHERE firm_id = $1), 0), \
               COALESCE((SELECT SUM(credits) FROM ledger_holds WHERE firm_id = $1 AND state = 'pending'), 0)::BIGINT",
        )
        .bind(firm.as_uuid())
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
