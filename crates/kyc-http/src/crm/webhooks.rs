//! Push delivery as the CRM sees it: the firm's webhook endpoints (`/api/v1/webhook-endpoints`,
//! scope `webhooks:manage`), their delivery logs and replays, the event payload every delivery
//! carries ([`EventDto`]), and the ordered event feed (`GET /api/v1/events`, scope
//! `customers:read`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use kyc_domain::ports::{
    FeedEvent, FeedPosition, WebhookDelivery, WebhookEndpoint, WebhookEndpointId,
};
use kyc_domain::usecases::{EndpointChanges, NewEndpoint, WebhookError, WebhookService};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::dto::{CustomerDto, JsonObject, timestamp};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorEnvelope};

const DEFAULT_EVENTS_LIMIT: u32 = 100;
const MAX_EVENTS_LIMIT: u32 = 500;
const DEFAULT_DELIVERIES_LIMIT: u32 = 50;
const MAX_DELIVERIES_LIMIT: u32 = 200;

/// The statuses before a change, where they changed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PreviousDto {
    /// The KYC status before a `customer.kyc_status_changed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kyc_status: Option<&'static str>,
    /// The AML status before a `customer.aml_status_changed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aml_status: Option<&'static str>,
}

/// One event: the body of every webhook delivery of it, and an item of the event feed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventDto {
    /// The event's id; also the `webhook-id` of every delivery of it, retries and replays
    /// included, so a receiver can drop duplicates.
    #[schema(format = Uuid)]
    pub id: String,
    /// Always `"event"`.
    #[schema(example = "event")]
    pub object: &'static str,
    /// `customer.created`, `customer.updated`, `customer.kyc_status_changed` or
    /// `customer.aml_status_changed`.
    #[serde(rename = "type")]
    #[schema(example = "customer.kyc_status_changed")]
    pub event_type: &'static str,
    /// When the change was saved.
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// The customer as the change left it: the same object the CRM API returns.
    pub data: CustomerDto,
    /// The statuses before, on a status change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousDto>,
}

impl EventDto {
    /// The public form of an event.
    pub fn of(event: &FeedEvent) -> Self {
        let previous = (event.previous_kyc_status.is_some() || event.previous_aml_status.is_some())
            .then(|| PreviousDto {
                kyc_status: event.previous_kyc_status.map(|s| s.as_str()),
                aml_status: event.previous_aml_status.map(|s| s.as_str()),
            });
        Self {
            id: event.id.to_string(),
            object: "event",
            event_type: event.notification.as_str(),
            timestamp: timestamp(event.occurred_at),
            data: CustomerDto::from(&event.customer),
            previous,
        }
    }

    /// The JSON body a webhook delivery sends.
    pub fn body(event: &FeedEvent) -> Vec<u8> {
        // A struct of strings, booleans and options always serialises.
        serde_json::to_vec(&Self::of(event)).unwrap_or_default()
    }
}

/// A page of the event feed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventListDto {
    /// Always `"list"`.
    #[schema(example = "list")]
    pub object: &'static str,
    /// The events, oldest first.
    pub data: Vec<EventDto>,
    /// Whether more events are already readable: ask again at once with `next_cursor`.
    pub has_more: bool,
    /// Pass as `after` to read on; when `has_more` is false, poll with it later. `null` only
    /// while the firm has no event yet.
    pub next_cursor: Option<String>,
}

/// A webhook endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookEndpointDto {
    /// Its id.
    #[schema(format = Uuid)]
    pub id: String,
    /// Always `"webhook_endpoint"`.
    #[schema(example = "webhook_endpoint")]
    pub object: &'static str,
    /// Where events are POSTed.
    #[schema(example = "https://crm.example.com/hooks/kyc")]
    pub url: String,
    /// The admin's note.
    pub description: Option<String>,
    /// The event types it receives; empty means all.
    pub events: Vec<String>,
    /// Whether deliveries are made. A `410 Gone` from the receiver disables it.
    pub enabled: bool,
    /// When it was disabled.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub disabled_at: Option<String>,
    /// Until when the secret replaced by the last rotation still signs beside the new one.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_secret_expires_at: Option<String>,
    /// Created.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The signing secret (`whsec_…`): only in the answers to create and rotate-secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl WebhookEndpointDto {
    /// The endpoint without its secret.
    pub fn of(endpoint: &WebhookEndpoint) -> Self {
        Self {
            id: endpoint.id.to_string(),
            object: "webhook_endpoint",
            url: endpoint.url.clone(),
            description: endpoint.description.clone(),
            events: endpoint.event_types.clone(),
            enabled: endpoint.disabled_at.is_none(),
            disabled_at: endpoint.disabled_at.map(timestamp),
            previous_secret_expires_at: endpoint.previous_secret_expires_at.map(timestamp),
            created_at: timestamp(endpoint.created_at),
            secret: None,
        }
    }

    /// The endpoint with its secret, shown once.
    pub fn with_secret(endpoint: &WebhookEndpoint) -> Self {
        Self {
            secret: Some(endpoint.secret.clone()),
            ..Self::of(endpoint)
        }
    }
}

/// The firm's endpoints.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookEndpointListDto {
    /// Always `"list"`.
    #[schema(example = "list")]
    pub object: &'static str,
    /// Oldest first.
    pub data: Vec<WebhookEndpointDto>,
    /// Always false: every endpoint is listed.
    pub has_more: bool,
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookDeliveryDto {
    /// Always `"webhook_delivery"`.
    #[schema(example = "webhook_delivery")]
    pub object: &'static str,
    /// The event (the `webhook-id` sent).
    #[schema(format = Uuid)]
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// 1 for the first try of a message.
    pub attempt: u32,
    /// When the request was sent.
    #[schema(format = DateTime)]
    pub attempted_at: String,
    /// `succeeded` (a 2xx) or `failed`.
    #[schema(example = "succeeded")]
    pub status: &'static str,
    /// The HTTP status received, if any.
    pub response_status: Option<u16>,
    /// Why it failed, if it did without a status (timeout, connection refused…).
    pub error: Option<String>,
    /// How long the request took.
    pub duration_ms: u64,
}

impl WebhookDeliveryDto {
    /// The public form of an attempt.
    pub fn of(delivery: &WebhookDelivery) -> Self {
        let succeeded = delivery
            .response_status
            .is_some_and(|status| (200..300).contains(&status));
        Self {
            object: "webhook_delivery",
            event_id: delivery.message_id.clone(),
            event_type: delivery.event_type.clone(),
            attempt: delivery.attempt,
            attempted_at: timestamp(delivery.attempted_at),
            status: if succeeded { "succeeded" } else { "failed" },
            response_status: delivery.response_status,
            error: delivery.error.clone(),
            duration_ms: delivery.duration_ms,
        }
    }
}

/// An endpoint's newest attempts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookDeliveryListDto {
    /// Always `"list"`.
    #[schema(example = "list")]
    pub object: &'static str,
    /// Newest first.
    pub data: Vec<WebhookDeliveryDto>,
}

/// `POST /webhook-endpoints` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CreateWebhookEndpointRequest {
    /// `https://` (or `http://` on a private network); at most 2,048 characters.
    #[schema(
        example = "https://crm.example.com/hooks/kyc",
        max_length = 2048,
        pattern = r"^https?://(?:[A-Za-z0-9]+\.)*[A-Za-z][A-Za-z0-9]*(?::[1-9][0-9]{0,3})?(?:/[A-Za-z0-9._~%!$&()*+,;=:@/-]*)?(?:\?[A-Za-z0-9._~%!$&()*+,;=:@/?-]*)?$"
    )]
    url: String,
    /// A note, at most 500 characters, no control characters.
    #[schema(max_length = 500, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    description: Option<String>,
    /// Event types to receive; omitted or empty means all.
    #[schema(inline, value_type = Option<Vec<EventTypeName>>)]
    events: Option<Vec<String>>,
}

/// `PATCH /webhook-endpoints/{id}` body: only the fields given change.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct UpdateWebhookEndpointRequest {
    /// A new URL, as for creating an endpoint (it cannot be removed).
    #[schema(
        nullable = false,
        max_length = 2048,
        pattern = r"^https?://(?:[A-Za-z0-9]+\.)*[A-Za-z][A-Za-z0-9]*(?::[1-9][0-9]{0,3})?(?:/[A-Za-z0-9._~%!$&()*+,;=:@/-]*)?(?:\?[A-Za-z0-9._~%!$&()*+,;=:@/?-]*)?$"
    )]
    url: Option<String>,
    /// A new note; `null` clears it.
    #[schema(max_length = 500, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    description: Option<String>,
    /// New event types; empty means all.
    #[schema(inline, value_type = Option<Vec<EventTypeName>>)]
    events: Option<Vec<String>>,
    /// `false` pauses deliveries (messages wait); `true` resumes them, also after a `410`.
    #[schema(nullable = false)]
    enabled: Option<bool>,
}

/// `POST /webhook-endpoints/{id}/replay` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ReplayRequest {
    /// The event to send again, as in the delivery log.
    #[schema(format = Uuid, pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    event_id: String,
}

/// An event type name.
#[derive(Debug, Clone, ToSchema)]
#[allow(dead_code)]
pub enum EventTypeName {
    /// A customer was created.
    #[schema(rename = "customer.created")]
    Created,
    /// A customer's visible fields changed.
    #[schema(rename = "customer.updated")]
    Updated,
    /// `kyc_status` changed.
    #[schema(rename = "customer.kyc_status_changed")]
    KycStatusChanged,
    /// `aml.status` changed.
    #[schema(rename = "customer.aml_status_changed")]
    AmlStatusChanged,
}

impl From<WebhookError> for ApiError {
    fn from(error: WebhookError) -> Self {
        match error {
            WebhookError::Invalid { field, message } => Self::invalid(field, message),
            WebhookError::EndpointNotFound => {
                Self::NotFound("No webhook endpoint with this id in your firm.")
            }
            WebhookError::EventNotFound => {
                Self::NotFound("This endpoint was never sent an event with this id.")
            }
            WebhookError::Infrastructure(error) => error.into(),
        }
    }
}

fn service(state: &AppState) -> &WebhookService {
    &state.ports.webhooks
}

fn endpoint_id(text: &str) -> Result<WebhookEndpointId, ApiError> {
    Uuid::parse_str(text)
        .map(WebhookEndpointId::from_uuid)
        .map_err(|_| ApiError::NotFound("No webhook endpoint with this id in your firm."))
}

fn known_fields(body: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match body.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(unknown) => Err(ApiError::invalid(
            unknown.clone(),
            format!("unknown field {unknown}; expected {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn string_field(body: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ApiError::invalid(name, format!("{name} must be a string"))),
    }
}

fn events_field(body: &Map<String, Value>) -> Result<Option<Vec<String>>, ApiError> {
    let wrong = || ApiError::invalid("events", "events must be an array of event type names");
    match body.get("events") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(wrong))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(wrong()),
    }
}

/// Register a webhook endpoint.
///
/// # Responses
/// 201 the endpoint with its secret (shown only here and on rotation); 422 for a bad field.
#[utoipa::path(
    post,
    path = "/api/v1/webhook-endpoints",
    tag = "webhooks",
    request_body = CreateWebhookEndpointRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[ -~]*[!-~][ -~]*$", description = "1–255 printable ASCII characters; replays the first answer for 24 h")),
    responses(
        (status = 201, description = "Created; `secret` is shown this once", body = WebhookEndpointDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "insufficient_scope", body = ErrorEnvelope),
        (status = 409, description = "idempotency_conflict or idempotency_in_progress", body = ErrorEnvelope),
        (status = 422, description = "validation_failed", body = ErrorEnvelope),
        (status = 429, description = "rate_limited", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn create_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    known_fields(&body, &["url", "description", "events"])?;
    let url =
        string_field(&body, "url")?.ok_or_else(|| ApiError::invalid("url", "url is required"))?;
    let new = NewEndpoint {
        url,
        description: string_field(&body, "description")?,
        events: events_field(&body)?,
    };
    let endpoint = service(&state).create(caller.firm_id, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookEndpointDto::with_secret(&endpoint)),
    )
        .into_response())
}

/// The firm's webhook endpoints.
#[utoipa::path(
    get,
    path = "/api/v1/webhook-endpoints",
    tag = "webhooks",
    responses(
        (status = 200, description = "Every endpoint, oldest first, without secrets", body = WebhookEndpointListDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "insufficient_scope", body = ErrorEnvelope),
        (status = 429, description = "rate_limited", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn list_endpoints(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WebhookEndpointListDto>, ApiError> {
    let endpoints = service(&state).list(caller.firm_id).await?;
    Ok(Json(WebhookEndpointListDto {
        object: "list",
        data: endpoints.iter().map(WebhookEndpointDto::of).collect(),
        has_more: false,
    }))
}

/// One webhook endpoint.
#[utoipa::path(
    get,
    path = "/api/v1/webhook-endpoints/{id}",
    tag = "webhooks",
    params(("id" = String, Path, format = Uuid, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint, without its secret", body = WebhookEndpointDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "insufficient_scope", body = ErrorEnvelope),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 429, description = "rate_limited", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn get_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpointDto>, ApiError> {
    let endpoint = service(&state)
        .get(caller.firm_id, endpoint_id(&id)?)
        .await?;
    Ok(Json(WebhookEndpointDto::of(&endpoint)))
}

/// Change a webhook endpoint: its URL, note, event types, or whether it is enabled.
#[utoipa::path(
    patch,
    path = "/api/v1/webhook-endpoints/{id}",
    tag = "webhooks",
    params(
        ("id" = String, Path, format = Uuid, description = "The endpoint's id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[ -~]*[!-~][ -~]*$", description = "1–255 printable ASCII characters; replays the first answer for 24 h"),
    ),
    request_body = UpdateWebhookEndpointRequest,
    responses(
        (status = 200, description = "The endpoint, without its secret", body = WebhookEndpointDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "insufficient_scope", body = ErrorEnvelope),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 409, description = "idempotency_conflict or idempotency_in_progress", body = ErrorEnvelope),
        (status = 422, description = "validation_failed", body = ErrorEnvelope),
        (status = 429, description = "rate_limited", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn update_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Json<WebhookEndpointDto>, ApiError> {
    let id = endpoint_id(&id)?;
    known_fields(&body, &["url", "description", "events", "enabled"])?;
    let url = match body.get("url") {
        Some(Value::Null) => return Err(ApiError::invalid("url", "url cannot be removed")),
        _ => string_field(&body, "url")?,
    };
    let enabled = match body.get("enabled") {
        None => None,
        Some(Value::Bool(enabled)) => Some(*enabled),
        Some(_) => {
            return Err(ApiError::invalid(
                "enabled",
                "enabled must be true or false",
            ));
        }
    };
    let changes = EndpointChanges {
        url,
        description: body
            .contains_key("description")
            .then(|| string_field(&body, "description"))
            .transpose()?,
        events: events_field(&body)?,
        enabled,
    };
    let endpoint = service(&state).update(caller.firm_id, id, changes).await?;
    Ok(Json(WebhookEndpointDto::of(&endpoint)))
}

/// Delete a webhook endpoint: nothing more is sent to it; waiting messages are dropped.
#[utoipa::path(
    delete,
    path = "/api/v1/webhook-endpoints/{id}",
    tag = "webhooks",
    params(("id" = String, Path, format = Uuid, description = "The endpoint's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "insufficient_scope", body = ErrorEnvelope),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 429, description = "rate_limited", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn delete_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    service(&state)
        .delete(caller.firm_id, endpoint_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Give the endpoint a new signing secret. The replaced secret keeps signing beside it (two
/// signatures in `webhook-signature`) until `previous_secret_expires_at`.
#[utoipa::path(
    post,
    path = "/api/v1/webhook-endpoints/{id}/rotate-secret",
    tag = "webhooks",
    params(("id" = String, Path, format = Uuid, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint with its new secret, shown this once", body = WebhookEndpointDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "insufficient_scope", body = ErrorEnvelope),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 429, description = "rate_limited", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpointDto>, ApiError> {
    let endpoint = service(&state)
        .rotate_secret(caller.firm_id, endpoint_id(&id)?)
        .await?;
    Ok(Json(WebhookEndpointDto::with_secret(&endpoint)))
}

fn single_limit(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    allowed: &[&str],
    default: u32,
    max: u32,
) -> Result<(u32, Option<String>), ApiError> {
    let Query(pairs) =
        query.map_err(|_| ApiError::invalid_request("The query string could not be parsed."))?;
    let mut limit = None;
    let mut after = None;
    for (name, value) in pairs {
        if !allowed.contains(&name.as_str()) {
            return Err(ApiError::invalid(
                &name,
                format!(
                    "unknown query parameter {name}; expected {}",
                    allowed.join(" or ")
                ),
            ));
        }
        let slot = if name == "limit" {
            &mut limit
        } else {
            &mut after
        };
        if slot.replace(value).is_some() {
            return Err(ApiError::invalid(
                &name,
                format!("{name} is given more than once"),
            ));
        }
    }
    let limit = match limit {
        None => default,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::invalid("limit", format!("limit must be an integer from 1 to {max}"))
            })?,
    };
    Ok((limit, after.filter(|a| !a.is_empty())))
}

/// The endpoint's delivery log: its newest attempts.
#[utoipa::path(
    get,
    path = "/api/v1/webhook-endpoints/{id}/deliveries",
    tag = "webhooks",
    params(
        ("id" = String, Path, format = Uuid, description = "The endpoint's id"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "1–200, default 50"),
    ),
    responses(
        (status = 200, description = "Attempts, newest first", body = WebhookDeliveryListDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "insufficient_scope", body = ErrorEnvelope),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 422, description = "validation_failed", body = ErrorEnvelope),
        (status = 429, description = "rate_limited", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<WebhookDeliveryListDto>, ApiError> {
    let id = endpoint_id(&id)?;
    let (limit, _) = single_limit(
        query,
        &["limit"],
        DEFAULT_DELIVERIES_LIMIT,
        MAX_DELIVERIES_LIMIT,
    )?;
    let deliveries = service(&state)
        .deliveries(caller.firm_id, id, limit)
        .await?;
    Ok(Json(WebhookDeliveryListDto {
        object: "list",
        data: deliveries.iter().map(WebhookDeliveryDto::of).collect(),
    }))
}

/// Send an event to the endpoint again, with the same `webhook-id`, behind that customer's
/// waiting messages.
#[utoipa::path(
    post,
    path = "/api/v1/webhook-endpoints/{id}/replay",
    tag = "webhooks",
    params(("id" = String, Path, format = Uuid, description = "The endpoint's id")),
    request_body = ReplayRequest,
    responses(
        (status = 202, description = "Queued"),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "insufficient_scope", body = ErrorEnvelope),
        (status = 404, description = "not_found: no such endpoint, or it was never sent this event", body = ErrorEnvelope),
        (status = 422, description = "validation_failed", body = ErrorEnvelope),
        (status = 429, description = "rate_limited", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<StatusCode, ApiError> {
    let id = endpoint_id(&id)?;
    known_fields(&body, &["event_id"])?;
    let event = string_field(&body, "event_id")?
        .and_then(|text| Uuid::parse_str(&text).ok())
        .ok_or_else(|| ApiError::invalid("event_id", "event_id must be an event's id (a UUID)"))?;
    service(&state).replay(caller.firm_id, id, event).await?;
    Ok(StatusCode::ACCEPTED)
}

/// The feed cursor: the position of the last event read, opaque to the CRM.
fn encode_position(position: FeedPosition) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{}", position.transaction, position.sequence))
}

fn decode_position(text: &str) -> Result<FeedPosition, ApiError> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok();
    let text = bytes.as_deref().and_then(|b| std::str::from_utf8(b).ok());
    text.and_then(|t| t.split_once('.'))
        .and_then(|(transaction, sequence)| {
            Some(FeedPosition {
                transaction: transaction.parse().ok().filter(|n: &i64| *n >= 0)?,
                sequence: sequence.parse().ok().filter(|n: &i64| *n >= 0)?,
            })
        })
        .ok_or_else(|| {
            ApiError::invalid(
                "after",
                "after is not valid: pass next_cursor exactly as returned",
            )
        })
}

/// The firm's events in commit order.
///
/// Read from the start without `after`, then pass each page's `next_cursor` as `after`. The feed
/// never skips an event: an event is served only once every change that could commit before it
/// has committed, so a cursor is never passed by a late one.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(
        ("after" = Option<String>, Query, pattern = r"^[A-Za-z0-9_-]*$", description = "next_cursor of the previous page, exactly as returned (any other value is a 422); empty or omitted: from the start"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "1–500, default 100"),
    ),
    responses(
        (status = 200, description = "A page of events, oldest first", body = EventListDto),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "insufficient_scope", body = ErrorEnvelope),
        (status = 422, description = "validation_failed", body = ErrorEnvelope),
        (status = 429, description = "rate_limited", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<EventListDto>, ApiError> {
    let (limit, after) = single_limit(
        query,
        &["after", "limit"],
        DEFAULT_EVENTS_LIMIT,
        MAX_EVENTS_LIMIT,
    )?;
    let after = after
        .as_deref()
        .filter(|text| !text.is_empty())
        .map(decode_position)
        .transpose()?;
    let mut events = service(&state)
        .events(caller.firm_id, after, limit + 1)
        .await?;
    let has_more = events.len() > limit as usize;
    events.truncate(limit as usize);
    let next = events.last().map(|event| event.position).or(after);
    Ok(Json(EventListDto {
        object: "list",
        data: events.iter().map(EventDto::of).collect(),
        has_more,
        next_cursor: next.map(encode_position),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_cursors_round_trip_and_foreign_text_is_refused() {
        let position = FeedPosition {
            transaction: 981_233,
            sequence: 42,
        };
        assert_eq!(
            decode_position(&encode_position(position)).unwrap(),
            position
        );
        for bad in [
            "",
            "abc",
            &URL_SAFE_NO_PAD.encode("1"),
            &URL_SAFE_NO_PAD.encode("-1.2"),
        ] {
            assert!(decode_position(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Every feed position round-trips; any text is a position or a 422, never a panic.
        #[test]
        fn feed_cursors_round_trip_and_never_panic(
            transaction in 0_i64..=i64::MAX,
            sequence in 0_i64..=i64::MAX,
            text in "\\PC{0,80}",
        ) {
            let position = FeedPosition { transaction, sequence };
            proptest::prop_assert_eq!(decode_position(&encode_position(position)).unwrap(), position);
            if let Ok(read) = decode_position(&text) {
                proptest::prop_assert!(read.transaction >= 0 && read.sequence >= 0);
            }
        }
    }
}
