//! What a CRM shows for a customer: one total function of `(kyc_status, aml.status)`. The API, the
//! back office and the outbound webhooks all call [`crm_block`], so the wording lives here only.

use serde::Serialize;

use crate::status::{AmlStatus, KycStatus};

/// Whether the firm may onboard the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Onboarding {
    /// Safe to onboard.
    Allowed,
    /// Do not onboard yet.
    Blocked,
    /// A final AML decision is recorded; the firm's own process decides.
    FirmDecision,
}

impl Onboarding {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "ALLOWED",
            Self::Blocked => "BLOCKED",
            Self::FirmDecision => "FIRM_DECISION",
        }
    }
}

/// What the firm should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NextAction {
    /// Nothing to do.
    None,
    /// Someone else (back office, customer, provider, compliance) is on it.
    Wait,
    /// Remind the customer to finish or resubmit.
    NudgeCustomer,
    /// The customer was rejected.
    DoNotOnboard,
    /// Follow the firm's process for a recorded AML decision.
    CheckFirmProcess,
}

impl NextAction {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Wait => "WAIT",
            Self::NudgeCustomer => "NUDGE_CUSTOMER",
            Self::DoNotOnboard => "DO_NOT_ONBOARD",
            Self::CheckFirmProcess => "CHECK_FIRM_PROCESS",
        }
    }
}

/// The derived `crm` block of the customer object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct CrmBlock {
    /// The sentence to show. The first five rows of the brief's table are the published contract.
    pub label: &'static str,
    /// Whether onboarding may proceed.
    pub onboarding: Onboarding,
    /// What the firm should do next.
    pub next_action: NextAction,
}

const fn block(label: &'static str, onboarding: Onboarding, next_action: NextAction) -> CrmBlock {
    CrmBlock {
        label,
        onboarding,
        next_action,
    }
}

/// The CRM block for a pair of statuses (product brief §2, "What the CRM sees"). Total: every pair
/// has an answer.
pub const fn crm_block(kyc: KycStatus, aml: AmlStatus) -> CrmBlock {
    use NextAction as A;
    use Onboarding as O;
    match (kyc, aml) {
        (KycStatus::Verified, AmlStatus::Clear) => {
            block("Cleared. Safe to onboard.", O::Allowed, A::None)
        }
        (KycStatus::Verified, AmlStatus::NeedsReview) => {
            block("Identity OK — AML in review.", O::Blocked, A::Wait)
        }
        (KycStatus::Verified, AmlStatus::Resolved) => block(
            "Final decision recorded.",
            O::FirmDecision,
            A::CheckFirmProcess,
        ),
        (KycStatus::Verified, AmlStatus::NotScreened | AmlStatus::InProgress) => {
            block("Identity OK — AML screening pending.", O::Blocked, A::Wait)
        }
        (KycStatus::Failed, _) => block("Rejected.", O::Blocked, A::DoNotOnboard),
        (KycStatus::AwaitingResubmission, _) => block(
            "Customer needs to resubmit ID.",
            O::Blocked,
            A::NudgeCustomer,
        ),
        (KycStatus::NotStarted, _) => block("Awaiting back office.", O::Blocked, A::Wait),
        (KycStatus::Pending, _) => block(
            "Verification link sent; customer has not started.",
            O::Blocked,
            A::NudgeCustomer,
        ),
        (KycStatus::InProgress, _) => block("Customer is verifying.", O::Blocked, A::Wait),
        (KycStatus::NotRequired, _) => {
            block("KYC not required for this service.", O::Allowed, A::None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The brief's table, row by row, with its exact wording.
    #[test]
    fn every_pair_matches_the_brief() {
        let expected = |kyc: KycStatus, aml: AmlStatus| -> (&str, &str, &str) {
            match (kyc.as_str(), aml.as_str()) {
                ("VERIFIED", "CLEAR") => ("Cleared. Safe to onboard.", "ALLOWED", "NONE"),
                ("VERIFIED", "NEEDS_REVIEW") => ("Identity OK — AML in review.", "BLOCKED", "WAIT"),
                ("VERIFIED", "RESOLVED") => (
                    "Final decision recorded.",
                    "FIRM_DECISION",
                    "CHECK_FIRM_PROCESS",
                ),
                ("VERIFIED", _) => ("Identity OK — AML screening pending.", "BLOCKED", "WAIT"),
                ("FAILED", _) => ("Rejected.", "BLOCKED", "DO_NOT_ONBOARD"),
                ("AWAITING_RESUBMISSION", _) => (
                    "Customer needs to resubmit ID.",
                    "BLOCKED",
                    "NUDGE_CUSTOMER",
                ),
                ("NOT_STARTED", _) => ("Awaiting back office.", "BLOCKED", "WAIT"),
                ("PENDING", _) => (
                    "Verification link sent; customer has not started.",
                    "BLOCKED",
                    "NUDGE_CUSTOMER",
                ),
                ("IN_PROGRESS", _) => ("Customer is verifying.", "BLOCKED", "WAIT"),
                ("NOT_REQUIRED", _) => ("KYC not required for this service.", "ALLOWED", "NONE"),
                (other, _) => panic!("status {other} missing from the table"),
            }
        };
        for kyc in KycStatus::ALL {
            for aml in AmlStatus::ALL {
                let got = crm_block(kyc, aml);
                assert_eq!(
                    (got.label, got.onboarding.as_str(), got.next_action.as_str()),
                    expected(kyc, aml),
                    "({kyc}, {aml})"
                );
            }
        }
    }

    #[test]
    fn only_a_clear_or_out_of_scope_customer_may_be_onboarded_outright() {
        for kyc in KycStatus::ALL {
            for aml in AmlStatus::ALL {
                let allowed = crm_block(kyc, aml).onboarding == Onboarding::Allowed;
                let expected = matches!(
                    (kyc, aml),
                    (KycStatus::Verified, AmlStatus::Clear) | (KycStatus::NotRequired, _)
                );
                assert_eq!(allowed, expected, "({kyc}, {aml})");
            }
        }
    }
}
