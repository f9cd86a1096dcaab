//! `Idempotency-Key` on POST and PATCH of the CRM API, and on Start Verification in the back
//! office (where it is required). The key is unique within (firm, method, path) and kept 24
//! hours. The first request claims it and runs; its answer (status, content type, body) is
//! stored. A repeat with the same body gets that answer verbatim plus `Idempotent-Replayed: true`;
//! with a different body, 409 `idempotency_conflict`; while the first still runs, 409
//! `idempotency_in_progress`.
//!
//! A 5xx answer releases the claim instead of storing it: the work failed without effect, and the
//! client's retry must be allowed to run. A request abandoned mid-way (client gone, task dropped)
//! releases its claim too, so the key does not stay "in progress" for a day.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use kyc_domain::ports::{ClaimOutcome, IdempotencyScope, IdempotencyStore, StoredResponse};
use sha2::{Digest, Sha256};
use std::sync::Arc;

use crate::AppState;
use crate::auth::Caller;
use crate::backoffice::session::Staff;
use crate::error::ApiError;

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The header added to a replayed answer.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long a key is remembered.
const RETENTION: time::Duration = time::Duration::hours(24);
/// The longest key accepted, in characters.
const MAX_KEY_CHARS: usize = 255;

fn parse_key(value: &HeaderValue) -> Result<String, ApiError> {
    let invalid = |message: &str| ApiError::invalid("Idempotency-Key", message);
    let key = value
        .to_str()
        .map_err(|_| invalid("Idempotency-Key must be printable ASCII text"))?;
    if key.trim().is_empty() {
        return Err(invalid("Idempotency-Key must not be empty"));
    }
    if key.chars().count() > MAX_KEY_CHARS {
        return Err(invalid("Idempotency-Key must be at most 255 characters"));
    }
    Ok(key.to_owned())
}

/// SHA-256 of the request body, lowercase hex: a repeat must send the same bytes.
fn fingerprint(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Releases a claim if dropped before it was settled (the request future was cancelled).
struct ClaimGuard {
    store: Arc<dyn IdempotencyStore>,
    scope: Option<IdempotencyScope>,
}

impl ClaimGuard {
    /// The claim is being completed or released by the request itself.
    fn settle(&mut self) {
        self.scope = None;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(scope) = self.scope.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let store = self.store.clone();
            runtime.spawn(async move {
                if let Err(error) = store.release(&scope).await {
                    tracing::warn!(%error, "could not release an abandoned idempotency claim");
                }
            });
        }
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, Body::from(stored.body)).into_response();
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Middleware on routes where a repeat must never act twice (Start Verification): a request
/// without an `Idempotency-Key` is refused with 422 before it can do anything.
pub(crate) async fn require_idempotency_key(request: Request, next: Next) -> Response {
    if request.headers().contains_key(&IDEMPOTENCY_KEY) {
        next.run(request).await
    } else {
        ApiError::invalid(
            "Idempotency-Key",
            "Idempotency-Key is required: send a fresh unique value per click, and the same value when retrying",
        )
        .into_response()
    }
}

/// Middleware on the POST and PATCH routes of the CRM API, and on Start Verification. Runs after authentication and the
/// scope check, so only requests that may run at all can claim a key.
pub(crate) async fn idempotent(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match run(state, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn run(state: AppState, request: Request, next: Next) -> Result<Response, Response> {
    let Some(value) = request.headers().get(&IDEMPOTENCY_KEY) else {
        return Ok(next.run(request).await);
    };
    let key = parse_key(value).map_err(IntoResponse::into_response)?;
    // Keys are scoped per firm, whoever the caller is: a CRM's API key or a person's session.
    let firm_id = request
        .extensions()
        .get::<Caller>()
        .map(|caller| caller.firm_id)
        .or_else(|| {
            request
                .extensions()
                .get::<Staff>()
                .map(|staff| staff.firm_id)
        })
        .ok_or_else(|| ApiError::Unauthorized.into_response())?;
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, state.config.body_limit_bytes)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(ApiError::PayloadTooLarge.into_response());
        }
        Err(_) => {
            return Err(
                ApiError::invalid_request("The request body could not be read.").into_response(),
            );
        }
    };
    let scope = IdempotencyScope {
        firm_id,
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        key,
    };
    let store = state.ports.idempotency.clone();
    let now = state.ports.clock.now();
    let claim = store
        .claim(&scope, &fingerprint(&bytes), now, now + RETENTION)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    match claim {
        ClaimOutcome::Claimed => {}
        ClaimOutcome::InProgress => return Err(ApiError::IdempotencyInProgress.into_response()),
        ClaimOutcome::FingerprintMismatch => {
            return Err(ApiError::IdempotencyConflict.into_response());
        }
        ClaimOutcome::Completed(stored) => return Ok(replay(stored)),
    }
    let mut guard = ClaimGuard {
        store: store.clone(),
        scope: Some(scope.clone()),
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (parts, body) = response.into_parts();
    // Our own handlers' bodies are small JSON documents already in memory.
    let body = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    guard.settle();
    if parts.status.is_server_error() {
        if let Err(error) = store.release(&scope).await {
            tracing::warn!(%error, "could not release an idempotency claim after a failure");
        }
    } else {
        // A page's answer is often a redirect: its target is part of the answer.
        let headers = [header::CONTENT_TYPE, header::LOCATION]
            .into_iter()
            .filter_map(|name| {
                let value = parts.headers.get(&name)?.to_str().ok()?;
                Some((name.as_str().to_owned(), value.to_owned()))
            })
            .collect();
        let stored = StoredResponse {
            status: parts.status.as_u16(),
            headers,
            body: body.to_vec(),
        };
        match store.complete(&scope, &stored).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("idempotency claim vanished before its answer was stored"),
            Err(error) => tracing::warn!(%error, "could not store an idempotent answer"),
        }
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_longer_than_255_characters_are_refused() {
        let ok = HeaderValue::from_str(&"k".repeat(255)).unwrap();
        assert!(parse_key(&ok).is_ok());
        let long = HeaderValue::from_str(&"k".repeat(256)).unwrap();
        let error = parse_key(&long).unwrap_err();
        assert_eq!(error.code(), "validation_failed");
        assert!(parse_key(&HeaderValue::from_static(" ")).is_err());
    }

    fn scope() -> IdempotencyScope {
        IdempotencyScope {
            firm_id: kyc_domain::ids::FirmId::from_uuid(uuid::Uuid::from_u128(1)),
            method: "POST".into(),
            path: "/api/v1/customers".into(),
            key: "k".into(),
        }
    }

    #[tokio::test]
    async fn an_abandoned_claim_is_released_and_a_settled_one_is_not() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let released = Arc::new(AtomicUsize::new(0));
        let mut store = kyc_domain::ports::MockIdempotencyStore::new();
        let counter = released.clone();
        store.expect_release().returning(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let store: Arc<dyn IdempotencyStore> = Arc::new(store);
        drop(ClaimGuard {
            store: store.clone(),
            scope: Some(scope()),
        });
        let mut settled = ClaimGuard {
            store,
            scope: Some(scope()),
        };
        settled.settle();
        drop(settled);
        for _ in 0..100 {
            if released.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(released.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_fingerprint_depends_on_every_byte_of_the_body() {
        assert_eq!(fingerprint(b"{}"), fingerprint(b"{}"));
        assert_ne!(fingerprint(b"{\"a\":1}"), fingerprint(b"{\"a\":2}"));
    }

    proptest::proptest! {
        /// The fingerprint is a pure function of the bytes: 64 lowercase hex digits, the same
        /// for the same body, different for any other body (a repeat must send the same bytes).
        #[test]
        fn the_fingerprint_separates_bodies(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            other in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        ) {
            let print = fingerprint(&body);
            proptest::prop_assert_eq!(print.len(), 64);
            proptest::prop_assert!(print.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
            proptest::prop_assert_eq!(&print, &fingerprint(&body.clone()));
            if other != body {
                proptest::prop_assert_ne!(print, fingerprint(&other));
            }
        }

        /// Any header value is a key or a 422, never a panic; a key is 1–255 characters and not
        /// blank.
        #[test]
        fn any_header_value_is_a_key_or_a_refusal(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes)
                && let Ok(key) = parse_key(&value)
            {
                proptest::prop_assert!(!key.trim().is_empty());
                proptest::prop_assert!(key.chars().count() <= 255);
            }
        }
    }
}
