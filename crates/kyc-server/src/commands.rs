//! The administrative commands of api.md §6: create a firm, a back-office user, an API key, and
//! grant credits. Each returns the one thing a script captures (an id or the key), which `main`
//! prints alone on stdout; whatever else they say goes to the logs on stderr.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher, SaltString};
use kyc_domain::events::Role;
use kyc_domain::ids::{ApiKeyId, FirmId, UserId};
use kyc_domain::ports::{ApiKeyRecord, CreateUserError, Firm, IdempotencyKey, LedgerError, User};
use kyc_domain::values::{ApiScope, Credits, Email};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::Failure;
use crate::database::Stores;
use crate::system::{base64_url, sha256_hex};

/// The shortest password a back-office user may have.
pub const MIN_PASSWORD_CHARS: usize = 12;

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
/// An unknown firm, a malformed email, an unknown role, a short password, an email already in use.
pub async fn create_user(
    stores: &Stores,
    firm: &str,
    email: &str,
    role: &str,
    password: &SecretString,
) -> Result<UserId, Failure> {
    let firm = existing_firm(stores, firm).await?;
    let email = Email::new(email).map_err(|e| Failure::new(format!("--email: {}", e.message)))?;
    let role = Role::parse(role)
        .ok_or_else(|| Failure::new("--role must be one of staff, compliance_officer, admin"))?;
    let password_chars = password.expose_secret().chars().count();
    if password_chars < MIN_PASSWORD_CHARS {
        return Err(Failure::new(format!(
            "the password read from stdin must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password_chars > 1024 {
        return Err(Failure::new(
            "the password read from stdin must be at most 1024 characters",
        ));
    }
    let password_hash = hash_password(password)?;
    let user = User {
        id: UserId::from_uuid(Uuid::now_v7()),
        firm_id: firm,
        email,
        role,
        password_hash,
        created_at: OffsetDateTime::now_utc(),
        disabled_at: None,
    };
    stores
        .users
        .create_user(&user)
        .await
        .map_err(|error| match error {
            CreateUserError::DuplicateEmail => {
                Failure::new("--email: a user with this email already exists")
            }
            CreateUserError::Infrastructure(e) => Failure::storage("creating the user", &e),
        })?;
    tracing::info!(firm_id = %firm, user_id = %user.id, role = role.as_str(), "user created");
    Ok(user.id)
}

/// An argon2id hash in PHC string form, with the crate's default (OWASP-recommended) parameters.
///
/// # Errors
/// Only if hashing itself fails, which the default parameters never cause.
pub fn hash_password(password: &SecretString) -> Result<String, Failure> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|_| Failure::new("could not hash the password"))
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

/// A freshly made key and what storage keeps of it.
#[derive(Debug)]
pub struct IssuedKey {
    /// The key, shown once.
    pub key: SecretString,
    /// The stored record (hashes and display parts only).
    pub record: ApiKeyRecord,
}

/// Makes a key: `kyc_live_` or `kyc_test_` followed by 43 URL-safe characters (256 random bits),
/// and the record storage keeps: the first 12 characters, the last 4, and the SHA-256.
pub fn generate_api_key(
    firm: FirmId,
    label: &str,
    scopes: Vec<String>,
    test: bool,
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> IssuedKey {
    let mut random = [0_u8; 32];
    rand::thread_rng().fill_bytes(&mut random);
    let prefix = if test { "kyc_test_" } else { "kyc_live_" };
    let key = format!("{prefix}{}", base64_url(&random));
    let record = ApiKeyRecord {
        id: ApiKeyId::from_uuid(Uuid::now_v7()),
        firm_id: firm,
        label: label.to_owned(),
        scopes,
        prefix: key.chars().take(12).collect(),
        last4: key.chars().skip(key.chars().count() - 4).collect(),
        sha256: sha256_hex(&key),
        expires_at,
        revoked_at: None,
        created_at: now,
    };
    IssuedKey {
        key: SecretString::from(key),
        record,
    }
}

/// Creates an API key; returns the key, which is never stored.
///
/// # Errors
/// An unknown firm, a blank label, an unknown or missing scope, a malformed or past expiry.
pub async fn create_api_key(
    stores: &Stores,
    request: NewApiKey<'_>,
) -> Result<SecretString, Failure> {
    let firm = existing_firm(stores, request.firm).await?;
    let label = request.label.trim();
    if label.is_empty() || label.chars().count() > 100 {
        return Err(Failure::new("--label must be 1 to 100 characters"));
    }
    let scopes = parse_scopes(request.scopes)?;
    let now = OffsetDateTime::now_utc();
    let expires_at = request
        .expires_at
        .map(|text| {
            OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|_| {
                Failure::new("--expires-at must be an RFC 3339 time, e.g. 2027-01-31T00:00:00Z")
            })
        })
        .transpose()?;
    if expires_at.is_some_and(|at| at <= now) {
        return Err(Failure::new("--expires-at is in the past"));
    }
    let issued = generate_api_key(firm, label, scopes, request.test, expires_at, now);
    stores
        .api_keys
        .create_api_key(&issued.record)
        .await
        .map_err(|e| Failure::storage("creating the API key", &e))?;
    tracing::info!(
        firm_id = %firm,
        api_key_id = %issued.record.id,
        prefix = %issued.record.prefix,
        scopes = %issued.record.scopes.join(","),
        "API key created; it is shown once and only its hash is stored"
    );
    Ok(issued.key)
}

/// Parses `a,b` into the contract's spellings, without duplicates, in a stable order.
///
/// # Errors
/// An unknown scope, or none at all.
pub fn parse_scopes(text: &str) -> Result<Vec<String>, Failure> {
    let mut scopes = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let scope =
            ApiScope::parse(part).map_err(|e| Failure::new(format!("--scopes: {}", e.message)))?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err(Failure::new(
            "--scopes needs at least one of customers:read, customers:write, aml:read, webhooks:manage",
        ));
    }
    scopes.sort();
    Ok(scopes.into_iter().map(|s| s.as_str().to_owned()).collect())
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
pub async fn seed_demo(stores: &Stores) -> Result<DemoSeed, Failure> {
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

#[cfg(test)]
mod tests {
    use argon2::{PasswordHash, PasswordVerifier};

    use super::*;

    #[test]
    fn an_api_key_has_its_prefix_and_enough_random_characters_and_is_stored_only_hashed() {
        let now = OffsetDateTime::now_utc();
        let firm = FirmId::from_uuid(Uuid::now_v7());
        let live = generate_api_key(firm, "crm", vec!["customers:read".into()], false, None, now);
        let key = live.key.expose_secret();
        let random = key.strip_prefix("kyc_live_").unwrap();
        assert!(random.len() >= 32);
        assert!(
            random
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(live.record.prefix, key[..12]);
        assert_eq!(live.record.last4, key[key.len() - 4..]);
        assert_eq!(live.record.sha256, sha256_hex(key));
        assert!(!format!("{:?}", live.record).contains(random));
        let test = generate_api_key(firm, "crm", vec![], true, None, now);
        assert!(test.key.expose_secret().starts_with("kyc_test_"));
        assert_ne!(test.key.expose_secret(), key);
    }

    #[test]
    fn scopes_are_validated_deduplicated_and_sorted() {
        assert_eq!(
            parse_scopes("aml:read, customers:read,aml:read").unwrap(),
            vec!["customers:read".to_owned(), "aml:read".to_owned()]
        );
        assert!(parse_scopes("customers:delete").is_err());
        assert!(parse_scopes(" , ").is_err());
    }

    #[test]
    fn passwords_are_hashed_with_argon2id_and_verify() {
        let password = SecretString::from("correct horse battery staple");
        let hash = hash_password(&password).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse battery staple", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong", &parsed)
                .is_err()
        );
    }
}
