//! Start Verification, the one billable and irreversible step, and the recovery worker that
//! finishes what a crash or a timeout left half done (product brief §4).
//!
//! The flow is two-phase, like a card authorisation, and every step is keyed by the attempt
//! `(customer, n)` so that repeating it is harmless:
//!
//! 1. reserve the credits (a hold keyed by the attempt), then claim the attempt on the customer
//!    (`Starting`, saved with optimistic concurrency: of two concurrent clicks one claim wins, and
//!    both reserved the *same* hold);
//! 2. create the provider applicant with `externalUserId` derived from the attempt (a retry gets
//!    the provider's 409 and the existing applicant, never a second one);
//! 3. post the hold (the charge becomes final), then open the attempt: `PENDING`, link issued;
//! 4. on a definite provider refusal: void the hold and abandon the attempt (`NOT_STARTED`).
//!
//! A crash anywhere leaves either a pending hold with no claim, or a `Starting` attempt. The
//! recovery worker finds both once they are older than [`Settings::stuck_after`]
//! (super::Settings) and drives them to 3 or 4 with the same idempotent steps, so the outcome is
//! the one an uninterrupted run would have had: at most one charge and one applicant per attempt,
//! and a charge only with an applicant.

use tracing::{instrument, warn};

use super::{KycService, SAVE_ATTEMPTS};
use crate::customer::{AttemptPhase, Customer};
use crate::error::LifecycleError;
use crate::events::{Actor, Person};
use crate::ids::{AttemptNumber, CustomerId, FirmId};
use crate::ports::{
    ApplicantRequest, AttemptLocation, Balance, Hold, HoldKey, HoldState, IdempotencyKey,
    InfrastructureError, IssuedToken, LedgerError, ProviderError, SaveError,
};
use crate::values::Credits;

/// The price of a verification and what the firm has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    /// The price of one attempt.
    pub cost_credits: Credits,
    /// Credits available now.
    pub balance_credits: Credits,
}

/// A started verification.
#[derive(Debug, Clone)]
pub struct Started {
    /// The customer, now `PENDING`.
    pub customer: Customer,
    /// The attempt opened.
    pub attempt: AttemptNumber,
    /// Credits charged for it.
    pub charged_credits: Credits,
    /// The firm's balance after the charge.
    pub balance: Balance,
    /// The link token to hand to the customer.
    pub link_token: IssuedToken,
}

/// Why Start Verification did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No such customer in this firm.
    #[error("customer not found")]
    NotFound,
    /// Only staff and compliance officers may start verification.
    #[error("starting verification requires the role staff or compliance_officer")]
    Forbidden,
    /// The lifecycle does not allow a start now (the reason says why) (409 `not_startable`).
    #[error(transparent)]
    NotStartable(LifecycleError),
    /// The price changed since the person saw it (409).
    #[error("the price changed: a verification now costs {current}, not {confirmed}")]
    PriceChanged {
        /// What the person confirmed.
        confirmed: Credits,
        /// The price now.
        current: Credits,
    },
    /// Not enough credits; nothing changed (402).
    #[error("insufficient credits: {available} available, {required} required")]
    InsufficientCredits {
        /// Available now.
        available: Credits,
        /// The price.
        required: Credits,
    },
    /// The firm's daily spend cap is reached; nothing changed (402).
    #[error("the firm's daily spend cap of {cap} is reached")]
    DailyCapReached {
        /// The cap.
        cap: Credits,
    },
    /// The provider refused to create the applicant: the hold was released, nothing was
    /// charged, the customer stays `NOT_STARTED`.
    #[error("the identity provider refused the verification, nothing was charged: {reason}")]
    ProviderRefused {
        /// The provider's reason.
        reason: String,
    },
    /// The provider could not be reached. Nothing was charged; the credits stay reserved and the
    /// attempt completes when the provider is back, by a retry or by the recovery worker.
    #[error("the identity provider is unavailable, nothing was charged; retry shortly: {reason}")]
    ProviderUnavailable {
        /// What went wrong.
        reason: String,
    },
    /// Concurrent changes kept winning; retry.
    #[error("the customer is being changed concurrently; retry")]
    Contended,
    /// Infrastructure failure.
    #[error(transparent)]
    Infrastructure(#[from] InfrastructureError),
    /// The ledger refused something the flow never asks for (a bug or tampering).
    #[error("ledger inconsistency: {0}")]
    Ledger(String),
}

impl From<LedgerError> for StartError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::InsufficientCredits {
                available,
                requested,
            } => Self::InsufficientCredits {
                available,
                required: requested,
            },
            LedgerError::DailyCapExceeded { cap, .. } => Self::DailyCapReached { cap },
            LedgerError::Infrastructure(e) => Self::Infrastructure(e),
            other @ (LedgerError::IdempotencyMismatch(_)
            | LedgerError::HoldNotFound(_)
            | LedgerError::HoldAlreadyResolved { .. }
            | LedgerError::RefundNotAllowed { .. }
            | LedgerError::InvalidAmount(_)) => Self::Ledger(other.to_string()),
        }
    }
}

impl From<SaveError> for StartError {
    fn from(error: SaveError) -> Self {
        match error {
            SaveError::VersionConflict | SaveError::DuplicateInbound => Self::Contended,
            SaveError::DuplicateExternalId => {
                Self::NotStartable(LifecycleError::ExternalIdImmutable)
            }
            SaveError::Infrastructure(e) => Self::Infrastructure(e),
        }
    }
}

/// What one recovery pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// Attempts driven to `Open` (charged, applicant created).
    pub completed: usize,
    /// Attempts or unclaimed holds voided.
    pub voided: usize,
    /// Left for a later pass (provider unavailable, a concurrent change).
    pub deferred: usize,
}

fn hold_key(customer: CustomerId, attempt: AttemptNumber) -> HoldKey {
    HoldKey { customer, attempt }
}

/// How one drive of a starting attempt ended.
enum Drive {
    Opened(Box<Customer>),
    Refused(String),
    Unavailable(String),
}

impl KycService {
    /// The price of a verification and the firm's available credits (`…/verification/quote`).
    ///
    /// # Errors
    /// [`StartError::NotFound`], [`StartError::Infrastructure`].
    pub async fn quote(&self, firm: FirmId, id: CustomerId) -> Result<Quote, StartError> {
        self.ports
            .customers
            .get(firm, id)
            .await?
            .ok_or(StartError::NotFound)?;
        let balance = self.ports.ledger.balance(firm).await?;
        Ok(Quote {
            cost_credits: self.settings.verification_cost,
            balance_credits: balance.available,
        })
    }

    /// Start Verification, by a person, with the cost they confirmed. Safe under double clicks,
    /// concurrent requests, several replicas and retries: at most one charge per attempt. A
    /// request that finds an attempt still starting (a retry after a timeout, a concurrent click)
    /// drives that same attempt instead of opening another.
    ///
    /// # Errors
    /// [`StartError`]; every error but `ProviderUnavailable` leaves nothing reserved or charged.
    #[instrument(skip_all, fields(firm_id = %firm, customer_id = %id), err(level = "info"))]
    pub async fn start_verification(
        &self,
        firm: FirmId,
        id: CustomerId,
        person: &Person,
        confirmed_cost: Credits,
    ) -> Result<Started, StartError> {
        if !person.role.is_staff_or_above() {
            return Err(StartError::Forbidden);
        }
        let cost = self.settings.verification_cost;
        for _ in 0..SAVE_ATTEMPTS {
            let customer = self
                .ports
                .customers
                .get(firm, id)
                .await?
                .ok_or(StartError::NotFound)?;
            if let Some(attempt) = customer
                .latest_attempt()
                .filter(|a| a.phase == AttemptPhase::Starting)
                .map(|a| a.number)
            {
                return self.finish_start(customer, attempt).await;
            }
            if confirmed_cost != cost {
                return Err(StartError::PriceChanged {
                    confirmed: confirmed_cost,
                    current: cost,
                });
            }
            let mut claimed = customer.clone();
            let (attempt, events) = claimed
                .begin_verification(person, cost, &self.settings.levels, self.ports.clock.now())
                .map_err(|e| match e {
                    LifecycleError::Forbidden { .. } => StartError::Forbidden,
                    other => StartError::NotStartable(other),
                })?;
            let hold = hold_key(id, attempt);
            // Reserve before claiming: a refused reserve leaves the customer untouched. Two
            // concurrent requests compute the same attempt number and so share one hold.
            self.ports
                .ledger
                .reserve(firm, hold, cost, &IdempotencyKey::for_hold("reserve", hold))
                .await?;
            match self.persist(&mut claimed, &events).await {
                Ok(()) => return self.finish_start(claimed, attempt).await,
                Err(SaveError::VersionConflict) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(StartError::Contended)
    }

    async fn finish_start(
        &self,
        customer: Customer,
        attempt: AttemptNumber,
    ) -> Result<Started, StartError> {
        let firm = customer.firm_id;
        match self.drive(customer, attempt).await? {
            Drive::Opened(customer) => {
                let record = customer
                    .attempt(attempt)
                    .ok_or_else(|| StartError::Ledger("opened attempt vanished".into()))?;
                let link_token = self.ports.ids.link_token(&record.external_user_id);
                let charged_credits = record.cost;
                let balance = self.ports.ledger.balance(firm).await?;
                Ok(Started {
                    customer: *customer,
                    attempt,
                    charged_credits,
                    balance,
                    link_token,
                })
            }
            Drive::Refused(reason) => Err(StartError::ProviderRefused { reason }),
            Drive::Unavailable(reason) => Err(StartError::ProviderUnavailable { reason }),
        }
    }

    /// Phases 2–4 for a claimed attempt: applicant, then post and open, or void and abandon.
    /// Every step is idempotent, so the request, a retry and the recovery worker may all run it.
    async fn drive(&self, customer: Customer, attempt: AttemptNumber) -> Result<Drive, StartError> {
        let firm = customer.firm_id;
        let id = customer.id;
        let hold = hold_key(id, attempt);
        let record = customer
            .attempt(attempt)
            .ok_or_else(|| StartError::Ledger(format!("attempt {attempt} vanished")))?;
        match record.phase {
            AttemptPhase::Open => return Ok(Drive::Opened(Box::new(customer))),
            AttemptPhase::Voided | AttemptPhase::Closed => {
                return Ok(Drive::Refused(
                    record
                        .void_reason
                        .clone()
                        .unwrap_or_else(|| "the attempt was abandoned".to_owned()),
                ));
            }
            AttemptPhase::Starting => {}
        }
        let request = ApplicantRequest {
            external_user_id: record.external_user_id.clone(),
            level_name: record.level_name.clone(),
            email: customer.email.clone(),
            phone: customer.phone.clone(),
            full_name: customer.full_name.clone(),
            customer_type: customer.customer_type,
        };
        let actor = Actor::system("start-verification");
        match self.ports.provider.create_applicant(&request).await {
            Ok(applicant) => {
                let posted = self
                    .ports
                    .ledger
                    .post(firm, hold, &IdempotencyKey::for_hold("post", hold))
                    .await?;
                debug_assert_eq!(posted.state, HoldState::Posted);
                let token = self.ports.ids.link_token(&request.external_user_id);
                let now = self.ports.clock.now();
                let opened = self
                    .mutate(firm, id, |c| {
                        c.complete_verification(
                            attempt,
                            applicant.id.clone(),
                            token.token_hash.clone(),
                            &actor,
                            now,
                        )
                    })
                    .await
                    .map_err(|e| match e {
                        super::CommandError::NotFound => StartError::NotFound,
                        super::CommandError::Refused(r) => StartError::NotStartable(r),
                        super::CommandError::Contended => StartError::Contended,
                        super::CommandError::Infrastructure(i) => StartError::Infrastructure(i),
                    })?;
                Ok(Drive::Opened(Box::new(opened)))
            }
            Err(ProviderError::Refused { status, reason }) => {
                warn!(
                    status,
                    "identity provider refused the applicant; releasing the hold"
                );
                self.ports
                    .ledger
                    .void(firm, hold, &IdempotencyKey::for_hold("void", hold))
                    .await?;
                let now = self.ports.clock.now();
                let why = format!("the identity provider refused ({status}): {reason}");
                self.mutate(firm, id, |c| {
                    c.abandon_verification(attempt, &why, &actor, now)
                })
                .await
                .map_err(|e| match e {
                    super::CommandError::Infrastructure(i) => StartError::Infrastructure(i),
                    other => StartError::Ledger(other.to_string()),
                })?;
                Ok(Drive::Refused(why))
            }
            Err(ProviderError::Transient { reason }) => Ok(Drive::Unavailable(reason)),
        }
    }

    /// One pass of the recovery worker: drives attempts left `Starting` and holds left pending
    /// without a claim, both older than [`super::Settings::stuck_after`]. Safe to run on several
    /// replicas at once: every step is idempotent and every save is optimistic.
    ///
    /// # Errors
    /// [`StartError::Infrastructure`] when storage or the ledger cannot be read; per-attempt
    /// failures are counted as deferred.
    #[instrument(skip_all, err(level = "info"))]
    pub async fn recover_stuck_attempts(&self, limit: u32) -> Result<RecoveryReport, StartError> {
        let mut report = RecoveryReport::default();
        let now = self.ports.clock.now();
        let stuck_after = self.settings.stuck_after;
        let before = now - stuck_after;
        for location in self
            .ports
            .customers
            .stuck_attempts(now, stuck_after, limit)
            .await?
        {
            match self.recover_attempt(location).await {
                Ok(Some(Drive::Opened(_))) => report.completed += 1,
                Ok(Some(Drive::Refused(_))) => report.voided += 1,
                Ok(Some(Drive::Unavailable(_))) | Err(_) => report.deferred += 1,
                Ok(None) => {}
            }
        }
        for hold in self.ports.ledger.pending_holds(before, limit).await? {
            match self.recover_hold(&hold).await {
                Ok(Some(true)) => report.voided += 1,
                Ok(Some(false)) => report.completed += 1,
                Ok(None) => {}
                Err(_) => report.deferred += 1,
            }
        }
        Ok(report)
    }

    async fn recover_attempt(
        &self,
        location: AttemptLocation,
    ) -> Result<Option<Drive>, StartError> {
        let Some(customer) = self
            .ports
            .customers
            .get(location.firm_id, location.customer_id)
            .await?
        else {
            return Ok(None);
        };
        let Some(attempt) = customer
            .latest_attempt()
            .filter(|a| a.phase == AttemptPhase::Starting)
            .map(|a| a.number)
        else {
            return Ok(None);
        };
        self.drive(customer, attempt).await.map(Some)
    }

    /// Settles a hold that is still pending. `Some(true)` when it was voided, `Some(false)` when
    /// its attempt was completed, `None` when nothing needed doing.
    async fn recover_hold(&self, pending: &Hold) -> Result<Option<bool>, StartError> {
        let (firm, hold) = (pending.firm_id, pending.key);
        let void = |this: &Self| {
            let ledger = this.ports.ledger.clone();
            async move {
                ledger
                    .void(firm, hold, &IdempotencyKey::for_hold("void", hold))
                    .await
                    .map(|_| Some(true))
                    .map_err(StartError::from)
            }
        };
        let Some(customer) = self.ports.customers.get(firm, hold.customer).await? else {
            return void(self).await;
        };
        match customer.attempt(hold.attempt).map(|a| a.phase) {
            Some(AttemptPhase::Starting) => match self.drive(customer, hold.attempt).await? {
                Drive::Opened(_) => Ok(Some(false)),
                Drive::Refused(_) => Ok(Some(true)),
                Drive::Unavailable(_) => Ok(None),
            },
            Some(AttemptPhase::Open | AttemptPhase::Closed) => {
                // The attempt opened, so its applicant exists: the charge is due.
                self.ports
                    .ledger
                    .post(firm, hold, &IdempotencyKey::for_hold("post", hold))
                    .await?;
                Ok(Some(false))
            }
            Some(AttemptPhase::Voided) => void(self).await,
            None => {
                // Credits were held but the claim never landed. Write the attempt down as voided
                // first, so that a request still in flight cannot claim this number and use the
                // released hold; only then release it.
                let actor = Actor::system("recovery");
                let now = self.ports.clock.now();
                let cost = pending.credits;
                self.mutate(firm, hold.customer, |c| {
                    if c.attempt(hold.attempt).is_some() {
                        return Ok(Vec::new());
                    }
                    c.void_unclaimed_attempt(hold.attempt, cost, &actor, now)
                })
                .await
                .map_err(|e| match e {
                    super::CommandError::Infrastructure(i) => StartError::Infrastructure(i),
                    other => StartError::Ledger(other.to_string()),
                })?;
                // A concurrent claim may have won the number: settle by what is stored now.
                let now_stored = self.ports.customers.get(firm, hold.customer).await?;
                match now_stored
                    .as_ref()
                    .and_then(|c| c.attempt(hold.attempt))
                    .map(|a| a.phase)
                {
                    Some(AttemptPhase::Voided) | None => void(self).await,
                    Some(AttemptPhase::Starting | AttemptPhase::Open | AttemptPhase::Closed) => {
                        Ok(None)
                    }
                }
            }
        }
    }
}
