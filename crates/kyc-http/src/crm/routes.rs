//! The CRM handlers. Each one turns the request into domain input, calls one use case, and
//! answers with DTOs; every error goes through [`ApiError`].

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use kyc_domain::customer::Customer;
use kyc_domain::ports::{CustomerFilter, ListQuery, PagePosition};
use kyc_domain::status::{AmlStatus, KycStatus};
use kyc_domain::usecases::{CustomerRef, UpsertError};
use kyc_domain::values::ExternalId;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::cursor;
use super::dto::{
    AmlDto, CustomerDto, CustomerListDto, JsonObject, PatchCustomerRequest, UpsertCustomerRequest,
};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorEnvelope};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 100;

async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<Customer, ApiError> {
    // Text that cannot be an id or an external id names no customer: 404, like an unknown one.
    let reference = CustomerRef::parse(id).map_err(|_| ApiError::customer_not_found())?;
    state
        .ports
        .service
        .find_customer(caller.firm_id, &reference)
        .await?
        .ok_or_else(ApiError::customer_not_found)
}

/// Create or update a customer by the upsert table.
///
/// # Responses
/// 201 created, 200 updated (matched by externalId, or adopted or matched by email), 409
/// `conflict` (email taken by another externalId), 422 `validation_failed`.
#[utoipa::path(
    post,
    path = "/api/v1/customers",
    tag = "customers",
    request_body = UpsertCustomerRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[ -~]*[!-~][ -~]*$", description = "1–255 printable ASCII characters; replays the first answer for 24 h")),
    responses(
        (status = 201, description = "Created", body = CustomerDto),
        (status = 200, description = "Updated an existing record", body = CustomerDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "insufficient_scope", body = ErrorEnvelope),
        (status = 409, description = "conflict, idempotency_conflict or idempotency_in_progress", body = ErrorEnvelope),
        (status = 422, description = "validation_failed", body = ErrorEnvelope),
        (status = 429, description = "rate_limited", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn upsert_customer(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let input = UpsertCustomerRequest::from_object(&body)?.try_into_domain()?;
    let service = &state.ports.service;
    let actor = caller.actor();
    let upserted = match service
        .upsert_customer(caller.firm_id, &actor, input.clone())
        .await
    {
        // A store may read by external id, then by email, outside one snapshot: a concurrent
        // create of the same external id committing between the two reads looks like "the email
        // belongs to another external id". One more pass sees the winner and updates it; a real
        // conflict is refused again.
        Err(UpsertError::EmailTaken) => {
            service
                .upsert_customer(caller.firm_id, &actor, input)
                .await?
        }
        other => other?,
    };
    let dto = CustomerDto::from(&upserted.customer);
    let mut response = Json(dto).into_response();
    if upserted.created {
        *response.status_mut() = StatusCode::CREATED;
        if let Ok(location) =
            HeaderValue::from_str(&format!("/api/v1/customers/{}", upserted.customer.id))
        {
            response.headers_mut().insert(header::LOCATION, location);
        }
    }
    Ok(response)
}

/// The list filters, parsed.
struct ListParams {
    filter: CustomerFilter,
    limit: u32,
    cursor: Option<String>,
    include_total: bool,
}

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
        // An unencoded `+` in a query string arrives as a space: read it back as the offset sign.
        OffsetDateTime::parse(&text.replace(' ', "+"), &Rfc3339).ok()
    })
}

fn parse_list_params(pairs: Vec<(String, String)>) -> Result<ListParams, ApiError> {
    let mut params = ListParams {
        filter: CustomerFilter::default(),
        limit: DEFAULT_LIMIT,
        cursor: None,
        include_total: false,
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in pairs {
        if seen.contains(&name) {
            return Err(ApiError::invalid(
                &name,
                format!("{name} is given more than once"),
            ));
        }
        seen.push(name.clone());
        match name.as_str() {
            "status" => {
                params.filter.kyc_status = Some(KycStatus::parse(&value).ok_or_else(|| {
                    ApiError::invalid("status", "status must be one of NOT_STARTED, PENDING, IN_PROGRESS, VERIFIED, FAILED, NOT_REQUIRED, AWAITING_RESUBMISSION")
                })?);
            }
            "aml_status" => {
                params.filter.aml_status = Some(AmlStatus::parse(&value).ok_or_else(|| {
                    ApiError::invalid("aml_status", "aml_status must be one of NOT_SCREENED, IN_PROGRESS, CLEAR, NEEDS_REVIEW, RESOLVED")
                })?);
            }
            "updated_since" => {
                params.filter.updated_since = Some(parse_time(&value).ok_or_else(|| {
                    ApiError::invalid(
                        "updated_since",
                        "updated_since must be an RFC 3339 timestamp, e.g. 2026-06-23T01:12:00Z",
                    )
                })?);
            }
            "external_id" => {
                params.filter.external_id = Some(
                    ExternalId::new(value)
                        .map_err(|e| ApiError::invalid("external_id", e.message))?,
                );
            }
            "limit" => {
                params.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid("limit", "limit must be an integer from 1 to 100")
                    })?;
            }
            "cursor" => params.cursor = Some(value).filter(|c| !c.is_empty()),
            "include" => {
                for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if item == "total_count" {
                        params.include_total = true;
                    } else {
                        return Err(ApiError::invalid(
                            "include",
                            format!(
                                "include does not support {item:?}; the only value is total_count"
                            ),
                        ));
                    }
                }
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    format!(
                        "unknown query parameter {other}; expected status, aml_status, updated_since, external_id, limit, cursor or include"
                    ),
                ));
            }
        }
    }
    Ok(params)
}

/// List and poll customers.
///
/// # Responses
/// 200 a page; 422 `validation_failed` for a bad filter, a `limit` outside 1–100, or a cursor
/// issued for other filters.
#[utoipa::path(
    get,
    path = "/api/v1/customers",
    tag = "customers",
    params(
        ("status" = Option<String>, Query, pattern = r"^(NOT_STARTED|PENDING|IN_PROGRESS|VERIFIED|FAILED|NOT_REQUIRED|AWAITING_RESUBMISSION)$", description = "kyc_status filter"),
        ("aml_status" = Option<String>, Query, pattern = r"^(NOT_SCREENED|IN_PROGRESS|CLEAR|NEEDS_REVIEW|RESOLVED)$", description = "aml.status filter"),
        ("updated_since" = Option<String>, Query, format = DateTime, description = "RFC 3339; only customers updated strictly after it, ordered by (updated_at, id)"),
        ("external_id" = Option<String>, Query, min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$", description = "look up by CRM id"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1–100, default 50"),
        ("cursor" = Option<String>, Query, pattern = r"^[A-Za-z0-9_-]*$", description = "next_cursor of the previous page, exactly as returned, with the same filters (a cursor is bound to the firm and the filters it was issued for; any other value is a 422); empty or omitted: the first page"),
        ("include" = Option<String>, Query, pattern = r"^total_count$", description = "only total_count"),
    ),
    responses(
        (status = 200, description = "A page of customers", body = CustomerListDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "insufficient_scope", body = ErrorEnvelope),
        (status = 422, description = "validation_failed", body = ErrorEnvelope),
        (status = 429, description = "rate_limited", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn list_customers(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<CustomerListDto>, ApiError> {
    let Query(pairs) =
        query.map_err(|_| ApiError::invalid_request("The query string could not be parsed."))?;
    let params = parse_list_params(pairs)?;
    let after = params
        .cursor
        .as_deref()
        .map(|text| cursor::decode(text, caller.firm_id, &params.filter))
        .transpose()?;
    let query = ListQuery {
        filter: params.filter,
        after,
        limit: params.limit,
        include_total: params.include_total,
    };
    let page = state
        .ports
        .service
        .list_customers(caller.firm_id, &query)
        .await?;
    let order = query.filter.order();
    let next_cursor = page.customers.last().filter(|_| page.has_more).map(|last| {
        let position = PagePosition::after(order, last);
        cursor::encode(caller.firm_id, &query.filter, &position)
    });
    Ok(Json(CustomerListDto {
        object: "list",
        data: page.customers.iter().map(CustomerDto::from).collect(),
        has_more: page.has_more,
        next_cursor,
        limit: query.limit,
        total_count: if query.include_total {
            Some(page.total.unwrap_or(0))
        } else {
            None
        },
    }))
}

/// One customer, by UUID or external id.
///
/// # Responses
/// 200 the customer; 404 `not_found` for an unknown id or another firm's.
#[utoipa::path(
    get,
    path = "/api/v1/customers/{id}",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's UUID or your external_id")),
    responses(
        (status = 200, description = "The customer", body = CustomerDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "insufficient_scope", body = ErrorEnvelope),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 429, description = "rate_limited", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn get_customer(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CustomerDto>, ApiError> {
    let customer = find(&state, &caller, &id).await?;
    Ok(Json(CustomerDto::from(&customer)))
}

/// Update contact fields and propose risk answers.
///
/// # Responses
/// 200 the customer; 404 `not_found`; 422 `validation_failed` for an invalid field, an unknown
/// or read-only field, a change of `type` or `externalId`, or a change of `fullName` or `email`
/// once `VERIFIED`.
#[utoipa::path(
    patch,
    path = "/api/v1/customers/{id}",
    tag = "customers",
    params(
        ("id" = String, Path, description = "The customer's UUID or your external_id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[ -~]*[!-~][ -~]*$", description = "1–255 printable ASCII characters; replays the first answer for 24 h"),
    ),
    request_body = PatchCustomerRequest,
    responses(
        (status = 200, description = "The updated customer", body = CustomerDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "insufficient_scope", body = ErrorEnvelope),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 409, description = "idempotency_conflict or idempotency_in_progress", body = ErrorEnvelope),
        (status = 422, description = "validation_failed", body = ErrorEnvelope),
        (status = 429, description = "rate_limited", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn patch_customer(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Json<CustomerDto>, ApiError> {
    let (request, immutables) = PatchCustomerRequest::from_object(&body)?;
    let customer = find(&state, &caller, &id).await?;
    immutables.check(&customer)?;
    let patch = request.try_into_domain(customer.risk.proposed)?;
    let updated = state
        .ports
        .service
        .patch_customer(caller.firm_id, customer.id, &caller.actor(), patch)
        .await?;
    Ok(Json(CustomerDto::from(&updated)))
}

/// Only the AML block of a customer.
///
/// # Responses
/// 200 the AML block; 404 `not_found`.
#[utoipa::path(
    get,
    path = "/api/v1/customers/{id}/aml",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's UUID or your external_id")),
    responses(
        (status = 200, description = "The AML block", body = AmlDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "insufficient_scope", body = ErrorEnvelope),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 429, description = "rate_limited", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn get_customer_aml(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AmlDto>, ApiError> {
    let customer = find(&state, &caller, &id).await?;
    Ok(Json(AmlDto::of(&customer)))
}

/// Starting verification is billable and irreversible: only a person in the back office may.
///
/// # Responses
/// Always 403 `human_required` for a valid key (401 without one).
#[utoipa::path(
    post,
    path = "/api/v1/customers/{id}/verification",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's UUID or your external_id")),
    responses(
        (status = 403, description = "human_required: Verification can only be started by a person in the back office.", body = ErrorEnvelope),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn start_verification(_caller: Caller) -> ApiError {
    ApiError::HumanRequired
}

/// The OpenAPI 3.1 document of this API.
pub(crate) async fn openapi_document(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        state.openapi_json.as_str().to_owned(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn an_unencoded_plus_in_updated_since_is_read_as_the_offset_sign() {
        let params =
            parse_list_params(pairs(&[("updated_since", "2026-06-23T11:12:00 10:00")])).unwrap();
        assert_eq!(
            params.filter.updated_since.unwrap().unix_timestamp(),
            time::macros::datetime!(2026-06-23 01:12:00 UTC).unix_timestamp()
        );
    }

    #[test]
    fn unknown_or_repeated_parameters_are_refused() {
        assert!(parse_list_params(pairs(&[("updatedSince", "x")])).is_err());
        assert!(parse_list_params(pairs(&[("limit", "5"), ("limit", "6")])).is_err());
        assert!(parse_list_params(pairs(&[("include", "total_count,foo")])).is_err());
    }
}
