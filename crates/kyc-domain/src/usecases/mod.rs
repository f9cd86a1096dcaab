//! Use cases: the orchestration of the aggregate and the ports. Each one loads what it needs,
//! asks the aggregate to make the move (which refuses or returns the events), and saves state,
//! events and outbox messages together. A save that loses an optimistic-concurrency race is
//! retried from a fresh load, so concurrent requests never overwrite each other.
//!
//! [`AccessService`] administers a firm's back-office users and API keys.

mod access;
mod customers;
mod review;
mod verification;
mod webhooks;

use std::sync::Arc;

pub use access::*;
pub use customers::*;
pub use review::*;
pub use verification::*;
pub use webhooks::*;

use crate::customer::Customer;
use crate::error::LifecycleError;
use crate::events::{DomainEvent, outbox_for};
use crate::ids::{CustomerId, FirmId};
use crate::ports::{
    AmlScreening, Clock, CreditsLedger, CustomerStore, IdGenerator, IdentityProvider,
    InfrastructureError, SaveError,
};
use crate::risk::ProviderLevels;
use crate::values::Credits;

/// How many times a use case reloads and retries after losing an optimistic-concurrency race
/// before it reports the conflict.
const SAVE_ATTEMPTS: usize = 8;

/// The ports a [`KycService`] drives.
#[derive(Clone)]
pub struct Ports {
    /// Customer storage.
    pub customers: Arc<dyn CustomerStore>,
    /// The credits ledger.
    pub ledger: Arc<dyn CreditsLedger>,
    /// The identity provider.
    pub provider: Arc<dyn IdentityProvider>,
    /// AML screening.
    pub screening: Arc<dyn AmlScreening>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Ids and link tokens.
    pub ids: Arc<dyn IdGenerator>,
}

/// Settings the use cases need (read once by the binary from its configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The price of one verification attempt.
    pub verification_cost: Credits,
    /// Provider levels by risk rating.
    pub levels: ProviderLevels,
    /// How long an attempt may stay `Starting` (or a hold pending) before recovery takes it over.
    /// Longer than the slowest Start Verification request can take.
    pub stuck_after: time::Duration,
    /// Lifetime of a freshly minted provider link.
    pub link_ttl_secs: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            verification_cost: Credits::new(1),
            levels: ProviderLevels::default(),
            stuck_after: time::Duration::minutes(2),
            link_ttl_secs: 1800,
        }
    }
}

/// The application service: every use case of the lifecycle.
#[derive(Clone)]
pub struct KycService {
    ports: Ports,
    settings: Settings,
}

/// A failure shared by the commands on one customer.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such customer in this firm (or another firm's).
    #[error("customer not found")]
    NotFound,
    /// The lifecycle refused the move; nothing changed.
    #[error(transparent)]
    Refused(#[from] LifecycleError),
    /// Concurrent changes kept winning; nothing changed. Retry.
    #[error("the customer is being changed concurrently; retry")]
    Contended,
    /// Infrastructure failure.
    #[error(transparent)]
    Infrastructure(#[from] InfrastructureError),
}

impl From<SaveError> for CommandError {
    fn from(error: SaveError) -> Self {
        match error {
            SaveError::VersionConflict | SaveError::DuplicateInbound => Self::Contended,
            SaveError::DuplicateExternalId => Self::Refused(LifecycleError::ExternalIdImmutable),
            SaveError::Infrastructure(e) => Self::Infrastructure(e),
        }
    }
}

impl KycService {
    /// Wires the ports and settings.
    pub fn new(ports: Ports, settings: Settings) -> Self {
        Self { ports, settings }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The ports, for adapters composed around the service.
    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// Saves a changed customer with the events of the move and the outbox messages they call
    /// for; bumps the in-memory version on success.
    async fn persist(
        &self,
        customer: &mut Customer,
        events: &[DomainEvent],
    ) -> Result<(), SaveError> {
        let outbox = outbox_for(customer.firm_id, customer.id, events);
        let saved = self
            .ports
            .customers
            .save(customer, events, &outbox, None)
            .await?;
        customer.saved(saved);
        Ok(())
    }

    /// Loads, applies `change`, saves; reloads and re-applies when a concurrent save won. A move
    /// that records no event saves nothing.
    async fn mutate<F>(
        &self,
        firm: FirmId,
        id: CustomerId,
        mut change: F,
    ) -> Result<Customer, CommandError>
    where
        F: FnMut(&mut Customer) -> Result<Vec<DomainEvent>, LifecycleError> + Send,
    {
        for _ in 0..SAVE_ATTEMPTS {
            let mut customer = self
                .ports
                .customers
                .get(firm, id)
                .await?
                .ok_or(CommandError::NotFound)?;
            let events = change(&mut customer)?;
            if events.is_empty() {
                return Ok(customer);
            }
            match self.persist(&mut customer, &events).await {
                Ok(()) => return Ok(customer),
                Err(SaveError::VersionConflict) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(CommandError::Contended)
    }
}
