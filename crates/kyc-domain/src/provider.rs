//! Provider events, neutral of any one provider: the Sumsub adapter turns each verified webhook into
//! a [`ProviderEvent`], and the rules of product brief §3 apply to these, not to Sumsub's JSON.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::aml::AmlCategory;
use crate::ids::{ApplicantId, ExternalUserId};
use crate::status::KycStatus;

/// The identity of one provider event, used to recognise a second delivery of it. The adapter
/// derives it from the event's content (Sumsub has no unique event id), so the same event delivered
/// twice has the same key and two different events almost surely do not.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProviderEventKey(String);

impl ProviderEventKey {
    /// Wraps a key computed by an adapter.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProviderEventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One event from the identity provider, routed to an attempt by applicant id or external user id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEvent {
    /// Recognises duplicates.
    pub key: ProviderEventKey,
    /// The provider's applicant, when the event names one.
    pub applicant_id: Option<ApplicantId>,
    /// The id this service gave the provider for the attempt, when the event carries it.
    pub external_user_id: Option<ExternalUserId>,
    /// When the provider created the event (Sumsub `createdAtMs`, UTC, millisecond precision). This,
    /// not arrival order, decides which verdict is newest.
    #[serde(with = "crate::values::stored_time")]
    pub created_at: OffsetDateTime,
    /// What happened.
    pub kind: ProviderEventKind,
}

impl ProviderEvent {
    /// The stamp this event competes with among status-bearing events.
    pub fn stamp(&self) -> ProviderStamp {
        ProviderStamp {
            at: self.created_at,
            key: self.key.clone(),
        }
    }
}

/// What a provider event says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderEventKind {
    /// The customer submitted; the provider will review (`applicantPending`).
    Pending,
    /// Primary processing done (`applicantPrechecked`).
    Prechecked,
    /// The provider paused for a person, often an AML hit (`applicantOnHold`).
    OnHold,
    /// A verdict (`applicantReviewed`).
    Reviewed(ReviewVerdict),
    /// The applicant must go through the flow again (`applicantReset`).
    Reset,
    /// Any other type: recorded in the audit trail, changes nothing. The provider's type name is kept.
    Other {
        /// The provider's name for the type, e.g. `applicantCreated` or one this service has never seen.
        event_type: String,
    },
}

impl ProviderEventKind {
    /// A short name for the audit trail.
    pub fn name(&self) -> &str {
        match self {
            Self::Pending => "applicantPending",
            Self::Prechecked => "applicantPrechecked",
            Self::OnHold => "applicantOnHold",
            Self::Reviewed(_) => "applicantReviewed",
            Self::Reset => "applicantReset",
            Self::Other { event_type } => event_type,
        }
    }

    /// The status this event sets when it is the newest status-bearing event of its attempt, and
    /// the AML categories it reports (product brief §2, the verdict table). `None` for events that
    /// bear no status.
    pub fn verdict_effect(&self) -> Option<VerdictEffect> {
        let status = |status| {
            Some(VerdictEffect {
                status,
                aml_hits: Vec::new(),
            })
        };
        match self {
            Self::Pending | Self::Prechecked | Self::OnHold => status(KycStatus::InProgress),
            Self::Reset => status(KycStatus::Pending),
            Self::Reviewed(verdict) => Some(verdict.effect()),
            Self::Other { .. } => None,
        }
    }
}

/// What a status-bearing provider event does to the attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictEffect {
    /// The `kyc_status` the attempt takes.
    pub status: KycStatus,
    /// AML categories found (a RED + FINAL whose every label is an AML label); each becomes a hit.
    pub aml_hits: Vec<(RejectLabel, AmlCategory)>,
}

/// The provider's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReviewAnswer {
    /// Approved.
    Green,
    /// Rejected.
    Red,
}

/// Whether a rejection can be retried by the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectType {
    /// The customer may resubmit.
    Retry,
    /// Final.
    Final,
}

/// A rejection label, kept as the provider's string. Unknown labels count as identity labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RejectLabel(String);

impl RejectLabel {
    /// Wraps a provider label.
    pub fn new(label: impl Into<String>) -> Self {
        Self(label.into())
    }

    /// The label as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The AML category of this label, or `None` for an identity label (including unknown ones).
    /// AML labels: `PEP`, `SANCTIONS`, `ADVERSE_MEDIA`, `COMPROMISED_PERSONS`, `CRIMINAL`.
    pub fn aml_category(&self) -> Option<AmlCategory> {
        match self.0.as_str() {
            "PEP" => Some(AmlCategory::Pep),
            "SANCTIONS" => Some(AmlCategory::Sanctions),
            "ADVERSE_MEDIA" => Some(AmlCategory::AdverseMedia),
            "COMPROMISED_PERSONS" => Some(AmlCategory::CompromisedPersons),
            "CRIMINAL" => Some(AmlCategory::Criminal),
            _ => None,
        }
    }
}

/// The verdict of an `applicantReviewed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewVerdict {
    /// GREEN or RED.
    pub answer: ReviewAnswer,
    /// RETRY or FINAL, on RED. A RED without one is treated as FINAL: when in doubt, do not pass.
    pub reject_type: Option<RejectType>,
    /// The rejection labels, on RED.
    pub reject_labels: Vec<RejectLabel>,
}

impl ReviewVerdict {
    fn effect(&self) -> VerdictEffect {
        let status = |status| VerdictEffect {
            status,
            aml_hits: Vec::new(),
        };
        match (self.answer, self.reject_type) {
            (ReviewAnswer::Green, _) => status(KycStatus::Verified),
            (ReviewAnswer::Red, Some(RejectType::Retry)) => status(KycStatus::AwaitingResubmission),
            (ReviewAnswer::Red, Some(RejectType::Final) | None) => {
                let categories: Option<Vec<_>> = self
                    .reject_labels
                    .iter()
                    .map(|label| label.aml_category().map(|c| (label.clone(), c)))
                    .collect();
                match categories {
                    // Every label is an AML label: identity is fine, the hits go to review.
                    Some(hits) if !hits.is_empty() => VerdictEffect {
                        status: KycStatus::Verified,
                        aml_hits: hits,
                    },
                    Some(_) | None => status(KycStatus::Failed),
                }
            }
        }
    }
}

/// The position of a status-bearing event in the provider's time. Ties on `at` are broken by the
/// key, so every delivery order agrees on which event is newest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProviderStamp {
    /// The provider's creation time.
    #[serde(with = "crate::values::stored_time")]
    pub at: OffsetDateTime,
    /// The event's key.
    pub key: ProviderEventKey,
}

impl Ord for ProviderStamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at
            .cmp(&other.at)
            .then_with(|| self.key.cmp(&other.key))
    }
}

impl PartialOrd for ProviderStamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reviewed(
        answer: ReviewAnswer,
        reject: Option<RejectType>,
        labels: &[&str],
    ) -> ProviderEventKind {
        ProviderEventKind::Reviewed(ReviewVerdict {
            answer,
            reject_type: reject,
            reject_labels: labels.iter().map(|l| RejectLabel::new(*l)).collect(),
        })
    }

    fn status_of(kind: &ProviderEventKind) -> Option<KycStatus> {
        kind.verdict_effect().map(|e| e.status)
    }

    #[test]
    fn verdicts_map_to_statuses_as_the_brief_says() {
        use RejectType::{Final, Retry};
        use ReviewAnswer::{Green, Red};
        assert_eq!(
            status_of(&ProviderEventKind::Pending),
            Some(KycStatus::InProgress)
        );
        assert_eq!(
            status_of(&ProviderEventKind::Prechecked),
            Some(KycStatus::InProgress)
        );
        assert_eq!(
            status_of(&ProviderEventKind::OnHold),
            Some(KycStatus::InProgress)
        );
        assert_eq!(
            status_of(&reviewed(Green, None, &[])),
            Some(KycStatus::Verified)
        );
        assert_eq!(
            status_of(&reviewed(Red, Some(Retry), &["UNSATISFACTORY_PHOTOS"])),
            Some(KycStatus::AwaitingResubmission)
        );
        assert_eq!(
            status_of(&reviewed(Red, Some(Final), &["PEP", "SANCTIONS"])),
            Some(KycStatus::Verified)
        );
        assert_eq!(
            status_of(&reviewed(Red, Some(Final), &["PEP", "FORGERY"])),
            Some(KycStatus::Failed)
        );
        assert_eq!(
            status_of(&reviewed(Red, Some(Final), &["SOMETHING_NEW"])),
            Some(KycStatus::Failed)
        );
        assert_eq!(
            status_of(&reviewed(Red, Some(Final), &[])),
            Some(KycStatus::Failed)
        );
        assert_eq!(
            status_of(&reviewed(Red, None, &["FORGERY"])),
            Some(KycStatus::Failed)
        );
        assert_eq!(
            status_of(&ProviderEventKind::Reset),
            Some(KycStatus::Pending)
        );
        let other = ProviderEventKind::Other {
            event_type: "applicantCreated".into(),
        };
        assert_eq!(status_of(&other), None);
    }

    #[test]
    fn aml_only_final_rejection_reports_each_category() {
        let kind = reviewed(
            ReviewAnswer::Red,
            Some(RejectType::Final),
            &["PEP", "CRIMINAL"],
        );
        let hits = kind.verdict_effect().unwrap().aml_hits;
        let categories: Vec<_> = hits.into_iter().map(|(_, c)| c).collect();
        assert_eq!(categories, vec![AmlCategory::Pep, AmlCategory::Criminal]);
    }

    #[test]
    fn stamps_order_by_time_then_key() {
        let t = time::macros::datetime!(2026-01-01 00:00 UTC);
        let a = ProviderStamp {
            at: t,
            key: ProviderEventKey::new("a"),
        };
        let b = ProviderStamp {
            at: t,
            key: ProviderEventKey::new("b"),
        };
        let later = ProviderStamp {
            at: t + time::Duration::milliseconds(1),
            key: ProviderEventKey::new("0"),
        };
        assert!(a < b && b < later);
    }
}
