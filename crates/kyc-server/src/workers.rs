//! The background workers beside the recovery worker (`serve::recovery_worker`): outbox delivery,
//! periodic AML re-screening, and the purge of expired idempotency records. Each runs until its
//! cancellation token fires and only looks at the token between passes, so a pass that has
//! started (a screening half done, a batch leased) always finishes before shutdown completes.
//!
//! Every one of them is safe with several replicas on one database: the outbox hands out leased,
//! disjoint batches; re-screening relies on the service's optimistic saves (two replicas screening
//! the same customer record one result each, which is harmless); the purge is a plain delete.

use std::sync::Arc;
use std::time::Duration;

use kyc_domain::events::OutboxMessage;
use kyc_domain::ports::{
    Clock, CustomerStore, IdempotencyStore, InfrastructureError, OutboxEntry, OutboxStore,
    ProviderError,
};
use kyc_domain::usecases::{CommandError, KycService, ScreeningError};
use kyc_http::Metrics;
use rand::Rng;
use tokio_util::sync::CancellationToken;

/// How often an idle outbox worker looks for work. Short, because the lifecycle must feel
/// immediate: a GREEN verdict should show as screened within a couple of seconds.
pub const OUTBOX_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How many outbox entries one pass leases.
const OUTBOX_BATCH: u32 = 64;

/// How many customers' entries one pass runs at once. Each screening is two provider calls and
/// two saves, nearly all of it waiting: one at a time, a worker screened about 60 customers a
/// second, far fewer than a burst of verdicts queues.
const OUTBOX_CONCURRENCY: usize = 16;

/// How long a leased batch stays hidden from other workers. Far longer than a batch takes (each
/// screening is a few provider calls with their own timeouts), so no entry is handed out twice
/// while its worker is alive; an entry whose worker died is handed out again after it.
const OUTBOX_LEASE: time::Duration = time::Duration::minutes(5);

/// How long into a pass its finished entries are marked without waiting for the pass to end:
/// half the lease.
const OUTBOX_LEASE_FLUSH: Duration = Duration::from_secs(150);

/// The first retry of a failed job waits about this long; each further one doubles it.
const RETRY_BASE: Duration = Duration::from_secs(2);

/// No retry waits longer than this: a provider outage of a day still sees a try every half hour.
const RETRY_CAP: Duration = Duration::from_secs(30 * 60);

/// How often the re-screening worker looks for customers due on their risk-based cadence.
pub const RESCREENING_INTERVAL: Duration = Duration::from_secs(60);

/// How many due customers one re-screening pass takes on.
const RESCREENING_BATCH: u32 = 50;

/// How often expired idempotency records are deleted (they are kept 24 h; a late purge only
/// keeps rows longer, the claim already treats expired ones as absent).
pub const IDEMPOTENCY_PURGE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// The wait before retry number `attempts + 1` of a job: `RETRY_BASE · 2^attempts`, capped at
/// `RETRY_CAP`, then scaled by `0.5 + jitter / 2` (with `jitter` in `[0, 1)`) so jobs that failed
/// together during an outage do not all come back in the same second.
pub fn retry_delay(attempts: u32, jitter: f64) -> Duration {
    let exponential = RETRY_BASE
        .checked_mul(2_u32.saturating_pow(attempts.min(20)))
        .unwrap_or(RETRY_CAP)
        .min(RETRY_CAP);
    exponential.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// What became of one outbox entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Done; never handed out again.
    Delivered,
    /// Failed for now; handed out again after a backoff.
    Retried,
    /// Failed for good (the customer is gone, the provider refused): dropped with a warning, since
    /// repeating it cannot succeed.
    Dropped,
}

/// What one outbox pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxReport {
    /// Entries leased.
    pub claimed: usize,
    /// Entries done.
    pub delivered: usize,
    /// Entries scheduled for another try.
    pub retried: usize,
    /// Entries given up on.
    pub dropped: usize,
}

/// Delivers the outbox: runs follow-up work written in the same transaction as the change that
/// caused it (AML screening after `VERIFIED`), at least once.
#[derive(Clone)]
pub struct OutboxWorker {
    service: KycService,
    outbox: Arc<dyn OutboxStore>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
}

impl OutboxWorker {
    /// A worker draining `outbox` into `service`, recording its figures on `metrics`.
    pub fn new(service: KycService, outbox: Arc<dyn OutboxStore>, metrics: Metrics) -> Self {
        let clock = service.ports().clock.clone();
        Self {
            service,
            outbox,
            clock,
            metrics,
        }
    }

    /// One pass: lease a batch of due entries and handle them, up to [`OUTBOX_CONCURRENCY`] at
    /// once. The entries of one customer run one after the other, in the order they were
    /// written, on one task; different customers run side by side (a screening waits on the
    /// provider and the database far longer than it computes).
    ///
    /// # Errors
    /// The claim failed (nothing was leased). Failures of single entries are handled (retried
    /// or dropped) and counted in the report instead.
    pub async fn run_pass(&self) -> Result<OutboxReport, InfrastructureError> {
        let now = self.clock.now();
        let entries = self
            .outbox
            .claim_batch(now, now + OUTBOX_LEASE, OUTBOX_BATCH)
            .await?;
        // The port has no count of waiting entries; the due entries seen by this pass are a
        // lower bound that reads 0 exactly when the worker keeps up.
        self.metrics.set_outbox_depth(entries.len() as u64);
        let mut report = OutboxReport {
            claimed: entries.len(),
            ..OutboxReport::default()
        };
        // Entries done (or given up) are marked together at the end of the pass: one write
        // instead of one per entry. A crash before it leaves them leased; they run again when the
        // lease ends, which at-least-once delivery allows. A slow pass (a slow provider) marks
        // what it has finished once half the lease is gone, so no finished entry's lease runs
        // out and another worker runs it again.
        let claimed = std::time::Instant::now();
        let mut finished = Vec::with_capacity(entries.len());
        let mut waiting = by_customer(entries).into_iter();
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < OUTBOX_CONCURRENCY {
                let Some(chain) = waiting.next() else { break };
                let worker = self.clone();
                running.spawn(async move {
                    let mut outcomes = Vec::with_capacity(chain.len());
                    for entry in chain {
                        let id = entry.id;
                        outcomes.push((id, worker.handle(entry).await));
                    }
                    outcomes
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            match joined {
                Ok(outcomes) => {
                    for (id, outcome) in outcomes {
                        match outcome {
                            JobOutcome::Delivered => {
                                report.delivered += 1;
                                finished.push(id);
                            }
                            JobOutcome::Retried => report.retried += 1,
                            JobOutcome::Dropped => {
                                report.dropped += 1;
                                finished.push(id);
                            }
                        }
                    }
                }
                // Its entries stay leased and are handed out again when the lease ends.
                Err(error) => tracing::error!(error = %error, "an outbox job panicked"),
            }
            if claimed.elapsed() >= OUTBOX_LEASE_FLUSH && !finished.is_empty() {
                self.mark_finished(&mut finished).await;
            }
        }
        self.mark_finished(&mut finished).await;
        Ok(report)
    }

    /// Marks `finished` delivered and empties it; a failure is logged (the leases run out and
    /// the entries are handed out again: at least once, never lost).
    async fn mark_finished(&self, finished: &mut Vec<i64>) {
        if finished.is_empty() {
            return;
        }
        if let Err(error) = self
            .outbox
            .mark_all_delivered(finished, self.clock.now())
            .await
        {
            tracing::warn!(entries = finished.len(), error = %error, "could not record finished outbox entries");
        }
        finished.clear();
    }

    /// Runs one entry. A retry is scheduled here; a finished entry is left to the caller to mark.
    async fn handle(&self, entry: OutboxEntry) -> JobOutcome {
        let outcome = match &entry.message {
            OutboxMessage::RunScreening {
                firm_id,
                customer_id,
            } => self
                .service
                .run_screening(*firm_id, *customer_id)
                .await
                .map(|_| ()),
            // Stores write notifications to the event feed and the webhook queue, never here; a
            // row of this kind can only be one written before that, whose change the feed and
            // the webhooks never carried. Marking it done keeps the outbox from holding it.
            OutboxMessage::Notify { .. } => Ok(()),
        };
        match outcome {
            Ok(()) => JobOutcome::Delivered,
            Err(error) if is_retryable(&error) => {
                let delay = retry_delay(entry.attempts, rand::thread_rng().r#gen::<f64>());
                tracing::info!(
                    outbox_id = entry.id,
                    attempts = entry.attempts + 1,
                    retry_in_secs = delay.as_secs(),
                    error = %error,
                    "outbox job failed; retrying later"
                );
                let next = self.clock.now() + delay;
                if let Err(stored) = self
                    .outbox
                    .schedule_retry(entry.id, next, &error.to_string())
                    .await
                {
                    // The lease runs out and the entry is handed out again: never lost.
                    tracing::warn!(outbox_id = entry.id, error = %stored, "could not schedule the outbox retry");
                }
                JobOutcome::Retried
            }
            Err(error) => {
                tracing::warn!(
                    outbox_id = entry.id,
                    error = %error,
                    "outbox job cannot succeed; dropped"
                );
                JobOutcome::Dropped
            }
        }
    }
}

/// The entries grouped by the customer they are about, each group in the order given (the
/// claim's, oldest first), the groups in the order of their first entry.
fn by_customer(entries: Vec<OutboxEntry>) -> Vec<Vec<OutboxEntry>> {
    let mut groups: Vec<Vec<OutboxEntry>> = Vec::new();
    let mut index: std::collections::HashMap<_, usize> = std::collections::HashMap::new();
    for entry in entries {
        let key = match &entry.message {
            OutboxMessage::RunScreening {
                firm_id,
                customer_id,
            }
            | OutboxMessage::Notify {
                firm_id,
                customer_id,
                ..
            } => (*firm_id, *customer_id),
        };
        match index.get(&key) {
            Some(&at) => groups[at].push(entry),
            None => {
                index.insert(key, groups.len());
                groups.push(vec![entry]);
            }
        }
    }
    groups
}

/// Whether a failed screening may succeed when repeated: the provider was unreachable, the
/// database failed, or concurrent changes kept winning. A refusal or a vanished customer will not
/// change by waiting.
fn is_retryable(error: &ScreeningError) -> bool {
    match error {
        ScreeningError::Provider(ProviderError::Transient { .. })
        | ScreeningError::Command(CommandError::Contended | CommandError::Infrastructure(_)) => {
            true
        }
        ScreeningError::Provider(ProviderError::Refused { .. })
        | ScreeningError::Command(CommandError::NotFound | CommandError::Refused(_)) => false,
    }
}

/// Runs the outbox worker until `shutdown` fires: a pass every [`OUTBOX_POLL_INTERVAL`] while
/// idle, the next one at once while passes come back full.
pub async fn outbox_worker(worker: OutboxWorker, shutdown: CancellationToken) {
    loop {
        let full = match worker.run_pass().await {
            Ok(report) => {
                if report.retried + report.dropped > 0 {
                    tracing::info!(
                        delivered = report.delivered,
                        retried = report.retried,
                        dropped = report.dropped,
                        "outbox pass"
                    );
                }
                // A store may hand out fewer than asked, never more; a full batch says more wait.
                report.claimed >= OUTBOX_BATCH as usize
            }
            Err(error) => {
                tracing::warn!(error = %error, "outbox pass failed; retrying later");
                false
            }
        };
        let pause = if full {
            Duration::ZERO
        } else {
            OUTBOX_POLL_INTERVAL
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    tracing::info!("outbox worker stopped");
}

/// Runs the re-screening worker until `shutdown` fires: every [`RESCREENING_INTERVAL`], the
/// verified customers due on their risk-based cadence are screened again (new hits reopen
/// review). A customer whose screening fails stays due and is taken again on a later pass.
pub async fn rescreening_worker(
    service: KycService,
    customers: Arc<dyn CustomerStore>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(RESCREENING_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let now = service.ports().clock.now();
        let due = match customers.due_for_rescreening(now, RESCREENING_BATCH).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(error = %error, "re-screening look-up failed; retrying later");
                continue;
            }
        };
        let (mut screened, mut failed) = (0_usize, 0_usize);
        for location in due {
            match service
                .rescreen(location.firm_id, location.customer_id)
                .await
            {
                Ok(_) => screened += 1,
                Err(error) => {
                    failed += 1;
                    tracing::warn!(
                        firm_id = %location.firm_id,
                        customer_id = %location.customer_id,
                        error = %error,
                        "re-screening failed; the customer stays due"
                    );
                }
            }
        }
        if screened + failed > 0 {
            tracing::info!(screened, failed, "re-screening pass");
        }
    }
    tracing::info!("re-screening worker stopped");
}

/// Runs the idempotency purge until `shutdown` fires: every [`IDEMPOTENCY_PURGE_INTERVAL`],
/// records past their 24 h are deleted.
pub async fn idempotency_purge_worker(
    idempotency: Arc<dyn IdempotencyStore>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(IDEMPOTENCY_PURGE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        match idempotency.purge_expired(clock.now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired idempotency records deleted"),
            Err(error) => {
                tracing::warn!(error = %error, "idempotency purge failed; retrying later")
            }
        }
    }
    tracing::info!("idempotency purge worker stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use kyc_domain::ids::{CustomerId, FirmId};

    #[test]
    fn a_customers_entries_stay_together_and_in_order() {
        let firm = FirmId::from_uuid(uuid::Uuid::now_v7());
        let (a, b) = (
            CustomerId::from_uuid(uuid::Uuid::now_v7()),
            CustomerId::from_uuid(uuid::Uuid::now_v7()),
        );
        let entry = |id: i64, customer_id: CustomerId| OutboxEntry {
            id,
            message: OutboxMessage::RunScreening {
                firm_id: firm,
                customer_id,
            },
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            attempts: 0,
        };
        let groups = by_customer(vec![entry(1, a), entry(2, b), entry(3, a), entry(4, a)]);
        let ids: Vec<Vec<i64>> = groups
            .iter()
            .map(|group| group.iter().map(|e| e.id).collect())
            .collect();
        assert_eq!(ids, vec![vec![1, 3, 4], vec![2]]);
    }

    #[test]
    fn retries_back_off_exponentially_from_about_two_seconds() {
        assert_eq!(retry_delay(0, 1.0), Duration::from_secs(2));
        assert_eq!(retry_delay(1, 1.0), Duration::from_secs(4));
        assert_eq!(retry_delay(5, 1.0), Duration::from_secs(64));
    }

    #[test]
    fn retries_never_wait_longer_than_the_cap_even_after_many_attempts() {
        for attempts in [10, 11, 20, 31, 32, u32::MAX] {
            assert_eq!(retry_delay(attempts, 1.0), RETRY_CAP, "attempts {attempts}");
        }
    }

    #[test]
    fn jitter_spreads_a_retry_over_the_upper_half_of_its_delay() {
        assert_eq!(retry_delay(3, 0.0), Duration::from_secs(8));
        let mid = retry_delay(3, 0.5);
        assert!(mid > Duration::from_secs(8) && mid < Duration::from_secs(16));
        // Out-of-range jitter cannot stretch or shrink the window.
        assert_eq!(retry_delay(3, 7.0), Duration::from_secs(16));
        assert_eq!(retry_delay(3, -1.0), Duration::from_secs(8));
    }

    #[test]
    fn only_failures_that_may_pass_are_retried() {
        let transient = ScreeningError::Provider(ProviderError::Transient {
            reason: "timeout".into(),
        });
        let refused = ScreeningError::Provider(ProviderError::Refused {
            status: 404,
            reason: "no applicant".into(),
        });
        assert!(is_retryable(&transient));
        assert!(is_retryable(&ScreeningError::Command(
            CommandError::Contended
        )));
        assert!(is_retryable(&ScreeningError::Command(
            CommandError::Infrastructure(InfrastructureError::unavailable("down"))
        )));
        assert!(!is_retryable(&refused));
        assert!(!is_retryable(&ScreeningError::Command(
            CommandError::NotFound
        )));
    }
}
