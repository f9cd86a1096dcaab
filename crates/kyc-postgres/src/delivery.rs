//! Webhook endpoints, the delivery log and the outbox on Postgres.

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

use crate::engine::PgColumns;
use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;

use crate::{PostgresStore, at_micros, infra};
use sqlx::types::Json;
use uuid::Uuid;

/// Leases (until `$1`) up to `$3` entries due at `$2`, oldest first, walking
/// `outbox_pending_idx`: the undelivered entries only, so a lease never reads the delivered
/// history. The entries are picked in a materialized CTE, run once: as the sub-select of an
/// `id IN (…)`, the planner may run the locking `LIMIT` again for each row of a nested loop, and
/// under load it did, leasing twice the limit or more.
pub(crate) const CLAIM: &str = "WITH picked AS MATERIALIZED ( \
     SELECT id FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= $2 \
     AND (locked_until IS NULL OR locked_until <= $2) ORDER BY id LIMIT $3 \
     FOR UPDATE SKIP LOCKED) \
     UPDATE outbox SET locked_until = $1 FROM picked WHERE outbox.id = picked.id \
     RETURNING outbox.id, outbox.message, outbox.created_at, outbox.attempts";

/// The oldest unfinished message of the chain of `endpoint` and `customer` (SQL expressions),
/// read with a share lock. A delivery finishing that message holds its row until it commits, so
/// a save reading the chain waits for it and then sees it finished (and skips on to the next
/// unfinished one); a delivery finishing after this read waits for the save and then sees the
/// save's message when it passes the head on. Either way exactly one message of a chain is its
/// head.
///
/// Ordered by the columns of `webhook_messages_chain_idx`, which only that index provides: a
/// planner that believes the table tiny would otherwise walk the primary key in id order and
/// filter every row.
pub(crate) fn chain_busy(endpoint: &str, customer: &str) -> String {
    format!(
        "SELECT chain.id FROM webhook_messages AS chain \
         WHERE chain.endpoint_id = {endpoint} AND chain.customer_id = {customer} \
         AND chain.delivered_at IS NULL AND chain.failed_at IS NULL \
         ORDER BY chain.endpoint_id, chain.customer_id, chain.id LIMIT 1 FOR SHARE OF chain"
    )
}

/// Passes the heads of the chains of endpoints `$1` and customers `$2` (pairs, whose heads just
/// finished) to each chain's oldest unfinished message, unless the endpoint is disabled or
/// deleted. A statement of its own after the messages were updated, so that it reads the
/// chains after any save that held them (see [`chain_busy`]) has committed.
const PASS_HEADS: &str = "UPDATE webhook_messages AS m SET head = true WHERE m.id = ANY (ARRAY( \
     SELECT (SELECT x.id FROM webhook_messages AS x WHERE x.endpoint_id = c.endpoint_id \
         AND x.customer_id = c.customer_id AND x.delivered_at IS NULL AND x.failed_at IS NULL \
         ORDER BY x.endpoint_id, x.customer_id, x.id LIMIT 1) \
     FROM unnest($1::uuid[], $2::uuid[]) AS c(endpoint_id, customer_id))) \
     AND NOT m.head \
     AND EXISTS (SELECT 1 FROM webhook_endpoints AS e WHERE e.id = m.endpoint_id AND e.disabled_at IS NULL AND e.deleted_at IS NULL)";

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

/// A firm's events after the position (`$2`, `$3`), at most `$4`, of transactions that finished
/// before every transaction still running started: a transaction still running, or one starting
/// later, has an id at or above the snapshot's `xmin`, so nothing can appear later before the
/// last position read.
const READ_EVENTS: &str = "SELECT n.txid::text::bigint AS txid, n.id AS sequence, n.event_id, n.firm_id, \
     n.customer_id, n.message, n.state, n.occurred_at FROM notifications AS n \
     WHERE n.firm_id = $1 AND (n.txid, n.id) > ($2::text::xid8, $3) \
     AND n.txid < pg_snapshot_xmin(pg_current_snapshot()) \
     ORDER BY n.txid, n.id LIMIT $4";

fn event_from_row(row: &PgRow) -> Result<FeedEvent, InfrastructureError> {
    let firm = FirmId::from_uuid(row.try_get::<Uuid, _>("firm_id").map_err(infra)?);
    let customer_id = CustomerId::from_uuid(row.try_get::<Uuid, _>("customer_id").map_err(infra)?);
    let Json(message): Json<OutboxMessage> = row.try_get("message").map_err(infra)?;
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
    let Json(mut state): Json<CustomerState> = row.try_get("state").map_err(infra)?;
    state.id = customer_id;
    state.firm_id = firm;
    Ok(FeedEvent {
        position: FeedPosition {
            transaction: row.try_get("txid").map_err(infra)?,
            sequence: row.try_get("sequence").map_err(infra)?,
        },
        id: row.try_get("event_id").map_err(infra)?,
        firm_id: firm,
        customer_id,
        notification,
        previous_kyc_status,
        previous_aml_status,
        customer: Customer::restore(state),
        occurred_at: row.try_get("occurred_at").map_err(infra)?,
    })
}

#[async_trait]
impl EventFeed for PostgresStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    async fn read_events(
        &self,
        firm: FirmId,
        after: Option<FeedPosition>,
        limit: u32,
    ) -> Result<Vec<FeedEvent>, InfrastructureError> {
        let after = after.unwrap_or(FeedPosition {
            transaction: 0,
            sequence: 0,
        });
        sqlx::query(READ_EVENTS)
            .bind(firm.as_uuid())
            .bind(after.transaction.to_string())
            .bind(after.sequence)
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
/// as the endpoint has lease room for (`$4` less those leased now). Every step is an index walk
/// bounded by a limit or a list of ids, so the plan stays cheap whatever the planner believes of
/// a table that has just grown: the cost follows the number of endpoints and `$4`, not the
/// backlog. The chosen rows are locked by id: their conditions are written so that no partial
/// index of unfinished messages matches them, which leaves the primary key as the only index to
/// read them by (a planner that believes the table tiny would otherwise walk a whole partial
/// index and filter it by id). The lease conditions are repeated on the locked rows, with the limit applied after
/// `SKIP LOCKED`, so concurrent workers get disjoint batches that together hold every due head;
/// they may together pass an endpoint's cap by what each leases at once.
const CLAIM_DELIVERIES: &str = "WITH due AS MATERIALIZED ( \
         SELECT d.id, d.endpoint_id, d.next_attempt_at, d.rank FROM webhook_endpoints AS e \
         CROSS JOIN LATERAL ( \
             SELECT m.id, m.endpoint_id, m.next_attempt_at, \
                 row_number() OVER (ORDER BY m.next_attempt_at, m.id) AS rank \
             FROM webhook_messages AS m \
             WHERE m.endpoint_id = e.id AND m.head AND m.delivered_at IS NULL AND m.failed_at IS NULL \
             AND m.next_attempt_at <= $1 AND (m.locked_until IS NULL OR m.locked_until <= $1) \
             ORDER BY m.next_attempt_at, m.id LIMIT $4) AS d \
         WHERE e.disabled_at IS NULL AND e.deleted_at IS NULL), \
     leased AS MATERIALIZED ( \
         SELECT l.endpoint_id, count(*) AS n FROM webhook_messages AS l \
         WHERE l.delivered_at IS NULL AND l.failed_at IS NULL AND l.locked_until IS NOT NULL \
         AND l.locked_until > $1 GROUP BY l.endpoint_id), \
     chosen AS MATERIALIZED ( \
         SELECT due.id FROM due LEFT JOIN leased ON leased.endpoint_id = due.endpoint_id \
         WHERE due.rank + coalesce(leased.n, 0) <= $4), \
     picked AS MATERIALIZED ( \
         SELECT m.id FROM webhook_messages AS m WHERE m.id = ANY (ARRAY(SELECT id FROM chosen)) \
         AND m.head AND coalesce(m.delivered_at, m.failed_at) IS NULL \
         AND (m.locked_until IS NULL OR m.locked_until <= $1) \
         ORDER BY m.next_attempt_at, m.id LIMIT $3 \
         FOR UPDATE OF m SKIP LOCKED), \
     claimed AS ( \
         UPDATE webhook_messages AS m SET locked_until = $2 WHERE m.id = ANY (ARRAY(SELECT id FROM picked)) \
         RETURNING m.id, m.endpoint_id, m.notification_id, m.attempts) \
     SELECT claimed.id AS message_id, claimed.attempts, \
         e.id, e.firm_id, e.url, e.description, e.event_types, e.secret, e.previous_secret, \
         e.previous_secret_expires_at, e.disabled_at, e.created_at, \
         n.txid::text::bigint AS txid, n.id AS sequence, n.event_id, n.customer_id, n.message, n.state, n.occurred_at \
     FROM claimed JOIN webhook_endpoints AS e ON e.id = claimed.endpoint_id \
     JOIN notifications AS n ON n.id = claimed.notification_id \
     ORDER BY claimed.id";

#[async_trait]
impl DeliveryQueue for PostgresStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
        per_endpoint: u32,
    ) -> Result<Vec<QueuedDelivery>, InfrastructureError> {
        // Planned for each call's own values, never from a cached generic plan: with the lease
        // times as unknowns a generic plan cannot see that few rows are due, and took a hundred
        // times longer under load.
        sqlx::query(CLAIM_DELIVERIES)
            .persistent(false)
            .bind(at_micros(now))
            .bind(at_micros(lease_until))
            .bind(i64::from(limit))
            .bind(i64::from(per_endpoint))
            .fetch_all(&self.pool)
            .await
            .map_err(infra)?
            .iter()
            .map(|row| {
                let attempts: i32 = row.try_get("attempts").map_err(infra)?;
                Ok(QueuedDelivery {
                    id: row.try_get("message_id").map_err(infra)?,
                    endpoint: webhooks::endpoint_from_row(&PgColumns(row))?,
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
        self.finish_deliveries(&[FinishedDelivery {
            id,
            attempt: attempt.clone(),
            outcome,
        }])
        .await
    }

    /// In one transaction, whatever the number of attempts: the endpoints' rows first (shared,
    /// as enabling or disabling an endpoint takes them exclusively, so the two wait for each
    /// other instead of crossing), the log rows, the messages, the heads passed on, then the
    /// endpoints that answered `410 Gone` disabled.
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(attempts = finished.len()))]
    async fn finish_deliveries(
        &self,
        finished: &[FinishedDelivery],
    ) -> Result<(), InfrastructureError> {
        if finished.is_empty() {
            return Ok(());
        }
        let mut endpoints: Vec<Uuid> = finished
            .iter()
            .map(|f| f.attempt.endpoint_id.as_uuid())
            .collect();
        endpoints.sort_unstable();
        endpoints.dedup();
        let mut tx = self.pool.begin().await.map_err(infra)?;
        sqlx::query(
            "SELECT 1 FROM webhook_endpoints WHERE id = ANY ($1) ORDER BY id FOR KEY SHARE",
        )
        .bind(&endpoints)
        .execute(&mut *tx)
        .await
        .map_err(infra)?;
        let log: Vec<&WebhookDelivery> = finished.iter().map(|f| &f.attempt).collect();
        sqlx::query(
            "INSERT INTO webhook_deliveries (firm_id, endpoint_id, message_id, event_type, attempt, attempted_at, response_status, error, duration_ms) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int[], $6::timestamptz[], $7::int[], $8::text[], $9::bigint[])",
        )
        .bind(log.iter().map(|d| d.firm_id.as_uuid()).collect::<Vec<_>>())
        .bind(log.iter().map(|d| d.endpoint_id.as_uuid()).collect::<Vec<_>>())
        .bind(log.iter().map(|d| d.message_id.as_str()).collect::<Vec<_>>())
        .bind(log.iter().map(|d| d.event_type.as_str()).collect::<Vec<_>>())
        .bind(log.iter().map(|d| i32::try_from(d.attempt).unwrap_or(i32::MAX)).collect::<Vec<_>>())
        .bind(log.iter().map(|d| at_micros(d.attempted_at)).collect::<Vec<_>>())
        .bind(log.iter().map(|d| d.response_status.map(i32::from)).collect::<Vec<_>>())
        .bind(log.iter().map(|d| d.error.as_deref()).collect::<Vec<_>>())
        .bind(log.iter().map(|d| i64::try_from(d.duration_ms).unwrap_or(i64::MAX)).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .map_err(infra)?;
        // Gone leaves the message due at once: it waits only for its endpoint to be enabled.
        let applied: Vec<(
            Option<OffsetDateTime>,
            Option<OffsetDateTime>,
            Option<OffsetDateTime>,
        )> = finished
            .iter()
            .map(|f| {
                let at = at_micros(f.attempt.attempted_at);
                match f.outcome {
                    DeliveryOutcome::Delivered => (Some(at), None, None),
                    DeliveryOutcome::RetryAt(next) => (None, Some(at_micros(next)), None),
                    DeliveryOutcome::GaveUp => (None, None, Some(at)),
                    DeliveryOutcome::Gone => (None, Some(at), None),
                }
            })
            .collect();
        // Rows found by `id = ANY` (the primary key, whatever the planner believes of the table's
        // size), each taking its values from the arrays at its id's place.
        let ended: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "UPDATE webhook_messages AS m SET attempts = m.attempts + 1, locked_until = NULL, \
             delivered_at = ($2::timestamptz[])[array_position($1::bigint[], m.id)], \
             failed_at = ($4::timestamptz[])[array_position($1::bigint[], m.id)], \
             next_attempt_at = coalesce(($3::timestamptz[])[array_position($1::bigint[], m.id)], m.next_attempt_at) \
             WHERE m.id = ANY ($1::bigint[]) AND coalesce(m.delivered_at, m.failed_at) IS NULL \
             RETURNING m.endpoint_id, m.customer_id, (m.delivered_at IS NOT NULL OR m.failed_at IS NOT NULL) AS ended",
        )
        .bind(finished.iter().map(|f| f.id).collect::<Vec<_>>())
        .bind(applied.iter().map(|a| a.0).collect::<Vec<_>>())
        .bind(applied.iter().map(|a| a.1).collect::<Vec<_>>())
        .bind(applied.iter().map(|a| a.2).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await
        .map_err(infra)?
        .into_iter()
        .filter_map(|(endpoint, customer, ended): (Uuid, Uuid, bool)| ended.then_some((endpoint, customer)))
        .collect();
        if !ended.is_empty() {
            sqlx::query(PASS_HEADS)
                .persistent(false)
                .bind(ended.iter().map(|e| e.0).collect::<Vec<_>>())
                .bind(ended.iter().map(|e| e.1).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await
                .map_err(infra)?;
        }
        let mut gone: Vec<&WebhookDelivery> = finished
            .iter()
            .filter(|f| f.outcome == DeliveryOutcome::Gone)
            .map(|f| &f.attempt)
            .collect();
        gone.sort_by_key(|d| d.endpoint_id);
        gone.dedup_by_key(|d| d.endpoint_id);
        for attempt in gone {
            let disabled = sqlx::query(
                "UPDATE webhook_endpoints SET disabled_at = $1 WHERE firm_id = $2 AND id = $3 AND disabled_at IS NULL",
            )
            .bind(at_micros(attempt.attempted_at))
            .bind(attempt.firm_id.as_uuid())
            .bind(attempt.endpoint_id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(infra)?;
            if disabled.rows_affected() == 1 {
                sqlx::query(webhooks::clear_heads(Dialect::Postgres))
                    .bind(attempt.endpoint_id.as_uuid())
                    .execute(&mut *tx)
                    .await
                    .map_err(infra)?;
            }
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
        let done = sqlx::query(&format!(
            "INSERT INTO webhook_messages (firm_id, endpoint_id, customer_id, notification_id, next_attempt_at, head) \
             SELECT n.firm_id, e.id, n.customer_id, n.id, $4, e.disabled_at IS NULL AND busy.id IS NULL \
             FROM notifications AS n \
             JOIN webhook_endpoints AS e ON e.firm_id = n.firm_id AND e.id = $2 AND e.deleted_at IS NULL \
             LEFT JOIN LATERAL ({}) AS busy ON true \
             WHERE n.firm_id = $1 AND n.event_id = $3 \
             AND EXISTS (SELECT 1 FROM webhook_messages AS m WHERE m.endpoint_id = e.id AND m.notification_id = n.id)",
            chain_busy("e.id", "n.customer_id")
        ))
        .bind(firm.as_uuid())
        .bind(endpoint.as_uuid())
        .bind(event)
        .bind(at_micros(at))
        .execute(&self.pool)
        .await
        .map_err(infra)?;
        Ok(done.rows_affected() == 1)
    }
}
