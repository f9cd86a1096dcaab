//! The load driver: a fixed number of workers, each sending one request at a time in a loop for a
//! fixed duration (or until the phase's request budget or its supply of targets runs out), and
//! the figures of the phase: throughput, latency percentiles and errors.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What one request came to.
#[derive(Debug)]
pub enum Outcome {
    /// The status the contract promises for it.
    Expected,
    /// Anything else; the text says what.
    Unexpected(String),
    /// Nothing left to send (the phase's supply of targets is used up); not counted.
    Exhausted,
}

/// How a phase runs.
#[derive(Debug, Clone, Copy)]
pub struct PhaseLimits {
    /// Workers, each with one request in flight.
    pub concurrency: usize,
    /// How long the phase lasts.
    pub duration: Duration,
    /// The most requests the phase may send, whatever the duration.
    pub max_requests: u64,
}

/// The figures of one phase.
#[derive(Debug, Clone, Default)]
pub struct PhaseResult {
    /// Requests answered as expected.
    pub ok: u64,
    /// Requests answered otherwise (or failed on the wire).
    pub errors: u64,
    /// The first few unexpected answers, for the report.
    pub error_samples: Vec<String>,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th-percentile latency.
    pub p99: Duration,
    /// Slowest request.
    pub max: Duration,
}

impl PhaseResult {
    /// Expected answers per second.
    pub fn throughput(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.ok as f64 / seconds
        } else {
            0.0
        }
    }
}

/// Runs a phase. Every worker gets a `state` from `state_for(worker)`, and calls
/// `request(state)` until the deadline; `request` hands the state back with the outcome, so a
/// worker can carry a cursor from one page to the next.
pub async fn run_phase<S, F, Fut>(
    limits: PhaseLimits,
    state_for: impl Fn(usize) -> S,
    request: F,
) -> PhaseResult
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = (S, Outcome)> + Send,
{
    let states = (0..limits.concurrency)
        .map(|worker| Some(state_for(worker)))
        .collect();
    let budget = Arc::new(AtomicU64::new(limits.max_requests));
    let (_, tally) = run_slice(limits.duration, states, &budget, &request).await;
    tally.finish()
}

/// Runs two phases (`a`, then its counterpart `b`, e.g. a baseline and the API) in `rounds`
/// alternating slices of `limits.duration / rounds` each, `a` first in even rounds and `b` first
/// in odd ones; each worker keeps its state from one slice of its phase to the next, and each
/// phase keeps its own request budget. Whatever the machine does meanwhile (a flush of what an
/// earlier phase wrote, another tenant) falls on both phases alike, so their ratio does not
/// depend on which came first.
pub async fn run_paired<SA, FA, FutA, SB, FB, FutB>(
    limits: PhaseLimits,
    rounds: u32,
    (state_a, request_a): (impl Fn(usize) -> SA, FA),
    (state_b, request_b): (impl Fn(usize) -> SB, FB),
) -> (PhaseResult, PhaseResult)
where
    SA: Send + 'static,
    FA: Fn(SA) -> FutA + Clone + Send + Sync + 'static,
    FutA: Future<Output = (SA, Outcome)> + Send,
    SB: Send + 'static,
    FB: Fn(SB) -> FutB + Clone + Send + Sync + 'static,
    FutB: Future<Output = (SB, Outcome)> + Send,
{
    let rounds = rounds.max(1);
    let slice = limits.duration / rounds;
    let mut states_a: Vec<Option<SA>> = (0..limits.concurrency)
        .map(|worker| Some(state_a(worker)))
        .collect();
    let mut states_b: Vec<Option<SB>> = (0..limits.concurrency)
        .map(|worker| Some(state_b(worker)))
        .collect();
    let (budget_a, budget_b) = (
        Arc::new(AtomicU64::new(limits.max_requests)),
        Arc::new(AtomicU64::new(limits.max_requests)),
    );
    let (mut tally_a, mut tally_b) = (Tally::default(), Tally::default());
    for round in 0..rounds {
        if round % 2 == 0 {
            let (states, tally) = run_slice(slice, states_a, &budget_a, &request_a).await;
            (states_a, tally_a) = (states, tally_a.and(tally));
            let (states, tally) = run_slice(slice, states_b, &budget_b, &request_b).await;
            (states_b, tally_b) = (states, tally_b.and(tally));
        } else {
            let (states, tally) = run_slice(slice, states_b, &budget_b, &request_b).await;
            (states_b, tally_b) = (states, tally_b.and(tally));
            let (states, tally) = run_slice(slice, states_a, &budget_a, &request_a).await;
            (states_a, tally_a) = (states, tally_a.and(tally));
        }
    }
    (tally_a.finish(), tally_b.finish())
}

/// What the workers of one or more slices of a phase came to.
#[derive(Default)]
struct Tally {
    latencies_micros: Vec<u32>,
    errors: u64,
    samples: Vec<String>,
    elapsed: Duration,
}

impl Tally {
    /// Both tallies as one: the answers of both, over both durations.
    fn and(mut self, other: Self) -> Self {
        self.latencies_micros.extend(other.latencies_micros);
        self.errors += other.errors;
        for sample in other.samples {
            if self.samples.len() < 5 {
                self.samples.push(sample);
            }
        }
        self.elapsed += other.elapsed;
        self
    }

    /// The figures of the phase.
    fn finish(self) -> PhaseResult {
        let mut latencies = self.latencies_micros;
        latencies.sort_unstable();
        let at = |quantile: f64| {
            if latencies.is_empty() {
                return Duration::ZERO;
            }
            let rank =
                ((latencies.len() as f64 * quantile).ceil() as usize).clamp(1, latencies.len());
            Duration::from_micros(u64::from(latencies[rank - 1]))
        };
        PhaseResult {
            ok: latencies.len() as u64,
            errors: self.errors,
            error_samples: self.samples,
            elapsed: self.elapsed,
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// One slice of a phase: every worker that has a state sends one request at a time for
/// `duration` (or until `budget` runs out, or its targets do), and hands its state back.
async fn run_slice<S, F, Fut>(
    duration: Duration,
    states: Vec<Option<S>>,
    budget: &Arc<AtomicU64>,
    request: &F,
) -> (Vec<Option<S>>, Tally)
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = (S, Outcome)> + Send,
{
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::with_capacity(states.len());
    for mut state in states {
        let request = request.clone();
        let budget = budget.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies_micros = Vec::with_capacity(16_384);
            let mut errors = 0_u64;
            let mut samples = Vec::new();
            let mut last_answer = Instant::now();
            while Instant::now() < deadline {
                if state.is_none()
                    || budget
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                            left.checked_sub(1)
                        })
                        .is_err()
                {
                    break;
                }
                let Some(current) = state.take() else { break };
                let sent = Instant::now();
                let (next, outcome) = request(current).await;
                last_answer = Instant::now();
                state = Some(next);
                let micros = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                match outcome {
                    Outcome::Expected => latencies_micros.push(micros),
                    Outcome::Unexpected(what) => {
                        errors += 1;
                        if samples.len() < 3 {
                            samples.push(what);
                        }
                    }
                    Outcome::Exhausted => break,
                }
            }
            (state, latencies_micros, errors, samples, last_answer)
        }));
    }
    let mut states = Vec::with_capacity(workers.len());
    let mut tally = Tally::default();
    let mut finished = started;
    for worker in workers {
        match worker.await {
            Ok((state, latencies, errors, samples, last_answer)) => {
                states.push(state);
                tally.latencies_micros.extend(latencies);
                tally.errors += errors;
                finished = finished.max(last_answer);
                for sample in samples {
                    if tally.samples.len() < 5 {
                        tally.samples.push(sample);
                    }
                }
            }
            Err(panic) => {
                // The worker's state went with it: it sends nothing more in this phase.
                states.push(None);
                tally.errors += 1;
                tally.samples.push(format!("worker failed: {panic}"));
            }
        }
    }
    tally.elapsed = finished - started;
    (states, tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_phase_counts_expected_and_unexpected_answers_and_stops_at_its_budget() {
        let limits = PhaseLimits {
            concurrency: 3,
            duration: Duration::from_secs(30),
            max_requests: 100,
        };
        let result = run_phase(
            limits,
            |_| 0_u32,
            |n: u32| async move {
                let outcome = if n % 4 == 3 {
                    Outcome::Unexpected(format!("request {n}"))
                } else {
                    Outcome::Expected
                };
                (n + 1, outcome)
            },
        )
        .await;
        assert_eq!(result.ok + result.errors, 100);
        assert!(result.errors >= 20 && result.errors <= 27, "{result:?}");
        assert!(result.elapsed < Duration::from_secs(5));
        assert!(result.p50 <= result.p99 && result.p99 <= result.max);
    }

    #[tokio::test]
    async fn paired_phases_alternate_and_keep_each_workers_state() {
        let limits = PhaseLimits {
            concurrency: 2,
            duration: Duration::from_millis(400),
            max_requests: 10_000,
        };
        // Each worker's state counts its requests: carried over from slice to slice, the
        // numbers a worker sends never repeat and go past what one slice holds.
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let (a, b) = run_paired(
            limits,
            4,
            (
                |worker: usize| (worker, 0_u32),
                move |(worker, n): (usize, u32)| {
                    let record = record.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        record.lock().unwrap().push((worker, n));
                        ((worker, n + 1), Outcome::Expected)
                    }
                },
            ),
            (
                |_| (),
                |(): ()| async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    ((), Outcome::Unexpected("refused".to_owned()))
                },
            ),
        )
        .await;
        assert!(a.ok > 0 && a.errors == 0, "{a:?}");
        assert!(b.ok == 0 && b.errors > 0, "{b:?}");
        // Four slices of 100 ms each side: about 400 ms of each phase in all.
        assert!(a.elapsed >= Duration::from_millis(350), "{a:?}");
        assert!(b.elapsed >= Duration::from_millis(350), "{b:?}");
        let mut seen = seen.lock().unwrap().clone();
        let sent = seen.len();
        let most = seen.iter().map(|(_, n)| *n).max().unwrap_or(0);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), sent, "a worker's state went back to its start");
        assert!(
            most > 25,
            "one slice holds about 20 requests a worker: {most}"
        );
    }

    #[tokio::test]
    async fn paired_phases_keep_their_own_budgets() {
        let limits = PhaseLimits {
            concurrency: 2,
            duration: Duration::from_secs(30),
            max_requests: 40,
        };
        let (a, b) = run_paired(
            limits,
            4,
            (|_| (), |(): ()| async { ((), Outcome::Expected) }),
            (
                |_| (),
                |(): ()| async { ((), Outcome::Unexpected("refused".to_owned())) },
            ),
        )
        .await;
        assert_eq!((a.ok, a.errors), (40, 0));
        assert_eq!((b.ok, b.errors), (0, 40));
    }

    #[tokio::test]
    async fn a_worker_stops_when_its_targets_run_out() {
        let limits = PhaseLimits {
            concurrency: 2,
            duration: Duration::from_secs(30),
            max_requests: 1_000,
        };
        let result = run_phase(
            limits,
            |_| 0_u32,
            |n: u32| async move {
                let outcome = if n < 5 {
                    Outcome::Expected
                } else {
                    Outcome::Exhausted
                };
                (n + 1, outcome)
            },
        )
        .await;
        assert_eq!(result.ok, 10);
        assert_eq!(result.errors, 0);
    }
}
