//! The database failing under a running server, end to end against the real binary:
//!
//! - **PostgreSQL restarted under load.** Writers keep creating customers while the server's
//!   PostgreSQL (a private one, so no other test is disturbed) is stopped as for a restart, left
//!   down, and started again. Every request is answered: 2xx, or 503 `unavailable` with
//!   `Retry-After`, never a 500 or a dropped connection; `/readyz` goes red and green again;
//!   every customer whose creation was accepted can be read afterwards; and the workers resume,
//!   shown by a `customer.created` webhook arriving for every accepted customer.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kyc_e2e::cluster::PostgresCluster;
use kyc_e2e::receiver::Receiver;
use kyc_e2e::{ServerProcess, firm_with_key, free_loopback_port};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Concurrent writers during the restart.
const WRITERS: usize = 6;

/// How long the database stays down: longer than the pool's wait for a connection, so requests
/// that arrive during the outage are answered 503 rather than held until it returns.
const OUTAGE: Duration = Duration::from_secs(7);

/// One answered (or unanswered) creation.
#[derive(Debug)]
struct Outcome {
    status: Option<StatusCode>,
    retry_after: bool,
    code: Option<String>,
    /// The customer's id, when accepted.
    id: Option<String>,
    external_id: String,
}

async fn create(client: &reqwest::Client, server: &str, key: &str, external_id: String) -> Outcome {
    let sent = client
        .post(format!("{server}/api/v1/customers"))
        .bearer_auth(key)
        .json(&json!({
            "externalId": external_id,
            "fullName": "Jane Doe",
            "email": format!("{external_id}@example.com"),
        }))
        .send()
        .await;
    let Ok(response) = sent else {
        return Outcome {
            status: None,
            retry_after: false,
            code: None,
            id: None,
            external_id,
        };
    };
    let status = response.status();
    let retry_after = response.headers().contains_key("retry-after");
    let body: Value = response.json().await.unwrap_or(Value::Null);
    Outcome {
        status: Some(status),
        retry_after,
        code: body["error"]["code"].as_str().map(str::to_owned),
        id: status
            .is_success()
            .then(|| body["id"].as_str().map(str::to_owned))
            .flatten(),
        external_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_under_load_answers_503_then_recovers_and_loses_no_accepted_write() {
    let Some(cluster) = PostgresCluster::start() else {
        return;
    };
    let database = cluster.url("postgres");
    let receiver = Receiver::start().await;
    let server = ServerProcess::start(
        &database,
        free_loopback_port(),
        &[
            ("KYC_WEBHOOK_TIMEOUT", "2s"),
            ("KYC_WEBHOOK_RETRY_SCHEDULE", "200ms,500ms,1s,2s,5s,10s"),
        ],
    )
    .await;
    let (_firm, key) = firm_with_key(&database, "customers:read,customers:write,webhooks:manage");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let subscribed = client
        .post(server.url("/api/v1/webhook-endpoints"))
        .bearer_auth(&key)
        .json(&json!({"url": receiver.url("/hooks"), "events": ["customer.created"]}))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(subscribed.status(), StatusCode::CREATED);

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (client, server, key, stop) = (
                client.clone(),
                server.base_url.clone(),
                key.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let external_id = format!("restart-{writer}-{n}");
                    outcomes.push(create(&client, &server, &key, external_id).await);
                    n += 1;
                }
                outcomes
            })
        })
        .collect();
    let readiness = {
        let (client, url, stop) = (client.clone(), server.url("/readyz"), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let status = client
                    .get(&url)
                    .send()
                    .await
                    .map(|response| response.status());
                seen.push(status.ok());
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            seen
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    let cluster = Arc::new(cluster);
    let down = cluster.clone();
    tokio::task::spawn_blocking(move || down.stop())
        .await
        .expect("stop");
    let stopped_at = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    let up = cluster.clone();
    tokio::task::spawn_blocking(move || up.start_again())
        .await
        .expect("start");
    let restarted_after = stopped_at.elapsed();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::SeqCst);

    let mut outcomes = Vec::new();
    for writer in writers {
        let mine = writer.await.expect("writer");
        // After the restart each writer was accepted again.
        let last = mine.last().expect("the writer wrote");
        assert!(
            last.id.is_some(),
            "accepted again after the restart: {last:?}"
        );
        outcomes.extend(mine);
    }
    let readiness = readiness.await.expect("readiness poller");

    // Every request answered, and only with success or a retryable 503.
    let unanswered = outcomes.iter().filter(|o| o.status.is_none()).count();
    assert_eq!(unanswered, 0, "every request is answered");
    let refused: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.status == Some(StatusCode::SERVICE_UNAVAILABLE))
        .collect();
    for outcome in &outcomes {
        let status = outcome.status.expect("answered");
        assert!(
            status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE,
            "{outcome:?}"
        );
    }
    assert!(
        !refused.is_empty(),
        "the outage of {restarted_after:?} was felt"
    );
    for outcome in &refused {
        assert!(outcome.retry_after, "503 with Retry-After: {outcome:?}");
        assert_eq!(outcome.code.as_deref(), Some("unavailable"), "{outcome:?}");
    }
    let accepted: Vec<&Outcome> = outcomes.iter().filter(|o| o.id.is_some()).collect();
    assert!(
        accepted.len() > WRITERS * 4,
        "the writers made progress: {} accepted",
        accepted.len()
    );

    // /readyz: ready, then not (503), then ready again.
    let first_red = readiness
        .iter()
        .position(|s| *s == Some(StatusCode::SERVICE_UNAVAILABLE))
        .unwrap_or_else(|| panic!("/readyz never went red: {readiness:?}"));
    assert_eq!(readiness[0], Some(StatusCode::OK), "{readiness:?}");
    assert!(
        readiness[first_red..].contains(&Some(StatusCode::OK)),
        "/readyz green again after the restart: {readiness:?}"
    );
    assert_eq!(
        readiness.last(),
        Some(&Some(StatusCode::OK)),
        "{readiness:?}"
    );

    // No accepted write lost: every accepted customer reads back as accepted.
    for outcome in &accepted {
        let id = outcome.id.as_deref().expect("id");
        let response = client
            .get(server.url(&format!("/api/v1/customers/{id}")))
            .bearer_auth(&key)
            .send()
            .await
            .expect("read back");
        assert_eq!(response.status(), StatusCode::OK, "{outcome:?}");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["external_id"], outcome.external_id.as_str(), "{body}");
    }

    // The workers resumed: every accepted customer's creation reaches the webhook endpoint.
    let expected: HashSet<String> = accepted.iter().filter_map(|o| o.id.clone()).collect();
    receiver
        .wait_for(
            Duration::from_secs(60),
            "a customer.created webhook for every accepted customer",
            |received| {
                let delivered: HashSet<String> = received
                    .iter()
                    .filter_map(|r| r.json()["data"]["id"].as_str().map(str::to_owned))
                    .collect();
                expected.is_subset(&delivered)
            },
        )
        .await;
    drop(server);
}
