//! The shared storage contract, run against a fresh Postgres database per test, plus what only
//! this backend shows: the append-only trigger, migrations beside the ledger's, and the query plans
//! of the list and poll queries.
//!
//! `DATABASE_URL` names the server (any database on it). Unset outside CI, every test prints
//! "skipped: DATABASE_URL not set" and passes; with `CI=true` a missing or unreachable server
//! fails the run.

use std::str::FromStr;

use futures::FutureExt as _;
use kyc_domain::ids::{AttemptNumber, FirmId};
use kyc_domain::ports::{AttemptLocation, CustomerStore, LinkLocation};
use kyc_postgres::PostgresStore;
use kyc_store_contract::{Harness, Stores, insert_customer, new_firm, now, verified_customer};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;

/// The server's URL, or `None` (with a visible message) when tests should be skipped.
fn database_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!(
                "DATABASE_URL must be set when CI=true: the Postgres contract cannot be skipped in CI"
            )
        }
        _ => {
            eprintln!("skipped: DATABASE_URL not set");
            None
        }
    }
}

/// A freshly created, migrated database on the server, and the admin pool that will drop it.
async fn fresh_database() -> Option<(PgPool, PgPool, String)> {
    let (pool, admin, name) = empty_database().await?;
    kyc_postgres::migrate(&pool).await.expect("migrate");
    Some((pool, admin, name))
}

/// A freshly created database with no schema, and the admin pool that will drop it.
async fn empty_database() -> Option<(PgPool, PgPool, String)> {
    let url = database_url()?;
    let admin = kyc_postgres::connect(&url)
        .await
        .expect("Postgres at DATABASE_URL is unreachable");
    let name = format!("kyc_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create database");
    let options = PgConnectOptions::from_str(&url)
        .expect("DATABASE_URL")
        .database(&name);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .expect("connect");
    Some((pool, admin, name))
}

async fn drop_database(pool: PgPool, admin: PgPool, name: String) {
    pool.close().await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
    admin.close().await;
}

async fn setup() -> Option<Harness> {
    let (pool, admin, name) = fresh_database().await?;
    Some(Harness {
        stores: Stores::from_adapter(PostgresStore::new(pool.clone())),
        teardown: Some(Box::pin(drop_database(pool, admin, name))),
    })
}

kyc_store_contract::contract_tests!(setup);

/// Runs `test` on a fresh migrated database and drops it afterwards, pass or fail.
async fn with_database<F, Fut>(test: F)
where
    F: FnOnce(PgPool) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some((pool, admin, name)) = fresh_database().await else {
        return;
    };
    run_and_drop(pool, admin, name, test).await;
}

/// Runs `test` on `pool`'s database and drops it afterwards, pass or fail.
async fn run_and_drop<F, Fut>(pool: PgPool, admin: PgPool, name: String, test: F)
where
    F: FnOnce(PgPool) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let outcome = std::panic::AssertUnwindSafe(test(pool.clone()))
        .catch_unwind()
        .await;
    drop_database(pool, admin, name).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn the_trigger_refuses_updates_deletes_and_truncates_of_recorded_events() {
    with_database(|pool| async move {
        let stores = Stores::from_adapter(PostgresStore::new(pool.clone()));
        let firm = new_firm(&stores).await;
        insert_customer(&stores, firm, None).await;
        for statement in [
            "UPDATE events SET note = 'rewritten'",
            "DELETE FROM events",
            "TRUNCATE events CASCADE",
        ] {
            let refused = sqlx::query(statement).execute(&pool).await;
            let message = refused.expect_err(statement).to_string();
            assert!(message.contains("append-only"), "{statement}: {message}");
        }
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 1);
    })
    .await;
}

#[tokio::test]
async fn migrating_twice_changes_nothing_and_tolerates_the_ledgers_migrations() {
    with_database(|pool| async move {
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (1001, 'ledger', TRUE, '\\x00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        kyc_postgres::migrate(&pool).await.expect("second migrate");
    })
    .await;
}

#[tokio::test]
async fn migrating_from_the_first_schema_fills_the_new_columns_from_the_stored_state() {
    let Some((pool, admin, name)) = empty_database().await else {
        return;
    };
    run_and_drop(pool, admin, name, |pool| async move {
        let mut first = sqlx::migrate!("./migrations/postgres");
        first.migrations = first
            .migrations
            .iter()
            .filter(|m| m.version == 1)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        first.run(&pool).await.expect("migrate to 0001");

        // A row as the first schema stored it; the due time has digits past the microsecond and a
        // non-UTC offset.
        let firm = FirmId::from_uuid(uuid::Uuid::now_v7());
        let due = (now() + time::Duration::nanoseconds(123_456_789))
            .to_offset(time::macros::offset!(+9));
        let due_stored = now_truncated(due);
        let hash = format!("{:064x}", uuid::Uuid::new_v4().as_u128());
        let customer = verified_customer(firm, &hash, due);
        let attempt = customer.latest_attempt().unwrap();
        sqlx::query("INSERT INTO firms (id, name, created_at) VALUES ($1, 'f', now())")
            .bind(firm.as_uuid())
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO customers (id, firm_id, external_id, email_normalized, kyc_status, aml_status, created_at, updated_at, version, state) \
             VALUES ($1, $2, NULL, $3, 'VERIFIED', 'CLEAR', now(), now(), 1, $4)",
        )
        .bind(customer.id.as_uuid())
        .bind(firm.as_uuid())
        .bind(customer.email.normalized())
        .bind(Json(kyc_store_contract::first_schema_state(&customer, due)))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO verification_attempts (firm_id, customer_id, number, external_user_id, applicant_id, phase, claimed_at) \
             VALUES ($1, $2, 1, $3, $4, 'open', now())",
        )
        .bind(firm.as_uuid())
        .bind(customer.id.as_uuid())
        .bind(attempt.external_user_id.as_str())
        .bind(attempt.applicant_id.as_ref().unwrap().as_str())
        .execute(&pool)
        .await
        .unwrap();

        kyc_postgres::migrate(&pool).await.expect("migrate to the latest");
        let store = PostgresStore::new(pool.clone());
        assert_eq!(
            store.locate_link(&hash).await.unwrap(),
            Some(LinkLocation {
                firm_id: firm,
                customer_id: customer.id,
                attempt: AttemptNumber::FIRST,
            })
        );
        // Cut to the microsecond, not rounded up: due exactly at the cut time.
        assert_eq!(
            store.due_for_rescreening(due_stored, 10).await.unwrap(),
            vec![AttemptLocation {
                firm_id: firm,
                customer_id: customer.id,
            }]
        );
        let just_before = due_stored - time::Duration::microseconds(1);
        assert!(store.due_for_rescreening(just_before, 10).await.unwrap().is_empty());
    })
    .await;
}

/// A time cut to the microsecond, as both backends keep it.
fn now_truncated(at: time::OffsetDateTime) -> time::OffsetDateTime {
    at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap()
}

#[tokio::test]
async fn states_are_stored_without_null_members_and_rows_stored_with_them_read_the_same() {
    with_database(|pool| async move {
        let stores = Stores::from_adapter(PostgresStore::new(pool.clone()));
        let firm = new_firm(&stores).await;
        let mut customer = verified_customer(firm, "link-hash", now());
        let saved = stores.customers.insert(&customer, &[], &[]).await.unwrap();
        customer.saved(saved);
        let stored: String = sqlx::query_scalar("SELECT state::text FROM customers WHERE id = $1")
            .bind(customer.id.as_uuid())
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(
            !stored.contains("null"),
            "a null member was stored: {stored}"
        );
        assert!(
            !stored.contains("firm_id"),
            "the row's own columns were stored again: {stored}"
        );
        // Read through a store with no state cache, so both reads parse the stored form.
        let uncached = PostgresStore::with_state_cache(pool.clone(), 0);
        let read = uncached.get(firm, customer.id).await.unwrap();
        assert_eq!(read.as_ref().map(|c| c.state()), Some(customer.state()));

        // The form written before nulls were left out: every member present.
        let with_nulls = kyc_store_contract::legacy_state(&customer);
        assert!(with_nulls.to_string().contains(":null"));
        sqlx::query("UPDATE customers SET state = $1 WHERE id = $2")
            .bind(Json(&with_nulls))
            .bind(customer.id.as_uuid())
            .execute(&pool)
            .await
            .unwrap();
        let read = uncached.get(firm, customer.id).await.unwrap();
        assert_eq!(read.as_ref().map(|c| c.state()), Some(customer.state()));
    })
    .await;
}

/// Two stores on one database, each with its own state cache (the second with `entries`), as two
/// server replicas would be.
fn two_stores(pool: &PgPool, entries: usize) -> (Stores, Stores) {
    (
        Stores::from_adapter(PostgresStore::new(pool.clone())),
        Stores::from_adapter(PostgresStore::with_state_cache(pool.clone(), entries)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_saved_through_another_store_is_read_at_its_new_version() {
    with_database(|pool| async move {
        let (here, there) = two_stores(&pool, kyc_postgres::DEFAULT_STATE_CACHE_ENTRIES);
        kyc_store_contract::a_customer_saved_through_another_store_is_read_at_its_new_version(
            here, there,
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_state_cache_never_crosses_firms() {
    with_database(|pool| async move {
        let (stores, _) = two_stores(&pool, 0);
        kyc_store_contract::the_state_cache_never_crosses_firms(stores).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_are_identical_with_the_state_cache_disabled() {
    with_database(|pool| async move {
        let (cached, uncached) = two_stores(&pool, 0);
        kyc_store_contract::reads_are_identical_with_the_state_cache_disabled(cached, uncached)
            .await;
    })
    .await;
}

/// A poll never shows a change committed after one that is still being written with an earlier
/// `updated_at`: a save held on a row lock after taking its time keeps the settled horizon below
/// that time, so a CRM's watermark cannot pass it; once it commits, the next poll from that
/// watermark returns it.
#[tokio::test]
async fn a_poll_stops_below_a_change_still_being_written() {
    use kyc_store_contract::{change_phone, touch_customer};
    with_database(|pool| async move {
        let stores = Stores::from_adapter(PostgresStore::new(pool.clone()));
        let firm = new_firm(&stores).await;
        let since = now() - time::Duration::seconds(1);
        let mut held = insert_customer(&stores, firm, None).await;
        let mut other = insert_customer(&stores, firm, None).await;
        // Another session locks `held`'s row; the save takes its time, then waits on the lock.
        let mut locker = pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM customers WHERE id = $1 FOR UPDATE")
            .bind(held.id.as_uuid())
            .execute(&mut *locker)
            .await
            .unwrap();
        let events = change_phone(&mut held, 4242);
        let writer = tokio::spawn({
            let (stores, held) = (stores.clone(), held.clone());
            async move { stores.customers.save(&held, &events, &[], None).await }
        });
        wait_for(
            &pool,
            "wait_event_type = 'Lock'",
            "the save never waited on the lock",
        )
        .await;
        // A later change of the same firm commits meanwhile.
        touch_customer(&stores, &mut other, 77).await;
        let during = poll(&stores, firm, since).await;
        assert!(
            during.iter().all(|c| c.id != other.id),
            "the poll showed a change committed after one still being written"
        );

        locker.commit().await.unwrap();
        let saved = writer.await.unwrap().unwrap();
        assert!(
            saved.at < other.updated_at,
            "the held save took its time first"
        );
        let watermark = during.iter().map(|c| c.updated_at).max().unwrap_or(since);
        let after: Vec<_> = poll(&stores, firm, watermark)
            .await
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert!(after.contains(&held.id), "the held change was lost");
        assert!(after.contains(&other.id));
    })
    .await;
}

/// Only writes in flight hold a poll back: a long read running beside it does not, and a change
/// committed before the poll is in it.
#[tokio::test]
async fn a_long_read_does_not_hold_a_poll_back() {
    use kyc_store_contract::touch_customer;
    with_database(|pool| async move {
        let stores = Stores::from_adapter(PostgresStore::new(pool.clone()));
        let firm = new_firm(&stores).await;
        let since = now() - time::Duration::seconds(1);
        let mut customer = insert_customer(&stores, firm, None).await;
        let reader = tokio::spawn({
            let pool = pool.clone();
            async move {
                sqlx::query("SELECT pg_sleep(2), count(*) FROM customers")
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        });
        wait_for(
            &pool,
            "state = 'active' AND query LIKE 'SELECT pg_sleep%'",
            "the read never started",
        )
        .await;
        touch_customer(&stores, &mut customer, 31).await;
        let page = poll(&stores, firm, since).await;
        assert_eq!(
            page.iter().map(|c| c.version).collect::<Vec<_>>(),
            vec![customer.version],
            "the committed change is in the poll"
        );
        reader.await.unwrap();
    })
    .await;
}

/// One page of a poll: the firm's customers updated after `since`.
async fn poll(
    stores: &Stores,
    firm: FirmId,
    since: time::OffsetDateTime,
) -> Vec<kyc_domain::customer::Customer> {
    use kyc_domain::ports::{CustomerFilter, ListQuery};
    let query = ListQuery {
        filter: CustomerFilter {
            updated_since: Some(since),
            ..Default::default()
        },
        after: None,
        limit: 100,
        include_total: false,
    };
    stores.customers.list(firm, &query).await.unwrap().customers
}

/// Waits (10 s at most) until a session of this database matches `condition` in
/// `pg_stat_activity`.
async fn wait_for(pool: &PgPool, condition: &str, never: &str) {
    let count = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND {condition}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sqlx::query_scalar::<_, i64>(&count)
        .fetch_one(pool)
        .await
        .unwrap()
        == 0
    {
        assert!(std::time::Instant::now() < deadline, "{never}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn stored_times_are_rfc_3339_and_legacy_rows_are_rewritten() {
    with_database(|pool| async move {
        let stores = Stores::from_adapter(PostgresStore::new(pool.clone()));
        let rows = PostgresStore::with_state_cache(pool, 0);
        kyc_store_contract::stored_times_are_rfc_3339_and_legacy_rows_are_rewritten(stores, &rows)
            .await;
    })
    .await;
}

/// Two stores on one database (two replicas) count one key's requests into the same windows,
/// exactly, under a race; a refused request counts in neither window; a window restarts once it
/// has run out, and a full day refuses with the seconds left in the day.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_windows_are_shared_by_replicas_and_count_exactly() {
    use kyc_domain::ids::ApiKeyId;
    use kyc_domain::ports::RequestLimits;
    use std::sync::Arc;

    with_database(|pool| async move {
        let replicas: [Arc<dyn RequestLimits>; 2] = [
            Arc::new(PostgresStore::new(pool.clone())),
            Arc::new(PostgresStore::new(pool.clone())),
        ];
        let key = ApiKeyId::from_uuid(uuid::Uuid::new_v4());
        let start = now();
        let mut racers = Vec::new();
        for n in 0..60 {
            let replica = replicas[n % 2].clone();
            racers.push(tokio::spawn(async move {
                replica.admit(key, start, 20, 25).await.expect("admit")
            }));
        }
        let mut admitted = 0;
        for racer in racers {
            match racer.await.expect("racer") {
                Ok(()) => admitted += 1,
                Err(full) => {
                    assert_eq!(full.limit, 20);
                    assert_eq!(full.window_seconds, 60);
                    assert!((1..=60).contains(&full.retry_after_secs));
                }
            }
        }
        assert_eq!(
            admitted, 20,
            "exactly the minute's limit, across both replicas"
        );
        // The refused 40 counted nowhere: the next minute has 5 left of the day's 25.
        let later = start + time::Duration::seconds(61);
        for _ in 0..5 {
            assert_eq!(replicas[1].admit(key, later, 20, 25).await.unwrap(), Ok(()));
        }
        let full = replicas[0]
            .admit(key, later, 20, 25)
            .await
            .unwrap()
            .expect_err("the day is full");
        assert_eq!((full.limit, full.window_seconds), (25, 86_400));
        assert!(full.retry_after_secs > 86_000);
        // Other keys have windows of their own, and limits of 0 are off.
        let other = ApiKeyId::from_uuid(uuid::Uuid::new_v4());
        assert_eq!(replicas[0].admit(other, later, 1, 0).await.unwrap(), Ok(()));
        assert!(
            replicas[1]
                .admit(other, later, 1, 0)
                .await
                .unwrap()
                .is_err()
        );
        assert_eq!(replicas[1].admit(other, later, 0, 0).await.unwrap(), Ok(()));
        // Counters, not records: the table is unlogged, so a request's commit waits for no flush.
        let persistence: String = sqlx::query_scalar(
            "SELECT relpersistence::text FROM pg_class WHERE relname = 'api_key_request_windows'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(persistence, "u");
    })
    .await;
}

/// Failed logins recorded through one store are counted by another on the same database, old
/// ones are forgotten, and clearing a key forgets only that key.
#[tokio::test]
async fn login_failures_are_shared_by_replicas() {
    use kyc_domain::ports::LoginFailures;

    with_database(|pool| async move {
        let here = PostgresStore::new(pool.clone());
        let there = PostgresStore::new(pool.clone());
        let start = now();
        let keys = ["account-key".to_owned(), "address-key".to_owned()];
        let minute = time::Duration::minutes(1);
        here.record_failure(&keys, start, start - minute)
            .await
            .unwrap();
        there
            .record_failure(&keys, start + minute, start - minute)
            .await
            .unwrap();
        assert_eq!(
            there
                .failures_since("account-key", start - minute)
                .await
                .unwrap(),
            (2, Some(start))
        );
        // Only failures after `since` count.
        assert_eq!(
            here.failures_since("address-key", start).await.unwrap(),
            (1, Some(start + minute))
        );
        // A failure forgetting those before it leaves one.
        here.record_failure(&keys[..1], start + minute * 20, start + minute * 5)
            .await
            .unwrap();
        assert_eq!(
            here.failures_since("account-key", start - minute)
                .await
                .unwrap()
                .0,
            1
        );
        there.clear_failures("account-key").await.unwrap();
        assert_eq!(
            here.failures_since("account-key", start - minute)
                .await
                .unwrap(),
            (0, None)
        );
        assert_eq!(
            here.failures_since("address-key", start - minute)
                .await
                .unwrap()
                .0,
            2
        );
    })
    .await;
}
