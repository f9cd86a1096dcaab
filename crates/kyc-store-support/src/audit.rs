//! Reading the audit trail, once for both backends. Nothing here writes to `events`: the customer
//! store appends them with the change that caused them.

use kyc_domain::events::DomainEvent;
use kyc_domain::ids::{CustomerId, EventId, FirmId};
use kyc_domain::ports::{AuditEntry, InfrastructureError};
use kyc_domain::provider::ProviderEventKey;

use crate::engine::{Columns, Engine, Statement, all_rows};

const COLUMNS: &str = "SELECT sequence, id, firm_id, customer_id, at, actor, change, note, provider_event_key FROM events";

fn entry_from_row(row: &impl Columns) -> Result<AuditEntry, InfrastructureError> {
    Ok(AuditEntry {
        sequence: row.int("sequence")?,
        id: EventId::from_uuid(row.id("id")?),
        firm_id: FirmId::from_uuid(row.id("firm_id")?),
        customer_id: CustomerId::from_uuid(row.id("customer_id")?),
        event: DomainEvent {
            at: row.time("at")?,
            actor: row.json("actor")?,
            change: row.json("change")?,
            note: row.opt_text("note")?,
        },
        provider_event_key: row
            .opt_text("provider_event_key")?
            .map(ProviderEventKey::new),
    })
}

async fn entries<E: Engine>(
    engine: &E,
    statement: Statement<'_>,
) -> Result<Vec<AuditEntry>, InfrastructureError> {
    all_rows(engine, statement, entry_from_row).await
}

/// A customer's trail, oldest first.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm, customer_id = %customer))]
pub async fn customer_trail<E: Engine>(
    engine: &E,
    firm: FirmId,
    customer: CustomerId,
) -> Result<Vec<AuditEntry>, InfrastructureError> {
    let statement = Statement::new(format!(
        "{COLUMNS} WHERE firm_id = $1 AND customer_id = $2 ORDER BY sequence"
    ))
    .id(firm.as_uuid())
    .id(customer.as_uuid());
    entries(engine, statement).await
}

/// A page of the firm's whole trail, after the sequence `after`.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
pub async fn firm_export<E: Engine>(
    engine: &E,
    firm: FirmId,
    after: Option<i64>,
    limit: u32,
) -> Result<Vec<AuditEntry>, InfrastructureError> {
    let statement = Statement::new(format!(
        "{COLUMNS} WHERE firm_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
    ))
    .id(firm.as_uuid())
    .int(after.unwrap_or(0))
    .int(i64::from(limit));
    entries(engine, statement).await
}

/// Implements `AuditLog` for an adapter that is an [`Engine`].
#[macro_export]
macro_rules! audit_log {
    ($store:ty) => {
        #[$crate::reexport::async_trait]
        impl ::kyc_domain::ports::AuditLog for $store {
            async fn customer_trail(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                customer: ::kyc_domain::ids::CustomerId,
            ) -> Result<
                Vec<::kyc_domain::ports::AuditEntry>,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::audit::customer_trail(self, firm, customer).await
            }

            async fn firm_export(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                after: Option<i64>,
                limit: u32,
            ) -> Result<
                Vec<::kyc_domain::ports::AuditEntry>,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::audit::firm_export(self, firm, after, limit).await
            }
        }
    };
}
