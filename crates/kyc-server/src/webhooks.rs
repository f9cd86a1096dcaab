//! The provider webhook port of the HTTP adapter, implemented with the Sumsub adapter: the
//! `X-Payload-Digest` check on the raw bytes first, then the parse. It lives in the binary because
//! adapters never depend on each other (`kyc-http` knows nothing of Sumsub).

use axum::http::HeaderMap;
use kyc_domain::provider::ProviderEvent;
use kyc_http::{ProviderWebhooks, WebhookRejection};
use kyc_sumsub::webhook::{WebhookError, WebhookVerifier, parse_event};
use secrecy::SecretString;

/// Sumsub webhooks, verified with the webhook secret (the simulator's, when it is on).
pub struct SumsubWebhooks {
    verifier: WebhookVerifier,
}

impl std::fmt::Debug for SumsubWebhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SumsubWebhooks").finish_non_exhaustive()
    }
}

impl SumsubWebhooks {
    /// Webhooks signed with `secret`.
    pub fn new(secret: SecretString) -> Self {
        Self {
            verifier: WebhookVerifier::new(secret),
        }
    }
}

impl ProviderWebhooks for SumsubWebhooks {
    fn verify_and_parse(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<ProviderEvent, WebhookRejection> {
        self.verifier
            .verify(headers, body)
            .map_err(|error| WebhookRejection::Unauthenticated(error.to_string()))?;
        parse_event(body).map_err(|error| match error {
            WebhookError::Malformed(_) | WebhookError::InvalidTimestamp(_) => {
                WebhookRejection::Malformed(error.to_string())
            }
            // The parser reports no signature errors; should it ever, refusing is the safe side.
            WebhookError::MissingDigest
            | WebhookError::MissingAlgorithm
            | WebhookError::UnknownAlgorithm(_)
            | WebhookError::MalformedDigest
            | WebhookError::SignatureMismatch => {
                WebhookRejection::Unauthenticated(error.to_string())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use kyc_sumsub::DigestAlgorithm;

    use super::*;

    const SECRET: &str = "webhook-secret";
    const BODY: &str = r#"{"type":"applicantReviewed","applicantId":"5cb56e8e0a975a35f333cb83","externalUserId":"someone","createdAtMs":"2026-06-23 01:12:00.000","reviewResult":{"reviewAnswer":"GREEN"}}"#;

    fn signed(body: &str, secret: &str, algorithm: &str) -> HeaderMap {
        let digest = DigestAlgorithm::parse(algorithm)
            .unwrap()
            .sign(secret.as_bytes(), body.as_bytes());
        let mut headers = HeaderMap::new();
        headers.insert("x-payload-digest", digest.parse().unwrap());
        headers.insert("X-Payload-Digest-Alg", algorithm.parse().unwrap());
        headers
    }

    #[test]
    fn a_signed_webhook_becomes_a_provider_event() {
        let webhooks = SumsubWebhooks::new(SecretString::from(SECRET));
        for algorithm in ["HMAC_SHA1_HEX", "HMAC_SHA256_HEX", "HMAC_SHA512_HEX"] {
            let event = webhooks
                .verify_and_parse(&signed(BODY, SECRET, algorithm), BODY.as_bytes())
                .unwrap();
            assert_eq!(event.kind.name(), "applicantReviewed");
        }
    }

    #[test]
    fn a_wrong_or_missing_signature_is_unauthenticated_before_the_body_is_read() {
        let webhooks = SumsubWebhooks::new(SecretString::from(SECRET));
        let forged = signed(BODY, "another-secret", "HMAC_SHA256_HEX");
        assert!(matches!(
            webhooks.verify_and_parse(&forged, BODY.as_bytes()),
            Err(WebhookRejection::Unauthenticated(_))
        ));
        assert!(matches!(
            webhooks.verify_and_parse(&HeaderMap::new(), b"not even json"),
            Err(WebhookRejection::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_signed_body_that_is_not_an_event_is_malformed() {
        let webhooks = SumsubWebhooks::new(SecretString::from(SECRET));
        let body = "{not json";
        assert!(matches!(
            webhooks.verify_and_parse(&signed(body, SECRET, "HMAC_SHA256_HEX"), body.as_bytes()),
            Err(WebhookRejection::Malformed(_))
        ));
    }
}
