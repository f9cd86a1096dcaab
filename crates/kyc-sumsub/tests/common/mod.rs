//! Shared test scaffolding: servers on `127.0.0.1:0`, a simulator with a known base URL, a webhook
//! receiver, and a raw signed caller for endpoints the client does not use.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use kyc_domain::ids::ExternalUserId;
use kyc_domain::ports::ApplicantRequest;
use kyc_domain::values::{CustomerType, Email, FullName};
use kyc_sumsub::simulator::{DeliveryKnobs, WebhookTarget};
use kyc_sumsub::{DigestAlgorithm, Simulator, SimulatorConfig, SumsubClient, SumsubConfig};
use secrecy::SecretString;

pub const APP_TOKEN: &str = "sbx:test-app-token";
pub const SECRET_KEY: &str = "test-secret-key";
pub const WEBHOOK_SECRET: &str = "webhook-secret";

pub fn secret(text: &str) -> SecretString {
    SecretString::from(text.to_owned())
}

/// Serves a router on a fresh local port.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

pub struct RunningSim {
    pub simulator: Simulator,
    /// The client-facing base URL, mount prefix included.
    pub base_url: String,
}

/// A simulator served standalone (`prefix = ""`) or nested under a prefix like `/sim/sumsub`.
pub async fn start_simulator(
    prefix: &str,
    configure: impl FnOnce(&mut SimulatorConfig),
) -> RunningSim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base_url = format!("http://{addr}{prefix}");
    let mut config = SimulatorConfig::new(secret(APP_TOKEN), secret(SECRET_KEY), base_url.clone());
    configure(&mut config);
    let simulator = Simulator::new(config);
    let router = if prefix.is_empty() {
        simulator.router()
    } else {
        Router::new().nest(prefix, simulator.router())
    };
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    RunningSim {
        simulator,
        base_url,
    }
}

pub fn client_for(base_url: &str) -> SumsubClient {
    let mut config = SumsubConfig::new(base_url, secret(APP_TOKEN), secret(SECRET_KEY));
    config.initial_backoff = Duration::from_millis(10);
    config.max_backoff = Duration::from_millis(50);
    SumsubClient::new(config).unwrap()
}

pub fn request(external: &str, name: &str) -> ApplicantRequest {
    ApplicantRequest {
        external_user_id: ExternalUserId::from_provider(external),
        level_name: "basic-kyc-level".into(),
        email: Email::new("jane@example.com").unwrap(),
        phone: None,
        full_name: FullName::new(name).unwrap(),
        customer_type: CustomerType::Individual,
    }
}

/// What a webhook receiver saw.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Statuses to answer, in order; 200 once they run out.
    pub answers: Arc<Mutex<Vec<u16>>>,
    /// Pause before answering the first delivery only.
    pub first_delay: Arc<Mutex<Option<Duration>>>,
}

impl Receiver {
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `count` deliveries arrived (or fails after 5 s).
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        for _ in 0..500 {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {count} webhooks, got {}", self.received().len());
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let delay = receiver.first_delay.lock().unwrap().take();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    receiver
        .received
        .lock()
        .unwrap()
        .push(Received { headers, body });
    let mut answers = receiver.answers.lock().unwrap();
    if answers.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::from_u16(answers.remove(0)).unwrap()
    }
}

/// A webhook receiver on a fresh port, and the target pointing at it.
pub async fn start_receiver(algorithm: DigestAlgorithm) -> (Receiver, WebhookTarget) {
    let receiver = Receiver::default();
    let app = Router::new()
        .route("/webhooks/sumsub", post(receive))
        .with_state(receiver.clone());
    let addr = serve(app).await;
    let target = WebhookTarget {
        url: format!("http://{addr}/webhooks/sumsub"),
        secret: secret(WEBHOOK_SECRET),
        algorithm,
    };
    (receiver, target)
}

/// Knobs with a compressed retry schedule so failing deliveries resend within milliseconds.
pub fn fast_knobs() -> DeliveryKnobs {
    DeliveryKnobs {
        retry_schedule_ms: vec![20, 20, 20, 20],
        timeout_ms: 300,
        ..DeliveryKnobs::default()
    }
}

/// A raw signed request, for the simulator endpoints the client does not call.
pub async fn signed(
    base_url: &str,
    method: reqwest::Method,
    path_with_query: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let prefix = reqwest::Url::parse(base_url)
        .unwrap()
        .path()
        .trim_end_matches('/')
        .to_owned();
    let ts = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    let signature = kyc_sumsub::signing::request_signature(
        SECRET_KEY.as_bytes(),
        &ts,
        method.as_str(),
        &format!("{prefix}{path_with_query}"),
        body.as_bytes(),
    );
    let response = reqwest::Client::new()
        .request(method, format!("{base_url}{path_with_query}"))
        .header("X-App-Token", APP_TOKEN)
        .header("X-App-Access-Ts", ts)
        .header("X-App-Access-Sig", signature)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// Opens a hosted-flow link and presses a button, as the customer's browser would.
pub async fn press(link: &str, action: &str) {
    let page = reqwest::get(link).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains(&format!("/{action}\"")));
    let response = reqwest::Client::new()
        .post(format!("{link}/{action}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "pressing {action}");
}
