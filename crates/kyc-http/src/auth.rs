//! API-key authentication and scopes. A key is presented as `Authorization: Bearer <key>`
//! (`kyc_live_…` or `kyc_test_…`), looked up by the SHA-256 of the whole key and compared in
//! constant time; only the hash is ever stored. Missing, unknown, expired and revoked keys all
//! answer 401 `unauthorized` alike, so the answer tells an attacker nothing. A valid key that
//! lacks the route's scope answers 403 `insufficient_scope`. An address that keeps failing is
//! slowed down ([`crate::key_guard`]).

use std::net::SocketAddr;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header;
use http::request::Parts;
use kyc_domain::events::Actor;
use kyc_domain::ids::{ApiKeyId, FirmId};
use kyc_domain::ports::ApiKeyRecord;
use kyc_domain::values::ApiScope;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::AppState;
use crate::error::ApiError;
use crate::key_guard::{self, Answer};

/// The authenticated caller of a CRM route: a firm's API key.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's firm: every read and write is scoped to it.
    pub firm_id: FirmId,
    /// The key.
    pub key_id: ApiKeyId,
    /// The key's label, for the audit trail.
    pub label: String,
    /// Its scopes (unknown scope strings in storage are ignored).
    pub scopes: Vec<ApiScope>,
}

impl Caller {
    /// The audit-trail actor for changes made with this key.
    pub fn actor(&self) -> Actor {
        Actor::ApiKey {
            id: self.key_id,
            label: self.label.clone(),
        }
    }

    /// Whether the key carries `scope`.
    pub fn has(&self, scope: ApiScope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// SHA-256 of the whole key, lowercase hex: what storage keeps and looks up by.
pub fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether a stored key may be used at `now`: the hash matches (constant time), it is not
/// revoked, and it has not expired.
fn usable(record: &ApiKeyRecord, presented_sha256: &str, now: OffsetDateTime) -> bool {
    let matches: bool = record
        .sha256
        .as_bytes()
        .ct_eq(presented_sha256.as_bytes())
        .into();
    matches && record.revoked_at.is_none() && record.expires_at.is_none_or(|at| now < at)
}

async fn authenticate(state: &AppState, presented: Option<&str>) -> Result<Caller, ApiError> {
    let presented = presented.ok_or(ApiError::Unauthorized)?;
    let record = state
        .ports
        .api_keys
        .find_api_key_by_sha256(presented)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if !usable(&record, presented, state.ports.clock.now()) {
        return Err(ApiError::Unauthorized);
    }
    Ok(Caller {
        firm_id: record.firm_id,
        key_id: record.id,
        label: record.label,
        scopes: record
            .scopes
            .iter()
            .filter_map(|s| ApiScope::parse(s).ok())
            .collect(),
    })
}

/// Authenticates the key; a failure counts against the client's address, and past its limit is
/// answered slowly, or 429 in a flood ([`crate::key_guard`]). A valid key is never slowed.
async fn guarded_authenticate(state: &AppState, parts: &Parts) -> Result<Caller, ApiError> {
    let presented = bearer(parts).map(key_sha256);
    let outcome = authenticate(state, presented.as_deref()).await;
    if let Err(ApiError::Unauthorized) = outcome
        && let Some(address) = parts.extensions.get::<ConnectInfo<SocketAddr>>()
        && state.key_guard.failed(address.0.ip()).await == Answer::Refuse
    {
        return Err(ApiError::RateLimited {
            limit: state.config.key_failures_per_address,
            window_seconds: key_guard::WINDOW.as_secs(),
            retry_after_secs: key_guard::GATE_WAIT.as_secs(),
        });
    }
    outcome
}

/// Middleware on every CRM route: authenticates the key, applies its rate limits, and leaves the
/// [`Caller`] in the request extensions for the handlers.
pub(crate) async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = match guarded_authenticate(&state, &parts).await {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    let admitted = state
        .limiter
        .admit(
            caller.key_id,
            state.ports.clock.now(),
            state.config.rate_limit_per_minute,
            state.config.rate_limit_per_day,
        )
        .await
        .map_err(ApiError::from)
        .and_then(|admitted| admitted.map_err(ApiError::from));
    if let Err(limited) = admitted {
        return limited.into_response();
    }
    tracing::Span::current().record("firm_id", tracing::field::display(caller.firm_id));
    parts.extensions.insert(caller);
    next.run(Request::from_parts(parts, body)).await
}

/// Middleware on one method of one route: refuses a key without `scope` (403) before anything
/// else of the request runs (idempotency claims included).
pub(crate) async fn require_scope(
    State(scope): State<ApiScope>,
    request: Request,
    next: Next,
) -> Response {
    match request.extensions().get::<Caller>() {
        Some(caller) if caller.has(scope) => next.run(request).await,
        Some(_) => ApiError::InsufficientScope {
            required: scope.as_str(),
        }
        .into_response(),
        None => ApiError::Unauthorized.into_response(),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn record(key: &str) -> ApiKeyRecord {
        ApiKeyRecord {
            id: ApiKeyId::from_uuid(uuid::Uuid::from_u128(1)),
            firm_id: FirmId::from_uuid(uuid::Uuid::from_u128(2)),
            label: "CRM".into(),
            scopes: vec!["customers:read".into()],
            prefix: key[..12].into(),
            last4: key[key.len() - 4..].into(),
            sha256: key_sha256(key),
            expires_at: None,
            revoked_at: None,
            created_at: datetime!(2026-01-01 00:00 UTC),
        }
    }

    #[test]
    fn the_hash_is_the_lowercase_hex_sha256_of_the_whole_key() {
        assert_eq!(
            key_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn revoked_and_expired_keys_are_not_usable() {
        let key = "kyc_live_0123456789abcdef0123456789abcdef";
        let now = datetime!(2026-07-01 00:00 UTC);
        let good = record(key);
        assert!(usable(&good, &key_sha256(key), now));
        assert!(!usable(&good, &key_sha256("kyc_live_other"), now));
        let mut revoked = good.clone();
        revoked.revoked_at = Some(now);
        assert!(!usable(&revoked, &key_sha256(key), now));
        let mut expired = good;
        expired.expires_at = Some(now);
        assert!(!usable(&expired, &key_sha256(key), now));
    }
}
