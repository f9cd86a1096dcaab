//! The CRM's side of push delivery, through the router on SQLite: managing webhook endpoints
//! (scope `webhooks:manage`, secrets shown once, typed refusals, never another firm's) and the
//! ordered event feed (`GET /api/v1/events`).

mod support;

use http::{Method, StatusCode};
use kyc_domain::ids::FirmId;
use serde_json::{Value, json};
use support::{App, Reply, app};

const MANAGE: &[&str] = &["webhooks:manage"];

async fn manager(app: &App) -> String {
    app.add_key(app.firm, MANAGE).await
}

async fn call(app: &App, key: &str, method: Method, uri: &str, body: Option<Value>) -> Reply {
    app.call(method, uri, Some(key), body.as_ref(), &[]).await
}

#[tokio::test]
async fn endpoints_are_created_listed_changed_rotated_and_deleted() {
    let app = app().await;
    let key = manager(&app).await;
    let created = call(
        &app,
        &key,
        Method::POST,
        "/api/v1/webhook-endpoints",
        Some(json!({"url": "https://crm.example.com/hooks", "description": "CRM", "events": ["customer.kyc_status_changed"]})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_owned();
    let secret = created.json["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(created.json["object"], "webhook_endpoint");
    assert_eq!(created.json["enabled"], true);
    assert_eq!(
        created.json["events"],
        json!(["customer.kyc_status_changed"])
    );

    let listed = call(&app, &key, Method::GET, "/api/v1/webhook-endpoints", None).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json["data"].as_array().unwrap().len(), 1);
    assert!(
        listed.json["data"][0].get("secret").is_none(),
        "the secret is shown once"
    );
    assert!(!listed.text.contains(&secret));

    let uri = format!("/api/v1/webhook-endpoints/{id}");
    let paused = call(
        &app,
        &key,
        Method::PATCH,
        &uri,
        Some(json!({"enabled": false, "events": []})),
    )
    .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.text);
    assert_eq!(paused.json["enabled"], false);
    assert!(paused.json["disabled_at"].is_string());
    assert_eq!(paused.json["events"], json!([]));
    assert_eq!(paused.json["description"], "CRM");

    let rotated = call(
        &app,
        &key,
        Method::POST,
        &format!("{uri}/rotate-secret"),
        None,
    )
    .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    let fresh = rotated.json["secret"].as_str().unwrap();
    assert!(fresh.starts_with("whsec_") && fresh != secret);
    assert!(rotated.json["previous_secret_expires_at"].is_string());

    let log = call(&app, &key, Method::GET, &format!("{uri}/deliveries"), None).await;
    assert_eq!(log.status, StatusCode::OK);
    assert_eq!(log.json["data"], json!([]));

    let deleted = call(&app, &key, Method::DELETE, &uri, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    call(&app, &key, Method::GET, &uri, None)
        .await
        .expect_error(404, "not_found");
    call(&app, &key, Method::DELETE, &uri, None)
        .await
        .expect_error(404, "not_found");
    let listed = call(&app, &key, Method::GET, "/api/v1/webhook-endpoints", None).await;
    assert_eq!(listed.json["data"], json!([]));
}

#[tokio::test]
async fn bad_fields_are_refused_by_name_and_store_nothing() {
    let app = app().await;
    let key = manager(&app).await;
    for (body, field) in [
        (json!({}), "url"),
        (json!({"url": "ftp://crm.example.com"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({"url": "https://user:pw@crm.example.com"}), "url"),
        (json!({"url": 7}), "url"),
        (
            json!({"url": "https://crm.example.com", "events": ["customer.deleted"]}),
            "events",
        ),
        (
            json!({"url": "https://crm.example.com", "events": "customer.created"}),
            "events",
        ),
        (
            json!({"url": "https://crm.example.com", "description": "x".repeat(501)}),
            "description",
        ),
        (
            json!({"url": "https://crm.example.com", "secret": "whsec_mine"}),
            "secret",
        ),
    ] {
        let reply = call(
            &app,
            &key,
            Method::POST,
            "/api/v1/webhook-endpoints",
            Some(body.clone()),
        )
        .await;
        reply.expect_error(422, "validation_failed");
        assert_eq!(
            reply.json["error"]["details"]["field"], field,
            "{body}: {}",
            reply.text
        );
    }
    let listed = call(&app, &key, Method::GET, "/api/v1/webhook-endpoints", None).await;
    assert_eq!(listed.json["data"], json!([]));
}

#[tokio::test]
async fn endpoints_need_their_scope_and_never_cross_firms() {
    let app = app().await;
    let key = manager(&app).await;
    let created = call(
        &app,
        &key,
        Method::POST,
        "/api/v1/webhook-endpoints",
        Some(json!({"url": "https://crm.example.com/hooks"})),
    )
    .await;
    let id = created.json["id"].as_str().unwrap().to_owned();
    // The CRM key of the test app has every customer scope but not this one.
    app.get("/api/v1/webhook-endpoints")
        .await
        .expect_error(403, "insufficient_scope");

    let other = FirmId::from_uuid(uuid::Uuid::new_v4());
    app.add_firm(other).await;
    let theirs = app.add_key(other, MANAGE).await;
    let uri = format!("/api/v1/webhook-endpoints/{id}");
    call(&app, &theirs, Method::GET, &uri, None)
        .await
        .expect_error(404, "not_found");
    call(
        &app,
        &theirs,
        Method::PATCH,
        &uri,
        Some(json!({"enabled": false})),
    )
    .await
    .expect_error(404, "not_found");
    call(
        &app,
        &theirs,
        Method::POST,
        &format!("{uri}/rotate-secret"),
        None,
    )
    .await
    .expect_error(404, "not_found");
    call(
        &app,
        &theirs,
        Method::GET,
        &format!("{uri}/deliveries"),
        None,
    )
    .await
    .expect_error(404, "not_found");
    call(&app, &theirs, Method::DELETE, &uri, None)
        .await
        .expect_error(404, "not_found");
    let listed = call(
        &app,
        &theirs,
        Method::GET,
        "/api/v1/webhook-endpoints",
        None,
    )
    .await;
    assert_eq!(listed.json["data"], json!([]));
    // Still there, still enabled, for its own firm.
    let mine = call(&app, &key, Method::GET, &uri, None).await;
    assert_eq!(mine.json["enabled"], true);
}

#[tokio::test]
async fn the_event_feed_pages_through_every_change_in_order_and_resumes_after_its_cursor() {
    let app = app().await;
    let mut expected = Vec::new();
    for n in 0..5 {
        let id = app
            .create(&format!("crm-{n}"), &format!("c{n}@example.com"))
            .await;
        expected.push((id.clone(), "customer.created"));
        let patched = app
            .patch(
                &format!("/api/v1/customers/{id}"),
                &json!({"phone": format!("+6140000000{n}")}),
            )
            .await;
        assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
        expected.push((id, "customer.updated"));
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let uri = match &after {
            Some(cursor) => format!("/api/v1/events?limit=3&after={cursor}"),
            None => "/api/v1/events?limit=3".to_owned(),
        };
        let page = app.get(&uri).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        for event in page.json["data"].as_array().unwrap() {
            assert_eq!(event["object"], "event");
            assert!(event["id"].as_str().unwrap().len() == 36);
            assert!(event["timestamp"].as_str().unwrap().ends_with('Z'));
            assert!(event["data"].get("date_of_birth").is_none());
            seen.push((
                event["data"]["id"].as_str().unwrap().to_owned(),
                event["type"].as_str().unwrap().to_owned(),
            ));
        }
        after = page.json["next_cursor"].as_str().map(str::to_owned);
        if page.json["has_more"] == false {
            break;
        }
    }
    let expected: Vec<(String, String)> = expected
        .into_iter()
        .map(|(id, kind)| (id, kind.to_owned()))
        .collect();
    assert_eq!(seen, expected);
    // Nothing new: the same cursor, an empty page.
    let cursor = after.expect("a cursor once events exist");
    let idle = app.get(&format!("/api/v1/events?after={cursor}")).await;
    assert_eq!(idle.json["data"], json!([]));
    assert_eq!(idle.json["next_cursor"], cursor.as_str());
    // One more change is the only event after it.
    app.create("crm-new", "new@example.com").await;
    let next = app.get(&format!("/api/v1/events?after={cursor}")).await;
    assert_eq!(next.json["data"].as_array().unwrap().len(), 1);
    assert_eq!(next.json["data"][0]["type"], "customer.created");
    assert_eq!(next.json["data"][0]["data"]["external_id"], "crm-new");

    app.get("/api/v1/events?after=nonsense")
        .await
        .expect_error(422, "validation_failed");
    app.get("/api/v1/events?limit=0")
        .await
        .expect_error(422, "validation_failed");
    app.get("/api/v1/events?since=1")
        .await
        .expect_error(422, "validation_failed");
}

#[tokio::test]
async fn another_firms_events_are_never_in_the_feed() {
    let app = app().await;
    app.create("crm-1", "a@example.com").await;
    let other = FirmId::from_uuid(uuid::Uuid::new_v4());
    app.add_firm(other).await;
    let theirs = app.add_key(other, &["customers:read"]).await;
    let feed = call(&app, &theirs, Method::GET, "/api/v1/events", None).await;
    assert_eq!(feed.status, StatusCode::OK);
    assert_eq!(feed.json["data"], json!([]));
    assert_eq!(feed.json["next_cursor"], Value::Null);
}
