//! The outbox worker on the composition `serve` builds (SQLite, the simulator mounted on the same
//! server): a GREEN verdict leaves a screening job in the outbox, and one pass of the worker turns
//! it into a screened customer, once, and the outbox drains.

use clap::Parser;
use kyc_domain::events::{Person, Role};
use kyc_domain::ids::UserId;
use kyc_domain::provider::{
    ProviderEvent, ProviderEventKey, ProviderEventKind, ReviewAnswer, ReviewVerdict,
};
use kyc_domain::risk::RiskAnswers;
use kyc_domain::status::{AmlStatus, KycStatus};
use kyc_domain::usecases::CustomerInput;
use kyc_domain::values::{Credits, Email, FullName};
use kyc_server::Cli;
use kyc_server::commands;
use kyc_server::config::PublicUrl;
use kyc_server::serve::Composition;
use kyc_server::workers::OutboxWorker;
use tokio::net::TcpListener;
use uuid::Uuid;

#[tokio::test]
async fn a_green_verdict_is_screened_once_by_the_outbox_worker_and_the_outbox_drains() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kyc.db").display());
    let cli = Cli::try_parse_from(["kyc-server", "--database-url", &url]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_url = PublicUrl::for_address(listener.local_addr().unwrap());
    let composition = Composition::build(&cli.config, &public_url, true)
        .await
        .unwrap();
    let app = composition.router(&cli.config, &public_url);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let service = composition.service.clone();

    let firm = commands::create_firm(&composition.stores, "Acme")
        .await
        .unwrap();
    commands::grant_credits(&composition.stores, &firm.to_string(), 5, "invoice-1")
        .await
        .unwrap();
    let officer = Person {
        id: UserId::from_uuid(Uuid::now_v7()),
        email: Email::new("officer@acme.example").unwrap(),
        role: Role::ComplianceOfficer,
    };
    let customer = service
        .create_customer_manually(
            firm,
            &officer,
            CustomerInput {
                external_id: None,
                full_name: FullName::new("Jane Doe").unwrap(),
                email: Email::new("jane@example.com").unwrap(),
                phone: None,
                customer_type: None,
            },
        )
        .await
        .unwrap();
    service
        .confirm_risk(
            firm,
            customer.id,
            &officer,
            RiskAnswers {
                is_designated_service: true,
                handles_cash_or_crypto: false,
                is_new_customer: true,
            },
        )
        .await
        .unwrap();
    let started = service
        .start_verification(firm, customer.id, &officer, Credits::new(1))
        .await
        .unwrap();
    let attempt = started.customer.state().attempts.last().unwrap().clone();

    // The provider's verdict, as the webhook adapter would hand it over.
    let verdict = ProviderEvent {
        key: ProviderEventKey::new(format!("green-{}", Uuid::new_v4())),
        applicant_id: attempt.applicant_id.clone(),
        external_user_id: Some(attempt.external_user_id.clone()),
        created_at: time::OffsetDateTime::now_utc(),
        kind: ProviderEventKind::Reviewed(ReviewVerdict {
            answer: ReviewAnswer::Green,
            reject_type: None,
            reject_labels: Vec::new(),
        }),
    };
    service.apply_provider_event(&verdict).await.unwrap();
    let verified = composition
        .stores
        .customers
        .get(firm, customer.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(verified.state().kyc_status, KycStatus::Verified);
    assert_eq!(verified.state().aml.status, AmlStatus::NotScreened);

    let worker = OutboxWorker::new(
        service.clone(),
        composition.stores.outbox.clone(),
        composition.metrics.clone(),
    );
    let report = worker.run_pass().await.unwrap();
    assert!(report.claimed >= 1, "{report:?}");
    assert_eq!(report.delivered, report.claimed, "{report:?}");
    let screened = composition
        .stores
        .customers
        .get(firm, customer.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(screened.state().aml.status, AmlStatus::Clear);
    assert!(screened.state().aml.screened_at.is_some());
    assert!(
        screened.state().aml.next_screening_due.is_some(),
        "screening sets the re-screening date from the risk rating"
    );

    // The screening's own status moves left notifications behind; they are delivered by the next
    // pass, and the screening job is not run a second time.
    let notifications = worker.run_pass().await.unwrap();
    assert_eq!(
        notifications.delivered, notifications.claimed,
        "{notifications:?}"
    );
    let after = composition
        .stores
        .customers
        .get(firm, customer.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after.state().aml.screened_at,
        screened.state().aml.screened_at
    );
    assert_eq!(after.version, screened.version, "nothing screened twice");
    let drained = worker.run_pass().await.unwrap();
    assert_eq!(drained.claimed, 0, "{drained:?}");

    server.abort();
    composition.backend.close().await;
}
