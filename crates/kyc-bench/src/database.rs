//! The throw-away database of one run: a new PostgreSQL database on the server named by
//! `DATABASE_URL` (dropped at the end), or a SQLite file in a temporary directory.

use std::sync::Arc;

use kyc_domain::ports::CustomerStore;
use sqlx::Connection;

/// Which database a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// PostgreSQL, the production database (the targets apply here).
    Postgres,
    /// The embedded SQLite database, reported beside it.
    Sqlite,
}

impl Backend {
    /// Its name in the report.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::Sqlite => "SQLite",
        }
    }
}

/// A database made for one run.
pub struct RunDatabase {
    /// The URL the server, the baseline and the seeding use.
    pub url: String,
    /// Which backend.
    pub backend: Backend,
    admin_url: Option<String>,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap_or((url, ""));
    format!("{base}/{name}")
}

impl RunDatabase {
    /// Creates a fresh database. `postgres_url` names the server (any database on it).
    ///
    /// # Errors
    /// The server cannot be reached, or `CREATE DATABASE` fails.
    pub async fn create(backend: Backend, postgres_url: Option<&str>) -> Result<Self, String> {
        let name = format!("kyc_bench_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
                let url = format!("sqlite://{}", dir.path().join("kyc.db").display());
                Ok(Self {
                    url,
                    backend,
                    admin_url: None,
                    name,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin_url = postgres_url
                    .filter(|url| url.starts_with("postgres"))
                    .ok_or("the PostgreSQL run needs DATABASE_URL=postgres://…")?
                    .to_owned();
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| format!("connect to DATABASE_URL: {e}"))?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .map_err(|e| format!("CREATE DATABASE: {e}"))?;
                Ok(Self {
                    url: with_database(&admin_url, &name),
                    backend,
                    admin_url: Some(admin_url),
                    name,
                    _dir: None,
                })
            }
        }
    }

    /// Drops a PostgreSQL database (the SQLite file goes with its directory).
    pub async fn drop_database(&self) {
        if let Some(admin_url) = &self.admin_url
            && let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await
        {
            let dropped = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await;
            if let Err(error) = dropped {
                eprintln!("warning: could not drop {}: {error}", self.name);
            }
        }
    }

    /// The customer store of the database's backend, on the adapter's own pool settings.
    ///
    /// # Errors
    /// The database cannot be opened.
    pub async fn customers(&self) -> Result<Arc<dyn CustomerStore>, String> {
        Ok(match self.backend {
            Backend::Postgres => Arc::new(kyc_postgres::PostgresStore::new(
                kyc_postgres::connect(&self.url)
                    .await
                    .map_err(|e| format!("open PostgreSQL: {e}"))?,
            )),
            Backend::Sqlite => Arc::new(kyc_sqlite::SqliteStore::new(
                kyc_sqlite::connect(&self.url)
                    .await
                    .map_err(|e| format!("open SQLite: {e}"))?,
            )),
        })
    }

    /// Gathers the planner's statistics after the seed, as autovacuum would within a minute or so
    /// of a bulk load: without it the first phases would run on plans made for empty tables, and
    /// whether autovacuum got there during a phase would change the figures from run to run.
    /// PostgreSQL only; SQLite plans from its indexes alone unless `ANALYZE` is run by its operator.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn analyze(&self) -> Result<(), String> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        let mut connection = sqlx::PgConnection::connect(&self.url)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query("ANALYZE")
            .execute(&mut connection)
            .await
            .map_err(|e| format!("analyze: {e}"))?;
        Ok(())
    }

    /// Work entries of the outbox not yet done (AML screening queued by GREEN verdicts).
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn outbox_pending(&self) -> Result<i64, String> {
        const QUERY: &str = "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL";
        let count = match self.backend {
            Backend::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&self.url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query_scalar(QUERY).fetch_one(&mut connection).await
            }
            Backend::Sqlite => {
                let mut connection = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query_scalar(QUERY).fetch_one(&mut connection).await
            }
        };
        count.map_err(|e| format!("count the outbox: {e}"))
    }

    /// How many customers are in each KYC status, read straight from the table: the proof that
    /// the webhooks moved the customers they were sent for.
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn kyc_status_counts(&self) -> Result<Vec<(String, i64)>, String> {
        const QUERY: &str =
            "SELECT kyc_status, COUNT(*) FROM customers GROUP BY kyc_status ORDER BY kyc_status";
        let rows = match self.backend {
            Backend::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&self.url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query_as::<_, (String, i64)>(QUERY)
                    .fetch_all(&mut connection)
                    .await
            }
            Backend::Sqlite => {
                let mut connection = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query_as::<_, (String, i64)>(QUERY)
                    .fetch_all(&mut connection)
                    .await
            }
        };
        rows.map_err(|e| format!("count statuses: {e}"))
    }
}
