//! The CRM API's request and response bodies. Requests are camelCase and convert into domain types
//! with `try_into_domain`; the response DTO [`CustomerDto`] is the only way a customer leaves the
//! service, and it lists every field it carries, so a field added to the domain (a date of birth,
//! an address, an applicant id, a hit list) stays inside unless someone adds it here on purpose.

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use http::header;
use kyc_domain::customer::{ContactUpdate, Customer};
use kyc_domain::risk::RiskAnswers;
use kyc_domain::status::KycStatus;
use kyc_domain::usecases::{CustomerInput, CustomerPatch};
use kyc_domain::values::{CustomerType, Email, ExternalId, FullName, Phone};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::macros::format_description;
use utoipa::ToSchema;

use crate::error::ApiError;

/// A timestamp as the contract writes it: RFC 3339, UTC, seconds precision, `Z`.
pub fn timestamp(at: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// A string schema limited to `values`, for the status enums of the contract.
pub(crate) fn string_enum(values: &[&str]) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// One of `values`, or `null`.
pub(crate) fn nullable_string_enum(values: &[&str]) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    let values = values.iter().copied().map(Some).chain([None]);
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some(values))
        .build()
}

fn kyc_status_schema() -> utoipa::openapi::Object {
    string_enum(&KycStatus::ALL.map(KycStatus::as_str))
}

fn aml_status_schema() -> utoipa::openapi::Object {
    string_enum(&[
        "NOT_SCREENED",
        "IN_PROGRESS",
        "CLEAR",
        "NEEDS_REVIEW",
        "RESOLVED",
    ])
}

pub(crate) fn customer_type_schema() -> utoipa::openapi::Object {
    string_enum(&[
        CustomerType::Individual.as_str(),
        CustomerType::SoleTrader.as_str(),
    ])
}

fn added_via_schema() -> utoipa::openapi::Object {
    string_enum(&[
        "ADMIN_MANUAL",
        "AI_EXTRACTED",
        "CONTACT_PORTAL",
        "BULK_IMPORT",
        "INTEGRATION",
        "SYSTEM",
    ])
}

fn onboarding_schema() -> utoipa::openapi::Object {
    string_enum(&["ALLOWED", "BLOCKED", "FIRM_DECISION"])
}

fn next_action_schema() -> utoipa::openapi::Object {
    string_enum(&[
        "NONE",
        "WAIT",
        "NUDGE_CUSTOMER",
        "DO_NOT_ONBOARD",
        "CHECK_FIRM_PROCESS",
    ])
}

/// `identity`: present only while `kyc_status = VERIFIED`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IdentityDto {
    /// The name on the verified document.
    #[schema(example = "JANE DOE")]
    pub verified_legal_name: String,
    /// ISO 3166-1 alpha-3 country.
    #[schema(example = "AUS")]
    pub verified_country: String,
}

/// `aml.flags`: true when an open or confirmed hit of that category exists.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AmlFlagsDto {
    /// Politically exposed person.
    pub pep: bool,
    /// Sanctions.
    pub sanctions: bool,
    /// Adverse media.
    pub adverse_media: bool,
    /// Terrorism.
    pub terrorism: bool,
}

/// The AML block (also the whole body of `GET /customers/{id}/aml`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AmlDto {
    /// `NOT_SCREENED`, `IN_PROGRESS`, `CLEAR`, `NEEDS_REVIEW` or `RESOLVED`.
    #[schema(schema_with = aml_status_schema, example = "CLEAR")]
    pub status: &'static str,
    /// When screening last finished.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub screened_at: Option<String>,
    /// When a person last recorded a decision.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_reviewed_at: Option<String>,
    /// Match found per category.
    pub flags: AmlFlagsDto,
}

/// The derived `crm` block: what the CRM should show and whether onboarding may proceed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CrmDto {
    /// The sentence to show, e.g. "Cleared. Safe to onboard.".
    pub label: &'static str,
    /// `ALLOWED`, `BLOCKED` or `FIRM_DECISION`.
    #[schema(schema_with = onboarding_schema)]
    pub onboarding: &'static str,
    /// `NONE`, `WAIT`, `NUDGE_CUSTOMER`, `DO_NOT_ONBOARD` or `CHECK_FIRM_PROCESS`.
    #[schema(schema_with = next_action_schema)]
    pub next_action: &'static str,
}

/// The customer object: every field the CRM API ever returns about a customer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CustomerDto {
    /// The customer's UUID.
    #[schema(format = Uuid, example = "550e8400-e29b-41d4-a716-446655440000")]
    pub id: String,
    /// The CRM's own id.
    #[schema(example = "crm-7741")]
    pub external_id: Option<String>,
    /// `INDIVIDUAL` or `SOLE_TRADER`.
    #[serde(rename = "type")]
    #[schema(schema_with = customer_type_schema)]
    pub customer_type: &'static str,
    /// Name.
    pub full_name: String,
    /// Email.
    pub email: String,
    /// E.164 phone.
    pub phone: Option<String>,
    /// `NOT_STARTED`, `PENDING`, `IN_PROGRESS`, `VERIFIED`, `FAILED`, `NOT_REQUIRED` or
    /// `AWAITING_RESUBMISSION`.
    #[schema(schema_with = kyc_status_schema)]
    pub kyc_status: &'static str,
    /// When the current verification attempt opened.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub kyc_started_at: Option<String>,
    /// When the deciding verdict was given.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub kyc_completed_at: Option<String>,
    /// Verified identity summary; `null` unless `kyc_status = VERIFIED`.
    pub identity: Option<IdentityDto>,
    /// AML screening.
    pub aml: AmlDto,
    /// What the CRM should show.
    pub crm: CrmDto,
    /// `INTEGRATION` (API), `ADMIN_MANUAL` (staff); others reserved.
    #[schema(schema_with = added_via_schema)]
    pub added_via: &'static str,
    /// Created.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Last visible change.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl AmlDto {
    /// The AML block of a customer.
    pub fn of(customer: &Customer) -> Self {
        let flags = customer.aml.flags();
        Self {
            status: customer.aml.status.as_str(),
            screened_at: customer.aml.screened_at.map(timestamp),
            last_reviewed_at: customer.aml.last_reviewed_at.map(timestamp),
            flags: AmlFlagsDto {
                pep: flags.pep,
                sanctions: flags.sanctions,
                adverse_media: flags.adverse_media,
                terrorism: flags.terrorism,
            },
        }
    }
}

impl From<&Customer> for CustomerDto {
    fn from(customer: &Customer) -> Self {
        let crm = customer.crm();
        Self {
            id: customer.id.to_string(),
            external_id: customer.external_id.as_ref().map(|e| e.as_str().to_owned()),
            customer_type: customer.customer_type.as_str(),
            full_name: customer.full_name.as_str().to_owned(),
            email: customer.email.as_str().to_owned(),
            phone: customer.phone.as_ref().map(|p| p.as_str().to_owned()),
            kyc_status: customer.kyc_status.as_str(),
            kyc_started_at: customer.kyc_started_at.map(timestamp),
            kyc_completed_at: customer.kyc_completed_at.map(timestamp),
            identity: customer.visible_identity().map(|identity| IdentityDto {
                verified_legal_name: identity.verified_legal_name.clone(),
                verified_country: identity.verified_country.clone(),
            }),
            aml: AmlDto::of(customer),
            crm: CrmDto {
                label: crm.label,
                onboarding: crm.onboarding.as_str(),
                next_action: crm.next_action.as_str(),
            },
            added_via: customer.added_via.as_str(),
            created_at: timestamp(customer.created_at),
            updated_at: timestamp(customer.updated_at),
        }
    }
}

/// A page of customers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CustomerListDto {
    /// Always `"list"`.
    #[schema(example = "list")]
    pub object: &'static str,
    /// The customers; never null.
    pub data: Vec<CustomerDto>,
    /// Whether another page follows: the loop condition.
    pub has_more: bool,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// The page size used.
    pub limit: u32,
    /// Every customer matching the filters; only with `include=total_count`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_count: Option<u64>,
}

/// `POST /customers` body (camelCase).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpsertCustomerRequest {
    /// Your CRM's id for the customer, ≤255 characters; strongly recommended (upsert key).
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
    /// A valid email address.
    #[schema(
        example = "jane@example.com",
        max_length = 254,
        pattern = r"^[!#-?A-Z^-~]{1,64}@(?:[A-Za-z0-9]+\.)+[A-Za-z][A-Za-z0-9]*$"
    )]
    pub email: String,
    /// E.164, e.g. `+61400000000`.
    #[schema(example = "+61400000000", pattern = r"^\+[1-9][0-9]{5,14}$")]
    pub phone: Option<String>,
    /// `INDIVIDUAL` (default) or `SOLE_TRADER`.
    #[serde(rename = "type")]
    #[schema(schema_with = customer_type_schema)]
    pub customer_type: Option<String>,
}

/// Proposed risk answers (camelCase). They count only once a person confirms them in the back
/// office. The first proposal gives all three; a later one may give only the answers it changes
/// (the document states the first, stricter form).
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RiskRequest {
    /// Is the customer new (not a pre-commencement customer)?
    #[schema(value_type = bool)]
    pub is_new_customer: Option<bool>,
    /// Is the service a designated service under the AML/CTF Act?
    #[schema(value_type = bool)]
    pub is_designated_service: Option<bool>,
    /// Does the engagement handle cash or crypto?
    #[schema(value_type = bool)]
    pub handles_cash_or_crypto: Option<bool>,
}

/// `PATCH /customers/{id}` body (camelCase); every field optional.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchCustomerRequest {
    /// Frozen once `VERIFIED`; 1–255 characters.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub full_name: Option<String>,
    /// Frozen once `VERIFIED`.
    #[schema(
        max_length = 254,
        pattern = r"^[!#-?A-Z^-~]{1,64}@(?:[A-Za-z0-9]+\.)+[A-Za-z][A-Za-z0-9]*$"
    )]
    pub email: Option<String>,
    /// Always editable; E.164.
    #[schema(pattern = r"^\+[1-9][0-9]{5,14}$")]
    pub phone: Option<String>,
    /// Proposed risk answers; always editable.
    pub risk: Option<RiskRequest>,
}

/// Fields a body may echo but never change (`type` and `externalId` on PATCH): accepted only
/// when equal to the stored value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Immutables {
    /// `externalId` as sent.
    pub external_id: Option<String>,
    /// `type` as sent.
    pub customer_type: Option<String>,
}

/// Status and server-managed fields a client might send back from a customer object.
const READ_ONLY: &[&str] = &[
    "id",
    "kycStatus",
    "kyc_status",
    "status",
    "amlStatus",
    "aml_status",
    "aml",
    "identity",
    "crm",
    "addedVia",
    "added_via",
    "kycStartedAt",
    "kyc_started_at",
    "kycCompletedAt",
    "kyc_completed_at",
    "createdAt",
    "created_at",
    "updatedAt",
    "updated_at",
];

fn camel_hint(field: &str) -> Option<&'static str> {
    match field {
        "external_id" => Some("externalId"),
        "full_name" => Some("fullName"),
        "is_new_customer" => Some("isNewCustomer"),
        "is_designated_service" => Some("isDesignatedService"),
        "handles_cash_or_crypto" => Some("handlesCashOrCrypto"),
        _ => None,
    }
}

fn refuse_field(path: &str, field: &str) -> ApiError {
    let named = if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    };
    let message = if READ_ONLY.contains(&field) && path.is_empty() {
        format!("{field} is read-only: statuses move through the verification flow, not the API")
    } else if let Some(camel) = camel_hint(field) {
        format!("unknown field {named}: request bodies are camelCase (did you mean {camel}?)")
    } else {
        format!("unknown field {named}")
    };
    ApiError::invalid(named, message)
}

fn check_fields(object: &Map<String, Value>, path: &str, allowed: &[&str]) -> Result<(), ApiError> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(field) => Err(refuse_field(path, field)),
        None => Ok(()),
    }
}

/// A string field; `null` counts as absent.
fn text(object: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(
            field,
            format!("{field} must be a string"),
        )),
    }
}

fn flag(object: &Map<String, Value>, field: &str) -> Result<Option<bool>, ApiError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid(
            format!("risk.{field}"),
            format!("risk.{field} must be true or false"),
        )),
    }
}

fn required(value: Option<String>, field: &str) -> Result<String, ApiError> {
    value.ok_or_else(|| ApiError::invalid(field, format!("{field} is required")))
}

impl UpsertCustomerRequest {
    /// Reads the body's fields, refusing unknown ones and wrong types with the field named.
    ///
    /// # Errors
    /// [`ApiError::Validation`].
    pub fn from_object(object: &Map<String, Value>) -> Result<Self, ApiError> {
        check_fields(
            object,
            "",
            &["externalId", "fullName", "email", "phone", "type"],
        )?;
        Ok(Self {
            external_id: text(object, "externalId")?,
            full_name: required(text(object, "fullName")?, "fullName")?,
            email: required(text(object, "email")?, "email")?,
            phone: text(object, "phone")?,
            customer_type: text(object, "type")?,
        })
    }

    /// The domain input, every value validated by its constructor.
    ///
    /// # Errors
    /// [`ApiError::Validation`] naming the first invalid field.
    pub fn try_into_domain(self) -> Result<CustomerInput, ApiError> {
        Ok(CustomerInput {
            external_id: self.external_id.map(ExternalId::new).transpose()?,
            full_name: FullName::new(self.full_name)?,
            email: Email::new(self.email)?,
            phone: self.phone.map(Phone::new).transpose()?,
            customer_type: self
                .customer_type
                .as_deref()
                .map(CustomerType::parse)
                .transpose()?,
        })
    }
}

impl PatchCustomerRequest {
    /// Reads the body's fields, refusing unknown and read-only ones; `externalId` and `type` are
    /// returned apart, to be compared with the stored values.
    ///
    /// # Errors
    /// [`ApiError::Validation`].
    pub fn from_object(object: &Map<String, Value>) -> Result<(Self, Immutables), ApiError> {
        check_fields(
            object,
            "",
            &["fullName", "email", "phone", "risk", "externalId", "type"],
        )?;
        let risk = match object.get("risk") {
            None | Some(Value::Null) => None,
            Some(Value::Object(risk)) => {
                check_fields(
                    risk,
                    "risk",
                    &[
                        "isNewCustomer",
                        "isDesignatedService",
                        "handlesCashOrCrypto",
                    ],
                )?;
                Some(RiskRequest {
                    is_new_customer: flag(risk, "isNewCustomer")?,
                    is_designated_service: flag(risk, "isDesignatedService")?,
                    handles_cash_or_crypto: flag(risk, "handlesCashOrCrypto")?,
                })
            }
            Some(_) => return Err(ApiError::invalid("risk", "risk must be an object")),
        };
        let request = Self {
            full_name: text(object, "fullName")?,
            email: text(object, "email")?,
            phone: text(object, "phone")?,
            risk,
        };
        let immutables = Immutables {
            external_id: text(object, "externalId")?,
            customer_type: text(object, "type")?,
        };
        Ok((request, immutables))
    }

    /// The domain patch. Risk answers left out keep the answer proposed before, so a CRM may
    /// send one question at a time; with no earlier proposal every answer is needed.
    ///
    /// # Errors
    /// [`ApiError::Validation`] naming the first invalid or missing field.
    pub fn try_into_domain(self, earlier: Option<RiskAnswers>) -> Result<CustomerPatch, ApiError> {
        let risk = match self.risk {
            None => None,
            Some(risk) => {
                let pick = |given: Option<bool>, kept: Option<bool>, field: &str| {
                    given.or(kept).ok_or_else(|| {
                        ApiError::invalid(
                            format!("risk.{field}"),
                            format!(
                                "risk.{field} is required: no earlier answer was proposed for it"
                            ),
                        )
                    })
                };
                Some(RiskAnswers {
                    is_new_customer: pick(
                        risk.is_new_customer,
                        earlier.map(|e| e.is_new_customer),
                        "isNewCustomer",
                    )?,
                    is_designated_service: pick(
                        risk.is_designated_service,
                        earlier.map(|e| e.is_designated_service),
                        "isDesignatedService",
                    )?,
                    handles_cash_or_crypto: pick(
                        risk.handles_cash_or_crypto,
                        earlier.map(|e| e.handles_cash_or_crypto),
                        "handlesCashOrCrypto",
                    )?,
                })
            }
        };
        Ok(CustomerPatch {
            contact: ContactUpdate {
                full_name: self.full_name.map(FullName::new).transpose()?,
                email: self.email.map(Email::new).transpose()?,
                phone: self.phone.map(Phone::new).transpose()?,
            },
            risk,
        })
    }
}

impl Immutables {
    /// Refuses a change of `externalId` or `type`; echoing the stored value is fine.
    ///
    /// # Errors
    /// [`ApiError::Validation`] naming the field.
    pub fn check(&self, customer: &Customer) -> Result<(), ApiError> {
        if let Some(sent) = &self.external_id
            && customer.external_id.as_ref().map(ExternalId::as_str) != Some(sent.trim())
        {
            return Err(ApiError::invalid(
                "externalId",
                "externalId cannot be changed via the API: it is immutable once set",
            ));
        }
        if let Some(sent) = &self.customer_type
            && customer.customer_type.as_str() != sent
        {
            return Err(ApiError::invalid(
                "type",
                "type cannot be changed via the API; re-ingest with the correct type instead",
            ));
        }
        Ok(())
    }
}

/// A JSON object body. Wrong content type, unreadable or malformed JSON, or a non-object body
/// answer 422 `validation_failed`; an oversized body answers 413.
#[derive(Debug, Clone)]
pub struct JsonObject(pub Map<String, Value>);

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json(content_type) {
            return Err(ApiError::invalid(
                "Content-Type",
                "Content-Type must be application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::invalid_request("The request body could not be read.")
                }
            })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(object)) => Ok(Self(object)),
            Ok(_) => Err(ApiError::invalid_request(
                "The request body must be a JSON object.",
            )),
            Err(error) => Err(ApiError::invalid_request(format!(
                "The request body is not valid JSON (line {}, column {}).",
                error.line(),
                error.column()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn timestamps_are_utc_seconds_with_z() {
        let at = datetime!(2026-06-23 11:12:00.123456 +10:00);
        assert_eq!(timestamp(at), "2026-06-23T01:12:00Z");
    }

    #[test]
    fn snake_case_fields_in_a_request_are_refused_with_a_hint() {
        let error = UpsertCustomerRequest::from_object(&object(
            json!({"full_name": "Jane", "email": "j@x.io"}),
        ))
        .unwrap_err();
        assert!(error.to_string().contains("fullName"), "{error}");
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let error =
            UpsertCustomerRequest::from_object(&object(json!({"fullName": 5, "email": "j@x.io"})))
                .unwrap_err();
        assert!(
            matches!(error, ApiError::Validation { field: Some(ref f), .. } if f == "fullName")
        );
    }

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }

    #[test]
    fn partial_risk_answers_keep_the_earlier_proposal() {
        let (patch, _) = PatchCustomerRequest::from_object(&object(
            json!({"risk": {"handlesCashOrCrypto": true}}),
        ))
        .unwrap();
        let earlier = RiskAnswers {
            is_new_customer: false,
            is_designated_service: true,
            handles_cash_or_crypto: false,
        };
        let domain = patch.clone().try_into_domain(Some(earlier)).unwrap();
        assert_eq!(
            domain.risk,
            Some(RiskAnswers {
                handles_cash_or_crypto: true,
                ..earlier
            })
        );
        assert!(patch.try_into_domain(None).is_err());
    }
}
