//! The baseline: a bare axum server doing the storage work the contract requires of each request
//! with sqlx on the same database and the adapters' own pool settings, and nothing else (no
//! authentication, no domain, no validation, no idempotency, no metrics, no caches).
//!
//! - `GET /customers/{id}`: `SELECT` one row of `customers` by firm and id, answered as JSON
//!   embedding the stored state document as it is.
//! - `GET /customers?firm=&status=&limit=&cursor=`: one keyset page of `customers` with the
//!   status filter, in the order the API walks (`created_at, id`), `limit + 1` rows to learn
//!   whether more follow, each row's stored state embedded as it is, and the cursor of the last.
//! - `POST /customers?firm=`: the upsert, done bare on copies of the tables the API writes
//!   (`bench_customers`, `bench_events`, `bench_notifications`: the same columns, constraints,
//!   indexes and foreign keys, holding a copy of the seeded customers and events, kept apart so
//!   the server's workers never meet rows that are not real): the look-up by external id and by
//!   email in one statement, then the customer row (`INSERT`, or `UPDATE … WHERE version = $n`,
//!   the name changed in the stored document by the database), its audit event and its feed
//!   entry, in one transaction. On PostgreSQL that transaction is one statement of
//!   data-modifying CTEs, as the adapter sends it; on SQLite three statements between `BEGIN`
//!   and `COMMIT`. A version moved meanwhile (two workers on one customer) looks up again.
//!
//! The ratio API / baseline therefore charges the API for everything it does beyond the storage
//! work a request needs.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use sqlx::Connection;
use time::OffsetDateTime;
use uuid::Uuid;

/// The tables the upsert writes; the baseline's copy of each is named `bench_<table>`.
const COPIED: [&str; 3] = ["customers", "events", "notifications"];

/// PostgreSQL: copies of the tables with everything `LIKE` carries (defaults, identities,
/// constraints, indexes), the foreign keys it does not carry, and the seeded rows.
const POSTGRES_PREPARE: &[&str] = &[
    "CREATE TABLE bench_customers (LIKE customers INCLUDING ALL)",
    "ALTER TABLE bench_customers ADD CONSTRAINT bench_customers_firm_fkey FOREIGN KEY (firm_id) REFERENCES firms (id)",
    "CREATE TABLE bench_events (LIKE events INCLUDING ALL)",
    "ALTER TABLE bench_events ADD CONSTRAINT bench_events_customer_fkey FOREIGN KEY (firm_id, customer_id) REFERENCES bench_customers (firm_id, id)",
    "CREATE TABLE bench_notifications (LIKE notifications INCLUDING ALL)",
    "ALTER TABLE bench_notifications ADD CONSTRAINT bench_notifications_firm_fkey FOREIGN KEY (firm_id) REFERENCES firms (id)",
    "INSERT INTO bench_customers SELECT * FROM customers",
    "INSERT INTO bench_events OVERRIDING SYSTEM VALUE SELECT * FROM events",
    "INSERT INTO bench_notifications OVERRIDING SYSTEM VALUE SELECT * FROM notifications",
    "SELECT setval(pg_get_serial_sequence('bench_events', 'sequence'), coalesce(max(sequence), 0) + 1, false) FROM bench_events",
    "SELECT setval(pg_get_serial_sequence('bench_notifications', 'id'), coalesce(max(id), 0) + 1, false) FROM bench_notifications",
    "ANALYZE bench_customers, bench_events, bench_notifications",
];

/// Makes the baseline's copies of the written tables, from the schema and rows the database
/// holds now (call it after seeding). PostgreSQL copies with `LIKE`; SQLite replays the
/// statements `sqlite_master` keeps for each table and index, renamed.
///
/// # Errors
/// The database cannot be reached, or a copy fails.
pub async fn prepare(database_url: &str) -> Result<(), String> {
    let failed = |statement: &str, error: sqlx::Error| format!("{statement}: {error}");
    if database_url.starts_with("postgres") {
        let mut connection = sqlx::PgConnection::connect(database_url)
            .await
            .map_err(|e| e.to_string())?;
        for statement in POSTGRES_PREPARE {
            sqlx::query(statement)
                .execute(&mut connection)
                .await
                .map_err(|e| failed(statement, e))?;
        }
        return Ok(());
    }
    let pool = kyc_sqlite::connect(database_url)
        .await
        .map_err(|e| e.to_string())?;
    let schema: Vec<(String, String)> = sqlx::query_as(
        "SELECT type, sql FROM sqlite_master WHERE type IN ('table', 'index') AND sql IS NOT NULL \
         AND tbl_name IN ('customers', 'events', 'notifications') ORDER BY type = 'index', rowid",
    )
    .fetch_all(&pool)
    .await
    .map_err(|e| e.to_string())?;
    for (_, sql) in &schema {
        let renamed = rename_tables(sql);
        sqlx::query(&renamed)
            .execute(&pool)
            .await
            .map_err(|e| failed(&renamed, e))?;
    }
    for table in COPIED {
        // Rows keep their ids; SQLite moves an AUTOINCREMENT past the largest id inserted.
        let statement = format!("INSERT INTO bench_{table} SELECT * FROM {table}");
        sqlx::query(&statement)
            .execute(&pool)
            .await
            .map_err(|e| failed(&statement, e))?;
    }
    pool.close().await;
    Ok(())
}

/// `sql` with every identifier naming a copied table (and every index or constraint named after
/// one, as `customers_created_idx`) renamed to its copy's name.
fn rename_tables(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let named_after_a_copy = COPIED
            .iter()
            .any(|table| word == table || word.starts_with(&format!("{table}_")));
        if named_after_a_copy {
            out.push_str("bench_");
        }
        out.push_str(word);
        word.clear();
    };
    for c in sql.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

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
        Pool::Postgres(
            kyc_postgres::connect(database_url)
                .await
                .map_err(|e| e.to_string())?,
        )
    } else {
        Pool::Sqlite(
            kyc_sqlite::connect(database_url)
                .await
                .map_err(|e| e.to_string())?,
        )
    };
    let app = Router::new()
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/customers/{id}", get(read))
        .route("/customers", get(list).post(upsert))
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

fn bad_request(what: &str) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        serde_json::json!({ "error": what }).to_string(),
    )
}

fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
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

/// A page of the list: `firm`, `status`, `limit` (1–100) and the `cursor` of the page before
/// (`<created_at in µs>.<id>`).
#[derive(Debug, Deserialize)]
struct PageQuery {
    firm: Uuid,
    status: String,
    limit: u8,
    cursor: Option<String>,
}

fn parse_cursor(cursor: &str) -> Option<(i64, Uuid)> {
    let (at, id) = cursor.split_once('.')?;
    Some((at.parse().ok()?, id.parse().ok()?))
}

/// The columns of a page row: version, state, id, and the sort key in µs.
const POSTGRES_PAGE: &str = "SELECT version, state::text, id, (extract(epoch FROM created_at) * 1000000)::bigint \
     FROM customers WHERE firm_id = $1 AND kyc_status = $2";
const SQLITE_PAGE: &str =
    "SELECT version, state, id, created_at FROM customers WHERE firm_id = $1 AND kyc_status = $2";

async fn list(State(baseline): State<Baseline>, Query(page): Query<PageQuery>) -> Response {
    if !(1..=100).contains(&page.limit) {
        return bad_request("limit");
    }
    let after = match page.cursor.as_deref().map(parse_cursor) {
        Some(None) => return bad_request("cursor"),
        Some(Some(after)) => Some(after),
        None => None,
    };
    let order = " ORDER BY created_at, id LIMIT ";
    let limit = i64::from(page.limit) + 1;
    let rows: Result<Vec<(i64, String, String, i64)>, sqlx::Error> = match &baseline.pool {
        Pool::Postgres(pool) => {
            let statement = match after {
                Some(_) => format!("{POSTGRES_PAGE} AND (created_at, id) > ($3, $4){order}$5"),
                None => format!("{POSTGRES_PAGE}{order}$3"),
            };
            let mut query = sqlx::query_as::<_, (i64, String, Uuid, i64)>(&statement)
                .bind(page.firm)
                .bind(&page.status);
            if let Some((at, id)) = after {
                let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                query = query.bind(at).bind(id);
            }
            query.bind(limit).fetch_all(pool).await.map(|rows| {
                rows.into_iter()
                    .map(|(version, state, id, at)| (version, state, id.to_string(), at))
                    .collect()
            })
        }
        Pool::Sqlite(pool) => {
            let statement = match after {
                Some(_) => format!("{SQLITE_PAGE} AND (created_at, id) > ($3, $4){order}$5"),
                None => format!("{SQLITE_PAGE}{order}$3"),
            };
            let mut query = sqlx::query_as(&statement)
                .bind(page.firm.to_string())
                .bind(&page.status);
            if let Some((at, id)) = after {
                query = query.bind(at).bind(id.to_string());
            }
            query.bind(limit).fetch_all(pool).await
        }
    };
    let mut rows = match rows {
        Ok(rows) => rows,
        Err(error) => return failed(&error),
    };
    let has_more = rows.len() > usize::from(page.limit);
    rows.truncate(usize::from(page.limit));
    let mut body = String::with_capacity(rows.iter().map(|row| row.1.len() + 80).sum());
    body.push_str(r#"{"data":["#);
    for (n, (version, state, id, _)) in rows.iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"id":"{id}","version":{version},"state":{state}}}"#
        ));
    }
    body.push_str(&format!(r#"],"has_more":{has_more},"next_cursor":"#));
    match rows.last() {
        Some((_, _, id, at)) => body.push_str(&format!(r#""{at}.{id}"}}"#)),
        None => body.push_str("null}"),
    }
    json(StatusCode::OK, body)
}

/// The same body as the API's upsert.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct NewCustomer {
    external_id: Option<String>,
    full_name: String,
    email: String,
}

/// What the look-up found: the customer's id and version.
type Found = Option<(String, i64)>;

/// One write of the upsert: the row, its audit event and its feed entry.
struct Write<'a> {
    firm: Uuid,
    body: &'a NewCustomer,
    email: String,
    now: OffsetDateTime,
    event_id: Uuid,
    actor: String,
    change: String,
    message: String,
}

/// The look-up of the upsert: by external id, and the oldest customer with the email, in one
/// statement (`$1` firm, `$2` external id, `$3` email); the row found by external id first.
/// (Sub-selects in `FROM`, since SQLite takes no parenthesized member of a `UNION`.)
const LOOKUP: &str = "SELECT * FROM (SELECT id, version, 0 AS found_by FROM bench_customers WHERE firm_id = $1 AND external_id = $2) AS by_external_id \
     UNION ALL \
     SELECT * FROM (SELECT id, version, 1 AS found_by FROM bench_customers WHERE firm_id = $1 AND email_normalized = $3 ORDER BY created_at, id LIMIT 1) AS by_email \
     ORDER BY found_by LIMIT 1";

/// PostgreSQL's write of a new customer: the row, its event and its feed entry in one statement.
const POSTGRES_INSERT: &str = "WITH saved AS ( \
     INSERT INTO bench_customers (id, firm_id, external_id, email_normalized, kyc_status, aml_status, created_at, updated_at, version, state) \
     VALUES ($1, $2, $3, $4, 'NOT_STARTED', 'NOT_SCREENED', $5, $5, 1, $6::jsonb) RETURNING firm_id, id, state), \
     audit AS ( \
     INSERT INTO bench_events (id, firm_id, customer_id, at, actor, change) \
     SELECT $7, firm_id, id, $5, $8::jsonb, $9::jsonb FROM saved) \
     INSERT INTO bench_notifications (firm_id, customer_id, type, message, state, occurred_at) \
     SELECT firm_id, id, 'customer.created', $10::jsonb, state, $5 FROM saved RETURNING state::text";

/// PostgreSQL's write of a change: the row still at version `$3`, its event and its feed entry
/// in one statement; no row back when the version moved.
const POSTGRES_UPDATE: &str = "WITH saved AS ( \
     UPDATE bench_customers SET state = jsonb_set(state, '{full_name}', to_jsonb($4::text)), email_normalized = $5, \
     updated_at = $6, version = version + 1 \
     WHERE firm_id = $1 AND id = $2 AND version = $3 RETURNING firm_id, id, state), \
     audit AS ( \
     INSERT INTO bench_events (id, firm_id, customer_id, at, actor, change) \
     SELECT $7, firm_id, id, $6, $8::jsonb, $9::jsonb FROM saved) \
     INSERT INTO bench_notifications (firm_id, customer_id, type, message, state, occurred_at) \
     SELECT firm_id, id, 'customer.updated', $10::jsonb, state, $6 FROM saved RETURNING state::text";

const SQLITE_INSERT: &str = "INSERT INTO bench_customers (id, firm_id, external_id, email_normalized, kyc_status, aml_status, created_at, updated_at, version, state) \
     VALUES ($1, $2, $3, $4, 'NOT_STARTED', 'NOT_SCREENED', $5, $5, 1, $6) RETURNING state";
const SQLITE_UPDATE: &str = "UPDATE bench_customers SET state = json_set(state, '$.full_name', $4), email_normalized = $5, \
     updated_at = $6, version = version + 1 WHERE firm_id = $1 AND id = $2 AND version = $3 RETURNING state";
const SQLITE_EVENT: &str = "INSERT INTO bench_events (id, firm_id, customer_id, at, actor, change) VALUES ($1, $2, $3, $4, $5, $6)";
const SQLITE_FEED: &str = "INSERT INTO bench_notifications (event_id, firm_id, customer_id, type, message, state, occurred_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

impl Write<'_> {
    /// Writes on PostgreSQL; `None` when the version moved.
    async fn postgres(
        &self,
        pool: &sqlx::PgPool,
        found: &Found,
    ) -> Result<Option<String>, sqlx::Error> {
        // Both statements take the event, the actor, the change and the message as `$7`–`$10`.
        let query = match found {
            None => sqlx::query_scalar(POSTGRES_INSERT)
                .bind(Uuid::now_v7())
                .bind(self.firm)
                .bind(&self.body.external_id)
                .bind(&self.email)
                .bind(self.now)
                .bind(serde_json::to_string(self.body).unwrap_or_default()),
            Some((id, version)) => {
                let id: Uuid = id.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                sqlx::query_scalar(POSTGRES_UPDATE)
                    .bind(self.firm)
                    .bind(id)
                    .bind(*version)
                    .bind(&self.body.full_name)
                    .bind(&self.email)
                    .bind(self.now)
            }
        };
        query
            .bind(self.event_id)
            .bind(&self.actor)
            .bind(&self.change)
            .bind(&self.message)
            .fetch_optional(pool)
            .await
    }

    /// Writes on SQLite in one transaction; `None` when the version moved.
    async fn sqlite(
        &self,
        pool: &sqlx::SqlitePool,
        found: &Found,
    ) -> Result<Option<String>, sqlx::Error> {
        let mut tx = pool.begin().await?;
        let firm = self.firm.to_string();
        let at = micros(self.now);
        let (id, state, kind) = match found {
            None => {
                let id = Uuid::now_v7().to_string();
                let state: String = sqlx::query_scalar(SQLITE_INSERT)
                    .bind(&id)
                    .bind(&firm)
                    .bind(&self.body.external_id)
                    .bind(&self.email)
                    .bind(at)
                    .bind(serde_json::to_string(self.body).unwrap_or_default())
                    .fetch_one(&mut *tx)
                    .await?;
                (id, state, "customer.created")
            }
            Some((id, version)) => {
                let state: Option<String> = sqlx::query_scalar(SQLITE_UPDATE)
                    .bind(&firm)
                    .bind(id)
                    .bind(version)
                    .bind(&self.body.full_name)
                    .bind(&self.email)
                    .bind(at)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(state) = state else {
                    return Ok(None);
                };
                (id.clone(), state, "customer.updated")
            }
        };
        sqlx::query(SQLITE_EVENT)
            .bind(self.event_id.to_string())
            .bind(&firm)
            .bind(&id)
            .bind(at)
            .bind(&self.actor)
            .bind(&self.change)
            .execute(&mut *tx)
            .await?;
        sqlx::query(SQLITE_FEED)
            .bind(Uuid::new_v4().to_string())
            .bind(&firm)
            .bind(&id)
            .bind(kind)
            .bind(&self.message)
            .bind(&state)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(state))
    }
}

async fn lookup(baseline: &Baseline, write: &Write<'_>) -> Result<Found, sqlx::Error> {
    match &baseline.pool {
        Pool::Postgres(pool) => sqlx::query_as::<_, (Uuid, i64, i32)>(LOOKUP)
            .bind(write.firm)
            .bind(&write.body.external_id)
            .bind(&write.email)
            .fetch_optional(pool)
            .await
            .map(|row| row.map(|(id, version, _)| (id.to_string(), version))),
        Pool::Sqlite(pool) => sqlx::query_as::<_, (String, i64, i32)>(LOOKUP)
            .bind(write.firm.to_string())
            .bind(&write.body.external_id)
            .bind(&write.email)
            .fetch_optional(pool)
            .await
            .map(|row| row.map(|(id, version, _)| (id, version))),
    }
}

async fn upsert(
    State(baseline): State<Baseline>,
    Query(query): Query<HashMap<String, String>>,
    axum::Json(body): axum::Json<NewCustomer>,
) -> Response {
    let Some(firm) = query.get("firm").and_then(|firm| firm.parse().ok()) else {
        return bad_request("firm");
    };
    let event_id = Uuid::now_v7();
    let mut write = Write {
        firm,
        email: body.email.to_lowercase(),
        now: OffsetDateTime::now_utc(),
        event_id,
        actor: serde_json::json!({"type": "api_key", "id": firm, "label": "kyc-bench"}).to_string(),
        change: String::new(),
        message: String::new(),
        body: &body,
    };
    for _ in 0..10 {
        let found = match lookup(&baseline, &write).await {
            Ok(found) => found,
            Err(error) => return failed(&error),
        };
        let (kind, status) = match found {
            None => ("customer.created", StatusCode::CREATED),
            Some(_) => ("customer.updated", StatusCode::OK),
        };
        write.change = serde_json::json!({
            "type": if found.is_some() { "contact_updated" } else { "created" },
            "full_name": body.full_name,
            "email": body.email,
        })
        .to_string();
        write.message = serde_json::json!({"type": kind, "event_id": event_id}).to_string();
        let written = match &baseline.pool {
            Pool::Postgres(pool) => write.postgres(pool, &found).await,
            Pool::Sqlite(pool) => write.sqlite(pool, &found).await,
        };
        match written {
            Ok(Some(state)) => return json(status, state),
            Ok(None) => write.now = OffsetDateTime::now_utc(),
            Err(error) => return failed(&error),
        }
    }
    json(
        StatusCode::CONFLICT,
        r#"{"error":"version_conflict"}"#.to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::rename_tables;

    #[test]
    fn copies_rename_the_tables_and_what_is_named_after_them_only() {
        assert_eq!(
            rename_tables(
                "CREATE INDEX events_customer_idx ON events (firm_id, customer_id, sequence)"
            ),
            "CREATE INDEX bench_events_customer_idx ON bench_events (firm_id, customer_id, sequence)"
        );
        assert_eq!(
            rename_tables(
                "CONSTRAINT events_customer_fkey FOREIGN KEY (firm_id, customer_id) REFERENCES customers (firm_id, id), provider_event_key TEXT"
            ),
            "CONSTRAINT bench_events_customer_fkey FOREIGN KEY (firm_id, customer_id) REFERENCES bench_customers (firm_id, id), provider_event_key TEXT"
        );
        assert_eq!(
            rename_tables("REFERENCES firms (id)"),
            "REFERENCES firms (id)"
        );
    }
}
