//! The processes a run starts: the real `kyc-server` (its CLI for firms and keys, then `serve`)
//! and the baseline server (this binary's `baseline-server`), each on a free loopback port, and
//! their memory as the kernel reports it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The webhook secret the server under test is given; the harness signs with it.
pub const WEBHOOK_SECRET: &str = "kyc-bench-webhook-secret";

/// A free loopback port (the listener is closed before the server binds it).
///
/// # Errors
/// No port could be bound.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// The `kyc-server` binary: `--server-bin`, else the one beside this executable (both are built
/// into the same `target/release`).
pub fn default_server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("kyc-bench"));
    exe.with_file_name(format!("kyc-server{}", std::env::consts::EXE_SUFFIX))
}

/// The environment of every `kyc-server` invocation: the database, the loopback address, rate
/// limits off, the simulator on (so follow-up work such as AML screening stays on loopback), and
/// the webhook secret.
fn server_env(database_url: &str, port: u16) -> Vec<(String, String)> {
    let base = format!("http://127.0.0.1:{port}");
    vec![
        ("DATABASE_URL".into(), database_url.into()),
        ("KYC_BIND".into(), format!("127.0.0.1:{port}")),
        ("KYC_PUBLIC_URL".into(), base),
        ("KYC_RATE_LIMIT_PER_MINUTE".into(), "0".into()),
        ("KYC_RATE_LIMIT_PER_DAY".into(), "0".into()),
        ("KYC_SIMULATOR".into(), "on".into()),
        ("SUMSUB_WEBHOOK_SECRET".into(), WEBHOOK_SECRET.into()),
        ("RUST_LOG".into(), "warn".into()),
    ]
}

/// A child process killed when dropped.
pub struct Running {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
}

impl Running {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `path` answers 2xx, for at most a minute.
    ///
    /// # Errors
    /// The process exited or never answered.
    pub async fn wait_until_ready(&mut self, path: &str) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{} exited early with {status}", self.base_url));
            }
            if let Ok(response) = client.get(format!("{}{path}", self.base_url)).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "{} did not answer {path} within a minute",
            self.base_url
        ))
    }

    /// Peak and current resident memory.
    pub fn memory(&self) -> Memory {
        Memory::of(self.pid())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// Resident memory of a process, from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// `VmHWM`: the peak resident set since start.
    pub peak_kib: u64,
    /// `VmRSS`: the resident set now.
    pub current_kib: u64,
}

impl Memory {
    /// Reads it; zeros where `/proc` is unavailable.
    pub fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .unwrap_or(0)
        };
        Self {
            peak_kib: field("VmHWM:"),
            current_kib: field("VmRSS:"),
        }
    }
}

/// The server under test and its command line.
pub struct KycServer {
    binary: PathBuf,
    env: Vec<(String, String)>,
    port: u16,
}

impl KycServer {
    /// Prepares invocations of `binary` against `database_url`.
    ///
    /// # Errors
    /// No free port.
    pub fn new(binary: &Path, database_url: &str) -> Result<Self, String> {
        let port = free_port()?;
        Ok(Self {
            binary: binary.to_owned(),
            env: server_env(database_url, port),
            port,
        })
    }

    /// `http://127.0.0.1:<port>`, where `serve` will listen.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs a CLI command with `input` on its standard input; its stdout, trimmed.
    ///
    /// # Errors
    /// The command failed; the message carries its stderr.
    pub fn cli_with_input(&self, args: &[&str], input: &str) -> Result<String, String> {
        use std::io::Write as _;
        let mut child = Command::new(&self.binary)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("run {}: {e}", self.binary.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .map_err(|e| format!("write to kyc-server {}: {e}", args.join(" ")))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|e| format!("run {}: {e}", self.binary.display()))?;
        Self::stdout_of(args, &output)
    }

    fn stdout_of(args: &[&str], output: &std::process::Output) -> Result<String, String> {
        if !output.status.success() {
            return Err(format!(
                "kyc-server {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Runs a CLI command; its stdout, trimmed.
    ///
    /// # Errors
    /// The command failed; the message carries its stderr.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new(&self.binary)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {}: {e}", self.binary.display()))?;
        Self::stdout_of(args, &output)
    }

    /// Starts `kyc-server serve` with `extra_env` on top (e.g. tuning variables).
    ///
    /// # Errors
    /// It cannot be started or does not become ready.
    pub async fn serve(&self, extra_env: &[(String, String)]) -> Result<Running, String> {
        let child = Command::new(&self.binary)
            .arg("serve")
            .envs(self.env.iter().chain(extra_env).map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.binary.display()))?;
        let mut running = Running {
            child,
            base_url: self.base_url(),
        };
        running.wait_until_ready("/readyz").await?;
        Ok(running)
    }
}

/// Starts this binary's `baseline-server` on `database_url`, inserting for `firm`.
///
/// # Errors
/// It cannot be started or does not become ready.
pub async fn start_baseline(database_url: &str, firm: &str) -> Result<Running, String> {
    let port = free_port()?;
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let child = Command::new(exe)
        .args([
            "baseline-server",
            "--database-url",
            database_url,
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--firm",
            firm,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start the baseline server: {e}"))?;
    let mut running = Running {
        child,
        base_url: format!("http://127.0.0.1:{port}"),
    };
    running.wait_until_ready("/healthz").await?;
    Ok(running)
}
