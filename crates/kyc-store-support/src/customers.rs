//! The customer store's reads, once for both backends: a customer by id, by external id, by
//! email, both look-ups of an upsert in one statement, a customer by its attempt, the link and
//! re-screening look-ups, and the record of an orphaned provider event. Every read of customers
//! selects `version` and `id` before the state, so the state is parsed only when the cache misses
//! ([`crate::rules::restore`]).
//!
//! The recovery lease ([`stuck_attempts`]) is here too, in the two statements its locking needs.
//! The writes and the list page stay with each adapter: there the statements differ with the
//! database beyond a choice of text.

use kyc_domain::customer::Customer;
use kyc_domain::ids::{ApplicantId, CustomerId, ExternalUserId, FirmId};
use kyc_domain::ports::{
    AttemptLocation, InfrastructureError, LinkLocation, RECOVERY_LEASE, UpsertCandidates,
};
use kyc_domain::provider::ProviderEvent;
use kyc_domain::values::{Email, ExternalId};
use time::{Duration, OffsetDateTime};

use crate::engine::{Arg, Columns, Dialect, Engine, Statement, all_rows, first_row, infra};
use crate::rules::{attempt_number, location, restore};

/// One customer by id (`$1` firm, `$2` id).
pub const BY_ID: &str = "SELECT version, state, id FROM customers WHERE firm_id = $1 AND id = $2";

/// One customer by the CRM's id (`$1` firm, `$2` external id).
pub const BY_EXTERNAL_ID: &str =
    "SELECT version, state, id FROM customers WHERE firm_id = $1 AND external_id = $2";

/// The oldest customer with an email (`$1` firm, `$2` normalized email): the upsert asks this of
/// every create, so it must be one index search (`customers_email_idx` delivers the order), never
/// a walk over the firm's customers.
pub const BY_EMAIL: &str = "SELECT version, state, id FROM customers \
     WHERE firm_id = $1 AND email_normalized = $2 ORDER BY created_at, id LIMIT 1";

/// Both look-ups of an upsert (`$1` firm, `$2` external id, `$3` normalized email) in one
/// statement, so one round trip and one snapshot; `found_by` says which look-up a row answers
/// (0 by external id, 1 by email). Each side is a sub-select, the form both databases accept for
/// an ordered, limited member of a `UNION ALL`.
pub const UPSERT_CANDIDATES: &str = "SELECT version, state, id, found_by FROM ( \
         SELECT version, state, id, 0 AS found_by FROM customers WHERE firm_id = $1 AND external_id = $2) AS by_external_id \
     UNION ALL \
     SELECT version, state, id, found_by FROM ( \
         SELECT version, state, id, 1 AS found_by FROM customers WHERE firm_id = $1 AND email_normalized = $3 \
         ORDER BY created_at, id LIMIT 1) AS by_email";

/// The firm and customer owning the attempt with applicant id `$1` or external user id `$2`, by
/// applicant id first. Two look-ups, each on its own unique index, rather than one `OR`: a planner
/// without statistics for the table (right after a bulk load) would scan it for the `OR`.
pub const ATTEMPT_OWNER: &str = "SELECT firm_id, customer_id FROM verification_attempts WHERE applicant_id = $1 \
     UNION ALL SELECT firm_id, customer_id FROM verification_attempts WHERE external_user_id = $2";

/// The re-screening walk: `VERIFIED` customers due at or before `$1`, most overdue first.
pub const RESCREENING: &str = "SELECT firm_id, id FROM customers \
     WHERE kyc_status = 'VERIFIED' AND next_screening_due IS NOT NULL AND next_screening_due <= $1 \
     ORDER BY next_screening_due, id LIMIT $2";

/// A customer from a row of `version, state, id`, read for `firm`.
///
/// # Errors
/// [`InfrastructureError::Internal`] when a column does not read or the state does not parse.
pub fn customer<E: Engine>(
    engine: &E,
    firm: FirmId,
    row: &E::Row,
) -> Result<Customer, InfrastructureError> {
    restore(
        engine.states(),
        firm,
        row.int("version")?,
        row.id("id")?,
        || row.json("state"),
    )
}

async fn one<E: Engine>(
    engine: &E,
    firm: FirmId,
    statement: Statement<'_>,
) -> Result<Option<Customer>, InfrastructureError> {
    first_row(engine, statement, |row| customer(engine, firm, row)).await
}

/// A customer of `firm` by id.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm, customer_id = %id))]
pub async fn get<E: Engine>(
    engine: &E,
    firm: FirmId,
    id: CustomerId,
) -> Result<Option<Customer>, InfrastructureError> {
    one(
        engine,
        firm,
        Statement::new(BY_ID).id(firm.as_uuid()).id(id.as_uuid()),
    )
    .await
}

/// A customer of `firm` by the CRM's id.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
pub async fn get_by_external_id<E: Engine>(
    engine: &E,
    firm: FirmId,
    external_id: &ExternalId,
) -> Result<Option<Customer>, InfrastructureError> {
    let statement = Statement::new(BY_EXTERNAL_ID)
        .id(firm.as_uuid())
        .text(external_id.as_str());
    one(engine, firm, statement).await
}

/// The firm's oldest customer with this email.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
pub async fn find_by_email<E: Engine>(
    engine: &E,
    firm: FirmId,
    email: &Email,
) -> Result<Option<Customer>, InfrastructureError> {
    let statement = Statement::new(BY_EMAIL)
        .id(firm.as_uuid())
        .text(email.normalized());
    one(engine, firm, statement).await
}

/// Puts the customer of a row of [`UPSERT_CANDIDATES`] where its `found_by` says.
///
/// # Errors
/// As [`customer`].
pub fn add_candidate<E: Engine>(
    engine: &E,
    candidates: &mut UpsertCandidates,
    firm: FirmId,
    row: &E::Row,
) -> Result<(), InfrastructureError> {
    let found = Some(customer(engine, firm, row)?);
    if row.int("found_by")? == 0 {
        candidates.by_external_id = found;
    } else {
        candidates.by_email = found;
    }
    Ok(())
}

/// [`UPSERT_CANDIDATES`] for a firm, an optional external id and an email.
pub fn upsert_candidates_statement<'a>(
    firm: FirmId,
    external_id: Option<&'a ExternalId>,
    email: &'a Email,
) -> Statement<'a> {
    Statement::new(UPSERT_CANDIDATES)
        .id(firm.as_uuid())
        .opt_text(external_id.map(ExternalId::as_str))
        .text(email.normalized())
}

/// Both look-ups of an upsert in one statement.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
pub async fn find_upsert_candidates<E: Engine>(
    engine: &E,
    firm: FirmId,
    external_id: Option<&ExternalId>,
    email: &Email,
) -> Result<UpsertCandidates, InfrastructureError> {
    let rows = engine
        .fetch_all(upsert_candidates_statement(firm, external_id, email))
        .await
        .map_err(infra)?;
    let mut candidates = UpsertCandidates::default();
    for row in &rows {
        add_candidate(engine, &mut candidates, firm, row)?;
    }
    Ok(candidates)
}

fn attempt_owner<'a>(
    sql: String,
    applicant_id: Option<&'a ApplicantId>,
    external_user_id: Option<&'a ExternalUserId>,
) -> Statement<'a> {
    Statement::new(sql)
        .opt_text(applicant_id.map(ApplicantId::as_str))
        .opt_text(external_user_id.map(ExternalUserId::as_str))
}

/// Where the customer owning an attempt is, in any firm.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
pub async fn locate_attempt<E: Engine>(
    engine: &E,
    applicant_id: Option<&ApplicantId>,
    external_user_id: Option<&ExternalUserId>,
) -> Result<Option<AttemptLocation>, InfrastructureError> {
    if applicant_id.is_none() && external_user_id.is_none() {
        return Ok(None);
    }
    let statement = attempt_owner(
        format!("{ATTEMPT_OWNER} LIMIT 1"),
        applicant_id,
        external_user_id,
    );
    first_row(engine, statement, |row| {
        Ok(location(row.id("firm_id")?, row.id("customer_id")?))
    })
    .await
}

/// The customer owning an attempt, in any firm, loaded: the attempt and its customer in one
/// round trip. Provider events carry no firm: the firm is the one of the attempt's row, which its
/// customer row shares (foreign key).
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
pub async fn find_by_attempt<E: Engine>(
    engine: &E,
    applicant_id: Option<&ApplicantId>,
    external_user_id: Option<&ExternalUserId>,
) -> Result<Option<Customer>, InfrastructureError> {
    if applicant_id.is_none() && external_user_id.is_none() {
        return Ok(None);
    }
    let statement = attempt_owner(
        format!(
            "SELECT c.version, c.state, c.id, c.firm_id FROM ({ATTEMPT_OWNER} LIMIT 1) AS owner \
             JOIN customers AS c ON c.firm_id = owner.firm_id AND c.id = owner.customer_id"
        ),
        applicant_id,
        external_user_id,
    );
    let Some(row) = engine.fetch_optional(statement).await.map_err(infra)? else {
        return Ok(None);
    };
    let firm = FirmId::from_uuid(row.id("firm_id")?);
    customer(engine, firm, &row).map(Some)
}

/// Records a provider event that belongs to no known attempt; `false` when already recorded.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
pub async fn record_orphan_event<E: Engine>(
    engine: &E,
    event: &ProviderEvent,
) -> Result<bool, InfrastructureError> {
    let statement = Statement::new(
        "INSERT INTO provider_events (key, firm_id, outcome, payload, recorded_at) VALUES ($1, NULL, 'orphaned', $2, $3) \
         ON CONFLICT (key) DO NOTHING",
    )
    .text(event.key.as_str())
    .json(event)?
    // The port passes no time, and the provider's created_at is not when the event reached us;
    // the moment of recording is only kept for people reading the table.
    .time(OffsetDateTime::now_utc());
    Ok(engine.execute(statement).await.map_err(infra)? == 1)
}

/// The attempt a verification link was issued for, by the hash of its token.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
pub async fn locate_link<E: Engine>(
    engine: &E,
    token_hash: &str,
) -> Result<Option<LinkLocation>, InfrastructureError> {
    let statement = Statement::new(
        "SELECT firm_id, customer_id, number FROM verification_attempts WHERE link_token_hash = $1",
    )
    .text(token_hash);
    engine
        .fetch_optional(statement)
        .await
        .map_err(infra)?
        .map(|row| {
            Ok(LinkLocation {
                firm_id: FirmId::from_uuid(row.id("firm_id")?),
                customer_id: CustomerId::from_uuid(row.id("customer_id")?),
                attempt: attempt_number(row.int("number")?)?,
            })
        })
        .transpose()
}

/// `VERIFIED` customers due for re-screening at `now`, most overdue first.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
pub async fn due_for_rescreening<E: Engine>(
    engine: &E,
    now: OffsetDateTime,
    limit: u32,
) -> Result<Vec<AttemptLocation>, InfrastructureError> {
    let statement = Statement::new(RESCREENING)
        .time(now)
        .arg(Arg::Int(i64::from(limit)));
    all_rows(engine, statement, |row| {
        Ok(location(row.id("firm_id")?, row.id("id")?))
    })
    .await
}

/// The recovery lease (`$1` claimed before, `$2` limit, `$3` now, `$4` lease until), in the form
/// each database makes atomic. PostgreSQL: one statement that chooses and locks the rows,
/// skipping those another worker is leasing right now, and re-checks the lease condition after
/// the lock. SQLite: one `UPDATE` in the writer's turn, so choosing and leasing cannot interleave
/// with another worker's.
fn stuck_statement(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => {
            "WITH chosen AS ( \
                 SELECT customer_id, number FROM verification_attempts \
                 WHERE phase = 'starting' AND claimed_at < $1 \
                 AND (recovery_lease_until IS NULL OR recovery_lease_until <= $3) \
                 ORDER BY claimed_at LIMIT $2 \
                 FOR UPDATE SKIP LOCKED) \
             UPDATE verification_attempts AS attempt SET recovery_lease_until = $4 \
             FROM chosen WHERE attempt.customer_id = chosen.customer_id AND attempt.number = chosen.number \
             RETURNING attempt.firm_id, attempt.customer_id, attempt.claimed_at"
        }
        Dialect::Sqlite => {
            "UPDATE verification_attempts SET recovery_lease_until = $4 \
             WHERE (customer_id, number) IN ( \
                 SELECT customer_id, number FROM verification_attempts \
                 WHERE phase = 'starting' AND claimed_at < $1 \
                 AND (recovery_lease_until IS NULL OR recovery_lease_until <= $3) \
                 ORDER BY claimed_at LIMIT $2) \
             RETURNING firm_id, customer_id, claimed_at"
        }
    }
}

/// [`kyc_domain::ports::CustomerStore::stuck_attempts`]: attempts in `Starting` claimed more than
/// `older_than` before `now`, whose lease is free at `now`, leased until `now` +
/// [`RECOVERY_LEASE`], oldest claim first.
///
/// # Errors
/// [`InfrastructureError`] only; on error nothing is leased.
pub async fn stuck_attempts<E: Engine>(
    engine: &E,
    now: OffsetDateTime,
    older_than: Duration,
    limit: u32,
) -> Result<Vec<AttemptLocation>, InfrastructureError> {
    let statement = Statement::new(stuck_statement(E::DIALECT))
        .time(now - older_than)
        .arg(Arg::Int(i64::from(limit)))
        .time(now)
        .time(now + RECOVERY_LEASE);
    let rows = engine.execute_returning(statement).await.map_err(infra)?;
    let mut stuck = rows
        .iter()
        .map(|row| {
            let location = location(row.id("firm_id")?, row.id("customer_id")?);
            Ok((row.time("claimed_at")?, location))
        })
        .collect::<Result<Vec<_>, InfrastructureError>>()?;
    // RETURNING follows no order; the port promises the oldest claim first.
    stuck.sort_by_key(|(claimed_at, location)| (*claimed_at, location.customer_id));
    Ok(stuck.into_iter().map(|(_, location)| location).collect())
}

/// Implements `CustomerStore` for an adapter that implements [`Engine`]: the reads from this
/// module, the writes and the list page from the adapter's inherent `insert_customer`,
/// `save_customer`, `insert_customer_unless_matched` and `list_customers` (where each database
/// writes and pages in its own way).
#[macro_export]
macro_rules! customer_store {
    ($store:ty) => {
        #[$crate::reexport::async_trait]
        impl ::kyc_domain::ports::CustomerStore for $store {
            async fn insert(
                &self,
                customer: &::kyc_domain::customer::Customer,
                events: &[::kyc_domain::events::DomainEvent],
                outbox: &[::kyc_domain::events::OutboxMessage],
            ) -> Result<::kyc_domain::ports::Saved, ::kyc_domain::ports::SaveError> {
                self.insert_customer(customer, events, outbox).await
            }

            async fn save<'a>(
                &self,
                customer: &::kyc_domain::customer::Customer,
                events: &[::kyc_domain::events::DomainEvent],
                outbox: &[::kyc_domain::events::OutboxMessage],
                inbound: Option<&'a ::kyc_domain::provider::ProviderEventKey>,
            ) -> Result<::kyc_domain::ports::Saved, ::kyc_domain::ports::SaveError> {
                self.save_customer(customer, events, outbox, inbound).await
            }

            async fn get(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                id: ::kyc_domain::ids::CustomerId,
            ) -> Result<
                Option<::kyc_domain::customer::Customer>,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::customers::get(self, firm, id).await
            }

            async fn get_by_external_id(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                external_id: &::kyc_domain::values::ExternalId,
            ) -> Result<
                Option<::kyc_domain::customer::Customer>,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::customers::get_by_external_id(self, firm, external_id).await
            }

            async fn find_by_email(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                email: &::kyc_domain::values::Email,
            ) -> Result<
                Option<::kyc_domain::customer::Customer>,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::customers::find_by_email(self, firm, email).await
            }

            async fn find_upsert_candidates<'a>(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                external_id: Option<&'a ::kyc_domain::values::ExternalId>,
                email: &'a ::kyc_domain::values::Email,
            ) -> Result<
                ::kyc_domain::ports::UpsertCandidates,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::customers::find_upsert_candidates(self, firm, external_id, email).await
            }

            async fn insert_unless_matched(
                &self,
                customer: &::kyc_domain::customer::Customer,
                events: &[::kyc_domain::events::DomainEvent],
                outbox: &[::kyc_domain::events::OutboxMessage],
            ) -> Result<::kyc_domain::ports::InsertOrMatch, ::kyc_domain::ports::SaveError> {
                self.insert_customer_unless_matched(customer, events, outbox)
                    .await
            }

            async fn list(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                query: &::kyc_domain::ports::ListQuery,
            ) -> Result<::kyc_domain::ports::CustomerPage, ::kyc_domain::ports::InfrastructureError>
            {
                self.list_customers(firm, query).await
            }

            async fn locate_attempt<'a>(
                &self,
                applicant_id: Option<&'a ::kyc_domain::ids::ApplicantId>,
                external_user_id: Option<&'a ::kyc_domain::ids::ExternalUserId>,
            ) -> Result<
                Option<::kyc_domain::ports::AttemptLocation>,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::customers::locate_attempt(self, applicant_id, external_user_id).await
            }

            async fn find_by_attempt<'a>(
                &self,
                applicant_id: Option<&'a ::kyc_domain::ids::ApplicantId>,
                external_user_id: Option<&'a ::kyc_domain::ids::ExternalUserId>,
            ) -> Result<
                Option<::kyc_domain::customer::Customer>,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::customers::find_by_attempt(self, applicant_id, external_user_id).await
            }

            async fn record_orphan_event(
                &self,
                event: &::kyc_domain::provider::ProviderEvent,
            ) -> Result<bool, ::kyc_domain::ports::InfrastructureError> {
                $crate::customers::record_orphan_event(self, event).await
            }

            async fn locate_link<'a>(
                &self,
                token_hash: &'a str,
            ) -> Result<
                Option<::kyc_domain::ports::LinkLocation>,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::customers::locate_link(self, token_hash).await
            }

            async fn due_for_rescreening(
                &self,
                now: ::time::OffsetDateTime,
                limit: u32,
            ) -> Result<
                Vec<::kyc_domain::ports::AttemptLocation>,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::customers::due_for_rescreening(self, now, limit).await
            }

            async fn stuck_attempts(
                &self,
                now: ::time::OffsetDateTime,
                older_than: ::time::Duration,
                limit: u32,
            ) -> Result<
                Vec<::kyc_domain::ports::AttemptLocation>,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::customers::stuck_attempts(self, now, older_than, limit).await
            }
        }
    };
}
