//! A firm's webhook endpoints and the log of delivery attempts, once for both backends, with the
//! statements the delivery queues of both adapters share (the endpoint and log rows, the heads of
//! an endpoint's chains). The queue's lease and replay are in [`crate::deliveries`]; finishing
//! attempts in batches stays with each adapter, where the databases batch differently.

use kyc_domain::ids::FirmId;
use kyc_domain::ports::{InfrastructureError, WebhookDelivery, WebhookEndpoint, WebhookEndpointId};
use time::OffsetDateTime;

use crate::engine::{
    Arg, Columns, Dialect, Engine, Session, Statement, all_rows, first_row, fit, infra,
};

/// What every read of endpoints selects.
pub const ENDPOINT_COLUMNS: &str = "SELECT id, firm_id, url, description, event_types, secret, previous_secret, previous_secret_expires_at, disabled_at, created_at FROM webhook_endpoints";

/// An endpoint from a row of [`ENDPOINT_COLUMNS`] (or of a statement selecting the same names).
///
/// # Errors
/// [`InfrastructureError::Internal`] when a column does not read.
pub fn endpoint_from_row(row: &impl Columns) -> Result<WebhookEndpoint, InfrastructureError> {
    Ok(WebhookEndpoint {
        id: WebhookEndpointId::from_uuid(row.id("id")?),
        firm_id: FirmId::from_uuid(row.id("firm_id")?),
        url: row.text("url")?,
        description: row.opt_text("description")?,
        event_types: row.text_list("event_types")?,
        secret: row.text("secret")?,
        previous_secret: row.opt_text("previous_secret")?,
        previous_secret_expires_at: row.opt_time("previous_secret_expires_at")?,
        disabled_at: row.opt_time("disabled_at")?,
        created_at: row.time("created_at")?,
    })
}

fn delivery_from_row(row: &impl Columns) -> Result<WebhookDelivery, InfrastructureError> {
    Ok(WebhookDelivery {
        endpoint_id: WebhookEndpointId::from_uuid(row.id("endpoint_id")?),
        firm_id: FirmId::from_uuid(row.id("firm_id")?),
        message_id: row.text("message_id")?,
        event_type: row.text("event_type")?,
        attempt: fit(row.int("attempt")?)?,
        attempted_at: row.time("attempted_at")?,
        response_status: row.opt_int("response_status")?.map(fit).transpose()?,
        error: row.opt_text("error")?,
        duration_ms: fit(row.int("duration_ms")?)?,
    })
}

/// The insert of one attempt into the delivery log.
pub fn insert_delivery(delivery: &WebhookDelivery) -> Statement<'_> {
    Statement::new(
        "INSERT INTO webhook_deliveries (firm_id, endpoint_id, message_id, event_type, attempt, attempted_at, response_status, error, duration_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .id(delivery.firm_id.as_uuid())
    .id(delivery.endpoint_id.as_uuid())
    .text(delivery.message_id.as_str())
    .text(delivery.event_type.as_str())
    .arg(Arg::Int4(i32::try_from(delivery.attempt).unwrap_or(i32::MAX)))
    .time(delivery.attempted_at)
    .arg(Arg::OptInt4(delivery.response_status.map(i32::from)))
    .opt_text(delivery.error.as_deref())
    .int(i64::try_from(delivery.duration_ms).unwrap_or(i64::MAX))
}

/// Clears the heads of endpoint `$1` (disabled: its messages wait).
pub fn clear_heads(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => {
            "UPDATE webhook_messages SET head = false \
             WHERE endpoint_id = $1 AND head AND delivered_at IS NULL AND failed_at IS NULL"
        }
        Dialect::Sqlite => {
            "UPDATE webhook_messages SET head = 0 \
             WHERE endpoint_id = $1 AND head = 1 AND delivered_at IS NULL AND failed_at IS NULL"
        }
    }
}

/// Sets the heads of endpoint `$1` again (enabled): the oldest unfinished message of each of its
/// chains.
fn set_heads(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => {
            "UPDATE webhook_messages SET head = true WHERE id IN ( \
             SELECT min(id) FROM webhook_messages WHERE endpoint_id = $1 \
             AND delivered_at IS NULL AND failed_at IS NULL GROUP BY customer_id) \
             AND NOT head AND delivered_at IS NULL AND failed_at IS NULL"
        }
        Dialect::Sqlite => {
            "UPDATE webhook_messages SET head = 1 WHERE id IN ( \
             SELECT min(id) FROM webhook_messages WHERE endpoint_id = $1 \
             AND delivered_at IS NULL AND failed_at IS NULL GROUP BY customer_id) AND head = 0"
        }
    }
}

/// Registers an endpoint.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %endpoint.firm_id))]
pub async fn create_endpoint<E: Engine>(
    engine: &E,
    endpoint: &WebhookEndpoint,
) -> Result<(), InfrastructureError> {
    let statement = Statement::new(
        "INSERT INTO webhook_endpoints (id, firm_id, url, description, event_types, secret, disabled_at, created_at, previous_secret, previous_secret_expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .id(endpoint.id.as_uuid())
    .id(endpoint.firm_id.as_uuid())
    .text(endpoint.url.as_str())
    .opt_text(endpoint.description.as_deref())
    .arg(Arg::TextList(endpoint.event_types.clone()))
    .text(endpoint.secret.as_str())
    .opt_time(endpoint.disabled_at)
    .time(endpoint.created_at)
    .opt_text(endpoint.previous_secret.as_deref())
    .opt_time(endpoint.previous_secret_expires_at);
    engine.execute(statement).await.map_err(infra)?;
    Ok(())
}

/// A firm's endpoints (not deleted), oldest first.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
pub async fn list_endpoints<E: Engine>(
    engine: &E,
    firm: FirmId,
) -> Result<Vec<WebhookEndpoint>, InfrastructureError> {
    let statement = Statement::new(format!(
        "{ENDPOINT_COLUMNS} WHERE firm_id = $1 AND deleted_at IS NULL ORDER BY created_at, id"
    ))
    .id(firm.as_uuid());
    all_rows(engine, statement, endpoint_from_row).await
}

/// One endpoint of a firm (not deleted).
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
pub async fn get_endpoint<E: Engine>(
    engine: &E,
    firm: FirmId,
    id: WebhookEndpointId,
) -> Result<Option<WebhookEndpoint>, InfrastructureError> {
    let statement = Statement::new(format!(
        "{ENDPOINT_COLUMNS} WHERE firm_id = $1 AND id = $2 AND deleted_at IS NULL"
    ))
    .id(firm.as_uuid())
    .id(id.as_uuid());
    first_row(engine, statement, endpoint_from_row).await
}

/// Disables an enabled endpoint, and its chains' messages wait; whether it was enabled.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
pub async fn disable_endpoint<E: Engine>(
    engine: &E,
    firm: FirmId,
    id: WebhookEndpointId,
    at: OffsetDateTime,
) -> Result<bool, InfrastructureError> {
    let mut tx = engine.begin_write().await?;
    let done = tx
        .execute(
            Statement::new(
                "UPDATE webhook_endpoints SET disabled_at = $1 WHERE firm_id = $2 AND id = $3 AND disabled_at IS NULL AND deleted_at IS NULL",
            )
            .time(at)
            .id(firm.as_uuid())
            .id(id.as_uuid()),
        )
        .await
        .map_err(infra)?;
    if done != 1 {
        return Ok(false);
    }
    tx.execute(Statement::new(clear_heads(E::DIALECT)).id(id.as_uuid()))
        .await
        .map_err(infra)?;
    tx.commit().await.map_err(infra)?;
    Ok(true)
}

/// Rewrites an endpoint (not deleted); a change of its enabled state moves its chains' heads.
/// Whether it exists.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %endpoint.firm_id))]
pub async fn update_endpoint<E: Engine>(
    engine: &E,
    endpoint: &WebhookEndpoint,
) -> Result<bool, InfrastructureError> {
    let mut tx = engine.begin_write().await?;
    // PostgreSQL locks the row against a concurrent update; SQLite's write lock already did.
    let lock = match E::DIALECT {
        Dialect::Postgres => " FOR UPDATE",
        Dialect::Sqlite => "",
    };
    let found = tx
        .fetch_optional(
            Statement::new(format!(
                "SELECT disabled_at FROM webhook_endpoints WHERE firm_id = $1 AND id = $2 AND deleted_at IS NULL{lock}"
            ))
            .id(endpoint.firm_id.as_uuid())
            .id(endpoint.id.as_uuid()),
        )
        .await
        .map_err(infra)?;
    let Some(found) = found else {
        return Ok(false);
    };
    let was_disabled = found.opt_time("disabled_at")?.is_some();
    let done = tx
        .execute(
            Statement::new(
                "UPDATE webhook_endpoints SET url = $3, description = $4, event_types = $5, secret = $6, \
                 previous_secret = $7, previous_secret_expires_at = $8, disabled_at = $9 \
                 WHERE firm_id = $1 AND id = $2 AND deleted_at IS NULL",
            )
            .id(endpoint.firm_id.as_uuid())
            .id(endpoint.id.as_uuid())
            .text(endpoint.url.as_str())
            .opt_text(endpoint.description.as_deref())
            .arg(Arg::TextList(endpoint.event_types.clone()))
            .text(endpoint.secret.as_str())
            .opt_text(endpoint.previous_secret.as_deref())
            .opt_time(endpoint.previous_secret_expires_at)
            .opt_time(endpoint.disabled_at),
        )
        .await
        .map_err(infra)?;
    let heads = match (was_disabled, endpoint.disabled_at.is_some()) {
        (true, false) => Some(set_heads(E::DIALECT)),
        (false, true) => Some(clear_heads(E::DIALECT)),
        _ => None,
    };
    if let Some(heads) = heads {
        tx.execute(Statement::new(heads).id(endpoint.id.as_uuid()))
            .await
            .map_err(infra)?;
    }
    tx.commit().await.map_err(infra)?;
    Ok(done == 1)
}

/// Deletes an endpoint (kept for the log, hidden) and drops its pending messages; whether it
/// existed.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
pub async fn delete_endpoint<E: Engine>(
    engine: &E,
    firm: FirmId,
    id: WebhookEndpointId,
    at: OffsetDateTime,
) -> Result<bool, InfrastructureError> {
    let mut tx = engine.begin_write().await?;
    let done = tx
        .execute(
            Statement::new(
                "UPDATE webhook_endpoints SET deleted_at = $1 WHERE firm_id = $2 AND id = $3 AND deleted_at IS NULL",
            )
            .time(at)
            .id(firm.as_uuid())
            .id(id.as_uuid()),
        )
        .await
        .map_err(infra)?;
    if done != 1 {
        return Ok(false);
    }
    tx.execute(
        Statement::new(
            "UPDATE webhook_messages SET failed_at = $1, locked_until = NULL \
             WHERE endpoint_id = $2 AND delivered_at IS NULL AND failed_at IS NULL",
        )
        .time(at)
        .id(id.as_uuid()),
    )
    .await
    .map_err(infra)?;
    tx.commit().await.map_err(infra)?;
    Ok(true)
}

/// Appends one attempt to the delivery log.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %delivery.firm_id))]
pub async fn record_delivery<E: Engine>(
    engine: &E,
    delivery: &WebhookDelivery,
) -> Result<(), InfrastructureError> {
    engine
        .execute(insert_delivery(delivery))
        .await
        .map_err(infra)?;
    Ok(())
}

/// An endpoint's newest delivery attempts first.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
pub async fn list_deliveries<E: Engine>(
    engine: &E,
    firm: FirmId,
    endpoint: WebhookEndpointId,
    limit: u32,
) -> Result<Vec<WebhookDelivery>, InfrastructureError> {
    let statement = Statement::new(
        "SELECT endpoint_id, firm_id, message_id, event_type, attempt, attempted_at, response_status, error, duration_ms \
         FROM webhook_deliveries WHERE firm_id = $1 AND endpoint_id = $2 ORDER BY id DESC LIMIT $3",
    )
    .id(firm.as_uuid())
    .id(endpoint.as_uuid())
    .int(i64::from(limit));
    all_rows(engine, statement, delivery_from_row).await
}

/// Implements `WebhookStore` for an adapter that is an [`Engine`].
#[macro_export]
macro_rules! webhook_store {
    ($store:ty) => {
        #[$crate::reexport::async_trait]
        impl ::kyc_domain::ports::WebhookStore for $store {
            async fn create_endpoint(
                &self,
                endpoint: &::kyc_domain::ports::WebhookEndpoint,
            ) -> Result<(), ::kyc_domain::ports::InfrastructureError> {
                $crate::webhooks::create_endpoint(self, endpoint).await
            }

            async fn list_endpoints(
                &self,
                firm: ::kyc_domain::ids::FirmId,
            ) -> Result<
                Vec<::kyc_domain::ports::WebhookEndpoint>,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::webhooks::list_endpoints(self, firm).await
            }

            async fn get_endpoint(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                id: ::kyc_domain::ports::WebhookEndpointId,
            ) -> Result<
                Option<::kyc_domain::ports::WebhookEndpoint>,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::webhooks::get_endpoint(self, firm, id).await
            }

            async fn disable_endpoint(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                id: ::kyc_domain::ports::WebhookEndpointId,
                at: ::time::OffsetDateTime,
            ) -> Result<bool, ::kyc_domain::ports::InfrastructureError> {
                $crate::webhooks::disable_endpoint(self, firm, id, at).await
            }

            async fn update_endpoint(
                &self,
                endpoint: &::kyc_domain::ports::WebhookEndpoint,
            ) -> Result<bool, ::kyc_domain::ports::InfrastructureError> {
                $crate::webhooks::update_endpoint(self, endpoint).await
            }

            async fn delete_endpoint(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                id: ::kyc_domain::ports::WebhookEndpointId,
                at: ::time::OffsetDateTime,
            ) -> Result<bool, ::kyc_domain::ports::InfrastructureError> {
                $crate::webhooks::delete_endpoint(self, firm, id, at).await
            }

            async fn record_delivery(
                &self,
                delivery: &::kyc_domain::ports::WebhookDelivery,
            ) -> Result<(), ::kyc_domain::ports::InfrastructureError> {
                $crate::webhooks::record_delivery(self, delivery).await
            }

            async fn list_deliveries(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                endpoint: ::kyc_domain::ports::WebhookEndpointId,
                limit: u32,
            ) -> Result<
                Vec<::kyc_domain::ports::WebhookDelivery>,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::webhooks::list_deliveries(self, firm, endpoint, limit).await
            }
        }
    };
}
