//! Harness for the end-to-end tests: starts the real `kyc-server` binary on a free loopback port
//! against a fresh database (a temporary SQLite file, or a new PostgreSQL database on the server
//! named by `DATABASE_URL`), drives its CLI, and talks to it over HTTP only.
//!
//! PostgreSQL tests are skipped with a visible message when `DATABASE_URL` is unset, unless `CI`
//! is `true`, where a missing or unreachable database fails the run.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

pub mod browser;
pub mod cluster;
pub mod disk;
pub mod receiver;

/// Which database the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default.
    Sqlite,
    /// Production.
    Postgres,
}

/// A database made for one test, dropped with it.
pub struct TestDatabase {
    /// The URL the server gets as `DATABASE_URL`.
    pub url: String,
    backend: Backend,
    admin_url: Option<String>,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

fn postgres_server_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("DATABASE_URL must name a PostgreSQL server in CI")
        }
        _ => None,
    }
}

fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap_or((url, ""));
    format!("{base}/{name}")
}

impl TestDatabase {
    /// A fresh database, or `None` when PostgreSQL tests are skipped here.
    pub async fn create(backend: Backend) -> Option<Self> {
        let name = format!("kyc_e2e_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("kyc.db").display());
                Some(Self {
                    url,
                    backend,
                    admin_url: None,
                    name,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let Some(admin_url) = postgres_server_url() else {
                    eprintln!("skipped: DATABASE_URL not set (PostgreSQL end-to-end test)");
                    return None;
                };
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .expect("PostgreSQL at DATABASE_URL must be reachable");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("CREATE DATABASE");
                let url = with_database(&admin_url, &name);
                Some(Self {
                    url,
                    backend,
                    admin_url: Some(admin_url),
                    name,
                    _dir: None,
                })
            }
        }
    }

    /// Which backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Drops a PostgreSQL database (SQLite files go with their directory).
    pub async fn drop_database(&self) {
        if let Some(admin_url) = &self.admin_url
            && let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await
        {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await;
        }
    }
}

/// Direct access to the server's database through the storage adapters, for arranging states
/// the HTTP surface under test cannot reach by itself (a verified customer, a revoked key).
pub struct Storage {
    /// Customers.
    pub customers: std::sync::Arc<dyn kyc_domain::ports::CustomerStore>,
    /// API keys.
    pub api_keys: std::sync::Arc<dyn kyc_domain::ports::ApiKeyStore>,
}

impl TestDatabase {
    /// Opens the database with the adapter of its backend.
    pub async fn storage(&self) -> Storage {
        match self.backend {
            Backend::Sqlite => {
                let pool = kyc_sqlite::connect(&self.url).await.expect("open SQLite");
                let store = std::sync::Arc::new(kyc_sqlite::SqliteStore::new(pool));
                Storage {
                    customers: store.clone(),
                    api_keys: store,
                }
            }
            Backend::Postgres => {
                let pool = kyc_postgres::connect(&self.url)
                    .await
                    .expect("open PostgreSQL");
                let store = std::sync::Arc::new(kyc_postgres::PostgresStore::new(pool));
                Storage {
                    customers: store.clone(),
                    api_keys: store,
                }
            }
        }
    }
}

/// Lowercase hex SHA-256, as API keys are stored.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// The `kyc-server` binary built for this test run.
pub fn server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("KYC_SERVER_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<this test> → target/<profile>/kyc-server
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let binary = profile_dir.join(format!("kyc-server{}", std::env::consts::EXE_SUFFIX));
    if !binary.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", "kyc-server"])
            .status()
            .expect("cargo build -p kyc-server");
        assert!(status.success(), "building kyc-server failed");
    }
    binary
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running server, killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
    /// Its database.
    pub database: TestDatabase,
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts the server on a fresh database of `backend`, with rate limits off and any extra
    /// environment given. `None` when the backend is skipped here.
    pub async fn start(backend: Backend, extra_env: &[(&str, &str)]) -> Option<Self> {
        Self::start_logging(backend, extra_env, None).await
    }

    /// [`Server::start`] with the server's log (its standard error) written to `log` when given,
    /// for tests that read what the service logs.
    pub async fn start_logging(
        backend: Backend,
        extra_env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Option<Self> {
        let database = TestDatabase::create(backend).await?;
        let port = free_port();
        let base_url = format!("http://127.0.0.1:{port}");
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), database.url.clone()),
            ("KYC_BIND".into(), format!("127.0.0.1:{port}")),
            ("KYC_PUBLIC_URL".into(), base_url.clone()),
            ("KYC_RATE_LIMIT_PER_MINUTE".into(), "0".into()),
            ("KYC_RATE_LIMIT_PER_DAY".into(), "0".into()),
            ("RUST_LOG".into(), "error".into()),
        ];
        for (key, value) in extra_env {
            env.retain(|(k, _)| k != key);
            env.push(((*key).into(), (*value).into()));
        }
        let mut command = Command::new(server_binary());
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("a log file")),
            None => Stdio::inherit(),
        };
        command.arg("serve").stdout(Stdio::null()).stderr(stderr);
        for (key, value) in &env {
            command.env(key, value);
        }
        let child = command.spawn().expect("kyc-server starts");
        let server = Self {
            child,
            base_url,
            database,
            env,
        };
        server.wait_until_healthy().await;
        Some(server)
    }

    async fn wait_until_healthy(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(response) = client
                .get(format!("{}/healthz", self.base_url))
                .send()
                .await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("kyc-server did not become healthy at {}", self.base_url);
    }

    /// Runs a CLI command against the same database, with `stdin` piped in.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut command = Command::new(server_binary());
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("kyc-server CLI runs");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("CLI output")
    }

    /// Runs a CLI command that must succeed; its stdout, trimmed.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args, None);
        assert!(
            output.status.success(),
            "kyc-server {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("UTF-8")
            .trim()
            .to_owned()
    }

    /// A new firm's id.
    pub fn create_firm(&self, name: &str) -> String {
        self.cli_ok(&["firm", "create", "--name", name])
    }

    /// A new API key of `firm` with `scopes` (comma-separated).
    pub fn create_api_key(&self, firm: &str, scopes: &str) -> String {
        self.cli_ok(&[
            "api-key", "create", "--firm", firm, "--label", "e2e", "--scopes", scopes,
        ])
    }

    /// A new back-office user of `firm` with `role`; returns the user id.
    pub fn create_user(&self, firm: &str, email: &str, role: &str, password: &str) -> String {
        let output = self.cli(
            &[
                "user",
                "create",
                "--firm",
                firm,
                "--email",
                email,
                "--role",
                role,
                "--password-stdin",
            ],
            Some(password),
        );
        assert!(
            output.status.success(),
            "kyc-server user create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("UTF-8")
            .trim()
            .to_owned()
    }

    /// Grants `credits` to `firm` once per `reference`.
    pub fn grant_credits(&self, firm: &str, credits: u64, reference: &str) {
        self.cli_ok(&[
            "credits",
            "grant",
            "--firm",
            firm,
            "--credits",
            &credits.to_string(),
            "--reference",
            reference,
        ]);
    }

    /// A client for the server.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Stops the server and drops its database.
    pub async fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.database.drop_database().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one async end-to-end test body against both backends: `sqlite::name` and
/// `postgres::name`.
#[macro_export]
macro_rules! both_backends {
    ($(async fn $name:ident($server:ident : &Server) $body:block)*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(server) = $crate::Server::start($crate::Backend::Sqlite, &[]).await else { return };
                    super::$name(&server).await;
                    server.stop().await;
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(server) = $crate::Server::start($crate::Backend::Postgres, &[]).await else { return };
                    super::$name(&server).await;
                    server.stop().await;
                }
            )*
        }
        $(
            async fn $name($server: &$crate::Server) $body
        )*
    };
}

/// The `kyc_session=<token>` pair a login answer's `Set-Cookie` carries, for a `Cookie` header.
///
/// # Panics
/// When the answer sets no session cookie.
pub fn session_cookie(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("kyc_session="))
        .and_then(|value| value.split(';').next())
        .expect("the session cookie")
        .to_owned()
}

/// A free port on the loopback interface, for a server or a simulator to bind next.
pub fn free_loopback_port() -> u16 {
    free_port()
}

/// One `kyc-server serve` process on a database the test owns, bound to a port the test chose,
/// so several processes can share one database and a process can be killed and started again on
/// the same database and port. Killed (SIGKILL) when dropped; the database is left alone.
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
}

impl ServerProcess {
    /// Starts `serve` on `database_url` and `port` with rate limits off and `extra_env`, and
    /// waits until `/healthz` answers.
    pub async fn start(database_url: &str, port: u16, extra_env: &[(&str, &str)]) -> Self {
        let base_url = format!("http://127.0.0.1:{port}");
        let mut command = Command::new(server_binary());
        command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("KYC_BIND", format!("127.0.0.1:{port}"))
            .env("KYC_PUBLIC_URL", &base_url)
            .env("KYC_RATE_LIMIT_PER_MINUTE", "0")
            .env("KYC_RATE_LIMIT_PER_DAY", "0")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let child = command.spawn().expect("kyc-server starts");
        let mut process = Self { child, base_url };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = client.get(process.url("/healthz")).send().await
                && response.status().is_success()
            {
                return process;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("kyc-server exited before becoming healthy: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "kyc-server did not become healthy at {}",
                process.base_url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Stops the process with SIGTERM, as an orchestrator would, and waits for it to exit.
    pub fn terminate(&mut self) {
        let signalled = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        assert!(signalled, "SIGTERM sent to kyc-server");
        let status = self.child.wait().expect("kyc-server exits");
        assert!(status.success(), "kyc-server stopped cleanly: {status}");
    }

    /// Kills the process with SIGKILL, as a crash or an OOM kill would, and reaps it: nothing
    /// of it runs afterwards, no shutdown code, no pending write.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a `kyc-server` administrative command on `database_url`, with `stdin` piped in; its
/// stdout, trimmed. Panics with the stderr when it fails.
pub fn run_cli(database_url: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new(server_binary())
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kyc-server CLI runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().expect("CLI output");
    assert!(
        output.status.success(),
        "kyc-server {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

/// A firm named Acme and an API key of `scopes` for it, made through the CLI on `database_url`
/// (for tests that run server processes of their own on one database).
pub fn firm_with_key(database_url: &str, scopes: &str) -> (String, String) {
    let firm = run_cli(database_url, &["firm", "create", "--name", "Acme"], None);
    let key = run_cli(
        database_url,
        &[
            "api-key", "create", "--firm", &firm, "--label", "crm", "--scopes", scopes,
        ],
        None,
    );
    (firm, key)
}
