//! AML screening results as the firm's compliance team sees them: hits, their dispositions, the
//! final decision, and the flags the CRM reads.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::UserId;
use crate::status::AmlStatus;
use crate::values::{Email, Note};

/// A category of AML match. The first four feed `aml.flags`; the provider may name others, which
/// are kept as given.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum AmlCategory {
    /// Politically exposed person.
    Pep,
    /// Targeted financial sanctions.
    Sanctions,
    /// Adverse media.
    AdverseMedia,
    /// Terrorism.
    Terrorism,
    /// Compromised persons (Sumsub's umbrella label).
    CompromisedPersons,
    /// Criminal records.
    Criminal,
    /// Any other category, as the provider named it.
    Other(String),
}

impl AmlCategory {
    /// The spelling used by the back-office API (`pep`, `sanctions`, `adverse_media`, …).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Pep => "pep",
            Self::Sanctions => "sanctions",
            Self::AdverseMedia => "adverse_media",
            Self::Terrorism => "terrorism",
            Self::CompromisedPersons => "compromised_persons",
            Self::Criminal => "criminal",
            Self::Other(other) => other,
        }
    }

    /// Reads a category in this service's spelling or a provider's (`adverseMedia`, `crime`,
    /// `sanctionList`…). Anything unknown is kept as [`AmlCategory::Other`].
    pub fn parse(text: &str) -> Self {
        match text {
            "pep" | "PEP" => Self::Pep,
            "sanctions" | "sanction" | "sanctionList" | "SANCTIONS" => Self::Sanctions,
            "adverse_media" | "adverseMedia" | "ADVERSE_MEDIA" => Self::AdverseMedia,
            "terrorism" | "TERRORISM" => Self::Terrorism,
            "compromised_persons" | "compromisedPersons" | "COMPROMISED_PERSONS" => {
                Self::CompromisedPersons
            }
            "criminal" | "crime" | "CRIMINAL" => Self::Criminal,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl From<AmlCategory> for String {
    fn from(value: AmlCategory) -> Self {
        value.as_str().to_owned()
    }
}

impl From<String> for AmlCategory {
    fn from(value: String) -> Self {
        Self::parse(&value)
    }
}

impl fmt::Display for AmlCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of a hit within a customer's hit list. Screening hits use the provider's hit id;
/// hits reported by a verdict use `verdict:<LABEL>`, so the same label reported twice is one hit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HitKey(String);

impl HitKey {
    /// Wraps a hit id.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key of the hit a verdict label reports.
    pub fn for_verdict_label(label: &str) -> Self {
        Self(format!("verdict:{label}"))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HitSource {
    /// A RED + FINAL verdict whose every label was an AML label.
    Verdict,
    /// A screening or re-screening of the provider's AML case.
    Screening,
}

/// A compliance officer's view of one hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Disposition {
    /// Not the customer.
    FalsePositive,
    /// The customer.
    TrueMatch,
}

impl Disposition {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FalsePositive => "FALSE_POSITIVE",
            Self::TrueMatch => "TRUE_MATCH",
        }
    }
}

/// A recorded disposition: what, by whom, when, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispositionRecord {
    /// The disposition.
    pub disposition: Disposition,
    /// The officer's note.
    pub note: Note,
    /// Who.
    pub by: UserId,
    /// When.
    #[serde(with = "crate::values::stored_time")]
    pub at: OffsetDateTime,
}

/// One potential match from screening. Hit details never leave through the CRM API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmlHit {
    /// Identity within the customer's hit list.
    pub key: HitKey,
    /// The matched name, when the provider gives one.
    pub name: Option<String>,
    /// The categories of the match.
    pub categories: BTreeSet<AmlCategory>,
    /// The provider's match status (`potential_match`, `true_positive`, …), kept as given.
    pub match_status: String,
    /// Where it came from.
    pub source: HitSource,
    /// When it was first found (the earliest report, whatever the delivery order).
    #[serde(with = "crate::values::stored_time")]
    pub found_at: OffsetDateTime,
    /// The compliance officer's disposition, once set.
    pub disposition: Option<DispositionRecord>,
}

impl AmlHit {
    /// Whether the hit still waits for a person.
    pub fn is_open(&self) -> bool {
        self.disposition.is_none()
    }

    /// Whether the hit counts towards `aml.flags`: open, or confirmed as a true match.
    pub fn counts_for_flags(&self) -> bool {
        match &self.disposition {
            None => true,
            Some(record) => record.disposition == Disposition::TrueMatch,
        }
    }

    /// Folds a second report of the same hit into this one. Commutative: the union of categories
    /// and the earliest time, whatever order the reports came in; a person's disposition is kept.
    pub fn absorb(&mut self, other: &Self) {
        self.categories.extend(other.categories.iter().cloned());
        if other.found_at < self.found_at {
            self.found_at = other.found_at;
        }
        if self.name.is_none() {
            self.name.clone_from(&other.name);
        }
    }
}

/// The firm's final decision on a customer with hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AmlDecision {
    /// Proceed with the customer.
    Proceed,
    /// Decline the customer.
    Decline,
}

impl AmlDecision {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Proceed => "PROCEED",
            Self::Decline => "DECLINE",
        }
    }
}

/// A recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Proceed or decline.
    pub decision: AmlDecision,
    /// The officer's rationale.
    pub rationale: Note,
    /// Who.
    pub by: UserId,
    /// Their login.
    pub by_email: Email,
    /// When.
    #[serde(with = "crate::values::stored_time")]
    pub at: OffsetDateTime,
}

/// `aml.flags`: true when an open or `TRUE_MATCH` hit of that category exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct AmlFlags {
    /// Politically exposed person.
    pub pep: bool,
    /// Sanctions.
    pub sanctions: bool,
    /// Adverse media.
    pub adverse_media: bool,
    /// Terrorism.
    pub terrorism: bool,
}

/// The AML side of a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmlState {
    /// The status the CRM reads.
    pub status: AmlStatus,
    /// When screening last finished.
    #[serde(default, with = "crate::values::stored_time::option")]
    pub screened_at: Option<OffsetDateTime>,
    /// When a person last recorded a decision.
    #[serde(default, with = "crate::values::stored_time::option")]
    pub last_reviewed_at: Option<OffsetDateTime>,
    /// Every hit ever found (a set by [`HitKey`]).
    pub hits: Vec<AmlHit>,
    /// The latest decision.
    pub decision: Option<DecisionRecord>,
    /// When re-screening is due, set from the risk rating once screened.
    #[serde(default, with = "crate::values::stored_time::option")]
    pub next_screening_due: Option<OffsetDateTime>,
}

impl Default for AmlState {
    fn default() -> Self {
        Self {
            status: AmlStatus::NotScreened,
            screened_at: None,
            last_reviewed_at: None,
            hits: Vec::new(),
            decision: None,
            next_screening_due: None,
        }
    }
}

impl AmlState {
    /// The flags derived from the hits.
    pub fn flags(&self) -> AmlFlags {
        let mut flags = AmlFlags::default();
        for hit in self.hits.iter().filter(|h| h.counts_for_flags()) {
            for category in &hit.categories {
                match category {
                    AmlCategory::Pep => flags.pep = true,
                    AmlCategory::Sanctions => flags.sanctions = true,
                    AmlCategory::AdverseMedia => flags.adverse_media = true,
                    AmlCategory::Terrorism => flags.terrorism = true,
                    AmlCategory::CompromisedPersons
                    | AmlCategory::Criminal
                    | AmlCategory::Other(_) => {}
                }
            }
        }
        flags
    }

    /// The hit with this key.
    pub fn hit(&self, key: &HitKey) -> Option<&AmlHit> {
        self.hits.iter().find(|h| &h.key == key)
    }

    /// How many hits still wait for a disposition.
    pub fn open_hits(&self) -> usize {
        self.hits.iter().filter(|h| h.is_open()).count()
    }

    /// Adds hits to the set and returns the keys that were new. Known hits absorb the report.
    pub(crate) fn merge_hits(&mut self, found: Vec<AmlHit>) -> Vec<HitKey> {
        let mut added = Vec::new();
        for hit in found {
            match self.hits.iter_mut().find(|h| h.key == hit.key) {
                Some(known) => known.absorb(&hit),
                None => {
                    added.push(hit.key.clone());
                    self.hits.push(hit);
                }
            }
        }
        self.hits.sort_by(|a, b| a.key.cmp(&b.key));
        added
    }
}
