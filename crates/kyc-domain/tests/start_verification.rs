//! Start Verification, the billable step: refusals change nothing, and a crash at any point,
//! followed by recovery, ends with exactly one charge and one applicant, or with neither.

use std::sync::Arc;

use kyc_domain::ports::{
    CreditsLedger, CustomerStore, HoldState, IdempotencyKey, LedgerError, MockAmlScreening,
    MockClock, MockCreditsLedger, MockCustomerStore, MockIdGenerator, MockIdentityProvider,
};
use kyc_domain::prelude::*;
use kyc_domain::testkit::memory::{ProviderMode, World};
use kyc_domain::testkit::strategies::{EPOCH, person};
use kyc_domain::usecases::{CustomerInput, KycService, Ports, Settings, StartError};

fn firm() -> FirmId {
    FirmId::from_uuid(uuid::Uuid::from_u128(1))
}

fn officer() -> Person {
    person(Role::ComplianceOfficer)
}

/// A world with `credits` granted and one customer whose risk answers are confirmed in scope.
async fn ready(credits: u64) -> (World, CustomerId) {
    let world = World::new(EPOCH);
    if credits > 0 {
        world
            .ledger
            .grant(
                firm(),
                Credits::new(credits),
                "top-up",
                &IdempotencyKey::new("g").unwrap(),
            )
            .await
            .unwrap();
    }
    let input = CustomerInput {
        external_id: Some(ExternalId::new("crm-7741").unwrap()),
        full_name: FullName::new("Jane Doe").unwrap(),
        email: Email::new("jane@example.com").unwrap(),
        phone: None,
        customer_type: None,
    };
    let id = world
        .service
        .upsert_customer(firm(), &Actor::system("crm"), input)
        .await
        .unwrap()
        .customer
        .id;
    let answers = RiskAnswers {
        is_designated_service: true,
        handles_cash_or_crypto: false,
        is_new_customer: true,
    };
    world
        .service
        .confirm_risk(firm(), id, &officer(), answers)
        .await
        .unwrap();
    (world, id)
}

async fn customer(world: &World, id: CustomerId) -> Customer {
    world.store.get(firm(), id).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_start_charges_once_creates_one_applicant_and_moves_to_pending() {
    let (world, id) = ready(3).await;
    let started = world
        .service
        .start_verification(firm(), id, &officer(), Credits::new(1))
        .await
        .unwrap();
    assert_eq!(started.customer.kyc_status, KycStatus::Pending);
    assert_eq!(started.charged_credits, Credits::new(1));
    assert_eq!(started.balance.available, Credits::new(2));
    assert_eq!(world.charges_of(id), vec![AttemptNumber::FIRST]);
    assert_eq!(world.provider.applicants().len(), 1);
    // A second click is refused with a reason, and charges nothing.
    let again = world
        .service
        .start_verification(firm(), id, &officer(), Credits::new(1))
        .await;
    assert!(
        matches!(again, Err(StartError::NotStartable(_))),
        "{again:?}"
    );
    assert_eq!(world.charges_of(id).len(), 1);
}

#[tokio::test]
async fn twenty_concurrent_starts_charge_once() {
    let (world, id) = ready(5).await;
    let world = Arc::new(world);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let world = world.clone();
            tokio::spawn(async move {
                world
                    .service
                    .start_verification(firm(), id, &officer(), Credits::new(1))
                    .await
            })
        })
        .collect();
    let mut succeeded = 0;
    for task in tasks {
        if task.await.unwrap().is_ok() {
            succeeded += 1;
        }
    }
    assert!(succeeded >= 1);
    assert_eq!(world.charges_of(id), vec![AttemptNumber::FIRST]);
    assert_eq!(world.provider.applicants().len(), 1);
    assert_eq!(customer(&world, id).await.kyc_status, KycStatus::Pending);
    assert_eq!(
        world.ledger.balance(firm()).await.unwrap().available,
        Credits::new(4)
    );
}

#[tokio::test]
async fn a_provider_refusal_releases_the_hold_and_says_why() {
    let (world, id) = ready(3).await;
    world
        .provider
        .set_mode(ProviderMode::Refuse(400, "level not found".into()));
    let error = world
        .service
        .start_verification(firm(), id, &officer(), Credits::new(1))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("level not found"), "{error}");
    let stored = customer(&world, id).await;
    assert_eq!(stored.kyc_status, KycStatus::NotStarted);
    assert_eq!(stored.latest_attempt().unwrap().phase, AttemptPhase::Voided);
    assert!(
        world
            .ledger
            .holds()
            .iter()
            .all(|h| h.state == HoldState::Voided)
    );
    assert_eq!(
        world.ledger.balance(firm()).await.unwrap().available,
        Credits::new(3)
    );
    // Once the provider accepts, a new attempt starts and is charged once.
    world.provider.set_mode(ProviderMode::Normal);
    world
        .service
        .start_verification(firm(), id, &officer(), Credits::new(1))
        .await
        .unwrap();
    assert_eq!(world.charges_of(id), vec![AttemptNumber::FIRST.next()]);
}

#[tokio::test]
async fn an_unreachable_provider_charges_nothing_and_a_later_retry_completes_the_same_attempt() {
    let (world, id) = ready(3).await;
    world.provider.set_mode(ProviderMode::Unavailable);
    let error = world
        .service
        .start_verification(firm(), id, &officer(), Credits::new(1))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StartError::ProviderUnavailable { .. }),
        "{error:?}"
    );
    assert!(world.charges_of(id).is_empty());
    assert_eq!(customer(&world, id).await.kyc_status, KycStatus::NotStarted);
    world.provider.set_mode(ProviderMode::Normal);
    let started = world
        .service
        .start_verification(firm(), id, &officer(), Credits::new(1))
        .await
        .unwrap();
    assert_eq!(started.attempt, AttemptNumber::FIRST);
    assert_eq!(world.charges_of(id), vec![AttemptNumber::FIRST]);
    assert_eq!(world.provider.applicants().len(), 1);
}

#[tokio::test]
async fn a_changed_price_is_refused_before_anything_is_held() {
    let (world, id) = ready(3).await;
    let error = world
        .service
        .start_verification(firm(), id, &officer(), Credits::new(2))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StartError::PriceChanged { current, .. } if current == Credits::new(1))
    );
    assert!(world.ledger.holds().is_empty());
}

#[tokio::test]
async fn staff_may_start_but_an_admin_may_not() {
    let (world, id) = ready(3).await;
    let error = world
        .service
        .start_verification(firm(), id, &person(Role::Admin), Credits::new(1))
        .await
        .unwrap_err();
    assert!(matches!(error, StartError::Forbidden));
    world
        .service
        .start_verification(firm(), id, &person(Role::Staff), Credits::new(1))
        .await
        .unwrap();
}

/// With mocked ports: when the ledger refuses the hold, the provider is never called and nothing
/// is saved.
#[tokio::test]
async fn insufficient_credits_never_reach_the_provider() {
    let (world, id) = ready(0).await;
    let stored = customer(&world, id).await;

    let mut store = MockCustomerStore::new();
    store
        .expect_get()
        .returning(move |_, _| Ok(Some(stored.clone())));
    store.expect_save().times(0);
    let mut ledger = MockCreditsLedger::new();
    ledger
        .expect_reserve()
        .times(1)
        .returning(|_, _, requested, _| {
            Err(LedgerError::InsufficientCredits {
                available: Credits::ZERO,
                requested,
            })
        });
    let mut provider = MockIdentityProvider::new();
    provider.expect_create_applicant().times(0);
    let mut clock = MockClock::new();
    clock.expect_now().return_const(EPOCH);
    let service = KycService::new(
        Ports {
            customers: Arc::new(store),
            ledger: Arc::new(ledger),
            provider: Arc::new(provider),
            screening: Arc::new(MockAmlScreening::new()),
            clock: Arc::new(clock),
            ids: Arc::new(MockIdGenerator::new()),
        },
        Settings::default(),
    );
    let error = service
        .start_verification(firm(), id, &officer(), Credits::new(1))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StartError::InsufficientCredits { required, .. } if required == Credits::new(1))
    );
}

/// How a crash test ended, after recovery.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    OneChargeOneApplicant,
    Nothing,
}

async fn settle(world: &World, id: CustomerId) -> Outcome {
    world.faults.disarm();
    world.clock.advance(time::Duration::minutes(10));
    // Two passes, as two replicas would run them.
    world.service.recover_stuck_attempts(100).await.unwrap();
    world.service.recover_stuck_attempts(100).await.unwrap();
    let stored = customer(world, id).await;
    let charges = world.charges_of(id);
    let applicants = world.provider.applicants().len();
    let pending = world
        .ledger
        .holds()
        .iter()
        .filter(|h| h.state == HoldState::Pending)
        .count();
    assert_eq!(pending, 0, "a hold was left pending");
    assert!(kyc_domain::testkit::invariants::check(&stored).is_ok());
    match (charges.len(), applicants, stored.kyc_status) {
        (1, 1, KycStatus::Pending) => Outcome::OneChargeOneApplicant,
        (0, 0, KycStatus::NotStarted) => Outcome::Nothing,
        other => panic!("inconsistent outcome after recovery: {other:?}"),
    }
}

async fn crash_test(crash: impl Fn(&World), expected_calls: &mut usize) -> Outcome {
    let (world, id) = ready(3).await;
    let world = Arc::new(world);
    crash(&world);
    let task = {
        let world = world.clone();
        tokio::spawn(async move {
            world
                .service
                .start_verification(firm(), id, &officer(), Credits::new(1))
                .await
        })
    };
    let crashed = task.await.is_err();
    *expected_calls = (*expected_calls).max(world.faults.calls());
    let outcome = settle(&world, id).await;
    if crashed && outcome == Outcome::Nothing {
        // Nothing was charged: the person can start again, and that start charges once.
        world
            .service
            .start_verification(firm(), id, &officer(), Credits::new(1))
            .await
            .unwrap();
        assert_eq!(world.charges_of(id).len(), 1);
        assert_eq!(world.provider.applicants().len(), 1);
    }
    outcome
}

#[tokio::test]
async fn a_crash_before_or_after_any_step_then_recovery_charges_once_or_not_at_all() {
    // A clean run counts the port calls a start makes; then crash before and after each.
    let mut calls = 0;
    assert_eq!(
        crash_test(|_| {}, &mut calls).await,
        Outcome::OneChargeOneApplicant
    );
    assert!(
        calls >= 5,
        "a start makes at least reserve, claim, create, post, open: {calls}"
    );
    let mut outcomes = Vec::new();
    for n in 1..=calls {
        let mut ignored = 0;
        outcomes.push((
            n,
            "before",
            crash_test(|w| w.faults.crash_before_call(n), &mut ignored).await,
        ));
        outcomes.push((
            n,
            "after",
            crash_test(|w| w.faults.crash_after_call(n), &mut ignored).await,
        ));
    }
    // A crash before the hold changes nothing; once the claim is saved, recovery completes it.
    assert_eq!(outcomes[0], (1, "before", Outcome::Nothing));
    assert!(
        outcomes
            .iter()
            .any(|(_, _, o)| *o == Outcome::OneChargeOneApplicant),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn recovery_releases_a_hold_whose_claim_never_landed_and_blocks_its_attempt_number() {
    let (world, id) = ready(3).await;
    let world = Arc::new(world);
    // Crash on the claim save: the hold exists, the claim does not.
    world.faults.crash_before_call(2);
    let w = world.clone();
    assert!(
        tokio::spawn(async move {
            w.service
                .start_verification(firm(), id, &officer(), Credits::new(1))
                .await
        })
        .await
        .is_err()
    );
    assert_eq!(world.ledger.holds().len(), 1);
    assert_eq!(settle(&world, id).await, Outcome::Nothing);
    let stored = customer(&world, id).await;
    assert_eq!(
        stored.attempt(AttemptNumber::FIRST).unwrap().phase,
        AttemptPhase::Voided
    );
    assert_eq!(
        world.ledger.balance(firm()).await.unwrap().available,
        Credits::new(3)
    );
}
