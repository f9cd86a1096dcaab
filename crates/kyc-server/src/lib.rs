//! # kyc-server
//!
//! The thin binary around the hexagon: it reads the configuration once, opens the database the
//! URL names, wires the storage, ledger and Sumsub adapters into the domain's `KycService`, and
//! either runs a command of the CLI (api.md §6) or serves HTTP with its background workers until
//! SIGTERM or SIGINT. No business rule lives here.
//!
//! | Module | Holds |
//! |---|---|
//! | [`config`] | the typed configuration of api.md §7 (environment variables and `--flags`) |
//! | [`failpoint`] | test-only fault injection around the credits ledger (`KYC_FAILPOINT`) |
//! | [`database`] | the engine chosen by `DATABASE_URL`, migrations, the storage ports, readiness |
//! | [`metered`] | provider-call metrics around the provider ports |
//! | [`system`] | the wall clock, the id and link-token generator, password hashing and API key minting |
//! | [`commands`] | `firm create`, `user create`, `api-key create`, `credits grant` |
//! | [`serve`] | the composition of the service, the HTTP server, workers and graceful shutdown |
//! | [`telemetry`] | log output (text or JSON on stderr) |
//! | [`webhooks`] | provider webhooks verified and read with the Sumsub adapter |
//! | [`workers`] | outbox delivery, AML re-screening, the idempotency purge |

pub mod commands;
pub mod config;
pub mod database;
pub mod failpoint;
pub mod metered;
pub mod push;
pub mod serve;
pub mod system;
pub mod telemetry;
pub mod webhooks;
pub mod workers;

use std::fmt;
use std::io::Read;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;
use crate::database::Backend;
use crate::system::ServerIds;

/// `kyc-server`: the KYC/AML orchestration service and its administrative commands.
#[derive(Debug, Parser)]
#[command(name = "kyc-server", version, about, long_about = None)]
pub struct Cli {
    /// Settings shared by every command (each also read from its environment variable).
    #[command(flatten)]
    pub config: Config,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands of api.md §6.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (migrations are applied at start unless --no-migrate).
    Serve {
        /// Do not apply migrations at start (readiness reports pending ones).
        #[arg(long)]
        no_migrate: bool,
    },
    /// Serve with the provider simulator, after seeding a demo firm with credits, a compliance
    /// officer login and an API key, printed with the URLs to open.
    Demo,
    /// Apply the database migrations and exit.
    Migrate,
    /// Manage firms.
    #[command(subcommand)]
    Firm(FirmCommand),
    /// Manage back-office users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API keys.
    #[command(name = "api-key", subcommand)]
    ApiKey(ApiKeyCommand),
    /// Manage credits.
    #[command(subcommand)]
    Credits(CreditsCommand),
    /// Manage a firm's outbound webhook endpoints.
    #[command(name = "webhook-endpoint", subcommand)]
    WebhookEndpoint(WebhookEndpointCommand),
}

/// `webhook-endpoint …`
#[derive(Debug, Subcommand)]
pub enum WebhookEndpointCommand {
    /// Register an endpoint; prints its signing secret (`whsec_…`), once. Its id goes to stderr.
    Create {
        /// The firm's id.
        #[arg(long)]
        firm: String,
        /// Where to POST events (`https://…`).
        #[arg(long)]
        url: String,
        /// A note.
        #[arg(long)]
        description: Option<String>,
        /// Comma-separated event types; all when omitted.
        #[arg(long)]
        events: Option<String>,
    },
    /// List the firm's endpoints, one per line: id, enabled or disabled, events, URL.
    List {
        /// The firm's id.
        #[arg(long)]
        firm: String,
    },
    /// Delete an endpoint: nothing more is sent to it.
    Delete {
        /// The firm's id.
        #[arg(long)]
        firm: String,
        /// The endpoint's id.
        #[arg(long)]
        id: String,
    },
    /// Give an endpoint a new secret; prints it, once. The old one keeps signing beside it for
    /// KYC_WEBHOOK_SECRET_OVERLAP.
    RotateSecret {
        /// The firm's id.
        #[arg(long)]
        firm: String,
        /// The endpoint's id.
        #[arg(long)]
        id: String,
    },
}

/// `firm …`
#[derive(Debug, Subcommand)]
pub enum FirmCommand {
    /// Create a firm; prints its id.
    Create {
        /// The firm's display name.
        #[arg(long)]
        name: String,
    },
}

/// `user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a back-office user; prints its id.
    Create {
        /// The firm's id.
        #[arg(long)]
        firm: String,
        /// The login email (unique across firms).
        #[arg(long)]
        email: String,
        /// staff, compliance_officer or admin.
        #[arg(long)]
        role: String,
        /// Read the password from standard input (the only way to give it, so it never shows
        /// in the process list or shell history).
        #[arg(long)]
        password_stdin: bool,
    },
}

/// `api-key …`
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key; prints the key, once.
    Create {
        /// The firm's id.
        #[arg(long)]
        firm: String,
        /// A name for the key.
        #[arg(long)]
        label: String,
        /// Comma-separated: customers:read, customers:write, aml:read, webhooks:manage.
        #[arg(long)]
        scopes: String,
        /// A sandbox key (`kyc_test_…`) instead of a live one.
        #[arg(long)]
        test: bool,
        /// When the key stops working (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
    },
}

/// `credits …`
#[derive(Debug, Subcommand)]
pub enum CreditsCommand {
    /// Grant credits to a firm, once per reference; prints the ledger operation id.
    Grant {
        /// The firm's id.
        #[arg(long)]
        firm: String,
        /// How many credits.
        #[arg(long)]
        credits: u64,
        /// An external reference (invoice number…): a repeat with the same one grants nothing more.
        #[arg(long)]
        reference: String,
    },
}

/// Why a command or the server stopped: one line for a person, with no secret in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(String);

impl Failure {
    /// A failure with this one-line reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into().replace('\n', " "))
    }

    /// A storage failure while doing `what`. An outage names its cause, which is what the
    /// operator must fix (`database or disk is full`, `attempt to write a readonly database`,
    /// `connection refused`) and carries no stored data; an internal error says only its kind,
    /// since a driver's message about a row may quote the row.
    pub fn storage(what: &str, error: &kyc_domain::ports::InfrastructureError) -> Self {
        use kyc_domain::ports::InfrastructureError;
        tracing::debug!(error = ?error, "{what} failed");
        match error {
            InfrastructureError::Unavailable(cause) => {
                let cause = innermost_cause(cause.as_ref());
                Self::new(format!(
                    "{what} failed: the database is unavailable: {cause}"
                ))
            }
            InfrastructureError::Internal(_) => Self::new(format!("{what} failed: {error}")),
        }
    }
}

/// The innermost cause of `error`, on one line: what the driver or the OS said.
pub(crate) fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string().replace('\n', " ")
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// Runs the parsed command line. Returns what goes on stdout (an id or a key), if anything.
///
/// # Errors
/// The [`Failure`] to print as the one line on stderr before exiting non-zero.
pub async fn run(cli: Cli) -> Result<Option<SecretString>, Failure> {
    let config = cli.config;
    match cli.command.unwrap_or(Command::Serve { no_migrate: false }) {
        Command::Serve { no_migrate } => serve::serve(config, !no_migrate).await.map(|()| None),
        Command::Demo => serve::demo(config).await.map(|()| None),
        Command::Migrate => {
            let backend = open(&config).await?;
            backend.close().await;
            tracing::info!(engine = backend.engine_name(), "migrations applied");
            Ok(None)
        }
        Command::Firm(FirmCommand::Create { name }) => {
            let backend = open(&config).await?;
            let id = commands::create_firm(&backend.stores(), &name).await;
            backend.close().await;
            id.map(|id| Some(id.to_string().into()))
        }
        Command::User(UserCommand::Create {
            firm,
            email,
            role,
            password_stdin,
        }) => {
            if !password_stdin {
                return Err(Failure::new(
                    "--password-stdin is required: the password is read from standard input",
                ));
            }
            let password = read_password()?;
            let backend = open(&config).await?;
            let stores = backend.stores();
            let access = stores.access(command_ids(&config));
            let id = commands::create_user(&stores, &access, &firm, &email, &role, &password).await;
            backend.close().await;
            id.map(|id| Some(id.to_string().into()))
        }
        Command::ApiKey(ApiKeyCommand::Create {
            firm,
            label,
            scopes,
            test,
            expires_at,
        }) => {
            let backend = open(&config).await?;
            let stores = backend.stores();
            let access = stores.access(command_ids(&config));
            let key = commands::create_api_key(
                &stores,
                &access,
                commands::NewApiKey {
                    firm: &firm,
                    label: &label,
                    scopes: &scopes,
                    test,
                    expires_at: expires_at.as_deref(),
                },
            )
            .await;
            backend.close().await;
            key.map(Some)
        }
        Command::Credits(CreditsCommand::Grant {
            firm,
            credits,
            reference,
        }) => {
            let backend = open(&config).await?;
            let id = commands::grant_credits(&backend.stores(), &firm, credits, &reference).await;
            backend.close().await;
            id.map(|id| Some(id.into()))
        }
        Command::WebhookEndpoint(command) => {
            let backend = open(&config).await?;
            let stores = backend.stores();
            let webhooks = stores.webhooks(command_ids(&config), config.webhook_secret_overlap());
            let printed = commands::webhook_endpoint(&stores, &webhooks, command).await;
            backend.close().await;
            printed.map(|text| Some(text.into()))
        }
    }
}

/// Connects and applies pending migrations: the administrative commands work on a fresh database
/// (a first `firm create` before the first `serve`), and applying migrations is idempotent.
async fn open(config: &Config) -> Result<Backend, Failure> {
    let backend = Backend::connect(&config.database_url).await?;
    backend.migrate().await?;
    Ok(backend)
}

/// The ids of what a command creates, made as `serve` makes them.
fn command_ids(config: &Config) -> Arc<ServerIds> {
    // No command derives a link token, but the generator is keyed as the server's would be.
    let (link_secret, _) = config.link_secret();
    Arc::new(ServerIds::new(link_secret.expose_secret().as_bytes()))
}

/// Reads the password from stdin, dropping one trailing line break (`echo pw | …`).
fn read_password() -> Result<SecretString, Failure> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|_| Failure::new("could not read the password from standard input"))?;
    let trimmed = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text)
        .to_owned();
    Ok(SecretString::from(trimmed))
}
