//! The test app: the real router over real SQLite storage (a temp file per test), with the
//! domain's in-memory ledger and provider fakes behind the use cases, driven in-process.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use kyc_domain::ports::{
    ApiKeyRecord, ApiKeyStore, Clock, CreditsLedger, CustomerStore, Firm, FirmStore, IdempotencyKey,
};
use kyc_domain::prelude::*;
use kyc_domain::testkit::memory::{FakeProvider, Faults, ManualClock, MemoryLedger, SequentialIds};
use kyc_domain::testkit::strategies::{EPOCH, person};
use kyc_domain::usecases::{KycService, Ports, Settings};
use kyc_http::{HttpConfig, HttpPorts, Readiness};
use kyc_sqlite::SqliteStore;
use serde_json::Value;
use tower::ServiceExt;

/// A readiness probe the test can flip.
#[derive(Default)]
pub struct Switch(pub AtomicBool);

#[async_trait]
impl Readiness for Switch {
    async fn check(&self) -> Result<(), String> {
        if self.0.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("database unreachable".into())
        }
    }
}

pub struct App {
    pub router: Router,
    pub store: SqliteStore,
    pub service: KycService,
    pub clock: Arc<ManualClock>,
    pub ledger: Arc<MemoryLedger>,
    pub provider: Arc<FakeProvider>,
    pub ready: Arc<Switch>,
    pub firm: FirmId,
    /// A key of `firm` with every CRM scope.
    pub key: String,
    _dir: tempfile::TempDir,
}

pub const ALL_SCOPES: &[&str] = &["customers:read", "customers:write", "aml:read"];

pub async fn app() -> App {
    app_with(HttpConfig {
        rate_limit_per_minute: 0,
        rate_limit_per_day: 0,
        ..HttpConfig::default()
    })
    .await
}

pub async fn app_with(config: HttpConfig) -> App {
    app_built(config, None).await
}

/// An app whose use cases use `customers` instead of the SQLite store (to inject failures).
pub async fn app_built(config: HttpConfig, customers: Option<Arc<dyn CustomerStore>>) -> App {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kyc.db").display());
    let pool = kyc_sqlite::connect(&url).await.unwrap();
    kyc_sqlite::migrate(&pool).await.unwrap();
    let store = SqliteStore::new(pool);
    let faults = Arc::new(Faults::default());
    let clock = Arc::new(ManualClock::new(EPOCH));
    let ledger = Arc::new(MemoryLedger::new(faults.clone(), clock.clone()));
    let provider = Arc::new(FakeProvider::new(faults));
    let service = KycService::new(
        Ports {
            customers: customers.unwrap_or_else(|| Arc::new(store.clone())),
            ledger: ledger.clone(),
            provider: provider.clone(),
            screening: provider.clone(),
            clock: clock.clone(),
            ids: Arc::new(SequentialIds::default()),
        },
        Settings::default(),
    );
    let ready = Arc::new(Switch(AtomicBool::new(true)));
    let router = kyc_http::router(
        HttpPorts {
            service: service.clone(),
            api_keys: Arc::new(store.clone()),
            idempotency: Arc::new(store.clone()),
            clock: clock.clone(),
            readiness: ready.clone(),
        },
        config,
    );
    let firm = FirmId::from_uuid(uuid::Uuid::new_v4());
    let mut app = App {
        router,
        store,
        service,
        clock,
        ledger,
        provider,
        ready,
        firm,
        key: String::new(),
        _dir: dir,
    };
    app.add_firm(firm).await;
    app.key = app.add_key(firm, ALL_SCOPES).await;
    app
}

impl App {
    pub async fn add_firm(&self, firm: FirmId) {
        self.store
            .create_firm(&Firm {
                id: firm,
                name: "Acme Accounting".into(),
                created_at: EPOCH,
            })
            .await
            .unwrap();
    }

    /// Stores a key and returns its plaintext.
    pub async fn add_key_with(
        &self,
        firm: FirmId,
        scopes: &[&str],
        expires_at: Option<time::OffsetDateTime>,
    ) -> (String, ApiKeyId) {
        let key = format!("kyc_test_{}", uuid::Uuid::new_v4().simple());
        let id = ApiKeyId::from_uuid(uuid::Uuid::new_v4());
        self.store
            .create_api_key(&ApiKeyRecord {
                id,
                firm_id: firm,
                label: "CRM sync".into(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                prefix: key[..12].to_owned(),
                last4: key[key.len() - 4..].to_owned(),
                sha256: kyc_http::auth::key_sha256(&key),
                expires_at,
                revoked_at: None,
                created_at: EPOCH,
            })
            .await
            .unwrap();
        (key, id)
    }

    pub async fn add_key(&self, firm: FirmId, scopes: &[&str]) -> String {
        self.add_key_with(firm, scopes, None).await.0
    }

    /// Sends one request through the router.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            builder = builder.header("authorization", format!("Bearer {key}"));
        }
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.raw(builder.body(body).unwrap()).await
    }

    pub async fn raw(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            json,
            text,
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, Some(&self.key), None, &[])
            .await
    }

    pub async fn post(&self, uri: &str, body: &Value) -> Reply {
        self.call(Method::POST, uri, Some(&self.key), Some(body), &[])
            .await
    }

    pub async fn patch(&self, uri: &str, body: &Value) -> Reply {
        self.call(Method::PATCH, uri, Some(&self.key), Some(body), &[])
            .await
    }

    /// Upserts a customer and returns its id.
    pub async fn create(&self, external_id: &str, email: &str) -> String {
        let reply = self
            .post(
                "/api/v1/customers",
                &serde_json::json!({"externalId": external_id, "fullName": "Jane Doe", "email": email}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.json["id"].as_str().unwrap().to_owned()
    }

    /// Drives a customer to `VERIFIED` through the domain (risk confirmed by a person, Start
    /// Verification, a GREEN verdict), then runs screening with `hits`.
    pub async fn verify(&self, id: &str, hits: Vec<AmlHit>) {
        let id = CustomerId::parse(id).unwrap();
        let officer = person(Role::ComplianceOfficer);
        self.ledger
            .grant(
                self.firm,
                Credits::new(5),
                "top-up",
                &IdempotencyKey::new(format!("grant-{id}")).unwrap(),
            )
            .await
            .unwrap();
        let answers = RiskAnswers {
            is_designated_service: true,
            handles_cash_or_crypto: false,
            is_new_customer: true,
        };
        self.service
            .confirm_risk(self.firm, id, &officer, answers)
            .await
            .unwrap();
        let started = self
            .service
            .start_verification(self.firm, id, &officer, Credits::new(1))
            .await
            .unwrap();
        let green = ProviderEvent {
            key: ProviderEventKey::new(format!("evt-{id}")),
            applicant_id: None,
            external_user_id: Some(ExternalUserId::for_attempt(id, started.attempt)),
            created_at: self.clock.now(),
            kind: ProviderEventKind::Reviewed(ReviewVerdict {
                answer: ReviewAnswer::Green,
                reject_type: None,
                reject_labels: vec![],
            }),
        };
        self.service.apply_provider_event(&green).await.unwrap();
        self.provider.set_hits(hits);
        self.service.run_screening(self.firm, id).await.unwrap();
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.json["error"]["code"]
            .as_str()
            .unwrap_or("<no envelope>")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and the envelope's code.
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.code(), code, "{}", self.text);
        assert!(self.json["error"]["message"].is_string(), "{}", self.text);
    }
}
