//! Finishing webhook deliveries on SQLite: each ended attempt applied in turn inside one write
//! transaction. The outbox, the event feed, the delivery lease and replay are the shared
//! engine's (`kyc_store_support::outbox`, `kyc_store_support::deliveries`).

use kyc_domain::ports::{DeliveryOutcome, FinishedDelivery, InfrastructureError, WebhookDelivery};
use kyc_store_support::engine::Dialect;
use kyc_store_support::webhooks;

use crate::engine::prepare;
use crate::{SqliteStore, infra, micros};

kyc_store_support::outbox_store!(SqliteStore);
kyc_store_support::delivery_queue!(SqliteStore);

/// Passes the head of the chain of message `$1` (just finished, on endpoint `$2`) to the
/// chain's oldest unfinished message, unless the endpoint is disabled or deleted.
const PASS_HEAD: &str = "UPDATE webhook_messages SET head = 1 WHERE id = ( \
     SELECT chain.id FROM webhook_messages AS chain, webhook_messages AS done \
     WHERE done.id = $1 AND chain.endpoint_id = done.endpoint_id AND chain.customer_id = done.customer_id \
     AND chain.delivered_at IS NULL AND chain.failed_at IS NULL ORDER BY chain.id LIMIT 1) \
     AND head = 0 \
     AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = $2 AND disabled_at IS NULL AND deleted_at IS NULL)";

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

impl SqliteStore {
    /// In one write transaction, so a batch takes the writer's turn once.
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(attempts = finished.len()))]
    pub(crate) async fn finish_batch(
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
}
