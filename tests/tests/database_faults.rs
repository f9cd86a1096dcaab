//! The database failing under a running server, end to end against the real binary:
//!
//! - **PostgreSQL restarted under load.** Writers keep creating customers while the server's
//!   PostgreSQL (a private one, so no other test is disturbed) is stopped as for a restart, left
//!   down, and started again. Every request is answered: 2xx, or 503 `unavailable` with
//!   `Retry-After`, never a 500 or a dropped connection; `/readyz` goes red and green again;
//!   every customer whose creation was accepted can be read afterwards; and the workers resume,
//!   shown by a `customer.created` webhook arriving for every accepted customer.
//! - **SQLite's disk full, or its file system read-only.** The database sits on a small tmpfs of
//!   the test's own, which the test fills up or remounts read-only under the running server.
//!   Writes are answered 503 `unavailable` with `Retry-After` (the log names the cause), reads
//!   go on, nothing of a refused write is left behind, and writes work again once space is freed
//!   or the file system is writable again.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kyc_e2e::cluster::PostgresCluster;
use kyc_e2e::disk::SmallDisk;
use kyc_e2e::receiver::Receiver;
use kyc_e2e::{ServerProcess, firm_with_key, free_loopback_port, run_cli};
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

/// A CRM of one firm on a server, for the SQLite faults.
struct Crm {
    client: reqwest::Client,
    server: String,
    key: String,
    /// A compliance officer's back-office session.
    session: String,
}

impl Crm {
    async fn create(&self, external_id: &str) -> Outcome {
        create(
            &self.client,
            &self.server,
            &self.key,
            external_id.to_owned(),
        )
        .await
    }

    /// `GET /api/v1/customers/{id}`'s status.
    async fn read(&self, id: &str) -> StatusCode {
        self.client
            .get(format!("{}/api/v1/customers/{id}", self.server))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("read")
            .status()
    }

    /// How many customers the firm has, from the list's `total`.
    async fn total(&self) -> u64 {
        let response = self
            .client
            .get(format!(
                "{}/api/v1/customers?limit=1&include=total_count",
                self.server
            ))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("list");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("JSON");
        body["total_count"]
            .as_u64()
            .unwrap_or_else(|| panic!("{body}"))
    }
}

/// A server on a SQLite file on `disk`, a firm with a key and 10 credits, and one customer.
async fn sqlite_on(disk: &SmallDisk) -> (ServerProcess, Crm, String, String) {
    let database = format!("sqlite://{}", disk.path("kyc.db").display());
    let server = ServerProcess::start(&database, free_loopback_port(), &[]).await;
    let (firm, key) = firm_with_key(&database, "customers:read,customers:write");
    grant(&database, &firm, "opening").expect("the first grant");
    let mut crm = Crm {
        client: reqwest::Client::new(),
        server: server.base_url.clone(),
        key,
        session: String::new(),
    };
    crm.session = officer_session(&database, &firm, &crm).await;
    let before = crm.create("before-the-fault").await;
    assert_eq!(before.status, Some(StatusCode::CREATED), "{before:?}");
    (server, crm, database, firm)
}

/// `credits grant` of 10 through the CLI; its stderr when it fails.
fn grant(database: &str, firm: &str, reference: &str) -> Result<(), String> {
    let output = std::process::Command::new(kyc_e2e::server_binary())
        .args(["credits", "grant", "--firm", firm, "--credits", "10"])
        .args(["--reference", reference])
        .env("DATABASE_URL", database)
        .env("RUST_LOG", "error")
        .output()
        .expect("the CLI runs");
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// An officer of `firm` logged in to the back office: the session cookie.
async fn officer_session(database: &str, firm: &str, crm: &Crm) -> String {
    const PASSWORD: &str = "correct horse battery staple";
    let email = "officer@firm.example";
    run_cli(
        database,
        &[
            "user",
            "create",
            "--firm",
            firm,
            "--email",
            email,
            "--role",
            "compliance_officer",
            "--password-stdin",
        ],
        Some(PASSWORD),
    );
    let response = crm
        .client
        .post(format!("{}/api/backoffice/session", crm.server))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), StatusCode::OK);
    kyc_e2e::session_cookie(response.headers())
}

impl Crm {
    /// The firm's credits as the back office shows them.
    async fn credits(&self) -> Value {
        let response = self
            .client
            .get(format!("{}/api/backoffice/credits", self.server))
            .header("cookie", &self.session)
            .send()
            .await
            .expect("credits");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("JSON")
    }
}

/// Asserts a refused write was answered as a retryable outage.
fn assert_unavailable(outcome: &Outcome) {
    assert_eq!(
        outcome.status,
        Some(StatusCode::SERVICE_UNAVAILABLE),
        "{outcome:?}"
    );
    assert!(outcome.retry_after, "{outcome:?}");
    assert_eq!(outcome.code.as_deref(), Some("unavailable"), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_refuses_writes_with_503_and_leaves_nothing_half_written() {
    let Some(disk) = SmallDisk::mount(16) else {
        return;
    };
    let (server, crm, database, firm) = sqlite_on(&disk).await;
    let credits = crm.credits().await;
    let total = crm.total().await;

    disk.fill();
    // Pages the database already has on disk may still take a few writes: write until refused.
    let mut accepted = 0_u64;
    let refused = loop {
        let outcome = crm.create(&format!("while-full-{accepted}")).await;
        if outcome.status != Some(StatusCode::CREATED) {
            break outcome;
        }
        accepted += 1;
        assert!(accepted < 5_000, "the full disk never refused a write");
    };
    assert_unavailable(&refused);
    for again in 0..3 {
        assert_unavailable(&crm.create(&refused.external_id).await);
        assert_unavailable(&crm.create(&format!("also-while-full-{again}")).await);
    }
    assert_eq!(crm.total().await, total + accepted, "reads go on");
    let refused_grant = grant(&database, &firm, "while-full").expect_err("a full disk");
    assert!(
        refused_grant.contains("full"),
        "the CLI says why: {refused_grant}"
    );

    disk.free();
    assert_eq!(crm.total().await, total + accepted, "nothing half-written");
    assert_eq!(crm.credits().await, credits, "no credit half-granted");
    let created = crm.create(&refused.external_id).await;
    assert_eq!(
        created.status,
        Some(StatusCode::CREATED),
        "the refused customer was never written, so it is created now: {created:?}"
    );
    assert_eq!(
        crm.read(created.id.as_deref().expect("id")).await,
        StatusCode::OK
    );
    grant(&database, &firm, "after-freeing").expect("a grant once space is free");
    drop(server);
}

/// `serve` on `database`, expected to refuse to start: its stderr.
fn serve_refused(database: &str) -> String {
    let output = std::process::Command::new(kyc_e2e::server_binary())
        .arg("serve")
        .env("DATABASE_URL", database)
        .env("KYC_BIND", format!("127.0.0.1:{}", free_loopback_port()))
        .env("RUST_LOG", "error")
        .output()
        .expect("kyc-server runs");
    assert!(!output.status.success(), "serve refused to start");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The database's file system read-only while no server runs (a volume mounted read-only, a
/// file system the kernel remounted read-only after errors): `serve` and the CLI refuse to start
/// with a message that says what to check, and nothing is lost once it is writable again. (A
/// file system cannot be remounted read-only while a server holds the database open for
/// writing: the kernel refuses.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_read_only_file_system_refuses_to_start_with_a_clear_error() {
    let Some(disk) = SmallDisk::mount(16) else {
        return;
    };
    let (server, crm, database, firm) = sqlite_on(&disk).await;
    let credits = crm.credits().await;
    let total = crm.total().await;
    let mut server = server;
    server.terminate();

    disk.set_read_only(true);
    let refused = serve_refused(&database);
    for hint in ["SQLite", "writable", "-wal"] {
        assert!(refused.contains(hint), "{hint:?} in {refused}");
    }
    let refused_grant = grant(&database, &firm, "while-read-only").expect_err("read-only");
    assert!(refused_grant.contains("writable"), "{refused_grant}");

    disk.set_read_only(false);
    let server = ServerProcess::start(&database, free_loopback_port(), &[]).await;
    let crm = Crm {
        server: server.base_url.clone(),
        ..crm
    };
    assert_eq!(crm.total().await, total, "nothing lost");
    assert_eq!(crm.credits().await, credits, "nothing half-granted");
    let created = crm.create("after-read-only").await;
    assert_eq!(created.status, Some(StatusCode::CREATED), "{created:?}");
    drop(server);
}
