//! Configuration (api.md §7): one typed struct, read once from the environment, where every
//! variable also has a `--flag`. Parsing checks the shape of each value; [`Config::provider`] and
//! [`Config::check_serve`] check the combinations `serve` needs. Every failure is one line naming
//! the setting, and never repeats a secret's value.

use std::net::SocketAddr;

use clap::{ArgAction, Args, ValueEnum};
use hmac::{Hmac, Mac};
use kyc_domain::risk::ProviderLevels;
use kyc_domain::values::Credits;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use tracing_subscriber::EnvFilter;
use url::Url;

use crate::Failure;
use crate::failpoint::Failpoint;

/// Every setting of the server and its commands.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Where the data lives: `sqlite://path.db` (created if missing) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        default_value = "sqlite://kyc.db",
        value_parser = parse_database_url,
        hide_env_values = true,
        global = true
    )]
    pub database_url: DatabaseUrl,

    /// The address to listen on.
    #[arg(
        long = "bind",
        env = "KYC_BIND",
        value_name = "KYC_BIND",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub bind: SocketAddr,

    /// The base URL people and providers reach this server at (links, redirects, webhooks).
    /// Unset: `http://` and the address actually bound (`http://127.0.0.1:8080` by default).
    #[arg(
        long = "public-url",
        env = "KYC_PUBLIC_URL",
        value_name = "KYC_PUBLIC_URL",
        value_parser = parse_public_url,
        global = true
    )]
    pub public_url: Option<PublicUrl>,

    /// Sumsub's API base URL (ignored when the simulator is on).
    #[arg(
        long = "sumsub-base-url",
        env = "SUMSUB_BASE_URL",
        value_name = "SUMSUB_BASE_URL",
        default_value = kyc_sumsub::client::DEFAULT_BASE_URL,
        value_parser = parse_sumsub_base_url,
        global = true
    )]
    pub sumsub_base_url: String,

    /// Sumsub's `X-App-Token`.
    #[arg(
        long = "sumsub-app-token",
        env = "SUMSUB_APP_TOKEN",
        value_name = "SUMSUB_APP_TOKEN",
        value_parser = parse_secret,
        hide_env_values = true,
        global = true
    )]
    pub sumsub_app_token: Option<SecretString>,

    /// The key Sumsub requests are signed with.
    #[arg(
        long = "sumsub-secret-key",
        env = "SUMSUB_SECRET_KEY",
        value_name = "SUMSUB_SECRET_KEY",
        value_parser = parse_secret,
        hide_env_values = true,
        global = true
    )]
    pub sumsub_secret_key: Option<SecretString>,

    /// The secret Sumsub signs its webhooks with.
    #[arg(
        long = "sumsub-webhook-secret",
        env = "SUMSUB_WEBHOOK_SECRET",
        value_name = "SUMSUB_WEBHOOK_SECRET",
        value_parser = parse_secret,
        hide_env_values = true,
        global = true
    )]
    pub sumsub_webhook_secret: Option<SecretString>,

    /// The Sumsub level for LOW and MEDIUM risk customers.
    #[arg(
        long = "sumsub-level-name",
        env = "SUMSUB_LEVEL_NAME",
        value_name = "SUMSUB_LEVEL_NAME",
        default_value = "basic-kyc-level",
        value_parser = parse_level_name,
        global = true
    )]
    pub sumsub_level_name: String,

    /// The Sumsub level for HIGH risk customers (enhanced due diligence); the standard one when unset.
    #[arg(
        long = "sumsub-edd-level-name",
        env = "SUMSUB_EDD_LEVEL_NAME",
        value_name = "SUMSUB_EDD_LEVEL_NAME",
        value_parser = parse_level_name,
        global = true
    )]
    pub sumsub_edd_level_name: Option<String>,

    /// The longest one call to the identity provider may take, from connect to the last byte.
    #[arg(
        long = "provider-timeout",
        env = "KYC_PROVIDER_TIMEOUT",
        value_name = "KYC_PROVIDER_TIMEOUT",
        default_value = "10s",
        value_parser = parse_positive_duration,
        global = true
    )]
    pub provider_timeout: std::time::Duration,

    /// Consecutive provider failures (timeouts, refused connections, 5xx) that open its circuit:
    /// calls then fail at once for `KYC_PROVIDER_BREAKER_COOLDOWN`, and one probe goes out after
    /// it. `0` never opens the circuit.
    #[arg(
        long = "provider-breaker-failures",
        env = "KYC_PROVIDER_BREAKER_FAILURES",
        value_name = "KYC_PROVIDER_BREAKER_FAILURES",
        default_value_t = 5,
        global = true
    )]
    pub provider_breaker_failures: u32,

    /// How long the provider's open circuit refuses calls before a probe.
    #[arg(
        long = "provider-breaker-cooldown",
        env = "KYC_PROVIDER_BREAKER_COOLDOWN",
        value_name = "KYC_PROVIDER_BREAKER_COOLDOWN",
        default_value = "30s",
        value_parser = parse_positive_duration,
        global = true
    )]
    pub provider_breaker_cooldown: std::time::Duration,

    /// Mount the provider simulator at `/sim/sumsub` and point the client at it: `on` or `off`.
    /// Unset means on exactly when no Sumsub credentials are configured.
    #[arg(
        long = "simulator",
        env = "KYC_SIMULATOR",
        value_name = "KYC_SIMULATOR",
        value_parser = parse_switch,
        action = ArgAction::Set,
        global = true
    )]
    pub simulator: Option<bool>,

    /// The server secret verification link tokens are derived from (at least 32 characters).
    /// Unset: derived from SUMSUB_SECRET_KEY, or generated per process when that is unset too.
    #[arg(
        long = "link-secret",
        env = "KYC_LINK_SECRET",
        value_name = "KYC_LINK_SECRET",
        value_parser = parse_link_secret,
        hide_env_values = true,
        global = true
    )]
    pub link_secret: Option<SecretString>,

    /// The price of one verification attempt, in credits (at least 1).
    #[arg(
        long = "verification-cost-credits",
        env = "KYC_VERIFICATION_COST_CREDITS",
        value_name = "KYC_VERIFICATION_COST_CREDITS",
        default_value = "1",
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub verification_cost_credits: u64,

    /// Requests per API key per minute; 0 turns the limit off.
    #[arg(
        long = "rate-limit-per-minute",
        env = "KYC_RATE_LIMIT_PER_MINUTE",
        value_name = "KYC_RATE_LIMIT_PER_MINUTE",
        default_value = "60",
        global = true
    )]
    pub rate_limit_per_minute: u32,

    /// Requests per API key per 24 hours; 0 turns the limit off.
    #[arg(
        long = "rate-limit-per-day",
        env = "KYC_RATE_LIMIT_PER_DAY",
        value_name = "KYC_RATE_LIMIT_PER_DAY",
        default_value = "10000",
        global = true
    )]
    pub rate_limit_per_day: u32,

    /// Failed API-key authentications per client address per minute answered at once; past it
    /// each is answered after a second, a few at a time, and a flood 429; 0 turns this off.
    #[arg(
        long = "key-failures-per-address",
        env = "KYC_KEY_FAILURES_PER_ADDRESS",
        value_name = "KYC_KEY_FAILURES_PER_ADDRESS",
        default_value = "100",
        global = true
    )]
    pub key_failures_per_address: u32,

    /// The log filter, in `tracing` directive syntax (`info`, `kyc_http=debug,info`).
    #[arg(
        long = "log",
        env = "RUST_LOG",
        value_name = "RUST_LOG",
        default_value = "info",
        value_parser = parse_log_filter,
        global = true
    )]
    pub log_filter: String,

    /// How log lines are written on standard error.
    #[arg(
        long = "log-format",
        env = "KYC_LOG_FORMAT",
        value_name = "KYC_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    /// The waits before each retry of a failed webhook delivery, comma-separated durations
    /// (`500ms`, `10s`, `5m`, `2h`); when they are spent the message is given up (a replay sends
    /// it again). The default retries for about 28 hours.
    #[arg(
        long = "webhook-retry-schedule",
        env = "KYC_WEBHOOK_RETRY_SCHEDULE",
        value_name = "KYC_WEBHOOK_RETRY_SCHEDULE",
        default_value = "10s,1m,5m,30m,2h,5h,10h,10h",
        value_parser = parse_duration_list,
        global = true
    )]
    pub webhook_retry_schedule: DurationList,

    /// The longest one webhook delivery attempt may take.
    #[arg(
        long = "webhook-timeout",
        env = "KYC_WEBHOOK_TIMEOUT",
        value_name = "KYC_WEBHOOK_TIMEOUT",
        default_value = "10s",
        value_parser = parse_positive_duration,
        global = true
    )]
    pub webhook_timeout: std::time::Duration,

    /// How long a rotated webhook secret keeps signing beside the new one.
    #[arg(
        long = "webhook-secret-overlap",
        env = "KYC_WEBHOOK_SECRET_OVERLAP",
        value_name = "KYC_WEBHOOK_SECRET_OVERLAP",
        default_value = "24h",
        value_parser = parse_duration,
        global = true
    )]
    pub webhook_secret_overlap: std::time::Duration,

    /// Webhook deliveries in flight at once in this process; `0` runs no delivery worker here
    /// (another replica delivers what this one queues).
    #[arg(
        long = "webhook-concurrency",
        env = "KYC_WEBHOOK_CONCURRENCY",
        value_name = "KYC_WEBHOOK_CONCURRENCY",
        default_value = "64",
        value_parser = clap::value_parser!(u32).range(0..=1024),
        global = true
    )]
    pub webhook_concurrency: u32,

    /// Webhook deliveries to one endpoint in flight at once, across every replica.
    #[arg(
        long = "webhook-per-endpoint",
        env = "KYC_WEBHOOK_PER_ENDPOINT",
        value_name = "KYC_WEBHOOK_PER_ENDPOINT",
        default_value = "16",
        value_parser = clap::value_parser!(u32).range(1..=1024),
        global = true
    )]
    pub webhook_per_endpoint: u32,

    /// Test support: seconds between passes of the recovery worker.
    #[arg(
        long = "recovery-interval-secs",
        env = "KYC_RECOVERY_INTERVAL_SECS",
        value_name = "KYC_RECOVERY_INTERVAL_SECS",
        default_value = "30",
        value_parser = clap::value_parser!(u64).range(1..),
        help_heading = "Test support",
        global = true
    )]
    pub recovery_interval_secs: u64,

    /// Test support: how old a half-done Start Verification must be before the recovery worker
    /// takes it over, in seconds. Keep it longer than the slowest start can take.
    #[arg(
        long = "stuck-after-secs",
        env = "KYC_STUCK_AFTER_SECS",
        value_name = "KYC_STUCK_AFTER_SECS",
        default_value = "120",
        value_parser = clap::value_parser!(u64).range(1..),
        help_heading = "Test support",
        global = true
    )]
    pub stuck_after_secs: u64,

    /// Test support, never in production: stop every Start Verification forever at this point,
    /// so a test can kill the process there. Refused unless KYC_ALLOW_FAILPOINTS is on.
    #[arg(
        long = "failpoint",
        env = "KYC_FAILPOINT",
        value_name = "KYC_FAILPOINT",
        help_heading = "Test support",
        global = true
    )]
    pub failpoint: Option<Failpoint>,

    /// Test support: confirms that KYC_FAILPOINT is meant (`on`/`off`).
    #[arg(
        long = "allow-failpoints",
        env = "KYC_ALLOW_FAILPOINTS",
        value_name = "KYC_ALLOW_FAILPOINTS",
        value_parser = parse_switch,
        action = ArgAction::Set,
        default_value = "off",
        help_heading = "Test support",
        global = true
    )]
    pub allow_failpoints: bool,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Which database engine a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// PostgreSQL: production and scale-out.
    Postgres,
    /// An embedded SQLite file: the default.
    Sqlite,
}

/// `DATABASE_URL`, checked for a known scheme. It may hold a password, so `Debug` and errors
/// never show it.
#[derive(Clone)]
pub struct DatabaseUrl {
    engine: Engine,
    url: SecretString,
}

impl DatabaseUrl {
    /// The engine the scheme selects.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The URL itself, for the driver only.
    pub fn expose(&self) -> &str {
        self.url.expose_secret()
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseUrl")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// `KYC_PUBLIC_URL`: an absolute http(s) URL, kept without a trailing slash so paths append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    /// `http://` and an address this server listens on; a wildcard address (`0.0.0.0`, `::`)
    /// becomes the loopback one, which at least works from the same machine.
    pub fn for_address(address: SocketAddr) -> Self {
        let ip = match address.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
            ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        Self(format!("http://{}", SocketAddr::new(ip, address.port())))
    }

    /// The URL without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL of `path` (which starts with `/`) on this server.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

/// The identity provider `serve` talks to.
#[derive(Debug, Clone)]
pub enum ProviderMode {
    /// Real Sumsub (or any server at `SUMSUB_BASE_URL` that speaks its protocol).
    Sumsub,
    /// The built-in simulator, mounted at `/sim/sumsub` on this server.
    Simulator,
}

/// The resolved provider settings: where the client goes and the secrets it shares.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// Real Sumsub or the simulator.
    pub mode: ProviderMode,
    /// The client's base URL (`{KYC_PUBLIC_URL}/sim/sumsub` with the simulator).
    pub base_url: String,
    /// `X-App-Token`.
    pub app_token: SecretString,
    /// The request signing key.
    pub secret_key: SecretString,
    /// The webhook secret; `None` when provider webhooks cannot be accepted.
    pub webhook_secret: Option<SecretString>,
    /// Which secrets were generated for this process (for one log line, never their values).
    pub generated: Vec<&'static str>,
}

/// The path the simulator is mounted at.
pub const SIMULATOR_MOUNT: &str = "/sim/sumsub";

/// The path provider webhooks arrive at.
pub const PROVIDER_WEBHOOK_PATH: &str = "/webhooks/sumsub";

impl Config {
    /// The provider levels by risk rating.
    pub fn levels(&self) -> ProviderLevels {
        ProviderLevels {
            standard: self.sumsub_level_name.clone(),
            enhanced: self
                .sumsub_edd_level_name
                .clone()
                .unwrap_or_else(|| self.sumsub_level_name.clone()),
        }
    }

    /// How the webhook delivery worker sends.
    pub fn push_settings(&self) -> crate::push::PushSettings {
        crate::push::PushSettings {
            retry_schedule: self.webhook_retry_schedule.0.clone(),
            timeout: self.webhook_timeout,
            concurrency: self.webhook_concurrency,
            per_endpoint: self.webhook_per_endpoint,
        }
    }

    /// How long a rotated webhook secret keeps signing.
    pub fn webhook_secret_overlap(&self) -> time::Duration {
        time::Duration::try_from(self.webhook_secret_overlap).unwrap_or(time::Duration::DAY)
    }

    /// How often the recovery worker runs.
    pub fn recovery_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.recovery_interval_secs)
    }

    /// How old a half-done start must be before recovery takes it over.
    pub fn stuck_after(&self) -> time::Duration {
        time::Duration::seconds(i64::try_from(self.stuck_after_secs).unwrap_or(i64::MAX))
    }

    /// The price of one attempt.
    pub fn verification_cost(&self) -> Credits {
        Credits::new(self.verification_cost_credits)
    }

    /// Whether the simulator is on: as set, or, when unset, exactly when neither Sumsub credential
    /// is configured (so a fresh machine with no configuration can run the whole lifecycle).
    pub fn simulator_on(&self) -> bool {
        self.simulator
            .unwrap_or(self.sumsub_app_token.is_none() && self.sumsub_secret_key.is_none())
    }

    /// The public URL: as configured, or derived from the address actually bound.
    pub fn public_url(&self, bound: SocketAddr) -> PublicUrl {
        self.public_url
            .clone()
            .unwrap_or_else(|| PublicUrl::for_address(bound))
    }

    /// Checks, before anything is opened, that `serve` has what it needs: the Sumsub credentials
    /// when the simulator is off, and an explicit confirmation for a failpoint.
    ///
    /// # Errors
    /// One line naming the first missing setting.
    pub fn check_serve(&self) -> Result<(), Failure> {
        if let Some(failpoint) = self.failpoint
            && !self.allow_failpoints
        {
            return Err(Failure::new(format!(
                "KYC_FAILPOINT={} stops every Start Verification and is for tests only; set KYC_ALLOW_FAILPOINTS=on to confirm",
                failpoint.name()
            )));
        }
        if !self.simulator_on() {
            for (value, name) in [
                (&self.sumsub_app_token, "SUMSUB_APP_TOKEN"),
                (&self.sumsub_secret_key, "SUMSUB_SECRET_KEY"),
            ] {
                if value.is_none() {
                    return Err(Failure::new(format!(
                        "{name} is required when KYC_SIMULATOR is off (set it, or set KYC_SIMULATOR=on)"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Resolves the provider: the simulator at `{public_url}/sim/sumsub` with shared secrets
    /// (generated when not configured), or Sumsub, which needs both credentials.
    ///
    /// # Errors
    /// One line naming the missing setting when the simulator is off and a credential is missing.
    pub fn provider(&self, public_url: &PublicUrl) -> Result<ProviderSettings, Failure> {
        self.check_serve()?;
        let mut generated = Vec::new();
        if self.simulator_on() {
            let mut pick = |configured: &Option<SecretString>, name: &'static str| {
                configured.clone().unwrap_or_else(|| {
                    generated.push(name);
                    random_secret()
                })
            };
            let app_token = pick(&self.sumsub_app_token, "SUMSUB_APP_TOKEN");
            let secret_key = pick(&self.sumsub_secret_key, "SUMSUB_SECRET_KEY");
            let webhook_secret = pick(&self.sumsub_webhook_secret, "SUMSUB_WEBHOOK_SECRET");
            return Ok(ProviderSettings {
                mode: ProviderMode::Simulator,
                base_url: public_url.join(SIMULATOR_MOUNT),
                app_token,
                secret_key,
                webhook_secret: Some(webhook_secret),
                generated,
            });
        }
        // check_serve made sure both are present.
        let (Some(app_token), Some(secret_key)) = (&self.sumsub_app_token, &self.sumsub_secret_key)
        else {
            return Err(Failure::new(
                "SUMSUB_APP_TOKEN and SUMSUB_SECRET_KEY are required",
            ));
        };
        Ok(ProviderSettings {
            mode: ProviderMode::Sumsub,
            base_url: self.sumsub_base_url.clone(),
            app_token: app_token.clone(),
            secret_key: secret_key.clone(),
            webhook_secret: self.sumsub_webhook_secret.clone(),
            generated,
        })
    }

    /// The link secret and where it came from: `KYC_LINK_SECRET` when set; otherwise derived
    /// from `SUMSUB_SECRET_KEY` when that is set (stable across restarts and shared by every
    /// replica that talks to the same Sumsub account, with no extra setting to forget);
    /// otherwise generated for this process.
    pub fn link_secret(&self) -> (SecretString, LinkSecretSource) {
        if let Some(secret) = &self.link_secret {
            return (secret.clone(), LinkSecretSource::Configured);
        }
        if let Some(key) = &self.sumsub_secret_key {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret().as_bytes())
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
            // A separate purpose label: the derived secret says nothing about the signing key.
            mac.update(b"kyc-server verification link secret v1");
            let derived = hex::encode(mac.finalize().into_bytes());
            return (
                SecretString::from(derived),
                LinkSecretSource::DerivedFromSumsubSecret,
            );
        }
        (random_secret(), LinkSecretSource::Generated)
    }
}

/// Where the link secret came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkSecretSource {
    /// `KYC_LINK_SECRET`.
    Configured,
    /// Derived from `SUMSUB_SECRET_KEY`.
    DerivedFromSumsubSecret,
    /// Random, for this process only.
    Generated,
}

/// 32 random bytes as URL-safe text.
pub fn random_secret() -> SecretString {
    let mut bytes = [0_u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    SecretString::from(hex::encode(bytes))
}

/// Durations in order, as `KYC_WEBHOOK_RETRY_SCHEDULE` gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationList(pub Vec<std::time::Duration>);

/// `250ms`, `10s`, `5m`, `2h` or `1d`; a bare number is seconds.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let wrong = || format!("{text:?} is not a duration such as 500ms, 10s, 5m, 2h or 1d");
    let number: u64 = number.parse().map_err(|_| wrong())?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(wrong()),
    };
    number
        .checked_mul(unit_ms)
        .filter(|ms| *ms <= 30 * 86_400_000)
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is longer than 30 days"))
}

fn parse_positive_duration(text: &str) -> Result<std::time::Duration, String> {
    parse_duration(text).and_then(|d| {
        if d.is_zero() {
            Err("must be longer than zero".to_owned())
        } else {
            Ok(d)
        }
    })
}

fn parse_duration_list(text: &str) -> Result<DurationList, String> {
    let waits = text
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(parse_duration)
        .collect::<Result<Vec<_>, _>>()?;
    if waits.len() > 50 {
        return Err("at most 50 retries".to_owned());
    }
    Ok(DurationList(waits))
}

fn parse_database_url(text: &str) -> Result<DatabaseUrl, String> {
    let text = text.trim();
    let engine = if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Engine::Postgres
    } else if text.starts_with("sqlite:") {
        Engine::Sqlite
    } else {
        // The value is not echoed: a URL may carry a password.
        return Err("expected postgres://… or sqlite://…".into());
    };
    Ok(DatabaseUrl {
        engine,
        url: SecretString::from(text),
    })
}

fn parse_public_url(text: &str) -> Result<PublicUrl, String> {
    let url = Url::parse(text.trim()).map_err(|error| error.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
        return Err("expected an http(s) URL without a query".into());
    }
    Ok(PublicUrl(url.as_str().trim_end_matches('/').to_owned()))
}

fn parse_sumsub_base_url(text: &str) -> Result<String, String> {
    let url = Url::parse(text.trim()).map_err(|error| error.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
        return Err("expected an http(s) URL without a query".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn parse_secret(text: &str) -> Result<SecretString, String> {
    if text.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(SecretString::from(text))
}

fn parse_link_secret(text: &str) -> Result<SecretString, String> {
    if text.chars().count() < 32 {
        return Err("must be at least 32 characters".into());
    }
    Ok(SecretString::from(text))
}

fn parse_level_name(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() || text.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    Ok(text.to_owned())
}

fn parse_switch(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

fn parse_log_filter(text: &str) -> Result<String, String> {
    EnvFilter::try_new(text).map_err(|error| error.to_string())?;
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut argv = vec!["kyc-server"];
        argv.extend_from_slice(args);
        Probe::try_parse_from(argv).map(|probe| probe.config)
    }

    #[test]
    fn the_simulator_is_on_when_no_credentials_are_given() {
        let config = parse(&[]).unwrap();
        assert!(config.simulator_on());
        let public_url = config.public_url("127.0.0.1:8080".parse().unwrap());
        let provider = config.provider(&public_url).unwrap();
        assert!(matches!(provider.mode, ProviderMode::Simulator));
        assert_eq!(provider.base_url, "http://127.0.0.1:8080/sim/sumsub");
        assert_eq!(
            provider.generated,
            vec![
                "SUMSUB_APP_TOKEN",
                "SUMSUB_SECRET_KEY",
                "SUMSUB_WEBHOOK_SECRET"
            ]
        );
    }

    #[test]
    fn credentials_select_sumsub_unless_the_simulator_is_forced_on() {
        let url = PublicUrl::for_address("127.0.0.1:8080".parse().unwrap());
        let args = ["--sumsub-app-token", "tok", "--sumsub-secret-key", "key"];
        let config = parse(&args).unwrap();
        assert!(!config.simulator_on());
        config.check_serve().unwrap();
        let provider = config.provider(&url).unwrap();
        assert!(matches!(provider.mode, ProviderMode::Sumsub));
        assert_eq!(provider.base_url, "https://api.sumsub.com");
        let forced = parse(&[&args[..], &["--simulator", "on"]].concat()).unwrap();
        let provider = forced.provider(&url).unwrap();
        assert!(matches!(provider.mode, ProviderMode::Simulator));
        assert_eq!(provider.app_token.expose_secret(), "tok");
    }

    #[test]
    fn the_simulator_off_without_credentials_names_the_missing_one() {
        let config = parse(&["--simulator", "off"]).unwrap();
        let error = config.check_serve().unwrap_err().to_string();
        assert!(error.starts_with("SUMSUB_APP_TOKEN is required"), "{error}");
    }

    #[test]
    fn the_link_secret_is_configured_or_derived_from_the_sumsub_key_or_generated() {
        let configured = parse(&["--link-secret", "0123456789abcdef0123456789abcdef"]).unwrap();
        let (secret, source) = configured.link_secret();
        assert_eq!(source, LinkSecretSource::Configured);
        assert_eq!(secret.expose_secret(), "0123456789abcdef0123456789abcdef");

        let keyed = parse(&["--sumsub-secret-key", "signing-key"]).unwrap();
        let (first, source) = keyed.link_secret();
        assert_eq!(source, LinkSecretSource::DerivedFromSumsubSecret);
        assert_eq!(first.expose_secret(), keyed.link_secret().0.expose_secret());
        assert!(!first.expose_secret().contains("signing-key"));
        let other = parse(&["--sumsub-secret-key", "another-key"]).unwrap();
        assert_ne!(first.expose_secret(), other.link_secret().0.expose_secret());

        let (generated, source) = parse(&[]).unwrap().link_secret();
        assert_eq!(source, LinkSecretSource::Generated);
        assert_ne!(
            generated.expose_secret(),
            parse(&[]).unwrap().link_secret().0.expose_secret()
        );
    }

    #[test]
    fn a_failpoint_is_refused_unless_explicitly_allowed() {
        let config = parse(&["--failpoint", "hold-before-post"]).unwrap();
        let error = config.check_serve().unwrap_err().to_string();
        assert!(error.contains("KYC_ALLOW_FAILPOINTS"), "{error}");
        let config = parse(&[
            "--failpoint",
            "hold-after-reserve",
            "--allow-failpoints",
            "on",
        ])
        .unwrap();
        config.check_serve().unwrap();
        assert_eq!(config.failpoint, Some(Failpoint::HoldAfterReserve));
        assert!(parse(&["--failpoint", "explode"]).is_err());
    }

    #[test]
    fn recovery_timings_default_to_production_values() {
        let config = parse(&[]).unwrap();
        assert_eq!(
            config.recovery_interval(),
            std::time::Duration::from_secs(30)
        );
        assert_eq!(config.stuck_after(), time::Duration::minutes(2));
        assert_eq!(config.failpoint, None);
        let config = parse(&["--recovery-interval-secs", "1", "--stuck-after-secs", "2"]).unwrap();
        assert_eq!(
            config.recovery_interval(),
            std::time::Duration::from_secs(1)
        );
        assert_eq!(config.stuck_after(), time::Duration::seconds(2));
        assert!(parse(&["--stuck-after-secs", "0"]).is_err());
    }

    #[test]
    fn the_edd_level_defaults_to_the_standard_one() {
        let levels = parse(&["--sumsub-level-name", "std"]).unwrap().levels();
        assert_eq!(
            (levels.standard.as_str(), levels.enhanced.as_str()),
            ("std", "std")
        );
        let levels = parse(&["--sumsub-edd-level-name", "edd"]).unwrap().levels();
        assert_eq!(levels.enhanced, "edd");
    }

    #[test]
    fn the_public_url_follows_the_bound_address_unless_configured() {
        let config = parse(&[]).unwrap();
        let bound = "0.0.0.0:4321".parse().unwrap();
        assert_eq!(config.public_url(bound).as_str(), "http://127.0.0.1:4321");
        let config = parse(&["--public-url", "https://kyc.example.com/"]).unwrap();
        assert_eq!(config.public_url(bound).as_str(), "https://kyc.example.com");
        assert_eq!(
            config.public_url(bound).join("/v/x"),
            "https://kyc.example.com/v/x"
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        assert!(parse(&["--database-url", "mysql://x"]).is_err());
        assert!(parse(&["--bind", "not-an-address"]).is_err());
        assert!(parse(&["--public-url", "ftp://x"]).is_err());
        assert!(parse(&["--verification-cost-credits", "0"]).is_err());
        assert!(parse(&["--log-format", "xml"]).is_err());
        assert!(parse(&["--link-secret", "short"]).is_err());
        assert!(parse(&["--simulator", "maybe"]).is_err());
    }

    #[test]
    fn the_database_url_selects_the_engine_and_keeps_out_of_debug_output() {
        let config = parse(&["--database-url", "postgres://u:hunter2@db/kyc"]).unwrap();
        assert_eq!(config.database_url.engine(), Engine::Postgres);
        assert!(!format!("{config:?}").contains("hunter2"));
        let embedded = parse(&["--database-url", "sqlite://kyc.db"]).unwrap();
        assert_eq!(embedded.database_url.engine(), Engine::Sqlite);
    }
}
