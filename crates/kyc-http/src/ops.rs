//! Operations: `/healthz` (the process is up), `/readyz` (the database is reachable and migrated,
//! via [`Readiness`](crate::Readiness)), `/metrics` (Prometheus text), request ids on every
//! answer, and the [`Metrics`] registry other parts of the process record into.
//!
//! The registry is a `PrometheusRecorder` owned here, never installed as the global recorder, so
//! several apps (tests run many) can live in one process without sharing figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{HeaderName, HeaderValue, StatusCode, header};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use serde_json::json;

use crate::AppState;
use crate::error::{ApiError, envelope};

/// The header carrying the request id, echoed when the client sends one.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Latency buckets for request and provider-call histograms, in seconds.
const LATENCY_BUCKETS_SECS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Histogram samples recorded between two folds of the raw samples into bucket counts.
///
/// The recorder keeps every histogram sample as a raw `f64` until it is folded into its buckets,
/// which happens on a `/metrics` scrape or an upkeep. The exporter's own `install()` runs upkeep
/// on a timer, but this registry is built with `build_recorder()` (never the global recorder),
/// so nothing else folds them: without this, a process nobody scrapes grows by 8 bytes per
/// request forever (about 700 MB a day at 1,000 requests/s). Folding every 1,024 samples keeps
/// the memory bounded at a cost of one short write lock per 1,024 requests.
const SAMPLES_PER_UPKEEP: u64 = 1_024;

/// The process's metrics registry, rendered at `/metrics`. Cheap to clone; clones share figures.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    samples: Arc<AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS_SECS)
            .map(PrometheusBuilder::build_recorder)
            // The buckets are a non-empty constant, so this branch is never taken; a registry
            // without buckets (summaries instead of histograms) would still be correct.
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        Self {
            recorder: Arc::new(recorder),
            samples: Arc::new(AtomicU64::new(0)),
        }
    }

    fn with<T>(&self, record: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(self.recorder.as_ref(), record)
    }

    /// Counts one histogram sample and folds the raw samples into buckets every
    /// [`SAMPLES_PER_UPKEEP`] of them.
    fn sampled(&self) {
        if self.samples.fetch_add(1, Ordering::Relaxed) % SAMPLES_PER_UPKEEP
            == SAMPLES_PER_UPKEEP - 1
        {
            self.recorder.handle().run_upkeep();
        }
    }

    /// One HTTP request: `http_requests_total` and `http_request_duration_seconds`, labelled
    /// by method, matched route template (`/api/v1/customers/{id}`) and status.
    pub fn record_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        self.with(|| {
            metrics::counter!("http_requests_total", &labels).increment(1);
            metrics::histogram!("http_request_duration_seconds", &labels)
                .record(elapsed.as_secs_f64());
        });
        self.sampled();
    }

    /// One outbound webhook delivery attempt: `webhook_deliveries_total{outcome}` (`delivered`,
    /// `failed`, `disabled`…).
    pub fn record_webhook_delivery(&self, outcome: &str) {
        let labels = [("outcome", outcome.to_owned())];
        self.with(|| metrics::counter!("webhook_deliveries_total", &labels).increment(1));
    }

    /// The number of outbox messages waiting: `outbox_depth`.
    pub fn set_outbox_depth(&self, depth: u64) {
        // A gauge is an f64; outbox depths are far below 2^53.
        #[allow(clippy::cast_precision_loss)]
        let value = depth as f64;
        self.with(|| metrics::gauge!("outbox_depth").set(value));
    }

    /// One call to the identity provider: `provider_calls_total{operation,outcome}` and
    /// `provider_call_duration_seconds{operation}`.
    pub fn record_provider_call(&self, operation: &str, outcome: &str, elapsed: Duration) {
        let counted = [
            ("operation", operation.to_owned()),
            ("outcome", outcome.to_owned()),
        ];
        let timed = [("operation", operation.to_owned())];
        self.with(|| {
            metrics::counter!("provider_calls_total", &counted).increment(1);
            metrics::histogram!("provider_call_duration_seconds", &timed)
                .record(elapsed.as_secs_f64());
        });
        self.sampled();
    }

    /// Whether the identity provider's circuit was open (or half-open) after the last call:
    /// `provider_circuit_open`, 1 or 0.
    pub fn set_provider_circuit_open(&self, open: bool) {
        let value = if open { 1.0 } else { 0.0 };
        self.with(|| metrics::gauge!("provider_circuit_open").set(value));
    }

    /// Credits charged for verifications: `credits_charged_total`.
    pub fn record_credits_charged(&self, credits: u64) {
        self.with(|| metrics::counter!("credits_charged_total").increment(credits));
    }

    /// The Prometheus text exposition of every figure recorded so far.
    pub fn render(&self) -> String {
        self.recorder.handle().render()
    }
}

/// Routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
}

/// `GET /healthz`: the process is up.
///
/// # Responses
/// 200 `{"status":"ok"}`.
pub(crate) async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: the database is reachable and migrations are current.
///
/// # Responses
/// 200 `{"status":"ready"}`; 503 `unavailable` otherwise (the reason goes to the log only).
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    match state.ports.readiness.check().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            let mut response = envelope(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The service is not ready: its database is unreachable or not migrated.",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
    }
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics_page(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Any route that does not exist.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("No such route.")
}

/// Records every request under its route template (or `unmatched`), so ids in paths never
/// become label values.
pub(crate) async fn record_request(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics.record_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The request id of the current request, in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn acceptable_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let valid = !text.is_empty() && text.len() <= 200 && text.bytes().all(|b| b.is_ascii_graphic());
    valid.then(|| text.to_owned())
}

/// Gives every request an id (the client's `X-Request-Id` when it is sensible, else a new UUID),
/// runs the request inside a tracing span carrying it, and puts it on the answer.
pub(crate) async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(acceptable_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        firm_id = tracing::field::Empty
    );
    let mut response = tracing::Instrument::instrument(next.run(request), span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_recorded_figures_in_prometheus_text() {
        let metrics = Metrics::new();
        metrics.record_request(
            "GET",
            "/api/v1/customers/{id}",
            200,
            Duration::from_millis(3),
        );
        metrics.record_credits_charged(2);
        metrics.set_outbox_depth(7);
        metrics.record_webhook_delivery("delivered");
        metrics.record_provider_call("create_applicant", "ok", Duration::from_millis(40));
        let text = metrics.render();
        assert!(
            text.contains(
                r#"http_requests_total{method="GET",route="/api/v1/customers/{id}",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("credits_charged_total 2"), "{text}");
        assert!(text.contains("outbox_depth 7"), "{text}");
        assert!(
            text.contains("http_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.contains(r#"webhook_deliveries_total{outcome="delivered"} 1"#));
        assert!(text.contains("provider_call_duration_seconds_bucket"));
    }

    #[test]
    fn folding_samples_into_buckets_loses_none_of_them() {
        let metrics = Metrics::new();
        let requests = SAMPLES_PER_UPKEEP * 2 + 7;
        for _ in 0..requests {
            metrics.record_request("GET", "/healthz", 200, Duration::from_millis(2));
        }
        let text = metrics.render();
        let count = format!(
            r#"http_request_duration_seconds_count{{method="GET",route="/healthz",status="200"}} {requests}"#
        );
        assert!(text.contains(&count), "{text}");
        let fast = format!(
            r#"http_request_duration_seconds_bucket{{method="GET",route="/healthz",status="200",le="0.005"}} {requests}"#
        );
        assert!(text.contains(&fast), "{text}");
    }

    #[test]
    fn two_registries_do_not_share_figures() {
        let one = Metrics::new();
        let other = Metrics::new();
        one.record_credits_charged(5);
        assert!(!other.render().contains("credits_charged_total"));
    }

    #[test]
    fn a_hostile_request_id_is_replaced() {
        assert!(acceptable_request_id(&HeaderValue::from_static("abc-123")).is_some());
        assert!(acceptable_request_id(&HeaderValue::from_static("a b")).is_none());
        assert!(acceptable_request_id(&HeaderValue::from_static("")).is_none());
    }
}
