//! The moves made by people and by the link (product brief §2, first table), as one exhaustive
//! function of `(kyc_status, trigger)`. The aggregate asks it before every such move; the table
//! test and the state diagram are checked against it.

use crate::error::{Action, LifecycleError};
use crate::status::{AmlStatus, KycStatus};

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
        (
            NotStarted,
            PersonTrigger::ConfirmRisk {
                designated_service: false,
            },
        ) => Ok(NotRequired),
        (
            NotStarted,
            PersonTrigger::ConfirmRisk {
                designated_service: true,
            },
        ) => Ok(NotStarted),
        (
            NotRequired,
            PersonTrigger::ConfirmRisk {
                designated_service: true,
            },
        ) => Ok(NotStarted),
        (
            NotRequired,
            PersonTrigger::ConfirmRisk {
                designated_service: false,
            },
        ) => Ok(NotRequired),
        (
            Pending | InProgress | Verified | Failed | AwaitingResubmission,
            PersonTrigger::ConfirmRisk {
                designated_service: true,
            },
        ) => Ok(from),
        (
            Pending | InProgress | Verified | Failed | AwaitingResubmission,
            PersonTrigger::ConfirmRisk {
                designated_service: false,
            },
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
        ) => refuse(
            Action::Restart,
            "only a FAILED verification can be restarted",
        ),
    }
}

/// A move of `aml.status` (product brief §2, the AML table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AmlTrigger {
    /// Screening (or re-screening) started.
    ScreeningStarted,
    /// Screening finished and the hit list is empty.
    ScreeningFoundNothing,
    /// Screening finished and some hit waits for a person (or a decision is owed).
    ScreeningFoundHitsToReview,
    /// Screening finished with nothing new, every hit reviewed and a decision on record.
    ScreeningFoundOnlyReviewedHits,
    /// New hits arrived (a verdict with AML labels, ongoing monitoring).
    NewHits,
    /// A compliance officer set a disposition on a hit.
    Disposition,
    /// A compliance officer recorded the final decision (every hit has a disposition).
    Decision,
}

impl AmlTrigger {
    /// Every trigger, for tables and tests.
    pub const ALL: [Self; 7] = [
        Self::ScreeningStarted,
        Self::ScreeningFoundNothing,
        Self::ScreeningFoundHitsToReview,
        Self::ScreeningFoundOnlyReviewedHits,
        Self::NewHits,
        Self::Disposition,
        Self::Decision,
    ];
}

/// Where an AML move leads from `from`, or why it is refused. Screening results are recorded
/// only while screening runs (or while in review, where they join the list); dispositions and
/// decisions only in review; new hits reopen review from anywhere.
///
/// # Errors
/// [`LifecycleError::AmlNotAllowed`] for every pair the table does not list.
pub fn aml_move(from: AmlStatus, trigger: AmlTrigger) -> Result<AmlStatus, LifecycleError> {
    use AmlStatus::{Clear, InProgress, NeedsReview, NotScreened, Resolved};
    let refuse = |action| {
        Err(LifecycleError::AmlNotAllowed {
            action,
            status: from,
        })
    };
    match (from, trigger) {
        (NotScreened | Clear | Resolved, AmlTrigger::ScreeningStarted) => Ok(InProgress),
        (InProgress | NeedsReview, AmlTrigger::ScreeningStarted) => Ok(from),
        (InProgress | NeedsReview, AmlTrigger::ScreeningFoundNothing) => Ok(Clear),
        (InProgress | NeedsReview, AmlTrigger::ScreeningFoundHitsToReview) => Ok(NeedsReview),
        (InProgress | NeedsReview, AmlTrigger::ScreeningFoundOnlyReviewedHits) => Ok(Resolved),
        (
            NotScreened | Clear | Resolved,
            AmlTrigger::ScreeningFoundNothing
            | AmlTrigger::ScreeningFoundHitsToReview
            | AmlTrigger::ScreeningFoundOnlyReviewedHits,
        ) => refuse(Action::RecordScreening),
        (NotScreened | InProgress | Clear | NeedsReview | Resolved, AmlTrigger::NewHits) => {
            Ok(NeedsReview)
        }
        (NeedsReview, AmlTrigger::Disposition) => Ok(NeedsReview),
        (NotScreened | InProgress | Clear | Resolved, AmlTrigger::Disposition) => {
            refuse(Action::SetDisposition)
        }
        (NeedsReview, AmlTrigger::Decision) => Ok(Resolved),
        (NotScreened | InProgress | Clear | Resolved, AmlTrigger::Decision) => {
            refuse(Action::RecordDecision)
        }
    }
}
