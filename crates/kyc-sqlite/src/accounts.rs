//! Firms, users, sessions and API keys on SQLite.

use async_trait::async_trait;
use kyc_domain::events::Role;
use kyc_domain::ids::{ApiKeyId, FirmId, UserId};
use kyc_domain::ports::{
    ApiKeyRecord, ApiKeyStore, CreateUserError, Firm, FirmStore, InfrastructureError, Session,
    SessionStore, User, UserStore,
};
use kyc_domain::values::Email;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use crate::{
    SqliteStore, from_json, from_micros, from_micros_opt, infra, is_unique_violation, micros,
    to_json, uuid,
};

fn firm_from_row(row: &SqliteRow) -> Result<Firm, InfrastructureError> {
    Ok(Firm {
        id: FirmId::from_uuid(uuid(&row.try_get::<String, _>("id").map_err(infra)?)?),
        name: row.try_get("name").map_err(infra)?,
        created_at: from_micros(row.try_get("created_at").map_err(infra)?)?,
    })
}

fn user_from_row(row: &SqliteRow) -> Result<User, InfrastructureError> {
    let role: String = row.try_get("role").map_err(infra)?;
    Ok(User {
        id: UserId::from_uuid(uuid(&row.try_get::<String, _>("id").map_err(infra)?)?),
        firm_id: FirmId::from_uuid(uuid(&row.try_get::<String, _>("firm_id").map_err(infra)?)?),
        email: Email::new(row.try_get::<String, _>("email").map_err(infra)?)
            .map_err(InfrastructureError::internal)?,
        role: Role::parse(&role)
            .ok_or_else(|| InfrastructureError::internal(format!("unknown role {role:?}")))?,
        password_hash: row.try_get("password_hash").map_err(infra)?,
        created_at: from_micros(row.try_get("created_at").map_err(infra)?)?,
        disabled_at: from_micros_opt(row.try_get("disabled_at").map_err(infra)?)?,
    })
}

fn session_from_row(row: &SqliteRow) -> Result<Session, InfrastructureError> {
    Ok(Session {
        token_hash: row.try_get("token_hash").map_err(infra)?,
        user_id: UserId::from_uuid(uuid(&row.try_get::<String, _>("user_id").map_err(infra)?)?),
        firm_id: FirmId::from_uuid(uuid(&row.try_get::<String, _>("firm_id").map_err(infra)?)?),
        created_at: from_micros(row.try_get("created_at").map_err(infra)?)?,
        last_seen_at: from_micros(row.try_get("last_seen_at").map_err(infra)?)?,
        expires_at: from_micros(row.try_get("expires_at").map_err(infra)?)?,
    })
}

fn api_key_from_row(row: &SqliteRow) -> Result<ApiKeyRecord, InfrastructureError> {
    Ok(ApiKeyRecord {
        id: ApiKeyId::from_uuid(uuid(&row.try_get::<String, _>("id").map_err(infra)?)?),
        firm_id: FirmId::from_uuid(uuid(&row.try_get::<String, _>("firm_id").map_err(infra)?)?),
        label: row.try_get("label").map_err(infra)?,
        scopes: from_json(&row.try_get::<String, _>("scopes").map_err(infra)?)?,
        prefix: row.try_get("prefix").map_err(infra)?,
        last4: row.try_get("last4").map_err(infra)?,
        sha256: row.try_get("sha256").map_err(infra)?,
        expires_at: from_micros_opt(row.try_get("expires_at").map_err(infra)?)?,
        revoked_at: from_micros_opt(row.try_get("revoked_at").map_err(infra)?)?,
        created_at: from_micros(row.try_get("created_at").map_err(infra)?)?,
    })
}

#[async_trait]
impl FirmStore for SqliteStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm.id))]
    async fn create_firm(&self, firm: &Firm) -> Result<(), InfrastructureError> {
        let _turn = self.write_turn().await;
        sqlx::query("INSERT INTO firms (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(firm.id.to_string())
            .bind(&firm.name)
            .bind(micros(firm.created_at))
            .execute(&self.pool)
            .await
            .map_err(infra)?;
        Ok(())
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %id))]
    async fn get_firm(&self, id: FirmId) -> Result<Option<Firm>, InfrastructureError> {
        sqlx::query("SELECT id, name, created_at FROM firms WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(infra)?
            .as_ref()
            .map(firm_from_row)
            .transpose()
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %id))]
    async fn rename_firm(&self, id: FirmId, name: &str) -> Result<bool, InfrastructureError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("UPDATE firms SET name = $1 WHERE id = $2")
            .bind(name)
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(infra)?;
        Ok(done.rows_affected() == 1)
    }
}

const USER_COLUMNS: &str =
    "SELECT id, firm_id, email, role, password_hash, created_at, disabled_at FROM users";

#[async_trait]
impl UserStore for SqliteStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %user.firm_id))]
    async fn create_user(&self, user: &User) -> Result<(), CreateUserError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO users (id, firm_id, email, email_normalized, role, password_hash, created_at, disabled_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(user.id.to_string())
        .bind(user.firm_id.to_string())
        .bind(user.email.as_str())
        .bind(user.email.normalized())
        .bind(user.role.as_str())
        .bind(&user.password_hash)
        .bind(micros(user.created_at))
        .bind(user.disabled_at.map(micros))
        .execute(&self.pool)
        .await
        .map_err(|error| {
            if is_unique_violation(&error, "users.email_normalized") {
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
            .bind(firm.to_string())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(infra)?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    async fn list_users(&self, firm: FirmId) -> Result<Vec<User>, InfrastructureError> {
        sqlx::query(&format!(
            "{USER_COLUMNS} WHERE firm_id = $1 ORDER BY email_normalized, id"
        ))
        .bind(firm.to_string())
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
        let _turn = self.write_turn().await;
        let done = sqlx::query("UPDATE users SET role = $1 WHERE firm_id = $2 AND id = $3")
            .bind(role.as_str())
            .bind(firm.to_string())
            .bind(id.to_string())
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
        let _turn = self.write_turn().await;
        let done = sqlx::query("UPDATE users SET disabled_at = $1 WHERE firm_id = $2 AND id = $3")
            .bind(disabled_at.map(micros))
            .bind(firm.to_string())
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(infra)?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %session.firm_id))]
    async fn create_session(&self, session: &Session) -> Result<(), InfrastructureError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, firm_id, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&session.token_hash)
        .bind(session.user_id.to_string())
        .bind(session.firm_id.to_string())
        .bind(micros(session.created_at))
        .bind(micros(session.last_seen_at))
        .bind(micros(session.expires_at))
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
        let _turn = self.write_turn().await;
        // Never moves last_seen_at backwards when two requests race.
        let done = sqlx::query(
            "UPDATE sessions SET last_seen_at = max(last_seen_at, $1) WHERE token_hash = $2",
        )
        .bind(micros(at))
        .bind(token_hash)
        .execute(&self.pool)
        .await
        .map_err(infra)?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"))]
    async fn delete_session(&self, token_hash: &str) -> Result<bool, InfrastructureError> {
        let _turn = self.write_turn().await;
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
impl ApiKeyStore for SqliteStore {
    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %key.firm_id))]
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), InfrastructureError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO api_keys (id, firm_id, label, scopes, prefix, last4, sha256, expires_at, revoked_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(key.id.to_string())
        .bind(key.firm_id.to_string())
        .bind(&key.label)
        .bind(to_json(&key.scopes)?)
        .bind(&key.prefix)
        .bind(&key.last4)
        .bind(&key.sha256)
        .bind(key.expires_at.map(micros))
        .bind(key.revoked_at.map(micros))
        .bind(micros(key.created_at))
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
        sqlx::query(&format!("{API_KEY_COLUMNS} WHERE sha256 = $1"))
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await
            .map_err(infra)?
            .as_ref()
            .map(api_key_from_row)
            .transpose()
    }

    #[tracing::instrument(skip_all, level = "debug", err(level = "debug"), fields(firm_id = %firm))]
    async fn list_api_keys(&self, firm: FirmId) -> Result<Vec<ApiKeyRecord>, InfrastructureError> {
        sqlx::query(&format!(
            "{API_KEY_COLUMNS} WHERE firm_id = $1 ORDER BY created_at DESC, id DESC"
        ))
        .bind(firm.to_string())
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
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE firm_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(micros(at))
        .bind(firm.to_string())
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(infra)?;
        Ok(done.rows_affected() == 1)
    }
}
