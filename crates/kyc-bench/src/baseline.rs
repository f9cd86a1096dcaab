//! The baseline: a bare axum server doing the same single-row work as the API with sqlx on the
//! same database and the adapters' own pool settings, and nothing else (no authentication, no
//! domain, no audit events, no outbox, no idempotency, no metrics).
//!
//! - `GET /customers/{id}`: `SELECT` one row of `customers` by firm and id, answered as JSON
//!   embedding the stored state document as it is.
//! - `POST /customers`: reads a JSON body and `INSERT`s one row into `bench_customers`, a table
//!   with the columns and indexes of `customers` (kept apart so the server's workers never meet
//!   rows that are not real customers).
//!
//! The ratio API / baseline therefore charges the API for everything it does beyond one
//! statement per request.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

const POSTGRES_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS bench_customers (LIKE customers INCLUDING ALL)";

/// The same columns, constraints and indexes as `customers` in the SQLite migration, without the
/// foreign key to `firms` (PostgreSQL's `LIKE` drops it too).
const SQLITE_TABLE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS bench_customers (
        id TEXT NOT NULL PRIMARY KEY, firm_id TEXT NOT NULL, external_id TEXT,
        email_normalized TEXT NOT NULL, kyc_status TEXT NOT NULL, aml_status TEXT NOT NULL,
        created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
        version INTEGER NOT NULL CHECK (version >= 1), state TEXT NOT NULL,
        next_screening_due INTEGER, UNIQUE (firm_id, id))",
    "CREATE UNIQUE INDEX IF NOT EXISTS bench_customers_external_id_key ON bench_customers (firm_id, external_id) WHERE external_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS bench_customers_created_idx ON bench_customers (firm_id, created_at, id)",
    "CREATE INDEX IF NOT EXISTS bench_customers_updated_idx ON bench_customers (firm_id, updated_at, id)",
    "CREATE INDEX IF NOT EXISTS bench_customers_kyc_status_idx ON bench_customers (firm_id, kyc_status, created_at, id)",
    "CREATE INDEX IF NOT EXISTS bench_customers_aml_status_idx ON bench_customers (firm_id, aml_status, created_at, id)",
    "CREATE INDEX IF NOT EXISTS bench_customers_email_idx ON bench_customers (firm_id, email_normalized, created_at)",
];

#[derive(Clone)]
enum Pool {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

#[derive(Clone)]
struct Baseline {
    pool: Pool,
    firm: Uuid,
}

/// Serves the baseline on `bind` until killed.
///
/// # Errors
/// The database cannot be opened or the address bound.
pub async fn serve(database_url: &str, bind: SocketAddr, firm: Uuid) -> Result<(), String> {
    let pool = if database_url.starts_with("postgres") {
        let pool = kyc_postgres::connect(database_url)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query(POSTGRES_TABLE)
            .execute(&pool)
            .await
            .map_err(|e| e.to_string())?;
        Pool::Postgres(pool)
    } else {
        let pool = kyc_sqlite::connect(database_url)
            .await
            .map_err(|e| e.to_string())?;
        for statement in SQLITE_TABLE {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .map_err(|e| e.to_string())?;
        }
        Pool::Sqlite(pool)
    };
    let app = Router::new()
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/customers/{id}", get(read))
        .route("/customers", post(insert))
        .with_state(Baseline { pool, firm });
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| format!("bind {bind}: {e}"))?;
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn failed(error: &sqlx::Error) -> Response {
    json(
        StatusCode::INTERNAL_SERVER_ERROR,
        serde_json::json!({ "error": error.to_string() }).to_string(),
    )
}

async fn read(State(baseline): State<Baseline>, Path(id): Path<Uuid>) -> Response {
    type Row = (String, String, String);
    let row: Result<Option<Row>, sqlx::Error> = match &baseline.pool {
        Pool::Postgres(pool) => {
            sqlx::query_as(
                "SELECT kyc_status, aml_status, state::text FROM customers WHERE firm_id = $1 AND id = $2",
            )
            .bind(baseline.firm)
            .bind(id)
            .fetch_optional(pool)
            .await
        }
        Pool::Sqlite(pool) => {
            sqlx::query_as(
                "SELECT kyc_status, aml_status, state FROM customers WHERE firm_id = $1 AND id = $2",
            )
            .bind(baseline.firm.to_string())
            .bind(id.to_string())
            .fetch_optional(pool)
            .await
        }
    };
    match row {
        // The id is a parsed UUID and the statuses are enum names: nothing needs escaping, and
        // the state is already a JSON document.
        Ok(Some((kyc_status, aml_status, state))) => json(
            StatusCode::OK,
            format!(
                r#"{{"id":"{id}","kyc_status":"{kyc_status}","aml_status":"{aml_status}","state":{state}}}"#
            ),
        ),
        Ok(None) => json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.to_owned()),
        Err(error) => failed(&error),
    }
}

/// The same body as the API's upsert.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct NewCustomer {
    external_id: Option<String>,
    full_name: String,
    email: String,
}

async fn insert(
    State(baseline): State<Baseline>,
    axum::Json(body): axum::Json<NewCustomer>,
) -> Response {
    let id = Uuid::now_v7();
    let now = OffsetDateTime::now_utc();
    let state = match serde_json::to_string(&body) {
        Ok(state) => state,
        Err(error) => return json(StatusCode::UNPROCESSABLE_ENTITY, error.to_string()),
    };
    let email = body.email.to_lowercase();
    let inserted = match &baseline.pool {
        Pool::Postgres(pool) => sqlx::query(
            "INSERT INTO bench_customers (id, firm_id, external_id, email_normalized, kyc_status, aml_status, created_at, updated_at, version, state) \
             VALUES ($1, $2, $3, $4, 'NOT_STARTED', 'NOT_SCREENED', $5, $5, 1, $6::jsonb)",
        )
        .bind(id)
        .bind(baseline.firm)
        .bind(&body.external_id)
        .bind(&email)
        .bind(now)
        .bind(&state)
        .execute(pool)
        .await
        .map(|_| ()),
        Pool::Sqlite(pool) => {
            let micros = i64::try_from(now.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX);
            sqlx::query(
                "INSERT INTO bench_customers (id, firm_id, external_id, email_normalized, kyc_status, aml_status, created_at, updated_at, version, state) \
                 VALUES ($1, $2, $3, $4, 'NOT_STARTED', 'NOT_SCREENED', $5, $5, 1, $6)",
            )
            .bind(id.to_string())
            .bind(baseline.firm.to_string())
            .bind(&body.external_id)
            .bind(&email)
            .bind(micros)
            .bind(&state)
            .execute(pool)
            .await
            .map(|_| ())
        }
    };
    match inserted {
        Ok(()) => json(StatusCode::CREATED, format!(r#"{{"id":"{id}"}}"#)),
        Err(error) => failed(&error),
    }
}
