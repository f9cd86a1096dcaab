//! The engine's driver for PostgreSQL, shared by the storage adapter and the ledger: arguments
//! bound in their native column types (`uuid`, `timestamptz` truncated to its microseconds,
//! `jsonb`, `text[]`, `int8[]`), rows read by name, transactions as [`Session`]s, and a pool as a
//! [`Runner`]. PostgreSQL locks rows, so writers need no turn of their own.

use async_trait::async_trait;
use kyc_domain::ports::InfrastructureError;
use serde::de::DeserializeOwned;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Row, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::engine::{Arg, Columns, Dialect, Runner, Session, Statement, infra};

/// A time as stored: truncated to the microsecond, the precision of `timestamptz`.
#[must_use]
pub fn at_micros(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(at)
}

/// A row read through the engine (owned, or borrowed from a statement the adapter ran itself).
pub struct PgColumns<R = PgRow>(pub R);

fn bind<'q>(
    query: Query<'q, Postgres, PgArguments>,
    arg: &'q Arg<'q>,
) -> Query<'q, Postgres, PgArguments> {
    match arg {
        Arg::Id(id) => query.bind(*id),
        Arg::OptId(id) => query.bind(*id),
        Arg::Text(text) => query.bind(text.as_ref()),
        Arg::OptText(text) => query.bind(*text),
        Arg::Int(value) => query.bind(*value),
        Arg::Int4(value) => query.bind(*value),
        Arg::OptInt(value) => query.bind(*value),
        Arg::OptInt4(value) => query.bind(*value),
        Arg::Bool(value) => query.bind(*value),
        Arg::Time(at) => query.bind(at_micros(*at)),
        Arg::OptTime(at) => query.bind(at.map(at_micros)),
        Arg::Json(value) => query.bind(Json(value)),
        Arg::TextList(items) => query.bind(items.as_slice()),
        Arg::Bytes(bytes) => query.bind(*bytes),
        Arg::IntList(items) => query.bind(items.as_slice()),
    }
}

/// The statement as a query on PostgreSQL.
pub fn prepare<'q>(statement: &'q Statement<'q>) -> Query<'q, Postgres, PgArguments> {
    statement.args.iter().fold(
        sqlx::query(&statement.sql).persistent(statement.persistent),
        bind,
    )
}

fn column<'r, T>(row: &'r PgRow, column: &str) -> Result<T, InfrastructureError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(column).map_err(infra)
}

/// An integer column of whichever width the table gave it.
fn integer(row: &PgRow, name: &str) -> Result<Option<i64>, InfrastructureError> {
    use sqlx::{Column, TypeInfo};
    let width = row
        .columns()
        .iter()
        .find(|c| c.name() == name)
        .map(|c| c.type_info().name().to_owned());
    match width.as_deref() {
        Some("INT4") => Ok(column::<Option<i32>>(row, name)?.map(i64::from)),
        Some("INT2") => Ok(column::<Option<i16>>(row, name)?.map(i64::from)),
        _ => column(row, name),
    }
}

impl<R: std::borrow::Borrow<PgRow> + Send + Sync> Columns for PgColumns<R> {
    fn id(&self, name: &str) -> Result<Uuid, InfrastructureError> {
        column(self.0.borrow(), name)
    }

    fn opt_id(&self, name: &str) -> Result<Option<Uuid>, InfrastructureError> {
        column(self.0.borrow(), name)
    }

    fn text(&self, name: &str) -> Result<String, InfrastructureError> {
        column(self.0.borrow(), name)
    }

    fn opt_text(&self, name: &str) -> Result<Option<String>, InfrastructureError> {
        column(self.0.borrow(), name)
    }

    fn int(&self, name: &str) -> Result<i64, InfrastructureError> {
        integer(self.0.borrow(), name)?
            .ok_or_else(|| InfrastructureError::internal(format!("{name} is null")))
    }

    fn opt_int(&self, name: &str) -> Result<Option<i64>, InfrastructureError> {
        integer(self.0.borrow(), name)
    }

    fn flag(&self, name: &str) -> Result<bool, InfrastructureError> {
        column(self.0.borrow(), name)
    }

    fn time(&self, name: &str) -> Result<OffsetDateTime, InfrastructureError> {
        column(self.0.borrow(), name)
    }

    fn opt_time(&self, name: &str) -> Result<Option<OffsetDateTime>, InfrastructureError> {
        column(self.0.borrow(), name)
    }

    fn bytes(&self, name: &str) -> Result<Vec<u8>, InfrastructureError> {
        column(self.0.borrow(), name)
    }

    fn text_list(&self, name: &str) -> Result<Vec<String>, InfrastructureError> {
        column(self.0.borrow(), name)
    }

    fn json<T: DeserializeOwned>(&self, name: &str) -> Result<T, InfrastructureError> {
        column::<Json<T>>(self.0.borrow(), name).map(|Json(value)| value)
    }

    fn opt_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, InfrastructureError> {
        column::<Option<Json<T>>>(self.0.borrow(), name).map(|value| value.map(|Json(value)| value))
    }
}

/// A transaction of the engine.
pub struct PgSession(pub Transaction<'static, Postgres>);

#[async_trait]
impl Session for PgSession {
    type Row = PgColumns;

    const DIALECT: Dialect = Dialect::Postgres;

    async fn execute(&mut self, statement: Statement<'_>) -> Result<u64, sqlx::Error> {
        Ok(prepare(&statement)
            .execute(&mut *self.0)
            .await?
            .rows_affected())
    }

    async fn fetch_all(&mut self, statement: Statement<'_>) -> Result<Vec<PgColumns>, sqlx::Error> {
        let rows = prepare(&statement).fetch_all(&mut *self.0).await?;
        Ok(rows.into_iter().map(PgColumns).collect())
    }

    async fn fetch_optional(
        &mut self,
        statement: Statement<'_>,
    ) -> Result<Option<PgColumns>, sqlx::Error> {
        Ok(prepare(&statement)
            .fetch_optional(&mut *self.0)
            .await?
            .map(PgColumns))
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        self.0.commit().await
    }

    async fn rollback(self) -> Result<(), sqlx::Error> {
        self.0.rollback().await
    }
}

#[async_trait]
impl Runner for PgPool {
    type Row = PgColumns;
    type Tx = PgSession;

    const DIALECT: Dialect = Dialect::Postgres;

    async fn fetch_all(&self, statement: Statement<'_>) -> Result<Vec<PgColumns>, sqlx::Error> {
        let rows = prepare(&statement).fetch_all(self).await?;
        Ok(rows.into_iter().map(PgColumns).collect())
    }

    async fn fetch_optional(
        &self,
        statement: Statement<'_>,
    ) -> Result<Option<PgColumns>, sqlx::Error> {
        Ok(prepare(&statement)
            .fetch_optional(self)
            .await?
            .map(PgColumns))
    }

    async fn execute(&self, statement: Statement<'_>) -> Result<u64, sqlx::Error> {
        Ok(prepare(&statement).execute(self).await?.rows_affected())
    }

    async fn execute_returning(
        &self,
        statement: Statement<'_>,
    ) -> Result<Vec<PgColumns>, sqlx::Error> {
        Runner::fetch_all(self, statement).await
    }

    async fn begin_write(&self) -> Result<PgSession, InfrastructureError> {
        self.begin().await.map(PgSession).map_err(infra)
    }
}
