//! The wall clock and the id generator: the two things the pure domain asks the outside world for.

use hmac::{Hmac, Mac};
use kyc_domain::ids::{CustomerId, ExternalUserId};
use kyc_domain::ports::{Clock, IdGenerator, IssuedToken};
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

/// UUID v7 customer ids and link tokens derived from the server secret.
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
}
