//! The back office in a real browser: the real `kyc-server` binary (SQLite, the built-in Sumsub
//! simulator), driven through headless Chromium as a person would use it. Each test saves a
//! screenshot of the pages it passes through under `target/screenshots/`.

use std::time::Duration;

use kyc_e2e::browser::Browser;
use kyc_e2e::{Backend, Server};
use serde_json::{Value, json};

const OFFICER_EMAIL: &str = "officer@firm.example";
const STAFF_EMAIL: &str = "staff@firm.example";
const ADMIN_EMAIL: &str = "admin@firm.example";
const PASSWORD: &str = "a long enough password";

/// A firm with 10 credits, a compliance officer, a staff user and an admin, and a CRM key.
struct Firm {
    key: String,
}

fn seed(server: &Server) -> Firm {
    let firm = server.create_firm("Browser Test Firm");
    server.create_user(&firm, OFFICER_EMAIL, "compliance_officer", PASSWORD);
    server.create_user(&firm, STAFF_EMAIL, "staff", PASSWORD);
    server.create_user(&firm, ADMIN_EMAIL, "admin", PASSWORD);
    server.grant_credits(&firm, 10, "INV-1");
    let key = server.create_api_key(&firm, "customers:read,customers:write,aml:read");
    Firm { key }
}

/// The CRM pushes a customer in; returns its id.
async fn crm_upsert(server: &Server, firm: &Firm, external_id: &str, name: &str) -> String {
    let response = server
        .client()
        .post(server.url("/api/v1/customers"))
        .bearer_auth(&firm.key)
        .json(&json!({
            "externalId": external_id,
            "fullName": name,
            "email": format!("{external_id}@customers.example"),
        }))
        .send()
        .await
        .expect("the CRM upsert is answered");
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("JSON");
    body["id"].as_str().expect("an id").to_owned()
}

async fn crm_read(server: &Server, firm: &Firm, id: &str) -> Value {
    server
        .client()
        .get(server.url(&format!("/api/v1/customers/{id}")))
        .bearer_auth(&firm.key)
        .send()
        .await
        .expect("the CRM read is answered")
        .json()
        .await
        .expect("JSON")
}

async fn log_in(browser: &Browser, server: &Server, email: &str) {
    browser.goto(&server.url("/app/login")).await;
    browser.fill("#email", email).await;
    browser.fill("#password", PASSWORD).await;
    browser.click("#login").await;
    browser.find("#logout").await;
}

/// Opens the customer from the list, answers the risk questions (designated service, no cash,
/// new customer) and confirms them.
async fn confirm_risk(browser: &Browser, server: &Server, name: &str) {
    browser.goto(&server.url("/app/customers")).await;
    let link = browser
        .client
        .find(fantoccini::Locator::LinkText(name))
        .await
        .expect("the customer is in the list");
    link.click().await.expect("the customer opens");
    browser.find("#risk-form").await;
    browser.click("#is_designated_service-yes").await;
    browser.click("#handles_cash_or_crypto-no").await;
    browser.click("#is_new_customer-yes").await;
    browser.click("#confirm-risk").await;
    assert_eq!(browser.text("#risk-rating").await, "MEDIUM");
}

/// Start Verification through its confirmation step; returns the verification link shown.
async fn start_verification(browser: &Browser) -> String {
    assert!(browser.text("#quote").await.contains("costs 1 credit"));
    browser.click("#start-verification").await;
    browser.wait_for_text("This cannot be undone").await;
    assert!(browser.text("#confirm-cost").await.contains("1 credit"));
    browser.click("#confirm-start").await;
    assert_eq!(browser.text("#kyc-status").await, "PENDING");
    browser.value("#verification-link").await
}

/// The customer opens the link in the same browser and presses `button` on the simulator's
/// hosted page.
async fn customer_completes(browser: &Browser, link: &str, button: &str, screenshot: &str) {
    browser.goto(link).await;
    assert!(browser.url().await.contains("/sim/sumsub/"));
    browser.find(&format!("button[value=\"{button}\"]")).await;
    if !screenshot.is_empty() {
        browser.screenshot(screenshot).await;
    }
    browser.click(&format!("button[value=\"{button}\"]")).await;
    browser.wait_for_text("Submitted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_walks_a_customer_from_crm_upsert_to_verified_and_clear_in_the_browser() {
    let Some(server) = Server::start(Backend::Sqlite, &[]).await else {
        return;
    };
    let Some(browser) = Browser::start().await else {
        return;
    };
    let firm = seed(&server);
    let id = crm_upsert(&server, &firm, "crm-jane", "Jane Citizen").await;

    // Pages behind the login send a person to the login page.
    browser.goto(&server.url("/app/customers")).await;
    assert!(browser.url().await.contains("/app/login"));
    browser.screenshot("login").await;
    browser.fill("#email", OFFICER_EMAIL).await;
    browser.fill("#password", "not the password").await;
    browser.click("#login").await;
    assert!(
        browser
            .text("#error")
            .await
            .contains("email or password is incorrect")
    );
    log_in(&browser, &server, OFFICER_EMAIL).await;
    assert!(browser.url().await.ends_with("/app/customers"));
    browser.wait_for_text("Jane Citizen").await;
    browser.screenshot("customers").await;

    confirm_risk(&browser, &server, "Jane Citizen").await;
    browser.screenshot("customer-risk-confirmed").await;

    // Two submissions of the confirmation form with the same minted key, at once (a double
    // click that got past the button's guard), then the real click: one charge.
    browser.click("#start-verification").await;
    browser.screenshot("confirm-start").await;
    browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             const form = document.querySelector('form[data-once]');\
             const send = () => fetch(form.action, {method: 'POST', body: new URLSearchParams(new FormData(form)), redirect: 'manual'});\
             Promise.all([send(), send()]).then(() => done(true), () => done(false));",
            vec![],
        )
        .await
        .expect("the double submission runs");
    browser.click("#confirm-start").await;
    assert_eq!(browser.text("#kyc-status").await, "PENDING");
    let link = browser.value("#verification-link").await;
    assert!(link.starts_with(&server.url("/v/")), "{link}");
    assert!(browser.has("#copy-link").await);
    browser.screenshot("customer-pending").await;
    browser.phone_screenshot("customer-pending-phone").await;

    customer_completes(&browser, &link, "approve", "simulator").await;

    browser
        .goto(&server.url(&format!("/app/customers/{id}")))
        .await;
    browser.reload_until_text("#kyc-status", "VERIFIED").await;
    browser.reload_until_text("#aml-status", "CLEAR").await;
    assert_eq!(
        browser.text("#crm-label").await,
        "Cleared. Safe to onboard."
    );
    let history = browser.text("#history").await;
    assert!(
        history.contains("KYC status NOT_STARTED → PENDING"),
        "{history}"
    );
    assert!(history.contains(OFFICER_EMAIL), "{history}");
    browser.screenshot("customer-verified-clear").await;

    let crm = crm_read(&server, &firm, &id).await;
    assert_eq!(crm["kyc_status"], "VERIFIED");
    assert_eq!(crm["aml"]["status"], "CLEAR");

    // One charge for the one attempt, however many submissions.
    browser.click("nav a[href=\"/app/credits\"]").await;
    assert_eq!(browser.text("#available-credits").await, "9");
    let statement = browser.page_text().await;
    assert_eq!(statement.matches("Charge").count(), 1, "{statement}");
    browser.screenshot("credits").await;

    browser.goto(&server.url("/app/audit")).await;
    browser.screenshot("audit").await;

    // Logout ends the session on the server, not only in this browser.
    browser.goto(&server.url("/app/customers")).await;
    let session = browser
        .cookie("kyc_session")
        .await
        .expect("a session cookie");
    browser.click("#logout").await;
    browser.wait_for_text("You have logged out.").await;
    let after = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(server.url("/app/customers"))
        .header("Cookie", format!("kyc_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 303);
    assert!(
        after.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/app/login")
    );
    browser.goto(&server.url("/app/customers")).await;
    assert!(browser.url().await.contains("/app/login"));

    browser.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aml_case_goes_from_hits_to_resolved_and_staff_can_neither_see_nor_forge_the_decision() {
    let Some(server) = Server::start(Backend::Sqlite, &[]).await else {
        return;
    };
    let Some(officer) = Browser::start().await else {
        return;
    };
    let firm = seed(&server);
    // A sandbox name the simulator screens as an exact PEP match: approving it ends RED + FINAL
    // with AML labels only, so identity is verified and the hits go to review.
    let id = crm_upsert(&server, &firm, "crm-pep", "Joelamltest Testpep").await;
    log_in(&officer, &server, OFFICER_EMAIL).await;
    confirm_risk(&officer, &server, "Joelamltest Testpep").await;
    let link = start_verification(&officer).await;
    customer_completes(&officer, &link, "approve", "").await;
    officer
        .goto(&server.url(&format!("/app/customers/{id}")))
        .await;
    officer.reload_until_text("#kyc-status", "VERIFIED").await;
    officer
        .reload_until_text("#aml-status", "NEEDS_REVIEW")
        .await;
    // Screening runs after VERIFIED and may add hits of its own: review once it has finished.
    officer
        .reload_until_contains("#history", "AML screening finished")
        .await;
    assert!(officer.has(".disposition-form").await);
    assert!(!officer.has("#decision-form").await);
    officer.screenshot("aml-review").await;

    // A staff user sees the case but no review or decision form, and the server refuses the
    // decision when it is posted anyway, with a valid session and CSRF token.
    let Some(staff) = Browser::start().await else {
        return;
    };
    log_in(&staff, &server, STAFF_EMAIL).await;
    staff
        .goto(&server.url(&format!("/app/customers/{id}")))
        .await;
    assert_eq!(staff.text("#aml-status").await, "NEEDS_REVIEW");
    assert!(!staff.has(".disposition-form").await);
    assert!(!staff.has("#decision-form").await);
    assert!(!staff.has("#restart-form").await);
    staff.screenshot("aml-review-as-staff").await;
    let forged: Value = staff
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             const csrf = document.querySelector('input[name=csrf_token]').value;\
             const body = new URLSearchParams({csrf_token: csrf, decision: 'PROCEED', rationale: 'forged'});\
             fetch(arguments[0], {method: 'POST', body}).then(r => r.text().then(t => done([r.status, t])));",
            vec![json!(format!("/app/customers/{id}/decision"))],
        )
        .await
        .expect("the forged post runs");
    assert_eq!(forged[0], 403, "{forged}");
    assert!(forged[1].as_str().unwrap().contains("compliance_officer"));
    let without_token: Value = staff
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             fetch(arguments[0], {method: 'POST', body: new URLSearchParams({reason: 'x'})}).then(r => done(r.status));",
            vec![json!(format!("/app/customers/{id}/risk"))],
        )
        .await
        .expect("the post without a token runs");
    assert_eq!(without_token, 403);
    staff.close().await;

    // The officer sets a disposition on every hit, then records the decision.
    loop {
        officer
            .reload_until_text("#aml-status", "NEEDS_REVIEW")
            .await;
        let open = officer
            .client
            .find_all(fantoccini::Locator::Css(".hit .chip.warn"))
            .await
            .unwrap()
            .len();
        if open == 0 {
            break;
        }
        let forms = officer
            .client
            .find_all(fantoccini::Locator::Css(".hit"))
            .await
            .unwrap();
        // The first hit still open.
        let mut target = None;
        for (index, hit) in forms.iter().enumerate() {
            if hit.text().await.unwrap().contains("Open") {
                target = Some(index + 1);
                break;
            }
        }
        let index = target.expect("an open hit");
        officer
            .select(&format!("#disposition-{index}"), "FALSE_POSITIVE")
            .await;
        officer
            .fill(
                &format!("#note-{index}"),
                "Different date of birth and country.",
            )
            .await;
        officer
            .click(&format!(".hit:nth-child({index}) .set-disposition"))
            .await;
        officer.wait_for_text("Disposition saved.").await;
    }
    officer.find("#decision-form").await;
    officer.click("#decision-proceed").await;
    officer
        .fill("#rationale", "Every hit is a false positive.")
        .await;
    officer.click("#record-decision").await;
    assert_eq!(officer.text("#aml-status").await, "RESOLVED");
    assert!(officer.text("#decision").await.contains("PROCEED"));
    officer.screenshot("aml-resolved").await;
    let crm = crm_read(&server, &firm, &id).await;
    assert_eq!(crm["aml"]["status"], "RESOLVED");
    assert_eq!(crm["crm"]["onboarding"], "FIRM_DECISION");

    officer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adds_a_user_and_issues_and_revokes_an_api_key_shown_once() {
    let Some(server) = Server::start(Backend::Sqlite, &[]).await else {
        return;
    };
    let Some(browser) = Browser::start().await else {
        return;
    };
    seed(&server);
    log_in(&browser, &server, ADMIN_EMAIL).await;
    browser.click("nav a[href=\"/app/admin/users\"]").await;
    browser.fill("#new-email", "new.staff@firm.example").await;
    browser.select("#new-role", "staff").await;
    browser.fill("#new-password", PASSWORD).await;
    browser.click("#create-user").await;
    browser.wait_for_text("User added.").await;
    browser.wait_for_text("new.staff@firm.example").await;
    // Emails are unique: a second user with the same one is refused with the reason.
    browser.fill("#new-email", "new.staff@firm.example").await;
    browser.fill("#new-password", PASSWORD).await;
    browser.click("#create-user").await;
    assert!(browser.text("#error").await.contains("already"));
    browser.screenshot("admin-users").await;

    browser.click("nav a[href=\"/app/admin/api-keys\"]").await;
    browser.fill("#key-label", "HubSpot sync").await;
    browser
        .click("input[name=scopes][value=\"customers:read\"]")
        .await;
    browser.click("#create-key").await;
    let key = browser.value("#new-key").await;
    assert!(key.starts_with("kyc_live_"), "{key}");
    browser.screenshot("admin-api-key-issued").await;

    // The key works for the CRM, is never shown again, and stops working once revoked.
    let read = |key: String| {
        let client = server.client();
        let url = server.url("/api/v1/customers");
        async move {
            client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(read(key.clone()).await, 200);
    browser.goto(&server.url("/app/admin/api-keys")).await;
    assert!(!browser.page_text().await.contains(&key));
    browser
        .client
        .execute("window.confirm = () => true;", vec![])
        .await
        .unwrap();
    browser.click("form[data-confirm] button").await;
    browser.wait_for_text("API key revoked.").await;
    browser.screenshot("admin-api-keys").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while read(key.clone()).await != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked key still works"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // An admin does the firm's administration, not its compliance work.
    browser.goto(&server.url("/app/audit")).await;
    assert!(
        browser
            .page_text()
            .await
            .contains("Not allowed for your role")
    );

    browser.close().await;
    server.stop().await;
}
