//! The three risk questions, who answered them, and what follows from the answers: the risk rating,
//! the provider level (standard or enhanced due diligence) and the re-screening cadence.

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime};

use crate::ids::UserId;
use crate::values::Email;

/// The answers to the three risk questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RiskAnswers {
    /// Is the service the firm provides a designated service under the AML/CTF Act?
    pub is_designated_service: bool,
    /// Does the matter involve cash or crypto-assets?
    pub handles_cash_or_crypto: bool,
    /// Is this a new customer of the firm?
    pub is_new_customer: bool,
}

impl RiskAnswers {
    /// The rating these answers give: `HIGH` with cash or crypto, else `MEDIUM` for a new customer,
    /// else `LOW`.
    pub const fn rating(&self) -> RiskRating {
        match (self.handles_cash_or_crypto, self.is_new_customer) {
            (true, _) => RiskRating::High,
            (false, true) => RiskRating::Medium,
            (false, false) => RiskRating::Low,
        }
    }
}

/// Answers a person confirmed in the back office. Only these count; answers proposed over the API
/// wait here until a person confirms them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmedRisk {
    /// The confirmed answers.
    pub answers: RiskAnswers,
    /// Who confirmed them.
    pub confirmed_by: UserId,
    /// Their login, for the audit trail and the back office.
    pub confirmed_by_email: Email,
    /// When.
    #[serde(with = "crate::values::stored_time")]
    pub confirmed_at: OffsetDateTime,
}

/// The risk answers of a customer: what the CRM proposed and what a person confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RiskState {
    /// The latest answers proposed over the API, if any.
    pub proposed: Option<RiskAnswers>,
    /// The latest answers confirmed by a person, if any.
    pub confirmed: Option<ConfirmedRisk>,
}

impl RiskState {
    /// The rating from confirmed answers; `None` until a person confirms.
    pub fn rating(&self) -> Option<RiskRating> {
        self.confirmed.as_ref().map(|c| c.answers.rating())
    }

    /// Whether confirmed answers say the designated service is in scope, which is what Start
    /// Verification requires.
    pub fn designated_service_confirmed(&self) -> bool {
        self.confirmed
            .as_ref()
            .is_some_and(|c| c.answers.is_designated_service)
    }
}

/// The customer's ML/TF risk rating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RiskRating {
    /// Existing customer, no cash or crypto.
    Low,
    /// New customer, no cash or crypto.
    Medium,
    /// Cash or crypto involved.
    High,
}

impl RiskRating {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Low => "LOW",
            Self::Medium => "MEDIUM",
            Self::High => "HIGH",
        }
    }

    /// How often a verified customer is screened again: LOW 12 months, MEDIUM 6, HIGH 3.
    pub const fn rescreen_interval_months(self) -> u8 {
        match self {
            Self::Low => 12,
            Self::Medium => 6,
            Self::High => 3,
        }
    }

    /// Whether this rating calls for enhanced due diligence (the provider's EDD level).
    pub const fn needs_enhanced_due_diligence(self) -> bool {
        match self {
            Self::High => true,
            Self::Low | Self::Medium => false,
        }
    }

    /// When a customer screened at `screened_at` is due for re-screening. Month arithmetic clamps
    /// to the last day of a shorter month (31 Jan + 3 months = 30 Apr).
    pub fn rescreen_due(self, screened_at: OffsetDateTime) -> OffsetDateTime {
        screened_at.replace_date(add_months(
            screened_at.date(),
            self.rescreen_interval_months(),
        ))
    }
}

fn add_months(date: Date, months: u8) -> Date {
    let zero_based = date.month() as i32 - 1 + i32::from(months);
    let year = date.year() + zero_based.div_euclid(12);
    let month = Month::try_from((zero_based.rem_euclid(12) + 1) as u8).unwrap_or(Month::December);
    let day = date.day().min(month.length(year));
    Date::from_calendar_date(year, month, day).unwrap_or(date)
}

/// The provider's level names, chosen by rating. Both are configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderLevels {
    /// The level for LOW and MEDIUM customers.
    pub standard: String,
    /// The level for HIGH customers (enhanced due diligence).
    pub enhanced: String,
}

impl ProviderLevels {
    /// The level to verify a customer of this rating with.
    pub fn for_rating(&self, rating: RiskRating) -> &str {
        if rating.needs_enhanced_due_diligence() {
            &self.enhanced
        } else {
            &self.standard
        }
    }
}

impl Default for ProviderLevels {
    fn default() -> Self {
        Self {
            standard: "basic-kyc-level".to_owned(),
            enhanced: "basic-kyc-level".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn answers(cash: bool, new: bool) -> RiskAnswers {
        RiskAnswers {
            is_designated_service: true,
            handles_cash_or_crypto: cash,
            is_new_customer: new,
        }
    }

    #[test]
    fn rating_follows_the_brief() {
        assert_eq!(answers(false, false).rating(), RiskRating::Low);
        assert_eq!(answers(false, true).rating(), RiskRating::Medium);
        assert_eq!(answers(true, false).rating(), RiskRating::High);
        assert_eq!(answers(true, true).rating(), RiskRating::High);
    }

    #[test]
    fn rescreening_cadence_is_12_6_3_months() {
        let at = datetime!(2026-01-31 10:00 UTC);
        assert_eq!(
            RiskRating::Low.rescreen_due(at),
            datetime!(2027-01-31 10:00 UTC)
        );
        assert_eq!(
            RiskRating::Medium.rescreen_due(at),
            datetime!(2026-07-31 10:00 UTC)
        );
        assert_eq!(
            RiskRating::High.rescreen_due(at),
            datetime!(2026-04-30 10:00 UTC)
        );
        let leap = datetime!(2027-11-30 00:00 UTC);
        assert_eq!(
            RiskRating::High.rescreen_due(leap),
            datetime!(2028-02-29 00:00 UTC)
        );
    }

    #[test]
    fn only_high_risk_gets_the_enhanced_level() {
        let levels = ProviderLevels {
            standard: "std".into(),
            enhanced: "edd".into(),
        };
        assert_eq!(levels.for_rating(RiskRating::Low), "std");
        assert_eq!(levels.for_rating(RiskRating::Medium), "std");
        assert_eq!(levels.for_rating(RiskRating::High), "edd");
    }
}
