//! The back-office handlers. Each one turns the request into domain input, calls one use case
//! for the session's firm and person, and answers with DTOs; every error goes through
//! [`ApiError`]. A customer of another firm is simply not found (404).

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use kyc_domain::aml::HitKey;
use kyc_domain::customer::Customer;
use kyc_domain::ports::{CustomerFilter, ListOrder, ListQuery, PagePosition};
use kyc_domain::status::{AmlStatus, KycStatus};
use kyc_domain::usecases::CustomerRef;
use kyc_domain::values::Credits;

use super::dto::{
    CreateCustomerRequest, CreditsDto, CustomerDetailDto, CustomerPageDto, DecisionRequest,
    DispositionRequest, QuoteDto, RestartRequest, RiskRequest, StartRequest, StartedDto, read,
};
use super::session::Staff;
use crate::AppState;
use crate::crm::cursor;
use crate::crm::dto::{CustomerDto, JsonObject};
use crate::error::{ApiError, ErrorEnvelope};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 100;
/// Customers read from storage per step of a search walk.
const SEARCH_BATCH: u32 = 100;
/// Statement lines per credits page.
const STATEMENT_LIMIT: u32 = 50;
/// Audit events read per step of the export.
const EXPORT_BATCH: u32 = 500;

/// The session's firm's customer named by `id` (its UUID or external id).
///
/// # Errors
/// 404 for an unknown customer or another firm's; storage failures.
pub(crate) async fn find(state: &AppState, staff: &Staff, id: &str) -> Result<Customer, ApiError> {
    let reference = CustomerRef::parse(id).map_err(|_| ApiError::customer_not_found())?;
    state
        .ports
        .service
        .find_customer(staff.firm_id, &reference)
        .await?
        .ok_or_else(ApiError::customer_not_found)
}

fn back_office(state: &AppState) -> Result<&crate::BackOfficePorts, ApiError> {
    state
        .back_office
        .as_ref()
        .ok_or(ApiError::NotFound("No such route."))
}

/// The customer's link: `{public_url}/v/{token}`. The token is re-derived from the attempt (the
/// generator is deterministic per attempt), so it is never stored in plain text.
pub(crate) fn verification_url(state: &AppState, token: &str) -> String {
    format!(
        "{}/v/{token}",
        state.config.public_url.trim_end_matches('/')
    )
}

/// The link of the customer's open attempt while they still have something to do there.
pub(crate) fn current_link(state: &AppState, customer: &Customer) -> Option<String> {
    let attempt = customer
        .attempt_behind_link()
        .filter(|a| a.link_token_hash.is_some())?;
    let token = state
        .ports
        .service
        .ports()
        .ids
        .link_token(&attempt.external_user_id)
        .token;
    Some(verification_url(state, &token))
}

/// What a back-office list page asks for.
pub(crate) struct ListParams {
    /// Status filters (and the walk's order).
    pub(crate) filter: CustomerFilter,
    /// Lowercase text to find in name, email or external id.
    pub(crate) search: Option<String>,
    /// Page size.
    pub(crate) limit: u32,
    /// Resume after this cursor.
    pub(crate) cursor: Option<String>,
}

/// One page of a back-office list.
pub(crate) struct FoundPage {
    /// The customers.
    pub(crate) customers: Vec<Customer>,
    /// The cursor of the next page, when there is one.
    pub(crate) next_cursor: Option<String>,
}

pub(crate) fn parse_list_params(pairs: Vec<(String, String)>) -> Result<ListParams, ApiError> {
    let mut params = ListParams {
        filter: CustomerFilter::default(),
        search: None,
        limit: DEFAULT_LIMIT,
        cursor: None,
    };
    for (name, value) in pairs {
        match name.as_str() {
            "status" => {
                params.filter.kyc_status = Some(KycStatus::parse(&value).ok_or_else(|| {
                    ApiError::invalid("status", "status must be a kyc_status such as PENDING")
                })?);
            }
            "aml_status" => {
                params.filter.aml_status = Some(AmlStatus::parse(&value).ok_or_else(|| {
                    ApiError::invalid(
                        "aml_status",
                        "aml_status must be an aml.status such as NEEDS_REVIEW",
                    )
                })?);
            }
            "q" => params.search = Some(value.trim().to_lowercase()).filter(|q| !q.is_empty()),
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
            other => {
                return Err(ApiError::invalid(
                    other,
                    format!(
                        "unknown query parameter {other}; expected status, aml_status, q, limit or cursor"
                    ),
                ));
            }
        }
    }
    Ok(params)
}

/// Whether the customer's name, email or external id contains `search` (lowercase).
pub(crate) fn matches_search(customer: &Customer, search: &str) -> bool {
    customer.full_name.as_str().to_lowercase().contains(search)
        || customer.email.as_str().to_lowercase().contains(search)
        || customer
            .external_id
            .as_ref()
            .is_some_and(|e| e.as_str().to_lowercase().contains(search))
}

/// Where a walk in the filter's order resumes after `customer`.
fn position_of(customer: &Customer, filter: &CustomerFilter) -> PagePosition {
    let sort_key = match filter.order() {
        ListOrder::CreatedAt => customer.created_at,
        ListOrder::UpdatedAt | ListOrder::UpdatedAtDesc => customer.updated_at,
    };
    PagePosition {
        sort_key,
        id: customer.id,
    }
}

/// The firm's customers, newest-created last, with `status`, `aml_status` and a search `q` over
/// name, email and external id.
///
/// # Responses
/// 200 a page; 422 for a bad filter or a cursor issued for other filters.
#[utoipa::path(
    get,
    path = "/api/backoffice/customers",
    tag = "customers",
    params(
        ("status" = Option<String>, Query, pattern = r"^(NOT_STARTED|PENDING|IN_PROGRESS|VERIFIED|FAILED|NOT_REQUIRED|AWAITING_RESUBMISSION)$", description = "kyc_status filter"),
        ("aml_status" = Option<String>, Query, pattern = r"^(NOT_SCREENED|IN_PROGRESS|CLEAR|NEEDS_REVIEW|RESOLVED)$", description = "aml.status filter"),
        ("q" = Option<String>, Query, description = "text to find in the name, email or external id (case-insensitive)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1–100, default 50"),
        ("cursor" = Option<String>, Query, pattern = r"^[A-Za-z0-9_-]*$", description = "next_cursor of the previous page, with the same filters and search; empty or omitted: the first page"),
    ),
    responses(
        (status = 200, description = "A page of customers", body = CustomerPageDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 422, description = "validation_failed (a bad filter, or a cursor issued for other filters)", body = ErrorEnvelope),
    ),
    security(("session" = []))
)]
pub(crate) async fn list_customers(
    State(state): State<AppState>,
    staff: Staff,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<CustomerPageDto>, ApiError> {
    let Query(pairs) =
        query.map_err(|_| ApiError::invalid_request("The query string could not be parsed."))?;
    let params = parse_list_params(pairs)?;
    debug_assert_eq!(params.filter.order(), ListOrder::CreatedAt);
    let limit = params.limit;
    let page = find_page(&state, staff.firm_id, params).await?;
    Ok(Json(CustomerPageDto {
        data: page.customers.iter().map(CustomerDto::from).collect(),
        has_more: page.next_cursor.is_some(),
        next_cursor: page.next_cursor,
        limit,
    }))
}

/// A page of the firm's customers in the filter's order, with the search applied.
///
/// # Errors
/// 422 for a cursor issued for other filters; storage failures.
pub(crate) async fn find_page(
    state: &AppState,
    firm: kyc_domain::ids::FirmId,
    params: ListParams,
) -> Result<FoundPage, ApiError> {
    let mut after = params
        .cursor
        .as_deref()
        .map(|text| cursor::decode(text, firm, &params.filter))
        .transpose()?;
    // Storage has no text search: walk the filtered list in order and keep the matches. The
    // cursor is the position of the last customer returned, so the next page resumes right after
    // it and nothing is skipped or repeated.
    let batch = if params.search.is_some() {
        SEARCH_BATCH
    } else {
        params.limit
    };
    let mut found: Vec<Customer> = Vec::new();
    let mut has_more = false;
    'walk: loop {
        let page = state
            .ports
            .service
            .list_customers(
                firm,
                &ListQuery {
                    filter: params.filter.clone(),
                    after: after.clone(),
                    limit: batch,
                    include_total: false,
                },
            )
            .await?;
        let last = page
            .customers
            .last()
            .map(|c| position_of(c, &params.filter));
        for customer in page.customers {
            let wanted = params
                .search
                .as_deref()
                .is_none_or(|search| matches_search(&customer, search));
            if !wanted {
                continue;
            }
            if found.len() == params.limit as usize {
                has_more = true;
                break 'walk;
            }
            found.push(customer);
        }
        if !page.has_more {
            break;
        }
        if params.search.is_none() {
            has_more = true;
            break;
        }
        after = last;
    }
    let next_cursor = found
        .last()
        .filter(|_| has_more)
        .map(|last| cursor::encode(firm, &params.filter, &position_of(last, &params.filter)));
    Ok(FoundPage {
        customers: found,
        next_cursor,
    })
}

/// Create a customer by hand (`added_via = ADMIN_MANUAL`).
///
/// # Responses
/// 201 the customer; 403 `forbidden` for a role that may not; 422 for an invalid field or an
/// external id another customer has.
#[utoipa::path(
    post,
    path = "/api/backoffice/customers",
    tag = "customers",
    request_body = CreateCustomerRequest,
    responses(
        (status = 201, description = "Created (added_via ADMIN_MANUAL)", body = CustomerDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "forbidden or csrf_failed", body = ErrorEnvelope),
        (status = 422, description = "validation_failed (an invalid field, or an external id or email another customer has)", body = ErrorEnvelope),
    ),
    security(("session" = [], "csrf" = []))
)]
pub(crate) async fn create_customer(
    State(state): State<AppState>,
    staff: Staff,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let request: CreateCustomerRequest = read(
        body,
        "The body must be {full_name, email, external_id?, phone?, type?}",
    )?;
    let customer = state
        .ports
        .service
        .create_customer_manually(staff.firm_id, &staff.person, request.try_into_domain()?)
        .await?;
    Ok((StatusCode::CREATED, Json(CustomerDto::from(&customer))).into_response())
}

/// Everything the customer page shows.
///
/// # Responses
/// 200 the detail; 404 for an unknown customer or another firm's.
#[utoipa::path(
    get,
    path = "/api/backoffice/customers/{id}",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's UUID or external_id")),
    responses(
        (status = 200, description = "Everything the customer page shows", body = CustomerDetailDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 404, description = "not_found", body = ErrorEnvelope),
    ),
    security(("session" = []))
)]
pub(crate) async fn customer_detail(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Json<CustomerDetailDto>, ApiError> {
    let customer = find(&state, &staff, &id).await?;
    detail(&state, &staff, &customer).await
}

/// Confirm the risk answers.
///
/// # Responses
/// 200 the detail; 404; 409 `conflict` when the status does not allow it; 422 for a bad body.
#[utoipa::path(
    put,
    path = "/api/backoffice/customers/{id}/risk",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's UUID or external_id")),
    request_body = RiskRequest,
    responses(
        (status = 200, description = "The detail, with the answers confirmed", body = CustomerDetailDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "forbidden or csrf_failed", body = ErrorEnvelope),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 409, description = "conflict: the status does not allow it", body = ErrorEnvelope),
        (status = 422, description = "validation_failed", body = ErrorEnvelope),
    ),
    security(("session" = [], "csrf" = []))
)]
pub(crate) async fn confirm_risk(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Json<CustomerDetailDto>, ApiError> {
    let answers: RiskRequest = read(
        body,
        "The body must be {is_designated_service, handles_cash_or_crypto, is_new_customer}, all booleans",
    )?;
    let customer = find(&state, &staff, &id).await?;
    let customer = state
        .ports
        .service
        .confirm_risk(
            staff.firm_id,
            customer.id,
            &staff.person,
            answers.into_domain(),
        )
        .await?;
    detail(&state, &staff, &customer).await
}

async fn detail(
    state: &AppState,
    staff: &Staff,
    customer: &Customer,
) -> Result<Json<CustomerDetailDto>, ApiError> {
    let audit = back_office(state)?
        .audit
        .customer_trail(staff.firm_id, customer.id)
        .await?;
    let link = current_link(state, customer);
    Ok(Json(CustomerDetailDto::of(customer, link, &audit)))
}

/// The price of a verification and the firm's balance.
///
/// # Responses
/// 200 `{cost_credits, balance_credits}`; 404.
#[utoipa::path(
    get,
    path = "/api/backoffice/customers/{id}/verification/quote",
    tag = "verification",
    params(("id" = String, Path, description = "The customer's UUID or external_id")),
    responses(
        (status = 200, description = "The price and the balance", body = QuoteDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "forbidden", body = ErrorEnvelope),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 409, description = "not_startable: no verification can be started now, with the reason", body = ErrorEnvelope),
    ),
    security(("session" = []))
)]
pub(crate) async fn quote(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Json<QuoteDto>, ApiError> {
    let customer = find(&state, &staff, &id).await?;
    let quote = state
        .ports
        .service
        .quote(staff.firm_id, customer.id)
        .await?;
    Ok(Json(QuoteDto {
        cost_credits: quote.cost_credits.get(),
        balance_credits: quote.balance_credits.get(),
    }))
}

/// Start Verification: the billable step. `Idempotency-Key` is required; a repeat replays the
/// first answer.
///
/// # Responses
/// 200 `{kyc_status, verification_url, charged_credits, balance_credits}`; 402
/// `insufficient_credits` (balance or daily cap; nothing changed); 404; 409 `not_startable` (the
/// reason says why, including a changed price); 409 `idempotency_*`; 422 for a bad body or a
/// missing key; 502 `provider_refused` (nothing charged, still `NOT_STARTED`); 503
/// `provider_unavailable` (nothing charged; retry with the same key).
#[utoipa::path(
    post,
    path = "/api/backoffice/customers/{id}/verification",
    tag = "verification",
    params(
        ("id" = String, Path, description = "The customer's UUID or external_id"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = r"^[ -~]*[!-~][ -~]*$", description = "Required: 1–255 printable ASCII characters; a repeat replays the first answer"),
    ),
    request_body = StartRequest,
    responses(
        (status = 200, description = "Started: charged, applicant created, link issued", body = StartedDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 402, description = "insufficient_credits (the balance or the daily cap); nothing changed", body = ErrorEnvelope),
        (status = 403, description = "forbidden or csrf_failed", body = ErrorEnvelope),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 409, description = "not_startable (with the reason, including a changed price), idempotency_conflict or idempotency_in_progress", body = ErrorEnvelope),
        (status = 422, description = "validation_failed", body = ErrorEnvelope),
        (status = 502, description = "provider_refused: nothing charged, still NOT_STARTED", body = ErrorEnvelope),
        (status = 503, description = "provider_unavailable: nothing charged; retry with the same key", body = ErrorEnvelope),
    ),
    security(("session" = [], "csrf" = []))
)]
pub(crate) async fn start_verification(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Json<StartedDto>, ApiError> {
    let request: StartRequest = read(
        body,
        "The body must be {\"confirm_cost_credits\": n}, the cost shown by the quote",
    )?;
    let customer = find(&state, &staff, &id).await?;
    let started = state
        .ports
        .service
        .start_verification(
            staff.firm_id,
            customer.id,
            &staff.person,
            Credits::new(request.confirm_cost_credits),
        )
        .await?;
    Ok(Json(StartedDto {
        kyc_status: started.customer.kyc_status.as_str(),
        verification_url: verification_url(&state, &started.link_token.token),
        charged_credits: started.charged_credits.get(),
        balance_credits: started.balance.available.get(),
    }))
}

/// A compliance officer's disposition on one hit.
///
/// # Responses
/// 200 the detail; 403 `forbidden`; 404 (customer); 409 `conflict` (unknown hit or a status that
/// does not allow it); 422.
#[utoipa::path(
    post,
    path = "/api/backoffice/customers/{id}/aml/hits/{hit_id}/disposition",
    tag = "aml",
    params(("id" = String, Path, description = "The customer's UUID or external_id"), ("hit_id" = String, Path, description = "The hit's id from aml_hits")),
    request_body = DispositionRequest,
    responses(
        (status = 200, description = "The detail, with the disposition", body = CustomerDetailDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "forbidden (compliance officers only) or csrf_failed", body = ErrorEnvelope),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 409, description = "conflict: an unknown hit, or a status that does not allow it", body = ErrorEnvelope),
        (status = 422, description = "validation_failed", body = ErrorEnvelope),
    ),
    security(("session" = [], "csrf" = []))
)]
pub(crate) async fn set_disposition(
    State(state): State<AppState>,
    staff: Staff,
    Path((id, hit_id)): Path<(String, String)>,
    JsonObject(body): JsonObject,
) -> Result<Json<CustomerDetailDto>, ApiError> {
    let request: DispositionRequest = read(
        body,
        "The body must be {\"disposition\": \"FALSE_POSITIVE\"|\"TRUE_MATCH\", \"note\": string}",
    )?;
    let (disposition, note) = request.try_into_domain()?;
    let customer = find(&state, &staff, &id).await?;
    let customer = state
        .ports
        .service
        .set_hit_disposition(
            staff.firm_id,
            customer.id,
            &staff.person,
            &HitKey::new(hit_id),
            disposition,
            note,
        )
        .await?;
    detail(&state, &staff, &customer).await
}

/// A compliance officer's final AML decision.
///
/// # Responses
/// 200 the detail (`aml.status` `RESOLVED`); 403; 404; 409 while hits lack a disposition; 422.
#[utoipa::path(
    post,
    path = "/api/backoffice/customers/{id}/aml/decision",
    tag = "aml",
    params(("id" = String, Path, description = "The customer's UUID or external_id")),
    request_body = DecisionRequest,
    responses(
        (status = 200, description = "The detail, aml.status RESOLVED", body = CustomerDetailDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "forbidden (compliance officers only) or csrf_failed", body = ErrorEnvelope),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 409, description = "conflict: not NEEDS_REVIEW, or hits lack a disposition", body = ErrorEnvelope),
        (status = 422, description = "validation_failed", body = ErrorEnvelope),
    ),
    security(("session" = [], "csrf" = []))
)]
pub(crate) async fn record_decision(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Json<CustomerDetailDto>, ApiError> {
    let request: DecisionRequest = read(
        body,
        "The body must be {\"decision\": \"PROCEED\"|\"DECLINE\", \"rationale\": string}",
    )?;
    let (decision, rationale) = request.try_into_domain()?;
    let customer = find(&state, &staff, &id).await?;
    let customer = state
        .ports
        .service
        .record_aml_decision(
            staff.firm_id,
            customer.id,
            &staff.person,
            decision,
            rationale,
        )
        .await?;
    detail(&state, &staff, &customer).await
}

/// A compliance officer restarts a failed verification.
///
/// # Responses
/// 200 the detail (`NOT_STARTED`); 403; 404; 409 unless `FAILED`; 422.
#[utoipa::path(
    post,
    path = "/api/backoffice/customers/{id}/restart",
    tag = "verification",
    params(("id" = String, Path, description = "The customer's UUID or external_id")),
    request_body = RestartRequest,
    responses(
        (status = 200, description = "The detail, NOT_STARTED with a new attempt to come", body = CustomerDetailDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "forbidden (compliance officers only) or csrf_failed", body = ErrorEnvelope),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 409, description = "conflict: only a FAILED verification restarts", body = ErrorEnvelope),
        (status = 422, description = "validation_failed", body = ErrorEnvelope),
    ),
    security(("session" = [], "csrf" = []))
)]
pub(crate) async fn restart(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Json<CustomerDetailDto>, ApiError> {
    let request: RestartRequest = read(body, "The body must be {\"reason\": string}")?;
    let reason = request.try_into_domain()?;
    let customer = find(&state, &staff, &id).await?;
    let customer = state
        .ports
        .service
        .restart_verification(staff.firm_id, customer.id, &staff.person, reason)
        .await?;
    detail(&state, &staff, &customer).await
}

/// The firm's credits: balance, holds, and a page of the statement (`?cursor=` for older lines).
///
/// # Responses
/// 200 `{available_credits, held_credits, spent_credits, statement, next_cursor}`.
#[utoipa::path(
    get,
    path = "/api/backoffice/credits",
    tag = "credits",
    params(("cursor" = Option<String>, Query, description = "next_cursor of the previous page, for older lines; anything else: the newest page")),
    responses(
        (status = 200, description = "Balance, holds and a page of the statement", body = CreditsDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
    ),
    security(("session" = []))
)]
pub(crate) async fn credits(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<CreditsDto>, ApiError> {
    let cursor = query
        .iter()
        .find(|(name, _)| name == "cursor")
        .map(|(_, value)| value.as_str());
    let (balance, page) = credits_page(&state, staff.firm_id, cursor).await?;
    Ok(Json(CreditsDto::of(
        balance,
        &page.entries,
        page.next_cursor,
    )))
}

/// The firm's balance and one page of its statement, newest first, resuming at `cursor`.
///
/// # Errors
/// 503 when the ledger's storage is down; 500 for anything else.
pub(crate) async fn credits_page(
    state: &AppState,
    firm: kyc_domain::ids::FirmId,
    cursor: Option<&str>,
) -> Result<(kyc_domain::ports::Balance, kyc_domain::ports::StatementPage), ApiError> {
    let ledger = &state.ports.service.ports().ledger;
    let balance = ledger.balance(firm).await.map_err(ledger_error)?;
    let page = ledger
        .statement(firm, cursor, STATEMENT_LIMIT)
        .await
        .map_err(ledger_error)?;
    Ok((balance, page))
}

fn ledger_error(error: kyc_domain::ports::LedgerError) -> ApiError {
    match error {
        kyc_domain::ports::LedgerError::Infrastructure(infra) => infra.into(),
        other => ApiError::Internal(Box::new(other)),
    }
}

/// The firm's whole audit trail as JSON lines, oldest first, streamed page by page so an export
/// of years of history never sits in memory at once.
///
/// # Responses
/// 200 `application/x-ndjson`; 403 `forbidden` unless compliance officer.
#[utoipa::path(
    get,
    path = "/api/backoffice/audit/export",
    tag = "audit",
    responses(
        (status = 200, description = "The firm's audit trail, one AuditDto per line, oldest first", content_type = "application/x-ndjson", body = String),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "forbidden (compliance officers only)", body = ErrorEnvelope),
    ),
    security(("session" = []))
)]
pub(crate) async fn audit_export(
    State(state): State<AppState>,
    staff: Staff,
) -> Result<Response, ApiError> {
    let audit = back_office(&state)?.audit.clone();
    let firm = staff.firm_id;
    // The first page is read before answering, so a database that is down is a clean 503
    // rather than a 200 cut short.
    let first = audit.firm_export(firm, None, EXPORT_BATCH).await?;
    let stream = futures::stream::unfold(Some(Ok(first)), move |pending| {
        let audit = audit.clone();
        async move {
            let entries = match pending? {
                Ok(entries) => entries,
                // The answer has started: the only honest way left to fail is to break the
                // body, so the client sees an error rather than a short export that looks whole.
                Err(error) => {
                    tracing::error!(%error, "audit export stopped part way");
                    return Some((
                        Err(std::io::Error::other("audit export stopped part way")),
                        None,
                    ));
                }
            };
            if entries.is_empty() {
                return None;
            }
            let last = entries.last().map(|e| e.sequence);
            let mut chunk = Vec::new();
            for entry in &entries {
                let line = super::dto::AuditDto::from(entry);
                if serde_json::to_writer(&mut chunk, &line).is_ok() {
                    chunk.push(b'\n');
                }
            }
            let next = if entries.len() < EXPORT_BATCH as usize {
                None
            } else {
                Some(audit.firm_export(firm, last, EXPORT_BATCH).await)
            };
            Some((Ok::<Bytes, std::io::Error>(Bytes::from(chunk)), next))
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"audit.jsonl\""),
    );
    Ok(response)
}
