//! Time and identity: the two things a pure domain cannot make up itself.

use time::OffsetDateTime;

use crate::ids::{CustomerId, ExternalUserId};

/// The current time. Tests use a fixed or stepping clock.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// A verification link token. Storage keeps only its hash; the plaintext goes into the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The token for the link (at least 128 random bits, URL-safe).
    pub token: String,
    /// Its SHA-256, lowercase hex: what storage keeps and looks up by.
    pub token_hash: String,
}

/// New ids and secrets.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait IdGenerator: Send + Sync {
    /// A new customer id (UUID v7 in production: time-ordered, index-friendly).
    fn customer_id(&self) -> CustomerId;

    /// The verification link token of an attempt: 128 bits that look random and cannot be
    /// guessed without the server's secret (an HMAC of the attempt's external user id), and are
    /// the same each time they are derived. A retried or resumed Start Verification, a second
    /// replica and the back office all show the same link, while storage keeps only the hash.
    fn link_token(&self, attempt: &ExternalUserId) -> IssuedToken;
}
