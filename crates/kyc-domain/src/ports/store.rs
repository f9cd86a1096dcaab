//! Customer storage: the aggregate, its audit events and its outbox messages, saved atomically.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::InfrastructureError;
use crate::customer::Customer;
use crate::events::{DomainEvent, OutboxMessage};
use crate::ids::{ApplicantId, CustomerId, ExternalUserId, FirmId};
use crate::provider::{ProviderEvent, ProviderEventKey};
use crate::status::{AmlStatus, KycStatus};
use crate::values::{Email, ExternalId};

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Someone saved this customer since it was loaded (`customer.version` is stale). Reload and
    /// decide again.
    #[error("the customer was changed by someone else; reload and retry")]
    VersionConflict,
    /// Another customer of the firm already has this external id (or a concurrent insert won).
    #[error("another customer of the firm already has this externalId")]
    DuplicateExternalId,
    /// The provider event passed as `inbound` was already recorded: a second delivery.
    #[error("this provider event was already recorded")]
    DuplicateInbound,
    /// Infrastructure failure; nothing was written.
    #[error(transparent)]
    Infrastructure(#[from] InfrastructureError),
}

/// The CRM list filters (all optional, combined with AND).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomerFilter {
    /// `status`
    pub kyc_status: Option<KycStatus>,
    /// `aml_status`
    pub aml_status: Option<AmlStatus>,
    /// `updated_since`: only customers updated strictly after this time.
    pub updated_since: Option<OffsetDateTime>,
    /// `external_id`
    pub external_id: Option<ExternalId>,
}

impl CustomerFilter {
    /// The order a walk with this filter follows. Polling with `updated_since` walks by
    /// `(updated_at, id)`, so a CRM that keeps the largest `updated_at` it saw as its watermark
    /// misses nothing; a plain list walks by `(created_at, id)`, which no update can reorder.
    pub fn order(&self) -> ListOrder {
        if self.updated_since.is_some() {
            ListOrder::UpdatedAt
        } else {
            ListOrder::CreatedAt
        }
    }
}

/// The order of a customer walk; both ascending with the id as tie-breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListOrder {
    /// `(created_at, id)`
    CreatedAt,
    /// `(updated_at, id)`
    UpdatedAt,
}

/// A position in a walk: the sort key and id of the last customer returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagePosition {
    /// `created_at` or `updated_at` of the last customer, by the walk's order.
    pub sort_key: OffsetDateTime,
    /// Its id.
    pub id: CustomerId,
}

/// One page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Filters.
    pub filter: CustomerFilter,
    /// Resume after this position (exclusive).
    pub after: Option<PagePosition>,
    /// Page size, 1–100.
    pub limit: u32,
    /// Also count every customer matching the filter.
    pub include_total: bool,
}

/// One page of customers.
#[derive(Debug, Clone)]
pub struct CustomerPage {
    /// The customers, in the walk's order.
    pub customers: Vec<Customer>,
    /// Whether more follow.
    pub has_more: bool,
    /// The number matching the filter, when asked.
    pub total: Option<u64>,
}

/// Where a provider event belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLocation {
    /// The firm.
    pub firm_id: FirmId,
    /// The customer.
    pub customer_id: CustomerId,
}

/// Storage of customers.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait CustomerStore: Send + Sync {
    /// Stores a new customer (version 0) with its events and outbox messages, atomically. Returns
    /// the stored version (1).
    ///
    /// # Errors
    /// [`SaveError::DuplicateExternalId`] when the firm already has a customer with this external
    /// id, including one inserted concurrently; [`SaveError::Infrastructure`] otherwise. On error
    /// nothing is written.
    async fn insert(
        &self,
        customer: &Customer,
        events: &[DomainEvent],
        outbox: &[OutboxMessage],
    ) -> Result<u64, SaveError>;

    /// Saves the customer if it is still at `customer.version`, with its events and outbox
    /// messages, atomically; when `inbound` is given, also records that provider event as seen in
    /// the same transaction. Returns the new version (`customer.version + 1`).
    ///
    /// # Errors
    /// [`SaveError::VersionConflict`] when the stored version differs;
    /// [`SaveError::DuplicateInbound`] when `inbound` was already recorded;
    /// [`SaveError::DuplicateExternalId`] when an adopted external id is taken;
    /// [`SaveError::Infrastructure`] otherwise. On error nothing is written.
    async fn save<'a>(
        &self,
        customer: &Customer,
        events: &[DomainEvent],
        outbox: &[OutboxMessage],
        inbound: Option<&'a ProviderEventKey>,
    ) -> Result<u64, SaveError>;

    /// The firm's customer with this id; `None` for an unknown id or another firm's.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn get(
        &self,
        firm: FirmId,
        id: CustomerId,
    ) -> Result<Option<Customer>, InfrastructureError>;

    /// The firm's customer with this external id.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn get_by_external_id(
        &self,
        firm: FirmId,
        external_id: &ExternalId,
    ) -> Result<Option<Customer>, InfrastructureError>;

    /// The firm's oldest customer with this email, compared case-insensitively.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn find_by_email(
        &self,
        firm: FirmId,
        email: &Email,
    ) -> Result<Option<Customer>, InfrastructureError>;

    /// One page of the firm's customers matching the query, in [`CustomerFilter::order`].
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn list(
        &self,
        firm: FirmId,
        query: &ListQuery,
    ) -> Result<CustomerPage, InfrastructureError>;

    /// The customer owning the attempt with this applicant id or external user id, in any firm
    /// (provider events carry no firm).
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn locate_attempt<'a>(
        &self,
        applicant_id: Option<&'a ApplicantId>,
        external_user_id: Option<&'a ExternalUserId>,
    ) -> Result<Option<AttemptLocation>, InfrastructureError>;

    /// Whether this provider event was already recorded (as applied, ignored or orphaned).
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn provider_event_seen(
        &self,
        key: &ProviderEventKey,
    ) -> Result<bool, InfrastructureError>;

    /// Records a provider event that belongs to no known attempt (orphaned). Returns `false` when
    /// it was already recorded.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn record_orphan_event(&self, event: &ProviderEvent)
    -> Result<bool, InfrastructureError>;

    /// Customers with an attempt in `Starting` claimed before `claimed_before`: work for the
    /// recovery worker. Adapters may lease the rows so that concurrent workers get disjoint sets.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn stuck_attempts(
        &self,
        claimed_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<AttemptLocation>, InfrastructureError>;
}
