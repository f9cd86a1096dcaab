//! Limits shared by every replica on PostgreSQL: per-API-key request windows (one upsert per
//! request, which the row's lock serialises across replicas, so two servers count into the same
//! windows) and failed back-office logins (one row per failure, by hashed key).

use async_trait::async_trait;
use kyc_domain::ids::ApiKeyId;
use kyc_domain::ports::{InfrastructureError, LoginFailures, RequestLimits, WindowFull};
use kyc_store_support::engine::{Arg, Columns, Runner, Session, Statement, infra};
use std::sync::LazyLock;
use time::{Duration, OffsetDateTime};

use crate::PostgresStore;

/// Counts a request of key `$1` at `$2` under a per-minute limit `$3` and a per-day limit `$4`
/// (`0`: off), unless a window is full: a window that has run out restarts at `$2`; the request
/// counts in both windows only if both have room (`admitted`).
static ADMIT: LazyLock<String> = LazyLock::new(|| {
    let minute_fresh = "w.minute_started_at + interval '1 minute' <= $2";
    let day_fresh = "w.day_started_at + interval '1 day' <= $2";
    let minute_used = format!("(CASE WHEN {minute_fresh} THEN 0 ELSE w.minute_count END)");
    let day_used = format!("(CASE WHEN {day_fresh} THEN 0 ELSE w.day_count END)");
    let room = format!("(($3 = 0 OR {minute_used} < $3) AND ($4 = 0 OR {day_used} < $4))");
    format!(
        "INSERT INTO api_key_request_windows AS w \
         (key_id, minute_started_at, minute_count, day_started_at, day_count, admitted) \
         VALUES ($1, $2, 1, $2, 1, true) \
         ON CONFLICT (key_id) DO UPDATE SET \
         minute_started_at = CASE WHEN {minute_fresh} THEN $2 ELSE w.minute_started_at END, \
         minute_count = {minute_used} + CASE WHEN {room} THEN 1 ELSE 0 END, \
         day_started_at = CASE WHEN {day_fresh} THEN $2 ELSE w.day_started_at END, \
         day_count = {day_used} + CASE WHEN {room} THEN 1 ELSE 0 END, \
         admitted = {room} \
         RETURNING admitted, minute_started_at, minute_count, day_started_at, day_count"
    )
});

fn full(
    limit: u32,
    length: Duration,
    started_at: OffsetDateTime,
    now: OffsetDateTime,
) -> WindowFull {
    WindowFull {
        limit,
        window_seconds: length.whole_seconds().unsigned_abs(),
        retry_after_secs: (started_at + length - now)
            .whole_seconds()
            .max(1)
            .unsigned_abs(),
    }
}

#[async_trait]
impl RequestLimits for PostgresStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn admit(
        &self,
        key: ApiKeyId,
        now: OffsetDateTime,
        per_minute: u32,
        per_day: u32,
    ) -> Result<Result<(), WindowFull>, InfrastructureError> {
        if per_minute == 0 && per_day == 0 {
            return Ok(Ok(()));
        }
        let limit = |value: u32| Arg::Int4(i32::try_from(value).unwrap_or(i32::MAX));
        let statement = Statement::new(ADMIT.as_str())
            .id(key.as_uuid())
            .time(now)
            .arg(limit(per_minute))
            .arg(limit(per_day));
        let rows = self.execute_returning(statement).await.map_err(infra)?;
        let row = rows
            .first()
            .ok_or_else(|| InfrastructureError::internal("the request window wrote no row"))?;
        if row.flag("admitted")? {
            return Ok(Ok(()));
        }
        // The day is checked first, as a refusal by it lasts longest.
        let day_count = row.int("day_count")?;
        if per_day > 0 && day_count >= i64::from(per_day) {
            return Ok(Err(full(
                per_day,
                Duration::DAY,
                row.time("day_started_at")?,
                now,
            )));
        }
        Ok(Err(full(
            per_minute,
            Duration::MINUTE,
            row.time("minute_started_at")?,
            now,
        )))
    }
}

#[async_trait]
impl LoginFailures for PostgresStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn failures_since(
        &self,
        key: &str,
        since: OffsetDateTime,
    ) -> Result<(u32, Option<OffsetDateTime>), InfrastructureError> {
        let statement = Statement::new(
            "SELECT count(*) AS failures, min(failed_at) AS oldest FROM login_failures \
             WHERE key = $1 AND failed_at > $2",
        )
        .text(key)
        .time(since);
        let row = self
            .fetch_optional(statement)
            .await
            .map_err(infra)?
            .ok_or_else(|| InfrastructureError::internal("a count read no row"))?;
        Ok((
            u32::try_from(row.int("failures")?).unwrap_or(u32::MAX),
            row.opt_time("oldest")?,
        ))
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn record_failure(
        &self,
        keys: &[String],
        at: OffsetDateTime,
        forget_before: OffsetDateTime,
    ) -> Result<(), InfrastructureError> {
        let mut tx = self.begin_write().await?;
        tx.execute(
            Statement::new("DELETE FROM login_failures WHERE key = ANY($1) AND failed_at < $2")
                .arg(Arg::TextList(keys.to_vec()))
                .time(forget_before),
        )
        .await
        .map_err(infra)?;
        tx.execute(
            Statement::new(
                "INSERT INTO login_failures (key, failed_at) SELECT k, $2 FROM unnest($1::text[]) AS k",
            )
            .arg(Arg::TextList(keys.to_vec()))
            .time(at),
        )
        .await
        .map_err(infra)?;
        tx.commit().await.map_err(infra)
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn clear_failures(&self, key: &str) -> Result<(), InfrastructureError> {
        self.execute(Statement::new("DELETE FROM login_failures WHERE key = $1").text(key))
            .await
            .map_err(infra)?;
        Ok(())
    }
}
