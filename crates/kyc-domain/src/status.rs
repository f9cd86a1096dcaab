//! The two statuses a CRM reads: `kyc_status` (identity) and `aml.status` (screening).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a customer's identity verification stands (product brief §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KycStatus {
    /// Record created; the back office has not started KYC.
    NotStarted,
    /// KYC initiated (credits charged, applicant created, link issued); the customer has not started.
    Pending,
    /// The customer is in the provider's flow, or the provider is working.
    InProgress,
    /// Identity confirmed. Look at `aml.status`.
    Verified,
    /// Identity rejected.
    Failed,
    /// The customer must resubmit something (poor photo, expired ID…).
    AwaitingResubmission,
    /// The designated service is not in scope for this customer.
    NotRequired,
}

impl KycStatus {
    /// Every status, in the order of the brief's table.
    pub const ALL: [Self; 7] = [
        Self::NotStarted,
        Self::Pending,
        Self::InProgress,
        Self::Verified,
        Self::Failed,
        Self::AwaitingResubmission,
        Self::NotRequired,
    ];

    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "NOT_STARTED",
            Self::Pending => "PENDING",
            Self::InProgress => "IN_PROGRESS",
            Self::Verified => "VERIFIED",
            Self::Failed => "FAILED",
            Self::AwaitingResubmission => "AWAITING_RESUBMISSION",
            Self::NotRequired => "NOT_REQUIRED",
        }
    }

    /// Parses the contract's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether a verification attempt is open in this status, so that provider verdicts apply.
    pub const fn has_open_attempt(self) -> bool {
        match self {
            Self::NotStarted | Self::NotRequired => false,
            Self::Pending
            | Self::InProgress
            | Self::Verified
            | Self::Failed
            | Self::AwaitingResubmission => true,
        }
    }
}

impl fmt::Display for KycStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where AML screening stands; meaningful once `kyc_status = VERIFIED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AmlStatus {
    /// Screening has not run.
    NotScreened,
    /// Screening is mid-flight.
    InProgress,
    /// No matches.
    Clear,
    /// Hits found; the firm's compliance team is reviewing them.
    NeedsReview,
    /// Every hit has a disposition and a final decision is recorded.
    Resolved,
}

impl AmlStatus {
    /// Every status, in the order of the brief's table.
    pub const ALL: [Self; 5] = [
        Self::NotScreened,
        Self::InProgress,
        Self::Clear,
        Self::NeedsReview,
        Self::Resolved,
    ];

    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotScreened => "NOT_SCREENED",
            Self::InProgress => "IN_PROGRESS",
            Self::Clear => "CLEAR",
            Self::NeedsReview => "NEEDS_REVIEW",
            Self::Resolved => "RESOLVED",
        }
    }

    /// Parses the contract's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for AmlStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
