//! `kyc-bench soak`: a long run of two replicas on one PostgreSQL database under a steady CRM
//! load, bursts of provider webhooks and Start Verification clicked on both replicas at once,
//! with the shared rate limits on. It samples each replica's memory every minute and ends with
//! the checks an operator cares about after a day of traffic: no unexpected answer, every
//! charge posted once and only with an applicant, no hold left, the credits adding up, every
//! webhook message delivered, and the memory flat.
//!
//! The provider is a third `kyc-server` process with the simulator on, on a SQLite file of its
//! own: both replicas talk to it as they would to Sumsub (same credentials, signed requests), so
//! they share one provider, as in production, and neither carries the simulator's state (it
//! keeps every applicant in memory), which would blur their memory figures.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use tokio::sync::Mutex;

use crate::database::{Backend, RunDatabase};
use crate::load::{Outcome, PhaseLimits, PhaseResult, run_phase};
use crate::processes::{KycServer, Memory, WEBHOOK_SECRET};
use crate::receiver::Receiver;
use crate::scenarios::{self, ListWalk, Target, Upserts, WebhookSupply, WebhookWorker};
use crate::seed::{SeedPlan, seed};

/// The provider credentials both replicas share (the simulator checks them).
const APP_TOKEN: &str = "kyc-soak-app-token";
const SECRET_KEY: &str = "kyc-soak-secret-key";
const OFFICER_PASSWORD: &str = "soak-officer-password";
/// Credits granted to each firm: far more than a run can spend, so no start is refused for money.
const GRANTED_CREDITS: i64 = 1_000_000;
/// Growth of resident memory from the first quarter of the run to the last that still counts as
/// flat.
const FLAT_MEMORY: f64 = 1.10;

/// What `kyc-bench soak` takes.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Any database on the PostgreSQL server; a fresh `kyc_bench_<random>` is created beside it
    /// and dropped at the end.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The `kyc-server` binary (default: the one beside this executable).
    #[arg(long)]
    server_bin: Option<std::path::PathBuf>,
    /// Length of the run, in minutes.
    #[arg(long, default_value_t = 25)]
    minutes: u64,
    /// Customers to seed, spread over the firms.
    #[arg(long, default_value_t = 20_000)]
    customers: usize,
    /// Firms (each with an API key, a back-office officer and a webhook endpoint).
    #[arg(long, default_value_t = 2)]
    firms: usize,
    /// Seeded open attempts the webhook bursts are sent for (two events each).
    #[arg(long, default_value_t = 15_000)]
    attempts: usize,
    /// CRM requests in flight (reads, list pages, upserts), spread over both replicas.
    #[arg(long, default_value_t = 6)]
    concurrency: usize,
    /// Seconds between webhook bursts.
    #[arg(long, default_value_t = 30)]
    burst_every_secs: u64,
    /// Provider webhooks in one burst, half to each replica.
    #[arg(long, default_value_t = 400)]
    burst_events: u64,
}

/// A minute's memory sample: the minute, then replica A's and B's memory.
type Sample = (u64, Memory, Memory);

/// Everything the run counted.
#[derive(Default)]
struct Counts {
    crm: Vec<(u64, PhaseResult)>,
    bursts: Vec<PhaseResult>,
    starts: Starts,
    memory: Vec<Sample>,
}

#[derive(Debug, Default, Clone)]
struct Starts {
    customers: u64,
    clicks: u64,
    ok: u64,
    conflicts: u64,
    errors: u64,
    samples: Vec<String>,
    started: Vec<String>,
}

impl Starts {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.samples.len() < 5 {
            self.samples.push(what);
        }
    }
}

/// Runs the soak and prints its report; an error when a check fails.
///
/// # Errors
/// The setup failed, or a check did.
pub async fn run(args: SoakArgs) -> Result<(), String> {
    let server_bin = args
        .server_bin
        .clone()
        .unwrap_or_else(crate::processes::default_server_binary);
    if !server_bin.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p kyc-server` or pass --server-bin",
            server_bin.display()
        ));
    }
    if args.firms == 0 || args.customers < args.firms * 2 || args.concurrency == 0 {
        return Err("need at least one firm, two customers per firm and one worker".into());
    }
    let database = RunDatabase::create(Backend::Postgres, Some(&args.database_url)).await?;
    let outcome = soak(&args, &server_bin, &database).await;
    database.drop_database().await;
    outcome
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn soak(args: &SoakArgs, server_bin: &Path, database: &RunDatabase) -> Result<(), String> {
    let provider_dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let provider_db = format!(
        "sqlite://{}",
        provider_dir.path().join("provider.db").display()
    );
    let provider = KycServer::new(server_bin, &provider_db)?;
    let a = KycServer::new(server_bin, &database.url)?;
    let b = KycServer::new(server_bin, &database.url)?;
    a.cli(&["migrate"])?;
    let mut firm_ids = Vec::new();
    let mut keys = Vec::new();
    let mut officers = Vec::new();
    for n in 0..args.firms {
        let firm = a.cli(&["firm", "create", "--name", &format!("Soak Firm {n}")])?;
        keys.push(a.cli(&[
            "api-key",
            "create",
            "--firm",
            &firm,
            "--label",
            "kyc-soak",
            "--scopes",
            "customers:read,customers:write",
        ])?);
        a.cli(&[
            "credits",
            "grant",
            "--firm",
            &firm,
            "--credits",
            &GRANTED_CREDITS.to_string(),
            "--reference",
            "soak",
        ])?;
        let email = format!("officer{n}@soak.example");
        a.cli_with_input(
            &[
                "user",
                "create",
                "--firm",
                &firm,
                "--email",
                &email,
                "--role",
                "compliance_officer",
                "--password-stdin",
            ],
            OFFICER_PASSWORD,
        )?;
        officers.push(email);
        firm_ids.push(kyc_domain::ids::FirmId::parse(&firm).map_err(|e| e.to_string())?);
    }
    let seeded = seed(
        database.customers().await?,
        &SeedPlan {
            firm_ids: firm_ids.clone(),
            customers: args.customers,
            attempts: args.attempts,
            concurrency: 8,
        },
    )
    .await?;
    database.analyze().await?;
    let receiver = Receiver::start().await?;
    receiver.subscribe(&a, &firm_ids)?;

    // The shared windows are written on every request, as in production, with ceilings no run
    // reaches.
    let common = [
        ("KYC_RATE_LIMIT_PER_MINUTE", "100000000"),
        ("KYC_RATE_LIMIT_PER_DAY", "100000000"),
        ("SUMSUB_APP_TOKEN", APP_TOKEN),
        ("SUMSUB_SECRET_KEY", SECRET_KEY),
        ("SUMSUB_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ];
    let simulated = provider
        .serve(&env(&[
            ("KYC_SIMULATOR", "on"),
            ("SUMSUB_APP_TOKEN", APP_TOKEN),
            ("SUMSUB_SECRET_KEY", SECRET_KEY),
            ("SUMSUB_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ]))
        .await?;
    let simulator = format!("{}/sim/sumsub", provider.base_url());
    let mut replica_env = common.to_vec();
    replica_env.extend([
        ("KYC_SIMULATOR", "off"),
        ("SUMSUB_BASE_URL", simulator.as_str()),
    ]);
    let replica_a = a.serve(&env(&replica_env)).await?;
    let replica_b = b.serve(&env(&replica_env)).await?;
    let replicas = [&replica_a, &replica_b];

    let client = Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let targets: Vec<Arc<Target>> = replicas
        .iter()
        .map(|replica| {
            Arc::new(Target {
                client: client.clone(),
                base_url: replica.base_url.clone(),
                keys: keys.clone(),
                firms: seeded.firms.clone(),
                firm_ids: firm_ids.iter().map(ToString::to_string).collect(),
            })
        })
        .collect();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&database.url)
        .await
        .map_err(|e| format!("connect to the run's database: {e}"))?;

    eprintln!(
        "soak: {} minutes, replicas {} and {}",
        args.minutes, replica_a.base_url, replica_b.base_url
    );
    let stop = Arc::new(AtomicBool::new(false));
    let starts = Arc::new(Mutex::new(Starts::default()));
    let mut officer_tasks = Vec::new();
    for (firm, email) in officers.iter().enumerate() {
        let officer = Officer::log_in(&client, &targets, email, &keys[firm]).await?;
        officer_tasks.push(tokio::spawn(officer.click_start_in_a_loop(
            targets.clone(),
            pool.clone(),
            stop.clone(),
            starts.clone(),
            firm,
        )));
    }
    let supply = Arc::new(WebhookSupply::new(seeded.attempts.clone()));
    let bursts = tokio::spawn(burst_in_a_loop(
        targets.clone(),
        supply.clone(),
        stop.clone(),
        Duration::from_secs(args.burst_every_secs),
        args.burst_events,
    ));

    let mut counts = Counts::default();
    let started = Instant::now();
    for minute in 1..=args.minutes {
        let result = run_phase(
            PhaseLimits {
                concurrency: args.concurrency,
                duration: Duration::from_secs(60),
                max_requests: u64::MAX,
            },
            |worker| Mixed::new(worker, minute),
            {
                let targets = targets.clone();
                move |mixed| mixed_request(targets.clone(), mixed)
            },
        )
        .await;
        let memory = (replica_a.memory(), replica_b.memory());
        eprintln!(
            "  minute {minute}: {:.0} CRM requests/s, {} unexpected; RSS A {} MiB, B {} MiB",
            result.throughput(),
            result.errors,
            memory.0.current_kib / 1024,
            memory.1.current_kib / 1024
        );
        counts.crm.push((minute, result));
        counts.memory.push((minute, memory.0, memory.1));
    }
    stop.store(true, Ordering::Relaxed);
    for task in officer_tasks {
        task.await
            .map_err(|e| format!("an officer's task failed: {e}"))?;
    }
    counts.bursts = bursts
        .await
        .map_err(|e| format!("the webhook bursts failed: {e}"))?;
    counts.starts = starts.lock().await.clone();
    let load_time = started.elapsed();

    eprintln!("  settling: the outbox and the webhook messages");
    let settled = settle(&pool, Duration::from_secs(300)).await?;
    let checks = Checks::gather(&pool, &counts, &receiver, settled, args.firms).await?;
    print_report(args, &counts, &checks, load_time);
    drop(replica_b);
    drop(replica_a);
    drop(simulated);
    pool.close().await;
    if checks.all_met() {
        Ok(())
    } else {
        Err("a soak check was missed (see the report)".into())
    }
}

/// A CRM worker's state across the kinds of request it sends.
struct Mixed {
    worker: usize,
    sent: u64,
    walk: Option<ListWalk>,
    upserts: Option<Upserts>,
}

impl Mixed {
    fn new(worker: usize, minute: u64) -> Self {
        Self {
            worker,
            sent: 0,
            walk: Some(ListWalk::new(worker)),
            // New external ids of each minute never meet another minute's.
            upserts: Some(Upserts::starting_at(worker, minute << 40)),
        }
    }
}

/// The next CRM request of a worker, to each replica in turn: half reads, a fifth list pages,
/// the rest upserts (renames and new customers).
async fn mixed_request(targets: Vec<Arc<Target>>, mut mixed: Mixed) -> (Mixed, Outcome) {
    let sent = mixed.sent;
    mixed.sent += 1;
    let target = targets[(mixed.worker + sent as usize) % targets.len()].clone();
    let outcome = match sent % 10 {
        0..=4 => scenarios::api_read(target, mixed.worker).await.1,
        5 | 6 => {
            let walk = mixed
                .walk
                .take()
                .unwrap_or_else(|| ListWalk::new(mixed.worker));
            let (walk, outcome) = scenarios::api_list(target, walk).await;
            mixed.walk = Some(walk);
            outcome
        }
        _ => {
            let upserts = mixed
                .upserts
                .take()
                .unwrap_or_else(|| Upserts::new(mixed.worker));
            let (upserts, outcome) = scenarios::api_upsert(target, upserts).await;
            mixed.upserts = Some(upserts);
            outcome
        }
    };
    (mixed, outcome)
}

/// Every `every`, `events` provider webhooks at once, half to each replica, until `stop`.
async fn burst_in_a_loop(
    targets: Vec<Arc<Target>>,
    supply: Arc<WebhookSupply>,
    stop: Arc<AtomicBool>,
    every: Duration,
    events: u64,
) -> Vec<PhaseResult> {
    let mut results = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let halves = targets.iter().map(|target| {
            let (target, supply) = (target.clone(), supply.clone());
            run_phase(
                PhaseLimits {
                    concurrency: 8,
                    duration: every,
                    max_requests: events / 2,
                },
                |_| WebhookWorker::default(),
                move |worker| scenarios::webhook(target.clone(), supply.clone(), worker),
            )
        });
        let started = Instant::now();
        results.extend(futures::future::join_all(halves).await);
        let rest = every.saturating_sub(started.elapsed());
        let deadline = Instant::now() + rest;
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    results
}

/// A firm's compliance officer, logged in once; the session is shared by both replicas.
struct Officer {
    client: Client,
    key: String,
    cookie: String,
    csrf: String,
}

impl Officer {
    async fn log_in(
        client: &Client,
        targets: &[Arc<Target>],
        email: &str,
        key: &str,
    ) -> Result<Self, String> {
        let response = client
            .post(format!("{}/api/backoffice/session", targets[0].base_url))
            .json(&json!({"email": email, "password": OFFICER_PASSWORD}))
            .send()
            .await
            .map_err(|e| format!("log in: {e}"))?;
        if response.status() != StatusCode::OK {
            return Err(format!("log in: {}", response.status()));
        }
        let cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find(|value| value.starts_with("kyc_session="))
            .and_then(|value| value.split(';').next())
            .ok_or("log in: no session cookie")?
            .to_owned();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        let csrf = body["csrf_token"]
            .as_str()
            .ok_or("log in: no csrf_token")?
            .to_owned();
        Ok(Self {
            client: client.clone(),
            key: key.to_owned(),
            cookie,
            csrf,
        })
    }

    fn office(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf)
    }

    /// Until `stop`: a new customer from the CRM on one replica, its risk confirmed on the
    /// other, then Start Verification clicked on both replicas at once (two officers, two
    /// idempotency keys), then the provider's verdict for the applicant that was created.
    async fn click_start_in_a_loop(
        self,
        targets: Vec<Arc<Target>>,
        pool: PgPool,
        stop: Arc<AtomicBool>,
        starts: Arc<Mutex<Starts>>,
        firm: usize,
    ) {
        let run = std::process::id();
        let clock = AtomicU64::new(0);
        let mut n = 0_u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let (first, second) = (&targets[(n % 2) as usize], &targets[((n + 1) % 2) as usize]);
            let outcome = self
                .start_one(
                    first,
                    second,
                    &pool,
                    &clock,
                    &format!("soak-{run}-{firm}-{n}"),
                )
                .await;
            let mut starts = starts.lock().await;
            starts.customers += 1;
            match outcome {
                Ok(Started {
                    customer,
                    ok,
                    conflicts,
                }) => {
                    starts.clicks += 2;
                    starts.ok += ok;
                    starts.conflicts += conflicts;
                    starts.started.push(customer);
                }
                Err(what) => starts.error(what),
            }
            drop(starts);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn start_one(
        &self,
        first: &Target,
        second: &Target,
        pool: &PgPool,
        clock: &AtomicU64,
        external_id: &str,
    ) -> Result<Started, String> {
        let response = self
            .client
            .post(format!("{}/api/v1/customers", first.base_url))
            .bearer_auth(&self.key)
            .json(&json!({
                "externalId": external_id,
                "fullName": "Soak Customer",
                "email": format!("{external_id}@soak.example"),
            }))
            .send()
            .await
            .map_err(|e| format!("ingest: {e}"))?;
        if response.status() != StatusCode::CREATED {
            return Err(format!("ingest: {}", response.status()));
        }
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        let id = body["id"].as_str().ok_or("ingest: no id")?.to_owned();
        let risk = self
            .office(
                self.client
                    .put(format!(
                        "{}/api/backoffice/customers/{id}/risk",
                        second.base_url
                    ))
                    .json(&json!({
                        "is_designated_service": true,
                        "handles_cash_or_crypto": false,
                        "is_new_customer": true,
                    })),
            )
            .send()
            .await
            .map_err(|e| format!("risk: {e}"))?;
        if risk.status() != StatusCode::OK {
            return Err(format!("risk: {}", risk.status()));
        }
        let click = |target: &Target, key: String| {
            self.office(
                self.client
                    .post(format!(
                        "{}/api/backoffice/customers/{id}/verification",
                        target.base_url
                    ))
                    .header("idempotency-key", key)
                    .json(&json!({"confirm_cost_credits": 1})),
            )
            .send()
        };
        let (one, two) = tokio::join!(
            click(first, uuid::Uuid::new_v4().to_string()),
            click(second, uuid::Uuid::new_v4().to_string())
        );
        let (mut ok, mut conflicts) = (0, 0);
        for answer in [one, two] {
            let answer = answer.map_err(|e| format!("start: {e}"))?;
            match answer.status() {
                StatusCode::OK => ok += 1,
                StatusCode::CONFLICT => conflicts += 1,
                other => {
                    let body = answer.text().await.unwrap_or_default();
                    return Err(format!("start: {other} {body}"));
                }
            }
        }
        if ok == 0 {
            return Err("start: neither click started the verification".into());
        }
        // The provider's verdict for the applicant the start created, to the other replica.
        let row = sqlx::query(
            "SELECT applicant_id, external_user_id FROM verification_attempts \
             WHERE customer_id = $1::uuid AND phase = 'open'",
        )
        .bind(&id)
        .fetch_one(pool)
        .await
        .map_err(|e| format!("the started attempt: {e}"))?;
        let applicant: String = row.get(0);
        let external_user_id: String = row.get(1);
        for (kind, status, result) in [
            ("applicantPending", "pending", None),
            (
                "applicantReviewed",
                "completed",
                Some(json!({"reviewAnswer": "GREEN"})),
            ),
        ] {
            let mut event = json!({
                "type": kind,
                "applicantId": applicant,
                "inspectionId": applicant,
                "correlationId": format!("{external_id}-{kind}"),
                "externalUserId": external_user_id,
                "levelName": "basic-kyc-level",
                "sandboxMode": false,
                "reviewStatus": status,
                "createdAtMs": created_at_ms(clock),
                "clientId": "kyc-soak",
            });
            if let Some(result) = result {
                event["reviewResult"] = result;
            }
            let body = event.to_string();
            let response = self
                .client
                .post(format!("{}/webhooks/sumsub", second.base_url))
                .header("X-Payload-Digest-Alg", "HMAC_SHA256_HEX")
                .header("X-Payload-Digest", scenarios::sign(body.as_bytes()))
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("verdict: {e}"))?;
            if response.status() != StatusCode::OK {
                return Err(format!("verdict: {}", response.status()));
            }
        }
        Ok(Started {
            customer: id,
            ok,
            conflicts,
        })
    }
}

struct Started {
    customer: String,
    ok: u64,
    conflicts: u64,
}

/// Sumsub's `createdAtMs` format, a millisecond later each call, so every verdict is newer than
/// the pending event before it.
fn created_at_ms(clock: &AtomicU64) -> String {
    kyc_sumsub::webhook::format_created_at_ms(
        time::OffsetDateTime::now_utc()
            + time::Duration::milliseconds(
                i64::try_from(clock.fetch_add(1, Ordering::Relaxed)).unwrap_or(0),
            ),
    )
}

/// Waits until the outbox and the webhook messages are done, up to `limit`; how long it took.
async fn settle(pool: &PgPool, limit: Duration) -> Result<Option<Duration>, String> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let pending: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL) \
             + (SELECT COUNT(*) FROM webhook_messages WHERE delivered_at IS NULL AND failed_at IS NULL)",
        )
        .fetch_one(pool)
        .await
        .map_err(|e| format!("count what is pending: {e}"))?;
        if pending == 0 {
            return Ok(Some(started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(None)
}

/// The end-of-run checks, read from the database and the receiver.
struct Checks {
    unexpected: u64,
    posts: i64,
    posted_twice: i64,
    posted_without_applicant: i64,
    started_customers: usize,
    held: i64,
    credits_add_up: bool,
    starting_left: i64,
    settled: Option<Duration>,
    messages: i64,
    failed_messages: i64,
    delivered_ids: usize,
    memory_growth: Vec<f64>,
}

impl Checks {
    async fn gather(
        pool: &PgPool,
        counts: &Counts,
        receiver: &Receiver,
        settled: Option<Duration>,
        firms: usize,
    ) -> Result<Self, String> {
        let scalar = |sql: &'static str| async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(pool)
                .await
                .map_err(|e| format!("{sql}: {e}"))
        };
        let posts = scalar("SELECT COUNT(*) FROM ledger_operations WHERE kind = 'post'").await?;
        let posted_twice = scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM ledger_operations WHERE kind = 'post' \
             GROUP BY customer_id, attempt HAVING COUNT(*) > 1) AS twice",
        )
        .await?;
        let posted_without_applicant = scalar(
            "SELECT COUNT(*) FROM ledger_operations o LEFT JOIN verification_attempts a \
             ON a.customer_id = o.customer_id AND a.number = o.attempt \
             WHERE o.kind = 'post' AND a.applicant_id IS NULL",
        )
        .await?;
        let held =
            scalar("SELECT COALESCE(SUM(held_credits), 0)::bigint FROM ledger_firms").await?;
        let balanced: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM ledger_firms WHERE available_credits + spent_credits <> $1",
        )
        .bind(GRANTED_CREDITS)
        .fetch_one(pool)
        .await
        .map_err(|e| format!("the balances: {e}"))?;
        let starting_left =
            scalar("SELECT COUNT(*) FROM verification_attempts WHERE phase = 'starting'").await?;
        let messages = scalar("SELECT COUNT(*) FROM webhook_messages").await?;
        let failed_messages =
            scalar("SELECT COUNT(*) FROM webhook_messages WHERE failed_at IS NOT NULL").await?;
        let firms_seen = scalar("SELECT COUNT(*) FROM ledger_firms").await?;
        let started: HashSet<&String> = counts.starts.started.iter().collect();
        let unexpected = counts.crm.iter().map(|(_, r)| r.errors).sum::<u64>()
            + counts.bursts.iter().map(|r| r.errors).sum::<u64>()
            + counts.starts.errors;
        Ok(Self {
            unexpected,
            posts,
            posted_twice,
            posted_without_applicant,
            started_customers: started.len(),
            held,
            credits_add_up: balanced == 0 && usize::try_from(firms_seen).ok() == Some(firms),
            starting_left,
            settled,
            messages,
            failed_messages,
            delivered_ids: receiver.distinct_all(),
            memory_growth: memory_growth(&counts.memory),
        })
    }

    fn rows(&self) -> Vec<(String, bool)> {
        let growth = self
            .memory_growth
            .iter()
            .map(|g| format!("{g:.3}"))
            .collect::<Vec<_>>()
            .join(" and ");
        vec![
            (
                format!("no unexpected answer ({})", self.unexpected),
                self.unexpected == 0,
            ),
            (
                format!(
                    "one charge per started verification ({} charges, {} customers started)",
                    self.posts, self.started_customers
                ),
                usize::try_from(self.posts).ok() == Some(self.started_customers),
            ),
            (
                format!("no attempt charged twice ({})", self.posted_twice),
                self.posted_twice == 0,
            ),
            (
                format!(
                    "no charge without an applicant ({})",
                    self.posted_without_applicant
                ),
                self.posted_without_applicant == 0,
            ),
            (
                format!("no credits left on hold ({})", self.held),
                self.held == 0,
            ),
            (
                "available + spent = granted, per firm".to_owned(),
                self.credits_add_up,
            ),
            (
                format!("no start left half-done ({})", self.starting_left),
                self.starting_left == 0,
            ),
            (
                match self.settled {
                    Some(after) => format!(
                        "outbox and webhook messages done ({:.1} s after the load)",
                        after.as_secs_f64()
                    ),
                    None => "outbox and webhook messages done (not within 300 s)".to_owned(),
                },
                self.settled.is_some(),
            ),
            (
                format!(
                    "every webhook message delivered once ({} messages, {} distinct ids received, {} given up)",
                    self.messages, self.delivered_ids, self.failed_messages
                ),
                self.failed_messages == 0
                    && usize::try_from(self.messages).ok() == Some(self.delivered_ids),
            ),
            (
                format!(
                    "resident memory flat: last quarter / first quarter {growth} (A and B; at most {FLAT_MEMORY})"
                ),
                !self.memory_growth.is_empty()
                    && self.memory_growth.iter().all(|g| *g <= FLAT_MEMORY),
            ),
        ]
    }

    fn all_met(&self) -> bool {
        self.rows().iter().all(|(_, met)| *met)
    }
}

/// Per replica, the mean resident memory of the last quarter of the samples over that of the
/// first quarter (after the first minute, which fills pools and caches). Empty with fewer than
/// two samples after the first minute.
fn memory_growth(samples: &[Sample]) -> Vec<f64> {
    let settled = samples.get(1..).unwrap_or_default();
    if settled.len() < 2 {
        return Vec::new();
    }
    let quarter = (settled.len() / 4).max(1);
    let (first, last) = (&settled[..quarter], &settled[settled.len() - quarter..]);
    let mean = |part: &[Sample], pick: fn(&Sample) -> u64| {
        part.iter().map(|s| pick(s) as f64).sum::<f64>() / part.len() as f64
    };
    let replicas: [fn(&Sample) -> u64; 2] = [|s| s.1.current_kib, |s| s.2.current_kib];
    replicas
        .into_iter()
        .map(|pick| mean(last, pick) / mean(first, pick).max(1.0))
        .collect()
}

fn print_report(args: &SoakArgs, counts: &Counts, checks: &Checks, load_time: Duration) {
    println!("# Soak: two replicas on one PostgreSQL database\n");
    println!(
        "{} minutes of load ({:.0} s measured); {} customers seeded in {} firms; {} CRM requests \
         in flight over both replicas; {} provider webhooks every {} s; Start Verification clicked \
         on both replicas at once, one customer after another per firm; shared rate limits on.\n",
        args.minutes,
        load_time.as_secs_f64(),
        args.customers,
        args.firms,
        args.concurrency,
        args.burst_events,
        args.burst_every_secs
    );
    println!("| Minute | CRM requests/s | p50 ms | p99 ms | unexpected | RSS A MiB | RSS B MiB |");
    println!("|---|---|---|---|---|---|---|");
    for ((minute, result), (_, a, b)) in counts.crm.iter().zip(&counts.memory) {
        println!(
            "| {minute} | {:.0} | {:.1} | {:.1} | {} | {} | {} |",
            result.throughput(),
            result.p50.as_secs_f64() * 1e3,
            result.p99.as_secs_f64() * 1e3,
            result.errors,
            a.current_kib / 1024,
            b.current_kib / 1024
        );
    }
    let webhooks: u64 = counts.bursts.iter().map(|r| r.ok).sum();
    let worst = counts
        .bursts
        .iter()
        .map(|r| r.p99)
        .max()
        .unwrap_or_default();
    println!(
        "\nProvider webhooks: {webhooks} recorded in {} half-bursts (worst p99 {:.1} ms).",
        counts.bursts.len(),
        worst.as_secs_f64() * 1e3
    );
    let s = &counts.starts;
    println!(
        "Start Verification: {} customers, {} clicks: {} answered 200, {} answered 409.",
        s.customers, s.clicks, s.ok, s.conflicts
    );
    if let (Some((_, a0, b0)), Some((_, a1, b1))) = (counts.memory.first(), counts.memory.last()) {
        println!(
            "Peak resident memory: A {} MiB, B {} MiB (first sample {} and {} MiB).",
            a1.peak_kib.max(a0.peak_kib) / 1024,
            b1.peak_kib.max(b0.peak_kib) / 1024,
            a0.current_kib / 1024,
            b0.current_kib / 1024
        );
    }
    let samples: Vec<&String> = counts
        .crm
        .iter()
        .flat_map(|(_, r)| &r.error_samples)
        .chain(counts.bursts.iter().flat_map(|r| &r.error_samples))
        .chain(&s.samples)
        .take(10)
        .collect();
    if !samples.is_empty() {
        println!("\nUnexpected answers (first few):\n");
        for sample in samples {
            println!("- {sample}");
        }
    }
    println!("\n| Check | |\n|---|---|");
    for (check, met) in checks.rows() {
        println!("| {check} | {} |", if met { "met" } else { "MISSED" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(minute: u64, a: u64, b: u64) -> Sample {
        let memory = |kib| Memory {
            peak_kib: kib,
            current_kib: kib,
        };
        (minute, memory(a), memory(b))
    }

    #[test]
    fn memory_growth_compares_the_last_quarter_with_the_first_after_warm_up() {
        // The first minute (warm-up) is left out: 10 → 100 is not growth.
        let samples: Vec<_> = std::iter::once(sample(1, 10, 10))
            .chain((2..=9).map(|m| sample(m, 100, 100 + m * 10)))
            .collect();
        let growth = memory_growth(&samples);
        assert_eq!(growth.len(), 2);
        assert!((growth[0] - 1.0).abs() < 1e-9, "{growth:?}");
        // B: first quarter (minutes 2, 3) 125 on average, last (8, 9) 185.
        assert!((growth[1] - 185.0 / 125.0).abs() < 1e-9, "{growth:?}");
        assert!(memory_growth(&samples[..2]).is_empty(), "too few samples");
    }
}
