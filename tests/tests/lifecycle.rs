//! The lifecycle end to end against the real binary with its built-in Sumsub simulator, on SQLite
//! and on PostgreSQL, over HTTP only: a CRM ingests a customer, a person confirms the risk answers,
//! sees the price and starts verification (twenty times at once, exactly one charge), the customer
//! opens the link and approves on the simulator's hosted page, the provider's webhook lands, AML
//! screening runs from the outbox, and the CRM reads `CLEAR` (api.md §1, §3–§5; product.md §2–§4).
//! Also: RED-RETRY and resubmission, AML review to `RESOLVED`, nothing charged for `NOT_REQUIRED`
//! or without credits, hand-signed webhooks (duplicates, late older verdicts, GREEN turned RED),
//! and the refusals (forged signature, API key, staff role, another firm).

use std::time::{Duration, Instant};

use kyc_domain::ids::{AttemptNumber, CustomerId, ExternalUserId};
use kyc_e2e::receiver::Receiver;
use kyc_e2e::{Server, both_backends};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

/// How long the asynchronous part of the lifecycle (webhook, outbox screening) may take.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

/// A firm with an API key, a compliance officer, and credits.
struct Firm<'a> {
    server: &'a Server,
    id: String,
    key: String,
    client: reqwest::Client,
}

impl<'a> Firm<'a> {
    fn new(server: &'a Server, name: &str, credits: u64) -> Self {
        let id = server.create_firm(name);
        let key = server.create_api_key(&id, "customers:read,customers:write,aml:read");
        if credits > 0 {
            server.grant_credits(&id, credits, "opening-balance");
        }
        Self {
            server,
            id,
            key,
            client: server.client(),
        }
    }

    /// Registers a webhook endpoint at `url` for every event; returns its secret.
    async fn subscribe(&self, url: &str) -> String {
        let key = self.server.create_api_key(&self.id, "webhooks:manage");
        let response = self
            .client
            .post(self.server.url("/api/v1/webhook-endpoints"))
            .bearer_auth(key)
            .json(&json!({"url": url}))
            .send()
            .await
            .expect("create endpoint");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("JSON");
        body["secret"].as_str().expect("secret").to_owned()
    }

    /// A back-office user of this firm, logged in.
    async fn person(&self, role: &str) -> Session<'a> {
        let email = format!("{role}-{}@firm.example", uuid::Uuid::new_v4().simple());
        self.server.create_user(&self.id, &email, role, PASSWORD);
        Session::login(self.server, &email).await
    }

    /// CRM: create a customer; returns its id.
    async fn ingest(&self, external_id: &str, full_name: &str) -> String {
        let response = self
            .client
            .post(self.server.url("/api/v1/customers"))
            .bearer_auth(&self.key)
            .json(&json!({
                "externalId": external_id,
                "fullName": full_name,
                "email": format!("{external_id}@example.com"),
            }))
            .send()
            .await
            .expect("ingest");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["kyc_status"], "NOT_STARTED");
        body["id"].as_str().expect("id").to_owned()
    }

    /// CRM: the customer as the integration sees it.
    async fn crm_view(&self, id: &str) -> Value {
        let response = self
            .client
            .get(self.server.url(&format!("/api/v1/customers/{id}")))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("CRM read");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("JSON")
    }

    /// Polls the CRM view until `done` holds, or fails with the last view.
    async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let view = self.crm_view(id).await;
            if done(&view) {
                return view;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last view: {view}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A logged-in back-office session: its cookie and CSRF token.
struct Session<'a> {
    server: &'a Server,
    cookie: String,
    csrf: String,
    client: reqwest::Client,
}

impl<'a> Session<'a> {
    async fn login(server: &'a Server, email: &str) -> Self {
        let client = server.client();
        let response = client
            .post(server.url("/api/backoffice/session"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), StatusCode::OK, "login of {email}");
        let cookie = session_cookie(response.headers());
        let body: Value = response.json().await.expect("JSON");
        let csrf = body["csrf_token"].as_str().expect("csrf_token").to_owned();
        Self {
            server,
            cookie,
            csrf,
            client,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf)
            .send()
            .await
            .expect("back-office request");
        let status = response.status();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            assert!(
                body["error"]["code"].is_string(),
                "{status} without the error envelope: {body}"
            );
        }
        (status, body)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(self.server.url(path))).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.client.post(self.server.url(path)).json(&body))
            .await
    }

    async fn confirm_risk(&self, id: &str, designated: bool) {
        let (status, body) = self
            .send(
                self.client
                    .put(
                        self.server
                            .url(&format!("/api/backoffice/customers/{id}/risk")),
                    )
                    .json(&json!({
                        "is_designated_service": designated,
                        "handles_cash_or_crypto": false,
                        "is_new_customer": true,
                    })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn start(&self, id: &str, key: &str, cost: u64) -> (StatusCode, Value) {
        self.send(
            self.client
                .post(
                    self.server
                        .url(&format!("/api/backoffice/customers/{id}/verification")),
                )
                .header("idempotency-key", key)
                .json(&json!({"confirm_cost_credits": cost})),
        )
        .await
    }

    async fn credits(&self) -> Value {
        let (status, body) = self.get("/api/backoffice/credits").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

fn session_cookie(headers: &HeaderMap) -> String {
    let set_cookie = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("kyc_session="))
        .expect("the session cookie is set");
    let lower = set_cookie.to_ascii_lowercase();
    assert!(lower.contains("httponly"), "{set_cookie}");
    assert!(lower.contains("samesite=strict"), "{set_cookie}");
    set_cookie.split(';').next().expect("name=value").to_owned()
}

fn credits_figures(credits: &Value) -> (u64, u64, u64) {
    let figure = |name: &str| {
        credits[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} in {credits}"))
    };
    (
        figure("available_credits"),
        figure("held_credits"),
        figure("spent_credits"),
    )
}

/// The customer opens their link: the server answers 303 to a fresh provider link. Returns it.
async fn open_link(server: &Server, verification_url: &str) -> String {
    assert!(
        verification_url.starts_with(&server.url("/v/")),
        "the link points at this service: {verification_url}"
    );
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = browser
        .get(verification_url)
        .send()
        .await
        .expect("open link");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .expect("Location")
        .to_owned();
    assert!(
        location.starts_with(&server.url("/sim/sumsub/")),
        "the simulator's hosted flow: {location}"
    );
    location
}

/// On the simulator's hosted page, the customer presses the button of `action` (`approve`,
/// `reject-retry`…): the form the page renders posts to `{page}/{action}`.
async fn press(server: &Server, page_url: &str, action: &str) {
    let client = server.client();
    let page = client.get(page_url).send().await.expect("hosted page");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("HTML");
    assert!(
        html.contains(&format!("value=\"{action}\"")),
        "the page offers {action}: {html}"
    );
    let response = client
        .post(format!("{page_url}/{action}"))
        .form(&[("action", action)])
        .send()
        .await
        .expect("press");
    assert_eq!(response.status(), StatusCode::OK, "{action}");
}

/// Start Verification fired `count` times at once: half with one shared key, half with a key each.
async fn start_concurrently(
    session: &Session<'_>,
    id: &str,
    count: usize,
) -> Vec<(StatusCode, Value)> {
    let url = session
        .server
        .url(&format!("/api/backoffice/customers/{id}/verification"));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..count {
        let key = if n % 2 == 0 {
            "start-shared".to_owned()
        } else {
            format!("start-{n}")
        };
        // Each request on its own connection, all in flight together.
        let request = reqwest::Client::new()
            .post(&url)
            .header("cookie", &session.cookie)
            .header("x-csrf-token", &session.csrf)
            .header("idempotency-key", key)
            .json(&json!({"confirm_cost_credits": 1}));
        tasks.spawn(async move {
            let response = request.send().await.expect("start sent");
            let status = response.status();
            let body: Value = response.json().await.expect("JSON");
            (status, body)
        });
    }
    tasks.join_all().await
}

/// Confirms the risk answers and starts verification once; returns the link.
async fn started(firm: &Firm<'_>, officer: &Session<'_>, external_id: &str) -> (String, String) {
    let id = firm.ingest(external_id, "Jane Doe").await;
    officer.confirm_risk(&id, true).await;
    let (status, body) = officer.start(&id, &format!("start-{external_id}"), 1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = body["verification_url"].as_str().expect("url").to_owned();
    (id, url)
}

/// HMAC-SHA256 as hex, from SHA-256 alone (RFC 2104), to sign webhooks as Sumsub does.
fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut block = [0_u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    hex::encode(
        Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize(),
    )
}

both_backends! {
    async fn twenty_concurrent_starts_charge_once_and_the_approved_customer_reads_clear(server: &Server) {
        let firm = Firm::new(server, "Acme Accounting", 10);
        let officer = firm.person("compliance_officer").await;
        let receiver = Receiver::start().await;
        let secret = firm.subscribe(&receiver.url("/crm")).await;
        let id = firm.ingest("crm-jane", "Jane Doe").await;

        officer.confirm_risk(&id, true).await;
        let (status, quote) = officer
            .get(&format!("/api/backoffice/customers/{id}/verification/quote"))
            .await;
        assert_eq!(status, StatusCode::OK, "{quote}");
        assert_eq!(quote, json!({"cost_credits": 1, "balance_credits": 10}));

        let answers = start_concurrently(&officer, &id, 20).await;
        let successes: Vec<&Value> = answers
            .iter()
            .filter(|(status, _)| *status == StatusCode::OK)
            .map(|(_, body)| body)
            .collect();
        assert!(!successes.is_empty(), "{answers:?}");
        for (status, body) in &answers {
            assert!(
                *status == StatusCode::OK || *status == StatusCode::CONFLICT,
                "{status} {body}"
            );
            if *status == StatusCode::CONFLICT {
                let code = body["error"]["code"].as_str().unwrap_or_default();
                assert!(
                    ["not_startable", "idempotency_in_progress"].contains(&code),
                    "{body}"
                );
            }
        }
        let url = successes[0]["verification_url"].as_str().expect("url").to_owned();
        for body in &successes {
            assert_eq!(body["kyc_status"], "PENDING");
            assert_eq!(body["charged_credits"], 1);
            assert_eq!(body["verification_url"], url.as_str(), "one attempt, one link");
        }
        assert_eq!(credits_figures(&officer.credits().await), (9, 0, 1), "exactly one charge");
        assert_eq!(firm.crm_view(&id).await["kyc_status"], "PENDING");

        // The customer opens the link: IN_PROGRESS before the redirect is followed.
        let hosted = open_link(server, &url).await;
        let view = firm.crm_view(&id).await;
        assert_eq!(view["kyc_status"], "IN_PROGRESS");
        assert_eq!(view["crm"]["next_action"], "WAIT");

        press(server, &hosted, "approve").await;
        let view = firm
            .wait_for(&id, "VERIFIED and CLEAR", |v| {
                v["kyc_status"] == "VERIFIED" && v["aml"]["status"] == "CLEAR"
            })
            .await;
        assert_eq!(view["crm"]["label"], "Cleared. Safe to onboard.");
        assert_eq!(view["crm"]["onboarding"], "ALLOWED");
        assert!(view["identity"]["verified_country"].is_string(), "{view}");
        assert!(view["kyc_completed_at"].is_string(), "{view}");
        assert!(view["aml"]["screened_at"].is_string(), "{view}");

        // Nothing after the start charged again.
        assert_eq!(credits_figures(&officer.credits().await), (9, 0, 1));
        let (status, detail) = officer.get(&format!("/api/backoffice/customers/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(detail["attempts"].as_array().map(Vec::len), Some(1), "{detail}");
        assert_eq!(detail["customer"]["kyc_status"], "VERIFIED");

        // The CRM was told each step, signed, in order, with the statuses before.
        receiver
            .wait_for(SETTLE_TIMEOUT, "the CLEAR notification", |got| {
                got.iter().any(|r| r.json()["type"] == "customer.aml_status_changed"
                    && r.json()["data"]["aml"]["status"] == "CLEAR")
            })
            .await;
        let events: Vec<Value> = receiver.received().iter().map(|r| {
            assert!(r.verifies_with(&secret), "a valid Standard Webhooks signature");
            assert_eq!(r.json()["id"], r.id().as_str(), "webhook-id is the event id");
            r.json()
        }).collect();
        assert!(events.iter().all(|e| e["data"]["id"] == id.as_str()));
        assert_eq!(events[0]["type"], "customer.created");
        let kyc: Vec<(String, String)> = events
            .iter()
            .filter(|e| e["type"] == "customer.kyc_status_changed")
            .map(|e| (
                e["previous"]["kyc_status"].as_str().unwrap_or_default().to_owned(),
                e["data"]["kyc_status"].as_str().unwrap_or_default().to_owned(),
            ))
            .collect();
        let expected: Vec<(String, String)> = [
            ("NOT_STARTED", "PENDING"),
            ("PENDING", "IN_PROGRESS"),
            ("IN_PROGRESS", "VERIFIED"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
        assert_eq!(kyc, expected, "{events:?}");
        let aml: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "customer.aml_status_changed")
            .filter_map(|e| e["data"]["aml"]["status"].as_str())
            .collect();
        assert_eq!(aml.last(), Some(&"CLEAR"), "{events:?}");
        assert!(events.iter().all(|e| e["data"].get("date_of_birth").is_none()));
    }

    async fn a_red_retry_awaits_resubmission_and_the_reopened_link_leads_to_verified(server: &Server) {
        let firm = Firm::new(server, "Acme Legal", 5);
        let officer = firm.person("staff").await;
        let (id, url) = started(&firm, &officer, "crm-retry").await;

        let hosted = open_link(server, &url).await;
        press(server, &hosted, "reject-retry").await;
        let view = firm
            .wait_for(&id, "AWAITING_RESUBMISSION", |v| {
                v["kyc_status"] == "AWAITING_RESUBMISSION"
            })
            .await;
        assert_eq!(view["crm"]["next_action"], "NUDGE_CUSTOMER");
        assert_eq!(view["identity"], Value::Null);

        // The same link, opened again, mints a fresh provider link and resumes the flow.
        let again = open_link(server, &url).await;
        assert_eq!(firm.crm_view(&id).await["kyc_status"], "IN_PROGRESS");
        press(server, &again, "approve").await;
        firm.wait_for(&id, "VERIFIED and CLEAR", |v| {
            v["kyc_status"] == "VERIFIED" && v["aml"]["status"] == "CLEAR"
        })
        .await;
        assert_eq!(credits_figures(&officer.credits().await), (4, 0, 1), "one attempt, one charge");
    }

    async fn pep_hits_wait_for_review_and_the_officers_dispositions_and_decision_resolve_them(server: &Server) {
        let firm = Firm::new(server, "Acme Wealth", 5);
        let officer = firm.person("compliance_officer").await;
        // The simulator's sandbox name for an exact PEP match: approval ends RED + FINAL with
        // AML labels only, so identity is verified and the hits go to the firm's review.
        let id = firm.ingest("crm-pep", "Joelamltest Testpep").await;
        officer.confirm_risk(&id, true).await;
        let (status, body) = officer.start(&id, "start-pep", 1).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let hosted = open_link(server, body["verification_url"].as_str().expect("url")).await;
        press(server, &hosted, "approve").await;
        let view = firm
            .wait_for(&id, "VERIFIED, NEEDS_REVIEW and screened", |v| {
                // The verdict's AML labels open review at once; the screening that follows in
                // the background may add the case's own hits, so wait until it has run before
                // reading the hit list.
                v["kyc_status"] == "VERIFIED"
                    && v["aml"]["status"] == "NEEDS_REVIEW"
                    && v["aml"]["screened_at"].is_string()
            })
            .await;
        assert_eq!(view["crm"]["onboarding"], "BLOCKED");
        assert_eq!(view["crm"]["next_action"], "WAIT");
        assert_eq!(view["aml"]["flags"]["pep"], true, "{view}");

        let detail_path = format!("/api/backoffice/customers/{id}");
        let (_, detail) = officer.get(&detail_path).await;
        let hits: Vec<String> = detail["aml_hits"]
            .as_array()
            .expect("aml_hits")
            .iter()
            .map(|hit| hit["id"].as_str().expect("hit id").to_owned())
            .collect();
        assert!(!hits.is_empty(), "{detail}");

        // No decision while a hit waits for a disposition.
        let decision = json!({"decision": "PROCEED", "rationale": "PEP of low influence; senior sign-off"});
        let (status, body) = officer
            .post(&format!("{detail_path}/aml/decision"), decision.clone())
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(firm.crm_view(&id).await["aml"]["status"], "NEEDS_REVIEW");

        for hit in &hits {
            let (status, body) = officer
                .post(
                    &format!("{detail_path}/aml/hits/{hit}/disposition"),
                    json!({"disposition": "TRUE_MATCH", "note": "same person, confirmed by date of birth"}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let (status, body) = officer
            .post(&format!("{detail_path}/aml/decision"), decision)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let view = firm.crm_view(&id).await;
        assert_eq!(view["aml"]["status"], "RESOLVED");
        assert_eq!(view["crm"]["label"], "Final decision recorded.");
        assert_eq!(view["crm"]["onboarding"], "FIRM_DECISION");
        assert!(view["aml"]["last_reviewed_at"].is_string(), "{view}");

        // The firm's audit trail records every step, as JSON lines.
        let response = server
            .client()
            .get(server.url("/api/backoffice/audit/export"))
            .header("cookie", &officer.cookie)
            .send()
            .await
            .expect("export");
        assert_eq!(response.status(), StatusCode::OK);
        let export = response.text().await.expect("text");
        let lines: Vec<Value> = export
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect();
        assert!(lines.len() >= 6, "{export}");
        assert!(export.contains(&id), "the customer's events are in the export");
        assert_eq!(credits_figures(&officer.credits().await), (4, 0, 1));
    }

    async fn not_required_is_never_charged_and_insufficient_credits_change_nothing(server: &Server) {
        let firm = Firm::new(server, "Acme Realty", 3);
        let officer = firm.person("staff").await;
        let id = firm.ingest("crm-out-of-scope", "John Roe").await;
        officer.confirm_risk(&id, false).await;
        let view = firm.crm_view(&id).await;
        assert_eq!(view["kyc_status"], "NOT_REQUIRED");
        assert_eq!(view["crm"]["onboarding"], "ALLOWED");
        let (status, body) = officer.start(&id, "not-required", 1).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "not_startable");
        assert_eq!(credits_figures(&officer.credits().await), (3, 0, 0));

        let broke = Firm::new(server, "Broke & Co", 0);
        let clerk = broke.person("staff").await;
        let id = broke.ingest("crm-broke", "Jane Poor").await;
        clerk.confirm_risk(&id, true).await;
        let (status, body) = clerk.start(&id, "no-credits", 1).await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
        assert_eq!(body["error"]["code"], "insufficient_credits");
        assert_eq!(broke.crm_view(&id).await["kyc_status"], "NOT_STARTED");
        assert_eq!(credits_figures(&clerk.credits().await), (0, 0, 0));
        let (_, detail) = clerk.get(&format!("/api/backoffice/customers/{id}")).await;
        assert_eq!(detail["verification_url"], Value::Null, "{detail}");
    }

    async fn forged_webhooks_api_keys_staff_and_other_firms_are_refused(server: &Server) {
        let firm = Firm::new(server, "Acme Audit", 5);
        let officer = firm.person("compliance_officer").await;
        let staff = firm.person("staff").await;
        let (id, _url) = started(&firm, &officer, "crm-guarded").await;

        // A GREEN for the real attempt with a wrong signature: 401, nothing recorded.
        let external = ExternalUserId::for_attempt(
            CustomerId::parse(&id).expect("customer id"),
            AttemptNumber::FIRST,
        );
        let forged = json!({
            "type": "applicantReviewed",
            "applicantId": "000000000000000000000000",
            "externalUserId": external.as_str(),
            "createdAtMs": "2030-01-01 00:00:00.000",
            "reviewResult": {"reviewAnswer": "GREEN"},
        })
        .to_string();
        let response = server
            .client()
            .post(server.url("/webhooks/sumsub"))
            .header("x-payload-digest-alg", "HMAC_SHA256_HEX")
            .header("x-payload-digest", hmac_sha256_hex(b"not the secret", forged.as_bytes()))
            .header("content-type", "application/json")
            .body(forged)
            .send()
            .await
            .expect("webhook");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(firm.crm_view(&id).await["kyc_status"], "PENDING");

        // An API key may never start verification.
        let response = server
            .client()
            .post(server.url(&format!("/api/v1/customers/{id}/verification")))
            .bearer_auth(&firm.key)
            .send()
            .await
            .expect("CRM start");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"]["code"], "human_required");

        // Staff may not do a compliance officer's work.
        let (status, body) = staff
            .post(
                &format!("/api/backoffice/customers/{id}/aml/decision"),
                json!({"decision": "PROCEED", "rationale": "looks fine"}),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "forbidden");

        // Another firm's person sees nothing of this customer.
        let other = Firm::new(server, "Other Firm", 5);
        let stranger = other.person("compliance_officer").await;
        let (status, body) = stranger.get(&format!("/api/backoffice/customers/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], "not_found");
        let (status, _) = stranger.start(&id, "foreign", 1).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(credits_figures(&stranger.credits().await), (5, 0, 0));
        assert_eq!(credits_figures(&officer.credits().await), (4, 0, 1));
    }
}

/// The webhook secret of the servers that receive hand-signed webhooks below.
const WEBHOOK_SECRET: &str = "e2e-webhook-secret";

/// `createdAtMs` as Sumsub writes it: UTC, milliseconds.
fn created_at_ms(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]"
    );
    at.format(&format).expect("formattable")
}

/// Posts a webhook signed with [`WEBHOOK_SECRET`]; the status.
async fn deliver(server: &Server, body: &str) -> StatusCode {
    server
        .client()
        .post(server.url("/webhooks/sumsub"))
        .header("X-Payload-Digest-Alg", "HMAC_SHA256_HEX")
        .header(
            "X-Payload-Digest",
            hmac_sha256_hex(WEBHOOK_SECRET.as_bytes(), body.as_bytes()),
        )
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("webhook")
        .status()
}

fn reviewed(external: &ExternalUserId, at: time::OffsetDateTime, result: Value) -> String {
    json!({
        "type": "applicantReviewed",
        "externalUserId": external.as_str(),
        "levelName": "basic-kyc-level",
        "reviewStatus": "completed",
        "createdAtMs": created_at_ms(at),
        "reviewResult": result,
    })
    .to_string()
}

/// Webhooks signed with the configured `SUMSUB_WEBHOOK_SECRET` are applied before the 200; a
/// duplicate has no second effect; an older verdict arriving late changes nothing; a newer RED
/// turns a GREEN into FAILED; a signed body that is not JSON is 400.
async fn signed_webhooks_apply_once_in_creation_order(backend: kyc_e2e::Backend) {
    let Some(server) = Server::start(backend, &[("SUMSUB_WEBHOOK_SECRET", WEBHOOK_SECRET)]).await
    else {
        return;
    };
    let firm = Firm::new(&server, "Acme Partners", 5);
    let officer = firm.person("staff").await;
    let (id, _url) = started(&firm, &officer, "crm-webhooks").await;
    let external = ExternalUserId::for_attempt(
        CustomerId::parse(&id).expect("customer id"),
        AttemptNumber::FIRST,
    );
    let now = time::OffsetDateTime::now_utc();
    let green = reviewed(&external, now, json!({"reviewAnswer": "GREEN"}));
    let red = |at| {
        reviewed(
            &external,
            at,
            json!({"reviewAnswer": "RED", "reviewRejectType": "FINAL", "rejectLabels": ["FORGERY"]}),
        )
    };

    assert_eq!(deliver(&server, &green).await, StatusCode::OK);
    assert_eq!(
        firm.crm_view(&id).await["kyc_status"],
        "VERIFIED",
        "applied before the 200"
    );
    let detail_path = format!("/api/backoffice/customers/{id}");
    let provider_entries = |detail: &Value| {
        detail["audit"]
            .as_array()
            .expect("audit")
            .iter()
            .filter(|entry| entry["actor"]["kind"] == "provider")
            .count()
    };
    let recorded = provider_entries(&officer.get(&detail_path).await.1);
    assert!(recorded > 0, "the verdict is in the customer's history");
    assert_eq!(
        deliver(&server, &green).await,
        StatusCode::OK,
        "a duplicate is acknowledged"
    );
    assert_eq!(
        provider_entries(&officer.get(&detail_path).await.1),
        recorded,
        "a duplicate has no second effect"
    );
    let older_red = red(now - time::Duration::seconds(5));
    assert_eq!(deliver(&server, &older_red).await, StatusCode::OK);
    assert_eq!(
        firm.crm_view(&id).await["kyc_status"],
        "VERIFIED",
        "an older verdict changes nothing"
    );

    let newer_red = red(now + time::Duration::seconds(5));
    assert_eq!(deliver(&server, &newer_red).await, StatusCode::OK);
    let view = firm.crm_view(&id).await;
    assert_eq!(view["kyc_status"], "FAILED", "{view}");
    assert_eq!(view["crm"]["label"], "Rejected.");
    assert_eq!(view["crm"]["next_action"], "DO_NOT_ONBOARD");

    assert_eq!(deliver(&server, "{not json").await, StatusCode::BAD_REQUEST);
    assert_eq!(credits_figures(&officer.credits().await), (4, 0, 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_apply_once_in_creation_order_on_sqlite() {
    signed_webhooks_apply_once_in_creation_order(kyc_e2e::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_apply_once_in_creation_order_on_postgres() {
    signed_webhooks_apply_once_in_creation_order(kyc_e2e::Backend::Postgres).await;
}

/// The whole path, logged at `debug`: the server's log holds none of the secrets and personal
/// data that passed through it (API keys, passwords right and wrong, the session token, the
/// webhook secret, the customer's name, email and phone).
async fn nothing_secret_or_personal_reaches_the_log(backend: kyc_e2e::Backend) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = dir.path().join("server.log");
    let Some(server) = Server::start_logging(backend, &[("RUST_LOG", "debug")], Some(&log)).await
    else {
        return;
    };
    let firm = Firm::new(&server, "Acme Privacy", 5);
    let officer = firm.person("compliance_officer").await;
    let receiver = Receiver::start().await;
    let secret = firm.subscribe(&receiver.url("/crm")).await;
    let wrong = "a-wrong-password-9f3k2";
    let failed = server
        .client()
        .post(server.url("/api/backoffice/session"))
        .json(&json!({"email": "nobody@privacy.example", "password": wrong}))
        .send()
        .await
        .expect("login");
    assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);
    let response = firm
        .client
        .post(server.url("/api/v1/customers"))
        .bearer_auth(&firm.key)
        .json(&json!({
            "externalId": "crm-private",
            "fullName": "Zebedee Quillfeather",
            "email": "zebedee.quillfeather@privacy.example",
            "phone": "+61491570156",
        }))
        .send()
        .await
        .expect("ingest");
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    officer.confirm_risk(&id, true).await;
    let (status, body) = officer.start(&id, "start-private", 1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let hosted = open_link(&server, body["verification_url"].as_str().expect("url")).await;
    press(&server, &hosted, "approve").await;
    firm.wait_for(&id, "VERIFIED and CLEAR", |v| {
        v["kyc_status"] == "VERIFIED" && v["aml"]["status"] == "CLEAR"
    })
    .await;
    let key = firm.key.clone();
    let token = officer
        .cookie
        .split_once('=')
        .map(|(_, value)| value.to_owned())
        .expect("the session token");
    drop(officer);
    drop(firm);
    server.stop().await;

    let text = std::fs::read_to_string(&log).expect("the log");
    assert!(text.lines().count() > 20, "the log was written: {text}");
    // The log does follow this customer (by id), so what it leaves out it leaves out on purpose.
    assert!(text.contains(&id), "the customer's id is in the log");
    for (what, needle) in [
        ("the API key", key.as_str()),
        ("the password", PASSWORD),
        ("a wrong password", wrong),
        ("the session token", token.as_str()),
        ("the webhook secret", secret.as_str()),
        (
            "the webhook secret's key",
            secret.trim_start_matches("whsec_"),
        ),
        ("the customer's name", "Quillfeather"),
        ("the customer's email", "zebedee.quillfeather"),
        ("the customer's phone", "491570156"),
        ("the officer's email", "@firm.example"),
    ] {
        assert!(!text.contains(needle), "{what} is in the log:\n{}", {
            text.lines()
                .filter(|line| line.contains(needle))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_or_personal_reaches_the_log_on_sqlite() {
    nothing_secret_or_personal_reaches_the_log(kyc_e2e::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_or_personal_reaches_the_log_on_postgres() {
    nothing_secret_or_personal_reaches_the_log(kyc_e2e::Backend::Postgres).await;
}
