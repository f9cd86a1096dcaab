//! Push delivery: the worker that sends each queued webhook message to its endpoint, signed per
//! the Standard Webhooks specification, and records every attempt.
//!
//! Each message is leased from the [`DeliveryQueue`] before it is sent, so several replicas on
//! one database share the work and send each message once; a replica that dies mid-send leaves a
//! lease that runs out, and the message is sent again with the same `webhook-id` (at least once,
//! at most one duplicate per crash). The queue hands out only the oldest unfinished message of
//! each customer per endpoint, and at most [`PushSettings::per_endpoint`] of an endpoint's at
//! once, so a customer's events arrive in order and one slow or dead endpoint holds at most that
//! many of the worker's [`PushSettings::concurrency`] slots.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use kyc_domain::ports::{
    Clock, DeliveryOutcome, DeliveryQueue, FinishedDelivery, InfrastructureError, QueuedDelivery,
    WebhookDelivery,
};
use kyc_http::Metrics;
use kyc_http::crm::webhooks::EventDto;
use rand::Rng;
use sha2::Sha256;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often an idle worker looks for messages.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// While messages are in flight, a worker leases more at most this often: completions arriving
/// one by one are answered with one lease, not one each.
const CLAIM_SPACING: Duration = Duration::from_millis(20);

/// Attempts that ended are recorded together once this many have ended, or this long after the
/// first of them, or when nothing else is in flight.
const FINISH_BATCH: usize = 64;
const FINISH_WAIT: Duration = Duration::from_millis(10);

/// A lease lasts twice the attempt's timeout and this much more, so a live worker always
/// finishes its attempt and records it before anyone else may take the message, while a
/// message whose worker died is sent again soon.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// At most this much of a receiver's answer is read (the status is what counts).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How the worker delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSettings {
    /// The wait before each retry: entry `n` is the wait after the `n+1`th failed attempt. When
    /// it is spent, the message is given up (a replay sends it again).
    pub retry_schedule: Vec<Duration>,
    /// The longest one attempt may take, connection and answer included.
    pub timeout: Duration,
    /// Messages in flight at once, across endpoints.
    pub concurrency: u32,
    /// Messages of one endpoint in flight at once, across replicas.
    pub per_endpoint: u32,
}

impl Default for PushSettings {
    /// Retries after 10 s, 1 min, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h (about 28 hours in all),
    /// 10 s per attempt, 64 in flight, 16 per endpoint.
    fn default() -> Self {
        Self {
            retry_schedule: [10, 60, 300, 1800, 7200, 18_000, 36_000, 36_000]
                .map(Duration::from_secs)
                .to_vec(),
            timeout: Duration::from_secs(10),
            concurrency: 64,
            per_endpoint: 16,
        }
    }
}

/// The Standard Webhooks `webhook-signature` value for a message: one `v1,<base64 HMAC-SHA256
/// of "{id}.{timestamp}.{body}">` per secret, separated by spaces. A secret is `whsec_` and the
/// base64 of the key; one that is not (set by hand) is used as raw bytes.
pub fn signature_header(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| {
            let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
            let key = STANDARD
                .decode(encoded)
                .unwrap_or_else(|_| secret.as_bytes().to_vec());
            // HMAC takes a key of any length.
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What one attempt got back.
struct Attempt {
    status: Option<u16>,
    error: Option<String>,
    duration: Duration,
}

/// Sends queued messages and records each attempt.
#[derive(Clone)]
pub struct PushWorker {
    queue: Arc<dyn DeliveryQueue>,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    settings: Arc<PushSettings>,
    metrics: Metrics,
}

impl PushWorker {
    /// A worker on `queue`, timing with `clock`, recording on `metrics`.
    ///
    /// # Errors
    /// The HTTP client could not be built (no TLS roots).
    pub fn new(
        queue: Arc<dyn DeliveryQueue>,
        clock: Arc<dyn Clock>,
        settings: PushSettings,
        metrics: Metrics,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // A redirect is an answer like any other non-2xx: the endpoint's URL is the one its
            // admin registered, and a signed body is never sent somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "kyc-server/",
                env!("CARGO_PKG_VERSION"),
                " (webhooks)"
            ))
            .pool_max_idle_per_host(settings.per_endpoint as usize)
            .build()?;
        Ok(Self {
            queue,
            clock,
            client,
            settings: Arc::new(settings),
            metrics,
        })
    }

    fn lease(&self) -> time::Duration {
        let lease = self.settings.timeout * 2 + LEASE_MARGIN;
        time::Duration::try_from(lease).unwrap_or(time::Duration::minutes(1))
    }

    /// Leases up to `limit` due messages.
    ///
    /// # Errors
    /// The claim failed; nothing was leased.
    pub async fn claim(&self, limit: u32) -> Result<Vec<QueuedDelivery>, InfrastructureError> {
        let now = self.clock.now();
        self.queue
            .claim_deliveries(now, now + self.lease(), limit, self.settings.per_endpoint)
            .await
    }

    /// Sends one leased message; returns the attempt and its outcome, for the queue to apply
    /// ([`DeliveryQueue::finish_deliveries`], which [`PushWorker::run`] calls for every attempt
    /// that ended since its last call).
    pub async fn attempt(&self, message: QueuedDelivery) -> FinishedDelivery {
        let attempted_at = self.clock.now();
        let attempt = self.send(&message, attempted_at.unix_timestamp()).await;
        let outcome = self.outcome(&message, &attempt);
        let record = WebhookDelivery {
            endpoint_id: message.endpoint.id,
            firm_id: message.endpoint.firm_id,
            message_id: message.event.id.to_string(),
            event_type: message.event.notification.as_str().to_owned(),
            attempt: message.attempts + 1,
            attempted_at,
            response_status: attempt.status,
            error: attempt.error.clone(),
            duration_ms: u64::try_from(attempt.duration.as_millis()).unwrap_or(u64::MAX),
        };
        self.metrics.record_webhook_delivery(match outcome {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::RetryAt(_) => "retried",
            DeliveryOutcome::GaveUp => "failed",
            DeliveryOutcome::Gone => "disabled",
        });
        match outcome {
            DeliveryOutcome::Delivered => {}
            DeliveryOutcome::Gone => tracing::warn!(
                endpoint_id = %message.endpoint.id,
                firm_id = %message.endpoint.firm_id,
                "the receiver answered 410 Gone: the webhook endpoint is disabled"
            ),
            _ => tracing::info!(
                endpoint_id = %message.endpoint.id,
                event_id = %message.event.id,
                attempt = message.attempts + 1,
                status = attempt.status,
                error = attempt.error.as_deref(),
                gave_up = matches!(outcome, DeliveryOutcome::GaveUp),
                "webhook delivery failed"
            ),
        }
        FinishedDelivery {
            id: message.id,
            attempt: record,
            outcome,
        }
    }

    /// Applies the attempts that ended, together, and empties `ended`. A failure is logged: the
    /// leases run out and the messages are sent again with the same ids (at least once).
    async fn finish(&self, ended: &mut Vec<FinishedDelivery>) {
        if ended.is_empty() {
            return;
        }
        if let Err(error) = self.queue.finish_deliveries(ended).await {
            tracing::warn!(error = %error, attempts = ended.len(), "could not record webhook deliveries");
        }
        ended.clear();
    }

    fn outcome(&self, message: &QueuedDelivery, attempt: &Attempt) -> DeliveryOutcome {
        match attempt.status {
            Some(status) if (200..300).contains(&status) => DeliveryOutcome::Delivered,
            Some(410) => DeliveryOutcome::Gone,
            _ => match self.settings.retry_schedule.get(message.attempts as usize) {
                Some(wait) => {
                    // ±20 %: messages that failed together (a receiver outage) come back spread.
                    let jittered = wait.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
                    let wait = time::Duration::try_from(jittered).unwrap_or(time::Duration::DAY);
                    DeliveryOutcome::RetryAt(self.clock.now() + wait)
                }
                None => DeliveryOutcome::GaveUp,
            },
        }
    }

    async fn send(&self, message: &QueuedDelivery, timestamp: i64) -> Attempt {
        let id = message.event.id.to_string();
        let body = EventDto::body(&message.event);
        let secrets = message.endpoint.signing_secrets(self.clock.now());
        let signature = signature_header(&secrets, &id, timestamp, &body);
        let started = Instant::now();
        let sent = self
            .client
            .post(&message.endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(mut response) => {
                let status = response.status().as_u16();
                // Read (a bounded part of) the answer so the connection can be reused.
                let mut read = 0;
                while read < MAX_RESPONSE_BYTES {
                    match response.chunk().await {
                        Ok(Some(chunk)) => read += chunk.len(),
                        _ => break,
                    }
                }
                Attempt {
                    status: Some(status),
                    error: None,
                    duration: started.elapsed(),
                }
            }
            Err(error) => Attempt {
                status: None,
                error: Some(describe(&error, self.settings.timeout)),
                duration: started.elapsed(),
            },
        }
    }

    /// Delivers until `shutdown` fires, then finishes the attempts in flight. Attempts that end
    /// while others are in flight are recorded together ([`FINISH_BATCH`], [`FINISH_WAIT`]), and
    /// always before the next lease, so a customer's next message is handed out as soon as the
    /// one before it is recorded.
    pub async fn run(self, shutdown: CancellationToken) {
        let capacity = self.settings.concurrency.max(1);
        let mut in_flight = JoinSet::new();
        let mut ended = Vec::new();
        let mut first_ended: Option<Instant> = None;
        let mut last_claim = Instant::now() - CLAIM_SPACING;
        let mut idle = false;
        let mut failures = 0_u32;
        while !shutdown.is_cancelled() {
            while let Some(joined) = in_flight.try_join_next() {
                ended.extend(joined.ok());
            }
            if !ended.is_empty() {
                let since = *first_ended.get_or_insert_with(Instant::now);
                if ended.len() >= FINISH_BATCH
                    || in_flight.is_empty()
                    || since.elapsed() >= FINISH_WAIT
                {
                    self.finish(&mut ended).await;
                    first_ended = None;
                }
            }
            let busy = u32::try_from(in_flight.len()).unwrap_or(u32::MAX);
            let free = capacity.saturating_sub(busy);
            let due = if in_flight.is_empty() {
                // Nothing in flight: lease now, unless the last look found nothing (then poll).
                !idle || last_claim.elapsed() >= POLL_INTERVAL
            } else {
                free > 0 && last_claim.elapsed() >= CLAIM_SPACING
            };
            if due && first_ended.is_none() {
                last_claim = Instant::now();
                match self.claim(free).await {
                    Ok(messages) => {
                        failures = 0;
                        idle = messages.is_empty();
                        for message in messages {
                            let worker = self.clone();
                            in_flight.spawn(async move { worker.attempt(message).await });
                        }
                    }
                    Err(error) => {
                        idle = true;
                        failures = failures.saturating_add(1);
                        if failures == 1 {
                            tracing::warn!(error = %error, "could not lease webhook messages; retrying");
                        }
                    }
                }
            }
            let pause = if failures > 0 {
                POLL_INTERVAL * failures.min(20)
            } else if in_flight.is_empty() {
                POLL_INTERVAL
            } else if first_ended.is_some() {
                FINISH_WAIT
            } else {
                CLAIM_SPACING
            };
            if in_flight.is_empty() {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(if idle { pause } else { Duration::ZERO }) => {}
                }
            } else {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    joined = in_flight.join_next() => ended.extend(joined.and_then(Result::ok)),
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
        while let Some(joined) = in_flight.join_next().await {
            ended.extend(joined.ok());
        }
        self.finish(&mut ended).await;
        tracing::info!("webhook delivery stopped");
    }
}

/// The reason an attempt got no answer, for the delivery log: never the URL (it may carry a
/// token), never the body.
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        format!("timed out after {} ms", timeout.as_millis())
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else if error.is_request() || error.is_body() {
        "the request could not be sent".to_owned()
    } else {
        "no valid HTTP answer".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let header = signature_header(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            body,
        );
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn during_an_overlap_both_secrets_sign() {
        let header = signature_header(&["whsec_AAAA", "whsec_BBBB"], "id", 1, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
    }
}
