//! The client against a bare local HTTP fake: how each failure is classified, what is retried, and
//! that every request carries a signature an independent check accepts.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::*;
use hmac::{Hmac, Mac};
use kyc_domain::ids::ExternalUserId;
use kyc_domain::ports::{IdentityProvider, ProviderError};
use kyc_sumsub::{SumsubClient, SumsubConfig};
use sha2::Sha256;

type Handler = Arc<dyn Fn(usize, &str) -> Response + Send + Sync>;

#[derive(Clone)]
struct Fake {
    calls: Arc<AtomicUsize>,
    bad_signatures: Arc<AtomicUsize>,
    handler: Handler,
    delay: Duration,
}

/// Sumsub's check, written here from the protocol text rather than with the crate's own code.
fn independently_signed(
    headers: &HeaderMap,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET_KEY.as_bytes()).unwrap();
    mac.update(header("x-app-access-ts").as_bytes());
    mac.update(method.as_bytes());
    mac.update(path_and_query.as_bytes());
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    header("x-app-token") == APP_TOKEN
        && header("x-app-access-sig") == expected
        && header("content-type") == "application/json"
}

async fn fake_handler(State(fake): State<Fake>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path = parts.uri.path_and_query().unwrap().as_str().to_owned();
    if !independently_signed(&parts.headers, parts.method.as_str(), &path, &body) {
        fake.bad_signatures.fetch_add(1, Ordering::SeqCst);
    }
    let call = fake.calls.fetch_add(1, Ordering::SeqCst);
    if !fake.delay.is_zero() {
        tokio::time::sleep(fake.delay).await;
    }
    (fake.handler)(call, &path)
}

async fn start_fake(
    delay: Duration,
    handler: impl Fn(usize, &str) -> Response + Send + Sync + 'static,
) -> (Fake, String) {
    let fake = Fake {
        calls: Arc::default(),
        bad_signatures: Arc::default(),
        handler: Arc::new(handler),
        delay,
    };
    let app = Router::new()
        .fallback(fake_handler)
        .with_state(fake.clone());
    let addr = serve(app).await;
    (fake, format!("http://{addr}"))
}

fn json(status: u16, body: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body.to_owned(),
    )
        .into_response()
}

fn applicant(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","externalUserId":"cust-a1","inspectionId":"x","review":{{"reviewStatus":"init"}}}}"#
    )
}

fn ext() -> ExternalUserId {
    ExternalUserId::from_provider("cust-a1")
}

#[tokio::test]
async fn a_5xx_is_transient_and_a_get_is_retried_but_a_link_post_is_not() {
    let (fake, base) = start_fake(Duration::ZERO, |_, _| {
        json(500, r#"{"description":"boom","code":500}"#)
    })
    .await;
    let client = client_for(&base);
    let error = client.find_applicant(&ext()).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Transient { .. }),
        "{error:?}"
    );
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        3,
        "three tries for a GET"
    );
    fake.calls.store(0, Ordering::SeqCst);
    let error = client
        .verification_link(&ext(), "basic-kyc-level", 600)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::Transient { .. }),
        "{error:?}"
    );
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        1,
        "a link POST is not repeated"
    );
    assert_eq!(fake.bad_signatures.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_429_is_honoured_and_retried_then_succeeds() {
    let (fake, base) = start_fake(Duration::ZERO, |call, _| {
        if call == 0 {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")], "").into_response()
        } else {
            json(200, r#"{"url":"https://in.sumsub.com/websdk/p/sbx_abc"}"#)
        }
    })
    .await;
    let client = client_for(&base);
    let link = client
        .verification_link(&ext(), "basic-kyc-level", 600)
        .await
        .unwrap();
    assert_eq!(link, "https://in.sumsub.com/websdk/p/sbx_abc");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_persistent_429_ends_as_transient() {
    let (fake, base) = start_fake(Duration::ZERO, |_, _| {
        json(429, r#"{"description":"Too many requests","code":429}"#)
    })
    .await;
    let client = client_for(&base);
    let error = client
        .create_applicant(&request("cust-a1", "Jane Doe"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::Transient { .. }),
        "{error:?}"
    );
    assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_slow_answer_times_out_as_transient() {
    let (_fake, base) = start_fake(Duration::from_secs(3), |_, _| {
        json(200, &applicant("61fcc341e552bf0001086cf8"))
    })
    .await;
    let mut config = SumsubConfig::new(&base, secret(APP_TOKEN), secret(SECRET_KEY));
    config.request_timeout = Duration::from_millis(200);
    config.max_attempts = 1;
    let client = SumsubClient::new(config).unwrap();
    let started = Instant::now();
    let error = client.find_applicant(&ext()).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let ProviderError::Transient { reason } = error else {
        panic!("expected transient")
    };
    assert!(reason.contains("timed out"), "{reason}");
}

#[tokio::test]
async fn a_malformed_success_body_is_transient() {
    let (_fake, base) = start_fake(Duration::ZERO, |_, _| json(200, "{not json")).await;
    let client = client_for(&base);
    let error = client
        .create_applicant(&request("cust-a1", "Jane Doe"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::Transient { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_4xx_is_a_refusal_with_the_providers_description_and_is_not_retried() {
    let body =
        r#"{"description":"Invalid level","code":400,"correlationId":"req-1","errorCode":0}"#;
    let (fake, base) = start_fake(Duration::ZERO, move |_, _| json(400, body)).await;
    let client = client_for(&base);
    let error = client.find_applicant(&ext()).await.unwrap_err();
    assert_eq!(
        error,
        ProviderError::Refused {
            status: 400,
            reason: "Invalid level".into()
        }
    );
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_409_body_resolves_to_the_applicant_it_names() {
    let body = r#"{"code":409,"description":"Applicant with external user id 'cust-a1' already exists: 61fcc341e552bf0001086cf8","correlationId":"c"}"#;
    let (fake, base) = start_fake(Duration::ZERO, move |_, _| json(409, body)).await;
    let client = client_for(&base);
    let applicant = client
        .create_applicant(&request("cust-a1", "Jane Doe"))
        .await
        .unwrap();
    assert_eq!(applicant.id.as_str(), "61fcc341e552bf0001086cf8");
    assert_eq!(applicant.external_user_id, ext());
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert_eq!(fake.bad_signatures.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_409_without_an_id_falls_back_to_the_lookup_by_external_user_id() {
    let (_fake, base) = start_fake(Duration::ZERO, |_, path| {
        if path.starts_with("/resources/applicants?") {
            json(
                409,
                r#"{"code":409,"description":"Applicant already exists"}"#,
            )
        } else if path == "/resources/applicants/-;externalUserId=cust-a1/one" {
            json(200, &applicant("5cb56e8e0a975a35f333cb83"))
        } else {
            json(404, r#"{"code":404,"description":"not found"}"#)
        }
    })
    .await;
    let client = client_for(&base);
    let applicant = client
        .create_applicant(&request("cust-a1", "Jane Doe"))
        .await
        .unwrap();
    assert_eq!(applicant.id.as_str(), "5cb56e8e0a975a35f333cb83");
}

#[tokio::test]
async fn a_409_naming_an_unreadable_applicant_is_a_refusal() {
    let (_fake, base) = start_fake(Duration::ZERO, |_, path| {
        if path.starts_with("/resources/applicants?") {
            json(
                409,
                r#"{"code":409,"description":"Applicant already exists"}"#,
            )
        } else {
            json(404, r#"{"code":404,"description":"not found"}"#)
        }
    })
    .await;
    let client = client_for(&base);
    let error = client
        .create_applicant(&request("cust-a1", "Jane Doe"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::Refused { status: 409, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn every_request_is_signed_over_the_encoded_path_and_exact_body() {
    let (fake, base) = start_fake(Duration::ZERO, |_, path| {
        if path.contains("websdkLink") {
            json(200, r#"{"url":"https://x/websdk/p/1"}"#)
        } else if path.ends_with("/amlCase") {
            json(200, r#"{"id":"c","riskLabels":["pep"],"hits":[{"id":"H1","name":"X","review":{"matchStatus":"potential_match"}}]}"#)
        } else if path.ends_with("/recheck/aml") {
            json(200, r#"{"ok":1}"#)
        } else {
            json(200, &applicant("5cb56e8e0a975a35f333cb83"))
        }
    })
    .await;
    let client = client_for(&base);
    let mut odd = request("cust a1/ü?&", "Jane Doe");
    odd.level_name = "level with spaces&=".into();
    odd.phone = Some(kyc_domain::values::Phone::new("+447700900123").unwrap());
    let created = client.create_applicant(&odd).await.unwrap();
    client
        .find_applicant(&odd.external_user_id)
        .await
        .unwrap()
        .unwrap();
    client
        .verification_link(&odd.external_user_id, &odd.level_name, 600)
        .await
        .unwrap();
    client.verified_identity(&created.id).await.unwrap();
    use kyc_domain::ports::AmlScreening;
    let hits = client.fetch_hits(&created.id).await.unwrap();
    assert_eq!(
        hits[0]
            .categories
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>(),
        ["pep"],
        "case labels are inherited"
    );
    client.request_rescreen(&created.id).await.unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 6);
    assert_eq!(fake.bad_signatures.load(Ordering::SeqCst), 0);
}
