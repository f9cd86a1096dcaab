//! Reading the audit trail and the event feed on Postgres. Nothing here writes to `events`.

use async_trait::async_trait;
use kyc_domain::events::DomainEvent;
use kyc_domain::ids::{CustomerId, EventId, FirmId};
use kyc_domain::ports::{AuditEntry, AuditLog, InfrastructureError};
use kyc_domain::provider::ProviderEventKey;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::{PostgresStore, infra};
use sqlx::types::Json;
use uuid::Uuid;

const COLUMNS: &str = "SELECT sequence, id, firm_id, customer_id, at, actor, change, note, provider_event_key FROM events";

fn entry_from_row(row: &PgRow) -> Result<AuditEntry, InfrastructureError> {
    Ok(AuditEntry {
        sequence: row.try_get("sequence").map_err(infra)?,
        id: EventId::from_uuid(row.try_get::<Uuid, _>("id").map_err(infra)?),
        firm_id: FirmId::from_uuid(row.try_get::<Uuid, _>("firm_id").map_err(infra)?),
        customer_id: CustomerId::from_uuid(row.try_get::<Uuid, _>("customer_id").map_err(infra)?),
        event: DomainEvent {
            at: row.try_get("at").map_err(infra)?,
            actor: row.try_get::<Json<_>, _>("actor").map_err(infra)?.0,
            change: row.try_get::<Json<_>, _>("change").map_err(infra)?.0,
            note: row.try_get("note").map_err(infra)?,
        },
        provider_event_key: row
            .try_get::<Option<String>, _>("provider_event_key")
            .map_err(infra)?
            .map(ProviderEventKey::new),
    })
}

impl PostgresStore {
    async fn firm_events(
        &self,
        firm: FirmId,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, InfrastructureError> {
        sqlx::query(&format!(
            "{COLUMNS} WHERE firm_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
        ))
        .bind(firm.as_uuid())
        .bind(after.unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(infra)?
        .iter()
        .map(entry_from_row)
        .collect()
    }
}

#[async_trait]
impl AuditLog for PostgresStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm, customer_id = %customer))]
    async fn customer_trail(
        &self,
        firm: FirmId,
        customer: CustomerId,
    ) -> Result<Vec<AuditEntry>, InfrastructureError> {
        sqlx::query(&format!(
            "{COLUMNS} WHERE firm_id = $1 AND customer_id = $2 ORDER BY sequence"
        ))
        .bind(firm.as_uuid())
        .bind(customer.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(infra)?
        .iter()
        .map(entry_from_row)
        .collect()
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    async fn firm_export(
        &self,
        firm: FirmId,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, InfrastructureError> {
        self.firm_events(firm, after, limit).await
    }
}
