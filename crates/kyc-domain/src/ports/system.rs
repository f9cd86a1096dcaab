//! Time, identity and secrets: what a pure domain cannot make up itself.

use std::fmt;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{InfrastructureError, WebhookEndpointId};
use crate::ids::{ApiKeyId, CustomerId, ExternalUserId, UserId};
use crate::values::Password;

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

    /// A new back-office user id (UUID v7 in production).
    fn user_id(&self) -> UserId;

    /// A new API key id (UUID v7 in production).
    fn api_key_id(&self) -> ApiKeyId;

    /// A new webhook endpoint id (UUID v7 in production).
    fn webhook_endpoint_id(&self) -> WebhookEndpointId;

    /// The verification link token of an attempt: 128 bits that look random and cannot be
    /// guessed without the server's secret (an HMAC of the attempt's external user id), and are
    /// the same each time they are derived. A retried or resumed Start Verification, a second
    /// replica and the back office all show the same link, while storage keeps only the hash.
    fn link_token(&self, attempt: &ExternalUserId) -> IssuedToken;
}

/// A freshly minted API key: the key itself, shown to the person who created it once and never
/// stored, and the parts storage keeps to recognise and display it. `Debug` leaves the key out.
#[derive(Clone, PartialEq, Eq)]
pub struct MintedApiKey {
    /// The whole key (`kyc_live_…` or `kyc_test_…`), shown once.
    pub key: String,
    /// Its first 12 characters, shown in the back office.
    pub prefix: String,
    /// Its last 4 characters, shown in the back office.
    pub last4: String,
    /// The SHA-256 of the whole key, lowercase hex: what a request is matched by.
    pub sha256: String,
}

impl fmt::Debug for MintedApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedApiKey")
            .field("key", &"[redacted]")
            .field("prefix", &self.prefix)
            .field("last4", &self.last4)
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// Password hashing and API key minting: the cryptography behind back-office logins and CRM keys,
/// kept out of the domain so it needs no hashing library and tests can use a cheap stand-in.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Credentials: Send + Sync {
    /// The password's hash in PHC string form (argon2id in production), with a fresh salt: what
    /// [`User::password_hash`](super::User::password_hash) holds and login verifies against.
    /// Deliberately slow, so an adapter runs it where it does not hold up other requests.
    ///
    /// # Errors
    /// [`InfrastructureError`] only, when hashing could not run at all; nothing was stored.
    async fn hash_password(&self, password: &Password) -> Result<String, InfrastructureError>;

    /// A new API key: `kyc_test_` (a sandbox key) or `kyc_live_` followed by at least 256
    /// random bits in URL-safe characters, with its display parts and SHA-256.
    fn mint_api_key(&self, sandbox: bool) -> MintedApiKey;

    /// A new webhook signing secret in the Standard Webhooks form: `whsec_` followed by the
    /// standard base64 of at least 192 random bits.
    fn mint_webhook_secret(&self) -> String;
}

/// A request refused because one of its key's windows is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowFull {
    /// The limit of the full window.
    pub limit: u32,
    /// The window's length, in seconds.
    pub window_seconds: u64,
    /// When the window frees up, in whole seconds (at least 1).
    pub retry_after_secs: u64,
}

/// Per-API-key request counts shared by every replica of the service: a burst window of one
/// minute and a daily window of 24 hours, each a fixed window that starts with the key's first
/// request in it. A refused request counts in neither window.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait RequestLimits: Send + Sync {
    /// Counts a request of `key` at `now`, or refuses it when either window is full; a limit of
    /// `0` disables its window.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn admit(
        &self,
        key: ApiKeyId,
        now: OffsetDateTime,
        per_minute: u32,
        per_day: u32,
    ) -> Result<Result<(), WindowFull>, InfrastructureError>;
}

/// Failed back-office logins, shared by every replica of the service, so a limit on failures per
/// account or per client address holds for the deployment. Keys are opaque to the store (the
/// caller hashes them: an account's key would otherwise carry its email).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait LoginFailures: Send + Sync {
    /// How many failures `key` has after `since`, and when the oldest of them was.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn failures_since(
        &self,
        key: &str,
        since: OffsetDateTime,
    ) -> Result<(u32, Option<OffsetDateTime>), InfrastructureError>;

    /// Records a failure of each key at `at`, and forgets their failures before
    /// `forget_before` (out of every window).
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn record_failure(
        &self,
        keys: &[String],
        at: OffsetDateTime,
        forget_before: OffsetDateTime,
    ) -> Result<(), InfrastructureError>;

    /// Forgets every failure of `key` (a successful login of the account).
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn clear_failures(&self, key: &str) -> Result<(), InfrastructureError>;
}
