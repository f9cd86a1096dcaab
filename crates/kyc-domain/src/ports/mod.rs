//! Ports: what the domain needs from the outside world, as narrow async traits. Adapters implement
//! them (Postgres and SQLite storage, the credits ledger, the Sumsub client); use cases hold them as
//! `Arc<dyn Port>`. With the `mock` feature every port has a mockall mock (`MockCustomerStore`…).
//!
//! Each method lists under `# Errors` what every adapter MUST return in which case, so the use
//! cases can rely on it whatever adapter is plugged in.

mod accounts;
mod audit;
mod delivery;
mod idempotency;
mod ledger;
mod provider;
mod store;
mod system;

pub use accounts::*;
pub use audit::*;
pub use delivery::*;
pub use idempotency::*;
pub use ledger::*;
pub use provider::*;
pub use store::*;
pub use system::*;

/// A failure of the infrastructure behind a port (database down, connection reset, a driver bug):
/// nothing the domain can act on except retrying later or reporting an internal error. Keeps the
/// cause chain without naming any driver type.
#[derive(Debug, thiserror::Error)]
pub enum InfrastructureError {
    /// The backing service cannot be reached now; the same call may succeed later.
    #[error("backing service unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Anything else: a bug, corrupt data, a constraint nobody expected.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl InfrastructureError {
    /// Wraps a cause as [`InfrastructureError::Internal`].
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(cause.into())
    }

    /// Wraps a cause as [`InfrastructureError::Unavailable`].
    pub fn unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable(cause.into())
    }
}
