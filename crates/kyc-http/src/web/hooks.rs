//! The admin's webhook pages: the firm's endpoints (add one, its secret shown once), and each
//! endpoint's page with its delivery log, a replay button per delivered event, pause and resume,
//! secret rotation and deletion. Every rule lives in the webhook use cases; these handlers read
//! forms and show results.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use kyc_domain::ports::{WebhookEndpoint, WebhookEndpointId};
use kyc_domain::usecases::{EndpointChanges, NOTIFICATION_TYPES, NewEndpoint, WebhookService};
use uuid::Uuid;

use super::admin::notice;
use super::forms::Fields;
use super::views;
use super::{Layout, render, see_other};
use crate::AppState;
use crate::backoffice::session::Staff;
use crate::error::ApiError;

/// How many attempts an endpoint's page shows.
const LOG_LENGTH: u32 = 100;

fn service(state: &AppState) -> &WebhookService {
    &state.ports.webhooks
}

fn endpoint_id(text: &str) -> Result<WebhookEndpointId, ApiError> {
    Uuid::parse_str(text)
        .map(WebhookEndpointId::from_uuid)
        .map_err(|_| ApiError::NotFound("No such webhook endpoint in your firm."))
}

struct EndpointRow {
    id: String,
    url: String,
    description: String,
    events: String,
    enabled: bool,
    created: String,
}

fn endpoint_row(endpoint: &WebhookEndpoint) -> EndpointRow {
    EndpointRow {
        id: endpoint.id.to_string(),
        url: endpoint.url.clone(),
        description: endpoint.description.clone().unwrap_or_default(),
        events: if endpoint.event_types.is_empty() {
            "All events".to_owned()
        } else {
            endpoint.event_types.join(", ")
        },
        enabled: endpoint.disabled_at.is_none(),
        created: views::when(endpoint.created_at),
    }
}

struct Secret {
    endpoint_id: String,
    secret: String,
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct EndpointsPage {
    layout: Layout,
    secret: Option<Secret>,
    endpoints: Vec<EndpointRow>,
    event_types: Vec<&'static str>,
}

async fn endpoints_page(
    state: &AppState,
    staff: &Staff,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<String>,
    secret: Option<Secret>,
) -> Response {
    let endpoints = match service(state).list(staff.firm_id).await {
        Ok(endpoints) => endpoints,
        Err(error) => return ApiError::from(error).into_response(),
    };
    render(
        status,
        &EndpointsPage {
            layout: Layout::for_staff("Webhooks", "webhooks", staff)
                .with_notice(notice)
                .with_error(error),
            secret,
            endpoints: endpoints.iter().map(endpoint_row).collect(),
            event_types: NOTIFICATION_TYPES.iter().map(|t| t.as_str()).collect(),
        },
    )
}

/// `GET /app/admin/webhooks`.
pub(crate) async fn endpoints(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    endpoints_page(&state, &staff, StatusCode::OK, notice(&query), None, None).await
}

/// `POST /app/admin/webhooks`: a new endpoint, whose secret is shown on this answer only.
pub(crate) async fn create_endpoint(
    State(state): State<AppState>,
    staff: Staff,
    fields: Fields,
) -> Response {
    let description = fields.text("description");
    let new = NewEndpoint {
        url: fields.text("url"),
        description: Some(description).filter(|d| !d.is_empty()),
        events: Some(
            fields
                .all("events")
                .into_iter()
                .map(str::to_owned)
                .collect(),
        ),
    };
    match service(&state).create(staff.firm_id, new).await {
        Ok(endpoint) => {
            let secret = Secret {
                endpoint_id: endpoint.id.to_string(),
                secret: endpoint.secret.clone(),
            };
            endpoints_page(
                &state,
                &staff,
                StatusCode::CREATED,
                None,
                None,
                Some(secret),
            )
            .await
        }
        Err(error) => {
            let error = ApiError::from(error);
            if error.status().is_server_error() {
                return error.into_response();
            }
            let status = error.status();
            endpoints_page(&state, &staff, status, None, Some(error.to_string()), None).await
        }
    }
}

struct DeliveryRow {
    event_id: String,
    event_type: String,
    attempt: u32,
    attempted: String,
    succeeded: bool,
    outcome: String,
    duration_ms: u64,
}

#[derive(Template)]
#[template(path = "webhook.html")]
struct EndpointPage {
    layout: Layout,
    endpoint: EndpointRow,
    secret: Option<String>,
    previous_secret_until: Option<String>,
    deliveries: Vec<DeliveryRow>,
}

async fn endpoint_page(
    state: &AppState,
    staff: &Staff,
    id: &str,
    notice: Option<&str>,
    secret: Option<String>,
) -> Response {
    let loaded = async {
        let id = endpoint_id(id)?;
        let endpoint = service(state).get(staff.firm_id, id).await?;
        let deliveries = service(state)
            .deliveries(staff.firm_id, id, LOG_LENGTH)
            .await?;
        Ok::<_, ApiError>((endpoint, deliveries))
    }
    .await;
    let (endpoint, deliveries) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => return error.into_response(),
    };
    let now = state.ports.clock.now();
    render(
        StatusCode::OK,
        &EndpointPage {
            layout: Layout::for_staff("Webhook endpoint", "webhooks", staff).with_notice(notice),
            previous_secret_until: endpoint
                .previous_secret_expires_at
                .filter(|until| *until > now)
                .map(views::when),
            endpoint: endpoint_row(&endpoint),
            secret,
            deliveries: deliveries
                .iter()
                .map(|d| {
                    let succeeded = d.response_status.is_some_and(|s| (200..300).contains(&s));
                    DeliveryRow {
                        event_id: d.message_id.clone(),
                        event_type: d.event_type.clone(),
                        attempt: d.attempt,
                        attempted: views::when(d.attempted_at),
                        succeeded,
                        outcome: match (d.response_status, &d.error) {
                            (Some(status), _) => format!("HTTP {status}"),
                            (None, Some(error)) => error.clone(),
                            (None, None) => "No answer".to_owned(),
                        },
                        duration_ms: d.duration_ms,
                    }
                })
                .collect(),
        },
    )
}

/// `GET /app/admin/webhooks/{id}`: the endpoint and its delivery log.
pub(crate) async fn endpoint(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    endpoint_page(&state, &staff, &id, notice(&query), None).await
}

async fn set_enabled(state: &AppState, staff: &Staff, id: &str, enabled: bool) -> Response {
    let changes = EndpointChanges {
        enabled: Some(enabled),
        ..EndpointChanges::default()
    };
    let result = async {
        service(state)
            .update(staff.firm_id, endpoint_id(id)?, changes)
            .await
            .map_err(ApiError::from)
    }
    .await;
    match result {
        Ok(_) => see_other(&format!(
            "/app/admin/webhooks/{id}?notice={}",
            if enabled {
                "webhook_enabled"
            } else {
                "webhook_disabled"
            }
        )),
        Err(error) => error.into_response(),
    }
}

/// `POST /app/admin/webhooks/{id}/enable`: resumes deliveries, the waiting ones first.
pub(crate) async fn enable_endpoint(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Response {
    set_enabled(&state, &staff, &id, true).await
}

/// `POST /app/admin/webhooks/{id}/disable`: pauses deliveries; messages wait.
pub(crate) async fn disable_endpoint(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Response {
    set_enabled(&state, &staff, &id, false).await
}

/// `POST /app/admin/webhooks/{id}/rotate`: the new secret is shown on this answer only.
pub(crate) async fn rotate_secret(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        service(&state)
            .rotate_secret(staff.firm_id, endpoint_id(&id)?)
            .await
            .map_err(ApiError::from)
    }
    .await;
    match result {
        Ok(endpoint) => {
            endpoint_page(
                &state,
                &staff,
                &id,
                Some("secret_rotated"),
                Some(endpoint.secret),
            )
            .await
        }
        Err(error) => error.into_response(),
    }
}

/// `POST /app/admin/webhooks/{id}/delete`.
pub(crate) async fn delete_endpoint(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        service(&state)
            .delete(staff.firm_id, endpoint_id(&id)?)
            .await
            .map_err(ApiError::from)
    }
    .await;
    match result {
        Ok(()) => see_other("/app/admin/webhooks?notice=webhook_deleted"),
        Err(error) => error.into_response(),
    }
}

/// `POST /app/admin/webhooks/{id}/replay`: sends the event (field `event_id`) again.
pub(crate) async fn replay(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    fields: Fields,
) -> Response {
    let result = async {
        let event = Uuid::parse_str(&fields.text("event_id"))
            .map_err(|_| ApiError::invalid("event_id", "Choose an event from the log."))?;
        service(&state)
            .replay(staff.firm_id, endpoint_id(&id)?, event)
            .await
            .map_err(ApiError::from)
    }
    .await;
    match result {
        Ok(()) => see_other(&format!("/app/admin/webhooks/{id}?notice=webhook_replayed")),
        Err(error) => error.into_response(),
    }
}
