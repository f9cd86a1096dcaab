//! The CRM API, `/api/v1` (API-key auth), compatible with the published Instant Compliance v1
//! customer API: upsert, list/poll, get by UUID or external id, patch, the AML sub-resource, and
//! the verification route that always answers 403 `human_required`.
//!
//! Layering, outermost first: API-key authentication and rate limits (every route), the route's
//! scope, then `Idempotency-Key` handling (POST and PATCH), then the handler.

pub(crate) mod cursor;
pub mod dto;
pub(crate) mod routes;
pub mod webhooks;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, patch, post};
use kyc_domain::values::ApiScope;

use crate::AppState;
use crate::auth::{require_api_key, require_scope};
use crate::idempotency::idempotent;

/// The CRM routes and `/api/v1/openapi.json` (which needs no key).
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    let scope = |s: ApiScope| from_fn_with_state(s, require_scope);
    let idem = from_fn_with_state(state.clone(), idempotent);
    let authenticated = Router::new()
        .route(
            "/api/v1/customers",
            post(routes::upsert_customer)
                .route_layer(idem.clone())
                .route_layer(scope(ApiScope::CustomersWrite))
                .merge(get(routes::list_customers).route_layer(scope(ApiScope::CustomersRead))),
        )
        .route(
            "/api/v1/customers/{id}",
            get(routes::get_customer)
                .route_layer(scope(ApiScope::CustomersRead))
                .merge(
                    patch(routes::patch_customer)
                        .route_layer(idem)
                        .route_layer(scope(ApiScope::CustomersWrite)),
                ),
        )
        .route(
            "/api/v1/customers/{id}/aml",
            get(routes::get_customer_aml).route_layer(scope(ApiScope::AmlRead)),
        )
        .route(
            "/api/v1/customers/{id}/verification",
            post(routes::start_verification),
        )
        .route(
            "/api/v1/events",
            get(webhooks::list_events).route_layer(scope(ApiScope::CustomersRead)),
        )
        .merge(webhook_routes(&state))
        .route_layer(from_fn_with_state(state, require_api_key));
    Router::new()
        .merge(authenticated)
        .route("/api/v1/openapi.json", get(routes::openapi_document))
}

/// `/api/v1/webhook-endpoints`, all under scope `webhooks:manage`; create and update take an
/// `Idempotency-Key`.
fn webhook_routes(state: &AppState) -> Router<AppState> {
    let manage = || from_fn_with_state(ApiScope::WebhooksManage, require_scope);
    let idem = from_fn_with_state(state.clone(), idempotent);
    Router::new()
        .route(
            "/api/v1/webhook-endpoints",
            post(webhooks::create_endpoint)
                .route_layer(idem.clone())
                .merge(get(webhooks::list_endpoints))
                .route_layer(manage()),
        )
        .route(
            "/api/v1/webhook-endpoints/{id}",
            get(webhooks::get_endpoint)
                .merge(patch(webhooks::update_endpoint).route_layer(idem))
                .merge(delete(webhooks::delete_endpoint))
                .route_layer(manage()),
        )
        .route(
            "/api/v1/webhook-endpoints/{id}/rotate-secret",
            post(webhooks::rotate_secret).route_layer(manage()),
        )
        .route(
            "/api/v1/webhook-endpoints/{id}/deliveries",
            get(webhooks::list_deliveries).route_layer(manage()),
        )
        .route(
            "/api/v1/webhook-endpoints/{id}/replay",
            post(webhooks::replay).route_layer(manage()),
        )
}
