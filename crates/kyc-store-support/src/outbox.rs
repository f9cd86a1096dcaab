//! The outbox, once for both backends: work written in the same transaction as the change that
//! caused it, leased to workers by time and handed over at least once.
//!
//! The lease is one statement on each database. PostgreSQL picks the entries in a locking CTE
//! with `SKIP LOCKED`, so concurrent workers (of one replica or several) pass over each other's
//! rows; SQLite has one writer at a time, so the statement runs in the writer's turn and needs no
//! row locks.

use kyc_domain::ports::{InfrastructureError, OutboxEntry};
use time::OffsetDateTime;

use crate::engine::{Arg, Columns, Dialect, Engine, Statement, fit, infra};

/// Leases (until `$1`) up to `$3` entries due at `$2`, oldest first, walking
/// `outbox_pending_idx`: the undelivered entries only, so a lease never reads the delivered
/// history, nor sorts every due entry.
///
/// On PostgreSQL the entries are picked in a materialized CTE, run once: as the sub-select of an
/// `id IN (…)`, the planner may run the locking `LIMIT` again for each row of a nested loop, and
/// under load it did, leasing twice the limit or more.
#[must_use]
pub fn claim(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => {
            "WITH picked AS MATERIALIZED ( \
             SELECT id FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= $2 \
             AND (locked_until IS NULL OR locked_until <= $2) ORDER BY id LIMIT $3 \
             FOR UPDATE SKIP LOCKED) \
             UPDATE outbox SET locked_until = $1 FROM picked WHERE outbox.id = picked.id \
             RETURNING outbox.id, outbox.message, outbox.created_at, outbox.attempts"
        }
        Dialect::Sqlite => {
            "UPDATE outbox SET locked_until = $1 WHERE id IN ( \
             SELECT id FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= $2 \
             AND (locked_until IS NULL OR locked_until <= $2) ORDER BY id LIMIT $3) \
             RETURNING id, message, created_at, attempts"
        }
    }
}

fn entry_from_row(row: &impl Columns) -> Result<OutboxEntry, InfrastructureError> {
    Ok(OutboxEntry {
        id: row.int("id")?,
        message: row.json("message")?,
        created_at: row.time("created_at")?,
        attempts: fit(row.int("attempts")?)?,
    })
}

/// Leases up to `limit` entries due at `now` until `lease_until`, oldest first.
///
/// # Errors
/// [`InfrastructureError`] when the database fails or a row does not read.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
pub async fn claim_batch<E: Engine>(
    engine: &E,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
    limit: u32,
) -> Result<Vec<OutboxEntry>, InfrastructureError> {
    let statement = Statement::new(claim(E::DIALECT))
        .time(lease_until)
        .time(now)
        .int(i64::from(limit));
    let mut entries = engine
        .execute_returning(statement)
        .await
        .map_err(infra)?
        .iter()
        .map(entry_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    // RETURNING promises no order.
    entries.sort_by_key(|entry| entry.id);
    Ok(entries)
}

/// Marks one entry delivered and ends its lease.
///
/// # Errors
/// [`InfrastructureError`] when the database fails.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
pub async fn mark_delivered<E: Engine>(
    engine: &E,
    id: i64,
    at: OffsetDateTime,
) -> Result<(), InfrastructureError> {
    let statement =
        Statement::new("UPDATE outbox SET delivered_at = $1, locked_until = NULL WHERE id = $2")
            .time(at)
            .int(id);
    engine.execute(statement).await.map_err(infra)?;
    Ok(())
}

/// Marks the entries of a whole pass delivered in one statement, so a pass takes the write lock
/// once instead of once per entry.
///
/// # Errors
/// [`InfrastructureError`] when the database fails.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(entries = ids.len()))]
pub async fn mark_all_delivered<E: Engine>(
    engine: &E,
    ids: &[i64],
    at: OffsetDateTime,
) -> Result<(), InfrastructureError> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = match E::DIALECT {
        Dialect::Postgres => {
            "UPDATE outbox SET delivered_at = $1, locked_until = NULL WHERE id = ANY($2::int8[])"
        }
        Dialect::Sqlite => {
            "UPDATE outbox SET delivered_at = $1, locked_until = NULL \
             WHERE id IN (SELECT value FROM json_each($2))"
        }
    };
    let statement = Statement::new(sql).time(at).arg(Arg::IntList(ids.to_vec()));
    engine.execute(statement).await.map_err(infra)?;
    Ok(())
}

/// Ends an undelivered entry's lease and makes it due again at `next_attempt_at`, counting the
/// attempt and keeping its error.
///
/// # Errors
/// [`InfrastructureError`] when the database fails.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
pub async fn schedule_retry<E: Engine>(
    engine: &E,
    id: i64,
    next_attempt_at: OffsetDateTime,
    error: &str,
) -> Result<(), InfrastructureError> {
    let statement = Statement::new(
        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, locked_until = NULL, last_error = $2 \
         WHERE id = $3 AND delivered_at IS NULL",
    )
    .time(next_attempt_at)
    .text(error)
    .int(id);
    engine.execute(statement).await.map_err(infra)?;
    Ok(())
}

/// Implements `OutboxStore` for an adapter that implements [`Engine`].
#[macro_export]
macro_rules! outbox_store {
    ($store:ty) => {
        #[$crate::reexport::async_trait]
        impl ::kyc_domain::ports::OutboxStore for $store {
            async fn claim_batch(
                &self,
                now: ::time::OffsetDateTime,
                lease_until: ::time::OffsetDateTime,
                limit: u32,
            ) -> Result<
                Vec<::kyc_domain::ports::OutboxEntry>,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::outbox::claim_batch(self, now, lease_until, limit).await
            }

            async fn mark_delivered(
                &self,
                id: i64,
                at: ::time::OffsetDateTime,
            ) -> Result<(), ::kyc_domain::ports::InfrastructureError> {
                $crate::outbox::mark_delivered(self, id, at).await
            }

            async fn mark_all_delivered(
                &self,
                ids: &[i64],
                at: ::time::OffsetDateTime,
            ) -> Result<(), ::kyc_domain::ports::InfrastructureError> {
                $crate::outbox::mark_all_delivered(self, ids, at).await
            }

            async fn schedule_retry(
                &self,
                id: i64,
                next_attempt_at: ::time::OffsetDateTime,
                error: &str,
            ) -> Result<(), ::kyc_domain::ports::InfrastructureError> {
                $crate::outbox::schedule_retry(self, id, next_attempt_at, error).await
            }
        }
    };
}
