//! Throttling of API-key guessing by client address: a tarpit, not a lock-out.
//!
//! Keys carry 256 random bits, so guessing one is not feasible; this keeps a guesser from even
//! trying at speed. Many firms reach the API through one CRM vendor's egress address, so a plain
//! lock-out of an address would let one misconfigured client (or one attacker behind the same
//! NAT) shut all of them out. Instead:
//!
//! - Every failed authentication (no key, an unknown, revoked or expired key) counts against the
//!   address it came from, in a fixed window of a minute.
//! - Past the limit, the address's failures are still answered 401 as before, but each only
//!   after [`TARPIT`], and at most [`GATE_WIDTH`] of them at once: a guesser gets a few tries a
//!   second, however many connections it opens. A failure that waits more than [`GATE_WAIT`]
//!   for its turn is answered 429 `rate_limited` with `Retry-After`.
//! - A valid key is never slowed: it is looked up and admitted before the address is consulted,
//!   so the firms behind a shared address keep their service while a guesser among them waits.
//!
//! IPv6 addresses count by their /64 (one host usually holds a whole /64). The counts live in
//! this process, bounded to [`TRACKED_ADDRESSES`] addresses; with several replicas a guesser
//! gets each replica's allowance, which at a few tries a second changes nothing about the odds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Addresses counted at once; past it, addresses whose window has ended are forgotten, and
/// while every tracked address is in a live window a new one is not counted.
pub const TRACKED_ADDRESSES: usize = 10_000;

/// How long a failure past the limit waits before its 401.
pub const TARPIT: Duration = Duration::from_secs(1);

/// Failures past the limit answered at once per address (each taking [`TARPIT`]).
pub const GATE_WIDTH: usize = 4;

/// How long a failure past the limit waits for its turn before it is answered 429.
pub const GATE_WAIT: Duration = Duration::from_secs(5);

/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Address {
    window_started: Instant,
    failures: u32,
    gate: Arc<Semaphore>,
}

/// The per-address counts.
#[derive(Debug)]
pub(crate) struct KeyGuard {
    limit: u32,
    addresses: Mutex<HashMap<IpAddr, Address>>,
}

/// What an address is counted under: itself, or its /64 for IPv6.
fn counted_as(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1_u128 << 64) - 1)).into()),
        },
    }
}

/// How a failed authentication is answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// 401 at once.
    Now,
    /// 401 after [`TARPIT`].
    Slowly,
    /// 429: too many failures were already waiting.
    Refuse,
}

impl KeyGuard {
    /// `limit` failed authentications per address per minute answered at once; `0` turns the
    /// guard off.
    pub(crate) fn new(limit: u32) -> Self {
        Self {
            limit,
            addresses: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Address>> {
        // Plain counters, valid whatever a panicking holder left.
        self.addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a failure from `address` at `now`; the gate to pass when it is past the limit.
    fn count(&self, address: IpAddr, now: Instant) -> Option<Arc<Semaphore>> {
        if self.limit == 0 {
            return None;
        }
        let mut addresses = self.lock();
        let counted = counted_as(address);
        if !addresses.contains_key(&counted) && addresses.len() >= TRACKED_ADDRESSES {
            addresses.retain(|_, a| now.duration_since(a.window_started) < WINDOW);
            if addresses.len() >= TRACKED_ADDRESSES {
                return None;
            }
        }
        let entry = addresses.entry(counted).or_insert_with(|| Address {
            window_started: now,
            failures: 0,
            gate: Arc::new(Semaphore::new(GATE_WIDTH)),
        });
        if now.duration_since(entry.window_started) >= WINDOW {
            entry.window_started = now;
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures == self.limit.saturating_add(1) {
            tracing::warn!(
                address = %counted,
                limit = self.limit,
                "too many failed API-key authentications from one address: its failures are slowed down"
            );
        }
        (entry.failures > self.limit).then(|| entry.gate.clone())
    }

    /// A failed authentication from `address`: counts it, and past the limit waits its turn and
    /// the tarpit before saying how to answer.
    pub(crate) async fn failed(&self, address: IpAddr) -> Answer {
        let Some(gate) = self.count(address, Instant::now()) else {
            return Answer::Now;
        };
        match tokio::time::timeout(GATE_WAIT, gate.acquire_owned()).await {
            Ok(Ok(_turn)) => {
                tokio::time::sleep(TARPIT).await;
                Answer::Slowly
            }
            // The semaphore is never closed; a closed one would refuse like a full one.
            Ok(Err(_)) | Err(_) => Answer::Refuse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUESSER: &str = "203.0.113.7";

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn slowed(guard: &KeyGuard, address: &str, now: Instant) -> bool {
        guard.count(ip(address), now).is_some()
    }

    #[test]
    fn failures_past_the_limit_are_slowed_until_the_window_ends() {
        let guard = KeyGuard::new(3);
        let now = Instant::now();
        for _ in 0..3 {
            assert!(!slowed(&guard, GUESSER, now), "within the limit");
        }
        assert!(slowed(&guard, GUESSER, now + Duration::from_secs(59)));
        assert!(
            !slowed(&guard, "198.51.100.1", now),
            "other addresses are not affected"
        );
        assert!(
            !slowed(&guard, GUESSER, now + WINDOW),
            "a new window counts afresh"
        );
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let guard = KeyGuard::new(2);
        let now = Instant::now();
        assert!(!slowed(&guard, "2001:db8:1:2::1", now));
        assert!(!slowed(&guard, "2001:db8:1:2:ffff::9", now));
        assert!(slowed(&guard, "2001:db8:1:2::77", now), "the same /64");
        assert!(!slowed(&guard, "2001:db8:1:3::1", now), "another /64");
        assert!(!slowed(&guard, "::ffff:203.0.113.7", now));
        assert!(!slowed(&guard, GUESSER, now));
        assert!(
            slowed(&guard, GUESSER, now),
            "mapped and plain IPv4 are one"
        );
    }

    #[test]
    fn zero_turns_it_off_and_the_table_stays_bounded() {
        let off = KeyGuard::new(0);
        let now = Instant::now();
        for _ in 0..1000 {
            assert!(!slowed(&off, GUESSER, now));
        }
        let guard = KeyGuard::new(5);
        for n in 0..(TRACKED_ADDRESSES as u32 + 500) {
            guard.count(IpAddr::from(n.to_be_bytes()), now);
        }
        assert_eq!(guard.lock().len(), TRACKED_ADDRESSES);
        guard.count(ip(GUESSER), now + WINDOW);
        assert_eq!(guard.lock().len(), 1, "ended windows make room");
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_limit_a_few_wait_their_turn_and_a_flood_is_refused() {
        let guard = Arc::new(KeyGuard::new(1));
        assert_eq!(guard.failed(ip(GUESSER)).await, Answer::Now);
        let started = tokio::time::Instant::now();
        assert_eq!(guard.failed(ip(GUESSER)).await, Answer::Slowly);
        assert_eq!(started.elapsed(), TARPIT);

        // Far more at once than the gate lets through within its wait.
        let flood: Vec<_> = (0..40)
            .map(|_| {
                let guard = guard.clone();
                tokio::spawn(async move { guard.failed(ip(GUESSER)).await })
            })
            .collect();
        let mut answers = Vec::new();
        for one in flood {
            answers.push(one.await.expect("task"));
        }
        let slowly = answers.iter().filter(|a| **a == Answer::Slowly).count();
        let refused = answers.iter().filter(|a| **a == Answer::Refuse).count();
        // A turn freed at the very instant the wait ends may go either way.
        assert!(
            (GATE_WIDTH * 5..=GATE_WIDTH * 6).contains(&slowly),
            "{slowly} let through: {GATE_WIDTH} a second for {GATE_WAIT:?}"
        );
        assert_eq!(slowly + refused, 40);
    }
}
