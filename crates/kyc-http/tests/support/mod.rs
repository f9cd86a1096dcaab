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
    ApiKeyRecord, ApiKeyStore, Clock, Credentials, CreditsLedger, CustomerStore, Firm, FirmStore,
    IdGenerator, IdempotencyKey, InfrastructureError, IssuedToken, MintedApiKey, User, UserStore,
    WebhookEndpointId,
};
use kyc_domain::prelude::*;
use kyc_domain::testkit::memory::{FakeProvider, Faults, ManualClock, MemoryLedger, SequentialIds};
use kyc_domain::testkit::strategies::{EPOCH, person};
use kyc_domain::usecases::{
    AccessPorts, AccessService, KycService, Ports, Settings, WebhookPorts, WebhookService,
};
use kyc_domain::values::Password;
use kyc_http::{
    BackOfficePorts, HttpConfig, HttpPorts, Metrics, ProviderWebhooks, Readiness, WebhookRejection,
};
use kyc_sqlite::SqliteStore;
use serde_json::Value;
use tower::ServiceExt;

/// The webhook secret of the test provider.
pub const WEBHOOK_SECRET: &str = "whsec-test";

/// Sequential customer ids (as the domain's fake) and link tokens whose hash is the real SHA-256
/// of the token, as the production generator makes them, so `/v/{token}` can find the attempt.
#[derive(Default)]
pub struct TestIds(SequentialIds);

impl IdGenerator for TestIds {
    fn customer_id(&self) -> CustomerId {
        self.0.customer_id()
    }

    fn user_id(&self) -> UserId {
        self.0.user_id()
    }

    fn api_key_id(&self) -> ApiKeyId {
        self.0.api_key_id()
    }

    fn webhook_endpoint_id(&self) -> WebhookEndpointId {
        self.0.webhook_endpoint_id()
    }

    fn link_token(&self, attempt: &ExternalUserId) -> IssuedToken {
        use sha2::Digest;
        let token = hex::encode(&sha2::Sha256::digest(format!("link:{attempt}"))[..16]);
        IssuedToken {
            token_hash: hex::encode(sha2::Sha256::digest(token.as_bytes())),
            token,
        }
    }
}

/// Credentials as the server's, with argon2id at the low cost [`App::add_user`] uses (so users
/// created through the access use cases log in quickly) and keys whose hash is the real SHA-256,
/// so they authenticate.
pub struct TestCredentials(SequentialIds);

#[async_trait]
impl Credentials for TestCredentials {
    async fn hash_password(&self, password: &Password) -> Result<String, InfrastructureError> {
        Ok(low_cost_hash(password.expose()))
    }

    fn mint_api_key(&self, sandbox: bool) -> MintedApiKey {
        let prefix = if sandbox { "kyc_test_" } else { "kyc_live_" };
        let key = format!("{prefix}{}", self.0.customer_id().as_uuid().simple());
        MintedApiKey {
            prefix: key[..12].to_owned(),
            last4: key[key.len() - 4..].to_owned(),
            sha256: kyc_http::auth::key_sha256(&key),
            key,
        }
    }

    fn mint_webhook_secret(&self) -> String {
        format!("whsec_{:A>32}", self.0.customer_id().as_uuid().simple())
    }
}

/// An argon2id hash of `password` at a low cost, to keep tests quick; verification reads the
/// cost from the hash.
pub fn low_cost_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"test-salt-16byte").unwrap();
    hasher
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// A provider webhook check as simple as the real one: `X-Payload-Digest` is the hex
/// HMAC-SHA256 of the body; the body is `{type, externalUserId, createdAt (RFC 3339),
/// reviewAnswer?}`.
pub struct TestWebhooks;

impl ProviderWebhooks for TestWebhooks {
    fn verify_and_parse(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<ProviderEvent, WebhookRejection> {
        use hmac::Mac;
        let digest = headers
            .get("x-payload-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| hex::decode(v).ok())
            .ok_or_else(|| WebhookRejection::Unauthenticated("missing digest".into()))?;
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
        mac.update(body);
        mac.verify_slice(&digest)
            .map_err(|_| WebhookRejection::Unauthenticated("digest mismatch".into()))?;
        let value: Value =
            serde_json::from_slice(body).map_err(|e| WebhookRejection::Malformed(e.to_string()))?;
        let text = |name: &str| value[name].as_str().map(str::to_owned);
        let created_at = text("createdAt")
            .and_then(|t| {
                time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
            })
            .ok_or_else(|| WebhookRejection::Malformed("createdAt".into()))?;
        let kind = match (text("type").as_deref(), text("reviewAnswer").as_deref()) {
            (Some("applicantReviewed"), Some("GREEN")) => {
                ProviderEventKind::Reviewed(ReviewVerdict {
                    answer: ReviewAnswer::Green,
                    reject_type: None,
                    reject_labels: vec![],
                })
            }
            (Some("applicantPending"), _) => ProviderEventKind::Pending,
            (Some(other), _) => ProviderEventKind::Other {
                event_type: other.to_owned(),
            },
            (None, _) => return Err(WebhookRejection::Malformed("type".into())),
        };
        Ok(ProviderEvent {
            key: ProviderEventKey::new(hex::encode(sha2::Digest::finalize(
                <sha2::Sha256 as sha2::Digest>::new_with_prefix(body),
            ))),
            applicant_id: None,
            external_user_id: text("externalUserId").map(ExternalUserId::from_provider),
            created_at,
            kind,
        })
    }
}

/// Signs a webhook body as [`TestWebhooks`] checks it.
pub fn sign(body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

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
            ids: Arc::new(TestIds::default()),
        },
        Settings::default(),
    );
    let access = AccessService::new(AccessPorts {
        users: Arc::new(store.clone()),
        api_keys: Arc::new(store.clone()),
        credentials: Arc::new(TestCredentials(SequentialIds::default())),
        clock: clock.clone(),
        ids: Arc::new(TestIds::default()),
    });
    let webhooks = WebhookService::new(
        WebhookPorts {
            endpoints: Arc::new(store.clone()),
            queue: Arc::new(store.clone()),
            feed: Arc::new(store.clone()),
            clock: clock.clone(),
            ids: Arc::new(TestIds::default()),
            credentials: Arc::new(TestCredentials(SequentialIds::default())),
        },
        time::Duration::hours(24),
    );
    let ready = Arc::new(Switch(AtomicBool::new(true)));
    let router = kyc_http::router_with(
        HttpPorts {
            service: service.clone(),
            api_keys: Arc::new(store.clone()),
            idempotency: Arc::new(store.clone()),
            clock: clock.clone(),
            readiness: ready.clone(),
            webhooks,
            limits: None,
        },
        Some(BackOfficePorts {
            users: Arc::new(store.clone()),
            sessions: Arc::new(store.clone()),
            audit: Arc::new(store.clone()),
            access,
            webhooks: Some(Arc::new(TestWebhooks)),
            login_failures: None,
        }),
        config,
        Metrics::new(),
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
    /// Sends every method to every path of the OpenAPI document `doc` (`concrete` turns a path
    /// and method into the URI to call, or `None` to leave it out) with `key` and `headers`, and
    /// an empty JSON body where a body goes. Each documented operation must be served (neither
    /// 404 nor 405) and every other method must answer 405. Returns the documented operations
    /// called, as `method path`, sorted.
    pub async fn sweep_documented_operations(
        &self,
        doc: &Value,
        concrete: impl Fn(&str, &str) -> Option<String>,
        key: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Vec<String> {
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in ["get", "post", "put", "patch", "delete"] {
                let Some(uri) = concrete(path, method) else {
                    continue;
                };
                let http_method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let body =
                    matches!(method, "post" | "patch" | "put").then(|| serde_json::json!({}));
                let reply = self
                    .call(http_method, &uri, key, body.as_ref(), headers)
                    .await;
                if item.get(method).is_some() {
                    documented.push(format!("{method} {path}"));
                    assert!(
                        reply.status != StatusCode::NOT_FOUND
                            && reply.status != StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {path} is documented but not served: {}",
                        reply.text
                    );
                } else {
                    assert_eq!(
                        reply.status,
                        StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {path} is served but not documented"
                    );
                }
            }
        }
        documented.sort();
        documented
    }

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

    /// Stores a back-office user with `password` (see [`low_cost_hash`]).
    pub async fn add_user(&self, firm: FirmId, email: &str, role: Role, password: &str) -> UserId {
        let hash = low_cost_hash(password);
        let id = UserId::from_uuid(uuid::Uuid::new_v4());
        self.store
            .create_user(&User {
                id,
                firm_id: firm,
                email: Email::new(email).unwrap(),
                role,
                password_hash: hash,
                created_at: EPOCH,
                disabled_at: None,
            })
            .await
            .unwrap();
        id
    }

    /// Logs in and returns the session.
    pub async fn login(&self, email: &str, password: &str) -> Login {
        let reply = self
            .call(
                Method::POST,
                "/api/backoffice/session",
                None,
                Some(&serde_json::json!({"email": email, "password": password})),
                &[],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let cookie = reply.header("set-cookie").unwrap().to_owned();
        let token = cookie.split(';').next().unwrap().trim().to_owned();
        Login {
            cookie: token,
            csrf: reply.json["csrf_token"].as_str().unwrap().to_owned(),
            set_cookie: cookie,
            body: reply.json,
        }
    }

    /// A back-office request with the session's cookie and CSRF token.
    pub async fn bo(
        &self,
        method: Method,
        uri: &str,
        login: &Login,
        body: Option<&Value>,
    ) -> Reply {
        self.bo_with(method, uri, login, body, &[]).await
    }

    /// [`App::bo`] with more headers.
    pub async fn bo_with(
        &self,
        method: Method,
        uri: &str,
        login: &Login,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut all = vec![
            ("cookie", login.cookie.as_str()),
            ("x-csrf-token", login.csrf.as_str()),
        ];
        all.extend_from_slice(headers);
        self.call(method, uri, None, body, &all).await
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

/// A back-office session.
pub struct Login {
    /// `kyc_session=<token>`, for the `Cookie` header.
    pub cookie: String,
    /// The CSRF token.
    pub csrf: String,
    /// The whole `Set-Cookie` of the login.
    pub set_cookie: String,
    /// The login's answer.
    pub body: Value,
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
