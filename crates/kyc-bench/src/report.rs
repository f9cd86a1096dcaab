//! The report: one table per backend (throughput, ratio to the matching baseline phase, latency,
//! errors, memory), then the targets of `docs/performance.md` checked on the PostgreSQL figures.

use std::time::Duration;

use crate::database::Backend;
use crate::load::PhaseResult;
use crate::processes::Memory;

/// The phases of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Baseline: one `SELECT` by id.
    BaselineRead,
    /// `GET /api/v1/customers/{id}`.
    Read,
    /// Baseline: one keyset page of the same filter and size, with its own cursors.
    BaselineList,
    /// `GET /api/v1/customers?status=NOT_STARTED&limit=50` with cursors.
    List,
    /// Baseline: the look-up, then the customer, its audit event and its feed entry in one
    /// transaction.
    BaselineUpsert,
    /// `POST /api/v1/customers`, half updates, half creates.
    Upsert,
    /// `POST /webhooks/sumsub`, signed, half pending, half GREEN verdicts.
    Webhooks,
    /// `POST /api/v1/customers` again, while every change is delivered to a webhook endpoint.
    UpsertDelivering,
    /// Webhook deliveries of those changes, signed, verified and counted by a local receiver.
    Deliveries,
    /// A backlog of deliveries sent with no API load, from the first to the last.
    Drain,
}

impl Phase {
    const fn label(self) -> &'static str {
        match self {
            Self::BaselineRead => "baseline: SELECT by id",
            Self::Read => "GET /api/v1/customers/{id}",
            Self::BaselineList => "baseline: keyset page of 50",
            Self::List => "GET /api/v1/customers?status&limit=50",
            Self::BaselineUpsert => "baseline: look-up + row + event + feed",
            Self::Upsert => "POST /api/v1/customers (upsert)",
            Self::Webhooks => "POST /webhooks/sumsub (signed)",
            Self::UpsertDelivering => "POST /api/v1/customers (upsert) while delivering",
            Self::Deliveries => "webhook deliveries to a receiver (no latency figures)",
            Self::Drain => "webhook deliveries of a backlog, no API load",
        }
    }

    /// The baseline phase a figure is divided by.
    const fn baseline(self) -> Option<Self> {
        match self {
            Self::Read => Some(Self::BaselineRead),
            Self::List => Some(Self::BaselineList),
            Self::Upsert | Self::UpsertDelivering => Some(Self::BaselineUpsert),
            Self::BaselineRead
            | Self::BaselineList
            | Self::BaselineUpsert
            | Self::Webhooks
            | Self::Deliveries
            | Self::Drain => None,
        }
    }
}

/// The figures of one backend.
#[derive(Debug)]
pub struct BackendReport {
    /// Which backend.
    pub backend: Backend,
    /// Each phase with the memory of its process right after it.
    pub phases: Vec<(Phase, PhaseResult, Memory)>,
    /// The server's memory at the end (`peak_kib` is the peak over the whole run).
    pub memory: Memory,
    /// The baseline's memory at the end.
    pub baseline_memory: Memory,
    /// Customers per KYC status at the end.
    pub kyc_status_counts: Vec<(String, i64)>,
    /// Work entries of the outbox (AML screening after each GREEN verdict) not yet done when the
    /// webhooks phase ended, and how long the outbox then took to empty (none: it did not
    /// within the wait).
    pub outbox_after_webhooks: Option<(i64, Option<Duration>)>,
}

impl BackendReport {
    /// An empty report.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            phases: Vec::new(),
            memory: Memory::default(),
            baseline_memory: Memory::default(),
            kyc_status_counts: Vec::new(),
            outbox_after_webhooks: None,
        }
    }

    /// Adds a phase.
    pub fn push(&mut self, phase: Phase, result: PhaseResult, memory: Memory) {
        eprintln!(
            "    {:.0} req/s, p50 {}, p99 {}, {} errors",
            result.throughput(),
            millis(result.p50),
            millis(result.p99),
            result.errors
        );
        for sample in &result.error_samples {
            eprintln!("    error: {sample}");
        }
        self.phases.push((phase, result, memory));
    }

    fn get(&self, phase: Phase) -> Option<&PhaseResult> {
        self.phases
            .iter()
            .find(|(p, _, _)| *p == phase)
            .map(|(_, result, _)| result)
    }

    /// Throughput of `phase` over its baseline's.
    pub fn ratio(&self, phase: Phase) -> Option<f64> {
        let own = self.get(phase)?.throughput();
        let base = self.get(phase.baseline()?)?.throughput();
        (base > 0.0).then(|| own / base)
    }
}

/// How long the outbox took to empty after the webhooks phase, in words (`None`: it had not
/// within the harness's wait).
pub fn outbox_drained(after: Option<Duration>) -> String {
    after.map_or_else(
        || "not empty 120 s later".to_owned(),
        |after| format!("empty {:.1} s later", after.as_secs_f64()),
    )
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1_000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Prints the report to stdout as Markdown.
pub fn print(summary: &str, reports: &[BackendReport]) {
    println!("# kyc-bench\n\n{summary}\n");
    for report in reports {
        println!("## {}\n", report.backend.name());
        println!("| Phase | req/s | × baseline | p50 | p99 | max | errors | RSS after |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for (phase, result, memory) in &report.phases {
            let ratio = report
                .ratio(*phase)
                .map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×"));
            println!(
                "| {} | {:.0} | {ratio} | {} | {} | {} | {} | {} |",
                phase.label(),
                result.throughput(),
                millis(result.p50),
                millis(result.p99),
                millis(result.max),
                result.errors,
                mib(memory.current_kib),
            );
        }
        println!(
            "\nServer peak RSS (VmHWM): {}; baseline peak RSS: {}.",
            mib(report.memory.peak_kib),
            mib(report.baseline_memory.peak_kib)
        );
        let counts = report
            .kyc_status_counts
            .iter()
            .map(|(status, n)| format!("{status} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!("Customers by KYC status at the end: {counts}.");
        if let Some((depth, drained)) = report.outbox_after_webhooks {
            println!(
                "Outbox (screening work) at the end of the webhooks phase: {depth} entries; {}.",
                outbox_drained(drained)
            );
        }
        println!();
        if report.backend == Backend::Postgres {
            print_targets(report);
        }
    }
}

fn print_targets(report: &BackendReport) {
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!("### Targets (PostgreSQL)\n");
    if let Some(ratio) = report.ratio(Phase::Read) {
        println!(
            "- reads ≥ 0.6× baseline: {ratio:.2}× — {}",
            verdict(ratio >= 0.6)
        );
    }
    if let Some(ratio) = report.ratio(Phase::List) {
        println!(
            "- list pages ≥ 0.6× baseline: {ratio:.2}× — {}",
            verdict(ratio >= 0.6)
        );
    }
    if let Some(ratio) = report.ratio(Phase::Upsert) {
        println!(
            "- upserts ≥ 0.8× baseline: {ratio:.2}× — {}",
            verdict(ratio >= 0.8)
        );
    }
    if let Some(webhooks) = report.get(Phase::Webhooks) {
        let rate = webhooks.throughput();
        println!(
            "- webhooks ≥ 2,000/s: {rate:.0}/s — {}",
            verdict(rate >= 2_000.0)
        );
    }
    if let Some((depth, drained)) = report.outbox_after_webhooks {
        println!(
            "- screening keeps up (outbox at the end of the webhooks phase): {depth} entries, {}",
            outbox_drained(drained)
        );
    }
    for phase in [Phase::Deliveries, Phase::Drain] {
        if let Some(deliveries) = report.get(phase) {
            let rate = deliveries.throughput();
            println!(
                "- {} ≥ 1,000/s: {rate:.0}/s — {}",
                phase.label(),
                verdict(rate >= 1_000.0)
            );
        }
    }
    if let (Some(alone), Some(delivering)) = (
        report.ratio(Phase::Upsert),
        report.ratio(Phase::UpsertDelivering),
    ) {
        println!("- upserts while delivering: {delivering:.2}× baseline (alone: {alone:.2}×)");
    }
    for phase in [
        Phase::Read,
        Phase::List,
        Phase::Upsert,
        Phase::Webhooks,
        Phase::UpsertDelivering,
    ] {
        if let Some(result) = report.get(phase) {
            println!(
                "- p99 < 25 ms, {}: {} — {}",
                phase.label(),
                millis(result.p99),
                verdict(result.p99 < Duration::from_millis(25))
            );
        }
    }
    let errors: u64 = report.phases.iter().map(|(_, r, _)| r.errors).sum();
    println!(
        "- no unexpected answers: {errors} — {}",
        verdict(errors == 0)
    );
    let peak = report.memory.peak_kib;
    println!(
        "- server memory < 100 MiB: {} — {}\n",
        mib(peak),
        verdict(peak < 100 * 1024)
    );
}
