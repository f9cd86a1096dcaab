//! The hot storage paths on both backends, each beside a baseline of the same statements issued
//! directly through sqlx in the same run, so the adapter's overhead reads as a ratio.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p kyc-bench --bench storage
//! ```
//!
//! Without `DATABASE_URL` only SQLite is measured.
//!
//! Each baseline does what any caller of the same statements must do, and nothing more: writes
//! bind the current time and fresh ids on every iteration (so they touch the same index entries as
//! the adapter's writes) with the JSON values (state, actor, change, outbox message) serialized
//! once before the timed loop; reads copy every selected column into an owned Rust value
//! (`version` as `i64`, `state` as a `String` on SQLite and as the column's bytes on Postgres,
//! where it is `jsonb`) but do not parse the JSON. So the ratio charges the adapter for what it
//! adds to the statements: serializing the state and events, parsing and validating each state
//! into a `Customer`, mapping errors. The domain work that prepares a write (creating a customer,
//! making a move) is done outside the timed section on both sides.
//!
//! After the criterion figures, an interleaved profile runs every path beside its baseline (one
//! bare call, one adapter call, repeated) and prints the medians, so a ratio does not carry the
//! drift of a shared machine between two separate runs; for the list and save paths it also times
//! each phase (statement, column copy, JSON parse, restore; serializing), to attribute the
//! overhead.
//!
//! The adapters cache decoded customer states, so every read is profiled three ways beside the
//! same bare call: warm (the same store reading the same customers again, as a CRM polling its
//! list does), first read (a store with an empty cache: each state parsed and stored) and with the
//! cache turned off. The criterion figures of the adapter are warm.

use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_main};
use kyc_domain::customer::{Customer, CustomerState};
use kyc_domain::events::outbox_for;
use kyc_domain::ids::{CustomerId, FirmId};
use kyc_domain::ports::{CustomerFilter, ListQuery};
use kyc_domain::status::KycStatus;
use kyc_domain::values::ExternalId;
use kyc_postgres::PostgresStore;
use kyc_sqlite::SqliteStore;
use kyc_store_contract::{
    Stores, add_endpoint, change_phone, insert_customer, new_customer, new_firm, now,
};
use sqlx::postgres::PgRow;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::SqliteRow;
use sqlx::types::Json;
use sqlx::{PgPool, Row, SqlitePool};
use time::OffsetDateTime;
use tokio::runtime::Runtime;
use tokio::sync::Mutex;
use uuid::Uuid;

const SEEDED: usize = 2_000;

/// The measured paths, in the order they run.
const PATHS: [&str; 5] = [
    "insert_customer",
    "get_by_id",
    "get_by_external_id",
    "list_page",
    "save_transition",
];

/// What every path needs: a store with a firm of `SEEDED` customers, one of them to read and
/// update.
struct Fixture {
    stores: Stores,
    /// The same database through an adapter with its state cache turned off.
    uncached: Stores,
    firm: FirmId,
    target: Mutex<Customer>,
}

async fn fixture(stores: Stores, uncached: Stores) -> Fixture {
    let firm = new_firm(&stores).await;
    // The bare statements queue every outbox message: so does the adapter for a firm with an
    // endpoint that wants every notification.
    add_endpoint(&stores, firm, &[]).await;
    let mut target = None;
    for n in 0..SEEDED {
        let customer = insert_customer(&stores, firm, Some(&format!("seed-{n}"))).await;
        target.get_or_insert(customer);
    }
    Fixture {
        stores,
        uncached,
        firm,
        target: Mutex::new(target.expect("seeded")),
    }
}

fn list_query() -> ListQuery {
    ListQuery {
        filter: CustomerFilter {
            kyc_status: Some(KycStatus::NotStarted),
            ..Default::default()
        },
        after: None,
        limit: 50,
        include_total: false,
    }
}

/// The adapter side of every path, the same for both backends.
fn adapter_paths(c: &mut Criterion, rt: &Runtime, backend: &str, fx: &Arc<Fixture>, only: &str) {
    let mut group = c.benchmark_group(backend);
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let counter = Arc::new(AtomicU32::new(0));

    if only == "insert_customer" {
        group.bench_function("insert_customer/adapter", |b| {
            b.to_async(rt).iter_custom(|iters| {
                let fx = fx.clone();
                let counter = counter.clone();
                async move {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        let (customer, events, outbox) = new_customer(
                            fx.firm,
                            Some(&format!("a-{n}-{}", Uuid::new_v4().simple())),
                            "bench@example.com",
                        );
                        let start = Instant::now();
                        fx.stores
                            .customers
                            .insert(&customer, &events, &outbox)
                            .await
                            .unwrap();
                        spent += start.elapsed();
                    }
                    spent
                }
            });
        });
    }
    let (id, external) = rt.block_on(async {
        let target = fx.target.lock().await;
        (target.id, target.external_id.clone().unwrap())
    });
    if only == "get_by_id" {
        group.bench_function("get_by_id/adapter", |b| {
            b.to_async(rt)
                .iter(|| async { fx.stores.customers.get(fx.firm, id).await.unwrap().unwrap() });
        });
    }
    if only == "get_by_external_id" {
        group.bench_function("get_by_external_id/adapter", |b| {
            b.to_async(rt).iter(|| async {
                fx.stores
                    .customers
                    .get_by_external_id(fx.firm, &external)
                    .await
                    .unwrap()
                    .unwrap()
            });
        });
    }
    let query = list_query();
    if only == "list_page" {
        group.bench_function("list_page/adapter", |b| {
            b.to_async(rt)
                .iter(|| async { fx.stores.customers.list(fx.firm, &query).await.unwrap() });
        });
    }
    if only == "save_transition" {
        group.bench_function("save_transition/adapter", |b| {
            b.to_async(rt).iter_custom(|iters| {
                let fx = fx.clone();
                let counter = counter.clone();
                async move {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        let mut customer = fx.target.lock().await;
                        let events = change_phone(&mut customer, n);
                        let outbox = outbox_for(customer.firm_id, customer.id, &events);
                        let start = Instant::now();
                        let version = fx
                            .stores
                            .customers
                            .save(&customer, &events, &outbox, None)
                            .await
                            .unwrap();
                        spent += start.elapsed();
                        customer.saved(version);
                    }
                    spent
                }
            });
        });
    }
    group.finish();
}

fn drop_null_members(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(members) => {
            members.retain(|_, member| !member.is_null());
            members.values_mut().for_each(drop_null_members);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_null_members),
        _ => {}
    }
}

/// Values the baselines bind, prepared once.
struct Prepared {
    state: serde_json::Value,
    actor: serde_json::Value,
    change: serde_json::Value,
    message: serde_json::Value,
    state_text: String,
    actor_text: String,
    change_text: String,
    message_text: String,
    email: String,
}

async fn prepared(fx: &Fixture) -> Prepared {
    let target = fx.target.lock().await;
    let mut copy = target.clone();
    let events = change_phone(&mut copy, 1);
    let outbox = outbox_for(copy.firm_id, copy.id, &events);
    // The state as the adapters store it: without its null members.
    let mut state = serde_json::to_value(copy.state()).unwrap();
    drop_null_members(&mut state);
    let actor = serde_json::to_value(&events[0].actor).unwrap();
    let change = serde_json::to_value(&events[0].change).unwrap();
    let message = serde_json::to_value(&outbox[0]).unwrap();
    Prepared {
        state_text: state.to_string(),
        actor_text: actor.to_string(),
        change_text: change.to_string(),
        message_text: message.to_string(),
        state,
        actor,
        change,
        message,
        email: copy.email.normalized(),
    }
}

/// The statement of the measured list page, as the adapter builds it for [`list_query`].
const LIST_PAGE: &str = "SELECT version, state, id FROM customers WHERE firm_id = $1 AND kyc_status = $2 ORDER BY created_at, id LIMIT $3";
const GET_BY_ID: &str = "SELECT version, state, id FROM customers WHERE firm_id = $1 AND id = $2";
const GET_BY_EXTERNAL_ID: &str =
    "SELECT version, state, id FROM customers WHERE firm_id = $1 AND external_id = $2";
const INSERT_CUSTOMER: &str = "INSERT INTO customers (id, firm_id, external_id, email_normalized, kyc_status, aml_status, created_at, updated_at, version, state, next_screening_due) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10)";
const UPDATE_CUSTOMER: &str = "UPDATE customers SET external_id = $1, email_normalized = $2, kyc_status = $3, aml_status = $4, \
     updated_at = $5, version = version + 1, state = $6, next_screening_due = $7 WHERE id = $8 AND firm_id = $9 AND version = $10";
const INSERT_EVENT: &str = "INSERT INTO events (id, firm_id, customer_id, at, actor, change, note, provider_event_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const INSERT_OUTBOX: &str =
    "INSERT INTO outbox (firm_id, message, created_at, next_attempt_at) VALUES ($1, $2, $3, $3)";

/// The Postgres adapter writes a customer row with its event and outbox message in one statement
/// (data-modifying CTEs); the bare side does the same with one event and one message bound as
/// plain values, the least any caller of that statement has to send.
const PG_INSERT_WRITE: &str = "WITH stamp AS MATERIALIZED ( \
         SELECT at, to_jsonb(to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')) AS rfc3339 \
         FROM (SELECT greatest($8::timestamptz, clock_timestamp()) AS at FROM (SELECT pg_current_xact_id() AS id OFFSET 0) AS xact WHERE xact.id IS NOT NULL) AS now), \
     saved AS (INSERT INTO customers (id, firm_id, external_id, email_normalized, kyc_status, aml_status, created_at, updated_at, version, state, next_screening_due) \
     SELECT $1, $2, $3, $4, $5, $6, $7, stamp.at, 1, jsonb_set($9, '{updated_at}', stamp.rfc3339), $10 FROM stamp RETURNING firm_id, id), \
     new_events AS (INSERT INTO events (id, firm_id, customer_id, at, actor, change, note, provider_event_key) \
         SELECT $11, saved.firm_id, saved.id, $7, $12, $13, NULL, NULL FROM saved), \
     new_outbox AS (INSERT INTO outbox (firm_id, message, created_at, next_attempt_at) \
         SELECT saved.firm_id, $14, $7, $7 FROM saved) \
     SELECT count(*) FROM saved";
/// The save of [`PG_INSERT_WRITE`]: the row still at version `$10`, its event and message.
const PG_SAVE_WRITE: &str = "WITH stamp AS MATERIALIZED ( \
         SELECT at, to_jsonb(to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')) AS rfc3339 \
         FROM (SELECT greatest($5::timestamptz, clock_timestamp()) AS at FROM (SELECT pg_current_xact_id() AS id OFFSET 0) AS xact WHERE xact.id IS NOT NULL) AS now), \
     saved AS (UPDATE customers SET external_id = $1, email_normalized = $2, kyc_status = $3, aml_status = $4, \
     updated_at = stamp.at, version = version + 1, state = jsonb_set($6, '{updated_at}', stamp.rfc3339), \
     next_screening_due = $7 FROM stamp WHERE id = $8 AND firm_id = $9 AND version = $10 \
     RETURNING firm_id, id), \
     new_events AS (INSERT INTO events (id, firm_id, customer_id, at, actor, change, note, provider_event_key) \
         SELECT $11, saved.firm_id, saved.id, $5, $12, $13, NULL, NULL FROM saved), \
     new_outbox AS (INSERT INTO outbox (firm_id, message, created_at, next_attempt_at) \
         SELECT saved.firm_id, $14, $5, $5 FROM saved) \
     SELECT count(*) FROM saved";

/// What a caller of the read statements gets out of a Postgres row without the adapter: the
/// version, the `jsonb` state's bytes (sqlx's binary format: a version byte, then the text) and
/// the id, all owned.
fn pg_columns(row: &PgRow) -> (i64, Vec<u8>, Uuid) {
    let version: i64 = row.get(0);
    let state = row.try_get_raw(1).unwrap().as_bytes().unwrap().to_vec();
    (version, state, row.get(2))
}

/// The same for a SQLite row: the version, the state's text and the id's text, owned.
fn sqlite_columns(row: &SqliteRow) -> (i64, String, String) {
    (row.get(0), row.get(1), row.get(2))
}

/// One bare Postgres insert: the adapter's single statement (row, event, outbox message).
async fn pg_bare_insert(
    pool: &PgPool,
    p: &Prepared,
    firm: Uuid,
    customer: Uuid,
    external: &str,
    at: OffsetDateTime,
) {
    let written: i64 = sqlx::query_scalar(PG_INSERT_WRITE)
        .bind(customer)
        .bind(firm)
        .bind(external)
        .bind(&p.email)
        .bind("NOT_STARTED")
        .bind("NOT_SCREENED")
        .bind(at)
        .bind(at)
        .bind(Json(&p.state))
        .bind(None::<OffsetDateTime>)
        .bind(Uuid::now_v7())
        .bind(Json(&p.actor))
        .bind(Json(&p.change))
        .bind(Json(&p.message))
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(written, 1);
}

/// The firm's newest `updated_at`, which the SQLite adapter reads before every write to keep
/// `updated_at` in commit order (its statement, as the adapter sends it).
async fn newest_change(tx: &mut sqlx::SqliteConnection, firm: &str) {
    let newest: Option<i64> =
        sqlx::query_scalar("SELECT max(updated_at) FROM customers WHERE firm_id = $1")
            .bind(firm)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    std::hint::black_box(newest);
}

/// One bare SQLite insert: the adapter's statements in one `BEGIN IMMEDIATE` transaction.
async fn sqlite_bare_insert(
    pool: &SqlitePool,
    p: &Prepared,
    firm: &str,
    customer: Uuid,
    external: &str,
    at: i64,
) {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    newest_change(&mut tx, firm).await;
    sqlx::query(INSERT_CUSTOMER)
        .bind(customer.to_string())
        .bind(firm)
        .bind(external)
        .bind(&p.email)
        .bind("NOT_STARTED")
        .bind("NOT_SCREENED")
        .bind(at)
        .bind(at)
        .bind(&p.state_text)
        .bind(None::<i64>)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(INSERT_EVENT)
        .bind(Uuid::now_v7().to_string())
        .bind(firm)
        .bind(customer.to_string())
        .bind(at)
        .bind(&p.actor_text)
        .bind(&p.change_text)
        .bind(None::<String>)
        .bind(None::<String>)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(INSERT_OUTBOX)
        .bind(firm)
        .bind(&p.message_text)
        .bind(at)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// One bare Postgres save: the adapter's three statements in one transaction, at `at`.
async fn pg_bare_save(pool: &PgPool, p: &Prepared, t: &Target, at: OffsetDateTime) {
    let written: i64 = sqlx::query_scalar(PG_SAVE_WRITE)
        .bind(t.external.as_str())
        .bind(&p.email)
        .bind("NOT_STARTED")
        .bind("NOT_SCREENED")
        .bind(at)
        .bind(Json(&p.state))
        .bind(None::<OffsetDateTime>)
        .bind(t.id)
        .bind(t.firm)
        .bind(t.version.load(Ordering::Relaxed))
        .bind(Uuid::now_v7())
        .bind(Json(&p.actor))
        .bind(Json(&p.change))
        .bind(Json(&p.message))
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(written, 1);
    t.version.fetch_add(1, Ordering::Relaxed);
}

/// One bare SQLite save: the adapter's statements in one `BEGIN IMMEDIATE` transaction.
async fn sqlite_bare_save(pool: &SqlitePool, p: &Prepared, t: &Target, at: OffsetDateTime) {
    let (firm, id) = (t.firm.to_string(), t.id.to_string());
    let at = micros(at);
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    newest_change(&mut tx, &firm).await;
    let done = sqlx::query(UPDATE_CUSTOMER)
        .bind(t.external.as_str())
        .bind(&p.email)
        .bind("NOT_STARTED")
        .bind("NOT_SCREENED")
        .bind(at)
        .bind(&p.state_text)
        .bind(None::<i64>)
        .bind(&id)
        .bind(&firm)
        .bind(t.version.load(Ordering::Relaxed))
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1);
    sqlx::query(INSERT_EVENT)
        .bind(Uuid::now_v7().to_string())
        .bind(&firm)
        .bind(&id)
        .bind(at)
        .bind(&p.actor_text)
        .bind(&p.change_text)
        .bind(None::<String>)
        .bind(None::<String>)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(INSERT_OUTBOX)
        .bind(&firm)
        .bind(&p.message_text)
        .bind(at)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    t.version.fetch_add(1, Ordering::Relaxed);
}

/// The customer the baselines read and update, with its version as the baseline moves it.
struct Target {
    firm: Uuid,
    id: Uuid,
    external: String,
    version: AtomicI64,
}

async fn target(fx: &Fixture) -> Target {
    let t = fx.target.lock().await;
    Target {
        firm: fx.firm.as_uuid(),
        id: t.id.as_uuid(),
        external: t.external_id.clone().unwrap().as_str().to_owned(),
        version: AtomicI64::new(i64::try_from(t.version).unwrap()),
    }
}

/// A SQLite time: microseconds since the epoch, as the adapter stores it.
fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap()
}

fn postgres_baseline(
    c: &mut Criterion,
    rt: &Runtime,
    pool: &PgPool,
    fx: &Arc<Fixture>,
    only: &str,
) {
    let p = rt.block_on(prepared(fx));
    let t = rt.block_on(target(fx));
    let firm = t.firm;
    let mut group = c.benchmark_group("postgres");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    if only == "insert_customer" {
        group.bench_function("insert_customer/bare_sqlx", |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (p, firm) = (&p, &firm);
                async move {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let (customer, at) = (Uuid::now_v7(), now());
                        let external = format!("b-{}", customer.simple());
                        let start = Instant::now();
                        pg_bare_insert(pool, p, *firm, customer, &external, at).await;
                        spent += start.elapsed();
                    }
                    spent
                }
            });
        });
    }
    if only == "get_by_id" {
        group.bench_function("get_by_id/bare_sqlx", |b| {
            b.to_async(rt).iter(|| async {
                let row = sqlx::query(GET_BY_ID)
                    .bind(firm)
                    .bind(t.id)
                    .fetch_optional(pool)
                    .await
                    .unwrap()
                    .unwrap();
                pg_columns(&row)
            });
        });
    }
    if only == "get_by_external_id" {
        group.bench_function("get_by_external_id/bare_sqlx", |b| {
            b.to_async(rt).iter(|| async {
                let row = sqlx::query(GET_BY_EXTERNAL_ID)
                    .bind(firm)
                    .bind(t.external.as_str())
                    .fetch_optional(pool)
                    .await
                    .unwrap()
                    .unwrap();
                pg_columns(&row)
            });
        });
    }
    if only == "list_page" {
        group.bench_function("list_page/bare_sqlx", |b| {
            b.to_async(rt).iter(|| async {
                let rows = sqlx::query(LIST_PAGE)
                    .bind(firm)
                    .bind("NOT_STARTED")
                    .bind(51_i64)
                    .fetch_all(pool)
                    .await
                    .unwrap();
                rows.iter().take(50).map(pg_columns).collect::<Vec<_>>()
            });
        });
    }
    if only == "save_transition" {
        group.bench_function("save_transition/bare_sqlx", |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (p, t) = (&p, &t);
                async move {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let at = now();
                        let start = Instant::now();
                        pg_bare_save(pool, p, t, at).await;
                        spent += start.elapsed();
                    }
                    spent
                }
            });
        });
    }
    group.finish();
}

fn sqlite_baseline(
    c: &mut Criterion,
    rt: &Runtime,
    pool: &SqlitePool,
    fx: &Arc<Fixture>,
    only: &str,
) {
    let p = rt.block_on(prepared(fx));
    let t = rt.block_on(target(fx));
    let (firm, id) = (t.firm.to_string(), t.id.to_string());
    let mut group = c.benchmark_group("sqlite");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    if only == "insert_customer" {
        group.bench_function("insert_customer/bare_sqlx", |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (p, firm) = (&p, &firm);
                async move {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let (customer, at) = (Uuid::now_v7(), micros(now()));
                        let external = format!("b-{}", customer.simple());
                        let start = Instant::now();
                        sqlite_bare_insert(pool, p, firm, customer, &external, at).await;
                        spent += start.elapsed();
                    }
                    spent
                }
            });
        });
    }
    if only == "get_by_id" {
        group.bench_function("get_by_id/bare_sqlx", |b| {
            b.to_async(rt).iter(|| async {
                let row = sqlx::query(GET_BY_ID)
                    .bind(&firm)
                    .bind(&id)
                    .fetch_optional(pool)
                    .await
                    .unwrap()
                    .unwrap();
                sqlite_columns(&row)
            });
        });
    }
    if only == "get_by_external_id" {
        group.bench_function("get_by_external_id/bare_sqlx", |b| {
            b.to_async(rt).iter(|| async {
                let row = sqlx::query(GET_BY_EXTERNAL_ID)
                    .bind(&firm)
                    .bind(t.external.as_str())
                    .fetch_optional(pool)
                    .await
                    .unwrap()
                    .unwrap();
                sqlite_columns(&row)
            });
        });
    }
    if only == "list_page" {
        group.bench_function("list_page/bare_sqlx", |b| {
            b.to_async(rt).iter(|| async {
                let rows = sqlx::query(LIST_PAGE)
                    .bind(&firm)
                    .bind("NOT_STARTED")
                    .bind(51_i64)
                    .fetch_all(pool)
                    .await
                    .unwrap();
                rows.iter().take(50).map(sqlite_columns).collect::<Vec<_>>()
            });
        });
    }
    if only == "save_transition" {
        group.bench_function("save_transition/bare_sqlx", |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (p, t) = (&p, &t);
                async move {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let at = now();
                        let start = Instant::now();
                        sqlite_bare_save(pool, p, t, at).await;
                        spent += start.elapsed();
                    }
                    spent
                }
            });
        });
    }
    group.finish();
}

fn sqlite(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let path = std::env::temp_dir().join(format!("kyc-bench-{}.db", Uuid::new_v4()));
    let pool = rt.block_on(async {
        let pool = kyc_sqlite::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        kyc_sqlite::migrate(&pool).await.unwrap();
        pool
    });
    let fx = Arc::new(rt.block_on(fixture(
        Stores::from_adapter(SqliteStore::new(pool.clone())),
        Stores::from_adapter(SqliteStore::with_state_cache(pool.clone(), 0)),
    )));
    // Each path's baseline right before its adapter run, so load from elsewhere on the machine
    // drifts less between the two; the target's version is re-read after each.
    for path in PATHS {
        sqlite_baseline(c, &rt, &pool, &fx, path);
        rt.block_on(refresh(&fx));
        adapter_paths(c, &rt, "sqlite", &fx, path);
    }
    rt.block_on(profile(&fx, Backend::Sqlite(&pool)));
    rt.block_on(pool.close());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

fn postgres(c: &mut Criterion) {
    let Some(url) = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        eprintln!("skipped Postgres: DATABASE_URL not set");
        return;
    };
    let rt = Runtime::new().unwrap();
    let name = format!("kyc_bench_{}", Uuid::new_v4().simple());
    let (admin, pool) = rt.block_on(async {
        let admin = kyc_postgres::connect(&url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let options = PgConnectOptions::from_str(&url).unwrap().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .unwrap();
        kyc_postgres::migrate(&pool).await.unwrap();
        (admin, pool)
    });
    let fx = Arc::new(rt.block_on(fixture(
        Stores::from_adapter(PostgresStore::new(pool.clone())),
        Stores::from_adapter(PostgresStore::with_state_cache(pool.clone(), 0)),
    )));
    rt.block_on(async { sqlx::query("ANALYZE").execute(&pool).await.unwrap() });
    for path in PATHS {
        postgres_baseline(c, &rt, &pool, &fx, path);
        rt.block_on(refresh(&fx));
        adapter_paths(c, &rt, "postgres", &fx, path);
    }
    rt.block_on(profile(&fx, Backend::Postgres(&pool)));
    rt.block_on(async {
        pool.close().await;
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&admin)
            .await
            .unwrap();
    });
}

/// Rounds of the interleaved phase profile.
const ROUNDS: usize = 300;

/// Medians of timed phases, printed as one line per phase.
#[derive(Default)]
struct Phases(Vec<(&'static str, Vec<Duration>)>);

impl Phases {
    fn record(&mut self, phase: &'static str, spent: Duration) {
        match self.0.iter_mut().find(|(name, _)| *name == phase) {
            Some((_, samples)) => samples.push(spent),
            None => self.0.push((phase, vec![spent])),
        }
    }

    fn median(&self, phase: &str) -> Duration {
        let mut samples = self
            .0
            .iter()
            .find(|(name, _)| *name == phase)
            .map(|(_, samples)| samples.clone())
            .unwrap_or_default();
        samples.sort();
        samples.get(samples.len() / 2).copied().unwrap_or_default()
    }

    fn has(&self, phase: &str) -> bool {
        self.0.iter().any(|(name, _)| *name == phase)
    }

    fn print(&self, title: &str, bare: &str, adapters: &[&str]) {
        eprintln!("\n{title}: medians of {ROUNDS} interleaved rounds");
        for (phase, _) in &self.0 {
            eprintln!("  {phase:<44} {:>9.1} µs", micros_of(self.median(phase)));
        }
        for adapter in adapters {
            eprintln!(
                "  ratio {adapter} / {bare}: {:.2}×",
                self.ratio(bare, adapter)
            );
        }
    }

    fn ratio(&self, bare: &str, adapter: &str) -> f64 {
        self.median(adapter).as_secs_f64() / self.median(bare).as_secs_f64()
    }
}

fn micros_of(spent: Duration) -> f64 {
    spent.as_secs_f64() * 1e6
}

/// Times the list page phase by phase beside the adapter's `list`, and a save (serializing, then
/// the statements) beside the adapter's `save`, alternating bare and adapter calls.
async fn profile(fx: &Fixture, backend: Backend<'_>) {
    let p = prepared(fx).await;
    let t = target(fx).await;
    let firm_text = t.firm.to_string();
    let external = ExternalId::new(t.external.as_str()).unwrap();
    let customer_id = CustomerId::from_uuid(t.id);
    let mut single = Phases::default();
    // Reads first, on their own: a read right after a write pays for the write (SQLite's page
    // cache is invalidated), which would bias whichever side comes second. Each read is made four
    // ways in a round, in an order rotated from round to round: bare; through the fixture's
    // adapter, whose state cache is warm after the first round (the CRM polling the same
    // customers); through an adapter made for the round, whose cache is empty (a first read: a
    // miss, a parse and the entry stored); and through an adapter with no cache.
    for n in 0..ROUNDS {
        let first = backend.stores();
        let times = rotated(
            n,
            vec![
                Box::pin(timed(async {
                    match backend {
                        Backend::Postgres(pool) => {
                            let query = sqlx::query(GET_BY_ID).bind(t.firm).bind(t.id);
                            std::hint::black_box(pg_columns(&query.fetch_one(pool).await.unwrap()));
                        }
                        Backend::Sqlite(pool) => {
                            let query = sqlx::query(GET_BY_ID)
                                .bind(&firm_text)
                                .bind(t.id.to_string());
                            std::hint::black_box(sqlite_columns(
                                &query.fetch_one(pool).await.unwrap(),
                            ));
                        }
                    }
                })),
                Box::pin(timed(get_by_id(&fx.stores, fx.firm, customer_id))),
                Box::pin(timed(get_by_id(&first, fx.firm, customer_id))),
                Box::pin(timed(get_by_id(&fx.uncached, fx.firm, customer_id))),
            ],
        )
        .await;
        for (side, spent) in READ_SIDES.iter().zip(times) {
            single.record(side_name("get_by_id", side), spent);
        }
        let first = backend.stores();
        let times = rotated(
            n,
            vec![
                Box::pin(timed(async {
                    match backend {
                        Backend::Postgres(pool) => {
                            let query = sqlx::query(GET_BY_EXTERNAL_ID)
                                .bind(t.firm)
                                .bind(t.external.as_str());
                            std::hint::black_box(pg_columns(&query.fetch_one(pool).await.unwrap()));
                        }
                        Backend::Sqlite(pool) => {
                            let query = sqlx::query(GET_BY_EXTERNAL_ID)
                                .bind(&firm_text)
                                .bind(t.external.as_str());
                            std::hint::black_box(sqlite_columns(
                                &query.fetch_one(pool).await.unwrap(),
                            ));
                        }
                    }
                })),
                Box::pin(timed(get_by_external_id(&fx.stores, fx.firm, &external))),
                Box::pin(timed(get_by_external_id(&first, fx.firm, &external))),
                Box::pin(timed(get_by_external_id(&fx.uncached, fx.firm, &external))),
            ],
        )
        .await;
        for (side, spent) in READ_SIDES.iter().zip(times) {
            single.record(side_name("get_by_external_id", side), spent);
        }
    }
    for n in 0..ROUNDS {
        let (id, at) = (Uuid::now_v7(), now());
        let bare_external = format!("pb-{}", id.simple());
        let (customer, events, outbox) = new_customer(
            fx.firm,
            Some(&format!("pa-{n}-{}", Uuid::new_v4().simple())),
            "bench@example.com",
        );
        let (bare, adapter) = pair(
            n,
            timed(async {
                match backend {
                    Backend::Postgres(pool) => {
                        pg_bare_insert(pool, &p, t.firm, id, &bare_external, at).await;
                    }
                    Backend::Sqlite(pool) => {
                        let at = micros(at);
                        sqlite_bare_insert(pool, &p, &firm_text, id, &bare_external, at).await;
                    }
                }
            }),
            timed(async {
                let stored = fx.stores.customers.insert(&customer, &events, &outbox);
                stored.await.unwrap()
            }),
        )
        .await;
        single.record(side_name("insert_customer", "bare"), bare);
        single.record(side_name("insert_customer", "adapter"), adapter);
    }
    eprintln!(
        "\n{} single-row paths: medians of {ROUNDS} interleaved rounds",
        backend.name()
    );
    for path in ["insert_customer", "get_by_id", "get_by_external_id"] {
        let bare = side_name(path, "bare");
        let mut line = format!(
            "  {path:<20} bare {:>8.1} µs",
            micros_of(single.median(bare))
        );
        for side in ["adapter", "warm", "first read", "no cache"] {
            let side_name = side_name(path, side);
            if single.has(side_name) {
                line += &format!(
                    "  {side} {:>8.1} µs ({:.2}×)",
                    micros_of(single.median(side_name)),
                    single.ratio(bare, side_name),
                );
            }
        }
        eprintln!("{line}");
    }

    let query = list_query();
    let mut list = Phases::default();
    let mut state_bytes = 0;
    for n in 0..ROUNDS {
        let mut columns: Vec<(i64, Vec<u8>)> = Vec::new();
        let mut fetched = Duration::ZERO;
        let first = backend.stores();
        let times = rotated(
            n,
            vec![
                Box::pin(timed(async {
                    let start = Instant::now();
                    columns = match backend {
                        Backend::Postgres(pool) => {
                            let rows = sqlx::query(LIST_PAGE)
                                .bind(t.firm)
                                .bind("NOT_STARTED")
                                .bind(51_i64)
                                .fetch_all(pool)
                                .await
                                .unwrap();
                            fetched = start.elapsed();
                            let copy = |row| {
                                let (version, state, id) = pg_columns(row);
                                std::hint::black_box(id);
                                (version, state)
                            };
                            rows.iter().take(50).map(copy).collect()
                        }
                        Backend::Sqlite(pool) => {
                            let rows = sqlx::query(LIST_PAGE)
                                .bind(&firm_text)
                                .bind("NOT_STARTED")
                                .bind(51_i64)
                                .fetch_all(pool)
                                .await
                                .unwrap();
                            fetched = start.elapsed();
                            let copy = |row| {
                                let (version, state, id) = sqlite_columns(row);
                                std::hint::black_box(id);
                                (version, state.into_bytes())
                            };
                            rows.iter().take(50).map(copy).collect()
                        }
                    };
                })),
                Box::pin(timed(list_page(&fx.stores, fx.firm, &query))),
                Box::pin(timed(list_page(&first, fx.firm, &query))),
                Box::pin(timed(list_page(&fx.uncached, fx.firm, &query))),
            ],
        )
        .await;
        let [bare, warm, first_read, uncached] = times[..] else {
            unreachable!("four sides")
        };
        list.record("1 statement, rows fetched", fetched);
        list.record("2 columns copied out", bare.saturating_sub(fetched));
        list.record("bare total", bare);
        let start = Instant::now();
        let states: Vec<(i64, CustomerState)> = columns
            .iter()
            .map(|(version, state)| {
                // The jsonb binary format starts with a format version byte.
                let text = match backend {
                    Backend::Postgres(_) => &state[1..],
                    Backend::Sqlite(_) => &state[..],
                };
                (*version, serde_json::from_slice(text).unwrap())
            })
            .collect();
        list.record("3 JSON parsed and validated (50 states)", start.elapsed());
        let start = Instant::now();
        let customers: Vec<Customer> = states
            .into_iter()
            .map(|(version, mut state)| {
                state.version = u64::try_from(version).unwrap();
                Customer::restore(state)
            })
            .collect();
        list.record("4 Customer::restore (50)", start.elapsed());
        std::hint::black_box(customers);
        list.record("adapter list, warm cache", warm);
        list.record("adapter list, first read", first_read);
        list.record("adapter list, no cache", uncached);
        state_bytes = columns.iter().map(|(_, state)| state.len()).sum::<usize>() / 50;
    }
    list.print(
        &format!("{} list_page (state ≈ {state_bytes} bytes)", backend.name()),
        "bare total",
        &[
            "adapter list, warm cache",
            "adapter list, first read",
            "adapter list, no cache",
        ],
    );

    let mut save = Phases::default();
    for n in 0..ROUNDS {
        // The bare save writes the phone with suffix 1; the adapter's moves use others, so every
        // move changes it. Each side starts from the version the other left.
        let bare_save = || async {
            // Read the row first (untimed), as the adapter side must to make its move, so both
            // writes meet the row in the same state.
            refresh(fx).await;
            let start = Instant::now();
            match backend {
                Backend::Postgres(pool) => pg_bare_save(pool, &p, &t, now()).await,
                Backend::Sqlite(pool) => sqlite_bare_save(pool, &p, &t, now()).await,
            }
            start.elapsed()
        };
        let adapter_save = || {
            let fx = &fx;
            let t = &t;
            async move {
                refresh(fx).await;
                let mut customer = fx.target.lock().await;
                let events = change_phone(&mut customer, 1_000 + u32::try_from(n).unwrap());
                let outbox = outbox_for(customer.firm_id, customer.id, &events);
                let start = Instant::now();
                // As the adapters serialize: the state without its null members.
                let mut state = serde_json::to_value(customer.state()).unwrap();
                drop_null_members(&mut state);
                std::hint::black_box((
                    state.to_string(),
                    serde_json::to_string(&events[0].actor).unwrap(),
                    serde_json::to_string(&events[0].change).unwrap(),
                    serde_json::to_string(&outbox[0]).unwrap(),
                ));
                let serializing = start.elapsed();
                let start = Instant::now();
                let stored = fx.stores.customers.save(&customer, &events, &outbox, None);
                let version = stored.await.unwrap();
                let spent = start.elapsed();
                customer.saved(version);
                t.version
                    .store(i64::try_from(version.version).unwrap(), Ordering::Relaxed);
                (serializing, spent)
            }
        };
        let (bare, (serializing, adapter)) = if n % 2 == 0 {
            let bare = bare_save().await;
            (bare, adapter_save().await)
        } else {
            let adapter = adapter_save().await;
            (bare_save().await, adapter)
        };
        save.record("bare statements", bare);
        save.record("serializing state, event, outbox", serializing);
        save.record("adapter save", adapter);
    }
    save.print(
        &format!("{} save_transition", backend.name()),
        "bare statements",
        &["adapter save"],
    );
}

/// The sides of a read in the profile: bare statements, then the adapter with a warm cache, with
/// an empty one, and with none.
const READ_SIDES: [&str; 4] = ["bare", "warm", "first read", "no cache"];

/// The name a path's side is recorded under.
fn side_name(path: &str, side: &str) -> &'static str {
    // A handful of names, made once each per run: leaking them keeps `Phases` simple.
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let name = format!("{path} {side}");
    let mut names = NAMES.lock().unwrap();
    if let Some(found) = names.iter().find(|known| **known == name) {
        return found;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.push(leaked);
    leaked
}

async fn get_by_id(stores: &Stores, firm: FirmId, id: CustomerId) -> Customer {
    stores.customers.get(firm, id).await.unwrap().unwrap()
}

async fn get_by_external_id(stores: &Stores, firm: FirmId, external: &ExternalId) -> Customer {
    let found = stores.customers.get_by_external_id(firm, external);
    found.await.unwrap().unwrap()
}

async fn list_page(stores: &Stores, firm: FirmId, query: &ListQuery) -> Vec<Customer> {
    let page = stores.customers.list(firm, query).await.unwrap();
    assert_eq!(page.customers.len(), 50);
    page.customers
}

/// A side of a round in the profile.
type Side<'a> = Pin<Box<dyn Future<Output = Duration> + 'a>>;

/// Runs the sides of round `n`, starting with side `n mod len` and going round, so no side always
/// follows the same one; returns their times in the order given.
async fn rotated(n: usize, sides: Vec<Side<'_>>) -> Vec<Duration> {
    let count = sides.len();
    let mut sides: Vec<Option<Side<'_>>> = sides.into_iter().map(Some).collect();
    let mut times = vec![Duration::ZERO; count];
    for k in 0..count {
        let i = (n + k) % count;
        times[i] = sides[i].take().expect("each side runs once").await;
    }
    times
}

/// Times a future, from its first poll to its end.
async fn timed<T>(work: impl Future<Output = T>) -> Duration {
    let start = Instant::now();
    std::hint::black_box(work.await);
    start.elapsed()
}

/// Runs the bare and the adapter side of round `n`, bare first in even rounds and adapter first in
/// odd ones, so neither side always pays for following the other.
async fn pair(
    n: usize,
    bare: impl Future<Output = Duration>,
    adapter: impl Future<Output = Duration>,
) -> (Duration, Duration) {
    if n.is_multiple_of(2) {
        let bare = bare.await;
        (bare, adapter.await)
    } else {
        let adapter = adapter.await;
        (bare.await, adapter)
    }
}

/// The pool the profile's bare statements go through.
#[derive(Clone, Copy)]
enum Backend<'a> {
    Postgres(&'a PgPool),
    Sqlite(&'a SqlitePool),
}

impl Backend<'_> {
    /// A new adapter on this pool, with an empty state cache of the default size.
    fn stores(&self) -> Stores {
        match self {
            Backend::Postgres(pool) => Stores::from_adapter(PostgresStore::new((*pool).clone())),
            Backend::Sqlite(pool) => Stores::from_adapter(SqliteStore::new((*pool).clone())),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }
}

/// Re-reads the target after the baseline moved its version.
async fn refresh(fx: &Fixture) {
    let mut target = fx.target.lock().await;
    *target = fx
        .stores
        .customers
        .get(fx.firm, target.id)
        .await
        .unwrap()
        .unwrap();
}

/// The criterion group, private so its generated function needs no public docs.
mod group {
    criterion::criterion_group!(benches, super::sqlite, super::postgres);
}
criterion_main!(group::benches);
