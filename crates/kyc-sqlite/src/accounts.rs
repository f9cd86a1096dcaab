//! API keys on SQLite: the shared statements (`kyc_store_support::accounts`, which also gives
//! firms, users and sessions whole), with no cache.

use async_trait::async_trait;
use kyc_domain::ids::{ApiKeyId, FirmId};
use kyc_domain::ports::{ApiKeyRecord, ApiKeyStore, InfrastructureError};
use kyc_store_support::accounts;
use time::OffsetDateTime;

use crate::SqliteStore;

#[async_trait]
impl ApiKeyStore for SqliteStore {
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), InfrastructureError> {
        accounts::create_api_key(self, key).await
    }

    async fn find_api_key_by_sha256(
        &self,
        sha256: &str,
    ) -> Result<Option<ApiKeyRecord>, InfrastructureError> {
        accounts::find_api_key_by_sha256(self, sha256).await
    }

    async fn list_api_keys(&self, firm: FirmId) -> Result<Vec<ApiKeyRecord>, InfrastructureError> {
        accounts::list_api_keys(self, firm).await
    }

    async fn revoke_api_key(
        &self,
        firm: FirmId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<bool, InfrastructureError> {
        Ok(accounts::revoke_api_key(self, firm, id, at)
            .await?
            .is_some())
    }
}
