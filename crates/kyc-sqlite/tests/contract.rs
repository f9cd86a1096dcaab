//! The shared storage contract, run against a fresh SQLite file per test, plus what only this
//! backend can show: the schema itself refuses changes to recorded events.

use kyc_domain::ids::{AttemptNumber, FirmId};
use kyc_domain::ports::{AttemptLocation, CustomerStore, LinkLocation};
use kyc_sqlite::SqliteStore;
use kyc_store_contract::{Harness, Stores, insert_customer, new_firm, now, verified_customer};

async fn fresh() -> (SqliteStore, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("kyc-sqlite-{}.db", uuid::Uuid::new_v4()));
    let pool = kyc_sqlite::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open sqlite");
    kyc_sqlite::migrate(&pool).await.expect("migrate");
    (SqliteStore::new(pool), path)
}

async fn setup() -> Option<Harness> {
    let (store, path) = fresh().await;
    let pool = store.pool().clone();
    Some(Harness {
        stores: Stores::from_adapter(store),
        teardown: Some(Box::pin(async move {
            pool.close().await;
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        })),
    })
}

kyc_store_contract::contract_tests!(setup);

/// Runs `test` with two stores on one fresh file, each with its own state cache (the second with
/// `second_cache` entries), as two server processes would be, then deletes the file.
async fn with_two_stores<F, Fut>(second_cache: usize, test: F)
where
    F: FnOnce(Stores, Stores) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (store, path) = fresh().await;
    let pool = store.pool().clone();
    let other = SqliteStore::with_state_cache(pool.clone(), second_cache);
    // On a task of its own, so a failing test still deletes its file.
    let outcome = tokio::spawn(test(
        Stores::from_adapter(store),
        Stores::from_adapter(other),
    ))
    .await;
    pool.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    if let Err(failure) = outcome {
        std::panic::resume_unwind(failure.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_saved_through_another_store_is_read_at_its_new_version() {
    with_two_stores(
        kyc_sqlite::DEFAULT_STATE_CACHE_ENTRIES,
        kyc_store_contract::a_customer_saved_through_another_store_is_read_at_its_new_version,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_state_cache_never_crosses_firms() {
    with_two_stores(0, |stores, _| {
        kyc_store_contract::the_state_cache_never_crosses_firms(stores)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_are_identical_with_the_state_cache_disabled() {
    with_two_stores(
        0,
        kyc_store_contract::reads_are_identical_with_the_state_cache_disabled,
    )
    .await;
}

#[tokio::test]
async fn the_schema_refuses_updates_and_deletes_of_recorded_events() {
    let (store, path) = fresh().await;
    let stores = Stores::from_adapter(store.clone());
    let firm = new_firm(&stores).await;
    insert_customer(&stores, firm, None).await;
    let update = sqlx::query("UPDATE events SET note = 'rewritten'")
        .execute(store.pool())
        .await;
    assert!(update.is_err(), "an event was updated");
    let delete = sqlx::query("DELETE FROM events")
        .execute(store.pool())
        .await;
    assert!(delete.is_err(), "an event was deleted");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(count, 1);
    store.pool().close().await;
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn migrating_twice_changes_nothing_and_tolerates_other_crates_migrations() {
    let (store, path) = fresh().await;
    // The ledger records its own versions (1001+) in the same table.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (1001, 'ledger', TRUE, X'00', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    kyc_sqlite::migrate(store.pool())
        .await
        .expect("second migrate");
    store.pool().close().await;
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn migrating_from_the_first_schema_fills_the_new_columns_from_the_stored_state() {
    let path = std::env::temp_dir().join(format!("kyc-sqlite-{}.db", uuid::Uuid::new_v4()));
    let pool = kyc_sqlite::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open sqlite");
    let mut first = sqlx::migrate!("./migrations/sqlite");
    first.migrations = first
        .migrations
        .iter()
        .filter(|m| m.version == 1)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    first.run(&pool).await.expect("migrate to 0001");

    // A row as the first schema stored it. The due time has digits past the microsecond and a
    // non-UTC offset, both of which the backfill must read as the adapter would.
    let firm = FirmId::from_uuid(uuid::Uuid::now_v7());
    let due_utc = now() + time::Duration::nanoseconds(123_456_789);
    let due = due_utc.to_offset(time::macros::offset!(-5:30));
    let due_stored = due_utc
        .replace_nanosecond(due_utc.nanosecond() / 1_000 * 1_000)
        .unwrap();
    let hash = format!("{:064x}", uuid::Uuid::new_v4().as_u128());
    let customer = verified_customer(firm, &hash, due);
    let attempt = customer.latest_attempt().unwrap();
    sqlx::query("INSERT INTO firms (id, name, created_at) VALUES ($1, 'f', 0)")
        .bind(firm.to_string())
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO customers (id, firm_id, external_id, email_normalized, kyc_status, aml_status, created_at, updated_at, version, state) \
         VALUES ($1, $2, NULL, $3, 'VERIFIED', 'CLEAR', 0, 0, 1, $4)",
    )
    .bind(customer.id.to_string())
    .bind(firm.to_string())
    .bind(customer.email.normalized())
    .bind(kyc_store_contract::first_schema_state(&customer, due).to_string())
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO verification_attempts (firm_id, customer_id, number, external_user_id, applicant_id, phase, claimed_at) \
         VALUES ($1, $2, 1, $3, $4, 'open', 0)",
    )
    .bind(firm.to_string())
    .bind(customer.id.to_string())
    .bind(attempt.external_user_id.as_str())
    .bind(attempt.applicant_id.as_ref().unwrap().as_str())
    .execute(&pool)
    .await
    .unwrap();

    kyc_sqlite::migrate(&pool)
        .await
        .expect("migrate to the latest");
    let store = SqliteStore::new(pool.clone());
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
    assert!(
        store
            .due_for_rescreening(just_before, 10)
            .await
            .unwrap()
            .is_empty()
    );
    pool.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test]
async fn states_are_stored_without_null_members_and_rows_stored_with_them_read_the_same() {
    let (store, path) = fresh().await;
    let stores = Stores::from_adapter(store.clone());
    let firm = new_firm(&stores).await;
    let mut customer = verified_customer(firm, "link-hash", now());
    let saved = stores.customers.insert(&customer, &[], &[]).await.unwrap();
    customer.saved(saved);
    let stored: String = sqlx::query_scalar("SELECT state FROM customers WHERE id = $1")
        .bind(customer.id.to_string())
        .fetch_one(store.pool())
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
    let uncached = SqliteStore::with_state_cache(store.pool().clone(), 0);
    let read = uncached.get(firm, customer.id).await.unwrap();
    assert_eq!(read.as_ref().map(|c| c.state()), Some(customer.state()));

    // The form written before nulls and ids were left out: every member present.
    let with_nulls = kyc_store_contract::legacy_state(&customer).to_string();
    assert!(with_nulls.contains(":null"));
    sqlx::query("UPDATE customers SET state = $1 WHERE id = $2")
        .bind(&with_nulls)
        .bind(customer.id.to_string())
        .execute(store.pool())
        .await
        .unwrap();
    let read = uncached.get(firm, customer.id).await.unwrap();
    assert_eq!(read.as_ref().map(|c| c.state()), Some(customer.state()));
    store.pool().close().await;
    let _ = std::fs::remove_file(path);
}

/// Marking a pass's entries in one statement marks exactly those: after their lease, only the
/// entries left out come back.
#[tokio::test]
async fn marking_a_pass_delivered_in_one_statement_marks_only_those_entries() {
    let (store, path) = fresh().await;
    let pool = store.pool().clone();
    let stores = Stores::from_adapter(store);
    let firm = new_firm(&stores).await;
    for _ in 0..3 {
        kyc_store_contract::insert_customer_with_work(&stores, firm).await;
    }
    let lease = time::Duration::minutes(1);
    let batch = stores
        .outbox
        .claim_batch(now(), now() + lease, 100)
        .await
        .unwrap();
    assert_eq!(batch.len(), 3, "each insert leaves its work in the outbox");
    let (done, left) = batch.split_at(batch.len() - 1);
    let done: Vec<i64> = done.iter().map(|entry| entry.id).collect();
    stores.outbox.mark_all_delivered(&[], now()).await.unwrap();
    stores
        .outbox
        .mark_all_delivered(&done, now())
        .await
        .unwrap();
    let after_lease = now() + lease + time::Duration::seconds(1);
    let again: Vec<i64> = stores
        .outbox
        .claim_batch(after_lease, after_lease + lease, 100)
        .await
        .unwrap()
        .iter()
        .map(|entry| entry.id)
        .collect();
    assert_eq!(again, vec![left[0].id]);
    pool.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stored_times_are_rfc_3339_and_legacy_rows_are_rewritten() {
    let (store, path) = fresh().await;
    let rows = SqliteStore::with_state_cache(store.pool().clone(), 0);
    let pool = store.pool().clone();
    let outcome = tokio::spawn(async move {
        kyc_store_contract::stored_times_are_rfc_3339_and_legacy_rows_are_rewritten(
            Stores::from_adapter(store),
            &rows,
        )
        .await;
    })
    .await;
    pool.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    if let Err(failure) = outcome {
        std::panic::resume_unwind(failure.into_panic());
    }
}
