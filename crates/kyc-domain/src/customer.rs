//! The customer aggregate: one record's identity, risk answers, verification attempts and AML
//! review, and every move of product brief §2–§3. Each method checks everything before it changes
//! anything, so a refused move leaves the customer exactly as it was; a move that succeeds returns
//! the audit events to record with it.

use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::aml::{
    AmlDecision, AmlHit, AmlState, DecisionRecord, Disposition, DispositionRecord, HitKey,
    HitSource,
};
use crate::crm::{CrmBlock, crm_block};
use crate::error::{Action, LifecycleError};
use crate::events::{Actor, Change, DomainEvent, EventOutcome, Person};
use crate::ids::{ApplicantId, AttemptNumber, CustomerId, ExternalUserId, FirmId};
use crate::lifecycle::{AmlTrigger, PersonTrigger, aml_move, person_move};
use crate::provider::{ProviderEvent, ProviderStamp};
use crate::risk::{ConfirmedRisk, ProviderLevels, RiskAnswers, RiskState};
use crate::status::{AmlStatus, KycStatus};
use crate::values::{AddedVia, Credits, CustomerType, Email, ExternalId, FullName, Note, Phone};

/// Where one verification attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptPhase {
    /// Claimed by Start Verification: credits held, applicant being created. Recovery drives an
    /// attempt left here to `Open` or `Voided`.
    Starting,
    /// Charged, applicant created, link issued: provider events apply.
    Open,
    /// Never started (the provider refused, or the claim was abandoned); its hold was released.
    Voided,
    /// Closed by a restart; its events are recorded and change nothing.
    Closed,
}

/// One verification attempt: one hold, at most one charge, at most one applicant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationAttempt {
    /// 1, 2, …
    pub number: AttemptNumber,
    /// Where it stands.
    pub phase: AttemptPhase,
    /// The price the person confirmed.
    pub cost: Credits,
    /// The provider level chosen by risk.
    pub level_name: String,
    /// The provider-facing id derived from `(customer, attempt)`.
    pub external_user_id: ExternalUserId,
    /// The provider's applicant, once created.
    pub applicant_id: Option<ApplicantId>,
    /// The SHA-256 of the verification link token, once issued.
    pub link_token_hash: Option<String>,
    /// Who clicked Start Verification (`None` for an attempt recovery wrote down as never claimed).
    pub started_by: Option<Person>,
    /// When the attempt was claimed.
    #[serde(with = "crate::values::stored_time")]
    pub claimed_at: OffsetDateTime,
    /// When it opened (charge final, link issued).
    #[serde(default, with = "crate::values::stored_time::option")]
    pub opened_at: Option<OffsetDateTime>,
    /// When it was voided or closed.
    #[serde(default, with = "crate::values::stored_time::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// Why it was voided, if it was.
    pub void_reason: Option<String>,
    /// The newest status-bearing provider event applied to it.
    pub newest_verdict: Option<ProviderStamp>,
}

/// The verified identity summary the CRM may see: legal name and country (ISO alpha-3), no more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedIdentity {
    /// The name on the verified document.
    pub verified_legal_name: String,
    /// ISO 3166-1 alpha-3 country.
    pub verified_country: String,
}

/// The nil id a state read from a document without one carries until its store sets the real one.
fn unset_customer_id() -> CustomerId {
    CustomerId::from_uuid(uuid::Uuid::nil())
}

/// The same for the firm.
fn unset_firm_id() -> FirmId {
    FirmId::from_uuid(uuid::Uuid::nil())
}

/// The data of a customer. Read it through [`Customer`] (which derefs to it); change it only
/// through [`Customer`]'s moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerState {
    /// Id. Not written into a stored state (the row's own column holds it, and a store sets it
    /// from there on every read); states stored with it still read.
    #[serde(skip_serializing, default = "unset_customer_id")]
    pub id: CustomerId,
    /// Tenant. Not written into a stored state, as `id`.
    #[serde(skip_serializing, default = "unset_firm_id")]
    pub firm_id: FirmId,
    /// The CRM's id, immutable once set.
    #[serde(default, deserialize_with = "crate::values::stored::external_id")]
    pub external_id: Option<ExternalId>,
    /// Individual or sole trader; never changed by the API.
    pub customer_type: CustomerType,
    /// Name.
    #[serde(deserialize_with = "crate::values::stored::full_name")]
    pub full_name: FullName,
    /// Email.
    #[serde(deserialize_with = "crate::values::stored::email")]
    pub email: Email,
    /// Phone.
    #[serde(default, deserialize_with = "crate::values::stored::phone")]
    pub phone: Option<Phone>,
    /// Identity status.
    pub kyc_status: KycStatus,
    /// When the current attempt opened.
    #[serde(default, with = "crate::values::stored_time::option")]
    pub kyc_started_at: Option<OffsetDateTime>,
    /// When the provider's deciding verdict (VERIFIED or FAILED) was created.
    #[serde(default, with = "crate::values::stored_time::option")]
    pub kyc_completed_at: Option<OffsetDateTime>,
    /// The verified identity summary, once captured.
    pub identity: Option<VerifiedIdentity>,
    /// AML review.
    pub aml: AmlState,
    /// Risk answers.
    pub risk: RiskState,
    /// Every attempt, oldest first.
    pub attempts: Vec<VerificationAttempt>,
    /// How it came in.
    pub added_via: AddedVia,
    /// Created.
    #[serde(with = "crate::values::stored_time")]
    pub created_at: OffsetDateTime,
    /// Last visible change.
    #[serde(with = "crate::values::stored_time")]
    pub updated_at: OffsetDateTime,
    /// Optimistic-concurrency version: the version this state was loaded at.
    pub version: u64,
}

/// The fields of a new customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCustomer {
    /// The CRM's id.
    pub external_id: Option<ExternalId>,
    /// Name.
    pub full_name: FullName,
    /// Email.
    pub email: Email,
    /// Phone.
    pub phone: Option<Phone>,
    /// Type.
    pub customer_type: CustomerType,
}

/// A change of contact fields; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContactUpdate {
    /// New name.
    pub full_name: Option<FullName>,
    /// New email.
    pub email: Option<Email>,
    /// New phone.
    pub phone: Option<Phone>,
}

/// What opening the link leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    /// Send the customer to the provider's flow for this attempt.
    Continue {
        /// The attempt's provider-facing id.
        external_user_id: ExternalUserId,
        /// Its level.
        level_name: String,
    },
    /// Nothing left to do behind this link (verdict given, or attempt closed).
    Finished {
        /// The customer's status, for a friendly page.
        status: KycStatus,
    },
}

/// A customer and its lifecycle.
///
/// The state is shared: a customer read back from an adapter's cache holds the cached state
/// itself, and the first move that changes it takes a private copy (`Arc::make_mut`), so reads
/// that change nothing never copy it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    state: Arc<CustomerState>,
}

impl Deref for Customer {
    type Target = CustomerState;
    fn deref(&self) -> &CustomerState {
        &self.state
    }
}

/// Collects the events of one move with a common actor and time.
struct Recorder<'a> {
    actor: &'a Actor,
    at: OffsetDateTime,
    events: Vec<DomainEvent>,
}

impl<'a> Recorder<'a> {
    fn new(actor: &'a Actor, at: OffsetDateTime) -> Self {
        Self {
            actor,
            at,
            events: Vec::new(),
        }
    }

    fn push(&mut self, change: Change) {
        self.push_with_note(change, None);
    }

    fn push_with_note(&mut self, change: Change, note: Option<&Note>) {
        self.events.push(DomainEvent {
            at: self.at,
            actor: self.actor.clone(),
            change,
            note: note.map(|n| n.as_str().to_owned()),
        });
    }
}

fn require_staff(person: &Person, action: Action) -> Result<(), LifecycleError> {
    if person.role.is_staff_or_above() {
        Ok(())
    } else {
        Err(LifecycleError::Forbidden {
            action,
            required: "staff or compliance_officer",
        })
    }
}

fn require_compliance_officer(person: &Person, action: Action) -> Result<(), LifecycleError> {
    if person.role.is_compliance_officer() {
        Ok(())
    } else {
        Err(LifecycleError::Forbidden {
            action,
            required: "compliance_officer",
        })
    }
}

impl Customer {
    /// A new record in `NOT_STARTED`, with its creation event.
    pub fn create(
        id: CustomerId,
        firm_id: FirmId,
        input: NewCustomer,
        added_via: AddedVia,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> (Self, Vec<DomainEvent>) {
        let state = CustomerState {
            id,
            firm_id,
            external_id: input.external_id,
            customer_type: input.customer_type,
            full_name: input.full_name,
            email: input.email,
            phone: input.phone,
            kyc_status: KycStatus::NotStarted,
            kyc_started_at: None,
            kyc_completed_at: None,
            identity: None,
            aml: AmlState::default(),
            risk: RiskState::default(),
            attempts: Vec::new(),
            added_via,
            created_at: now,
            updated_at: now,
            version: 0,
        };
        let mut record = Recorder::new(actor, now);
        record.push(Change::CustomerCreated { added_via });
        (
            Self {
                state: Arc::new(state),
            },
            record.events,
        )
    }

    /// Rebuilds a customer read back from storage.
    pub fn restore(state: CustomerState) -> Self {
        Self {
            state: Arc::new(state),
        }
    }

    /// Rebuilds a customer from a state shared with others (an adapter's cache of decoded
    /// states): nothing is copied until a move changes it.
    pub fn restore_shared(state: Arc<CustomerState>) -> Self {
        Self { state }
    }

    /// The data, for adapters that store it.
    pub fn state(&self) -> &CustomerState {
        &self.state
    }

    /// The data, shared (cloning the `Arc` copies nothing).
    pub fn shared_state(&self) -> &Arc<CustomerState> {
        &self.state
    }

    /// The data, by value.
    pub fn into_state(self) -> CustomerState {
        Arc::unwrap_or_clone(self.state)
    }

    /// The data, to change: copied first when it is shared.
    fn state_mut(&mut self) -> &mut CustomerState {
        Arc::make_mut(&mut self.state)
    }

    /// Marks the state as saved at `version` (called by the use cases after a successful save).
    pub fn saved_at_version(&mut self, version: u64) {
        self.state_mut().version = version;
    }

    /// Takes what a store recorded on a successful write: the version, and the time the store
    /// gave the change as `updated_at` (and as `created_at`, for a customer stored for the first
    /// time with nothing done to it since it was created; see [`crate::ports::Saved`]).
    pub fn saved(&mut self, saved: crate::ports::Saved) {
        let created_at_stamp = saved.version == 1 && self.as_created();
        let state = self.state_mut();
        if created_at_stamp {
            state.created_at = saved.at;
        }
        state.version = saved.version;
        state.updated_at = saved.at;
    }

    /// Whether nothing was done to the customer since it was created (its `created_at` is its
    /// `updated_at`): a store stamps such a customer's `created_at` with its first `updated_at`.
    pub fn as_created(&self) -> bool {
        self.state.created_at == self.state.updated_at
    }

    /// This customer as a store records it after a successful write: [`Customer::saved`] on a
    /// copy, for a store to write or to remember.
    #[must_use]
    pub fn as_saved(&self, saved: crate::ports::Saved) -> Self {
        let mut copy = self.clone();
        copy.saved(saved);
        copy
    }

    /// The CRM block.
    pub fn crm(&self) -> CrmBlock {
        crm_block(self.state.kyc_status, self.state.aml.status)
    }

    /// The identity summary as the CRM may see it: only while `VERIFIED`.
    pub fn visible_identity(&self) -> Option<&VerifiedIdentity> {
        match self.state.kyc_status {
            KycStatus::Verified => self.state.identity.as_ref(),
            KycStatus::NotStarted
            | KycStatus::Pending
            | KycStatus::InProgress
            | KycStatus::Failed
            | KycStatus::AwaitingResubmission
            | KycStatus::NotRequired => None,
        }
    }

    /// The newest attempt.
    pub fn latest_attempt(&self) -> Option<&VerificationAttempt> {
        self.state.attempts.last()
    }

    /// Attempt `number`.
    pub fn attempt(&self, number: AttemptNumber) -> Option<&VerificationAttempt> {
        self.state.attempts.iter().find(|a| a.number == number)
    }

    /// The attempt whose link still leads somewhere: the open attempt while the customer has
    /// something to do in the provider's flow (`PENDING`, `IN_PROGRESS`,
    /// `AWAITING_RESUBMISSION`). The back office shows its link; opening it continues the flow.
    pub fn attempt_behind_link(&self) -> Option<&VerificationAttempt> {
        let waiting = match self.state.kyc_status {
            KycStatus::Pending | KycStatus::InProgress | KycStatus::AwaitingResubmission => true,
            KycStatus::NotStarted
            | KycStatus::Verified
            | KycStatus::Failed
            | KycStatus::NotRequired => false,
        };
        self.latest_attempt()
            .filter(|a| waiting && a.phase == AttemptPhase::Open)
    }

    /// The attempt a provider event belongs to, by applicant id or by external user id.
    pub fn attempt_for_provider(
        &self,
        applicant_id: Option<&ApplicantId>,
        external_user_id: Option<&ExternalUserId>,
    ) -> Option<AttemptNumber> {
        self.state
            .attempts
            .iter()
            .find(|a| {
                applicant_id.is_some_and(|id| a.applicant_id.as_ref() == Some(id))
                    || external_user_id.is_some_and(|ext| &a.external_user_id == ext)
            })
            .map(|a| a.number)
    }

    /// The number the next attempt will get.
    pub fn next_attempt_number(&self) -> AttemptNumber {
        self.latest_attempt()
            .map_or(AttemptNumber::FIRST, |a| a.number.next())
    }

    fn attempt_index(&self, number: AttemptNumber) -> Option<usize> {
        self.state.attempts.iter().position(|a| a.number == number)
    }

    fn set_kyc(
        &mut self,
        to: KycStatus,
        attempt: Option<AttemptNumber>,
        record: &mut Recorder<'_>,
    ) {
        let from = self.state.kyc_status;
        if from != to {
            self.state_mut().kyc_status = to;
            record.push(Change::KycStatusChanged { from, to, attempt });
        }
    }

    fn set_aml(&mut self, to: AmlStatus, record: &mut Recorder<'_>) {
        let from = self.state.aml.status;
        if from != to {
            self.state_mut().aml.status = to;
            record.push(Change::AmlStatusChanged { from, to });
        }
    }

    fn finish(&mut self, record: Recorder<'_>) -> Vec<DomainEvent> {
        if !record.events.is_empty() {
            self.state_mut().updated_at = record.at.max(self.state.updated_at);
        }
        record.events
    }

    /// Changes contact fields. Name and email freeze once `VERIFIED`; the phone stays editable.
    ///
    /// # Errors
    /// [`LifecycleError::IdentityFrozen`] when a changed name or email arrives after verification.
    pub fn update_contact(
        &mut self,
        update: ContactUpdate,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<Vec<DomainEvent>, LifecycleError> {
        let verified = self.state.kyc_status == KycStatus::Verified;
        let name_changes = update
            .full_name
            .as_ref()
            .filter(|name| **name != self.state.full_name);
        let email_changes = update
            .email
            .as_ref()
            .filter(|email| **email != self.state.email);
        if verified && name_changes.is_some() {
            return Err(LifecycleError::IdentityFrozen { field: "fullName" });
        }
        if verified && email_changes.is_some() {
            return Err(LifecycleError::IdentityFrozen { field: "email" });
        }
        let mut record = Recorder::new(actor, now);
        let mut changed = |field: &str, from: Option<&str>, to: Option<&str>| {
            record.push(Change::ContactUpdated {
                field: field.to_owned(),
                from: from.map(str::to_owned),
                to: to.map(str::to_owned),
            });
        };
        if let Some(name) = update.full_name.filter(|n| *n != self.state.full_name) {
            changed(
                "fullName",
                Some(self.state.full_name.as_str()),
                Some(name.as_str()),
            );
            self.state_mut().full_name = name;
        }
        if let Some(email) = update.email.filter(|e| *e != self.state.email) {
            changed(
                "email",
                Some(self.state.email.as_str()),
                Some(email.as_str()),
            );
            self.state_mut().email = email;
        }
        if let Some(phone) = update
            .phone
            .filter(|p| Some(p) != self.state.phone.as_ref())
        {
            changed(
                "phone",
                self.state.phone.as_ref().map(Phone::as_str),
                Some(phone.as_str()),
            );
            self.state_mut().phone = Some(phone);
        }
        Ok(self.finish(record))
    }

    /// Sets the CRM's id on a record that has none (the upsert's "adopt").
    ///
    /// # Errors
    /// [`LifecycleError::ExternalIdImmutable`] when the record already has a different one.
    pub fn adopt_external_id(
        &mut self,
        external_id: ExternalId,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<Vec<DomainEvent>, LifecycleError> {
        match &self.state.external_id {
            Some(current) if *current == external_id => Ok(Vec::new()),
            Some(_) => Err(LifecycleError::ExternalIdImmutable),
            None => {
                let mut record = Recorder::new(actor, now);
                record.push(Change::ContactUpdated {
                    field: "externalId".to_owned(),
                    from: None,
                    to: Some(external_id.as_str().to_owned()),
                });
                self.state_mut().external_id = Some(external_id);
                Ok(self.finish(record))
            }
        }
    }

    /// Records answers proposed over the API. They count only once a person confirms them.
    pub fn propose_risk(
        &mut self,
        answers: RiskAnswers,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Vec<DomainEvent> {
        if self.state.risk.proposed == Some(answers) {
            return Vec::new();
        }
        let mut record = Recorder::new(actor, now);
        self.state_mut().risk.proposed = Some(answers);
        record.push(Change::RiskProposed { answers });
        self.finish(record)
    }

    /// A person confirms the risk answers: records who and when, and moves `NOT_STARTED` ↔
    /// `NOT_REQUIRED` by the designated-service answer.
    ///
    /// # Errors
    /// [`LifecycleError::Forbidden`] for a role that may not; [`LifecycleError::NotAllowed`] when
    /// the answers would take a verification under way out of scope.
    pub fn confirm_risk(
        &mut self,
        answers: RiskAnswers,
        person: &Person,
        now: OffsetDateTime,
    ) -> Result<Vec<DomainEvent>, LifecycleError> {
        require_staff(person, Action::ConfirmRisk)?;
        if self.has_starting_attempt().is_some() {
            return Err(LifecycleError::NotAllowed {
                action: Action::ConfirmRisk,
                status: self.state.kyc_status,
                reason: "a verification is being started",
            });
        }
        let to = person_move(
            self.state.kyc_status,
            PersonTrigger::ConfirmRisk {
                designated_service: answers.is_designated_service,
            },
        )?;
        let actor = Actor::Person(person.clone());
        let mut record = Recorder::new(&actor, now);
        self.state_mut().risk.confirmed = Some(ConfirmedRisk {
            answers,
            confirmed_by: person.id,
            confirmed_by_email: person.email.clone(),
            confirmed_at: now,
        });
        record.push(Change::RiskConfirmed {
            answers,
            rating: answers.rating(),
        });
        self.set_kyc(to, None, &mut record);
        Ok(self.finish(record))
    }

    fn has_starting_attempt(&self) -> Option<AttemptNumber> {
        self.latest_attempt()
            .filter(|a| a.phase == AttemptPhase::Starting)
            .map(|a| a.number)
    }

    /// Phase 1 of Start Verification: claims attempt n + 1 in `Starting`. The status stays
    /// `NOT_STARTED` until [`Customer::complete_verification`]; the caller holds the credits.
    ///
    /// # Errors
    /// [`LifecycleError::Forbidden`], [`LifecycleError::RiskNotConfirmed`],
    /// [`LifecycleError::AttemptAlreadyStarting`], or [`LifecycleError::NotAllowed`] when the
    /// status is not `NOT_STARTED`.
    pub fn begin_verification(
        &mut self,
        person: &Person,
        cost: Credits,
        levels: &ProviderLevels,
        now: OffsetDateTime,
    ) -> Result<(AttemptNumber, Vec<DomainEvent>), LifecycleError> {
        require_staff(person, Action::StartVerification)?;
        person_move(self.state.kyc_status, PersonTrigger::StartVerification)?;
        if let Some(attempt) = self.has_starting_attempt() {
            return Err(LifecycleError::AttemptAlreadyStarting { attempt });
        }
        let rating = match &self.state.risk.confirmed {
            Some(confirmed) if confirmed.answers.is_designated_service => {
                confirmed.answers.rating()
            }
            Some(_) | None => return Err(LifecycleError::RiskNotConfirmed),
        };
        let number = self.next_attempt_number();
        let level_name = levels.for_rating(rating).to_owned();
        let actor = Actor::Person(person.clone());
        let mut record = Recorder::new(&actor, now);
        let external_user_id = ExternalUserId::for_attempt(self.state.id, number);
        self.state_mut().attempts.push(VerificationAttempt {
            number,
            phase: AttemptPhase::Starting,
            cost,
            level_name: level_name.clone(),
            external_user_id,
            applicant_id: None,
            link_token_hash: None,
            started_by: Some(person.clone()),
            claimed_at: now,
            opened_at: None,
            ended_at: None,
            void_reason: None,
            newest_verdict: None,
        });
        record.push(Change::VerificationStarting {
            attempt: number,
            cost,
            level_name,
        });
        Ok((number, self.finish(record)))
    }

    fn starting_attempt_index(
        &self,
        number: AttemptNumber,
        action: Action,
    ) -> Result<usize, LifecycleError> {
        let index = self
            .attempt_index(number)
            .ok_or(LifecycleError::AttemptMismatch {
                action,
                attempt: number,
                reason: "no such attempt",
            })?;
        match self.state.attempts[index].phase {
            AttemptPhase::Starting => Ok(index),
            AttemptPhase::Open | AttemptPhase::Voided | AttemptPhase::Closed => {
                Err(LifecycleError::AttemptMismatch {
                    action,
                    attempt: number,
                    reason: "the attempt is not starting",
                })
            }
        }
    }

    /// Phase 3 of Start Verification: the applicant exists and the charge is posted. The attempt
    /// opens and the customer moves to `PENDING`. Completing an attempt that is already open with
    /// the same applicant changes nothing (a retry of this step).
    ///
    /// # Errors
    /// [`LifecycleError::AttemptMismatch`] when the attempt is not starting (or is open with
    /// another applicant).
    pub fn complete_verification(
        &mut self,
        number: AttemptNumber,
        applicant_id: ApplicantId,
        link_token_hash: String,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<Vec<DomainEvent>, LifecycleError> {
        if let Some(open) = self
            .attempt(number)
            .filter(|a| a.phase == AttemptPhase::Open)
        {
            return if open.applicant_id.as_ref() == Some(&applicant_id) {
                Ok(Vec::new())
            } else {
                Err(LifecycleError::AttemptMismatch {
                    action: Action::CompleteVerification,
                    attempt: number,
                    reason: "the attempt is open with another applicant",
                })
            };
        }
        let index = self.starting_attempt_index(number, Action::CompleteVerification)?;
        let to = person_move(self.state.kyc_status, PersonTrigger::StartVerification)?;
        let mut record = Recorder::new(actor, now);
        let attempt = &mut self.state_mut().attempts[index];
        attempt.phase = AttemptPhase::Open;
        attempt.applicant_id = Some(applicant_id.clone());
        attempt.link_token_hash = Some(link_token_hash);
        attempt.opened_at = Some(now);
        record.push(Change::VerificationStarted {
            attempt: number,
            applicant_id,
        });
        self.state_mut().kyc_started_at = Some(now);
        self.state_mut().kyc_completed_at = None;
        self.set_kyc(to, Some(number), &mut record);
        Ok(self.finish(record))
    }

    /// Phase 4 of Start Verification: the attempt could not start (the provider refused, or a
    /// recovery found it abandoned). It is voided; the status stays `NOT_STARTED`. Abandoning an
    /// attempt already voided changes nothing.
    ///
    /// # Errors
    /// [`LifecycleError::AttemptMismatch`] when the attempt is open or closed.
    pub fn abandon_verification(
        &mut self,
        number: AttemptNumber,
        reason: &str,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<Vec<DomainEvent>, LifecycleError> {
        if self
            .attempt(number)
            .is_some_and(|a| a.phase == AttemptPhase::Voided)
        {
            return Ok(Vec::new());
        }
        let index = self.starting_attempt_index(number, Action::AbandonVerification)?;
        let mut record = Recorder::new(actor, now);
        let attempt = &mut self.state_mut().attempts[index];
        attempt.phase = AttemptPhase::Voided;
        attempt.ended_at = Some(now);
        attempt.void_reason = Some(reason.to_owned());
        record.push(Change::VerificationAbandoned {
            attempt: number,
            reason: reason.to_owned(),
        });
        Ok(self.finish(record))
    }

    /// Records that attempt `number` was never claimed although credits were held for it (a
    /// crash between the hold and the claim): it is written down as voided so that no later
    /// request can claim that number and use the released hold.
    ///
    /// # Errors
    /// [`LifecycleError::AttemptMismatch`] when `number` is not the next attempt number.
    pub fn void_unclaimed_attempt(
        &mut self,
        number: AttemptNumber,
        cost: Credits,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<Vec<DomainEvent>, LifecycleError> {
        if number != self.next_attempt_number() {
            return Err(LifecycleError::AttemptMismatch {
                action: Action::AbandonVerification,
                attempt: number,
                reason: "the attempt number is already taken",
            });
        }
        let reason = "credits were held but the attempt was never claimed";
        let mut record = Recorder::new(actor, now);
        let external_user_id = ExternalUserId::for_attempt(self.state.id, number);
        self.state_mut().attempts.push(VerificationAttempt {
            number,
            phase: AttemptPhase::Voided,
            cost,
            level_name: String::new(),
            external_user_id,
            applicant_id: None,
            link_token_hash: None,
            started_by: None,
            claimed_at: now,
            opened_at: None,
            ended_at: Some(now),
            void_reason: Some(reason.to_owned()),
            newest_verdict: None,
        });
        record.push(Change::VerificationAbandoned {
            attempt: number,
            reason: reason.to_owned(),
        });
        Ok(self.finish(record))
    }

    /// The customer opened the link of attempt `number`. Moves `PENDING` or
    /// `AWAITING_RESUBMISSION` to `IN_PROGRESS`; from any other status changes nothing, so a late
    /// click never undoes a verdict.
    ///
    /// # Errors
    /// [`LifecycleError::AttemptMismatch`] when there is no such attempt.
    pub fn open_link(
        &mut self,
        number: AttemptNumber,
        now: OffsetDateTime,
    ) -> Result<(LinkOutcome, Vec<DomainEvent>), LifecycleError> {
        let attempt = self
            .attempt(number)
            .ok_or(LifecycleError::AttemptMismatch {
                action: Action::OpenLink,
                attempt: number,
                reason: "no such attempt",
            })?;
        let status = self.state.kyc_status;
        let finished = LinkOutcome::Finished { status };
        match attempt.phase {
            AttemptPhase::Open => {}
            AttemptPhase::Starting | AttemptPhase::Voided | AttemptPhase::Closed => {
                return Ok((finished, Vec::new()));
            }
        }
        let outcome = LinkOutcome::Continue {
            external_user_id: attempt.external_user_id.clone(),
            level_name: attempt.level_name.clone(),
        };
        let to = person_move(status, PersonTrigger::OpenLink)?;
        let actor = Actor::Customer;
        let mut record = Recorder::new(&actor, now);
        let continues = self
            .attempt_behind_link()
            .is_some_and(|a| a.number == number);
        let outcome = if continues { outcome } else { finished };
        record.push(Change::LinkOpened { attempt: number });
        self.set_kyc(to, Some(number), &mut record);
        Ok((outcome, self.finish(record)))
    }

    /// Applies a provider event routed to attempt `number` (product brief §3). Status-bearing
    /// events compete by provider time: the newest sets the status, whatever it was; an older one
    /// is recorded as ignored. AML hits a verdict reports join the hit list whatever its age, so
    /// the final state does not depend on delivery order. Events of an attempt that is not open
    /// are recorded and change nothing.
    ///
    /// # Errors
    /// [`LifecycleError::AttemptMismatch`] when there is no such attempt.
    pub fn apply_provider_event(
        &mut self,
        number: AttemptNumber,
        event: &ProviderEvent,
        now: OffsetDateTime,
    ) -> Result<Vec<DomainEvent>, LifecycleError> {
        let index = self
            .attempt_index(number)
            .ok_or(LifecycleError::AttemptMismatch {
                action: Action::ApplyProviderEvent,
                attempt: number,
                reason: "no such attempt",
            })?;
        let actor = Actor::Provider {
            event_key: event.key.clone(),
        };
        let mut record = Recorder::new(&actor, now);
        let recorded = |outcome| Change::ProviderEventRecorded {
            attempt: number,
            event_type: event.kind.name().to_owned(),
            created_at: event.created_at,
            outcome,
        };
        let open = match self.state.attempts[index].phase {
            AttemptPhase::Open => self.state.kyc_status.has_open_attempt(),
            AttemptPhase::Starting | AttemptPhase::Voided | AttemptPhase::Closed => false,
        };
        let Some(effect) = event.kind.verdict_effect().filter(|_| open) else {
            let outcome = if open {
                EventOutcome::NoStatus
            } else {
                EventOutcome::AttemptNotOpen
            };
            record.push(recorded(outcome));
            return Ok(record.events);
        };
        let stamp = event.stamp();
        let newest = self.state.attempts[index].newest_verdict.as_ref();
        if newest == Some(&stamp) {
            // The same event again: it has had its effect already.
            return Ok(Vec::new());
        }
        let is_newest = newest.is_none_or(|n| stamp > *n);
        record.push(recorded(if is_newest {
            EventOutcome::Applied
        } else {
            EventOutcome::IgnoredOlder
        }));
        if is_newest {
            self.state_mut().attempts[index].newest_verdict = Some(stamp);
            self.state_mut().kyc_completed_at = match effect.status {
                KycStatus::Verified | KycStatus::Failed => Some(event.created_at),
                KycStatus::NotStarted
                | KycStatus::Pending
                | KycStatus::InProgress
                | KycStatus::AwaitingResubmission
                | KycStatus::NotRequired => None,
            };
            self.set_kyc(effect.status, Some(number), &mut record);
        }
        if !effect.aml_hits.is_empty() {
            let hits = effect
                .aml_hits
                .iter()
                .map(|(label, category)| AmlHit {
                    key: HitKey::for_verdict_label(label.as_str()),
                    name: None,
                    categories: [category.clone()].into_iter().collect(),
                    match_status: "verdict".to_owned(),
                    source: HitSource::Verdict,
                    found_at: event.created_at,
                    disposition: None,
                })
                .collect();
            self.add_hits(hits, HitSource::Verdict, &mut record);
        }
        Ok(self.finish(record))
    }

    fn add_hits(&mut self, hits: Vec<AmlHit>, source: HitSource, record: &mut Recorder<'_>) {
        let added = self.state_mut().aml.merge_hits(hits);
        if !added.is_empty() {
            record.push(Change::AmlHitsAdded {
                hits: added,
                source,
            });
            let to = aml_move(self.state.aml.status, AmlTrigger::NewHits)
                .unwrap_or(AmlStatus::NeedsReview);
            self.set_aml(to, record);
        }
    }

    /// Screening begins (automatically after `VERIFIED`, or on the re-screening cadence):
    /// `NOT_SCREENED`, `CLEAR` or `RESOLVED` move to `IN_PROGRESS`; a customer already in review
    /// stays there and the results join the hit list.
    ///
    /// # Errors
    /// [`LifecycleError::NotAllowed`] unless identity is `VERIFIED`.
    pub fn start_screening(
        &mut self,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<Vec<DomainEvent>, LifecycleError> {
        self.require_verified(Action::StartScreening)?;
        let to = aml_move(self.state.aml.status, AmlTrigger::ScreeningStarted)?;
        let mut record = Recorder::new(actor, now);
        self.set_aml(to, &mut record);
        Ok(self.finish(record))
    }

    fn require_verified(&self, action: Action) -> Result<(), LifecycleError> {
        match self.state.kyc_status {
            KycStatus::Verified => Ok(()),
            status @ (KycStatus::NotStarted
            | KycStatus::Pending
            | KycStatus::InProgress
            | KycStatus::Failed
            | KycStatus::AwaitingResubmission
            | KycStatus::NotRequired) => Err(LifecycleError::NotAllowed {
                action,
                status,
                reason: "identity is not verified",
            }),
        }
    }

    /// Screening finished with these hits. New hits join the list; the status becomes
    /// `NEEDS_REVIEW` while any hit waits for a person (or a decision is owed), `RESOLVED` when
    /// every hit was already reviewed and decided, `CLEAR` when there are none. The re-screening
    /// due date follows the confirmed risk rating.
    ///
    /// # Errors
    /// [`LifecycleError::AmlNotAllowed`] unless screening was started (or review is open).
    pub fn record_screening(
        &mut self,
        hits: Vec<AmlHit>,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<Vec<DomainEvent>, LifecycleError> {
        let mut aml = self.state.aml.clone();
        let returned = hits.len();
        let added = aml.merge_hits(hits);
        let trigger = if aml.hits.is_empty() {
            AmlTrigger::ScreeningFoundNothing
        } else if aml.open_hits() == 0 && aml.decision.is_some() && added.is_empty() {
            AmlTrigger::ScreeningFoundOnlyReviewedHits
        } else {
            AmlTrigger::ScreeningFoundHitsToReview
        };
        let to = aml_move(self.state.aml.status, trigger)?;
        let mut record = Recorder::new(actor, now);
        if !added.is_empty() {
            record.push(Change::AmlHitsAdded {
                hits: added,
                source: HitSource::Screening,
            });
        }
        record.push(Change::ScreeningFinished {
            hits_returned: returned,
        });
        aml.screened_at = Some(now);
        aml.next_screening_due = self.state.risk.rating().map(|r| r.rescreen_due(now));
        self.state_mut().aml = aml;
        self.set_aml(to, &mut record);
        Ok(self.finish(record))
    }

    /// Stores the verified identity summary fetched from the provider.
    ///
    /// # Errors
    /// [`LifecycleError::NotAllowed`] unless identity is `VERIFIED`.
    pub fn capture_identity(
        &mut self,
        identity: VerifiedIdentity,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<Vec<DomainEvent>, LifecycleError> {
        self.require_verified(Action::CaptureIdentity)?;
        if self.state.identity.as_ref() == Some(&identity) {
            return Ok(Vec::new());
        }
        let mut record = Recorder::new(actor, now);
        self.state_mut().identity = Some(identity);
        record.push(Change::IdentityCaptured);
        Ok(self.finish(record))
    }

    /// A compliance officer sets (or changes) the disposition of a hit while in review.
    ///
    /// # Errors
    /// [`LifecycleError::Forbidden`], [`LifecycleError::AmlNotAllowed`] outside `NEEDS_REVIEW`,
    /// [`LifecycleError::HitNotFound`].
    pub fn set_disposition(
        &mut self,
        hit: &HitKey,
        disposition: Disposition,
        note: Note,
        person: &Person,
        now: OffsetDateTime,
    ) -> Result<Vec<DomainEvent>, LifecycleError> {
        require_compliance_officer(person, Action::SetDisposition)?;
        aml_move(self.state.aml.status, AmlTrigger::Disposition)?;
        let target = self
            .state_mut()
            .aml
            .hits
            .iter_mut()
            .find(|h| &h.key == hit)
            .ok_or_else(|| LifecycleError::HitNotFound(hit.clone()))?;
        target.disposition = Some(DispositionRecord {
            disposition,
            note: note.clone(),
            by: person.id,
            at: now,
        });
        let actor = Actor::Person(person.clone());
        let mut record = Recorder::new(&actor, now);
        record.push_with_note(
            Change::HitDispositionSet {
                hit: hit.clone(),
                disposition,
            },
            Some(&note),
        );
        Ok(self.finish(record))
    }

    /// A compliance officer records the final decision once every hit has a disposition:
    /// `NEEDS_REVIEW` → `RESOLVED`.
    ///
    /// # Errors
    /// [`LifecycleError::Forbidden`], [`LifecycleError::AmlNotAllowed`] outside `NEEDS_REVIEW`,
    /// [`LifecycleError::HitsAwaitingDisposition`].
    pub fn record_decision(
        &mut self,
        decision: AmlDecision,
        rationale: Note,
        person: &Person,
        now: OffsetDateTime,
    ) -> Result<Vec<DomainEvent>, LifecycleError> {
        require_compliance_officer(person, Action::RecordDecision)?;
        let to = aml_move(self.state.aml.status, AmlTrigger::Decision)?;
        let open = self.state.aml.open_hits();
        if open > 0 {
            return Err(LifecycleError::HitsAwaitingDisposition { open });
        }
        let actor = Actor::Person(person.clone());
        let mut record = Recorder::new(&actor, now);
        self.state_mut().aml.decision = Some(DecisionRecord {
            decision,
            rationale: rationale.clone(),
            by: person.id,
            by_email: person.email.clone(),
            at: now,
        });
        self.state_mut().aml.last_reviewed_at = Some(now);
        record.push_with_note(Change::AmlDecisionRecorded { decision }, Some(&rationale));
        self.set_aml(to, &mut record);
        Ok(self.finish(record))
    }

    /// A compliance officer restarts a failed verification: the attempt closes, the customer goes
    /// back to `NOT_STARTED`, and the next Start Verification opens (and charges) a new attempt.
    ///
    /// # Errors
    /// [`LifecycleError::Forbidden`]; [`LifecycleError::NotAllowed`] unless `FAILED`.
    pub fn restart(
        &mut self,
        reason: Note,
        person: &Person,
        now: OffsetDateTime,
    ) -> Result<Vec<DomainEvent>, LifecycleError> {
        require_compliance_officer(person, Action::Restart)?;
        let to = person_move(self.state.kyc_status, PersonTrigger::Restart)?;
        let actor = Actor::Person(person.clone());
        let mut record = Recorder::new(&actor, now);
        let closed = self
            .state_mut()
            .attempts
            .iter_mut()
            .rev()
            .find(|a| a.phase == AttemptPhase::Open);
        if let Some(attempt) = closed {
            attempt.phase = AttemptPhase::Closed;
            attempt.ended_at = Some(now);
            record.push_with_note(
                Change::AttemptClosed {
                    attempt: attempt.number,
                },
                Some(&reason),
            );
        }
        self.state_mut().kyc_started_at = None;
        self.state_mut().kyc_completed_at = None;
        self.state_mut().identity = None;
        self.set_kyc(to, None, &mut record);
        Ok(self.finish(record))
    }
}
