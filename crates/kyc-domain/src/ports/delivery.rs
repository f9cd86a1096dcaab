//! Getting changes out: the outbox written with each save, the firms' webhook endpoints, and the
//! log of every delivery attempt made to them.

use std::fmt;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::InfrastructureError;
use crate::customer::Customer;
use crate::events::{NotificationType, OutboxMessage};
use crate::ids::{CustomerId, FirmId};
use crate::status::{AmlStatus, KycStatus};

/// A firm's webhook endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WebhookEndpointId(Uuid);

impl WebhookEndpointId {
    /// Wraps a generated or stored UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID inside.
    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for WebhookEndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a firm wants its notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// Id.
    pub id: WebhookEndpointId,
    /// The firm.
    pub firm_id: FirmId,
    /// The HTTPS URL to POST to.
    pub url: String,
    /// A note from the firm's admin.
    pub description: Option<String>,
    /// The notification types it wants (`customer.kyc_status_changed`…); empty means all.
    pub event_types: Vec<String>,
    /// The signing secret (Standard Webhooks `whsec_…`).
    pub secret: String,
    /// The secret it replaced, still signing beside it until `previous_secret_expires_at`.
    pub previous_secret: Option<String>,
    /// When the replaced secret stops signing.
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    /// When it was disabled (by its admin, or by a `410 Gone`), if it was.
    pub disabled_at: Option<OffsetDateTime>,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// One attempt to deliver one message to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// The endpoint.
    pub endpoint_id: WebhookEndpointId,
    /// The firm.
    pub firm_id: FirmId,
    /// The Standard Webhooks `webhook-id` of the message.
    pub message_id: String,
    /// The notification type.
    pub event_type: String,
    /// 1 for the first try.
    pub attempt: u32,
    /// When the request was sent.
    pub attempted_at: OffsetDateTime,
    /// The HTTP status received, if any.
    pub response_status: Option<u16>,
    /// Why it failed, if it did (timeout, connection refused…).
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

impl WebhookEndpoint {
    /// Whether it wants notifications of this type (no types: all).
    pub fn wants(&self, notification: NotificationType) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == notification.as_str())
    }

    /// The secrets that sign a message sent at `at`: the current one, and the replaced one while
    /// its overlap lasts.
    pub fn signing_secrets(&self, at: OffsetDateTime) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) =
            (&self.previous_secret, self.previous_secret_expires_at)
            && at < until
        {
            secrets.push(previous.as_str());
        }
        secrets
    }
}

/// Storage of webhook endpoints and their delivery log.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores a new endpoint.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn create_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), InfrastructureError>;

    /// The firm's endpoints, oldest first, disabled ones included.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn list_endpoints(
        &self,
        firm: FirmId,
    ) -> Result<Vec<WebhookEndpoint>, InfrastructureError>;

    /// The firm's endpoint with this id.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn get_endpoint(
        &self,
        firm: FirmId,
        id: WebhookEndpointId,
    ) -> Result<Option<WebhookEndpoint>, InfrastructureError>;

    /// Disables the firm's endpoint at `at`. Returns `false` for an unknown endpoint, another
    /// firm's, or one already disabled.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn disable_endpoint(
        &self,
        firm: FirmId,
        id: WebhookEndpointId,
        at: OffsetDateTime,
    ) -> Result<bool, InfrastructureError>;

    /// Rewrites the firm's endpoint (url, description, types, secrets, `disabled_at`) with
    /// `endpoint`'s fields. Returns `false` for an unknown or deleted endpoint, or another firm's.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn update_endpoint(
        &self,
        endpoint: &WebhookEndpoint,
    ) -> Result<bool, InfrastructureError>;

    /// Deletes the firm's endpoint at `at`: it is no longer listed, found or delivered to, and
    /// its pending messages are dropped; its delivery log is kept. Returns `false` for an
    /// unknown endpoint, another firm's, or one already deleted.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn delete_endpoint(
        &self,
        firm: FirmId,
        id: WebhookEndpointId,
        at: OffsetDateTime,
    ) -> Result<bool, InfrastructureError>;

    /// Appends one delivery attempt to the log.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn record_delivery(&self, delivery: &WebhookDelivery) -> Result<(), InfrastructureError>;

    /// The newest `limit` delivery attempts to the firm's endpoint, newest first.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn list_deliveries(
        &self,
        firm: FirmId,
        endpoint: WebhookEndpointId,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, InfrastructureError>;
}

/// A position in a firm's event feed: after the event at it. Positions increase in the order
/// events become visible (commit order), so a reader that resumes after the last position it saw
/// misses nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedPosition {
    /// The writing transaction's place (on PostgreSQL its id; 0 where writes are serial).
    pub transaction: i64,
    /// The event's own sequence number.
    pub sequence: i64,
}

/// One notification, as the event feed and the webhooks carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEvent {
    /// Where it is in the feed.
    pub position: FeedPosition,
    /// Its id: the Standard Webhooks `webhook-id` of every delivery of it.
    pub id: Uuid,
    /// The firm.
    pub firm_id: FirmId,
    /// The customer.
    pub customer_id: CustomerId,
    /// What happened.
    pub notification: NotificationType,
    /// The KYC status before, where it changed.
    pub previous_kyc_status: Option<KycStatus>,
    /// The AML status before, where it changed.
    pub previous_aml_status: Option<AmlStatus>,
    /// The customer as the change left it.
    pub customer: Customer,
    /// When the change was saved.
    pub occurred_at: OffsetDateTime,
}

/// The firms' event feeds: every notification written with the change that caused it (see
/// [`CustomerStore::save`](super::CustomerStore::save)).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait EventFeed: Send + Sync {
    /// Up to `limit` of the firm's events after `after` (from the first without it), in feed
    /// order. Only events whose position can no longer be preceded by one still being written
    /// are returned, so a later read after the last position returned never skips one.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn read_events(
        &self,
        firm: FirmId,
        after: Option<FeedPosition>,
        limit: u32,
    ) -> Result<Vec<FeedEvent>, InfrastructureError>;
}

/// One message leased to a delivery worker: an event for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedDelivery {
    /// Its place in the delivery queue.
    pub id: i64,
    /// Where it goes.
    pub endpoint: WebhookEndpoint,
    /// What it carries.
    pub event: FeedEvent,
    /// How many attempts were made before.
    pub attempts: u32,
}

/// One attempt to finish: the leased message, the attempt for the log, and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedDelivery {
    /// The message ([`QueuedDelivery::id`]).
    pub id: i64,
    /// The attempt, as the endpoint's log keeps it.
    pub attempt: WebhookDelivery,
    /// How it ended.
    pub outcome: DeliveryOutcome,
}

/// How one attempt ended, for the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// A 2xx: never sent again.
    Delivered,
    /// Try again at this time.
    RetryAt(OffsetDateTime),
    /// The retry schedule is spent: kept as failed, sent again only by a replay.
    GaveUp,
    /// The receiver answered `410 Gone`: the endpoint is disabled (its messages wait).
    Gone,
}

/// The webhook delivery queue: one message per event and endpoint that wants it, written with
/// the change, leased to workers.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait DeliveryQueue: Send + Sync {
    /// Leases up to `limit` due messages until `lease_until`. Only the oldest unfinished message
    /// of each (endpoint, customer) is handed out, so a customer's messages reach an endpoint in
    /// order; no endpoint gets more than `per_endpoint` leased at once, so one slow endpoint
    /// cannot take every worker; messages of disabled or deleted endpoints wait. Concurrent
    /// workers (several servers) get disjoint batches; a message whose lease ran out (its worker
    /// died mid-send) is handed out again.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
        per_endpoint: u32,
    ) -> Result<Vec<QueuedDelivery>, InfrastructureError>;

    /// Records the attempt in the endpoint's log and applies its outcome to the message (and,
    /// for [`DeliveryOutcome::Gone`], disables the endpoint), in one transaction.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn finish_delivery(
        &self,
        id: i64,
        attempt: &WebhookDelivery,
        outcome: DeliveryOutcome,
    ) -> Result<(), InfrastructureError>;

    /// Finishes several attempts, as [`DeliveryQueue::finish_delivery`] does each: a store that
    /// can apply them together in one transaction overrides this; the default finishes them one
    /// by one.
    ///
    /// # Errors
    /// [`InfrastructureError`] only; attempts finished before the failure stay finished, the
    /// others' messages are handed out again when their leases run out.
    async fn finish_deliveries(
        &self,
        finished: &[FinishedDelivery],
    ) -> Result<(), InfrastructureError> {
        for one in finished {
            self.finish_delivery(one.id, &one.attempt, one.outcome)
                .await?;
        }
        Ok(())
    }

    /// Queues the firm's event `event` again for its endpoint, due at `at`, behind that
    /// customer's other messages. Returns `false` when the endpoint (not deleted) or the event
    /// is not the firm's, or the endpoint never had the event queued.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn replay(
        &self,
        firm: FirmId,
        endpoint: WebhookEndpointId,
        event: Uuid,
        at: OffsetDateTime,
    ) -> Result<bool, InfrastructureError>;
}

/// One outbox row handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Its position in the outbox; increases with insertion.
    pub id: i64,
    /// The work.
    pub message: OutboxMessage,
    /// When the change that caused it was saved.
    pub created_at: OffsetDateTime,
    /// How many times it was tried before.
    pub attempts: u32,
}

/// The outbox: work written in the same transaction as the change that caused it (see
/// [`CustomerStore::save`](super::CustomerStore::save)), handed to workers at least once.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Leases up to `limit` due, undelivered entries until `lease_until`, oldest first. Concurrent
    /// workers get disjoint batches; an entry whose lease ran out (its worker died) is handed out
    /// again.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn claim_batch(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, InfrastructureError>;

    /// Marks the entry done; it is never handed out again.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn mark_delivered(&self, id: i64, at: OffsetDateTime) -> Result<(), InfrastructureError>;

    /// Marks every entry of `ids` done, as [`OutboxStore::mark_delivered`] does one. A store that
    /// can do it in one statement overrides this; the default marks them one by one.
    ///
    /// # Errors
    /// [`InfrastructureError`] only; entries marked before the failure stay marked, the others
    /// are handed out again when their lease runs out.
    async fn mark_all_delivered(
        &self,
        ids: &[i64],
        at: OffsetDateTime,
    ) -> Result<(), InfrastructureError> {
        for id in ids {
            self.mark_delivered(*id, at).await?;
        }
        Ok(())
    }

    /// Gives the entry back for another try at `next_attempt_at`, counting one more attempt.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn schedule_retry(
        &self,
        id: i64,
        next_attempt_at: OffsetDateTime,
        error: &str,
    ) -> Result<(), InfrastructureError>;
}
