//! The one API error type, and the one place that maps domain and infrastructure errors to an HTTP
//! status and an error code. Every non-2xx answer of this crate is the envelope
//! `{"error":{"code","message","details"?}}`; `envelope_guard` rewrites the few answers that axum
//! or tower produce on their own (405, 413…) into it.
//!
//! 5xx answers never reveal internals: the client sees a fixed sentence, and the cause chain is
//! logged once, here, with the request id.

use std::error::Error as StdError;
use std::fmt::Write as _;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use kyc_domain::error::LifecycleError;
use kyc_domain::ports::InfrastructureError;
use kyc_domain::usecases::{CommandError, StartError, UpsertError};
use kyc_domain::values::ValidationError;
use serde::Serialize;
use serde_json::{Value, json};

/// Seconds a client should wait before retrying after a 503.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// Every error the API answers with. Each variant names its status and `error.code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 `unauthorized`: missing, malformed, unknown, expired or revoked API key.
    #[error("A valid API key is required: send `Authorization: Bearer <key>`.")]
    Unauthorized,
    /// 403 `insufficient_scope`: the key is valid but lacks the scope the route needs.
    #[error("This API key lacks the scope {required}.")]
    InsufficientScope {
        /// The scope the route needs, in the contract's spelling.
        required: &'static str,
    },
    /// 401 `unauthorized` on a back-office route: no session, or it ended (logout, idle expiry).
    #[error("Log in to the back office first: the session is missing or has expired.")]
    SessionRequired,
    /// 401 `unauthorized` from the login route: the email or the password is wrong. One message
    /// for both, so the answer never tells whether an account exists.
    #[error("The email or password is incorrect.")]
    BadCredentials,
    /// 403 `forbidden`: the logged-in person's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 403 `csrf_failed`: a state-changing back-office request without the session's
    /// `X-CSRF-Token`.
    #[error("The X-CSRF-Token header is missing or does not match the session.")]
    CsrfFailed,
    /// 402 `insufficient_credits`: not enough credits, or the firm's daily spend cap is reached;
    /// nothing changed.
    #[error("{0}")]
    InsufficientCredits(String),
    /// 409 `not_startable`: the lifecycle does not allow Start Verification now (the message
    /// says why), or the price changed since the person saw it.
    #[error("{0}")]
    NotStartable(String),
    /// 502 `provider_refused`: the identity provider definitely refused to create the applicant;
    /// nothing was charged and the customer stays `NOT_STARTED`.
    #[error("{0}")]
    ProviderRefused(String),
    /// 503 `provider_unavailable`, with `Retry-After`: the identity provider could not be
    /// reached; nothing was charged, and retrying completes the same attempt.
    #[error("{0}")]
    ProviderUnavailable(String),
    /// 403 `human_required`: verification is started only by a person in the back office.
    #[error("Verification can only be started by a person in the back office.")]
    HumanRequired,
    /// 404 `not_found`: unknown route, or a customer that does not exist in the caller's firm.
    #[error("{0}")]
    NotFound(&'static str),
    /// 405 `method_not_allowed`: the route exists but not with this method.
    #[error("This method is not allowed on this route.")]
    MethodNotAllowed,
    /// 409 `conflict`: the request contradicts the stored state (upsert email/externalId clash).
    #[error("{0}")]
    Conflict(String),
    /// 409 `idempotency_conflict`: the Idempotency-Key was used with a different body.
    #[error("This Idempotency-Key was already used with a different request body.")]
    IdempotencyConflict,
    /// 409 `idempotency_in_progress`: a request with this Idempotency-Key is still running.
    #[error("A request with this Idempotency-Key is still being processed; retry shortly.")]
    IdempotencyInProgress,
    /// 422 `validation_failed`: a field, the body, the query string or a header is invalid.
    #[error("{message}")]
    Validation {
        /// A sentence the integrator can act on.
        message: String,
        /// The offending field (body field, query parameter or header), when known.
        field: Option<String>,
    },
    /// 413 `payload_too_large`: the body exceeds the configured limit.
    #[error("The request body is too large.")]
    PayloadTooLarge,
    /// 429 `rate_limited`, with `Retry-After` and `details: {limit, window_seconds}`.
    #[error("Rate limit exceeded. Slow down and retry shortly.")]
    RateLimited {
        /// The limit that was hit.
        limit: u32,
        /// Its window.
        window_seconds: u64,
        /// When the window frees up, in seconds.
        retry_after_secs: u64,
    },
    /// 503 `unavailable`, with `Retry-After`: the database (or another backing service) is down,
    /// or writers kept colliding; the same request may succeed later.
    #[error("The service is temporarily unavailable; retry shortly.")]
    Unavailable(#[source] Option<Box<dyn StdError + Send + Sync>>),
    /// 500 `internal`: anything else. The cause is logged, never sent.
    #[error("An internal error occurred.")]
    Internal(#[source] Box<dyn StdError + Send + Sync>),
}

impl ApiError {
    /// A 422 about one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// A 422 about the request as a whole.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::Validation {
            message: message.into(),
            field: None,
        }
    }

    /// The customer named in the path does not exist for this caller (unknown or another firm's).
    pub fn customer_not_found() -> Self {
        Self::NotFound("No customer with this id or external_id.")
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized | Self::SessionRequired | Self::BadCredentials => {
                StatusCode::UNAUTHORIZED
            }
            Self::InsufficientScope { .. }
            | Self::HumanRequired
            | Self::Forbidden(_)
            | Self::CsrfFailed => StatusCode::FORBIDDEN,
            Self::InsufficientCredits(_) => StatusCode::PAYMENT_REQUIRED,
            Self::NotStartable(_) => StatusCode::CONFLICT,
            Self::ProviderRefused(_) => StatusCode::BAD_GATEWAY,
            Self::ProviderUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) | Self::IdempotencyConflict | Self::IdempotencyInProgress => {
                StatusCode::CONFLICT
            }
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error.code` string of the contract.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized | Self::SessionRequired | Self::BadCredentials => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::CsrfFailed => "csrf_failed",
            Self::InsufficientCredits(_) => "insufficient_credits",
            Self::NotStartable(_) => "not_startable",
            Self::ProviderRefused(_) => "provider_refused",
            Self::ProviderUnavailable(_) => "provider_unavailable",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::HumanRequired => "human_required",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::IdempotencyInProgress => "idempotency_in_progress",
            Self::Validation { .. } => "validation_failed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn details(&self) -> Option<Value> {
        match self {
            Self::Validation {
                field: Some(field), ..
            } => Some(json!({ "field": field })),
            Self::InsufficientScope { required } => Some(json!({ "required_scope": required })),
            Self::RateLimited {
                limit,
                window_seconds,
                ..
            } => Some(json!({ "limit": limit, "window_seconds": window_seconds })),
            _ => None,
        }
    }
}

/// The JSON envelope of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// The inside of [`ErrorEnvelope`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code (`validation_failed`, `not_found`, …).
    pub code: String,
    /// A sentence for the integrator.
    pub message: String,
    /// More about the error (`field` for validation errors, `limit` and `window_seconds` for
    /// rate limits); absent when there is nothing more to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// Builds an envelope response by hand (for answers produced outside [`ApiError`]).
pub(crate) fn envelope(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorEnvelope {
        error: ErrorBody {
            code: code.to_owned(),
            message: message.to_owned(),
            details: None,
        },
    };
    (status, axum::Json(body)).into_response()
}

fn cause_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // Logged once, here; the client gets only the fixed sentence and the request id.
            tracing::error!(code = self.code(), cause = %cause_chain(&self), "request failed");
        }
        let body = ErrorEnvelope {
            error: ErrorBody {
                code: self.code().to_owned(),
                message: self.to_string(),
                details: self.details(),
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after = match &self {
            Self::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Self::Unavailable(_) | Self::ProviderUnavailable(_) => {
                Some(UNAVAILABLE_RETRY_AFTER_SECS)
            }
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

impl From<kyc_domain::ports::WindowFull> for ApiError {
    fn from(full: kyc_domain::ports::WindowFull) -> Self {
        Self::RateLimited {
            limit: full.limit,
            window_seconds: full.window_seconds,
            retry_after_secs: full.retry_after_secs,
        }
    }
}

impl From<InfrastructureError> for ApiError {
    fn from(error: InfrastructureError) -> Self {
        match error {
            InfrastructureError::Unavailable(cause) => Self::Unavailable(Some(cause)),
            internal @ InfrastructureError::Internal(_) => Self::Internal(Box::new(internal)),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        Self::invalid(error.field, error.message)
    }
}

impl From<LifecycleError> for ApiError {
    fn from(error: LifecycleError) -> Self {
        match error {
            LifecycleError::Invalid(invalid) => invalid.into(),
            LifecycleError::IdentityFrozen { field } => Self::invalid(
                field,
                format!(
                    "{field} cannot be changed once the customer is VERIFIED: the verified identity must not silently drift"
                ),
            ),
            LifecycleError::ExternalIdImmutable => Self::invalid(
                "externalId",
                "externalId is already set and cannot be changed",
            ),
            forbidden @ LifecycleError::Forbidden { .. } => Self::Forbidden(forbidden.to_string()),
            // Any other refusal: the state does not allow the move now.
            other => Self::Conflict(other.to_string()),
        }
    }
}

impl From<UpsertError> for ApiError {
    fn from(error: UpsertError) -> Self {
        match error {
            UpsertError::EmailTaken => Self::Conflict(
                "A customer with this email already exists with a different externalId.".into(),
            ),
            UpsertError::Refused(refused) => refused.into(),
            // Only a person's role can be refused (the back office); never a success.
            forbidden @ UpsertError::Forbidden => Self::Forbidden(forbidden.to_string()),
            // Writers kept colliding: transient, so a 503 whose idempotency claim is released.
            UpsertError::Contended => Self::Unavailable(None),
            UpsertError::Infrastructure(infra) => infra.into(),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::NotFound => Self::customer_not_found(),
            CommandError::Refused(refused) => refused.into(),
            CommandError::Contended => Self::Unavailable(None),
            CommandError::Infrastructure(infra) => infra.into(),
        }
    }
}

impl From<StartError> for ApiError {
    fn from(error: StartError) -> Self {
        match error {
            StartError::NotFound => Self::customer_not_found(),
            forbidden @ StartError::Forbidden => Self::Forbidden(forbidden.to_string()),
            StartError::NotStartable(reason) => Self::NotStartable(reason.to_string()),
            changed @ StartError::PriceChanged { .. } => Self::NotStartable(changed.to_string()),
            short @ (StartError::InsufficientCredits { .. }
            | StartError::DailyCapReached { .. }) => Self::InsufficientCredits(short.to_string()),
            refused @ StartError::ProviderRefused { .. } => {
                Self::ProviderRefused(refused.to_string())
            }
            unavailable @ StartError::ProviderUnavailable { .. } => {
                Self::ProviderUnavailable(unavailable.to_string())
            }
            StartError::Contended => Self::Unavailable(None),
            StartError::Infrastructure(infra) => infra.into(),
            ledger @ StartError::Ledger(_) => Self::Internal(Box::new(ledger)),
        }
    }
}

/// Outermost middleware: any non-2xx answer that is not already our JSON envelope (axum's 405,
/// tower's 413, a 404 from a nested router…) is rewritten into it, keeping its status and headers
/// such as `Allow`.
pub(crate) async fn envelope_guard(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status.is_success() || status.is_redirection() || status.is_informational() {
        return response;
    }
    // JSON is already the envelope; HTML is a page meant for a person (the verification link).
    let is_own = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if is_own {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "No such route."),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "This method is not allowed on this route.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "The request body is too large."),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::BAD_REQUEST
        | StatusCode::UNPROCESSABLE_ENTITY => {
            ("validation_failed", "The request could not be understood.")
        }
        StatusCode::UNAUTHORIZED => ("unauthorized", "A valid API key is required."),
        StatusCode::TOO_MANY_REQUESTS => (
            "rate_limited",
            "Rate limit exceeded. Slow down and retry shortly.",
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "unavailable",
            "The service is temporarily unavailable; retry shortly.",
        ),
        s if s.is_server_error() => ("internal", "An internal error occurred."),
        _ => ("error", "The request failed."),
    };
    let (mut parts, _) = response.into_parts();
    let rewritten = envelope(status, code, message);
    parts.headers.remove(header::CONTENT_LENGTH);
    let (new_parts, body) = rewritten.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        new_parts
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("application/json")),
    );
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_the_status_its_code_promises() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::Unauthorized, 401, "unauthorized"),
            (
                ApiError::InsufficientScope {
                    required: "aml:read",
                },
                403,
                "insufficient_scope",
            ),
            (ApiError::HumanRequired, 403, "human_required"),
            (ApiError::customer_not_found(), 404, "not_found"),
            (ApiError::Conflict("x".into()), 409, "conflict"),
            (ApiError::IdempotencyConflict, 409, "idempotency_conflict"),
            (
                ApiError::IdempotencyInProgress,
                409,
                "idempotency_in_progress",
            ),
            (ApiError::invalid("email", "bad"), 422, "validation_failed"),
            (ApiError::PayloadTooLarge, 413, "payload_too_large"),
            (ApiError::Unavailable(None), 503, "unavailable"),
            (ApiError::SessionRequired, 401, "unauthorized"),
            (ApiError::BadCredentials, 401, "unauthorized"),
            (ApiError::Forbidden("x".into()), 403, "forbidden"),
            (ApiError::CsrfFailed, 403, "csrf_failed"),
            (
                ApiError::InsufficientCredits("x".into()),
                402,
                "insufficient_credits",
            ),
            (ApiError::NotStartable("x".into()), 409, "not_startable"),
            (
                ApiError::ProviderRefused("x".into()),
                502,
                "provider_refused",
            ),
            (
                ApiError::ProviderUnavailable("x".into()),
                503,
                "provider_unavailable",
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status().as_u16(), status, "{code}");
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn an_internal_error_never_shows_its_cause() {
        let error: ApiError =
            InfrastructureError::internal("relation \"customers\" does not exist").into();
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error.to_string(), "An internal error occurred.");
        assert!(cause_chain(&error).contains("relation"));
    }

    #[test]
    fn identity_frozen_names_the_field() {
        let error: ApiError = LifecycleError::IdentityFrozen { field: "email" }.into();
        assert_eq!(error.code(), "validation_failed");
        assert_eq!(error.details(), Some(json!({"field": "email"})));
    }
}
