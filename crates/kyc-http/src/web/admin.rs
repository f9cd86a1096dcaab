//! The admin's pages: the firm's users (add, change role, disable and enable) and API keys
//! (create with scopes, the secret shown once; revoke). Every rule (password length, label,
//! scopes, that nobody changes or disables their own account) lives in the access use cases;
//! these handlers only read forms and show results.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use kyc_domain::events::Role;
use kyc_domain::ids::{ApiKeyId, UserId};
use kyc_domain::ports::ApiKeyRecord;
use kyc_domain::usecases::{AccessError, AccessService, IssuedApiKey, NewApiKey, NewUser};
use kyc_domain::values::{ApiScope, Email, KeyLabel, Password};
use time::{Date, OffsetDateTime, Time};

use super::forms::Fields;
use super::views::{self, role_name};
use super::{Layout, render, see_other};
use crate::AppState;
use crate::backoffice::session::Staff;
use crate::error::ApiError;

const ROLES: [Role; 3] = [Role::Staff, Role::ComplianceOfficer, Role::Admin];

fn access(state: &AppState) -> Result<&AccessService, ApiError> {
    state
        .back_office
        .as_ref()
        .map(|ports| &ports.access)
        .ok_or(ApiError::NotFound("No such page."))
}

/// What a refusal of the access use cases means for the person who asked.
fn refusal(error: AccessError) -> ApiError {
    match error {
        AccessError::Infrastructure(error) => error.into(),
        AccessError::UserNotFound | AccessError::ApiKeyNotFound => {
            ApiError::NotFound("No such user or key in your firm.")
        }
        other @ (AccessError::DuplicateEmail
        | AccessError::OwnAccount
        | AccessError::ExpiryInPast) => ApiError::Conflict(other.to_string()),
    }
}

/// The `notice` a redirect after a form carried, if any.
pub(super) fn notice(query: &[(String, String)]) -> Option<&str> {
    query
        .iter()
        .find(|(name, _)| name == "notice")
        .map(|(_, value)| value.as_str())
}

// ----- users -----

struct RoleChoice {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

struct UserRow {
    id: String,
    email: String,
    role_name: &'static str,
    roles: Vec<RoleChoice>,
    disabled: bool,
    is_self: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    layout: Layout,
    users: Vec<UserRow>,
}

async fn users_page(
    state: &AppState,
    staff: &Staff,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<String>,
) -> Response {
    let users = match access(state) {
        Ok(access) => access.list_users(staff.firm_id).await.map_err(refusal),
        Err(error) => Err(error),
    };
    let users = match users {
        Ok(users) => users,
        Err(error) => return error.into_response(),
    };
    let rows = users
        .into_iter()
        .map(|user| UserRow {
            id: user.id.to_string(),
            email: user.email.as_str().to_owned(),
            role_name: role_name(user.role),
            roles: ROLES
                .iter()
                .map(|role| RoleChoice {
                    value: role.as_str(),
                    label: role_name(*role),
                    selected: *role == user.role,
                })
                .collect(),
            disabled: user.disabled_at.is_some(),
            is_self: user.id == staff.person.id,
        })
        .collect();
    render(
        status,
        &UsersPage {
            layout: Layout::for_staff("Users", "users", staff)
                .with_notice(notice)
                .with_error(error),
            users: rows,
        },
    )
}

/// After a form about users: the list with a notice, or again with the refusal.
async fn after_user_form<T>(
    state: &AppState,
    staff: &Staff,
    result: Result<T, ApiError>,
    notice: &str,
) -> Response {
    match result {
        Ok(_) => see_other(&format!("/app/admin/users?notice={notice}")),
        Err(error) if error.status().is_server_error() => error.into_response(),
        Err(error) => users_page(state, staff, error.status(), None, Some(error.to_string())).await,
    }
}

/// `GET /app/admin/users`.
pub(crate) async fn users(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    users_page(&state, &staff, StatusCode::OK, notice(&query), None).await
}

fn parse_role(text: &str) -> Result<Role, ApiError> {
    Role::parse(text).ok_or_else(|| {
        ApiError::invalid("role", "Choose a role: staff, compliance officer or admin.")
    })
}

/// `POST /app/admin/users`: a new login for the firm with an initial password.
pub(crate) async fn create_user(
    State(state): State<AppState>,
    staff: Staff,
    fields: Fields,
) -> Response {
    let result = async {
        let user = NewUser {
            email: Email::new(fields.text("email"))
                .map_err(|e| ApiError::invalid("email", e.message))?,
            role: parse_role(&fields.text("role"))?,
            password: Password::new(fields.get("password").unwrap_or_default().to_owned())
                .map_err(|e| ApiError::invalid("password", e.message))?,
        };
        access(&state)?
            .create_user(staff.firm_id, user)
            .await
            .map_err(refusal)
    }
    .await;
    after_user_form(&state, &staff, result, "user_created").await
}

fn user_id(text: &str) -> Result<UserId, ApiError> {
    UserId::parse(text).map_err(|_| ApiError::NotFound("No such user or key in your firm."))
}

/// `POST /app/admin/users/{id}/role`.
pub(crate) async fn change_role(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    fields: Fields,
) -> Response {
    let result = async {
        let role = parse_role(&fields.text("role"))?;
        access(&state)?
            .change_role(staff.firm_id, &staff.person, user_id(&id)?, role)
            .await
            .map_err(refusal)
    }
    .await;
    after_user_form(&state, &staff, result, "role_changed").await
}

async fn set_disabled(state: &AppState, staff: &Staff, id: &str, disabled: bool) -> Response {
    let result = async {
        access(state)?
            .set_disabled(staff.firm_id, &staff.person, user_id(id)?, disabled)
            .await
            .map_err(refusal)
    }
    .await;
    let notice = if disabled {
        "user_disabled"
    } else {
        "user_enabled"
    };
    after_user_form(state, staff, result, notice).await
}

/// `POST /app/admin/users/{id}/disable`: the user can no longer log in, and their open sessions
/// stop working at their next request.
pub(crate) async fn disable_user(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Response {
    set_disabled(&state, &staff, &id, true).await
}

/// `POST /app/admin/users/{id}/enable`.
pub(crate) async fn enable_user(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Response {
    set_disabled(&state, &staff, &id, false).await
}

// ----- API keys -----

struct KeyRow {
    id: String,
    label: String,
    display: String,
    scopes: String,
    created: String,
    state: &'static str,
    state_tone: &'static str,
    revocable: bool,
}

fn key_row(key: &ApiKeyRecord, now: OffsetDateTime) -> KeyRow {
    let (state, state_tone, revocable) = if key.revoked_at.is_some() {
        ("Revoked", "bad", false)
    } else if key.expires_at.is_some_and(|at| at <= now) {
        ("Expired", "neutral", false)
    } else if key.expires_at.is_some() {
        ("Active until its expiry", "ok", true)
    } else {
        ("Active", "ok", true)
    };
    KeyRow {
        id: key.id.to_string(),
        label: key.label.clone(),
        display: format!("{}…{}", key.prefix, key.last4),
        scopes: key.scopes.join(", "),
        created: views::when(key.created_at),
        state,
        state_tone,
        revocable,
    }
}

struct ScopeChoice {
    value: &'static str,
    label: &'static str,
}

struct Issued {
    label: String,
    key: String,
}

#[derive(Template)]
#[template(path = "api_keys.html")]
struct KeysPage {
    layout: Layout,
    issued: Option<Issued>,
    keys: Vec<KeyRow>,
    scopes: Vec<ScopeChoice>,
}

fn scope_label(scope: ApiScope) -> &'static str {
    match scope.as_str() {
        "customers:read" => "read customers and poll for changes",
        "customers:write" => "push customers in and update them",
        "aml:read" => "read only the AML block",
        "webhooks:manage" => "manage webhook endpoints",
        _ => "",
    }
}

async fn keys_page(
    state: &AppState,
    staff: &Staff,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<String>,
    issued: Option<IssuedApiKey>,
) -> Response {
    let keys = match access(state) {
        Ok(access) => access.list_api_keys(staff.firm_id).await.map_err(refusal),
        Err(error) => Err(error),
    };
    let keys = match keys {
        Ok(keys) => keys,
        Err(error) => return error.into_response(),
    };
    let now = state.ports.clock.now();
    render(
        status,
        &KeysPage {
            layout: Layout::for_staff("API keys", "api-keys", staff)
                .with_notice(notice)
                .with_error(error),
            issued: issued.map(|issued| Issued {
                label: issued.record.label.clone(),
                key: issued.key.clone(),
            }),
            keys: keys.iter().map(|key| key_row(key, now)).collect(),
            scopes: ApiScope::ALL
                .iter()
                .map(|scope| ScopeChoice {
                    value: scope.as_str(),
                    label: scope_label(*scope),
                })
                .collect(),
        },
    )
}

/// A refused form about keys: the keys page again with the reason; a failure of ours is an
/// error page (and logged).
async fn keys_refused(state: &AppState, staff: &Staff, error: ApiError) -> Response {
    if error.status().is_server_error() {
        return error.into_response();
    }
    keys_page(
        state,
        staff,
        error.status(),
        None,
        Some(error.to_string()),
        None,
    )
    .await
}

/// `GET /app/admin/api-keys`.
pub(crate) async fn api_keys(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    keys_page(&state, &staff, StatusCode::OK, notice(&query), None, None).await
}

/// The end of the chosen day (UTC) as the key's expiry.
fn expiry(text: &str) -> Result<Option<OffsetDateTime>, ApiError> {
    if text.is_empty() {
        return Ok(None);
    }
    let date = Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| ApiError::invalid("expires_on", "Give the expiry date as YYYY-MM-DD."))?;
    Ok(Some(date.with_time(Time::MAX).assume_utc()))
}

/// `POST /app/admin/api-keys`: a new key, whose secret is shown on this answer only (the
/// answer is never cached, and only the key's hash is stored).
pub(crate) async fn create_api_key(
    State(state): State<AppState>,
    staff: Staff,
    fields: Fields,
) -> Response {
    let result = async {
        let key = NewApiKey {
            label: KeyLabel::new(fields.text("label"))
                .map_err(|e| ApiError::invalid("label", e.message))?,
            scopes: ApiScope::parse_set(&fields.all("scopes").join(","))
                .map_err(|e| ApiError::invalid("scopes", e.message))?,
            sandbox: fields.get("sandbox") == Some("on"),
            expires_at: expiry(&fields.text("expires_on"))?,
        };
        access(&state)?
            .create_api_key(staff.firm_id, key)
            .await
            .map_err(refusal)
    }
    .await;
    match result {
        Ok(issued) => {
            keys_page(
                &state,
                &staff,
                StatusCode::CREATED,
                None,
                None,
                Some(issued),
            )
            .await
        }
        Err(error) => keys_refused(&state, &staff, error).await,
    }
}

/// `POST /app/admin/api-keys/{id}/revoke`.
pub(crate) async fn revoke_api_key(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let id = ApiKeyId::parse(&id)
            .map_err(|_| ApiError::NotFound("No such user or key in your firm."))?;
        access(&state)?
            .revoke_api_key(staff.firm_id, id)
            .await
            .map_err(refusal)
    }
    .await;
    match result {
        Ok(_) => see_other("/app/admin/api-keys?notice=key_revoked"),
        Err(error) => keys_refused(&state, &staff, error).await,
    }
}
