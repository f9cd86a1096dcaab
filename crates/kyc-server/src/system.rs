//! The wall clock, the id generator and the credentials: what the pure domain asks the outside
//! world for.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher, SaltString};
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use kyc_domain::ids::{ApiKeyId, CustomerId, ExternalUserId, UserId};
use kyc_domain::ports::{
    Clock, Credentials, IdGenerator, InfrastructureError, IssuedToken, MintedApiKey,
    WebhookEndpointId,
};
use kyc_domain::values::Password;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

/// Now, from the operating system, in UTC.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// UUID v7 ids and link tokens derived from the server secret.
pub struct ServerIds {
    link_secret: SecretSlice<u8>,
}

impl std::fmt::Debug for ServerIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIds").finish_non_exhaustive()
    }
}

impl ServerIds {
    /// Ids whose link tokens are keyed by `link_secret`.
    pub fn new(link_secret: &[u8]) -> Self {
        Self {
            link_secret: SecretSlice::from(link_secret.to_vec()),
        }
    }
}

impl IdGenerator for ServerIds {
    fn customer_id(&self) -> CustomerId {
        CustomerId::from_uuid(Uuid::now_v7())
    }

    fn user_id(&self) -> UserId {
        UserId::from_uuid(Uuid::now_v7())
    }

    fn api_key_id(&self) -> ApiKeyId {
        ApiKeyId::from_uuid(Uuid::now_v7())
    }

    fn webhook_endpoint_id(&self) -> WebhookEndpointId {
        WebhookEndpointId::from_uuid(Uuid::now_v7())
    }

    fn link_token(&self, attempt: &ExternalUserId) -> IssuedToken {
        // An HMAC, not a random draw: every replica and every retry derives the same token for
        // the same attempt, and nobody without the secret can guess it. 16 bytes = 128 bits.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.link_secret.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(attempt.as_str().as_bytes());
        let digest = mac.finalize().into_bytes();
        let token = base64_url(&digest[..16]);
        IssuedToken {
            token_hash: sha256_hex(&token),
            token,
        }
    }
}

/// argon2id password hashes and API keys drawn from the operating system's random source.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemCredentials;

#[async_trait]
impl Credentials for SystemCredentials {
    async fn hash_password(&self, password: &Password) -> Result<String, InfrastructureError> {
        // Hashing takes tens of milliseconds of CPU by design: off the async workers, so requests
        // on the same runtime are not held up by it.
        let password = password.clone();
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(InfrastructureError::internal)?
    }

    fn mint_api_key(&self, sandbox: bool) -> MintedApiKey {
        mint_api_key(sandbox)
    }

    fn mint_webhook_secret(&self) -> String {
        mint_webhook_secret()
    }
}

/// An argon2id hash in PHC string form, with the crate's default (OWASP-recommended) parameters
/// and a fresh salt. Blocks for as long as hashing takes.
///
/// # Errors
/// Only if hashing itself fails, which the default parameters never cause.
pub fn hash_password(password: &Password) -> Result<String, InfrastructureError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| InfrastructureError::internal(format!("hashing a password: {error}")))
}

/// A new key: `kyc_live_` or `kyc_test_` followed by 43 URL-safe characters (256 random bits),
/// with the parts storage keeps: the first 12 characters, the last 4, and the SHA-256.
pub fn mint_api_key(sandbox: bool) -> MintedApiKey {
    let mut random = [0_u8; 32];
    rand::thread_rng().fill_bytes(&mut random);
    let prefix = if sandbox { "kyc_test_" } else { "kyc_live_" };
    let key = format!("{prefix}{}", base64_url(&random));
    MintedApiKey {
        prefix: key.chars().take(12).collect(),
        last4: key.chars().skip(key.chars().count() - 4).collect(),
        sha256: sha256_hex(&key),
        key,
    }
}

/// A new Standard Webhooks secret: `whsec_` and the standard base64 of 24 random bytes.
pub fn mint_webhook_secret() -> String {
    use base64::Engine as _;
    let mut random = [0_u8; 24];
    rand::thread_rng().fill_bytes(&mut random);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(random)
    )
}

/// Unpadded base64url.
pub fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The SHA-256 of `text`, lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHash, PasswordVerifier};
    use kyc_domain::ids::AttemptNumber;

    use super::*;

    fn attempt(n: u32) -> ExternalUserId {
        ExternalUserId::for_attempt(
            CustomerId::from_uuid(Uuid::from_u128(42)),
            AttemptNumber::new(n).unwrap(),
        )
    }

    #[test]
    fn link_tokens_are_stable_per_attempt_and_differ_between_attempts_and_secrets() {
        let ids = ServerIds::new(b"a-secret-of-at-least-thirty-two-chars");
        let first = ids.link_token(&attempt(1));
        assert_eq!(first, ids.link_token(&attempt(1)));
        assert_ne!(first.token, ids.link_token(&attempt(2)).token);
        let other = ServerIds::new(b"another-secret-of-thirty-two-chars!!");
        assert_ne!(first.token, other.link_token(&attempt(1)).token);
    }

    #[test]
    fn a_link_token_is_128_bits_of_base64url_stored_as_its_sha256() {
        let issued = ServerIds::new(b"k").link_token(&attempt(1));
        assert_eq!(issued.token.len(), 22);
        assert!(
            issued
                .token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(issued.token_hash, sha256_hex(&issued.token));
        assert_eq!(issued.token_hash.len(), 64);
        assert_eq!(issued.token_hash, issued.token_hash.to_lowercase());
    }

    #[test]
    fn customer_ids_are_version_7() {
        let id = ServerIds::new(b"k").customer_id();
        assert_eq!(id.as_uuid().get_version_num(), 7);
    }

    #[test]
    fn an_api_key_has_its_prefix_and_enough_random_characters_and_is_stored_only_hashed() {
        let live = SystemCredentials.mint_api_key(false);
        let key = &live.key;
        let random = key.strip_prefix("kyc_live_").unwrap();
        assert_eq!(random.len(), 43);
        assert!(
            random
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(live.prefix, key[..12]);
        assert_eq!(live.last4, key[key.len() - 4..]);
        assert_eq!(live.sha256, sha256_hex(key));
        assert!(!format!("{live:?}").contains(random));
        let test = SystemCredentials.mint_api_key(true);
        assert!(test.key.starts_with("kyc_test_"));
        assert_ne!(&test.key, key);
    }

    #[tokio::test]
    async fn passwords_are_hashed_with_argon2id_and_verify() {
        let password = Password::new("correct horse battery staple").unwrap();
        let hash = SystemCredentials.hash_password(&password).await.unwrap();
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
        let again = SystemCredentials.hash_password(&password).await.unwrap();
        assert_ne!(hash, again, "each hash has its own salt");
    }

    #[test]
    fn user_and_api_key_ids_are_version_7() {
        let ids = ServerIds::new(b"k");
        assert_eq!(ids.user_id().as_uuid().get_version_num(), 7);
        assert_eq!(ids.api_key_id().as_uuid().get_version_num(), 7);
    }
}
