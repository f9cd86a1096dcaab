//! The upsert table of `POST /customers` through the use case, including the race where a
//! concurrent create of the same external id lands between the use case's two reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kyc_domain::ports::{
    InsertOrMatch, MockAmlScreening, MockClock, MockCreditsLedger, MockCustomerStore,
    MockIdGenerator, MockIdentityProvider, Saved, UpsertCandidates,
};
use kyc_domain::prelude::*;
use kyc_domain::testkit::memory::World;
use kyc_domain::testkit::strategies::{EPOCH, fresh_customer};
use kyc_domain::usecases::{
    CustomerInput, KycService, Ports, Settings, UpsertError, UpsertPlan, plan_upsert,
};

fn input(external: Option<&str>, email: &str) -> CustomerInput {
    CustomerInput {
        external_id: external.map(|e| ExternalId::new(e).unwrap()),
        full_name: FullName::new("Jane Doe").unwrap(),
        email: Email::new(email).unwrap(),
        phone: None,
        customer_type: None,
    }
}

#[test]
fn the_plan_follows_the_contract_table() {
    let without_external = fresh_customer();
    let with_external = {
        let mut c = fresh_customer();
        c.adopt_external_id(ExternalId::new("crm-9").unwrap(), &Actor::Customer, EPOCH)
            .unwrap();
        c
    };
    assert_eq!(
        plan_upsert(true, Some(&with_external), None),
        UpsertPlan::Update
    );
    assert_eq!(
        plan_upsert(true, None, Some(&without_external)),
        UpsertPlan::Adopt
    );
    assert_eq!(
        plan_upsert(true, None, Some(&with_external)),
        UpsertPlan::Conflict
    );
    assert_eq!(
        plan_upsert(false, None, Some(&with_external)),
        UpsertPlan::Update
    );
    assert_eq!(plan_upsert(true, None, None), UpsertPlan::Create);
    assert_eq!(plan_upsert(false, None, None), UpsertPlan::Create);
}

#[tokio::test]
async fn every_row_of_the_table_through_the_use_case() {
    let world = World::new(EPOCH);
    let firm = FirmId::from_uuid(uuid::Uuid::from_u128(1));
    let crm = Actor::system("crm");
    let service = &world.service;
    let created = service
        .upsert_customer(firm, &crm, input(Some("crm-1"), "a@example.com"))
        .await
        .unwrap();
    assert!(created.created);
    let updated = service
        .upsert_customer(firm, &crm, input(Some("crm-1"), "a@example.com"))
        .await
        .unwrap();
    assert!(!updated.created && updated.customer.id == created.customer.id);
    let bare = service
        .upsert_customer(firm, &crm, input(None, "b@example.com"))
        .await
        .unwrap();
    let adopted = service
        .upsert_customer(firm, &crm, input(Some("crm-2"), "B@example.com"))
        .await
        .unwrap();
    assert_eq!(adopted.customer.id, bare.customer.id);
    assert_eq!(
        adopted
            .customer
            .external_id
            .as_ref()
            .map(ExternalId::as_str),
        Some("crm-2")
    );
    let conflict = service
        .upsert_customer(firm, &crm, input(Some("crm-3"), "b@example.com"))
        .await;
    assert!(matches!(conflict, Err(UpsertError::EmailTaken)));
    let by_email = service
        .upsert_customer(firm, &crm, input(None, "a@example.com"))
        .await
        .unwrap();
    assert_eq!(by_email.customer.id, created.customer.id);
}

/// The first read by external id misses a create that commits just before the read by email:
/// the use case must read again and update, not answer a false conflict.
#[tokio::test]
async fn a_create_landing_between_the_two_reads_is_an_update_not_a_conflict() {
    let firm = FirmId::from_uuid(uuid::Uuid::from_u128(1));
    let winner = {
        let mut c = fresh_customer();
        c.adopt_external_id(
            ExternalId::new("crm-race").unwrap(),
            &Actor::Customer,
            EPOCH,
        )
        .unwrap();
        c.saved_at_version(1);
        c
    };
    let reads = Arc::new(AtomicUsize::new(0));
    let mut store = MockCustomerStore::new();
    let (first, found) = (reads.clone(), winner.clone());
    store
        .expect_insert_unless_matched()
        .returning(move |_, _, _| {
            // Misses by external id on the first read (but sees the winner by email, committed
            // in between), finds the winner by external id afterwards.
            let again = first.fetch_add(1, Ordering::SeqCst) > 0;
            Ok(InsertOrMatch::Matched(UpsertCandidates {
                by_external_id: again.then(|| found.clone()),
                by_email: Some(found.clone()),
            }))
        });
    store.expect_insert().times(0);
    store.expect_save().times(0..=1).returning(|_, _, _, _| {
        Ok(Saved {
            version: 2,
            at: EPOCH,
        })
    });
    let mut clock = MockClock::new();
    clock.expect_now().return_const(EPOCH);
    let mut ids = MockIdGenerator::new();
    ids.expect_customer_id()
        .returning(|| CustomerId::from_uuid(uuid::Uuid::now_v7()));
    let service = KycService::new(
        Ports {
            customers: Arc::new(store),
            ledger: Arc::new(MockCreditsLedger::new()),
            provider: Arc::new(MockIdentityProvider::new()),
            screening: Arc::new(MockAmlScreening::new()),
            clock: Arc::new(clock),
            ids: Arc::new(ids),
        },
        Settings::default(),
    );
    let upserted = service
        .upsert_customer(
            firm,
            &Actor::system("crm"),
            input(Some("crm-race"), "jane@example.com"),
        )
        .await
        .expect("an update of the winner");
    assert!(!upserted.created);
    assert_eq!(upserted.customer.id, winner.id);
    assert!(reads.load(Ordering::SeqCst) >= 2, "the use case read again");
}
