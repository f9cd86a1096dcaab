//! # kyc-http
//!
//! The driving HTTP adapter (axum): the CRM API under `/api/v1`, a compatible implementation of
//! the published Instant Compliance v1 customer API, with its OpenAPI document; the back-office
//! JSON API under `/api/backoffice` (session login, CSRF, roles); the provider webhook
//! `POST /webhooks/sumsub`; the customer's verification link `GET /v/{token}`; and the
//! operations endpoints `/healthz`, `/readyz` and `/metrics`.
//!
//! The crate is composed by the binary through [`HttpPorts`] (what the CRM API drives),
//! [`BackOfficePorts`] (what the back office and the provider webhook drive), [`HttpConfig`]
//! (settings read once by the binary) and [`router_with`] (the whole app); [`router`] and
//! [`router_with_metrics`] build the app without the back office. [`Metrics`] is the registry
//! behind `/metrics`; pass your own to record webhook deliveries, outbox depth, provider calls and
//! credits charged from elsewhere in the process.
//!
//! | Module | Holds |
//! |---|---|
//! | [`crm`] | the CRM routes, their request/response DTOs and list cursors |
//! | [`backoffice`] | the back-office JSON routes, sessions, CSRF and login limits |
//! | `web` | the back-office web pages under `/app` (templates, forms, security headers) |
//! | [`provider`] | the provider webhook and the verification link |
//! | [`auth`] | API-key authentication and scope checks |
//! | [`error`] | [`ApiError`], the one mapping of errors to status and code |
//! | `idempotency` | `Idempotency-Key` claim, replay and release |
//! | `rate_limit` | per-key minute and day limits |
//! | [`ops`] | health, readiness, metrics, request ids |
//! | [`openapi`] | the generated OpenAPI 3.1 document |

pub mod auth;
pub mod backoffice;
pub mod crm;
pub mod error;
pub(crate) mod idempotency;
pub(crate) mod key_guard;
pub mod openapi;
pub mod ops;
pub mod provider;
pub(crate) mod rate_limit;
pub(crate) mod web;

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use kyc_domain::ports::{ApiKeyStore, AuditLog, Clock, IdempotencyStore, SessionStore, UserStore};
use kyc_domain::usecases::{KycService, WebhookService};

pub use error::ApiError;
pub use ops::Metrics;
pub use provider::{ProviderWebhooks, WebhookRejection};

/// Whether the service can take traffic: the database is reachable and its migrations are
/// current. Implemented by the binary, which knows the database; `/readyz` calls it.
#[async_trait]
pub trait Readiness: Send + Sync {
    /// `Ok(())` when ready; otherwise a reason for the operator's log (never sent to clients).
    ///
    /// # Errors
    /// The reason the service is not ready.
    async fn check(&self) -> Result<(), String>;
}

/// What the HTTP adapter drives.
#[derive(Clone)]
pub struct HttpPorts {
    /// The use cases.
    pub service: KycService,
    /// API keys, looked up by the SHA-256 of the presented key.
    pub api_keys: Arc<dyn ApiKeyStore>,
    /// Idempotency records.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Time (key expiry, rate-limit windows, idempotency expiry).
    pub clock: Arc<dyn Clock>,
    /// Readiness probe behind `/readyz`.
    pub readiness: Arc<dyn Readiness>,
    /// The firm's webhook endpoints and event feed.
    pub webhooks: WebhookService,
    /// Request windows shared by every replica (on PostgreSQL); `None` counts in this process,
    /// which suits a single server (the embedded SQLite database).
    pub limits: Option<Arc<dyn kyc_domain::ports::RequestLimits>>,
}

/// What the back office and the provider webhook drive, beyond [`HttpPorts`]. Passed to
/// [`router_with`]; without it the back-office routes are not mounted and provider webhooks
/// answer 503.
#[derive(Clone)]
pub struct BackOfficePorts {
    /// Back-office users, found by email at login and by id on every request.
    pub users: Arc<dyn UserStore>,
    /// Sessions, stored by the SHA-256 of their cookie token.
    pub sessions: Arc<dyn SessionStore>,
    /// The audit trail: a customer's history and the firm's export.
    pub audit: Arc<dyn AuditLog>,
    /// The use cases of the firm's users and API keys, which the back office's admins drive.
    pub access: kyc_domain::usecases::AccessService,
    /// Verifies and reads provider webhooks; `None` when no webhook secret is configured, and
    /// then every delivery answers 503 so the provider keeps it for later.
    pub webhooks: Option<Arc<dyn ProviderWebhooks>>,
    /// Failed logins shared by every replica (on PostgreSQL); `None` counts them in this
    /// process.
    pub login_failures: Option<Arc<dyn kyc_domain::ports::LoginFailures>>,
}

/// Settings of the HTTP adapter, read once by the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Requests per API key per minute; `0` disables this limit.
    pub rate_limit_per_minute: u32,
    /// Requests per API key per 24 hours; `0` disables this limit.
    pub rate_limit_per_day: u32,
    /// The public base URL (`http://127.0.0.1:8080`), used as the OpenAPI server.
    pub public_url: String,
    /// The largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// A back-office session ends after this long without a request.
    pub session_idle_timeout_secs: u64,
    /// A back-office session ends this long after login, however active.
    pub session_lifetime_secs: u64,
    /// Failed logins allowed per account (email) within [`HttpConfig::login_window_secs`].
    pub login_failures_per_account: u32,
    /// Failed logins allowed per client address within [`HttpConfig::login_window_secs`].
    pub login_failures_per_address: u32,
    /// The window of the login limits.
    pub login_window_secs: u64,
    /// Failed API-key authentications per client address per minute answered at once; past it
    /// each is answered after a second, a few at a time ([`key_guard`]); `0` turns this off.
    pub key_failures_per_address: u32,
}

impl Default for HttpConfig {
    /// The contract's defaults: 60/minute, 10,000/day, 1 MiB bodies, `http://127.0.0.1:8080`;
    /// sessions idle out after 30 minutes and end after 12 hours; 5 failed logins per account and
    /// 20 per address per 15 minutes; 100 failed API-key authentications per address per minute.
    fn default() -> Self {
        Self {
            rate_limit_per_minute: 60,
            rate_limit_per_day: 10_000,
            public_url: "http://127.0.0.1:8080".to_owned(),
            body_limit_bytes: 1024 * 1024,
            session_idle_timeout_secs: 30 * 60,
            session_lifetime_secs: 12 * 60 * 60,
            login_failures_per_account: 5,
            login_failures_per_address: 20,
            login_window_secs: 15 * 60,
            key_failures_per_address: 100,
        }
    }
}

/// Shared state of every handler, behind one `Arc`: axum clones the state for every extractor
/// and middleware of every request, and a clone of the fields themselves (a dozen `Arc`s) was a
/// measurable share of the server's CPU under load.
#[derive(Clone)]
pub(crate) struct AppState(Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// What [`AppState`] holds.
pub(crate) struct AppStateInner {
    pub(crate) ports: HttpPorts,
    pub(crate) config: Arc<HttpConfig>,
    /// The request windows: the shared ones of [`HttpPorts::limits`], or this process's own.
    pub(crate) limiter: Arc<dyn kyc_domain::ports::RequestLimits>,
    pub(crate) metrics: Metrics,
    pub(crate) openapi_json: Arc<String>,
    pub(crate) backoffice_openapi_json: Arc<String>,
    pub(crate) back_office: Option<BackOfficePorts>,
    pub(crate) logins: Arc<backoffice::session::LoginLimiter>,
    pub(crate) key_guard: key_guard::KeyGuard,
}

/// The whole app: the CRM API under `/api/v1`, `/api/v1/openapi.json`, `/healthz`, `/readyz`
/// and `/metrics`, with a fresh [`Metrics`] registry.
pub fn router(ports: HttpPorts, config: HttpConfig) -> Router {
    router_with_metrics(ports, config, Metrics::new())
}

/// [`router`] with a [`Metrics`] registry the caller keeps, to record its own figures (webhook
/// deliveries, outbox depth, provider calls, credits charged) on the same `/metrics` page.
pub fn router_with_metrics(ports: HttpPorts, config: HttpConfig, metrics: Metrics) -> Router {
    router_with(ports, None, config, metrics)
}

/// The whole app with the back office: [`router_with_metrics`] plus the back-office JSON API
/// under `/api/backoffice` when `back_office` is given. `POST /webhooks/sumsub` and
/// `GET /v/{token}` are always mounted; the webhook answers 503 without a
/// [`BackOfficePorts::webhooks`].
pub fn router_with(
    ports: HttpPorts,
    back_office: Option<BackOfficePorts>,
    config: HttpConfig,
    metrics: Metrics,
) -> Router {
    let logins = Arc::new(
        backoffice::session::LoginLimiter::new(&config)
            .shared(back_office.as_ref().and_then(|b| b.login_failures.clone())),
    );
    let limiter = ports
        .limits
        .clone()
        .unwrap_or_else(|| Arc::new(rate_limit::RateLimiter::default()));
    let openapi_json = Arc::new(openapi::document_json(&config.public_url));
    let backoffice_openapi_json = Arc::new(backoffice::openapi::document_json(&config.public_url));
    let body_limit = config.body_limit_bytes;
    let key_guard = key_guard::KeyGuard::new(config.key_failures_per_address);
    let state = AppState(Arc::new(AppStateInner {
        key_guard,
        ports,
        config: Arc::new(config),
        limiter,
        metrics: metrics.clone(),
        openapi_json,
        backoffice_openapi_json,
        back_office: back_office.clone(),
        logins,
    }));
    let mut app = Router::new()
        .merge(crm::routes(state.clone()))
        .merge(provider::routes());
    if back_office.is_some() {
        app = app
            .merge(backoffice::routes(state.clone()))
            .nest(web::MOUNT, web::routes(state.clone()))
            // A nested router's `/` answers `/app` only; people also type the slash.
            .route("/app/", axum::routing::get(web::home));
    }
    app.merge(ops::routes())
        .fallback(ops::not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(metrics, ops::record_request))
        .layer(middleware::from_fn(error::envelope_guard))
        .layer(middleware::from_fn(ops::request_id))
}
