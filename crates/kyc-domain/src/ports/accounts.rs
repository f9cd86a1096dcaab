//! Tenancy and access: firms, back-office users, their sessions, and the API keys firms' CRMs use.
//! Storage keeps only hashes of secrets: an argon2id hash of each password (computed by the
//! caller), the SHA-256 of each session token and API key.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::InfrastructureError;
use crate::events::Role;
use crate::ids::{ApiKeyId, FirmId, UserId};
use crate::values::Email;

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firm {
    /// Id.
    pub id: FirmId,
    /// Display name.
    pub name: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// Storage of firms.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait FirmStore: Send + Sync {
    /// Stores a new firm.
    ///
    /// # Errors
    /// [`InfrastructureError`] only (an id already taken is an internal error: ids are generated).
    async fn create_firm(&self, firm: &Firm) -> Result<(), InfrastructureError>;

    /// The firm with this id.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn get_firm(&self, id: FirmId) -> Result<Option<Firm>, InfrastructureError>;

    /// Changes the firm's display name. Returns `false` for an unknown firm.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn rename_firm(&self, id: FirmId, name: &str) -> Result<bool, InfrastructureError>;
}

/// A back-office login. Emails are unique across all firms, because login asks for an email only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// The firm the user works for.
    pub firm_id: FirmId,
    /// Login, unique (case-insensitively) across firms.
    pub email: Email,
    /// What the user may do.
    pub role: Role,
    /// The argon2id hash in PHC string form, computed by the caller. Never the password.
    pub password_hash: String,
    /// When the user was created.
    pub created_at: OffsetDateTime,
    /// When an admin disabled the user, if one did. A disabled user cannot log in, and a session
    /// opened before is refused on its next request: the back office reads the user, and this
    /// field, on every request. Kept rather than deleted, so the audit trail still names them.
    pub disabled_at: Option<OffsetDateTime>,
}

impl User {
    /// Whether the user may log in and act.
    pub fn is_active(&self) -> bool {
        self.disabled_at.is_none()
    }
}

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    /// Some user, in any firm, already logs in with this email.
    #[error("a user with this email already exists")]
    DuplicateEmail,
    /// Infrastructure failure; nothing was written.
    #[error(transparent)]
    Infrastructure(#[from] InfrastructureError),
}

/// Storage of back-office users.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Stores a new user.
    ///
    /// # Errors
    /// [`CreateUserError::DuplicateEmail`] when the email (compared case-insensitively) is taken in
    /// any firm; [`CreateUserError::Infrastructure`] otherwise.
    async fn create_user(&self, user: &User) -> Result<(), CreateUserError>;

    /// The user logging in with this email (compared case-insensitively), whatever the firm.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>, InfrastructureError>;

    /// The firm's user with this id; `None` for another firm's.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn get_user(&self, firm: FirmId, id: UserId)
    -> Result<Option<User>, InfrastructureError>;

    /// The firm's users, disabled ones included, ordered by email (compared case-insensitively,
    /// character by character, whatever the database's collation). Never another firm's.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn list_users(&self, firm: FirmId) -> Result<Vec<User>, InfrastructureError>;

    /// Gives the firm's user `id` the role `role`. Returns `false`, and changes nothing, for an
    /// unknown id or another firm's user.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn set_user_role(
        &self,
        firm: FirmId,
        id: UserId,
        role: Role,
    ) -> Result<bool, InfrastructureError>;

    /// Sets when the firm's user `id` was disabled: `Some` disables them as of that time, `None`
    /// enables them again. Returns `false`, and changes nothing, for an unknown id or another
    /// firm's user.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn set_user_disabled(
        &self,
        firm: FirmId,
        id: UserId,
        disabled_at: Option<OffsetDateTime>,
    ) -> Result<bool, InfrastructureError>;
}

/// A logged-in browser session, found by the SHA-256 of its cookie token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the session token, lowercase hex. The token itself is never stored.
    pub token_hash: String,
    /// The user.
    pub user_id: UserId,
    /// The user's firm.
    pub firm_id: FirmId,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// The last request seen, for idle expiry.
    pub last_seen_at: OffsetDateTime,
    /// The absolute end of the session.
    pub expires_at: OffsetDateTime,
}

/// Storage of sessions.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn create_session(&self, session: &Session) -> Result<(), InfrastructureError>;

    /// The session with this token hash.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn get_session(&self, token_hash: &str) -> Result<Option<Session>, InfrastructureError>;

    /// Records activity at `at`. Returns `false` when no such session exists.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn touch_session(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> Result<bool, InfrastructureError>;

    /// Ends the session (logout or expiry). Returns `false` when no such session existed.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn delete_session(&self, token_hash: &str) -> Result<bool, InfrastructureError>;
}

/// An API key as stored: enough to recognise and display it, never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Id.
    pub id: ApiKeyId,
    /// The firm whose CRM uses it.
    pub firm_id: FirmId,
    /// A name chosen by the firm's admin.
    pub label: String,
    /// What it may do, in the contract's spelling.
    pub scopes: Vec<String>,
    /// The first 12 characters of the key, shown in the back office.
    pub prefix: String,
    /// The last 4 characters of the key, shown in the back office.
    pub last4: String,
    /// SHA-256 of the whole key, lowercase hex: what a request is matched by.
    pub sha256: String,
    /// When it stops working, if ever.
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// Storage of API keys.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Stores a new key.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), InfrastructureError>;

    /// The key whose SHA-256 is `sha256` (lowercase hex), revoked or not: the caller checks
    /// `revoked_at` and `expires_at`.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn find_api_key_by_sha256(
        &self,
        sha256: &str,
    ) -> Result<Option<ApiKeyRecord>, InfrastructureError>;

    /// The firm's keys, newest first.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn list_api_keys(&self, firm: FirmId) -> Result<Vec<ApiKeyRecord>, InfrastructureError>;

    /// Revokes the firm's key at `at`. Returns `false` for an unknown key, another firm's, or one
    /// already revoked (whose revocation time is kept).
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    async fn revoke_api_key(
        &self,
        firm: FirmId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<bool, InfrastructureError>;
}
