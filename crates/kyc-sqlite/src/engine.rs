//! How the shared storage engine (`kyc_store_support::engine`) runs on SQLite: ids bound as
//! hyphenated text, times as integer microseconds (UTC), JSON and lists as text; constraints
//! recognised by the columns SQLite names; and every write in this store's writer turn (see
//! [`SqliteStore::write_turn`]).

use async_trait::async_trait;
use kyc_domain::ports::InfrastructureError;
use kyc_store_support::engine::{Arg, Columns, Dialect, Engine, Session, Statement, Unique, infra};
use serde::de::DeserializeOwned;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Row, Sqlite};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{SqliteStore, WriteTx, from_json, from_micros, micros, uuid};

/// A row read through the engine (owned, or borrowed from a statement the adapter ran itself).
pub struct SqliteColumns<R = SqliteRow>(pub(crate) R);

fn bind<'q>(
    query: Query<'q, Sqlite, SqliteArguments<'q>>,
    arg: &'q Arg<'q>,
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    match arg {
        Arg::Id(id) => query.bind(id.to_string()),
        Arg::OptId(id) => query.bind(id.map(|id| id.to_string())),
        Arg::Text(text) => query.bind(text.as_ref()),
        Arg::OptText(text) => query.bind(*text),
        Arg::Int(value) => query.bind(*value),
        Arg::Int4(value) => query.bind(*value),
        Arg::OptInt(value) => query.bind(*value),
        Arg::OptInt4(value) => query.bind(*value),
        Arg::Bool(value) => query.bind(*value),
        Arg::Time(at) => query.bind(micros(*at)),
        Arg::OptTime(at) => query.bind(at.map(micros)),
        Arg::Json(value) => query.bind(value.to_string()),
        Arg::TextList(items) => query.bind(serde_json::Value::from(items.clone()).to_string()),
        Arg::Bytes(bytes) => query.bind(*bytes),
        Arg::IntList(items) => query.bind(serde_json::Value::from(items.clone()).to_string()),
    }
}

pub(crate) fn prepare<'q>(statement: &'q Statement<'q>) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    statement.args.iter().fold(
        sqlx::query(&statement.sql).persistent(statement.persistent),
        bind,
    )
}

fn column<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T, InfrastructureError>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(column).map_err(infra)
}

impl<R: std::borrow::Borrow<SqliteRow> + Send + Sync> Columns for SqliteColumns<R> {
    fn id(&self, name: &str) -> Result<Uuid, InfrastructureError> {
        uuid(column(self.0.borrow(), name)?)
    }

    fn text(&self, name: &str) -> Result<String, InfrastructureError> {
        column(self.0.borrow(), name)
    }

    fn opt_text(&self, name: &str) -> Result<Option<String>, InfrastructureError> {
        column(self.0.borrow(), name)
    }

    fn int(&self, name: &str) -> Result<i64, InfrastructureError> {
        column(self.0.borrow(), name)
    }

    fn opt_int(&self, name: &str) -> Result<Option<i64>, InfrastructureError> {
        column(self.0.borrow(), name)
    }

    fn flag(&self, name: &str) -> Result<bool, InfrastructureError> {
        column(self.0.borrow(), name)
    }

    fn time(&self, name: &str) -> Result<OffsetDateTime, InfrastructureError> {
        from_micros(column(self.0.borrow(), name)?)
    }

    fn opt_time(&self, name: &str) -> Result<Option<OffsetDateTime>, InfrastructureError> {
        column::<Option<i64>>(self.0.borrow(), name)?
            .map(from_micros)
            .transpose()
    }

    fn bytes(&self, name: &str) -> Result<Vec<u8>, InfrastructureError> {
        column(self.0.borrow(), name)
    }

    fn text_list(&self, name: &str) -> Result<Vec<String>, InfrastructureError> {
        from_json(column(self.0.borrow(), name)?)
    }

    fn json<T: DeserializeOwned>(&self, name: &str) -> Result<T, InfrastructureError> {
        from_json(column(self.0.borrow(), name)?)
    }

    fn opt_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, InfrastructureError> {
        column::<Option<&str>>(self.0.borrow(), name)?
            .map(from_json)
            .transpose()
    }
}

#[async_trait]
impl Session for WriteTx {
    type Row = SqliteColumns;

    async fn execute(&mut self, statement: Statement<'_>) -> Result<u64, sqlx::Error> {
        Ok(prepare(&statement)
            .execute(&mut **self)
            .await?
            .rows_affected())
    }

    async fn fetch_all(
        &mut self,
        statement: Statement<'_>,
    ) -> Result<Vec<SqliteColumns>, sqlx::Error> {
        let rows = prepare(&statement).fetch_all(&mut **self).await?;
        Ok(rows.into_iter().map(SqliteColumns).collect())
    }

    async fn fetch_optional(
        &mut self,
        statement: Statement<'_>,
    ) -> Result<Option<SqliteColumns>, sqlx::Error> {
        Ok(prepare(&statement)
            .fetch_optional(&mut **self)
            .await?
            .map(SqliteColumns))
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        WriteTx::commit(self).await
    }
}

#[async_trait]
impl Engine for SqliteStore {
    type Row = SqliteColumns;
    type Tx = WriteTx;

    fn states(&self) -> &kyc_store_support::StateCache {
        &self.states
    }

    const DIALECT: Dialect = Dialect::Sqlite;

    async fn fetch_all(&self, statement: Statement<'_>) -> Result<Vec<SqliteColumns>, sqlx::Error> {
        let rows = prepare(&statement).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(SqliteColumns).collect())
    }

    async fn fetch_optional(
        &self,
        statement: Statement<'_>,
    ) -> Result<Option<SqliteColumns>, sqlx::Error> {
        Ok(prepare(&statement)
            .fetch_optional(&self.pool)
            .await?
            .map(SqliteColumns))
    }

    async fn execute(&self, statement: Statement<'_>) -> Result<u64, sqlx::Error> {
        let _turn = self.write_turn().await;
        Ok(prepare(&statement)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn execute_returning(
        &self,
        statement: Statement<'_>,
    ) -> Result<Vec<SqliteColumns>, sqlx::Error> {
        let _turn = self.write_turn().await;
        let rows = prepare(&statement).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(SqliteColumns).collect())
    }

    async fn begin_write(&self) -> Result<WriteTx, InfrastructureError> {
        SqliteStore::begin_write(self).await
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
