//! The requests of each phase, and what answer counts as expected for each: the CRM API reads,
//! list pages, upserts and signed provider webhooks, and the baseline's read and insert.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hmac::{Hmac, Mac};
use rand::Rng;
use reqwest::{Client, StatusCode};
use serde::Deserialize;
use sha2::Sha256;
use time::OffsetDateTime;

use crate::load::Outcome;
use crate::processes::WEBHOOK_SECRET;
use crate::seed::{SeededAttempt, SeededFirm};

/// What every request of a phase needs: the client, the base URL, the keys and the seeded data.
pub struct Target {
    /// One pooled HTTP/1.1 client for the whole run.
    pub client: Client,
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
    /// One `customers:read,customers:write` key per firm, in the order of `firms`.
    pub keys: Vec<String>,
    /// The seeded customers per firm.
    pub firms: Vec<SeededFirm>,
    /// The firms' ids, in the order of `firms` (the baseline takes the firm as a parameter).
    pub firm_ids: Vec<String>,
}

impl Target {
    fn firm_of(&self, worker: usize) -> usize {
        worker % self.firms.len()
    }
}

fn unexpected(what: &str, status: StatusCode, body: &[u8]) -> Outcome {
    let body = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    Outcome::Unexpected(format!("{what}: {status} {body}"))
}

/// Sends `request`, reads the whole body, and checks the status.
async fn exchange(
    request: reqwest::RequestBuilder,
    what: &str,
    expected: &[StatusCode],
) -> Outcome {
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            match response.bytes().await {
                Ok(_) if expected.contains(&status) => Outcome::Expected,
                Ok(body) => unexpected(what, status, &body),
                Err(error) => Outcome::Unexpected(format!("{what}: reading the body: {error}")),
            }
        }
        Err(error) => Outcome::Unexpected(format!("{what}: {error}")),
    }
}

/// `GET /api/v1/customers/{id}` of a random customer of the worker's firm.
pub async fn api_read(target: Arc<Target>, worker: usize) -> (usize, Outcome) {
    let firm = target.firm_of(worker);
    let ids = &target.firms[firm].all;
    let id = ids[rand::thread_rng().gen_range(0..ids.len())];
    let request = target
        .client
        .get(format!("{}/api/v1/customers/{id}", target.base_url))
        .bearer_auth(&target.keys[firm]);
    let outcome = exchange(request, "read", &[StatusCode::OK]).await;
    (worker, outcome)
}

/// The baseline's `GET /customers/{id}` of a random customer of the first firm (the one the
/// baseline reads).
pub async fn baseline_read(target: Arc<Target>, worker: usize) -> (usize, Outcome) {
    let ids = &target.firms[0].all;
    let id = ids[rand::thread_rng().gen_range(0..ids.len())];
    let request = target
        .client
        .get(format!("{}/customers/{id}", target.base_url));
    let outcome = exchange(request, "baseline read", &[StatusCode::OK]).await;
    (worker, outcome)
}

/// A worker walking the list with a status filter, page after page, from the start again at the
/// end.
pub struct ListWalk {
    worker: usize,
    cursor: Option<String>,
}

impl ListWalk {
    /// A walk from the first page.
    pub fn new(worker: usize) -> Self {
        Self {
            worker,
            cursor: None,
        }
    }
}

#[derive(Deserialize)]
struct Page {
    has_more: bool,
    next_cursor: Option<String>,
}

/// `GET /api/v1/customers?status=NOT_STARTED&limit=50[&cursor=…]`.
pub async fn api_list(target: Arc<Target>, walk: ListWalk) -> (ListWalk, Outcome) {
    let firm = target.firm_of(walk.worker);
    let request = target
        .client
        .get(format!("{}/api/v1/customers", target.base_url))
        .bearer_auth(&target.keys[firm]);
    page(request, walk, "list").await
}

/// The baseline's `GET /customers?firm=…&status=NOT_STARTED&limit=50[&cursor=…]`: the same firm,
/// filter and page size as [`api_list`], walked by the baseline's own cursor.
pub async fn baseline_list(target: Arc<Target>, walk: ListWalk) -> (ListWalk, Outcome) {
    let firm = target.firm_of(walk.worker);
    let request = target
        .client
        .get(format!("{}/customers", target.base_url))
        .query(&[("firm", target.firm_ids[firm].as_str())]);
    page(request, walk, "baseline list").await
}

/// Sends one page request of `walk` and moves the walk to the next page (or back to the first).
async fn page(
    request: reqwest::RequestBuilder,
    mut walk: ListWalk,
    what: &str,
) -> (ListWalk, Outcome) {
    let mut request = request.query(&[("status", "NOT_STARTED"), ("limit", "50")]);
    if let Some(cursor) = &walk.cursor {
        request = request.query(&[("cursor", cursor)]);
    }
    let outcome = match request.send().await {
        Ok(response) => {
            let status = response.status();
            match response.bytes().await {
                Ok(body) if status == StatusCode::OK => match serde_json::from_slice::<Page>(&body)
                {
                    Ok(page) => {
                        walk.cursor = page.next_cursor.filter(|_| page.has_more);
                        Outcome::Expected
                    }
                    Err(error) => Outcome::Unexpected(format!("{what}: unreadable page: {error}")),
                },
                Ok(body) => unexpected(what, status, &body),
                Err(error) => Outcome::Unexpected(format!("{what}: reading the body: {error}")),
            }
        }
        Err(error) => Outcome::Unexpected(format!("{what}: {error}")),
    };
    (walk, outcome)
}

/// A worker's count of upserts sent, to alternate new and existing external ids and keep new
/// ones unique.
pub struct Upserts {
    worker: usize,
    sent: u64,
}

impl Upserts {
    /// A worker's first upsert.
    pub fn new(worker: usize) -> Self {
        Self { worker, sent: 0 }
    }

    /// A worker's first upsert of a later phase: its new customers' external ids start at
    /// `first` (even), so they never meet those of an earlier phase.
    pub fn starting_at(worker: usize, first: u64) -> Self {
        Self {
            worker,
            sent: first,
        }
    }
}

/// The next upsert of a worker: its firm, the body and the status expected. Every other request
/// renames a seeded `NOT_STARTED` customer by its external id (200), the others create a new one
/// (201).
fn next_upsert(target: &Target, upserts: &mut Upserts) -> (usize, serde_json::Value, StatusCode) {
    let firm = target.firm_of(upserts.worker);
    let sent = upserts.sent;
    upserts.sent += 1;
    if sent.is_multiple_of(2) {
        let customers = &target.firms[firm].not_started;
        let customer = &customers[rand::thread_rng().gen_range(0..customers.len())];
        let body = serde_json::json!({
            "externalId": customer.external_id,
            "fullName": format!("Customer renamed {}-{sent}", upserts.worker),
            "email": customer.email,
        });
        (firm, body, StatusCode::OK)
    } else {
        // A run-unique prefix keeps repeated runs on one database from colliding.
        let (run, worker) = (std::process::id(), upserts.worker);
        let body = serde_json::json!({
            "externalId": format!("new-{run}-{worker}-{sent}"),
            "fullName": format!("New Customer {worker} {sent}"),
            "email": format!("new.{run}.{worker}.{sent}@bench.example"),
        });
        (firm, body, StatusCode::CREATED)
    }
}

/// `POST /api/v1/customers` with the worker's [`next_upsert`].
pub async fn api_upsert(target: Arc<Target>, mut upserts: Upserts) -> (Upserts, Outcome) {
    let (firm, body, expected) = next_upsert(&target, &mut upserts);
    let request = target
        .client
        .post(format!("{}/api/v1/customers", target.base_url))
        .bearer_auth(&target.keys[firm])
        .json(&body);
    let outcome = exchange(request, "upsert", &[expected]).await;
    (upserts, outcome)
}

/// The baseline's `POST /customers?firm=…` with the worker's [`next_upsert`]: the same mix of
/// renames and creates, of the same firm's customers (in the baseline's copy of them).
pub async fn baseline_upsert(target: Arc<Target>, mut upserts: Upserts) -> (Upserts, Outcome) {
    let (firm, body, expected) = next_upsert(&target, &mut upserts);
    let request = target
        .client
        .post(format!("{}/customers", target.base_url))
        .query(&[("firm", target.firm_ids[firm].as_str())])
        .json(&body);
    let outcome = exchange(request, "baseline upsert", &[expected]).await;
    (upserts, outcome)
}

/// The open attempts webhooks go to, shared by the workers: each worker takes the next attempt and
/// sends it `applicantPending` then `applicantReviewed` GREEN, so no two workers touch one
/// customer and every delivery is a real transition.
pub struct WebhookSupply {
    attempts: Vec<SeededAttempt>,
    next: AtomicUsize,
    /// Milliseconds added to the clock of the first event: every `createdAtMs` is unique and a
    /// verdict is always newer than the pending event before it.
    clock_millis: AtomicU64,
    start: OffsetDateTime,
}

impl WebhookSupply {
    /// A supply over `attempts`; event times start an hour ago, one millisecond apart.
    pub fn new(attempts: Vec<SeededAttempt>) -> Self {
        Self {
            attempts,
            next: AtomicUsize::new(0),
            clock_millis: AtomicU64::new(0),
            start: OffsetDateTime::now_utc() - time::Duration::hours(1),
        }
    }

    fn created_at_ms(&self) -> String {
        kyc_sumsub::webhook::format_created_at_ms(
            self.start
                + time::Duration::milliseconds(
                    i64::try_from(self.clock_millis.fetch_add(1, Ordering::Relaxed))
                        .unwrap_or(i64::MAX),
                ),
        )
    }

    /// How many attempts were handed out.
    pub fn used(&self) -> usize {
        self.next.load(Ordering::Relaxed).min(self.attempts.len())
    }
}

/// A worker's current attempt and whether its pending event was sent.
#[derive(Default)]
pub struct WebhookWorker {
    current: Option<usize>,
    pending_sent: bool,
}

/// The lowercase hex HMAC-SHA256 of `body` under the webhook secret, as Sumsub sends it.
pub fn sign(body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `POST /webhooks/sumsub`, signed; expected: 200 `{"status":"recorded"}` (a duplicate or an
/// orphan would mean the event did not reach its attempt).
pub async fn webhook(
    target: Arc<Target>,
    supply: Arc<WebhookSupply>,
    mut worker: WebhookWorker,
) -> (WebhookWorker, Outcome) {
    let index = match worker.current {
        Some(index) => index,
        None => {
            let index = supply.next.fetch_add(1, Ordering::Relaxed);
            if index >= supply.attempts.len() {
                return (worker, Outcome::Exhausted);
            }
            worker.current = Some(index);
            worker.pending_sent = false;
            index
        }
    };
    let attempt = &supply.attempts[index];
    let body = if worker.pending_sent {
        worker.current = None;
        serde_json::json!({
            "type": "applicantReviewed",
            "applicantId": attempt.applicant_id,
            "inspectionId": attempt.applicant_id,
            "correlationId": format!("req-{index}-reviewed"),
            "externalUserId": attempt.external_user_id,
            "levelName": "basic-kyc-level",
            "sandboxMode": false,
            "reviewStatus": "completed",
            "reviewResult": {"reviewAnswer": "GREEN"},
            "createdAtMs": supply.created_at_ms(),
            "clientId": "kyc-bench",
        })
    } else {
        worker.pending_sent = true;
        serde_json::json!({
            "type": "applicantPending",
            "applicantId": attempt.applicant_id,
            "inspectionId": attempt.applicant_id,
            "correlationId": format!("req-{index}-pending"),
            "externalUserId": attempt.external_user_id,
            "levelName": "basic-kyc-level",
            "sandboxMode": false,
            "reviewStatus": "pending",
            "createdAtMs": supply.created_at_ms(),
            "clientId": "kyc-bench",
        })
    }
    .to_string();
    let digest = sign(body.as_bytes());
    let request = target
        .client
        .post(format!("{}/webhooks/sumsub", target.base_url))
        .header("X-Payload-Digest-Alg", "HMAC_SHA256_HEX")
        .header("X-Payload-Digest", digest)
        .header("Content-Type", "application/json")
        .body(body);
    let outcome = match request.send().await {
        Ok(response) => {
            let status = response.status();
            match response.bytes().await {
                Ok(body)
                    if status == StatusCode::OK
                        && body.windows(10).any(|w| w == b"\"recorded\"") =>
                {
                    Outcome::Expected
                }
                Ok(body) => unexpected("webhook", status, &body),
                Err(error) => Outcome::Unexpected(format!("webhook: reading the body: {error}")),
            }
        }
        Err(error) => Outcome::Unexpected(format!("webhook: {error}")),
    };
    (worker, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_are_unique_increasing_and_in_sumsub_format() {
        let supply = WebhookSupply::new(Vec::new());
        let first = supply.created_at_ms();
        let second = supply.created_at_ms();
        assert!(first < second, "{first} {second}");
        assert_eq!(first.len(), "2021-05-14 16:00:25.032".len());
        assert_eq!(&first[10..11], " ");
        assert_eq!(&first[19..20], ".");
    }

    #[test]
    fn the_service_accepts_the_signature_and_reads_the_event() {
        let supply = WebhookSupply::new(Vec::new());
        let body = serde_json::json!({
            "type": "applicantReviewed",
            "applicantId": "0123456789abcdef01234567",
            "externalUserId": "01890a5d-ac96-774b-bcce-b302099a8057-a1",
            "reviewResult": {"reviewAnswer": "GREEN"},
            "createdAtMs": supply.created_at_ms(),
        })
        .to_string();
        let verifier = kyc_sumsub::WebhookVerifier::new(secrecy::SecretString::from(
            WEBHOOK_SECRET.to_owned(),
        ));
        let mut headers = http::HeaderMap::new();
        headers.insert("x-payload-digest-alg", "HMAC_SHA256_HEX".parse().unwrap());
        headers.insert("x-payload-digest", sign(body.as_bytes()).parse().unwrap());
        assert!(verifier.verify(&headers, body.as_bytes()).is_ok());
        assert!(
            verifier
                .verify(&headers, body.replace("GREEN", "RED").as_bytes())
                .is_err()
        );
        let event = kyc_sumsub::webhook::parse_event(body.as_bytes()).expect("a readable event");
        assert_eq!(
            event.external_user_id.map(|id| id.as_str().to_owned()),
            Some("01890a5d-ac96-774b-bcce-b302099a8057-a1".to_owned())
        );
    }
}
