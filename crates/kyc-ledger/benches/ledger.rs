//! Throughput of the ledger's hot paths on both backends, each beside a baseline measured in the
//! same run on the same database, so the figures say what the ledger's guarantees cost rather than
//! how fast the machine is:
//!
//! - `reserve_post`: one Start Verification's worth of ledger work (a reserve, then a post of the
//!   same hold), against `baseline_two_inserts`: two bare autocommit single-row INSERTs, the same
//!   number of writes with none of the ledger's rules.
//! - `balance`: a balance read, against `baseline_select`: a bare single-row SELECT by primary key.
//!
//! Postgres runs when `DATABASE_URL` is set (a fresh database is created and dropped).

// `criterion_group!` generates a public function with no doc comment.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use kyc_domain::ids::{AttemptNumber, CustomerId, FirmId};
use kyc_domain::ports::{CreditsLedger, HoldKey, IdempotencyKey};
use kyc_domain::values::Credits;
use kyc_ledger::{PgLedger, SqliteLedger, migrate_postgres, migrate_sqlite, sqlite_options};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Connection, PgConnection};
use tokio::runtime::Runtime;
use uuid::Uuid;

fn new_hold() -> HoldKey {
    HoldKey {
        customer: CustomerId::from_uuid(Uuid::new_v4()),
        attempt: AttemptNumber::FIRST,
    }
}

async fn reserve_post(ledger: &dyn CreditsLedger, firm: FirmId) {
    let hold = new_hold();
    ledger
        .reserve(
            firm,
            hold,
            Credits::new(1),
            &IdempotencyKey::for_hold("reserve", hold),
        )
        .await
        .unwrap();
    ledger
        .post(firm, hold, &IdempotencyKey::for_hold("post", hold))
        .await
        .unwrap();
}

async fn funded_firm(ledger: &dyn CreditsLedger) -> FirmId {
    let firm = FirmId::from_uuid(Uuid::new_v4());
    ledger
        .grant(
            firm,
            Credits::new(1_000_000_000),
            "benchmark",
            &IdempotencyKey::new("bench-grant").unwrap(),
        )
        .await
        .unwrap();
    firm
}

fn sqlite(c: &mut Criterion, runtime: &Runtime) {
    let path = std::env::temp_dir().join(format!("kyc-ledger-bench-{}.db", Uuid::new_v4()));
    let pool = runtime.block_on(async {
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(sqlite_options(&path))
            .await
            .unwrap();
        migrate_sqlite(&pool).await.unwrap();
        sqlx::query(
            "CREATE TABLE bench_baseline (id INTEGER PRIMARY KEY, firm_id TEXT NOT NULL, credits INTEGER NOT NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO bench_baseline (firm_id, credits) VALUES ('seed', 1)")
            .execute(&pool)
            .await
            .unwrap();
        pool
    });
    let ledger: Arc<dyn CreditsLedger> = Arc::new(SqliteLedger::new(pool.clone()));
    let firm = runtime.block_on(funded_firm(&*ledger));
    let firm_text = firm.to_string();

    let mut group = c.benchmark_group("sqlite");
    group.bench_function("reserve_post", |b| {
        b.to_async(runtime).iter(|| reserve_post(&*ledger, firm));
    });
    group.bench_function("baseline_two_inserts", |b| {
        b.to_async(runtime).iter(|| async {
            for _ in 0..2 {
                sqlx::query("INSERT INTO bench_baseline (firm_id, credits) VALUES (?1, ?2)")
                    .bind(&firm_text)
                    .bind(1_i64)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        });
    });
    group.bench_function("balance", |b| {
        b.to_async(runtime)
            .iter(|| async { ledger.balance(firm).await.unwrap() });
    });
    group.bench_function("baseline_select", |b| {
        b.to_async(runtime).iter(|| async {
            sqlx::query_scalar::<_, i64>("SELECT credits FROM bench_baseline WHERE id = 1")
                .fetch_one(&pool)
                .await
                .unwrap()
        });
    });
    group.finish();
    runtime.block_on(pool.close());
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

fn postgres(c: &mut Criterion, runtime: &Runtime) {
    let Ok(admin_url) = std::env::var("DATABASE_URL") else {
        eprintln!("skipped: DATABASE_URL not set, no Postgres figures");
        return;
    };
    let name = format!("kyc_ledger_bench_{}", Uuid::new_v4().simple());
    let server = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(server, _)| server);
    let url = format!("{server}/{name}");
    let pool = runtime.block_on(async {
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .unwrap();
        migrate_postgres(&pool).await.unwrap();
        sqlx::query(
            "CREATE TABLE bench_baseline (id BIGSERIAL PRIMARY KEY, firm_id UUID NOT NULL, credits BIGINT NOT NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO bench_baseline (firm_id, credits) VALUES (gen_random_uuid(), 1)")
            .execute(&pool)
            .await
            .unwrap();
        pool
    });
    let ledger: Arc<dyn CreditsLedger> = Arc::new(PgLedger::new(pool.clone()));
    let firm = runtime.block_on(funded_firm(&*ledger));

    let mut group = c.benchmark_group("postgres");
    group.bench_function("reserve_post", |b| {
        b.to_async(runtime).iter(|| reserve_post(&*ledger, firm));
    });
    group.bench_function("baseline_two_inserts", |b| {
        b.to_async(runtime).iter(|| async {
            for _ in 0..2 {
                sqlx::query("INSERT INTO bench_baseline (firm_id, credits) VALUES ($1, $2)")
                    .bind(firm.as_uuid())
                    .bind(1_i64)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        });
    });
    group.bench_function("balance", |b| {
        b.to_async(runtime)
            .iter(|| async { ledger.balance(firm).await.unwrap() });
    });
    group.bench_function("baseline_select", |b| {
        b.to_async(runtime).iter(|| async {
            sqlx::query_scalar::<_, i64>("SELECT credits FROM bench_baseline WHERE id = 1")
                .fetch_one(&pool)
                .await
                .unwrap()
        });
    });
    group.finish();
    runtime.block_on(async {
        pool.close().await;
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
    });
}

fn ledger(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    sqlite(c, &runtime);
    postgres(c, &runtime);
}

criterion_group! {
    name = benches;
    // Short runs: enough samples for a stable median on a shared 2-core machine in about a minute.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = ledger
}
criterion_main!(benches);
