//! `serve`: composes the service from the configuration, serves HTTP, runs the background
//! workers, and shuts down gracefully on SIGTERM or SIGINT: stop accepting, let in-flight requests
//! and the current worker pass finish, close the database, exit.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use kyc_http::{BackOfficePorts, HttpConfig, HttpPorts, Metrics, ProviderWebhooks, Readiness};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use kyc_domain::ports::CreditsLedger;
use kyc_domain::usecases::{AccessService, KycService, Ports, Settings, WebhookService};
use kyc_sumsub::simulator::WebhookTarget;
use kyc_sumsub::{
    BreakerSettings, CircuitState, DigestAlgorithm, Simulator, SimulatorConfig, SumsubClient,
    SumsubConfig,
};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Failure;
use crate::config::{
    Config, LinkSecretSource, PROVIDER_WEBHOOK_PATH, ProviderMode, ProviderSettings, PublicUrl,
    SIMULATOR_MOUNT,
};
use crate::database::{Backend, Stores};
use crate::failpoint::FailpointLedger;
use crate::metered::MeteredProvider;
use crate::push::{PushSettings, PushWorker};
use crate::system::{ServerIds, SystemClock};
use crate::webhooks::SumsubWebhooks;
use crate::workers::{OutboxWorker, idempotency_purge_worker, outbox_worker, rescreening_worker};

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
    /// The use cases of the firms' users and API keys.
    pub access: AccessService,
    /// How the provider is reached, and the secrets shared with it.
    pub provider: ProviderSettings,
    /// The simulator to mount at `/sim/sumsub`, when it is on.
    pub simulator: Option<Simulator>,
    /// The clock the service uses.
    pub clock: Arc<SystemClock>,
    /// The registry behind `/metrics`, shared with the metered provider ports.
    pub metrics: Metrics,
    /// How often the recovery worker runs.
    pub recovery_interval: Duration,
    /// The firms' webhook endpoints and event feeds.
    pub webhooks: WebhookService,
    /// How webhook messages are delivered.
    pub push: PushSettings,
}

impl Composition {
    /// Connects, migrates (unless told not to), and wires the adapters into the domain, with
    /// `public_url` as the base of links, the simulator and its webhooks.
    ///
    /// # Errors
    /// One line naming the setting that is missing or wrong, or saying why the database could not
    /// be used.
    pub async fn build(
        config: &Config,
        public_url: &PublicUrl,
        migrate: bool,
    ) -> Result<Self, Failure> {
        let provider = config.provider(public_url)?;
        let (link_secret, link_secret_source) = config.link_secret();
        let backend = Backend::connect(&config.database_url).await?;
        if migrate {
            backend.migrate().await?;
        }
        let stores = backend.stores();

        let mut client_config = SumsubConfig::new(
            provider.base_url.clone(),
            provider.app_token.clone(),
            provider.secret_key.clone(),
        );
        client_config.request_timeout = config.provider_timeout;
        client_config.breaker = BreakerSettings {
            failures: config.provider_breaker_failures,
            cooldown: config.provider_breaker_cooldown,
        };
        let client = Arc::new(
            SumsubClient::new(client_config)
                .map_err(|error| Failure::new(format!("SUMSUB_BASE_URL: {error}")))?,
        );
        let metrics = Metrics::new();
        let circuit = client.clone();
        let client = Arc::new(
            MeteredProvider::new(client, metrics.clone())
                .with_circuit(move || circuit.circuit_state() != CircuitState::Closed),
        );

        let simulator = match provider.mode {
            ProviderMode::Simulator => {
                let mut sim_config = SimulatorConfig::new(
                    provider.app_token.clone(),
                    provider.secret_key.clone(),
                    provider.base_url.clone(),
                );
                sim_config.webhook = provider.webhook_secret.clone().map(|secret| WebhookTarget {
                    url: public_url.join(PROVIDER_WEBHOOK_PATH),
                    secret,
                    algorithm: DigestAlgorithm::Sha256,
                });
                Some(Simulator::new(sim_config))
            }
            ProviderMode::Sumsub => None,
        };

        let ledger = match config.failpoint {
            Some(failpoint) => {
                tracing::warn!(
                    failpoint = failpoint.name(),
                    "KYC_FAILPOINT is set: every Start Verification stops there; this process is for tests only"
                );
                Arc::new(FailpointLedger::new(stores.ledger.clone(), failpoint))
                    as Arc<dyn CreditsLedger>
            }
            None => stores.ledger.clone(),
        };
        let clock = Arc::new(SystemClock);
        let ids = Arc::new(ServerIds::new(link_secret.expose_secret().as_bytes()));
        let access = stores.access(ids.clone());
        let webhooks = stores.webhooks(ids.clone(), config.webhook_secret_overlap());
        let service = KycService::new(
            Ports {
                customers: stores.customers.clone(),
                ledger,
                provider: client.clone(),
                screening: client,
                clock: clock.clone(),
                ids,
            },
            Settings {
                verification_cost: config.verification_cost(),
                levels: config.levels(),
                stuck_after: config.stuck_after(),
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
        match link_secret_source {
            LinkSecretSource::Configured => {}
            LinkSecretSource::DerivedFromSumsubSecret => tracing::info!(
                "KYC_LINK_SECRET is not set: verification links are keyed by a secret derived from SUMSUB_SECRET_KEY"
            ),
            LinkSecretSource::Generated => tracing::warn!(
                "KYC_LINK_SECRET is not set: a random one was generated for this process, so links shown after a restart differ from earlier ones; set it in production"
            ),
        }
        if matches!(provider.mode, ProviderMode::Simulator)
            && config.sumsub_base_url != kyc_sumsub::client::DEFAULT_BASE_URL
        {
            tracing::warn!("the simulator is on: SUMSUB_BASE_URL is ignored");
        }
        if matches!(provider.mode, ProviderMode::Sumsub) && provider.webhook_secret.is_none() {
            tracing::warn!("SUMSUB_WEBHOOK_SECRET is not set: provider webhooks will be refused");
        }
        Ok(Self {
            backend,
            stores,
            service,
            access,
            provider,
            simulator,
            clock,
            metrics,
            recovery_interval: config.recovery_interval(),
            webhooks,
            push: config.push_settings(),
        })
    }

    /// The whole HTTP app: the adapter's router (CRM API, back office, provider webhook,
    /// verification links, operations), with the simulator nested at `/sim/sumsub` when it is on.
    pub fn router(&self, config: &Config, public_url: &PublicUrl) -> Router {
        let ports = HttpPorts {
            service: self.service.clone(),
            api_keys: self.stores.api_keys.clone(),
            idempotency: self.stores.idempotency.clone(),
            clock: self.clock.clone(),
            readiness: Arc::new(DatabaseReadiness(self.backend.clone())),
            webhooks: self.webhooks.clone(),
            // Replicas on one PostgreSQL database count into the same windows; the embedded
            // SQLite file has one server, which counts in memory.
            limits: self
                .stores
                .postgres
                .clone()
                .map(|store| Arc::new(store) as Arc<dyn kyc_domain::ports::RequestLimits>),
        };
        let http_config = HttpConfig {
            rate_limit_per_minute: config.rate_limit_per_minute,
            rate_limit_per_day: config.rate_limit_per_day,
            key_failures_per_address: config.key_failures_per_address,
            public_url: public_url.as_str().to_owned(),
            ..HttpConfig::default()
        };
        let back_office =
            BackOfficePorts {
                users: self.stores.users.clone(),
                sessions: self.stores.sessions.clone(),
                audit: self.stores.audit.clone(),
                access: self.access.clone(),
                // With the simulator on this is the secret it signs with; without a secret, provider
                // webhooks answer 503 and Sumsub keeps them for later.
                webhooks: self.provider.webhook_secret.clone().map(|secret| {
                    Arc::new(SumsubWebhooks::new(secret)) as Arc<dyn ProviderWebhooks>
                }),
                // As the request windows: shared on PostgreSQL, in memory on SQLite.
                login_failures: self
                    .stores
                    .postgres
                    .clone()
                    .map(|store| Arc::new(store) as Arc<dyn kyc_domain::ports::LoginFailures>),
            };
        let router =
            kyc_http::router_with(ports, Some(back_office), http_config, self.metrics.clone());
        match &self.simulator {
            Some(simulator) => router.nest(SIMULATOR_MOUNT, simulator.router()),
            None => router,
        }
    }
}

impl Composition {
    /// Starts every background worker on its own task, each stopping when `shutdown` fires
    /// (after finishing the pass it is in): recovery of interrupted starts, outbox delivery,
    /// re-screening, and the idempotency purge. Returns them by name, to be awaited on shutdown.
    pub fn spawn_workers(
        &self,
        shutdown: &CancellationToken,
    ) -> Vec<(&'static str, JoinHandle<()>)> {
        let outbox = OutboxWorker::new(
            self.service.clone(),
            self.stores.outbox.clone(),
            self.metrics.clone(),
        );
        let mut workers = vec![
            (
                "recovery",
                tokio::spawn(recovery_worker(
                    self.service.clone(),
                    self.recovery_interval,
                    shutdown.child_token(),
                )),
            ),
            (
                "outbox",
                tokio::spawn(outbox_worker(outbox, shutdown.child_token())),
            ),
            (
                "re-screening",
                tokio::spawn(rescreening_worker(
                    self.service.clone(),
                    self.stores.customers.clone(),
                    shutdown.child_token(),
                )),
            ),
            (
                "idempotency purge",
                tokio::spawn(idempotency_purge_worker(
                    self.stores.idempotency.clone(),
                    self.clock.clone(),
                    shutdown.child_token(),
                )),
            ),
        ];
        if self.push.concurrency == 0 {
            tracing::info!("KYC_WEBHOOK_CONCURRENCY is 0: this process delivers no webhooks");
        } else {
            match PushWorker::new(
                self.stores.queue.clone(),
                self.clock.clone(),
                self.push.clone(),
                self.metrics.clone(),
            ) {
                Ok(push) => workers.push((
                    "webhook delivery",
                    tokio::spawn(push.run(shutdown.child_token())),
                )),
                Err(error) => {
                    tracing::error!(error = %error, "cannot build the webhook client: webhooks are not delivered");
                }
            }
        }
        if let Some(store) = &self.stores.postgres {
            workers.push((
                "API key changes",
                tokio::spawn(key_change_listener(store.clone(), shutdown.child_token())),
            ));
        }
        workers
    }
}

/// The first pause before listening again after the listener for API key changes failed; it
/// doubles on each failure in a row, up to [`KEY_LISTENER_MAX_PAUSE`].
const KEY_LISTENER_FIRST_PAUSE: Duration = Duration::from_millis(200);
const KEY_LISTENER_MAX_PAUSE: Duration = Duration::from_secs(10);
/// A session that lasted this long was healthy: the next failure starts the pauses over.
const KEY_LISTENER_HEALTHY: Duration = Duration::from_secs(60);

/// Keeps the PostgreSQL store listening for API key changes until `shutdown` fires, so that keys
/// are served from memory; while it is not listening (the database unreachable, the connection
/// lost) every key is read from the database, and it tries again after a pause.
async fn key_change_listener(store: kyc_postgres::PostgresStore, shutdown: CancellationToken) {
    let mut pause = KEY_LISTENER_FIRST_PAUSE;
    loop {
        let started = tokio::time::Instant::now();
        match store.listen_for_key_changes(shutdown.cancelled()).await {
            Ok(()) => break,
            Err(error) => {
                if started.elapsed() >= KEY_LISTENER_HEALTHY {
                    pause = KEY_LISTENER_FIRST_PAUSE;
                }
                tracing::warn!(
                    error = ?error,
                    retry_in_ms = pause.as_millis(),
                    "not listening for API key changes: keys are read from the database until it listens again"
                );
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(KEY_LISTENER_MAX_PAUSE);
    }
    tracing::info!("API key change listener stopped");
}

/// `/readyz` for this process: the database answers and every migration this build knows has
/// been applied.
struct DatabaseReadiness(Backend);

#[async_trait]
impl Readiness for DatabaseReadiness {
    async fn check(&self) -> Result<(), String> {
        self.0.check_ready().await
    }
}

/// Runs the recovery worker until `shutdown` fires, a pass every `interval` (`KYC_RECOVERY_INTERVAL_SECS`,
/// 30 s by default). A pass that has started always finishes: the token is only looked at between
/// passes.
pub async fn recovery_worker(service: KycService, interval: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
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

/// Serves until SIGTERM or SIGINT, then shuts down gracefully.
///
/// # Errors
/// A configuration, database or bind failure, as one line.
pub async fn serve(config: Config, migrate: bool) -> Result<(), Failure> {
    run_server(config, migrate, false).await
}

/// `demo`: serves with the simulator on (whatever the configuration says), after seeding a demo
/// firm with credits, a compliance officer and an API key, and printing them with the URLs.
///
/// # Errors
/// As [`serve`].
pub async fn demo(mut config: Config) -> Result<(), Failure> {
    config.simulator = Some(true);
    run_server(config, true, true).await
}

async fn run_server(config: Config, migrate: bool, seed_demo: bool) -> Result<(), Failure> {
    // Settings first, so a missing one is reported before anything is opened.
    config.check_serve()?;
    let listener = TcpListener::bind(config.bind).await.map_err(|error| {
        Failure::new(format!(
            "KYC_BIND: cannot listen on {}: {error}",
            config.bind
        ))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|error| Failure::new(format!("KYC_BIND: {error}")))?;
    let public_url = config.public_url(bound);
    let composition = Composition::build(&config, &public_url, migrate).await?;
    let app = composition.router(&config, &public_url);
    if seed_demo {
        let seed = crate::commands::seed_demo(&composition.stores, &composition.access).await?;
        print_demo(&seed, &public_url, config.verification_cost_credits);
    }

    let shutdown = CancellationToken::new();
    let workers = composition.spawn_workers(&shutdown);
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });

    tracing::info!(address = %bound, public_url = %public_url.as_str(), "listening");
    if composition.simulator.is_some() {
        tracing::info!(
            simulator = %public_url.join(SIMULATOR_MOUNT),
            "provider simulator mounted"
        );
    }
    // The peer address feeds the back office's per-address login limit.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    // Once the signal has come, in-flight requests get DRAIN_TIMEOUT to finish.
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    let served = tokio::select! {
        result = server => result.map_err(|error| Failure::new(format!("the server stopped: {error}"))),
        () = deadline => {
            tracing::warn!("requests still running after the drain timeout were cut off");
            Ok(())
        }
    };
    // The server may also stop on its own (an accept error): stop the worker either way.
    shutdown.cancel();
    for (name, worker) in workers {
        if worker.await.is_err() {
            tracing::error!(worker = name, "a background worker panicked");
        }
    }
    if let Some(simulator) = &composition.simulator {
        simulator.shutdown();
    }
    composition.backend.close().await;
    tracing::info!("stopped");
    served
}

/// What a person needs to try the demo, on stdout: the logins and URLs, then the tour of the
/// lifecycle as shell commands to paste, from a CRM pushing a customer in to AML `CLEAR`. Each run
/// uses a fresh external id and email, so the tour also works on a demo database reused from an
/// earlier run.
fn print_demo(seed: &crate::commands::DemoSeed, public_url: &PublicUrl, cost_credits: u64) {
    use crate::commands::{DEMO_EMAIL, DEMO_PASSWORD};
    let key = seed.api_key.expose_secret();
    let run = &Uuid::now_v7().simple().to_string()[24..];
    println!(
        "KYC demo is running (simulated Sumsub; press Ctrl-C to stop).\n\
         \n  Firm           {firm} ({credits})\
         \n  API key        {key}\
         \n  Back office    {backoffice}  login {DEMO_EMAIL} / {DEMO_PASSWORD} (compliance officer)\
         \n  CRM API        {api}\
         \n  OpenAPI        {openapi}\
         \n  Simulator      {sim}\
         \n  Metrics        {metrics}\
         \n\nWalk a customer through the lifecycle in the browser: push one in with step 1 below (or\
         \npress Add a customer), log in at {backoffice}, answer the risk questions, Start\
         \nVerification, open the link it shows in the same browser and press Approve; the README\
         \nwalks through every page.\
         \n\nOr with curl only: paste each step into a shell.\n\
         \n  # 1. The firm's CRM pushes a customer in. This never starts KYC and never charges.\
         \n  KYC={base}\
         \n  KEY={key}\
         \n  ID=$(curl -s -X POST \"$KYC/api/v1/customers\" -H \"Authorization: Bearer $KEY\" \\\
         \n    -H 'Content-Type: application/json' \\\
         \n    -d '{{\"externalId\":\"crm-{run}\",\"fullName\":\"Jane Doe\",\"email\":\"jane.{run}@example.com\"}}' \\\
         \n    | grep -o '\"id\":\"[^\"]*\"' | head -n 1 | cut -d'\"' -f4); echo \"customer $ID\"\
         \n\
         \n  # 2. A person logs in to the back office: a session cookie and a CSRF token.\
         \n  CSRF=$(curl -s -c kyc-demo.cookies -X POST \"$KYC/api/backoffice/session\" \\\
         \n    -H 'Content-Type: application/json' \\\
         \n    -d '{{\"email\":\"{DEMO_EMAIL}\",\"password\":\"{DEMO_PASSWORD}\"}}' \\\
         \n    | grep -o '\"csrf_token\":\"[^\"]*\"' | cut -d'\"' -f4)\
         \n\
         \n  # 3. They confirm the risk answers, see the price, and start verification: the one\
         \n  #    billable step, which only a person can take.\
         \n  curl -s -b kyc-demo.cookies -X PUT \"$KYC/api/backoffice/customers/$ID/risk\" \\\
         \n    -H \"X-CSRF-Token: $CSRF\" -H 'Content-Type: application/json' \\\
         \n    -d '{{\"is_designated_service\":true,\"handles_cash_or_crypto\":false,\"is_new_customer\":true}}' >/dev/null\
         \n  curl -s -b kyc-demo.cookies \"$KYC/api/backoffice/customers/$ID/verification/quote\"; echo\
         \n  URL=$(curl -s -b kyc-demo.cookies -X POST \"$KYC/api/backoffice/customers/$ID/verification\" \\\
         \n    -H \"X-CSRF-Token: $CSRF\" -H 'Idempotency-Key: demo-start-{run}' \\\
         \n    -H 'Content-Type: application/json' -d '{{\"confirm_cost_credits\":{cost_credits}}}' \\\
         \n    | grep -o '\"verification_url\":\"[^\"]*\"' | cut -d'\"' -f4); echo \"link $URL\"\
         \n\
         \n  # 4. The customer opens the link: IN_PROGRESS, then a redirect to the provider's hosted\
         \n  #    page (the simulator's). Open $URL in a browser and press Approve, or from the shell:\
         \n  PAGE=$(curl -s -o /dev/null -w '%{{redirect_url}}' \"$URL\")\
         \n  curl -s -X POST \"$PAGE/approve\" -d action=approve >/dev/null\
         \n\
         \n  # 5. The CRM reads the result: VERIFIED, and AML CLEAR once screening has run (a second).\
         \n  sleep 2; curl -s \"$KYC/api/v1/customers/$ID\" -H \"Authorization: Bearer $KEY\"; echo\
         \n  curl -s -b kyc-demo.cookies \"$KYC/api/backoffice/credits\"; echo\
         \n",
        firm = seed.firm,
        credits = seed.available_credits,
        base = public_url.as_str(),
        backoffice = public_url.join("/app"),
        api = public_url.join("/api/v1"),
        openapi = public_url.join("/api/v1/openapi.json"),
        sim = public_url.join(SIMULATOR_MOUNT),
        metrics = public_url.join("/metrics"),
    );
}
