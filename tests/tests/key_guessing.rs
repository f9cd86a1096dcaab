//! API-key guessing against the real binary: past the per-address allowance failures are answered
//! slowly and a few at a time, a flood of them is refused with 429, and a valid key from the same
//! address is served at once throughout.

use std::time::{Duration, Instant};

use kyc_e2e::{Backend, Server};
use reqwest::StatusCode;
use serde_json::Value;

const ALLOWANCE: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_api_keys_is_slowed_and_a_flood_refused_while_a_valid_key_is_served() {
    let allowance = ALLOWANCE.to_string();
    let Some(server) = Server::start(
        Backend::Sqlite,
        &[
            ("KYC_KEY_FAILURES_PER_ADDRESS", &allowance),
            ("KYC_RATE_LIMIT_PER_MINUTE", "0"),
        ],
    )
    .await
    else {
        return;
    };
    let firm = server.create_firm("Guessed Pty Ltd");
    let key = server.create_api_key(&firm, "customers:read");
    let client = server.client();
    let list = |key: String| {
        client
            .get(server.url("/api/v1/customers"))
            .bearer_auth(key)
            .send()
    };
    let guess = |n: usize| format!("kyc_live_{n:064x}");

    // Within the allowance a wrong key is answered at once, and like a missing one.
    for n in 0..ALLOWANCE {
        let response = list(guess(n)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    // Past it, a guess waits its turn; a valid key sent while it waits is answered first.
    let slow = tokio::spawn(list(guess(100)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let valid = list(key.clone()).await.unwrap();
    assert_eq!(valid.status(), StatusCode::OK);
    let valid_took = started.elapsed();
    assert!(
        !slow.is_finished(),
        "the guess past the allowance was answered before the valid key ({valid_took:?})"
    );
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status(), StatusCode::UNAUTHORIZED);

    // Many guesses at once: a few a second get their 401, the rest are refused.
    let flood: Vec<_> = (0..40)
        .map(|n| tokio::spawn(list(guess(200 + n))))
        .collect();
    let (mut unauthorized, mut refused) = (0, 0);
    for one in flood {
        let response = one.await.unwrap().unwrap();
        match response.status() {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(response.headers().contains_key("retry-after"));
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                refused += 1;
            }
            other => panic!("a guess answered {other}"),
        }
    }
    assert!(refused > 0, "40 guesses at once were all let through");
    assert!(unauthorized > 0, "the flood shut the address out entirely");

    // The valid key is still served, and at once.
    let valid = list(key).await.unwrap();
    assert_eq!(valid.status(), StatusCode::OK);
    server.stop().await;
}
