//! What the outside world sends without a login: the identity provider's webhook
//! (`POST /webhooks/sumsub`) and the customer opening their verification link (`GET /v/{token}`).
//!
//! The webhook's signature is checked on the raw bytes before anything is parsed, through
//! [`ProviderWebhooks`], which the binary implements with the provider adapter (this crate does not
//! depend on it: adapters never depend on each other). A valid event is recorded and applied in
//! one save before the 200 goes out, so a CRM reading right after sees the new status.
//!
//! The link carries only its token; storage keeps the token's SHA-256 and finds the attempt by it.
//! Opening it moves `PENDING`/`AWAITING_RESUBMISSION` to `IN_PROGRESS` and answers 303 to a freshly
//! minted provider link. The pages shown instead (unknown link, nothing left to do, provider down)
//! are small embedded HTML, meant for the firm's customer, not for a program.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};
use kyc_domain::provider::{ProviderEvent, ProviderEventKey, ProviderEventKind};
use kyc_domain::status::KycStatus;
use kyc_domain::usecases::{LinkDestination, LinkError, ProviderEventError, ProviderEventOutcome};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// The largest webhook body accepted, in bytes (256 KiB).
pub const WEBHOOK_BODY_LIMIT_BYTES: usize = 256 * 1024;

/// Why a webhook delivery was not turned into an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRejection {
    /// Missing or wrong signature (or an unknown algorithm): not from the provider, or altered.
    /// Answered 401; nothing is recorded.
    #[error("webhook signature rejected: {0}")]
    Unauthenticated(String),
    /// The signature is valid but the body is not an event that can be read. Answered 400 and
    /// recorded as an orphaned delivery.
    #[error("malformed webhook: {0}")]
    Malformed(String),
}

/// Verifies a provider webhook on its raw bytes, then reads it into a provider-neutral event.
/// Implemented by the binary with the provider adapter (Sumsub: `X-Payload-Digest`).
pub trait ProviderWebhooks: Send + Sync {
    /// Checks the signature of `body` from `headers` (names matched case-insensitively) BEFORE
    /// reading it, then parses it.
    ///
    /// # Errors
    /// [`WebhookRejection::Unauthenticated`] when the signature is missing or wrong;
    /// [`WebhookRejection::Malformed`] when it is valid but the body cannot be read.
    fn verify_and_parse(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<ProviderEvent, WebhookRejection>;
}

/// The routes that need no login.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/webhooks/sumsub",
            post(sumsub_webhook).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT_BYTES)),
        )
        .route("/v/{token}", get(open_link))
}

fn acknowledged(outcome: &str) -> Response {
    (StatusCode::OK, axum::Json(json!({ "status": outcome }))).into_response()
}

/// A provider webhook.
///
/// # Responses
/// 200 when recorded (applied, ignored as older, a duplicate, or orphaned); 400 for a signed but
/// malformed body (recorded as orphaned); 401 for a bad or missing signature (nothing recorded);
/// 413 over 256 KiB; 503 when it could not be recorded now (the provider redelivers) or when no
/// webhook secret is configured.
pub(crate) async fn sumsub_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(webhooks) = state.back_office.as_ref().and_then(|b| b.webhooks.clone()) else {
        tracing::warn!("provider webhook refused: no webhook secret is configured");
        return ApiError::Unavailable(None).into_response();
    };
    let event = match webhooks.verify_and_parse(&headers, &body) {
        Ok(event) => event,
        Err(WebhookRejection::Unauthenticated(reason)) => {
            tracing::warn!(%reason, "provider webhook with a bad signature refused");
            return crate::error::envelope(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "The webhook signature is missing or does not match the body.",
            );
        }
        Err(WebhookRejection::Malformed(reason)) => return malformed(&state, &body, reason).await,
    };
    match state.ports.service.apply_provider_event(&event).await {
        Ok(ProviderEventOutcome::Recorded { .. }) => acknowledged("recorded"),
        Ok(ProviderEventOutcome::Duplicate) => acknowledged("duplicate"),
        Ok(ProviderEventOutcome::Orphaned) => acknowledged("orphaned"),
        Err(ProviderEventError::Contended) => ApiError::Unavailable(None).into_response(),
        Err(ProviderEventError::Infrastructure(infra)) => ApiError::from(infra).into_response(),
    }
}

/// A signed delivery that cannot be read: kept (as an orphaned event named `malformed`, keyed by
/// the body's hash so a redelivery is one record), logged, and answered 400: redelivering the same
/// bytes cannot help.
async fn malformed(state: &AppState, body: &[u8], reason: String) -> Response {
    let digest = hex::encode(Sha256::digest(body));
    tracing::warn!(%reason, body_sha256 = %digest, "signed provider webhook could not be read");
    let event = ProviderEvent {
        key: ProviderEventKey::new(format!("malformed:{digest}")),
        applicant_id: None,
        external_user_id: None,
        created_at: state.ports.clock.now(),
        kind: ProviderEventKind::Other {
            event_type: "malformed".to_owned(),
        },
    };
    if let Err(error) = state
        .ports
        .service
        .ports()
        .customers
        .record_orphan_event(&event)
        .await
    {
        tracing::warn!(%error, "could not record a malformed provider webhook");
    }
    // The envelope of a validation failure, with the 400 the contract names for this case.
    let mut response =
        ApiError::invalid_request(format!("The webhook body could not be read: {reason}"))
            .into_response();
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

const PAGE_STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;line-height:1.5;color:#222}h1{font-size:1.4rem}";

fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><meta name=\"robots\" content=\"noindex\"><title>{title}</title><style>{PAGE_STYLE}</style></head><body><main><h1>{title}</h1><p>{text}</p></main></body></html>"
    );
    let mut response = (status, Html(html)).into_response();
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

fn finished_page(status: KycStatus) -> Response {
    let text = match status {
        KycStatus::Verified => "Your identity has been verified. There is nothing more to do here.",
        KycStatus::Failed => {
            "This verification has ended. Please contact the firm that sent you this link."
        }
        KycStatus::NotStarted
        | KycStatus::NotRequired
        | KycStatus::Pending
        | KycStatus::InProgress
        | KycStatus::AwaitingResubmission => {
            "This verification link is no longer active. Please contact the firm that sent it if you need a new one."
        }
    };
    page(StatusCode::OK, "Verification complete", text)
}

/// The customer opens their verification link.
///
/// # Responses
/// 303 to a fresh provider link; 200 a friendly page when there is nothing left to do; 404 page
/// for an unknown link; 503 page when the provider cannot mint a link now.
pub(crate) async fn open_link(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Response {
    let not_found = || {
        page(
            StatusCode::NOT_FOUND,
            "Link not found",
            "This verification link is not valid. Please check that you copied the whole link, or ask the firm that sent it for a new one.",
        )
    };
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let service = &state.ports.service;
    let located = match service.ports().customers.locate_link(&hash).await {
        Ok(Some(location)) => location,
        Ok(None) => return not_found(),
        Err(error) => {
            tracing::error!(%error, "could not look up a verification link");
            return unavailable_page();
        }
    };
    match service
        .open_link(located.firm_id, located.customer_id, located.attempt)
        .await
    {
        Ok(LinkDestination::Provider(url)) => Redirect::to(&url).into_response(),
        Ok(LinkDestination::Finished(status)) => finished_page(status),
        Err(LinkError::NotFound) => not_found(),
        Err(LinkError::Provider(error)) => {
            tracing::warn!(%error, "the provider could not mint a verification link");
            unavailable_page()
        }
        Err(LinkError::Command(error)) => {
            tracing::error!(%error, "could not record the opening of a verification link");
            unavailable_page()
        }
    }
}

fn unavailable_page() -> Response {
    let mut response = page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again shortly",
        "We could not open the verification right now. Please try this link again in a few minutes.",
    );
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("30"),
    );
    response
}
