//! API keys on Postgres: the statements are the shared ones (`kyc_store_support::accounts`, which
//! also gives firms, users and sessions whole); looked up through the key cache of `keys` while
//! it is listening for changes.

use async_trait::async_trait;
use kyc_domain::ids::{ApiKeyId, FirmId};
use kyc_domain::ports::{ApiKeyRecord, ApiKeyStore, InfrastructureError};
use kyc_store_support::accounts;
use time::OffsetDateTime;

use crate::PostgresStore;
use crate::keys::Lookup;

#[async_trait]
impl ApiKeyStore for PostgresStore {
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), InfrastructureError> {
        accounts::create_api_key(self, key).await
    }

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
        let record = accounts::find_api_key_by_sha256(self, sha256).await?;
        if let (Some(ticket), Some(record)) = (ticket, &record) {
            self.keys.insert(ticket, record);
        }
        Ok(record)
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
        let revoked = accounts::revoke_api_key(self, firm, id, at).await?;
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
