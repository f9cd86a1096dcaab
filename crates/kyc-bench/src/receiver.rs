//! The CRM's webhook receiver of the deliveries phase: an axum server on a loopback port that
//! checks each delivery's Standard Webhooks signature against the endpoint's secrets (the work a
//! real receiver does) and counts what it accepted, distinct event ids, and what it refused.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Default)]
struct Counts {
    keys: Mutex<Vec<Vec<u8>>>,
    accepted: AtomicU64,
    refused: AtomicU64,
    ids: Mutex<HashSet<String>>,
    all_ids: Mutex<HashSet<String>>,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
}

/// A running receiver.
#[derive(Clone)]
pub struct Receiver {
    /// `http://127.0.0.1:<port>/hooks`
    pub url: String,
    counts: Arc<Counts>,
}

impl Receiver {
    /// Binds a loopback port and serves until the process ends.
    ///
    /// # Errors
    /// The port could not be bound.
    pub async fn start() -> Result<Self, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind the receiver: {e}"))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let counts = Arc::new(Counts::default());
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(counts.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url: format!("http://{address}/hooks"),
            counts,
        })
    }

    /// Registers this receiver as a webhook endpoint of each of `firms` (with the server's CLI)
    /// and trusts the secrets they were given.
    ///
    /// # Errors
    /// The CLI failed, or a secret is unreadable.
    pub fn subscribe(
        &self,
        server: &crate::processes::KycServer,
        firms: &[kyc_domain::ids::FirmId],
    ) -> Result<(), String> {
        for firm in firms {
            let secret = server.cli(&[
                "webhook-endpoint",
                "create",
                "--firm",
                &firm.to_string(),
                "--url",
                &self.url,
            ])?;
            self.trust(&secret)?;
        }
        Ok(())
    }

    /// Accepts deliveries signed with `secret` (`whsec_…`) from now on.
    ///
    /// # Errors
    /// The secret is not `whsec_` and base64.
    pub fn trust(&self, secret: &str) -> Result<(), String> {
        let key = STANDARD
            .decode(secret.trim().trim_start_matches("whsec_"))
            .map_err(|e| format!("the endpoint secret: {e}"))?;
        self.counts
            .keys
            .lock()
            .map_err(|e| e.to_string())?
            .push(key);
        Ok(())
    }

    /// Deliveries accepted (signature valid).
    pub fn accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::Relaxed)
    }

    /// Deliveries refused (signature missing or wrong).
    pub fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::Relaxed)
    }

    /// Distinct ids of the `customer.created` and `customer.updated` events accepted.
    pub fn distinct(&self) -> usize {
        self.counts.ids.lock().map_or(0, |ids| ids.len())
    }

    /// Distinct ids of every event accepted (screening results included).
    pub fn distinct_all(&self) -> usize {
        self.counts.all_ids.lock().map_or(0, |ids| ids.len())
    }

    /// When the last delivery was accepted.
    pub fn last(&self) -> Option<Instant> {
        self.counts.last.lock().ok().and_then(|last| *last)
    }

    /// When the first delivery since the start (or the last [`Receiver::forget`]) was accepted.
    pub fn first(&self) -> Option<Instant> {
        self.counts.first.lock().ok().and_then(|first| *first)
    }

    /// Forgets what was received (the secrets stay trusted), for a phase counted on its own.
    pub fn forget(&self) {
        self.counts.accepted.store(0, Ordering::Relaxed);
        self.counts.refused.store(0, Ordering::Relaxed);
        for ids in [&self.counts.ids, &self.counts.all_ids] {
            if let Ok(mut ids) = ids.lock() {
                ids.clear();
            }
        }
        for at in [&self.counts.first, &self.counts.last] {
            if let Ok(mut at) = at.lock() {
                *at = None;
            }
        }
    }
}

fn verifies(keys: &[Vec<u8>], headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (id, timestamp, signatures) = (
        header("webhook-id")?,
        header("webhook-timestamp")?,
        header("webhook-signature")?,
    );
    let valid = keys.iter().any(|key| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
            return false;
        };
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        let expected = STANDARD.encode(mac.finalize().into_bytes());
        signatures
            .split(' ')
            .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
    });
    valid.then(|| id.to_owned())
}

async fn receive(State(counts): State<Arc<Counts>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let keys = counts.keys.lock().map(|k| k.clone()).unwrap_or_default();
    match verifies(&keys, &headers, &body) {
        Some(id) => {
            counts.accepted.fetch_add(1, Ordering::Relaxed);
            // Only the changes the phase makes count (not the screening results still arriving
            // from the phase before).
            let contact = [
                &b"\"type\":\"customer.created\""[..],
                b"\"type\":\"customer.updated\"",
            ]
            .iter()
            .any(|needle| body.windows(needle.len()).any(|w| w == *needle));
            if contact && let Ok(mut ids) = counts.ids.lock() {
                ids.insert(id.clone());
            }
            if let Ok(mut ids) = counts.all_ids.lock() {
                ids.insert(id);
            }
            let now = Instant::now();
            if let Ok(mut first) = counts.first.lock() {
                first.get_or_insert(now);
            }
            if let Ok(mut last) = counts.last.lock() {
                *last = Some(now);
            }
            StatusCode::NO_CONTENT
        }
        None => {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            StatusCode::UNAUTHORIZED
        }
    }
}
