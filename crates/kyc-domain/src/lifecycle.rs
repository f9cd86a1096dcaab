//! The moves made by people and by the link (product brief §2, first table), as one exhaustive
//! function of `(kyc_status, trigger)`. The aggregate asks it before every such move; the table
//! test and the state diagram are checked against it.

use crate::error::{Action, LifecycleError};
use crate::status::KycStatus;

/// A move asked by a person or by the customer's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PersonTrigger {
    /// A person confirmed the risk answers.
    ConfirmRisk {
        /// The confirmed answer to "is this a designated service?".
        designated_service: bool,
    },
    /// A person clicked Start Verification (this is where the attempt ends up once started).
    StartVerification,
    /// The customer opened the verification link.
    OpenLink,
    /// A compliance officer restarted a failed verification.
    Restart,
}

impl PersonTrigger {
    /// Every trigger, for tables and tests.
    pub const ALL: [Self; 5] = [
        Self::ConfirmRisk {
            designated_service: true,
        },
        Self::ConfirmRisk {
            designated_service: false,
        },
        Self::StartVerification,
        Self::OpenLink,
        Self::Restart,
    ];
}

/// Where a person's move leads from `from`, or why it is refused.
///
/// Beyond the brief's table, two moves keep the status: confirming answers with the designated
/// service in scope records the answers (and the rating) without moving, and opening the link in a
/// status it does not move (a late click after a verdict, say) changes nothing.
///
/// # Errors
/// [`LifecycleError::NotAllowed`] for every pair the table does not list.
pub fn person_move(from: KycStatus, trigger: PersonTrigger) -> Result<KycStatus, LifecycleError> {
    use KycStatus::{
        AwaitingResubmission, Failed, InProgress, NotRequired, NotStarted, Pending, Verified,
    };
    let refuse = |action, reason| {
        Err(LifecycleError::NotAllowed {
            action,
            status: from,
            reason,
        })
    };
    match (from, trigger) {
        (NotStarted, PersonTrigger::ConfirmRisk { designated_service: false }) => Ok(NotRequired),
        (NotStarted, PersonTrigger::ConfirmRisk { designated_service: true }) => Ok(NotStarted),
        (NotRequired, PersonTrigger::ConfirmRisk { designated_service: true }) => Ok(NotStarted),
        (NotRequired, PersonTrigger::ConfirmRisk { designated_service: false }) => Ok(NotRequired),
        (
            Pending | InProgress | Verified | Failed | AwaitingResubmission,
            PersonTrigger::ConfirmRisk { designated_service: true },
        ) => Ok(from),
        (
            Pending | InProgress | Verified | Failed | AwaitingResubmission,
            PersonTrigger::ConfirmRisk { designated_service: false },
        ) => refuse(
            Action::ConfirmRisk,
            "a verification is under way; the designated service can no longer be taken out of scope",
        ),
        (NotStarted, PersonTrigger::StartVerification) => Ok(Pending),
        (NotRequired, PersonTrigger::StartVerification) => refuse(
            Action::StartVerification,
            "KYC is not required: the confirmed answers put the designated service out of scope",
        ),
        (
            Pending | InProgress | Verified | Failed | AwaitingResubmission,
            PersonTrigger::StartVerification,
        ) => refuse(
            Action::StartVerification,
            "a verification attempt is already open; a failed one must be restarted by a compliance officer",
        ),
        (Pending | AwaitingResubmission, PersonTrigger::OpenLink) => Ok(InProgress),
        (NotStarted | InProgress | Verified | Failed | NotRequired, PersonTrigger::OpenLink) => {
            Ok(from)
        }
        (Failed, PersonTrigger::Restart) => Ok(NotStarted),
        (
            NotStarted | Pending | InProgress | Verified | AwaitingResubmission | NotRequired,
            PersonTrigger::Restart,
        ) => refuse(Action::Restart, "only a FAILED verification can be restarted"),
    }
}
