//! Schemathesis against the real binary's CRM API, on both backends: every schema-valid request is
//! accepted, no answer is a 5xx, every answer matches the document and every error its envelope
//! (`tests/fuzz/schemathesis.toml` says what the run checks and why).
//!
//! The tool comes from a virtual environment (`target/venv`, which `.ci/run` creates; or the
//! `schemathesis` command named by `KYC_SCHEMATHESIS`). Without it the test is skipped with a
//! message, unless `CI` is `true`, where it fails. The run is bounded (`KYC_FUZZ_EXAMPLES`
//! examples per operation, 25 unless told) and seeded (`KYC_FUZZ_SEED`: a fixed seed unless told,
//! `random` for a fresh one; the seed is printed so a failure can be replayed).

use std::path::PathBuf;
use std::process::Command;

use kyc_e2e::{Server, both_backends};

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

async fn fuzz_the_crm_api(server: &Server) {
    let Some(tool) = schemathesis() else { return };
    let firm = server.create_firm("Fuzz Accounting");
    let key = server.create_api_key(
        &firm,
        "customers:read,customers:write,aml:read,webhooks:manage",
    );
    // A fixed seed unless told, so a run of the suite is repeatable; `KYC_FUZZ_SEED=random`
    // explores a fresh one (printed, to replay it).
    let seed = match std::env::var("KYC_FUZZ_SEED").as_deref() {
        Ok("random") => (uuid::Uuid::new_v4().as_u128() % 1_000_000_000).to_string(),
        Ok(seed) if !seed.trim().is_empty() => seed.trim().to_owned(),
        _ => "20261207".to_owned(),
    };
    let examples = std::env::var("KYC_FUZZ_EXAMPLES").unwrap_or_else(|_| "25".to_owned());
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/schemathesis.toml");
    eprintln!("schemathesis seed {seed}, {examples} examples per operation");
    // Run from target/, where schemathesis keeps the cache of what it found.
    let workdir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    let output = Command::new(tool)
        .current_dir(&workdir)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &server.url("/api/v1/openapi.json")])
        .args(["--seed", &seed, "--max-examples", &examples])
        .args(["--no-color", "--request-timeout", "30"])
        .env("KYC_FUZZ_KEY", &key)
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

both_backends! {
    async fn the_crm_api_answers_every_schema_valid_request_as_its_document_says(server: &Server) {
        fuzz_the_crm_api(server).await;
    }
}
