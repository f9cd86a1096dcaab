//! The hot storage paths on both backends, each beside a baseline of the same statements issued
//! directly through sqlx in the same run, so the adapter's overhead reads as a ratio.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p kyc-postgres --bench storage
//! ```
//!
//! Without `DATABASE_URL` only SQLite is measured. The baselines bind values prepared outside the
//! timed loop (state JSON, event JSON) and do not decode the rows they fetch, so the ratio charges
//! the adapter for everything it does beyond the statements: serializing, decoding, mapping errors.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_main};
use kyc_domain::customer::Customer;
use kyc_domain::events::outbox_for;
use kyc_domain::ids::FirmId;
use kyc_domain::ports::{CustomerFilter, ListQuery};
use kyc_domain::status::KycStatus;
use kyc_postgres::PostgresStore;
use kyc_sqlite::SqliteStore;
use kyc_store_contract::{Stores, change_phone, insert_customer, new_customer, new_firm, now};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgPool, SqlitePool};
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
    firm: FirmId,
    target: Mutex<Customer>,
}

async fn fixture(stores: Stores) -> Fixture {
    let firm = new_firm(&stores).await;
    let mut target = None;
    for n in 0..SEEDED {
        let customer = insert_customer(&stores, firm, Some(&format!("seed-{n}"))).await;
        target.get_or_insert(customer);
    }
    Fixture {
        stores,
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
            b.to_async(rt).iter(|| {
                let fx = fx.clone();
                let n = counter.fetch_add(1, Ordering::Relaxed);
                async move {
                    let (customer, events, outbox) = new_customer(
                        fx.firm,
                        Some(&format!("a-{n}-{}", Uuid::new_v4().simple())),
                        "bench@example.com",
                    );
                    fx.stores
                        .customers
                        .insert(&customer, &events, &outbox)
                        .await
                        .unwrap();
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
            b.to_async(rt).iter(|| {
                let fx = fx.clone();
                let n = counter.fetch_add(1, Ordering::Relaxed);
                async move {
                    let mut customer = fx.target.lock().await;
                    let events = change_phone(&mut customer, n);
                    let outbox = outbox_for(customer.firm_id, customer.id, &events);
                    let version = fx
                        .stores
                        .customers
                        .save(&customer, &events, &outbox, None)
                        .await
                        .unwrap();
                    customer.saved_at_version(version);
                }
            });
        });
    }
    group.finish();
}

/// Values the baselines bind, prepared once.
struct Prepared {
    state: serde_json::Value,
    actor: serde_json::Value,
    change: serde_json::Value,
    message: serde_json::Value,
    email: String,
}

async fn prepared(fx: &Fixture) -> Prepared {
    let target = fx.target.lock().await;
    let mut copy = target.clone();
    let events = change_phone(&mut copy, 1);
    let outbox = outbox_for(copy.firm_id, copy.id, &events);
    Prepared {
        state: serde_json::to_value(copy.state()).unwrap(),
        actor: serde_json::to_value(&events[0].actor).unwrap(),
        change: serde_json::to_value(&events[0].change).unwrap(),
        message: serde_json::to_value(&outbox[0]).unwrap(),
        email: copy.email.normalized(),
    }
}

fn postgres_baseline(
    c: &mut Criterion,
    rt: &Runtime,
    pool: &PgPool,
    fx: &Arc<Fixture>,
    only: &str,
) {
    let p = rt.block_on(prepared(fx));
    let (id, external, version) = rt.block_on(async {
        let t = fx.target.lock().await;
        (
            t.id.as_uuid(),
            t.external_id.clone().unwrap(),
            AtomicI64::new(i64::try_from(t.version).unwrap()),
        )
    });
    let firm = fx.firm.as_uuid();
    let mut group = c.benchmark_group("postgres");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let at = now();
    if only == "insert_customer" {
        group.bench_function("insert_customer/bare_sqlx", |b| {
            b.to_async(rt).iter(|| async {
                let customer = Uuid::now_v7();
                let mut tx = pool.begin().await.unwrap();
                sqlx::query(
                    "INSERT INTO customers (id, firm_id, external_id, email_normalized, kyc_status, aml_status, created_at, updated_at, version, state, next_screening_due) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10)",
                )
                .bind(customer).bind(firm).bind(format!("b-{}", customer.simple())).bind(&p.email)
                .bind("NOT_STARTED").bind("NOT_SCREENED").bind(at).bind(at).bind(Json(&p.state)).bind(None::<time::OffsetDateTime>)
                .execute(&mut *tx).await.unwrap();
                sqlx::query("INSERT INTO events (id, firm_id, customer_id, at, actor, change, note, provider_event_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                    .bind(Uuid::now_v7()).bind(firm).bind(customer).bind(at).bind(Json(&p.actor)).bind(Json(&p.change))
                    .bind(None::<String>).bind(None::<String>)
                    .execute(&mut *tx).await.unwrap();
                sqlx::query("INSERT INTO outbox (firm_id, message, created_at, next_attempt_at) VALUES ($1, $2, $3, $3)")
                    .bind(firm).bind(Json(&p.message)).bind(at)
                    .execute(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
            });
        });
    }
    if only == "get_by_id" {
        group.bench_function("get_by_id/bare_sqlx", |b| {
            b.to_async(rt).iter(|| async {
                sqlx::query("SELECT version, state FROM customers WHERE firm_id = $1 AND id = $2")
                    .bind(firm)
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                    .unwrap()
                    .unwrap()
            });
        });
    }
    if only == "get_by_external_id" {
        group.bench_function("get_by_external_id/bare_sqlx", |b| {
            b.to_async(rt).iter(|| async {
                sqlx::query(
                    "SELECT version, state FROM customers WHERE firm_id = $1 AND external_id = $2",
                )
                .bind(firm)
                .bind(external.as_str())
                .fetch_optional(pool)
                .await
                .unwrap()
                .unwrap()
            });
        });
    }
    if only == "list_page" {
        group.bench_function("list_page/bare_sqlx", |b| {
            b.to_async(rt).iter(|| async {
                sqlx::query("SELECT version, state FROM customers WHERE firm_id = $1 AND kyc_status = $2 ORDER BY created_at, id LIMIT $3")
                    .bind(firm).bind("NOT_STARTED").bind(51_i64).fetch_all(pool).await.unwrap()
            });
        });
    }
    if only == "save_transition" {
        group.bench_function("save_transition/bare_sqlx", |b| {
            b.to_async(rt).iter(|| async {
                let mut tx = pool.begin().await.unwrap();
                let done = sqlx::query(
                    "UPDATE customers SET external_id = $1, email_normalized = $2, kyc_status = $3, aml_status = $4, \
                     updated_at = $5, version = version + 1, state = $6, next_screening_due = $7 WHERE id = $8 AND firm_id = $9 AND version = $10",
                )
                .bind(external.as_str()).bind(&p.email).bind("NOT_STARTED").bind("NOT_SCREENED").bind(at)
                .bind(Json(&p.state)).bind(None::<time::OffsetDateTime>).bind(id).bind(firm).bind(version.load(Ordering::Relaxed))
                .execute(&mut *tx).await.unwrap();
                assert_eq!(done.rows_affected(), 1);
                sqlx::query("INSERT INTO events (id, firm_id, customer_id, at, actor, change, note, provider_event_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                    .bind(Uuid::now_v7()).bind(firm).bind(id).bind(at).bind(Json(&p.actor)).bind(Json(&p.change))
                    .bind(None::<String>).bind(None::<String>)
                    .execute(&mut *tx).await.unwrap();
                sqlx::query("INSERT INTO outbox (firm_id, message, created_at, next_attempt_at) VALUES ($1, $2, $3, $3)")
                    .bind(firm).bind(Json(&p.message)).bind(at)
                    .execute(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
                version.fetch_add(1, Ordering::Relaxed);
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
    let state = p.state.to_string();
    let (actor, change, message) = (
        p.actor.to_string(),
        p.change.to_string(),
        p.message.to_string(),
    );
    let (id, external, version) = rt.block_on(async {
        let t = fx.target.lock().await;
        (
            t.id.to_string(),
            t.external_id.clone().unwrap(),
            AtomicI64::new(i64::try_from(t.version).unwrap()),
        )
    });
    let firm = fx.firm.to_string();
    let at = i64::try_from(now().unix_timestamp_nanos() / 1_000).unwrap();
    let mut group = c.benchmark_group("sqlite");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    if only == "insert_customer" {
        group.bench_function("insert_customer/bare_sqlx", |b| {
            b.to_async(rt).iter(|| async {
                let customer = Uuid::now_v7();
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
                sqlx::query(
                    "INSERT INTO customers (id, firm_id, external_id, email_normalized, kyc_status, aml_status, created_at, updated_at, version, state, next_screening_due) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10)",
                )
                .bind(customer.to_string()).bind(&firm).bind(format!("b-{}", customer.simple())).bind(&p.email)
                .bind("NOT_STARTED").bind("NOT_SCREENED").bind(at).bind(at).bind(&state).bind(None::<i64>)
                .execute(&mut *tx).await.unwrap();
                sqlx::query("INSERT INTO events (id, firm_id, customer_id, at, actor, change, note, provider_event_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                    .bind(Uuid::now_v7().to_string()).bind(&firm).bind(customer.to_string()).bind(at).bind(&actor).bind(&change)
                    .bind(None::<String>).bind(None::<String>)
                    .execute(&mut *tx).await.unwrap();
                sqlx::query("INSERT INTO outbox (firm_id, message, created_at, next_attempt_at) VALUES ($1, $2, $3, $3)")
                    .bind(&firm).bind(&message).bind(at)
                    .execute(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
            });
        });
    }
    if only == "get_by_id" {
        group.bench_function("get_by_id/bare_sqlx", |b| {
            b.to_async(rt).iter(|| async {
                sqlx::query("SELECT version, state FROM customers WHERE firm_id = $1 AND id = $2")
                    .bind(&firm)
                    .bind(&id)
                    .fetch_optional(pool)
                    .await
                    .unwrap()
                    .unwrap()
            });
        });
    }
    if only == "get_by_external_id" {
        group.bench_function("get_by_external_id/bare_sqlx", |b| {
            b.to_async(rt).iter(|| async {
                sqlx::query(
                    "SELECT version, state FROM customers WHERE firm_id = $1 AND external_id = $2",
                )
                .bind(&firm)
                .bind(external.as_str())
                .fetch_optional(pool)
                .await
                .unwrap()
                .unwrap()
            });
        });
    }
    if only == "list_page" {
        group.bench_function("list_page/bare_sqlx", |b| {
            b.to_async(rt).iter(|| async {
                sqlx::query("SELECT version, state FROM customers WHERE firm_id = $1 AND kyc_status = $2 ORDER BY created_at, id LIMIT $3")
                    .bind(&firm).bind("NOT_STARTED").bind(51_i64).fetch_all(pool).await.unwrap()
            });
        });
    }
    if only == "save_transition" {
        group.bench_function("save_transition/bare_sqlx", |b| {
            b.to_async(rt).iter(|| async {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
                let done = sqlx::query(
                    "UPDATE customers SET external_id = $1, email_normalized = $2, kyc_status = $3, aml_status = $4, \
                     updated_at = $5, version = version + 1, state = $6, next_screening_due = $7 WHERE id = $8 AND firm_id = $9 AND version = $10",
                )
                .bind(external.as_str()).bind(&p.email).bind("NOT_STARTED").bind("NOT_SCREENED").bind(at)
                .bind(&state).bind(None::<i64>).bind(&id).bind(&firm).bind(version.load(Ordering::Relaxed))
                .execute(&mut *tx).await.unwrap();
                assert_eq!(done.rows_affected(), 1);
                sqlx::query("INSERT INTO events (id, firm_id, customer_id, at, actor, change, note, provider_event_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                    .bind(Uuid::now_v7().to_string()).bind(&firm).bind(&id).bind(at).bind(&actor).bind(&change)
                    .bind(None::<String>).bind(None::<String>)
                    .execute(&mut *tx).await.unwrap();
                sqlx::query("INSERT INTO outbox (firm_id, message, created_at, next_attempt_at) VALUES ($1, $2, $3, $3)")
                    .bind(&firm).bind(&message).bind(at)
                    .execute(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
                version.fetch_add(1, Ordering::Relaxed);
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
    let fx = Arc::new(rt.block_on(fixture(Stores::from_adapter(SqliteStore::new(
        pool.clone(),
    )))));
    // Each path's baseline right before its adapter run, so load from elsewhere on the machine
    // drifts less between the two; the target's version is re-read after each.
    for path in PATHS {
        sqlite_baseline(c, &rt, &pool, &fx, path);
        rt.block_on(refresh(&fx));
        adapter_paths(c, &rt, "sqlite", &fx, path);
    }
    rt.block_on(pool.close());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

fn postgres(c: &mut Criterion) {
    let Ok(url) = std::env::var("DATABASE_URL") else {
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
    let fx = Arc::new(rt.block_on(fixture(Stores::from_adapter(PostgresStore::new(
        pool.clone(),
    )))));
    rt.block_on(async { sqlx::query("ANALYZE").execute(&pool).await.unwrap() });
    for path in PATHS {
        postgres_baseline(c, &rt, &pool, &fx, path);
        rt.block_on(refresh(&fx));
        adapter_paths(c, &rt, "postgres", &fx, path);
    }
    rt.block_on(async {
        pool.close().await;
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&admin)
            .await
            .unwrap();
    });
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
