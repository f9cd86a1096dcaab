//! What holds for every customer the lifecycle can reach.

use std::collections::BTreeSet;

use time::OffsetDateTime;

use crate::aml::AmlHit;
use crate::customer::{AttemptPhase, Customer};
use crate::status::{AmlStatus, KycStatus};

/// The state of a customer that must be the same whatever order its provider events arrived in:
/// statuses, hits, the deciding verdict's time, and each attempt's phase and newest verdict.
/// (Clock-driven fields such as `updated_at` are left out on purpose.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleView {
    /// `kyc_status`
    pub kyc_status: KycStatus,
    /// `aml.status`
    pub aml_status: AmlStatus,
    /// `kyc_completed_at`
    pub kyc_completed_at: Option<OffsetDateTime>,
    /// The hit list.
    pub hits: Vec<AmlHit>,
    /// `(phase, newest verdict time)` per attempt.
    pub attempts: Vec<(AttemptPhase, Option<OffsetDateTime>)>,
}

impl LifecycleView {
    /// The view of a customer.
    pub fn of(customer: &Customer) -> Self {
        Self {
            kyc_status: customer.kyc_status,
            aml_status: customer.aml.status,
            kyc_completed_at: customer.kyc_completed_at,
            hits: customer.aml.hits.clone(),
            attempts: customer
                .attempts
                .iter()
                .map(|a| (a.phase, a.newest_verdict.as_ref().map(|s| s.at)))
                .collect(),
        }
    }
}

/// Checks every invariant; the error names the first one broken.
///
/// # Errors
/// A sentence naming the broken invariant.
pub fn check(customer: &Customer) -> Result<(), String> {
    let attempts = &customer.attempts;
    for (index, attempt) in attempts.iter().enumerate() {
        if attempt.number.get() as usize != index + 1 {
            return Err(format!(
                "attempt numbers are not 1..n: {index} holds {}",
                attempt.number
            ));
        }
        let is_latest = index + 1 == attempts.len();
        match attempt.phase {
            AttemptPhase::Starting | AttemptPhase::Open if !is_latest => {
                return Err(format!(
                    "attempt {} is {:?} but not the latest",
                    attempt.number, attempt.phase
                ));
            }
            AttemptPhase::Open
                if attempt.applicant_id.is_none() || attempt.link_token_hash.is_none() =>
            {
                return Err(format!(
                    "open attempt {} has no applicant or link",
                    attempt.number
                ));
            }
            AttemptPhase::Starting
            | AttemptPhase::Open
            | AttemptPhase::Voided
            | AttemptPhase::Closed => {}
        }
    }
    let latest_open = customer
        .latest_attempt()
        .is_some_and(|a| a.phase == AttemptPhase::Open);
    if customer.kyc_status.has_open_attempt() != latest_open {
        return Err(format!(
            "kyc_status {} but the latest attempt is {:?}",
            customer.kyc_status,
            customer.latest_attempt().map(|a| a.phase)
        ));
    }
    if customer.kyc_status == KycStatus::NotRequired
        && customer
            .latest_attempt()
            .is_some_and(|a| a.phase == AttemptPhase::Starting)
    {
        return Err("NOT_REQUIRED with an attempt starting".into());
    }
    if customer.kyc_started_at.is_some() != customer.kyc_status.has_open_attempt() {
        return Err(format!(
            "kyc_started_at does not match kyc_status {}",
            customer.kyc_status
        ));
    }
    if customer.kyc_completed_at.is_some()
        && !matches!(customer.kyc_status, KycStatus::Verified | KycStatus::Failed)
    {
        return Err(format!(
            "kyc_completed_at set while {}",
            customer.kyc_status
        ));
    }
    let aml = &customer.aml;
    let keys: BTreeSet<_> = aml.hits.iter().map(|h| &h.key).collect();
    if keys.len() != aml.hits.len() {
        return Err("the hit list holds the same hit twice".into());
    }
    match aml.status {
        AmlStatus::Clear if !aml.hits.is_empty() => return Err("CLEAR with hits".into()),
        AmlStatus::NeedsReview if aml.hits.is_empty() => {
            return Err("NEEDS_REVIEW without hits".into());
        }
        AmlStatus::Resolved if aml.decision.is_none() || aml.open_hits() > 0 => {
            return Err("RESOLVED without a decision, or with open hits".into());
        }
        AmlStatus::NotScreened
        | AmlStatus::InProgress
        | AmlStatus::Clear
        | AmlStatus::NeedsReview
        | AmlStatus::Resolved => {}
    }
    Ok(())
}
