//! The command line as a script uses it: the built binary run against a temporary SQLite file and
//! against a fresh Postgres database, checking stdout, stderr, exit codes and what was stored.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use clap::Parser;
use kyc_domain::ids::FirmId;
use kyc_domain::values::{Credits, Email};
use kyc_server::Cli;
use kyc_server::database::Backend;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Every variable the binary reads: cleared so the developer's shell cannot change a test.
const SETTINGS: [&str; 17] = [
    "DATABASE_URL",
    "KYC_BIND",
    "KYC_PUBLIC_URL",
    "SUMSUB_BASE_URL",
    "SUMSUB_APP_TOKEN",
    "SUMSUB_SECRET_KEY",
    "SUMSUB_WEBHOOK_SECRET",
    "SUMSUB_LEVEL_NAME",
    "SUMSUB_EDD_LEVEL_NAME",
    "KYC_SIMULATOR",
    "KYC_LINK_SECRET",
    "KYC_VERIFICATION_COST_CREDITS",
    "KYC_RATE_LIMIT_PER_MINUTE",
    "KYC_RATE_LIMIT_PER_DAY",
    "RUST_LOG",
    "KYC_LOG_FORMAT",
    "NO_COLOR",
];

/// A database for one test: a temporary SQLite file, or a Postgres database created for it and
/// dropped afterwards.
enum Db {
    Sqlite {
        dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl Db {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("kyc.db").display());
        Self::Sqlite { dir, url }
    }

    /// A fresh Postgres database, or `None` (with a visible note) when `DATABASE_URL` is unset
    /// outside CI. In CI an unset or unreachable database fails the test.
    async fn postgres() -> Option<Self> {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let Ok(admin_url) = std::env::var("DATABASE_URL") else {
            assert!(!in_ci, "DATABASE_URL must be set in CI");
            eprintln!("skipped: DATABASE_URL not set");
            return None;
        };
        let name = format!("kyc_server_{}", Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&admin_url)
            .await
            .expect("DATABASE_URL must reach Postgres");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&format!("/{name}"));
        Some(Self::Postgres {
            admin_url,
            name,
            url: url.to_string(),
        })
    }

    fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } | Self::Postgres { url, .. } => url,
        }
    }

    /// Opens the database the way the binary does, to look at what it stored.
    async fn backend(&self) -> Backend {
        let cli = Cli::try_parse_from(["kyc-server", "--database-url", self.url()]).unwrap();
        Backend::connect(&cli.config.database_url).await.unwrap()
    }

    /// Whether `needle` appears anywhere in the stored API keys (Postgres) or anywhere in the
    /// database files (SQLite).
    async fn contains(&self, needle: &str) -> bool {
        match self {
            Self::Sqlite { dir, .. } => std::fs::read_dir(dir.path()).unwrap().any(|entry| {
                let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                bytes
                    .windows(needle.len())
                    .any(|window| window == needle.as_bytes())
            }),
            Self::Postgres { url, .. } => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                let rows: Vec<String> = sqlx::query_scalar("SELECT k::text FROM api_keys k")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                assert!(!rows.is_empty(), "expected stored keys");
                rows.iter().any(|row| row.contains(needle))
            }
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Self::Postgres {
            admin_url, name, ..
        } = self
        {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs outside any runtime: use a thread with its own.
            let _dropped = std::thread::spawn(move || {
                tokio::runtime::Runtime::new().unwrap().block_on(async {
                    if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&admin)
                                .await;
                        admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kyc-server"));
    for name in SETTINGS {
        command.env_remove(name);
    }
    command.env("RUST_LOG", "warn");
    command
}

/// Runs the binary on `db` with `args`, feeding `stdin`.
fn run(db: &Db, args: &[&str], stdin: Option<&str>) -> Output {
    run_with(binary().env("DATABASE_URL", db.url()), args, stdin)
}

fn run_with(command: &mut Command, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// The single line a command printed on stdout, after checking it succeeded.
fn captured(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}", stderr(output));
    let text = stdout(output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "stdout must hold one line: {text:?}");
    lines[0].to_owned()
}

/// Asserts a failure whose reason is one line, the last on stderr, and returns it. Log lines of
/// the adapters may come before it (they go to stderr too, filtered by `RUST_LOG`).
fn one_line_failure(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure");
    assert!(
        output.stdout.is_empty(),
        "nothing on stdout: {}",
        stdout(output)
    );
    let text = stderr(output);
    let reasons: Vec<&str> = text.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(reasons.len(), 1, "one reason line: {text:?}");
    assert_eq!(
        text.lines().last(),
        Some(reasons[0]),
        "the reason comes last: {text:?}"
    );
    reasons[0].to_owned()
}

/// Asserts a failure before anything else was said: stderr is exactly the one reason line.
fn only_line_failure(output: &Output) -> String {
    let line = one_line_failure(output);
    assert_eq!(stderr(output).lines().count(), 1, "{}", stderr(output));
    line
}

fn create_firm(db: &Db) -> String {
    captured(&run(
        db,
        &["firm", "create", "--name", "Acme Accounting"],
        None,
    ))
}

async fn firm_create_prints_only_the_new_firms_uuid(db: Db) {
    let output = run(&db, &["firm", "create", "--name", "Acme Accounting"], None);
    let id = Uuid::parse_str(&captured(&output)).unwrap();
    let backend = db.backend().await;
    let firm = backend
        .stores()
        .firms
        .get_firm(FirmId::from_uuid(id))
        .await
        .unwrap()
        .expect("the printed id names the stored firm");
    assert_eq!(firm.name, "Acme Accounting");
    backend.close().await;
}

async fn user_create_hashes_the_password_read_from_stdin(db: Db) {
    let firm = create_firm(&db);
    let args = [
        "user",
        "create",
        "--firm",
        &firm,
        "--email",
        "officer@acme.test",
        "--role",
        "compliance_officer",
        "--password-stdin",
    ];
    let id = captured(&run(&db, &args, Some("correct horse battery staple\n")));
    Uuid::parse_str(&id).unwrap();

    let backend = db.backend().await;
    let user = backend
        .stores()
        .users
        .find_user_by_email(&Email::new("officer@acme.test").unwrap())
        .await
        .unwrap()
        .unwrap();
    backend.close().await;
    assert_eq!(user.id.to_string(), id);
    assert!(user.password_hash.starts_with("$argon2id$"));
    let hash = PasswordHash::new(&user.password_hash).unwrap();
    let argon = Argon2::default();
    // The trailing newline of `echo` is not part of the password.
    assert!(
        argon
            .verify_password(b"correct horse battery staple", &hash)
            .is_ok()
    );

    let again = one_line_failure(&run(&db, &args, Some("another long password")));
    assert!(again.contains("already exists"), "{again}");
    let short = args.map(|a| {
        if a == "officer@acme.test" {
            "s@acme.test"
        } else {
            a
        }
    });
    let refused = one_line_failure(&run(&db, &short, Some("short\n")));
    assert!(refused.contains("at least 12 characters"), "{refused}");
}

async fn api_key_create_prints_the_key_once_and_stores_only_its_hash(db: Db) {
    let firm = create_firm(&db);
    let key = captured(&run(
        &db,
        &[
            "api-key",
            "create",
            "--firm",
            &firm,
            "--label",
            "crm",
            "--scopes",
            "customers:read,aml:read",
        ],
        None,
    ));
    let random = key.strip_prefix("kyc_live_").expect("a live key");
    assert!(random.len() >= 32);
    assert!(
        random
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );

    let test_key = captured(&run(
        &db,
        &[
            "api-key",
            "create",
            "--firm",
            &firm,
            "--label",
            "sandbox",
            "--scopes",
            "customers:write",
            "--test",
            "--expires-at",
            "2099-01-01T00:00:00Z",
        ],
        None,
    ));
    assert!(test_key.starts_with("kyc_test_"));

    let backend = db.backend().await;
    let sha = hex::encode(Sha256::digest(key.as_bytes()));
    let record = backend
        .stores()
        .api_keys
        .find_api_key_by_sha256(&sha)
        .await
        .unwrap()
        .expect("found by the SHA-256 of the printed key");
    backend.close().await;
    assert_eq!(record.firm_id.to_string(), firm);
    assert_eq!(record.prefix, key[..12]);
    assert_eq!(record.last4, key[key.len() - 4..]);
    assert_eq!(record.scopes, vec!["customers:read", "aml:read"]);
    assert!(
        !db.contains(random).await,
        "the key itself must never be stored"
    );
    assert!(!db.contains(&test_key["kyc_test_".len()..]).await);

    let refused = one_line_failure(&run(
        &db,
        &[
            "api-key",
            "create",
            "--firm",
            &firm,
            "--label",
            "x",
            "--scopes",
            "customers:delete",
        ],
        None,
    ));
    assert!(refused.contains("--scopes"), "{refused}");
}

async fn credits_grant_is_idempotent_on_the_reference(db: Db) {
    let firm = create_firm(&db);
    let grant = |credits: &str, reference: &str| {
        run(
            &db,
            &[
                "credits",
                "grant",
                "--firm",
                &firm,
                "--credits",
                credits,
                "--reference",
                reference,
            ],
            None,
        )
    };
    let first = captured(&grant("10", "invoice-1"));
    assert_eq!(
        captured(&grant("10", "invoice-1")),
        first,
        "a repeat is the same grant"
    );
    captured(&grant("5", "invoice-2"));
    let conflict = one_line_failure(&grant("7", "invoice-1"));
    assert!(conflict.contains("--reference"), "{conflict}");

    let backend = db.backend().await;
    let balance = backend
        .stores()
        .ledger
        .balance(FirmId::parse(&firm).unwrap())
        .await
        .unwrap();
    backend.close().await;
    assert_eq!(balance.available, Credits::new(15));
}

async fn commands_on_an_unknown_firm_fail_with_one_line(db: Db) {
    let nobody = Uuid::now_v7().to_string();
    let line = one_line_failure(&run(
        &db,
        &[
            "credits",
            "grant",
            "--firm",
            &nobody,
            "--credits",
            "1",
            "--reference",
            "r",
        ],
        None,
    ));
    assert!(line.contains("no firm"), "{line}");
    let line = one_line_failure(&run(
        &db,
        &[
            "api-key",
            "create",
            "--firm",
            "not-a-uuid",
            "--label",
            "x",
            "--scopes",
            "aml:read",
        ],
        None,
    ));
    assert!(line.contains("--firm"), "{line}");
}

macro_rules! on_both_engines {
    ($($scenario:ident => $sqlite:ident, $postgres:ident;)*) => {
        $(
            #[tokio::test]
            async fn $sqlite() {
                $scenario(Db::sqlite()).await;
            }

            #[tokio::test]
            async fn $postgres() {
                if let Some(db) = Db::postgres().await {
                    $scenario(db).await;
                }
            }
        )*
    };
}

on_both_engines! {
    firm_create_prints_only_the_new_firms_uuid =>
        firm_create_prints_only_the_new_firms_uuid_on_sqlite,
        firm_create_prints_only_the_new_firms_uuid_on_postgres;
    user_create_hashes_the_password_read_from_stdin =>
        user_create_hashes_the_password_read_from_stdin_on_sqlite,
        user_create_hashes_the_password_read_from_stdin_on_postgres;
    api_key_create_prints_the_key_once_and_stores_only_its_hash =>
        api_key_create_prints_the_key_once_and_stores_only_its_hash_on_sqlite,
        api_key_create_prints_the_key_once_and_stores_only_its_hash_on_postgres;
    credits_grant_is_idempotent_on_the_reference =>
        credits_grant_is_idempotent_on_the_reference_on_sqlite,
        credits_grant_is_idempotent_on_the_reference_on_postgres;
    commands_on_an_unknown_firm_fail_with_one_line =>
        commands_on_an_unknown_firm_fail_with_one_line_on_sqlite,
        commands_on_an_unknown_firm_fail_with_one_line_on_postgres;
}

#[test]
fn a_malformed_setting_stops_start_up_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("kyc.db").display());
    let cases: [(&str, &str, &str); 5] = [
        ("KYC_BIND", "nowhere", "KYC_BIND"),
        ("KYC_PUBLIC_URL", "ftp://example.com", "KYC_PUBLIC_URL"),
        (
            "KYC_RATE_LIMIT_PER_MINUTE",
            "lots",
            "KYC_RATE_LIMIT_PER_MINUTE",
        ),
        ("KYC_LOG_FORMAT", "xml", "KYC_LOG_FORMAT"),
        (
            "KYC_VERIFICATION_COST_CREDITS",
            "0",
            "KYC_VERIFICATION_COST_CREDITS",
        ),
    ];
    for (name, value, named) in cases {
        let output = run_with(
            binary().env("DATABASE_URL", &db).env(name, value),
            &["serve"],
            None,
        );
        let line = only_line_failure(&output);
        assert!(line.contains(named), "{name}={value}: {line}");
    }
}

#[test]
fn a_database_url_with_an_unknown_scheme_is_named_without_echoing_its_password() {
    let output = run_with(
        binary().env("DATABASE_URL", "mysql://admin:hunter2@db.internal/kyc"),
        &["migrate"],
        None,
    );
    let line = only_line_failure(&output);
    assert!(line.contains("DATABASE_URL"), "{line}");
    assert!(!line.contains("hunter2"), "{line}");
}

#[test]
fn serve_with_the_simulator_off_and_no_credentials_names_the_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("kyc.db").display());
    let output = run_with(
        binary()
            .env("DATABASE_URL", &db)
            .env("KYC_SIMULATOR", "off"),
        &["serve"],
        None,
    );
    let line = only_line_failure(&output);
    assert!(line.contains("SUMSUB_APP_TOKEN"), "{line}");
    let output = run_with(
        binary()
            .env("DATABASE_URL", &db)
            .env("KYC_SIMULATOR", "off")
            .env("SUMSUB_APP_TOKEN", "app-token-value"),
        &["serve"],
        None,
    );
    let line = only_line_failure(&output);
    assert!(line.contains("SUMSUB_SECRET_KEY"), "{line}");
    assert!(!line.contains("app-token-value"), "{line}");
}

#[test]
fn user_create_without_password_stdin_refuses_to_take_a_password_another_way() {
    let db = Db::sqlite();
    let firm = create_firm(&db);
    let output = run(
        &db,
        &[
            "user",
            "create",
            "--firm",
            &firm,
            "--email",
            "a@acme.test",
            "--role",
            "staff",
        ],
        Some("correct horse battery staple"),
    );
    assert!(only_line_failure(&output).contains("--password-stdin"));
}

/// A free port on the loopback interface (bound then released; the server binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over plain HTTP/1.1; the status code, or `None` when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// A running `serve`, killed if a test fails before it stops it. Its stdout and stderr go to
/// files the test can read.
struct Server {
    child: std::process::Child,
    port: u16,
    output: tempfile::TempDir,
}

impl Server {
    fn start(db: &Db, args: &[&str]) -> Self {
        Self::start_with(&mut binary(), db, args)
    }

    fn start_with(command: &mut Command, db: &Db, args: &[&str]) -> Self {
        let port = free_port();
        let output = tempfile::tempdir().unwrap();
        let file = |name: &str| std::fs::File::create(output.path().join(name)).unwrap();
        let child = command
            .env("DATABASE_URL", db.url())
            .env("KYC_BIND", format!("127.0.0.1:{port}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(file("stdout"))
            .stderr(file("stderr"))
            .spawn()
            .unwrap();
        let mut server = Self {
            child,
            port,
            output,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while http_status(port, "/healthz") != Some(200) {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("exited with {status}: {}", server.stderr());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "/healthz never answered"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        server
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.output.path().join("stdout")).unwrap()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.output.path().join("stderr")).unwrap()
    }

    /// Sends SIGTERM and waits for the exit; the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no exit after SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve_answers_health_and_readiness_and_exits_cleanly_on_sigterm(db: Db) {
    let mut server = Server::start(&db, &["serve"]);
    assert_eq!(http_status(server.port, "/readyz"), Some(200));
    assert_eq!(http_status(server.port, "/api/v1/customers"), Some(401));
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}

async fn serve_without_migrations_is_live_but_not_ready_until_migrated(db: Db) {
    let mut server = Server::start(&db, &["serve", "--no-migrate"]);
    assert_eq!(http_status(server.port, "/readyz"), Some(503));
    assert!(server.terminate().success());

    captured_nothing(&run(&db, &["migrate"], None));
    let mut server = Server::start(&db, &["serve", "--no-migrate"]);
    assert_eq!(http_status(server.port, "/readyz"), Some(200));
    assert!(server.terminate().success());
}

/// Asserts success with nothing on stdout.
fn captured_nothing(output: &Output) {
    assert!(output.status.success(), "failed: {}", stderr(output));
    assert!(output.stdout.is_empty(), "{}", stdout(output));
}

on_both_engines! {
    serve_answers_health_and_readiness_and_exits_cleanly_on_sigterm =>
        serve_answers_health_and_readiness_and_exits_cleanly_on_sigterm_on_sqlite,
        serve_answers_health_and_readiness_and_exits_cleanly_on_sigterm_on_postgres;
    serve_without_migrations_is_live_but_not_ready_until_migrated =>
        serve_without_migrations_is_live_but_not_ready_until_migrated_on_sqlite,
        serve_without_migrations_is_live_but_not_ready_until_migrated_on_postgres;
}

#[test]
fn demo_seeds_a_firm_an_officer_and_a_working_key_and_reuses_them_on_a_second_run() {
    let db = Db::sqlite();
    let mut first = Server::start(&db, &["demo"]);
    let printed = first.stdout();
    let field = |text: &str, label: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no {label} in {text}"))
    };
    let key = field(&printed, "API key");
    let firm = field(&printed, "Firm");
    assert!(key.starts_with("kyc_test_"), "{printed}");
    assert!(printed.contains("officer@demo.example"), "{printed}");
    assert!(printed.contains("(100 credits)"), "{printed}");
    assert!(printed.contains(&format!("http://127.0.0.1:{}/sim/sumsub", first.port)));
    let back_office = format!("http://127.0.0.1:{}/app", first.port);
    assert!(
        printed.contains(&format!("{back_office}  login officer@demo.example")),
        "{printed}"
    );
    assert_eq!(http_status(first.port, "/app/login"), Some(200));
    assert_eq!(
        http_status_with_key(first.port, "/api/v1/customers", &key),
        Some(200)
    );
    assert!(first.terminate().success());

    let mut second = Server::start(&db, &["demo"]);
    let again = second.stdout();
    assert_eq!(field(&again, "Firm"), firm, "the same demo firm");
    assert!(
        again.contains("(100 credits)"),
        "the seed grant is not repeated: {again}"
    );
    assert_ne!(field(&again, "API key"), key, "a new key each run");
    assert!(second.terminate().success());
}

/// The tour `demo` prints is followed literally, as a new user would paste it: a CRM pushes a
/// customer in, the officer logs in, confirms the risk, starts verification, the customer approves
/// on the simulator's page, and the CRM reads VERIFIED and CLEAR with one credit spent.
#[test]
fn the_demo_walkthrough_pasted_into_a_shell_ends_verified_and_clear_with_one_charge() {
    let db = Db::sqlite();
    let mut demo = Server::start(&db, &["demo"]);
    let printed = demo.stdout();
    let script: String = printed
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("# 1."))
        .map(|line| format!("{}\n", line.trim_start()))
        .collect();
    assert!(script.contains("curl"), "{printed}");
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .expect("bash and curl are installed");
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        said.contains(r#""cost_credits":1,"balance_credits":100"#),
        "{said}"
    );
    assert!(
        said.contains(&format!("link http://127.0.0.1:{}/v/", demo.port)),
        "{said}"
    );
    assert!(said.contains(r#""kyc_status":"VERIFIED""#), "{said}");
    assert!(said.contains(r#""aml":{"status":"CLEAR""#), "{said}");
    assert!(
        said.contains(r#""available_credits":99,"held_credits":0,"spent_credits":1"#),
        "{said}"
    );
    assert!(demo.terminate().success());
}

#[test]
fn json_logs_are_one_object_per_line_and_never_show_configured_secrets() {
    let db = Db::sqlite();
    let secrets = [
        ("SUMSUB_APP_TOKEN", "app-token-4f1c9e"),
        ("SUMSUB_SECRET_KEY", "secret-key-77ab02"),
        ("SUMSUB_WEBHOOK_SECRET", "webhook-secret-c3d5"),
        ("KYC_LINK_SECRET", "link-secret-0123456789abcdef-0123456789"),
    ];
    let mut command = binary();
    command
        .env("KYC_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .env("KYC_SIMULATOR", "on");
    for (name, value) in secrets {
        command.env(name, value);
    }
    let mut server = Server::start_with(&mut command, &db, &["serve"]);
    assert_eq!(http_status(server.port, "/readyz"), Some(200));
    assert!(server.terminate().success());
    let logs = server.stderr();
    assert!(logs.lines().count() >= 3, "{logs}");
    for line in logs.lines() {
        let object: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(object.get("level").is_some(), "{line}");
    }
    assert!(logs.contains("listening"), "{logs}");
    for (name, value) in secrets {
        assert!(!logs.contains(value), "{name} leaked into the logs");
    }
}

/// `GET path` with an API key; the status code.
fn http_status_with_key(port: u16, path: &str, key: &str) -> Option<u16> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn sigint_also_stops_the_server_cleanly() {
    let db = Db::sqlite();
    let mut server = Server::start_with(binary().env("RUST_LOG", "info"), &db, &["serve"]);
    let sent = Command::new("kill")
        .args(["-INT", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "no exit after SIGINT");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(server.stderr().contains("SIGINT received"));
}

#[test]
fn a_request_in_flight_at_sigterm_is_finished_before_the_server_exits() {
    use std::io::Read;
    let db = Db::sqlite();
    let firm = create_firm(&db);
    let key = captured(&run(
        &db,
        &[
            "api-key",
            "create",
            "--firm",
            &firm,
            "--label",
            "crm",
            "--scopes",
            "customers:write",
        ],
        None,
    ));
    let mut server = Server::start(&db, &["serve"]);

    // Headers and half the body now; the rest after the signal.
    let body = r#"{"externalId":"crm-1","fullName":"Jane Doe","email":"jane@example.com"}"#;
    let (head, tail) = body.split_at(body.len() / 2);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        stream,
        "POST /api/v1/customers HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));

    let sent = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server must wait for the request in flight"
    );
    assert_ne!(
        http_status(server.port, "/healthz"),
        Some(200),
        "no new connection is served after the signal"
    );

    stream.write_all(tail.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after the request finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}
