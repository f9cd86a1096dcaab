//! The move of stored times to RFC 3339: customer states, the feed's states and the audit trail's
//! changes written before it held their times as integers of nanoseconds or as `time`'s arrays of
//! nine integers. [`upgrade_stored_times`] rewrites them once per database (each adapter's
//! `migrate` runs it after the schema migrations); until it has, and for a row a server of the
//! previous release writes meanwhile, the domain's reader accepts all three forms
//! (`kyc_domain::values::stored_time`).
//!
//! Only the encoding changes, never the instant, so a customer's `version` stays as it is: a
//! decoded state cached at that version is still exactly what the row says. A row saved by
//! someone else while its batch was read is left alone (its save wrote it anew).

use kyc_domain::ports::InfrastructureError;
use kyc_domain::values::stored_time;
use serde_json::Value;
use time::OffsetDateTime;

use crate::engine::{Arg, Columns, Dialect, Engine, Session, Statement, infra};

/// The members that hold a stored time, in states and in changes.
const TIME_MEMBERS: &[&str] = &[
    "at",
    "claimed_at",
    "confirmed_at",
    "created_at",
    "ended_at",
    "found_at",
    "kyc_completed_at",
    "kyc_started_at",
    "last_reviewed_at",
    "next_screening_due",
    "opened_at",
    "screened_at",
    "updated_at",
];

/// The name the move is recorded under in `data_migrations`.
const NAME: &str = "0001_rfc3339_times";

/// Rows read and rewritten per statement.
const BATCH: i64 = 500;

/// A legacy stored time (an integer of nanoseconds, or `time`'s array) read back.
fn legacy_time(value: &Value) -> Option<OffsetDateTime> {
    match value {
        Value::Number(_) | Value::Array(_) => {
            #[derive(serde::Deserialize)]
            struct Stored(#[serde(with = "stored_time")] OffsetDateTime);
            serde_json::from_value::<Stored>(value.clone())
                .ok()
                .map(|Stored(at)| at)
        }
        _ => None,
    }
}

/// Rewrites every legacy time in `value` (a member named as a time whose value is a legacy time)
/// as RFC 3339; whether it rewrote any.
pub fn upgrade(value: &mut Value) -> bool {
    match value {
        Value::Object(members) => {
            let mut changed = false;
            for (name, member) in members.iter_mut() {
                if TIME_MEMBERS.contains(&name.as_str())
                    && let Some(text) = legacy_time(member).and_then(stored_time::format)
                {
                    *member = Value::String(text);
                    changed = true;
                } else {
                    changed |= upgrade(member);
                }
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| upgrade(item) | changed),
        _ => false,
    }
}

/// How many rows the move rewrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upgraded {
    /// Customer states.
    pub customers: u64,
    /// States in the event feed.
    pub notifications: u64,
    /// Audit events' changes.
    pub events: u64,
}

/// Rewrites the legacy times of every stored state and audit change as RFC 3339, once: a database
/// where it has run (recorded in `data_migrations`) is left alone.
///
/// # Errors
/// [`InfrastructureError`] when the database fails; what was rewritten stays rewritten, and the
/// next run carries on.
pub async fn upgrade_stored_times<E: Engine>(engine: &E) -> Result<Upgraded, InfrastructureError> {
    let done = Statement::new("SELECT name FROM data_migrations WHERE name = $1").text(NAME);
    if engine.fetch_optional(done).await.map_err(infra)?.is_some() {
        return Ok(Upgraded::default());
    }
    let upgraded = Upgraded {
        customers: customers(engine).await?,
        notifications: notifications(engine).await?,
        events: events(engine).await?,
    };
    let record = Statement::new(
        "INSERT INTO data_migrations (name, done_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .text(NAME)
    .time(OffsetDateTime::now_utc());
    engine.execute(record).await.map_err(infra)?;
    if upgraded != Upgraded::default() {
        tracing::info!(
            customers = upgraded.customers,
            notifications = upgraded.notifications,
            events = upgraded.events,
            "stored times rewritten as RFC 3339"
        );
    }
    Ok(upgraded)
}

/// The customer states, in batches by id; each row rewritten only at the version it was read at.
async fn customers<E: Engine>(engine: &E) -> Result<u64, InfrastructureError> {
    let mut after = uuid::Uuid::nil();
    let mut rewritten = 0;
    loop {
        let page = Statement::new(
            "SELECT id, version, state FROM customers WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .id(after)
        .int(BATCH);
        let rows = engine.fetch_all(page).await.map_err(infra)?;
        for row in &rows {
            after = row.id("id")?;
            let mut state: Value = row.json("state")?;
            if upgrade(&mut state) {
                let save = Statement::new(
                    "UPDATE customers SET state = $1 WHERE id = $2 AND version = $3",
                )
                .arg(Arg::Json(state))
                .id(after)
                .int(row.int("version")?);
                rewritten += engine.execute(save).await.map_err(infra)?;
            }
        }
        if rows.len() < BATCH as usize {
            return Ok(rewritten);
        }
    }
}

/// The feed's states (written once, never changed), in batches by sequence.
async fn notifications<E: Engine>(engine: &E) -> Result<u64, InfrastructureError> {
    let mut after = 0;
    let mut rewritten = 0;
    loop {
        let page = Statement::new(
            "SELECT id, state FROM notifications WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .int(after)
        .int(BATCH);
        let rows = engine.fetch_all(page).await.map_err(infra)?;
        for row in &rows {
            after = row.int("id")?;
            let Some(mut state) = row.opt_json::<Value>("state")? else {
                continue;
            };
            if upgrade(&mut state) {
                let save = Statement::new("UPDATE notifications SET state = $1 WHERE id = $2")
                    .arg(Arg::Json(state))
                    .int(after);
                rewritten += engine.execute(save).await.map_err(infra)?;
            }
        }
        if rows.len() < BATCH as usize {
            return Ok(rewritten);
        }
    }
}

/// The statement that opens the append-only audit trail to change inside the current transaction,
/// and the one that closes it again: on PostgreSQL its trigger is disabled, on SQLite (where a
/// trigger cannot be) dropped and created again as the schema defines it. Both are
/// transactional, so no other writer ever sees the trail open.
pub fn trail_opening(dialect: Dialect) -> (&'static str, &'static str) {
    match dialect {
        Dialect::Postgres => (
            "ALTER TABLE events DISABLE TRIGGER events_append_only",
            "ALTER TABLE events ENABLE TRIGGER events_append_only",
        ),
        Dialect::Sqlite => (
            "DROP TRIGGER events_refuse_update",
            "CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events \
             BEGIN SELECT RAISE(ABORT, 'events are append-only'); END",
        ),
    }
}

/// The audit trail's changes that hold a time, in one transaction. The trail is append-only (a
/// trigger refuses any change); the move rewrites only the encoding of times, opening the trail
/// inside its own transaction ([`trail_opening`]), so a failure leaves both the rows and the
/// trigger as they were.
async fn events<E: Engine>(engine: &E) -> Result<u64, InfrastructureError> {
    let mut tx = engine.begin_write().await?;
    let (open, close) = trail_opening(E::DIALECT);
    let holding = match E::DIALECT {
        Dialect::Postgres => "change::text LIKE '%\\_at\"%'",
        Dialect::Sqlite => "change LIKE '%\\_at\"%' ESCAPE '\\'",
    };
    tx.execute(Statement::new(open)).await.map_err(infra)?;
    let mut after = 0;
    let mut rewritten = 0;
    loop {
        let page = Statement::new(format!(
            "SELECT sequence, change FROM events WHERE sequence > $1 AND {holding} \
             ORDER BY sequence LIMIT $2"
        ))
        .int(after)
        .int(BATCH);
        let rows = tx.fetch_all(page).await.map_err(infra)?;
        for row in &rows {
            after = row.int("sequence")?;
            let mut change: Value = row.json("change")?;
            if upgrade(&mut change) {
                let save = Statement::new("UPDATE events SET change = $1 WHERE sequence = $2")
                    .arg(Arg::Json(change))
                    .int(after);
                rewritten += tx.execute(save).await.map_err(infra)?;
            }
        }
        if rows.len() < BATCH as usize {
            break;
        }
    }
    tx.execute(Statement::new(close)).await.map_err(infra)?;
    tx.commit().await.map_err(infra)?;
    Ok(rewritten)
}

/// A form stored times took before RFC 3339 (for tests that write the rows of an older release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legacy {
    /// One integer of nanoseconds since the Unix epoch.
    Nanoseconds,
    /// `time`'s array of nine integers.
    Array,
}

/// Rewrites every RFC 3339 time in `value` (no other string in a state or a change parses as one)
/// into `form`, whatever member holds it: the document as an older release wrote it. How many it
/// rewrote.
///
/// # Panics
/// On a time outside what 64 bits of nanoseconds hold, in the nanoseconds form.
pub fn to_legacy(value: &mut Value, form: Legacy) -> usize {
    match value {
        Value::String(text) => match stored_time::parse(text) {
            Ok(at) => {
                *value = match form {
                    Legacy::Array => serde_json::to_value(at).expect("a time serializes"),
                    Legacy::Nanoseconds => Value::from(
                        i64::try_from(at.unix_timestamp_nanos()).expect("within 64 bits"),
                    ),
                };
                1
            }
            Err(_) => 0,
        },
        Value::Array(items) => items.iter_mut().map(|item| to_legacy(item, form)).sum(),
        Value::Object(members) => members
            .values_mut()
            .map(|member| to_legacy(member, form))
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_time_of_a_state_and_a_change_is_upgraded_and_nothing_else_moves() {
        use kyc_domain::testkit::strategies::{self, command};
        use proptest::strategy::{Strategy, ValueTree};
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let commands = proptest::collection::vec(command(), 1..60);
        let mut times_seen = 0;
        for _ in 0..200 {
            let mut customer = strategies::fresh_customer();
            let mut changes = Vec::new();
            for (step, command) in commands
                .new_tree(&mut runner)
                .unwrap()
                .current()
                .iter()
                .enumerate()
            {
                if let Ok(events) = strategies::run(&mut customer, command, step) {
                    changes.extend(events.into_iter().map(|event| event.change));
                }
            }
            let mut documents = vec![serde_json::to_value(customer.state()).unwrap()];
            documents.extend(
                changes
                    .iter()
                    .map(|change| serde_json::to_value(change).unwrap()),
            );
            for current in documents {
                let mut again = current.clone();
                assert!(!upgrade(&mut again), "a current document is left as it is");
                for form in [Legacy::Nanoseconds, Legacy::Array] {
                    let mut legacy = current.clone();
                    let downgraded = to_legacy(&mut legacy, form);
                    times_seen += downgraded;
                    assert_eq!(upgrade(&mut legacy), downgraded > 0);
                    assert_eq!(
                        legacy, current,
                        "every legacy time found by its member's name"
                    );
                }
            }
        }
        assert!(times_seen > 1_000, "only {times_seen} times seen");
    }
}
