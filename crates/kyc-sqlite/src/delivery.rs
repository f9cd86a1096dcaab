//! Webhook endpoints, the delivery log, the event feed, the delivery queue and the outbox on
//! SQLite.

use async_trait::async_trait;
use kyc_domain::customer::{Customer, CustomerState};
use kyc_domain::events::OutboxMessage;
use kyc_domain::ids::{CustomerId, FirmId};
use kyc_domain::ports::{
    DeliveryOutcome, DeliveryQueue, EventFeed, FeedEvent, FeedPosition, FinishedDelivery,
    InfrastructureError, OutboxEntry, OutboxStore, QueuedDelivery, WebhookDelivery,
    WebhookEndpointId,
};
use kyc_store_support::engine::Dialect;
use kyc_store_support::webhooks;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::engine::{SqliteColumns, prepare};
use crate::{SqliteStore, from_json, from_micros, infra, micros, to_json, uuid};

/// Leases (until `$1`) up to `$3` entries due at `$2`, oldest first, walking
/// `outbox_pending_idx`: the undelivered entries only, so a lease never reads the delivered
/// history, nor sorts every due entry.
pub(crate) const CLAIM: &str = "UPDATE outbox SET locked_until = $1 WHERE id IN ( \
     SELECT id FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= $2 \
     AND (locked_until IS NULL OR locked_until <= $2) ORDER BY id LIMIT $3) \
     RETURNING id, message, created_at, attempts";

#[async_trait]
impl OutboxStore for SqliteStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn claim_batch(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, InfrastructureError> {
        // SQLite has no row locks; the immediate transaction makes the select-and-lease atomic.
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(CLAIM)
            .bind(micros(lease_until))
            .bind(micros(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(infra)?;
        tx.commit().await.map_err(infra)?;
        let mut entries = rows
            .iter()
            .map(|row| {
                let attempts: i64 = row.try_get("attempts").map_err(infra)?;
                Ok(OutboxEntry {
                    id: row.try_get("id").map_err(infra)?,
                    message: from_json(&row.try_get::<String, _>("message").map_err(infra)?)?,
                    created_at: from_micros(row.try_get("created_at").map_err(infra)?)?,
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
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE outbox SET delivered_at = $1, locked_until = NULL WHERE id = $2")
            .bind(micros(at))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(infra)?;
        Ok(())
    }

    /// One `UPDATE` for the whole pass (the ids handed over as a JSON array), so marking a pass
    /// takes the write lock once instead of once per entry.
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(entries = ids.len()))]
    async fn mark_all_delivered(
        &self,
        ids: &[i64],
        at: OffsetDateTime,
    ) -> Result<(), InfrastructureError> {
        if ids.is_empty() {
            return Ok(());
        }
        let _turn = self.write_turn().await;
        sqlx::query(
            "UPDATE outbox SET delivered_at = $1, locked_until = NULL \
             WHERE id IN (SELECT value FROM json_each($2))",
        )
        .bind(micros(at))
        .bind(to_json(&ids)?)
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
        let _turn = self.write_turn().await;
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, locked_until = NULL, last_error = $2 \
             WHERE id = $3 AND delivered_at IS NULL",
        )
        .bind(micros(next_attempt_at))
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(infra)?;
        Ok(())
    }
}

/// A firm's events after the sequence `$2`, at most `$3`, in feed order. Writes are serial and
/// ids are never handed out twice, so every event a later write adds has a larger id than any
/// this read returns.
const READ_EVENTS: &str = "SELECT id AS sequence, event_id, firm_id, customer_id, message, state, occurred_at \
     FROM notifications WHERE firm_id = $1 AND id > $2 ORDER BY id LIMIT $3";

fn event_from_row(row: &SqliteRow) -> Result<FeedEvent, InfrastructureError> {
    let firm = FirmId::from_uuid(uuid(&row.try_get::<String, _>("firm_id").map_err(infra)?)?);
    let customer_id = CustomerId::from_uuid(uuid(
        &row.try_get::<String, _>("customer_id").map_err(infra)?,
    )?);
    let message: OutboxMessage = from_json(row.try_get::<&str, _>("message").map_err(infra)?)?;
    let OutboxMessage::Notify {
        notification,
        previous_kyc_status,
        previous_aml_status,
        ..
    } = message
    else {
        return Err(InfrastructureError::internal(
            "a feed event that is not a notification",
        ));
    };
    // The state as the customers table stores it: the row's ids are not in it.
    let mut state: CustomerState = from_json(row.try_get::<&str, _>("state").map_err(infra)?)?;
    state.id = customer_id;
    state.firm_id = firm;
    Ok(FeedEvent {
        position: FeedPosition {
            transaction: 0,
            sequence: row.try_get("sequence").map_err(infra)?,
        },
        id: uuid(row.try_get::<&str, _>("event_id").map_err(infra)?)?,
        firm_id: firm,
        customer_id,
        notification,
        previous_kyc_status,
        previous_aml_status,
        customer: Customer::restore(state),
        occurred_at: from_micros(row.try_get("occurred_at").map_err(infra)?)?,
    })
}

#[async_trait]
impl EventFeed for SqliteStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    async fn read_events(
        &self,
        firm: FirmId,
        after: Option<FeedPosition>,
        limit: u32,
    ) -> Result<Vec<FeedEvent>, InfrastructureError> {
        // Every position here is (0, id): one past a later transaction has nothing after it.
        let after = match after {
            None => 0,
            Some(position) if position.transaction < 0 => 0,
            Some(position) if position.transaction > 0 => return Ok(Vec::new()),
            Some(position) => position.sequence,
        };
        sqlx::query(READ_EVENTS)
            .bind(firm.to_string())
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(infra)?
            .iter()
            .map(event_from_row)
            .collect()
    }
}

/// Leases (until `$2`) up to `$3` messages due at `$1`, oldest due first: for each enabled
/// endpoint, its first `$4` due heads (walking `webhook_messages_due_idx`), of which only as many
/// as the endpoint has lease room for (`$4` less those leased now). The cost follows the number
/// of endpoints and `$4`, not the backlog. Run inside the write lock, so choosing the rows and
/// leasing them cannot interleave with another worker's.
const CLAIM_DELIVERIES: &str = "WITH due AS ( \
         SELECT m.id, m.endpoint_id, m.next_attempt_at, \
             row_number() OVER (PARTITION BY m.endpoint_id ORDER BY m.next_attempt_at, m.id) AS rank \
         FROM webhook_endpoints AS e JOIN webhook_messages AS m ON m.id IN ( \
             SELECT x.id FROM webhook_messages AS x \
             WHERE x.endpoint_id = e.id AND x.head = 1 AND x.delivered_at IS NULL AND x.failed_at IS NULL \
             AND x.next_attempt_at <= $1 AND (x.locked_until IS NULL OR x.locked_until <= $1) \
             ORDER BY x.next_attempt_at, x.id LIMIT $4) \
         WHERE e.disabled_at IS NULL AND e.deleted_at IS NULL), \
     leased AS ( \
         SELECT l.endpoint_id, count(*) AS n FROM webhook_messages AS l \
         WHERE l.delivered_at IS NULL AND l.failed_at IS NULL AND l.locked_until IS NOT NULL AND l.locked_until > $1 \
         AND l.endpoint_id IN (SELECT endpoint_id FROM due) GROUP BY l.endpoint_id), \
     picked AS ( \
         SELECT due.id FROM due LEFT JOIN leased ON leased.endpoint_id = due.endpoint_id \
         WHERE due.rank + coalesce(leased.n, 0) <= $4 \
         ORDER BY due.next_attempt_at, due.id LIMIT $3) \
     UPDATE webhook_messages SET locked_until = $2 WHERE id IN (SELECT id FROM picked) \
     RETURNING id";

/// Passes the head of the chain of message `$1` (just finished, on endpoint `$2`) to the
/// chain's oldest unfinished message, unless the endpoint is disabled or deleted.
const PASS_HEAD: &str = "UPDATE webhook_messages SET head = 1 WHERE id = ( \
     SELECT chain.id FROM webhook_messages AS chain, webhook_messages AS done \
     WHERE done.id = $1 AND chain.endpoint_id = done.endpoint_id AND chain.customer_id = done.customer_id \
     AND chain.delivered_at IS NULL AND chain.failed_at IS NULL ORDER BY chain.id LIMIT 1) \
     AND head = 0 \
     AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = $2 AND disabled_at IS NULL AND deleted_at IS NULL)";

/// The leased messages (`$1`, a JSON array of ids) with their endpoints and events.
const CLAIMED: &str = "SELECT m.id AS message_id, m.attempts, \
         e.id, e.firm_id, e.url, e.description, e.event_types, e.secret, e.previous_secret, \
         e.previous_secret_expires_at, e.disabled_at, e.created_at, \
         n.id AS sequence, n.event_id, n.customer_id, n.message, n.state, n.occurred_at \
     FROM webhook_messages AS m JOIN webhook_endpoints AS e ON e.id = m.endpoint_id \
     JOIN notifications AS n ON n.id = m.notification_id \
     WHERE m.id IN (SELECT value FROM json_each($1)) ORDER BY m.id";

/// Applies one ended attempt inside the write transaction `tx`: its log row, the message, the
/// head passed on, and for `410 Gone` the endpoint disabled.
async fn finish_in(
    tx: &mut sqlx::SqliteConnection,
    id: i64,
    attempt: &WebhookDelivery,
    outcome: DeliveryOutcome,
) -> Result<(), InfrastructureError> {
    let log = webhooks::insert_delivery(attempt);
    prepare(&log).execute(&mut *tx).await.map_err(infra)?;
    let at = micros(attempt.attempted_at);
    // Gone leaves the message due at once: it waits only for its endpoint to be enabled.
    let (delivered, retry, failed) = match outcome {
        DeliveryOutcome::Delivered => (Some(at), None, None),
        DeliveryOutcome::RetryAt(next) => (None, Some(micros(next)), None),
        DeliveryOutcome::GaveUp => (None, None, Some(at)),
        DeliveryOutcome::Gone => (None, Some(at), None),
    };
    sqlx::query(
        "UPDATE webhook_messages SET attempts = attempts + 1, locked_until = NULL, \
         delivered_at = $2, failed_at = $3, next_attempt_at = coalesce($4, next_attempt_at) \
         WHERE id = $1 AND delivered_at IS NULL AND failed_at IS NULL",
    )
    .bind(id)
    .bind(delivered)
    .bind(failed)
    .bind(retry)
    .execute(&mut *tx)
    .await
    .map_err(infra)?;
    match outcome {
        DeliveryOutcome::Delivered | DeliveryOutcome::GaveUp => {
            sqlx::query(PASS_HEAD)
                .bind(id)
                .bind(attempt.endpoint_id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(infra)?;
        }
        DeliveryOutcome::Gone => {
            let disabled = sqlx::query(
                "UPDATE webhook_endpoints SET disabled_at = $1 WHERE firm_id = $2 AND id = $3 AND disabled_at IS NULL",
            )
            .bind(at)
            .bind(attempt.firm_id.to_string())
            .bind(attempt.endpoint_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(infra)?;
            if disabled.rows_affected() == 1 {
                sqlx::query(webhooks::clear_heads(Dialect::Sqlite))
                    .bind(attempt.endpoint_id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(infra)?;
            }
        }
        DeliveryOutcome::RetryAt(_) => {}
    }
    Ok(())
}

#[async_trait]
impl DeliveryQueue for SqliteStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
        per_endpoint: u32,
    ) -> Result<Vec<QueuedDelivery>, InfrastructureError> {
        // SQLite has no row locks; the immediate transaction makes the choice and the lease atomic.
        let mut tx = self.begin_write().await?;
        let ids: Vec<i64> = sqlx::query_scalar(CLAIM_DELIVERIES)
            .bind(micros(now))
            .bind(micros(lease_until))
            .bind(i64::from(limit))
            .bind(i64::from(per_endpoint))
            .fetch_all(&mut *tx)
            .await
            .map_err(infra)?;
        if ids.is_empty() {
            tx.commit().await.map_err(infra)?;
            return Ok(Vec::new());
        }
        let rows = sqlx::query(CLAIMED)
            .bind(to_json(&ids)?)
            .fetch_all(&mut *tx)
            .await
            .map_err(infra)?;
        tx.commit().await.map_err(infra)?;
        rows.iter()
            .map(|row| {
                let attempts: i64 = row.try_get("attempts").map_err(infra)?;
                Ok(QueuedDelivery {
                    id: row.try_get("message_id").map_err(infra)?,
                    endpoint: webhooks::endpoint_from_row(&SqliteColumns(row))?,
                    event: event_from_row(row)?,
                    attempts: u32::try_from(attempts).map_err(InfrastructureError::internal)?,
                })
            })
            .collect()
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %attempt.firm_id))]
    async fn finish_delivery(
        &self,
        id: i64,
        attempt: &WebhookDelivery,
        outcome: DeliveryOutcome,
    ) -> Result<(), InfrastructureError> {
        let mut tx = self.begin_write().await?;
        finish_in(&mut tx, id, attempt, outcome).await?;
        tx.commit().await.map_err(infra)
    }

    /// In one write transaction, so a batch takes the writer's turn once.
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(attempts = finished.len()))]
    async fn finish_deliveries(
        &self,
        finished: &[FinishedDelivery],
    ) -> Result<(), InfrastructureError> {
        if finished.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for one in finished {
            finish_in(&mut tx, one.id, &one.attempt, one.outcome).await?;
        }
        tx.commit().await.map_err(infra)
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    async fn replay(
        &self,
        firm: FirmId,
        endpoint: WebhookEndpointId,
        event: Uuid,
        at: OffsetDateTime,
    ) -> Result<bool, InfrastructureError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "INSERT INTO webhook_messages (firm_id, endpoint_id, customer_id, notification_id, next_attempt_at, head) \
             SELECT n.firm_id, e.id, n.customer_id, n.id, $4, e.disabled_at IS NULL AND NOT EXISTS ( \
                 SELECT 1 FROM webhook_messages AS chain WHERE chain.endpoint_id = e.id \
                 AND chain.customer_id = n.customer_id AND chain.delivered_at IS NULL AND chain.failed_at IS NULL) \
             FROM notifications AS n \
             JOIN webhook_endpoints AS e ON e.firm_id = n.firm_id AND e.id = $2 AND e.deleted_at IS NULL \
             WHERE n.firm_id = $1 AND n.event_id = $3 \
             AND EXISTS (SELECT 1 FROM webhook_messages AS m WHERE m.endpoint_id = e.id AND m.notification_id = n.id)",
        )
        .bind(firm.to_string())
        .bind(endpoint.to_string())
        .bind(event.to_string())
        .bind(micros(at))
        .execute(&self.pool)
        .await
        .map_err(infra)?;
        Ok(done.rows_affected() == 1)
    }
}
