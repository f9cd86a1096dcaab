//! Back-office login over HTTP against the real binary: the same answer whether or not an email
//! exists, and a limit per client address that stops guessing across many accounts.

use kyc_e2e::{Backend, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_across_many_accounts_from_one_address_is_limited() {
    let Some(server) = Server::start(Backend::Sqlite, &[]).await else {
        return;
    };
    let firm = server.create_firm("Login Pty Ltd");
    server.create_user(
        &firm,
        "officer@login.example",
        "compliance_officer",
        "a-long-enough-password",
    );
    let client = server.client();
    let login = |email: String, password: &'static str| {
        client
            .post(server.url("/api/backoffice/session"))
            .json(&json!({"email": email, "password": password}))
            .send()
    };

    // A wrong password and an unknown email get the same answer.
    let wrong = login("officer@login.example".into(), "not-the-password")
        .await
        .unwrap();
    let unknown = login("nobody@login.example".into(), "not-the-password")
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let (wrong, unknown): (Value, Value) =
        (wrong.json().await.unwrap(), unknown.json().await.unwrap());
    assert_eq!(wrong, unknown);

    // Failures spread over many accounts still count against the one address.
    let mut limited = None;
    for attempt in 0..40 {
        let response = login(format!("guess{attempt}@login.example"), "not-the-password")
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(attempt);
            break;
        }
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(
        limited.is_some(),
        "no per-address limit after 40 failed logins"
    );
    server.stop().await;
}
