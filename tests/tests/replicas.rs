//! Limits that hold for the deployment, not per process: two `kyc-server serve` processes on one
//! PostgreSQL database share one API key's request windows and one account's failed logins.

use kyc_e2e::{Backend, ServerProcess, TestDatabase, firm_with_key, free_loopback_port, run_cli};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_keys_rate_limit() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    run_cli(&database.url, &["migrate"], None);
    let (_, key) = firm_with_key(&database.url, "customers:read");
    let limits = [("KYC_RATE_LIMIT_PER_MINUTE", "15")];
    let first = ServerProcess::start(&database.url, free_loopback_port(), &limits).await;
    let second = ServerProcess::start(&database.url, free_loopback_port(), &limits).await;
    let client = reqwest::Client::new();
    // Both replicas hammered at once, 30 requests each: one key's minute holds 15 in all.
    let mut requests = Vec::new();
    for n in 0..60 {
        let url = if n % 2 == 0 {
            first.url("/api/v1/customers?limit=1")
        } else {
            second.url("/api/v1/customers?limit=1")
        };
        let client = client.clone();
        let key = key.clone();
        requests.push(tokio::spawn(async move {
            let response = client.get(url).bearer_auth(key).send().await.expect("send");
            (
                response.status(),
                response.headers().contains_key("retry-after"),
            )
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for request in requests {
        match request.await.expect("request") {
            (StatusCode::OK, _) => ok += 1,
            (StatusCode::TOO_MANY_REQUESTS, true) => limited += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(
        (ok, limited),
        (15, 45),
        "one window of 15 for the two replicas"
    );
    drop(first);
    drop(second);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_on_two_replicas_lock_the_account_as_on_one() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    run_cli(&database.url, &["migrate"], None);
    let firm = run_cli(&database.url, &["firm", "create", "--name", "Acme"], None);
    run_cli(
        &database.url,
        &[
            "user",
            "create",
            "--firm",
            &firm,
            "--email",
            "officer@acme.example",
            "--role",
            "compliance_officer",
            "--password-stdin",
        ],
        Some("a-long-enough-password"),
    );
    let first = ServerProcess::start(&database.url, free_loopback_port(), &[]).await;
    let second = ServerProcess::start(&database.url, free_loopback_port(), &[]).await;
    let client = reqwest::Client::new();
    let login = |replica: &ServerProcess, password: &str| {
        client
            .post(replica.url("/api/backoffice/session"))
            .json(&json!({"email": "officer@acme.example", "password": password}))
            .send()
    };
    // Five failures, the account's allowance, spread over the two replicas: three and two.
    for n in 0..5 {
        let replica = if n % 2 == 0 { &first } else { &second };
        let answer = login(replica, "a-wrong-guess").await.expect("login");
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }
    // Each replica saw fewer than five, yet both now refuse even the right password.
    for replica in [&first, &second] {
        let answer = login(replica, "a-long-enough-password")
            .await
            .expect("login");
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(answer.headers().contains_key("retry-after"));
    }
    drop(first);
    drop(second);
    database.drop_database().await;
}
