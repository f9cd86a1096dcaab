//! What the aggregate records: immutable audit events (who, what from → to, when, why) and the
//! outbox messages derived from them (outbound notifications and follow-up work).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::aml::{AmlDecision, Disposition, HitKey, HitSource};
use crate::ids::{ApiKeyId, ApplicantId, AttemptNumber, CustomerId, FirmId, UserId};
use crate::provider::ProviderEventKey;
use crate::risk::{RiskAnswers, RiskRating};
use crate::status::{AmlStatus, KycStatus};
use crate::values::{AddedVia, Credits, Email};

/// A back-office role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Answers risk questions, starts verification.
    Staff,
    /// Everything staff do, plus AML review, decisions and restarts.
    ComplianceOfficer,
    /// Manages the firm's users and API keys.
    Admin,
}

impl Role {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Staff => "staff",
            Self::ComplianceOfficer => "compliance_officer",
            Self::Admin => "admin",
        }
    }

    /// Parses the contract's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "staff" => Some(Self::Staff),
            "compliance_officer" => Some(Self::ComplianceOfficer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// Whether this role may do the work of the back office: create customers, confirm risk
    /// answers and start the billable verification.
    pub const fn is_staff_or_above(self) -> bool {
        match self {
            Self::Staff | Self::ComplianceOfficer => true,
            Self::Admin => false,
        }
    }

    /// Whether this role may review AML hits, record decisions and restart a failed verification.
    pub const fn is_compliance_officer(self) -> bool {
        match self {
            Self::ComplianceOfficer => true,
            Self::Staff | Self::Admin => false,
        }
    }
}

/// A logged-in person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Their user id.
    pub id: UserId,
    /// Their login.
    pub email: Email,
    /// Their role.
    pub role: Role,
}

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// A CRM, through an API key.
    ApiKey {
        /// The key's id.
        id: ApiKeyId,
        /// The key's label.
        label: String,
    },
    /// A person in the back office.
    Person(Person),
    /// The identity provider, through one of its events.
    Provider {
        /// The event.
        event_key: ProviderEventKey,
    },
    /// The firm's customer, opening the verification link.
    Customer,
    /// A background worker of this service.
    System {
        /// Which worker.
        worker: String,
    },
}

impl Actor {
    /// The system actor for a named worker.
    pub fn system(worker: &str) -> Self {
        Self::System {
            worker: worker.to_owned(),
        }
    }
}

/// What happened to a provider event that reached a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    /// It is the newest status-bearing event of its attempt and set the status.
    Applied,
    /// Older than the newest status-bearing event already applied: kept, changed nothing.
    IgnoredOlder,
    /// It bears no status (created, personal info changed, unknown types…).
    NoStatus,
    /// Its attempt is closed (restarted) or was never opened: kept, changed nothing.
    AttemptNotOpen,
}

/// One change to a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// The record was created.
    CustomerCreated {
        /// How it came in.
        added_via: AddedVia,
    },
    /// A contact field changed.
    ContactUpdated {
        /// The contract's name of the field.
        field: String,
        /// The old value.
        from: Option<String>,
        /// The new value.
        to: Option<String>,
    },
    /// Answers proposed over the API.
    RiskProposed {
        /// The proposal.
        answers: RiskAnswers,
    },
    /// Answers confirmed by a person.
    RiskConfirmed {
        /// The answers.
        answers: RiskAnswers,
        /// The rating they give.
        rating: RiskRating,
    },
    /// `kyc_status` moved.
    KycStatusChanged {
        /// Before.
        from: KycStatus,
        /// After.
        to: KycStatus,
        /// The attempt it happened in, if any.
        attempt: Option<AttemptNumber>,
    },
    /// `aml.status` moved.
    AmlStatusChanged {
        /// Before.
        from: AmlStatus,
        /// After.
        to: AmlStatus,
    },
    /// Start Verification claimed an attempt and its credits are being held.
    VerificationStarting {
        /// The attempt.
        attempt: AttemptNumber,
        /// The price confirmed by the person.
        cost: Credits,
        /// The provider level chosen by risk.
        level_name: String,
    },
    /// The applicant exists and the charge is final.
    VerificationStarted {
        /// The attempt.
        attempt: AttemptNumber,
        /// The provider's applicant.
        applicant_id: ApplicantId,
    },
    /// The attempt could not start; its hold is released.
    VerificationAbandoned {
        /// The attempt.
        attempt: AttemptNumber,
        /// Why.
        reason: String,
    },
    /// The customer opened the verification link.
    LinkOpened {
        /// The attempt.
        attempt: AttemptNumber,
    },
    /// A provider event reached this customer.
    ProviderEventRecorded {
        /// The attempt it was routed to.
        attempt: AttemptNumber,
        /// The provider's type name.
        event_type: String,
        /// The provider's creation time.
        #[serde(with = "crate::values::stored_time")]
        created_at: OffsetDateTime,
        /// What it did.
        outcome: EventOutcome,
    },
    /// New AML hits joined the hit list.
    AmlHitsAdded {
        /// Their keys.
        hits: Vec<HitKey>,
        /// From a verdict or a screening.
        source: HitSource,
    },
    /// A compliance officer set a disposition.
    HitDispositionSet {
        /// The hit.
        hit: HitKey,
        /// The disposition.
        disposition: Disposition,
    },
    /// A compliance officer recorded the final decision.
    AmlDecisionRecorded {
        /// Proceed or decline.
        decision: AmlDecision,
    },
    /// A compliance officer closed a failed attempt so a new one can start.
    AttemptClosed {
        /// The closed attempt.
        attempt: AttemptNumber,
    },
    /// Screening finished.
    ScreeningFinished {
        /// How many hits the screening returned.
        hits_returned: usize,
    },
    /// The provider's verified identity summary was stored.
    IdentityCaptured,
}

/// One immutable entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainEvent {
    /// When.
    #[serde(with = "crate::values::stored_time")]
    pub at: OffsetDateTime,
    /// Who.
    pub actor: Actor,
    /// What.
    pub change: Change,
    /// Why, where a person acted.
    pub note: Option<String>,
}

/// The outbound notification types (Standard Webhooks `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NotificationType {
    /// `customer.created`
    #[serde(rename = "customer.created")]
    Created,
    /// `customer.updated`
    #[serde(rename = "customer.updated")]
    Updated,
    /// `customer.kyc_status_changed`
    #[serde(rename = "customer.kyc_status_changed")]
    KycStatusChanged,
    /// `customer.aml_status_changed`
    #[serde(rename = "customer.aml_status_changed")]
    AmlStatusChanged,
}

impl NotificationType {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "customer.created",
            Self::Updated => "customer.updated",
            Self::KycStatusChanged => "customer.kyc_status_changed",
            Self::AmlStatusChanged => "customer.aml_status_changed",
        }
    }
}

/// Work written to the outbox in the same transaction as the change that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutboxMessage {
    /// Tell the firm's CRM (webhooks and the event feed).
    Notify {
        /// The firm.
        firm_id: FirmId,
        /// The customer.
        customer_id: CustomerId,
        /// The notification type.
        notification: NotificationType,
        /// The status before, where it changed.
        previous_kyc_status: Option<KycStatus>,
        /// The AML status before, where it changed.
        previous_aml_status: Option<AmlStatus>,
    },
    /// Screen the customer (after `VERIFIED`, or on the re-screening cadence).
    RunScreening {
        /// The firm.
        firm_id: FirmId,
        /// The customer.
        customer_id: CustomerId,
    },
}

impl OutboxMessage {
    /// The notification type of a [`OutboxMessage::Notify`]; `None` for work the service does
    /// itself. A store queues a notification only for a firm with an endpoint that wants it (see
    /// [`CustomerStore::insert`](crate::ports::CustomerStore::insert)).
    pub const fn notification(&self) -> Option<NotificationType> {
        match self {
            Self::Notify { notification, .. } => Some(*notification),
            Self::RunScreening { .. } => None,
        }
    }
}

/// The outbox messages a batch of events calls for: one notification per status move, one
/// `customer.updated` for other visible changes, `customer.created` for a new record, and a
/// screening job when identity became verified.
pub fn outbox_for(
    firm_id: FirmId,
    customer_id: CustomerId,
    events: &[DomainEvent],
) -> Vec<OutboxMessage> {
    let notify = |notification, kyc, aml| OutboxMessage::Notify {
        firm_id,
        customer_id,
        notification,
        previous_kyc_status: kyc,
        previous_aml_status: aml,
    };
    let mut messages = Vec::new();
    let mut updated = false;
    let mut created = false;
    for event in events {
        match &event.change {
            Change::CustomerCreated { .. } => created = true,
            Change::KycStatusChanged { from, to, .. } => {
                messages.push(notify(
                    NotificationType::KycStatusChanged,
                    Some(*from),
                    None,
                ));
                if *to == KycStatus::Verified {
                    messages.push(OutboxMessage::RunScreening {
                        firm_id,
                        customer_id,
                    });
                }
            }
            Change::AmlStatusChanged { from, .. } => {
                messages.push(notify(
                    NotificationType::AmlStatusChanged,
                    None,
                    Some(*from),
                ));
            }
            Change::ContactUpdated { .. }
            | Change::RiskProposed { .. }
            | Change::RiskConfirmed { .. }
            | Change::IdentityCaptured
            | Change::AmlHitsAdded { .. }
            | Change::HitDispositionSet { .. }
            | Change::AmlDecisionRecorded { .. } => updated = true,
            Change::VerificationStarting { .. }
            | Change::VerificationStarted { .. }
            | Change::VerificationAbandoned { .. }
            | Change::LinkOpened { .. }
            | Change::ProviderEventRecorded { .. }
            | Change::AttemptClosed { .. }
            | Change::ScreeningFinished { .. } => {}
        }
    }
    if created {
        messages.insert(0, notify(NotificationType::Created, None, None));
    } else if updated && messages.is_empty() {
        messages.push(notify(NotificationType::Updated, None, None));
    }
    messages
}
