//! `serve`: composes the service from the configuration, serves HTTP, runs the background
//! workers, and shuts down gracefully on SIGTERM or SIGINT: stop accepting, let in-flight requests
//! and the current worker pass finish, close the database, exit.

use std::sync::Arc;
use std::time::Duration;

use kyc_domain::usecases::{KycService, Ports, Settings};
use kyc_sumsub::simulator::WebhookTarget;
use kyc_sumsub::{DigestAlgorithm, Simulator, SimulatorConfig, SumsubClient, SumsubConfig};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::Failure;
use crate::config::{Config, PROVIDER_WEBHOOK_PATH, ProviderMode, ProviderSettings};
use crate::database::{Backend, Stores};
use crate::system::{ServerIds, SystemClock};

/// How often the recovery worker looks for attempts left between the phases of Start
/// Verification.
pub const RECOVERY_INTERVAL: Duration = Duration::from_secs(30);

/// How many stuck attempts one recovery pass takes on.
const RECOVERY_BATCH: u32 = 100;

/// How long shutdown waits for in-flight requests before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything `serve` (and later `demo`) runs on: the database, its ports, the service and the
/// provider wiring.
pub struct Composition {
    /// The database.
    pub backend: Backend,
    /// Its ports.
    pub stores: Stores,
    /// The use cases.
    pub service: KycService,
    /// How the provider is reached, and the secrets shared with it.
    pub provider: ProviderSettings,
    /// The simulator to mount at `/sim/sumsub`, when it is on.
    pub simulator: Option<Simulator>,
    /// The clock the service uses.
    pub clock: Arc<SystemClock>,
}

impl Composition {
    /// Connects, migrates (unless told not to), and wires the adapters into the domain.
    ///
    /// # Errors
    /// One line naming the setting that is missing or wrong, or saying why the database could not
    /// be used.
    pub async fn build(config: &Config, migrate: bool) -> Result<Self, Failure> {
        let provider = config.provider()?;
        let (link_secret, link_secret_generated) = config.link_secret()?;
        let backend = Backend::connect(&config.database_url).await?;
        if migrate {
            backend.migrate().await?;
        }
        let stores = backend.stores();

        let client = SumsubClient::new(SumsubConfig::new(
            provider.base_url.clone(),
            provider.app_token.clone(),
            provider.secret_key.clone(),
        ))
        .map_err(|error| Failure::new(format!("SUMSUB_BASE_URL: {error}")))?;
        let client = Arc::new(client);

        let simulator = match provider.mode {
            ProviderMode::Simulator => {
                let mut sim_config = SimulatorConfig::new(
                    provider.app_token.clone(),
                    provider.secret_key.clone(),
                    provider.base_url.clone(),
                );
                sim_config.webhook = provider.webhook_secret.clone().map(|secret| WebhookTarget {
                    url: config.public_url.join(PROVIDER_WEBHOOK_PATH),
                    secret,
                    algorithm: DigestAlgorithm::Sha256,
                });
                Some(Simulator::new(sim_config))
            }
            ProviderMode::Sumsub => None,
        };

        let clock = Arc::new(SystemClock);
        let ids = Arc::new(ServerIds::new(link_secret.expose_secret().as_bytes()));
        let service = KycService::new(
            Ports {
                customers: stores.customers.clone(),
                ledger: stores.ledger.clone(),
                provider: client.clone(),
                screening: client,
                clock: clock.clone(),
                ids,
            },
            Settings {
                verification_cost: config.verification_cost(),
                levels: config.levels(),
                ..Settings::default()
            },
        );

        tracing::info!(
            engine = backend.engine_name(),
            provider = match provider.mode {
                ProviderMode::Simulator => "simulator",
                ProviderMode::Sumsub => "sumsub",
            },
            provider_base_url = %provider.base_url,
            "service composed"
        );
        if !provider.generated.is_empty() {
            tracing::warn!(
                generated = %provider.generated.join(", "),
                "the simulator is on and these secrets were not configured: random ones were generated for this process"
            );
        }
        if link_secret_generated {
            tracing::warn!(
                "KYC_LINK_SECRET is not set: a random one was generated for this process, so verification links derived after a restart differ from earlier ones; set it in production"
            );
        }
        if matches!(provider.mode, ProviderMode::Sumsub) && provider.webhook_secret.is_none() {
            tracing::warn!("SUMSUB_WEBHOOK_SECRET is not set: provider webhooks will be refused");
        }
        Ok(Self {
            backend,
            stores,
            service,
            provider,
            simulator,
            clock,
        })
    }
}

/// Runs the recovery worker until `shutdown` fires. A pass that has started always finishes: the
/// token is only looked at between passes.
pub async fn recovery_worker(service: KycService, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(RECOVERY_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        match service.recover_stuck_attempts(RECOVERY_BATCH).await {
            Ok(report) if report.completed + report.voided + report.deferred > 0 => {
                tracing::info!(
                    completed = report.completed,
                    voided = report.voided,
                    deferred = report.deferred,
                    "recovery pass"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "recovery pass failed; retrying later"),
        }
    }
    tracing::info!("recovery worker stopped");
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received: shutting down"),
        () = terminate => tracing::info!("SIGTERM received: shutting down"),
    }
}

/// Serves until SIGTERM or SIGINT.
///
/// # Errors
/// A configuration, database or bind failure, as one line.
pub async fn serve(config: Config, migrate: bool) -> Result<(), Failure> {
    let composition = Composition::build(&config, migrate).await?;
    let _ = (DRAIN_TIMEOUT, composition);
    Err(Failure::new(
        "the HTTP adapter is not wired in this build yet",
    ))
}
