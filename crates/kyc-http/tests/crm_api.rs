//! The CRM API driven in-process over real SQLite storage: the upsert table, PATCH rules, lists
//! and cursors, lookups, scopes, authentication, tenancy, rate limits and data minimisation.

mod support;

use std::collections::BTreeSet;

use http::{Method, StatusCode};
use kyc_domain::prelude::*;
use kyc_http::HttpConfig;
use serde_json::{Value, json};
use support::{App, app, app_with};

const CUSTOMERS: &str = "/api/v1/customers";

fn body(external_id: Option<&str>, name: &str, email: &str) -> Value {
    let mut value = json!({"fullName": name, "email": email});
    if let Some(external) = external_id {
        value["externalId"] = json!(external);
    }
    value
}

// ---------------------------------------------------------------- upsert

#[tokio::test]
async fn an_upsert_creates_with_201_then_updates_the_same_record_with_200() {
    let app = app().await;
    let mut first = body(Some("crm-7741"), "Jane Doe", "jane@example.com");
    first["phone"] = json!("+61400000000");
    let created = app.post(CUSTOMERS, &first).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let customer = &created.json;
    let id = customer["id"].as_str().unwrap();
    assert_eq!(
        created.header("location"),
        Some(format!("/api/v1/customers/{id}").as_str())
    );
    assert_eq!(customer["external_id"], "crm-7741");
    assert_eq!(customer["type"], "INDIVIDUAL");
    assert_eq!(customer["phone"], "+61400000000");
    assert_eq!(customer["kyc_status"], "NOT_STARTED");
    assert_eq!(customer["added_via"], "INTEGRATION");
    assert_eq!(customer["identity"], Value::Null);
    assert_eq!(customer["aml"]["status"], "NOT_SCREENED");
    assert_eq!(customer["crm"]["label"], "Awaiting back office.");
    assert_eq!(customer["crm"]["onboarding"], "BLOCKED");
    assert_eq!(customer["created_at"], "2026-07-01T00:00:00Z");

    let updated = app
        .post(
            CUSTOMERS,
            &body(Some("crm-7741"), "Jane Smith", "jane@example.com"),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text);
    assert_eq!(updated.json["id"], id);
    assert_eq!(updated.json["full_name"], "Jane Smith");
    assert_eq!(
        updated.json["phone"], "+61400000000",
        "an omitted phone is kept"
    );
}

#[tokio::test]
async fn an_upsert_with_a_new_external_id_adopts_the_record_with_that_email_and_no_external_id() {
    let app = app().await;
    let created = app
        .post(CUSTOMERS, &body(None, "Jane Doe", "jane@example.com"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let adopted = app
        .post(
            CUSTOMERS,
            &body(Some("hubspot:123"), "Jane Doe", "JANE@example.com"),
        )
        .await;
    assert_eq!(adopted.status, StatusCode::OK, "{}", adopted.text);
    assert_eq!(adopted.json["id"], created.json["id"]);
    assert_eq!(adopted.json["external_id"], "hubspot:123");
}

#[tokio::test]
async fn an_upsert_whose_email_belongs_to_another_external_id_is_a_409_conflict() {
    let app = app().await;
    app.create("crm-1", "jane@example.com").await;
    let clash = app
        .post(
            CUSTOMERS,
            &body(Some("crm-2"), "Jane Doe", "jane@example.com"),
        )
        .await;
    clash.expect_error(409, "conflict");
    let list = app.get(CUSTOMERS).await;
    assert_eq!(list.json["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_upsert_without_external_id_updates_the_record_with_that_email() {
    let app = app().await;
    let id = app.create("crm-1", "jane@example.com").await;
    let mut update = body(None, "Jane Q. Doe", "jane@example.com");
    update["phone"] = json!("+61400000001");
    let reply = app.post(CUSTOMERS, &update).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["id"], id.as_str());
    assert_eq!(reply.json["external_id"], "crm-1");
    assert_eq!(reply.json["phone"], "+61400000001");
}

#[tokio::test]
async fn invalid_upsert_bodies_are_422_naming_the_field() {
    let app = app().await;
    let cases = [
        (
            json!({"fullName": "Jane", "email": "not-an-email"}),
            "email",
        ),
        (json!({"email": "jane@example.com"}), "fullName"),
        (
            json!({"fullName": "", "email": "jane@example.com"}),
            "fullName",
        ),
        (
            json!({"fullName": "Jane", "email": "jane@example.com", "phone": "0400 000 000"}),
            "phone",
        ),
        (
            json!({"fullName": "Jane", "email": "jane@example.com", "type": "COMPANY"}),
            "type",
        ),
        (
            json!({"fullName": "Jane", "email": "jane@example.com", "externalId": "x".repeat(256)}),
            "externalId",
        ),
        (
            json!({"full_name": "Jane", "email": "jane@example.com"}),
            "full_name",
        ),
        (
            json!({"fullName": "Jane", "email": "jane@example.com", "kycStatus": "VERIFIED"}),
            "kycStatus",
        ),
    ];
    for (request, field) in cases {
        let reply = app.post(CUSTOMERS, &request).await;
        reply.expect_error(422, "validation_failed");
        assert_eq!(reply.json["error"]["details"]["field"], field, "{request}");
    }
}

#[tokio::test]
async fn an_upsert_may_not_change_the_type_of_an_existing_record() {
    let app = app().await;
    app.create("crm-1", "jane@example.com").await;
    let mut again = body(Some("crm-1"), "Jane Doe", "jane@example.com");
    again["type"] = json!("SOLE_TRADER");
    let reply = app.post(CUSTOMERS, &again).await;
    reply.expect_error(422, "validation_failed");
    assert_eq!(reply.json["error"]["details"]["field"], "type");
}

// ---------------------------------------------------------------- get and patch

#[tokio::test]
async fn a_customer_is_found_by_uuid_or_external_id_and_unknown_ids_are_404() {
    let app = app().await;
    let id = app
        .create("salesforce:0035g000001a2BcQAA", "jane@example.com")
        .await;
    let by_uuid = app.get(&format!("{CUSTOMERS}/{id}")).await;
    assert_eq!(by_uuid.status, StatusCode::OK);
    let by_external = app
        .get(&format!("{CUSTOMERS}/salesforce:0035g000001a2BcQAA"))
        .await;
    assert_eq!(by_external.status, StatusCode::OK);
    assert_eq!(by_external.json, by_uuid.json);
    let aml = app
        .get(&format!("{CUSTOMERS}/salesforce:0035g000001a2BcQAA/aml"))
        .await;
    assert_eq!(aml.status, StatusCode::OK);
    assert_eq!(aml.json, by_uuid.json["aml"]);
    app.get(&format!("{CUSTOMERS}/crm-unknown"))
        .await
        .expect_error(404, "not_found");
    app.get(&format!("{CUSTOMERS}/{}", uuid::Uuid::new_v4()))
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn another_firms_customer_answers_404_on_every_route() {
    let app = app().await;
    let id = app.create("crm-1", "jane@example.com").await;
    let other = FirmId::from_uuid(uuid::Uuid::new_v4());
    app.add_firm(other).await;
    let stranger = app.add_key(other, support::ALL_SCOPES).await;
    for path in [
        format!("{CUSTOMERS}/{id}"),
        format!("{CUSTOMERS}/crm-1"),
        format!("{CUSTOMERS}/{id}/aml"),
    ] {
        let reply = app
            .call(Method::GET, &path, Some(&stranger), None, &[])
            .await;
        reply.expect_error(404, "not_found");
    }
    let patch = app
        .call(
            Method::PATCH,
            &format!("{CUSTOMERS}/{id}"),
            Some(&stranger),
            Some(&json!({"phone": "+61400000009"})),
            &[],
        )
        .await;
    patch.expect_error(404, "not_found");
    let list = app
        .call(Method::GET, CUSTOMERS, Some(&stranger), None, &[])
        .await;
    assert_eq!(list.json["data"], json!([]));
    // The stranger's upsert of the same external id creates its own record.
    let theirs = app
        .call(
            Method::POST,
            CUSTOMERS,
            Some(&stranger),
            Some(&body(Some("crm-1"), "Jane Doe", "jane@example.com")),
            &[],
        )
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    assert_ne!(theirs.json["id"], id.as_str());
}

#[tokio::test]
async fn patch_changes_contact_fields_and_refuses_immutable_or_unknown_ones() {
    let app = app().await;
    let id = app.create("crm-1", "jane@example.com").await;
    let path = format!("{CUSTOMERS}/crm-1");
    let changed = app
        .patch(&path, &json!({"phone": "+61400000002", "fullName": "Jane Roe", "risk": {"isNewCustomer": true, "isDesignatedService": true, "handlesCashOrCrypto": false}}))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.json["id"], id.as_str());
    assert_eq!(changed.json["phone"], "+61400000002");
    assert_eq!(changed.json["full_name"], "Jane Roe");
    assert_eq!(
        changed.json["kyc_status"], "NOT_STARTED",
        "risk answers are only proposals"
    );
    // Echoing the stored type or external id is fine; changing them is not.
    let echo = app
        .patch(&path, &json!({"type": "INDIVIDUAL", "externalId": "crm-1"}))
        .await;
    assert_eq!(echo.status, StatusCode::OK, "{}", echo.text);
    for (request, field) in [
        (json!({"type": "SOLE_TRADER"}), "type"),
        (json!({"externalId": "crm-2"}), "externalId"),
        (json!({"kyc_status": "VERIFIED"}), "kyc_status"),
        (json!({"aml": {"status": "CLEAR"}}), "aml"),
        (json!({"nickname": "JJ"}), "nickname"),
        (json!({"risk": {"isPep": true}}), "risk.isPep"),
        (json!({"email": "nope"}), "email"),
    ] {
        let reply = app.patch(&path, &request).await;
        reply.expect_error(422, "validation_failed");
        assert_eq!(reply.json["error"]["details"]["field"], field, "{request}");
    }
    let after = app.get(&path).await;
    assert_eq!(after.json["type"], "INDIVIDUAL");
    assert_eq!(after.json["external_id"], "crm-1");
}

#[tokio::test]
async fn once_verified_name_and_email_freeze_while_phone_and_risk_stay_editable() {
    let app = app().await;
    let id = app.create("crm-1", "jane@example.com").await;
    app.verify(&id, vec![]).await;
    let path = format!("{CUSTOMERS}/{id}");
    let verified = app.get(&path).await;
    assert_eq!(verified.json["kyc_status"], "VERIFIED");
    assert_eq!(verified.json["aml"]["status"], "CLEAR");
    assert_eq!(verified.json["crm"]["label"], "Cleared. Safe to onboard.");
    assert_eq!(verified.json["crm"]["onboarding"], "ALLOWED");
    assert_eq!(
        verified.json["identity"],
        json!({"verified_legal_name": "JANE DOE", "verified_country": "AUS"})
    );
    assert!(
        verified.json["kyc_started_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    for request in [
        json!({"fullName": "Someone Else"}),
        json!({"email": "other@example.com"}),
    ] {
        app.patch(&path, &request)
            .await
            .expect_error(422, "validation_failed");
    }
    // The upsert path freezes them too.
    app.post(
        CUSTOMERS,
        &body(Some("crm-1"), "Someone Else", "jane@example.com"),
    )
    .await
    .expect_error(422, "validation_failed");
    let allowed = app
        .patch(&path, &json!({"phone": "+61400000003", "fullName": "Jane Doe", "risk": {"isNewCustomer": false, "isDesignatedService": true, "handlesCashOrCrypto": true}}))
        .await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text);
    assert_eq!(allowed.json["phone"], "+61400000003");
    assert_eq!(allowed.json["full_name"], "Jane Doe");
}

#[tokio::test]
async fn starting_verification_over_the_api_is_always_403_human_required() {
    let app = app().await;
    let id = app.create("crm-1", "jane@example.com").await;
    let aml_only = app.add_key(app.firm, &["aml:read"]).await;
    for key in [app.key.as_str(), aml_only.as_str()] {
        for target in [id.as_str(), "crm-1", "no-such-customer"] {
            let reply = app
                .call(
                    Method::POST,
                    &format!("{CUSTOMERS}/{target}/verification"),
                    Some(key),
                    Some(&json!({})),
                    &[],
                )
                .await;
            reply.expect_error(403, "human_required");
            assert_eq!(
                reply.json["error"]["message"],
                "Verification can only be started by a person in the back office."
            );
        }
    }
    let after = app.get(&format!("{CUSTOMERS}/{id}")).await;
    assert_eq!(after.json["kyc_status"], "NOT_STARTED");
    app.call(
        Method::POST,
        &format!("{CUSTOMERS}/{id}/verification"),
        None,
        None,
        &[],
    )
    .await
    .expect_error(401, "unauthorized");
}

// ---------------------------------------------------------------- list

async fn seed(app: &App, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        app.clock.advance(time::Duration::seconds(1));
        ids.push(
            app.create(&format!("crm-{i}"), &format!("c{i}@example.com"))
                .await,
        );
    }
    ids
}

async fn walk(app: &App, first: &str) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut uri = first.to_owned();
    loop {
        let page = app.get(&uri).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        pages += 1;
        for customer in page.json["data"].as_array().unwrap() {
            seen.push(customer["id"].as_str().unwrap().to_owned());
        }
        if !page.json["has_more"].as_bool().unwrap() {
            assert_eq!(page.json["next_cursor"], Value::Null);
            return (seen, pages);
        }
        let cursor = page.json["next_cursor"].as_str().unwrap();
        uri = format!("{first}&cursor={cursor}");
    }
}

#[tokio::test]
async fn an_empty_list_has_the_published_shape() {
    let app = app().await;
    let reply = app.get(CUSTOMERS).await;
    assert_eq!(
        reply.json,
        json!({"object": "list", "data": [], "has_more": false, "next_cursor": null, "limit": 50})
    );
}

#[tokio::test]
async fn walking_the_cursor_returns_every_customer_once_in_creation_order() {
    let app = app().await;
    let ids = seed(&app, 5).await;
    let (seen, pages) = walk(&app, &format!("{CUSTOMERS}?limit=2")).await;
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn writes_during_a_walk_neither_skip_nor_repeat_customers() {
    let app = app().await;
    let ids = seed(&app, 4).await;
    let first = app.get(&format!("{CUSTOMERS}?limit=2")).await;
    let mut seen: Vec<String> = first.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    // Meanwhile: an already-seen customer is updated and a new one arrives.
    app.clock.advance(time::Duration::seconds(1));
    app.patch(
        &format!("{CUSTOMERS}/{}", ids[0]),
        &json!({"phone": "+61400000004"}),
    )
    .await;
    let late = app.create("crm-late", "late@example.com").await;
    let mut cursor = first.json["next_cursor"].as_str().unwrap().to_owned();
    loop {
        let page = app
            .get(&format!("{CUSTOMERS}?limit=2&cursor={cursor}"))
            .await;
        for customer in page.json["data"].as_array().unwrap() {
            seen.push(customer["id"].as_str().unwrap().to_owned());
        }
        match page.json["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.push(late);
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn polling_with_updated_since_and_a_watermark_misses_no_change() {
    let app = app().await;
    let ids = seed(&app, 3).await;
    let first = app
        .get(&format!(
            "{CUSTOMERS}?updated_since=2026-07-01T00:00:00Z&limit=100"
        ))
        .await;
    assert_eq!(first.json["data"].as_array().unwrap().len(), 3);
    let watermark = first.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["updated_at"].as_str().unwrap().to_owned())
        .max()
        .unwrap();
    // Nothing changed since: an empty page.
    let quiet = app
        .get(&format!("{CUSTOMERS}?updated_since={watermark}"))
        .await;
    assert_eq!(quiet.json["data"], json!([]));
    app.clock.advance(time::Duration::seconds(5));
    app.patch(
        &format!("{CUSTOMERS}/{}", ids[0]),
        &json!({"phone": "+61400000005"}),
    )
    .await;
    let changed = app
        .get(&format!("{CUSTOMERS}?updated_since={watermark}"))
        .await;
    let data = changed.json["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], ids[0].as_str());
    // Walking the poll in pages keeps (updated_at, id) order.
    let (seen, _) = walk(
        &app,
        &format!("{CUSTOMERS}?updated_since=2026-07-01T00:00:00%2B00:00&limit=1"),
    )
    .await;
    assert_eq!(seen, vec![ids[1].clone(), ids[2].clone(), ids[0].clone()]);
}

#[tokio::test]
async fn list_filters_narrow_the_page_and_total_count_appears_only_when_asked() {
    let app = app().await;
    let ids = seed(&app, 3).await;
    app.verify(&ids[1], vec![]).await;
    let verified = app
        .get(&format!("{CUSTOMERS}?status=VERIFIED&include=total_count"))
        .await;
    assert_eq!(verified.json["total_count"], 1);
    assert_eq!(verified.json["data"][0]["id"], ids[1].as_str());
    let clear = app.get(&format!("{CUSTOMERS}?aml_status=CLEAR")).await;
    assert_eq!(clear.json["data"].as_array().unwrap().len(), 1);
    assert!(clear.json.get("total_count").is_none());
    let not_started = app
        .get(&format!(
            "{CUSTOMERS}?status=NOT_STARTED&limit=1&include=total_count"
        ))
        .await;
    assert_eq!(not_started.json["total_count"], 2);
    assert_eq!(not_started.json["limit"], 1);
    assert_eq!(not_started.json["has_more"], true);
    let by_external = app.get(&format!("{CUSTOMERS}?external_id=crm-2")).await;
    assert_eq!(by_external.json["data"].as_array().unwrap().len(), 1);
    assert_eq!(by_external.json["data"][0]["id"], ids[2].as_str());
}

#[tokio::test]
async fn limits_outside_1_to_100_bad_filters_and_foreign_cursors_are_422() {
    let app = app().await;
    seed(&app, 3).await;
    assert_eq!(
        app.get(&format!("{CUSTOMERS}?limit=100")).await.json["limit"],
        100
    );
    assert_eq!(
        app.get(&format!("{CUSTOMERS}?limit=1")).await.json["limit"],
        1
    );
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("status=DONE", "status"),
        ("aml_status=clear", "aml_status"),
        ("updated_since=yesterday", "updated_since"),
        ("include=everything", "include"),
        ("cursor=garbage", "cursor"),
        ("sort=name", "sort"),
    ] {
        let reply = app.get(&format!("{CUSTOMERS}?{query}")).await;
        reply.expect_error(422, "validation_failed");
        assert_eq!(reply.json["error"]["details"]["field"], field, "{query}");
    }
    let page = app.get(&format!("{CUSTOMERS}?limit=1")).await;
    let cursor = page.json["next_cursor"].as_str().unwrap();
    let changed = app
        .get(&format!(
            "{CUSTOMERS}?limit=1&status=NOT_STARTED&cursor={cursor}"
        ))
        .await;
    changed.expect_error(422, "validation_failed");
    // The same filters with another page size are fine.
    let resized = app
        .get(&format!("{CUSTOMERS}?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(resized.status, StatusCode::OK);
    assert_eq!(resized.json["data"].as_array().unwrap().len(), 2);
}

// ---------------------------------------------------------------- auth, scopes, limits

#[tokio::test]
async fn missing_unknown_malformed_revoked_and_expired_keys_are_401() {
    let app = app().await;
    app.call(Method::GET, CUSTOMERS, None, None, &[])
        .await
        .expect_error(401, "unauthorized");
    app.call(
        Method::GET,
        CUSTOMERS,
        Some("kyc_live_unknownunknownunknownunknown"),
        None,
        &[],
    )
    .await
    .expect_error(401, "unauthorized");
    app.call(
        Method::GET,
        CUSTOMERS,
        None,
        None,
        &[("authorization", &format!("Basic {}", app.key))],
    )
    .await
    .expect_error(401, "unauthorized");
    let (revoked, revoked_id) = app.add_key_with(app.firm, support::ALL_SCOPES, None).await;
    assert_eq!(
        app.call(Method::GET, CUSTOMERS, Some(&revoked), None, &[])
            .await
            .status,
        StatusCode::OK
    );
    use kyc_domain::ports::ApiKeyStore;
    assert!(
        app.store
            .revoke_api_key(app.firm, revoked_id, support_now(&app))
            .await
            .unwrap()
    );
    app.call(Method::GET, CUSTOMERS, Some(&revoked), None, &[])
        .await
        .expect_error(401, "unauthorized");
    let expires = support_now(&app) + time::Duration::hours(1);
    let (expiring, _) = app
        .add_key_with(app.firm, support::ALL_SCOPES, Some(expires))
        .await;
    assert_eq!(
        app.call(Method::GET, CUSTOMERS, Some(&expiring), None, &[])
            .await
            .status,
        StatusCode::OK
    );
    app.clock.advance(time::Duration::hours(1));
    app.call(Method::GET, CUSTOMERS, Some(&expiring), None, &[])
        .await
        .expect_error(401, "unauthorized");
}

fn support_now(app: &App) -> time::OffsetDateTime {
    use kyc_domain::ports::Clock;
    app.clock.now()
}

#[tokio::test]
async fn an_aml_read_key_reads_the_aml_block_and_nothing_else() {
    let app = app().await;
    let id = app.create("crm-1", "jane@example.com").await;
    let reporting = app.add_key(app.firm, &["aml:read"]).await;
    let aml = app
        .call(
            Method::GET,
            &format!("{CUSTOMERS}/{id}/aml"),
            Some(&reporting),
            None,
            &[],
        )
        .await;
    assert_eq!(aml.status, StatusCode::OK, "{}", aml.text);
    let keys: BTreeSet<&str> = aml
        .json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["status", "screened_at", "last_reviewed_at", "flags"])
    );
    for (method, path, payload) in [
        (Method::GET, CUSTOMERS.to_owned(), None),
        (Method::GET, format!("{CUSTOMERS}/{id}"), None),
        (
            Method::POST,
            CUSTOMERS.to_owned(),
            Some(body(None, "X Y", "x@example.com")),
        ),
        (
            Method::PATCH,
            format!("{CUSTOMERS}/{id}"),
            Some(json!({"phone": "+61400000006"})),
        ),
    ] {
        let reply = app
            .call(
                method.clone(),
                &path,
                Some(&reporting),
                payload.as_ref(),
                &[],
            )
            .await;
        reply.expect_error(403, "insufficient_scope");
        assert!(
            !reply.text.contains("jane"),
            "{method} {path}: {}",
            reply.text
        );
    }
    let reader = app.add_key(app.firm, &["customers:read"]).await;
    app.call(
        Method::POST,
        CUSTOMERS,
        Some(&reader),
        Some(&body(None, "X Y", "x@example.com")),
        &[],
    )
    .await
    .expect_error(403, "insufficient_scope");
    app.call(
        Method::GET,
        &format!("{CUSTOMERS}/{id}/aml"),
        Some(&reader),
        None,
        &[],
    )
    .await
    .expect_error(403, "insufficient_scope");
}

#[tokio::test]
async fn the_burst_limit_answers_429_with_retry_after_and_details() {
    let app = app_with(HttpConfig {
        rate_limit_per_minute: 2,
        rate_limit_per_day: 0,
        ..HttpConfig::default()
    })
    .await;
    assert_eq!(app.get(CUSTOMERS).await.status, StatusCode::OK);
    app.clock.advance(time::Duration::seconds(48));
    assert_eq!(app.get(CUSTOMERS).await.status, StatusCode::OK);
    let limited = app.get(CUSTOMERS).await;
    limited.expect_error(429, "rate_limited");
    assert_eq!(limited.header("retry-after"), Some("12"));
    assert_eq!(
        limited.json["error"]["details"],
        json!({"limit": 2, "window_seconds": 60})
    );
    // Another key of the same firm has its own budget.
    let other = app.add_key(app.firm, support::ALL_SCOPES).await;
    assert_eq!(
        app.call(Method::GET, CUSTOMERS, Some(&other), None, &[])
            .await
            .status,
        StatusCode::OK
    );
    app.clock.advance(time::Duration::seconds(12));
    assert_eq!(app.get(CUSTOMERS).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_daily_limit_answers_429_with_a_day_window() {
    let app = app_with(HttpConfig {
        rate_limit_per_minute: 0,
        rate_limit_per_day: 1,
        ..HttpConfig::default()
    })
    .await;
    assert_eq!(app.get(CUSTOMERS).await.status, StatusCode::OK);
    app.clock.advance(time::Duration::hours(1));
    let limited = app.get(CUSTOMERS).await;
    limited.expect_error(429, "rate_limited");
    assert_eq!(limited.json["error"]["details"]["window_seconds"], 86_400);
    assert_eq!(limited.header("retry-after"), Some("82800"));
}

// ---------------------------------------------------------------- data minimisation

fn keys_of(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn no_response_carries_a_withheld_field() {
    let app = app().await;
    let id = app.create("crm-1", "jane@example.com").await;
    let hit = AmlHit {
        key: HitKey::new("hit-secret-key-1"),
        name: Some("Johnny Watchlist".into()),
        categories: [AmlCategory::Pep].into_iter().collect(),
        match_status: "potential_match".into(),
        source: HitSource::Screening,
        found_at: kyc_domain::testkit::strategies::EPOCH,
        disposition: None,
    };
    app.verify(&id, vec![hit]).await;
    let customer = app.get(&format!("{CUSTOMERS}/{id}")).await;
    assert_eq!(customer.json["aml"]["status"], "NEEDS_REVIEW");
    assert_eq!(customer.json["aml"]["flags"]["pep"], true);
    assert_eq!(
        customer.json["crm"]["label"],
        "Identity OK — AML in review."
    );
    assert_eq!(
        keys_of(&customer.json),
        [
            "id",
            "external_id",
            "type",
            "full_name",
            "email",
            "phone",
            "kyc_status",
            "kyc_started_at",
            "kyc_completed_at",
            "identity",
            "aml",
            "crm",
            "added_via",
            "created_at",
            "updated_at",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect()
    );
    let applicants = app.provider.applicants();
    let applicant_id = applicants.values().next().unwrap().as_str().to_owned();
    let external_user_id = applicants.keys().next().unwrap().as_str().to_owned();
    let replies = [
        customer,
        app.get(&format!("{CUSTOMERS}/{id}/aml")).await,
        app.get(CUSTOMERS).await,
        app.get(&format!("{CUSTOMERS}?status=VERIFIED&include=total_count"))
            .await,
        app.patch(
            &format!("{CUSTOMERS}/{id}"),
            &json!({"phone": "+61400000007"}),
        )
        .await,
        app.post(
            CUSTOMERS,
            &body(Some("crm-1"), "Jane Doe", "jane@example.com"),
        )
        .await,
    ];
    for reply in replies {
        assert!(reply.status.is_success(), "{}", reply.text);
        let text = reply.text.to_lowercase();
        for withheld in [
            "birth",
            "dob",
            "address",
            "applicant",
            "hits",
            "hit-secret",
            "watchlist",
            "potential_match",
            "screening_data",
            "moderator",
            "rejection",
            "document",
            "risk",
            "attempt",
            "token",
            "version",
            "firm",
            applicant_id.as_str(),
            external_user_id.to_lowercase().as_str(),
        ] {
            assert!(
                !text.contains(withheld),
                "{withheld:?} leaked in {}",
                reply.text
            );
        }
    }
}

#[tokio::test]
async fn concurrent_upserts_of_one_external_id_create_exactly_one_record() {
    let app = std::sync::Arc::new(app().await);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let request = body(
                Some("zapier:42"),
                &format!("Jane Doe {i}"),
                "jane@example.com",
            );
            app.post(CUSTOMERS, &request).await
        }));
    }
    let mut created = 0;
    let mut ids = BTreeSet::new();
    for task in tasks {
        let reply = task.await.unwrap();
        assert!(reply.status.is_success(), "{}", reply.text);
        if reply.status == StatusCode::CREATED {
            created += 1;
        }
        ids.insert(reply.json["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    let list = app.get(&format!("{CUSTOMERS}?include=total_count")).await;
    assert_eq!(list.json["total_count"], 1);
}
