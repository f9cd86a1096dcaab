//! The event feed and the webhook delivery queue's lease and replay, once for both backends.
//!
//! Each database keeps its own way to make them safe. On PostgreSQL several writers run at once:
//! the feed reads only transactions that finished before every running one started, and the
//! lease locks the rows it picks (`SKIP LOCKED`) in one statement. On SQLite writes are serial:
//! the feed reads by sequence alone, and the lease picks and marks its rows inside the writer's
//! turn. Finishing attempts stays with each adapter, where the two databases batch differently.

use kyc_domain::customer::{Customer, CustomerState};
use kyc_domain::events::OutboxMessage;
use kyc_domain::ids::{CustomerId, FirmId};
use kyc_domain::ports::{
    FeedEvent, FeedPosition, InfrastructureError, QueuedDelivery, WebhookEndpointId,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::engine::{Arg, Columns, Dialect, Engine, Session, Statement, all_rows, fit, infra};
use crate::webhooks::endpoint_from_row;

/// A firm's events after a position, at most a limit, in feed order.
///
/// PostgreSQL (`$1` firm, (`$2`, `$3`) the position, `$4` the limit): only events of transactions
/// that finished before every transaction still running started. A transaction still running,
/// or one starting later, has an id at or above the snapshot's `xmin`, so nothing can appear
/// later before the last position read.
///
/// SQLite (`$1` firm, `$2` the sequence, `$3` the limit): writes are serial and ids are never
/// handed out twice, so every event a later write adds has a larger id than any this read
/// returns. Every position is `(0, id)`.
const fn read_events_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => {
            "SELECT n.txid::text::bigint AS txid, n.id AS sequence, n.event_id, n.firm_id, \
             n.customer_id, n.message, n.state, n.occurred_at FROM notifications AS n \
             WHERE n.firm_id = $1 AND (n.txid, n.id) > ($2::text::xid8, $3) \
             AND n.txid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY n.txid, n.id LIMIT $4"
        }
        Dialect::Sqlite => {
            "SELECT 0 AS txid, id AS sequence, event_id, firm_id, customer_id, message, state, occurred_at \
             FROM notifications WHERE firm_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        }
    }
}

/// An event from a row of the notifications table (`txid`, `sequence`, `event_id`, `firm_id`,
/// `customer_id`, `message`, `state`, `occurred_at`).
///
/// # Errors
/// [`InfrastructureError::Internal`] when a column does not read or the message is not a
/// notification.
pub fn event_from_row(row: &impl Columns) -> Result<FeedEvent, InfrastructureError> {
    let firm = FirmId::from_uuid(row.id("firm_id")?);
    let customer_id = CustomerId::from_uuid(row.id("customer_id")?);
    let OutboxMessage::Notify {
        notification,
        previous_kyc_status,
        previous_aml_status,
        ..
    } = row.json("message")?
    else {
        return Err(InfrastructureError::internal(
            "a feed event that is not a notification",
        ));
    };
    // The state as the customers table stores it: the row's ids are not in it.
    let mut state: CustomerState = row.json("state")?;
    state.id = customer_id;
    state.firm_id = firm;
    Ok(FeedEvent {
        position: FeedPosition {
            transaction: row.int("txid")?,
            sequence: row.int("sequence")?,
        },
        id: row.id("event_id")?,
        firm_id: firm,
        customer_id,
        notification,
        previous_kyc_status,
        previous_aml_status,
        customer: Customer::restore(state),
        occurred_at: row.time("occurred_at")?,
    })
}

/// The firm's events after `after` (from the start when `None`), at most `limit`.
///
/// # Errors
/// [`InfrastructureError`] when the database fails or a row does not read.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
pub async fn read_events<E: Engine>(
    engine: &E,
    firm: FirmId,
    after: Option<FeedPosition>,
    limit: u32,
) -> Result<Vec<FeedEvent>, InfrastructureError> {
    let statement = Statement::new(read_events_sql(E::DIALECT)).id(firm.as_uuid());
    let statement = match E::DIALECT {
        Dialect::Postgres => {
            let after = after.unwrap_or(FeedPosition {
                transaction: 0,
                sequence: 0,
            });
            statement
                .text(after.transaction.to_string())
                .int(after.sequence)
        }
        // Every position here is (0, id): one past a later transaction has nothing after it.
        Dialect::Sqlite => match after {
            None => statement.int(0),
            Some(position) if position.transaction < 0 => statement.int(0),
            Some(position) if position.transaction > 0 => return Ok(Vec::new()),
            Some(position) => statement.int(position.sequence),
        },
    };
    all_rows(engine, statement.int(i64::from(limit)), event_from_row).await
}

/// Leases (until `$2`) up to `$3` messages due at `$1`, oldest due first: for each enabled
/// endpoint, its first `$4` due heads (walking `webhook_messages_due_idx`), of which only as many
/// as the endpoint has lease room for (`$4` less those leased now). Every step is an index walk
/// bounded by a limit or a list of ids, so the cost follows the number of endpoints and `$4`, not
/// the backlog.
///
/// On PostgreSQL the statement also returns what was leased. The chosen rows are locked by id:
/// their conditions are written so that no partial index of unfinished messages matches them,
/// which leaves the primary key as the only index to read them by (a planner that believes the
/// table tiny would otherwise walk a whole partial index and filter it by id). The lease
/// conditions are repeated on the locked rows, with the limit applied after `SKIP LOCKED`, so
/// concurrent workers get disjoint batches that together hold every due head; they may together
/// pass an endpoint's cap by what each leases at once.
///
/// On SQLite it returns the leased ids, read with [`CLAIMED`] in the same write transaction, so
/// choosing the rows and leasing them cannot interleave with another worker's.
const fn claim_deliveries_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => {
            "WITH due AS MATERIALIZED ( \
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
             ORDER BY claimed.id"
        }
        Dialect::Sqlite => {
            "WITH due AS ( \
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
             RETURNING id"
        }
    }
}

/// The messages leased by SQLite's [`claim_deliveries_sql`] (`$1`, a list of ids) with their
/// endpoints and events.
const CLAIMED: &str = "SELECT m.id AS message_id, m.attempts, \
         e.id, e.firm_id, e.url, e.description, e.event_types, e.secret, e.previous_secret, \
         e.previous_secret_expires_at, e.disabled_at, e.created_at, \
         0 AS txid, n.id AS sequence, n.event_id, n.customer_id, n.message, n.state, n.occurred_at \
     FROM webhook_messages AS m JOIN webhook_endpoints AS e ON e.id = m.endpoint_id \
     JOIN notifications AS n ON n.id = m.notification_id \
     WHERE m.id IN (SELECT value FROM json_each($1)) ORDER BY m.id";

fn queued_from_row(row: &impl Columns) -> Result<QueuedDelivery, InfrastructureError> {
    Ok(QueuedDelivery {
        id: row.int("message_id")?,
        endpoint: endpoint_from_row(row)?,
        event: event_from_row(row)?,
        attempts: fit(row.int("attempts")?)?,
    })
}

/// Leases up to `limit` due messages until `lease_until`, at most `per_endpoint` leased per
/// endpoint at once, oldest due first.
///
/// # Errors
/// [`InfrastructureError`] when the database fails or a row does not read.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
pub async fn claim_deliveries<E: Engine>(
    engine: &E,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
    limit: u32,
    per_endpoint: u32,
) -> Result<Vec<QueuedDelivery>, InfrastructureError> {
    let lease = Statement::new(claim_deliveries_sql(E::DIALECT))
        .time(now)
        .time(lease_until)
        .int(i64::from(limit))
        .int(i64::from(per_endpoint));
    let rows = match E::DIALECT {
        // Planned for each call's own values, never from a cached generic plan: with the lease
        // times as unknowns a generic plan cannot see that few rows are due, and took a hundred
        // times longer under load. (SQLite plans once and keeps the prepared statement.)
        Dialect::Postgres => engine
            .execute_returning(lease.planned_each_run())
            .await
            .map_err(infra)?,
        Dialect::Sqlite => {
            let mut tx = engine.begin_write().await?;
            let ids = tx
                .fetch_all(lease)
                .await
                .map_err(infra)?
                .iter()
                .map(|row| row.int("id"))
                .collect::<Result<Vec<_>, _>>()?;
            let rows = if ids.is_empty() {
                Vec::new()
            } else {
                let claimed = Statement::new(CLAIMED).arg(Arg::IntList(ids));
                tx.fetch_all(claimed).await.map_err(infra)?
            };
            tx.commit().await.map_err(infra)?;
            rows
        }
    };
    rows.iter().map(queued_from_row).collect()
}

/// The oldest unfinished message of the chain of `endpoint` and `customer` (SQL expressions),
/// read on PostgreSQL with a share lock. A delivery finishing that message holds its row until it
/// commits, so a save reading the chain waits for it and then sees it finished (and skips on to
/// the next unfinished one); a delivery finishing after this read waits for the save and then
/// sees the save's message when it passes the head on. Either way exactly one message of a chain
/// is its head. (SQLite's writes are serial, so there nothing can cross.)
///
/// Ordered by the columns of `webhook_messages_chain_idx`, which only that index provides: a
/// planner that believes the table tiny would otherwise walk the primary key in id order and
/// filter every row.
#[must_use]
pub fn chain_busy(endpoint: &str, customer: &str) -> String {
    format!(
        "SELECT chain.id FROM webhook_messages AS chain \
         WHERE chain.endpoint_id = {endpoint} AND chain.customer_id = {customer} \
         AND chain.delivered_at IS NULL AND chain.failed_at IS NULL \
         ORDER BY chain.endpoint_id, chain.customer_id, chain.id LIMIT 1 FOR SHARE OF chain"
    )
}

/// Queues the firm's event `event` again for its endpoint, due at `at`, behind that customer's
/// other messages; `false` when the endpoint (not deleted) or the event is not the firm's, or the
/// endpoint never had the event queued.
///
/// # Errors
/// [`InfrastructureError`] when the database fails.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
pub async fn replay<E: Engine>(
    engine: &E,
    firm: FirmId,
    endpoint: WebhookEndpointId,
    event: Uuid,
    at: OffsetDateTime,
) -> Result<bool, InfrastructureError> {
    let busy = match E::DIALECT {
        Dialect::Postgres => format!(
            "busy.id IS NULL FROM notifications AS n \
             JOIN webhook_endpoints AS e ON e.firm_id = n.firm_id AND e.id = $2 AND e.deleted_at IS NULL \
             LEFT JOIN LATERAL ({}) AS busy ON true",
            chain_busy("e.id", "n.customer_id")
        ),
        Dialect::Sqlite => "NOT EXISTS ( \
                 SELECT 1 FROM webhook_messages AS chain WHERE chain.endpoint_id = e.id \
                 AND chain.customer_id = n.customer_id AND chain.delivered_at IS NULL AND chain.failed_at IS NULL) \
             FROM notifications AS n \
             JOIN webhook_endpoints AS e ON e.firm_id = n.firm_id AND e.id = $2 AND e.deleted_at IS NULL"
            .to_owned(),
    };
    let statement = Statement::new(format!(
        "INSERT INTO webhook_messages (firm_id, endpoint_id, customer_id, notification_id, next_attempt_at, head) \
         SELECT n.firm_id, e.id, n.customer_id, n.id, $4, e.disabled_at IS NULL AND {busy} \
         WHERE n.firm_id = $1 AND n.event_id = $3 \
         AND EXISTS (SELECT 1 FROM webhook_messages AS m WHERE m.endpoint_id = e.id AND m.notification_id = n.id)"
    ))
    .id(firm.as_uuid())
    .id(endpoint.as_uuid())
    .id(event)
    .time(at);
    Ok(engine.execute(statement).await.map_err(infra)? == 1)
}

/// Implements `EventFeed` and `DeliveryQueue` for an adapter that implements [`Engine`] and has
/// an inherent `finish_batch(&self, &[FinishedDelivery])` applying ended attempts in one
/// transaction (where the databases batch differently).
#[macro_export]
macro_rules! delivery_queue {
    ($store:ty) => {
        #[$crate::reexport::async_trait]
        impl ::kyc_domain::ports::EventFeed for $store {
            async fn read_events(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                after: Option<::kyc_domain::ports::FeedPosition>,
                limit: u32,
            ) -> Result<Vec<::kyc_domain::ports::FeedEvent>, ::kyc_domain::ports::InfrastructureError>
            {
                $crate::deliveries::read_events(self, firm, after, limit).await
            }
        }

        #[$crate::reexport::async_trait]
        impl ::kyc_domain::ports::DeliveryQueue for $store {
            async fn claim_deliveries(
                &self,
                now: ::time::OffsetDateTime,
                lease_until: ::time::OffsetDateTime,
                limit: u32,
                per_endpoint: u32,
            ) -> Result<
                Vec<::kyc_domain::ports::QueuedDelivery>,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::deliveries::claim_deliveries(self, now, lease_until, limit, per_endpoint)
                    .await
            }

            async fn finish_delivery(
                &self,
                id: i64,
                attempt: &::kyc_domain::ports::WebhookDelivery,
                outcome: ::kyc_domain::ports::DeliveryOutcome,
            ) -> Result<(), ::kyc_domain::ports::InfrastructureError> {
                self.finish_batch(&[::kyc_domain::ports::FinishedDelivery {
                    id,
                    attempt: attempt.clone(),
                    outcome,
                }])
                .await
            }

            async fn finish_deliveries(
                &self,
                finished: &[::kyc_domain::ports::FinishedDelivery],
            ) -> Result<(), ::kyc_domain::ports::InfrastructureError> {
                self.finish_batch(finished).await
            }

            async fn replay(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                endpoint: ::kyc_domain::ports::WebhookEndpointId,
                event: ::uuid::Uuid,
                at: ::time::OffsetDateTime,
            ) -> Result<bool, ::kyc_domain::ports::InfrastructureError> {
                $crate::deliveries::replay(self, firm, endpoint, event, at).await
            }
        }
    };
}
