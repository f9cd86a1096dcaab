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
    let started = Instant::now();
    let deadline = started + limits.duration;
    let budget = Arc::new(AtomicU64::new(limits.max_requests));
    let mut workers = Vec::with_capacity(limits.concurrency);
    for worker in 0..limits.concurrency {
        let request = request.clone();
        let budget = budget.clone();
        let mut state = Some(state_for(worker));
        workers.push(tokio::spawn(async move {
            let mut latencies_micros = Vec::with_capacity(16_384);
            let mut errors = 0_u64;
            let mut samples = Vec::new();
            let mut last_answer = Instant::now();
            while Instant::now() < deadline {
                if budget
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
            (latencies_micros, errors, samples, last_answer)
        }));
    }
    let mut latencies = Vec::new();
    let mut result = PhaseResult::default();
    let mut finished = started;
    for worker in workers {
        match worker.await {
            Ok((worker_latencies, errors, samples, last_answer)) => {
                latencies.extend(worker_latencies);
                result.errors += errors;
                finished = finished.max(last_answer);
                for sample in samples {
                    if result.error_samples.len() < 5 {
                        result.error_samples.push(sample);
                    }
                }
            }
            Err(panic) => {
                result.errors += 1;
                result.error_samples.push(format!("worker failed: {panic}"));
            }
        }
    }
    latencies.sort_unstable();
    result.ok = latencies.len() as u64;
    result.elapsed = finished - started;
    let at = |quantile: f64| {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((latencies.len() as f64 * quantile).ceil() as usize).clamp(1, latencies.len());
        Duration::from_micros(u64::from(latencies[rank - 1]))
    };
    result.p50 = at(0.50);
    result.p99 = at(0.99);
    result.max = at(1.0);
    result
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
