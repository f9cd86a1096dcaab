//! The client against the simulator over real HTTP, for every port call.

mod common;

use common::*;
use kyc_domain::aml::{AmlCategory, HitSource};
use kyc_domain::ids::{ApplicantId, ExternalUserId};
use kyc_domain::ports::{AmlScreening, IdentityProvider, ProviderError};
use reqwest::Method;

#[tokio::test]
async fn creating_twice_resolves_to_the_same_applicant_and_find_returns_it() {
    let sim = start_simulator("", |_| {}).await;
    let client = client_for(&sim.base_url);
    let first = client
        .create_applicant(&request("cust-1-a1", "Jane Doe"))
        .await
        .unwrap();
    assert_eq!(first.id.as_str().len(), 24);
    assert!(
        first
            .id
            .as_str()
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    let again = client
        .create_applicant(&request("cust-1-a1", "Jane Doe"))
        .await
        .unwrap();
    assert_eq!(
        again.id, first.id,
        "the 409 resolves to the existing applicant"
    );
    let found = client
        .find_applicant(&ExternalUserId::from_provider("cust-1-a1"))
        .await
        .unwrap();
    assert_eq!(found.unwrap().id, first.id);
    let other = client
        .create_applicant(&request("cust-1-a2", "Jane Doe"))
        .await
        .unwrap();
    assert_ne!(other.id, first.id);
}

#[tokio::test]
async fn an_unknown_external_user_id_is_not_found() {
    let sim = start_simulator("", |_| {}).await;
    let client = client_for(&sim.base_url);
    let missing = client
        .find_applicant(&ExternalUserId::from_provider("nobody here/?&"))
        .await
        .unwrap();
    assert_eq!(missing, None);
}

#[tokio::test]
async fn signed_calls_work_through_a_mount_prefix() {
    let sim = start_simulator("/sim/sumsub", |_| {}).await;
    let client = client_for(&sim.base_url);
    let created = client
        .create_applicant(&request("cust-2-a1", "Jane Doe"))
        .await
        .unwrap();
    let found = client
        .find_applicant(&created.external_user_id)
        .await
        .unwrap();
    assert_eq!(found.unwrap().id, created.id);
    let link = client
        .verification_link(&created.external_user_id, "basic-kyc-level", 600)
        .await
        .unwrap();
    assert!(
        link.starts_with(&format!("{}/websdk/p/sbx_", sim.base_url)),
        "{link}"
    );
    press(&link, "approve").await;
}

#[tokio::test]
async fn an_unknown_level_is_a_definite_refusal() {
    let sim = start_simulator("", |config| {
        config.levels = Some(vec!["basic-kyc-level".into()])
    })
    .await;
    let client = client_for(&sim.base_url);
    let mut wrong = request("cust-3-a1", "Jane Doe");
    wrong.level_name = "no such level".into();
    let error = client.create_applicant(&wrong).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Refused { status: 404, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_verified_identity_appears_once_the_hosted_flow_approves() {
    let sim = start_simulator("", |_| {}).await;
    let client = client_for(&sim.base_url);
    let applicant = client
        .create_applicant(&request("cust-4-a1", "Jane Mary Doe"))
        .await
        .unwrap();
    assert_eq!(
        client.verified_identity(&applicant.id).await.unwrap(),
        None,
        "no document country yet"
    );
    let link = client
        .verification_link(&applicant.external_user_id, "basic-kyc-level", 600)
        .await
        .unwrap();
    press(&link, "approve").await;
    let identity = client
        .verified_identity(&applicant.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(identity.verified_legal_name, "JANE MARY DOE");
    assert_eq!(identity.verified_country, "GBR");
    let unknown = ApplicantId::new("000000000000000000000000").unwrap();
    assert_eq!(client.verified_identity(&unknown).await.unwrap(), None);
}

#[tokio::test]
async fn aml_test_names_produce_their_hits_after_screening() {
    let sim = start_simulator("", |_| {}).await;
    let client = client_for(&sim.base_url);
    for (name, category, match_status) in [
        ("Joelamltest Testpep", AmlCategory::Pep, "true_positive"),
        (
            "Joelamltest Testsanc",
            AmlCategory::Sanctions,
            "true_positive",
        ),
        (
            "Joelamltest Yellow",
            AmlCategory::AdverseMedia,
            "potential_match",
        ),
        ("Joelamltest Red", AmlCategory::Criminal, "true_positive"),
    ] {
        let external = format!("aml-{}", name.len() + match_status.len());
        let external = format!("{external}-{}", category.as_str());
        let applicant = client
            .create_applicant(&request(&external, name))
            .await
            .unwrap();
        assert!(
            client.fetch_hits(&applicant.id).await.unwrap().is_empty(),
            "no case before screening"
        );
        let (status, _) = signed(
            &sim.base_url,
            Method::POST,
            &format!("/resources/applicants/{}/status/pending", applicant.id),
            "",
        )
        .await;
        assert_eq!(status, 200);
        let hits = client.fetch_hits(&applicant.id).await.unwrap();
        assert_eq!(hits.len(), 1, "{name}");
        assert!(
            hits[0].categories.contains(&category),
            "{name}: {:?}",
            hits[0].categories
        );
        assert_eq!(hits[0].match_status, match_status);
        assert_eq!(hits[0].source, HitSource::Screening);
        assert_eq!(hits[0].name.as_deref(), Some(name));
    }
    let clean = client
        .create_applicant(&request("clean-1", "Jane Doe"))
        .await
        .unwrap();
    signed(
        &sim.base_url,
        Method::POST,
        &format!("/resources/applicants/{}/status/pending", clean.id),
        "",
    )
    .await;
    assert!(client.fetch_hits(&clean.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_rescreen_is_accepted_for_approved_applicants_and_refused_otherwise() {
    let sim = start_simulator("", |_| {}).await;
    let client = client_for(&sim.base_url);
    let applicant = client
        .create_applicant(&request("cust-5-a1", "Jane Doe"))
        .await
        .unwrap();
    let error = client.request_rescreen(&applicant.id).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Refused { status: 400, .. }),
        "{error:?}"
    );
    let (status, body) = signed(
        &sim.base_url,
        Method::POST,
        &format!(
            "/resources/applicants/{}/status/testCompleted",
            applicant.id
        ),
        r#"{"reviewAnswer":"GREEN","rejectLabels":[]}"#,
    )
    .await;
    assert_eq!((status, body), (200, serde_json::json!({"ok": 1})));
    client.request_rescreen(&applicant.id).await.unwrap();
}
