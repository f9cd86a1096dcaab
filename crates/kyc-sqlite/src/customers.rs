//! [`CustomerStore`] on SQLite: the customer row (indexed columns plus the serialized state), its
//! attempts side table, audit events, outbox rows, notifications with their webhook deliveries
//! and seen provider events, written in one transaction.

use kyc_domain::customer::Customer;
use kyc_domain::events::{DomainEvent, NotificationType, OutboxMessage};
use kyc_domain::ids::{ApplicantId, FirmId};
use kyc_domain::ports::{
    CustomerPage, InfrastructureError, InsertOrMatch, ListOrder, ListQuery, SaveError, Saved,
    UpsertCandidates,
};
use kyc_domain::provider::ProviderEventKey;
use kyc_domain::values::ExternalId;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use kyc_store_support::customers;
use kyc_store_support::engine::Session;
use kyc_store_support::rules::{self, move_time, phase_str, provider_key};

use crate::engine::SqliteColumns;
use crate::{SqliteStore, WriteTx, infra, micros, state_json, to_json};

/// What every read of customers selects: the version and id first, to look the decoded state up
/// in the cache, then the stored state, parsed only when the cache misses.
pub(crate) const COLUMNS: &str = "SELECT version, state, id FROM customers";

/// A save: the row at the version the caller read, or nothing (`$8` id, `$9` firm, `$10` version).
pub(crate) const SAVE: &str = "UPDATE customers SET external_id = $1, email_normalized = $2, \
     kyc_status = $3, aml_status = $4, updated_at = $5, version = version + 1, state = $6, \
     next_screening_due = $7 WHERE id = $8 AND firm_id = $9 AND version = $10";

impl SqliteStore {
    /// Remembers the customer just committed, as stored, so the next read of it skips the parse.
    fn remember(&self, stored: &Customer) {
        rules::remember(&self.states, stored);
    }
}

fn save_error(error: sqlx::Error) -> SaveError {
    rules::save_error::<SqliteStore>(error)
}

/// The firm's newest `updated_at` (`$1` firm): one step down `customers_updated_idx`.
pub(crate) const NEWEST_CHANGE: &str = "SELECT max(updated_at) FROM customers WHERE firm_id = $1";

/// The `updated_at` a write records, taken inside the write transaction: the customer's own, or,
/// when another write of the firm already committed one at or after it (it took its time between
/// the move and its turn to write), a microsecond past that. Writes take turns, so the order of
/// `updated_at` within a firm is the order in which changes commit, and a CRM that keeps the
/// largest `updated_at` it has listed as its watermark never passes a change still being written.
async fn stamp(
    tx: &mut SqliteConnection,
    customer: &Customer,
) -> Result<OffsetDateTime, SaveError> {
    let newest: Option<i64> = sqlx::query_scalar(NEWEST_CHANGE)
        .bind(customer.firm_id.to_string())
        .fetch_one(&mut *tx)
        .await
        .map_err(save_error)?;
    let own = micros(customer.updated_at);
    match newest {
        Some(newest) if newest >= own => Ok(crate::from_micros(newest + 1)?),
        _ => Ok(customer.updated_at),
    }
}

/// The customer as a write stores it: its state in the stored form, and the time the write
/// recorded as its `updated_at`.
struct Stored<'a> {
    state: &'a str,
    at: OffsetDateTime,
}

/// Writes everything that goes with a customer row: attempts, events, outbox, notifications and
/// their deliveries, inbound key. The outbox rows and the inbound key are stamped with the time of
/// the move (see [`move_time`]); notifications with the time the write recorded.
async fn write_children(
    tx: &mut SqliteConnection,
    customer: &Customer,
    stored: &Stored<'_>,
    events: &[DomainEvent],
    outbox: &[OutboxMessage],
    inbound: Option<&ProviderEventKey>,
) -> Result<(), SaveError> {
    let firm = customer.firm_id.to_string();
    let id = customer.id.to_string();
    if let Some(key) = inbound {
        sqlx::query(
            "INSERT INTO provider_events (key, firm_id, outcome, payload, recorded_at) VALUES ($1, $2, 'applied', NULL, $3)",
        )
        .bind(key.as_str())
        .bind(&firm)
        .bind(micros(move_time(customer, events)))
        .execute(&mut *tx)
        .await
        .map_err(save_error)?;
    }
    for attempt in &customer.attempts {
        sqlx::query(
            "INSERT INTO verification_attempts (firm_id, customer_id, number, external_user_id, applicant_id, phase, claimed_at, link_token_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (customer_id, number) DO UPDATE \
             SET applicant_id = excluded.applicant_id, phase = excluded.phase, link_token_hash = excluded.link_token_hash \
             WHERE applicant_id IS NOT excluded.applicant_id OR phase IS NOT excluded.phase \
             OR link_token_hash IS NOT excluded.link_token_hash",
        )
        .bind(&firm)
        .bind(&id)
        .bind(i64::from(attempt.number.get()))
        .bind(attempt.external_user_id.as_str())
        .bind(attempt.applicant_id.as_ref().map(ApplicantId::as_str))
        .bind(phase_str(attempt.phase))
        .bind(micros(attempt.claimed_at))
        .bind(attempt.link_token_hash.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(save_error)?;
    }
    for event in events {
        sqlx::query(
            "INSERT INTO events (id, firm_id, customer_id, at, actor, change, note, provider_event_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(&firm)
        .bind(&id)
        .bind(micros(event.at))
        .bind(to_json(&event.actor)?)
        .bind(to_json(&event.change)?)
        .bind(event.note.as_deref())
        .bind(provider_key(event, inbound))
        .execute(&mut *tx)
        .await
        .map_err(save_error)?;
    }
    let now = micros(move_time(customer, events));
    for message in outbox {
        let Some(notification) = message.notification() else {
            sqlx::query(
                "INSERT INTO outbox (firm_id, message, created_at, next_attempt_at) VALUES ($1, $2, $3, $3)",
            )
            .bind(&firm)
            .bind(to_json(message)?)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(save_error)?;
            continue;
        };
        write_notification(tx, &firm, &id, stored, message, notification).await?;
    }
    Ok(())
}

/// Appends a notification to the firm's feed and queues it for each of the firm's endpoints that
/// is enabled and wants its type (no types: all), as [`CustomerStore::insert`] says.
async fn write_notification(
    tx: &mut SqliteConnection,
    firm: &str,
    customer: &str,
    stored: &Stored<'_>,
    message: &OutboxMessage,
    notification: NotificationType,
) -> Result<(), SaveError> {
    let at = micros(stored.at);
    let sequence: i64 = sqlx::query_scalar(
        "INSERT INTO notifications (event_id, firm_id, customer_id, type, message, state, occurred_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(Uuid::new_v4().to_string())
    .bind(firm)
    .bind(customer)
    .bind(notification.as_str())
    .bind(to_json(message)?)
    .bind(stored.state)
    .bind(at)
    .fetch_one(&mut *tx)
    .await
    .map_err(save_error)?;
    sqlx::query(
        "INSERT INTO webhook_messages (firm_id, endpoint_id, customer_id, notification_id, next_attempt_at, head) \
         SELECT $1, endpoint.id, $2, $3, $4, NOT EXISTS (SELECT 1 FROM webhook_messages AS chain \
             WHERE chain.endpoint_id = endpoint.id AND chain.customer_id = $2 \
             AND chain.delivered_at IS NULL AND chain.failed_at IS NULL) \
         FROM webhook_endpoints AS endpoint \
         WHERE endpoint.firm_id = $1 AND endpoint.disabled_at IS NULL AND endpoint.deleted_at IS NULL \
         AND (json_array_length(endpoint.event_types) = 0 \
              OR EXISTS (SELECT 1 FROM json_each(endpoint.event_types) AS wanted WHERE wanted.value = $5)) \
         ORDER BY endpoint.id",
    )
    .bind(firm)
    .bind(customer)
    .bind(sequence)
    .bind(at)
    .bind(notification.as_str())
    .execute(&mut *tx)
    .await
    .map_err(save_error)?;
    Ok(())
}

/// Appends the filters (not the cursor) of a list query.
pub(crate) fn push_filters(
    builder: &mut QueryBuilder<'_, Sqlite>,
    firm: FirmId,
    query: &ListQuery,
) {
    builder
        .push(" WHERE firm_id = ")
        .push_bind(firm.to_string());
    let filter = &query.filter;
    if let Some(status) = filter.kyc_status {
        builder
            .push(" AND kyc_status = ")
            .push_bind(status.as_str());
    }
    if let Some(status) = filter.aml_status {
        builder
            .push(" AND aml_status = ")
            .push_bind(status.as_str());
    }
    if let Some(since) = filter.updated_since {
        builder.push(" AND updated_at > ").push_bind(micros(since));
    }
    if let Some(external_id) = &filter.external_id {
        builder
            .push(" AND external_id = ")
            .push_bind(external_id.as_str().to_owned());
    }
}

/// The statement of one page: `select` (the columns, or an `EXPLAIN QUERY PLAN` of them in the
/// plan tests), the filters, the cursor, the walk's order and limit + 1 (to learn whether more
/// follow).
pub(crate) fn page_statement<'q>(
    select: &str,
    firm: FirmId,
    query: &'q ListQuery,
) -> QueryBuilder<'q, Sqlite> {
    let order = query.filter.order();
    let sort = match order {
        ListOrder::CreatedAt => "created_at",
        ListOrder::UpdatedAt | ListOrder::UpdatedAtDesc => "updated_at",
    };
    // Past the cursor is below it when the walk goes down; the index is read backwards then.
    let (past, direction) = if order.is_descending() {
        ("<", " DESC")
    } else {
        (">", "")
    };
    let mut builder = QueryBuilder::<Sqlite>::new(select);
    push_filters(&mut builder, firm, query);
    if let Some(after) = &query.after {
        let key = micros(after.sort_key);
        // A row value, which SQLite turns into one index range on (firm_id, sort, id).
        builder
            .push(format!(" AND ({sort}, id) {past} ("))
            .push_bind(key)
            .push(", ")
            .push_bind(after.id.to_string())
            .push(")");
    }
    let limit = query.limit.clamp(1, 100);
    builder
        .push(format!(" ORDER BY {sort}{direction}, id{direction} LIMIT "))
        .push_bind(i64::from(limit) + 1);
    builder
}

/// Inserts a new customer with everything that goes with it, in the write transaction `tx`;
/// what it recorded and the customer as stored.
async fn insert_in(
    tx: &mut WriteTx,
    customer: &Customer,
    events: &[DomainEvent],
    outbox: &[OutboxMessage],
) -> Result<(Saved, Customer), SaveError> {
    let saved = Saved {
        version: 1,
        at: stamp(tx, customer).await?,
    };
    let stored = customer.as_saved(saved);
    let state = state_json(stored.state())?;
    sqlx::query(
            "INSERT INTO customers (id, firm_id, external_id, email_normalized, kyc_status, aml_status, created_at, updated_at, version, state, next_screening_due) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10)",
        )
        .bind(customer.id.to_string())
        .bind(customer.firm_id.to_string())
        .bind(customer.external_id.as_ref().map(ExternalId::as_str))
        .bind(customer.email.normalized())
        .bind(customer.kyc_status.as_str())
        .bind(customer.aml.status.as_str())
        .bind(micros(stored.created_at))
        .bind(micros(stored.updated_at))
        .bind(&state)
        .bind(customer.aml.next_screening_due.map(micros))
        .execute(&mut **tx)
        .await
        .map_err(save_error)?;
    let written = Stored {
        state: &state,
        at: saved.at,
    };
    write_children(tx, customer, &written, events, outbox, None).await?;
    Ok((saved, stored))
}

impl SqliteStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %customer.firm_id, customer_id = %customer.id))]
    pub(crate) async fn insert_customer(
        &self,
        customer: &Customer,
        events: &[DomainEvent],
        outbox: &[OutboxMessage],
    ) -> Result<Saved, SaveError> {
        let mut tx = self.begin_write().await?;
        let (saved, stored) = insert_in(&mut tx, customer, events, outbox).await?;
        tx.commit().await.map_err(save_error)?;
        self.remember(&stored);
        Ok(saved)
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %customer.firm_id, customer_id = %customer.id))]
    pub(crate) async fn save_customer(
        &self,
        customer: &Customer,
        events: &[DomainEvent],
        outbox: &[OutboxMessage],
        inbound: Option<&ProviderEventKey>,
    ) -> Result<Saved, SaveError> {
        let expected = i64::try_from(customer.version).map_err(InfrastructureError::internal)?;
        let mut tx = self.begin_write().await?;
        let saved = Saved {
            version: customer.version + 1,
            at: stamp(&mut tx, customer).await?,
        };
        let stored = customer.as_saved(saved);
        let state = state_json(stored.state())?;
        let updated = sqlx::query(SAVE)
            .bind(customer.external_id.as_ref().map(ExternalId::as_str))
            .bind(customer.email.normalized())
            .bind(customer.kyc_status.as_str())
            .bind(customer.aml.status.as_str())
            .bind(micros(stored.updated_at))
            .bind(&state)
            .bind(customer.aml.next_screening_due.map(micros))
            .bind(customer.id.to_string())
            .bind(customer.firm_id.to_string())
            .bind(expected)
            .execute(&mut *tx)
            .await
            .map_err(save_error)?;
        if updated.rows_affected() == 0 {
            return Err(SaveError::VersionConflict);
        }
        let written = Stored {
            state: &state,
            at: saved.at,
        };
        write_children(&mut tx, customer, &written, events, outbox, inbound).await?;
        tx.commit().await.map_err(save_error)?;
        self.remember(&stored);
        Ok(saved)
    }

    pub(crate) async fn insert_customer_unless_matched(
        &self,
        customer: &Customer,
        events: &[DomainEvent],
        outbox: &[OutboxMessage],
    ) -> Result<InsertOrMatch, SaveError> {
        let firm = customer.firm_id;
        let candidates = customers::find_upsert_candidates(
            self,
            firm,
            customer.external_id.as_ref(),
            &customer.email,
        )
        .await?;
        if candidates.by_external_id.is_some() || candidates.by_email.is_some() {
            // The update of an upsert: no write lock for a look-up that matched.
            return Ok(InsertOrMatch::Matched(candidates));
        }
        // The create: looked up again inside the write transaction, so no insert of this firm
        // can come between the look-up and this one's (SQLite has one writer, and this holds it).
        let mut tx = self.begin_write().await?;
        let statement = customers::upsert_candidates_statement(
            firm,
            customer.external_id.as_ref(),
            &customer.email,
        );
        let rows = Session::fetch_all(&mut tx, statement)
            .await
            .map_err(save_error)?;
        if !rows.is_empty() {
            let mut candidates = UpsertCandidates::default();
            for row in &rows {
                customers::add_candidate(self, &mut candidates, firm, row)?;
            }
            return Ok(InsertOrMatch::Matched(candidates));
        }
        let (saved, stored) = insert_in(&mut tx, customer, events, outbox).await?;
        tx.commit().await.map_err(save_error)?;
        self.remember(&stored);
        Ok(InsertOrMatch::Inserted(saved))
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    pub(crate) async fn list_customers(
        &self,
        firm: FirmId,
        query: &ListQuery,
    ) -> Result<CustomerPage, InfrastructureError> {
        let limit = query.limit.clamp(1, 100) as usize;
        let mut builder = page_statement(COLUMNS, firm, query);
        // All rows first, then the parse: parsing each row as the driver hands it over (as the
        // Postgres adapter does) measured no faster here, the rows coming from an in-process file.
        let rows = builder
            .build()
            .fetch_all(&self.db.pool)
            .await
            .map_err(infra)?;
        let has_more = rows.len() > limit;
        let page = rows
            .into_iter()
            .take(limit)
            .map(|row| customers::customer(self, firm, &SqliteColumns(row)))
            .collect::<Result<Vec<_>, _>>()?;
        let total = if query.include_total {
            let mut count = QueryBuilder::<Sqlite>::new("SELECT count(*) FROM customers");
            push_filters(&mut count, firm, query);
            let total: i64 = count
                .build_query_scalar()
                .fetch_one(&self.db.pool)
                .await
                .map_err(infra)?;
            Some(u64::try_from(total).map_err(InfrastructureError::internal)?)
        } else {
            None
        };
        Ok(CustomerPage {
            customers: page,
            has_more,
            total,
        })
    }
}

kyc_store_support::customer_store!(SqliteStore);
