//! What the customer store of each backend shares: the stored form of a state, a customer decoded
//! from its row through the cache, the errors a save maps, the spelling of an attempt phase and
//! the time a move happened. The write statements themselves differ (PostgreSQL writes a customer
//! and everything that goes with it in one statement of data-modifying CTEs; SQLite in a
//! `BEGIN IMMEDIATE` transaction of plain statements), so each adapter keeps its own.

use std::sync::Arc;

use kyc_domain::customer::{AttemptPhase, Customer, CustomerState};
use kyc_domain::events::{Actor, DomainEvent};
use kyc_domain::ids::{AttemptNumber, CustomerId, FirmId};
use kyc_domain::ports::{AttemptLocation, InfrastructureError, SaveError};
use kyc_domain::provider::ProviderEventKey;
use uuid::Uuid;

use crate::StateCache;
use crate::engine::{Engine, Unique, fit, infra};

/// The stored spelling of an attempt phase.
pub fn phase_str(phase: AttemptPhase) -> &'static str {
    match phase {
        AttemptPhase::Starting => "starting",
        AttemptPhase::Open => "open",
        AttemptPhase::Voided => "voided",
        AttemptPhase::Closed => "closed",
    }
}

/// The provider event that caused an audit event, if one did: the event's own actor, or the
/// inbound event the whole save applies.
pub fn provider_key<'a>(
    event: &'a DomainEvent,
    inbound: Option<&'a ProviderEventKey>,
) -> Option<&'a str> {
    match &event.actor {
        Actor::Provider { event_key } => Some(event_key.as_str()),
        Actor::ApiKey { .. } | Actor::Person(_) | Actor::Customer | Actor::System { .. } => {
            inbound.map(ProviderEventKey::as_str)
        }
    }
}

/// When the move being saved happened, on the caller's clock: its newest event, or (a save with no
/// event) the customer's last visible change. Outbox rows fall due from this time, so a delivery
/// worker reading the same clock as the use cases sees them due at once.
pub fn move_time(customer: &Customer, events: &[DomainEvent]) -> time::OffsetDateTime {
    events
        .iter()
        .map(|event| event.at)
        .max()
        .unwrap_or(customer.updated_at)
}

/// What a failed customer write means: a duplicate external id, a provider event already
/// applied, or the database's trouble.
pub fn save_error<E: Engine>(error: sqlx::Error) -> SaveError {
    if E::violates(&error, Unique::CustomerExternalId) {
        SaveError::DuplicateExternalId
    } else if E::violates(&error, Unique::ProviderEvent) {
        SaveError::DuplicateInbound
    } else {
        SaveError::Infrastructure(infra(error))
    }
}

/// A customer's state as stored: its JSON with the members that are `null` left out.
///
/// Every optional member of the state is a plain `Option`, which reads back as `None` when absent,
/// so the stored form loses nothing, and rows written with their nulls (before this) read the same.
/// Reading states is most of the cost of a page of customers, and a new customer's state is about
/// a quarter shorter and parses about a third faster without its nulls. Nulls inside arrays are
/// kept: there they hold a place.
///
/// # Errors
/// [`InfrastructureError::Internal`] when the state does not serialize.
pub fn state_json(state: &CustomerState) -> Result<serde_json::Value, InfrastructureError> {
    let mut value = serde_json::to_value(state).map_err(InfrastructureError::internal)?;
    drop_null_members(&mut value);
    Ok(value)
}

/// Removes the `null` members of every object in `value`.
fn drop_null_members(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(members) => {
            members.retain(|_, member| !member.is_null());
            members.values_mut().for_each(drop_null_members);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_null_members),
        _ => {}
    }
}

/// A customer from the columns every read of customers selects (`version`, `id`, then the
/// state), read for `firm` (the statement filtered by it). The decoded state comes from the cache
/// when it holds this customer at the row's version; otherwise `parse` reads it from the row
/// (each backend straight from its buffer) and it is remembered.
///
/// # Errors
/// [`InfrastructureError::Internal`] when the version does not fit or the state does not parse.
pub fn restore(
    cache: &StateCache,
    firm: FirmId,
    version: i64,
    id: Uuid,
    parse: impl FnOnce() -> Result<CustomerState, InfrastructureError>,
) -> Result<Customer, InfrastructureError> {
    let version = fit::<u64, _>(version)?;
    let id = CustomerId::from_uuid(id);
    if let Some(state) = cache.get(firm, id, version) {
        return Ok(Customer::restore_shared(state));
    }
    let mut state = parse()?;
    state.version = version;
    state.id = id;
    state.firm_id = firm;
    let state = Arc::new(state);
    if cache.enabled() {
        cache.put(firm, id, Arc::clone(&state));
    }
    Ok(Customer::restore_shared(state))
}

/// Remembers a customer just committed, as stored, so the next read of it skips the parse.
pub fn remember(cache: &StateCache, stored: &Customer) {
    if cache.enabled() {
        cache.put(stored.firm_id, stored.id, Arc::clone(stored.shared_state()));
    }
}

/// Where an attempt's customer is.
pub fn location(firm: Uuid, customer: Uuid) -> AttemptLocation {
    AttemptLocation {
        firm_id: FirmId::from_uuid(firm),
        customer_id: CustomerId::from_uuid(customer),
    }
}

/// An attempt number read back.
///
/// # Errors
/// [`InfrastructureError::Internal`] when the stored number is not one.
pub fn attempt_number(stored: i64) -> Result<AttemptNumber, InfrastructureError> {
    AttemptNumber::new(fit::<u32, _>(stored)?).map_err(InfrastructureError::internal)
}
