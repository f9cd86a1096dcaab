//! Firms, users, sessions and API keys on Postgres. API keys are looked up through the key
//! cache of `keys` while it is listening for changes.

use async_trait::async_trait;
use kyc_domain::events::Role;
use kyc_domain::ids::{ApiKeyId, FirmId, UserId};
use kyc_domain::ports::{
    ApiKeyRecord, ApiKeyStore, CreateUserError, Firm, FirmStore, InfrastructureError, Session,
    SessionStore, User, UserStore,
};
use kyc_domain::values::Email;
use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;

use crate::keys::Lookup;
use crate::{PostgresStore, at_micros, infra, is_unique_violation};
use uuid::Uuid;

fn firm_from_row(row: &PgRow) -> Result<Firm, InfrastructureError> {
    Ok(Firm {
        id: FirmId::from_uuid(row.try_get::<Uuid, _>("id").map_err(infra)?),
        name: row.try_get("name").map_err(infra)?,
        created_at: row.try_get("created_at").map_err(infra)?,
    })
}

fn user_from_row(row: &PgRow) -> Result<User, InfrastructureError> {
    let role: String = row.try_get("role").map_err(infra)?;
    Ok(User {
        id: UserId::from_uuid(row.try_get::<Uuid, _>("id").map_err(infra)?),
        firm_id: FirmId::from_uuid(row.try_get::<Uuid, _>("firm_id").map_err(infra)?),
        email: Email::new(row.try_get::<String, _>("email").map_err(infra)?)
            .map_err(InfrastructureError::internal)?,
        role: Role::parse(&role)
            .ok_or_else(|| InfrastructureError::internal(format!("unknown role {role:?}")))?,
        password_hash: row.try_get("password_hash").map_err(infra)?,
        created_at: row.try_get("created_at").map_err(infra)?,
        disabled_at: row.try_get("disabled_at").map_err(infra)?,
    })
}

fn session_from_row(row: &PgRow) -> Result<Session, InfrastructureError> {
    Ok(Session {
        token_hash: row.try_get("token_hash").map_err(infra)?,
        user_id: UserId::from_uuid(row.try_get::<Uuid, _>("user_id").map_err(infra)?),
        firm_id: FirmId::from_uuid(row.try_get::<Uuid, _>("firm_id").map_err(infra)?),
        created_at: row.try_get("created_at").map_err(infra)?,
        last_seen_at: row.try_get("last_seen_at").map_err(infra)?,
        expires_at: row.try_get("expires_at").map_err(infra)?,
    })
}

fn api_key_from_row(row: &PgRow) -> Result<ApiKeyRecord, InfrastructureError> {
    Ok(ApiKeyRecord {
        id: ApiKeyId::from_uuid(row.try_get::<Uuid, _>("id").map_err(infra)?),
        firm_id: FirmId::from_uuid(row.try_get::<Uuid, _>("firm_id").map_err(infra)?),
        label: row.try_get("label").map_err(infra)?,
        scopes: row.try_get("scopes").map_err(infra)?,
        prefix: row.try_get("prefix").map_err(infra)?,
        last4: row.try_get("last4").map_err(infra)?,
        sha256: row.try_get("sha256").map_err(infra)?,
        expires_at: row.try_get("expires_at").map_err(infra)?,
        revoked_at: row.try_get("revoked_at").map_err(infra)?,
        created_at: row.try_get("created_at").map_err(infra)?,
    })
}

#[async_trait]
impl FirmStore for PostgresStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm.id))]
    async fn create_firm(&self, firm: &Firm) -> Result<(), InfrastructureError> {
        sqlx::query("INSERT INTO firms (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(firm.id.as_uuid())
            .bind(&firm.name)
            .bind(at_micros(firm.created_at))
            .execute(&self.pool)
            .await
            .map_err(infra)?;
        Ok(())
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %id))]
    async fn get_firm(&self, id: FirmId) -> Result<Option<Firm>, InfrastructureError> {
        sqlx::query("SELECT id, name, created_at FROM firms WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(infra)?
            .as_ref()
            .map(firm_from_row)
            .transpose()
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %id))]
    async fn rename_firm(&self, id: FirmId, name: &str) -> Result<bool, InfrastructureError> {
        let done = sqlx::query("UPDATE firms SET name = $1 WHERE id = $2")
            .bind(name)
            .bind(id.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(infra)?;
        Ok(done.rows_affected() == 1)
    }
}

const USER_COLUMNS: &str =
    "SELECT id, firm_id, email, role, password_hash, created_at, disabled_at FROM users";

#[async_trait]
impl UserStore for PostgresStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %user.firm_id))]
    async fn create_user(&self, user: &User) -> Result<(), CreateUserError> {
        sqlx::query(
            "INSERT INTO users (id, firm_id, email, email_normalized, role, password_hash, created_at, disabled_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(user.id.as_uuid())
        .bind(user.firm_id.as_uuid())
        .bind(user.email.as_str())
        .bind(user.email.normalized())
        .bind(user.role.as_str())
        .bind(&user.password_hash)
        .bind(at_micros(user.created_at))
        .bind(user.disabled_at.map(at_micros))
        .execute(&self.pool)
        .await
        .map_err(|error| {
            if is_unique_violation(&error, "users_email_key") {
                CreateUserError::DuplicateEmail
            } else {
                CreateUserError::Infrastructure(infra(error))
            }
        })?;
        Ok(())
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>, InfrastructureError> {
        sqlx::query(&format!("{USER_COLUMNS} WHERE email_normalized = $1"))
            .bind(email.normalized())
            .fetch_optional(&self.pool)
            .await
            .map_err(infra)?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    async fn get_user(
        &self,
        firm: FirmId,
        id: UserId,
    ) -> Result<Option<User>, InfrastructureError> {
        sqlx::query(&format!("{USER_COLUMNS} WHERE firm_id = $1 AND id = $2"))
            .bind(firm.as_uuid())
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(infra)?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    async fn list_users(&self, firm: FirmId) -> Result<Vec<User>, InfrastructureError> {
        // "C": by character code, as the other backends order, whatever the database's collation.
        sqlx::query(&format!(
            "{USER_COLUMNS} WHERE firm_id = $1 ORDER BY email_normalized COLLATE \"C\", id"
        ))
        .bind(firm.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(infra)?
        .iter()
        .map(user_from_row)
        .collect()
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm, user_id = %id))]
    async fn set_user_role(
        &self,
        firm: FirmId,
        id: UserId,
        role: Role,
    ) -> Result<bool, InfrastructureError> {
        let done = sqlx::query("UPDATE users SET role = $1 WHERE firm_id = $2 AND id = $3")
            .bind(role.as_str())
            .bind(firm.as_uuid())
            .bind(id.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(infra)?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm, user_id = %id))]
    async fn set_user_disabled(
        &self,
        firm: FirmId,
        id: UserId,
        disabled_at: Option<OffsetDateTime>,
    ) -> Result<bool, InfrastructureError> {
        let done = sqlx::query("UPDATE users SET disabled_at = $1 WHERE firm_id = $2 AND id = $3")
            .bind(disabled_at.map(at_micros))
            .bind(firm.as_uuid())
            .bind(id.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(infra)?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %session.firm_id))]
    async fn create_session(&self, session: &Session) -> Result<(), InfrastructureError> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, firm_id, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&session.token_hash)
        .bind(session.user_id.as_uuid())
        .bind(session.firm_id.as_uuid())
        .bind(at_micros(session.created_at))
        .bind(at_micros(session.last_seen_at))
        .bind(at_micros(session.expires_at))
        .execute(&self.pool)
        .await
        .map_err(infra)?;
        Ok(())
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn get_session(&self, token_hash: &str) -> Result<Option<Session>, InfrastructureError> {
        sqlx::query(
            "SELECT token_hash, user_id, firm_id, created_at, last_seen_at, expires_at FROM sessions WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(infra)?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn touch_session(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> Result<bool, InfrastructureError> {
        // Never moves last_seen_at backwards when two requests race.
        let done = sqlx::query(
            "UPDATE sessions SET last_seen_at = GREATEST(last_seen_at, $1) WHERE token_hash = $2",
        )
        .bind(at_micros(at))
        .bind(token_hash)
        .execute(&self.pool)
        .await
        .map_err(infra)?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn delete_session(&self, token_hash: &str) -> Result<bool, InfrastructureError> {
        let done = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .map_err(infra)?;
        Ok(done.rows_affected() == 1)
    }
}

const API_KEY_COLUMNS: &str = "SELECT id, firm_id, label, scopes, prefix, last4, sha256, expires_at, revoked_at, created_at FROM api_keys";

#[async_trait]
impl ApiKeyStore for PostgresStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %key.firm_id))]
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), InfrastructureError> {
        sqlx::query(
            "INSERT INTO api_keys (id, firm_id, label, scopes, prefix, last4, sha256, expires_at, revoked_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(key.id.as_uuid())
        .bind(key.firm_id.as_uuid())
        .bind(&key.label)
        .bind(&key.scopes)
        .bind(&key.prefix)
        .bind(&key.last4)
        .bind(&key.sha256)
        .bind(key.expires_at.map(at_micros))
        .bind(key.revoked_at.map(at_micros))
        .bind(at_micros(key.created_at))
        .execute(&self.pool)
        .await
        .map_err(infra)?;
        Ok(())
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn find_api_key_by_sha256(
        &self,
        sha256: &str,
    ) -> Result<Option<ApiKeyRecord>, InfrastructureError> {
        // Served from memory only while changes to `api_keys` are being heard (see `keys`).
        let ticket = match self.keys.lookup(sha256) {
            Lookup::Hit(record) => return Ok(Some(record)),
            Lookup::Miss(ticket) => Some(ticket),
            Lookup::Off => None,
        };
        let record = sqlx::query(&format!("{API_KEY_COLUMNS} WHERE sha256 = $1"))
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await
            .map_err(infra)?
            .as_ref()
            .map(api_key_from_row)
            .transpose()?;
        if let (Some(ticket), Some(record)) = (ticket, &record) {
            self.keys.insert(ticket, record);
        }
        Ok(record)
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    async fn list_api_keys(&self, firm: FirmId) -> Result<Vec<ApiKeyRecord>, InfrastructureError> {
        sqlx::query(&format!(
            "{API_KEY_COLUMNS} WHERE firm_id = $1 ORDER BY created_at DESC, id DESC"
        ))
        .bind(firm.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(infra)?
        .iter()
        .map(api_key_from_row)
        .collect()
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    async fn revoke_api_key(
        &self,
        firm: FirmId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<bool, InfrastructureError> {
        let revoked: Option<String> = sqlx::query_scalar(
            "UPDATE api_keys SET revoked_at = $1 WHERE firm_id = $2 AND id = $3 AND revoked_at IS NULL \
             RETURNING sha256",
        )
        .bind(at_micros(at))
        .bind(firm.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(infra)?;
        // Other processes hear of it from the trigger's notification; this one knows already.
        if let Some(sha256) = &revoked {
            self.keys.evict(sha256);
            // Returning only after the notification has had time to reach every listening server
            // (normally well under a millisecond, a few milliseconds on a loaded host) means that
            // whoever revokes through the service and then tries the key sees it refused
            // everywhere.
            tokio::time::sleep(crate::keys::REVOCATION_PROPAGATION).await;
        }
        Ok(revoked.is_some())
    }
}
