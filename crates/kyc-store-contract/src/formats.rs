//! The formats people read: times inside stored customer states, the feed's states and the audit
//! trail's changes are RFC 3339 strings, and rows an older release wrote (integers of nanoseconds,
//! `time`'s arrays) read the same and are rewritten once by the adapter's migration. Unlike the
//! other contract functions this one reads rows as stored, so an adapter calls it with its
//! [`Engine`] (a store of the same database with its state cache off).

use kyc_domain::events::{Actor, Change, DomainEvent, EventOutcome};
use kyc_domain::ids::AttemptNumber;
use kyc_store_support::customers;
use kyc_store_support::engine::{Arg, Columns, Engine, Session, Statement};
use kyc_store_support::times::{self, Legacy};
use serde_json::Value;

use crate::{Stores, insert_customer, new_firm, now};

/// A member of a stored document as an RFC 3339 string.
fn rfc3339(document: &Value, member: &str) -> String {
    let value = &document[member];
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{member} is stored as {value}, not text"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|error| panic!("{member} {text:?} is not RFC 3339: {error}"));
    text.to_owned()
}

/// Stored times are RFC 3339; legacy rows read the same, and the move rewrites them as they would
/// be written now, once, leaving the audit trail closed to change again.
pub async fn stored_times_are_rfc_3339_and_legacy_rows_are_rewritten<E: Engine>(
    stores: Stores,
    engine: &E,
) {
    let firm = new_firm(&stores).await;
    let mut customer = insert_customer(&stores, firm, None).await;
    let at = now();
    let event = DomainEvent {
        at,
        actor: Actor::system("contract"),
        change: Change::ProviderEventRecorded {
            attempt: AttemptNumber::FIRST,
            event_type: "applicantPending".to_owned(),
            created_at: at - time::Duration::minutes(3),
            outcome: EventOutcome::NoStatus,
        },
        note: None,
    };
    let saved = stores
        .customers
        .save(&customer, std::slice::from_ref(&event), &[], None)
        .await
        .expect("save");
    customer.saved(saved);

    let state_of = || {
        Statement::new("SELECT state FROM customers WHERE firm_id = $1 AND id = $2")
            .id(firm.as_uuid())
            .id(customer.id.as_uuid())
    };
    let change_of = || {
        Statement::new(
            "SELECT sequence, change FROM events WHERE customer_id = $1 ORDER BY sequence",
        )
        .id(customer.id.as_uuid())
    };
    let state: Value = engine
        .fetch_optional(state_of())
        .await
        .unwrap()
        .expect("the row")
        .json("state")
        .unwrap();
    rfc3339(&state, "created_at");
    rfc3339(&state, "updated_at");
    let changes = engine.fetch_all(change_of()).await.unwrap();
    let recorded = changes.last().expect("the provider event's change");
    let change: Value = recorded.json("change").unwrap();
    assert_eq!(
        rfc3339(&change, "created_at"),
        kyc_domain::values::stored_time::format(at - time::Duration::minutes(3))
            .expect("a four-digit year")
    );
    let trail = stores
        .audit
        .customer_trail(firm, customer.id)
        .await
        .unwrap();

    // The rows as the previous release wrote them: the state in nanoseconds, the change in
    // `time`'s arrays, the move not yet run.
    let mut legacy_state = state.clone();
    assert!(times::to_legacy(&mut legacy_state, Legacy::Nanoseconds) >= 2);
    let mut legacy_change = change.clone();
    assert_eq!(times::to_legacy(&mut legacy_change, Legacy::Array), 1);
    let (open, close) = times::trail_opening(E::DIALECT);
    let mut tx = engine.begin_write().await.unwrap();
    tx.execute(Statement::new(open)).await.unwrap();
    tx.execute(
        Statement::new("UPDATE customers SET state = $1 WHERE id = $2")
            .arg(Arg::Json(legacy_state))
            .id(customer.id.as_uuid()),
    )
    .await
    .unwrap();
    tx.execute(
        Statement::new("UPDATE events SET change = $1 WHERE sequence = $2")
            .arg(Arg::Json(legacy_change))
            .int(recorded.int("sequence").unwrap()),
    )
    .await
    .unwrap();
    tx.execute(Statement::new(close)).await.unwrap();
    tx.execute(Statement::new("DELETE FROM data_migrations"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Read before the move: the same customer and the same trail.
    let read = customers::get(engine, firm, customer.id)
        .await
        .unwrap()
        .expect("the customer");
    assert_eq!(
        read.state(),
        customer.state(),
        "a legacy state reads as it was"
    );
    assert_eq!(
        stores
            .audit
            .customer_trail(firm, customer.id)
            .await
            .unwrap(),
        trail
    );

    let upgraded = times::upgrade_stored_times(engine).await.expect("the move");
    assert!(
        upgraded.customers >= 1 && upgraded.events >= 1,
        "{upgraded:?}"
    );
    let rewritten: Value = engine
        .fetch_optional(state_of())
        .await
        .unwrap()
        .expect("the row")
        .json("state")
        .unwrap();
    assert_eq!(rewritten, state, "the state as it is written now");
    let rewritten: Value = engine
        .fetch_all(change_of())
        .await
        .unwrap()
        .last()
        .unwrap()
        .json("change")
        .unwrap();
    assert_eq!(rewritten, change, "the change as it is written now");
    assert_eq!(
        stores
            .audit
            .customer_trail(firm, customer.id)
            .await
            .unwrap(),
        trail
    );
    let read = customers::get(engine, firm, customer.id)
        .await
        .unwrap()
        .expect("the customer");
    assert_eq!(read.state(), customer.state());

    assert_eq!(
        times::upgrade_stored_times(engine).await.unwrap(),
        times::Upgraded::default(),
        "the move runs once"
    );
    let refused = engine
        .execute(Statement::new("UPDATE events SET note = 'rewritten'"))
        .await;
    assert!(refused.is_err(), "the trail is append-only again");
}
