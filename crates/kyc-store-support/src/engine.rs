//! The one storage engine both adapters run: statements written once, with their arguments as
//! dialect-neutral [`Arg`]s, and rows read through [`Columns`]. A backend implements [`Engine`]
//! (how an argument is bound and a column read on its database, how a write waits for its turn,
//! which constraint a unique violation names) and nothing that decides an outcome.
//!
//! Where the databases really differ (SQL functions, collation, array columns, locking) the
//! shared code picks the statement by [`Engine::DIALECT`], so each difference is visible beside
//! the rule it serves.

use std::borrow::Cow;

use async_trait::async_trait;
use kyc_domain::ports::InfrastructureError;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use uuid::Uuid;

/// The database a statement is written for, where the two need different text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL: `uuid`, `timestamptz`, `jsonb` and `text[]` columns.
    Postgres,
    /// SQLite: ids as hyphenated text, times as integer microseconds (UTC), JSON and lists as text.
    Sqlite,
}

/// One argument of a statement, bound by each backend in its own column type.
#[derive(Debug, Clone)]
pub enum Arg<'a> {
    /// An id (`uuid`; SQLite: hyphenated text).
    Id(Uuid),
    /// An optional id.
    OptId(Option<Uuid>),
    /// Text.
    Text(Cow<'a, str>),
    /// Optional text.
    OptText(Option<&'a str>),
    /// An integer.
    Int(i64),
    /// A small integer (`int4` on PostgreSQL).
    Int4(i32),
    /// An optional integer.
    OptInt(Option<i64>),
    /// An optional small integer (`int4` on PostgreSQL).
    OptInt4(Option<i32>),
    /// A flag.
    Bool(bool),
    /// A time (`timestamptz`, truncated to its microseconds; SQLite: integer microseconds).
    Time(OffsetDateTime),
    /// An optional time.
    OptTime(Option<OffsetDateTime>),
    /// A JSON value (`jsonb`; SQLite: its text).
    Json(serde_json::Value),
    /// A list of text (`text[]`; SQLite: a JSON array).
    TextList(Vec<String>),
    /// Bytes (`bytea`; SQLite: a blob).
    Bytes(&'a [u8]),
    /// A list of integers (`int8[]`; SQLite: a JSON array, read with `json_each`).
    IntList(Vec<i64>),
}

/// A statement and its arguments (`$1`, `$2`, … in the order given).
#[derive(Debug, Clone)]
pub struct Statement<'a> {
    /// The SQL text.
    pub sql: Cow<'a, str>,
    /// The arguments, in placeholder order.
    pub args: Vec<Arg<'a>>,
    /// Whether the backend may keep the statement prepared and reuse its plan (see
    /// [`Statement::planned_each_run`]).
    pub persistent: bool,
}

impl<'a> Statement<'a> {
    /// A statement with no arguments yet.
    pub fn new(sql: impl Into<Cow<'a, str>>) -> Self {
        Self {
            sql: sql.into(),
            args: Vec::new(),
            persistent: true,
        }
    }

    /// Planned for each run's own arguments, never from a cached generic plan: for a statement
    /// whose best plan depends on how many rows its arguments select (a lease at `now`).
    #[must_use]
    pub fn planned_each_run(mut self) -> Self {
        self.persistent = false;
        self
    }

    /// Appends an argument.
    #[must_use]
    pub fn arg(mut self, arg: Arg<'a>) -> Self {
        self.args.push(arg);
        self
    }

    /// Appends an id.
    #[must_use]
    pub fn id(self, id: Uuid) -> Self {
        self.arg(Arg::Id(id))
    }

    /// Appends text.
    #[must_use]
    pub fn text(self, text: impl Into<Cow<'a, str>>) -> Self {
        self.arg(Arg::Text(text.into()))
    }

    /// Appends optional text.
    #[must_use]
    pub fn opt_text(self, text: Option<&'a str>) -> Self {
        self.arg(Arg::OptText(text))
    }

    /// Appends an integer.
    #[must_use]
    pub fn int(self, value: i64) -> Self {
        self.arg(Arg::Int(value))
    }

    /// Appends a time.
    #[must_use]
    pub fn time(self, at: OffsetDateTime) -> Self {
        self.arg(Arg::Time(at))
    }

    /// Appends an optional time.
    #[must_use]
    pub fn opt_time(self, at: Option<OffsetDateTime>) -> Self {
        self.arg(Arg::OptTime(at))
    }

    /// Appends a value serialized as JSON.
    ///
    /// # Errors
    /// [`InfrastructureError::Internal`] when the value does not serialize.
    pub fn json<T: serde::Serialize + ?Sized>(
        self,
        value: &T,
    ) -> Result<Self, InfrastructureError> {
        let value = serde_json::to_value(value).map_err(InfrastructureError::internal)?;
        Ok(self.arg(Arg::Json(value)))
    }
}

/// The columns of a row read back, by name, in the backend's column types.
pub trait Columns {
    /// An id column.
    fn id(&self, column: &str) -> Result<Uuid, InfrastructureError>;
    /// A nullable id column.
    fn opt_id(&self, column: &str) -> Result<Option<Uuid>, InfrastructureError>;
    /// A text column.
    fn text(&self, column: &str) -> Result<String, InfrastructureError>;
    /// A nullable text column.
    fn opt_text(&self, column: &str) -> Result<Option<String>, InfrastructureError>;
    /// An integer column of any width.
    fn int(&self, column: &str) -> Result<i64, InfrastructureError>;
    /// A nullable integer column of any width.
    fn opt_int(&self, column: &str) -> Result<Option<i64>, InfrastructureError>;
    /// A flag.
    fn flag(&self, column: &str) -> Result<bool, InfrastructureError>;
    /// A time column.
    fn time(&self, column: &str) -> Result<OffsetDateTime, InfrastructureError>;
    /// A nullable time column.
    fn opt_time(&self, column: &str) -> Result<Option<OffsetDateTime>, InfrastructureError>;
    /// A bytes column.
    fn bytes(&self, column: &str) -> Result<Vec<u8>, InfrastructureError>;
    /// A list-of-text column.
    fn text_list(&self, column: &str) -> Result<Vec<String>, InfrastructureError>;
    /// A JSON column parsed into `T`.
    fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T, InfrastructureError>;
    /// A nullable JSON column parsed into `T`.
    fn opt_json<T: DeserializeOwned>(&self, column: &str)
    -> Result<Option<T>, InfrastructureError>;
}

/// A unique constraint a rule reacts to. Each backend says how its database names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unique {
    /// One external id per firm (`customers`).
    CustomerExternalId,
    /// A provider event applied once (`provider_events`).
    ProviderEvent,
    /// One user per email (`users`).
    UserEmail,
}

/// Statements run one after another on one connection inside a transaction.
#[async_trait]
pub trait Session: Send {
    /// The backend's row.
    type Row: Columns + Send + Sync;

    /// Which SQL the backend speaks.
    const DIALECT: Dialect;

    /// Runs a statement, returning how many rows it changed.
    async fn execute(&mut self, statement: Statement<'_>) -> Result<u64, sqlx::Error>;

    /// Runs a statement, returning its rows.
    async fn fetch_all(&mut self, statement: Statement<'_>) -> Result<Vec<Self::Row>, sqlx::Error>;

    /// Runs a statement, returning its first row if any.
    async fn fetch_optional(
        &mut self,
        statement: Statement<'_>,
    ) -> Result<Option<Self::Row>, sqlx::Error>;

    /// Commits (and on SQLite passes the writer's turn on). Dropping a session rolls it back.
    async fn commit(self) -> Result<(), sqlx::Error>;

    /// Rolls back now, releasing the locks before it returns (and on SQLite then passes the
    /// writer's turn on).
    async fn rollback(self) -> Result<(), sqlx::Error>;
}

/// A database statements run on: a pool, or a store or ledger around one.
#[async_trait]
pub trait Runner: Send + Sync {
    /// The backend's row.
    type Row: Columns + Send + Sync;
    /// A write transaction.
    type Tx: Session<Row = Self::Row>;

    /// Which SQL the backend speaks.
    const DIALECT: Dialect;

    /// Runs a read, returning its rows.
    async fn fetch_all(&self, statement: Statement<'_>) -> Result<Vec<Self::Row>, sqlx::Error>;

    /// Runs a read, returning its first row if any.
    async fn fetch_optional(
        &self,
        statement: Statement<'_>,
    ) -> Result<Option<Self::Row>, sqlx::Error>;

    /// Runs one write on its own (on SQLite, in the writer's turn), returning how many rows it
    /// changed.
    async fn execute(&self, statement: Statement<'_>) -> Result<u64, sqlx::Error>;

    /// Runs one write on its own that returns rows (`RETURNING`).
    async fn execute_returning(
        &self,
        statement: Statement<'_>,
    ) -> Result<Vec<Self::Row>, sqlx::Error>;

    /// Opens a write transaction (on SQLite: the writer's turn, then `BEGIN IMMEDIATE`).
    async fn begin_write(&self) -> Result<Self::Tx, InfrastructureError>;
}

/// A database the storage rules run on: a [`Runner`] with the store's decoded-state cache and
/// the names of its constraints.
pub trait Engine: Runner {
    /// The decoded customer states this store keeps (see [`crate::StateCache`]).
    fn states(&self) -> &crate::StateCache;

    /// Whether `error` is a violation of `constraint`.
    fn violates(error: &sqlx::Error, constraint: Unique) -> bool;
}

/// Runs a read and maps every row it returns.
///
/// # Errors
/// [`InfrastructureError`] when the read fails or a row does not map.
pub async fn all_rows<E: Runner, T>(
    engine: &E,
    statement: Statement<'_>,
    map: impl Fn(&E::Row) -> Result<T, InfrastructureError> + Send,
) -> Result<Vec<T>, InfrastructureError> {
    engine
        .fetch_all(statement)
        .await
        .map_err(infra)?
        .iter()
        .map(map)
        .collect()
}

/// Runs a read and maps its first row, if any.
///
/// # Errors
/// [`InfrastructureError`] when the read fails or the row does not map.
pub async fn first_row<E: Runner, T>(
    engine: &E,
    statement: Statement<'_>,
    map: impl Fn(&E::Row) -> Result<T, InfrastructureError> + Send,
) -> Result<Option<T>, InfrastructureError> {
    engine
        .fetch_optional(statement)
        .await
        .map_err(infra)?
        .as_ref()
        .map(map)
        .transpose()
}

/// Translates a driver error that no port names into the domain's infrastructure error: what may
/// pass if tried again later is `Unavailable` (the database out of reach or restarting, a
/// serialization failure, a deadlock, a lock timeout, too many connections, a busy or locked
/// SQLite file, a full disk, a read-only SQLite file), and anything else `Internal`.
pub fn infra(error: sqlx::Error) -> InfrastructureError {
    let transient = match &error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            matches!(
                &*code,
                // PostgreSQL: serialization failure, deadlock, lock timeout, too many
                // connections; a server shutting down (fast or immediate), or starting up, or in
                // recovery, refusing connections meanwhile.
                "40001" | "40P01" | "55P03" | "53300" | "57P01" | "57P02" | "57P03"
                // SQLite: SQLITE_BUSY, SQLITE_LOCKED and their extended codes; SQLITE_FULL (the
                // disk is full); SQLITE_READONLY and its extended codes (the file or its
                // directory cannot be written). Each passes once an operator frees space or
                // fixes the permissions, and nothing of the refused write is kept.
                | "5" | "6" | "261" | "517" | "262" | "13"
                | "8" | "264" | "520" | "776" | "1032" | "1288" | "1544"
            )
            // PostgreSQL's connection exceptions (the connection failed or was lost).
            || code.starts_with("08")
        }),
        _ => false,
    };
    if transient {
        InfrastructureError::unavailable(error)
    } else {
        InfrastructureError::internal(error)
    }
}

/// A count or number that must fit the column type.
///
/// # Errors
/// [`InfrastructureError::Internal`] when it does not fit.
pub fn fit<T: TryFrom<U>, U>(value: U) -> Result<T, InfrastructureError>
where
    T::Error: std::error::Error + Send + Sync + 'static,
{
    T::try_from(value).map_err(InfrastructureError::internal)
}

/// A stored text that must parse into `T` (a role, a phase, a status).
///
/// # Errors
/// [`InfrastructureError::Internal`] naming what did not parse.
pub fn parsed<T>(
    what: &str,
    text: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, InfrastructureError> {
    parse(text).ok_or_else(|| InfrastructureError::internal(format!("unknown {what} {text:?}")))
}
