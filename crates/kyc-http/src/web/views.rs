//! What the pages show, in words: status chips, the timeline of the audit trail, times, risk
//! answers. Each function turns a domain value into the text and style a person reads; no rule
//! of the lifecycle is decided here (the use cases decide, the pages only show).

use kyc_domain::aml::{AmlHit, HitSource};
use kyc_domain::crm::{CrmBlock, Onboarding};
use kyc_domain::events::{Actor, Change, EventOutcome, Role};
use kyc_domain::ports::{AuditEntry, EntryKind, StatementEntry};
use kyc_domain::risk::RiskAnswers;
use kyc_domain::status::{AmlStatus, KycStatus};
use kyc_domain::values::AddedVia;
use time::OffsetDateTime;
use time::macros::format_description;

/// A status shown as a coloured label. `tone` picks the colour (`ok`, `warn`, `bad`, `info`,
/// `neutral`); the text always says the status too, so colour is never the only signal.
#[derive(Debug, Clone)]
pub(crate) struct Chip {
    /// What the chip says.
    pub(crate) text: String,
    /// Its colour class.
    pub(crate) tone: &'static str,
}

/// The `kyc_status` chip.
pub(crate) fn kyc_chip(status: KycStatus) -> Chip {
    let tone = match status {
        KycStatus::Verified => "ok",
        KycStatus::Failed => "bad",
        KycStatus::AwaitingResubmission => "warn",
        KycStatus::Pending | KycStatus::InProgress => "info",
        KycStatus::NotStarted | KycStatus::NotRequired => "neutral",
    };
    Chip {
        text: status.as_str().to_owned(),
        tone,
    }
}

/// The `aml.status` chip.
pub(crate) fn aml_chip(status: AmlStatus) -> Chip {
    let tone = match status {
        AmlStatus::Clear => "ok",
        AmlStatus::NeedsReview => "warn",
        AmlStatus::InProgress => "info",
        AmlStatus::Resolved | AmlStatus::NotScreened => "neutral",
    };
    Chip {
        text: status.as_str().to_owned(),
        tone,
    }
}

/// The `crm` chip: the label the CRM shows, coloured by whether onboarding may go ahead.
pub(crate) fn crm_chip(crm: &CrmBlock) -> Chip {
    let tone = match crm.onboarding {
        Onboarding::Allowed => "ok",
        Onboarding::Blocked => "neutral",
        Onboarding::FirmDecision => "info",
    };
    Chip {
        text: crm.label.to_owned(),
        tone,
    }
}

/// A time as people read it: `2026-07-01 09:30:05 UTC`.
pub(crate) fn when(at: OffsetDateTime) -> String {
    let utc = at.to_offset(time::UtcOffset::UTC);
    utc.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
    ))
    .unwrap_or_else(|_| utc.to_string())
}

/// An optional time, or a dash.
pub(crate) fn when_or_dash(at: Option<OffsetDateTime>) -> String {
    at.map_or_else(|| "—".to_owned(), when)
}

/// The contract's role name as a person reads it.
pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Staff => "Staff",
        Role::ComplianceOfficer => "Compliance officer",
        Role::Admin => "Admin",
    }
}

fn yes_no(answer: bool) -> &'static str {
    if answer { "yes" } else { "no" }
}

/// The three answers in one line.
pub(crate) fn answers_text(answers: &RiskAnswers) -> String {
    format!(
        "designated service: {}; cash or crypto: {}; new customer: {}",
        yes_no(answers.is_designated_service),
        yes_no(answers.handles_cash_or_crypto),
        yes_no(answers.is_new_customer)
    )
}

/// How a record came in.
pub(crate) fn added_via_text(added_via: AddedVia) -> &'static str {
    match added_via {
        AddedVia::Integration => "from the CRM integration",
        AddedVia::AdminManual => "by hand in the back office",
        AddedVia::AiExtracted => "by document extraction",
        AddedVia::ContactPortal => "through the contact portal",
        AddedVia::BulkImport => "by bulk import",
        AddedVia::System => "by the system",
    }
}

/// One line of the timeline: who, what, when and why.
#[derive(Debug, Clone)]
pub(crate) struct TimelineEntry {
    /// When, as text.
    pub(crate) at: String,
    /// The same time for `<time datetime>`.
    pub(crate) at_iso: String,
    /// Who.
    pub(crate) who: String,
    /// What changed.
    pub(crate) what: String,
    /// Why, where a person gave a reason.
    pub(crate) why: Option<String>,
}

/// Who made a change.
pub(crate) fn actor_text(actor: &Actor) -> String {
    match actor {
        Actor::ApiKey { label, .. } => format!("CRM (API key “{label}”)"),
        Actor::Person(person) => format!(
            "{} ({})",
            person.email.as_str(),
            role_name(person.role).to_lowercase()
        ),
        Actor::Provider { .. } => "Sumsub".to_owned(),
        Actor::Customer => "The customer".to_owned(),
        Actor::System { worker } => format!("System ({worker})"),
    }
}

fn optional(value: Option<&str>) -> String {
    value.map_or_else(|| "(empty)".to_owned(), |v| format!("“{v}”"))
}

fn outcome_text(outcome: EventOutcome) -> &'static str {
    match outcome {
        EventOutcome::Applied => "applied",
        EventOutcome::IgnoredOlder => "ignored: older than the verdict already applied",
        EventOutcome::NoStatus => "recorded; it carries no status",
        EventOutcome::AttemptNotOpen => "recorded; its attempt is closed",
    }
}

/// What a change did, in one sentence.
pub(crate) fn change_text(change: &Change) -> String {
    match change {
        Change::CustomerCreated { added_via } => {
            format!("Customer created {}.", added_via_text(*added_via))
        }
        Change::ContactUpdated { field, from, to } => format!(
            "Changed {field} from {} to {}.",
            optional(from.as_deref()),
            optional(to.as_deref())
        ),
        Change::RiskProposed { answers } => {
            format!(
                "Risk answers proposed by the CRM ({}).",
                answers_text(answers)
            )
        }
        Change::RiskConfirmed { answers, rating } => format!(
            "Risk answers confirmed ({}); risk rating {}.",
            answers_text(answers),
            rating.as_str()
        ),
        Change::KycStatusChanged { from, to, attempt } => match attempt {
            Some(attempt) => format!(
                "KYC status {} → {} (attempt {}).",
                from.as_str(),
                to.as_str(),
                attempt.get()
            ),
            None => format!("KYC status {} → {}.", from.as_str(), to.as_str()),
        },
        Change::AmlStatusChanged { from, to } => {
            format!("AML status {} → {}.", from.as_str(), to.as_str())
        }
        Change::VerificationStarting {
            attempt,
            cost,
            level_name,
        } => format!(
            "Start Verification confirmed: attempt {}, {cost} held, level {level_name}.",
            attempt.get()
        ),
        Change::VerificationStarted { attempt, .. } => format!(
            "Verification started: the applicant exists at the provider and attempt {} is charged.",
            attempt.get()
        ),
        Change::VerificationAbandoned { attempt, reason } => format!(
            "Attempt {} could not start and its credits were released: {reason}",
            attempt.get()
        ),
        Change::LinkOpened { attempt } => format!(
            "The customer opened the verification link (attempt {}).",
            attempt.get()
        ),
        Change::ProviderEventRecorded {
            attempt,
            event_type,
            created_at,
            outcome,
        } => format!(
            "Provider event {event_type} of {} for attempt {}: {}.",
            when(*created_at),
            attempt.get(),
            outcome_text(*outcome)
        ),
        Change::AmlHitsAdded { hits, source } => format!(
            "{} AML hit{} found by {}.",
            hits.len(),
            if hits.len() == 1 { "" } else { "s" },
            match source {
                HitSource::Verdict => "the provider's verdict",
                HitSource::Screening => "screening",
            }
        ),
        Change::HitDispositionSet { hit, disposition } => {
            format!("Hit {} marked {}.", hit.as_str(), disposition.as_str())
        }
        Change::AmlDecisionRecorded { decision } => {
            format!("AML decision recorded: {}.", decision.as_str())
        }
        Change::AttemptClosed { attempt } => format!(
            "Attempt {} closed so that a new verification can start.",
            attempt.get()
        ),
        Change::ScreeningFinished { hits_returned } => format!(
            "AML screening finished with {hits_returned} hit{}.",
            if *hits_returned == 1 { "" } else { "s" }
        ),
        Change::IdentityCaptured => "The verified identity was recorded.".to_owned(),
    }
}

/// The audit trail as a timeline, newest first.
pub(crate) fn timeline(audit: &[AuditEntry]) -> Vec<TimelineEntry> {
    audit
        .iter()
        .rev()
        .map(|entry| TimelineEntry {
            at: when(entry.event.at),
            at_iso: crate::crm::dto::timestamp(entry.event.at),
            who: actor_text(&entry.event.actor),
            what: change_text(&entry.event.change),
            why: entry.event.note.clone(),
        })
        .collect()
}

/// One AML hit as the review shows it.
#[derive(Debug, Clone)]
pub(crate) struct HitView {
    /// Its id, sent back with the disposition form.
    pub(crate) id: String,
    /// The matched name.
    pub(crate) name: String,
    /// Its categories, comma-separated.
    pub(crate) categories: String,
    /// The provider's match status.
    pub(crate) match_status: String,
    /// `FALSE_POSITIVE` / `TRUE_MATCH`, or `None` while open.
    pub(crate) disposition: Option<&'static str>,
    /// The officer's note on it.
    pub(crate) note: Option<String>,
    /// When it was first found.
    pub(crate) found_at: String,
}

impl From<&AmlHit> for HitView {
    fn from(hit: &AmlHit) -> Self {
        Self {
            id: hit.key.as_str().to_owned(),
            name: hit
                .name
                .clone()
                .unwrap_or_else(|| "(no name given)".to_owned()),
            categories: hit
                .categories
                .iter()
                .map(|c| c.as_str().replace('_', " "))
                .collect::<Vec<_>>()
                .join(", "),
            match_status: hit.match_status.replace('_', " "),
            disposition: hit.disposition.as_ref().map(|d| d.disposition.as_str()),
            note: hit.disposition.as_ref().map(|d| d.note.as_str().to_owned()),
            found_at: when(hit.found_at),
        }
    }
}

/// One line of the credits statement.
#[derive(Debug, Clone)]
pub(crate) struct StatementLine {
    /// When.
    pub(crate) at: String,
    /// Grant, hold, charge, void, refund.
    pub(crate) kind: &'static str,
    /// Credits moved.
    pub(crate) credits: u64,
    /// The effect on the available balance, signed.
    pub(crate) delta: String,
    /// The customer the operation is about, for a link.
    pub(crate) customer_id: Option<String>,
    /// The attempt.
    pub(crate) attempt: Option<u32>,
    /// The grant's reference or the refund's reason.
    pub(crate) reference: Option<String>,
}

impl From<&StatementEntry> for StatementLine {
    fn from(entry: &StatementEntry) -> Self {
        Self {
            at: when(entry.at),
            kind: match entry.kind {
                EntryKind::Grant => "Grant",
                EntryKind::Reserve => "Hold",
                EntryKind::Post => "Charge",
                EntryKind::Void => "Void",
                EntryKind::Refund => "Refund",
            },
            credits: entry.credits.get(),
            delta: match entry.available_delta {
                0 => "0".to_owned(),
                d if d > 0 => format!("+{d}"),
                d => format!("−{}", d.unsigned_abs()),
            },
            customer_id: entry.customer.map(|c| c.to_string()),
            attempt: entry.attempt.map(kyc_domain::ids::AttemptNumber::get),
            reference: entry.reference.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kyc_domain::ids::AttemptNumber;
    use time::macros::datetime;

    #[test]
    fn times_read_in_utc_to_the_second() {
        assert_eq!(
            when(datetime!(2026-07-01 09:30:05.123 +10)),
            "2026-06-30 23:30:05 UTC"
        );
        assert_eq!(when_or_dash(None), "—");
    }

    #[test]
    fn every_status_chip_says_its_status_in_words() {
        for status in [
            KycStatus::NotStarted,
            KycStatus::Pending,
            KycStatus::InProgress,
            KycStatus::Verified,
            KycStatus::Failed,
            KycStatus::AwaitingResubmission,
            KycStatus::NotRequired,
        ] {
            assert_eq!(kyc_chip(status).text, status.as_str());
        }
        assert_eq!(aml_chip(AmlStatus::Clear).tone, "ok");
        assert_eq!(aml_chip(AmlStatus::NeedsReview).tone, "warn");
    }

    #[test]
    fn a_status_change_reads_as_from_and_to_with_its_attempt() {
        let text = change_text(&Change::KycStatusChanged {
            from: KycStatus::NotStarted,
            to: KycStatus::Pending,
            attempt: AttemptNumber::new(1).ok(),
        });
        assert_eq!(text, "KYC status NOT_STARTED → PENDING (attempt 1).");
    }
}
