//! Security probes against the real binary, on both backends.
//!
//! The IDOR sweep walks every operation of the CRM API's own OpenAPI document, so a route added
//! later is swept without touching this file: another firm's key, holding every scope, reaches
//! none of a firm's customers or webhook endpoints (by UUID or by external id), sees none of them
//! in a list, and changes nothing.

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
}
