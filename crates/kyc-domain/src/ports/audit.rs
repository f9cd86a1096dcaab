//! Reading the audit trail back: one customer's history, a firm's full export, and the event feed
//! a CRM polls. The log is written only by [`CustomerStore`](super::CustomerStore) and never
//! changed.

use async_trait::async_trait;

use super::InfrastructureError;
use crate::events::DomainEvent;
use crate::ids::{CustomerId, EventId, FirmId};
use crate::provider::ProviderEventKey;

/// One stored audit event with where it sits in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its position in the log: increases with insertion, the cursor of walks.
    pub sequence: i64,
    /// Its id.
    pub id: EventId,
    /// The firm.
    pub firm_id: FirmId,
    /// The customer.
    pub customer_id: CustomerId,
    /// The event as recorded.
    pub event: DomainEvent,
    /// The provider event that caused it, when one did.
    pub provider_event_key: Option<ProviderEventKey>,
}

/// Reading the audit trail.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Every event of the firm's customer, oldest first; empty for another firm's customer.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn customer_trail(
        &self,
        firm: FirmId,
        customer: CustomerId,
    ) -> Result<Vec<AuditEntry>, InfrastructureError>;

    /// Up to `limit` of the firm's events after `after` (a [`AuditEntry::sequence`], exclusive),
    /// in log order: page through it for a full export.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn firm_export(
        &self,
        firm: FirmId,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, InfrastructureError>;
}
