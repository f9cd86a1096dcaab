//! Idempotency records, once for both backends. A claim is one write transaction: on PostgreSQL
//! `INSERT … ON CONFLICT DO NOTHING` makes a concurrent claimant of the same key wait for the
//! first to commit and then find its row; on SQLite the transaction holds the single writer's lock
//! from its start. Either way exactly one claimant inserts the record.

use kyc_domain::ports::{ClaimOutcome, IdempotencyScope, InfrastructureError, StoredResponse};
use time::OffsetDateTime;

use crate::engine::{Arg, Columns, Engine, Session, Statement, fit, infra};

const SCOPE: &str = "firm_id = $1 AND method = $2 AND path = $3 AND key = $4";

/// A statement whose first four arguments are the scope.
fn scoped<'a>(sql: String, scope: &'a IdempotencyScope) -> Statement<'a> {
    Statement::new(sql)
        .id(scope.firm_id.as_uuid())
        .text(&scope.method)
        .text(&scope.path)
        .text(&scope.key)
}

/// Claims the key of `scope` for a request with `fingerprint`, or says what holds it.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %scope.firm_id))]
pub async fn claim<E: Engine>(
    engine: &E,
    scope: &IdempotencyScope,
    fingerprint: &str,
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> Result<ClaimOutcome, InfrastructureError> {
    let mut tx = engine.begin_write().await?;
    // An expired record counts as absent: clear it so the insert below can claim the key.
    tx.execute(
        scoped(
            format!("DELETE FROM idempotency_records WHERE {SCOPE} AND expires_at <= $5"),
            scope,
        )
        .time(now),
    )
    .await
    .map_err(infra)?;
    let inserted = tx
        .execute(
            scoped(
                "INSERT INTO idempotency_records (firm_id, method, path, key, fingerprint, state, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, 'in_progress', $6, $7) ON CONFLICT DO NOTHING"
                    .to_owned(),
                scope,
            )
            .text(fingerprint)
            .time(now)
            .time(expires_at),
        )
        .await
        .map_err(infra)?;
    let outcome = if inserted == 1 {
        ClaimOutcome::Claimed
    } else {
        let row = tx
            .fetch_optional(scoped(
                format!("SELECT fingerprint, state, status, headers, body FROM idempotency_records WHERE {SCOPE}"),
                scope,
            ))
            .await
            .map_err(infra)?
            .ok_or_else(|| InfrastructureError::internal("an idempotency key neither claimed nor found"))?;
        if row.text("fingerprint")? != fingerprint {
            ClaimOutcome::FingerprintMismatch
        } else if row.text("state")? == "completed" {
            ClaimOutcome::Completed(StoredResponse {
                status: fit(row.int("status")?)?,
                headers: row.json("headers")?,
                body: row.bytes("body")?,
            })
        } else {
            ClaimOutcome::InProgress
        }
    };
    tx.commit().await.map_err(infra)?;
    Ok(outcome)
}

/// Stores the response of a claimed key; whether the claim was still in progress.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %scope.firm_id))]
pub async fn complete<E: Engine>(
    engine: &E,
    scope: &IdempotencyScope,
    response: &StoredResponse,
) -> Result<bool, InfrastructureError> {
    let statement = scoped(
        format!(
            "UPDATE idempotency_records SET state = 'completed', status = $5, headers = $6, body = $7 \
             WHERE {SCOPE} AND state = 'in_progress'"
        ),
        scope,
    )
    .arg(Arg::Int4(i32::from(response.status)))
    .json(&response.headers)?
    .arg(Arg::Bytes(&response.body));
    Ok(engine.execute(statement).await.map_err(infra)? == 1)
}

/// Gives a claim in progress up, so the key can be claimed again.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %scope.firm_id))]
pub async fn release<E: Engine>(
    engine: &E,
    scope: &IdempotencyScope,
) -> Result<(), InfrastructureError> {
    let statement = scoped(
        format!("DELETE FROM idempotency_records WHERE {SCOPE} AND state = 'in_progress'"),
        scope,
    );
    engine.execute(statement).await.map_err(infra)?;
    Ok(())
}

/// Deletes the records expired at `now`; how many.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
pub async fn purge_expired<E: Engine>(
    engine: &E,
    now: OffsetDateTime,
) -> Result<u64, InfrastructureError> {
    let statement =
        Statement::new("DELETE FROM idempotency_records WHERE expires_at <= $1").time(now);
    engine.execute(statement).await.map_err(infra)
}

/// Implements `IdempotencyStore` for an adapter that is an [`Engine`].
#[macro_export]
macro_rules! idempotency_store {
    ($store:ty) => {
        #[$crate::reexport::async_trait]
        impl ::kyc_domain::ports::IdempotencyStore for $store {
            async fn claim(
                &self,
                scope: &::kyc_domain::ports::IdempotencyScope,
                fingerprint: &str,
                now: ::time::OffsetDateTime,
                expires_at: ::time::OffsetDateTime,
            ) -> Result<::kyc_domain::ports::ClaimOutcome, ::kyc_domain::ports::InfrastructureError>
            {
                $crate::idempotency::claim(self, scope, fingerprint, now, expires_at).await
            }

            async fn complete(
                &self,
                scope: &::kyc_domain::ports::IdempotencyScope,
                response: &::kyc_domain::ports::StoredResponse,
            ) -> Result<bool, ::kyc_domain::ports::InfrastructureError> {
                $crate::idempotency::complete(self, scope, response).await
            }

            async fn release(
                &self,
                scope: &::kyc_domain::ports::IdempotencyScope,
            ) -> Result<(), ::kyc_domain::ports::InfrastructureError> {
                $crate::idempotency::release(self, scope).await
            }

            async fn purge_expired(
                &self,
                now: ::time::OffsetDateTime,
            ) -> Result<u64, ::kyc_domain::ports::InfrastructureError> {
                $crate::idempotency::purge_expired(self, now).await
            }
        }
    };
}
