//! Getting changes out: the outbox written with each save, the firms' webhook endpoints, and the
//! log of every delivery attempt made to them.

use std::fmt;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::InfrastructureError;
use crate::events::OutboxMessage;
use crate::ids::FirmId;

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
    /// When it was disabled, if it was.
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
