//! The simulator's own behaviour: it authenticates like Sumsub, answers the sandbox endpoints, and
//! sends webhooks that this crate's verifier accepts and parses into the expected events.

mod common;

use std::time::Duration;

use common::*;
use kyc_domain::ports::IdentityProvider;
use kyc_domain::provider::{ProviderEvent, ProviderEventKind, RejectType, ReviewAnswer};
use kyc_sumsub::signing::request_signature;
use kyc_sumsub::webhook::parse_event;
use kyc_sumsub::{DigestAlgorithm, WebhookVerifier};
use reqwest::Method;
use serde_json::json;

async fn raw(
    base: &str,
    path: &str,
    ts: i64,
    signed_body: &str,
    sent_body: &str,
    signature: Option<&str>,
) -> (u16, serde_json::Value) {
    let ts = ts.to_string();
    let computed = request_signature(
        SECRET_KEY.as_bytes(),
        &ts,
        "POST",
        path,
        signed_body.as_bytes(),
    );
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("x-app-token", APP_TOKEN)
        .header("x-app-access-ts", &ts)
        .header("x-app-access-sig", signature.unwrap_or(&computed))
        .header("content-type", "application/json")
        .body(sent_body.to_owned())
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or_default(),
    )
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

const CREATE: &str = "/resources/applicants?levelName=basic-kyc-level";
const BODY: &str = r#"{"externalUserId":"user-1"}"#;

#[tokio::test]
async fn a_correctly_signed_request_is_accepted() {
    let sim = start_simulator("", |_| {}).await;
    let (status, body) = raw(&sim.base_url, CREATE, now(), BODY, BODY, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["externalUserId"], "user-1");
    assert_ne!(body["id"], body["inspectionId"]);
    assert_eq!(body["review"]["reviewStatus"], "init");
}

#[tokio::test]
async fn a_wrong_signature_is_refused_with_error_code_4003() {
    let sim = start_simulator("", |_| {}).await;
    let wrong = "0".repeat(64);
    let (status, body) = raw(&sim.base_url, CREATE, now(), BODY, BODY, Some(&wrong)).await;
    assert_eq!(status, 401);
    assert_eq!(body["errorCode"], 4003);
    assert_eq!(body["description"], "Request signature mismatch");
    assert_eq!(body["code"], 401);
}

#[tokio::test]
async fn a_stale_or_future_timestamp_is_refused() {
    let sim = start_simulator("", |_| {}).await;
    for ts in [now() - 120, now() + 120] {
        let (status, _) = raw(&sim.base_url, CREATE, ts, BODY, BODY, None).await;
        assert_eq!(status, 401);
    }
    let (status, _) = raw(&sim.base_url, CREATE, now() - 30, BODY, BODY, None).await;
    assert_eq!(status, 200, "30 s of skew is tolerated");
}

#[tokio::test]
async fn a_body_changed_after_signing_is_refused() {
    let sim = start_simulator("", |_| {}).await;
    let (status, body) = raw(
        &sim.base_url,
        CREATE,
        now(),
        BODY,
        r#"{"externalUserId":"user-2"}"#,
        None,
    )
    .await;
    assert_eq!((status, body["errorCode"].clone()), (401, json!(4003)));
}

#[tokio::test]
async fn a_signature_without_the_mount_prefix_is_refused() {
    let sim = start_simulator("/sim/sumsub", |_| {}).await;
    // Signed over `/resources/...` but received as `/sim/sumsub/resources/...`.
    let (status, _) = raw(&sim.base_url, CREATE, now(), BODY, BODY, None).await;
    assert_eq!(status, 401);
    let (status, _) = signed(&sim.base_url, Method::POST, CREATE, BODY).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_duplicate_external_user_id_answers_the_exact_409() {
    let sim = start_simulator("", |_| {}).await;
    let (_, created) = signed(&sim.base_url, Method::POST, CREATE, BODY).await;
    let (status, body) = signed(&sim.base_url, Method::POST, CREATE, BODY).await;
    assert_eq!(status, 409);
    assert_eq!(
        body["description"],
        format!(
            "Applicant with external user id 'user-1' already exists: {}",
            created["id"].as_str().unwrap()
        )
    );
}

#[tokio::test]
async fn the_sandbox_endpoints_answer_as_documented() {
    let sim = start_simulator("", |_| {}).await;
    let base = &sim.base_url;
    let (_, created) = signed(base, Method::POST, CREATE, BODY).await;
    let id = created["id"].as_str().unwrap();
    let (status, by_id) = signed(
        base,
        Method::GET,
        &format!("/resources/applicants/{id}/one"),
        "",
    )
    .await;
    assert_eq!(
        (status, by_id["externalUserId"].clone()),
        (200, json!("user-1"))
    );
    let (_, review) = signed(
        base,
        Method::GET,
        &format!("/resources/applicants/{id}/status"),
        "",
    )
    .await;
    assert_eq!(review["reviewStatus"], "init");
    let (status, link) = signed(
        base,
        Method::POST,
        "/resources/sdkIntegrations/levels/basic-kyc-level/websdkLink?ttlInSecs=600&externalUserId=user-1&lang=en",
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(link["url"].as_str().unwrap().contains("/websdk/p/sbx_"));
    let (_, token) = signed(
        base,
        Method::POST,
        "/resources/accessTokens/sdk",
        r#"{"userId":"user-1","levelName":"basic-kyc-level","ttlInSecs":600}"#,
    )
    .await;
    assert!(token["token"].as_str().unwrap().starts_with("_act-sbx-"));
    let (_, token) = signed(
        base,
        Method::POST,
        "/resources/accessTokens?userId=user-1&levelName=basic-kyc-level&ttlInSecs=600",
        "",
    )
    .await;
    assert_eq!(token["userId"], "user-1");
    let (status, _) = signed(
        base,
        Method::POST,
        &format!("/resources/applicants/{id}/status/testCompleted"),
        r#"{"reviewAnswer":"GREEN"}"#,
    )
    .await;
    assert_eq!(status, 400, "rejectLabels is required");
    let (status, _) = signed(
        base,
        Method::POST,
        &format!("/resources/applicants/{id}/reset"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = signed(
        base,
        Method::GET,
        "/resources/applicants/ffffffffffffffffffffffff/one",
        "",
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn hits_can_be_reviewed_while_the_applicant_is_on_hold() {
    let sim = start_simulator("", |_| {}).await;
    let client = client_for(&sim.base_url);
    let applicant = client
        .create_applicant(&request("yellow-1", "Joelamltest Yellow"))
        .await
        .unwrap();
    let link = client
        .verification_link(&applicant.external_user_id, "basic-kyc-level", 600)
        .await
        .unwrap();
    press(&link, "approve").await;
    let base = &sim.base_url;
    let (_, case) = signed(
        base,
        Method::GET,
        &format!("/resources/api/applicants/{}/amlCase", applicant.id),
        "",
    )
    .await;
    let (_, status) = signed(
        base,
        Method::GET,
        &format!("/resources/applicants/{}/status", applicant.id),
        "",
    )
    .await;
    assert_eq!(
        status["reviewStatus"], "onHold",
        "a non-exact hit waits for a person"
    );
    let hit = case["hits"][0]["id"].as_str().unwrap();
    let case_id = case["id"].as_str().unwrap();
    let path = format!("/resources/amlCases/{case_id}/hits");
    let (status, body) = signed(
        base,
        Method::PATCH,
        &path,
        r#"{"hitReviews":[{"hitId":"XXXXXXXXXX","matchStatus":"false_positive"}]}"#,
    )
    .await;
    assert_eq!(
        (status, body["description"].clone()),
        (400, json!("Invalid id 'XXXXXXXXXX'"))
    );
    let review = json!({"hitReviews": [{"hitId": hit, "matchStatus": "false_positive", "whitelisted": true, "note": "n"}]});
    let (status, body) = signed(base, Method::PATCH, &path, &review.to_string()).await;
    assert_eq!((status, body), (200, json!({"updated": 1})));
    let (_, case) = signed(
        base,
        Method::GET,
        &format!("/resources/api/applicants/{}/amlCase", applicant.id),
        "",
    )
    .await;
    assert_eq!(case["hits"][0]["review"]["matchStatus"], "false_positive");
}

// --- webhooks ---------------------------------------------------------------------------------

fn events(received: &[Received], algorithm: DigestAlgorithm) -> Vec<ProviderEvent> {
    let verifier = WebhookVerifier::new(secret(WEBHOOK_SECRET));
    received
        .iter()
        .map(|delivery| {
            assert_eq!(
                verifier.verify(&delivery.headers, &delivery.body),
                Ok(algorithm)
            );
            parse_event(&delivery.body).unwrap()
        })
        .collect()
}

async fn flow(
    knobs: kyc_sumsub::simulator::DeliveryKnobs,
    algorithm: DigestAlgorithm,
    name: &str,
    action: &str,
) -> (Receiver, RunningSim, kyc_domain::ports::Applicant) {
    let (receiver, target) = start_receiver(algorithm).await;
    let sim = start_simulator("/sim/sumsub", |config| {
        config.webhook = Some(target);
        config.knobs = knobs;
    })
    .await;
    let client = client_for(&sim.base_url);
    let applicant = client
        .create_applicant(&request("hook-1-a1", name))
        .await
        .unwrap();
    let link = client
        .verification_link(&applicant.external_user_id, "basic-kyc-level", 600)
        .await
        .unwrap();
    press(&link, action).await;
    (receiver, sim, applicant)
}

fn verdict(event: &ProviderEvent) -> (ReviewAnswer, Option<RejectType>, Vec<String>) {
    let ProviderEventKind::Reviewed(verdict) = &event.kind else {
        panic!("expected a verdict, got {:?}", event.kind)
    };
    (
        verdict.answer,
        verdict.reject_type,
        verdict
            .reject_labels
            .iter()
            .map(|l| l.as_str().to_owned())
            .collect(),
    )
}

#[tokio::test]
async fn approval_sends_pending_then_green_signed_with_each_algorithm() {
    for algorithm in [
        DigestAlgorithm::Sha1,
        DigestAlgorithm::Sha256,
        DigestAlgorithm::Sha512,
    ] {
        let (receiver, _sim, applicant) =
            flow(fast_knobs(), algorithm, "Jane Doe", "approve").await;
        let received = receiver.wait_for(2).await;
        let events = events(&received, algorithm);
        assert_eq!(events[0].kind, ProviderEventKind::Pending);
        assert_eq!(verdict(&events[1]), (ReviewAnswer::Green, None, vec![]));
        assert!(events[0].created_at < events[1].created_at);
        for event in &events {
            assert_eq!(event.applicant_id.as_ref(), Some(&applicant.id));
            assert_eq!(
                event.external_user_id.as_ref(),
                Some(&applicant.external_user_id)
            );
        }
        let body: serde_json::Value = serde_json::from_slice(&received[1].body).unwrap();
        assert_eq!(body["reviewStatus"], "completed");
        assert_eq!(body["sandboxMode"], true);
        assert!(body["createdAtMs"].as_str().unwrap().len() == 23);
    }
}

#[tokio::test]
async fn rejections_and_aml_outcomes_carry_their_verdicts() {
    use ReviewAnswer::Red;
    let cases = [
        (
            "Jane Doe",
            "reject-retry",
            Some((
                Red,
                Some(RejectType::Retry),
                vec!["UNSATISFACTORY_PHOTOS".to_owned()],
            )),
        ),
        (
            "Jane Doe",
            "reject-final",
            Some((Red, Some(RejectType::Final), vec!["FORGERY".to_owned()])),
        ),
        (
            "Joelamltest Red",
            "approve",
            Some((
                Red,
                Some(RejectType::Final),
                vec!["COMPROMISED_PERSONS".to_owned()],
            )),
        ),
        (
            "Joelamltest Testpep",
            "approve",
            Some((Red, Some(RejectType::Final), vec!["PEP".to_owned()])),
        ),
        (
            "Joelamltest Testsanc",
            "approve",
            Some((Red, Some(RejectType::Final), vec!["SANCTIONS".to_owned()])),
        ),
        ("Jane Doe", "aml-hit", None),
        ("Joelamltest Yellow", "approve", None),
    ];
    for (name, action, expected) in cases {
        let (receiver, _sim, _) = flow(fast_knobs(), DigestAlgorithm::Sha256, name, action).await;
        let events = events(&receiver.wait_for(2).await, DigestAlgorithm::Sha256);
        assert_eq!(
            events[0].kind,
            ProviderEventKind::Pending,
            "{name} {action}"
        );
        match expected {
            Some(expected) => assert_eq!(verdict(&events[1]), expected, "{name} {action}"),
            None => assert_eq!(events[1].kind, ProviderEventKind::OnHold, "{name} {action}"),
        }
    }
}

#[tokio::test]
async fn duplicate_delivery_repeats_the_same_bytes_so_keys_match() {
    let knobs = kyc_sumsub::simulator::DeliveryKnobs {
        duplicate: true,
        ..fast_knobs()
    };
    let (receiver, _sim, _) = flow(knobs, DigestAlgorithm::Sha256, "Jane Doe", "approve").await;
    let events = events(&receiver.wait_for(4).await, DigestAlgorithm::Sha256);
    assert_eq!(events[0].key, events[1].key);
    assert_eq!(events[2].key, events[3].key);
    assert_ne!(events[0].key, events[2].key);
}

#[tokio::test]
async fn out_of_order_delivery_sends_the_verdict_first_with_the_later_timestamp() {
    let knobs = kyc_sumsub::simulator::DeliveryKnobs {
        out_of_order: true,
        ..fast_knobs()
    };
    let (receiver, _sim, _) = flow(knobs, DigestAlgorithm::Sha256, "Jane Doe", "approve").await;
    let events = events(&receiver.wait_for(2).await, DigestAlgorithm::Sha256);
    assert!(matches!(events[0].kind, ProviderEventKind::Reviewed(_)));
    assert_eq!(events[1].kind, ProviderEventKind::Pending);
    assert!(events[1].created_at < events[0].created_at);
}

#[tokio::test]
async fn green_later_turned_red_sends_a_newer_red_final() {
    let knobs = kyc_sumsub::simulator::DeliveryKnobs {
        green_then_red: true,
        ..fast_knobs()
    };
    let (receiver, sim, applicant) =
        flow(knobs, DigestAlgorithm::Sha256, "Jane Doe", "approve").await;
    let events = events(&receiver.wait_for(3).await, DigestAlgorithm::Sha256);
    assert_eq!(verdict(&events[1]).0, ReviewAnswer::Green);
    assert_eq!(
        verdict(&events[2]),
        (
            ReviewAnswer::Red,
            Some(RejectType::Final),
            vec!["FRAUDULENT_PATTERNS".to_owned()]
        )
    );
    assert!(events[1].created_at < events[2].created_at);
    let (_, status) = signed(
        &sim.base_url,
        Method::GET,
        &format!("/resources/applicants/{}/status", applicant.id),
        "",
    )
    .await;
    assert_eq!(status["reviewResult"]["reviewAnswer"], "RED");
}

#[tokio::test]
async fn a_failed_delivery_is_resent_along_the_schedule_until_accepted() {
    let (receiver, target) = start_receiver(DigestAlgorithm::Sha256).await;
    *receiver.answers.lock().unwrap() = vec![500, 503];
    let sim = start_simulator("", |config| {
        config.webhook = Some(target);
        config.knobs = fast_knobs();
    })
    .await;
    let (_, created) = signed(&sim.base_url, Method::POST, CREATE, BODY).await;
    let id = created["id"].as_str().unwrap();
    signed(
        &sim.base_url,
        Method::POST,
        &format!("/resources/applicants/{id}/reset"),
        "",
    )
    .await;
    let received = receiver.wait_for(3).await;
    assert_eq!(
        received[0].body, received[2].body,
        "a resend carries the same bytes"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let attempts: Vec<_> = sim
        .simulator
        .deliveries()
        .iter()
        .map(|d| (d.attempt, d.status, d.delivered))
        .collect();
    assert_eq!(
        attempts,
        [
            (1, Some(500), false),
            (2, Some(503), false),
            (3, Some(200), true)
        ]
    );
}

#[tokio::test]
async fn a_delivery_that_times_out_is_resent() {
    let (receiver, target) = start_receiver(DigestAlgorithm::Sha256).await;
    *receiver.first_delay.lock().unwrap() = Some(Duration::from_millis(800));
    let sim = start_simulator("", |config| {
        config.webhook = Some(target);
        config.knobs = fast_knobs();
    })
    .await;
    let (_, created) = signed(&sim.base_url, Method::POST, CREATE, BODY).await;
    let id = created["id"].as_str().unwrap();
    signed(
        &sim.base_url,
        Method::POST,
        &format!("/resources/applicants/{id}/status/pending"),
        "",
    )
    .await;
    // The first try is abandoned at the 300 ms timeout (the receiver never finishes it); the
    // resend is the one that lands.
    receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let deliveries = sim.simulator.deliveries();
    assert!(
        deliveries
            .iter()
            .any(|d| d.attempt == 1 && d.status.is_none()),
        "{deliveries:?}"
    );
    assert!(
        deliveries.iter().any(|d| d.attempt == 2 && d.delivered),
        "{deliveries:?}"
    );
}

#[tokio::test]
async fn shutdown_stops_pending_resends() {
    let (receiver, target) = start_receiver(DigestAlgorithm::Sha256).await;
    *receiver.answers.lock().unwrap() = vec![500; 10];
    let sim = start_simulator("", |config| {
        config.webhook = Some(target);
        config.knobs = kyc_sumsub::simulator::DeliveryKnobs {
            retry_schedule_ms: vec![150, 150, 150],
            ..fast_knobs()
        };
    })
    .await;
    let (_, created) = signed(&sim.base_url, Method::POST, CREATE, BODY).await;
    let id = created["id"].as_str().unwrap();
    signed(
        &sim.base_url,
        Method::POST,
        &format!("/resources/applicants/{id}/reset"),
        "",
    )
    .await;
    receiver.wait_for(1).await;
    sim.simulator.shutdown();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.received().len(), 1, "no resend after shutdown");
}

#[tokio::test]
async fn knobs_can_be_changed_through_the_control_endpoint() {
    let sim = start_simulator("", |_| {}).await;
    let url = format!("{}/_sim/knobs", sim.base_url);
    let knobs = json!({"duplicate": true, "delay_ms": 5, "retry_schedule_ms": [1, 2]});
    let response = reqwest::Client::new()
        .put(&url)
        .json(&knobs)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let current = sim.simulator.knobs();
    assert!(current.duplicate && !current.out_of_order);
    assert_eq!(
        (
            current.delay_ms,
            current.retry_schedule_ms,
            current.timeout_ms
        ),
        (5, vec![1, 2], 5_000)
    );
    let read: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(read["duplicate"], true);
}

#[tokio::test]
async fn an_unknown_or_expired_link_shows_a_page_not_a_flow() {
    let sim = start_simulator("", |_| {}).await;
    let missing = reqwest::get(format!("{}/websdk/p/sbx_nope", sim.base_url))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let client = client_for(&sim.base_url);
    let link = client
        .verification_link(
            &kyc_domain::ids::ExternalUserId::from_provider("u"),
            "basic-kyc-level",
            0,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(reqwest::get(&link).await.unwrap().status(), 410);
}
