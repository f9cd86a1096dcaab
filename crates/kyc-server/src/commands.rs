//! The administrative commands of api.md §6: create a firm, a back-office user, an API key, and
//! grant credits. Each returns the one thing a script captures (an id or the key), which `main`
//! prints alone on stdout; whatever else they say goes to the logs on stderr.

use kyc_domain::events::Role;
use kyc_domain::ids::{FirmId, UserId};
use kyc_domain::ports::WebhookEndpointId;
use kyc_domain::ports::{Firm, IdempotencyKey, LedgerError};
use kyc_domain::usecases::{
    AccessError, AccessService, NewEndpoint, NewUser, WebhookError, WebhookService,
};
use kyc_domain::values::{ApiScope, Credits, Email, KeyLabel, Password};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::database::Stores;
use crate::{Failure, WebhookEndpointCommand};

/// Creates a firm; returns its id.
///
/// # Errors
/// A blank or overlong name; a storage failure.
pub async fn create_firm(stores: &Stores, name: &str) -> Result<FirmId, Failure> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(Failure::new("--name must be 1 to 255 characters"));
    }
    let firm = Firm {
        id: FirmId::from_uuid(Uuid::now_v7()),
        name: name.to_owned(),
        created_at: OffsetDateTime::now_utc(),
    };
    stores
        .firms
        .create_firm(&firm)
        .await
        .map_err(|e| Failure::storage("creating the firm", &e))?;
    tracing::info!(firm_id = %firm.id, "firm created");
    Ok(firm.id)
}

/// Creates a back-office user of `firm` with an argon2id hash of `password`; returns its id.
///
/// # Errors
/// An unknown firm, a malformed email, an unknown role, a password of the wrong length, an email
/// already in use, a storage failure.
pub async fn create_user(
    stores: &Stores,
    access: &AccessService,
    firm: &str,
    email: &str,
    role: &str,
    password: &SecretString,
) -> Result<UserId, Failure> {
    let firm = existing_firm(stores, firm).await?;
    let email = Email::new(email).map_err(|e| Failure::new(format!("--email: {}", e.message)))?;
    let role = Role::parse(role)
        .ok_or_else(|| Failure::new("--role must be one of staff, compliance_officer, admin"))?;
    let password = Password::new(password.expose_secret())
        .map_err(|e| Failure::new(format!("--password-stdin: {}", e.message)))?;
    let user = access
        .create_user(
            firm,
            NewUser {
                email,
                role,
                password,
            },
        )
        .await
        .map_err(|error| refused("creating the user", error))?;
    Ok(user.id)
}

/// What `api-key create` asks for.
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    /// The firm, as typed.
    pub firm: &'a str,
    /// The label.
    pub label: &'a str,
    /// Comma-separated scopes, as typed.
    pub scopes: &'a str,
    /// A sandbox key (`kyc_test_`) rather than a live one.
    pub test: bool,
    /// RFC 3339 expiry, as typed.
    pub expires_at: Option<&'a str>,
}

/// Creates an API key; returns the key, which is never stored.
///
/// # Errors
/// An unknown firm, a blank or overlong label, an unknown or missing scope, a malformed or past
/// expiry, a storage failure.
pub async fn create_api_key(
    stores: &Stores,
    access: &AccessService,
    request: NewApiKey<'_>,
) -> Result<SecretString, Failure> {
    let firm = existing_firm(stores, request.firm).await?;
    let label = KeyLabel::new(request.label)
        .map_err(|e| Failure::new(format!("--label: {}", e.message)))?;
    let scopes = ApiScope::parse_set(request.scopes)
        .map_err(|e| Failure::new(format!("--scopes: {}", e.message)))?;
    let expires_at = request
        .expires_at
        .map(|text| {
            OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|_| {
                Failure::new("--expires-at must be an RFC 3339 time, e.g. 2027-01-31T00:00:00Z")
            })
        })
        .transpose()?;
    let issued = access
        .create_api_key(
            firm,
            kyc_domain::usecases::NewApiKey {
                label,
                scopes,
                sandbox: request.test,
                expires_at,
            },
        )
        .await
        .map_err(|error| refused("creating the API key", error))?;
    Ok(SecretString::from(issued.key))
}

/// A refusal of the access use cases as the CLI says it: naming the flag to fix where there is
/// one.
fn refused(what: &str, error: AccessError) -> Failure {
    match error {
        AccessError::DuplicateEmail => {
            Failure::new("--email: a user with this email already exists")
        }
        AccessError::ExpiryInPast => Failure::new("--expires-at is in the past"),
        AccessError::Infrastructure(e) => Failure::storage(what, &e),
        other @ (AccessError::UserNotFound
        | AccessError::ApiKeyNotFound
        | AccessError::OwnAccount) => Failure::new(format!("{what} failed: {other}")),
    }
}

/// Grants credits to a firm, once per reference: a repeat with the same reference and amount
/// changes nothing and returns the same operation id. Returns the ledger operation id.
///
/// # Errors
/// An unknown firm, zero credits, a blank or overlong reference, a reference already used for a
/// different amount.
pub async fn grant_credits(
    stores: &Stores,
    firm: &str,
    credits: u64,
    reference: &str,
) -> Result<String, Failure> {
    let firm = existing_firm(stores, firm).await?;
    let reference = reference.trim();
    if reference.is_empty() || reference.chars().count() > 200 {
        return Err(Failure::new("--reference must be 1 to 200 characters"));
    }
    if credits == 0 {
        return Err(Failure::new("--credits must be at least 1"));
    }
    // The ledger scopes keys by firm, so the reference alone makes the grant idempotent per firm.
    let key = IdempotencyKey::new(format!("grant:{reference}"))
        .map_err(|_| Failure::new("--reference must be printable characters"))?;
    let receipt = stores
        .ledger
        .grant(firm, Credits::new(credits), reference, &key)
        .await
        .map_err(|error| match error {
            LedgerError::IdempotencyMismatch(_) => {
                Failure::new("--reference was already used for a different grant to this firm")
            }
            LedgerError::InvalidAmount(_) => Failure::new("--credits is out of range"),
            LedgerError::Infrastructure(e) => Failure::storage("granting credits", &e),
            other => Failure::new(format!("granting credits failed: {other}")),
        })?;
    tracing::info!(
        firm_id = %firm,
        operation_id = %receipt.id,
        available_credits = %receipt.balance.available,
        "credits granted"
    );
    Ok(receipt.id)
}

/// Runs a `webhook-endpoint` command; returns what goes on stdout (the secret, or the list).
///
/// # Errors
/// An unknown firm or endpoint, a bad URL or event type, a storage failure.
pub async fn webhook_endpoint(
    stores: &Stores,
    webhooks: &WebhookService,
    command: WebhookEndpointCommand,
) -> Result<String, Failure> {
    let refused = |what: &str, error: WebhookError| match error {
        WebhookError::Invalid { field, message } => Failure::new(format!("--{field}: {message}")),
        WebhookError::EndpointNotFound => {
            Failure::new("--id: no webhook endpoint with this id in this firm")
        }
        WebhookError::EventNotFound => Failure::new(format!("{what} failed: {error}")),
        WebhookError::Infrastructure(e) => Failure::storage(what, &e),
    };
    let endpoint_id = |text: &str| {
        Uuid::parse_str(text.trim())
            .map(WebhookEndpointId::from_uuid)
            .map_err(|_| Failure::new("--id must be a webhook endpoint id (a UUID)"))
    };
    match command {
        WebhookEndpointCommand::Create {
            firm,
            url,
            description,
            events,
        } => {
            let firm = existing_firm(stores, &firm).await?;
            let events = events.map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            });
            let endpoint = webhooks
                .create(
                    firm,
                    NewEndpoint {
                        url,
                        description,
                        events,
                    },
                )
                .await
                .map_err(|e| refused("creating the webhook endpoint", e))?;
            tracing::info!(endpoint_id = %endpoint.id, firm_id = %firm, "webhook endpoint created");
            eprintln!(
                "webhook endpoint {} created; its secret follows",
                endpoint.id
            );
            Ok(endpoint.secret)
        }
        WebhookEndpointCommand::List { firm } => {
            let firm = existing_firm(stores, &firm).await?;
            let endpoints = webhooks
                .list(firm)
                .await
                .map_err(|e| refused("listing the webhook endpoints", e))?;
            Ok(endpoints
                .iter()
                .map(|endpoint| {
                    format!(
                        "{}\t{}\t{}\t{}",
                        endpoint.id,
                        if endpoint.disabled_at.is_some() {
                            "disabled"
                        } else {
                            "enabled"
                        },
                        if endpoint.event_types.is_empty() {
                            "*".to_owned()
                        } else {
                            endpoint.event_types.join(",")
                        },
                        endpoint.url
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"))
        }
        WebhookEndpointCommand::Delete { firm, id } => {
            let firm = existing_firm(stores, &firm).await?;
            let id = endpoint_id(&id)?;
            webhooks
                .delete(firm, id)
                .await
                .map_err(|e| refused("deleting the webhook endpoint", e))?;
            tracing::info!(endpoint_id = %id, "webhook endpoint deleted");
            Ok(id.to_string())
        }
        WebhookEndpointCommand::RotateSecret { firm, id } => {
            let firm = existing_firm(stores, &firm).await?;
            let endpoint = webhooks
                .rotate_secret(firm, endpoint_id(&id)?)
                .await
                .map_err(|e| refused("rotating the secret", e))?;
            Ok(endpoint.secret)
        }
    }
}

/// The demo officer's login. The demo binds to the loopback address by default and its data is
/// made up, so a fixed, printed password is what lets a person log in again after a restart.
pub const DEMO_EMAIL: &str = "officer@demo.example";

/// The demo officer's password (see [`DEMO_EMAIL`]).
pub const DEMO_PASSWORD: &str = "demo-officer-password";

/// How many credits the demo firm starts with.
pub const DEMO_CREDITS: u64 = 100;

/// What `demo` seeded.
#[derive(Debug)]
pub struct DemoSeed {
    /// The demo firm.
    pub firm: FirmId,
    /// Its available credits after seeding.
    pub available_credits: Credits,
    /// A fresh sandbox API key with every scope (keys are shown once, so each run makes one).
    pub api_key: SecretString,
}

/// Seeds the demo: a firm with [`DEMO_CREDITS`] credits and a compliance officer, reused when
/// they exist from an earlier run, and a new API key.
///
/// # Errors
/// A storage failure.
pub async fn seed_demo(stores: &Stores, access: &AccessService) -> Result<DemoSeed, Failure> {
    let email = Email::new(DEMO_EMAIL).map_err(|e| Failure::new(e.message))?;
    let existing = stores
        .users
        .find_user_by_email(&email)
        .await
        .map_err(|e| Failure::storage("reading the demo user", &e))?;
    let firm = match existing {
        Some(user) => user.firm_id,
        None => {
            let firm = create_firm(stores, "Demo Firm").await?;
            create_user(
                stores,
                access,
                &firm.to_string(),
                DEMO_EMAIL,
                Role::ComplianceOfficer.as_str(),
                &SecretString::from(DEMO_PASSWORD),
            )
            .await?;
            firm
        }
    };
    grant_credits(stores, &firm.to_string(), DEMO_CREDITS, "demo-seed").await?;
    let available_credits = stores
        .ledger
        .balance(firm)
        .await
        .map_err(|e| Failure::new(format!("reading the demo balance failed: {e}")))?
        .available;
    let scopes = ApiScope::ALL
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let api_key = create_api_key(
        stores,
        access,
        NewApiKey {
            firm: &firm.to_string(),
            label: "demo",
            scopes: &scopes,
            test: true,
            expires_at: None,
        },
    )
    .await?;
    Ok(DemoSeed {
        firm,
        available_credits,
        api_key,
    })
}

async fn existing_firm(stores: &Stores, text: &str) -> Result<FirmId, Failure> {
    let id = FirmId::parse(text.trim())
        .map_err(|_| Failure::new("--firm must be a firm id (a UUID)"))?;
    match stores.firms.get_firm(id).await {
        Ok(Some(_)) => Ok(id),
        Ok(None) => Err(Failure::new(format!("--firm: no firm with id {id}"))),
        Err(e) => Err(Failure::storage("reading the firm", &e)),
    }
}
