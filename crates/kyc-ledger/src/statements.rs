//! The ledger's statements, written once for both databases over the storage engine's driver
//! (`kyc_store_support::engine`): every write inside a [`Session`] that holds the firm's lock,
//! every read on a [`Runner`]. Only the lock itself differs: PostgreSQL locks the firm's account
//! row (`FOR UPDATE`); on SQLite the whole file is already locked for writing by the session's
//! `BEGIN IMMEDIATE`.

use async_trait::async_trait;
use kyc_domain::ids::{AttemptNumber, CustomerId, FirmId};
use kyc_domain::ports::{
    Balance, Hold, HoldKey, HoldState, IdempotencyKey, LedgerError, StatementEntry, StatementPage,
};
use kyc_domain::values::Credits;
use kyc_store_support::engine::{Columns, Dialect, Runner, Session, Statement};
use time::OffsetDateTime;

use crate::engine::{
    self, Backend, Balances, FirmRow, NewOperation, StoredKey, WriteTx, corrupt, credits_from_db,
    hold_from_db, kind_from_str, kind_str, state_str,
};
use crate::{AuditReport, infrastructure};

fn attempt_to_db(attempt: AttemptNumber) -> i64 {
    i64::from(attempt.get())
}

fn ledger_error(error: kyc_domain::ports::InfrastructureError) -> LedgerError {
    LedgerError::Infrastructure(error)
}

const HOLD_COLUMNS: &str = "firm_id, customer_id, attempt, credits, state, created_at";

fn hold_row(row: &impl Columns) -> Result<Hold, LedgerError> {
    hold_from_db(
        row.id("firm_id").map_err(ledger_error)?,
        row.id("customer_id").map_err(ledger_error)?,
        row.int("attempt").map_err(ledger_error)?,
        row.int("credits").map_err(ledger_error)?,
        &row.text("state").map_err(ledger_error)?,
        row.time("created_at").map_err(ledger_error)?,
    )
}

fn balances_row(row: &impl Columns) -> Result<Balances, LedgerError> {
    Ok(Balances {
        available: row.int("available_credits").map_err(ledger_error)?,
        held: row.int("held_credits").map_err(ledger_error)?,
        spent: row.int("spent_credits").map_err(ledger_error)?,
        funded: row.int("funded_credits").map_err(ledger_error)?,
    })
}

fn firm_row(row: &impl Columns) -> Result<FirmRow, LedgerError> {
    Ok(FirmRow {
        daily_cap: row.opt_int("daily_cap_credits").map_err(ledger_error)?,
        balances: balances_row(row)?,
    })
}

/// The statement reading one hold by its key (`$1` firm, `$2` customer, `$3` attempt).
fn find_hold_statement(firm: FirmId, hold: HoldKey) -> Statement<'static> {
    Statement::new(format!(
        "SELECT {HOLD_COLUMNS} FROM ledger_holds \
         WHERE firm_id = $1 AND customer_id = $2 AND attempt = $3"
    ))
    .id(firm.as_uuid())
    .id(hold.customer.as_uuid())
    .int(attempt_to_db(hold.attempt))
}

/// The firm's account row, on PostgreSQL locked until the transaction ends.
fn select_firm(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => {
            "SELECT daily_cap_credits, available_credits, held_credits, spent_credits, funded_credits \
             FROM ledger_firms WHERE firm_id = $1 FOR UPDATE"
        }
        Dialect::Sqlite => {
            "SELECT daily_cap_credits, available_credits, held_credits, spent_credits, funded_credits \
             FROM ledger_firms WHERE firm_id = $1"
        }
    }
}

#[async_trait]
impl<S: Session> WriteTx for S {
    async fn lock_firm(&mut self, firm: FirmId) -> Result<FirmRow, LedgerError> {
        let read = || Statement::new(select_firm(S::DIALECT)).id(firm.as_uuid());
        if let Some(row) = self.fetch_optional(read()).await.map_err(infrastructure)? {
            return firm_row(&row);
        }
        // First operation of the firm: create its row. On PostgreSQL a concurrent creator makes
        // this wait for its commit and then do nothing, and the lock below is taken on the one
        // row.
        self.execute(
            Statement::new(
                "INSERT INTO ledger_firms (firm_id) VALUES ($1) ON CONFLICT (firm_id) DO NOTHING",
            )
            .id(firm.as_uuid()),
        )
        .await
        .map_err(infrastructure)?;
        let row = self
            .fetch_optional(read())
            .await
            .map_err(infrastructure)?
            .ok_or_else(|| corrupt(format!("firm {firm} has no account row after creating it")))?;
        firm_row(&row)
    }

    async fn find_key(
        &mut self,
        firm: FirmId,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredKey>, LedgerError> {
        let statement = Statement::new(
            "SELECT operation, fingerprint, result FROM ledger_idempotency \
             WHERE firm_id = $1 AND key = $2",
        )
        .id(firm.as_uuid())
        .text(key.as_str());
        let row = self
            .fetch_optional(statement)
            .await
            .map_err(infrastructure)?;
        row.map(|row| {
            Ok(StoredKey {
                operation: row.text("operation")?,
                fingerprint: row.text("fingerprint")?,
                result: row.text("result")?,
            })
        })
        .transpose()
        .map_err(ledger_error)
    }

    async fn save_key(
        &mut self,
        firm: FirmId,
        key: &IdempotencyKey,
        stored: &StoredKey,
        at: OffsetDateTime,
    ) -> Result<(), LedgerError> {
        let statement = Statement::new(
            "INSERT INTO ledger_idempotency (firm_id, key, operation, fingerprint, result, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .id(firm.as_uuid())
        .text(key.as_str())
        .text(stored.operation.as_str())
        .text(stored.fingerprint.as_str())
        .text(stored.result.as_str())
        .time(at);
        self.execute(statement).await.map_err(infrastructure)?;
        Ok(())
    }

    async fn find_hold(
        &mut self,
        firm: FirmId,
        hold: HoldKey,
    ) -> Result<Option<Hold>, LedgerError> {
        let row = self
            .fetch_optional(find_hold_statement(firm, hold))
            .await
            .map_err(infrastructure)?;
        row.as_ref().map(hold_row).transpose()
    }

    async fn insert_hold(&mut self, hold: &Hold) -> Result<(), LedgerError> {
        let credits = i64::try_from(hold.credits.get())
            .map_err(|_| LedgerError::InvalidAmount(hold.credits))?;
        let statement = Statement::new(
            "INSERT INTO ledger_holds (firm_id, customer_id, attempt, credits, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .id(hold.firm_id.as_uuid())
        .id(hold.key.customer.as_uuid())
        .int(attempt_to_db(hold.key.attempt))
        .int(credits)
        .text(state_str(hold.state))
        .time(hold.created_at);
        self.execute(statement).await.map_err(infrastructure)?;
        Ok(())
    }

    async fn resolve_hold(
        &mut self,
        firm: FirmId,
        hold: HoldKey,
        state: HoldState,
        at: OffsetDateTime,
    ) -> Result<(), LedgerError> {
        let statement = Statement::new(
            "UPDATE ledger_holds SET state = $4, resolved_at = $5 \
             WHERE firm_id = $1 AND customer_id = $2 AND attempt = $3 AND state = 'pending'",
        )
        .id(firm.as_uuid())
        .id(hold.customer.as_uuid())
        .int(attempt_to_db(hold.attempt))
        .text(state_str(state))
        .time(at);
        if self.execute(statement).await.map_err(infrastructure)? == 1 {
            Ok(())
        } else {
            Err(corrupt(format!(
                "hold {hold} was not pending under the firm's lock"
            )))
        }
    }

    async fn reserved_between(
        &mut self,
        firm: FirmId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<i64, LedgerError> {
        let statement = Statement::new(
            "SELECT CAST(COALESCE(SUM(credits), 0) AS BIGINT) AS total FROM ledger_holds \
             WHERE firm_id = $1 AND state <> 'voided' AND created_at >= $2 AND created_at < $3",
        )
        .id(firm.as_uuid())
        .time(from)
        .time(to);
        total(
            self.fetch_optional(statement)
                .await
                .map_err(infrastructure)?,
        )
    }

    async fn refunded(&mut self, firm: FirmId, hold: HoldKey) -> Result<i64, LedgerError> {
        let statement = Statement::new(
            "SELECT CAST(COALESCE(SUM(credits), 0) AS BIGINT) AS total FROM ledger_operations \
             WHERE firm_id = $1 AND customer_id = $2 AND attempt = $3 AND kind = 'refund'",
        )
        .id(firm.as_uuid())
        .id(hold.customer.as_uuid())
        .int(attempt_to_db(hold.attempt));
        total(
            self.fetch_optional(statement)
                .await
                .map_err(infrastructure)?,
        )
    }

    async fn append(
        &mut self,
        operation: &NewOperation,
        balances: &Balances,
    ) -> Result<(), LedgerError> {
        let id = operation.id;
        let firm = operation.firm.as_uuid();
        let insert = Statement::new(
            "INSERT INTO ledger_operations \
             (id, firm_id, kind, credits, available_delta, customer_id, attempt, reference, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .id(id)
        .id(firm)
        .text(kind_str(operation.kind))
        .int(operation.credits)
        .int(operation.available_delta)
        .arg(kyc_store_support::engine::Arg::OptId(
            operation.hold.map(|hold| hold.customer.as_uuid()),
        ))
        .arg(kyc_store_support::engine::Arg::OptInt(
            operation.hold.map(|hold| attempt_to_db(hold.attempt)),
        ))
        .opt_text(operation.reference.as_deref())
        .time(operation.at);
        self.execute(insert).await.map_err(infrastructure)?;
        // Every operation is a transfer between two accounts: both entries in one statement.
        let [(from, debit), (to, credit)] = operation.postings.as_slice() else {
            return Err(corrupt(format!(
                "operation {} has {} postings, not two",
                operation.id,
                operation.postings.len()
            )));
        };
        let entries = Statement::new(
            "INSERT INTO ledger_entries (operation_id, firm_id, account, amount_credits) \
             VALUES ($1, $2, $3, $4), ($1, $2, $5, $6)",
        )
        .id(id)
        .id(firm)
        .text(from.as_str())
        .int(*debit)
        .text(to.as_str())
        .int(*credit);
        self.execute(entries).await.map_err(infrastructure)?;
        let cache = Statement::new(
            "UPDATE ledger_firms SET available_credits = $2, held_credits = $3, \
             spent_credits = $4, funded_credits = $5 WHERE firm_id = $1",
        )
        .id(firm)
        .int(balances.available)
        .int(balances.held)
        .int(balances.spent)
        .int(balances.funded);
        self.execute(cache).await.map_err(infrastructure)?;
        Ok(())
    }

    async fn commit(self) -> Result<(), LedgerError> {
        Session::commit(self).await.map_err(infrastructure)
    }

    async fn rollback(self) -> Result<(), LedgerError> {
        Session::rollback(self).await.map_err(infrastructure)
    }
}

fn total(row: Option<impl Columns>) -> Result<i64, LedgerError> {
    row.map_or(Ok(0), |row| row.int("total").map_err(ledger_error))
}

#[async_trait]
impl<R: Runner> Backend for R {
    type Tx = R::Tx;

    async fn begin(&self) -> Result<R::Tx, LedgerError> {
        self.begin_write().await.map_err(ledger_error)
    }
}

/// A hold as it is now.
pub(crate) async fn hold<R: Runner>(
    db: &R,
    firm: FirmId,
    hold: HoldKey,
) -> Result<Option<Hold>, LedgerError> {
    let row = db
        .fetch_optional(find_hold_statement(firm, hold))
        .await
        .map_err(infrastructure)?;
    row.as_ref().map(hold_row).transpose()
}

/// The firm's cached balances (zero before its first operation).
pub(crate) async fn balance<R: Runner>(db: &R, firm: FirmId) -> Result<Balance, LedgerError> {
    let statement = Statement::new(
        "SELECT available_credits, held_credits, spent_credits, funded_credits \
         FROM ledger_firms WHERE firm_id = $1",
    )
    .id(firm.as_uuid());
    match db.fetch_optional(statement).await.map_err(infrastructure)? {
        None => Ok(Balance::default()),
        Some(row) => balances_row(&row)?.to_balance(),
    }
}

fn statement_entry(row: &impl Columns) -> Result<StatementEntry, LedgerError> {
    Ok(StatementEntry {
        id: row.id("id").map_err(ledger_error)?.to_string(),
        at: row.time("created_at").map_err(ledger_error)?,
        kind: kind_from_str(&row.text("kind").map_err(ledger_error)?)?,
        credits: credits_from_db(row.int("credits").map_err(ledger_error)?)?,
        available_delta: row.int("available_delta").map_err(ledger_error)?,
        customer: row
            .opt_id("customer_id")
            .map_err(ledger_error)?
            .map(CustomerId::from_uuid),
        attempt: row
            .opt_int("attempt")
            .map_err(ledger_error)?
            .map(engine::attempt_from_db)
            .transpose()?,
        reference: row.opt_text("reference").map_err(ledger_error)?,
    })
}

/// A page of the firm's operations, newest first, after `cursor`.
pub(crate) async fn statement<R: Runner>(
    db: &R,
    firm: FirmId,
    cursor: Option<&str>,
    limit: u32,
) -> Result<StatementPage, LedgerError> {
    let limit = engine::page_limit(limit);
    let read = Statement::new(
        "SELECT seq, id, kind, credits, available_delta, customer_id, attempt, reference, created_at \
         FROM ledger_operations WHERE firm_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
    )
    .id(firm.as_uuid())
    .int(engine::decode_cursor(cursor))
    .int(limit + 1);
    let rows = db.fetch_all(read).await.map_err(infrastructure)?;
    let shown = usize::try_from(limit).unwrap_or(usize::MAX).min(rows.len());
    let entries = rows[..shown]
        .iter()
        .map(statement_entry)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if rows.len() > shown {
        let last = rows[shown - 1].int("seq").map_err(ledger_error)?;
        Some(engine::encode_cursor(last))
    } else {
        None
    };
    Ok(StatementPage {
        entries,
        next_cursor,
    })
}

/// Sets (or, with `None`, lifts) the firm's daily cap.
pub(crate) async fn set_daily_cap<R: Runner>(
    db: &R,
    firm: FirmId,
    cap: Option<Credits>,
) -> Result<(), LedgerError> {
    let cap = cap
        .map(|cap| i64::try_from(cap.get()).map_err(|_| LedgerError::InvalidAmount(cap)))
        .transpose()?;
    let statement = Statement::new(
        "INSERT INTO ledger_firms (firm_id, daily_cap_credits) VALUES ($1, $2) \
         ON CONFLICT (firm_id) DO UPDATE SET daily_cap_credits = excluded.daily_cap_credits",
    )
    .id(firm.as_uuid())
    .arg(kyc_store_support::engine::Arg::OptInt(cap));
    db.execute(statement).await.map_err(infrastructure)?;
    Ok(())
}

/// Pending holds reserved before `created_before`, oldest first.
pub(crate) async fn pending_holds<R: Runner>(
    db: &R,
    created_before: OffsetDateTime,
    limit: u32,
) -> Result<Vec<Hold>, LedgerError> {
    let statement = Statement::new(format!(
        "SELECT {HOLD_COLUMNS} FROM ledger_holds WHERE state = 'pending' AND created_at < $1 \
         ORDER BY created_at, firm_id, customer_id, attempt LIMIT $2"
    ))
    .time(created_before)
    .int(engine::page_limit(limit));
    let rows = db.fetch_all(statement).await.map_err(infrastructure)?;
    rows.iter().map(hold_row).collect()
}

/// The firm's balances recomputed from its entries, beside the cached ones.
pub(crate) async fn audit<R: Runner>(db: &R, firm: FirmId) -> Result<AuditReport, LedgerError> {
    let statement = Statement::new(
        "SELECT \
           CAST(COALESCE((SELECT SUM(amount_credits) FROM ledger_entries WHERE firm_id = $1 AND account = 'available'), 0) AS BIGINT) AS available_from_entries, \
           CAST(COALESCE((SELECT SUM(amount_credits) FROM ledger_entries WHERE firm_id = $1 AND account = 'held'), 0) AS BIGINT) AS held_from_entries, \
           CAST(COALESCE((SELECT SUM(amount_credits) FROM ledger_entries WHERE firm_id = $1 AND account = 'spent'), 0) AS BIGINT) AS spent_from_entries, \
           CAST(COALESCE((SELECT SUM(amount_credits) FROM ledger_entries WHERE firm_id = $1 AND account = 'funding'), 0) AS BIGINT) AS funding_from_entries, \
           CAST(COALESCE((SELECT SUM(amount_credits) FROM ledger_entries WHERE firm_id = $1), 0) AS BIGINT) AS entries_total, \
           (SELECT COUNT(*) FROM ledger_operations o WHERE o.firm_id = $1 AND ( \
              COALESCE((SELECT SUM(e.amount_credits) FROM ledger_entries e WHERE e.operation_id = o.id), 0) <> 0 \
              OR NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.operation_id = o.id))) AS unbalanced_operations, \
           (SELECT COUNT(*) FROM ledger_operations WHERE firm_id = $1) AS operations, \
           (SELECT COUNT(*) FROM ledger_entries WHERE firm_id = $1) AS entries, \
           COALESCE((SELECT available_credits FROM ledger_firms WHERE firm_id = $1), 0) AS cached_available, \
           COALESCE((SELECT held_credits FROM ledger_firms WHERE firm_id = $1), 0) AS cached_held, \
           COALESCE((SELECT spent_credits FROM ledger_firms WHERE firm_id = $1), 0) AS cached_spent, \
           COALESCE((SELECT funded_credits FROM ledger_firms WHERE firm_id = $1), 0) AS cached_funding, \
           CAST(COALESCE((SELECT SUM(credits) FROM ledger_holds WHERE firm_id = $1 AND state = 'pending'), 0) AS BIGINT) AS pending_hold_credits",
    )
    .id(firm.as_uuid());
    let row = db
        .fetch_optional(statement)
        .await
        .map_err(infrastructure)?
        .ok_or_else(|| corrupt("the audit read no row".to_owned()))?;
    let get = |column: &str| row.int(column).map_err(ledger_error);
    Ok(AuditReport {
        available_from_entries: get("available_from_entries")?,
        held_from_entries: get("held_from_entries")?,
        spent_from_entries: get("spent_from_entries")?,
        funding_from_entries: get("funding_from_entries")?,
        entries_total: get("entries_total")?,
        unbalanced_operations: get("unbalanced_operations")?,
        operations: get("operations")?,
        entries: get("entries")?,
        cached_available: get("cached_available")?,
        cached_held: get("cached_held")?,
        cached_spent: get("cached_spent")?,
        cached_funding: get("cached_funding")?,
        pending_hold_credits: get("pending_hold_credits")?,
    })
}

/// Implements `CreditsLedger` and [`LedgerAudit`](crate::LedgerAudit) for a ledger with a `db`
/// (a [`Runner`]) and a `clock`.
macro_rules! ledger_ports {
    ($ledger:ty) => {
        #[::async_trait::async_trait]
        impl ::kyc_domain::ports::CreditsLedger for $ledger {
            #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
            async fn grant(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                credits: ::kyc_domain::values::Credits,
                reference: &str,
                key: &::kyc_domain::ports::IdempotencyKey,
            ) -> Result<::kyc_domain::ports::LedgerReceipt, ::kyc_domain::ports::LedgerError> {
                $crate::engine::grant(&self.db, &*self.clock, firm, credits, reference, key).await
            }

            #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm, customer_id = %hold.customer))]
            async fn reserve(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                hold: ::kyc_domain::ports::HoldKey,
                credits: ::kyc_domain::values::Credits,
                key: &::kyc_domain::ports::IdempotencyKey,
            ) -> Result<::kyc_domain::ports::Hold, ::kyc_domain::ports::LedgerError> {
                $crate::engine::reserve(&self.db, &*self.clock, firm, hold, credits, key).await
            }

            #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm, customer_id = %hold.customer))]
            async fn post(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                hold: ::kyc_domain::ports::HoldKey,
                key: &::kyc_domain::ports::IdempotencyKey,
            ) -> Result<::kyc_domain::ports::Hold, ::kyc_domain::ports::LedgerError> {
                $crate::engine::resolve(
                    &self.db,
                    &*self.clock,
                    firm,
                    hold,
                    ::kyc_domain::ports::HoldState::Posted,
                    key,
                )
                .await
            }

            #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm, customer_id = %hold.customer))]
            async fn void(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                hold: ::kyc_domain::ports::HoldKey,
                key: &::kyc_domain::ports::IdempotencyKey,
            ) -> Result<::kyc_domain::ports::Hold, ::kyc_domain::ports::LedgerError> {
                $crate::engine::resolve(
                    &self.db,
                    &*self.clock,
                    firm,
                    hold,
                    ::kyc_domain::ports::HoldState::Voided,
                    key,
                )
                .await
            }

            #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm, customer_id = %hold.customer))]
            async fn refund(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                hold: ::kyc_domain::ports::HoldKey,
                credits: ::kyc_domain::values::Credits,
                reason: &str,
                key: &::kyc_domain::ports::IdempotencyKey,
            ) -> Result<::kyc_domain::ports::LedgerReceipt, ::kyc_domain::ports::LedgerError> {
                $crate::engine::refund(&self.db, &*self.clock, firm, hold, credits, reason, key)
                    .await
            }

            async fn hold(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                hold: ::kyc_domain::ports::HoldKey,
            ) -> Result<Option<::kyc_domain::ports::Hold>, ::kyc_domain::ports::LedgerError> {
                $crate::statements::hold(&self.db, firm, hold).await
            }

            async fn balance(
                &self,
                firm: ::kyc_domain::ids::FirmId,
            ) -> Result<::kyc_domain::ports::Balance, ::kyc_domain::ports::LedgerError> {
                $crate::statements::balance(&self.db, firm).await
            }

            async fn statement<'a>(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                cursor: Option<&'a str>,
                limit: u32,
            ) -> Result<::kyc_domain::ports::StatementPage, ::kyc_domain::ports::LedgerError> {
                $crate::statements::statement(&self.db, firm, cursor, limit).await
            }

            async fn set_daily_cap(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                cap: Option<::kyc_domain::values::Credits>,
            ) -> Result<(), ::kyc_domain::ports::LedgerError> {
                $crate::statements::set_daily_cap(&self.db, firm, cap).await
            }

            async fn pending_holds(
                &self,
                created_before: ::time::OffsetDateTime,
                limit: u32,
            ) -> Result<Vec<::kyc_domain::ports::Hold>, ::kyc_domain::ports::LedgerError> {
                $crate::statements::pending_holds(&self.db, created_before, limit).await
            }
        }

        #[::async_trait::async_trait]
        impl $crate::LedgerAudit for $ledger {
            async fn audit(
                &self,
                firm: ::kyc_domain::ids::FirmId,
            ) -> Result<$crate::AuditReport, ::kyc_domain::ports::LedgerError> {
                $crate::statements::audit(&self.db, firm).await
            }
        }
    };
}

pub(crate) use ledger_ports;
