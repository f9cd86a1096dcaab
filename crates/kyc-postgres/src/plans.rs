//! The list and poll statements and the re-screening walk, explained on 100 000 customers spread
//! over ten firms, and the outbox lease behind 50 000 delivered entries: each is answered from an
//! index, never by scanning the table.

use std::str::FromStr;

use kyc_domain::ids::{CustomerId, FirmId};
use kyc_domain::ports::{CustomerFilter, ListQuery, PagePosition};
use kyc_domain::status::{AmlStatus, KycStatus};
use kyc_domain::values::ExternalId;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, QueryBuilder, Row};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::customers::{COLUMNS, page_statement, push_filters, push_horizon};
use kyc_store_support::customers::RESCREENING;
use kyc_store_support::engine::Dialect;
use kyc_store_support::outbox;

const SEED: &str = "
INSERT INTO firms (id, name, created_at)
SELECT ('00000000-0000-0000-0000-0000000000' || g)::uuid, 'firm ' || g, now()
FROM generate_series(10, 19) g;
INSERT INTO customers (id, firm_id, external_id, email_normalized, kyc_status, aml_status,
                       created_at, updated_at, version, state, next_screening_due)
SELECT gen_random_uuid(),
       ('00000000-0000-0000-0000-0000000000' || (10 + g % 10))::uuid,
       'ext-' || g,
       'p' || g || '@example.com',
       (ARRAY['NOT_STARTED','PENDING','IN_PROGRESS','VERIFIED','FAILED','AWAITING_RESUBMISSION','NOT_REQUIRED'])[1 + g % 7],
       (ARRAY['NOT_SCREENED','IN_PROGRESS','CLEAR','NEEDS_REVIEW','RESOLVED'])[1 + (g / 7) % 5],
       now() - make_interval(secs => g),
       now() - make_interval(secs => (g * 7919) % 100000),
       1,
       '{}'::jsonb,
       now() + make_interval(days => g % 730 - 365)
FROM generate_series(1, 100000) g;
ANALYZE customers;
INSERT INTO outbox (firm_id, message, created_at, next_attempt_at, delivered_at)
SELECT '00000000-0000-0000-0000-000000000010', '{}', now(), now() - interval '1 hour', now()
FROM generate_series(1, 50000);
INSERT INTO outbox (firm_id, message, created_at, next_attempt_at)
SELECT '00000000-0000-0000-0000-000000000010', '{}', now(), now() - interval '1 minute'
FROM generate_series(1, 5000);
ANALYZE outbox;
";

async fn explain(pool: &PgPool, mut statement: QueryBuilder<'_, sqlx::Postgres>) -> String {
    lines(&statement.build().fetch_all(pool).await.expect("explain"))
}

/// The plan in the rows of an `EXPLAIN`, one line each.
fn lines(rows: &[sqlx::postgres::PgRow]) -> String {
    rows.iter()
        .map(|row| row.get::<String, _>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn list_and_poll_queries_on_100k_customers_use_an_index() {
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("DATABASE_URL must be set when CI=true")
        }
        _ => {
            eprintln!("skipped: DATABASE_URL not set");
            return;
        }
    };
    let admin = crate::connect(&url)
        .await
        .expect("Postgres at DATABASE_URL is unreachable");
    let name = format!("kyc_plan_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create database");
    let options = PgConnectOptions::from_str(&url)
        .expect("url")
        .database(&name);
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .expect("connect");
    crate::migrate(&pool).await.expect("migrate");
    sqlx::raw_sql(SEED).execute(&pool).await.expect("seed");

    let firm = FirmId::from_uuid(Uuid::parse_str("00000000-0000-0000-0000-000000000013").unwrap());
    let since = OffsetDateTime::now_utc() - Duration::hours(1);
    let after = PagePosition {
        sort_key: OffsetDateTime::now_utc() - Duration::hours(5),
        id: CustomerId::from_uuid(Uuid::nil()),
    };
    let queries = [
        CustomerFilter::default(),
        CustomerFilter {
            kyc_status: Some(KycStatus::Verified),
            ..Default::default()
        },
        CustomerFilter {
            aml_status: Some(AmlStatus::NeedsReview),
            ..Default::default()
        },
        CustomerFilter {
            updated_since: Some(since),
            ..Default::default()
        },
        CustomerFilter {
            updated_since: Some(since),
            kyc_status: Some(KycStatus::Failed),
            ..Default::default()
        },
        CustomerFilter {
            external_id: Some(ExternalId::new("ext-13").unwrap()),
            ..Default::default()
        },
        // The back office's newest change first: the poll's index, read backwards.
        CustomerFilter {
            newest_first: true,
            ..Default::default()
        },
        CustomerFilter {
            newest_first: true,
            aml_status: Some(AmlStatus::NeedsReview),
            ..Default::default()
        },
    ];
    let mut failures = Vec::new();
    for filter in queries {
        for cursor in [None, Some(after.clone())] {
            let query = ListQuery {
                filter: filter.clone(),
                after: cursor,
                limit: 50,
                include_total: true,
            };
            // A poll (`updated_since`) is also kept below the settled horizon.
            let horizon = query
                .filter
                .updated_since
                .map(|_| OffsetDateTime::now_utc());
            let plan = explain(
                &pool,
                page_statement(&format!("EXPLAIN {COLUMNS}"), firm, &query, horizon),
            )
            .await;
            if plan.contains("Seq Scan") || !plan.contains("Index") {
                failures.push(format!("{query:?}\n{plan}"));
            }
            let mut count = QueryBuilder::new("EXPLAIN SELECT count(*) FROM customers");
            push_filters(&mut count, firm, &query);
            push_horizon(&mut count, horizon);
            let plan = explain(&pool, count).await;
            if plan.contains("Seq Scan") {
                failures.push(format!("count {query:?}\n{plan}"));
            }
        }
    }
    // The re-screening walk serves every firm: its partial index, not a scan of all customers.
    let plan = lines(
        &sqlx::query(&format!("EXPLAIN {RESCREENING}"))
            .bind(OffsetDateTime::now_utc())
            .bind(100_i64)
            .fetch_all(&pool)
            .await
            .expect("explain"),
    );
    if !plan.contains("customers_rescreening_idx") {
        failures.push(format!("due for rescreening\n{plan}"));
    }
    // The outbox lease walks the undelivered entries in order and stops at its limit: neither
    // the delivered history nor a sort of every due entry.
    let now = OffsetDateTime::now_utc();
    let plan = lines(
        &sqlx::query(&format!("EXPLAIN {}", outbox::claim(Dialect::Postgres)))
            .bind(now + Duration::minutes(1))
            .bind(now)
            .bind(16_i64)
            .fetch_all(&pool)
            .await
            .expect("explain"),
    );
    if !plan.contains("outbox_pending_idx") || plan.contains("Sort") {
        failures.push(format!("outbox lease\n{plan}"));
    }
    // Whatever plan the lease gets, it leases at most its limit: here the planner is pushed to a
    // nested loop that runs the pick once per pending entry, which is what a lease whose pick
    // sat in `id IN (…)` got on statistics gathered while the outbox was empty (it leased every
    // due entry: each run of the locking pick skipped the rows the statement had just updated).
    let mut tx = pool.begin().await.expect("begin");
    sqlx::raw_sql(
        "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; \
         SET LOCAL enable_material = off; SET LOCAL enable_hashagg = off; SET LOCAL enable_sort = off",
    )
    .execute(&mut *tx)
    .await
    .expect("planner settings");
    let leased = sqlx::query(outbox::claim(Dialect::Postgres))
        .bind(now + Duration::minutes(5))
        .bind(now)
        .bind(16_i64)
        .fetch_all(&mut *tx)
        .await
        .expect("lease");
    if leased.len() != 16 {
        failures.push(format!("a lease of 16 took {} entries", leased.len()));
    }
    tx.rollback().await.expect("rollback");
    pool.close().await;
    let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
    assert!(
        failures.is_empty(),
        "plans that scan:\n{}",
        failures.join("\n\n")
    );
}
