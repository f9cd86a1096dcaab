//! The signed Sumsub REST client behind the domain's [`IdentityProvider`] and [`AmlScreening`]
//! ports.
//!
//! Every request is signed over the exact bytes sent: the body is serialized once, the path and
//! query are percent-encoded here (never by reqwest), and when the base URL carries a path prefix
//! (the simulator mounted under `/sim/sumsub`) the prefix is part of the signed path, because the
//! server checks the path it actually received.
//!
//! Failures are split the way the domain needs them: [`ProviderError::Refused`] for a definite
//! 4xx answer (repeating will not help), [`ProviderError::Transient`] for timeouts, connection
//! failures, 5xx, 429 and unreadable bodies (the outcome is unknown, repeat later). Only calls that
//! are safe to repeat are retried here: GETs, and the creation of an applicant, which Sumsub makes
//! idempotent through `externalUserId` (a repeat answers 409 with the existing id). A 429 is retried
//! for every call, since a rate-limited request was refused before it had any effect. Every try
//! passes a [`CircuitBreaker`] first: while the provider keeps failing, calls fail at once as
//! `Transient` without a request ([`crate::breaker`]).
//!
//! Nothing personal is logged: spans carry applicant ids and levels, never names, emails or phones,
//! and the secrets live in [`SecretString`]s.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use kyc_domain::aml::{AmlCategory, AmlHit, HitKey, HitSource};
use kyc_domain::customer::VerifiedIdentity;
use kyc_domain::ids::{ApplicantId, ExternalUserId};
use kyc_domain::ports::{
    AmlScreening, Applicant, ApplicantRequest, IdentityProvider, ProviderError,
};
use rand::Rng;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tracing::{debug, instrument, warn};

use crate::breaker::{BreakerSettings, CircuitBreaker, CircuitState};
use crate::signing::{encode_component, encode_query, request_signature};

/// Sumsub's API host, for sandbox and production alike (the token decides the environment).
pub const DEFAULT_BASE_URL: &str = "https://api.sumsub.com";

/// How to reach Sumsub. Secrets are [`SecretString`]s, so `Debug` never prints them.
#[derive(Debug, Clone)]
pub struct SumsubConfig {
    /// `https://api.sumsub.com`, or the simulator's URL including its mount path
    /// (`http://127.0.0.1:8080/sim/sumsub`).
    pub base_url: String,
    /// `X-App-Token`.
    pub app_token: SecretString,
    /// The key the requests are signed with.
    pub secret_key: SecretString,
    /// The limit on one whole request, from connect to the last byte of the body.
    pub request_timeout: Duration,
    /// The limit on establishing a connection.
    pub connect_timeout: Duration,
    /// How many times a retry-safe call is tried in all (1 = no retry).
    pub max_attempts: u32,
    /// The first backoff; each retry doubles it, up to `max_backoff`, with jitter.
    pub initial_backoff: Duration,
    /// The longest pause between two tries, including one asked for by `Retry-After`.
    pub max_backoff: Duration,
    /// When calls stop going out because the provider keeps failing.
    pub breaker: BreakerSettings,
}

impl SumsubConfig {
    /// A configuration with production-minded defaults: 10 s per request, 3 s to connect, three
    /// tries with a 200 ms first backoff capped at 5 s, and a circuit that opens for 30 s after
    /// five failures in a row.
    pub fn new(
        base_url: impl Into<String>,
        app_token: SecretString,
        secret_key: SecretString,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            app_token,
            secret_key,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            breaker: BreakerSettings::default(),
        }
    }
}

/// The configuration could not be turned into a client.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The base URL is not an absolute http(s) URL without query or fragment.
    #[error("invalid Sumsub base URL: {0}")]
    BaseUrl(String),
    /// reqwest could not build its client (TLS backend initialisation).
    #[error("could not build the HTTP client")]
    Http(#[source] reqwest::Error),
}

/// The Sumsub client. Cheap to clone (reqwest's client is shared).
#[derive(Clone)]
pub struct SumsubClient {
    http: reqwest::Client,
    config: SumsubConfig,
    /// The base URL without a trailing slash, to which the path and query are appended.
    base: String,
    /// The path of the base URL (`""` or `/sim/sumsub`), which is part of the signed path.
    path_prefix: String,
    /// Shared by the clones, so every caller sees the same outage.
    breaker: CircuitBreaker,
}

impl fmt::Debug for SumsubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SumsubClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A raw answer, read completely.
struct Answer {
    status: StatusCode,
    body: bytes::Bytes,
}

/// Whether a call may be repeated after an unknown outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Safe,
    Unsafe,
}

impl SumsubClient {
    /// Builds a client.
    ///
    /// # Errors
    /// [`ConfigError`] when the base URL is not usable or the HTTP client cannot be built.
    pub fn new(config: SumsubConfig) -> Result<Self, ConfigError> {
        let url = Url::parse(config.base_url.trim())
            .map_err(|error| ConfigError::BaseUrl(error.to_string()))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(ConfigError::BaseUrl(
                "expected an http(s) URL without query or fragment".into(),
            ));
        }
        let path_prefix = url.path().trim_end_matches('/').to_owned();
        let base = url.as_str().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(ConfigError::Http)?;
        let breaker = CircuitBreaker::new(config.breaker);
        Ok(Self {
            http,
            config,
            base,
            path_prefix,
            breaker,
        })
    }

    /// Whether calls go out now (see [`crate::breaker`]).
    pub fn circuit_state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// Sends one signed request, retrying when `repeat` allows it (and always on 429). Answers
    /// with a status other than 2xx, 5xx and 429 are returned for the caller to interpret.
    async fn call(
        &self,
        method: Method,
        path_with_query: &str,
        body: Option<&Value>,
        repeat: Repeat,
    ) -> Result<Answer, ProviderError> {
        // Serialized once: these exact bytes are signed and sent.
        let body: Vec<u8> = match body {
            Some(value) => serde_json::to_vec(value).map_err(|error| ProviderError::Transient {
                reason: format!("could not serialize the request: {error}"),
            })?,
            None => Vec::new(),
        };
        let signed_path = format!("{}{}", self.path_prefix, path_with_query);
        let url = format!("{}{}", self.base, path_with_query);
        let attempts = self.config.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let permit = self.breaker.admit().map_err(|refused| ProviderError::Transient {
                reason: format!(
                    "identity provider failing repeatedly: not called for {} s more (circuit open)",
                    refused.retry_in.as_secs().max(1)
                ),
            })?;
            let outcome = self.send_once(&method, &url, &signed_path, &body).await;
            match &outcome {
                Ok(answer) if !answer.status.is_server_error() => permit.succeeded(),
                Ok(_) | Err(_) => permit.failed(),
            }
            let (error, retry_after, rate_limited) = match outcome {
                Ok(answer) if answer.status == StatusCode::TOO_MANY_REQUESTS => {
                    let retry_after = answer.retry_after;
                    let error = ProviderError::Transient {
                        reason: "rate limited by the identity provider (429)".into(),
                    };
                    (error, retry_after, true)
                }
                Ok(answer) if answer.status.is_server_error() => {
                    let error = ProviderError::Transient {
                        reason: format!(
                            "the identity provider failed ({}): {}",
                            answer.status.as_u16(),
                            describe(&answer.body)
                        ),
                    };
                    (error, None, false)
                }
                Ok(answer) => {
                    return Ok(Answer {
                        status: answer.status,
                        body: answer.body,
                    });
                }
                Err(error) => (error, None, false),
            };
            let may_repeat = repeat == Repeat::Safe || rate_limited;
            if !may_repeat || attempt >= attempts {
                return Err(error);
            }
            let pause = retry_after
                .map(|pause| pause.min(self.config.max_backoff))
                .unwrap_or_else(|| self.backoff(attempt));
            debug!(
                attempt,
                pause_ms = pause.as_millis() as u64,
                "retrying a Sumsub call"
            );
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        signed_path: &str,
        body: &[u8],
    ) -> Result<RawAnswer, ProviderError> {
        // Signed afresh on every try: the timestamp must be within a minute of Sumsub's clock.
        let timestamp = OffsetDateTime::now_utc().unix_timestamp().to_string();
        let signature = request_signature(
            self.config.secret_key.expose_secret().as_bytes(),
            &timestamp,
            method.as_str(),
            signed_path,
            body,
        );
        let response = self
            .http
            .request(method.clone(), url)
            .header("X-App-Token", self.config.app_token.expose_secret())
            .header("X-App-Access-Ts", &timestamp)
            .header("X-App-Access-Sig", signature)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.map_err(transport_error)?;
        Ok(RawAnswer {
            status,
            retry_after,
            body,
        })
    }

    /// Exponential backoff with jitter, so clients that failed together do not retry together.
    fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self
            .config
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.config.max_backoff);
        let millis = u64::try_from(exponential.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::thread_rng().gen_range(millis / 2..=millis.max(1)))
    }

    /// Reads an applicant JSON and keeps its id.
    fn applicant_from(
        answer: &Answer,
        fallback_external: &ExternalUserId,
    ) -> Result<Applicant, ProviderError> {
        let parsed: ApplicantBody = parse_json(&answer.body)?;
        let id = ApplicantId::new(parsed.id).map_err(|_| malformed("applicant id"))?;
        let external_user_id = parsed
            .external_user_id
            .map(ExternalUserId::from_provider)
            .unwrap_or_else(|| fallback_external.clone());
        Ok(Applicant {
            id,
            external_user_id,
        })
    }
}

struct RawAnswer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: bytes::Bytes,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApplicantBody {
    id: String,
    external_user_id: Option<String>,
}

/// Sumsub's error body; only the description is used, the rest is optional.
#[derive(Deserialize)]
struct ApiError {
    description: Option<String>,
}

fn transport_error(error: reqwest::Error) -> ProviderError {
    // reqwest's Display may include the URL, which holds no secret (the token and signature are
    // headers) and no personal data (paths carry ids only).
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "transport error"
    };
    ProviderError::Transient {
        reason: format!("identity provider {what}: {error}"),
    }
}

fn malformed(what: &str) -> ProviderError {
    ProviderError::Transient {
        reason: format!("unreadable answer from the identity provider ({what})"),
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|error| ProviderError::Transient {
        reason: format!("unreadable answer from the identity provider: {error}"),
    })
}

/// The provider's description of an error, shortened; bodies are not echoed otherwise.
fn describe(body: &[u8]) -> String {
    serde_json::from_slice::<ApiError>(body)
        .ok()
        .and_then(|error| error.description)
        .map(|text| text.chars().take(200).collect())
        .unwrap_or_else(|| "no description".into())
}

/// The error for an answer the caller does not expect: a 4xx is a definite refusal.
fn unexpected(answer: &Answer) -> ProviderError {
    if answer.status.is_client_error() {
        ProviderError::Refused {
            status: answer.status.as_u16(),
            reason: describe(&answer.body),
        }
    } else {
        ProviderError::Transient {
            reason: format!(
                "unexpected answer from the identity provider ({})",
                answer.status.as_u16()
            ),
        }
    }
}

/// The applicant id in a 409 description: `… already exists: 61fcc341e552bf0001086cf8`.
pub fn existing_applicant_id(description: &str) -> Option<ApplicantId> {
    let (_, rest) = description.split_once("already exists: ")?;
    let id: String = rest
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    ApplicantId::new(id).ok()
}

/// Splits a full name into Sumsub's `firstName` (all but the last word) and `lastName` (the last
/// word); a single word is a first name only.
fn split_name(full_name: &str) -> (String, Option<String>) {
    let words: Vec<&str> = full_name.split_whitespace().collect();
    match words.split_last() {
        Some((last, rest)) if !rest.is_empty() => (rest.join(" "), Some((*last).to_owned())),
        _ => (words.join(" "), None),
    }
}

fn is_success(answer: &Answer) -> bool {
    answer.status.is_success()
}

#[async_trait]
impl IdentityProvider for SumsubClient {
    #[instrument(skip_all, err(level = "debug"), fields(level = %request.level_name))]
    async fn create_applicant(
        &self,
        request: &ApplicantRequest,
    ) -> Result<Applicant, ProviderError> {
        let (first_name, last_name) = split_name(request.full_name.as_str());
        let mut fixed_info = json!({ "firstName": first_name });
        if let Some(last_name) = last_name {
            fixed_info["lastName"] = json!(last_name);
        }
        let mut body = json!({
            "externalUserId": request.external_user_id.as_str(),
            "email": request.email.as_str(),
            // Sole traders are natural persons: Sumsub's `company` type is for KYB.
            "type": "individual",
            "fixedInfo": fixed_info,
        });
        if let Some(phone) = &request.phone {
            body["phone"] = json!(phone.as_str());
        }
        let path = format!(
            "/resources/applicants{}",
            encode_query(&[("levelName", &request.level_name)])
        );
        let answer = self
            .call(Method::POST, &path, Some(&body), Repeat::Safe)
            .await?;
        if is_success(&answer) {
            return Self::applicant_from(&answer, &request.external_user_id);
        }
        if answer.status != StatusCode::CONFLICT {
            return Err(unexpected(&answer));
        }
        // Already created, by an earlier try of this same attempt: resolve to that applicant.
        let description = describe(&answer.body);
        if let Some(id) = existing_applicant_id(&description) {
            debug!(applicant_id = %id, "applicant already existed");
            return Ok(Applicant {
                id,
                external_user_id: request.external_user_id.clone(),
            });
        }
        match self.find_applicant(&request.external_user_id).await? {
            Some(applicant) => Ok(applicant),
            // The 409 names an applicant this token cannot read (another token, or deleted).
            None => Err(ProviderError::Refused {
                status: 409,
                reason: description,
            }),
        }
    }

    #[instrument(skip_all, err(level = "debug"))]
    async fn find_applicant(
        &self,
        external_user_id: &ExternalUserId,
    ) -> Result<Option<Applicant>, ProviderError> {
        let path = format!(
            "/resources/applicants/-;externalUserId={}/one",
            encode_component(external_user_id.as_str())
        );
        let answer = self.call(Method::GET, &path, None, Repeat::Safe).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !is_success(&answer) {
            return Err(unexpected(&answer));
        }
        Self::applicant_from(&answer, external_user_id).map(Some)
    }

    #[instrument(skip_all, err(level = "debug"), fields(level = %level_name, ttl_secs))]
    async fn verification_link(
        &self,
        external_user_id: &ExternalUserId,
        level_name: &str,
        ttl_secs: u32,
    ) -> Result<String, ProviderError> {
        let body = json!({
            "levelName": level_name,
            "userId": external_user_id.as_str(),
            "ttlInSecs": ttl_secs,
        });
        let answer = self
            .call(
                Method::POST,
                "/resources/sdkIntegrations/levels/-/websdkLink",
                Some(&body),
                Repeat::Unsafe,
            )
            .await?;
        if !is_success(&answer) {
            return Err(unexpected(&answer));
        }
        #[derive(Deserialize)]
        struct Link {
            url: String,
        }
        let link: Link = parse_json(&answer.body)?;
        if link.url.is_empty() {
            return Err(malformed("empty link"));
        }
        Ok(link.url)
    }

    #[instrument(skip_all, err(level = "debug"), fields(applicant_id = %applicant_id))]
    async fn verified_identity(
        &self,
        applicant_id: &ApplicantId,
    ) -> Result<Option<VerifiedIdentity>, ProviderError> {
        let path = format!(
            "/resources/applicants/{}/one",
            encode_component(applicant_id.as_str())
        );
        let answer = self.call(Method::GET, &path, None, Repeat::Safe).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !is_success(&answer) {
            return Err(unexpected(&answer));
        }
        let applicant: Value = parse_json(&answer.body)?;
        Ok(identity_of(&applicant))
    }
}

/// The verified name and country of an applicant JSON: `info` holds what Sumsub extracted from the
/// documents, `fixedInfo` what the client sent; the document data wins when both are present.
fn identity_of(applicant: &Value) -> Option<VerifiedIdentity> {
    let field = |name: &str| -> Option<String> {
        ["info", "fixedInfo"].iter().find_map(|section| {
            applicant
                .get(section)
                .and_then(|info| info.get(name))
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|text| !text.is_empty())
                .map(str::to_owned)
        })
    };
    let document_country = || {
        applicant
            .pointer("/info/idDocs")
            .and_then(Value::as_array)
            .and_then(|docs| {
                docs.iter()
                    .find_map(|doc| doc.get("country").and_then(Value::as_str))
            })
            .map(str::to_owned)
    };
    let name = match (field("firstName"), field("lastName")) {
        (Some(first), Some(last)) => format!("{first} {last}"),
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => return None,
    };
    let country = field("country")
        .or_else(document_country)
        .or_else(|| field("nationality"))?;
    if country.len() != 3 || !country.chars().all(|c| c.is_ascii_alphabetic()) {
        warn!("the provider's country is not an ISO alpha-3 code");
        return None;
    }
    Some(VerifiedIdentity {
        verified_legal_name: name.to_uppercase(),
        verified_country: country.to_ascii_uppercase(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmlCase {
    #[serde(default)]
    risk_labels: Vec<String>,
    #[serde(default)]
    hits: Vec<AmlCaseHit>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmlCaseHit {
    id: String,
    name: Option<String>,
    #[serde(default)]
    risk_labels: Vec<String>,
    review: Option<AmlHitReview>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmlHitReview {
    match_status: Option<String>,
}

#[async_trait]
impl AmlScreening for SumsubClient {
    #[instrument(skip_all, err(level = "debug"), fields(applicant_id = %applicant_id, hits))]
    async fn fetch_hits(&self, applicant_id: &ApplicantId) -> Result<Vec<AmlHit>, ProviderError> {
        let path = format!(
            "/resources/api/applicants/{}/amlCase",
            encode_component(applicant_id.as_str())
        );
        let answer = self.call(Method::GET, &path, None, Repeat::Safe).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !is_success(&answer) {
            return Err(unexpected(&answer));
        }
        let case: AmlCase = parse_json(&answer.body)?;
        let found_at = OffsetDateTime::now_utc();
        let hits: Vec<AmlHit> = case
            .hits
            .into_iter()
            .map(|hit| {
                // A hit without its own labels inherits the case's.
                let labels = if hit.risk_labels.is_empty() {
                    &case.risk_labels
                } else {
                    &hit.risk_labels
                };
                let categories: BTreeSet<AmlCategory> = labels
                    .iter()
                    .map(|label| AmlCategory::parse(label))
                    .collect();
                AmlHit {
                    key: HitKey::new(hit.id),
                    name: hit.name,
                    categories,
                    match_status: hit
                        .review
                        .and_then(|review| review.match_status)
                        .unwrap_or_else(|| "unknown".into()),
                    source: HitSource::Screening,
                    found_at,
                    disposition: None,
                }
            })
            .collect();
        tracing::Span::current().record("hits", hits.len());
        Ok(hits)
    }

    #[instrument(skip_all, err(level = "debug"), fields(applicant_id = %applicant_id))]
    async fn request_rescreen(&self, applicant_id: &ApplicantId) -> Result<(), ProviderError> {
        let path = format!(
            "/resources/applicants/{}/recheck/aml",
            encode_component(applicant_id.as_str())
        );
        let answer = self.call(Method::POST, &path, None, Repeat::Unsafe).await?;
        if is_success(&answer) {
            Ok(())
        } else {
            Err(unexpected(&answer))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_existing_id_is_read_from_the_409_description() {
        let text =
            "Applicant with external user id 'c-a1' already exists: 61fcc341e552bf0001086cf8";
        assert_eq!(
            existing_applicant_id(text).unwrap().as_str(),
            "61fcc341e552bf0001086cf8"
        );
        assert_eq!(
            existing_applicant_id("Applicant already exists: ").map(|id| id.to_string()),
            None
        );
        assert_eq!(existing_applicant_id("Something else"), None);
    }

    #[test]
    fn names_split_into_first_names_and_the_last_word() {
        assert_eq!(
            split_name("Joelamltest Red"),
            ("Joelamltest".into(), Some("Red".into()))
        );
        assert_eq!(
            split_name("  Mary  Ann   Smith "),
            ("Mary Ann".into(), Some("Smith".into()))
        );
        assert_eq!(split_name("Cher"), ("Cher".into(), None));
    }

    #[test]
    fn the_identity_prefers_document_data_and_needs_an_alpha3_country() {
        let applicant = json!({
            "info": {"firstName": "Jane", "lastName": "Doe", "country": "gbr"},
            "fixedInfo": {"firstName": "J", "lastName": "D", "country": "FRA"}
        });
        let identity = identity_of(&applicant).unwrap();
        assert_eq!(identity.verified_legal_name, "JANE DOE");
        assert_eq!(identity.verified_country, "GBR");
        let fixed_only = json!({"info": {}, "fixedInfo": {"firstName": "Jane", "lastName": "Doe", "country": "FRA"}});
        assert_eq!(identity_of(&fixed_only).unwrap().verified_country, "FRA");
        assert_eq!(
            identity_of(&json!({"fixedInfo": {"firstName": "Jane"}})),
            None
        );
        assert_eq!(
            identity_of(&json!({"info": {"firstName": "Jane", "country": "UK"}})),
            None
        );
    }

    #[test]
    fn a_base_url_path_becomes_part_of_the_signed_path() {
        let secret = || SecretString::from("s".to_owned());
        let client = SumsubClient::new(SumsubConfig::new(
            "http://127.0.0.1:8080/sim/sumsub/",
            secret(),
            secret(),
        ))
        .unwrap();
        assert_eq!(client.path_prefix, "/sim/sumsub");
        assert_eq!(client.base, "http://127.0.0.1:8080/sim/sumsub");
        let client =
            SumsubClient::new(SumsubConfig::new(DEFAULT_BASE_URL, secret(), secret())).unwrap();
        assert_eq!(client.path_prefix, "");
        assert_eq!(client.base, "https://api.sumsub.com");
        assert!(SumsubClient::new(SumsubConfig::new("ftp://x", secret(), secret())).is_err());
    }
}
