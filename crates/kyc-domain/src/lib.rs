//! # kyc-domain
//!
//! The pure core of the KYC/AML orchestration service: the customer lifecycle (`kyc_status` and
//! `aml.status`), the rules that decide what a CRM sees, risk rating, the billing rules of Start
//! Verification, the ports the adapters implement, and the use cases that drive them. No I/O lives
//! here: no runtime, no database driver, no HTTP.
//!
//! | Module | Holds |
//! |---|---|
//! | [`lifecycle`] | the moves of people and the link, as one exhaustive table |
//! | [`customer`] | the aggregate and every move, with its audit events |
//! | [`provider`] | provider-neutral events and the verdict table |
//! | [`crm`] | the derived `crm` block |
//! | [`risk`] | risk answers, rating, level, re-screening cadence |
//! | [`aml`] | hits, dispositions, decisions, flags |
//! | [`ports`] | the traits adapters implement |
//! | [`usecases`] | the orchestration, including the two-phase Start Verification |
//!
//! Driving the state machine directly, as an embedding team would:
//!
//! ```
//! use kyc_domain::prelude::*;
//! use time::macros::datetime;
//!
//! let now = datetime!(2026-07-01 09:00 UTC);
//! let firm = FirmId::from_uuid(uuid::Uuid::from_u128(1));
//! let officer = Person {
//!     id: UserId::from_uuid(uuid::Uuid::from_u128(2)),
//!     email: Email::new("officer@firm.example")?,
//!     role: Role::ComplianceOfficer,
//! };
//! let crm = Actor::system("example");
//! let (mut customer, _created) = Customer::create(
//!     CustomerId::from_uuid(uuid::Uuid::from_u128(3)),
//!     firm,
//!     NewCustomer {
//!         external_id: Some(ExternalId::new("crm-7741")?),
//!         full_name: FullName::new("Jane Doe")?,
//!         email: Email::new("jane@example.com")?,
//!         phone: None,
//!         customer_type: CustomerType::Individual,
//!     },
//!     AddedVia::Integration,
//!     &crm,
//!     now,
//! );
//! assert_eq!(customer.kyc_status, KycStatus::NotStarted);
//!
//! // A person confirms the risk answers and starts verification (phase 1 claims the attempt).
//! let answers = RiskAnswers { is_designated_service: true, handles_cash_or_crypto: false, is_new_customer: true };
//! customer.confirm_risk(answers, &officer, now)?;
//! let (attempt, _events) = customer.begin_verification(&officer, Credits::new(1), &ProviderLevels::default(), now)?;
//! // Phase 3: the applicant exists and the charge is posted.
//! customer.complete_verification(attempt, ApplicantId::new("5cb56e8e0a975a35f333cb83")?, "hash".into(), &Actor::system("example"), now)?;
//! assert_eq!(customer.kyc_status, KycStatus::Pending);
//!
//! // The provider approves.
//! let green = ProviderEvent {
//!     key: ProviderEventKey::new("evt-1"),
//!     applicant_id: None,
//!     external_user_id: None,
//!     created_at: datetime!(2026-07-01 09:10 UTC),
//!     kind: ProviderEventKind::Reviewed(ReviewVerdict { answer: ReviewAnswer::Green, reject_type: None, reject_labels: vec![] }),
//! };
//! customer.apply_provider_event(attempt, &green, now)?;
//! assert_eq!(customer.kyc_status, KycStatus::Verified);
//! assert_eq!(customer.crm().label, "Identity OK — AML screening pending.");
//!
//! // Screening finds nothing: the customer is cleared.
//! customer.start_screening(&crm, now)?;
//! customer.record_screening(vec![], &crm, now)?;
//! assert_eq!(customer.crm().label, "Cleared. Safe to onboard.");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod aml;
pub mod crm;
pub mod customer;
pub mod error;
pub mod events;
pub mod ids;
pub mod lifecycle;
pub mod ports;
pub mod provider;
pub mod risk;
pub mod status;
pub mod usecases;
pub mod values;

#[cfg(feature = "proptest")]
pub mod testkit;

/// The names most users need, in one import.
pub mod prelude {
    pub use crate::aml::{
        AmlCategory, AmlDecision, AmlHit, AmlState, Disposition, HitKey, HitSource,
    };
    pub use crate::crm::{CrmBlock, NextAction, Onboarding, crm_block};
    pub use crate::customer::{
        AttemptPhase, ContactUpdate, Customer, CustomerState, LinkOutcome, NewCustomer,
        VerificationAttempt, VerifiedIdentity,
    };
    pub use crate::error::{Action, LifecycleError};
    pub use crate::events::{
        Actor, Change, DomainEvent, EventOutcome, OutboxMessage, Person, Role,
    };
    pub use crate::ids::{
        ApiKeyId, ApplicantId, AttemptNumber, CustomerId, EventId, ExternalUserId, FirmId, UserId,
    };
    pub use crate::lifecycle::{PersonTrigger, person_move};
    pub use crate::provider::{
        ProviderEvent, ProviderEventKey, ProviderEventKind, RejectLabel, RejectType, ReviewAnswer,
        ReviewVerdict,
    };
    pub use crate::risk::{ProviderLevels, RiskAnswers, RiskRating};
    pub use crate::status::{AmlStatus, KycStatus};
    pub use crate::values::{
        AddedVia, ApiScope, Credits, CustomerType, Email, ExternalId, FullName, Note, Phone,
        ValidationError,
    };
}
