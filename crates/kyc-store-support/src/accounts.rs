//! Firms, users, sessions and API keys: each statement and row mapping once, for both backends.
//! The adapters implement the ports with [`crate::firm_store!`], [`crate::user_store!`] and
//! [`crate::session_store!`]; API keys keep a hand-written port because PostgreSQL serves them
//! through a cache of its own.

use kyc_domain::events::Role;
use kyc_domain::ids::{ApiKeyId, FirmId, UserId};
use kyc_domain::ports::{ApiKeyRecord, CreateUserError, Firm, InfrastructureError, Session, User};
use kyc_domain::values::Email;
use time::OffsetDateTime;

use crate::engine::{
    Arg, Columns, Dialect, Engine, Statement, Unique, all_rows, first_row, infra, parsed,
};

fn firm_from_row(row: &impl Columns) -> Result<Firm, InfrastructureError> {
    Ok(Firm {
        id: FirmId::from_uuid(row.id("id")?),
        name: row.text("name")?,
        created_at: row.time("created_at")?,
    })
}

fn user_from_row(row: &impl Columns) -> Result<User, InfrastructureError> {
    Ok(User {
        id: UserId::from_uuid(row.id("id")?),
        firm_id: FirmId::from_uuid(row.id("firm_id")?),
        email: Email::new(row.text("email")?).map_err(InfrastructureError::internal)?,
        role: parsed("role", &row.text("role")?, Role::parse)?,
        password_hash: row.text("password_hash")?,
        created_at: row.time("created_at")?,
        disabled_at: row.opt_time("disabled_at")?,
    })
}

fn session_from_row(row: &impl Columns) -> Result<Session, InfrastructureError> {
    Ok(Session {
        token_hash: row.text("token_hash")?,
        user_id: UserId::from_uuid(row.id("user_id")?),
        firm_id: FirmId::from_uuid(row.id("firm_id")?),
        created_at: row.time("created_at")?,
        last_seen_at: row.time("last_seen_at")?,
        expires_at: row.time("expires_at")?,
    })
}

fn api_key_from_row(row: &impl Columns) -> Result<ApiKeyRecord, InfrastructureError> {
    Ok(ApiKeyRecord {
        id: ApiKeyId::from_uuid(row.id("id")?),
        firm_id: FirmId::from_uuid(row.id("firm_id")?),
        label: row.text("label")?,
        scopes: row.text_list("scopes")?,
        prefix: row.text("prefix")?,
        last4: row.text("last4")?,
        sha256: row.text("sha256")?,
        expires_at: row.opt_time("expires_at")?,
        revoked_at: row.opt_time("revoked_at")?,
        created_at: row.time("created_at")?,
    })
}

/// Creates a firm.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm.id))]
pub async fn create_firm<E: Engine>(engine: &E, firm: &Firm) -> Result<(), InfrastructureError> {
    let statement = Statement::new("INSERT INTO firms (id, name, created_at) VALUES ($1, $2, $3)")
        .id(firm.id.as_uuid())
        .text(&firm.name)
        .time(firm.created_at);
    engine.execute(statement).await.map_err(infra)?;
    Ok(())
}

/// A firm by id.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %id))]
pub async fn get_firm<E: Engine>(
    engine: &E,
    id: FirmId,
) -> Result<Option<Firm>, InfrastructureError> {
    let statement =
        Statement::new("SELECT id, name, created_at FROM firms WHERE id = $1").id(id.as_uuid());
    first_row(engine, statement, firm_from_row).await
}

/// Renames a firm; whether it exists.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %id))]
pub async fn rename_firm<E: Engine>(
    engine: &E,
    id: FirmId,
    name: &str,
) -> Result<bool, InfrastructureError> {
    let statement = Statement::new("UPDATE firms SET name = $1 WHERE id = $2")
        .text(name)
        .id(id.as_uuid());
    Ok(engine.execute(statement).await.map_err(infra)? == 1)
}

const USER_COLUMNS: &str =
    "SELECT id, firm_id, email, role, password_hash, created_at, disabled_at FROM users";

/// Creates a user; an email already taken (in any firm) is refused.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %user.firm_id))]
pub async fn create_user<E: Engine>(engine: &E, user: &User) -> Result<(), CreateUserError> {
    let statement = Statement::new(
        "INSERT INTO users (id, firm_id, email, email_normalized, role, password_hash, created_at, disabled_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .id(user.id.as_uuid())
    .id(user.firm_id.as_uuid())
    .text(user.email.as_str())
    .text(user.email.normalized())
    .text(user.role.as_str())
    .text(&user.password_hash)
    .time(user.created_at)
    .opt_time(user.disabled_at);
    engine.execute(statement).await.map_err(|error| {
        if E::violates(&error, Unique::UserEmail) {
            CreateUserError::DuplicateEmail
        } else {
            CreateUserError::Infrastructure(infra(error))
        }
    })?;
    Ok(())
}

/// The user with an email, in whichever firm.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
pub async fn find_user_by_email<E: Engine>(
    engine: &E,
    email: &Email,
) -> Result<Option<User>, InfrastructureError> {
    let statement = Statement::new(format!("{USER_COLUMNS} WHERE email_normalized = $1"))
        .text(email.normalized());
    first_row(engine, statement, user_from_row).await
}

/// A user of a firm.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
pub async fn get_user<E: Engine>(
    engine: &E,
    firm: FirmId,
    id: UserId,
) -> Result<Option<User>, InfrastructureError> {
    let statement = Statement::new(format!("{USER_COLUMNS} WHERE firm_id = $1 AND id = $2"))
        .id(firm.as_uuid())
        .id(id.as_uuid());
    first_row(engine, statement, user_from_row).await
}

/// A firm's users by email, compared by character code on both backends.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
pub async fn list_users<E: Engine>(
    engine: &E,
    firm: FirmId,
) -> Result<Vec<User>, InfrastructureError> {
    // SQLite compares text by code already; PostgreSQL follows the database's collation unless
    // told "C".
    let order = match E::DIALECT {
        Dialect::Postgres => "ORDER BY email_normalized COLLATE \"C\", id",
        Dialect::Sqlite => "ORDER BY email_normalized, id",
    };
    let statement =
        Statement::new(format!("{USER_COLUMNS} WHERE firm_id = $1 {order}")).id(firm.as_uuid());
    all_rows(engine, statement, user_from_row).await
}

/// Sets a user's role; whether the user exists in the firm.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm, user_id = %id))]
pub async fn set_user_role<E: Engine>(
    engine: &E,
    firm: FirmId,
    id: UserId,
    role: Role,
) -> Result<bool, InfrastructureError> {
    let statement = Statement::new("UPDATE users SET role = $1 WHERE firm_id = $2 AND id = $3")
        .text(role.as_str())
        .id(firm.as_uuid())
        .id(id.as_uuid());
    Ok(engine.execute(statement).await.map_err(infra)? == 1)
}

/// Disables (or, with `None`, enables) a user; whether the user exists in the firm.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm, user_id = %id))]
pub async fn set_user_disabled<E: Engine>(
    engine: &E,
    firm: FirmId,
    id: UserId,
    disabled_at: Option<OffsetDateTime>,
) -> Result<bool, InfrastructureError> {
    let statement =
        Statement::new("UPDATE users SET disabled_at = $1 WHERE firm_id = $2 AND id = $3")
            .opt_time(disabled_at)
            .id(firm.as_uuid())
            .id(id.as_uuid());
    Ok(engine.execute(statement).await.map_err(infra)? == 1)
}

/// Records a new session.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %session.firm_id))]
pub async fn create_session<E: Engine>(
    engine: &E,
    session: &Session,
) -> Result<(), InfrastructureError> {
    let statement = Statement::new(
        "INSERT INTO sessions (token_hash, user_id, firm_id, created_at, last_seen_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .text(&session.token_hash)
    .id(session.user_id.as_uuid())
    .id(session.firm_id.as_uuid())
    .time(session.created_at)
    .time(session.last_seen_at)
    .time(session.expires_at);
    engine.execute(statement).await.map_err(infra)?;
    Ok(())
}

/// A session by the hash of its token.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
pub async fn get_session<E: Engine>(
    engine: &E,
    token_hash: &str,
) -> Result<Option<Session>, InfrastructureError> {
    let statement = Statement::new(
        "SELECT token_hash, user_id, firm_id, created_at, last_seen_at, expires_at FROM sessions WHERE token_hash = $1",
    )
    .text(token_hash);
    first_row(engine, statement, session_from_row).await
}

/// Moves a session's `last_seen_at` forward (never back, when two requests race).
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
pub async fn touch_session<E: Engine>(
    engine: &E,
    token_hash: &str,
    at: OffsetDateTime,
) -> Result<bool, InfrastructureError> {
    let sql = match E::DIALECT {
        Dialect::Postgres => {
            "UPDATE sessions SET last_seen_at = GREATEST(last_seen_at, $1) WHERE token_hash = $2"
        }
        Dialect::Sqlite => {
            "UPDATE sessions SET last_seen_at = max(last_seen_at, $1) WHERE token_hash = $2"
        }
    };
    let statement = Statement::new(sql).time(at).text(token_hash);
    Ok(engine.execute(statement).await.map_err(infra)? == 1)
}

/// Ends a session; whether it existed.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
pub async fn delete_session<E: Engine>(
    engine: &E,
    token_hash: &str,
) -> Result<bool, InfrastructureError> {
    let statement = Statement::new("DELETE FROM sessions WHERE token_hash = $1").text(token_hash);
    Ok(engine.execute(statement).await.map_err(infra)? == 1)
}

const API_KEY_COLUMNS: &str = "SELECT id, firm_id, label, scopes, prefix, last4, sha256, expires_at, revoked_at, created_at FROM api_keys";

/// Records a new API key.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %key.firm_id))]
pub async fn create_api_key<E: Engine>(
    engine: &E,
    key: &ApiKeyRecord,
) -> Result<(), InfrastructureError> {
    let statement = Statement::new(
        "INSERT INTO api_keys (id, firm_id, label, scopes, prefix, last4, sha256, expires_at, revoked_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .id(key.id.as_uuid())
    .id(key.firm_id.as_uuid())
    .text(&key.label)
    .arg(Arg::TextList(key.scopes.clone()))
    .text(&key.prefix)
    .text(&key.last4)
    .text(&key.sha256)
    .opt_time(key.expires_at)
    .opt_time(key.revoked_at)
    .time(key.created_at);
    engine.execute(statement).await.map_err(infra)?;
    Ok(())
}

/// An API key by the SHA-256 of its secret, as stored (no cache).
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
pub async fn find_api_key_by_sha256<E: Engine>(
    engine: &E,
    sha256: &str,
) -> Result<Option<ApiKeyRecord>, InfrastructureError> {
    let statement = Statement::new(format!("{API_KEY_COLUMNS} WHERE sha256 = $1")).text(sha256);
    first_row(engine, statement, api_key_from_row).await
}

/// A firm's API keys, newest first.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
pub async fn list_api_keys<E: Engine>(
    engine: &E,
    firm: FirmId,
) -> Result<Vec<ApiKeyRecord>, InfrastructureError> {
    let statement = Statement::new(format!(
        "{API_KEY_COLUMNS} WHERE firm_id = $1 ORDER BY created_at DESC, id DESC"
    ))
    .id(firm.as_uuid());
    all_rows(engine, statement, api_key_from_row).await
}

/// Revokes a key of a firm that is not revoked yet, returning the SHA-256 of the key revoked
/// (for a cache to forget), or `None` when there was no such key.
#[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
pub async fn revoke_api_key<E: Engine>(
    engine: &E,
    firm: FirmId,
    id: ApiKeyId,
    at: OffsetDateTime,
) -> Result<Option<String>, InfrastructureError> {
    let statement = Statement::new(
        "UPDATE api_keys SET revoked_at = $1 WHERE firm_id = $2 AND id = $3 AND revoked_at IS NULL \
         RETURNING sha256",
    )
    .time(at)
    .id(firm.as_uuid())
    .id(id.as_uuid());
    let rows = engine.execute_returning(statement).await.map_err(infra)?;
    rows.first().map(|row| row.text("sha256")).transpose()
}

/// Implements `FirmStore` for an adapter that is an [`Engine`].
#[macro_export]
macro_rules! firm_store {
    ($store:ty) => {
        #[$crate::reexport::async_trait]
        impl ::kyc_domain::ports::FirmStore for $store {
            async fn create_firm(
                &self,
                firm: &::kyc_domain::ports::Firm,
            ) -> Result<(), ::kyc_domain::ports::InfrastructureError> {
                $crate::accounts::create_firm(self, firm).await
            }

            async fn get_firm(
                &self,
                id: ::kyc_domain::ids::FirmId,
            ) -> Result<Option<::kyc_domain::ports::Firm>, ::kyc_domain::ports::InfrastructureError>
            {
                $crate::accounts::get_firm(self, id).await
            }

            async fn rename_firm(
                &self,
                id: ::kyc_domain::ids::FirmId,
                name: &str,
            ) -> Result<bool, ::kyc_domain::ports::InfrastructureError> {
                $crate::accounts::rename_firm(self, id, name).await
            }
        }
    };
}

/// Implements `UserStore` for an adapter that is an [`Engine`].
#[macro_export]
macro_rules! user_store {
    ($store:ty) => {
        #[$crate::reexport::async_trait]
        impl ::kyc_domain::ports::UserStore for $store {
            async fn create_user(
                &self,
                user: &::kyc_domain::ports::User,
            ) -> Result<(), ::kyc_domain::ports::CreateUserError> {
                $crate::accounts::create_user(self, user).await
            }

            async fn find_user_by_email(
                &self,
                email: &::kyc_domain::values::Email,
            ) -> Result<Option<::kyc_domain::ports::User>, ::kyc_domain::ports::InfrastructureError>
            {
                $crate::accounts::find_user_by_email(self, email).await
            }

            async fn get_user(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                id: ::kyc_domain::ids::UserId,
            ) -> Result<Option<::kyc_domain::ports::User>, ::kyc_domain::ports::InfrastructureError>
            {
                $crate::accounts::get_user(self, firm, id).await
            }

            async fn list_users(
                &self,
                firm: ::kyc_domain::ids::FirmId,
            ) -> Result<Vec<::kyc_domain::ports::User>, ::kyc_domain::ports::InfrastructureError>
            {
                $crate::accounts::list_users(self, firm).await
            }

            async fn set_user_role(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                id: ::kyc_domain::ids::UserId,
                role: ::kyc_domain::events::Role,
            ) -> Result<bool, ::kyc_domain::ports::InfrastructureError> {
                $crate::accounts::set_user_role(self, firm, id, role).await
            }

            async fn set_user_disabled(
                &self,
                firm: ::kyc_domain::ids::FirmId,
                id: ::kyc_domain::ids::UserId,
                disabled_at: Option<::time::OffsetDateTime>,
            ) -> Result<bool, ::kyc_domain::ports::InfrastructureError> {
                $crate::accounts::set_user_disabled(self, firm, id, disabled_at).await
            }
        }
    };
}

/// Implements `SessionStore` for an adapter that is an [`Engine`].
#[macro_export]
macro_rules! session_store {
    ($store:ty) => {
        #[$crate::reexport::async_trait]
        impl ::kyc_domain::ports::SessionStore for $store {
            async fn create_session(
                &self,
                session: &::kyc_domain::ports::Session,
            ) -> Result<(), ::kyc_domain::ports::InfrastructureError> {
                $crate::accounts::create_session(self, session).await
            }

            async fn get_session(
                &self,
                token_hash: &str,
            ) -> Result<
                Option<::kyc_domain::ports::Session>,
                ::kyc_domain::ports::InfrastructureError,
            > {
                $crate::accounts::get_session(self, token_hash).await
            }

            async fn touch_session(
                &self,
                token_hash: &str,
                at: ::time::OffsetDateTime,
            ) -> Result<bool, ::kyc_domain::ports::InfrastructureError> {
                $crate::accounts::touch_session(self, token_hash, at).await
            }

            async fn delete_session(
                &self,
                token_hash: &str,
            ) -> Result<bool, ::kyc_domain::ports::InfrastructureError> {
                $crate::accounts::delete_session(self, token_hash).await
            }
        }
    };
}
