//! The back-office JSON API, `/api/backoffice`: what the back-office pages use. A person logs in
//! with email and password and gets a session cookie; every other route needs that session, every
//! state-changing one also its CSRF token, and some a role.
//!
//! Layering, outermost first: the session, the CSRF token (state-changing methods), the role, then
//! for Start Verification a required `Idempotency-Key` and its replay machinery, then the handler.

pub mod dto;
pub mod openapi;
pub(crate) mod routes;
pub mod session;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{delete, get, post, put};

use crate::AppState;
use crate::idempotency::{idempotent, require_idempotency_key};
use session::{RoleNeed, require_csrf, require_role, require_session};

/// The back-office routes.
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    let role = |need: RoleNeed| from_fn_with_state(need, require_role);
    let csrf = from_fn(require_csrf);
    let session = from_fn_with_state(state.clone(), require_session);
    let authenticated = Router::new()
        .route(
            "/api/backoffice/customers",
            get(routes::list_customers).merge(
                post(routes::create_customer)
                    .route_layer(role(RoleNeed::StaffOrAbove))
                    .route_layer(csrf.clone()),
            ),
        )
        .route(
            "/api/backoffice/customers/{id}",
            get(routes::customer_detail),
        )
        .route(
            "/api/backoffice/customers/{id}/risk",
            put(routes::confirm_risk)
                .route_layer(role(RoleNeed::StaffOrAbove))
                .route_layer(csrf.clone()),
        )
        .route(
            "/api/backoffice/customers/{id}/verification/quote",
            get(routes::quote).route_layer(role(RoleNeed::StaffOrAbove)),
        )
        .route(
            "/api/backoffice/customers/{id}/verification",
            post(routes::start_verification)
                .route_layer(from_fn_with_state(state.clone(), idempotent))
                .route_layer(from_fn(require_idempotency_key))
                .route_layer(role(RoleNeed::StaffOrAbove))
                .route_layer(csrf.clone()),
        )
        .route(
            "/api/backoffice/customers/{id}/aml/hits/{hit_id}/disposition",
            post(routes::set_disposition)
                .route_layer(role(RoleNeed::ComplianceOfficer))
                .route_layer(csrf.clone()),
        )
        .route(
            "/api/backoffice/customers/{id}/aml/decision",
            post(routes::record_decision)
                .route_layer(role(RoleNeed::ComplianceOfficer))
                .route_layer(csrf.clone()),
        )
        .route(
            "/api/backoffice/customers/{id}/restart",
            post(routes::restart)
                .route_layer(role(RoleNeed::ComplianceOfficer))
                .route_layer(csrf.clone()),
        )
        .route("/api/backoffice/credits", get(routes::credits))
        .route(
            "/api/backoffice/audit/export",
            get(routes::audit_export).route_layer(role(RoleNeed::ComplianceOfficer)),
        )
        .route_layer(session.clone());
    Router::new()
        .merge(authenticated)
        .route("/api/backoffice/openapi.json", get(openapi_document))
        .route(
            "/api/backoffice/session",
            post(session::login).merge(
                delete(session::logout)
                    .route_layer(csrf)
                    .route_layer(session),
            ),
        )
}

/// The OpenAPI 3.1 document of the back-office API (no session needed: it describes, it holds
/// nothing of a firm's).
async fn openapi_document(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )],
        state.backoffice_openapi_json.as_str().to_owned(),
    )
        .into_response()
}
