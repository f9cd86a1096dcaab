//! What happens after the start: provider events, the customer's link, AML screening, the
//! compliance officer's review, and restarts.

use tracing::instrument;

use super::{CommandError, KycService, SAVE_ATTEMPTS};
use crate::aml::{AmlDecision, Disposition, HitKey};
use crate::customer::{AttemptPhase, Customer, LinkOutcome};
use crate::events::{Actor, Person, outbox_for};
use crate::ids::{AttemptNumber, CustomerId, FirmId};
use crate::ports::{InfrastructureError, ProviderError, SaveError};
use crate::provider::ProviderEvent;
use crate::values::Note;

/// What became of a provider event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderEventOutcome {
    /// Recorded on its customer (applied, or kept as ignored by the ordering rules).
    Recorded {
        /// The firm.
        firm_id: FirmId,
        /// The customer.
        customer_id: CustomerId,
    },
    /// Already recorded: a second delivery, no second effect.
    Duplicate,
    /// No attempt of this service matches: recorded as orphaned.
    Orphaned,
}

/// Why a provider event could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum ProviderEventError {
    /// Concurrent changes kept winning; the provider will redeliver.
    #[error("the customer is being changed concurrently; retry")]
    Contended,
    /// Infrastructure failure; the provider will redeliver.
    #[error(transparent)]
    Infrastructure(#[from] InfrastructureError),
}

/// What opening the link leads to, with the provider's fresh link when the customer continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkDestination {
    /// Redirect here (a fresh provider link).
    Provider(String),
    /// Show a friendly page: nothing left to do behind this link.
    Finished(crate::status::KycStatus),
}

/// Why the link could not be followed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Unknown customer or attempt.
    #[error("unknown verification link")]
    NotFound,
    /// The provider could not mint a link now.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// Storage failure or contention.
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// Why a screening pass did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ScreeningError {
    /// The provider could not be reached; the job should be retried.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// Storage failure or contention.
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl KycService {
    /// Records a verified provider event on its customer, in one save with its effect (product
    /// brief §3): duplicates have no second effect, unknown applicants are kept as orphaned.
    ///
    /// # Errors
    /// [`ProviderEventError`]; the caller answers non-2xx so the provider redelivers.
    #[instrument(skip_all, fields(event_type = event.kind.name()), err(level = "info"))]
    pub async fn apply_provider_event(
        &self,
        event: &ProviderEvent,
    ) -> Result<ProviderEventOutcome, ProviderEventError> {
        let store = &self.ports.customers;
        let applicant = event.applicant_id.as_ref();
        let external = event.external_user_id.as_ref();
        // No "seen already?" read first: the save records the event's key in the same transaction
        // and refuses a key recorded before (`DuplicateInbound`), orphans included, so a second
        // delivery costs the reads of a first one and changes nothing.
        for _ in 0..SAVE_ATTEMPTS {
            let located = store.find_by_attempt(applicant, external).await?;
            let Some((mut customer, attempt)) = located.and_then(|c| {
                let attempt = c.attempt_for_provider(applicant, external)?;
                Some((c, attempt))
            }) else {
                return Ok(if store.record_orphan_event(event).await? {
                    ProviderEventOutcome::Orphaned
                } else {
                    ProviderEventOutcome::Duplicate
                });
            };
            let now = self.ports.clock.now();
            let events = customer
                .apply_provider_event(attempt, event, now)
                .map_err(|_| ProviderEventError::Contended)?;
            let outbox = outbox_for(customer.firm_id, customer.id, &events);
            match store
                .save(&customer, &events, &outbox, Some(&event.key))
                .await
            {
                Ok(_) => {
                    return Ok(ProviderEventOutcome::Recorded {
                        firm_id: customer.firm_id,
                        customer_id: customer.id,
                    });
                }
                Err(SaveError::DuplicateInbound) => return Ok(ProviderEventOutcome::Duplicate),
                Err(SaveError::VersionConflict) => continue,
                Err(SaveError::DuplicateExternalId) => return Err(ProviderEventError::Contended),
                Err(SaveError::Infrastructure(e)) => return Err(e.into()),
            }
        }
        Err(ProviderEventError::Contended)
    }

    /// The customer opened the link of an attempt: `PENDING`/`AWAITING_RESUBMISSION` →
    /// `IN_PROGRESS` (recorded before the redirect), then a fresh provider link.
    ///
    /// # Errors
    /// [`LinkError`].
    #[instrument(skip_all, fields(firm_id = %firm, customer_id = %id), err(level = "info"))]
    pub async fn open_link(
        &self,
        firm: FirmId,
        id: CustomerId,
        attempt: AttemptNumber,
    ) -> Result<LinkDestination, LinkError> {
        let now = self.ports.clock.now();
        let mut outcome = None;
        self.mutate(firm, id, |customer| {
            let (result, events) = customer.open_link(attempt, now)?;
            outcome = Some(result);
            Ok(events)
        })
        .await
        .map_err(|e| match e {
            CommandError::NotFound | CommandError::Refused(_) => LinkError::NotFound,
            other => LinkError::Command(other),
        })?;
        match outcome.ok_or(LinkError::NotFound)? {
            LinkOutcome::Continue {
                external_user_id,
                level_name,
            } => {
                let url = self
                    .ports
                    .provider
                    .verification_link(&external_user_id, &level_name, self.settings.link_ttl_secs)
                    .await?;
                Ok(LinkDestination::Provider(url))
            }
            LinkOutcome::Finished { status } => Ok(LinkDestination::Finished(status)),
        }
    }

    /// Screens a verified customer (the outbox job after `VERIFIED`, and re-screening): marks
    /// `IN_PROGRESS`, fetches the provider's AML case and the verified identity, records both.
    /// Does nothing for a customer who is no longer verified.
    ///
    /// # Errors
    /// [`ScreeningError`]; the job is retried later.
    #[instrument(skip_all, fields(firm_id = %firm, customer_id = %id), err(level = "info"))]
    pub async fn run_screening(
        &self,
        firm: FirmId,
        id: CustomerId,
    ) -> Result<Customer, ScreeningError> {
        let actor = Actor::system("aml-screening");
        let now = self.ports.clock.now();
        let customer = self
            .mutate(firm, id, |c| {
                if c.kyc_status == crate::status::KycStatus::Verified {
                    c.start_screening(&actor, now)
                } else {
                    Ok(Vec::new())
                }
            })
            .await?;
        let Some(applicant) = screening_applicant(&customer) else {
            return Ok(customer);
        };
        let hits = self.ports.screening.fetch_hits(&applicant).await?;
        let identity = self.ports.provider.verified_identity(&applicant).await?;
        let now = self.ports.clock.now();
        Ok(self
            .mutate(firm, id, |c| {
                if c.kyc_status != crate::status::KycStatus::Verified {
                    return Ok(Vec::new());
                }
                let mut events = Vec::new();
                if let Some(identity) = identity.clone() {
                    events.extend(c.capture_identity(identity, &actor, now)?);
                }
                events.extend(c.record_screening(hits.clone(), &actor, now)?);
                Ok(events)
            })
            .await?)
    }

    /// Asks the provider to screen a verified customer again, then records the result.
    ///
    /// # Errors
    /// [`ScreeningError`].
    pub async fn rescreen(&self, firm: FirmId, id: CustomerId) -> Result<Customer, ScreeningError> {
        let customer = self
            .ports
            .customers
            .get(firm, id)
            .await
            .map_err(CommandError::from)?
            .ok_or(CommandError::NotFound)?;
        if let Some(applicant) = screening_applicant(&customer) {
            self.ports.screening.request_rescreen(&applicant).await?;
        }
        self.run_screening(firm, id).await
    }

    /// A compliance officer sets the disposition of a hit.
    ///
    /// # Errors
    /// [`CommandError`].
    pub async fn set_hit_disposition(
        &self,
        firm: FirmId,
        id: CustomerId,
        person: &Person,
        hit: &HitKey,
        disposition: Disposition,
        note: Note,
    ) -> Result<Customer, CommandError> {
        let now = self.ports.clock.now();
        self.mutate(firm, id, |c| {
            c.set_disposition(hit, disposition, note.clone(), person, now)
        })
        .await
    }

    /// A compliance officer records the final AML decision.
    ///
    /// # Errors
    /// [`CommandError`].
    pub async fn record_aml_decision(
        &self,
        firm: FirmId,
        id: CustomerId,
        person: &Person,
        decision: AmlDecision,
        rationale: Note,
    ) -> Result<Customer, CommandError> {
        let now = self.ports.clock.now();
        self.mutate(firm, id, |c| {
            c.record_decision(decision, rationale.clone(), person, now)
        })
        .await
    }

    /// A compliance officer restarts a failed verification.
    ///
    /// # Errors
    /// [`CommandError`].
    pub async fn restart_verification(
        &self,
        firm: FirmId,
        id: CustomerId,
        person: &Person,
        reason: Note,
    ) -> Result<Customer, CommandError> {
        let now = self.ports.clock.now();
        self.mutate(firm, id, |c| c.restart(reason.clone(), person, now))
            .await
    }
}

/// The applicant of the customer's open attempt, the one screening runs against.
fn screening_applicant(customer: &Customer) -> Option<crate::ids::ApplicantId> {
    customer
        .attempts
        .iter()
        .rev()
        .find(|a| a.phase == AttemptPhase::Open)
        .and_then(|a| a.applicant_id.clone())
}
