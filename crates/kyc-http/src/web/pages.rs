//! The pages of the back office's daily work: login and logout, the customer list, a customer
//! with its risk questions, Start Verification behind a confirmation, AML review and restart, the
//! credits statement and the audit trail. Each form handler calls one use case for the session's
//! firm and person; success redirects (303) to the page with a notice, a refusal shows the same
//! page again with the reason.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use kyc_domain::aml::HitKey;
use kyc_domain::customer::{AttemptPhase, Customer};
use kyc_domain::lifecycle::{AmlTrigger, PersonTrigger, aml_move, person_move};
use kyc_domain::ports::CustomerFilter;
use kyc_domain::risk::RiskAnswers;
use kyc_domain::status::{AmlStatus, KycStatus};
use kyc_domain::values::Credits;
use rand::RngCore;
use subtle::ConstantTimeEq;

use super::forms::Fields;
use super::views::{self, Chip, HitView, StatementLine, TimelineEntry};
use super::{Layout, render, see_other};
use crate::AppState;
use crate::backoffice::dto::{
    CreateCustomerRequest, DecisionRequest, DispositionRequest, RestartRequest,
};
use crate::backoffice::routes::{ListParams, credits_page, current_link, find, find_page};
use crate::backoffice::session::{
    RoleNeed, Staff, authenticate, cleared_cookie, cookie_value, session_cookie, sign_in,
    strict_cookie,
};
use crate::error::ApiError;

/// Customers per list page.
const PAGE_SIZE: u32 = 50;
/// The cookie that binds the login form to the browser that loaded it.
const LOGIN_COOKIE: &str = "kyc_login";

fn notice(query: &[(String, String)]) -> Option<&str> {
    query
        .iter()
        .find(|(name, _)| name == "notice")
        .map(|(_, value)| value.as_str())
}

// ----- login and logout -----

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    login_token: String,
    email: String,
}

fn random_token() -> String {
    let mut bytes = [0_u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn login_cookie(state: &AppState, value: &str, max_age_secs: u64) -> HeaderValue {
    strict_cookie(
        &state.config,
        LOGIN_COOKIE,
        value,
        "/app/login",
        max_age_secs,
    )
}

/// The login form, bound to this browser by a token in a `SameSite=Strict` cookie and in the
/// form, so that no other site can log a person in to an account of its choosing.
fn login_form(
    state: &AppState,
    status: StatusCode,
    email: String,
    notice: Option<&str>,
    error: Option<String>,
) -> Response {
    let token = random_token();
    let page = LoginPage {
        layout: Layout::for_viewer("Log in", "", None)
            .with_notice(notice)
            .with_error(error),
        login_token: token.clone(),
        email,
    };
    let mut response = render(status, &page);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, login_cookie(state, &token, 3600));
    response
}

/// `GET /app/login`: the form, or the customer list for someone already logged in.
pub(crate) async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if authenticate(&state, &headers).await.is_ok() {
        return see_other("/app/customers");
    }
    login_form(&state, StatusCode::OK, String::new(), notice(&query), None)
}

/// `POST /app/login`: checks the form's token, then the email and password, and starts a new
/// session (any session the browser held before ends).
pub(crate) async fn login(State(state): State<AppState>, request: Request) -> Response {
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let headers = request.headers().clone();
    let Ok(fields) = Fields::from_request(request, &state).await else {
        return login_form(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            String::new(),
            None,
            Some("The form could not be read. Try again.".to_owned()),
        );
    };
    let email = fields.text("email");
    let sent = fields.get("login_token").unwrap_or_default();
    let expected = cookie_value(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
        return login_form(
            &state,
            StatusCode::FORBIDDEN,
            email,
            None,
            Some("The login form had expired. Please log in again.".to_owned()),
        );
    }
    let password = fields.get("password").unwrap_or_default().to_owned();
    if email.is_empty() || password.is_empty() {
        return login_form(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            email,
            None,
            Some("Enter your email and your password.".to_owned()),
        );
    }
    let previous = session_cookie(&headers);
    match sign_in(&state, &email, password, address, previous.as_deref()).await {
        Ok(signed_in) => {
            let mut response = see_other("/app/customers");
            let headers = response.headers_mut();
            headers.append(header::SET_COOKIE, signed_in.cookie);
            headers.append(header::SET_COOKIE, login_cookie(&state, "", 0));
            response
        }
        Err(ApiError::BadCredentials) => login_form(
            &state,
            StatusCode::UNAUTHORIZED,
            email,
            None,
            Some("The email or password is incorrect.".to_owned()),
        ),
        Err(ApiError::RateLimited {
            retry_after_secs, ..
        }) => {
            let minutes = retry_after_secs.div_ceil(60);
            let mut response = login_form(
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                email,
                None,
                Some(format!(
                    "Too many failed logins. Try again in {minutes} minute{}.",
                    if minutes == 1 { "" } else { "s" }
                )),
            );
            if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Err(other) => other.into_response(),
    }
}

/// `POST /app/logout`: the session ends at once, everywhere it was used.
pub(crate) async fn logout(State(state): State<AppState>, staff: Staff) -> Response {
    let Some(ports) = state.back_office.as_ref() else {
        return ApiError::NotFound("No such page.").into_response();
    };
    if let Err(error) = ports.sessions.delete_session(&staff.token_hash).await {
        return ApiError::from(error).into_response();
    }
    let mut response = see_other("/app/login?notice=logged_out");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cleared_cookie(&state.config));
    response
}

// ----- the customer list -----

/// A choice of a filter's select.
pub(crate) struct Choice {
    pub(crate) value: &'static str,
    pub(crate) selected: bool,
}

struct Row {
    id: String,
    name: String,
    email: String,
    external_id: Option<String>,
    kyc: Chip,
    aml: Chip,
    crm: Chip,
    updated: String,
    updated_iso: String,
}

impl From<&Customer> for Row {
    fn from(customer: &Customer) -> Self {
        Self {
            id: customer.id.to_string(),
            name: customer.full_name.as_str().to_owned(),
            email: customer.email.as_str().to_owned(),
            external_id: customer.external_id.as_ref().map(|e| e.as_str().to_owned()),
            kyc: views::kyc_chip(customer.kyc_status),
            aml: views::aml_chip(customer.aml.status),
            crm: views::crm_chip(&customer.crm()),
            updated: views::when(customer.updated_at),
            updated_iso: crate::crm::dto::timestamp(customer.updated_at),
        }
    }
}

#[derive(Template)]
#[template(path = "customers.html")]
struct ListPage {
    layout: Layout,
    can_create: bool,
    search: String,
    status: String,
    aml_status: String,
    filtered: bool,
    kyc_options: Vec<Choice>,
    aml_options: Vec<Choice>,
    rows: Vec<Row>,
    next_cursor: Option<String>,
    filter_query: String,
}

const KYC_STATUSES: [KycStatus; 7] = [
    KycStatus::NotStarted,
    KycStatus::Pending,
    KycStatus::InProgress,
    KycStatus::Verified,
    KycStatus::Failed,
    KycStatus::AwaitingResubmission,
    KycStatus::NotRequired,
];

const AML_STATUSES: [AmlStatus; 5] = [
    AmlStatus::NotScreened,
    AmlStatus::InProgress,
    AmlStatus::Clear,
    AmlStatus::NeedsReview,
    AmlStatus::Resolved,
];

/// What a list page was asked for, as typed.
struct ListInput {
    status: String,
    aml_status: String,
    search: String,
    cursor: Option<String>,
}

async fn render_list(
    state: &AppState,
    staff: &Staff,
    input: ListInput,
    notice: Option<&str>,
) -> Response {
    let mut filter = CustomerFilter {
        newest_first: true,
        ..CustomerFilter::default()
    };
    let mut error = None;
    if !input.status.is_empty() {
        filter.kyc_status = KycStatus::parse(&input.status);
        if filter.kyc_status.is_none() {
            error = Some("Choose a KYC status from the list.".to_owned());
        }
    }
    if !input.aml_status.is_empty() {
        filter.aml_status = AmlStatus::parse(&input.aml_status);
        if filter.aml_status.is_none() {
            error = Some("Choose an AML status from the list.".to_owned());
        }
    }
    let search = input.search.trim().to_lowercase();
    let mut filter_query = String::new();
    if let Some(status) = filter.kyc_status {
        filter_query.push_str(&format!("status={}&", status.as_str()));
    }
    if let Some(status) = filter.aml_status {
        filter_query.push_str(&format!("aml_status={}&", status.as_str()));
    }
    let filtered = filter.kyc_status.is_some() || filter.aml_status.is_some() || !search.is_empty();
    let params = |cursor: Option<String>| ListParams {
        filter: filter.clone(),
        search: Some(search.clone()).filter(|s| !s.is_empty()),
        limit: PAGE_SIZE,
        cursor,
    };
    let had_cursor = input.cursor.is_some();
    let mut status = StatusCode::OK;
    let page = match find_page(state, staff.firm_id, params(input.cursor)).await {
        // A cursor of other filters (edited by hand): the first page of these, saying why.
        Err(ApiError::Validation { message, .. }) if had_cursor => {
            status = StatusCode::UNPROCESSABLE_ENTITY;
            error = Some(format!("{message} Showing the first page."));
            find_page(state, staff.firm_id, params(None)).await
        }
        other => other,
    };
    let (rows, next_cursor) = match page {
        Ok(page) => (
            page.customers.iter().map(Row::from).collect(),
            page.next_cursor,
        ),
        Err(other) => return other.into_response(),
    };
    let page = ListPage {
        layout: Layout::for_staff("Customers", "customers", staff)
            .with_notice(notice)
            .with_error(error),
        can_create: RoleNeed::StaffOrAbove.allows(staff.person.role),
        search: input.search.trim().to_owned(),
        status: filter.kyc_status.map_or("", |s| s.as_str()).to_owned(),
        aml_status: filter.aml_status.map_or("", |s| s.as_str()).to_owned(),
        filtered,
        kyc_options: KYC_STATUSES
            .iter()
            .map(|s| Choice {
                value: s.as_str(),
                selected: filter.kyc_status == Some(*s),
            })
            .collect(),
        aml_options: AML_STATUSES
            .iter()
            .map(|s| Choice {
                value: s.as_str(),
                selected: filter.aml_status == Some(*s),
            })
            .collect(),
        rows,
        next_cursor,
        filter_query,
    };
    render(status, &page)
}

/// `GET /app/customers`: newest change first, filtered by status (`?status=`, `?aml_status=`),
/// paged by `?cursor=`.
pub(crate) async fn list(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let value = |name: &str| {
        query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let input = ListInput {
        status: value("status"),
        aml_status: value("aml_status"),
        search: String::new(),
        cursor: Some(value("cursor")).filter(|c| !c.is_empty()),
    };
    render_list(&state, &staff, input, notice(&query)).await
}

/// `POST /app/customers/search`: the same list with a search, whose text is posted rather than
/// put in the URL (it is often a name or an email).
pub(crate) async fn search(
    State(state): State<AppState>,
    staff: Staff,
    fields: Fields,
) -> Response {
    let input = ListInput {
        status: fields.text("status"),
        aml_status: fields.text("aml_status"),
        search: fields.text("q"),
        cursor: fields.optional("cursor"),
    };
    render_list(&state, &staff, input, None).await
}

// ----- adding a customer by hand -----

#[derive(Template)]
#[template(path = "new_customer.html")]
struct NewCustomerPage {
    layout: Layout,
    full_name: String,
    email: String,
    phone: String,
    external_id: String,
    customer_type: String,
}

/// `GET /app/customers/new`.
pub(crate) async fn new_customer(staff: Staff) -> Response {
    render(
        StatusCode::OK,
        &NewCustomerPage {
            layout: Layout::for_staff("Add a customer", "customers", &staff),
            full_name: String::new(),
            email: String::new(),
            phone: String::new(),
            external_id: String::new(),
            customer_type: String::new(),
        },
    )
}

/// `POST /app/customers`: a customer typed in by a person (`added_via = ADMIN_MANUAL`).
pub(crate) async fn create(
    State(state): State<AppState>,
    staff: Staff,
    fields: Fields,
) -> Response {
    let request = CreateCustomerRequest {
        external_id: fields.optional("external_id"),
        full_name: fields.text("full_name"),
        email: fields.text("email"),
        phone: fields.optional("phone"),
        customer_type: fields.optional("type"),
    };
    let result = match request.try_into_domain() {
        Ok(input) => state
            .ports
            .service
            .create_customer_manually(staff.firm_id, &staff.person, input)
            .await
            .map_err(ApiError::from),
        Err(error) => Err(error),
    };
    match result {
        Ok(customer) => see_other(&format!("/app/customers/{}?notice=created", customer.id)),
        Err(error) if error.status().is_server_error() => error.into_response(),
        Err(error) => render(
            error.status(),
            &NewCustomerPage {
                layout: Layout::for_staff("Add a customer", "customers", &staff)
                    .with_error(Some(error.to_string())),
                full_name: fields.text("full_name"),
                email: fields.text("email"),
                phone: fields.text("phone"),
                external_id: fields.text("external_id"),
                customer_type: fields.text("type"),
            },
        ),
    }
}

// ----- a customer -----

struct CustomerView {
    id: String,
    name: String,
    email: String,
    phone: String,
    external_id: String,
    customer_type: &'static str,
    created: String,
    added_via: &'static str,
    updated: String,
    identity: Option<String>,
    kyc: Chip,
    aml: Chip,
    crm: Chip,
    next_action: String,
}

struct AttemptView {
    number: u32,
    phase: &'static str,
    cost_credits: u64,
    started_by: String,
    opened: String,
    void_reason: Option<String>,
}

struct Question {
    name: &'static str,
    label: &'static str,
    hint: &'static str,
    yes: bool,
    no: bool,
}

struct StartView {
    cost_credits: u64,
    balance_credits: u64,
    enough: bool,
}

#[derive(Template)]
#[template(path = "customer.html")]
struct CustomerPage {
    layout: Layout,
    c: CustomerView,
    link: Option<String>,
    start: Option<StartView>,
    start_hint: Option<String>,
    attempts: Vec<AttemptView>,
    can_restart: bool,
    risk_confirmed: Option<String>,
    risk_proposed: Option<String>,
    risk_rating: Option<&'static str>,
    can_confirm_risk: bool,
    questions: Vec<Question>,
    aml_screened: String,
    aml_next_due: String,
    aml_flags: String,
    decision: Option<String>,
    hits: Vec<HitView>,
    can_review: bool,
    can_decide: bool,
    review_hint: Option<String>,
    timeline: Vec<TimelineEntry>,
    /// Once identity is verified, the AML review comes before the risk questions.
    aml_first: bool,
    /// The risk form is open until a person has confirmed answers.
    risk_form_open: bool,
}

fn customer_view(customer: &Customer) -> CustomerView {
    let crm = customer.crm();
    CustomerView {
        id: customer.id.to_string(),
        name: customer.full_name.as_str().to_owned(),
        email: customer.email.as_str().to_owned(),
        phone: customer
            .phone
            .as_ref()
            .map_or_else(|| "—".to_owned(), |p| p.as_str().to_owned()),
        external_id: customer
            .external_id
            .as_ref()
            .map_or_else(|| "—".to_owned(), |e| e.as_str().to_owned()),
        customer_type: match customer.customer_type.as_str() {
            "SOLE_TRADER" => "Sole trader",
            _ => "Individual",
        },
        created: views::when(customer.created_at),
        added_via: views::added_via_text(customer.added_via),
        updated: views::when(customer.updated_at),
        identity: customer
            .visible_identity()
            .map(|i| format!("{} ({})", i.verified_legal_name, i.verified_country)),
        kyc: views::kyc_chip(customer.kyc_status),
        aml: views::aml_chip(customer.aml.status),
        crm: views::crm_chip(&crm),
        next_action: crm.next_action.as_str().replace('_', " ").to_lowercase(),
    }
}

fn phase_text(phase: AttemptPhase) -> &'static str {
    match phase {
        AttemptPhase::Starting => "starting",
        AttemptPhase::Open => "open",
        AttemptPhase::Voided => "voided, not charged",
        AttemptPhase::Closed => "closed",
    }
}

fn questions(answers: Option<RiskAnswers>) -> Vec<Question> {
    let answer = |pick: fn(&RiskAnswers) -> bool| answers.as_ref().map(pick);
    let question = |name, label, hint, value: Option<bool>| Question {
        name,
        label,
        hint,
        yes: value == Some(true),
        no: value == Some(false),
    };
    vec![
        question(
            "is_designated_service",
            "Is the service you provide this customer a designated service?",
            "A designated service under the AML/CTF Act is in scope for KYC. If not, no verification is needed and nothing is charged.",
            answer(|a| a.is_designated_service),
        ),
        question(
            "handles_cash_or_crypto",
            "Does the engagement involve cash or crypto-assets?",
            "Cash or crypto makes the risk rating HIGH: enhanced checks and re-screening every 3 months.",
            answer(|a| a.handles_cash_or_crypto),
        ),
        question(
            "is_new_customer",
            "Is this a new customer of the firm?",
            "A new customer is rated MEDIUM (re-screened every 6 months); an existing one LOW (every 12 months).",
            answer(|a| a.is_new_customer),
        ),
    ]
}

/// The page of `customer`, with what the viewer may do on it now. Which forms show follows the
/// domain's own tables (`person_move`, `aml_move`) and the routes' role tests, so a form is
/// offered exactly when the server would accept it.
async fn customer_page(
    state: &AppState,
    staff: &Staff,
    customer: &Customer,
    notice: Option<&str>,
    error: Option<String>,
) -> Result<CustomerPage, ApiError> {
    let audit = state
        .back_office
        .as_ref()
        .ok_or(ApiError::NotFound("No such page."))?
        .audit
        .customer_trail(staff.firm_id, customer.id)
        .await?;
    let role = staff.person.role;
    let staff_may = RoleNeed::StaffOrAbove.allows(role);
    let officer_may = RoleNeed::ComplianceOfficer.allows(role);
    let status = customer.kyc_status;
    let risk = &customer.risk;
    let startable = person_move(status, PersonTrigger::StartVerification).is_ok();
    let start = if staff_may && startable && risk.designated_service_confirmed() {
        let quote = state
            .ports
            .service
            .quote(staff.firm_id, customer.id)
            .await?;
        Some(StartView {
            cost_credits: quote.cost_credits.get(),
            balance_credits: quote.balance_credits.get(),
            enough: quote.balance_credits >= quote.cost_credits,
        })
    } else {
        None
    };
    let start_hint = if startable && start.is_none() {
        Some(if staff_may {
            "Confirm the risk answers, with a designated service, before starting verification."
                .to_owned()
        } else {
            "Staff or a compliance officer starts the verification.".to_owned()
        })
    } else if status == KycStatus::NotRequired {
        Some("KYC is not required for this customer's service; nothing is charged.".to_owned())
    } else if status == KycStatus::Failed && !officer_may {
        Some("A compliance officer can review this and restart the verification.".to_owned())
    } else {
        None
    };
    let can_review = officer_may && aml_move(customer.aml.status, AmlTrigger::Disposition).is_ok();
    let decidable = aml_move(customer.aml.status, AmlTrigger::Decision).is_ok();
    let can_decide = officer_may && decidable && customer.aml.open_hits() == 0;
    let review_hint = if decidable && !officer_may {
        Some("A compliance officer reviews the hits and records the decision.".to_owned())
    } else if decidable && customer.aml.open_hits() > 0 {
        Some(format!(
            "Set a disposition on every hit ({} open) before recording the decision.",
            customer.aml.open_hits()
        ))
    } else {
        None
    };
    let flags = customer.aml.flags();
    let flag_names: Vec<&str> = [
        (flags.pep, "PEP"),
        (flags.sanctions, "sanctions"),
        (flags.adverse_media, "adverse media"),
        (flags.terrorism, "terrorism"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    Ok(CustomerPage {
        layout: Layout::for_staff(customer.full_name.as_str(), "customers", staff)
            .with_notice(notice)
            .with_error(error),
        c: customer_view(customer),
        link: current_link(state, customer),
        start,
        start_hint,
        attempts: customer
            .attempts
            .iter()
            .map(|a| AttemptView {
                number: a.number.get(),
                phase: phase_text(a.phase),
                cost_credits: a.cost.get(),
                started_by: a
                    .started_by
                    .as_ref()
                    .map_or_else(|| "—".to_owned(), |p| p.email.as_str().to_owned()),
                opened: views::when_or_dash(a.opened_at),
                void_reason: a.void_reason.clone(),
            })
            .collect(),
        can_restart: officer_may && person_move(status, PersonTrigger::Restart).is_ok(),
        risk_confirmed: risk.confirmed.as_ref().map(|c| {
            format!(
                "{} on {} ({})",
                c.confirmed_by_email.as_str(),
                views::when(c.confirmed_at),
                views::answers_text(&c.answers)
            )
        }),
        risk_proposed: risk.proposed.as_ref().map(views::answers_text),
        risk_rating: risk.rating().map(kyc_domain::risk::RiskRating::as_str),
        can_confirm_risk: staff_may
            && person_move(
                status,
                PersonTrigger::ConfirmRisk {
                    designated_service: true,
                },
            )
            .is_ok(),
        questions: questions(risk.confirmed.as_ref().map(|c| c.answers).or(risk.proposed)),
        aml_screened: views::when_or_dash(customer.aml.screened_at),
        aml_next_due: views::when_or_dash(customer.aml.next_screening_due),
        aml_flags: if flag_names.is_empty() {
            "none".to_owned()
        } else {
            flag_names.join(", ")
        },
        decision: customer.aml.decision.as_ref().map(|d| {
            format!(
                "{} by {} on {}: {}",
                d.decision.as_str(),
                d.by_email.as_str(),
                views::when(d.at),
                d.rationale.as_str()
            )
        }),
        hits: customer.aml.hits.iter().map(HitView::from).collect(),
        can_review,
        can_decide,
        review_hint,
        timeline: views::timeline(&audit),
        aml_first: status == KycStatus::Verified,
        risk_form_open: risk.confirmed.is_none() || status == KycStatus::NotStarted,
    })
}

/// The customer's page with `status`, or the error page when even that cannot be built.
async fn show_customer(
    state: &AppState,
    staff: &Staff,
    id: &str,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<String>,
) -> Response {
    let customer = match find(state, staff, id).await {
        Ok(customer) => customer,
        Err(error) => return error.into_response(),
    };
    match customer_page(state, staff, &customer, notice, error).await {
        Ok(page) => render(status, &page),
        Err(error) => error.into_response(),
    }
}

/// After a form about a customer: on success back to the page with a notice; a refusal shows
/// the page again with the reason; a failure of ours is an error page (and logged).
async fn after_form<T>(
    state: &AppState,
    staff: &Staff,
    id: &str,
    result: Result<T, ApiError>,
    notice: &str,
    anchor: &str,
) -> Response {
    match result {
        Ok(_) => see_other(&format!("/app/customers/{id}?notice={notice}#{anchor}")),
        Err(error) if error.status().is_server_error() => error.into_response(),
        Err(error) => {
            show_customer(
                state,
                staff,
                id,
                error.status(),
                None,
                Some(error.to_string()),
            )
            .await
        }
    }
}

/// `GET /app/customers/{id}`.
pub(crate) async fn detail(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    show_customer(&state, &staff, &id, StatusCode::OK, notice(&query), None).await
}

/// `POST /app/customers/{id}/risk`: the three answers, confirmed by the person sending them.
pub(crate) async fn confirm_risk(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    fields: Fields,
) -> Response {
    let answers = match (
        fields.yes_no("is_designated_service"),
        fields.yes_no("handles_cash_or_crypto"),
        fields.yes_no("is_new_customer"),
    ) {
        (Some(is_designated_service), Some(handles_cash_or_crypto), Some(is_new_customer)) => {
            RiskAnswers {
                is_designated_service,
                handles_cash_or_crypto,
                is_new_customer,
            }
        }
        _ => {
            return show_customer(
                &state,
                &staff,
                &id,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some("Answer all three risk questions with yes or no.".to_owned()),
            )
            .await;
        }
    };
    let result = match find(&state, &staff, &id).await {
        Ok(customer) => state
            .ports
            .service
            .confirm_risk(staff.firm_id, customer.id, &staff.person, answers)
            .await
            .map_err(ApiError::from),
        Err(error) => Err(error),
    };
    after_form(&state, &staff, &id, result, "risk_confirmed", "risk").await
}

#[derive(Template)]
#[template(path = "start.html")]
struct StartPage {
    layout: Layout,
    customer_id: String,
    name: String,
    cost_credits: u64,
    balance_credits: u64,
    idempotency_key: String,
}

/// The confirmation step, with a fresh idempotency key minted into its form: every click of
/// its button, however many, is the same request.
async fn start_page(
    state: &AppState,
    staff: &Staff,
    customer: &Customer,
    status: StatusCode,
    idempotency_key: Option<String>,
    error: Option<String>,
) -> Response {
    let quote = match state.ports.service.quote(staff.firm_id, customer.id).await {
        Ok(quote) => quote,
        Err(error) => return ApiError::from(error).into_response(),
    };
    render(
        status,
        &StartPage {
            layout: Layout::for_staff("Start Verification", "customers", staff).with_error(error),
            customer_id: customer.id.to_string(),
            name: customer.full_name.as_str().to_owned(),
            cost_credits: quote.cost_credits.get(),
            balance_credits: quote.balance_credits.get(),
            idempotency_key: idempotency_key
                .unwrap_or_else(|| format!("start-{}", uuid::Uuid::new_v4())),
        },
    )
}

/// `GET /app/customers/{id}/start`: the confirmation step naming the cost. A customer that
/// cannot be started goes back to its page, which says why.
pub(crate) async fn confirm_start(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Response {
    let customer = match find(&state, &staff, &id).await {
        Ok(customer) => customer,
        Err(error) => return error.into_response(),
    };
    if person_move(customer.kyc_status, PersonTrigger::StartVerification).is_err()
        || !customer.risk.designated_service_confirmed()
    {
        return see_other(&format!("/app/customers/{}#verification", customer.id));
    }
    start_page(&state, &staff, &customer, StatusCode::OK, None, None).await
}

/// `POST /app/customers/{id}/verification`: Start Verification, the billable step, behind the
/// idempotency layer (the form's key). On success the customer's page shows `PENDING` and the
/// link.
pub(crate) async fn start(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    fields: Fields,
) -> Response {
    let customer = match find(&state, &staff, &id).await {
        Ok(customer) => customer,
        Err(error) => return error.into_response(),
    };
    let Some(cost) = fields
        .get("confirm_cost_credits")
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return start_page(
            &state,
            &staff,
            &customer,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some("The confirmed cost is missing; confirm again.".to_owned()),
        )
        .await;
    };
    let result = state
        .ports
        .service
        .start_verification(
            staff.firm_id,
            customer.id,
            &staff.person,
            Credits::new(cost),
        )
        .await
        .map_err(ApiError::from);
    match result {
        Ok(_) => see_other(&format!(
            "/app/customers/{}?notice=started#verification",
            customer.id
        )),
        // Nothing was charged; the same key completes the same attempt when tried again.
        Err(error @ (ApiError::ProviderUnavailable(_) | ApiError::Unavailable(_))) => {
            let message = error.to_string();
            let mut page = start_page(
                &state,
                &staff,
                &customer,
                error.status(),
                fields.get("idempotency_key").map(str::to_owned),
                Some(format!("{message} Nothing was charged. Try again.")),
            )
            .await;
            page.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            page
        }
        Err(error) if error.status().is_server_error() => error.into_response(),
        Err(error) => {
            let message = error.to_string();
            show_customer(
                &state,
                &staff,
                &customer.id.to_string(),
                error.status(),
                None,
                Some(format!("Verification was not started: {message}")),
            )
            .await
        }
    }
}

/// `POST /app/customers/{id}/disposition`: a compliance officer's disposition on one hit.
pub(crate) async fn disposition(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    fields: Fields,
) -> Response {
    let request = DispositionRequest {
        disposition: fields.text("disposition"),
        note: fields.text("note"),
    };
    let hit = HitKey::new(fields.text("hit_id"));
    let result = async {
        let (disposition, note) = request.try_into_domain()?;
        let customer = find(&state, &staff, &id).await?;
        state
            .ports
            .service
            .set_hit_disposition(
                staff.firm_id,
                customer.id,
                &staff.person,
                &hit,
                disposition,
                note,
            )
            .await
            .map_err(ApiError::from)
    }
    .await;
    after_form(&state, &staff, &id, result, "disposition_saved", "aml").await
}

/// `POST /app/customers/{id}/decision`: the final AML decision.
pub(crate) async fn decision(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    fields: Fields,
) -> Response {
    let request = DecisionRequest {
        decision: fields.text("decision"),
        rationale: fields.text("rationale"),
    };
    let result = async {
        let (decision, rationale) = request.try_into_domain()?;
        let customer = find(&state, &staff, &id).await?;
        state
            .ports
            .service
            .record_aml_decision(
                staff.firm_id,
                customer.id,
                &staff.person,
                decision,
                rationale,
            )
            .await
            .map_err(ApiError::from)
    }
    .await;
    after_form(&state, &staff, &id, result, "decision_recorded", "aml").await
}

/// `POST /app/customers/{id}/restart`: a compliance officer restarts a failed verification.
pub(crate) async fn restart(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    fields: Fields,
) -> Response {
    let request = RestartRequest {
        reason: fields.text("reason"),
    };
    let result = async {
        let reason = request.try_into_domain()?;
        let customer = find(&state, &staff, &id).await?;
        state
            .ports
            .service
            .restart_verification(staff.firm_id, customer.id, &staff.person, reason)
            .await
            .map_err(ApiError::from)
    }
    .await;
    after_form(&state, &staff, &id, result, "restarted", "verification").await
}

// ----- credits and the audit trail -----

#[derive(Template)]
#[template(path = "credits.html")]
struct CreditsPage {
    layout: Layout,
    available: u64,
    held: u64,
    spent: u64,
    lines: Vec<StatementLine>,
    next_cursor: Option<String>,
}

/// `GET /app/credits`: the balance and the statement, newest first (`?cursor=` for older).
pub(crate) async fn credits(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let cursor = query
        .iter()
        .find(|(name, _)| name == "cursor")
        .map(|(_, value)| value.as_str())
        .filter(|c| !c.is_empty());
    match credits_page(&state, staff.firm_id, cursor).await {
        Ok((balance, page)) => render(
            StatusCode::OK,
            &CreditsPage {
                layout: Layout::for_staff("Credits", "credits", &staff),
                available: balance.available.get(),
                held: balance.held.get(),
                spent: balance.spent.get(),
                lines: page.entries.iter().map(StatementLine::from).collect(),
                next_cursor: page.next_cursor,
            },
        ),
        Err(error) => error.into_response(),
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
}

/// `GET /app/audit`: where the firm's audit trail is downloaded.
pub(crate) async fn audit(staff: Staff) -> Response {
    render(
        StatusCode::OK,
        &AuditPage {
            layout: Layout::for_staff("Audit trail", "audit", &staff),
        },
    )
}
