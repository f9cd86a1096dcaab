//! Administering a firm's access: its back-office users (created, listed, given another role,
//! disabled and enabled again) and the API keys its CRMs use (created, listed, revoked). The back
//! office and the command line both drive these, so each rule lives here once.
//!
//! Who may call them is the driving adapter's decision: the back office offers them to admins,
//! the command line to whoever operates the server. What holds whoever calls is decided here: a
//! person never changes their own role or disables themselves, so the last admin cannot lock the
//! firm out by a slip; a key never expires in the past; secrets are hashed before they are
//! stored and never logged.

use std::fmt;
use std::sync::Arc;

use time::OffsetDateTime;
use tracing::instrument;

use crate::events::{Person, Role};
use crate::ids::{ApiKeyId, FirmId, UserId};
use crate::ports::{
    ApiKeyRecord, ApiKeyStore, Clock, CreateUserError, Credentials, IdGenerator,
    InfrastructureError, User, UserStore,
};
use crate::values::{ApiScope, Email, KeyLabel, Password};

/// The ports an [`AccessService`] drives.
#[derive(Clone)]
pub struct AccessPorts {
    /// Back-office users.
    pub users: Arc<dyn UserStore>,
    /// API keys.
    pub api_keys: Arc<dyn ApiKeyStore>,
    /// Password hashing and key minting.
    pub credentials: Arc<dyn Credentials>,
    /// Time: when a user was created or disabled, a key created or revoked, whether an expiry
    /// is past.
    pub clock: Arc<dyn Clock>,
    /// Ids of new users and keys.
    pub ids: Arc<dyn IdGenerator>,
}

/// A back-office user to create, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Their login, unique across firms.
    pub email: Email,
    /// What they may do.
    pub role: Role,
    /// Their password; only its hash is stored.
    pub password: Password,
}

/// An API key to create, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// The name it is listed under.
    pub label: KeyLabel,
    /// What it may do ([`ApiScope::parse_set`] reads them from text); stored sorted, without
    /// duplicates.
    pub scopes: Vec<ApiScope>,
    /// A sandbox key (`kyc_test_…`) rather than a live one (`kyc_live_…`).
    pub sandbox: bool,
    /// When it stops working, if ever; must be in the future.
    pub expires_at: Option<OffsetDateTime>,
}

/// A key just created: the key itself, to show once, and what storage keeps of it. `Debug`
/// leaves the key out.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedApiKey {
    /// The whole key. It is not stored anywhere: shown now or never.
    pub key: String,
    /// The stored record: the display parts and the hash only.
    pub record: ApiKeyRecord,
}

impl fmt::Debug for IssuedApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedApiKey")
            .field("key", &"[redacted]")
            .field("record", &self.record)
            .finish()
    }
}

/// Why a change to a firm's users or keys was refused. Each message is a sentence a person can
/// act on, as the back office shows it.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Some user, in this firm or another, already logs in with this email.
    #[error("Another user already logs in with this email address.")]
    DuplicateEmail,
    /// No such user in this firm (another firm's users are never found).
    #[error("There is no such user in this firm.")]
    UserNotFound,
    /// No such API key in this firm (another firm's keys are never found).
    #[error("There is no such API key in this firm.")]
    ApiKeyNotFound,
    /// A person cannot change their own role or disable themselves, so a firm is never locked
    /// out by a slip: another admin has to do it.
    #[error("You cannot change your own role or disable your own account; ask another admin.")]
    OwnAccount,
    /// The key would have expired already.
    #[error("The expiry date must be in the future.")]
    ExpiryInPast,
    /// Infrastructure failure.
    #[error(transparent)]
    Infrastructure(#[from] InfrastructureError),
}

/// The use cases of a firm's users and API keys.
#[derive(Clone)]
pub struct AccessService {
    ports: AccessPorts,
}

impl AccessService {
    /// Wires the ports.
    pub fn new(ports: AccessPorts) -> Self {
        Self { ports }
    }

    /// Creates a back-office user of `firm` with a hash of their password; returns the user as
    /// stored.
    ///
    /// # Errors
    /// [`AccessError::DuplicateEmail`] when any user, in any firm, logs in with this email
    /// (compared case-insensitively); [`AccessError::Infrastructure`] otherwise. On error
    /// nothing is stored.
    #[instrument(skip_all, fields(firm_id = %firm), err(level = "info"))]
    pub async fn create_user(&self, firm: FirmId, user: NewUser) -> Result<User, AccessError> {
        let password_hash = self.ports.credentials.hash_password(&user.password).await?;
        let created = User {
            id: self.ports.ids.user_id(),
            firm_id: firm,
            email: user.email,
            role: user.role,
            password_hash,
            created_at: self.ports.clock.now(),
            disabled_at: None,
        };
        self.ports
            .users
            .create_user(&created)
            .await
            .map_err(|error| match error {
                CreateUserError::DuplicateEmail => AccessError::DuplicateEmail,
                CreateUserError::Infrastructure(e) => AccessError::Infrastructure(e),
            })?;
        tracing::info!(user_id = %created.id, role = created.role.as_str(), "user created");
        Ok(created)
    }

    /// The firm's users, disabled ones included, ordered by email.
    ///
    /// # Errors
    /// [`AccessError::Infrastructure`] only.
    #[instrument(skip_all, fields(firm_id = %firm), err(level = "info"))]
    pub async fn list_users(&self, firm: FirmId) -> Result<Vec<User>, AccessError> {
        Ok(self.ports.users.list_users(firm).await?)
    }

    /// Gives the firm's user `user` the role `role`, on behalf of `actor`; returns the user as
    /// stored now. Giving the role they have changes nothing.
    ///
    /// # Errors
    /// [`AccessError::OwnAccount`] when `actor` is `user`; [`AccessError::UserNotFound`] for an
    /// unknown user or another firm's; [`AccessError::Infrastructure`] otherwise.
    #[instrument(skip_all, fields(firm_id = %firm, user_id = %user), err(level = "info"))]
    pub async fn change_role(
        &self,
        firm: FirmId,
        actor: &Person,
        user: UserId,
        role: Role,
    ) -> Result<User, AccessError> {
        refuse_own_account(actor, user)?;
        if !self.ports.users.set_user_role(firm, user, role).await? {
            return Err(AccessError::UserNotFound);
        }
        tracing::info!(actor_id = %actor.id, role = role.as_str(), "user's role set");
        self.user(firm, user).await
    }

    /// Disables the firm's user `user` (`disabled`) or enables them again, on behalf of `actor`;
    /// returns the user as stored now. A disabled user cannot log in, and their open sessions
    /// are refused. Disabling a user already disabled keeps the time they were first disabled.
    ///
    /// # Errors
    /// [`AccessError::OwnAccount`] when `actor` is `user`; [`AccessError::UserNotFound`] for an
    /// unknown user or another firm's; [`AccessError::Infrastructure`] otherwise.
    #[instrument(skip_all, fields(firm_id = %firm, user_id = %user, disabled), err(level = "info"))]
    pub async fn set_disabled(
        &self,
        firm: FirmId,
        actor: &Person,
        user: UserId,
        disabled: bool,
    ) -> Result<User, AccessError> {
        refuse_own_account(actor, user)?;
        let current = self.user(firm, user).await?;
        if current.disabled_at.is_some() == disabled {
            return Ok(current);
        }
        let disabled_at = disabled.then(|| self.ports.clock.now());
        if !self
            .ports
            .users
            .set_user_disabled(firm, user, disabled_at)
            .await?
        {
            return Err(AccessError::UserNotFound);
        }
        tracing::info!(
            actor_id = %actor.id,
            "user {}",
            if disabled { "disabled" } else { "enabled" }
        );
        self.user(firm, user).await
    }

    /// Creates an API key for `firm`; returns the key, to show once, and its stored record.
    /// Only the key's SHA-256 and display parts are stored.
    ///
    /// # Errors
    /// [`AccessError::ExpiryInPast`] when `expires_at` is not after now;
    /// [`AccessError::Infrastructure`] otherwise. On error nothing is stored.
    #[instrument(skip_all, fields(firm_id = %firm), err(level = "info"))]
    pub async fn create_api_key(
        &self,
        firm: FirmId,
        key: NewApiKey,
    ) -> Result<IssuedApiKey, AccessError> {
        let now = self.ports.clock.now();
        if key.expires_at.is_some_and(|at| at <= now) {
            return Err(AccessError::ExpiryInPast);
        }
        let mut scopes = key.scopes;
        scopes.sort();
        scopes.dedup();
        let minted = self.ports.credentials.mint_api_key(key.sandbox);
        let record = ApiKeyRecord {
            id: self.ports.ids.api_key_id(),
            firm_id: firm,
            label: key.label.into(),
            scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            prefix: minted.prefix,
            last4: minted.last4,
            sha256: minted.sha256,
            expires_at: key.expires_at,
            revoked_at: None,
            created_at: now,
        };
        self.ports.api_keys.create_api_key(&record).await?;
        tracing::info!(
            api_key_id = %record.id,
            scopes = %record.scopes.join(","),
            sandbox = key.sandbox,
            "API key created; it is shown once and only its hash is stored"
        );
        Ok(IssuedApiKey {
            key: minted.key,
            record,
        })
    }

    /// The firm's API keys, revoked and expired ones included, newest first.
    ///
    /// # Errors
    /// [`AccessError::Infrastructure`] only.
    #[instrument(skip_all, fields(firm_id = %firm), err(level = "info"))]
    pub async fn list_api_keys(&self, firm: FirmId) -> Result<Vec<ApiKeyRecord>, AccessError> {
        Ok(self.ports.api_keys.list_api_keys(firm).await?)
    }

    /// Revokes the firm's API key `id`: from now on it authenticates nothing. Returns the record
    /// as stored now. Revoking a key already revoked is not an error and changes nothing (its
    /// first revocation time is kept), so a repeated click or a retried request has the outcome
    /// the person wanted.
    ///
    /// # Errors
    /// [`AccessError::ApiKeyNotFound`] for an unknown key or another firm's;
    /// [`AccessError::Infrastructure`] otherwise.
    #[instrument(skip_all, fields(firm_id = %firm, api_key_id = %id), err(level = "info"))]
    pub async fn revoke_api_key(
        &self,
        firm: FirmId,
        id: ApiKeyId,
    ) -> Result<ApiKeyRecord, AccessError> {
        let now = self.ports.clock.now();
        let revoked = self.ports.api_keys.revoke_api_key(firm, id, now).await?;
        // `false` means unknown, another firm's, or revoked before: the firm's list tells which.
        let record = self
            .ports
            .api_keys
            .list_api_keys(firm)
            .await?
            .into_iter()
            .find(|key| key.id == id)
            .ok_or(AccessError::ApiKeyNotFound)?;
        if revoked {
            tracing::info!("API key revoked");
        }
        Ok(record)
    }

    /// The firm's user `id`.
    async fn user(&self, firm: FirmId, id: UserId) -> Result<User, AccessError> {
        self.ports
            .users
            .get_user(firm, id)
            .await?
            .ok_or(AccessError::UserNotFound)
    }
}

/// Refuses a change a person would make to their own account.
fn refuse_own_account(actor: &Person, user: UserId) -> Result<(), AccessError> {
    if actor.id == user {
        Err(AccessError::OwnAccount)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;
    use time::macros::datetime;
    use uuid::Uuid;

    use super::*;
    use crate::ports::{MockCredentials, MockUserStore};
    use crate::testkit::memory::{FakeCredentials, ManualClock, MemoryAccounts, SequentialIds};

    const NOW: OffsetDateTime = datetime!(2026-07-01 09:00 UTC);

    struct Fixture {
        service: AccessService,
        accounts: Arc<MemoryAccounts>,
        clock: Arc<ManualClock>,
    }

    fn fixture() -> Fixture {
        let accounts = Arc::new(MemoryAccounts::default());
        let clock = Arc::new(ManualClock::new(NOW));
        let service = AccessService::new(AccessPorts {
            users: accounts.clone(),
            api_keys: accounts.clone(),
            credentials: Arc::new(FakeCredentials::default()),
            clock: clock.clone(),
            ids: Arc::new(SequentialIds::default()),
        });
        Fixture {
            service,
            accounts,
            clock,
        }
    }

    fn firm(n: u128) -> FirmId {
        FirmId::from_uuid(Uuid::from_u128(n))
    }

    fn new_user(email: &str, role: Role) -> NewUser {
        NewUser {
            email: Email::new(email).unwrap(),
            role,
            password: Password::new("correct horse battery staple").unwrap(),
        }
    }

    fn person(user: &User) -> Person {
        Person {
            id: user.id,
            email: user.email.clone(),
            role: user.role,
        }
    }

    fn new_key(expires_at: Option<OffsetDateTime>) -> NewApiKey {
        NewApiKey {
            label: KeyLabel::new("CRM sync").unwrap(),
            scopes: vec![
                ApiScope::AmlRead,
                ApiScope::CustomersRead,
                ApiScope::AmlRead,
            ],
            sandbox: false,
            expires_at,
        }
    }

    #[tokio::test]
    async fn a_created_user_is_stored_with_a_hash_of_the_password_never_the_password() {
        let f = fixture();
        let user = f
            .service
            .create_user(
                firm(1),
                new_user("Officer@Firm.example", Role::ComplianceOfficer),
            )
            .await
            .unwrap();
        assert_eq!(
            user.password_hash,
            FakeCredentials::hash_of(&Password::new("correct horse battery staple").unwrap())
        );
        assert!(!user.password_hash.contains("horse"));
        assert_eq!(
            (user.firm_id, user.role, user.created_at, user.disabled_at),
            (firm(1), Role::ComplianceOfficer, NOW, None)
        );
        assert_eq!(
            f.accounts.get_user(firm(1), user.id).await.unwrap(),
            Some(user)
        );
    }

    #[tokio::test]
    async fn an_email_taken_in_any_firm_in_any_case_is_refused() {
        let f = fixture();
        f.service
            .create_user(firm(1), new_user("officer@firm.example", Role::Staff))
            .await
            .unwrap();
        let refused = f
            .service
            .create_user(firm(2), new_user("OFFICER@firm.example", Role::Admin))
            .await;
        assert!(
            matches!(refused, Err(AccessError::DuplicateEmail)),
            "{refused:?}"
        );
        assert!(f.service.list_users(firm(2)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_password_that_cannot_be_hashed_stores_no_user() {
        let mut credentials = MockCredentials::new();
        credentials
            .expect_hash_password()
            .returning(|_| Err(InfrastructureError::internal("hasher unavailable")));
        let mut users = MockUserStore::new();
        users.expect_create_user().never();
        let service = AccessService::new(AccessPorts {
            users: Arc::new(users),
            api_keys: Arc::new(MemoryAccounts::default()),
            credentials: Arc::new(credentials),
            clock: Arc::new(ManualClock::new(NOW)),
            ids: Arc::new(SequentialIds::default()),
        });
        let refused = service
            .create_user(firm(1), new_user("a@firm.example", Role::Staff))
            .await;
        assert!(
            matches!(refused, Err(AccessError::Infrastructure(_))),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn users_are_listed_by_email_and_only_the_firms_own() {
        let f = fixture();
        for email in [
            "carol@firm.example",
            "Alice@firm.example",
            "bob@firm.example",
        ] {
            f.service
                .create_user(firm(1), new_user(email, Role::Staff))
                .await
                .unwrap();
        }
        f.service
            .create_user(firm(2), new_user("aaron@other.example", Role::Admin))
            .await
            .unwrap();
        let emails: Vec<String> = f
            .service
            .list_users(firm(1))
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.email.to_string())
            .collect();
        assert_eq!(
            emails,
            [
                "Alice@firm.example",
                "bob@firm.example",
                "carol@firm.example"
            ]
        );
    }

    #[tokio::test]
    async fn a_person_cannot_change_their_own_role_or_disable_themselves() {
        let f = fixture();
        let admin = f
            .service
            .create_user(firm(1), new_user("admin@firm.example", Role::Admin))
            .await
            .unwrap();
        let me = person(&admin);
        let demoted = f
            .service
            .change_role(firm(1), &me, admin.id, Role::Staff)
            .await;
        assert!(
            matches!(demoted, Err(AccessError::OwnAccount)),
            "{demoted:?}"
        );
        let disabled = f.service.set_disabled(firm(1), &me, admin.id, true).await;
        assert!(
            matches!(disabled, Err(AccessError::OwnAccount)),
            "{disabled:?}"
        );
        assert_eq!(
            f.accounts.get_user(firm(1), admin.id).await.unwrap(),
            Some(admin)
        );
    }

    #[tokio::test]
    async fn an_admin_changes_another_users_role() {
        let f = fixture();
        let admin = f
            .service
            .create_user(firm(1), new_user("admin@firm.example", Role::Admin))
            .await
            .unwrap();
        let staff = f
            .service
            .create_user(firm(1), new_user("staff@firm.example", Role::Staff))
            .await
            .unwrap();
        let promoted = f
            .service
            .change_role(firm(1), &person(&admin), staff.id, Role::ComplianceOfficer)
            .await
            .unwrap();
        assert_eq!(promoted.role, Role::ComplianceOfficer);
        assert_eq!(
            f.accounts.get_user(firm(1), staff.id).await.unwrap(),
            Some(promoted)
        );
    }

    #[tokio::test]
    async fn another_firms_user_is_never_found_so_never_changed() {
        let f = fixture();
        let admin = f
            .service
            .create_user(firm(1), new_user("admin@firm.example", Role::Admin))
            .await
            .unwrap();
        let stranger = f
            .service
            .create_user(firm(2), new_user("staff@other.example", Role::Staff))
            .await
            .unwrap();
        let me = person(&admin);
        let role = f
            .service
            .change_role(firm(1), &me, stranger.id, Role::Admin)
            .await;
        assert!(matches!(role, Err(AccessError::UserNotFound)), "{role:?}");
        let disabled = f
            .service
            .set_disabled(firm(1), &me, stranger.id, true)
            .await;
        assert!(
            matches!(disabled, Err(AccessError::UserNotFound)),
            "{disabled:?}"
        );
        let unknown = UserId::from_uuid(Uuid::from_u128(999));
        let role = f
            .service
            .change_role(firm(1), &me, unknown, Role::Admin)
            .await;
        assert!(matches!(role, Err(AccessError::UserNotFound)), "{role:?}");
        assert_eq!(
            f.accounts.get_user(firm(2), stranger.id).await.unwrap(),
            Some(stranger)
        );
    }

    #[tokio::test]
    async fn disabling_twice_keeps_the_first_time_and_enabling_clears_it() {
        let f = fixture();
        let admin = f
            .service
            .create_user(firm(1), new_user("admin@firm.example", Role::Admin))
            .await
            .unwrap();
        let staff = f
            .service
            .create_user(firm(1), new_user("staff@firm.example", Role::Staff))
            .await
            .unwrap();
        let me = person(&admin);
        let disabled = f
            .service
            .set_disabled(firm(1), &me, staff.id, true)
            .await
            .unwrap();
        assert_eq!(disabled.disabled_at, Some(NOW));
        assert!(!disabled.is_active());
        f.clock.advance(Duration::hours(1));
        let again = f
            .service
            .set_disabled(firm(1), &me, staff.id, true)
            .await
            .unwrap();
        assert_eq!(again.disabled_at, Some(NOW));
        let enabled = f
            .service
            .set_disabled(firm(1), &me, staff.id, false)
            .await
            .unwrap();
        assert_eq!(enabled.disabled_at, None);
        assert_eq!(
            f.accounts.get_user(firm(1), staff.id).await.unwrap(),
            Some(enabled)
        );
    }

    #[tokio::test]
    async fn an_api_key_is_shown_once_and_stored_only_as_its_hash_with_sorted_scopes() {
        let f = fixture();
        let expiry = NOW + Duration::days(90);
        let issued = f
            .service
            .create_api_key(firm(1), new_key(Some(expiry)))
            .await
            .unwrap();
        assert!(issued.key.starts_with("kyc_live_"));
        assert!(!format!("{issued:?}").contains(&issued.key));
        let record = &issued.record;
        assert_eq!(record.label, "CRM sync");
        assert_eq!(record.scopes, ["customers:read", "aml:read"]);
        assert_eq!(record.prefix, issued.key[..12]);
        assert_eq!(record.last4, issued.key[issued.key.len() - 4..]);
        assert_eq!(
            record.sha256,
            crate::testkit::memory::sha256_hex(issued.key.as_bytes())
        );
        assert_eq!(
            (record.expires_at, record.revoked_at, record.created_at),
            (Some(expiry), None, NOW)
        );
        assert_eq!(
            f.service.list_api_keys(firm(1)).await.unwrap(),
            vec![issued.record.clone()]
        );
        let sandbox = f
            .service
            .create_api_key(
                firm(1),
                NewApiKey {
                    sandbox: true,
                    ..new_key(None)
                },
            )
            .await
            .unwrap();
        assert!(sandbox.key.starts_with("kyc_test_"));
    }

    #[tokio::test]
    async fn an_expiry_that_is_not_in_the_future_is_refused_and_nothing_is_stored() {
        let f = fixture();
        for expiry in [NOW - Duration::seconds(1), NOW] {
            let refused = f
                .service
                .create_api_key(firm(1), new_key(Some(expiry)))
                .await;
            assert!(
                matches!(refused, Err(AccessError::ExpiryInPast)),
                "{refused:?}"
            );
        }
        assert!(f.service.list_api_keys(firm(1)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn revoking_twice_keeps_the_first_revocation_and_another_firms_key_is_not_found() {
        let f = fixture();
        let issued = f
            .service
            .create_api_key(firm(1), new_key(None))
            .await
            .unwrap();
        let stranger = f.service.revoke_api_key(firm(2), issued.record.id).await;
        assert!(
            matches!(stranger, Err(AccessError::ApiKeyNotFound)),
            "{stranger:?}"
        );
        f.clock.advance(Duration::minutes(1));
        let revoked = f
            .service
            .revoke_api_key(firm(1), issued.record.id)
            .await
            .unwrap();
        assert_eq!(revoked.revoked_at, Some(NOW + Duration::minutes(1)));
        f.clock.advance(Duration::minutes(1));
        let again = f
            .service
            .revoke_api_key(firm(1), issued.record.id)
            .await
            .unwrap();
        assert_eq!(again, revoked);
        let unknown = ApiKeyId::from_uuid(Uuid::from_u128(999));
        let missing = f.service.revoke_api_key(firm(1), unknown).await;
        assert!(
            matches!(missing, Err(AccessError::ApiKeyNotFound)),
            "{missing:?}"
        );
    }
}
