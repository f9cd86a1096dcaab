//! Security probes against the real binary, on both backends.
//!
//! The CRM sweep walks every operation of the CRM API's own OpenAPI document, so a route added
//! later is swept without touching this file: another firm's key, holding every scope, reaches
//! none of a firm's customers or webhook endpoints (by UUID or by external id), sees none of them
//! in a list, and changes nothing. The back-office sweep does the same for every back-office JSON
//! route and page that names a record (customers, users, API keys, webhook endpoints), as each
//! role of another firm, and checks that the role allowed to ask was told 404.

use kyc_e2e::{Server, both_backends};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const EVERY_SCOPE: &str = "customers:read,customers:write,aml:read,webhooks:manage";

async fn call(
    server: &Server,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut request = server
        .client()
        .request(method, server.url(path))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

async fn json_of(
    server: &Server,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let (status, text) = call(server, key, method, path, body).await;
    assert!(status.is_success(), "{status} {text}");
    serde_json::from_str(&text).expect("JSON")
}

/// A body the operation accepts in shape, so a refusal is about whose resource it is.
fn body_for(method: &Method, path: &str, event: &str) -> Option<Value> {
    match (method.as_str(), path) {
        ("PATCH", p) if p.starts_with("/api/v1/customers/") => {
            Some(json!({"phone": "+61400000999"}))
        }
        ("PATCH", _) => Some(json!({"description": "taken over"})),
        ("POST", p) if p.ends_with("/replay") => Some(json!({"event_id": event})),
        _ => None,
    }
}

fn session_token(response: &reqwest::Response) -> String {
    let cookie = response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("kyc_session="))
        .expect("the session cookie is set")
        .to_owned();
    let flags = cookie.to_ascii_lowercase();
    assert!(flags.contains("httponly"), "{cookie}");
    assert!(flags.contains("samesite=strict"), "{cookie}");
    assert!(flags.contains("path=/"), "{cookie}");
    cookie
        .split(';')
        .next()
        .and_then(|pair| pair.split_once('='))
        .map(|(_, token)| token.to_owned())
        .expect("name=value")
}

/// A firm's records that another firm must not reach: a customer, a webhook endpoint, a staff user,
/// the firm's API key (every scope), an event, and the id of an AML hit it does not have.
struct Records {
    firm: String,
    key: String,
    customer: String,
    endpoint: String,
    user: String,
    api_key: String,
    event: String,
    hit: String,
}

impl Records {
    /// The firm `name` with 5 credits and one record of each kind, made through the CLI and the
    /// CRM API.
    async fn arrange(server: &Server, name: &str) -> Self {
        let firm = server.create_firm(name);
        let key = server.create_api_key(&firm, EVERY_SCOPE);
        server.grant_credits(&firm, 5, "opening");
        let customer = json_of(server, &key, Method::POST, "/api/v1/customers", Some(json!({
            "externalId": "crm-owned", "fullName": "Olive Owner", "email": "olive@owner.example",
        }))).await;
        let endpoint = json_of(
            server,
            &key,
            Method::POST,
            "/api/v1/webhook-endpoints",
            Some(json!({
                "url": "http://127.0.0.1:9/hooks"
            })),
        )
        .await;
        let user = server.create_user(
            &firm,
            "owned.staff@owner.example",
            "staff",
            "a-long-enough-password",
        );
        let api_key = server
            .database
            .storage()
            .await
            .api_keys
            .find_api_key_by_sha256(&kyc_e2e::sha256_hex(&key))
            .await
            .expect("read")
            .expect("the firm's key")
            .id
            .to_string();
        let event =
            json_of(server, &key, Method::GET, "/api/v1/events", None).await["data"][0]["id"]
                .as_str()
                .expect("an event")
                .to_owned();
        Self {
            customer: customer["id"].as_str().expect("id").to_owned(),
            endpoint: endpoint["id"].as_str().expect("id").to_owned(),
            firm,
            key,
            user,
            api_key,
            event,
            hit: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Every back-office JSON route and page that names one of these records, with a body it
    /// accepts in shape.
    fn routes(&self) -> Vec<(Method, String, Option<Value>)> {
        let (c, u, k, e, h, event) = (
            &self.customer,
            &self.user,
            &self.api_key,
            &self.endpoint,
            &self.hit,
            &self.event,
        );
        vec![
            (Method::GET, format!("/api/backoffice/customers/{c}"), None),
            (
                Method::PUT,
                format!("/api/backoffice/customers/{c}/risk"),
                Some(json!({
                "is_designated_service": true, "handles_cash_or_crypto": false, "is_new_customer": true})),
            ),
            (
                Method::GET,
                format!("/api/backoffice/customers/{c}/verification/quote"),
                None,
            ),
            (
                Method::POST,
                format!("/api/backoffice/customers/{c}/verification"),
                Some(json!({"confirm_cost_credits": 1})),
            ),
            (
                Method::POST,
                format!("/api/backoffice/customers/{c}/aml/hits/{h}/disposition"),
                Some(json!({
                "disposition": "FALSE_POSITIVE", "note": "taken over"})),
            ),
            (
                Method::POST,
                format!("/api/backoffice/customers/{c}/aml/decision"),
                Some(json!({
                "decision": "PROCEED", "rationale": "taken over"})),
            ),
            (
                Method::POST,
                format!("/api/backoffice/customers/{c}/restart"),
                Some(json!({"reason": "taken over"})),
            ),
            (Method::GET, format!("/app/customers/{c}"), None),
            (
                Method::POST,
                format!("/app/customers/{c}/risk"),
                Some(json!({
                "is_designated_service": "yes", "handles_cash_or_crypto": "no", "is_new_customer": "yes"})),
            ),
            (Method::GET, format!("/app/customers/{c}/start"), None),
            (
                Method::POST,
                format!("/app/customers/{c}/verification"),
                Some(json!({"confirm_cost_credits": "1"})),
            ),
            (
                Method::POST,
                format!("/app/customers/{c}/disposition"),
                Some(json!({
                "hit_id": h, "disposition": "FALSE_POSITIVE", "note": "taken over"})),
            ),
            (
                Method::POST,
                format!("/app/customers/{c}/decision"),
                Some(json!({
                "decision": "PROCEED", "rationale": "taken over"})),
            ),
            (
                Method::POST,
                format!("/app/customers/{c}/restart"),
                Some(json!({"reason": "taken over"})),
            ),
            (
                Method::POST,
                format!("/app/admin/users/{u}/role"),
                Some(json!({"role": "admin"})),
            ),
            (Method::POST, format!("/app/admin/users/{u}/disable"), None),
            (Method::POST, format!("/app/admin/users/{u}/enable"), None),
            (
                Method::POST,
                format!("/app/admin/api-keys/{k}/revoke"),
                None,
            ),
            (Method::GET, format!("/app/admin/webhooks/{e}"), None),
            (
                Method::POST,
                format!("/app/admin/webhooks/{e}/disable"),
                None,
            ),
            (
                Method::POST,
                format!("/app/admin/webhooks/{e}/enable"),
                None,
            ),
            (
                Method::POST,
                format!("/app/admin/webhooks/{e}/rotate"),
                None,
            ),
            (
                Method::POST,
                format!("/app/admin/webhooks/{e}/replay"),
                Some(json!({"event_id": event})),
            ),
            (
                Method::POST,
                format!("/app/admin/webhooks/{e}/delete"),
                None,
            ),
        ]
    }

    /// Nothing of the firm's changed: no charge, no risk answers, no customer added, the key, the
    /// user and the endpoint as they were.
    async fn assert_untouched(&self, server: &Server) {
        let admin = person(server, &self.firm, "admin").await;
        let path = format!("/api/backoffice/customers/{}", self.customer);
        let (_, detail) = act(server, &admin, Method::GET, &path, None).await;
        let detail: Value = serde_json::from_str(&detail).expect("JSON");
        assert_eq!(detail["customer"]["kyc_status"], "NOT_STARTED", "{detail}");
        assert_eq!(detail["risk_rating"], Value::Null, "{detail}");
        let (_, credits) = act(server, &admin, Method::GET, "/api/backoffice/credits", None).await;
        let credits: Value = serde_json::from_str(&credits).expect("JSON");
        assert_eq!(credits["available_credits"], 5, "{credits}");
        let (_, list) = act(
            server,
            &admin,
            Method::GET,
            "/api/backoffice/customers",
            None,
        )
        .await;
        assert!(
            !list.contains("Forged Person"),
            "a forged create went through"
        );
        let (status, _) = call(server, &self.key, Method::GET, "/api/v1/customers", None).await;
        assert_eq!(status, StatusCode::OK, "the firm's key still works");
        let path = format!("/api/v1/webhook-endpoints/{}", self.endpoint);
        let kept = json_of(server, &self.key, Method::GET, &path, None).await;
        assert_eq!(kept["enabled"], true);
        assert_eq!(
            kept["previous_secret_expires_at"],
            Value::Null,
            "the secret was not rotated"
        );
        let endpoints = json_of(
            server,
            &self.key,
            Method::GET,
            "/api/v1/webhook-endpoints",
            None,
        )
        .await;
        assert_eq!(
            endpoints["data"].as_array().map(Vec::len),
            Some(1),
            "{endpoints}"
        );
        let staff = server
            .client()
            .post(server.url("/api/backoffice/session"))
            .json(&json!({"email": "owned.staff@owner.example", "password": "a-long-enough-password"}))
            .send()
            .await
            .expect("login");
        assert_eq!(
            staff.status(),
            StatusCode::OK,
            "the firm's user is still enabled"
        );
        let staff: Value = staff.json().await.expect("JSON");
        assert_eq!(staff["user"]["role"], "staff");
    }
}

both_backends! {
    async fn another_firms_key_reaches_nothing_on_any_route_of_the_document(server: &Server) {
        let owner_firm = server.create_firm("Owner");
        let owner = server.create_api_key(&owner_firm, EVERY_SCOPE);
        let stranger_firm = server.create_firm("Stranger");
        let stranger = server.create_api_key(&stranger_firm, EVERY_SCOPE);

        let customer = json_of(server, &owner, Method::POST, "/api/v1/customers", Some(json!({
            "externalId": "crm-owned", "fullName": "Olive Owner", "email": "olive@owner.example",
            "phone": "+61400000111",
        }))).await;
        let customer_id = customer["id"].as_str().expect("id").to_owned();
        let endpoint = json_of(server, &owner, Method::POST, "/api/v1/webhook-endpoints", Some(json!({
            "url": "http://127.0.0.1:9/hooks", "description": "owner's"
        }))).await;
        let endpoint_id = endpoint["id"].as_str().expect("id").to_owned();
        let events = json_of(server, &owner, Method::GET, "/api/v1/events", None).await;
        let event = events["data"][0]["id"].as_str().expect("an event of the owner").to_owned();

        let document = json_of(server, &stranger, Method::GET, "/api/v1/openapi.json", None).await;
        let mut swept = 0;
        for (template, operations) in document["paths"].as_object().expect("paths") {
            for method in operations.as_object().expect("operations").keys() {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                let targets: Vec<String> = if !template.contains("{id}") {
                    vec![template.clone()]
                } else if template.starts_with("/api/v1/customers/") {
                    vec![
                        template.replace("{id}", &customer_id),
                        template.replace("{id}", "crm-owned"),
                    ]
                } else {
                    vec![template.replace("{id}", &endpoint_id)]
                };
                for path in targets {
                    let (status, text) =
                        call(server, &stranger, method.clone(), &path, body_for(&method, &path, &event)).await;
                    swept += 1;
                    for owned in [customer_id.as_str(), endpoint_id.as_str(), "crm-owned", "olive", event.as_str()] {
                        assert!(!text.contains(owned), "{method} {path} shows the owner's {owned}: {text}");
                    }
                    if template.contains("{id}") {
                        // The API never starts a verification: 403 whoever asks, before any look-up.
                        let allowed: &[StatusCode] = if template.ends_with("/verification") {
                            &[StatusCode::FORBIDDEN, StatusCode::NOT_FOUND]
                        } else {
                            &[StatusCode::NOT_FOUND]
                        };
                        assert!(allowed.contains(&status), "{method} {path} answered {status}: {text}");
                    } else if method == Method::GET {
                        assert_eq!(status, StatusCode::OK, "{method} {path}: {text}");
                    }
                }
            }
        }
        assert!(swept >= 15, "the sweep covered the document ({swept} requests)");

        // Nothing of the owner's changed.
        let after = json_of(server, &owner, Method::GET, &format!("/api/v1/customers/{customer_id}"), None).await;
        assert_eq!(after["phone"], "+61400000111");
        let kept = json_of(server, &owner, Method::GET, &format!("/api/v1/webhook-endpoints/{endpoint_id}"), None).await;
        assert_eq!(kept["description"], "owner's");
        assert_eq!(kept["previous_secret_expires_at"], Value::Null, "the secret was not rotated");
        assert_eq!(kept["enabled"], true);
    }

    async fn a_login_always_issues_a_new_session_and_the_one_it_replaces_is_dead(server: &Server) {
        let firm = server.create_firm("Fixation");
        server.create_user(&firm, "officer@fixation.example", "compliance_officer", "a-long-enough-password");
        let client = server.client();
        let login = |cookie: Option<String>| {
            let mut request = client
                .post(server.url("/api/backoffice/session"))
                .json(&json!({"email": "officer@fixation.example", "password": "a-long-enough-password"}));
            if let Some(token) = cookie {
                request = request.header("cookie", format!("kyc_session={token}"));
            }
            request.send()
        };
        let first = login(None).await.expect("login");
        assert_eq!(first.status(), StatusCode::OK);
        let first = session_token(&first);
        // A login made with a session cookie already set (one an attacker planted, say) gets a
        // token of its own, and the planted one stops working.
        let second = login(Some(first.clone())).await.expect("login");
        assert_eq!(second.status(), StatusCode::OK);
        let second = session_token(&second);
        assert_ne!(first, second);
        let read = |token: String| {
            client
                .get(server.url("/api/backoffice/customers"))
                .header("cookie", format!("kyc_session={token}"))
                .send()
        };
        assert_eq!(read(first).await.expect("read").status(), StatusCode::UNAUTHORIZED);
        assert_eq!(read(second).await.expect("read").status(), StatusCode::OK);
        // A made-up token is no session either.
        assert_eq!(read("forged".repeat(8)).await.expect("read").status(), StatusCode::UNAUTHORIZED);
    }

    async fn no_role_of_another_firm_reaches_a_firms_records_in_the_back_office(server: &Server) {
        let owned = Records::arrange(server, "Owner").await;
        let (c, e, u, k) = (&owned.customer, &owned.endpoint, &owned.user, &owned.api_key);
        let records = owned.routes();
        let lists = [
            "/api/backoffice/customers", "/api/backoffice/credits", "/api/backoffice/audit/export",
            "/app/customers", "/app/credits", "/app/audit", "/app/admin/users", "/app/admin/api-keys",
            "/app/admin/webhooks",
        ];
        let stranger_firm = server.create_firm("Stranger");
        let marks = [c.as_str(), e.as_str(), u.as_str(), k.as_str(), "Olive", "olive@", "owned.staff", "crm-owned"];
        // Which records some role was allowed to ask for, and was told 404: a 403 of every role
        // would say nothing about whose record it is.
        let mut reached = vec![false; records.len()];
        for role in ["staff", "compliance_officer", "admin"] {
            let stranger = person(server, &stranger_firm, role).await;
            for (index, (method, path, body)) in records.iter().enumerate() {
                let (status, text) = act(server, &stranger, method.clone(), path, body.clone()).await;
                assert!(
                    [StatusCode::NOT_FOUND, StatusCode::FORBIDDEN].contains(&status),
                    "{} {method} {path} answered {status}: {text}", stranger.role
                );
                if status == StatusCode::NOT_FOUND {
                    reached[index] = true;
                }
                for mark in marks {
                    assert!(!text.contains(mark), "{} {method} {path} shows {mark}", stranger.role);
                }
            }
            for path in lists {
                let (_, text) = act(server, &stranger, Method::GET, path, None).await;
                for mark in marks {
                    assert!(!text.contains(mark), "{} GET {path} shows {mark}", stranger.role);
                }
            }
        }

        for ((method, path, _), reached) in records.iter().zip(&reached) {
            assert!(reached, "no role of the other firm got past the role check of {method} {path}");
        }

        owned.assert_untouched(server).await;
    }

    async fn every_state_change_of_the_back_office_needs_the_sessions_csrf_token(server: &Server) {
        let owned = Records::arrange(server, "Forgery").await;
        let (firm, key) = (&owned.firm, &owned.key);
        let mut changes: Vec<(Method, String, Option<Value>)> = owned
            .routes()
            .into_iter()
            .filter(|(method, _, _)| *method != Method::GET)
            .collect();
        changes.extend([
            (Method::POST, "/api/backoffice/customers".to_owned(), Some(json!({
                "fullName": "Forged Person", "email": "forged@forgery.example"}))),
            (Method::POST, "/app/customers".to_owned(), Some(json!({
                "full_name": "Forged Person", "email": "forged@forgery.example"}))),
            (Method::POST, "/app/admin/users".to_owned(), Some(json!({
                "email": "forged.user@forgery.example", "role": "admin", "password": "a-long-enough-password"}))),
            (Method::POST, "/app/admin/api-keys".to_owned(), Some(json!({
                "label": "forged", "scopes": "customers:read"}))),
            (Method::POST, "/app/admin/webhooks".to_owned(), Some(json!({"url": "http://127.0.0.1:9/forged"}))),
            (Method::POST, "/app/logout".to_owned(), None),
            (Method::DELETE, "/api/backoffice/session".to_owned(), None),
        ]);
        for role in ["staff", "compliance_officer", "admin"] {
            let genuine = person(server, firm, role).await;
            for forged in ["", "not-the-sessions-token"] {
                let attacker = Person { role, cookie: genuine.cookie.clone(), csrf: forged.to_owned() };
                for (method, path, body) in &changes {
                    let (status, text) = act(server, &attacker, method.clone(), path, body.clone()).await;
                    assert_eq!(status, StatusCode::FORBIDDEN, "{role} {method} {path} without the token: {text}");
                }
            }
            // The session survived every forged logout.
            let (status, _) = act(server, &genuine, Method::GET, "/api/backoffice/customers", None).await;
            assert_eq!(status, StatusCode::OK, "{role}'s session still works");
        }
        // The control: the same request with the session's own token goes through.
        let other = json_of(server, key, Method::POST, "/api/v1/customers", Some(json!({
            "externalId": "crm-control", "fullName": "Carl Control", "email": "carl@forgery.example",
        }))).await;
        let officer = person(server, firm, "compliance_officer").await;
        let (status, text) = act(server, &officer, Method::PUT,
            &format!("/api/backoffice/customers/{}/risk", other["id"].as_str().expect("id")),
            Some(json!({"is_designated_service": true, "handles_cash_or_crypto": false, "is_new_customer": true}))).await;
        assert_eq!(status, StatusCode::OK, "with the token: {text}");
        owned.assert_untouched(server).await;
    }
}

/// A logged-in back-office session of a role: its cookie and CSRF token.
struct Person {
    role: &'static str,
    cookie: String,
    csrf: String,
}

async fn person(server: &Server, firm: &str, role: &'static str) -> Person {
    let email = format!("{role}-{}@people.example", uuid::Uuid::new_v4().simple());
    server.create_user(firm, &email, role, "a-long-enough-password");
    let response = server
        .client()
        .post(server.url("/api/backoffice/session"))
        .json(&json!({"email": email, "password": "a-long-enough-password"}))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), StatusCode::OK);
    let token = session_token(&response);
    let body: Value = response.json().await.expect("JSON");
    Person {
        role,
        cookie: format!("kyc_session={token}"),
        csrf: body["csrf_token"].as_str().expect("csrf_token").to_owned(),
    }
}

/// Sends a back-office request as `person`: JSON with the CSRF header, or a page form with the
/// CSRF field.
async fn act(
    server: &Server,
    person: &Person,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut request = client
        .request(method.clone(), server.url(path))
        .header("cookie", &person.cookie)
        .header("x-csrf-token", &person.csrf)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string());
    if path.starts_with("/app/") && method == Method::POST {
        let mut form = vec![("csrf_token".to_owned(), person.csrf.clone())];
        if let Some(Value::Object(fields)) = body {
            for (name, value) in fields {
                form.push((
                    name,
                    value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_owned),
                ));
            }
        }
        request = request.form(&form);
    } else if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    (status, response.text().await.expect("body"))
}
