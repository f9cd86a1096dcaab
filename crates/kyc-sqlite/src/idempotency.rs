//! Idempotency records on SQLite. A claim runs in one `BEGIN IMMEDIATE` transaction, so concurrent
//! claims of one key are serialized by SQLite's single writer and exactly one inserts the record.

use async_trait::async_trait;
use kyc_domain::ports::{
    ClaimOutcome, IdempotencyScope, IdempotencyStore, InfrastructureError, StoredResponse,
};
use sqlx::Row;
use time::OffsetDateTime;

use crate::{SqliteStore, from_json, infra, micros, to_json};

const SCOPE: &str = "firm_id = $1 AND method = $2 AND path = $3 AND key = $4";

#[async_trait]
impl IdempotencyStore for SqliteStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %scope.firm_id))]
    async fn claim(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &str,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<ClaimOutcome, InfrastructureError> {
        let firm = scope.firm_id.to_string();
        let mut tx = self.begin_write().await?;
        // An expired record counts as absent: clear it so the insert below can claim the key.
        sqlx::query(&format!(
            "DELETE FROM idempotency_records WHERE {SCOPE} AND expires_at <= $5"
        ))
        .bind(&firm)
        .bind(&scope.method)
        .bind(&scope.path)
        .bind(&scope.key)
        .bind(micros(now))
        .execute(&mut *tx)
        .await
        .map_err(infra)?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_records (firm_id, method, path, key, fingerprint, state, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, 'in_progress', $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&firm)
        .bind(&scope.method)
        .bind(&scope.path)
        .bind(&scope.key)
        .bind(fingerprint)
        .bind(micros(now))
        .bind(micros(expires_at))
        .execute(&mut *tx)
        .await
        .map_err(infra)?;
        let outcome = if inserted.rows_affected() == 1 {
            ClaimOutcome::Claimed
        } else {
            let row = sqlx::query(&format!(
                "SELECT fingerprint, state, status, headers, body FROM idempotency_records WHERE {SCOPE}"
            ))
            .bind(&firm)
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
                let status: i64 = row.try_get("status").map_err(infra)?;
                let headers: String = row.try_get("headers").map_err(infra)?;
                ClaimOutcome::Completed(StoredResponse {
                    status: u16::try_from(status).map_err(InfrastructureError::internal)?,
                    headers: from_json(&headers)?,
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
        let _turn = self.write_turn().await;
        let done = sqlx::query(&format!(
            "UPDATE idempotency_records SET state = 'completed', status = $5, headers = $6, body = $7 \
             WHERE {SCOPE} AND state = 'in_progress'"
        ))
        .bind(scope.firm_id.to_string())
        .bind(&scope.method)
        .bind(&scope.path)
        .bind(&scope.key)
        .bind(i64::from(response.status))
        .bind(to_json(&response.headers)?)
        .bind(&response.body)
        .execute(&self.pool)
        .await
        .map_err(infra)?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %scope.firm_id))]
    async fn release(&self, scope: &IdempotencyScope) -> Result<(), InfrastructureError> {
        let _turn = self.write_turn().await;
        sqlx::query(&format!(
            "DELETE FROM idempotency_records WHERE {SCOPE} AND state = 'in_progress'"
        ))
        .bind(scope.firm_id.to_string())
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
        let _turn = self.write_turn().await;
        let done = sqlx::query("DELETE FROM idempotency_records WHERE expires_at <= $1")
            .bind(micros(now))
            .execute(&self.pool)
            .await
            .map_err(infra)?;
        Ok(done.rows_affected())
    }
}
