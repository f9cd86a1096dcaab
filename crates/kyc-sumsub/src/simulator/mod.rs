//! A Sumsub simulator: an axum [`Router`] that answers the API calls this service makes the way
//! Sumsub does (§10 of the protocol reference), serves a hosted-flow page behind the links it mints,
//! and sends signed webhooks back.
//!
//! `kyc-server` nests it under `/sim/sumsub` when `KYC_SIMULATOR=on`; tests serve it on
//! `127.0.0.1:0`. Either way requests are authenticated exactly as Sumsub does it: the signature
//! covers the path the server *received* (axum's [`OriginalUri`], so the mount prefix counts) and the
//! raw body, and the timestamp must be within 60 s of the simulator's clock.
//!
//! State lives in memory behind a mutex that is never held across an `.await`. Webhooks go out on
//! tokio tasks that stop when the last handle on the state is dropped or [`Simulator::shutdown`] is
//! called.
//!
//! Sandbox AML test names produce hits when an applicant is screened (on `status/pending` or a
//! hosted-flow submission): `Joelamltest Red` (exact, sanctions + crime), `Joelamltest Yellow`
//! (potential match, adverse media: approval puts it on hold), `Joelamltest Testpep` (exact PEP) and
//! `Joelamltest Testsanc` (exact sanctions). Approving Red, Testpep or Testsanc ends RED + FINAL with
//! AML labels.

// Handlers return ready-made HTTP answers as their error type; one per request, so their size
// does not matter.
#![allow(clippy::result_large_err)]

mod delivery;
mod page;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

pub use delivery::{Delivery, DeliveryKnobs};
use delivery::{Outgoing, dispatch};

use crate::signing::verify_request_signature;
use crate::webhook::{DigestAlgorithm, format_created_at, format_created_at_ms};

/// Where and how the simulator sends webhooks.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// The receiver, e.g. `http://127.0.0.1:8080/webhooks/sumsub`.
    pub url: String,
    /// The webhook secret (not the app secret), shared with the receiver.
    pub secret: SecretString,
    /// The HMAC named in `X-Payload-Digest-Alg`.
    pub algorithm: DigestAlgorithm,
}

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// The only `X-App-Token` accepted.
    pub app_token: SecretString,
    /// The key requests must be signed with.
    pub secret_key: SecretString,
    /// Where a browser reaches this router, mount path included
    /// (`http://127.0.0.1:8080/sim/sumsub`): the base of the links it mints.
    pub public_base_url: String,
    /// Where webhooks go; `None` sends none.
    pub webhook: Option<WebhookTarget>,
    /// The initial delivery knobs (changeable later through the control endpoint).
    pub knobs: DeliveryKnobs,
    /// The largest accepted difference between `X-App-Access-Ts` and the simulator's clock.
    pub max_clock_skew: Duration,
    /// The levels that exist; `None` accepts any level name.
    pub levels: Option<Vec<String>>,
    /// The country the simulated documents are issued in (ISO alpha-3).
    pub document_country: String,
    /// `clientId` in webhooks.
    pub client_id: String,
}

impl SimulatorConfig {
    /// A configuration with Sumsub's defaults: 60 s skew, any level, GBR documents, Sumsub's real
    /// retry schedule, and no webhook target.
    pub fn new(
        app_token: SecretString,
        secret_key: SecretString,
        public_base_url: impl Into<String>,
    ) -> Self {
        Self {
            app_token,
            secret_key,
            public_base_url: public_base_url.into().trim_end_matches('/').to_owned(),
            webhook: None,
            knobs: DeliveryKnobs::default(),
            max_clock_skew: Duration::from_secs(60),
            levels: None,
            document_country: "GBR".into(),
            client_id: "kyc-simulator".into(),
        }
    }
}

/// A running simulator. Clone the [`Router`] from it as often as needed; the state is shared.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator").finish_non_exhaustive()
    }
}

impl Simulator {
    /// A simulator with empty state.
    pub fn new(config: SimulatorConfig) -> Self {
        let knobs = config.knobs.clone();
        Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(SimState {
                    knobs,
                    ..SimState::default()
                }),
                http: reqwest::Client::new(),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The router: the signed `/resources/...` API, the hosted flow under `/websdk/p/...`, and the
    /// control endpoints under `/_sim/...`.
    pub fn router(&self) -> Router {
        router(Arc::clone(&self.shared))
    }

    /// The current delivery knobs.
    pub fn knobs(&self) -> DeliveryKnobs {
        self.shared.knobs()
    }

    /// Replaces the delivery knobs; webhooks sent from now on use them.
    pub fn set_knobs(&self, knobs: DeliveryKnobs) {
        self.shared.lock().knobs = knobs;
    }

    /// Every delivery tried so far, in the order they finished.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().deliveries.clone()
    }

    /// Stops every webhook sender now (pending resends are abandoned).
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }
}

pub(crate) struct Shared {
    config: SimulatorConfig,
    state: Mutex<SimState>,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last router and handle are gone: no sender may outlive them.
        self.shutdown.cancel();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        // A panicking handler must not take the whole simulator down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn knobs(&self) -> DeliveryKnobs {
        self.lock().knobs.clone()
    }

    fn record(&self, delivery: Delivery) {
        self.lock().deliveries.push(delivery);
    }
}

#[derive(Default)]
struct SimState {
    knobs: DeliveryKnobs,
    applicants: HashMap<String, SimApplicant>,
    by_external: HashMap<String, String>,
    case_owner: HashMap<String, String>,
    links: HashMap<String, Link>,
    deliveries: Vec<Delivery>,
    last_event_at: Option<OffsetDateTime>,
}

struct Link {
    external_user_id: String,
    level_name: String,
    expires_at: OffsetDateTime,
}

#[derive(Clone)]
struct SimApplicant {
    id: String,
    inspection_id: String,
    external_user_id: String,
    level_name: String,
    created_at: OffsetDateTime,
    email: Option<String>,
    phone: Option<String>,
    fixed_info: Value,
    info: Value,
    review_id: String,
    attempt_id: String,
    attempt_count: u32,
    review_status: &'static str,
    review_date: Option<OffsetDateTime>,
    review_result: Option<Value>,
    aml_case: Option<AmlCase>,
}

#[derive(Clone)]
struct AmlCase {
    id: String,
    created_at: OffsetDateTime,
    hits: Vec<AmlHit>,
}

#[derive(Clone)]
struct AmlHit {
    id: String,
    name: String,
    match_status: String,
    whitelisted: bool,
    risk_labels: Vec<&'static str>,
}

/// What the sandbox's AML test names produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AmlProfile {
    Clear,
    Red,
    Yellow,
    Pep,
    Sanctions,
}

impl AmlProfile {
    fn of(applicant: &SimApplicant) -> Self {
        let part = |key: &str| {
            applicant
                .fixed_info
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        };
        if part("firstName") != "joelamltest" {
            return Self::Clear;
        }
        match part("lastName").as_str() {
            "red" => Self::Red,
            "yellow" => Self::Yellow,
            "testpep" => Self::Pep,
            "testsanc" => Self::Sanctions,
            _ => Self::Clear,
        }
    }

    /// The hit screening finds: match status and risk labels.
    fn hit(self) -> Option<(&'static str, Vec<&'static str>)> {
        match self {
            Self::Clear => None,
            Self::Red => Some(("true_positive", vec!["sanctions", "crime"])),
            Self::Yellow => Some(("potential_match", vec!["adverseMedia"])),
            Self::Pep => Some(("true_positive", vec!["pep"])),
            Self::Sanctions => Some(("true_positive", vec!["sanctions"])),
        }
    }

    /// The RED + FINAL an approval turns into, for exact hits.
    fn rejection(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::Red => Some(("COMPROMISED_PERSONS", "compromisedPersons")),
            Self::Pep => Some(("PEP", "compromisedPersons_pep")),
            Self::Sanctions => Some(("SANCTIONS", "compromisedPersons_sanctionList")),
            Self::Clear | Self::Yellow => None,
        }
    }
}

fn random_hex(bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(raw)
}

/// Sumsub-style ids: 24 lowercase hex characters.
fn new_id() -> String {
    random_hex(12)
}

fn date_time(at: OffsetDateTime) -> String {
    // `createdAt` of an applicant: `yyyy-MM-dd HH:mm:ss`, GMT.
    format_created_at(at).trim_end_matches("+0000").to_owned()
}

/// Sumsub's error body.
fn api_error(
    status: StatusCode,
    description: &str,
    error_code: Option<u32>,
    error_name: Option<&str>,
) -> Response {
    let mut body = json!({
        "description": description,
        "code": status.as_u16(),
        "correlationId": random_hex(16),
    });
    if let Some(code) = error_code {
        body["errorCode"] = json!(code);
    }
    if let Some(name) = error_name {
        body["errorName"] = json!(name);
    }
    (status, axum::Json(body)).into_response()
}

fn not_found(what: &str) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        &format!("{what} not found"),
        None,
        None,
    )
}

fn bad_request(description: &str) -> Response {
    api_error(StatusCode::BAD_REQUEST, description, Some(0), None)
}

fn ok_one() -> Response {
    axum::Json(json!({"ok": 1})).into_response()
}

fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/resources/applicants", post(create_applicant))
        .route("/resources/applicants/{applicant}/one", get(get_applicant))
        .route("/resources/applicants/{applicant}/status", get(get_status))
        .route(
            "/resources/applicants/{applicant}/status/pending",
            post(set_pending),
        )
        .route(
            "/resources/applicants/{applicant}/status/testCompleted",
            post(test_completed),
        )
        .route(
            "/resources/applicants/{applicant}/recheck/aml",
            post(recheck_aml),
        )
        .route("/resources/applicants/{applicant}/reset", post(reset))
        .route(
            "/resources/api/applicants/{applicant}/amlCase",
            get(aml_case),
        )
        .route("/resources/amlCases/{case}/hits", patch(review_hits))
        .route(
            "/resources/sdkIntegrations/levels/{level}/websdkLink",
            post(websdk_link),
        )
        .route("/resources/accessTokens/sdk", post(sdk_access_token))
        .route("/resources/accessTokens", post(legacy_access_token))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            authenticate,
        ));
    let open = Router::new()
        .route("/websdk/p/{link}", get(page::show))
        .route("/websdk/p/{link}/{action}", post(page::act))
        .route("/_sim/knobs", get(get_knobs).put(put_knobs))
        .route("/_sim/deliveries", get(get_deliveries));
    api.merge(open).with_state(shared)
}

/// Checks `X-App-Token`, `X-App-Access-Ts` and `X-App-Access-Sig` as Sumsub does, over the path
/// and query the server received and the raw body.
async fn authenticate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return bad_request("Could not read the request body");
    };
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |original| &original.0);
    let path_and_query = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let mismatch = || {
        api_error(
            StatusCode::UNAUTHORIZED,
            "Request signature mismatch",
            Some(4003),
            Some("app-token-signature mismatch"),
        )
    };
    let config = &shared.config;
    if header("X-App-Token") != Some(config.app_token.expose_secret()) {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "Invalid app token",
            Some(4002),
            Some("app-token-invalid"),
        );
    }
    let Some(timestamp) = header("X-App-Access-Ts") else {
        return mismatch();
    };
    let Ok(seconds) = timestamp.trim().parse::<i64>() else {
        return mismatch();
    };
    let skew = OffsetDateTime::now_utc().unix_timestamp().abs_diff(seconds);
    if skew > config.max_clock_skew.as_secs() {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "Request timestamp is too far from the server time",
            Some(4003),
            Some("app-token-signature mismatch"),
        );
    }
    let Some(signature) = header("X-App-Access-Sig") else {
        return mismatch();
    };
    if !verify_request_signature(
        config.secret_key.expose_secret().as_bytes(),
        timestamp,
        parts.method.as_str(),
        &path_and_query,
        &body,
        signature,
    ) {
        return mismatch();
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}

fn applicant_json(applicant: &SimApplicant) -> Value {
    let mut body = json!({
        "id": applicant.id,
        "createdAt": date_time(applicant.created_at),
        "key": "SIMULATORKEY",
        "clientId": "kyc-simulator",
        "inspectionId": applicant.inspection_id,
        "externalUserId": applicant.external_user_id,
        "info": applicant.info,
        "fixedInfo": applicant.fixed_info,
        "applicantPlatform": "API",
        "requiredIdDocs": {"docSets": [
            {"idDocSetType": "IDENTITY", "types": ["PASSPORT", "DRIVERS", "ID_CARD"]},
            {"idDocSetType": "SELFIE", "types": ["SELFIE"], "videoRequired": "passiveLiveness"}
        ]},
        "review": review_json(applicant),
        "type": "individual",
    });
    if let Some(email) = &applicant.email {
        body["email"] = json!(email);
    }
    if let Some(phone) = &applicant.phone {
        body["phone"] = json!(phone);
    }
    body
}

fn review_json(applicant: &SimApplicant) -> Value {
    let mut review = json!({
        "reviewId": applicant.review_id,
        "attemptId": applicant.attempt_id,
        "attemptCnt": applicant.attempt_count,
        "levelName": applicant.level_name,
        "createDate": format_created_at(applicant.created_at),
        "reviewStatus": applicant.review_status,
        "priority": 0,
        "reprocessing": false,
        "autoChecked": false,
    });
    if let Some(at) = applicant.review_date {
        review["reviewDate"] = json!(format_created_at(at));
    }
    if let Some(result) = &applicant.review_result {
        review["reviewResult"] = result.clone();
    }
    review
}

impl SimState {
    /// The applicant named by a path segment: an id, or `-;externalUserId=…`.
    fn find(&mut self, key: &str) -> Option<&mut SimApplicant> {
        let id = match key.strip_prefix("-;externalUserId=") {
            Some(external) => self.by_external.get(external)?.clone(),
            None => key.to_owned(),
        };
        self.applicants.get_mut(&id)
    }

    /// A creation time for the next event: now, but always after the previous one, so the
    /// events of one action are strictly ordered by `createdAtMs`.
    fn next_stamp(&mut self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        let now = now
            .replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
            .unwrap_or(now);
        let at = match self.last_event_at {
            Some(last) if now <= last => last + time::Duration::milliseconds(1),
            _ => now,
        };
        self.last_event_at = Some(at);
        at
    }

    fn insert(&mut self, applicant: SimApplicant) {
        self.by_external
            .insert(applicant.external_user_id.clone(), applicant.id.clone());
        self.applicants.insert(applicant.id.clone(), applicant);
    }
}

fn new_applicant(external_user_id: String, level_name: String, body: &Value) -> SimApplicant {
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    let fixed_info = body
        .get("fixedInfo")
        .filter(|v| v.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    SimApplicant {
        id: new_id(),
        inspection_id: new_id(),
        external_user_id,
        level_name,
        created_at: OffsetDateTime::now_utc(),
        email: text("email"),
        phone: text("phone"),
        fixed_info,
        info: json!({}),
        review_id: random_hex(5),
        attempt_id: random_hex(5),
        attempt_count: 0,
        review_status: "init",
        review_date: None,
        review_result: None,
        aml_case: None,
    }
}

/// Builds one webhook for `applicant` in its current state.
fn webhook(
    state: &mut SimState,
    applicant_id: &str,
    event_type: &str,
    client_id: &str,
) -> Option<Outgoing> {
    let at = state.next_stamp();
    let applicant = state.applicants.get(applicant_id)?;
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        applicant_id: &'a str,
        inspection_id: &'a str,
        applicant_type: &'a str,
        correlation_id: String,
        level_name: &'a str,
        sandbox_mode: bool,
        external_user_id: &'a str,
        #[serde(rename = "type")]
        event_type: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        review_result: Option<&'a Value>,
        review_status: &'a str,
        created_at: String,
        created_at_ms: String,
        client_id: &'a str,
    }
    let created_at_ms = format_created_at_ms(at);
    let body = Body {
        applicant_id: &applicant.id,
        inspection_id: &applicant.inspection_id,
        applicant_type: "individual",
        correlation_id: random_hex(16),
        level_name: &applicant.level_name,
        sandbox_mode: true,
        external_user_id: &applicant.external_user_id,
        event_type,
        review_result: if event_type == "applicantReviewed" {
            applicant.review_result.as_ref()
        } else {
            None
        },
        review_status: applicant.review_status,
        created_at: format_created_at(at),
        created_at_ms: created_at_ms.clone(),
        client_id,
    };
    let body = serde_json::to_vec(&body).ok()?;
    Some(Outgoing {
        event_type: event_type.to_owned(),
        applicant_id: applicant.id.clone(),
        created_at_ms,
        body: body.into(),
    })
}

/// The transitions of a simulated review. Each returns the webhooks it fires.
mod flow {
    use super::*;

    /// Screens the applicant's name against the sandbox test names, replacing the AML case.
    pub(super) fn screen(state: &mut SimState, applicant_id: &str) {
        let Some(applicant) = state.applicants.get_mut(applicant_id) else {
            return;
        };
        let profile = AmlProfile::of(applicant);
        let name = [
            applicant.fixed_info.get("firstName"),
            applicant.fixed_info.get("lastName"),
        ]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ");
        let hits = profile
            .hit()
            .map(|(match_status, risk_labels)| AmlHit {
                id: random_hex(6).to_uppercase(),
                name: name.clone(),
                match_status: match_status.into(),
                whitelisted: false,
                risk_labels,
            })
            .into_iter()
            .collect();
        let case_id = applicant
            .aml_case
            .as_ref()
            .map_or_else(new_id, |case| case.id.clone());
        applicant.aml_case = Some(AmlCase {
            id: case_id.clone(),
            created_at: OffsetDateTime::now_utc(),
            hits,
        });
        state.case_owner.insert(case_id, applicant_id.to_owned());
    }

    /// The customer submitted: `pending`, screened, `applicantPending`.
    pub(super) fn submit(
        state: &mut SimState,
        applicant_id: &str,
        client_id: &str,
    ) -> Vec<Outgoing> {
        let Some(applicant) = state.applicants.get_mut(applicant_id) else {
            return Vec::new();
        };
        applicant.review_status = "pending";
        applicant.review_result = None;
        applicant.attempt_count += 1;
        applicant.attempt_id = random_hex(5);
        screen(state, applicant_id);
        webhook(state, applicant_id, "applicantPending", client_id)
            .into_iter()
            .collect()
    }

    /// A verdict: `completed`, `applicantReviewed`.
    pub(super) fn review(
        state: &mut SimState,
        applicant_id: &str,
        result: Value,
        document_country: &str,
        client_id: &str,
    ) -> Vec<Outgoing> {
        let green_then_red = state.knobs.green_then_red;
        let Some(applicant) = state.applicants.get_mut(applicant_id) else {
            return Vec::new();
        };
        let green = result.get("reviewAnswer").and_then(Value::as_str) == Some("GREEN");
        applicant.review_status = "completed";
        applicant.review_date = Some(OffsetDateTime::now_utc());
        applicant.review_result = Some(result);
        if green {
            // What the documents would have shown: the name given, issued in the configured country.
            let mut info = applicant.fixed_info.clone();
            info["country"] = json!(document_country);
            info["idDocs"] = json!([{"idDocType": "PASSPORT", "country": document_country}]);
            applicant.info = info;
        }
        let mut events: Vec<Outgoing> =
            webhook(state, applicant_id, "applicantReviewed", client_id)
                .into_iter()
                .collect();
        if green && green_then_red {
            let red = json!({
                "reviewAnswer": "RED",
                "reviewRejectType": "FINAL",
                "rejectLabels": ["FRAUDULENT_PATTERNS"],
                "clientComment": "Blocked after approval.",
            });
            if let Some(applicant) = state.applicants.get_mut(applicant_id) {
                applicant.review_result = Some(red);
            }
            events.extend(webhook(state, applicant_id, "applicantReviewed", client_id));
        }
        events
    }

    /// Paused for a compliance officer: `onHold`, `applicantOnHold`.
    pub(super) fn hold(state: &mut SimState, applicant_id: &str, client_id: &str) -> Vec<Outgoing> {
        let Some(applicant) = state.applicants.get_mut(applicant_id) else {
            return Vec::new();
        };
        applicant.review_status = "onHold";
        webhook(state, applicant_id, "applicantOnHold", client_id)
            .into_iter()
            .collect()
    }

    /// An approval as the reviewer would give it, given what screening found.
    pub(super) fn approve(
        state: &mut SimState,
        applicant_id: &str,
        country: &str,
        client_id: &str,
    ) -> Vec<Outgoing> {
        let Some(profile) = state.applicants.get(applicant_id).map(AmlProfile::of) else {
            return Vec::new();
        };
        if profile == AmlProfile::Yellow {
            return hold(state, applicant_id, client_id);
        }
        let result = match profile.rejection() {
            Some((label, button)) => json!({
                "reviewAnswer": "RED",
                "reviewRejectType": "FINAL",
                "rejectLabels": [label],
                "buttonIds": [button],
                "clientComment": "Confirmed watchlist match.",
            }),
            None => json!({"reviewAnswer": "GREEN", "rejectLabels": []}),
        };
        review(state, applicant_id, result, country, client_id)
    }

    /// A manual AML hit for the applicant, as ongoing monitoring would raise one.
    pub(super) fn add_hit(state: &mut SimState, applicant_id: &str) {
        let Some(applicant) = state.applicants.get_mut(applicant_id) else {
            return;
        };
        let name = applicant
            .fixed_info
            .get("lastName")
            .and_then(Value::as_str)
            .unwrap_or("Unknown")
            .to_owned();
        if let Some(case) = applicant.aml_case.as_mut() {
            case.hits.push(AmlHit {
                id: random_hex(6).to_uppercase(),
                name,
                match_status: "potential_match".into(),
                whitelisted: false,
                risk_labels: vec!["pep"],
            });
        }
    }
}

async fn create_applicant(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(level_name) = query
        .get("levelName")
        .filter(|level| !level.is_empty())
        .cloned()
    else {
        return bad_request("Required parameter 'levelName' is not present");
    };
    if let Some(levels) = &shared.config.levels
        && !levels.contains(&level_name)
    {
        return not_found(&format!("Level '{level_name}'"));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("Malformed JSON body");
    };
    let external_user_id = match body.get("externalUserId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_owned(),
        Some(_) => return bad_request("externalUserId must not be empty"),
        None => format!("preview-random-{}", random_hex(8)),
    };
    if external_user_id.chars().count() > 512 {
        return bad_request("externalUserId is too long");
    }
    let mut state = shared.lock();
    if let Some(existing) = state.by_external.get(&external_user_id) {
        return (
            StatusCode::CONFLICT,
            axum::Json(json!({
                "code": 409,
                "description": format!("Applicant with external user id '{external_user_id}' already exists: {existing}"),
                "correlationId": random_hex(16),
            })),
        )
            .into_response();
    }
    let applicant = new_applicant(external_user_id, level_name, &body);
    let answer = applicant_json(&applicant);
    state.insert(applicant);
    axum::Json(answer).into_response()
}

async fn get_applicant(State(shared): State<Arc<Shared>>, Path(key): Path<String>) -> Response {
    let mut state = shared.lock();
    match state.find(&key) {
        Some(applicant) => axum::Json(applicant_json(applicant)).into_response(),
        None => not_found("Applicant"),
    }
}

async fn get_status(State(shared): State<Arc<Shared>>, Path(key): Path<String>) -> Response {
    let mut state = shared.lock();
    match state.find(&key) {
        Some(applicant) => {
            let mut review = review_json(applicant);
            if let Some(object) = review.as_object_mut() {
                object.remove("reprocessing");
                object.remove("autoChecked");
            }
            axum::Json(review).into_response()
        }
        None => not_found("Applicant"),
    }
}

/// Runs a transition on the applicant named in the path and sends its webhooks.
fn transition(
    shared: &Arc<Shared>,
    key: &str,
    run: impl FnOnce(&mut SimState, &str, &SimulatorConfig) -> Result<Vec<Outgoing>, Response>,
) -> Result<(), Response> {
    let events = {
        let mut state = shared.lock();
        let Some(id) = state.find(key).map(|applicant| applicant.id.clone()) else {
            return Err(not_found("Applicant"));
        };
        run(&mut state, &id, &shared.config)?
    };
    dispatch(shared, events);
    Ok(())
}

async fn set_pending(State(shared): State<Arc<Shared>>, Path(key): Path<String>) -> Response {
    match transition(&shared, &key, |state, id, config| {
        Ok(flow::submit(state, id, &config.client_id))
    }) {
        Ok(()) => ok_one(),
        Err(response) => response,
    }
}

async fn test_completed(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("Malformed JSON body");
    };
    let answer = body.get("reviewAnswer").and_then(Value::as_str);
    if !matches!(answer, Some("GREEN" | "RED"))
        || !body.get("rejectLabels").is_some_and(Value::is_array)
    {
        return bad_request("reviewAnswer (GREEN or RED) and rejectLabels are required");
    }
    let mut result = serde_json::Map::new();
    for field in [
        "reviewAnswer",
        "rejectLabels",
        "reviewRejectType",
        "moderationComment",
        "clientComment",
        "buttonIds",
    ] {
        if let Some(value) = body.get(field) {
            result.insert(field.to_owned(), value.clone());
        }
    }
    let outcome = transition(&shared, &key, |state, id, config| {
        Ok(flow::review(
            state,
            id,
            Value::Object(result),
            &config.document_country,
            &config.client_id,
        ))
    });
    match outcome {
        Ok(()) => ok_one(),
        Err(response) => response,
    }
}

async fn recheck_aml(State(shared): State<Arc<Shared>>, Path(key): Path<String>) -> Response {
    let outcome = transition(&shared, &key, |state, id, _| {
        let approved = state.applicants.get(id).is_some_and(|applicant| {
            applicant.review_status == "completed"
                && applicant
                    .review_result
                    .as_ref()
                    .and_then(|r| r.get("reviewAnswer"))
                    .and_then(Value::as_str)
                    == Some("GREEN")
        });
        if !approved {
            return Err(bad_request(
                "AML re-check is only available for approved applicants",
            ));
        }
        flow::screen(state, id);
        Ok(Vec::new())
    });
    match outcome {
        Ok(()) => ok_one(),
        Err(response) => response,
    }
}

async fn reset(State(shared): State<Arc<Shared>>, Path(key): Path<String>) -> Response {
    let outcome = transition(&shared, &key, |state, id, config| {
        if let Some(applicant) = state.applicants.get_mut(id) {
            applicant.review_status = "init";
            applicant.review_result = None;
            applicant.review_date = None;
            applicant.info = json!({});
        }
        Ok(webhook(state, id, "applicantReset", &config.client_id)
            .into_iter()
            .collect())
    });
    match outcome {
        Ok(()) => ok_one(),
        Err(response) => response,
    }
}

async fn aml_case(State(shared): State<Arc<Shared>>, Path(key): Path<String>) -> Response {
    let mut state = shared.lock();
    let Some(applicant) = state.find(&key) else {
        return not_found("Applicant");
    };
    let Some(case) = &applicant.aml_case else {
        return not_found("AML case");
    };
    let mut labels: Vec<&str> = case
        .hits
        .iter()
        .flat_map(|hit| hit.risk_labels.iter().copied())
        .collect();
    labels.sort_unstable();
    labels.dedup();
    let answer = if case
        .hits
        .iter()
        .any(|hit| hit.match_status != "false_positive")
    {
        "RED"
    } else {
        "GREEN"
    };
    let hits: Vec<Value> = case
        .hits
        .iter()
        .map(|hit| {
            json!({
                "id": hit.id,
                "name": hit.name,
                "entityType": "individual",
                "birthYears": ["1999"],
                "sources": [{"name": "Simulated watchlist"}],
                "review": {"matchStatus": hit.match_status, "whitelisted": hit.whitelisted, "modifiedAt": date_time(case.created_at)},
                "riskLabels": hit.risk_labels,
            })
        })
        .collect();
    axum::Json(json!({
        "id": case.id,
        "createdAt": date_time(case.created_at),
        "targetEntityType": "applicant",
        "targetEntityId": applicant.id,
        "screeningVendor": "simulator",
        "ongoingMonitoring": {"enabled": true},
        "review": {"answer": answer},
        "riskLabels": labels,
        "hits": hits,
    }))
    .into_response()
}

async fn review_hits(
    State(shared): State<Arc<Shared>>,
    Path(case_id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("Malformed JSON body");
    };
    let Some(reviews) = body.get("hitReviews").and_then(Value::as_array) else {
        return bad_request("hitReviews is required");
    };
    let mut state = shared.lock();
    let Some(owner) = state.case_owner.get(&case_id).cloned() else {
        return bad_request(&format!("Invalid id '{case_id}'"));
    };
    let Some(applicant) = state.applicants.get_mut(&owner) else {
        return bad_request(&format!("Invalid id '{case_id}'"));
    };
    if applicant.review_status != "onHold" {
        return bad_request("Hits can only be reviewed while the applicant is on hold");
    }
    let Some(case) = applicant.aml_case.as_mut() else {
        return bad_request(&format!("Invalid id '{case_id}'"));
    };
    // Validate every review before applying any, so a bad id changes nothing.
    let mut updates = Vec::new();
    for review in reviews {
        let hit_id = review
            .get("hitId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(index) = case.hits.iter().position(|hit| hit.id == hit_id) else {
            return bad_request(&format!("Invalid id '{hit_id}'"));
        };
        updates.push((index, review));
    }
    for (index, review) in &updates {
        let hit = &mut case.hits[*index];
        if let Some(status) = review.get("matchStatus").and_then(Value::as_str) {
            hit.match_status = status.to_owned();
        }
        if let Some(whitelisted) = review.get("whitelisted").and_then(Value::as_bool) {
            hit.whitelisted = whitelisted;
        }
    }
    axum::Json(json!({"updated": updates.len()})).into_response()
}

async fn websdk_link(
    State(shared): State<Arc<Shared>>,
    Path(level): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    // `-` is the current endpoint (everything in the body); a level name is the legacy one
    // (everything in the query).
    let (level_name, user_id, ttl_secs) = if level == "-" {
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return bad_request("Malformed JSON body");
        };
        let Some(level_name) = body
            .get("levelName")
            .and_then(Value::as_str)
            .filter(|l| !l.is_empty())
        else {
            return bad_request("levelName is required");
        };
        (
            level_name.to_owned(),
            body.get("userId")
                .and_then(Value::as_str)
                .map(str::to_owned),
            body.get("ttlInSecs")
                .and_then(Value::as_u64)
                .unwrap_or(1800),
        )
    } else {
        let ttl = query
            .get("ttlInSecs")
            .and_then(|t| t.parse().ok())
            .unwrap_or(1800);
        (level, query.get("externalUserId").cloned(), ttl)
    };
    if let Some(levels) = &shared.config.levels
        && !levels.contains(&level_name)
    {
        return not_found(&format!("Level '{level_name}'"));
    }
    let link_id = format!("sbx_{}", random_hex(12));
    let expires_at = OffsetDateTime::now_utc() + Duration::from_secs(ttl_secs.min(31_536_000));
    shared.lock().links.insert(
        link_id.clone(),
        Link {
            external_user_id: user_id
                .unwrap_or_else(|| format!("preview-random-{}", random_hex(8))),
            level_name,
            expires_at,
        },
    );
    axum::Json(json!({"url": format!("{}/websdk/p/{link_id}", shared.config.public_base_url)}))
        .into_response()
}

fn access_token(user_id: &str) -> Response {
    axum::Json(json!({"token": format!("_act-sbx-{}", random_hex(16)), "userId": user_id}))
        .into_response()
}

async fn sdk_access_token(body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("Malformed JSON body");
    };
    match body.get("userId").and_then(Value::as_str) {
        Some(user_id) if !user_id.is_empty() => access_token(user_id),
        _ => bad_request("userId is required"),
    }
}

async fn legacy_access_token(Query(query): Query<HashMap<String, String>>) -> Response {
    match query.get("userId") {
        Some(user_id) if !user_id.is_empty() => access_token(user_id),
        _ => bad_request("userId is required"),
    }
}

async fn get_knobs(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.knobs()).into_response()
}

async fn put_knobs(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<DeliveryKnobs>(&body) {
        Ok(knobs) => {
            shared.lock().knobs = knobs.clone();
            axum::Json(knobs).into_response()
        }
        Err(_) => bad_request("Malformed knobs"),
    }
}

async fn get_deliveries(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.lock().deliveries.clone()).into_response()
}
