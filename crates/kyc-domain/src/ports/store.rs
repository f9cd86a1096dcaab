//! Customer storage: the aggregate, its audit events and its outbox messages, saved atomically.

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};

use super::InfrastructureError;
use crate::customer::Customer;
use crate::events::{DomainEvent, OutboxMessage};
use crate::ids::{ApplicantId, AttemptNumber, CustomerId, ExternalUserId, FirmId};
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
    /// The most recently changed customers first, as the back office lists them. The CRM API
    /// never sets it; `updated_since` wins when both are set, because a poll must walk forward.
    pub newest_first: bool,
}

impl CustomerFilter {
    /// The order a walk with this filter follows. Polling with `updated_since` walks by
    /// `(updated_at, id)`, so a CRM that keeps the largest `updated_at` it saw as its watermark
    /// misses nothing; a plain list walks by `(created_at, id)`, which no update can reorder;
    /// `newest_first` (without `updated_since`) walks by `(updated_at, id)` descending.
    pub fn order(&self) -> ListOrder {
        if self.updated_since.is_some() {
            ListOrder::UpdatedAt
        } else if self.newest_first {
            ListOrder::UpdatedAtDesc
        } else {
            ListOrder::CreatedAt
        }
    }
}

/// The order of a customer walk, with the id as tie-breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListOrder {
    /// `(created_at, id)` ascending.
    CreatedAt,
    /// `(updated_at, id)` ascending.
    UpdatedAt,
    /// `(updated_at, id)` descending: the newest change first. A customer changed while a
    /// person pages moves to the front, behind where they are, so a walk never shows it twice
    /// (and shows its change only if it starts again).
    UpdatedAtDesc,
}

impl ListOrder {
    /// The customer's key in this order: the `sort_key` of a [`PagePosition`] after it.
    pub fn sort_key(self, customer: &Customer) -> OffsetDateTime {
        match self {
            Self::CreatedAt => customer.created_at,
            Self::UpdatedAt | Self::UpdatedAtDesc => customer.updated_at,
        }
    }

    /// Whether the walk goes from the largest key to the smallest. A position after `(k, id)`
    /// then means the customers with `(sort key, id) < (k, id)`.
    pub const fn is_descending(self) -> bool {
        match self {
            Self::CreatedAt | Self::UpdatedAt => false,
            Self::UpdatedAtDesc => true,
        }
    }
}

/// A position in a walk: the sort key and id of the last customer returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagePosition {
    /// `created_at` or `updated_at` of the last customer, by the walk's order
    /// ([`ListOrder::sort_key`]).
    pub sort_key: OffsetDateTime,
    /// Its id.
    pub id: CustomerId,
}

impl PagePosition {
    /// The position just after `customer` in a walk in `order`.
    pub fn after(order: ListOrder, customer: &Customer) -> Self {
        Self {
            sort_key: order.sort_key(customer),
            id: customer.id,
        }
    }
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

/// A customer by firm and id: where a provider event belongs, or which customer a worker loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLocation {
    /// The firm.
    pub firm_id: FirmId,
    /// The customer.
    pub customer_id: CustomerId,
}

/// What an upsert decides from: the firm's customer with the input's external id and its oldest
/// customer with the input's email (API contract, `POST /customers`).
#[derive(Debug, Clone, Default)]
pub struct UpsertCandidates {
    /// The customer with this external id, when one was asked for and exists.
    pub by_external_id: Option<Customer>,
    /// The oldest customer with this email (compared case-insensitively). A store may leave it
    /// out when `by_external_id` was found: the upsert table does not look at it then.
    pub by_email: Option<Customer>,
}

/// What [`CustomerStore::insert_unless_matched`] did.
#[derive(Debug, Clone)]
pub enum InsertOrMatch {
    /// The firm had no customer with the external id or the email: the new one is stored.
    Inserted(Saved),
    /// It had: nothing was written, and these are the upsert's candidates (at least one found).
    Matched(UpsertCandidates),
}

/// [`CustomerStore::insert_unless_matched`] as two calls: the upsert's look-up, then the insert
/// when it found nothing. The method's default, for a store that overrides it to fall back on.
///
/// # Errors
/// As [`CustomerStore::insert_unless_matched`].
pub async fn insert_unless_matched_in_two_steps<S: CustomerStore + ?Sized>(
    store: &S,
    customer: &Customer,
    events: &[DomainEvent],
    outbox: &[OutboxMessage],
) -> Result<InsertOrMatch, SaveError> {
    let candidates = store
        .find_upsert_candidates(
            customer.firm_id,
            customer.external_id.as_ref(),
            &customer.email,
        )
        .await?;
    if candidates.by_external_id.is_some() || candidates.by_email.is_some() {
        return Ok(InsertOrMatch::Matched(candidates));
    }
    store
        .insert(customer, events, outbox)
        .await
        .map(InsertOrMatch::Inserted)
}

/// The attempt a verification link was issued for, found by the hash of its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkLocation {
    /// The firm.
    pub firm_id: FirmId,
    /// The customer.
    pub customer_id: CustomerId,
    /// The attempt whose `link_token_hash` matched.
    pub attempt: AttemptNumber,
}

/// How long [`CustomerStore::stuck_attempts`] keeps a returned attempt from every other caller.
/// Long enough for one recovery of an attempt (a provider call and two saves), short enough that
/// an attempt whose worker died is picked up again within a minute.
pub const RECOVERY_LEASE: Duration = Duration::seconds(60);

/// What a write of a customer recorded.
///
/// `at` is the time the store gave the change, the customer's `updated_at` from then on; a new
/// customer stored with nothing done to it since it was created (its `created_at` equal to its
/// `updated_at`) is also created at `at`, so the two stay equal. A store takes it so that a CRM polling with `updated_since` and
/// keeping the largest `updated_at` it has seen as its watermark misses no change: a change that
/// becomes visible after a list was read never carries an `updated_at` below what that list
/// could show (see [`CustomerStore::list`]). It is never before the `updated_at` the use case
/// gave the customer, nor before the customer's previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    /// The version the customer is now at.
    pub version: u64,
    /// When the store recorded the change.
    pub at: OffsetDateTime,
}

/// Storage of customers.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait CustomerStore: Send + Sync {
    /// Stores a new customer (version 0) with its events and outbox messages, atomically. Returns
    /// the stored version (1) and the time the store gave the customer as its `updated_at` (and its
    /// `created_at` when the two were equal, see [`Saved`]). The outbox messages fall due at the time of the move: the
    /// newest event's `at`, else `customer.updated_at`.
    ///
    /// A notification ([`OutboxMessage::Notify`]) is not queued as work: it is appended to the
    /// firm's event feed ([`EventFeed`](super::EventFeed)) with the customer as saved, and queued
    /// for delivery ([`DeliveryQueue`](super::DeliveryQueue)) to each of the firm's endpoints that,
    /// as the write runs, is enabled and wants its type (an endpoint with no types wants all), in
    /// the same transaction. Endpoints get notifications from the moment they are registered.
    /// Other messages are queued as work.
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
    ) -> Result<Saved, SaveError>;

    /// Saves the customer if it is still at `customer.version`, with its events and outbox
    /// messages, atomically; when `inbound` is given, also records that provider event as seen in
    /// the same transaction. Returns the new version (`customer.version + 1`) and the customer's
    /// new `updated_at` (see [`Saved`]). The outbox
    /// messages fall due, and `inbound` counts as recorded, at the time of the move, taken as
    /// [`CustomerStore::insert`] takes it; notifications are queued as it says.
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
    ) -> Result<Saved, SaveError>;

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

    /// Both lookups of an upsert: [`CustomerStore::get_by_external_id`] (when `external_id` is
    /// given) and [`CustomerStore::find_by_email`]. A store that can read both in one statement
    /// (one round trip, one snapshot) overrides this; the default makes the two calls, the second
    /// only when the first finds nothing.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn find_upsert_candidates<'a>(
        &self,
        firm: FirmId,
        external_id: Option<&'a ExternalId>,
        email: &'a Email,
    ) -> Result<UpsertCandidates, InfrastructureError> {
        let by_external_id = match external_id {
            Some(external) => self.get_by_external_id(firm, external).await?,
            None => None,
        };
        let by_email = if by_external_id.is_some() {
            None
        } else {
            self.find_by_email(firm, email).await?
        };
        Ok(UpsertCandidates {
            by_external_id,
            by_email,
        })
    }

    /// The create of an upsert, tried first: [`CustomerStore::find_upsert_candidates`] for the new
    /// customer's external id and email, then, when it finds neither, [`CustomerStore::insert`]
    /// of the customer with its events and outbox messages. A store that can do both in one
    /// statement (one round trip, the look-up and the write in one snapshot) overrides this; the
    /// default makes the two calls.
    ///
    /// # Errors
    /// As [`CustomerStore::insert`]: [`SaveError::DuplicateExternalId`] when a concurrent insert
    /// took the external id after the look-up; on error nothing is written.
    async fn insert_unless_matched(
        &self,
        customer: &Customer,
        events: &[DomainEvent],
        outbox: &[OutboxMessage],
    ) -> Result<InsertOrMatch, SaveError> {
        insert_unless_matched_in_two_steps(self, customer, events, outbox).await
    }

    /// One page of the firm's customers matching the query, in [`CustomerFilter::order`]: after
    /// `query.after` means past it in that order, so below it when the order is descending.
    ///
    /// A page filtered by `updated_since` leaves out any customer whose `updated_at` is not
    /// below the store's settled horizon: a time before which every change of the firm is
    /// visible. So a CRM that moves its watermark to the largest `updated_at` it has seen never
    /// passes a change that was still being written while it read; that change shows on its next
    /// poll. The horizon is at most the time the page was read, and only a change in flight at
    /// that moment holds it back.
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

    /// The customer owning the attempt with this applicant id or external user id, in any firm,
    /// loaded: [`CustomerStore::locate_attempt`] then [`CustomerStore::get`]. A store that can do
    /// both in one statement overrides this.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn find_by_attempt<'a>(
        &self,
        applicant_id: Option<&'a ApplicantId>,
        external_user_id: Option<&'a ExternalUserId>,
    ) -> Result<Option<Customer>, InfrastructureError> {
        match self.locate_attempt(applicant_id, external_user_id).await? {
            Some(location) => self.get(location.firm_id, location.customer_id).await,
            None => Ok(None),
        }
    }

    /// Records a provider event that belongs to no known attempt (orphaned). Returns `false` when
    /// it was already recorded.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn record_orphan_event(&self, event: &ProviderEvent)
    -> Result<bool, InfrastructureError>;

    /// The attempt whose verification link token hashes to `token_hash` (the attempt's
    /// `link_token_hash`), in any firm: the link carries nothing else.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn locate_link<'a>(
        &self,
        token_hash: &'a str,
    ) -> Result<Option<LinkLocation>, InfrastructureError>;

    /// Customers, in any firm, whose `kyc_status` is `VERIFIED` and whose
    /// `aml.next_screening_due` is at or before `now`: work for the re-screening worker, most
    /// overdue first, at most `limit`. Nothing is leased: a customer stays due until a save moves
    /// its `next_screening_due` past `now` (or its status away from `VERIFIED`), so concurrent
    /// workers may both see it and rely on optimistic saves.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn due_for_rescreening(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<AttemptLocation>, InfrastructureError>;

    /// Customers with an attempt in `Starting` claimed more than `older_than` before `now`,
    /// oldest claim first, at most `limit`: work for the recovery worker. Each attempt returned
    /// is leased to this caller until `now + RECOVERY_LEASE`, atomically with being chosen, so
    /// concurrent calls (on any number of replicas) get disjoint sets.
    ///
    /// The lease is measured on the caller's clock: an attempt returned by a call at `now = t` is
    /// returned again only by a call whose `now` is at or after `t + RECOVERY_LEASE`; the store
    /// reads no clock of its own. A lease ends only by running out: an attempt recovered in the
    /// meantime is simply no longer `Starting`.
    ///
    /// # Errors
    /// [`InfrastructureError`] only; on error nothing is leased.
    async fn stuck_attempts(
        &self,
        now: OffsetDateTime,
        older_than: Duration,
        limit: u32,
    ) -> Result<Vec<AttemptLocation>, InfrastructureError>;
}
