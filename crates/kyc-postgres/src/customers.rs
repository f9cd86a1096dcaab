//! [`CustomerStore`] on Postgres: the customer row (indexed columns plus the serialized state), its
//! attempts side table, audit events, outbox rows and seen provider events, written in one
//! transaction.

use std::sync::LazyLock;

use futures::TryStreamExt;
use kyc_domain::customer::Customer;
use kyc_domain::events::{DomainEvent, NotificationType, OutboxMessage};
use kyc_domain::ids::{ApplicantId, FirmId};
use kyc_domain::ports::{
    CustomerPage, InfrastructureError, InsertOrMatch, ListOrder, ListQuery, SaveError, Saved,
    UpsertCandidates, insert_unless_matched_in_two_steps,
};
use kyc_domain::provider::ProviderEventKey;
use kyc_domain::values::ExternalId;
use sqlx::{Postgres, QueryBuilder, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{PostgresStore, at_micros, fit, infra, state_json};
use kyc_store_support::customers;
use kyc_store_support::engine::Columns;
use kyc_store_support::rules::{self, move_time, phase_str, provider_key};

use crate::engine::PgColumns;
use sqlx::types::Json;

/// What every read of customers selects: the version and id first, to look the decoded state up
/// in the cache, then the stored state, parsed only when the cache misses.
pub(crate) const COLUMNS: &str = "SELECT version, state, id FROM customers";

impl PostgresStore {
    /// Remembers the state just committed for `customer`, now as `saved` says, so the next read of
    /// it skips the parse.
    fn remember(&self, customer: &Customer, saved: Saved) {
        if self.states.enabled() {
            rules::remember(&self.states, &customer.as_saved(saved));
        }
    }
}

/// The time a write records (`stamp.at`, then `stamp.rfc3339`, its RFC 3339 form in UTC, for the
/// stored state): the database's
/// clock as the statement runs, or the customer's own `updated_at` (`$5`) if that is later. The
/// transaction takes its id first (`pg_current_xact_id()`, in a sub-select kept apart by
/// `OFFSET 0` and filtered on, so the planner neither drops it nor reads the clock before it),
/// so from before the stamp to the commit this
/// statement shows in `pg_stat_activity` as active with a transaction id: what the list's settled
/// horizon ([`HORIZON`]) looks for.
const STAMP: &str = "stamp AS MATERIALIZED ( \
     SELECT at, to_jsonb(to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')) AS rfc3339 \
     FROM (SELECT greatest($5::timestamptz, clock_timestamp()) AS at \
           FROM (SELECT pg_current_xact_id() AS id OFFSET 0) AS xact WHERE xact.id IS NOT NULL) AS now)";

/// The row statement of an insert: a new customer at version 1, updated at the stamp, and created
/// at it too when nothing was done to it since it was created (`$26` null); else created at its
/// own `created_at` (`$26`).
const INSERT_ROW: &str = "INSERT INTO customers (external_id, email_normalized, kyc_status, aml_status, updated_at, state, next_screening_due, id, firm_id, version, created_at) \
     SELECT $1, $2, $3, $4, stamp.at, \
         CASE WHEN $26::timestamptz IS NULL \
             THEN jsonb_set(jsonb_set($6, '{updated_at}', stamp.rfc3339), '{created_at}', stamp.rfc3339) \
             ELSE jsonb_set($6, '{updated_at}', stamp.rfc3339) END, \
         $7, $8, $9, $10, coalesce($26::timestamptz, stamp.at) \
     FROM stamp";

/// The row statement of a save: the customer still at version `$10`, updated at the stamp.
const UPDATE_ROW: &str = "UPDATE customers SET external_id = $1, email_normalized = $2, kyc_status = $3, aml_status = $4, \
     updated_at = stamp.at, version = version + 1, state = jsonb_set($6, '{updated_at}', stamp.rfc3339), \
     next_screening_due = $7 \
     FROM stamp WHERE id = $8 AND firm_id = $9 AND version = $10";

/// Records the inbound provider event (`$11`) as applied at the time of the move (`$12`).
const INBOUND_PART: &str = "inbound AS ( \
     INSERT INTO provider_events (key, firm_id, outcome, payload, recorded_at) \
     SELECT $11, saved.firm_id, 'applied', NULL, $12 FROM saved)";

/// Writes the attempts (`$13`–`$18`), rewriting a stored one only where it changed.
const ATTEMPTS_PART: &str = "attempts AS ( \
     INSERT INTO verification_attempts (firm_id, customer_id, number, external_user_id, applicant_id, phase, claimed_at, link_token_hash) \
     SELECT saved.firm_id, saved.id, a.number, a.external_user_id, a.applicant_id, a.phase, a.claimed_at, a.link_token_hash \
     FROM saved, unnest($13::int4[], $14::text[], $15::text[], $16::text[], $17::timestamptz[], $18::text[]) \
         AS a(number, external_user_id, applicant_id, phase, claimed_at, link_token_hash) \
     ON CONFLICT (customer_id, number) DO UPDATE \
     SET applicant_id = excluded.applicant_id, phase = excluded.phase, link_token_hash = excluded.link_token_hash \
     WHERE verification_attempts.applicant_id IS DISTINCT FROM excluded.applicant_id \
     OR verification_attempts.phase IS DISTINCT FROM excluded.phase \
     OR verification_attempts.link_token_hash IS DISTINCT FROM excluded.link_token_hash)";

/// Appends the audit events (`$19`–`$24`) in the order given.
const EVENTS_PART: &str = "new_events AS ( \
     INSERT INTO events (id, firm_id, customer_id, at, actor, change, note, provider_event_key) \
     SELECT e.id, saved.firm_id, saved.id, e.at, e.actor, e.change, e.note, e.provider_event_key \
     FROM saved, unnest($19::uuid[], $20::timestamptz[], $21::jsonb[], $22::jsonb[], $23::text[], $24::text[]) \
         WITH ORDINALITY AS e(id, at, actor, change, note, provider_event_key, position) \
     ORDER BY e.position)";

/// Appends the one audit event of most moves (`$19`–`$24` as plain values): no arrays to unnest
/// and no order to keep, so the plan has two nodes fewer to start and run.
const EVENT_PART: &str = "new_events AS ( \
     INSERT INTO events (id, firm_id, customer_id, at, actor, change, note, provider_event_key) \
     SELECT $19::uuid, saved.firm_id, saved.id, $20::timestamptz, $21::jsonb, $22::jsonb, $23::text, $24::text \
     FROM saved)";

/// The endpoints a notification of type `{type}` of the firm `{firm}` is queued for: the firm's
/// endpoints that are enabled and want it (no types: all), as [`CustomerStore::insert`] says.
fn wanting(notification: &str, firm: &str) -> String {
    format!(
        "webhook_endpoints AS endpoint ON endpoint.firm_id = {firm} \
         AND endpoint.disabled_at IS NULL AND endpoint.deleted_at IS NULL \
         AND (cardinality(endpoint.event_types) = 0 OR {notification} = ANY (endpoint.event_types))"
    )
}

/// Queues the deliveries of the notifications just written (`new_notifications`), in their
/// order, one per endpoint that wants each. The first of them for an endpoint is the head of
/// the customer's chain there when no earlier message of the chain is unfinished
/// ([`CHAIN_BUSY`]).
fn deliveries_part() -> String {
    format!(
        "new_messages AS ( \
         INSERT INTO webhook_messages (firm_id, endpoint_id, customer_id, notification_id, next_attempt_at, head) \
         SELECT n.firm_id, endpoint.id, n.customer_id, n.id, n.occurred_at, \
             busy.id IS NULL AND row_number() OVER (PARTITION BY endpoint.id ORDER BY n.id) = 1 \
         FROM new_notifications AS n JOIN {} \
         LEFT JOIN LATERAL ({}) AS busy ON true \
         ORDER BY n.id, endpoint.id)",
        wanting("n.type", "n.firm_id"),
        kyc_store_support::deliveries::chain_busy("endpoint.id", "n.customer_id")
    )
}

/// The customer as the row statement left it, for the feed: its stored state (which carries the
/// version it was loaded at) at the version the row now has.
const SAVED_STATE: &str = "jsonb_set(saved.state, '{version}', to_jsonb(saved.version))";

/// Writes the outbox messages (`$25`, their notification types `$27`) in the order given: work
/// (no type) to the outbox, due at the time of the move (`$12`); notifications to the feed with
/// the customer as saved, stamped as the customer is, and queued for delivery.
fn outbox_part() -> String {
    format!(
        "new_outbox AS ( \
         INSERT INTO outbox (firm_id, message, created_at, next_attempt_at) \
         SELECT saved.firm_id, m.message, $12, $12 \
         FROM saved, unnest($25::jsonb[], $27::text[]) WITH ORDINALITY AS m(message, notification, position) \
         WHERE m.notification IS NULL \
         ORDER BY m.position), \
         new_notifications AS ( \
         INSERT INTO notifications (firm_id, customer_id, type, message, state, occurred_at) \
         SELECT saved.firm_id, saved.id, m.notification, m.message, {SAVED_STATE}, stamp.at \
         FROM saved, stamp, unnest($25::jsonb[], $27::text[]) WITH ORDINALITY AS m(message, notification, position) \
         WHERE m.notification IS NOT NULL \
         ORDER BY m.position \
         RETURNING id, firm_id, customer_id, type, occurred_at), {}",
        deliveries_part()
    )
}

/// Writes the one outbox message of most moves (`$25`, its notification type `$27`, as plain
/// values) as [`outbox_part`] does.
fn message_part() -> String {
    format!(
        "new_outbox AS ( \
         INSERT INTO outbox (firm_id, message, created_at, next_attempt_at) \
         SELECT saved.firm_id, $25::jsonb, $12, $12 FROM saved WHERE $27::text IS NULL), \
         new_notifications AS ( \
         INSERT INTO notifications (firm_id, customer_id, type, message, state, occurred_at) \
         SELECT saved.firm_id, saved.id, $27::text, $25::jsonb, {SAVED_STATE}, stamp.at \
         FROM saved, stamp WHERE $27::text IS NOT NULL \
         RETURNING id, firm_id, customer_id, type, occurred_at), {}",
        deliveries_part()
    )
}

/// How many rows a part of a write has.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rows {
    None,
    One,
    Many,
}

impl Rows {
    fn of<T>(items: &[T]) -> Self {
        match items.len() {
            0 => Self::None,
            1 => Self::One,
            _ => Self::Many,
        }
    }

    const ALL: [Self; 3] = [Self::None, Self::One, Self::Many];
}

/// What a write has besides the customer row; each part present adds its statement.
#[derive(Clone, Copy)]
struct Parts {
    inbound: bool,
    attempts: bool,
    events: Rows,
    outbox: Rows,
}

impl Parts {
    /// An index into [`WRITE_STATEMENTS`] for these parts after the row statement `row`.
    fn index(self, row: RowWrite) -> usize {
        let flags = usize::from(matches!(row, RowWrite::Update(_))) << 2
            | usize::from(self.inbound) << 1
            | usize::from(self.attempts);
        (flags * 3 + self.events as usize) * 3 + self.outbox as usize
    }
}

/// Every statement a write can be: the row statement (named `saved`, `RETURNING firm_id, id, …`)
/// followed by the parts the write has, each a data-modifying statement against `saved`, over
/// arrays unnested (several rows) or plain values (one row). One statement is one round trip and
/// commits atomically on its own: when the row statement touches nothing (a stale version) no
/// part writes anything either, and a refused part (a provider event already recorded) aborts
/// the whole statement. A part with nothing to write is left out rather than run empty, so the
/// statement does not open (and lock) its table and indexes; each variant is prepared once per
/// connection, when first used.
///
/// The parameters keep their numbers in every variant (`$1`–`$10` and `$26` the row, then the
/// parts' own, the outbox's `$25` and `$27`); every variant binds all 27, and those it does not
/// reference are bound empty (their types come with the statement, so they need no use).
static WRITE_STATEMENTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut statements = Vec::with_capacity(72);
    for row in [RowWrite::Insert, RowWrite::Update(0)] {
        for inbound in [false, true] {
            for attempts in [false, true] {
                for events in Rows::ALL {
                    for outbox in Rows::ALL {
                        let parts = Parts {
                            inbound,
                            attempts,
                            events,
                            outbox,
                        };
                        debug_assert_eq!(parts.index(row), statements.len());
                        statements.push(write_statement(row, parts));
                    }
                }
            }
        }
    }
    statements
});

/// The text of one [`WRITE_STATEMENTS`] variant.
fn write_statement(row: RowWrite, parts: Parts) -> String {
    let row = match row {
        RowWrite::Insert => INSERT_ROW,
        RowWrite::Update(_) => UPDATE_ROW,
    };
    let mut statement =
        format!("WITH {STAMP}, saved AS ({row} RETURNING firm_id, id, state, version)");
    push_parts(&mut statement, parts);
    statement.push_str(" SELECT stamp.at FROM saved, stamp");
    statement
}

/// The upsert's look-up (the customer with external id `$1`, else the firm's oldest with email
/// `$2`, in firm `$9`; the fourth column says which), a materialized CTE named `found`. The
/// `LIMIT` stops at the first branch that finds one: the upsert table does not look at the email
/// match when the external id matched.
const FOUND: &str = "found AS MATERIALIZED ( \
     (SELECT version, state, id, 0 AS found_by FROM customers WHERE firm_id = $9 AND external_id = $1) \
     UNION ALL \
     (SELECT version, state, id, 1 FROM customers WHERE firm_id = $9 AND email_normalized = $2 ORDER BY created_at, id LIMIT 1) \
     LIMIT 1)";

/// [`STAMP`] for an insert that runs only when [`FOUND`] is empty: otherwise it has no row, so
/// nothing after it writes, and the transaction never takes an id.
const STAMP_UNLESS_FOUND: &str = "stamp AS MATERIALIZED ( \
     SELECT at, to_jsonb(to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')) AS rfc3339 \
     FROM (SELECT greatest($5::timestamptz, clock_timestamp()) AS at \
           FROM (SELECT pg_current_xact_id() AS id \
                 FROM (SELECT WHERE NOT EXISTS (SELECT FROM found)) AS unmatched OFFSET 0) AS xact \
           WHERE xact.id IS NOT NULL) AS now)";

/// The insert of a new customer with its parts, run only when the upsert's look-up finds no
/// match, in one statement ([`CustomerStore::insert_unless_matched`]). Its rows: the match
/// (`version, state, id, found_by` as [`COLUMNS`] then which look-up, `at` null), or the stamp of
/// the insert (the first four null).
fn insert_unless_found_statement(parts: Parts) -> String {
    let mut statement = format!(
        "WITH {FOUND}, {STAMP_UNLESS_FOUND}, saved AS ({INSERT_ROW} RETURNING firm_id, id, state, version)"
    );
    push_parts(&mut statement, parts);
    statement.push_str(
        " SELECT version, state, id, found_by, NULL::timestamptz AS at FROM found \
         UNION ALL SELECT NULL, NULL, NULL, NULL, stamp.at FROM saved, stamp",
    );
    statement
}

/// The [`insert_unless_found_statement`] variants, by `events * 3 + outbox` (a new customer has
/// no attempts and no inbound event).
static INSERT_UNLESS_FOUND_STATEMENTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut statements = Vec::with_capacity(9);
    for events in Rows::ALL {
        for outbox in Rows::ALL {
            statements.push(insert_unless_found_statement(Parts {
                inbound: false,
                attempts: false,
                events,
                outbox,
            }));
        }
    }
    statements
});

/// Appends the parts a write has to its statement, each a data-modifying CTE against `saved`.
fn push_parts(statement: &mut String, parts: Parts) {
    let events = match parts.events {
        Rows::None => None,
        Rows::One => Some(EVENT_PART),
        Rows::Many => Some(EVENTS_PART),
    };
    let outbox = match parts.outbox {
        Rows::None => None,
        Rows::One => Some(message_part()),
        Rows::Many => Some(outbox_part()),
    };
    let inbound = parts.inbound.then_some(INBOUND_PART);
    let attempts = parts.attempts.then_some(ATTEMPTS_PART);
    for part in [inbound, attempts, events, outbox.as_deref()]
        .into_iter()
        .flatten()
    {
        statement.push_str(", ");
        statement.push_str(part);
    }
}

/// Which row statement a write starts with.
#[derive(Clone, Copy)]
enum RowWrite {
    /// [`INSERT_ROW`] at version 1.
    Insert,
    /// [`UPDATE_ROW`] of the row still at this version.
    Update(i64),
}

/// The parts `customer`'s write has.
fn parts_of(
    customer: &Customer,
    events: &[DomainEvent],
    outbox: &[OutboxMessage],
    inbound: Option<&ProviderEventKey>,
) -> Parts {
    Parts {
        inbound: inbound.is_some(),
        attempts: !customer.attempts.is_empty(),
        events: Rows::of(events),
        outbox: Rows::of(outbox),
    }
}

/// Runs the [`WRITE_STATEMENTS`] variant `customer`'s write needs, returning the stamp it was
/// written at, or `None` when it wrote no row (a save whose version moved).
async fn write(
    pool: &sqlx::PgPool,
    row: RowWrite,
    customer: &Customer,
    events: &[DomainEvent],
    outbox: &[OutboxMessage],
    inbound: Option<&ProviderEventKey>,
) -> Result<Option<OffsetDateTime>, SaveError> {
    let statement = &WRITE_STATEMENTS[parts_of(customer, events, outbox, inbound).index(row)];
    bind_write(statement, row, customer, events, outbox, inbound)?
        .fetch_optional(pool)
        .await
        .map_err(rules::save_error::<PostgresStore>)?
        .map(|stamped| stamped.try_get(0).map_err(infra))
        .transpose()
        .map_err(SaveError::Infrastructure)
}

/// `statement` (a [`WRITE_STATEMENTS`] or [`INSERT_UNLESS_FOUND_STATEMENTS`] variant) with every
/// parameter of `customer`'s write bound.
fn bind_write<'q>(
    statement: &'q str,
    row: RowWrite,
    customer: &'q Customer,
    events: &'q [DomainEvent],
    outbox: &'q [OutboxMessage],
    inbound: Option<&'q ProviderEventKey>,
) -> Result<sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>, SaveError> {
    let attempts = &customer.attempts;
    let mut numbers = Vec::with_capacity(attempts.len());
    for attempt in attempts {
        numbers.push(fit::<i32, _>(attempt.number.get())?);
    }
    let version = match row {
        RowWrite::Insert => 1,
        RowWrite::Update(version) => version,
    };
    let parts = parts_of(customer, events, outbox, inbound);
    let mut query = sqlx::query(statement)
        .bind(customer.external_id.as_ref().map(ExternalId::as_str))
        .bind(customer.email.normalized())
        .bind(customer.kyc_status.as_str())
        .bind(customer.aml.status.as_str())
        .bind(at_micros(customer.updated_at))
        .bind(Json(state_json(customer.state())?))
        .bind(customer.aml.next_screening_due.map(at_micros))
        .bind(customer.id.as_uuid())
        .bind(customer.firm_id.as_uuid())
        .bind(version)
        .bind(inbound.map(ProviderEventKey::as_str))
        .bind(at_micros(move_time(customer, events)))
        .bind(numbers)
        .bind(
            attempts
                .iter()
                .map(|a| a.external_user_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            attempts
                .iter()
                .map(|a| a.applicant_id.as_ref().map(ApplicantId::as_str))
                .collect::<Vec<_>>(),
        )
        .bind(
            attempts
                .iter()
                .map(|a| phase_str(a.phase))
                .collect::<Vec<_>>(),
        )
        .bind(
            attempts
                .iter()
                .map(|a| at_micros(a.claimed_at))
                .collect::<Vec<_>>(),
        )
        .bind(
            attempts
                .iter()
                .map(|a| a.link_token_hash.as_deref())
                .collect::<Vec<_>>(),
        );
    query = match (parts.events, events) {
        (Rows::One, [event]) => query
            .bind(Uuid::now_v7())
            .bind(at_micros(event.at))
            .bind(Json(&event.actor))
            .bind(Json(&event.change))
            .bind(event.note.as_deref())
            .bind(provider_key(event, inbound)),
        _ => query
            .bind(events.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| at_micros(e.at)).collect::<Vec<_>>())
            .bind(events.iter().map(|e| Json(&e.actor)).collect::<Vec<_>>())
            .bind(events.iter().map(|e| Json(&e.change)).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.note.as_deref()).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| provider_key(e, inbound))
                    .collect::<Vec<_>>(),
            ),
    };
    query = match (parts.outbox, outbox) {
        (Rows::One, [message]) => query.bind(Json(message)),
        _ => query.bind(outbox.iter().map(Json).collect::<Vec<_>>()),
    };
    // Null when the customer is as it was created: it is then created at the stamp. Bound (and
    // unused) by saves too, so `$27` keeps its number.
    query = query.bind(match row {
        RowWrite::Insert => (!customer.as_created()).then(|| at_micros(customer.created_at)),
        RowWrite::Update(_) => None,
    });
    let notification =
        |message: &OutboxMessage| message.notification().map(NotificationType::as_str);
    query = match (parts.outbox, outbox) {
        (Rows::One, [message]) => query.bind(notification(message)),
        _ => query.bind(outbox.iter().map(notification).collect::<Vec<_>>()),
    };
    Ok(query)
}

/// Appends the filters (not the cursor) of a list query.
pub(crate) fn push_filters(
    builder: &mut QueryBuilder<'_, Postgres>,
    firm: FirmId,
    query: &ListQuery,
) {
    builder.push(" WHERE firm_id = ").push_bind(firm.as_uuid());
    let filter = &query.filter;
    if let Some(status) = filter.kyc_status {
        builder
            .push(" AND kyc_status = ")
            .push_bind(status.as_str());
    }
    if let Some(status) = filter.aml_status {
        builder
            .push(" AND aml_status = ")
            .push_bind(status.as_str());
    }
    if let Some(since) = filter.updated_since {
        builder
            .push(" AND updated_at > ")
            .push_bind(at_micros(since));
    }
    if let Some(external_id) = &filter.external_id {
        builder
            .push(" AND external_id = ")
            .push_bind(external_id.as_str().to_owned());
    }
}

/// The statement of one page: `select` (the columns, or an `EXPLAIN` of them in the plan tests),
/// the filters, the cursor, the walk's order and limit + 1 (to learn whether more follow).
pub(crate) fn page_statement<'q>(
    select: &str,
    firm: FirmId,
    query: &'q ListQuery,
    horizon: Option<OffsetDateTime>,
) -> QueryBuilder<'q, Postgres> {
    let order = query.filter.order();
    let sort = match order {
        ListOrder::CreatedAt => "created_at",
        ListOrder::UpdatedAt | ListOrder::UpdatedAtDesc => "updated_at",
    };
    // Past the cursor is below it when the walk goes down; the index is read backwards then.
    let (past, direction) = if order.is_descending() {
        ("<", " DESC")
    } else {
        (">", "")
    };
    let mut builder = QueryBuilder::<Postgres>::new(select);
    push_filters(&mut builder, firm, query);
    push_horizon(&mut builder, horizon);
    if let Some(after) = &query.after {
        let key = at_micros(after.sort_key);
        // A row comparison Postgres resolves with one range scan of (firm_id, sort, id).
        builder
            .push(format!(" AND ({sort}, id) {past} ("))
            .push_bind(key)
            .push(", ")
            .push_bind(after.id.as_uuid())
            .push(")");
    }
    let limit = query.limit.clamp(1, 100);
    builder
        .push(format!(" ORDER BY {sort}{direction}, id{direction} LIMIT "))
        .push_bind(i64::from(limit) + 1);
    builder
}

/// The settled horizon of a poll: a time before which every change to `customers` is visible to
/// any statement that starts after this one. A write stamps its row after its transaction took an
/// id (see [`STAMP`]), so at or after the start of that transaction; with `read_at` taken first,
/// a write stamped before `read_at` and before the start of every transaction still holding an id
/// had committed by the time the view was read. Only transactions that hold an id count (a write
/// takes one before its stamp; reads never do, so concurrent reads do not hold the horizon back),
/// in any state: a transaction idle between two statements, or between its last statement and
/// its commit, still holds the horizon back. Only client sessions count (an autovacuum worker
/// may run for minutes and writes no customer). The view shows the sessions of the service's own
/// database role, which are the ones that write.
///
/// The sub-select names `read_at.at`, so it runs once per row of `read_at`, after the clock was
/// read, never before.
pub(crate) const HORIZON: &str = "WITH read_at AS MATERIALIZED (SELECT clock_timestamp() AS at) \
     SELECT least(read_at.at, ( \
         SELECT min(xact_start) FROM pg_stat_activity \
         WHERE read_at.at IS NOT NULL AND datname = current_database() \
             AND backend_type = 'client backend' \
             AND backend_xid IS NOT NULL AND pid <> pg_backend_pid())) \
     FROM read_at";

/// Keeps a page of a poll below the settled horizon, when there is one.
pub(crate) fn push_horizon(
    builder: &mut QueryBuilder<'_, Postgres>,
    horizon: Option<OffsetDateTime>,
) {
    if let Some(horizon) = horizon {
        builder.push(" AND updated_at < ").push_bind(horizon);
    }
}

impl PostgresStore {
    /// The settled horizon ([`HORIZON`]) for a page filtered by `updated_since`; none otherwise.
    async fn horizon(
        &self,
        query: &ListQuery,
    ) -> Result<Option<OffsetDateTime>, InfrastructureError> {
        if query.filter.updated_since.is_none() {
            return Ok(None);
        }
        sqlx::query_scalar(HORIZON)
            .fetch_one(&self.pool)
            .await
            .map(Some)
            .map_err(infra)
    }
}

impl PostgresStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %customer.firm_id, customer_id = %customer.id))]
    pub(crate) async fn insert_customer(
        &self,
        customer: &Customer,
        events: &[DomainEvent],
        outbox: &[OutboxMessage],
    ) -> Result<Saved, SaveError> {
        let at = write(&self.pool, RowWrite::Insert, customer, events, outbox, None)
            .await?
            .ok_or_else(|| {
                SaveError::Infrastructure(InfrastructureError::internal(
                    "the insert of a customer wrote no row",
                ))
            })?;
        let saved = Saved { version: 1, at };
        self.remember(customer, saved);
        Ok(saved)
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %customer.firm_id, customer_id = %customer.id))]
    pub(crate) async fn save_customer(
        &self,
        customer: &Customer,
        events: &[DomainEvent],
        outbox: &[OutboxMessage],
        inbound: Option<&ProviderEventKey>,
    ) -> Result<Saved, SaveError> {
        let expected = i64::try_from(customer.version).map_err(InfrastructureError::internal)?;
        let at = write(
            &self.pool,
            RowWrite::Update(expected),
            customer,
            events,
            outbox,
            inbound,
        )
        .await?
        .ok_or(SaveError::VersionConflict)?;
        let saved = Saved {
            version: customer.version + 1,
            at,
        };
        self.remember(customer, saved);
        Ok(saved)
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %customer.firm_id, customer_id = %customer.id))]
    pub(crate) async fn insert_customer_unless_matched(
        &self,
        customer: &Customer,
        events: &[DomainEvent],
        outbox: &[OutboxMessage],
    ) -> Result<InsertOrMatch, SaveError> {
        let parts = parts_of(customer, events, outbox, None);
        if parts.attempts {
            // Not a customer as created: the look-up and the insert one after the other.
            return insert_unless_matched_in_two_steps(self, customer, events, outbox).await;
        }
        let statement =
            &INSERT_UNLESS_FOUND_STATEMENTS[parts.events as usize * 3 + parts.outbox as usize];
        let rows = bind_write(statement, RowWrite::Insert, customer, events, outbox, None)?
            .fetch_all(&self.pool)
            .await
            .map_err(rules::save_error::<PostgresStore>)?;
        let mut candidates = UpsertCandidates::default();
        for row in rows.into_iter().map(PgColumns) {
            if let Some(at) = row.opt_time("at")? {
                let saved = Saved { version: 1, at };
                self.remember(customer, saved);
                return Ok(InsertOrMatch::Inserted(saved));
            }
            customers::add_candidate(self, &mut candidates, customer.firm_id, &row)?;
        }
        if candidates.by_external_id.is_none() && candidates.by_email.is_none() {
            return Err(SaveError::Infrastructure(InfrastructureError::internal(
                "the insert of a customer neither wrote a row nor found a match",
            )));
        }
        Ok(InsertOrMatch::Matched(candidates))
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    pub(crate) async fn list_customers(
        &self,
        firm: FirmId,
        query: &ListQuery,
    ) -> Result<CustomerPage, InfrastructureError> {
        let limit = query.limit.clamp(1, 100) as usize;
        let horizon = self.horizon(query).await?;
        let mut builder = page_statement(COLUMNS, firm, query, horizon);
        // Each row is parsed as it arrives rather than after all have: parsing the states is most
        // of a page's cost, and this way it overlaps the driver producing the next rows.
        let mut rows = builder.build().fetch(&self.pool);
        let mut page = Vec::with_capacity(limit);
        let mut has_more = false;
        while let Some(row) = rows.try_next().await.map_err(infra)? {
            // The statement asks for one row more than the page, only to learn whether more follow;
            // it is read to the end so the connection goes back to the pool idle.
            if page.len() < limit {
                page.push(customers::customer(self, firm, &PgColumns(row))?);
            } else {
                has_more = true;
            }
        }
        let total = if query.include_total {
            let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM customers");
            push_filters(&mut count, firm, query);
            push_horizon(&mut count, horizon);
            let total: i64 = count
                .build_query_scalar()
                .fetch_one(&self.pool)
                .await
                .map_err(infra)?;
            Some(u64::try_from(total).map_err(InfrastructureError::internal)?)
        } else {
            None
        };
        Ok(CustomerPage {
            customers: page,
            has_more,
            total,
        })
    }
}

kyc_store_support::customer_store!(PostgresStore);
