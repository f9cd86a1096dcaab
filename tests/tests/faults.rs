//! Faults around Start Verification, end to end against the real binary over HTTP (product.md §4,
//! api.md §5 and §7): a server killed with SIGKILL between the phases and restarted on the same
//! database, the provider unreachable during a start, two replicas recovering the same stuck
//! attempts at once, and a restart after `FAILED`.
//!
//! The Sumsub simulator runs standalone in this test process, not inside a server, so that several
//! server processes (a killed one, its successor, two replicas) share one provider, and so that the
//! test can count the applicants each attempt got: a layer in front of the simulator counts every
//! applicant creation it accepted, by `externalUserId`. The servers run with `KYC_SIMULATOR=off`
//! and the simulator's credentials, like a deployment against real Sumsub.
//!
//! The crash points come from the test-only `KYC_FAILPOINT` of kyc-server, which holds every start
//! forever at one point so the process can be killed there; recovery is made quick with
//! `KYC_STUCK_AFTER_SECS` and `KYC_RECOVERY_INTERVAL_SECS`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use kyc_domain::ids::{AttemptNumber, CustomerId, ExternalUserId};
use kyc_domain::ports::IdentityProvider;
use kyc_e2e::{Backend, ServerProcess, TestDatabase, free_loopback_port, run_cli};
use kyc_sumsub::simulator::WebhookTarget;
use kyc_sumsub::{DigestAlgorithm, Simulator, SimulatorConfig, SumsubClient, SumsubConfig};
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use secrecy::SecretString;
use serde_json::{Value, json};

const APP_TOKEN: &str = "faults-app-token";
const SECRET_KEY: &str = "faults-secret-key";
const WEBHOOK_SECRET: &str = "faults-webhook-secret";
const PASSWORD: &str = "correct horse battery staple";

/// How long recovery, a webhook or a start may take to show on the API.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Recovery as fast as the settings allow: a pass every second, taking over anything older than
/// a second.
const QUICK_RECOVERY: [(&str, &str); 2] = [
    ("KYC_STUCK_AFTER_SECS", "1"),
    ("KYC_RECOVERY_INTERVAL_SECS", "1"),
];

/// The Sumsub simulator served on its own port, with a count of the applicants it created, a
/// count of the API calls that reached it, and a switch that makes it fail.
struct Provider {
    simulator: Simulator,
    base_url: String,
    created: Arc<Mutex<HashMap<String, usize>>>,
    outage: Arc<Mutex<Outage>>,
    calls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// How the provider misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// It answers as Sumsub would.
    None,
    /// Every API call answers 500 without reaching the simulator.
    ServerErrors,
    /// Every API call is handled (an applicant is created) but answered only after this long.
    AnswersLate(Duration),
}

impl Provider {
    /// Serves a simulator on `port` whose webhooks go to the server that will listen on
    /// `webhook_port`.
    async fn start(port: u16, webhook_port: u16) -> Self {
        let base_url = format!("http://127.0.0.1:{port}");
        let mut config = SimulatorConfig::new(
            SecretString::from(APP_TOKEN),
            SecretString::from(SECRET_KEY),
            base_url.clone(),
        );
        config.webhook = Some(WebhookTarget {
            url: format!("http://127.0.0.1:{webhook_port}/webhooks/sumsub"),
            secret: SecretString::from(WEBHOOK_SECRET),
            algorithm: DigestAlgorithm::Sha256,
        });
        let simulator = Simulator::new(config);
        let created = Arc::new(Mutex::new(HashMap::new()));
        let outage = Arc::new(Mutex::new(Outage::None));
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = created.clone();
        let (switch, reached) = (outage.clone(), calls.clone());
        let app = simulator
            .router()
            .layer(axum::middleware::from_fn(move |request, next| {
                count_creations(counter.clone(), request, next)
            }))
            .layer(axum::middleware::from_fn(move |request, next| {
                misbehave(switch.clone(), reached.clone(), request, next)
            }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the simulator's port is free");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            simulator,
            base_url,
            created,
            outage,
            calls,
            task,
        }
    }

    fn set_outage(&self, outage: Outage) {
        *self.outage.lock().expect("outage") = outage;
    }

    /// How many signed API calls have reached the provider so far, failed ones included.
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// How many applicants the simulator created for this attempt.
    fn applicants_created(&self, customer: &str, attempt: u32) -> usize {
        let external = external_user_id(customer, attempt);
        self.created
            .lock()
            .expect("counter")
            .get(external.as_str())
            .copied()
            .unwrap_or(0)
    }

    /// How many applicants the simulator created for any attempt of this customer.
    fn applicants_created_for_customer(&self, customer: &str) -> usize {
        let prefix = format!("{customer}-a");
        self.created
            .lock()
            .expect("counter")
            .iter()
            .filter(|(external, _)| external.starts_with(&prefix))
            .map(|(_, count)| count)
            .sum()
    }

    /// Whether the simulator's signed API knows an applicant for this attempt.
    async fn has_applicant(&self, customer: &str, attempt: u32) -> bool {
        let client = SumsubClient::new(SumsubConfig::new(
            self.base_url.clone(),
            SecretString::from(APP_TOKEN),
            SecretString::from(SECRET_KEY),
        ))
        .expect("client");
        client
            .find_applicant(&external_user_id(customer, attempt))
            .await
            .expect("the simulator answers")
            .is_some()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.simulator.shutdown();
        self.task.abort();
    }
}

/// Counts every API call (`/resources/…`) and fails it as the switch says.
async fn misbehave(
    outage: Arc<Mutex<Outage>>,
    calls: Arc<AtomicUsize>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    if !request.uri().path().starts_with("/resources/") {
        return next.run(request).await;
    }
    calls.fetch_add(1, Ordering::SeqCst);
    let outage = *outage.lock().expect("outage");
    match outage {
        Outage::None => next.run(request).await,
        Outage::ServerErrors => axum::response::IntoResponse::into_response((
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"code": 500, "description": "Internal error"})),
        )),
        Outage::AnswersLate(delay) => {
            let response = next.run(request).await;
            tokio::time::sleep(delay).await;
            response
        }
    }
}

/// Counts each applicant creation the simulator accepted (2xx), by the `externalUserId` of the
/// request; a repeat answered 409 is not a creation.
async fn count_creations(
    created: Arc<Mutex<HashMap<String, usize>>>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    let is_creation = request.method() == axum::http::Method::POST
        && request.uri().path() == "/resources/applicants";
    if !is_creation {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let external = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|body| body["externalUserId"].as_str().map(str::to_owned));
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if response.status().is_success()
        && let Some(external) = external
    {
        *created
            .lock()
            .expect("counter")
            .entry(external)
            .or_default() += 1;
    }
    response
}

fn provider_env(base_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("KYC_SIMULATOR", "off".into()),
        ("SUMSUB_BASE_URL", base_url.into()),
        ("SUMSUB_APP_TOKEN", APP_TOKEN.into()),
        ("SUMSUB_SECRET_KEY", SECRET_KEY.into()),
        ("SUMSUB_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
    ]
}

fn external_user_id(customer: &str, attempt: u32) -> ExternalUserId {
    ExternalUserId::for_attempt(
        CustomerId::parse(customer).expect("customer id"),
        AttemptNumber::new(attempt).expect("attempt"),
    )
}

/// Starts `serve` on `database` and `port`, pointed at `provider_url`, with `extra` settings.
async fn serve(
    database: &TestDatabase,
    port: u16,
    provider_url: &str,
    extra: &[(&str, &str)],
) -> ServerProcess {
    let mut env = provider_env(provider_url);
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ServerProcess::start(&database.url, port, &env).await
}

/// A firm set up through the CLI, with its CRM key and a logged-in compliance officer.
struct Firm {
    key: String,
    cookie: String,
    csrf: String,
    client: reqwest::Client,
}

impl Firm {
    async fn new(database: &TestDatabase, server: &ServerProcess, credits: u64) -> Self {
        let url = &database.url;
        let id = run_cli(url, &["firm", "create", "--name", "Acme Accounting"], None);
        let key = run_cli(
            url,
            &[
                "api-key",
                "create",
                "--firm",
                &id,
                "--label",
                "crm",
                "--scopes",
                "customers:read,customers:write",
            ],
            None,
        );
        run_cli(
            url,
            &[
                "credits",
                "grant",
                "--firm",
                &id,
                "--credits",
                &credits.to_string(),
                "--reference",
                "opening-balance",
            ],
            None,
        );
        let email = format!("officer-{}@firm.example", uuid::Uuid::new_v4().simple());
        run_cli(
            url,
            &[
                "user",
                "create",
                "--firm",
                &id,
                "--email",
                &email,
                "--role",
                "compliance_officer",
                "--password-stdin",
            ],
            Some(PASSWORD),
        );
        let client = reqwest::Client::new();
        let response = client
            .post(server.url("/api/backoffice/session"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), StatusCode::OK);
        let cookie = kyc_e2e::session_cookie(response.headers());
        let body: Value = response.json().await.expect("JSON");
        let csrf = body["csrf_token"].as_str().expect("csrf_token").to_owned();
        Self {
            key,
            cookie,
            csrf,
            client,
        }
    }

    /// A back-office request as the officer; the status and body.
    fn office(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = self.office(request).send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// CRM: a new customer, with the risk answers confirmed by the officer so a start may charge.
    async fn startable_customer(&self, server: &ServerProcess, external_id: &str) -> String {
        let response = self
            .client
            .post(server.url("/api/v1/customers"))
            .bearer_auth(&self.key)
            .json(&json!({
                "externalId": external_id,
                "fullName": "Jane Doe",
                "email": format!("{external_id}@example.com"),
            }))
            .send()
            .await
            .expect("ingest");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("JSON");
        let id = body["id"].as_str().expect("id").to_owned();
        let (status, body) = self
            .send(
                self.client
                    .put(server.url(&format!("/api/backoffice/customers/{id}/risk")))
                    .json(&json!({
                        "is_designated_service": true,
                        "handles_cash_or_crypto": false,
                        "is_new_customer": true,
                    })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        id
    }

    fn start_request(
        &self,
        server: &ServerProcess,
        id: &str,
        key: &str,
    ) -> reqwest::RequestBuilder {
        self.office(
            self.client
                .post(server.url(&format!("/api/backoffice/customers/{id}/verification")))
                .header("idempotency-key", key)
                .json(&json!({"confirm_cost_credits": 1})),
        )
    }

    async fn start(&self, server: &ServerProcess, id: &str, key: &str) -> (StatusCode, Value) {
        let response = self
            .start_request(server, id, key)
            .send()
            .await
            .expect("start");
        let status = response.status();
        let retry_after = response.headers().contains_key("retry-after");
        let mut body: Value = response.json().await.expect("JSON");
        if status == StatusCode::SERVICE_UNAVAILABLE {
            body["retry_after_header"] = json!(retry_after);
        }
        (status, body)
    }

    /// A start sent on its own task, for a server that will never answer it.
    fn start_in_background(
        &self,
        server: &ServerProcess,
        id: &str,
        key: &str,
    ) -> tokio::task::JoinHandle<()> {
        let request = self.start_request(server, id, key);
        tokio::spawn(async move {
            let _never_answered = request.send().await;
        })
    }

    /// `(available, held, spent)` from the credits endpoint.
    async fn credits(&self, server: &ServerProcess) -> (u64, u64, u64) {
        let (status, body) = self
            .send(self.client.get(server.url("/api/backoffice/credits")))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let figure = |name: &str| body[name].as_u64().unwrap_or_else(|| panic!("{body}"));
        (
            figure("available_credits"),
            figure("held_credits"),
            figure("spent_credits"),
        )
    }

    /// The customer's `kyc_status` as the CRM reads it.
    async fn kyc_status(&self, server: &ServerProcess, id: &str) -> String {
        let response = self
            .client
            .get(server.url(&format!("/api/v1/customers/{id}")))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("CRM read");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("JSON");
        body["kyc_status"].as_str().expect("kyc_status").to_owned()
    }
}

/// Polls `probe` until it returns `Some`, or fails naming `what`.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A process held at `hold-before-post`: the hold is reserved, the attempt claimed and the
/// applicant created, and the charge never posted.
fn held_at(failpoint: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![("KYC_FAILPOINT", failpoint), ("KYC_ALLOW_FAILPOINTS", "on")]
}

/// SIGKILL between the applicant and the charge, then a restart without the failpoint: recovery
/// posts the one hold and opens the attempt with the applicant the provider already has.
async fn killed_before_post_then_restarted_charges_once_with_one_applicant(backend: Backend) {
    let Some(database) = TestDatabase::create(backend).await else {
        return;
    };
    let port = free_loopback_port();
    let provider = Provider::start(free_loopback_port(), port).await;
    let mut held = serve(
        &database,
        port,
        &provider.base_url,
        &held_at("hold-before-post"),
    )
    .await;
    let firm = Firm::new(&database, &held, 5).await;
    let id = firm.startable_customer(&held, "crm-crash-post").await;

    let request = firm.start_in_background(&held, &id, "start-crash-post");
    eventually("the applicant to be created", || async {
        (provider.applicants_created(&id, 1) == 1).then_some(())
    })
    .await;
    assert_eq!(firm.credits(&held).await, (4, 1, 0), "held, not charged");
    assert!(!request.is_finished(), "the start never answers");
    held.kill();
    request.abort();

    let server = serve(&database, port, &provider.base_url, &QUICK_RECOVERY).await;
    eventually("recovery to open the attempt", || async {
        (firm.kyc_status(&server, &id).await == "PENDING").then_some(())
    })
    .await;
    assert_eq!(firm.credits(&server).await, (4, 0, 1), "exactly one charge");
    assert_eq!(provider.applicants_created(&id, 1), 1, "one applicant");
    assert_eq!(provider.applicants_created_for_customer(&id), 1);
    assert!(provider.has_applicant(&id, 1).await);

    // A start after recovery answers with the opened attempt and charges nothing more.
    let (status, body) = firm.start(&server, &id, "start-after-recovery").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(firm.credits(&server).await, (4, 0, 1));
    drop(server);
    database.drop_database().await;
}

/// SIGKILL right after the hold was reserved, before the attempt was claimed: recovery writes the
/// unclaimed attempt down as voided and releases the hold, so nothing is charged, no applicant
/// exists and the customer is still `NOT_STARTED`; a later start charges once.
async fn killed_after_reserve_then_restarted_releases_the_hold_and_a_new_start_charges_once(
    backend: Backend,
) {
    let Some(database) = TestDatabase::create(backend).await else {
        return;
    };
    let port = free_loopback_port();
    let provider = Provider::start(free_loopback_port(), port).await;
    let mut held = serve(
        &database,
        port,
        &provider.base_url,
        &held_at("hold-after-reserve"),
    )
    .await;
    let firm = Firm::new(&database, &held, 5).await;
    let id = firm.startable_customer(&held, "crm-crash-reserve").await;

    let request = firm.start_in_background(&held, &id, "start-crash-reserve");
    eventually("the hold to be reserved", || async {
        (firm.credits(&held).await == (4, 1, 0)).then_some(())
    })
    .await;
    assert!(!request.is_finished(), "the start never answers");
    held.kill();
    request.abort();

    let server = serve(&database, port, &provider.base_url, &QUICK_RECOVERY).await;
    eventually("recovery to release the hold", || async {
        (firm.credits(&server).await == (5, 0, 0)).then_some(())
    })
    .await;
    assert_eq!(firm.kyc_status(&server, &id).await, "NOT_STARTED");
    assert_eq!(provider.applicants_created_for_customer(&id), 0);

    let (status, body) = firm.start(&server, &id, "start-again").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kyc_status"], "PENDING");
    assert_eq!(body["charged_credits"], 1);
    assert_eq!(firm.credits(&server).await, (4, 0, 1), "exactly one charge");
    // The voided first attempt keeps its number; the new one is the second.
    assert_eq!(provider.applicants_created(&id, 2), 1);
    assert_eq!(provider.applicants_created_for_customer(&id), 1);
    assert!(provider.has_applicant(&id, 2).await);
    drop(server);
    database.drop_database().await;
}

/// The provider unreachable during a start: 503 `provider_unavailable` with `Retry-After`, nothing
/// charged; once it answers, the same request (same key) starts and charges once.
async fn an_unreachable_provider_charges_nothing_and_the_same_request_works_later(
    backend: Backend,
) {
    let Some(database) = TestDatabase::create(backend).await else {
        return;
    };
    let port = free_loopback_port();
    // Nothing listens there yet.
    let provider_port = free_loopback_port();
    let provider_url = format!("http://127.0.0.1:{provider_port}");
    let server = serve(&database, port, &provider_url, &[]).await;
    let firm = Firm::new(&database, &server, 5).await;
    let id = firm.startable_customer(&server, "crm-provider-down").await;

    let (status, body) = firm.start(&server, &id, "start-provider-down").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "provider_unavailable", "{body}");
    assert_eq!(body["retry_after_header"], true, "{body}");
    let (available, held, spent) = firm.credits(&server).await;
    assert_eq!(spent, 0, "nothing charged");
    assert_eq!(available + held, 5, "nothing lost");
    assert_eq!(firm.kyc_status(&server, &id).await, "NOT_STARTED");

    let provider = Provider::start(provider_port, port).await;
    let (status, body) = firm.start(&server, &id, "start-provider-down").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kyc_status"], "PENDING");
    assert_eq!(body["charged_credits"], 1);
    assert_eq!(firm.credits(&server).await, (4, 0, 1), "exactly one charge");
    assert_eq!(provider.applicants_created(&id, 1), 1);
    assert_eq!(firm.kyc_status(&server, &id).await, "PENDING");
    drop(server);
    database.drop_database().await;
}

/// A provider failing fast: three failures in a row open its circuit for this long.
const QUICK_BREAKER: [(&str, &str); 3] = [
    ("KYC_PROVIDER_BREAKER_FAILURES", "3"),
    ("KYC_PROVIDER_BREAKER_COOLDOWN", "3s"),
    ("KYC_PROVIDER_TIMEOUT", "1s"),
];

/// The server's `provider_circuit_open` gauge.
async fn circuit_open(server: &ServerProcess) -> Option<bool> {
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("provider_circuit_open "))
        .map(|value| value.trim() == "1")
}

/// The provider answering 500 to everything: the first start fails after its retries (503
/// `provider_unavailable`, nothing charged) and opens the circuit, so the clicks that follow fail
/// at once without a single call reaching the provider. Once it answers again, the recovery
/// worker's probe closes the circuit and completes the same attempt: one applicant, one charge.
async fn a_failing_provider_opens_the_circuit_and_the_attempt_completes_once_it_answers(
    backend: Backend,
) {
    let Some(database) = TestDatabase::create(backend).await else {
        return;
    };
    let port = free_loopback_port();
    let provider = Provider::start(free_loopback_port(), port).await;
    let settings: Vec<_> = QUICK_BREAKER
        .iter()
        .chain(&QUICK_RECOVERY)
        .copied()
        .collect();
    let server = serve(&database, port, &provider.base_url, &settings).await;
    let firm = Firm::new(&database, &server, 5).await;
    let id = firm.startable_customer(&server, "crm-provider-5xx").await;

    provider.set_outage(Outage::ServerErrors);
    let (status, body) = firm.start(&server, &id, "start-5xx").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "provider_unavailable", "{body}");
    assert_eq!(body["retry_after_header"], true, "{body}");
    let tried = provider.calls();
    assert_eq!(
        tried, 3,
        "the creation is tried three times, then the circuit opens"
    );
    assert_eq!(circuit_open(&server).await, Some(true));

    for click in 0..10 {
        let (status, body) = firm.start(&server, &id, "start-5xx").await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "click {click}: {body}"
        );
        assert_eq!(body["error"]["code"], "provider_unavailable", "{body}");
    }
    assert_eq!(
        provider.calls(),
        tried,
        "while the circuit is open no call reaches the provider"
    );
    let (available, held, spent) = firm.credits(&server).await;
    assert_eq!((available, held, spent), (4, 1, 0), "held, never charged");
    assert_eq!(firm.kyc_status(&server, &id).await, "NOT_STARTED");
    assert_eq!(provider.applicants_created_for_customer(&id), 0);

    provider.set_outage(Outage::None);
    eventually("the recovery worker to complete the attempt", || async {
        (firm.kyc_status(&server, &id).await == "PENDING").then_some(())
    })
    .await;
    assert_eq!(firm.credits(&server).await, (4, 0, 1), "exactly one charge");
    assert_eq!(provider.applicants_created(&id, 1), 1, "one applicant");
    assert_eq!(circuit_open(&server).await, Some(false));
    let (status, body) = firm.start(&server, &id, "start-5xx").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the attempt is open now: {body}"
    );
    assert_eq!(body["error"]["code"], "not_startable", "{body}");
    assert_eq!(firm.credits(&server).await, (4, 0, 1), "still one charge");
    drop(server);
    database.drop_database().await;
}

/// The provider creating the applicant but answering after the client gave up, on every try:
/// the start answers 503 and charges nothing, though the applicant exists. When the provider is
/// prompt again, the attempt finds that applicant (409 with its id) instead of making a second,
/// and is charged once.
async fn a_provider_answering_too_late_gets_one_applicant_and_one_charge(backend: Backend) {
    let Some(database) = TestDatabase::create(backend).await else {
        return;
    };
    let port = free_loopback_port();
    let provider = Provider::start(free_loopback_port(), port).await;
    let settings: Vec<_> = QUICK_BREAKER
        .iter()
        .chain(&QUICK_RECOVERY)
        .copied()
        .collect();
    let server = serve(&database, port, &provider.base_url, &settings).await;
    let firm = Firm::new(&database, &server, 5).await;
    let id = firm.startable_customer(&server, "crm-provider-late").await;

    provider.set_outage(Outage::AnswersLate(Duration::from_secs(3)));
    let (status, body) = firm.start(&server, &id, "start-late").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "provider_unavailable", "{body}");
    assert_eq!(
        provider.applicants_created(&id, 1),
        1,
        "the provider made it"
    );
    let (available, held, spent) = firm.credits(&server).await;
    assert_eq!((available, held, spent), (4, 1, 0), "held, never charged");

    provider.set_outage(Outage::None);
    eventually(
        "the attempt to complete with the existing applicant",
        || async { (firm.kyc_status(&server, &id).await == "PENDING").then_some(()) },
    )
    .await;
    assert_eq!(firm.credits(&server).await, (4, 0, 1), "exactly one charge");
    assert_eq!(
        provider.applicants_created_for_customer(&id),
        1,
        "one applicant"
    );
    drop(server);
    database.drop_database().await;
}

/// RED + FINAL from the hosted page → `FAILED`; an officer restarts with a reason →
/// `NOT_STARTED`; a second start charges attempt 2 once (two charges in all) → `PENDING`.
async fn a_restart_after_failed_charges_the_second_attempt_once(backend: Backend) {
    let Some(database) = TestDatabase::create(backend).await else {
        return;
    };
    let port = free_loopback_port();
    let provider = Provider::start(free_loopback_port(), port).await;
    let server = serve(&database, port, &provider.base_url, &[]).await;
    let firm = Firm::new(&database, &server, 5).await;
    let id = firm.startable_customer(&server, "crm-failed").await;

    let (status, body) = firm.start(&server, &id, "start-first").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let link = body["verification_url"].as_str().expect("url");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = browser.get(link).send().await.expect("open link");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let page = response
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .expect("Location")
        .to_owned();
    assert!(page.starts_with(&provider.base_url), "{page}");
    let pressed = browser
        .post(format!("{page}/reject-final"))
        .form(&[("action", "reject-final")])
        .send()
        .await
        .expect("press");
    assert_eq!(pressed.status(), StatusCode::OK);
    eventually("the RED + FINAL webhook", || async {
        (firm.kyc_status(&server, &id).await == "FAILED").then_some(())
    })
    .await;

    let restart = format!("/api/backoffice/customers/{id}/restart");
    let (status, body) = firm
        .send(
            firm.client
                .post(server.url(&restart))
                .json(&json!({"reason": "document retaken in person"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(firm.kyc_status(&server, &id).await, "NOT_STARTED");
    assert_eq!(firm.credits(&server).await, (4, 0, 1));

    let (status, body) = firm.start(&server, &id, "start-second").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kyc_status"], "PENDING");
    assert_eq!(body["charged_credits"], 1);
    assert_ne!(body["verification_url"].as_str(), Some(link), "a new link");
    assert_eq!(
        firm.credits(&server).await,
        (3, 0, 2),
        "two attempts, two charges"
    );
    assert_eq!(provider.applicants_created(&id, 1), 1);
    assert_eq!(provider.applicants_created(&id, 2), 1);
    assert_eq!(firm.kyc_status(&server, &id).await, "PENDING");
    drop(server);
    database.drop_database().await;
}

/// Several attempts left between the phases by a killed process; two replicas then run the
/// recovery worker on the same PostgreSQL database at the same time: each attempt is completed
/// once, with one charge and one applicant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_recovering_at_once_complete_each_stuck_attempt_once_on_postgres() {
    const CUSTOMERS: usize = 5;
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let held_port = free_loopback_port();
    let provider = Provider::start(free_loopback_port(), held_port).await;
    let mut held = serve(
        &database,
        held_port,
        &provider.base_url,
        &held_at("hold-before-post"),
    )
    .await;
    let firm = Firm::new(&database, &held, 10).await;
    let mut ids = Vec::new();
    for n in 0..CUSTOMERS {
        ids.push(
            firm.startable_customer(&held, &format!("crm-stuck-{n}"))
                .await,
        );
    }
    let requests: Vec<_> = ids
        .iter()
        .map(|id| firm.start_in_background(&held, id, &format!("start-{id}")))
        .collect();
    eventually("every applicant to be created", || async {
        ids.iter()
            .all(|id| provider.applicants_created(id, 1) == 1)
            .then_some(())
    })
    .await;
    assert_eq!(firm.credits(&held).await, (5, 5, 0));
    held.kill();
    for request in requests {
        request.abort();
    }

    let (first, second) = tokio::join!(
        serve(
            &database,
            free_loopback_port(),
            &provider.base_url,
            &QUICK_RECOVERY
        ),
        serve(
            &database,
            free_loopback_port(),
            &provider.base_url,
            &QUICK_RECOVERY
        ),
    );
    eventually("every stuck attempt to be completed", || async {
        for id in &ids {
            if firm.kyc_status(&first, id).await != "PENDING" {
                return None;
            }
        }
        Some(())
    })
    .await;
    // Let both replicas run a few more passes: nothing may change any more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        firm.credits(&first).await,
        (5, 0, 5),
        "one charge per attempt"
    );
    assert_eq!(firm.credits(&second).await, (5, 0, 5));
    for id in &ids {
        assert_eq!(provider.applicants_created_for_customer(id), 1, "{id}");
        assert_eq!(firm.kyc_status(&second, id).await, "PENDING");
    }
    drop((first, second));
    database.drop_database().await;
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(kyc_e2e::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(kyc_e2e::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_both_backends!(
    killed_before_post_then_restarted_charges_once_with_one_applicant,
    killed_after_reserve_then_restarted_releases_the_hold_and_a_new_start_charges_once,
    an_unreachable_provider_charges_nothing_and_the_same_request_works_later,
    a_failing_provider_opens_the_circuit_and_the_attempt_completes_once_it_answers,
    a_provider_answering_too_late_gets_one_applicant_and_one_charge,
    a_restart_after_failed_charges_the_second_attempt_once,
);
