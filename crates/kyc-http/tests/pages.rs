//! The back-office pages under `/app`, driven in-process through the router: login and its
//! protections, security headers, CSRF on every form, roles, one charge per confirmation form,
//! and errors shown as pages.

mod support;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use kyc_domain::ports::CreditsLedger;
use kyc_domain::prelude::*;
use support::{App, Reply, app};

const PASSWORD: &str = "correct horse battery";

/// A browser's session on the pages: its cookie and the CSRF token its pages carry.
struct PageSession {
    cookie: String,
    csrf: String,
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no hidden {name} in {html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

fn set_cookie_value(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

async fn form(app: &App, uri: &str, cookie: &str, body: &str) -> Reply {
    app.raw(
        Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", cookie)
            .body(Body::from(body.to_owned()))
            .unwrap(),
    )
    .await
}

async fn page(app: &App, uri: &str, cookie: &str) -> Reply {
    app.raw(
        Request::builder()
            .uri(uri)
            .header("cookie", cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

/// Logs in through the login page, as a browser does, with `extra_cookie` already set.
async fn page_login_with(app: &App, email: &str, extra_cookie: &str) -> Reply {
    let login = page(app, "/app/login", "").await;
    assert_eq!(login.status, StatusCode::OK);
    let token = hidden(&login.text, "login_token");
    let login_cookie = set_cookie_value(&login, "kyc_login").unwrap();
    let body = format!(
        "login_token={token}&email={}&password={}",
        email.replace('@', "%40"),
        PASSWORD.replace(' ', "+")
    );
    form(
        app,
        "/app/login",
        &format!("{login_cookie}; {extra_cookie}"),
        &body,
    )
    .await
}

async fn page_login(app: &App, email: &str) -> PageSession {
    let reply = page_login_with(app, email, "").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text);
    let cookie = set_cookie_value(&reply, "kyc_session").unwrap();
    let list = page(app, "/app/customers", &cookie).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    PageSession {
        csrf: hidden(&list.text, "csrf_token"),
        cookie,
    }
}

async fn officer(app: &App) -> PageSession {
    app.add_user(
        app.firm,
        "officer@acme.example",
        Role::ComplianceOfficer,
        PASSWORD,
    )
    .await;
    page_login(app, "officer@acme.example").await
}

#[tokio::test]
async fn every_page_sends_a_strict_content_security_policy_and_refuses_framing() {
    let app = app().await;
    let session = officer(&app).await;
    for reply in [
        page(&app, "/app/login", "").await,
        page(&app, "/app/customers", &session.cookie).await,
        page(&app, "/app/no-such-page", &session.cookie).await,
        page(&app, "/app/assets/app.css", "").await,
    ] {
        let csp = reply.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(reply.header("x-frame-options"), Some("DENY"));
        assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    }
    let list = page(&app, "/app/customers", &session.cookie).await;
    assert_eq!(list.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn pages_behind_the_login_send_a_person_to_the_login_page() {
    let app = app().await;
    for uri in ["/app/customers", "/app/credits", "/app/admin/users"] {
        let reply = page(&app, uri, "").await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{uri}");
        assert!(reply.header("location").unwrap().starts_with("/app/login"));
    }
    let reply = form(&app, "/app/logout", "kyc_session=forged", "csrf_token=x").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_login_posted_without_the_token_of_its_form_is_refused() {
    let app = app().await;
    app.add_user(
        app.firm,
        "officer@acme.example",
        Role::ComplianceOfficer,
        PASSWORD,
    )
    .await;
    let reply = form(
        &app,
        "/app/login",
        "",
        "login_token=guess&email=officer%40acme.example&password=correct+horse+battery",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.text.contains("login form had expired"));
    assert!(set_cookie_value(&reply, "kyc_session").is_none());
}

#[tokio::test]
async fn a_wrong_password_is_a_message_on_the_login_page() {
    let app = app().await;
    app.add_user(
        app.firm,
        "officer@acme.example",
        Role::ComplianceOfficer,
        PASSWORD,
    )
    .await;
    let login = page(&app, "/app/login", "").await;
    let token = hidden(&login.text, "login_token");
    let cookie = set_cookie_value(&login, "kyc_login").unwrap();
    let reply = form(
        &app,
        "/app/login",
        &cookie,
        &format!("login_token={token}&email=officer%40acme.example&password=wrong"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(reply.text.contains("The email or password is incorrect."));
    assert!(!reply.text.contains("{\"error\""));
}

#[tokio::test]
async fn logging_in_replaces_a_session_id_the_browser_already_had() {
    let app = app().await;
    app.add_user(
        app.firm,
        "officer@acme.example",
        Role::ComplianceOfficer,
        PASSWORD,
    )
    .await;
    let planted = page_login(&app, "officer@acme.example").await;
    let reply = page_login_with(&app, "officer@acme.example", &planted.cookie).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let fresh = set_cookie_value(&reply, "kyc_session").unwrap();
    assert_ne!(fresh, planted.cookie);
    let cookie = reply
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("kyc_session="))
        .unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    // The session the browser held before is over.
    let old = page(&app, "/app/customers", &planted.cookie).await;
    assert_eq!(old.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page(&app, "/app/customers", &fresh).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_form_without_the_session_csrf_token_is_refused_with_a_page_and_changes_nothing() {
    let app = app().await;
    let session = officer(&app).await;
    let id = app.create("crm-1", "jane@example.com").await;
    let answers = "is_designated_service=yes&handles_cash_or_crypto=no&is_new_customer=yes";
    for token in ["", "csrf_token=not-the-token&"] {
        let reply = form(
            &app,
            &format!("/app/customers/{id}/risk"),
            &session.cookie,
            &format!("{token}{answers}"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert!(
            reply
                .header("content-type")
                .unwrap()
                .starts_with("text/html")
        );
        assert!(reply.text.contains("This form has expired"));
    }
    let customer = app
        .service
        .find_customer(
            app.firm,
            &kyc_domain::usecases::CustomerRef::parse(&id).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(customer.risk.confirmed.is_none());
    let reply = form(
        &app,
        &format!("/app/customers/{id}/risk"),
        &session.cookie,
        &format!("csrf_token={}&{answers}", session.csrf),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text);
}

#[tokio::test]
async fn one_confirmation_form_charges_once_however_often_it_is_posted() {
    let app = app().await;
    let session = officer(&app).await;
    let id = app.create("crm-1", "jane@example.com").await;
    app.ledger
        .grant(
            app.firm,
            Credits::new(5),
            "top-up",
            &kyc_domain::ports::IdempotencyKey::new("grant-1").unwrap(),
        )
        .await
        .unwrap();
    let risk = form(
        &app,
        &format!("/app/customers/{id}/risk"),
        &session.cookie,
        &format!(
            "csrf_token={}&is_designated_service=yes&handles_cash_or_crypto=no&is_new_customer=yes",
            session.csrf
        ),
    )
    .await;
    assert_eq!(risk.status, StatusCode::SEE_OTHER, "{}", risk.text);
    let confirm = page(&app, &format!("/app/customers/{id}/start"), &session.cookie).await;
    assert!(confirm.text.contains("cannot be undone"));
    let key = hidden(&confirm.text, "idempotency_key");
    let body = format!(
        "csrf_token={}&idempotency_key={key}&confirm_cost_credits=1",
        session.csrf
    );
    let uri = format!("/app/customers/{id}/verification");
    let (first, second) = tokio::join!(
        form(&app, &uri, &session.cookie, &body),
        form(&app, &uri, &session.cookie, &body)
    );
    let third = form(&app, &uri, &session.cookie, &body).await;
    let landed: Vec<_> = [&first, &second, &third].iter().map(|r| r.status).collect();
    assert!(
        landed
            .iter()
            .all(|s| *s == StatusCode::SEE_OTHER || *s == StatusCode::CONFLICT),
        "{landed:?}"
    );
    assert_eq!(third.status, StatusCode::SEE_OTHER, "{}", third.text);
    assert!(third.header("location").unwrap().contains("notice=started"));
    let balance = app.ledger.balance(app.firm).await.unwrap();
    assert_eq!(balance.available, Credits::new(4));
    assert_eq!(balance.spent, Credits::new(1));
    let detail = page(&app, &format!("/app/customers/{id}"), &session.cookie).await;
    assert!(detail.text.contains("PENDING"));
    assert!(detail.text.contains("id=\"verification-link\""));
}

#[tokio::test]
async fn staff_see_no_review_forms_and_their_posted_decision_is_refused() {
    let app = app().await;
    app.add_user(app.firm, "staff@acme.example", Role::Staff, PASSWORD)
        .await;
    let session = page_login(&app, "staff@acme.example").await;
    let id = app.create("crm-1", "jane@example.com").await;
    let hit = AmlHit {
        key: HitKey::new("pep-1"),
        name: Some("Jane Doe".into()),
        categories: std::collections::BTreeSet::from([AmlCategory::Pep]),
        match_status: "potential_match".into(),
        source: HitSource::Screening,
        found_at: kyc_domain::testkit::strategies::EPOCH,
        disposition: None,
    };
    app.verify(&id, vec![hit]).await;
    let detail = page(&app, &format!("/app/customers/{id}"), &session.cookie).await;
    assert!(detail.text.contains("NEEDS_REVIEW"), "{}", detail.text);
    assert!(!detail.text.contains("disposition-form"));
    assert!(!detail.text.contains("id=\"decision-form\""));
    let reply = form(
        &app,
        &format!("/app/customers/{id}/decision"),
        &session.cookie,
        &format!(
            "csrf_token={}&decision=PROCEED&rationale=forged",
            session.csrf
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.text.contains("compliance_officer"));
    let after = page(&app, &format!("/app/customers/{id}"), &session.cookie).await;
    assert!(after.text.contains("NEEDS_REVIEW"));
}

#[tokio::test]
async fn a_customer_of_another_firm_is_a_not_found_page() {
    let app = app().await;
    let session = officer(&app).await;
    let other = FirmId::from_uuid(uuid::Uuid::new_v4());
    app.add_firm(other).await;
    let key = app.add_key(other, support::ALL_SCOPES).await;
    let reply = app
        .call(
            Method::POST,
            "/api/v1/customers",
            Some(&key),
            Some(&serde_json::json!({"externalId": "x", "fullName": "Other Firm's", "email": "o@example.com"})),
            &[],
        )
        .await;
    let foreign = reply.json["id"].as_str().unwrap().to_owned();
    let page = page(&app, &format!("/app/customers/{foreign}"), &session.cookie).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(!page.text.contains("Other Firm"));
}

#[tokio::test]
async fn a_search_is_posted_so_the_name_or_email_never_appears_in_a_url() {
    let app = app().await;
    let session = officer(&app).await;
    app.create("crm-1", "jane@example.com").await;
    app.create("crm-2", "john@example.com").await;
    let list = page(&app, "/app/customers", &session.cookie).await;
    assert!(
        list.text
            .contains("method=\"post\" action=\"/app/customers/search\"")
    );
    let reply = form(
        &app,
        "/app/customers/search",
        &session.cookie,
        &format!("csrf_token={}&q=john%40", session.csrf),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.text.contains("john@example.com"));
    assert!(!reply.text.contains("jane@example.com"));
}

#[tokio::test]
async fn logging_out_ends_the_session() {
    let app = app().await;
    let session = officer(&app).await;
    let reply = form(
        &app,
        "/app/logout",
        &session.cookie,
        &format!("csrf_token={}", session.csrf),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert!(reply.header("location").unwrap().contains("logged_out"));
    let after = page(&app, "/app/customers", &session.cookie).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_back_office_address_leads_to_the_customer_list() {
    let app = app().await;
    let session = officer(&app).await;
    for uri in ["/app", "/app/"] {
        let reply = page(&app, uri, &session.cookie).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{uri}");
        assert_eq!(reply.header("location"), Some("/app/customers"), "{uri}");
    }
}

#[tokio::test]
async fn the_stylesheet_and_script_are_served_from_the_binary() {
    let app = app().await;
    let css = page(&app, "/app/assets/app.css", "").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    assert!(css.text.contains(":focus-visible"));
    let js = page(&app, "/app/assets/app.js", "").await;
    assert!(
        js.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
}

#[tokio::test]
async fn a_disabled_user_is_logged_out_at_once_and_cannot_log_in_again() {
    let app = app().await;
    let id = app
        .add_user(app.firm, "staff@acme.example", Role::Staff, PASSWORD)
        .await;
    let session = page_login(&app, "staff@acme.example").await;
    use kyc_domain::ports::UserStore;
    assert!(
        app.store
            .set_user_disabled(app.firm, id, Some(kyc_domain::testkit::strategies::EPOCH))
            .await
            .unwrap()
    );
    let after = page(&app, "/app/customers", &session.cookie).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    let again = page_login_with(&app, "staff@acme.example", "").await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert!(again.text.contains("The email or password is incorrect."));
}

#[tokio::test]
async fn a_cursor_that_is_not_ours_shows_the_first_page_and_says_why() {
    let app = app().await;
    let session = officer(&app).await;
    app.create("crm-1", "jane@example.com").await;
    let reply = page(
        &app,
        "/app/customers?status=NOT_STARTED&cursor=not-a-cursor",
        &session.cookie,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reply.text.contains("Showing the first page."),
        "{}",
        reply.text
    );
    assert!(reply.text.contains("jane@example.com"));
    assert!(
        reply
            .text
            .contains("<option value=\"NOT_STARTED\" selected>")
    );
}

async fn admin(app: &App) -> PageSession {
    app.add_user(app.firm, "admin@acme.example", Role::Admin, PASSWORD)
        .await;
    page_login(app, "admin@acme.example").await
}

#[tokio::test]
async fn an_admin_adds_a_webhook_endpoint_sees_its_log_and_sends_an_event_again() {
    use kyc_domain::ports::{DeliveryOutcome, DeliveryQueue, WebhookDelivery};
    let app = app().await;
    let session = admin(&app).await;
    let empty = page(&app, "/app/admin/webhooks", &session.cookie).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.text.contains("No endpoints yet"), "{}", empty.text);

    let refused = form(
        &app,
        "/app/admin/webhooks",
        &session.cookie,
        &format!(
            "csrf_token={}&url=ftp%3A%2F%2Fcrm.example.com",
            session.csrf
        ),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text.contains("https://"), "{}", refused.text);

    let created = form(
        &app,
        "/app/admin/webhooks",
        &session.cookie,
        &format!(
            "csrf_token={}&url=https%3A%2F%2Fcrm.example.com%2Fhooks&description=HubSpot&events=customer.created",
            session.csrf
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let secret = hidden_input(&created.text, "new-secret");
    assert!(secret.starts_with("whsec_"), "{secret}");
    let listed = page(&app, "/app/admin/webhooks", &session.cookie).await;
    assert!(listed.text.contains("https://crm.example.com/hooks"));
    assert!(!listed.text.contains(&secret), "the secret is shown once");

    // One attempt that failed, as the delivery worker records it.
    app.create("crm-1", "jane@example.com").await;
    let now = kyc_domain::testkit::strategies::EPOCH;
    let leased = app
        .store
        .claim_deliveries(now, now + time::Duration::minutes(1), 10, 10)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    let message = &leased[0];
    let attempt = WebhookDelivery {
        endpoint_id: message.endpoint.id,
        firm_id: app.firm,
        message_id: message.event.id.to_string(),
        event_type: "customer.created".to_owned(),
        attempt: 1,
        attempted_at: now,
        response_status: Some(500),
        error: None,
        duration_ms: 12,
    };
    app.store
        .finish_delivery(message.id, &attempt, DeliveryOutcome::GaveUp)
        .await
        .unwrap();
    let endpoint_uri = format!("/app/admin/webhooks/{}", message.endpoint.id);
    let detail = page(&app, &endpoint_uri, &session.cookie).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(detail.text.contains("HTTP 500"), "{}", detail.text);
    assert!(detail.text.contains(&message.event.id.to_string()));

    let replayed = form(
        &app,
        &format!("{endpoint_uri}/replay"),
        &session.cookie,
        &format!("csrf_token={}&event_id={}", session.csrf, message.event.id),
    )
    .await;
    assert_eq!(replayed.status, StatusCode::SEE_OTHER, "{}", replayed.text);
    let again = app
        .store
        .claim_deliveries(now, now + time::Duration::minutes(1), 10, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].event.id, message.event.id,
        "the same event, the same webhook-id"
    );

    let paused = form(
        &app,
        &format!("{endpoint_uri}/disable"),
        &session.cookie,
        &format!("csrf_token={}", session.csrf),
    )
    .await;
    assert_eq!(paused.status, StatusCode::SEE_OTHER);
    let detail = page(&app, &endpoint_uri, &session.cookie).await;
    assert!(detail.text.contains("Disabled"), "{}", detail.text);
}

#[tokio::test]
async fn only_admins_reach_the_webhook_pages() {
    let app = app().await;
    let session = officer(&app).await;
    let reply = page(&app, "/app/admin/webhooks", &session.cookie).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let posted = form(
        &app,
        "/app/admin/webhooks",
        &session.cookie,
        &format!(
            "csrf_token={}&url=https%3A%2F%2Fcrm.example.com",
            session.csrf
        ),
    )
    .await;
    assert_eq!(posted.status, StatusCode::FORBIDDEN);
}

/// The value of the input with this id.
fn hidden_input(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\" type=\"text\" readonly value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no input {id} in {html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}
