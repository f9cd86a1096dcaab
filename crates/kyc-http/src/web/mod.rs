//! The back office as web pages under `/app`: server-rendered HTML (askama templates compiled
//! into the binary, with one stylesheet and one small script embedded beside them), on top of the
//! same use cases, sessions, CSRF tokens, roles and idempotency as the JSON API under
//! `/api/backoffice`. Every page works with JavaScript off; the script only adds copy buttons and
//! a guard against double submits.
//!
//! Layering, outermost first:
//! - [`security_headers`] on every answer: a strict `Content-Security-Policy` (no inline script or
//!   style, no framing, forms post only here), `X-Frame-Options: DENY`, `Referrer-Policy:
//!   no-referrer`, and `Cache-Control: no-store` on pages (they show personal data);
//! - [`error_pages`]: any error answer that is not already a page (the JSON envelope of a shared
//!   middleware, a framework rejection) becomes a page with the message, and an ended session
//!   goes back to the login page, so a person never sees raw JSON;
//! - on pages behind the login, the session ([`page_session`]), then on every `POST` the CSRF
//!   token of the form ([`form_csrf`]), then the role, then the handler.
//!
//! No personal data travels in a URL: the search box posts its text, and every page of a search
//! posts it again; other URLs hold only ids, status names and cursors.

mod admin;
mod forms;
mod hooks;
mod pages;
mod views;

use askama::Template;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::backoffice::session::{RoleNeed, Staff, authenticate, require_role, session_cookie};
use crate::error::ApiError;
use crate::idempotency::{IDEMPOTENCY_KEY, idempotent};

/// Where the pages live.
pub const MOUNT: &str = "/app";

/// The largest form a page posts, in bytes (notes and rationales are at most 4,000 characters).
const FORM_LIMIT_BYTES: usize = 64 * 1024;

/// The policy every answer under `/app` carries: only this origin's script and stylesheet, no
/// inline code, nothing framed, forms posted only to this origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// `/app` (and `/app/`): the customer list, the back office's first page.
pub(crate) async fn home() -> Redirect {
    Redirect::to("/app/customers")
}

/// The pages' routes, nested under [`MOUNT`] by the caller.
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    let role = |need: RoleNeed| from_fn_with_state(need, require_role);
    let staff_only = || role(RoleNeed::StaffOrAbove);
    let officer_only = || role(RoleNeed::ComplianceOfficer);
    let admin_only = || role(RoleNeed::Admin);
    let behind_login = Router::new()
        .route("/", get(home))
        .route("/logout", post(pages::logout))
        .route(
            "/customers",
            get(pages::list).merge(post(pages::create).route_layer(staff_only())),
        )
        .route("/customers/search", post(pages::search))
        .route(
            "/customers/new",
            get(pages::new_customer).route_layer(staff_only()),
        )
        .route("/customers/{id}", get(pages::detail))
        .route(
            "/customers/{id}/risk",
            post(pages::confirm_risk).route_layer(staff_only()),
        )
        .route(
            "/customers/{id}/start",
            get(pages::confirm_start).route_layer(staff_only()),
        )
        .route(
            "/customers/{id}/verification",
            post(pages::start)
                .route_layer(from_fn_with_state(state.clone(), idempotent))
                .route_layer(staff_only()),
        )
        .route(
            "/customers/{id}/disposition",
            post(pages::disposition).route_layer(officer_only()),
        )
        .route(
            "/customers/{id}/decision",
            post(pages::decision).route_layer(officer_only()),
        )
        .route(
            "/customers/{id}/restart",
            post(pages::restart).route_layer(officer_only()),
        )
        .route("/credits", get(pages::credits))
        .route("/audit", get(pages::audit).route_layer(officer_only()))
        .route(
            "/audit/export",
            get(crate::backoffice::routes::audit_export).route_layer(officer_only()),
        )
        .route(
            "/admin/users",
            get(admin::users)
                .merge(post(admin::create_user))
                .route_layer(admin_only()),
        )
        .route(
            "/admin/users/{id}/role",
            post(admin::change_role).route_layer(admin_only()),
        )
        .route(
            "/admin/users/{id}/disable",
            post(admin::disable_user).route_layer(admin_only()),
        )
        .route(
            "/admin/users/{id}/enable",
            post(admin::enable_user).route_layer(admin_only()),
        )
        .route(
            "/admin/api-keys",
            get(admin::api_keys)
                .merge(post(admin::create_api_key))
                .route_layer(admin_only()),
        )
        .route(
            "/admin/api-keys/{id}/revoke",
            post(admin::revoke_api_key).route_layer(admin_only()),
        )
        .route(
            "/admin/webhooks",
            get(hooks::endpoints)
                .merge(post(hooks::create_endpoint))
                .route_layer(admin_only()),
        )
        .route(
            "/admin/webhooks/{id}",
            get(hooks::endpoint).route_layer(admin_only()),
        )
        .route(
            "/admin/webhooks/{id}/enable",
            post(hooks::enable_endpoint).route_layer(admin_only()),
        )
        .route(
            "/admin/webhooks/{id}/disable",
            post(hooks::disable_endpoint).route_layer(admin_only()),
        )
        .route(
            "/admin/webhooks/{id}/rotate",
            post(hooks::rotate_secret).route_layer(admin_only()),
        )
        .route(
            "/admin/webhooks/{id}/delete",
            post(hooks::delete_endpoint).route_layer(admin_only()),
        )
        .route(
            "/admin/webhooks/{id}/replay",
            post(hooks::replay).route_layer(admin_only()),
        )
        .route_layer(from_fn(form_csrf))
        .route_layer(from_fn_with_state(state, page_session));
    Router::new()
        .merge(behind_login)
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/assets/app.css", get(stylesheet))
        .route("/assets/app.js", get(script))
        .fallback(not_found)
        .layer(from_fn(error_pages))
        .layer(from_fn(security_headers))
}

/// The logged-in person as the page header shows them, left on the answer so that an error page
/// made further out can still show the header.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    /// Login.
    pub(crate) email: String,
    /// Role, in words.
    pub(crate) role: &'static str,
    /// Whether the Users and API keys pages are theirs.
    pub(crate) is_admin: bool,
    /// Whether the audit trail page is theirs.
    pub(crate) can_export: bool,
    /// The session's CSRF token, for the logout form.
    pub(crate) csrf_token: String,
}

impl Viewer {
    fn of(staff: &Staff) -> Self {
        Self {
            email: staff.person.email.as_str().to_owned(),
            role: views::role_name(staff.person.role),
            is_admin: RoleNeed::Admin.allows(staff.person.role),
            can_export: RoleNeed::ComplianceOfficer.allows(staff.person.role),
            csrf_token: staff.csrf_token.clone(),
        }
    }
}

/// What every page's frame needs.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The page title.
    pub(crate) title: String,
    /// Which item of the navigation is current.
    pub(crate) section: &'static str,
    /// The person, when logged in.
    pub(crate) user: Option<Viewer>,
    /// Their CSRF token (empty when logged out).
    pub(crate) csrf_token: String,
    /// A message about what just succeeded.
    pub(crate) notice: Option<String>,
    /// A message about what just failed.
    pub(crate) error: Option<String>,
}

impl Layout {
    /// The frame of a page behind the login.
    pub(crate) fn for_staff(
        title: impl Into<String>,
        section: &'static str,
        staff: &Staff,
    ) -> Self {
        Self::for_viewer(title, section, Some(Viewer::of(staff)))
    }

    fn for_viewer(title: impl Into<String>, section: &'static str, user: Option<Viewer>) -> Self {
        Self {
            title: title.into(),
            section,
            csrf_token: user
                .as_ref()
                .map(|u| u.csrf_token.clone())
                .unwrap_or_default(),
            user,
            notice: None,
            error: None,
        }
    }

    /// With the message of a `?notice=` code, if it is one of ours.
    pub(crate) fn with_notice(mut self, code: Option<&str>) -> Self {
        self.notice = code.and_then(notice_text).map(str::to_owned);
        self
    }

    /// With an error message.
    pub(crate) fn with_error(mut self, error: Option<String>) -> Self {
        self.error = error;
        self
    }
}

/// The fixed messages a redirect after a successful form may ask for. Only codes travel in the
/// URL, never text, so nobody can make the page say something of their choosing.
fn notice_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "started" => "Verification started and charged. Send the link below to the customer.",
        "risk_confirmed" => "Risk answers confirmed.",
        "disposition_saved" => "Disposition saved.",
        "decision_recorded" => "Decision recorded.",
        "restarted" => "Verification restarted. Start Verification now opens a new attempt.",
        "created" => "Customer added.",
        "logged_out" => "You have logged out.",
        "session_ended" => "Your session has ended. Log in again to continue.",
        "user_created" => "User added. Give them their initial password in person.",
        "role_changed" => "Role changed. It applies from their next click.",
        "user_disabled" => "User disabled. Their sessions have ended.",
        "user_enabled" => "User enabled.",
        "key_revoked" => "API key revoked. Requests with it are refused from now on.",
        "webhook_enabled" => "Endpoint enabled. Waiting events are being sent.",
        "webhook_disabled" => "Endpoint paused. Events wait until it is enabled again.",
        "webhook_deleted" => "Endpoint deleted. Nothing more is sent to it.",
        "webhook_replayed" => "Event queued to be sent again.",
        "secret_rotated" => "Secret rotated.",
        _ => return None,
    })
}

/// Renders a template as a page with `status`.
pub(crate) fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(error = %error, "a page template failed to render");
            ApiError::Internal(Box::new(error)).into_response()
        }
    }
}

/// A 303 to another page (after a form, so that reloading does not post again).
pub(crate) fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

/// Sets the headers of [`CONTENT_SECURITY_POLICY`] and friends on every answer under `/app`.
async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/app/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
    if !is_asset {
        // Pages show personal data: no browser or proxy keeps a copy.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    heading: &'static str,
    message: String,
    back_href: &'static str,
    back_label: &'static str,
}

/// The heading and the sentence a person reads for an error code and its API message.
fn explain(status: StatusCode, code: &str, message: String) -> (&'static str, String) {
    match code {
        "csrf_failed" => (
            "This form has expired",
            "The form was not sent from a page of this session. Go back, reload the page and try again.".to_owned(),
        ),
        "forbidden" => ("Not allowed for your role", message),
        "not_found" => (
            "Not found",
            "There is no such page, or no such customer in your firm.".to_owned(),
        ),
        "idempotency_in_progress" => (
            "Still working on it",
            "Your first click is still being processed. Open the customer again in a moment to see the result; nothing is charged twice.".to_owned(),
        ),
        "idempotency_conflict" => (
            "This form was already used",
            "Open the customer again and start from a fresh page.".to_owned(),
        ),
        "rate_limited" => ("Too many attempts", message),
        "payload_too_large" => ("Too much text", "The form is too large to accept.".to_owned()),
        "unavailable" | "provider_unavailable" => ("Temporarily unavailable", message),
        _ if status.is_server_error() => (
            "Something went wrong",
            "The request could not be completed. Nothing was changed by the part that failed; try again in a moment.".to_owned(),
        ),
        _ => ("That did not work", message),
    }
}

/// Turns every error answer that is not already a page into one, and an ended session into the
/// login page.
async fn error_pages(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_page {
        return response;
    }
    if status == StatusCode::UNAUTHORIZED {
        return see_other("/app/login?notice=session_ended");
    }
    let viewer = response.extensions().get::<Viewer>().cloned();
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let (_, body) = response.into_parts();
    let bytes = Limited::new(body, FORM_LIMIT_BYTES)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let envelope: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let code = envelope["error"]["code"].as_str().unwrap_or("").to_owned();
    let message = envelope["error"]["message"].as_str().map_or_else(
        || "The request could not be completed.".to_owned(),
        str::to_owned,
    );
    let (heading, message) = explain(status, &code, message);
    let logged_in = viewer.is_some();
    let page = ErrorPage {
        layout: Layout::for_viewer(heading, "", viewer),
        heading,
        message,
        back_href: if logged_in {
            "/app/customers"
        } else {
            "/app/login"
        },
        back_label: if logged_in {
            "Back to the customers"
        } else {
            "Go to the login page"
        },
    };
    let mut rendered = render(status, &page);
    if let Some(retry_after) = retry_after {
        rendered
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after);
    }
    rendered
}

/// Resolves the session cookie to a [`Staff`] for the pages behind the login; without a live
/// session the browser goes to the login page (and a stale cookie is cleared).
async fn page_session(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    match authenticate(&state, request.headers()).await {
        Ok(staff) => {
            tracing::Span::current().record("firm_id", tracing::field::display(staff.firm_id));
            let viewer = Viewer::of(&staff);
            request.extensions_mut().insert(staff);
            let mut response = next.run(request).await;
            response.extensions_mut().insert(viewer);
            response
        }
        Err(ApiError::SessionRequired) => {
            let mut response = see_other("/app/login?notice=session_ended");
            if session_cookie(request.headers()).is_some() {
                response.headers_mut().insert(
                    header::SET_COOKIE,
                    crate::backoffice::session::cleared_cookie(&state.config),
                );
            }
            response
        }
        Err(other) => other.into_response(),
    }
}

/// On every `POST` behind the login: the form's `csrf_token` must be the session's (compared in
/// constant time), else 403 and nothing runs. A form's `idempotency_key` (minted with the
/// confirmation page of Start Verification) becomes the request's `Idempotency-Key`, so a double
/// click is answered by the first click's answer.
async fn form_csrf(request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let Some(expected) = request
        .extensions()
        .get::<Staff>()
        .map(|staff| staff.csrf_token.clone())
    else {
        return ApiError::SessionRequired.into_response();
    };
    let (mut parts, body) = request.into_parts();
    let bytes = match Limited::new(body, FORM_LIMIT_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    let fields = forms::Fields::parse(&bytes);
    let sent = fields.get("csrf_token").unwrap_or_default();
    if !bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
        return ApiError::CsrfFailed.into_response();
    }
    if let Some(key) = fields.get("idempotency_key") {
        match HeaderValue::from_str(key) {
            Ok(value) => {
                parts.headers.insert(IDEMPOTENCY_KEY, value);
            }
            Err(_) => {
                return ApiError::invalid("idempotency_key", "The form's key is malformed.")
                    .into_response();
            }
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The embedded stylesheet.
async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/app.css"),
    )
}

/// The embedded script.
async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/app.js"),
    )
}

fn asset(content_type: &'static str, text: &'static str) -> Response {
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Small and rarely changed: an hour in the browser, checked again after that.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

/// Any other path under `/app`.
async fn not_found() -> Response {
    ApiError::NotFound("No such page.").into_response()
}
