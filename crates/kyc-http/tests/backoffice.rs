//! The back office, the provider webhook and the verification link, driven in-process over real
//! SQLite storage: login, CSRF, idle expiry, roles and tenancy; the quote and Start Verification
//! under concurrent clicks; provider events; the link; AML review to `RESOLVED`.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use http::{Method, StatusCode};
use kyc_domain::aml::{AmlCategory, AmlHit, HitKey, HitSource};
use kyc_domain::ports::{CreditsLedger, HoldState, IdempotencyKey};
use kyc_domain::prelude::*;
use kyc_domain::testkit::strategies::EPOCH;
use serde_json::{Value, json};
use support::{App, Login, app, sign};

const PASSWORD: &str = "correct horse battery staple";

async fn officer(app: &App) -> Login {
    app.add_user(
        app.firm,
        "officer@acme.example",
        Role::ComplianceOfficer,
        PASSWORD,
    )
    .await;
    app.login("officer@acme.example", PASSWORD).await
}

async fn staff(app: &App) -> Login {
    app.add_user(app.firm, "staff@acme.example", Role::Staff, PASSWORD)
        .await;
    app.login("staff@acme.example", PASSWORD).await
}

async fn grant(app: &App, credits: u64) {
    app.ledger
        .grant(
            app.firm,
            Credits::new(credits),
            "top-up",
            &IdempotencyKey::new(format!("grant-{}", uuid::Uuid::new_v4())).unwrap(),
        )
        .await
        .unwrap();
}

/// A customer with risk answers confirmed by `login`, ready to start.
async fn ready_customer(app: &App, login: &Login, external_id: &str) -> String {
    let id = app
        .create(external_id, &format!("{external_id}@example.com"))
        .await;
    let risk = app
        .bo(
            Method::PUT,
            &format!("/api/backoffice/customers/{id}/risk"),
            login,
            Some(&json!({"is_designated_service": true, "handles_cash_or_crypto": false, "is_new_customer": true})),
        )
        .await;
    assert_eq!(risk.status, StatusCode::OK, "{}", risk.text);
    assert_eq!(risk.json["risk_rating"], "MEDIUM");
    assert_eq!(
        risk.json["risk"]["confirmed"]["confirmed_by_email"],
        login.body["user"]["email"]
    );
    id
}

async fn start(app: &App, login: &Login, id: &str, key: &str) -> support::Reply {
    app.bo_with(
        Method::POST,
        &format!("/api/backoffice/customers/{id}/verification"),
        login,
        Some(&json!({"confirm_cost_credits": 1})),
        &[("idempotency-key", key)],
    )
    .await
}

// ---------------------------------------------------------------- sessions

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_returns_the_user_and_a_csrf_token() {
    let app = app().await;
    let login = officer(&app).await;
    assert!(login.set_cookie.starts_with("kyc_session="));
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(login.set_cookie.contains(flag), "{}", login.set_cookie);
    }
    assert!(
        !login.set_cookie.contains("Secure"),
        "plain http is not Secure"
    );
    assert_eq!(login.body["user"]["email"], "officer@acme.example");
    assert_eq!(login.body["user"]["role"], "compliance_officer");
    assert_eq!(login.body["user"]["firm_id"], app.firm.to_string());
    assert_eq!(login.csrf.len(), 64);
    let list = app
        .bo(Method::GET, "/api/backoffice/customers", &login, None)
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let app = app().await;
    app.add_user(
        app.firm,
        "officer@acme.example",
        Role::ComplianceOfficer,
        PASSWORD,
    )
    .await;
    let attempt = |email: &'static str, password: &'static str| {
        let app = &app;
        async move {
            app.call(
                Method::POST,
                "/api/backoffice/session",
                None,
                Some(&json!({"email": email, "password": password})),
                &[],
            )
            .await
        }
    };
    let wrong = attempt("officer@acme.example", "guess").await;
    let unknown = attempt("nobody@acme.example", PASSWORD).await;
    wrong.expect_error(401, "unauthorized");
    unknown.expect_error(401, "unauthorized");
    assert_eq!(wrong.json, unknown.json);
    assert!(wrong.header("set-cookie").is_none());
}

#[tokio::test]
async fn repeated_failed_logins_for_one_account_are_rate_limited() {
    let app = app().await;
    app.add_user(
        app.firm,
        "officer@acme.example",
        Role::ComplianceOfficer,
        PASSWORD,
    )
    .await;
    let body = json!({"email": "officer@acme.example", "password": "guess"});
    for _ in 0..5 {
        let reply = app
            .call(
                Method::POST,
                "/api/backoffice/session",
                None,
                Some(&body),
                &[],
            )
            .await;
        reply.expect_error(401, "unauthorized");
    }
    let good = json!({"email": "officer@acme.example", "password": PASSWORD});
    let limited = app
        .call(
            Method::POST,
            "/api/backoffice/session",
            None,
            Some(&good),
            &[],
        )
        .await;
    limited.expect_error(429, "rate_limited");
    assert!(limited.header("retry-after").is_some());
}

#[tokio::test]
async fn without_a_session_every_back_office_route_is_401() {
    let app = app().await;
    let reply = app
        .call(Method::GET, "/api/backoffice/customers", None, None, &[])
        .await;
    reply.expect_error(401, "unauthorized");
    let forged = app
        .call(
            Method::GET,
            "/api/backoffice/credits",
            None,
            None,
            &[("cookie", "kyc_session=forged")],
        )
        .await;
    forged.expect_error(401, "unauthorized");
}

#[tokio::test]
async fn logout_ends_the_session() {
    let app = app().await;
    let login = officer(&app).await;
    let out = app
        .bo(Method::DELETE, "/api/backoffice/session", &login, None)
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.text);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    app.bo(Method::GET, "/api/backoffice/customers", &login, None)
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn a_session_idle_for_thirty_minutes_has_expired_and_activity_keeps_it_alive() {
    let app = app().await;
    let login = officer(&app).await;
    for _ in 0..3 {
        app.clock.advance(time::Duration::minutes(20));
        let alive = app
            .bo(Method::GET, "/api/backoffice/credits", &login, None)
            .await;
        assert_eq!(alive.status, StatusCode::OK, "{}", alive.text);
    }
    app.clock.advance(time::Duration::minutes(31));
    app.bo(Method::GET, "/api/backoffice/credits", &login, None)
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn a_state_changing_request_without_the_csrf_token_is_refused_and_changes_nothing() {
    let app = app().await;
    let login = officer(&app).await;
    let id = app.create("crm-1", "jane@example.com").await;
    let risk = json!({"is_designated_service": false, "handles_cash_or_crypto": false, "is_new_customer": true});
    let uri = format!("/api/backoffice/customers/{id}/risk");
    let missing = app
        .call(
            Method::PUT,
            &uri,
            None,
            Some(&risk),
            &[("cookie", login.cookie.as_str())],
        )
        .await;
    missing.expect_error(403, "csrf_failed");
    let wrong = app
        .call(
            Method::PUT,
            &uri,
            None,
            Some(&risk),
            &[
                ("cookie", login.cookie.as_str()),
                ("x-csrf-token", "0".repeat(64).as_str()),
            ],
        )
        .await;
    wrong.expect_error(403, "csrf_failed");
    assert_eq!(
        app.get(&format!("/api/v1/customers/{id}")).await.json["kyc_status"],
        "NOT_STARTED"
    );
    let done = app.bo(Method::PUT, &uri, &login, Some(&risk)).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    assert_eq!(done.json["customer"]["kyc_status"], "NOT_REQUIRED");
}

// ---------------------------------------------------------------- roles and tenancy

#[tokio::test]
async fn staff_on_a_compliance_officer_route_is_403_forbidden() {
    let app = app().await;
    let login = staff(&app).await;
    let id = app.create("crm-1", "jane@example.com").await;
    let restart = app
        .bo(
            Method::POST,
            &format!("/api/backoffice/customers/{id}/restart"),
            &login,
            Some(&json!({"reason": "retry"})),
        )
        .await;
    restart.expect_error(403, "forbidden");
    app.bo(Method::GET, "/api/backoffice/audit/export", &login, None)
        .await
        .expect_error(403, "forbidden");
}

#[tokio::test]
async fn another_firms_customer_is_404() {
    let app = app().await;
    let login = officer(&app).await;
    let other = FirmId::from_uuid(uuid::Uuid::new_v4());
    app.add_firm(other).await;
    let key = app.add_key(other, support::ALL_SCOPES).await;
    let created = app
        .call(
            Method::POST,
            "/api/v1/customers",
            Some(&key),
            Some(&json!({"externalId": "theirs", "fullName": "Other Person", "email": "o@example.com"})),
            &[],
        )
        .await;
    let foreign = created.json["id"].as_str().unwrap();
    for uri in [
        format!("/api/backoffice/customers/{foreign}"),
        format!("/api/backoffice/customers/{foreign}/verification/quote"),
    ] {
        app.bo(Method::GET, &uri, &login, None)
            .await
            .expect_error(404, "not_found");
    }
    let list = app
        .bo(Method::GET, "/api/backoffice/customers", &login, None)
        .await;
    assert_eq!(list.json["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn an_api_key_on_the_crm_start_route_is_still_403_human_required() {
    let app = app().await;
    let id = app.create("crm-1", "jane@example.com").await;
    app.post(&format!("/api/v1/customers/{id}/verification"), &json!({}))
        .await
        .expect_error(403, "human_required");
}

// ---------------------------------------------------------------- list, create, detail

#[tokio::test]
async fn the_list_searches_name_email_and_external_id_across_pages() {
    let app = app().await;
    let login = officer(&app).await;
    for n in 0..7 {
        app.create(&format!("crm-{n}"), &format!("person{n}@example.com"))
            .await;
    }
    let created = app
        .bo(
            Method::POST,
            "/api/backoffice/customers",
            &login,
            Some(&json!({"full_name": "Zed Walk-in", "email": "zed@example.com"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json["added_via"], "ADMIN_MANUAL");
    let found = app
        .bo(Method::GET, "/api/backoffice/customers?q=zed", &login, None)
        .await;
    assert_eq!(found.json["data"].as_array().unwrap().len(), 1);
    assert_eq!(found.json["data"][0]["full_name"], "Zed Walk-in");
    let by_external = app
        .bo(
            Method::GET,
            "/api/backoffice/customers?q=CRM-3",
            &login,
            None,
        )
        .await;
    assert_eq!(by_external.json["data"][0]["external_id"], "crm-3");
    // Walk the search two at a time: every match once, none skipped.
    let mut seen = BTreeSet::new();
    let mut uri = "/api/backoffice/customers?q=person&limit=2".to_owned();
    loop {
        let page = app.bo(Method::GET, &uri, &login, None).await;
        for customer in page.json["data"].as_array().unwrap() {
            assert!(seen.insert(customer["id"].as_str().unwrap().to_owned()));
        }
        match page.json["next_cursor"].as_str() {
            Some(cursor) => {
                uri = format!("/api/backoffice/customers?q=person&limit=2&cursor={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
}

// ---------------------------------------------------------------- Start Verification

#[tokio::test]
async fn the_quote_shows_the_price_and_the_balance() {
    let app = app().await;
    let login = officer(&app).await;
    grant(&app, 3).await;
    let id = app.create("crm-1", "jane@example.com").await;
    let quote = app
        .bo(
            Method::GET,
            &format!("/api/backoffice/customers/{id}/verification/quote"),
            &login,
            None,
        )
        .await;
    assert_eq!(quote.status, StatusCode::OK, "{}", quote.text);
    assert_eq!(quote.json, json!({"cost_credits": 1, "balance_credits": 3}));
}

#[tokio::test]
async fn twenty_concurrent_starts_with_same_and_different_keys_charge_exactly_once() {
    let app = Arc::new(app().await);
    let login = Arc::new(officer(&app).await);
    grant(&app, 5).await;
    let id = ready_customer(&app, &login, "crm-1").await;
    let mut tasks = Vec::new();
    for n in 0..20 {
        let (app, login, id) = (app.clone(), login.clone(), id.clone());
        // Half the clicks share one key (a retried request), half each have their own (two
        // browsers, double clicks).
        let key = if n % 2 == 0 {
            "same-key".to_owned()
        } else {
            format!("key-{n}")
        };
        tasks.push(tokio::spawn(
            async move { start(&app, &login, &id, &key).await },
        ));
    }
    let mut started = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.status.as_u16() {
            200 => {
                started += 1;
                assert_eq!(reply.json["kyc_status"], "PENDING");
                assert_eq!(reply.json["charged_credits"], 1);
                assert!(
                    reply.json["verification_url"]
                        .as_str()
                        .unwrap()
                        .starts_with("http://127.0.0.1:8080/v/")
                );
            }
            409 => assert!(
                ["not_startable", "idempotency_in_progress"].contains(&reply.code()),
                "{}",
                reply.text
            ),
            _ => panic!("unexpected answer {}: {}", reply.status, reply.text),
        }
    }
    assert!(started >= 1);
    let holds = app.ledger.holds();
    assert_eq!(holds.len(), 1, "one hold for one attempt");
    assert_eq!(holds[0].state, HoldState::Posted);
    assert_eq!(app.provider.applicants().len(), 1);
    let balance = app.ledger.balance(app.firm).await.unwrap();
    assert_eq!(balance.available, Credits::new(4));
    assert_eq!(balance.spent, Credits::new(1));
    let customer = app.get(&format!("/api/v1/customers/{id}")).await;
    assert_eq!(customer.json["kyc_status"], "PENDING");
    // The same key again replays the first answer.
    let replay = start(&app, &login, &id, "same-key").await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn start_verification_without_an_idempotency_key_is_refused() {
    let app = app().await;
    let login = officer(&app).await;
    grant(&app, 1).await;
    let id = ready_customer(&app, &login, "crm-1").await;
    app.bo(
        Method::POST,
        &format!("/api/backoffice/customers/{id}/verification"),
        &login,
        Some(&json!({"confirm_cost_credits": 1})),
    )
    .await
    .expect_error(422, "validation_failed");
    assert!(app.ledger.holds().is_empty());
}

#[tokio::test]
async fn insufficient_credits_is_402_and_changes_nothing() {
    let app = app().await;
    let login = officer(&app).await;
    let id = ready_customer(&app, &login, "crm-1").await;
    start(&app, &login, &id, "k1")
        .await
        .expect_error(402, "insufficient_credits");
    assert!(app.ledger.holds().is_empty());
    assert_eq!(app.provider.create_calls(), 0);
    let detail = app
        .bo(
            Method::GET,
            &format!("/api/backoffice/customers/{id}"),
            &login,
            None,
        )
        .await;
    assert_eq!(detail.json["customer"]["kyc_status"], "NOT_STARTED");
    assert_eq!(detail.json["attempts"], json!([]));
}

#[tokio::test]
async fn a_changed_price_or_unconfirmed_risk_is_409_not_startable_with_the_reason() {
    let app = app().await;
    let login = officer(&app).await;
    grant(&app, 5).await;
    let bare = app.create("crm-bare", "bare@example.com").await;
    let refused = start(&app, &login, &bare, "k1").await;
    refused.expect_error(409, "not_startable");
    assert!(
        refused.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("risk")
    );
    let id = ready_customer(&app, &login, "crm-1").await;
    let changed = app
        .bo_with(
            Method::POST,
            &format!("/api/backoffice/customers/{id}/verification"),
            &login,
            Some(&json!({"confirm_cost_credits": 2})),
            &[("idempotency-key", "k2")],
        )
        .await;
    changed.expect_error(409, "not_startable");
    assert!(app.ledger.holds().is_empty());
}

#[tokio::test]
async fn a_provider_that_cannot_be_reached_charges_nothing_and_a_retry_completes() {
    let app = app().await;
    let login = officer(&app).await;
    grant(&app, 5).await;
    let id = ready_customer(&app, &login, "crm-1").await;
    app.provider
        .set_mode(kyc_domain::testkit::memory::ProviderMode::Unavailable);
    start(&app, &login, &id, "k1")
        .await
        .expect_error(503, "provider_unavailable");
    assert_eq!(
        app.ledger.balance(app.firm).await.unwrap().spent,
        Credits::ZERO
    );
    app.provider
        .set_mode(kyc_domain::testkit::memory::ProviderMode::Normal);
    let retried = start(&app, &login, &id, "k1").await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.text);
    assert_eq!(
        app.ledger.balance(app.firm).await.unwrap().spent,
        Credits::new(1)
    );
}

// ---------------------------------------------------------------- webhook and link

async fn started_customer(app: &App) -> (Login, String, String) {
    let login = officer(app).await;
    grant(app, 5).await;
    let id = ready_customer(app, &login, "crm-1").await;
    let started = start(app, &login, &id, "k1").await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text);
    let url = started.json["verification_url"]
        .as_str()
        .unwrap()
        .to_owned();
    (login, id, url)
}

fn green(id: &str) -> Vec<u8> {
    let customer = CustomerId::parse(id).unwrap();
    json!({
        "type": "applicantReviewed",
        "externalUserId": ExternalUserId::for_attempt(customer, AttemptNumber::FIRST).as_str(),
        "createdAt": "2026-07-01T00:10:00Z",
        "reviewAnswer": "GREEN",
    })
    .to_string()
    .into_bytes()
}

async fn webhook(app: &App, body: &[u8], digest: &str) -> support::Reply {
    let request = http::Request::builder()
        .method(Method::POST)
        .uri("/webhooks/sumsub")
        .header("content-type", "application/json")
        .header("X-Payload-Digest", digest)
        .header("X-Payload-Digest-Alg", "HMAC_SHA256_HEX")
        .body(axum::body::Body::from(body.to_vec()))
        .unwrap();
    app.raw(request).await
}

async fn trail_len(app: &App, login: &Login, id: &str) -> usize {
    app.bo(
        Method::GET,
        &format!("/api/backoffice/customers/{id}"),
        login,
        None,
    )
    .await
    .json["audit"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_webhook_with_a_bad_signature_is_401_and_records_nothing() {
    let app = app().await;
    let (login, id, _) = started_customer(&app).await;
    let before = trail_len(&app, &login, &id).await;
    let body = green(&id);
    webhook(&app, &body, &"ab".repeat(32))
        .await
        .expect_error(401, "unauthorized");
    let customer = app.get(&format!("/api/v1/customers/{id}")).await;
    assert_eq!(customer.json["kyc_status"], "PENDING");
    assert_eq!(trail_len(&app, &login, &id).await, before);
    // The same bytes, properly signed, are then accepted: the refusal recorded nothing.
    let ok = webhook(&app, &body, &sign(&body)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.json["status"], "recorded");
}

#[tokio::test]
async fn a_valid_green_webhook_verifies_the_customer_and_a_duplicate_has_no_second_effect() {
    let app = app().await;
    let (login, id, _) = started_customer(&app).await;
    let body = green(&id);
    let first = webhook(&app, &body, &sign(&body)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let customer = app.get(&format!("/api/v1/customers/{id}")).await;
    assert_eq!(customer.json["kyc_status"], "VERIFIED");
    let after_first = trail_len(&app, &login, &id).await;
    let second = webhook(&app, &body, &sign(&body)).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.json["status"], "duplicate");
    assert_eq!(trail_len(&app, &login, &id).await, after_first);
}

#[tokio::test]
async fn a_signed_but_malformed_webhook_is_400() {
    let app = app().await;
    let body = b"{not json".to_vec();
    let reply = webhook(&app, &body, &sign(&body)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(reply.code(), "validation_failed");
}

#[tokio::test]
async fn a_webhook_over_256_kib_is_413() {
    let app = app().await;
    let body = vec![b' '; 256 * 1024 + 1];
    webhook(&app, &body, &sign(&body))
        .await
        .expect_error(413, "payload_too_large");
}

#[tokio::test]
async fn opening_the_link_moves_pending_to_in_progress_and_redirects_to_the_provider() {
    let app = app().await;
    let (login, id, url) = started_customer(&app).await;
    let path = url.strip_prefix("http://127.0.0.1:8080").unwrap();
    let detail = app
        .bo(
            Method::GET,
            &format!("/api/backoffice/customers/{id}"),
            &login,
            None,
        )
        .await;
    assert_eq!(detail.json["verification_url"], url.as_str());
    let opened = app.call(Method::GET, path, None, None, &[]).await;
    assert_eq!(opened.status, StatusCode::SEE_OTHER, "{}", opened.text);
    assert!(
        opened
            .header("location")
            .unwrap()
            .starts_with("https://provider.example/")
    );
    let customer = app.get(&format!("/api/v1/customers/{id}")).await;
    assert_eq!(customer.json["kyc_status"], "IN_PROGRESS");
    // After the verdict the same link shows a friendly page and changes nothing.
    let body = green(&id);
    webhook(&app, &body, &sign(&body)).await;
    let finished = app.call(Method::GET, path, None, None, &[]).await;
    assert_eq!(finished.status, StatusCode::OK);
    assert!(finished.text.contains("verified"), "{}", finished.text);
    let customer = app.get(&format!("/api/v1/customers/{id}")).await;
    assert_eq!(customer.json["kyc_status"], "VERIFIED");
}

#[tokio::test]
async fn an_unknown_link_is_a_404_page() {
    let app = app().await;
    let reply = app
        .call(
            Method::GET,
            "/v/0123456789abcdef0123456789abcdef",
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(reply.text.contains("not valid"));
}

// ---------------------------------------------------------------- AML review, credits, export

fn hit(key: &str, category: AmlCategory) -> AmlHit {
    AmlHit {
        key: HitKey::new(key),
        name: Some("Jane Doe".into()),
        categories: BTreeSet::from([category]),
        match_status: "potential_match".into(),
        source: HitSource::Screening,
        found_at: EPOCH,
        disposition: None,
    }
}

#[tokio::test]
async fn dispositions_then_a_decision_resolve_the_aml_review() {
    let app = app().await;
    let login = officer(&app).await;
    let id = app.create("crm-1", "jane@example.com").await;
    app.verify(
        &id,
        vec![
            hit("h1", AmlCategory::Pep),
            hit("h2", AmlCategory::Sanctions),
        ],
    )
    .await;
    let base = format!("/api/backoffice/customers/{id}");
    let detail = app.bo(Method::GET, &base, &login, None).await;
    assert_eq!(detail.json["customer"]["aml"]["status"], "NEEDS_REVIEW");
    let hits = detail.json["aml_hits"].as_array().unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0]["categories"], json!(["pep"]));
    assert_eq!(hits[0]["disposition"], Value::Null);
    let early = app
        .bo(
            Method::POST,
            &format!("{base}/aml/decision"),
            &login,
            Some(&json!({"decision": "PROCEED", "rationale": "ok"})),
        )
        .await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.text);
    for (hit, disposition) in [("h1", "FALSE_POSITIVE"), ("h2", "TRUE_MATCH")] {
        let set = app
            .bo(
                Method::POST,
                &format!("{base}/aml/hits/{hit}/disposition"),
                &login,
                Some(&json!({"disposition": disposition, "note": "checked the date of birth"})),
            )
            .await;
        assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    }
    let decided = app
        .bo(
            Method::POST,
            &format!("{base}/aml/decision"),
            &login,
            Some(
                &json!({"decision": "PROCEED", "rationale": "low exposure, approved by the board"}),
            ),
        )
        .await;
    assert_eq!(decided.status, StatusCode::OK, "{}", decided.text);
    assert_eq!(decided.json["customer"]["aml"]["status"], "RESOLVED");
    assert_eq!(decided.json["aml_hits"][1]["disposition"], "TRUE_MATCH");
    assert!(!decided.json["audit"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn credits_show_the_balance_and_a_statement_linking_charges_to_customers() {
    let app = app().await;
    let (login, id, _) = started_customer(&app).await;
    let credits = app
        .bo(Method::GET, "/api/backoffice/credits", &login, None)
        .await;
    assert_eq!(credits.status, StatusCode::OK, "{}", credits.text);
    assert_eq!(credits.json["available_credits"], 4);
    assert_eq!(credits.json["held_credits"], 0);
    assert_eq!(credits.json["spent_credits"], 1);
    let statement = credits.json["statement"].as_array().unwrap();
    assert!(
        statement
            .iter()
            .any(|line| line["kind"] == "post" && line["customer_id"] == id.as_str())
    );
    assert!(statement.iter().any(|line| line["kind"] == "grant"));
}

#[tokio::test]
async fn the_audit_export_is_json_lines_of_the_firms_events() {
    let app = app().await;
    let (login, id, _) = started_customer(&app).await;
    let export = app
        .bo(Method::GET, "/api/backoffice/audit/export", &login, None)
        .await;
    assert_eq!(export.status, StatusCode::OK, "{}", export.text);
    assert_eq!(export.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = export
        .text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(lines.len() >= 3, "{}", export.text);
    assert!(lines.iter().all(|line| line["customer_id"] == id.as_str()));
    let sequences: Vec<i64> = lines
        .iter()
        .map(|l| l["sequence"].as_i64().unwrap())
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn the_back_office_document_lists_exactly_the_json_operations_the_router_serves() {
    let app = app().await;
    let login = officer(&app).await;
    let id = ready_customer(&app, &login, "crm-doc").await;
    let doc = app
        .call(Method::GET, "/api/backoffice/openapi.json", None, None, &[])
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.json["openapi"].as_str().unwrap().starts_with("3.1"));
    let session = [
        ("cookie", login.cookie.as_str()),
        ("x-csrf-token", login.csrf.as_str()),
        ("idempotency-key", "doc-sweep"),
    ];
    // Logging out is checked last: it ends the session the sweep uses.
    let mut documented = app
        .sweep_documented_operations(
            &doc.json,
            |path, method| {
                (path != "/api/backoffice/session" || method != "delete")
                    .then(|| path.replace("{id}", &id).replace("{hit_id}", "no-such-hit"))
            },
            None,
            &session,
        )
        .await;
    let logout = app
        .call(
            Method::DELETE,
            "/api/backoffice/session",
            None,
            None,
            &session,
        )
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    documented.push("delete /api/backoffice/session".to_owned());
    documented.sort();
    assert_eq!(
        documented,
        vec![
            "delete /api/backoffice/session",
            "get /api/backoffice/audit/export",
            "get /api/backoffice/credits",
            "get /api/backoffice/customers",
            "get /api/backoffice/customers/{id}",
            "get /api/backoffice/customers/{id}/verification/quote",
            "post /api/backoffice/customers",
            "post /api/backoffice/customers/{id}/aml/decision",
            "post /api/backoffice/customers/{id}/aml/hits/{hit_id}/disposition",
            "post /api/backoffice/customers/{id}/restart",
            "post /api/backoffice/customers/{id}/verification",
            "post /api/backoffice/session",
            "put /api/backoffice/customers/{id}/risk",
        ]
    );
}
