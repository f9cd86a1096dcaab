//! Walks one customer through the lifecycle with the real use cases on in-memory adapters:
//! ingest, risk confirmation, Start Verification (charged once), the customer opening the link,
//! the provider's verdict delivered twice and out of order, and AML screening.
//!
//! Run with `cargo run -p kyc-domain --example lifecycle`.

use kyc_domain::ports::{CreditsLedger, CustomerStore, IdempotencyKey};
use kyc_domain::prelude::*;
use kyc_domain::testkit::memory::World;
use kyc_domain::testkit::strategies::{EPOCH, person};
use kyc_domain::usecases::CustomerInput;
use time::Duration;

fn show(step: &str, customer: &Customer) {
    let crm = customer.crm();
    println!(
        "{step:<42} kyc_status={:<22} aml.status={:<13} crm: {} ({}, {})",
        customer.kyc_status.as_str(),
        customer.aml.status.as_str(),
        crm.label,
        crm.onboarding.as_str(),
        crm.next_action.as_str()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let world = World::new(EPOCH);
    let firm = FirmId::from_uuid(uuid::Uuid::from_u128(1));
    let officer = person(Role::ComplianceOfficer);
    world
        .ledger
        .grant(
            firm,
            Credits::new(10),
            "invoice-1",
            &IdempotencyKey::new("grant-invoice-1")?,
        )
        .await?;

    let input = CustomerInput {
        external_id: Some(ExternalId::new("crm-7741")?),
        full_name: FullName::new("Jane Doe")?,
        email: Email::new("jane@example.com")?,
        phone: Some(Phone::new("+61400000000")?),
        customer_type: None,
    };
    let created = world
        .service
        .upsert_customer(firm, &Actor::system("crm"), input.clone())
        .await?;
    show("CRM upserts the customer (201)", &created.customer);
    let again = world
        .service
        .upsert_customer(firm, &Actor::system("crm"), input)
        .await?;
    println!(
        "{:<42} same id: {}",
        "CRM sends it again (200)",
        again.customer.id == created.customer.id
    );
    let id = created.customer.id;

    let answers = RiskAnswers {
        is_designated_service: true,
        handles_cash_or_crypto: false,
        is_new_customer: true,
    };
    let customer = world
        .service
        .confirm_risk(firm, id, &officer, answers)
        .await?;
    show("a person confirms the risk answers", &customer);

    let quote = world.service.quote(firm, id).await?;
    let started = world
        .service
        .start_verification(firm, id, &officer, quote.cost_credits)
        .await?;
    show("Start Verification", &started.customer);
    println!(
        "{:<42} charged {}, {} left",
        "", started.charged_credits, started.balance.available
    );

    let attempt = started.attempt;
    world.service.open_link(firm, id, attempt).await?;
    let external = started
        .customer
        .attempt(attempt)
        .map(|a| a.external_user_id.clone());
    let event = |key: &str, seconds, kind| ProviderEvent {
        key: ProviderEventKey::new(key),
        applicant_id: None,
        external_user_id: external.clone(),
        created_at: EPOCH + Duration::seconds(seconds),
        kind,
    };
    let green = event(
        "green",
        20,
        ProviderEventKind::Reviewed(ReviewVerdict {
            answer: ReviewAnswer::Green,
            reject_type: None,
            reject_labels: vec![],
        }),
    );
    let pending = event("pending", 10, ProviderEventKind::Pending);
    // The verdict arrives before the older "pending", and twice.
    for delivered in [&green, &pending, &green] {
        world.service.apply_provider_event(delivered).await?;
    }
    let customer = world
        .store
        .get(firm, id)
        .await?
        .ok_or("customer vanished")?;
    show("verdict GREEN (late pending, a duplicate)", &customer);

    let customer = world.service.run_screening(firm, id).await?;
    show("AML screening finds nothing", &customer);
    println!("charges for this customer: {:?}", world.charges_of(id));
    Ok(())
}
