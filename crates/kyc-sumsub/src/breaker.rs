//! A circuit breaker in front of the identity provider, so that an outage at Sumsub is not made
//! worse by every request, retry and recovery pass still knocking on its door.
//!
//! - **Closed** (normal): every call goes out. Each failure that says "the provider is not
//!   answering" — a timeout, a refused or broken connection, a 5xx — adds to a count of
//!   consecutive failures; any answer the provider actually gave (2xx, 4xx, 429) sets it back to
//!   zero. When the count reaches [`BreakerSettings::failures`] the circuit opens.
//! - **Open**: calls fail at once, without a request, for [`BreakerSettings::cooldown`].
//! - **Half-open**: after the cool-down, one call goes out as a probe while the others still fail
//!   at once. An answer closes the circuit; another failure opens it for a further cool-down.
//!   A probe that is dropped before it ends (its caller went away) frees the slot for the next.
//!
//! Failing fast is safe for every caller here: a start that cannot reach the provider keeps its
//! hold and its `Starting` attempt, which the same request, a retry or the recovery worker drives
//! once the circuit lets calls through again, and nothing is charged without an applicant.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// When the circuit opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the circuit; `0` never opens it.
    pub failures: u32,
    /// How long an open circuit refuses calls before it lets one probe through.
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    /// Five failures in a row open the circuit for 30 s.
    fn default() -> Self {
        Self {
            failures: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// What the circuit lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Every call goes out.
    Closed,
    /// Calls fail at once.
    Open,
    /// One probe is out or may go out; the rest fail at once.
    HalfOpen,
}

impl CircuitState {
    /// `closed`, `open` or `half_open`, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// The breaker, shared by clones of one client.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    state: Arc<Mutex<State>>,
}

/// A call the circuit let through. Report how it ended with [`Permit::succeeded`] or
/// [`Permit::failed`]; dropped without either, it counts as neither.
#[derive(Debug)]
pub struct Permit {
    breaker: CircuitBreaker,
    probe: bool,
    settled: bool,
}

/// The circuit is open: the call was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// How long until a probe may go out (zero while another probe is out).
    pub retry_in: Duration,
}

impl CircuitBreaker {
    /// A closed circuit.
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            state: Arc::new(Mutex::new(State::Closed { failures: 0 })),
        }
    }

    /// What the circuit lets through now.
    pub fn state(&self) -> CircuitState {
        match *self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if Instant::now() < until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Asks to make one call now.
    ///
    /// # Errors
    /// [`Refused`] while the circuit is open, or half-open with its probe out.
    pub fn admit(&self) -> Result<Permit, Refused> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Result<Permit, Refused> {
        let mut state = self.lock();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if now < until => {
                return Err(Refused {
                    retry_in: until - now,
                });
            }
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing: true } => {
                return Err(Refused {
                    retry_in: Duration::ZERO,
                });
            }
        };
        Ok(Permit {
            breaker: self.clone(),
            probe,
            settled: false,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few plain values, valid whatever a panicking holder left.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn succeeded(&self) {
        let mut state = self.lock();
        if !matches!(*state, State::Closed { .. }) {
            info!("identity provider answers again: circuit closed");
        }
        *state = State::Closed { failures: 0 };
    }

    fn failed(&self, probe: bool, now: Instant) {
        let settings = self.settings;
        let mut state = self.lock();
        let open = match *state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if settings.failures == 0 || failures < settings.failures {
                    *state = State::Closed { failures };
                    false
                } else {
                    true
                }
            }
            // A late failure of a call admitted before the circuit opened changes nothing.
            State::Open { .. } => false,
            State::HalfOpen { .. } => probe,
        };
        if open {
            warn!(
                failures = settings.failures,
                cooldown_ms = u64::try_from(settings.cooldown.as_millis()).unwrap_or(u64::MAX),
                "identity provider failing: circuit open, calls fail at once until a probe succeeds"
            );
            *state = State::Open {
                until: now + settings.cooldown,
            };
        }
    }

    fn abandoned(&self) {
        let mut state = self.lock();
        if let State::HalfOpen { probing: true } = *state {
            *state = State::HalfOpen { probing: false };
        }
    }
}

impl Permit {
    /// The provider answered (any status but 5xx): the circuit closes.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.breaker.succeeded();
    }

    /// The provider did not answer, or answered 5xx.
    pub fn failed(self) {
        self.failed_at(Instant::now());
    }

    fn failed_at(mut self, now: Instant) {
        self.settled = true;
        self.breaker.failed(self.probe, now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.breaker.abandoned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32) -> CircuitBreaker {
        CircuitBreaker::new(BreakerSettings {
            failures,
            cooldown: Duration::from_secs(30),
        })
    }

    fn fail_at(breaker: &CircuitBreaker, now: Instant) {
        breaker.admit_at(now).expect("admitted").failed_at(now);
    }

    #[test]
    fn opens_after_the_set_number_of_consecutive_failures_only() {
        let breaker = breaker(3);
        let now = Instant::now();
        fail_at(&breaker, now);
        fail_at(&breaker, now);
        breaker.admit_at(now).expect("still closed").succeeded();
        fail_at(&breaker, now);
        fail_at(&breaker, now);
        assert_eq!(
            breaker.state(),
            CircuitState::Closed,
            "an answer reset the count"
        );
        fail_at(&breaker, now);
        let refused = breaker.admit_at(now).expect_err("open");
        assert_eq!(refused.retry_in, Duration::from_secs(30));
        assert_eq!(breaker.state(), CircuitState::Open);
    }

    #[test]
    fn after_the_cooldown_one_probe_goes_out_and_its_answer_closes_the_circuit() {
        let breaker = breaker(1);
        let now = Instant::now();
        fail_at(&breaker, now);
        let later = now + Duration::from_secs(30);
        let probe = breaker.admit_at(later).expect("the probe");
        assert_eq!(
            breaker
                .admit_at(later)
                .expect_err("one probe at a time")
                .retry_in,
            Duration::ZERO
        );
        probe.succeeded();
        assert_eq!(breaker.state(), CircuitState::Closed);
        breaker.admit_at(later).expect("closed").succeeded();
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_for_another_cooldown() {
        let breaker = breaker(1);
        let now = Instant::now();
        fail_at(&breaker, now);
        let later = now + Duration::from_secs(31);
        fail_at(&breaker, later);
        let refused = breaker
            .admit_at(later + Duration::from_secs(1))
            .expect_err("open again");
        assert_eq!(refused.retry_in, Duration::from_secs(29));
    }

    #[test]
    fn a_dropped_probe_frees_the_slot_and_a_late_failure_does_not_reopen() {
        let breaker = breaker(1);
        let now = Instant::now();
        let early = breaker.admit_at(now).expect("closed");
        fail_at(&breaker, now);
        // Admitted while closed, failing after the circuit opened: no new cool-down.
        early.failed_at(now + Duration::from_secs(20));
        let later = now + Duration::from_secs(30);
        drop(breaker.admit_at(later).expect("the probe"));
        breaker.admit_at(later).expect("the next probe").succeeded();
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[test]
    fn zero_failures_never_opens() {
        let breaker = breaker(0);
        let now = Instant::now();
        for _ in 0..100 {
            fail_at(&breaker, now);
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
    }
}
