//! Inbound Sumsub webhooks: proving that a delivery came from Sumsub, and turning it into a
//! provider-neutral [`ProviderEvent`].
//!
//! Sumsub signs the raw body with the webhook's own secret (not the app secret) and names the HMAC
//! in `X-Payload-Digest-Alg`. Verification therefore runs on the exact bytes received, before any
//! JSON parsing, and compares in constant time. Header names are matched case-insensitively because
//! the casing on the wire is not documented.
//!
//! Sumsub has no event id, so the event key is the SHA-256 of the raw body: a redelivery of the same
//! event carries the same bytes and gets the same key. Ordering uses `createdAtMs`, a UTC string
//! `yyyy-MM-dd HH:mm:ss.fff` (not epoch milliseconds).

use std::fmt;

use hmac::{Hmac, Mac};
use http::HeaderMap;
use kyc_domain::ids::{ApplicantId, ExternalUserId};
use kyc_domain::provider::{
    ProviderEvent, ProviderEventKey, ProviderEventKind, RejectLabel, RejectType, ReviewAnswer,
    ReviewVerdict,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// The header carrying the hex digest of the body.
pub const DIGEST_HEADER: &str = "X-Payload-Digest";
/// The header naming the digest algorithm.
pub const DIGEST_ALG_HEADER: &str = "X-Payload-Digest-Alg";

/// The HMACs Sumsub can sign webhooks with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// `HMAC_SHA1_HEX`, the legacy default.
    Sha1,
    /// `HMAC_SHA256_HEX`, the current default.
    Sha256,
    /// `HMAC_SHA512_HEX`.
    Sha512,
}

impl DigestAlgorithm {
    /// The value of `X-Payload-Digest-Alg` for this algorithm.
    pub const fn header_value(self) -> &'static str {
        match self {
            Self::Sha1 => "HMAC_SHA1_HEX",
            Self::Sha256 => "HMAC_SHA256_HEX",
            Self::Sha512 => "HMAC_SHA512_HEX",
        }
    }

    /// Reads a header value. Unknown names are refused rather than guessed.
    ///
    /// # Errors
    /// [`WebhookError::UnknownAlgorithm`].
    pub fn parse(value: &str) -> Result<Self, WebhookError> {
        match value.trim() {
            "HMAC_SHA1_HEX" => Ok(Self::Sha1),
            "HMAC_SHA256_HEX" => Ok(Self::Sha256),
            "HMAC_SHA512_HEX" => Ok(Self::Sha512),
            other => Err(WebhookError::UnknownAlgorithm(truncate(other, 40))),
        }
    }

    /// The lowercase hex digest of `body` under `secret`, as Sumsub sends it.
    pub fn sign(self, secret: &[u8], body: &[u8]) -> String {
        match self {
            Self::Sha1 => hex::encode(mac::<Hmac<Sha1>>(secret, body).finalize().into_bytes()),
            Self::Sha256 => hex::encode(mac::<Hmac<Sha256>>(secret, body).finalize().into_bytes()),
            Self::Sha512 => hex::encode(mac::<Hmac<Sha512>>(secret, body).finalize().into_bytes()),
        }
    }

    /// Whether `digest` (already hex-decoded) is the HMAC of `body`, compared in constant time.
    fn verify(self, secret: &[u8], body: &[u8], digest: &[u8]) -> bool {
        match self {
            Self::Sha1 => mac::<Hmac<Sha1>>(secret, body).verify_slice(digest).is_ok(),
            Self::Sha256 => mac::<Hmac<Sha256>>(secret, body)
                .verify_slice(digest)
                .is_ok(),
            Self::Sha512 => mac::<Hmac<Sha512>>(secret, body)
                .verify_slice(digest)
                .is_ok(),
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.header_value())
    }
}

fn mac<M: Mac + hmac::digest::KeyInit>(secret: &[u8], body: &[u8]) -> M {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <M as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac
}

/// Why a webhook was refused or could not be read. None of the variants carries the body, the
/// secret or the digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// No `X-Payload-Digest` header.
    #[error("missing X-Payload-Digest header")]
    MissingDigest,
    /// No `X-Payload-Digest-Alg` header.
    #[error("missing X-Payload-Digest-Alg header")]
    MissingAlgorithm,
    /// An algorithm this service does not accept.
    #[error("unknown digest algorithm {0:?}")]
    UnknownAlgorithm(String),
    /// The digest is not hex, or a header is not text.
    #[error("malformed digest header")]
    MalformedDigest,
    /// The digest does not match the body: not from Sumsub, or altered.
    #[error("webhook digest mismatch")]
    SignatureMismatch,
    /// The signature is valid but the body is not a webhook this parser can read.
    #[error("malformed webhook body: {0}")]
    Malformed(String),
    /// Neither `createdAtMs` nor `createdAt` holds a readable UTC time.
    #[error("webhook has no readable creation time: {0}")]
    InvalidTimestamp(String),
}

/// Checks webhook digests with the webhook secret configured at Sumsub.
pub struct WebhookVerifier {
    secret: SecretString,
}

impl fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookVerifier").finish_non_exhaustive()
    }
}

impl WebhookVerifier {
    /// A verifier for deliveries signed with `secret`.
    pub fn new(secret: SecretString) -> Self {
        Self { secret }
    }

    /// Verifies a delivery from its (case-insensitive) header map and raw body.
    ///
    /// # Errors
    /// [`WebhookError`] other than `Malformed`/`InvalidTimestamp`: the delivery must be refused.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<DigestAlgorithm, WebhookError> {
        let text = |name: &str| -> Result<Option<&str>, WebhookError> {
            headers
                .get(name)
                .map(|value| value.to_str().map_err(|_| WebhookError::MalformedDigest))
                .transpose()
        };
        self.verify_values(text(DIGEST_ALG_HEADER)?, text(DIGEST_HEADER)?, body)
    }

    /// Verifies a delivery from header `(name, value)` pairs, matching names case-insensitively;
    /// for callers that do not hold an [`http::HeaderMap`].
    ///
    /// # Errors
    /// As [`WebhookVerifier::verify`].
    pub fn verify_pairs<N: AsRef<str>, V: AsRef<str>>(
        &self,
        headers: &[(N, V)],
        body: &[u8],
    ) -> Result<DigestAlgorithm, WebhookError> {
        let find = |wanted: &str| {
            headers
                .iter()
                .find(|(name, _)| name.as_ref().trim().eq_ignore_ascii_case(wanted))
                .map(|(_, value)| value.as_ref())
        };
        self.verify_values(find(DIGEST_ALG_HEADER), find(DIGEST_HEADER), body)
    }

    /// Verifies a delivery from the two header values.
    ///
    /// # Errors
    /// As [`WebhookVerifier::verify`].
    pub fn verify_values(
        &self,
        algorithm: Option<&str>,
        digest: Option<&str>,
        body: &[u8],
    ) -> Result<DigestAlgorithm, WebhookError> {
        let algorithm = DigestAlgorithm::parse(algorithm.ok_or(WebhookError::MissingAlgorithm)?)?;
        let digest = digest.ok_or(WebhookError::MissingDigest)?;
        let digest = hex::decode(digest.trim()).map_err(|_| WebhookError::MalformedDigest)?;
        if algorithm.verify(self.secret.expose_secret().as_bytes(), body, &digest) {
            Ok(algorithm)
        } else {
            Err(WebhookError::SignatureMismatch)
        }
    }
}

/// The fields of a webhook this service reads; everything else (including any personal data a
/// future payload might carry) is ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    #[serde(rename = "type")]
    event_type: String,
    applicant_id: Option<String>,
    external_user_id: Option<String>,
    created_at_ms: Option<String>,
    created_at: Option<String>,
    review_result: Option<ReviewResult>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewResult {
    review_answer: Option<String>,
    review_reject_type: Option<String>,
    reject_labels: Option<Vec<String>>,
}

const CREATED_AT_MS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]");
const CREATED_AT: &[BorrowedFormatItem<'static>] = format_description!(
    "[year]-[month]-[day] [hour]:[minute]:[second][offset_hour sign:mandatory][offset_minute]"
);

/// Parses `createdAtMs` (`2021-05-14 16:00:25.032`, UTC).
///
/// # Errors
/// [`WebhookError::InvalidTimestamp`].
pub fn parse_created_at_ms(text: &str) -> Result<OffsetDateTime, WebhookError> {
    PrimitiveDateTime::parse(text.trim(), CREATED_AT_MS)
        .map(PrimitiveDateTime::assume_utc)
        .map_err(|_| {
            WebhookError::InvalidTimestamp(format!("createdAtMs {:?}", truncate(text, 40)))
        })
}

/// Parses `createdAt` (`2024-09-23 23:10:24+0000`) and converts it to UTC.
///
/// # Errors
/// [`WebhookError::InvalidTimestamp`].
pub fn parse_created_at(text: &str) -> Result<OffsetDateTime, WebhookError> {
    OffsetDateTime::parse(text.trim(), CREATED_AT)
        .map(|at| at.to_offset(UtcOffset::UTC))
        .map_err(|_| WebhookError::InvalidTimestamp(format!("createdAt {:?}", truncate(text, 40))))
}

/// Formats a UTC time as Sumsub writes `createdAtMs`.
pub fn format_created_at_ms(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// Formats a UTC time as Sumsub writes `createdAt` (`yyyy-MM-dd HH:mm:ss+0000`).
pub fn format_created_at(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}+0000",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Parses a verified webhook body into a provider-neutral event. Call only after
/// [`WebhookVerifier`] accepted the same bytes.
///
/// # Errors
/// [`WebhookError::Malformed`] when the body is not a JSON object with a string `type` or a field
/// has the wrong shape; [`WebhookError::InvalidTimestamp`] when no creation time can be read.
pub fn parse_event(body: &[u8]) -> Result<ProviderEvent, WebhookError> {
    let payload: Payload = serde_json::from_slice(body)
        // serde's message names the line and column, never the content.
        .map_err(|error| WebhookError::Malformed(error.to_string()))?;
    let created_at = match (&payload.created_at_ms, &payload.created_at) {
        (Some(ms), _) => parse_created_at_ms(ms)?,
        (None, Some(at)) => parse_created_at(at)?,
        (None, None) => {
            return Err(WebhookError::InvalidTimestamp(
                "neither createdAtMs nor createdAt is present".into(),
            ));
        }
    };
    let applicant_id = match payload.applicant_id.as_deref() {
        None | Some("") => None,
        Some(id) => Some(
            ApplicantId::new(id)
                .map_err(|_| WebhookError::Malformed("applicantId is not a valid id".into()))?,
        ),
    };
    let external_user_id = payload
        .external_user_id
        .filter(|id| !id.is_empty())
        .map(ExternalUserId::from_provider);
    let kind = match payload.event_type.as_str() {
        "applicantPending" => ProviderEventKind::Pending,
        "applicantPrechecked" => ProviderEventKind::Prechecked,
        "applicantOnHold" => ProviderEventKind::OnHold,
        "applicantReset" => ProviderEventKind::Reset,
        "applicantReviewed" => ProviderEventKind::Reviewed(verdict(payload.review_result)?),
        other => ProviderEventKind::Other {
            event_type: other.to_owned(),
        },
    };
    Ok(ProviderEvent {
        key: ProviderEventKey::new(hex::encode(Sha256::digest(body))),
        applicant_id,
        external_user_id,
        created_at,
        kind,
    })
}

fn verdict(result: Option<ReviewResult>) -> Result<ReviewVerdict, WebhookError> {
    let result = result
        .ok_or_else(|| WebhookError::Malformed("applicantReviewed without reviewResult".into()))?;
    let answer = match result.review_answer.as_deref() {
        Some("GREEN") => ReviewAnswer::Green,
        Some("RED") => ReviewAnswer::Red,
        Some(other) => {
            return Err(WebhookError::Malformed(format!(
                "unknown reviewAnswer {:?}",
                truncate(other, 20)
            )));
        }
        None => {
            return Err(WebhookError::Malformed(
                "reviewResult without reviewAnswer".into(),
            ));
        }
    };
    // An unknown reject type is kept as "none", which the domain treats as FINAL: when in doubt,
    // do not let the customer through.
    let reject_type = match result.review_reject_type.as_deref() {
        Some("RETRY") => Some(RejectType::Retry),
        Some("FINAL") => Some(RejectType::Final),
        _ => None,
    };
    Ok(ReviewVerdict {
        answer,
        reject_type,
        reject_labels: result
            .reject_labels
            .unwrap_or_default()
            .into_iter()
            .map(RejectLabel::new)
            .collect(),
    })
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    const VECTOR_BODY: &[u8] =
        br#"{"applicantId":"5cb56e8e0a975a35f333cb83","type":"applicantReviewed"}"#;
    const SHA1: &str = "c105f797507cca00b0b4585fa190ee5a4228cb2b";
    const SHA256: &str = "64fb5bbbf0e22c666b5922c9968dbd40880c433cee5b565899c850f369155dbe";
    const SHA512: &str = "d439fb65337cedc97f9ebc2205e8ae8226b48e7b897d4e8865d1fa8387661ee5a9cedbe35276f91b8f4733ca0f7714caf6a0f165ea7a23eabb75cb05a14cb104";

    fn verifier() -> WebhookVerifier {
        WebhookVerifier::new(SecretString::from("webhook-secret".to_owned()))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_three_published_digest_vectors_are_reproduced_and_accepted() {
        for (algorithm, expected) in [
            (DigestAlgorithm::Sha1, SHA1),
            (DigestAlgorithm::Sha256, SHA256),
            (DigestAlgorithm::Sha512, SHA512),
        ] {
            assert_eq!(algorithm.sign(b"webhook-secret", VECTOR_BODY), expected);
            let map = headers(&[
                ("X-Payload-Digest", expected),
                ("X-Payload-Digest-Alg", algorithm.header_value()),
            ]);
            assert_eq!(verifier().verify(&map, VECTOR_BODY), Ok(algorithm));
        }
    }

    #[test]
    fn header_names_match_whatever_their_casing() {
        let map = headers(&[
            ("x-payload-digest", SHA256),
            ("X-PAYLOAD-DIGEST-ALG", "HMAC_SHA256_HEX"),
        ]);
        assert!(verifier().verify(&map, VECTOR_BODY).is_ok());
        let pairs = [
            ("x-PAYLOAD-digest", SHA512),
            ("x-payload-digest-alg", "HMAC_SHA512_HEX"),
        ];
        assert_eq!(
            verifier().verify_pairs(&pairs, VECTOR_BODY),
            Ok(DigestAlgorithm::Sha512)
        );
        let upper = SHA1.to_uppercase();
        let pairs = [
            ("X-Payload-Digest", upper.as_str()),
            ("X-Payload-Digest-Alg", "HMAC_SHA1_HEX"),
        ];
        assert!(verifier().verify_pairs(&pairs, VECTOR_BODY).is_ok());
    }

    #[test]
    fn a_changed_body_a_wrong_secret_or_a_mismatched_algorithm_is_refused() {
        let map = headers(&[
            ("X-Payload-Digest", SHA256),
            ("X-Payload-Digest-Alg", "HMAC_SHA256_HEX"),
        ]);
        let mut changed = VECTOR_BODY.to_vec();
        changed[3] ^= 1;
        assert_eq!(
            verifier().verify(&map, &changed),
            Err(WebhookError::SignatureMismatch)
        );
        let other = WebhookVerifier::new(SecretString::from("other".to_owned()));
        assert_eq!(
            other.verify(&map, VECTOR_BODY),
            Err(WebhookError::SignatureMismatch)
        );
        let wrong_alg = headers(&[
            ("X-Payload-Digest", SHA256),
            ("X-Payload-Digest-Alg", "HMAC_SHA512_HEX"),
        ]);
        assert_eq!(
            verifier().verify(&wrong_alg, VECTOR_BODY),
            Err(WebhookError::SignatureMismatch)
        );
    }

    #[test]
    fn a_missing_or_unknown_algorithm_or_digest_is_refused_with_its_own_error() {
        let no_alg = headers(&[("X-Payload-Digest", SHA256)]);
        assert_eq!(
            verifier().verify(&no_alg, VECTOR_BODY),
            Err(WebhookError::MissingAlgorithm)
        );
        let md5 = headers(&[
            ("X-Payload-Digest", SHA256),
            ("X-Payload-Digest-Alg", "HMAC_MD5_HEX"),
        ]);
        assert!(matches!(
            verifier().verify(&md5, VECTOR_BODY),
            Err(WebhookError::UnknownAlgorithm(_))
        ));
        let no_digest = headers(&[("X-Payload-Digest-Alg", "HMAC_SHA256_HEX")]);
        assert_eq!(
            verifier().verify(&no_digest, VECTOR_BODY),
            Err(WebhookError::MissingDigest)
        );
        let not_hex = headers(&[
            ("X-Payload-Digest", "zz"),
            ("X-Payload-Digest-Alg", "HMAC_SHA256_HEX"),
        ]);
        assert_eq!(
            verifier().verify(&not_hex, VECTOR_BODY),
            Err(WebhookError::MalformedDigest)
        );
    }

    const CREATED: &str = r#"{"applicantId":"5c9e177b0a975a6eeccf5960","inspectionId":"5c9e177b0a975a6eeccf5961","correlationId":"req-63f92830-4d68-4eee-98d5-875d53a12258","levelName":"basic-kyc-level","externalUserId":"someClientUserId","type":"applicantCreated","sandboxMode":false,"reviewStatus":"init","createdAtMs":"2020-02-21 13:23:19.002","clientId":"coolClientId"}"#;
    const PENDING: &str = r#"{"applicantId":"66f1f52c27a518786597c113","inspectionId":"66f1f52c27a518786597c113","applicantType":"individual","correlationId":"feb6317b2f13441784668eaa87dd14ef","levelName":"basic-kyc-level","sandboxMode":true,"externalUserId":"…","type":"applicantPending","reviewStatus":"pending","createdAt":"2024-09-23 23:10:24+0000","createdAtMs":"2024-09-23 23:10:24.704","clientId":"galoy.io"}"#;
    const GREEN: &str = r#"{"applicantId":"5cb56e8e0a975a35f333cb83","inspectionId":"5cb56e8e0a975a35f333cb84","correlationId":"req-a260b669-4f14-4bb5-a4c5-ac0218acb9a4","externalUserId":"…","levelName":"basic-kyc-level","type":"applicantReviewed","reviewResult":{"reviewAnswer":"GREEN"},"reviewStatus":"completed","createdAtMs":"2020-02-21 13:23:19.321"}"#;
    const RED: &str = r#"{"applicantId":"5cb744200a975a67ed1798a4","inspectionId":"5cb744200a975a67ed1798a5","correlationId":"req-fa94263f-0b23-42d7-9393-ab10b28ef42d","externalUserId":"…","levelName":"basic-kyc-level","type":"applicantReviewed","reviewResult":{"moderationComment":"We could not verify your profile. If you have any questions, please contact the Company where you try to verify your profile ${clientSupportEmail}","clientComment":"Suspected fraudulent account.","reviewAnswer":"RED","rejectLabels":["UNSATISFACTORY_PHOTOS","GRAPHIC_EDITOR","FORGERY"],"reviewRejectType":"FINAL"},"reviewStatus":"completed","createdAtMs":"2020-02-21 13:23:19.001"}"#;

    #[test]
    fn the_documented_applicant_created_example_is_kept_as_an_other_event() {
        let event = parse_event(CREATED.as_bytes()).unwrap();
        assert_eq!(
            event.kind,
            ProviderEventKind::Other {
                event_type: "applicantCreated".into()
            }
        );
        assert_eq!(
            event.applicant_id.unwrap().as_str(),
            "5c9e177b0a975a6eeccf5960"
        );
        assert_eq!(event.external_user_id.unwrap().as_str(), "someClientUserId");
        assert_eq!(event.created_at, datetime!(2020-02-21 13:23:19.002 UTC));
    }

    #[test]
    fn the_documented_pending_example_uses_created_at_ms_over_created_at() {
        let event = parse_event(PENDING.as_bytes()).unwrap();
        assert_eq!(event.kind, ProviderEventKind::Pending);
        assert_eq!(event.created_at, datetime!(2024-09-23 23:10:24.704 UTC));
    }

    #[test]
    fn the_documented_green_and_red_final_examples_become_verdicts() {
        let green = parse_event(GREEN.as_bytes()).unwrap();
        assert_eq!(
            green.kind,
            ProviderEventKind::Reviewed(ReviewVerdict {
                answer: ReviewAnswer::Green,
                reject_type: None,
                reject_labels: vec![]
            })
        );
        assert_eq!(green.created_at, datetime!(2020-02-21 13:23:19.321 UTC));
        let red = parse_event(RED.as_bytes()).unwrap();
        let ProviderEventKind::Reviewed(verdict) = red.kind else {
            panic!("expected a verdict")
        };
        assert_eq!(verdict.answer, ReviewAnswer::Red);
        assert_eq!(verdict.reject_type, Some(RejectType::Final));
        let labels: Vec<_> = verdict
            .reject_labels
            .iter()
            .map(RejectLabel::as_str)
            .collect();
        assert_eq!(
            labels,
            ["UNSATISFACTORY_PHOTOS", "GRAPHIC_EDITOR", "FORGERY"]
        );
    }

    #[test]
    fn status_types_map_to_their_kinds_and_unknown_types_are_preserved() {
        let body =
            |kind: &str| format!(r#"{{"type":"{kind}","createdAtMs":"2026-01-02 03:04:05.006"}}"#);
        let kind = |t: &str| parse_event(body(t).as_bytes()).unwrap().kind;
        assert_eq!(kind("applicantPrechecked"), ProviderEventKind::Prechecked);
        assert_eq!(kind("applicantOnHold"), ProviderEventKind::OnHold);
        assert_eq!(kind("applicantReset"), ProviderEventKind::Reset);
        assert_eq!(kind("applicantPending"), ProviderEventKind::Pending);
        for other in [
            "applicantPersonalInfoChanged",
            "applicantWorkflowCompleted",
            "somethingNew2030",
        ] {
            assert_eq!(
                kind(other),
                ProviderEventKind::Other {
                    event_type: other.into()
                }
            );
        }
    }

    #[test]
    fn created_at_is_the_fallback_and_its_offset_is_honoured() {
        let event =
            parse_event(br#"{"type":"applicantReset","createdAt":"2024-09-23 23:10:24+0200"}"#)
                .unwrap();
        assert_eq!(event.created_at, datetime!(2024-09-23 21:10:24 UTC));
        assert!(matches!(
            parse_event(br#"{"type":"applicantReset"}"#),
            Err(WebhookError::InvalidTimestamp(_))
        ));
        assert!(matches!(
            parse_event(br#"{"type":"applicantReset","createdAtMs":"1613914999002"}"#),
            Err(WebhookError::InvalidTimestamp(_))
        ));
    }

    #[test]
    fn the_key_is_the_body_hash_so_a_redelivery_dedupes_and_another_event_does_not() {
        let first = parse_event(GREEN.as_bytes()).unwrap();
        let again = parse_event(GREEN.as_bytes()).unwrap();
        let red = parse_event(RED.as_bytes()).unwrap();
        assert_eq!(first.key, again.key);
        assert_ne!(first.key, red.key);
        assert_eq!(first.key.as_str().len(), 64);
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        assert!(matches!(
            parse_event(b"not json"),
            Err(WebhookError::Malformed(_))
        ));
        assert!(matches!(
            parse_event(br#"{"createdAtMs":"2020-02-21 13:23:19.002"}"#),
            Err(WebhookError::Malformed(_))
        ));
        let no_result = br#"{"type":"applicantReviewed","createdAtMs":"2020-02-21 13:23:19.002"}"#;
        assert!(matches!(
            parse_event(no_result),
            Err(WebhookError::Malformed(_))
        ));
    }

    #[test]
    fn formatting_round_trips_through_parsing() {
        let at = datetime!(2026-11-25 18:12:24.037 UTC);
        assert_eq!(format_created_at_ms(at), "2026-11-25 18:12:24.037");
        assert_eq!(parse_created_at_ms(&format_created_at_ms(at)).unwrap(), at);
        assert_eq!(
            parse_created_at(&format_created_at(at)).unwrap(),
            datetime!(2026-11-25 18:12:24 UTC)
        );
    }

    proptest! {
        #[test]
        fn the_parser_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_event(&body);
        }

        #[test]
        fn the_parser_never_panics_on_webhook_shaped_json(
            kind in "[a-zA-Z]{0,24}",
            at in "[0-9 :.+-]{0,30}",
            answer in "[A-Z]{0,6}",
            reject in "[A-Z]{0,6}",
            id in "[a-z0-9]{0,200}",
        ) {
            let body = serde_json::json!({
                "type": kind, "createdAtMs": at, "createdAt": at, "applicantId": id,
                "reviewResult": {"reviewAnswer": answer, "reviewRejectType": reject, "rejectLabels": [answer]}
            });
            let _ = parse_event(body.to_string().as_bytes());
        }

        /// The verifier accepts exactly the digest of the body under the secret, with any of the
        /// three algorithms and either case of hex, and refuses everything else without
        /// panicking: any other digest, any other body, any algorithm name.
        #[test]
        fn the_verifier_accepts_only_the_bodys_own_digest(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            other in proptest::collection::vec(any::<u8>(), 0..256),
            algorithm in prop_oneof![
                Just(DigestAlgorithm::Sha1),
                Just(DigestAlgorithm::Sha256),
                Just(DigestAlgorithm::Sha512)
            ],
            upper in any::<bool>(),
            name in "\\PC{0,40}",
            digest in "\\PC{0,140}",
        ) {
            let verifier = verifier();
            let signed = algorithm.sign(b"webhook-secret", &body);
            let sent = if upper { signed.to_uppercase() } else { signed.clone() };
            prop_assert_eq!(
                verifier.verify_values(Some(algorithm.header_value()), Some(&sent), &body).ok(),
                Some(algorithm)
            );
            if other != body {
                prop_assert!(verifier.verify_values(Some(algorithm.header_value()), Some(&signed), &other).is_err());
            }
            let _ = verifier.verify_values(Some(&name), Some(&digest), &body);
            if digest.trim().to_lowercase() != signed {
                prop_assert!(verifier.verify_values(Some(algorithm.header_value()), Some(&digest), &body).is_err());
            }
        }
    }
}
