//! Per-API-key rate limits, in memory: a burst window of one minute and a daily window of 24
//! hours, each a fixed window that starts with the key's first request in it. A limit of `0`
//! disables that window.
//!
//! This counter is in memory, so it counts per process: it serves a single server (the embedded
//! SQLite database). Replicas on PostgreSQL share their windows through the
//! `kyc_domain::ports::RequestLimits` port instead (`HttpPorts::limits`), with the same windows
//! and the same answers.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use kyc_domain::ids::ApiKeyId;
use kyc_domain::ports::{InfrastructureError, RequestLimits, WindowFull};
use time::{Duration, OffsetDateTime};

const MINUTE: Duration = Duration::minutes(1);
const DAY: Duration = Duration::days(1);

#[derive(Debug, Clone, Copy)]
struct Window {
    started_at: OffsetDateTime,
    count: u32,
}

#[derive(Debug, Default, Clone, Copy)]
struct KeyWindows {
    minute: Option<Window>,
    day: Option<Window>,
}

/// Counts requests per key in this process and refuses those over a limit.
#[derive(Debug, Default)]
pub struct RateLimiter {
    keys: Mutex<HashMap<ApiKeyId, KeyWindows>>,
}

/// Checks one request against `window`, or says when the window frees up; the count is left to
/// the caller, so a request refused by the other window is not counted in this one.
fn check(
    window: &mut Option<Window>,
    limit: u32,
    length: Duration,
    now: OffsetDateTime,
) -> Result<(), WindowFull> {
    if limit == 0 {
        return Ok(());
    }
    let current = match window {
        Some(w) if now < w.started_at + length => *w,
        _ => Window {
            started_at: now,
            count: 0,
        },
    };
    if current.count >= limit {
        let remaining = (current.started_at + length - now).whole_seconds();
        return Err(WindowFull {
            limit,
            window_seconds: u64::try_from(length.whole_seconds()).unwrap_or(60),
            retry_after_secs: u64::try_from(remaining).unwrap_or(1).max(1),
        });
    }
    *window = Some(current);
    Ok(())
}

impl RateLimiter {
    /// Counts a request of `key` at `now` under `per_minute` and `per_day` (`0` disables either).
    ///
    /// # Errors
    /// [`WindowFull`] with the window that is full and when it frees up; a refused request is not
    /// counted.
    pub fn admit(
        &self,
        key: ApiKeyId,
        now: OffsetDateTime,
        per_minute: u32,
        per_day: u32,
    ) -> Result<(), WindowFull> {
        if per_minute == 0 && per_day == 0 {
            return Ok(());
        }
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = keys.entry(key).or_default();
        // Check both windows on copies first, so a refusal counts in neither.
        let mut minute = entry.minute;
        let mut day = entry.day;
        check(&mut day, per_day, DAY, now)?;
        check(&mut minute, per_minute, MINUTE, now)?;
        if let Some(w) = minute.as_mut() {
            w.count += 1;
        }
        if let Some(w) = day.as_mut() {
            w.count += 1;
        }
        entry.minute = minute;
        entry.day = day;
        Ok(())
    }
}

#[async_trait]
impl RequestLimits for RateLimiter {
    async fn admit(
        &self,
        key: ApiKeyId,
        now: OffsetDateTime,
        per_minute: u32,
        per_day: u32,
    ) -> Result<Result<(), WindowFull>, InfrastructureError> {
        Ok(RateLimiter::admit(self, key, now, per_minute, per_day))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn key(n: u128) -> ApiKeyId {
        ApiKeyId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn the_burst_limit_refuses_with_the_seconds_left_in_the_window() {
        let limiter = RateLimiter::default();
        let admit = |key, at| limiter.admit(key, at, 2, 0);
        let t0 = datetime!(2026-07-01 09:00:00 UTC);
        admit(key(1), t0).unwrap();
        admit(key(1), t0 + Duration::seconds(10)).unwrap();
        match admit(key(1), t0 + Duration::seconds(48)) {
            Err(WindowFull {
                limit,
                window_seconds,
                retry_after_secs,
            }) => {
                assert_eq!((limit, window_seconds, retry_after_secs), (2, 60, 12));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Another key has its own budget; the window frees up after a minute.
        admit(key(2), t0).unwrap();
        admit(key(1), t0 + Duration::seconds(60)).unwrap();
    }

    #[test]
    fn the_daily_limit_holds_across_minutes_and_zero_disables() {
        let limiter = RateLimiter::default();
        let admit = |key, at| limiter.admit(key, at, 0, 3);
        let t0 = datetime!(2026-07-01 09:00:00 UTC);
        for minute in 0..3 {
            admit(key(1), t0 + Duration::minutes(minute)).unwrap();
        }
        let refused = admit(key(1), t0 + Duration::hours(5));
        assert!(
            matches!(
                refused,
                Err(WindowFull {
                    window_seconds: 86_400,
                    ..
                })
            ),
            "{refused:?}"
        );
        let unlimited = RateLimiter::default();
        for _ in 0..1000 {
            unlimited.admit(key(1), t0, 0, 0).unwrap();
        }
    }

    #[test]
    fn a_refused_request_is_not_counted() {
        let limiter = RateLimiter::default();
        let admit = |key, at| limiter.admit(key, at, 1, 2);
        let t0 = datetime!(2026-07-01 09:00:00 UTC);
        admit(key(1), t0).unwrap();
        for _ in 0..5 {
            assert!(admit(key(1), t0).is_err());
        }
        // Only one request was counted against the day, so one more fits after the minute.
        admit(key(1), t0 + Duration::minutes(1)).unwrap();
    }
}
