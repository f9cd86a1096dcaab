//! The composition `serve` builds, driven in-process: with no Sumsub credentials, the service's
//! provider port reaches the simulator mounted on the same server, through the public URL, with
//! the secrets generated for the process.

use clap::Parser;
use kyc_domain::ids::{AttemptNumber, CustomerId, ExternalUserId};
use kyc_domain::ports::ApplicantRequest;
use kyc_domain::values::{CustomerType, Email, FullName};
use kyc_server::Cli;
use kyc_server::config::PublicUrl;
use kyc_server::serve::Composition;
use tokio::net::TcpListener;
use uuid::Uuid;

#[tokio::test]
async fn without_credentials_the_provider_port_reaches_the_simulator_mounted_on_this_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kyc.db").display());
    let cli = Cli::try_parse_from(["kyc-server", "--database-url", &url]).unwrap();
    assert!(cli.config.simulator_on());

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_url = PublicUrl::for_address(listener.local_addr().unwrap());
    let composition = Composition::build(&cli.config, &public_url, true)
        .await
        .unwrap();
    let app = composition.router(&cli.config, &public_url);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let provider = composition.service.ports().provider.clone();
    let external_user_id =
        ExternalUserId::for_attempt(CustomerId::from_uuid(Uuid::now_v7()), AttemptNumber::FIRST);
    let request = ApplicantRequest {
        external_user_id: external_user_id.clone(),
        level_name: "basic-kyc-level".into(),
        email: Email::new("jane@example.com").unwrap(),
        phone: None,
        full_name: FullName::new("Jane Doe").unwrap(),
        customer_type: CustomerType::Individual,
    };
    let created = provider.create_applicant(&request).await.unwrap();
    // Signed requests through the mount prefix are accepted, and a repeat finds the same one.
    let again = provider.create_applicant(&request).await.unwrap();
    assert_eq!(created.id, again.id);
    let found = provider
        .find_applicant(&external_user_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, created.id);

    let link = provider
        .verification_link(&external_user_id, "basic-kyc-level", 600)
        .await
        .unwrap();
    assert!(
        link.starts_with(&public_url.join("/sim/sumsub/")),
        "the hosted flow is on this server: {link}"
    );

    let metrics = get(&public_url, "/metrics").await;
    assert!(
        metrics.contains(r#"provider_calls_total{operation="create_applicant",outcome="ok"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"provider_calls_total{operation="verification_link",outcome="ok"} 1"#)
    );

    server.abort();
    composition.backend.close().await;
}

/// The body of `GET path` on the server, over plain HTTP/1.1.
async fn get(public_url: &PublicUrl, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = public_url.as_str().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}
