//! The protocol around the handlers: idempotency, the error envelope on framework rejections,
//! request ids, operations endpoints, and the OpenAPI document against the real router.

mod support;

use std::sync::Arc;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use kyc_domain::ports::{
    ClaimOutcome, Clock, IdempotencyScope, IdempotencyStore, InfrastructureError,
    MockCustomerStore, SaveError,
};
use kyc_http::HttpConfig;
use serde_json::{Value, json};
use support::{app, app_built};

const CUSTOMERS: &str = "/api/v1/customers";

fn jane() -> Value {
    json!({"externalId": "crm-7741", "fullName": "Jane Doe", "email": "jane@example.com"})
}

// ---------------------------------------------------------------- idempotency

#[tokio::test]
async fn a_repeat_with_the_same_key_and_body_replays_the_first_answer_verbatim() {
    let app = app().await;
    let key = [("idempotency-key", "hubspot-contact-1-2026")];
    let first = app
        .call(Method::POST, CUSTOMERS, Some(&app.key), Some(&jane()), &key)
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.header("idempotent-replayed"), None);
    // Meanwhile the record changes; the replay still shows the first answer.
    app.patch(
        &format!("{CUSTOMERS}/crm-7741"),
        &json!({"phone": "+61400000000"}),
    )
    .await;
    let again = app
        .call(Method::POST, CUSTOMERS, Some(&app.key), Some(&jane()), &key)
        .await;
    assert_eq!(
        again.status,
        StatusCode::CREATED,
        "the original status is replayed"
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.text, first.text);
    assert!(again.header("x-request-id").is_some());
    let list = app.get(CUSTOMERS).await;
    assert_eq!(list.json["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_an_idempotency_conflict() {
    let app = app().await;
    let key = [("idempotency-key", "k-1")];
    app.call(Method::POST, CUSTOMERS, Some(&app.key), Some(&jane()), &key)
        .await;
    let mut other = jane();
    other["fullName"] = json!("Jane Smith");
    let reply = app
        .call(Method::POST, CUSTOMERS, Some(&app.key), Some(&other), &key)
        .await;
    reply.expect_error(409, "idempotency_conflict");
    assert_eq!(
        app.get(&format!("{CUSTOMERS}/crm-7741")).await.json["full_name"],
        "Jane Doe"
    );
}

#[tokio::test]
async fn keys_are_scoped_by_method_path_and_firm() {
    let app = app().await;
    let key = [("idempotency-key", "shared-key")];
    let created = app
        .call(Method::POST, CUSTOMERS, Some(&app.key), Some(&jane()), &key)
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let patched = app
        .call(
            Method::PATCH,
            &format!("{CUSTOMERS}/crm-7741"),
            Some(&app.key),
            Some(&json!({"phone": "+61400000000"})),
            &key,
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(patched.header("idempotent-replayed"), None);
    let other = kyc_domain::ids::FirmId::from_uuid(uuid::Uuid::new_v4());
    app.add_firm(other).await;
    let stranger = app.add_key(other, support::ALL_SCOPES).await;
    let theirs = app
        .call(
            Method::POST,
            CUSTOMERS,
            Some(&stranger),
            Some(&jane()),
            &key,
        )
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    assert_eq!(theirs.header("idempotent-replayed"), None);
    assert_ne!(theirs.json["id"], created.json["id"]);
}

#[tokio::test]
async fn a_request_whose_key_is_still_in_flight_is_told_so() {
    let app = app().await;
    let scope = IdempotencyScope {
        firm_id: app.firm,
        method: "POST".into(),
        path: CUSTOMERS.into(),
        key: "busy".into(),
    };
    let now = app.clock.now();
    let body = jane().to_string();
    let fingerprint = hex_sha256(body.as_bytes());
    let claimed = app
        .store
        .claim(&scope, &fingerprint, now, now + time::Duration::hours(24))
        .await
        .unwrap();
    assert_eq!(claimed, ClaimOutcome::Claimed);
    let reply = app
        .call(
            Method::POST,
            CUSTOMERS,
            Some(&app.key),
            Some(&jane()),
            &[("idempotency-key", "busy")],
        )
        .await;
    reply.expect_error(409, "idempotency_in_progress");
    assert_eq!(app.get(CUSTOMERS).await.json["data"], json!([]));
}

/// The fingerprint the server keeps: the SHA-256 of the body bytes, lowercase hex (the same
/// function that hashes API keys).
fn hex_sha256(bytes: &[u8]) -> String {
    kyc_http::auth::key_sha256(std::str::from_utf8(bytes).unwrap())
}

#[tokio::test]
async fn a_key_longer_than_255_characters_is_422() {
    let app = app().await;
    let long = "k".repeat(256);
    let reply = app
        .call(
            Method::POST,
            CUSTOMERS,
            Some(&app.key),
            Some(&jane()),
            &[("idempotency-key", &long)],
        )
        .await;
    reply.expect_error(422, "validation_failed");
    assert_eq!(reply.json["error"]["details"]["field"], "Idempotency-Key");
}

#[tokio::test]
async fn a_failure_releases_the_key_and_answers_503_with_retry_after() {
    let mut customers = MockCustomerStore::new();
    customers
        .expect_insert_unless_matched()
        .returning(|_, _, _| {
            Err(SaveError::Infrastructure(InfrastructureError::unavailable(
                "connection refused",
            )))
        });
    let app = app_built(
        HttpConfig {
            rate_limit_per_minute: 0,
            rate_limit_per_day: 0,
            ..HttpConfig::default()
        },
        Some(Arc::new(customers)),
    )
    .await;
    let key = [("idempotency-key", "retry-me")];
    let failed = app
        .call(Method::POST, CUSTOMERS, Some(&app.key), Some(&jane()), &key)
        .await;
    failed.expect_error(503, "unavailable");
    assert!(failed.header("retry-after").is_some());
    assert!(
        !failed.text.contains("connection refused"),
        "{}",
        failed.text
    );
    // The claim was released, not stored: the same key may be claimed again.
    let scope = IdempotencyScope {
        firm_id: app.firm,
        method: "POST".into(),
        path: CUSTOMERS.into(),
        key: "retry-me".into(),
    };
    let now = app.clock.now();
    let outcome = app
        .store
        .claim(
            &scope,
            &hex_sha256(jane().to_string().as_bytes()),
            now,
            now + time::Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(outcome, ClaimOutcome::Claimed);
}

// ---------------------------------------------------------------- envelope on rejections

#[tokio::test]
async fn framework_rejections_answer_with_the_error_envelope() {
    let app = app_built(
        HttpConfig {
            rate_limit_per_minute: 0,
            rate_limit_per_day: 0,
            body_limit_bytes: 1024,
            ..HttpConfig::default()
        },
        None,
    )
    .await;
    let auth = format!("Bearer {}", app.key);
    let request = |method: Method, uri: &str, content_type: Option<&str>, body: &str| {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", &auth);
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        builder.body(Body::from(body.to_owned())).unwrap()
    };
    let malformed = app
        .raw(request(
            Method::POST,
            CUSTOMERS,
            Some("application/json"),
            "{\"fullName\": ",
        ))
        .await;
    malformed.expect_error(422, "validation_failed");
    let not_object = app
        .raw(request(
            Method::POST,
            CUSTOMERS,
            Some("application/json"),
            "[1,2]",
        ))
        .await;
    not_object.expect_error(422, "validation_failed");
    let wrong_type = app
        .raw(request(
            Method::POST,
            CUSTOMERS,
            Some("text/plain"),
            &jane().to_string(),
        ))
        .await;
    wrong_type.expect_error(422, "validation_failed");
    assert_eq!(wrong_type.json["error"]["details"]["field"], "Content-Type");
    let missing_type = app
        .raw(request(
            Method::PATCH,
            &format!("{CUSTOMERS}/x"),
            None,
            "{}",
        ))
        .await;
    missing_type.expect_error(422, "validation_failed");
    let big = format!(
        "{{\"fullName\":\"{}\",\"email\":\"a@b.co\"}}",
        "x".repeat(2000)
    );
    app.raw(request(
        Method::POST,
        CUSTOMERS,
        Some("application/json"),
        &big,
    ))
    .await
    .expect_error(413, "payload_too_large");
    // Oversized with an Idempotency-Key takes the buffering path: still 413.
    let mut keyed = request(Method::POST, CUSTOMERS, Some("application/json"), &big);
    keyed
        .headers_mut()
        .insert("idempotency-key", "big".parse().unwrap());
    app.raw(keyed).await.expect_error(413, "payload_too_large");
    let unknown = app
        .raw(request(Method::GET, "/api/v1/nothing-here", None, ""))
        .await;
    unknown.expect_error(404, "not_found");
    app.raw(request(Method::GET, "/nope", None, ""))
        .await
        .expect_error(404, "not_found");
    let wrong_method = app.raw(request(Method::DELETE, CUSTOMERS, None, "")).await;
    wrong_method.expect_error(405, "method_not_allowed");
    let bad_query = app
        .raw(request(
            Method::GET,
            &format!("{CUSTOMERS}?limit=%ZZ"),
            None,
            "",
        ))
        .await;
    bad_query.expect_error(422, "validation_failed");
    for reply in [&malformed, &wrong_type, &unknown, &wrong_method, &bad_query] {
        assert!(reply.header("x-request-id").is_some());
        assert!(
            reply
                .header("content-type")
                .unwrap()
                .starts_with("application/json")
        );
    }
}

// ---------------------------------------------------------------- ops

#[tokio::test]
async fn every_answer_carries_a_request_id_echoing_the_clients() {
    let app = app().await;
    let echoed = app
        .call(
            Method::GET,
            CUSTOMERS,
            Some(&app.key),
            None,
            &[("x-request-id", "crm-req-42")],
        )
        .await;
    assert_eq!(echoed.header("x-request-id"), Some("crm-req-42"));
    let fresh = app.call(Method::GET, CUSTOMERS, None, None, &[]).await;
    let id = fresh.header("x-request-id").unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let other = app.call(Method::GET, "/healthz", None, None, &[]).await;
    assert_ne!(other.header("x-request-id"), Some(id));
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_without_a_key() {
    let app = app().await;
    let health = app.call(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(health.json, json!({"status": "ok"}));
    assert_eq!(
        app.call(Method::GET, "/readyz", None, None, &[])
            .await
            .status,
        StatusCode::OK
    );
    app.ready
        .0
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let not_ready = app.call(Method::GET, "/readyz", None, None, &[]).await;
    not_ready.expect_error(503, "unavailable");
    assert!(!not_ready.text.contains("database unreachable"));
    let id = app.create("crm-1", "jane@example.com").await;
    app.get(&format!("{CUSTOMERS}/{id}")).await;
    app.get(&format!("{CUSTOMERS}/nobody")).await;
    let metrics = app.call(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = &metrics.text;
    assert!(
        text.contains(
            r#"http_requests_total{method="GET",route="/api/v1/customers/{id}",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/api/v1/customers/{id}",status="404"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/api/v1/customers",status="201"} 1"#),
        "{text}"
    );
    assert!(!text.contains(&id), "ids never become labels");
    assert!(text.contains("http_request_duration_seconds_bucket"));
}

// ---------------------------------------------------------------- OpenAPI vs router

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_operations_the_router_serves() {
    let app = app().await;
    app.create("crm-1", "jane@example.com").await;
    let key = app
        .add_key(
            app.firm,
            &[
                "customers:read",
                "customers:write",
                "aml:read",
                "webhooks:manage",
            ],
        )
        .await;
    let mut endpoints = Vec::new();
    for _ in 0..2 {
        let endpoint = app
            .call(
                Method::POST,
                "/api/v1/webhook-endpoints",
                Some(&key),
                Some(&json!({"url": "https://crm.example.com/hooks"})),
                &[],
            )
            .await;
        assert_eq!(endpoint.status, StatusCode::CREATED, "{}", endpoint.text);
        endpoints.push(endpoint.json["id"].as_str().unwrap().to_owned());
    }
    // The one to delete, and the one every other operation uses.
    let (doomed, endpoint_id) = (endpoints[0].clone(), endpoints[1].clone());
    let doc = app
        .call(Method::GET, "/api/v1/openapi.json", None, None, &[])
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.json["openapi"].as_str().unwrap().starts_with("3.1"));
    let documented = app
        .sweep_documented_operations(
            &doc.json,
            |path, method| {
                let id = if path.starts_with("/api/v1/webhook-endpoints") {
                    if method == "delete" {
                        doomed.as_str()
                    } else {
                        endpoint_id.as_str()
                    }
                } else {
                    "crm-1"
                };
                Some(path.replace("{id}", id))
            },
            Some(&key),
            &[],
        )
        .await;
    assert_eq!(
        documented,
        vec![
            "delete /api/v1/webhook-endpoints/{id}",
            "get /api/v1/customers",
            "get /api/v1/customers/{id}",
            "get /api/v1/customers/{id}/aml",
            "get /api/v1/events",
            "get /api/v1/webhook-endpoints",
            "get /api/v1/webhook-endpoints/{id}",
            "get /api/v1/webhook-endpoints/{id}/deliveries",
            "patch /api/v1/customers/{id}",
            "patch /api/v1/webhook-endpoints/{id}",
            "post /api/v1/customers",
            "post /api/v1/customers/{id}/verification",
            "post /api/v1/webhook-endpoints",
            "post /api/v1/webhook-endpoints/{id}/replay",
            "post /api/v1/webhook-endpoints/{id}/rotate-secret",
        ]
    );
    // And no undocumented CRM path exists next to them.
    for path in [
        "/api/v1/customers/crm-1/risk",
        "/api/v1/customers/crm-1/aml/hits",
        "/api/v1/webhooks",
    ] {
        let reply = app.get(path).await;
        reply.expect_error(404, "not_found");
    }
}

#[tokio::test]
async fn refusals_are_kept_and_replayed_too_while_gets_ignore_the_header() {
    let app = app().await;
    let key = [("idempotency-key", "bad-email")];
    let invalid = json!({"fullName": "Jane Doe", "email": "nope"});
    let first = app
        .call(
            Method::POST,
            CUSTOMERS,
            Some(&app.key),
            Some(&invalid),
            &key,
        )
        .await;
    first.expect_error(422, "validation_failed");
    let again = app
        .call(
            Method::POST,
            CUSTOMERS,
            Some(&app.key),
            Some(&invalid),
            &key,
        )
        .await;
    again.expect_error(422, "validation_failed");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    app.create("crm-1", "jane@example.com").await;
    let patch_key = [("idempotency-key", "patch-1")];
    let path = format!("{CUSTOMERS}/crm-1");
    let patched = app
        .call(
            Method::PATCH,
            &path,
            Some(&app.key),
            Some(&json!({"phone": "+61400000011"})),
            &patch_key,
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    app.patch(&path, &json!({"phone": "+61400000012"})).await;
    let replayed = app
        .call(
            Method::PATCH,
            &path,
            Some(&app.key),
            Some(&json!({"phone": "+61400000011"})),
            &patch_key,
        )
        .await;
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.json["phone"], "+61400000011");
    assert_eq!(
        app.get(&path).await.json["phone"],
        "+61400000012",
        "a replay does not run again"
    );
    for _ in 0..2 {
        let read = app
            .call(Method::GET, &path, Some(&app.key), None, &patch_key)
            .await;
        assert_eq!(read.status, StatusCode::OK);
        assert_eq!(read.header("idempotent-replayed"), None);
    }
}
