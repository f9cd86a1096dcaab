//! Back-office sessions: login with an argon2id password hash, the `kyc_session` cookie, idle and
//! absolute expiry, the CSRF token bound to the session, role checks, and the login limits.
//!
//! The session token is 256 random bits, sent only in an `HttpOnly`, `SameSite=Strict` cookie
//! (`Secure` when the public URL is HTTPS); storage keeps its SHA-256. The CSRF token is an HMAC
//! of the session token, so it needs no storage and no server key shared between replicas, yet
//! cannot be computed without the cookie a cross-site page cannot read.
//!
//! Login never tells whether an email exists: an unknown email is checked against a dummy hash
//! with the same cost as a real one, and both failures answer the same sentence. Failed logins are
//! limited per account and per client address, in memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use kyc_domain::events::{Person, Role};
use kyc_domain::ids::FirmId;
use kyc_domain::ports::{LoginFailures, Session};
use kyc_domain::values::Email;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;

use crate::crm::dto::JsonObject;
use crate::error::{ApiError, ErrorEnvelope};
use crate::{AppState, BackOfficePorts, HttpConfig};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "kyc_session";
/// The header carrying the CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The logged-in person behind a back-office request, left in the request extensions by the
/// session middleware.
#[derive(Debug, Clone)]
pub struct Staff {
    /// The person, for the use cases and the audit trail.
    pub person: Person,
    /// Their firm: every read and write is scoped to it.
    pub firm_id: FirmId,
    /// SHA-256 of the session token (what logout deletes).
    pub token_hash: String,
    /// The CSRF token of this session.
    pub csrf_token: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or(ApiError::SessionRequired)
    }
}

/// SHA-256 of a session token, lowercase hex: what storage keeps.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The CSRF token of the session whose cookie token is `token`: HMAC-SHA256 keyed by the
/// session token, hex.
pub fn csrf_token_for(token: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"kyc-backoffice-csrf-v1");
    hex::encode(mac.finalize().into_bytes())
}

fn new_session_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The value of the request's cookie `name`, if it sent one.
pub(crate) fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

/// The session token the request's cookie carries.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, SESSION_COOKIE)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

/// `Set-Cookie` for one of the back office's cookies: `HttpOnly`, `SameSite=Strict`, and
/// `Secure` when the public URL is HTTPS.
pub(crate) fn strict_cookie(
    config: &HttpConfig,
    name: &str,
    value: &str,
    path: &str,
    max_age_secs: u64,
) -> HeaderValue {
    let secure = if config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let text = format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path={path}; Max-Age={max_age_secs}{secure}"
    );
    // Our values are URL-safe base64, so the header is always valid text.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn cookie_header(config: &HttpConfig, value: &str, max_age_secs: u64) -> HeaderValue {
    strict_cookie(config, SESSION_COOKIE, value, "/", max_age_secs)
}

fn back_office(state: &AppState) -> Result<&BackOfficePorts, ApiError> {
    state
        .back_office
        .as_ref()
        .ok_or(ApiError::NotFound("No such route."))
}

/// Failed logins kept in this process: what a single server (the embedded SQLite database)
/// counts with, through the same port as the PostgreSQL store shared by replicas.
#[derive(Default)]
struct MemoryLoginFailures(Mutex<HashMap<String, Vec<OffsetDateTime>>>);

impl MemoryLoginFailures {
    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<OffsetDateTime>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl LoginFailures for MemoryLoginFailures {
    async fn failures_since(
        &self,
        key: &str,
        since: OffsetDateTime,
    ) -> Result<(u32, Option<OffsetDateTime>), kyc_domain::ports::InfrastructureError> {
        let failures = self.failures();
        let recent: Vec<OffsetDateTime> = failures
            .get(key)
            .map(|times| times.iter().copied().filter(|at| *at > since).collect())
            .unwrap_or_default();
        Ok((
            u32::try_from(recent.len()).unwrap_or(u32::MAX),
            recent.iter().min().copied(),
        ))
    }

    async fn record_failure(
        &self,
        keys: &[String],
        at: OffsetDateTime,
        forget_before: OffsetDateTime,
    ) -> Result<(), kyc_domain::ports::InfrastructureError> {
        let mut failures = self.failures();
        for key in keys {
            let times = failures.entry(key.clone()).or_default();
            times.retain(|time| *time >= forget_before);
            times.push(at);
        }
        Ok(())
    }

    async fn clear_failures(
        &self,
        key: &str,
    ) -> Result<(), kyc_domain::ports::InfrastructureError> {
        self.failures().remove(key);
        Ok(())
    }
}

/// Failed-login limits per account and per client address, counted in a [`LoginFailures`] store
/// (this process's own, or the one shared by every replica), and the dummy hash an unknown email
/// is checked against.
pub(crate) struct LoginLimiter {
    per_account: u32,
    per_address: u32,
    window: Duration,
    failures: Arc<dyn LoginFailures>,
    dummy_hash: tokio::sync::OnceCell<String>,
}

impl LoginLimiter {
    pub(crate) fn new(config: &HttpConfig) -> Self {
        Self {
            per_account: config.login_failures_per_account,
            per_address: config.login_failures_per_address,
            window: Duration::seconds(i64::try_from(config.login_window_secs).unwrap_or(i64::MAX)),
            failures: Arc::new(MemoryLoginFailures::default()),
            dummy_hash: tokio::sync::OnceCell::new(),
        }
    }

    /// The same limits, counted in `shared` (by every replica) when given instead of in this
    /// process.
    pub(crate) fn shared(mut self, shared: Option<Arc<dyn LoginFailures>>) -> Self {
        if let Some(shared) = shared {
            self.failures = shared;
        }
        self
    }

    /// The keys of a login attempt whose limit is on, with that limit.
    fn limited_keys(&self, account: &str, address: Option<SocketAddr>) -> Vec<(String, u32)> {
        Self::keys(account, address)
            .into_iter()
            .map(|(key, is_account)| {
                let limit = if is_account {
                    self.per_account
                } else {
                    self.per_address
                };
                (key, limit)
            })
            .filter(|(_, limit)| *limit > 0)
            .collect()
    }

    /// The refusal of a key whose `limit` is used up, the oldest failure in the window at
    /// `oldest`.
    fn refused(&self, limit: u32, oldest: OffsetDateTime, now: OffsetDateTime) -> ApiError {
        let retry = (oldest + self.window - now).whole_seconds().max(1);
        ApiError::RateLimited {
            limit,
            window_seconds: self.window.whole_seconds().unsigned_abs(),
            retry_after_secs: retry.unsigned_abs(),
        }
    }

    /// A key as the shared store keeps it: its SHA-256, so no email or address is stored.
    fn stored_key(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    /// Refuses when either limit is used up; `0` disables a limit.
    async fn admit(
        &self,
        account: &str,
        address: Option<SocketAddr>,
        now: OffsetDateTime,
    ) -> Result<(), ApiError> {
        for (key, limit) in self.limited_keys(account, address) {
            let (failures, oldest) = self
                .failures
                .failures_since(&Self::stored_key(&key), now - self.window)
                .await?;
            if failures >= limit {
                return Err(self.refused(limit, oldest.unwrap_or(now), now));
            }
        }
        Ok(())
    }

    /// Counts a failed login of `account` from `address`.
    async fn record_failure(
        &self,
        account: &str,
        address: Option<SocketAddr>,
        now: OffsetDateTime,
    ) -> Result<(), ApiError> {
        let keys: Vec<String> = Self::keys(account, address)
            .iter()
            .map(|(key, _)| Self::stored_key(key))
            .collect();
        self.failures
            .record_failure(&keys, now, now - self.window)
            .await?;
        Ok(())
    }

    /// Forgets the failures of `account` after it logged in.
    async fn record_success(&self, account: &str) -> Result<(), ApiError> {
        self.failures
            .clear_failures(&Self::stored_key(&format!("account:{account}")))
            .await?;
        Ok(())
    }

    fn keys(account: &str, address: Option<SocketAddr>) -> Vec<(String, bool)> {
        let mut keys = vec![(format!("account:{account}"), true)];
        if let Some(address) = address {
            keys.push((format!("address:{}", address.ip()), false));
        }
        keys
    }

    async fn dummy_hash(&self) -> Result<String, ApiError> {
        self.dummy_hash
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(|| {
                    let salt = SaltString::generate(&mut OsRng);
                    Argon2::default()
                        .hash_password(b"not a password anyone has", &salt)
                        .map(|hash| hash.to_string())
                        .map_err(|e| ApiError::Internal(e.to_string().into()))
                })
                .await
                .map_err(|e| ApiError::Internal(Box::new(e)))?
            })
            .await
            .cloned()
    }
}

/// Whether `password` matches the PHC string `hash`; a malformed hash matches nothing. Runs the
/// (deliberately slow) argon2 off the async threads.
async fn password_matches(hash: String, password: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .map_err(|e| ApiError::Internal(Box::new(e)))
}

/// `POST /api/backoffice/session` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    /// The login email.
    #[schema(example = "officer@firm.example")]
    email: String,
    /// The password.
    #[schema(format = Password)]
    password: String,
}

/// The logged-in user, as the back office shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserDto {
    /// Id.
    pub id: String,
    /// Login.
    pub email: String,
    /// `staff`, `compliance_officer` or `admin`.
    #[schema(schema_with = role_schema)]
    pub role: &'static str,
    /// The firm.
    pub firm_id: String,
}

fn role_schema() -> utoipa::openapi::Object {
    crate::crm::dto::string_enum(&["staff", "compliance_officer", "admin"])
}

/// The answer to a login.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginDto {
    /// Who logged in.
    pub user: UserDto,
    /// Send it back in `X-CSRF-Token` on every state-changing request of this session.
    pub csrf_token: String,
}

/// Log in.
///
/// # Responses
/// 200 `{user, csrf_token}` with the session cookie; 401 `unauthorized` for a wrong email or
/// password (one message for both); 422 for a malformed body; 429 `rate_limited` after too many
/// failures for the account or the address.
#[utoipa::path(
    post,
    path = "/api/backoffice/session",
    tag = "session",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in: the session cookie is set (HttpOnly, SameSite=Strict)", body = LoginDto),
        (status = 401, description = "unauthorized: a wrong email or password (one answer for both)", body = ErrorEnvelope),
        (status = 422, description = "validation_failed: a malformed body", body = ErrorEnvelope),
        (status = 429, description = "rate_limited: too many failures for the account or the address", body = ErrorEnvelope),
    )
)]
pub(crate) async fn login(State(state): State<AppState>, request: Request) -> Response {
    match run_login(state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn run_login(state: AppState, request: Request) -> Result<Response, ApiError> {
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    // The session the client already held ends with this login, as on the login page.
    let previous = session_cookie(request.headers());
    let JsonObject(body) = JsonObject::from_request(request, &()).await?;
    let login: LoginRequest =
        serde_json::from_value(serde_json::Value::Object(body)).map_err(|_| {
            ApiError::invalid_request("The body must be {\"email\": string, \"password\": string}.")
        })?;
    let signed_in = sign_in(
        &state,
        &login.email,
        login.password,
        address,
        previous.as_deref(),
    )
    .await?;
    let body = LoginDto {
        user: UserDto {
            id: signed_in.user.id.to_string(),
            email: signed_in.user.email.as_str().to_owned(),
            role: signed_in.user.role.as_str(),
            firm_id: signed_in.user.firm_id.to_string(),
        },
        csrf_token: csrf_token_for(&signed_in.token),
    };
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, signed_in.cookie);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A successful login: the user, the new session's token and the cookie that carries it.
pub(crate) struct SignedIn {
    /// Who logged in.
    pub(crate) user: kyc_domain::ports::User,
    /// The new session's token (the cookie's value).
    pub(crate) token: String,
    /// `Set-Cookie` for the new session.
    pub(crate) cookie: HeaderValue,
}

/// Checks an email and password against the login limits and the stored argon2id hash, and
/// starts a new session: the one way into the back office, for the JSON API and the pages alike.
/// `replaces` is the session token the browser already held, if any: it ends here, so a session
/// id planted before login is never the one that is logged in.
///
/// # Errors
/// 401 `BadCredentials` for a wrong email or password or a disabled user (one message for all);
/// 429 after too many failures for the account or the address; storage failures.
pub(crate) async fn sign_in(
    state: &AppState,
    email: &str,
    password: String,
    address: Option<SocketAddr>,
    replaces: Option<&str>,
) -> Result<SignedIn, ApiError> {
    let ports = back_office(state)?.clone();
    let account = email.trim().to_lowercase();
    let now = state.ports.clock.now();
    state.logins.admit(&account, address, now).await?;
    let user = match Email::new(email.trim()) {
        Ok(email) => ports.users.find_user_by_email(&email).await?,
        Err(_) => None,
    };
    // An unknown email costs the same argon2 verification as a known one.
    let hash = match &user {
        Some(user) => user.password_hash.clone(),
        None => state.logins.dummy_hash().await?,
    };
    let matches = password_matches(hash, password).await?;
    let Some(user) = user.filter(|user| matches && user.disabled_at.is_none()) else {
        state.logins.record_failure(&account, address, now).await?;
        return Err(ApiError::BadCredentials);
    };
    state.logins.record_success(&account).await?;
    if let Some(old) = replaces {
        ports.sessions.delete_session(&token_sha256(old)).await?;
    }
    let token = new_session_token();
    let lifetime_secs = state.config.session_lifetime_secs;
    let session = Session {
        token_hash: token_sha256(&token),
        user_id: user.id,
        firm_id: user.firm_id,
        created_at: now,
        last_seen_at: now,
        expires_at: now + Duration::seconds(i64::try_from(lifetime_secs).unwrap_or(i64::MAX)),
    };
    ports.sessions.create_session(&session).await?;
    tracing::info!(firm_id = %user.firm_id, user_id = %user.id, "logged in");
    let cookie = cookie_header(&state.config, &token, lifetime_secs);
    Ok(SignedIn {
        user,
        token,
        cookie,
    })
}

/// The `Set-Cookie` that ends the session cookie in the browser.
pub(crate) fn cleared_cookie(config: &HttpConfig) -> HeaderValue {
    cookie_header(config, "", 0)
}

/// Log out: the session ends at once and the cookie is cleared.
///
/// # Responses
/// 204; 401 without a session; 403 `csrf_failed` without the CSRF token.
#[utoipa::path(
    delete,
    path = "/api/backoffice/session",
    tag = "session",
    responses(
        (status = 204, description = "Logged out: the session has ended and the cookie is cleared"),
        (status = 401, description = "unauthorized", body = ErrorEnvelope),
        (status = 403, description = "csrf_failed", body = ErrorEnvelope),
    ),
    security(("session" = [], "csrf" = []))
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    staff: Staff,
) -> Result<Response, ApiError> {
    back_office(&state)?
        .sessions
        .delete_session(&staff.token_hash)
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cleared_cookie(&state.config));
    Ok(response)
}

/// The live session behind the request's cookie, as a [`Staff`]; touches it (idle expiry) and
/// reads the user again, so a change of role or a disabled user applies at once.
///
/// # Errors
/// 401 `SessionRequired` without a live session or for a disabled user; storage failures.
pub(crate) async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Staff, ApiError> {
    let ports = back_office(state)?;
    let token = session_cookie(headers).ok_or(ApiError::SessionRequired)?;
    let token_hash = token_sha256(&token);
    let session = ports
        .sessions
        .get_session(&token_hash)
        .await?
        .ok_or(ApiError::SessionRequired)?;
    let now = state.ports.clock.now();
    let idle = Duration::seconds(
        i64::try_from(state.config.session_idle_timeout_secs).unwrap_or(i64::MAX),
    );
    if now >= session.expires_at || now - session.last_seen_at >= idle {
        ports.sessions.delete_session(&token_hash).await?;
        return Err(ApiError::SessionRequired);
    }
    if !ports.sessions.touch_session(&token_hash, now).await? {
        return Err(ApiError::SessionRequired);
    }
    // The role is read on every request, so a change of role applies at once.
    let user = ports
        .users
        .get_user(session.firm_id, session.user_id)
        .await?
        .filter(|user| user.disabled_at.is_none())
        .ok_or(ApiError::SessionRequired)?;
    Ok(Staff {
        person: Person {
            id: user.id,
            email: user.email,
            role: user.role,
        },
        firm_id: user.firm_id,
        csrf_token: csrf_token_for(&token),
        token_hash,
    })
}

/// Middleware on every back-office route but login: resolves the session cookie to a [`Staff`]
/// (401 without a live session) and leaves it in the request extensions.
pub(crate) async fn require_session(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticate(&state, request.headers()).await {
        Ok(staff) => {
            tracing::Span::current().record("firm_id", tracing::field::display(staff.firm_id));
            request.extensions_mut().insert(staff);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

/// Middleware on state-changing back-office routes: the `X-CSRF-Token` header must equal the
/// session's CSRF token (compared in constant time), else 403 `csrf_failed`.
pub(crate) async fn require_csrf(request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let Some(staff) = request.extensions().get::<Staff>() else {
        return ApiError::SessionRequired.into_response();
    };
    let sent = request
        .headers()
        .get(CSRF_HEADER)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if bool::from(sent.ct_eq(staff.csrf_token.as_bytes())) {
        next.run(request).await
    } else {
        ApiError::CsrfFailed.into_response()
    }
}

/// Which roles may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleNeed {
    /// `staff` or `compliance_officer`: the work of the back office.
    StaffOrAbove,
    /// `compliance_officer` only: AML review, decisions, restarts, the audit export.
    ComplianceOfficer,
    /// `admin` only: the firm's users and API keys.
    Admin,
}

impl RoleNeed {
    /// Whether `role` may.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Self::StaffOrAbove => role.is_staff_or_above(),
            Self::ComplianceOfficer => role.is_compliance_officer(),
            Self::Admin => role == Role::Admin,
        }
    }

    pub(crate) fn refusal(self) -> ApiError {
        ApiError::Forbidden(
            match self {
                Self::StaffOrAbove => "This requires the role staff or compliance_officer.",
                Self::ComplianceOfficer => "This requires the role compliance_officer.",
                Self::Admin => "This requires the role admin.",
            }
            .to_owned(),
        )
    }
}

/// Middleware on one method of one route: refuses a role that may not (403 `forbidden`) before
/// anything else of the request runs (idempotency claims included).
pub(crate) async fn require_role(
    State(need): State<RoleNeed>,
    request: Request,
    next: Next,
) -> Response {
    match request.extensions().get::<Staff>() {
        Some(staff) if need.allows(staff.person.role) => next.run(request).await,
        Some(_) => need.refusal().into_response(),
        None => ApiError::SessionRequired.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn limiter(per_account: u32, per_address: u32) -> LoginLimiter {
        LoginLimiter::new(&HttpConfig {
            login_failures_per_account: per_account,
            login_failures_per_address: per_address,
            login_window_secs: 900,
            ..HttpConfig::default()
        })
    }

    #[test]
    fn the_csrf_token_depends_on_the_session_token() {
        assert_eq!(csrf_token_for("a"), csrf_token_for("a"));
        assert_ne!(csrf_token_for("a"), csrf_token_for("b"));
        assert_eq!(csrf_token_for("a").len(), 64);
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; kyc_session=abc; other=1"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        headers.insert(header::COOKIE, HeaderValue::from_static("kyc_session="));
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn the_cookie_is_secure_only_behind_https() {
        let plain = cookie_header(&HttpConfig::default(), "t", 60);
        let plain = plain.to_str().unwrap();
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        let https = HttpConfig {
            public_url: "https://kyc.example".into(),
            ..HttpConfig::default()
        };
        assert!(
            cookie_header(&https, "t", 60)
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
    }

    #[tokio::test]
    async fn failures_per_account_lock_the_account_for_the_window_and_success_clears_them() {
        let limiter = limiter(2, 0);
        let now = datetime!(2026-07-01 00:00 UTC);
        limiter
            .record_failure("a@x.example", None, now)
            .await
            .unwrap();
        assert!(limiter.admit("a@x.example", None, now).await.is_ok());
        limiter
            .record_failure("a@x.example", None, now)
            .await
            .unwrap();
        let refused = limiter.admit("a@x.example", None, now).await.unwrap_err();
        assert_eq!(refused.code(), "rate_limited");
        assert!(limiter.admit("b@x.example", None, now).await.is_ok());
        assert!(
            limiter
                .admit("a@x.example", None, now + Duration::minutes(15))
                .await
                .is_ok()
        );
        limiter.record_success("a@x.example").await.unwrap();
        assert!(limiter.admit("a@x.example", None, now).await.is_ok());
    }

    #[tokio::test]
    async fn failures_per_address_cover_every_account_tried_from_it() {
        let limiter = limiter(0, 2);
        let now = datetime!(2026-07-01 00:00 UTC);
        let address: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let other: SocketAddr = "203.0.113.10:5000".parse().unwrap();
        limiter
            .record_failure("a@x.example", Some(address), now)
            .await
            .unwrap();
        limiter
            .record_failure("b@x.example", Some(address), now)
            .await
            .unwrap();
        assert!(
            limiter
                .admit("c@x.example", Some(address), now)
                .await
                .is_err()
        );
        assert!(limiter.admit("c@x.example", Some(other), now).await.is_ok());
    }
}
