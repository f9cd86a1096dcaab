//! Webhook endpoints, the delivery log and the outbox on Postgres.

use async_trait::async_trait;
use kyc_domain::ids::FirmId;
use kyc_domain::ports::{
    InfrastructureError, OutboxEntry, OutboxStore, WebhookDelivery, WebhookEndpoint,
    WebhookEndpointId, WebhookStore,
};
use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;

use crate::{PostgresStore, at_micros, fit, infra};
use sqlx::types::Json;
use uuid::Uuid;

/// Leases (until `$1`) up to `$3` entries due at `$2`, oldest first, walking
/// `outbox_pending_idx`: the undelivered entries only, so a lease never reads the delivered
/// history.
pub(crate) const CLAIM: &str = "UPDATE outbox SET locked_until = $1 WHERE id IN ( \
     SELECT id FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= $2 \
     AND (locked_until IS NULL OR locked_until <= $2) ORDER BY id LIMIT $3 \
     FOR UPDATE SKIP LOCKED) \
     RETURNING id, message, created_at, attempts";

const ENDPOINT_COLUMNS: &str = "SELECT id, firm_id, url, description, event_types, secret, disabled_at, created_at FROM webhook_endpoints";

fn endpoint_from_row(row: &PgRow) -> Result<WebhookEndpoint, InfrastructureError> {
    Ok(WebhookEndpoint {
        id: WebhookEndpointId::from_uuid(row.try_get::<Uuid, _>("id").map_err(infra)?),
        firm_id: FirmId::from_uuid(row.try_get::<Uuid, _>("firm_id").map_err(infra)?),
        url: row.try_get("url").map_err(infra)?,
        description: row.try_get("description").map_err(infra)?,
        event_types: row.try_get("event_types").map_err(infra)?,
        secret: row.try_get("secret").map_err(infra)?,
        disabled_at: row.try_get("disabled_at").map_err(infra)?,
        created_at: row.try_get("created_at").map_err(infra)?,
    })
}

fn delivery_from_row(row: &PgRow) -> Result<WebhookDelivery, InfrastructureError> {
    let attempt: i32 = row.try_get("attempt").map_err(infra)?;
    let status: Option<i32> = row.try_get("response_status").map_err(infra)?;
    let duration: i64 = row.try_get("duration_ms").map_err(infra)?;
    Ok(WebhookDelivery {
        endpoint_id: WebhookEndpointId::from_uuid(
            row.try_get::<Uuid, _>("endpoint_id").map_err(infra)?,
        ),
        firm_id: FirmId::from_uuid(row.try_get::<Uuid, _>("firm_id").map_err(infra)?),
        message_id: row.try_get("message_id").map_err(infra)?,
        event_type: row.try_get("event_type").map_err(infra)?,
        attempt: u32::try_from(attempt).map_err(InfrastructureError::internal)?,
        attempted_at: row.try_get("attempted_at").map_err(infra)?,
        response_status: status
            .map(u16::try_from)
            .transpose()
            .map_err(InfrastructureError::internal)?,
        error: row.try_get("error").map_err(infra)?,
        duration_ms: u64::try_from(duration).map_err(InfrastructureError::internal)?,
    })
}

#[async_trait]
impl WebhookStore for PostgresStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %endpoint.firm_id))]
    async fn create_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), InfrastructureError> {
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, firm_id, url, description, event_types, secret, disabled_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(endpoint.id.as_uuid())
        .bind(endpoint.firm_id.as_uuid())
        .bind(&endpoint.url)
        .bind(endpoint.description.as_deref())
        .bind(&endpoint.event_types)
        .bind(&endpoint.secret)
        .bind(endpoint.disabled_at.map(at_micros))
        .bind(at_micros(endpoint.created_at))
        .execute(&self.pool)
        .await
        .map_err(infra)?;
        Ok(())
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    async fn list_endpoints(
        &self,
        firm: FirmId,
    ) -> Result<Vec<WebhookEndpoint>, InfrastructureError> {
        sqlx::query(&format!(
            "{ENDPOINT_COLUMNS} WHERE firm_id = $1 ORDER BY created_at, id"
        ))
        .bind(firm.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(infra)?
        .iter()
        .map(endpoint_from_row)
        .collect()
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    async fn get_endpoint(
        &self,
        firm: FirmId,
        id: WebhookEndpointId,
    ) -> Result<Option<WebhookEndpoint>, InfrastructureError> {
        sqlx::query(&format!(
            "{ENDPOINT_COLUMNS} WHERE firm_id = $1 AND id = $2"
        ))
        .bind(firm.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(infra)?
        .as_ref()
        .map(endpoint_from_row)
        .transpose()
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    async fn disable_endpoint(
        &self,
        firm: FirmId,
        id: WebhookEndpointId,
        at: OffsetDateTime,
    ) -> Result<bool, InfrastructureError> {
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET disabled_at = $1 WHERE firm_id = $2 AND id = $3 AND disabled_at IS NULL",
        )
        .bind(at_micros(at))
        .bind(firm.as_uuid())
        .bind(id.as_uuid())
        .execute(&self.pool)
        .await
        .map_err(infra)?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %delivery.firm_id))]
    async fn record_delivery(&self, delivery: &WebhookDelivery) -> Result<(), InfrastructureError> {
        sqlx::query(
            "INSERT INTO webhook_deliveries (firm_id, endpoint_id, message_id, event_type, attempt, attempted_at, response_status, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(delivery.firm_id.as_uuid())
        .bind(delivery.endpoint_id.as_uuid())
        .bind(&delivery.message_id)
        .bind(&delivery.event_type)
        .bind(fit::<i32, _>(delivery.attempt)?)
        .bind(at_micros(delivery.attempted_at))
        .bind(delivery.response_status.map(i32::from))
        .bind(delivery.error.as_deref())
        .bind(i64::try_from(delivery.duration_ms).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await
        .map_err(infra)?;
        Ok(())
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    async fn list_deliveries(
        &self,
        firm: FirmId,
        endpoint: WebhookEndpointId,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, InfrastructureError> {
        sqlx::query(
            "SELECT endpoint_id, firm_id, message_id, event_type, attempt, attempted_at, response_status, error, duration_ms \
             FROM webhook_deliveries WHERE firm_id = $1 AND endpoint_id = $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(firm.as_uuid())
        .bind(endpoint.as_uuid())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(infra)?
        .iter()
        .map(delivery_from_row)
        .collect()
    }
}

#[async_trait]
impl OutboxStore for PostgresStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn claim_batch(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, InfrastructureError> {
        // SKIP LOCKED lets concurrent workers pass over rows another worker is leasing right
        // now instead of queueing behind it; the lease then keeps them apart after commit.
        let rows = sqlx::query(CLAIM)
            .bind(at_micros(lease_until))
            .bind(at_micros(now))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(infra)?;
        let mut entries = rows
            .iter()
            .map(|row| {
                let attempts: i32 = row.try_get("attempts").map_err(infra)?;
                Ok(OutboxEntry {
                    id: row.try_get("id").map_err(infra)?,
                    message: row.try_get::<Json<_>, _>("message").map_err(infra)?.0,
                    created_at: row.try_get("created_at").map_err(infra)?,
                    attempts: u32::try_from(attempts).map_err(InfrastructureError::internal)?,
                })
            })
            .collect::<Result<Vec<_>, InfrastructureError>>()?;
        // RETURNING promises no order.
        entries.sort_by_key(|entry| entry.id);
        Ok(entries)
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn mark_delivered(&self, id: i64, at: OffsetDateTime) -> Result<(), InfrastructureError> {
        sqlx::query("UPDATE outbox SET delivered_at = $1, locked_until = NULL WHERE id = $2")
            .bind(at_micros(at))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(infra)?;
        Ok(())
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn mark_all_delivered(
        &self,
        ids: &[i64],
        at: OffsetDateTime,
    ) -> Result<(), InfrastructureError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE outbox SET delivered_at = $1, locked_until = NULL WHERE id = ANY($2::int8[])",
        )
        .bind(at_micros(at))
        .bind(ids)
        .execute(&self.pool)
        .await
        .map_err(infra)?;
        Ok(())
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn schedule_retry(
        &self,
        id: i64,
        next_attempt_at: OffsetDateTime,
        error: &str,
    ) -> Result<(), InfrastructureError> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, locked_until = NULL, last_error = $2 \
             WHERE id = $3 AND delivered_at IS NULL",
        )
        .bind(at_micros(next_attempt_at))
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(infra)?;
        Ok(())
    }
}
