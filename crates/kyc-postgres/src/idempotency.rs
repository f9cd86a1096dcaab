//! Idempotency records on Postgres. A claim is one transaction: `INSERT … ON CONFLICT DO NOTHING`
//! makes a concurrent claimant of the same key wait for the first to commit and then find its row,
//! so exactly one inserts the record.

use async_trait::async_trait;
use kyc_domain::ports::{
    ClaimOutcome, IdempotencyScope, IdempotencyStore, InfrastructureError, StoredResponse,
};
use sqlx::Row;
use time::OffsetDateTime;

use crate::{PostgresStore, at_micros, infra};
use sqlx::types::Json;

const SCOPE: &str = "firm_id = $1 AND method = $2 AND path = $3 AND key = $4";

#[async_trait]
impl IdempotencyStore for PostgresStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %scope.firm_id))]
    async fn claim(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &str,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<ClaimOutcome, InfrastructureError> {
        let firm = scope.firm_id.as_uuid();
        let mut tx = self.pool.begin().await.map_err(infra)?;
        // An expired record counts as absent: clear it so the insert below can claim the key.
        sqlx::query(&format!(
            "DELETE FROM idempotency_records WHERE {SCOPE} AND expires_at <= $5"
        ))
        .bind(firm)
        .bind(&scope.method)
        .bind(&scope.path)
        .bind(&scope.key)
        .bind(at_micros(now))
        .execute(&mut *tx)
        .await
        .map_err(infra)?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_records (firm_id, method, path, key, fingerprint, state, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, 'in_progress', $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(firm)
        .bind(&scope.method)
        .bind(&scope.path)
        .bind(&scope.key)
        .bind(fingerprint)
        .bind(at_micros(now))
        .bind(at_micros(expires_at))
        .execute(&mut *tx)
        .await
        .map_err(infra)?;
        let outcome = if inserted.rows_affected() == 1 {
            ClaimOutcome::Claimed
        } else {
            let row = sqlx::query(&format!(
                "SELECT fingerprint, state, status, headers, body FROM idempotency_records WHERE {SCOPE}"
            ))
            .bind(firm)
            .bind(&scope.method)
            .bind(&scope.path)
            .bind(&scope.key)
            .fetch_one(&mut *tx)
            .await
            .map_err(infra)?;
            let stored: String = row.try_get("fingerprint").map_err(infra)?;
            let state: String = row.try_get("state").map_err(infra)?;
            if stored != fingerprint {
                ClaimOutcome::FingerprintMismatch
            } else if state == "completed" {
                let status: i32 = row.try_get("status").map_err(infra)?;
                let Json(headers) = row.try_get("headers").map_err(infra)?;
                ClaimOutcome::Completed(StoredResponse {
                    status: u16::try_from(status).map_err(InfrastructureError::internal)?,
                    headers,
                    body: row.try_get("body").map_err(infra)?,
                })
            } else {
                ClaimOutcome::InProgress
            }
        };
        tx.commit().await.map_err(infra)?;
        Ok(outcome)
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %scope.firm_id))]
    async fn complete(
        &self,
        scope: &IdempotencyScope,
        response: &StoredResponse,
    ) -> Result<bool, InfrastructureError> {
        let done = sqlx::query(&format!(
            "UPDATE idempotency_records SET state = 'completed', status = $5, headers = $6, body = $7 \
             WHERE {SCOPE} AND state = 'in_progress'"
        ))
        .bind(scope.firm_id.as_uuid())
        .bind(&scope.method)
        .bind(&scope.path)
        .bind(&scope.key)
        .bind(i32::from(response.status))
        .bind(Json(&response.headers))
        .bind(&response.body)
        .execute(&self.pool)
        .await
        .map_err(infra)?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %scope.firm_id))]
    async fn release(&self, scope: &IdempotencyScope) -> Result<(), InfrastructureError> {
        sqlx::query(&format!(
            "DELETE FROM idempotency_records WHERE {SCOPE} AND state = 'in_progress'"
        ))
        .bind(scope.firm_id.as_uuid())
        .bind(&scope.method)
        .bind(&scope.path)
        .bind(&scope.key)
        .execute(&self.pool)
        .await
        .map_err(infra)?;
        Ok(())
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, InfrastructureError> {
        let done = sqlx::query("DELETE FROM idempotency_records WHERE expires_at <= $1")
            .bind(at_micros(now))
            .execute(&self.pool)
            .await
            .map_err(infra)?;
        Ok(done.rows_affected())
    }
}
