//! The shared storage contract, run against a fresh SQLite file per test, plus what only this
//! backend can show: the schema itself refuses changes to recorded events.

use kyc_sqlite::SqliteStore;
use kyc_store_contract::{Harness, Stores, insert_customer, new_firm};

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
