//! The storage side of the composition: the engine chosen by `DATABASE_URL`, its migrations (the
//! storage crate's, then the ledger's, on one pool), every storage port as `Arc<dyn Port>`, and the
//! readiness check (`/readyz`: database reachable, migrations current).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kyc_domain::ports::{
    ApiKeyStore, AuditLog, CreditsLedger, CustomerStore, DeliveryQueue, EventFeed, FirmStore,
    IdGenerator, IdempotencyStore, OutboxStore, SessionStore, UserStore, WebhookStore,
};
use kyc_domain::usecases::{AccessPorts, AccessService, WebhookPorts, WebhookService};
use kyc_ledger::{PgLedger, SqliteLedger};
use kyc_postgres::PostgresStore;
use kyc_sqlite::SqliteStore;
use sqlx::migrate::Migrator;
use sqlx::{PgPool, SqlitePool};

use crate::Failure;
use crate::config::{DatabaseUrl, Engine};
use crate::system::{SystemClock, SystemCredentials};

/// The migrations each engine must have applied, embedded from the adapter crates so readiness
/// knows what "current" means for this build.
static POSTGRES_STORAGE: Migrator = sqlx::migrate!("../kyc-postgres/migrations/postgres");
static POSTGRES_LEDGER: Migrator = sqlx::migrate!("../kyc-ledger/migrations/postgres");
static SQLITE_STORAGE: Migrator = sqlx::migrate!("../kyc-sqlite/migrations/sqlite");
static SQLITE_LEDGER: Migrator = sqlx::migrate!("../kyc-ledger/migrations/sqlite");

/// How long a readiness probe may wait for the database before it answers "not ready".
const READINESS_TIMEOUT: Duration = Duration::from_secs(3);

/// A connected database of either engine.
#[derive(Debug, Clone)]
pub enum Backend {
    /// PostgreSQL.
    Postgres(PgPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

/// Every storage port and the ledger, on one backend.
#[derive(Clone)]
pub struct Stores {
    /// Customers.
    pub customers: Arc<dyn CustomerStore>,
    /// Firms.
    pub firms: Arc<dyn FirmStore>,
    /// Back-office users.
    pub users: Arc<dyn UserStore>,
    /// Back-office sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// API keys.
    pub api_keys: Arc<dyn ApiKeyStore>,
    /// Stored responses of idempotent requests.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// The audit trail.
    pub audit: Arc<dyn AuditLog>,
    /// The firms' event feeds.
    pub feed: Arc<dyn EventFeed>,
    /// The webhook delivery queue.
    pub queue: Arc<dyn DeliveryQueue>,
    /// Outbound webhook endpoints and deliveries.
    pub webhooks: Arc<dyn WebhookStore>,
    /// The transactional outbox.
    pub outbox: Arc<dyn OutboxStore>,
    /// The credits ledger.
    pub ledger: Arc<dyn CreditsLedger>,
    /// On PostgreSQL, the store behind these ports, whose API keys are served from memory while
    /// `serve` runs its listener for key changes ([`PostgresStore::listen_for_key_changes`]).
    pub postgres: Option<PostgresStore>,
}

impl Stores {
    /// The use cases of the firms' users and API keys on these stores, with argon2id password
    /// hashes, random keys, the wall clock and `ids`: what `serve` and the commands both drive.
    pub fn access(&self, ids: Arc<dyn IdGenerator>) -> AccessService {
        AccessService::new(AccessPorts {
            users: self.users.clone(),
            api_keys: self.api_keys.clone(),
            credentials: Arc::new(SystemCredentials),
            clock: Arc::new(SystemClock),
            ids,
        })
    }

    /// The use cases of the firms' webhook endpoints and event feeds on these stores, with fresh
    /// random secrets, the wall clock and `ids`; a rotated secret keeps signing for
    /// `secret_overlap`.
    pub fn webhooks(
        &self,
        ids: Arc<dyn IdGenerator>,
        secret_overlap: time::Duration,
    ) -> WebhookService {
        WebhookService::new(
            WebhookPorts {
                endpoints: self.webhooks.clone(),
                queue: self.queue.clone(),
                feed: self.feed.clone(),
                clock: Arc::new(SystemClock),
                ids,
                credentials: Arc::new(SystemCredentials),
            },
            secret_overlap,
        )
    }
}

impl Backend {
    /// Connects to the database `url` names (creating an SQLite file if missing).
    ///
    /// # Errors
    /// One line naming `DATABASE_URL` when the database cannot be reached or opened.
    pub async fn connect(url: &DatabaseUrl) -> Result<Self, Failure> {
        let unreachable = |error: kyc_domain::ports::InfrastructureError| {
            Failure::new(format!(
                "DATABASE_URL: cannot connect to the database: {}",
                crate::innermost_cause(&error)
            ))
        };
        match url.engine() {
            Engine::Postgres => kyc_postgres::connect(url.expose())
                .await
                .map(Self::Postgres)
                .map_err(unreachable),
            Engine::Sqlite => kyc_sqlite::connect(url.expose())
                .await
                .map(Self::Sqlite)
                .map_err(|error| {
                    Failure::new(format!(
                        "DATABASE_URL: cannot open the SQLite database: {}. SQLite writes the \
                         file and creates its -wal and -shm files beside it: check that the \
                         directory exists and is writable, and that the disk has space",
                        crate::innermost_cause(&error)
                    ))
                }),
        }
    }

    /// The engine's name, for logs.
    pub fn engine_name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Applies the storage migrations, then the ledger's, on this database.
    ///
    /// # Errors
    /// One line saying which set failed and why.
    pub async fn migrate(&self) -> Result<(), Failure> {
        let storage = |error: kyc_domain::ports::InfrastructureError| {
            Failure::new(format!(
                "storage migrations failed: {}",
                crate::innermost_cause(&error)
            ))
        };
        let ledger = |error: sqlx::migrate::MigrateError| {
            Failure::new(format!("ledger migrations failed: {error}"))
        };
        match self {
            Self::Postgres(pool) => {
                kyc_postgres::migrate(pool).await.map_err(storage)?;
                kyc_ledger::migrate_postgres(pool).await.map_err(ledger)
            }
            Self::Sqlite(pool) => {
                kyc_sqlite::migrate(pool).await.map_err(storage)?;
                kyc_ledger::migrate_sqlite(pool).await.map_err(ledger)
            }
        }
    }

    /// Every port on this database.
    pub fn stores(&self) -> Stores {
        match self {
            Self::Postgres(pool) => {
                let postgres = PostgresStore::new(pool.clone());
                let store = Arc::new(postgres.clone());
                Stores {
                    customers: store.clone(),
                    firms: store.clone(),
                    users: store.clone(),
                    sessions: store.clone(),
                    api_keys: store.clone(),
                    idempotency: store.clone(),
                    audit: store.clone(),
                    feed: store.clone(),
                    queue: store.clone(),
                    webhooks: store.clone(),
                    outbox: store,
                    ledger: Arc::new(PgLedger::new(pool.clone())),
                    postgres: Some(postgres),
                }
            }
            Self::Sqlite(pool) => {
                let store = Arc::new(SqliteStore::new(pool.clone()));
                let turn = store.writer_turn();
                Stores {
                    customers: store.clone(),
                    firms: store.clone(),
                    users: store.clone(),
                    sessions: store.clone(),
                    api_keys: store.clone(),
                    idempotency: store.clone(),
                    audit: store.clone(),
                    feed: store.clone(),
                    queue: store.clone(),
                    webhooks: store.clone(),
                    outbox: store,
                    // One file, one line of writers: the ledger queues with the store.
                    ledger: Arc::new(SqliteLedger::new(pool.clone()).with_writer_turn(turn)),
                    postgres: None,
                }
            }
        }
    }

    /// Whether the database answers and every migration this build knows has been applied.
    ///
    /// # Errors
    /// A short reason, safe to show on `/readyz` (no URL, no driver internals beyond the kind).
    pub async fn check_ready(&self) -> Result<(), String> {
        tokio::time::timeout(READINESS_TIMEOUT, self.applied_versions())
            .await
            .map_err(|_| "database did not answer in time".to_owned())?
            .map_err(|_| "database unreachable".to_owned())
            .and_then(|applied| {
                let (storage, ledger) = match self {
                    Self::Postgres(_) => (&POSTGRES_STORAGE, &POSTGRES_LEDGER),
                    Self::Sqlite(_) => (&SQLITE_STORAGE, &SQLITE_LEDGER),
                };
                let missing = storage
                    .iter()
                    .chain(ledger.iter())
                    .filter(|m| m.migration_type.is_up_migration())
                    .filter(|m| !applied.contains(&m.version))
                    .count();
                if missing == 0 {
                    Ok(())
                } else {
                    Err(format!("{missing} migration(s) not applied"))
                }
            })
    }

    async fn applied_versions(&self) -> Result<BTreeSet<i64>, sqlx::Error> {
        const APPLIED: &str = "SELECT version FROM _sqlx_migrations WHERE success";
        let versions: Vec<i64> = match self {
            Self::Postgres(pool) => sqlx::query_scalar(APPLIED).fetch_all(pool).await,
            Self::Sqlite(pool) => sqlx::query_scalar(APPLIED).fetch_all(pool).await,
        }
        .or_else(|error| match &error {
            // No migration table yet: nothing applied (the count of missing ones says so).
            sqlx::Error::Database(db) if db.message().contains("_sqlx_migrations") => {
                Ok(Vec::new())
            }
            _ => Err(error),
        })?;
        Ok(versions.into_iter().collect())
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Sqlite(pool) => pool.close().await,
        }
    }
}
