//! The shared storage engine (`kyc_store_support::engine`) on this store: statements run on its
//! pool through the PostgreSQL driver of `kyc_store_support::postgres`, constraints recognised by
//! name.

use async_trait::async_trait;
use kyc_domain::ports::InfrastructureError;
use kyc_store_support::engine::{Dialect, Engine, Runner, Statement, Unique};
pub(crate) use kyc_store_support::postgres::{PgColumns, PgSession};

use crate::PostgresStore;

#[async_trait]
impl Runner for PostgresStore {
    type Row = PgColumns;
    type Tx = PgSession;

    const DIALECT: Dialect = Dialect::Postgres;

    async fn fetch_all(&self, statement: Statement<'_>) -> Result<Vec<PgColumns>, sqlx::Error> {
        self.pool.fetch_all(statement).await
    }

    async fn fetch_optional(
        &self,
        statement: Statement<'_>,
    ) -> Result<Option<PgColumns>, sqlx::Error> {
        self.pool.fetch_optional(statement).await
    }

    async fn execute(&self, statement: Statement<'_>) -> Result<u64, sqlx::Error> {
        Runner::execute(&self.pool, statement).await
    }

    async fn execute_returning(
        &self,
        statement: Statement<'_>,
    ) -> Result<Vec<PgColumns>, sqlx::Error> {
        self.pool.execute_returning(statement).await
    }

    async fn begin_write(&self) -> Result<PgSession, InfrastructureError> {
        self.pool.begin_write().await
    }
}

impl Engine for PostgresStore {
    fn states(&self) -> &kyc_store_support::StateCache {
        &self.states
    }

    fn violates(error: &sqlx::Error, constraint: Unique) -> bool {
        let name = match constraint {
            Unique::CustomerExternalId => "customers_external_id_key",
            Unique::ProviderEvent => "provider_events_pkey",
            Unique::UserEmail => "users_email_key",
        };
        crate::is_unique_violation(error, name)
    }
}
