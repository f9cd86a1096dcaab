//! Idempotency records: the first request with an `Idempotency-Key` claims it, its response is
//! stored, and a retry gets that response back instead of doing the work twice.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::InfrastructureError;
use crate::ids::FirmId;

/// What an idempotency key is unique within: one firm, one method, one path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyScope {
    /// The firm.
    pub firm_id: FirmId,
    /// HTTP method, upper case.
    pub method: String,
    /// Request path.
    pub path: String,
    /// The client's `Idempotency-Key`.
    pub key: String,
}

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status code.
    pub status: u16,
    /// The headers to replay, in order.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

/// What [`IdempotencyStore::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This caller owns the key now: do the work, then `complete` or `release`.
    Claimed,
    /// Another request with the same key and body is being processed.
    InProgress,
    /// The work was done: replay this response.
    Completed(StoredResponse),
    /// The key was used with a different request body.
    FingerprintMismatch,
}

/// Storage of idempotency records.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims the key for a request with this fingerprint (a hash of method, path and body),
    /// atomically: of concurrent claims of one key exactly one gets [`ClaimOutcome::Claimed`]. A
    /// record whose `expires_at` is not after `now` counts as absent.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn claim(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &str,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<ClaimOutcome, InfrastructureError>;

    /// Stores the response of a claimed key. Returns `false` when the key is not claimed (it
    /// expired and was purged, or was released).
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn complete(
        &self,
        scope: &IdempotencyScope,
        response: &StoredResponse,
    ) -> Result<bool, InfrastructureError>;

    /// Gives up a claim whose work failed without effect, so a retry may claim it again. A
    /// completed record is left alone.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn release(&self, scope: &IdempotencyScope) -> Result<(), InfrastructureError>;

    /// Deletes every record that expired at or before `now`. Returns how many.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, InfrastructureError>;
}
