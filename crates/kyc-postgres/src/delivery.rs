//! Finishing webhook deliveries on PostgreSQL: a batch of ended attempts applied in one
//! transaction with array arguments. The outbox, the event feed, the delivery lease and replay
//! are the shared engine's (`kyc_store_support::outbox`, `kyc_store_support::deliveries`).

use kyc_domain::ports::{DeliveryOutcome, FinishedDelivery, InfrastructureError, WebhookDelivery};
use kyc_store_support::engine::Dialect;
use kyc_store_support::webhooks;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{PostgresStore, at_micros, infra};

kyc_store_support::outbox_store!(PostgresStore);
kyc_store_support::delivery_queue!(PostgresStore);

/// Passes the heads of the chains of endpoints `$1` and customers `$2` (pairs, whose heads just
/// finished) to each chain's oldest unfinished message, unless the endpoint is disabled or
/// deleted. A statement of its own after the messages were updated, so that it reads the
/// chains after any save that held them (see `kyc_store_support::deliveries::chain_busy`) has committed.
const PASS_HEADS: &str = "UPDATE webhook_messages AS m SET head = true WHERE m.id = ANY (ARRAY( \
     SELECT (SELECT x.id FROM webhook_messages AS x WHERE x.endpoint_id = c.endpoint_id \
         AND x.customer_id = c.customer_id AND x.delivered_at IS NULL AND x.failed_at IS NULL \
         ORDER BY x.endpoint_id, x.customer_id, x.id LIMIT 1) \
     FROM unnest($1::uuid[], $2::uuid[]) AS c(endpoint_id, customer_id))) \
     AND NOT m.head \
     AND EXISTS (SELECT 1 FROM webhook_endpoints AS e WHERE e.id = m.endpoint_id AND e.disabled_at IS NULL AND e.deleted_at IS NULL)";

impl PostgresStore {
    /// In one transaction, whatever the number of attempts: the endpoints' rows first (shared,
    /// as enabling or disabling an endpoint takes them exclusively, so the two wait for each
    /// other instead of crossing), the log rows, the messages, the heads passed on, then the
    /// endpoints that answered `410 Gone` disabled.
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(attempts = finished.len()))]
    pub(crate) async fn finish_batch(
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
}
