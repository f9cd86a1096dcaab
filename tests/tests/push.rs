//! Push delivery end to end against the real binary over HTTP (api.md §2): signed webhooks that
//! a receiver verifies with its own Standard Webhooks implementation, retried after failures and
//! timeouts, `410 Gone` disabling the endpoint, a burst delivered whole and in per-customer order,
//! two replicas sharing the work, a replica killed mid-send, secret rotation, and the event feed
//! and the `updated_since` poll walked while writers run.
//!
//! Retries are compressed with `KYC_WEBHOOK_RETRY_SCHEDULE` and attempts cut short with
//! `KYC_WEBHOOK_TIMEOUT`; the receiver runs in this test process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use kyc_e2e::receiver::{Answer, Received, Receiver};
use kyc_e2e::{
    Backend, Server, ServerProcess, TestDatabase, firm_with_key, free_loopback_port, run_cli,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Quick retries and short attempts, so a test sees a whole retry schedule.
const QUICK: [(&str, &str); 2] = [
    (
        "KYC_WEBHOOK_RETRY_SCHEDULE",
        "200ms,200ms,300ms,300ms,500ms",
    ),
    ("KYC_WEBHOOK_TIMEOUT", "1s"),
];

const SETTLE: Duration = Duration::from_secs(30);

const CRM_SCOPES: &str = "customers:read,customers:write,webhooks:manage";

/// A client of one firm's API, on any process of the deployment.
struct Crm {
    base_url: String,
    key: String,
    client: reqwest::Client,
}

impl Crm {
    fn new(base_url: &str, key: &str) -> Self {
        Self {
            base_url: base_url.to_owned(),
            key: key.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Registers an endpoint; returns (id, secret).
    async fn subscribe(&self, url: &str, events: Option<&[&str]>) -> (String, String) {
        let mut body = json!({"url": url});
        if let Some(events) = events {
            body["events"] = json!(events);
        }
        let (status, created) = self
            .send(
                reqwest::Method::POST,
                "/api/v1/webhook-endpoints",
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        (
            created["id"].as_str().expect("id").to_owned(),
            created["secret"].as_str().expect("secret").to_owned(),
        )
    }

    async fn create(&self, external_id: &str) -> String {
        let (status, body) = self
            .send(
                reqwest::Method::POST,
                "/api/v1/customers",
                Some(json!({"externalId": external_id, "fullName": "Jane Doe", "email": format!("{external_id}@example.com")})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    async fn set_phone(&self, id: &str, n: u32) {
        let (status, body) = self
            .send(
                reqwest::Method::PATCH,
                &format!("/api/v1/customers/{id}"),
                Some(json!({"phone": phone(n)})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn endpoint(&self, id: &str) -> Value {
        let (status, body) = self
            .send(
                reqwest::Method::GET,
                &format!("/api/v1/webhook-endpoints/{id}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn deliveries(&self, id: &str) -> Vec<Value> {
        let (status, body) = self
            .send(
                reqwest::Method::GET,
                &format!("/api/v1/webhook-endpoints/{id}/deliveries?limit=200"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].as_array().expect("data").clone()
    }
}

fn phone(n: u32) -> String {
    format!("+614{n:08}")
}

fn ids(received: &[Received]) -> Vec<String> {
    received.iter().map(Received::id).collect()
}

async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + SETTLE;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn failures_timeouts_and_gone(backend: Backend) {
    let Some(server) = Server::start(backend, &QUICK).await else {
        return;
    };
    let firm = server.create_firm("Acme");
    let crm = Crm::new(&server.base_url, &server.create_api_key(&firm, CRM_SCOPES));
    let receiver = Receiver::start().await;
    receiver.script(
        "/flaky",
        &[
            Answer::Status(500),
            Answer::Status(503),
            Answer::Status(429),
        ],
    );
    receiver.script("/slow", &[Answer::Stall(Duration::from_secs(3))]);
    receiver.script("/gone", &[Answer::Status(410)]);
    let (flaky, flaky_secret) = crm.subscribe(&receiver.url("/flaky"), None).await;
    let (slow, slow_secret) = crm.subscribe(&receiver.url("/slow"), None).await;
    let (gone, _) = crm.subscribe(&receiver.url("/gone"), None).await;

    let customer = crm.create("crm-1").await;
    receiver
        .wait_for(SETTLE, "the flaky and slow receivers to get it", |got| {
            let ok = |path: &str| got.iter().any(|r| r.path == path && r.answered == 200);
            ok("/flaky") && ok("/slow") && got.iter().filter(|r| r.path == "/slow").count() >= 2
        })
        .await;
    let flaky_got = receiver.received_at("/flaky");
    assert_eq!(flaky_got.len(), 4, "three failures, then the success");
    assert!(flaky_got.iter().all(|r| r.verifies_with(&flaky_secret)));
    let first = flaky_got[0].id();
    assert!(
        flaky_got.iter().all(|r| r.id() == first),
        "one webhook-id across retries"
    );
    let event = flaky_got[3].json();
    assert_eq!(event["type"], "customer.created");
    assert_eq!(event["id"], first.as_str());
    assert_eq!(event["data"]["id"], customer.as_str());
    assert_eq!(event["data"]["external_id"], "crm-1");
    assert!(event["timestamp"].is_string());
    for pair in flaky_got.windows(2) {
        assert!(
            pair[1].at >= pair[0].at + Duration::from_millis(100),
            "backoff between tries"
        );
    }
    let slow_got = receiver.received_at("/slow");
    assert!(
        slow_got
            .iter()
            .all(|r| r.verifies_with(&slow_secret) && r.id() == first)
    );

    // The delivery log tells the same story.
    let log = crm.deliveries(&flaky).await;
    assert_eq!(log.len(), 4, "{log:?}");
    assert_eq!(log[0]["status"], "succeeded");
    assert_eq!(log[0]["attempt"], 4);
    assert_eq!(log[0]["response_status"], 200);
    assert!(log[1..].iter().all(|d| d["status"] == "failed"));
    let slow_log = crm.deliveries(&slow).await;
    let timed_out = slow_log.last().expect("the first attempt");
    assert_eq!(timed_out["response_status"], Value::Null, "{slow_log:?}");
    assert!(
        timed_out["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out"),
        "{slow_log:?}"
    );
    assert!(timed_out["duration_ms"].as_u64().unwrap_or_default() >= 900);

    // 410 disabled the endpoint: one attempt, and nothing more while it stays disabled.
    wait_until("the endpoint to be disabled", || async {
        crm.endpoint(&gone).await["enabled"] == false
    })
    .await;
    crm.set_phone(&customer, 1).await;
    receiver
        .wait_for(SETTLE, "the update at the live endpoints", |got| {
            got.iter()
                .filter(|r| r.path == "/flaky" && r.answered == 200)
                .count()
                == 2
        })
        .await;
    assert_eq!(receiver.received_at("/gone").len(), 1);

    // Enabled again, it gets what waited, in order; a replay sends one event again, same id.
    let (status, body) = crm
        .send(
            reqwest::Method::PATCH,
            &format!("/api/v1/webhook-endpoints/{gone}"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    receiver
        .wait_for(SETTLE, "the waiting message after re-enabling", |got| {
            got.iter()
                .filter(|r| r.path == "/gone" && r.answered == 200)
                .count()
                >= 1
        })
        .await;
    let (status, body) = crm
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/webhook-endpoints/{flaky}/replay"),
            Some(json!({"event_id": first})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    receiver
        .wait_for(SETTLE, "the replay", |got| {
            got.iter()
                .filter(|r| r.path == "/flaky" && r.id() == first)
                .count()
                == 5
        })
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_timeouts_cut_short_and_410_disables_on_postgres() {
    failures_timeouts_and_gone(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_timeouts_cut_short_and_410_disables_on_sqlite() {
    failures_timeouts_and_gone(Backend::Sqlite).await;
}

/// Drives `changes` phone changes spread over `customers` customers, each customer's in order,
/// eight requests in flight; returns each customer's phones in the order they were set.
async fn burst(
    base_url: &str,
    key: &str,
    prefix: &str,
    customers: u32,
    changes: u32,
) -> HashMap<String, Vec<String>> {
    let crm = Crm::new(base_url, key);
    let mut ids = Vec::new();
    for n in 0..customers {
        ids.push(crm.create(&format!("{prefix}-{n}")).await);
    }
    let per_customer = changes / customers;
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..8 {
        let lane_ids: Vec<String> = ids.iter().skip(lane).step_by(8).cloned().collect();
        let crm = Crm::new(base_url, key);
        tasks.spawn(async move {
            let mut order = HashMap::new();
            for round in 0..per_customer {
                for id in &lane_ids {
                    crm.set_phone(id, round).await;
                    order
                        .entry(id.clone())
                        .or_insert_with(Vec::new)
                        .push(phone(round));
                }
            }
            order
        });
    }
    let mut order = HashMap::new();
    for lane in tasks.join_all().await {
        order.extend(lane);
    }
    order
}

/// Every update event at `path`, per customer, in arrival order (replays of one id kept once).
fn phones_received(received: &[Received]) -> HashMap<String, Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut phones: HashMap<String, Vec<String>> = HashMap::new();
    for r in received.iter().filter(|r| r.answered == 200) {
        if !seen.insert(r.id()) {
            continue;
        }
        let event = r.json();
        if event["type"] == "customer.updated" {
            phones
                .entry(event["data"]["id"].as_str().expect("id").to_owned())
                .or_default()
                .push(event["data"]["phone"].as_str().expect("phone").to_owned());
        }
    }
    phones
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_a_thousand_changes_arrives_whole_and_in_each_customers_order() {
    let Some(server) = Server::start(Backend::Postgres, &QUICK).await else {
        return;
    };
    let firm = server.create_firm("Acme");
    let key = server.create_api_key(&firm, CRM_SCOPES);
    let crm = Crm::new(&server.base_url, &key);
    let receiver = Receiver::start().await;
    // A receiver that fails now and then, to mix retries into the ordering.
    receiver.script(
        "/crm",
        &[
            Answer::Status(500),
            Answer::Status(200),
            Answer::Status(502),
        ],
    );
    let (_, secret) = crm.subscribe(&receiver.url("/crm"), None).await;
    let sent = burst(&server.base_url, &key, "burst", 50, 1000).await;
    receiver
        .wait_for(SETTLE * 2, "1,050 deliveries", |got| {
            got.iter()
                .filter(|r| r.answered == 200)
                .map(Received::id)
                .collect::<BTreeSet<_>>()
                .len()
                >= 1050
        })
        .await;
    let received = receiver.received();
    assert!(received.iter().all(|r| r.verifies_with(&secret)));
    let delivered: BTreeSet<String> = received
        .iter()
        .filter(|r| r.answered == 200)
        .map(Received::id)
        .collect();
    assert_eq!(
        delivered.len(),
        1050,
        "50 created and 1,000 updated, none lost"
    );
    assert_eq!(
        phones_received(&received),
        sent,
        "each customer's changes in the order made"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_send_each_message_once_between_them() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    run_cli(&database.url, &["migrate"], None);
    let (_, key) = firm_with_key(&database.url, CRM_SCOPES);
    let receiver = Receiver::start().await;
    let first = ServerProcess::start(&database.url, free_loopback_port(), &QUICK).await;
    let second = ServerProcess::start(&database.url, free_loopback_port(), &QUICK).await;
    let crm = Crm::new(&first.base_url, &key);
    let (_, secret) = crm.subscribe(&receiver.url("/crm"), None).await;
    // Writes through both replicas.
    let (a, b) = tokio::join!(
        burst(&first.base_url, &key, "first", 10, 100),
        burst(&second.base_url, &key, "second", 10, 100)
    );
    let _ = (a, b);
    receiver
        .wait_for(SETTLE, "220 deliveries", |got| got.len() >= 220)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = receiver.received();
    assert!(received.iter().all(|r| r.verifies_with(&secret)));
    let all = ids(&received);
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 220, "each message sent once");
    assert_eq!(unique.len(), 220);
    // Between them the replicas counted every delivery exactly once: neither sent one the other
    // also sent. Which replica sends how many is up to the leases (a replica that is awake takes
    // every due head at once), so the split itself is not asserted.
    let mut counted = 0.0;
    for process in [&first, &second] {
        let metrics = reqwest::get(process.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        counted += metrics
            .lines()
            .find(|l| l.starts_with("webhook_deliveries_total{outcome=\"delivered\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    assert!(
        (counted - 220.0).abs() < f64::EPSILON,
        "deliveries counted by the two replicas: {counted}"
    );
    drop((first, second));
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_send_leaves_at_most_one_duplicate_with_the_same_id() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    run_cli(&database.url, &["migrate"], None);
    let (_, key) = firm_with_key(&database.url, CRM_SCOPES);
    let receiver = Receiver::start().await;
    receiver.script("/crm", &[Answer::Stall(Duration::from_millis(1500))]);
    let env = [
        ("KYC_WEBHOOK_RETRY_SCHEDULE", "200ms"),
        ("KYC_WEBHOOK_TIMEOUT", "2s"),
    ];
    let mut doomed = ServerProcess::start(&database.url, free_loopback_port(), &env).await;
    let crm = Crm::new(&doomed.base_url, &key);
    crm.subscribe(&receiver.url("/crm"), None).await;
    crm.create("crm-1").await;
    receiver
        .wait_for(SETTLE, "the first send", |got| !got.is_empty())
        .await;
    doomed.kill();
    let successor = ServerProcess::start(&database.url, free_loopback_port(), &env).await;
    receiver
        .wait_for(SETTLE, "the send after the lease ran out", |got| {
            got.len() >= 2
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = receiver.received();
    assert_eq!(
        received.len(),
        2,
        "the send cut by the crash and one more, never a third"
    );
    assert_eq!(
        received[0].id(),
        received[1].id(),
        "the duplicate carries the same webhook-id"
    );
    drop(successor);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_beside_the_new_one_and_the_cli_manages_endpoints() {
    let Some(server) = Server::start(Backend::Postgres, &QUICK).await else {
        return;
    };
    let firm = server.create_firm("Acme");
    let crm = Crm::new(&server.base_url, &server.create_api_key(&firm, CRM_SCOPES));
    let receiver = Receiver::start().await;
    let url = receiver.url("/cli");
    let old = server.cli_ok(&[
        "webhook-endpoint",
        "create",
        "--firm",
        &firm,
        "--url",
        &url,
        "--events",
        "customer.created,customer.updated",
    ]);
    assert!(old.starts_with("whsec_"), "{old}");
    let listed = server.cli_ok(&["webhook-endpoint", "list", "--firm", &firm]);
    let id = listed.split('\t').next().expect("an id").to_owned();
    assert!(
        listed.contains(&url) && listed.contains("enabled"),
        "{listed}"
    );
    let new = server.cli_ok(&[
        "webhook-endpoint",
        "rotate-secret",
        "--firm",
        &firm,
        "--id",
        &id,
    ]);
    assert!(new.starts_with("whsec_") && new != old);

    let customer = crm.create("crm-1").await;
    receiver
        .wait_for(SETTLE, "the created event", |got| !got.is_empty())
        .await;
    let got = &receiver.received()[0];
    assert_eq!(
        got.header("webhook-signature").split(' ').count(),
        2,
        "both secrets sign"
    );
    assert!(got.verifies_with(&old) && got.verifies_with(&new));
    assert!(!got.verifies_with("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));

    // Types it did not ask for are not sent; the feed still has them.
    let (status, endpoint) = crm
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/webhook-endpoints/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        endpoint["events"],
        json!(["customer.created", "customer.updated"])
    );

    server.cli_ok(&["webhook-endpoint", "delete", "--firm", &firm, "--id", &id]);
    crm.set_phone(&customer, 1).await;
    // The feed serves an event once every transaction that began writing before it has ended:
    // at once on a quiet database, a moment later under load.
    wait_until("both events in the feed", || async {
        let (_, feed) = crm.send(reqwest::Method::GET, "/api/v1/events", None).await;
        feed["data"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "nothing is sent to a deleted endpoint"
    );
    let refused = server.cli(
        &[
            "webhook-endpoint",
            "create",
            "--firm",
            &firm,
            "--url",
            "ftp://x",
        ],
        None,
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--url"));
    server.stop().await;
}

/// Walks the feed from `after` to its current end; returns the events and the last cursor.
async fn read_feed(crm: &Crm, mut after: Option<String>) -> (Vec<Value>, Option<String>) {
    let mut events = Vec::new();
    loop {
        let path = match &after {
            Some(cursor) => format!("/api/v1/events?limit=50&after={cursor}"),
            None => "/api/v1/events?limit=50".to_owned(),
        };
        let (status, page) = crm.send(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        events.extend(page["data"].as_array().expect("data").iter().cloned());
        after = page["next_cursor"].as_str().map(str::to_owned).or(after);
        if page["has_more"] != true {
            return (events, after);
        }
    }
}

/// One poll of `updated_since` from `since` to the end; returns the customers seen and the newest
/// `updated_at`.
async fn poll_customers(crm: &Crm, since: &str) -> (Vec<Value>, String) {
    let mut seen = Vec::new();
    let mut newest = since.to_owned();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!(
            "/api/v1/customers?limit=100&updated_since={}",
            since.replace('+', "%2B")
        );
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = crm.send(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for customer in page["data"].as_array().expect("data") {
            if let Some(updated) = customer["updated_at"].as_str()
                && updated > newest.as_str()
            {
                newest = updated.to_owned();
            }
            seen.push(customer.clone());
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if page["has_more"] != true {
            return (seen, newest);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_and_the_updated_since_poll_skip_nothing_while_writers_run() {
    let Some(server) = Server::start(Backend::Postgres, &[]).await else {
        return;
    };
    let firm = server.create_firm("Acme");
    let key = server.create_api_key(&firm, CRM_SCOPES);
    let crm = Crm::new(&server.base_url, &key);
    let writers = {
        let (base_url, key) = (server.base_url.clone(), key.clone());
        tokio::spawn(async move { burst(&base_url, &key, "writer", 40, 800).await })
    };
    // Read while they write: the feed from its cursor, the poll from its newest `updated_at`
    // (the second it names, again: stamps are seconds in the API).
    let mut feed = Vec::new();
    let mut after = None;
    let mut polled: BTreeMap<String, String> = BTreeMap::new();
    let mut since = "2000-01-01T00:00:00Z".to_owned();
    while !writers.is_finished() {
        let (events, cursor) = read_feed(&crm, after).await;
        feed.extend(events);
        after = cursor;
        let (customers, newest) = poll_customers(&crm, &since).await;
        for customer in customers {
            polled.insert(
                customer["id"].as_str().expect("id").to_owned(),
                customer["phone"].as_str().unwrap_or_default().to_owned(),
            );
        }
        // One second back: the API's stamps are whole seconds.
        since = step_back(&newest);
    }
    let sent = writers.await.expect("writers");
    let deadline = Instant::now() + SETTLE;
    while feed.len() < 840 && Instant::now() < deadline {
        let (events, cursor) = read_feed(&crm, after).await;
        feed.extend(events);
        after = cursor;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (customers, _) = poll_customers(&crm, &since).await;
    for customer in customers {
        polled.insert(
            customer["id"].as_str().expect("id").to_owned(),
            customer["phone"].as_str().unwrap_or_default().to_owned(),
        );
    }

    // The feed read in pieces during the writes is the whole feed, once, in order.
    let (whole, _) = read_feed(&crm, None).await;
    let pieces: Vec<&Value> = feed.iter().map(|e| &e["id"]).collect();
    let entire: Vec<&Value> = whole.iter().map(|e| &e["id"]).collect();
    assert_eq!(pieces.len(), 840, "40 created and 800 updated");
    assert_eq!(
        pieces, entire,
        "nothing skipped, nothing repeated, the same order"
    );
    let mut per_customer: HashMap<String, Vec<String>> = HashMap::new();
    for event in &feed {
        if event["type"] == "customer.updated" {
            per_customer
                .entry(event["data"]["id"].as_str().expect("id").to_owned())
                .or_default()
                .push(event["data"]["phone"].as_str().expect("phone").to_owned());
        }
    }
    assert_eq!(per_customer, sent);
    // The poll ends on every customer's last change.
    let last: BTreeMap<String, String> = sent
        .iter()
        .map(|(id, phones)| (id.clone(), phones.last().cloned().unwrap_or_default()))
        .collect();
    assert_eq!(polled, last);
    server.stop().await;
}

/// `updated_at` one second earlier, as RFC 3339.
fn step_back(stamp: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    let at = time::OffsetDateTime::parse(stamp, &Rfc3339).expect("RFC 3339");
    (at - time::Duration::seconds(1))
        .format(&Rfc3339)
        .expect("format")
}
