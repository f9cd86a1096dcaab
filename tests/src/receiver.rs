//! A webhook receiver for the tests: an HTTP server on a free loopback port that records every
//! request (path, headers, body) and answers each path as scripted (fail, stall, `410 Gone`),
//! then `200` once the script of that path is spent. Signatures are checked with the
//! `standardwebhooks` crate, an implementation of the specification independent of the server's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// This status, at once.
    Status(u16),
    /// `200`, after this long (longer than the server's timeout: the attempt times out).
    Stall(Duration),
}

/// One request received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The path it was sent to.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
    /// The status answered (for a stall, the status it would have got).
    pub answered: u16,
}

impl Received {
    /// `webhook-id`.
    pub fn id(&self) -> String {
        self.header("webhook-id")
    }

    /// A header as text (empty when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// Whether the signature verifies with `secret` (Standard Webhooks, within its 5-minute
    /// tolerance).
    pub fn verifies_with(&self, secret: &str) -> bool {
        standardwebhooks::Webhook::new(secret)
            .expect("a whsec_ secret")
            .verify(&self.body, &self.headers)
            .is_ok()
    }
}

#[derive(Default)]
struct Inner {
    received: Mutex<Vec<Received>>,
    scripts: Mutex<HashMap<String, VecDeque<Answer>>>,
}

/// A running receiver; stops with the test's runtime.
#[derive(Clone)]
pub struct Receiver {
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
    inner: Arc<Inner>,
}

impl Receiver {
    /// Starts a receiver answering `200` everywhere until scripted.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let base_url = format!("http://{}", listener.local_addr().expect("an address"));
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base_url, inner }
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Answers the next requests to `path` with `answers`, in order, then `200`.
    pub fn script(&self, path: &str, answers: &[Answer]) {
        self.inner
            .scripts
            .lock()
            .expect("lock")
            .insert(path.to_owned(), answers.iter().copied().collect());
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().expect("lock").clone()
    }

    /// The requests to `path` so far.
    pub fn received_at(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits until `done` holds for the requests so far; panics after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.received()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; received {} requests",
                self.received().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path().to_owned();
    let answer = inner
        .scripts
        .lock()
        .expect("lock")
        .get_mut(&path)
        .and_then(VecDeque::pop_front)
        .unwrap_or(Answer::Status(200));
    let answered = match answer {
        Answer::Status(status) => status,
        Answer::Stall(_) => 200,
    };
    inner.received.lock().expect("lock").push(Received {
        path,
        headers,
        body,
        at: Instant::now(),
        answered,
    });
    if let Answer::Stall(pause) = answer {
        tokio::time::sleep(pause).await;
    }
    StatusCode::from_u16(answered).unwrap_or(StatusCode::OK)
}
