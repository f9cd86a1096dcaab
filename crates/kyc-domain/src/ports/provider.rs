//! The identity provider (Sumsub in production, its simulator in demos and tests) and its AML
//! screening, as the domain needs them.

use async_trait::async_trait;

use crate::aml::AmlHit;
use crate::customer::VerifiedIdentity;
use crate::ids::{ApplicantId, ExternalUserId};
use crate::values::{CustomerType, Email, FullName, Phone};

/// Why a provider call failed. The split tells the domain what it may do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider definitely refused (a 4xx other than 409 and 429): repeating will not help,
    /// and nothing was created.
    #[error("the identity provider refused the request ({status}): {reason}")]
    Refused {
        /// The provider's HTTP status.
        status: u16,
        /// The provider's description, free of secrets and personal data.
        reason: String,
    },
    /// Timeout, 5xx, 429, connection failure: the call may or may not have taken effect, and is
    /// safe to repeat later (every call the domain makes is idempotent).
    #[error("the identity provider is unavailable: {reason}")]
    Transient {
        /// What went wrong.
        reason: String,
    },
}

/// What the provider needs to create an applicant for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicantRequest {
    /// Derived from `(customer, attempt)`: the idempotency key of the creation.
    pub external_user_id: ExternalUserId,
    /// The level chosen by risk.
    pub level_name: String,
    /// Contact details the provider may prefill.
    pub email: Email,
    /// Phone.
    pub phone: Option<Phone>,
    /// Name (for the provider's AML screening).
    pub full_name: FullName,
    /// Individual or sole trader.
    pub customer_type: CustomerType,
}

/// An applicant at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applicant {
    /// The provider's id.
    pub id: ApplicantId,
    /// The external user id it was created with.
    pub external_user_id: ExternalUserId,
}

/// Identity verification at the provider.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait IdentityProvider: Send + Sync {
    /// Creates the applicant of an attempt, or returns the one that already exists for this
    /// external user id (a retry never creates a second).
    ///
    /// # Errors
    /// [`ProviderError::Refused`] when the provider definitely refuses (unknown level, invalid
    /// data…); [`ProviderError::Transient`] when the outcome is unknown.
    async fn create_applicant(
        &self,
        request: &ApplicantRequest,
    ) -> Result<Applicant, ProviderError>;

    /// The applicant created for this external user id, if any.
    ///
    /// # Errors
    /// [`ProviderError`] as for `create_applicant`; a missing applicant is `Ok(None)`.
    async fn find_applicant(
        &self,
        external_user_id: &ExternalUserId,
    ) -> Result<Option<Applicant>, ProviderError>;

    /// A fresh link to the provider's hosted flow for this applicant, valid for `ttl_secs`.
    ///
    /// # Errors
    /// [`ProviderError`].
    async fn verification_link(
        &self,
        external_user_id: &ExternalUserId,
        level_name: &str,
        ttl_secs: u32,
    ) -> Result<String, ProviderError>;

    /// The verified name and country of an approved applicant, when the provider has them.
    ///
    /// # Errors
    /// [`ProviderError`].
    async fn verified_identity(
        &self,
        applicant_id: &ApplicantId,
    ) -> Result<Option<VerifiedIdentity>, ProviderError>;
}

/// AML screening at the provider.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait AmlScreening: Send + Sync {
    /// The hits of the applicant's current AML case (empty when clear). Hits come back without a
    /// disposition; the domain keeps the ones people already reviewed.
    ///
    /// # Errors
    /// [`ProviderError`].
    async fn fetch_hits(&self, applicant_id: &ApplicantId) -> Result<Vec<AmlHit>, ProviderError>;

    /// Asks the provider to screen the applicant again (ongoing due diligence).
    ///
    /// # Errors
    /// [`ProviderError`].
    async fn request_rescreen(&self, applicant_id: &ApplicantId) -> Result<(), ProviderError>;
}
