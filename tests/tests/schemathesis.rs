//! Schemathesis against the real binary's CRM API and back-office API, on both backends: every
//! schema-valid request is accepted, no answer is a 5xx, every answer matches the document and
//! every error its envelope (`tests/fuzz/schemathesis.toml` and `schemathesis-backoffice.toml`
//! say what each run checks and why).
//!
//! The tool comes from a virtual environment (`target/venv`, which `.ci/run` creates; or the
//! `schemathesis` command named by `KYC_SCHEMATHESIS`). Without it the test is skipped with a
//! message, unless `CI` is `true`, where it fails. The run is bounded (`KYC_FUZZ_EXAMPLES`
//! examples per operation, 25 unless told) and seeded (`KYC_FUZZ_SEED`: a fixed seed unless told,
//! `random` for a fresh one; the seed is printed so a failure can be replayed).

use std::path::{Path, PathBuf};
use std::process::Command;

use kyc_e2e::{Server, both_backends};
use serde_json::{Value, json};

fn schemathesis() -> Option<PathBuf> {
    let named = std::env::var_os("KYC_SCHEMATHESIS").map(PathBuf::from);
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/schemathesis");
    let found = named.or_else(|| venv.exists().then_some(venv));
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "schemathesis must be installed in CI (.ci/run creates target/venv)"
        );
        eprintln!("skipped: schemathesis is not installed (target/venv/bin/schemathesis)");
    }
    found
}

/// The seed of a run: fixed unless told, so a run of the suite is repeatable;
/// `KYC_FUZZ_SEED=random` explores a fresh one (printed, to replay it).
fn seed() -> String {
    match std::env::var("KYC_FUZZ_SEED").as_deref() {
        Ok("random") => (uuid::Uuid::new_v4().as_u128() % 1_000_000_000).to_string(),
        Ok(seed) if !seed.trim().is_empty() => seed.trim().to_owned(),
        _ => "20261207".to_owned(),
    }
}

/// Runs schemathesis over the document at `document` with the config file `config` (under
/// `tests/fuzz`) and `env`, and fails the test on any failure it reports.
fn fuzz(tool: &Path, document: &str, config: &str, env: &[(&str, &str)]) {
    let seed = seed();
    let examples = std::env::var("KYC_FUZZ_EXAMPLES").unwrap_or_else(|_| "25".to_owned());
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(config);
    eprintln!("schemathesis seed {seed}, {examples} examples per operation, {document}");
    // Run from target/, where schemathesis keeps the cache of what it found.
    let workdir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    let output = Command::new(tool)
        .current_dir(&workdir)
        .arg("--config-file")
        .arg(&config)
        .args(["run", document])
        .args(["--seed", &seed, "--max-examples", &examples])
        .args(["--no-color", "--request-timeout", "30"])
        .envs(env.iter().copied())
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures (seed {seed}):\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        report.contains(" passed"),
        "schemathesis ran no test case:\n{report}"
    );
}

async fn fuzz_the_crm_api(server: &Server) {
    let Some(tool) = schemathesis() else { return };
    let firm = server.create_firm("Fuzz Accounting");
    let key = server.create_api_key(
        &firm,
        "customers:read,customers:write,aml:read,webhooks:manage",
    );
    fuzz(
        &tool,
        &server.url("/api/v1/openapi.json"),
        "schemathesis.toml",
        &[("KYC_FUZZ_KEY", &key)],
    );
}

/// The back office, as a compliance officer (every route admits the role) of a firm with
/// credits and a few customers, some with confirmed risk answers.
async fn fuzz_the_back_office(server: &Server) {
    let Some(tool) = schemathesis() else { return };
    let firm = server.create_firm("Fuzz Back Office");
    server.grant_credits(&firm, 1000, "fuzz");
    server.create_user(
        &firm,
        "officer@fuzz.example",
        "compliance_officer",
        "a-long-enough-password",
    );
    let client = server.client();
    let login = client
        .post(server.url("/api/backoffice/session"))
        .json(&json!({"email": "officer@fuzz.example", "password": "a-long-enough-password"}))
        .send()
        .await
        .expect("log in");
    assert_eq!(login.status(), reqwest::StatusCode::OK);
    let cookie = kyc_e2e::session_cookie(login.headers());
    let body: Value = login.json().await.expect("JSON");
    let csrf = body["csrf_token"].as_str().expect("csrf_token").to_owned();
    for n in 0..3 {
        let created = client
            .post(server.url("/api/backoffice/customers"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .json(&json!({"full_name": format!("Fuzz Customer {n}"), "email": format!("fuzz{n}@fuzz.example")}))
            .send()
            .await
            .expect("create");
        assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    }
    fuzz(
        &tool,
        &server.url("/api/backoffice/openapi.json"),
        "schemathesis-backoffice.toml",
        &[("KYC_FUZZ_COOKIE", &cookie), ("KYC_FUZZ_CSRF", &csrf)],
    );
}

both_backends! {
    async fn the_crm_api_answers_every_schema_valid_request_as_its_document_says(server: &Server) {
        fuzz_the_crm_api(server).await;
    }

    async fn the_back_office_answers_every_schema_valid_request_as_its_document_says(server: &Server) {
        fuzz_the_back_office(server).await;
    }
}
