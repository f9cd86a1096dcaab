//! Why the aggregate refused a move. Every refusal says what was asked and why, and a refused move
//! changes nothing.

use crate::aml::HitKey;
use crate::ids::AttemptNumber;
use crate::status::{AmlStatus, KycStatus};
use crate::values::ValidationError;

/// What a person, the link or a worker asked the lifecycle to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Confirm risk answers.
    ConfirmRisk,
    /// Start Verification.
    StartVerification,
    /// Complete a starting attempt (applicant created, charge posted).
    CompleteVerification,
    /// Abandon a starting attempt.
    AbandonVerification,
    /// Open the verification link.
    OpenLink,
    /// Restart after `FAILED`.
    Restart,
    /// Start AML screening.
    StartScreening,
    /// Record a disposition on a hit.
    SetDisposition,
    /// Record the final AML decision.
    RecordDecision,
    /// Change a contact field.
    UpdateContact,
    /// Store the verified identity summary.
    CaptureIdentity,
    /// Apply a provider event.
    ApplyProviderEvent,
    /// Record a screening result.
    RecordScreening,
}

impl Action {
    /// A readable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ConfirmRisk => "confirming risk answers",
            Self::StartVerification => "starting verification",
            Self::CompleteVerification => "completing the start of verification",
            Self::AbandonVerification => "abandoning the start of verification",
            Self::OpenLink => "opening the verification link",
            Self::Restart => "restarting verification",
            Self::StartScreening => "starting AML screening",
            Self::SetDisposition => "setting a hit disposition",
            Self::RecordDecision => "recording the AML decision",
            Self::UpdateContact => "changing contact details",
            Self::CaptureIdentity => "storing the verified identity",
            Self::ApplyProviderEvent => "applying a provider event",
            Self::RecordScreening => "recording a screening result",
        }
    }
}

/// A refused move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    /// The move is not in the lifecycle table for this `kyc_status`.
    #[error("{} is not allowed while kyc_status is {status}: {reason}", action.as_str())]
    NotAllowed {
        /// What was asked.
        action: Action,
        /// The status it was asked in.
        status: KycStatus,
        /// Why not, in words.
        reason: &'static str,
    },
    /// The move is not allowed for this `aml.status`.
    #[error("{} is not allowed while aml.status is {status}", action.as_str())]
    AmlNotAllowed {
        /// What was asked.
        action: Action,
        /// The AML status it was asked in.
        status: AmlStatus,
    },
    /// Start Verification needs answers confirmed by a person, with the designated service in scope.
    #[error(
        "the risk questions must be confirmed by a person, with the designated service in scope, before verification can start"
    )]
    RiskNotConfirmed,
    /// The role of the person may not do this.
    #[error("{} requires the role {required}", action.as_str())]
    Forbidden {
        /// What was asked.
        action: Action,
        /// The role that may.
        required: &'static str,
    },
    /// Another start of this customer is already under way.
    #[error("verification attempt {attempt} is already being started")]
    AttemptAlreadyStarting {
        /// That attempt.
        attempt: AttemptNumber,
    },
    /// No such attempt, or it is not in the phase the move needs.
    #[error("{} does not apply to verification attempt {attempt}: {reason}", action.as_str())]
    AttemptMismatch {
        /// What was asked.
        action: Action,
        /// The attempt named.
        attempt: AttemptNumber,
        /// Why it does not apply.
        reason: &'static str,
    },
    /// No hit with this id.
    #[error("no AML hit with id {0}")]
    HitNotFound(HitKey),
    /// The decision needs every hit to have a disposition first.
    #[error("{open} AML hit(s) still need a disposition before a decision can be recorded")]
    HitsAwaitingDisposition {
        /// How many hits are open.
        open: usize,
    },
    /// Identity fields freeze once verified.
    #[error("{field} cannot be changed once the customer is VERIFIED")]
    IdentityFrozen {
        /// The contract's name of the field.
        field: &'static str,
    },
    /// The external id is immutable once set.
    #[error("externalId is already set and cannot be changed")]
    ExternalIdImmutable,
    /// A value was invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}
