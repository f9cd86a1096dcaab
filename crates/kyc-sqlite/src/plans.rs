//! The list and poll statements, the single-customer reads and save of an upsert, the
//! re-screening walk and the outbox lease (behind 50 000 delivered entries), planned by SQLite on 100 000 customers spread over ten firms: each is
//! answered from an index, never by scanning the table. They are planned twice: first without
//! statistics, as a server's database is (nothing runs ANALYZE, and SQLite then prefers an index
//! that delivers an ORDER BY over one that narrows the search), then after ANALYZE.

use kyc_domain::ids::{CustomerId, FirmId};
use kyc_domain::ports::{CustomerFilter, ListQuery, PagePosition};
use kyc_domain::status::{AmlStatus, KycStatus};
use kyc_domain::values::ExternalId;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::customers::{COLUMNS, NEWEST_CHANGE, SAVE, page_statement, push_filters};
use kyc_store_support::customers::{
    BY_EMAIL, BY_EXTERNAL_ID, BY_ID, RESCREENING, UPSERT_CANDIDATES,
};
use kyc_store_support::engine::Dialect;
use kyc_store_support::outbox;

const SEED: &str = "
INSERT INTO firms (id, name, created_at)
WITH RECURSIVE g(n) AS (SELECT 10 UNION ALL SELECT n + 1 FROM g WHERE n < 19)
SELECT '00000000-0000-0000-0000-0000000000' || n, 'firm ' || n, 0 FROM g;
INSERT INTO customers (id, firm_id, external_id, email_normalized, kyc_status, aml_status,
                       created_at, updated_at, version, state, next_screening_due)
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 100000)
SELECT lower(hex(randomblob(16))),
       '00000000-0000-0000-0000-0000000000' || (10 + n % 10),
       'ext-' || n,
       'p' || n || '@example.com',
       CASE n % 7 WHEN 0 THEN 'NOT_STARTED' WHEN 1 THEN 'PENDING' WHEN 2 THEN 'IN_PROGRESS'
                  WHEN 3 THEN 'VERIFIED' WHEN 4 THEN 'FAILED' WHEN 5 THEN 'AWAITING_RESUBMISSION'
                  ELSE 'NOT_REQUIRED' END,
       CASE (n / 7) % 5 WHEN 0 THEN 'NOT_SCREENED' WHEN 1 THEN 'IN_PROGRESS' WHEN 2 THEN 'CLEAR'
                        WHEN 3 THEN 'NEEDS_REVIEW' ELSE 'RESOLVED' END,
       1700000000000000 - n * 1000000,
       1700000000000000 - ((n * 7919) % 100000) * 1000000,
       1,
       '{}',
       1700000000000000 + (n % 730 - 365) * 86400000000
FROM g;
INSERT INTO outbox (firm_id, message, created_at, next_attempt_at, delivered_at)
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 50000)
SELECT '00000000-0000-0000-0000-000000000010', '{}', 0, 1600000000000000, 1600000000000000 FROM g;
INSERT INTO outbox (firm_id, message, created_at, next_attempt_at)
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 5000)
SELECT '00000000-0000-0000-0000-000000000010', '{}', 0, 1600000000000000 FROM g;
";

async fn plan(pool: &SqlitePool, mut statement: QueryBuilder<'_, Sqlite>) -> String {
    details(&statement.build().fetch_all(pool).await.expect("explain"))
}

/// The plan in the rows of an `EXPLAIN QUERY PLAN`, one line each.
fn details(rows: &[sqlx::sqlite::SqliteRow]) -> String {
    rows.iter()
        .map(|row| row.get::<String, _>("detail"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The plan of a statement with `$n` parameters, each bound to a text.
async fn plan_of(pool: &SqlitePool, statement: &str, parameters: usize) -> String {
    let sql = format!("EXPLAIN QUERY PLAN {statement}");
    let mut query = sqlx::query(&sql);
    for n in 0..parameters {
        query = query.bind(format!("p{n}"));
    }
    details(&query.fetch_all(pool).await.expect("explain"))
}

#[tokio::test]
async fn customer_statements_on_100k_customers_use_an_index() {
    let path = std::env::temp_dir().join(format!("kyc-plan-{}.db", Uuid::new_v4()));
    let pool = crate::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    crate::migrate(&pool).await.unwrap();
    sqlx::raw_sql(SEED).execute(&pool).await.expect("seed");
    let mut failures = Vec::new();
    check_plans(&pool, "without statistics", &mut failures).await;
    sqlx::raw_sql("ANALYZE")
        .execute(&pool)
        .await
        .expect("analyze");
    check_plans(&pool, "after ANALYZE", &mut failures).await;
    pool.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    assert!(
        failures.is_empty(),
        "plans that scan:\n{}",
        failures.join("\n\n")
    );
}

async fn check_plans(pool: &SqlitePool, stats: &str, failures: &mut Vec<String>) {
    // The statements of an upsert and of a save: each names one row (or, by email, the oldest
    // of a few) through an index; the email look-up's index must also deliver its order.
    for (name, statement, parameters, index) in [
        ("by id", BY_ID, 2, "(firm_id=? AND id=?)"),
        (
            "by external id",
            BY_EXTERNAL_ID,
            2,
            "customers_external_id_key",
        ),
        (
            "by email",
            BY_EMAIL,
            2,
            "customers_email_idx (firm_id=? AND email_normalized=?)",
        ),
        (
            "both look-ups of an upsert, by email",
            UPSERT_CANDIDATES,
            3,
            "customers_email_idx (firm_id=? AND email_normalized=?)",
        ),
        (
            "both look-ups of an upsert, by external id",
            UPSERT_CANDIDATES,
            3,
            "customers_external_id_key",
        ),
        ("save", SAVE, 10, "(firm_id=? AND id=?)"),
        (
            "the firm's newest change, before every write",
            NEWEST_CHANGE,
            1,
            "customers_updated_idx (firm_id=?)",
        ),
    ] {
        let plan = plan_of(pool, statement, parameters).await;
        let scans = plan
            .lines()
            .any(|l| l.contains("customers") && !l.starts_with("SEARCH"));
        if scans || !plan.contains(index) || plan.contains("TEMP B-TREE") {
            failures.push(format!("{stats}: {name}\n{plan}"));
        }
    }

    let firm = FirmId::from_uuid(Uuid::parse_str("00000000-0000-0000-0000-000000000013").unwrap());
    let base = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    let since = base - Duration::hours(1);
    let after = PagePosition {
        sort_key: base - Duration::hours(5),
        id: CustomerId::from_uuid(Uuid::nil()),
    };
    let filters = [
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
    for filter in filters {
        for cursor in [None, Some(after.clone())] {
            let query = ListQuery {
                filter: filter.clone(),
                after: cursor,
                limit: 50,
                include_total: true,
            };
            let page = plan(
                pool,
                page_statement(&format!("EXPLAIN QUERY PLAN {COLUMNS}"), firm, &query),
            )
            .await;
            // Only SEARCH (an index range) is acceptable: SCAN reads the whole table or index,
            // and a temp B-tree for ORDER BY means the index does not deliver the walk's order.
            let scans = page
                .lines()
                .any(|l| l.contains("customers") && !l.starts_with("SEARCH"));
            // With a cursor the index range must be bounded on the sort column, not start at the
            // firm's first row. An external id matches at most one row (unique index), so
            // neither the range nor the sort matters there.
            let unique = query.filter.external_id.is_some();
            let ranged = query.after.is_none()
                || unique
                || page.contains("_at,id)>(")
                || page.contains("_at,id)<(")
                || page.contains("_at>?");
            if scans || !ranged || (page.contains("TEMP B-TREE") && !unique) {
                failures.push(format!("{stats}: {query:?}\n{page}"));
            }
            let mut count = QueryBuilder::new("EXPLAIN QUERY PLAN SELECT count(*) FROM customers");
            push_filters(&mut count, firm, &query);
            let counted = plan(pool, count).await;
            if counted
                .lines()
                .any(|l| l.contains("customers") && !l.starts_with("SEARCH"))
            {
                failures.push(format!("{stats}: count {query:?}\n{counted}"));
            }
        }
    }
    // The re-screening walk serves every firm: its partial index delivers the rows in order.
    let walk = details(
        &sqlx::query(&format!("EXPLAIN QUERY PLAN {RESCREENING}"))
            .bind(1_700_000_000_000_000_i64)
            .bind(100_i64)
            .fetch_all(pool)
            .await
            .expect("explain"),
    );
    if !walk.contains("customers_rescreening_idx") || walk.contains("TEMP B-TREE") {
        failures.push(format!("{stats}: due for rescreening\n{walk}"));
    }
    // The outbox lease walks the undelivered entries in order and stops at its limit: neither
    // the delivered history nor a sort of every due entry.
    let lease = details(
        &sqlx::query(&format!(
            "EXPLAIN QUERY PLAN {}",
            outbox::claim(Dialect::Sqlite)
        ))
        .bind(1_700_000_060_000_000_i64)
        .bind(1_700_000_000_000_000_i64)
        .bind(16_i64)
        .fetch_all(pool)
        .await
        .expect("explain"),
    );
    if !lease.contains("outbox_pending_idx") || lease.contains("TEMP B-TREE") {
        failures.push(format!("{stats}: outbox lease\n{lease}"));
    }
}
