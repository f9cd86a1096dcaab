//! API keys served from memory while the store listens for changes to `api_keys`: what another
//! process (a second store on its own pool, or raw SQL) changes is seen by the listening store as
//! soon as the notification arrives; hits really are served from memory; and nothing is served from
//! memory while no listener is listening, including after its connection was lost.
//!
//! Each test runs on a fresh database on the server named by `DATABASE_URL`. Unset outside CI,
//! every test prints "skipped: DATABASE_URL not set" and passes; with `CI=true` a missing or
//! unreachable server fails the run.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use futures::FutureExt as _;
use kyc_domain::ids::{ApiKeyId, FirmId};
use kyc_domain::ports::{ApiKeyRecord, ApiKeyStore, Firm, FirmStore, InfrastructureError};
use kyc_postgres::PostgresStore;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long an asynchronous effect (a notification arriving) may take before a test fails.
const DEADLINE: Duration = Duration::from_secs(5);

fn database_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!(
                "DATABASE_URL must be set when CI=true: the Postgres tests cannot be skipped in CI"
            )
        }
        _ => {
            eprintln!("skipped: DATABASE_URL not set");
            None
        }
    }
}

/// Runs `test` with two pools on a fresh migrated database (as two server processes would have),
/// and drops the database afterwards, pass or fail.
async fn with_database<F, Fut>(test: F)
where
    F: FnOnce(PgPool, PgPool) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(url) = database_url() else {
        return;
    };
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
    let pool = || {
        PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
    };
    let (one, two) = (
        pool().await.expect("connect"),
        pool().await.expect("connect"),
    );
    kyc_postgres::migrate(&one).await.expect("migrate");
    let outcome = std::panic::AssertUnwindSafe(test(one.clone(), two.clone()))
        .catch_unwind()
        .await;
    one.close().await;
    two.close().await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
    admin.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A listener running for `store`, and the means to stop it.
struct Listener {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), InfrastructureError>>,
}

impl Listener {
    /// Starts listening and waits until the store says it is.
    async fn start(store: &PostgresStore) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let listening = store.clone();
        let task = tokio::spawn(async move {
            listening
                .listen_for_key_changes(async move {
                    let _ = stopped.await;
                })
                .await
        });
        eventually("the store listens", || async {
            store.is_listening_for_key_changes()
        })
        .await;
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Waits (up to [`DEADLINE`]) for it to end on its own, and returns how it ended.
    async fn ended(mut self) -> Result<(), InfrastructureError> {
        tokio::time::timeout(DEADLINE, &mut self.task)
            .await
            .expect("the listener ends on its own")
            .expect("listener task")
    }

    /// Stops it and returns how it ended.
    async fn stop(mut self) -> Result<(), InfrastructureError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("listener task")
    }
}

/// Polls `check` until it holds, failing after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .expect("microseconds")
}

/// A firm with one key, created through `store`.
async fn firm_with_key(store: &PostgresStore) -> ApiKeyRecord {
    let firm = FirmId::from_uuid(uuid::Uuid::now_v7());
    store
        .create_firm(&Firm {
            id: firm,
            name: "Keys Pty Ltd".into(),
            created_at: now(),
        })
        .await
        .expect("create firm");
    let sha256 = format!("{:064x}", uuid::Uuid::new_v4().as_u128());
    let key = ApiKeyRecord {
        id: ApiKeyId::from_uuid(uuid::Uuid::now_v7()),
        firm_id: firm,
        label: "HubSpot sync".into(),
        scopes: vec!["customers:read".into()],
        prefix: "kyc_live_abc".into(),
        last4: "wxyz".into(),
        sha256,
        expires_at: None,
        revoked_at: None,
        created_at: now(),
    };
    store.create_api_key(&key).await.expect("create key");
    key
}

async fn find(store: &PostgresStore, sha256: &str) -> Option<ApiKeyRecord> {
    store
        .find_api_key_by_sha256(sha256)
        .await
        .expect("find key")
}

/// Changes the key's label in a way that announces nothing (the notifying trigger disabled for
/// the transaction), so a store still answering the old label answered from memory.
async fn relabel_silently(pool: &PgPool, key: &ApiKeyRecord, label: &str) {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("ALTER TABLE api_keys DISABLE TRIGGER api_keys_notify_row")
        .execute(&mut *tx)
        .await
        .expect("disable trigger");
    sqlx::query("UPDATE api_keys SET label = $1 WHERE id = $2")
        .bind(label)
        .bind(key.id.as_uuid())
        .execute(&mut *tx)
        .await
        .expect("relabel");
    sqlx::query("ALTER TABLE api_keys ENABLE ALWAYS TRIGGER api_keys_notify_row")
        .execute(&mut *tx)
        .await
        .expect("enable trigger");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn a_key_revoked_by_another_process_is_seen_revoked_by_the_listening_store() {
    with_database(|one, two| async move {
        let server = PostgresStore::new(one);
        let cli = PostgresStore::new(two);
        let listener = Listener::start(&server).await;
        let key = firm_with_key(&cli).await;

        let read = find(&server, &key.sha256).await.expect("found");
        assert_eq!(read, key);
        assert_eq!(server.cached_key_count(), 1, "a found key is kept");

        assert!(
            cli.revoke_api_key(key.firm_id, key.id, now())
                .await
                .expect("revoke")
        );
        eventually("the revocation reaches the listening store", || async {
            find(&server, &key.sha256)
                .await
                .is_some_and(|record| record.revoked_at.is_some())
        })
        .await;
        listener.stop().await.expect("stopped cleanly");
    })
    .await;
}

#[tokio::test]
async fn raw_sql_updates_and_deletes_reach_the_listening_store() {
    with_database(|one, two| async move {
        let server = PostgresStore::new(one);
        let cli = PostgresStore::new(two.clone());
        let listener = Listener::start(&server).await;
        let key = firm_with_key(&cli).await;
        assert!(find(&server, &key.sha256).await.is_some());

        let expired = now() - time::Duration::hours(1);
        sqlx::query("UPDATE api_keys SET expires_at = $1 WHERE id = $2")
            .bind(expired)
            .bind(key.id.as_uuid())
            .execute(&two)
            .await
            .expect("expire");
        eventually("a raw UPDATE reaches the listening store", || async {
            find(&server, &key.sha256)
                .await
                .is_some_and(|record| record.expires_at == Some(expired))
        })
        .await;

        sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(key.id.as_uuid())
            .execute(&two)
            .await
            .expect("delete");
        eventually("a raw DELETE reaches the listening store", || async {
            find(&server, &key.sha256).await.is_none()
        })
        .await;
        // Not found is never kept: the same key inserted again works at once.
        cli.create_api_key(&key).await.expect("create again");
        assert_eq!(find(&server, &key.sha256).await, Some(key.clone()));

        sqlx::query("TRUNCATE api_keys")
            .execute(&two)
            .await
            .expect("truncate");
        eventually("a TRUNCATE reaches the listening store", || async {
            find(&server, &key.sha256).await.is_none()
        })
        .await;
        listener.stop().await.expect("stopped cleanly");
    })
    .await;
}

#[tokio::test]
async fn while_listening_a_key_seen_before_is_served_from_memory() {
    with_database(|one, two| async move {
        let server = PostgresStore::new(one);
        let cli = PostgresStore::new(two.clone());
        let listener = Listener::start(&server).await;
        let key = firm_with_key(&cli).await;
        assert_eq!(
            find(&server, &key.sha256).await.expect("found").label,
            "HubSpot sync"
        );

        relabel_silently(&two, &key, "renamed").await;
        assert_eq!(
            find(&cli, &key.sha256).await.expect("found").label,
            "renamed",
            "the row changed"
        );
        assert_eq!(
            find(&server, &key.sha256).await.expect("found").label,
            "HubSpot sync",
            "the listening store answered from memory, not from the row"
        );

        // A revocation through the store itself is seen at once, before (and without) any
        // notification: the trigger is off while it commits.
        sqlx::query("ALTER TABLE api_keys DISABLE TRIGGER api_keys_notify_row")
            .execute(&two)
            .await
            .expect("disable trigger");
        assert!(
            server
                .revoke_api_key(key.firm_id, key.id, now())
                .await
                .expect("revoke")
        );
        let after = find(&server, &key.sha256).await.expect("found");
        assert!(
            after.revoked_at.is_some(),
            "revoked here, seen here at once"
        );
        assert_eq!(after.label, "renamed", "read again from the row");
        sqlx::query("ALTER TABLE api_keys ENABLE ALWAYS TRIGGER api_keys_notify_row")
            .execute(&two)
            .await
            .expect("enable trigger");
        listener.stop().await.expect("stopped cleanly");
    })
    .await;
}

#[tokio::test]
async fn nothing_is_served_from_memory_without_a_listener() {
    with_database(|one, two| async move {
        let server = PostgresStore::new(one);
        let key = firm_with_key(&server).await;
        assert!(find(&server, &key.sha256).await.is_some());
        assert_eq!(
            server.cached_key_count(),
            0,
            "nothing kept while not listening"
        );
        relabel_silently(&two, &key, "renamed").await;
        assert_eq!(
            find(&server, &key.sha256).await.expect("found").label,
            "renamed"
        );

        // Listening, then stopped: what was kept is dropped and the row is read again.
        let listener = Listener::start(&server).await;
        assert_eq!(
            find(&server, &key.sha256).await.expect("found").label,
            "renamed"
        );
        assert_eq!(server.cached_key_count(), 1);
        listener.stop().await.expect("stopped cleanly");
        assert!(!server.is_listening_for_key_changes());
        assert_eq!(server.cached_key_count(), 0);
        relabel_silently(&two, &key, "renamed again").await;
        assert_eq!(
            find(&server, &key.sha256).await.expect("found").label,
            "renamed again"
        );
    })
    .await;
}

#[tokio::test]
async fn a_lost_listener_connection_turns_the_cache_off_until_listening_again() {
    with_database(|one, two| async move {
        let server = PostgresStore::new(one);
        let listener = Listener::start(&server).await;
        let key = firm_with_key(&server).await;
        assert!(find(&server, &key.sha256).await.is_some());
        assert_eq!(server.cached_key_count(), 1);

        let terminated: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_all(&two)
        .await
        .expect("terminate the listener's session");
        assert_eq!(terminated, [true], "one listening session");
        let ended = listener.ended().await;
        assert!(
            matches!(ended, Err(InfrastructureError::Unavailable(_))),
            "the loss is reported: {ended:?}"
        );
        assert!(!server.is_listening_for_key_changes());
        assert_eq!(
            server.cached_key_count(),
            0,
            "cleared when the connection was lost"
        );
        // Changes made while nobody listens are read from the row.
        relabel_silently(&two, &key, "renamed").await;
        assert_eq!(
            find(&server, &key.sha256).await.expect("found").label,
            "renamed"
        );

        // Listening again, the cache is back in use.
        let listener = Listener::start(&server).await;
        assert_eq!(
            find(&server, &key.sha256).await.expect("found").label,
            "renamed"
        );
        assert_eq!(server.cached_key_count(), 1);
        listener.stop().await.expect("stopped cleanly");
    })
    .await;
}
