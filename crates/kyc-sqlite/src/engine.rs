//! The shared storage engine (`kyc_store_support::engine`) on this store: statements run through
//! the SQLite driver of `kyc_store_support::sqlite`, every write in this store's writer turn (see
//! `kyc_store_support::sqlite::SqliteDb`), constraints recognised by the columns SQLite names.

use async_trait::async_trait;
use kyc_domain::ports::InfrastructureError;
use kyc_store_support::engine::{Dialect, Engine, Runner, Statement, Unique};
pub(crate) use kyc_store_support::sqlite::{SqliteColumns, prepare};

use crate::{SqliteStore, WriteTx};

#[async_trait]
impl Runner for SqliteStore {
    type Row = SqliteColumns;
    type Tx = WriteTx;

    const DIALECT: Dialect = Dialect::Sqlite;

    async fn fetch_all(&self, statement: Statement<'_>) -> Result<Vec<SqliteColumns>, sqlx::Error> {
        self.db.fetch_all(statement).await
    }

    async fn fetch_optional(
        &self,
        statement: Statement<'_>,
    ) -> Result<Option<SqliteColumns>, sqlx::Error> {
        self.db.fetch_optional(statement).await
    }

    async fn execute(&self, statement: Statement<'_>) -> Result<u64, sqlx::Error> {
        self.db.execute(statement).await
    }

    async fn execute_returning(
        &self,
        statement: Statement<'_>,
    ) -> Result<Vec<SqliteColumns>, sqlx::Error> {
        self.db.execute_returning(statement).await
    }

    async fn begin_write(&self) -> Result<WriteTx, InfrastructureError> {
        self.db.begin_write().await
    }
}

impl Engine for SqliteStore {
    fn states(&self) -> &kyc_store_support::StateCache {
        &self.states
    }

    fn violates(error: &sqlx::Error, constraint: Unique) -> bool {
        let column = match constraint {
            Unique::CustomerExternalId => "customers.external_id",
            Unique::ProviderEvent => "provider_events.key",
            Unique::UserEmail => "users.email_normalized",
        };
        crate::is_unique_violation(error, column)
    }
}
