//! Property tests of the lifecycle. Case counts follow `PROPTEST_CASES` (default 256).

use std::sync::Arc;

use kyc_domain::prelude::*;
use kyc_domain::testkit::invariants::{self, LifecycleView};
use kyc_domain::testkit::memory::World;
use kyc_domain::testkit::strategies::{self, Command, EPOCH, command, delivery_scenario, person};
use kyc_domain::usecases::CustomerInput;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

proptest! {
    /// Invariants hold after any sequence of commands and events; a refused command changes
    /// nothing.
    #[test]
    fn invariants_hold_after_any_sequence_of_commands(commands in proptest::collection::vec(command(), 1..60)) {
        let mut customer = strategies::fresh_customer();
        for (step, command) in commands.iter().enumerate() {
            let before = customer.clone();
            if strategies::run(&mut customer, command, step).is_err() {
                prop_assert_eq!(&customer, &before, "a refused {:?} changed the customer", command);
            }
            if let Err(broken) = invariants::check(&customer) {
                return Err(TestCaseError::fail(format!("after {command:?}: {broken}")));
            }
        }
    }

    /// A state stored after any sequence of commands reads back as it was: its times written as
    /// RFC 3339 strings and, as states were written before, as integers of nanoseconds and in
    /// `time`'s array form.
    #[test]
    fn stored_states_read_back_whichever_form_their_times_take(commands in proptest::collection::vec(command(), 1..60)) {
        let mut customer = strategies::fresh_customer();
        for (step, command) in commands.iter().enumerate() {
            let _ = strategies::run(&mut customer, command, step);
        }
        let state = customer.state();
        let stored = serde_json::to_value(state).unwrap();
        // The ids are the row's columns, which a store sets on every read.
        let read_back = |stored: serde_json::Value| {
            let mut read: CustomerState = serde_json::from_value(stored).unwrap();
            (read.id, read.firm_id) = (state.id, state.firm_id);
            read
        };
        prop_assert_eq!(&read_back(stored.clone()), state);
        for form in [Legacy::Nanoseconds, Legacy::Array] {
            let mut legacy = stored.clone();
            let converted = times_as(&mut legacy, form);
            prop_assert!(converted >= 2, "created_at and updated_at at least");
            prop_assert_eq!(&read_back(legacy), state);
        }
    }

    /// Any delivery order, with any duplicates, of a set of provider events ends in the same state
    /// as delivery in creation order.
    #[test]
    fn delivery_order_and_duplicates_do_not_change_the_outcome(scenario in delivery_scenario()) {
        let in_order = strategies::deliver(&scenario.events_in_creation_order());
        let as_delivered = strategies::deliver(&scenario.deliveries);
        prop_assert_eq!(LifecycleView::of(&in_order), LifecycleView::of(&as_delivered));
        prop_assert!(invariants::check(&as_delivered).is_ok());
    }

    /// Applying an event twice equals applying it once.
    #[test]
    fn applying_an_event_twice_equals_applying_it_once(scenario in delivery_scenario(), pick in any::<prop::sample::Index>()) {
        let events = scenario.events_in_creation_order();
        let twice_at = pick.index(events.len());
        let mut doubled = events.clone();
        doubled.insert(twice_at + 1, events[twice_at].clone());
        let once = strategies::deliver(&events);
        let twice = strategies::deliver(&doubled);
        prop_assert_eq!(once.state(), twice.state());
    }

    /// Through the use cases: a customer confirmed out of scope is never charged, and no attempt
    /// is ever charged twice or without an applicant, whatever people click in whatever order.
    #[test]
    fn charges_are_at_most_one_per_attempt_and_never_while_not_required(
        commands in proptest::collection::vec(service_command(), 1..25)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let world = World::new(EPOCH);
            let firm = FirmId::from_uuid(uuid::Uuid::from_u128(1));
            grant(&world, firm, 5).await;
            let customer = world.service
                .upsert_customer(firm, &Actor::system("crm"), input())
                .await
                .unwrap()
                .customer;
            let officer = person(Role::ComplianceOfficer);
            for command in &commands {
                let before = world.store.get_customer(firm, customer.id).await;
                let charges_before = world.charges_of(customer.id).len();
                match command {
                    ServiceCommand::Confirm(designated) => {
                        let _ = world.service.confirm_risk(firm, customer.id, &officer, RiskAnswers {
                            is_designated_service: *designated,
                            handles_cash_or_crypto: false,
                            is_new_customer: true,
                        }).await;
                    }
                    ServiceCommand::Start => {
                        let _ = world.service.start_verification(firm, customer.id, &officer, Credits::new(1)).await;
                    }
                    ServiceCommand::Verdict(kind, millis) => {
                        let attempt = before.latest_attempt().map(|a| a.external_user_id.clone());
                        let event = ProviderEvent {
                            key: ProviderEventKey::new(format!("evt-{millis}-{}", kind.name())),
                            applicant_id: None,
                            external_user_id: attempt,
                            created_at: EPOCH + time::Duration::milliseconds(*millis),
                            kind: kind.clone(),
                        };
                        world.service.apply_provider_event(&event).await.unwrap();
                    }
                    ServiceCommand::Restart => {
                        let _ = world.service.restart_verification(firm, customer.id, &officer, Note::new("again").unwrap()).await;
                    }
                }
                let after = world.store.get_customer(firm, customer.id).await;
                let charges = world.charges_of(customer.id);
                if before.kyc_status == KycStatus::NotRequired {
                    prop_assert_eq!(charges.len(), charges_before, "charged while NOT_REQUIRED");
                }
                let opened: Vec<_> = after.attempts.iter()
                    .filter(|a| matches!(a.phase, AttemptPhase::Open | AttemptPhase::Closed))
                    .map(|a| a.number)
                    .collect();
                let mut charged = charges.clone();
                charged.sort();
                prop_assert_eq!(&charged, &opened, "every opened attempt is charged once, nothing else is");
                prop_assert_eq!(world.provider.applicants().len(), opened.len(), "one applicant per charged attempt");
                prop_assert!(invariants::check(&after).is_ok());
            }
            Ok(())
        })?;
    }
}

#[derive(Debug, Clone)]
enum ServiceCommand {
    Confirm(bool),
    Start,
    Verdict(ProviderEventKind, i64),
    Restart,
}

fn service_command() -> impl Strategy<Value = ServiceCommand> {
    prop_oneof![
        any::<bool>().prop_map(ServiceCommand::Confirm),
        Just(ServiceCommand::Start),
        (strategies::provider_event_kind(), 0i64..100_000)
            .prop_map(|(k, t)| ServiceCommand::Verdict(k, t)),
        Just(ServiceCommand::Restart),
    ]
}

fn input() -> CustomerInput {
    CustomerInput {
        external_id: Some(ExternalId::new("crm-1").unwrap()),
        full_name: FullName::new("Jane Doe").unwrap(),
        email: Email::new("jane@example.com").unwrap(),
        phone: None,
        customer_type: None,
    }
}

async fn grant(world: &World, firm: FirmId, credits: u64) {
    use kyc_domain::ports::{CreditsLedger, IdempotencyKey};
    world
        .ledger
        .grant(
            firm,
            Credits::new(credits),
            "top-up",
            &IdempotencyKey::new("grant-1").unwrap(),
        )
        .await
        .unwrap();
}

/// Reads a customer back from the in-memory store.
trait GetCustomer {
    async fn get_customer(&self, firm: FirmId, id: CustomerId) -> Customer;
}

impl GetCustomer for Arc<kyc_domain::testkit::memory::MemoryStore> {
    async fn get_customer(&self, firm: FirmId, id: CustomerId) -> Customer {
        use kyc_domain::ports::CustomerStore;
        self.get(firm, id).await.unwrap().unwrap()
    }
}

#[test]
fn the_commands_strategy_reaches_every_status() {
    // Guards the property tests against a strategy that silently stopped exploring.
    let mut seen = std::collections::BTreeSet::new();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..300 {
        let commands = proptest::collection::vec(command(), 1..60)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut customer = strategies::fresh_customer();
        for (step, command) in commands.iter().enumerate() {
            let _ = strategies::run(&mut customer, command, step);
            seen.insert(customer.kyc_status);
        }
        let _: &Command = &commands[0];
    }
    assert_eq!(seen.len(), KycStatus::ALL.len(), "reached only {seen:?}");
}

/// A form stored times took before they were written as RFC 3339.
#[derive(Debug, Clone, Copy)]
enum Legacy {
    /// One integer of nanoseconds since the Unix epoch.
    Nanoseconds,
    /// `time`'s array of nine integers.
    Array,
}

/// Rewrites every stored time in `value` (an RFC 3339 string; no other string in a state parses
/// as one) into `form`; how many it rewrote.
fn times_as(value: &mut serde_json::Value, form: Legacy) -> usize {
    use kyc_domain::values::stored_time;
    use serde_json::Value;
    match value {
        Value::String(text) => {
            let Ok(at) = stored_time::parse(text) else {
                return 0;
            };
            *value = match form {
                Legacy::Nanoseconds => {
                    Value::from(i64::try_from(at.unix_timestamp_nanos()).unwrap())
                }
                Legacy::Array => serde_json::to_value(at).unwrap(),
            };
            1
        }
        Value::Array(items) => items.iter_mut().map(|item| times_as(item, form)).sum(),
        Value::Object(members) => members
            .values_mut()
            .map(|member| times_as(member, form))
            .sum(),
        _ => 0,
    }
}
