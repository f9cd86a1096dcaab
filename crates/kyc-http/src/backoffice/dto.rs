//! The back-office API's bodies. Requests are snake_case, as the pages send them, and convert into
//! domain types with `try_into_domain`; responses are built from the aggregate field by field, so
//! what a person sees is chosen here and nowhere else. Unlike the CRM API, the back office shows
//! the firm its own hit details, attempts and audit trail.

use kyc_domain::aml::{AmlDecision, AmlHit, Disposition};
use kyc_domain::customer::{AttemptPhase, Customer, VerificationAttempt};
use kyc_domain::ports::{AuditEntry, Balance, StatementEntry};
use kyc_domain::risk::RiskAnswers;
use kyc_domain::usecases::CustomerInput;
use kyc_domain::values::{CustomerType, Email, ExternalId, FullName, Note, Phone};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::crm::dto::{
    CustomerDto, customer_type_schema, nullable_string_enum, string_enum, timestamp,
};
use crate::error::ApiError;

/// Reads a JSON object into a request type; a wrong shape is 422 with `hint`.
pub(crate) fn read<T: serde::de::DeserializeOwned>(
    body: serde_json::Map<String, Value>,
    hint: &str,
) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(body)).map_err(|error| {
        ApiError::invalid_request(format!("{hint} ({})", error.to_string().replace('`', "")))
    })
}

fn note(field: &'static str, text: String) -> Result<Note, ApiError> {
    Note::new(text).map_err(|e| ApiError::invalid(field, e.message))
}

fn disposition_schema() -> utoipa::openapi::Object {
    string_enum(&["FALSE_POSITIVE", "TRUE_MATCH"])
}

fn optional_disposition_schema() -> utoipa::openapi::Object {
    nullable_string_enum(&["FALSE_POSITIVE", "TRUE_MATCH"])
}

fn decision_schema() -> utoipa::openapi::Object {
    string_enum(&["PROCEED", "DECLINE"])
}

fn phase_schema() -> utoipa::openapi::Object {
    string_enum(&["starting", "open", "voided", "closed"])
}

fn risk_rating_schema() -> utoipa::openapi::Object {
    nullable_string_enum(&["LOW", "MEDIUM", "HIGH"])
}

fn operation_kind_schema() -> utoipa::openapi::Object {
    string_enum(&["grant", "reserve", "post", "void", "refund"])
}

/// `POST /api/backoffice/customers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomerRequest {
    /// The firm's CRM id, if it has one.
    #[schema(
        example = "crm-7741",
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub external_id: Option<String>,
    /// 1–255 characters.
    #[schema(
        example = "Jane Doe",
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub full_name: String,
    /// A valid email.
    #[schema(
        example = "jane@example.com",
        max_length = 254,
        pattern = r"^[!#-?A-Z^-~]{1,64}@(?:[A-Za-z0-9]+\.)+[A-Za-z][A-Za-z0-9]*$"
    )]
    pub email: String,
    /// E.164.
    #[schema(example = "+61400000000", pattern = r"^\+[1-9][0-9]{5,14}$")]
    pub phone: Option<String>,
    /// `INDIVIDUAL` (default) or `SOLE_TRADER`.
    #[serde(rename = "type")]
    #[schema(schema_with = customer_type_schema)]
    pub customer_type: Option<String>,
}

impl CreateCustomerRequest {
    /// Validates into the domain's input.
    ///
    /// # Errors
    /// 422 naming the invalid field.
    pub fn try_into_domain(self) -> Result<CustomerInput, ApiError> {
        let field = |name: &'static str| {
            move |e: kyc_domain::values::ValidationError| ApiError::invalid(name, e.message)
        };
        Ok(CustomerInput {
            external_id: self
                .external_id
                .map(ExternalId::new)
                .transpose()
                .map_err(field("external_id"))?,
            full_name: FullName::new(self.full_name).map_err(field("full_name"))?,
            email: Email::new(self.email).map_err(field("email"))?,
            phone: self
                .phone
                .map(Phone::new)
                .transpose()
                .map_err(field("phone"))?,
            customer_type: self
                .customer_type
                .map(|text| {
                    CustomerType::parse(&text).map_err(|_| {
                        ApiError::invalid("type", "type must be INDIVIDUAL or SOLE_TRADER")
                    })
                })
                .transpose()?,
        })
    }
}

/// `PUT …/risk`: the three answers, confirmed by the person sending them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RiskRequest {
    /// Whether the firm provides a designated service to this customer.
    pub is_designated_service: bool,
    /// Whether cash or crypto is involved.
    pub handles_cash_or_crypto: bool,
    /// Whether this is a new customer.
    pub is_new_customer: bool,
}

impl RiskRequest {
    /// The domain's answers.
    pub fn into_domain(self) -> RiskAnswers {
        RiskAnswers {
            is_designated_service: self.is_designated_service,
            handles_cash_or_crypto: self.handles_cash_or_crypto,
            is_new_customer: self.is_new_customer,
        }
    }
}

/// `POST …/verification`: the cost the person saw and confirmed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The quoted cost, in credits.
    #[schema(minimum = 0, maximum = 1_000_000, example = 1)]
    #[serde(deserialize_with = "whole_number")]
    pub confirm_cost_credits: u64,
}

/// A JSON integer as JSON Schema counts one: `1` and `1.0` alike (a number whose fraction is
/// zero), never `1.5` or a negative number.
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    // Beyond 2^53 a float no longer holds every whole number exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    number
        .as_u64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=EXACT).contains(f))
                .map(|f| f as u64)
        })
        .ok_or_else(|| {
            serde::de::Error::custom(format!("expected a whole number of credits, got {number}"))
        })
}

/// `POST …/aml/hits/{hit_id}/disposition`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DispositionRequest {
    /// `FALSE_POSITIVE` or `TRUE_MATCH`.
    #[schema(schema_with = disposition_schema)]
    pub disposition: String,
    /// Why: 1–4,000 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 4000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    pub note: String,
}

impl DispositionRequest {
    /// Validates into the domain's values.
    ///
    /// # Errors
    /// 422 naming the invalid field.
    pub fn try_into_domain(self) -> Result<(Disposition, Note), ApiError> {
        let disposition = match self.disposition.as_str() {
            "FALSE_POSITIVE" => Disposition::FalsePositive,
            "TRUE_MATCH" => Disposition::TrueMatch,
            _ => {
                return Err(ApiError::invalid(
                    "disposition",
                    "disposition must be FALSE_POSITIVE or TRUE_MATCH",
                ));
            }
        };
        Ok((disposition, note("note", self.note)?))
    }
}

/// `POST …/aml/decision`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// `PROCEED` or `DECLINE`.
    #[schema(schema_with = decision_schema)]
    pub decision: String,
    /// Why: 1–4,000 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 4000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    pub rationale: String,
}

impl DecisionRequest {
    /// Validates into the domain's values.
    ///
    /// # Errors
    /// 422 naming the invalid field.
    pub fn try_into_domain(self) -> Result<(AmlDecision, Note), ApiError> {
        let decision = match self.decision.as_str() {
            "PROCEED" => AmlDecision::Proceed,
            "DECLINE" => AmlDecision::Decline,
            _ => {
                return Err(ApiError::invalid(
                    "decision",
                    "decision must be PROCEED or DECLINE",
                ));
            }
        };
        Ok((decision, note("rationale", self.rationale)?))
    }
}

/// `POST …/restart`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartRequest {
    /// Why the failed verification is restarted: 1–4,000 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 4000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    pub reason: String,
}

impl RestartRequest {
    /// Validates the reason.
    ///
    /// # Errors
    /// 422 on `reason`.
    pub fn try_into_domain(self) -> Result<Note, ApiError> {
        note("reason", self.reason)
    }
}

/// Risk answers as proposed or confirmed.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnswersDto {
    /// Designated service in scope.
    pub is_designated_service: bool,
    /// Cash or crypto involved.
    pub handles_cash_or_crypto: bool,
    /// New customer.
    pub is_new_customer: bool,
}

impl From<RiskAnswers> for AnswersDto {
    fn from(answers: RiskAnswers) -> Self {
        Self {
            is_designated_service: answers.is_designated_service,
            handles_cash_or_crypto: answers.handles_cash_or_crypto,
            is_new_customer: answers.is_new_customer,
        }
    }
}

/// Confirmed answers with who confirmed them and when.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfirmedDto {
    /// The answers.
    #[serde(flatten)]
    pub answers: AnswersDto,
    /// The person's user id.
    pub confirmed_by: String,
    /// Their login.
    pub confirmed_by_email: String,
    /// When.
    #[schema(format = DateTime)]
    pub confirmed_at: String,
}

/// The risk questions: what the CRM proposed and what a person confirmed.
#[derive(Debug, Serialize, ToSchema)]
pub struct RiskDto {
    /// Proposed over the CRM API, if ever.
    pub proposed: Option<AnswersDto>,
    /// Confirmed in the back office, if yet.
    pub confirmed: Option<ConfirmedDto>,
}

/// One verification attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptDto {
    /// 1, 2, …
    pub number: u32,
    /// `starting`, `open`, `voided` or `closed`.
    #[schema(schema_with = phase_schema)]
    pub phase: &'static str,
    /// Its price.
    pub cost_credits: u64,
    /// The provider level.
    pub level_name: String,
    /// The provider's applicant, once created.
    pub applicant_id: Option<String>,
    /// Who clicked Start Verification.
    pub started_by: Option<String>,
    /// When it was claimed.
    #[schema(format = DateTime)]
    pub claimed_at: String,
    /// When it opened (charged, link issued).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub opened_at: Option<String>,
    /// When it was voided or closed.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<String>,
    /// Why it was voided.
    pub void_reason: Option<String>,
}

fn phase_name(phase: AttemptPhase) -> &'static str {
    match phase {
        AttemptPhase::Starting => "starting",
        AttemptPhase::Open => "open",
        AttemptPhase::Voided => "voided",
        AttemptPhase::Closed => "closed",
    }
}

impl From<&VerificationAttempt> for AttemptDto {
    fn from(attempt: &VerificationAttempt) -> Self {
        Self {
            number: attempt.number.get(),
            phase: phase_name(attempt.phase),
            cost_credits: attempt.cost.get(),
            level_name: attempt.level_name.clone(),
            applicant_id: attempt.applicant_id.as_ref().map(|a| a.as_str().to_owned()),
            started_by: attempt
                .started_by
                .as_ref()
                .map(|p| p.email.as_str().to_owned()),
            claimed_at: timestamp(attempt.claimed_at),
            opened_at: attempt.opened_at.map(timestamp),
            ended_at: attempt.ended_at.map(timestamp),
            void_reason: attempt.void_reason.clone(),
        }
    }
}

/// One AML hit, for the firm's review.
#[derive(Debug, Serialize, ToSchema)]
pub struct HitDto {
    /// Its id (for the disposition route).
    pub id: String,
    /// `pep`, `sanctions`, `adverse_media`, `terrorism`, …
    pub categories: Vec<String>,
    /// The matched name, when the provider gave one.
    pub name: Option<String>,
    /// The provider's match status.
    pub match_status: String,
    /// `null`, `FALSE_POSITIVE` or `TRUE_MATCH`.
    #[schema(schema_with = optional_disposition_schema)]
    pub disposition: Option<&'static str>,
    /// The officer's note on the disposition.
    pub disposition_note: Option<String>,
}

impl From<&AmlHit> for HitDto {
    fn from(hit: &AmlHit) -> Self {
        Self {
            id: hit.key.as_str().to_owned(),
            categories: hit
                .categories
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            name: hit.name.clone(),
            match_status: hit.match_status.clone(),
            disposition: hit.disposition.as_ref().map(|d| d.disposition.as_str()),
            disposition_note: hit.disposition.as_ref().map(|d| d.note.as_str().to_owned()),
        }
    }
}

/// One audit event.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditDto {
    /// Position in the firm's log.
    pub sequence: i64,
    /// Event id.
    pub id: String,
    /// The customer.
    pub customer_id: String,
    /// When.
    #[schema(format = DateTime)]
    pub at: String,
    /// Who (`kind`: `api_key`, `person`, `provider`, `customer`, `system`).
    #[schema(value_type = Object)]
    pub actor: Value,
    /// What changed (`type` names the change).
    #[schema(value_type = Object)]
    pub change: Value,
    /// Why, where a person acted.
    pub note: Option<String>,
    /// The provider event behind it, if any.
    pub provider_event_key: Option<String>,
}

impl From<&AuditEntry> for AuditDto {
    fn from(entry: &AuditEntry) -> Self {
        Self {
            sequence: entry.sequence,
            id: entry.id.to_string(),
            customer_id: entry.customer_id.to_string(),
            at: timestamp(entry.event.at),
            actor: serde_json::to_value(&entry.event.actor).unwrap_or(Value::Null),
            change: serde_json::to_value(&entry.event.change).unwrap_or(Value::Null),
            note: entry.event.note.clone(),
            provider_event_key: entry
                .provider_event_key
                .as_ref()
                .map(|k| k.as_str().to_owned()),
        }
    }
}

/// `GET /api/backoffice/customers/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerDetailDto {
    /// The customer object of the CRM API.
    pub customer: CustomerDto,
    /// The risk answers, `null` when none were proposed or confirmed.
    pub risk: Option<RiskDto>,
    /// `LOW`, `MEDIUM`, `HIGH`, or `null` until a person confirms the answers.
    #[schema(schema_with = risk_rating_schema)]
    pub risk_rating: Option<&'static str>,
    /// The link to hand to the customer while they have something to do; else `null`.
    pub verification_url: Option<String>,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptDto>,
    /// Every AML hit.
    pub aml_hits: Vec<HitDto>,
    /// The history, oldest first.
    pub audit: Vec<AuditDto>,
}

impl CustomerDetailDto {
    /// The detail of `customer`, with its link and history.
    pub fn of(customer: &Customer, verification_url: Option<String>, audit: &[AuditEntry]) -> Self {
        let risk = &customer.risk;
        Self {
            customer: CustomerDto::from(customer),
            risk: (risk.proposed.is_some() || risk.confirmed.is_some()).then(|| RiskDto {
                proposed: risk.proposed.map(AnswersDto::from),
                confirmed: risk.confirmed.as_ref().map(|c| ConfirmedDto {
                    answers: c.answers.into(),
                    confirmed_by: c.confirmed_by.to_string(),
                    confirmed_by_email: c.confirmed_by_email.as_str().to_owned(),
                    confirmed_at: timestamp(c.confirmed_at),
                }),
            }),
            risk_rating: risk.rating().map(kyc_domain::risk::RiskRating::as_str),
            verification_url,
            attempts: customer.attempts.iter().map(AttemptDto::from).collect(),
            aml_hits: customer.aml.hits.iter().map(HitDto::from).collect(),
            audit: audit.iter().map(AuditDto::from).collect(),
        }
    }
}

/// A page of the back-office customer list.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerPageDto {
    /// The customers.
    pub data: Vec<CustomerDto>,
    /// Whether another page follows.
    pub has_more: bool,
    /// Pass as `cursor` for the next page (with the same filters and search).
    pub next_cursor: Option<String>,
    /// The page size used.
    pub limit: u32,
}

/// `GET …/verification/quote`.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuoteDto {
    /// The price of one verification.
    pub cost_credits: u64,
    /// Credits available now.
    pub balance_credits: u64,
}

/// The answer to Start Verification.
#[derive(Debug, Serialize, ToSchema)]
pub struct StartedDto {
    /// `PENDING`.
    #[schema(example = "PENDING")]
    pub kyc_status: &'static str,
    /// The link to hand to the customer.
    pub verification_url: String,
    /// Credits charged for this attempt.
    pub charged_credits: u64,
    /// Credits available after the charge.
    pub balance_credits: u64,
}

/// One statement line.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatementLineDto {
    /// The operation's id.
    pub id: String,
    /// When.
    #[schema(format = DateTime)]
    pub at: String,
    /// `grant`, `reserve`, `post`, `void` or `refund`.
    #[schema(schema_with = operation_kind_schema)]
    pub kind: Value,
    /// Credits moved.
    pub credits: u64,
    /// Effect on the available balance.
    pub available_delta: i64,
    /// The customer charged, for operations on a hold.
    pub customer_id: Option<String>,
    /// The attempt, for operations on a hold.
    pub attempt: Option<u32>,
    /// The grant's reference or the refund's reason.
    pub reference: Option<String>,
}

impl From<&StatementEntry> for StatementLineDto {
    fn from(entry: &StatementEntry) -> Self {
        Self {
            id: entry.id.clone(),
            at: timestamp(entry.at),
            kind: serde_json::to_value(entry.kind).unwrap_or(Value::Null),
            credits: entry.credits.get(),
            available_delta: entry.available_delta,
            customer_id: entry.customer.map(|c| c.to_string()),
            attempt: entry.attempt.map(kyc_domain::ids::AttemptNumber::get),
            reference: entry.reference.clone(),
        }
    }
}

/// `GET /api/backoffice/credits`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditsDto {
    /// Spendable now.
    pub available_credits: u64,
    /// Reserved by verifications being started.
    pub held_credits: u64,
    /// Charged, net of refunds.
    pub spent_credits: u64,
    /// The newest statement lines first.
    pub statement: Vec<StatementLineDto>,
    /// Pass as `cursor` for older lines; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl CreditsDto {
    /// The balance with one page of the statement.
    pub fn of(balance: Balance, statement: &[StatementEntry], next_cursor: Option<String>) -> Self {
        Self {
            available_credits: balance.available.get(),
            held_credits: balance.held.get(),
            spent_credits: balance.spent.get(),
            statement: statement.iter().map(StatementLineDto::from).collect(),
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(body: &str) -> Result<StartRequest, String> {
        serde_json::from_str(body).map_err(|e| e.to_string())
    }

    #[test]
    fn the_confirmed_cost_is_any_json_integer_and_nothing_else() {
        assert_eq!(
            start(r#"{"confirm_cost_credits": 3}"#)
                .unwrap()
                .confirm_cost_credits,
            3
        );
        assert_eq!(
            start(r#"{"confirm_cost_credits": 3.0}"#)
                .unwrap()
                .confirm_cost_credits,
            3
        );
        assert_eq!(
            start(r#"{"confirm_cost_credits": 3e0}"#)
                .unwrap()
                .confirm_cost_credits,
            3
        );
        for refused in ["3.5", "-1", "-1.0", "1e300", r#""3""#, "null"] {
            assert!(
                start(&format!(r#"{{"confirm_cost_credits": {refused}}}"#)).is_err(),
                "{refused}"
            );
        }
    }
}
