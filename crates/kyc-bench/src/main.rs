//! `kyc-bench`: the load harness of the service.
//!
//! `kyc-bench run` makes a throw-away database (PostgreSQL from `DATABASE_URL`, and/or a temporary
//! SQLite file), creates firms and API keys with the real `kyc-server` CLI, seeds customers and
//! open verification attempts through the storage adapter, starts the real `kyc-server serve`
//! (release build, rate limits off) and this binary's bare axum + sqlx `baseline-server` on
//! loopback ports, and drives both with the same client at the same concurrency for a fixed
//! duration per phase; a baseline phase and the API's matching phase run in alternating slices. It prints per phase the throughput, p50/p99 latency, errors, the
//! ratio to the matching baseline phase and the server's peak memory, and checks the targets of
//! `docs/performance.md`. All traffic goes to 127.0.0.1; the database is dropped at the end.

mod baseline;
mod database;
mod load;
mod processes;
mod receiver;
mod report;
mod scenarios;
mod seed;
mod soak;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use kyc_domain::ids::FirmId;

use crate::database::{Backend, RunDatabase};
use crate::load::{PhaseLimits, PhaseResult, run_paired, run_phase};
use crate::processes::{KycServer, Running};
use crate::report::{BackendReport, Phase};
use crate::scenarios::{ListWalk, Target, Upserts, WebhookSupply, WebhookWorker};
use crate::seed::{SeedPlan, seed};

/// Load harness: the CRM API, list pages, upserts and provider webhooks of the real server,
/// measured beside a bare axum + sqlx baseline on the same database.
#[derive(Debug, Parser)]
#[command(name = "kyc-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Seed, start the server and the baseline, drive every phase, print the figures.
    Run(RunArgs),
    /// Two replicas on one PostgreSQL database for a long run (25 minutes unless told): a
    /// steady CRM load, provider webhook bursts and Start Verification clicked on both at once;
    /// checks that nothing failed, every charge was posted once, every webhook delivered and
    /// the memory stayed flat.
    Soak(soak::SoakArgs),
    /// The baseline server alone (started by `run`; useful to poke at by hand).
    BaselineServer {
        /// The database to read and insert into (it must hold the service's schema).
        #[arg(long)]
        database_url: String,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8090")]
        bind: SocketAddr,
        /// The firm whose customers are read and for which rows are inserted.
        #[arg(long)]
        firm: uuid::Uuid,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Backends to measure, in order. Default: postgres then sqlite when DATABASE_URL names a
    /// PostgreSQL server, else sqlite alone.
    #[arg(long, value_enum, value_delimiter = ',')]
    backend: Vec<Backend>,
    /// Any database on the PostgreSQL server; a fresh `kyc_bench_<random>` is created beside it
    /// and dropped at the end.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// The `kyc-server` binary (default: the one beside this executable).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Customers to seed, spread over the firms.
    #[arg(long, default_value_t = 100_000)]
    customers: usize,
    /// Firms (each gets its own API key).
    #[arg(long, default_value_t = 4)]
    firms: usize,
    /// Customers given an open verification attempt (two webhooks each).
    #[arg(long, default_value_t = 20_000)]
    attempts: usize,
    /// Requests in flight at once, in every phase, against the server and the baseline alike.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Slices each pair of phases (a baseline and the API's matching phase) is measured in,
    /// alternating between the two, so both meet the same conditions on the machine; each phase
    /// still runs `--duration-secs` in all.
    #[arg(long, default_value_t = 5)]
    rounds: u32,

    /// Length of each measured phase.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Upper bound of requests in one phase, whatever its length.
    #[arg(long, default_value_t = 200_000)]
    max_requests: u64,
    /// Changes queued while no replica delivers, then timed as they are delivered with no API
    /// load (the drain phase).
    #[arg(long, default_value_t = 20_000)]
    backlog: u64,
    /// Parallel writers while seeding (PostgreSQL; SQLite has one writer anyway).
    #[arg(long, default_value_t = 8)]
    seed_concurrency: usize,
    /// Extra `KEY=VALUE` environment for `kyc-server serve` (repeatable), e.g. a log level.
    #[arg(long = "server-env", value_parser = parse_key_value)]
    server_env: Vec<(String, String)>,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Two workers: the machine the targets are set for has two cores, shared with the server.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Soak(args) => soak::run(args).await,
            Command::BaselineServer {
                database_url,
                bind,
                firm,
            } => baseline::serve(&database_url, bind, firm).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    let backends = if args.backend.is_empty() {
        match &args.database_url {
            Some(url) if url.starts_with("postgres") => vec![Backend::Postgres, Backend::Sqlite],
            _ => vec![Backend::Sqlite],
        }
    } else {
        args.backend.clone()
    };
    if args.firms == 0 || args.customers < args.firms * 2 || args.concurrency == 0 {
        return Err("need at least one firm, two customers per firm and one worker".into());
    }
    let server_bin = args
        .server_bin
        .clone()
        .unwrap_or_else(processes::default_server_binary);
    if !server_bin.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p kyc-server` or pass --server-bin",
            server_bin.display()
        ));
    }
    let mut reports = Vec::new();
    for backend in backends {
        eprintln!("== {}", backend.name());
        let database = RunDatabase::create(backend, args.database_url.as_deref()).await?;
        let measured = measure(&args, &server_bin, &database).await;
        database.drop_database().await;
        reports.push(measured?);
    }
    report::print(&args_summary(&args), &reports);
    Ok(())
}

fn args_summary(args: &RunArgs) -> String {
    format!(
        "{} customers in {} firms, {} open attempts; {} requests in flight; {} s per phase, \
         each baseline interleaved with its API phase in {} rounds",
        args.customers,
        args.firms,
        args.attempts,
        args.concurrency,
        args.duration_secs,
        args.rounds
    )
}

async fn measure(
    args: &RunArgs,
    server_bin: &std::path::Path,
    database: &RunDatabase,
) -> Result<BackendReport, String> {
    let server = KycServer::new(server_bin, &database.url)?;
    server.cli(&["migrate"])?;
    let mut firm_ids = Vec::with_capacity(args.firms);
    let mut keys = Vec::with_capacity(args.firms);
    for n in 0..args.firms {
        let firm = server.cli(&["firm", "create", "--name", &format!("Bench Firm {n}")])?;
        keys.push(server.cli(&[
            "api-key",
            "create",
            "--firm",
            &firm,
            "--label",
            "kyc-bench",
            "--scopes",
            "customers:read,customers:write",
        ])?);
        firm_ids.push(FirmId::parse(&firm).map_err(|e| e.to_string())?);
    }
    let seeded = {
        let store = database.customers().await?;
        let concurrency = match database.backend {
            Backend::Postgres => args.seed_concurrency,
            Backend::Sqlite => 1,
        };
        seed(
            store,
            &SeedPlan {
                firm_ids: firm_ids.clone(),
                customers: args.customers,
                attempts: args.attempts,
                concurrency,
            },
        )
        .await?
    };
    database.analyze().await?;
    eprintln!("  copying the written tables for the baseline");
    baseline::prepare(&database.url).await?;
    let mut server_process = server.serve(&args.server_env).await?;
    let baseline_process =
        processes::start_baseline(&database.url, &firm_ids[0].to_string()).await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(args.concurrency * 2)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let target_of = |process: &Running| {
        Arc::new(Target {
            client: client.clone(),
            base_url: process.base_url.clone(),
            keys: keys.clone(),
            firms: seeded.firms.clone(),
            firm_ids: firm_ids.iter().map(ToString::to_string).collect(),
        })
    };
    let api = target_of(&server_process);
    let bare = target_of(&baseline_process);
    let limits = PhaseLimits {
        concurrency: args.concurrency,
        duration: Duration::from_secs(args.duration_secs),
        max_requests: args.max_requests,
    };
    let warm_up = PhaseLimits {
        duration: Duration::from_secs(2),
        ..limits
    };
    let mut report = BackendReport::new(database.backend);

    // Warm both up (connections, caches) without recording.
    {
        let api = api.clone();
        run_phase(warm_up, |w| w, move |w| scenarios::api_read(api.clone(), w)).await;
        let bare = bare.clone();
        run_phase(
            warm_up,
            |w| w,
            move |w| scenarios::baseline_read(bare.clone(), w),
        )
        .await;
    }

    eprintln!("  phase: baseline read and read one customer, interleaved");
    let (baseline, own) = (bare.clone(), api.clone());
    let (baseline_result, result) = run_paired(
        limits,
        args.rounds,
        (
            |w| w,
            move |w| scenarios::baseline_read(baseline.clone(), w),
        ),
        (|w| w, move |w| scenarios::api_read(own.clone(), w)),
    )
    .await;
    report.push(
        Phase::BaselineRead,
        baseline_result,
        baseline_process.memory(),
    );
    report.push(Phase::Read, result, server_process.memory());

    eprintln!("  phase: baseline pages and list pages, interleaved");
    let (baseline, own) = (bare.clone(), api.clone());
    let (baseline_result, result) = run_paired(
        limits,
        args.rounds,
        (ListWalk::new, move |walk| {
            scenarios::baseline_list(baseline.clone(), walk)
        }),
        (ListWalk::new, move |walk| {
            scenarios::api_list(own.clone(), walk)
        }),
    )
    .await;
    report.push(
        Phase::BaselineList,
        baseline_result,
        baseline_process.memory(),
    );
    report.push(Phase::List, result, server_process.memory());

    eprintln!("  phase: baseline upsert and upsert, interleaved");
    let (baseline, own) = (bare.clone(), api.clone());
    let (baseline_result, result) = run_paired(
        limits,
        args.rounds,
        (Upserts::new, move |upserts| {
            scenarios::baseline_upsert(baseline.clone(), upserts)
        }),
        (Upserts::new, move |upserts| {
            scenarios::api_upsert(own.clone(), upserts)
        }),
    )
    .await;
    report.push(
        Phase::BaselineUpsert,
        baseline_result,
        baseline_process.memory(),
    );
    report.push(Phase::Upsert, result, server_process.memory());

    eprintln!("  phase: provider webhooks");
    let supply = Arc::new(WebhookSupply::new(seeded.attempts.clone()));
    let target = api.clone();
    let shared = supply.clone();
    let result = run_phase(
        limits,
        |_| WebhookWorker::default(),
        move |worker| scenarios::webhook(target.clone(), shared.clone(), worker),
    )
    .await;
    if supply.used() >= seeded.attempts.len() {
        eprintln!(
            "  note: all {} seeded attempts were used before the phase ended; seed more with --attempts",
            seeded.attempts.len()
        );
    }
    report.push(Phase::Webhooks, result, server_process.memory());
    // Screening keeps up when the work the verdicts queued is done soon after they stop.
    let depth = database.outbox_pending().await?;
    let waited = Instant::now();
    let mut drained = (depth == 0).then_some(Duration::ZERO);
    while drained.is_none() && waited.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if database.outbox_pending().await? == 0 {
            drained = Some(waited.elapsed());
        }
    }
    eprintln!(
        "    outbox: {depth} entries at the end of the phase, {}",
        report::outbox_drained(drained)
    );
    report.outbox_after_webhooks = Some((depth, drained));

    eprintln!("  phase: upserts while each change is delivered to a webhook endpoint");
    let receiver = receiver::Receiver::start().await?;
    receiver.subscribe(&server, &firm_ids)?;
    let own = api.clone();
    let started = Instant::now();
    let result = run_phase(
        limits,
        |worker| Upserts::starting_at(worker, 1 << 40),
        move |upserts| scenarios::api_upsert(own.clone(), upserts),
    )
    .await;
    // Every accepted upsert changed a customer: one event for its firm's endpoint.
    let expected = result.ok;
    report.push(Phase::UpsertDelivering, result, server_process.memory());
    let deadline = Instant::now() + Duration::from_secs(300);
    while (receiver.distinct() as u64) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing = expected.saturating_sub(receiver.distinct() as u64);
    // Every event counts for the rate: the phase's own changes and the screening results of the
    // phase before, which the same endpoints receive.
    let delivered = receiver.distinct_all() as u64;
    let mut error_samples = Vec::new();
    if missing > 0 {
        error_samples.push(format!(
            "{missing} events not delivered within 300 s of the phase"
        ));
    }
    if receiver.refused() > 0 {
        error_samples.push(format!(
            "{} deliveries failed the signature check",
            receiver.refused()
        ));
    }
    eprintln!(
        "    {delivered} events delivered, {} of them this phase's changes ({} requests) in {:.1} s",
        receiver.distinct(),
        receiver.accepted(),
        receiver
            .last()
            .unwrap_or(started)
            .duration_since(started)
            .as_secs_f64()
    );
    report.push(
        Phase::Deliveries,
        PhaseResult {
            ok: delivered,
            errors: missing + receiver.refused(),
            error_samples,
            elapsed: receiver.last().unwrap_or(started).duration_since(started),
            p50: Duration::ZERO,
            p99: Duration::ZERO,
            max: Duration::ZERO,
        },
        server_process.memory(),
    );

    eprintln!(
        "  phase: {} changes queued while no replica delivers, then delivered with no API load",
        args.backlog
    );
    let peak_kib = server_process.memory().peak_kib;
    drop(server_process);
    let mut quiet = args.server_env.clone();
    quiet.push(("KYC_WEBHOOK_CONCURRENCY".to_owned(), "0".to_owned()));
    let quiet_process = server.serve(&quiet).await?;
    let queued = run_phase(
        PhaseLimits {
            duration: Duration::from_secs(600),
            max_requests: args.backlog,
            ..limits
        },
        |worker| Upserts::starting_at(worker, 2 << 40),
        {
            let own = target_of(&quiet_process);
            move |upserts| scenarios::api_upsert(own.clone(), upserts)
        },
    )
    .await;
    let peak_kib = peak_kib.max(quiet_process.memory().peak_kib);
    drop(quiet_process);
    receiver.forget();
    server_process = server.serve(&args.server_env).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while (receiver.distinct() as u64) < queued.ok && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = receiver.distinct() as u64;
    let missing = queued.ok.saturating_sub(delivered);
    let span = match (receiver.first(), receiver.last()) {
        (Some(first), Some(last)) => last.duration_since(first),
        _ => Duration::ZERO,
    };
    eprintln!(
        "    {} queued ({} errors), {delivered} delivered in {:.1} s",
        queued.ok,
        queued.errors,
        span.as_secs_f64()
    );
    let mut error_samples = queued.error_samples.clone();
    if missing > 0 {
        error_samples.push(format!(
            "{missing} events of the backlog not delivered within 300 s"
        ));
    }
    report.push(
        Phase::Drain,
        PhaseResult {
            // The rate counts the deliveries after the first, over the time from it to the last.
            ok: delivered.saturating_sub(1),
            errors: missing + queued.errors + receiver.refused(),
            error_samples,
            elapsed: span,
            p50: Duration::ZERO,
            p99: Duration::ZERO,
            max: Duration::ZERO,
        },
        server_process.memory(),
    );

    report.memory = server_process.memory();
    report.memory.peak_kib = report.memory.peak_kib.max(peak_kib);
    report.baseline_memory = baseline_process.memory();
    report.kyc_status_counts = database.kyc_status_counts().await?;
    drop(server_process);
    drop(baseline_process);
    Ok(report)
}
