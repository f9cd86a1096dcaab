//! The simulator's webhook sender: signs each body with the webhook secret, posts it to the
//! configured target, and resends on a non-2xx answer or a timeout along a schedule that tests can
//! compress from Sumsub's hours to milliseconds. Delivery knobs (duplicates, reversed order, delay)
//! reproduce what a real receiver must survive.
//!
//! Sender tasks hold only a [`Weak`] reference to the simulator's state and a cancellation token
//! that the state cancels when it is dropped, so they never keep a dropped simulator alive and
//! stop at its shutdown.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::webhook::{DIGEST_ALG_HEADER, DIGEST_HEADER};

/// Test knobs for webhook delivery. Durations are in milliseconds so the knobs travel as JSON
/// through the control endpoint (`GET`/`PUT /_sim/knobs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliveryKnobs {
    /// Deliver every webhook twice.
    pub duplicate: bool,
    /// Deliver the webhooks of one action newest first (e.g. `applicantReviewed` before
    /// `applicantPending`).
    pub out_of_order: bool,
    /// Wait this long before each delivery.
    pub delay_ms: u64,
    /// After every GREEN, also send a later RED + FINAL (`FRAUDULENT_PATTERNS`), as when an
    /// approved applicant is later found to be a fraudster.
    pub green_then_red: bool,
    /// The pauses before each resend of a failed delivery (Sumsub: 5 min, 1 h, 5 h, 18 h).
    pub retry_schedule_ms: Vec<u64>,
    /// How long the target has to answer before the delivery counts as failed (Sumsub: 5 s).
    pub timeout_ms: u64,
}

impl Default for DeliveryKnobs {
    fn default() -> Self {
        Self {
            duplicate: false,
            out_of_order: false,
            delay_ms: 0,
            green_then_red: false,
            retry_schedule_ms: vec![300_000, 3_600_000, 18_000_000, 64_800_000],
            timeout_ms: 5_000,
        }
    }
}

/// One try at delivering one webhook, as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// The webhook type.
    pub event_type: String,
    /// The applicant it is about.
    pub applicant_id: String,
    /// The event's `createdAtMs`.
    pub created_at_ms: String,
    /// 1 for the first try, 2 for the first resend…
    pub attempt: u32,
    /// The target's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Whether the delivery counts as done (2xx within the timeout).
    pub delivered: bool,
}

/// A webhook ready to send: its body is final, so every copy and resend carries the same bytes.
#[derive(Debug, Clone)]
pub(super) struct Outgoing {
    pub(super) event_type: String,
    pub(super) applicant_id: String,
    pub(super) created_at_ms: String,
    pub(super) body: Bytes,
}

/// Sends the webhooks of one action on a background task.
pub(super) fn dispatch(shared: &Arc<Shared>, mut batch: Vec<Outgoing>) {
    let Some(target) = shared.config.webhook.clone() else {
        return;
    };
    if batch.is_empty() {
        return;
    }
    let knobs = shared.knobs();
    let sender = Sender {
        shared: Arc::downgrade(shared),
        http: shared.http.clone(),
        shutdown: shared.shutdown.clone(),
        target,
        knobs,
    };
    if sender.knobs.out_of_order {
        batch.reverse();
    }
    tokio::spawn(async move {
        let copies = if sender.knobs.duplicate { 2 } else { 1 };
        for outgoing in batch {
            if !sender
                .pause(Duration::from_millis(sender.knobs.delay_ms))
                .await
            {
                return;
            }
            for _ in 0..copies {
                if !sender.send(&outgoing, 1).await {
                    // Resends run on their own, as at Sumsub: later events are not held back.
                    let resender = sender.clone();
                    let outgoing = outgoing.clone();
                    tokio::spawn(async move { resender.resend(outgoing).await });
                }
            }
        }
    });
}

#[derive(Clone)]
struct Sender {
    shared: Weak<Shared>,
    http: reqwest::Client,
    shutdown: CancellationToken,
    target: super::WebhookTarget,
    knobs: DeliveryKnobs,
}

impl Sender {
    /// Sleeps unless the simulator shuts down first; `false` when it did.
    async fn pause(&self, pause: Duration) -> bool {
        if pause.is_zero() {
            return !self.shutdown.is_cancelled();
        }
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            () = tokio::time::sleep(pause) => true,
        }
    }

    async fn resend(&self, outgoing: Outgoing) {
        for (index, pause_ms) in self.knobs.retry_schedule_ms.iter().enumerate() {
            if !self.pause(Duration::from_millis(*pause_ms)).await {
                return;
            }
            let attempt = u32::try_from(index).unwrap_or(u32::MAX).saturating_add(2);
            if self.send(&outgoing, attempt).await {
                return;
            }
        }
    }

    /// One delivery; `true` when the target accepted it.
    async fn send(&self, outgoing: &Outgoing, attempt: u32) -> bool {
        use secrecy::ExposeSecret;
        let digest = self.target.algorithm.sign(
            self.target.secret.expose_secret().as_bytes(),
            &outgoing.body,
        );
        let request = self
            .http
            .post(&self.target.url)
            .timeout(Duration::from_millis(self.knobs.timeout_ms))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(DIGEST_HEADER, digest)
            .header(DIGEST_ALG_HEADER, self.target.algorithm.header_value())
            .body(outgoing.body.clone())
            .send();
        let status = tokio::select! {
            () = self.shutdown.cancelled() => return true,
            result = request => result.ok().map(|response| response.status()),
        };
        let delivered = status.is_some_and(|status| status.is_success());
        if let Some(shared) = self.shared.upgrade() {
            shared.record(Delivery {
                event_type: outgoing.event_type.clone(),
                applicant_id: outgoing.applicant_id.clone(),
                created_at_ms: outgoing.created_at_ms.clone(),
                attempt,
                status: status.map(|status| status.as_u16()),
                delivered,
            });
        }
        delivered
    }
}
