//! The engine's driver for SQLite, shared by the storage adapter and the ledger: ids bound as
//! hyphenated text, times as integer microseconds (UTC), JSON and lists as text; rows read by
//! name; and every write in the writer's turn of its file ([`SqliteDb`]), then under SQLite's own
//! write lock (`BEGIN IMMEDIATE`).

use std::ops::{Deref, DerefMut};

use async_trait::async_trait;
use kyc_domain::ports::InfrastructureError;
use serde::de::DeserializeOwned;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::engine::{Arg, Columns, Dialect, Runner, Session, Statement, infra};
use crate::turn::{Turn, WriterTurn};

/// A time as stored: integer microseconds since 1970 (UTC), which fit an `i64` for ±292,000
/// years.
#[must_use]
pub fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// A stored time read back.
///
/// # Errors
/// [`InfrastructureError::Internal`] when the value is out of `time`'s range.
pub fn from_micros(value: i64) -> Result<OffsetDateTime, InfrastructureError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(value) * 1_000)
        .map_err(InfrastructureError::internal)
}

/// A stored UUID read back.
///
/// # Errors
/// [`InfrastructureError::Internal`] when the text is not a UUID.
pub fn uuid(text: &str) -> Result<Uuid, InfrastructureError> {
    Uuid::parse_str(text).map_err(InfrastructureError::internal)
}

/// A JSON column read back.
///
/// # Errors
/// [`InfrastructureError::Internal`] when the text does not parse into `T`.
pub fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, InfrastructureError> {
    serde_json::from_str(text).map_err(InfrastructureError::internal)
}

/// One SQLite file's pool and the turn its writers in this process take (shared by every store
/// and ledger on the file that was handed the same [`WriterTurn`]).
#[derive(Debug, Clone)]
pub struct SqliteDb {
    /// The pool.
    pub pool: SqlitePool,
    /// The writers' turn.
    pub writer: WriterTurn,
}

impl SqliteDb {
    /// The pool with a turn of its own.
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            writer: WriterTurn::new(),
        }
    }

    /// Waits for this file's writers before this one to finish; held until the write is done
    /// (see [`WriterTurn`]: it orders the writers of this process, SQLite's lock and busy timeout
    /// still order everyone else).
    pub async fn write_turn(&self) -> Turn {
        self.writer.take().await
    }

    /// A write transaction: the writer's turn, then `BEGIN IMMEDIATE` (the database's write
    /// lock).
    ///
    /// # Errors
    /// [`InfrastructureError`] when the transaction cannot begin.
    pub async fn begin_write(&self) -> Result<WriteTx, InfrastructureError> {
        let turn = self.write_turn().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(infra)?;
        Ok(WriteTx { tx, _turn: turn })
    }
}

/// A `BEGIN IMMEDIATE` transaction holding its writer's turn until it is committed or dropped
/// (rolled back). Statements run on it as on its connection (`&mut *tx`).
pub struct WriteTx {
    // Dropped first: the rollback of an uncommitted transaction is queued before the turn passes.
    tx: Transaction<'static, Sqlite>,
    _turn: Turn,
}

impl WriteTx {
    /// Commits, then passes the turn on.
    ///
    /// # Errors
    /// The driver's error when the commit fails.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

/// A row read through the engine (owned, or borrowed from a statement the adapter ran itself).
pub struct SqliteColumns<R = SqliteRow>(pub R);

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

/// The statement as a query on SQLite.
pub fn prepare<'q>(statement: &'q Statement<'q>) -> Query<'q, Sqlite, SqliteArguments<'q>> {
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

    fn opt_id(&self, name: &str) -> Result<Option<Uuid>, InfrastructureError> {
        column::<Option<&str>>(self.0.borrow(), name)?
            .map(uuid)
            .transpose()
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

    const DIALECT: Dialect = Dialect::Sqlite;

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

    async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

#[async_trait]
impl Runner for SqliteDb {
    type Row = SqliteColumns;
    type Tx = WriteTx;

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
        SqliteDb::begin_write(self).await
    }
}
