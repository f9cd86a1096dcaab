//! API keys served from memory while the database announces every change to them.
//!
//! Every CRM request authenticates its key by hash. Without this cache that is one round trip to
//! PostgreSQL before the request's own query; with it, a key already seen is answered from memory.
//!
//! # What keeps it right
//!
//! A trigger on `api_keys` (migration `0003`) sends `pg_notify('kyc_api_keys', OLD.sha256)` for
//! every updated or deleted row, and an empty payload for a `TRUNCATE`, whoever makes the change:
//! this adapter in this or another process (another server replica, a command-line process), or
//! raw SQL. PostgreSQL delivers a notification when its transaction commits, and never for one
//! that rolls back.
//!
//! The cache is used only while a listener is connected and listening on that channel
//! ([`PostgresStore::listen_for_key_changes`]):
//!
//! - **Hits** are served only while listening. While nobody listens every look-up goes to the
//!   database, as if there were no cache.
//! - **Evictions**: each notification removes its key; an empty payload clears the cache. A
//!   revocation through this store also removes the key here at once, without waiting for its own
//!   notification.
//! - **Outages**: when the listener's connection is lost (or it stops) the cache is cleared and
//!   bypassed until a new listener is listening again, so notifications missed meanwhile cannot
//!   leave a stale key behind. A connection dropped silently on the way (an idle timeout in a
//!   firewall) is found by a `SELECT 1` on it after every quiet 10 s, and every cached key is
//!   read again from the database at least once a minute whatever was heard.
//! - **Races**: a look-up that misses takes a ticket (the cache's generation) before it reads the
//!   database, and its row is stored only if no eviction, clear or change of listener happened
//!   since. Otherwise a read that began before a revocation could put the still-valid row back
//!   after the revocation's eviction.
//! - **Only keys that were found are stored**, never "no such key", so a key created anywhere
//!   works on its first request.
//! - **Expiry** needs no notification: the record carries `expires_at` and the caller compares it
//!   with its clock on every request.
//!
//! # The window
//!
//! A revocation committed by another process reaches this one when the notification arrives:
//! PostgreSQL signals the listening sessions as the transaction commits, so on one host or a local
//! network that is normally well under a millisecond after the commit, and requests in between may
//! still be accepted with the old record. Through the same store the revocation is seen at once,
//! and a revocation through any store returns only [`REVOCATION_PROPAGATION`] after its commit,
//! so by the time the revoking command or page reports it done, the other servers have evicted
//! the key. A change made with raw SQL has no such pause.
//! During a listener outage the cache is off and every look-up reads the database.
//!
//! # Bound
//!
//! At most [`KEY_CACHE_ENTRIES`] keys (a record is a few hundred bytes, so about a megabyte at
//! most); when full, an arbitrary entry makes room. A firm has a handful of keys, so in practice
//! every active key stays cached.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use kyc_domain::ports::{ApiKeyRecord, InfrastructureError};
use sqlx::postgres::{PgListener, PgPoolOptions};

use crate::{PostgresStore, infra};

/// How long [`revoke_api_key`](kyc_domain::ports::ApiKeyStore::revoke_api_key) waits after its
/// commit before it returns: ample time for the notification to reach the other listening
/// servers (measured under load: a quarter of a millisecond at the median, 6 ms at most), so a
/// caller that revokes and then tries the key finds it refused on every server.
pub const REVOCATION_PROPAGATION: Duration = Duration::from_millis(50);

/// The channel the `api_keys` trigger notifies on.
pub const KEY_CHANGES_CHANNEL: &str = "kyc_api_keys";

/// How many keys a store keeps in memory at most.
pub const KEY_CACHE_ENTRIES: usize = 10_000;

/// How long the listener waits for its connection before it reports the database unavailable.
const LISTENER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the listening connection is proven alive with a `SELECT 1`: a connection dropped
/// silently on the way (a firewall's idle timeout, a failover) would otherwise look like a quiet
/// channel while announcements go unheard.
const LISTENER_HEARTBEAT: Duration = Duration::from_secs(10);

/// How long the heartbeat's `SELECT 1` may take before the connection counts as lost.
const LISTENER_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a cached key is served before it is read again, whatever was heard: the bound on
/// how long a revocation could go unnoticed if announcements were lost in a way neither the
/// connection nor the heartbeat shows.
const KEY_ENTRY_TTL: Duration = Duration::from_secs(60);

/// What a look-up found in the cache.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The stored record (only while listening).
    Hit(ApiKeyRecord),
    /// Not cached, and the cache may take the row read now: store it with this ticket.
    Miss(Ticket),
    /// Nobody is listening: read the database and keep nothing.
    Off,
}

/// The cache's generation when a look-up missed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

#[derive(Debug, Default)]
struct Inner {
    /// Listeners connected and listening now.
    listeners: usize,
    /// Bumped by every eviction, clear and change in the number of listeners.
    generation: u64,
    /// Each record with the moment it was read from the database.
    entries: HashMap<String, (ApiKeyRecord, Instant)>,
}

/// What woke the listening loop.
enum Wakeup {
    Shutdown,
    Heartbeat,
    Received(Result<Option<sqlx::postgres::PgNotification>, sqlx::Error>),
}

/// Records of API keys by SHA-256, trusted only while the database's changes are being heard.
#[derive(Debug)]
pub(crate) struct KeyCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl KeyCache {
    /// A cache of at most `capacity` keys.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The critical sections leave the map consistent at every step, so a panic elsewhere
        // while the lock was held does not make its content wrong.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks `sha256` up.
    pub(crate) fn lookup(&self, sha256: &str) -> Lookup {
        let mut inner = self.lock();
        if inner.listeners == 0 || self.capacity == 0 {
            return Lookup::Off;
        }
        match inner.entries.get(sha256) {
            Some((record, read_at)) if read_at.elapsed() < KEY_ENTRY_TTL => {
                Lookup::Hit(record.clone())
            }
            Some(_) => {
                inner.entries.remove(sha256);
                Lookup::Miss(Ticket(inner.generation))
            }
            None => Lookup::Miss(Ticket(inner.generation)),
        }
    }

    /// Stores the record a missed look-up read, unless anything was evicted or the listener
    /// changed since the ticket was taken.
    pub(crate) fn insert(&self, ticket: Ticket, record: &ApiKeyRecord) {
        let mut inner = self.lock();
        if inner.listeners == 0 || inner.generation != ticket.0 {
            return;
        }
        if inner.entries.len() >= self.capacity
            && !inner.entries.contains_key(&record.sha256)
            && let Some(victim) = inner.entries.keys().next().cloned()
        {
            inner.entries.remove(&victim);
        }
        inner
            .entries
            .insert(record.sha256.clone(), (record.clone(), Instant::now()));
    }

    /// Forgets `sha256` and voids every ticket taken before.
    pub(crate) fn evict(&self, sha256: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.remove(sha256);
    }

    /// Forgets every key and voids every ticket taken before.
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
    }

    /// A listener is now listening: from here on every change is announced to it.
    fn listening(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.listeners += 1;
    }

    /// A listener stopped listening: changes may go unheard, so nothing cached can be trusted.
    fn not_listening(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.listeners = inner.listeners.saturating_sub(1);
        inner.entries.clear();
    }

    fn is_listening(&self) -> bool {
        self.lock().listeners > 0
    }

    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

/// Marks the cache not listening when a listener's session ends, however it ends (an error, a
/// lost connection, shutdown, or the future being dropped).
struct Listening<'a>(&'a KeyCache);

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        self.0.not_listening();
    }
}

impl PostgresStore {
    /// Listens for changes to `api_keys` on a connection of its own and evicts each changed key
    /// from this store's key cache (shared by its clones), which serves
    /// `find_api_key_by_sha256` from memory only while this runs and is listening.
    ///
    /// Returns `Ok(())` when `shutdown` resolves. Returns an error when the connection cannot be
    /// made or is lost: the cache is then cleared and bypassed, and the caller should call this
    /// again after a pause. The module documentation says what this guarantees.
    ///
    /// # Errors
    /// [`InfrastructureError::Unavailable`] when the database cannot be reached or the listening
    /// connection was lost or failed; [`InfrastructureError::Internal`] when `LISTEN` itself is
    /// refused.
    pub async fn listen_for_key_changes(
        &self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), InfrastructureError> {
        let shutdown = shutdown.fuse();
        futures::pin_mut!(shutdown);
        // A pool of one, apart from the store's, so that the listener holds none of the
        // connections requests use.
        let options = (*self.pool.connect_options()).clone();
        let connect = async {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .min_connections(0)
                .max_lifetime(None)
                .idle_timeout(None)
                .acquire_timeout(LISTENER_CONNECT_TIMEOUT)
                .connect_with(options)
                .await?;
            let mut listener = PgListener::connect_with(&pool).await?;
            // A lost connection ends this session; the caller makes a new one.
            listener.eager_reconnect(false);
            listener.listen(KEY_CHANGES_CHANNEL).await?;
            Ok::<_, sqlx::Error>((pool, listener))
        }
        .fuse();
        futures::pin_mut!(connect);
        let (pool, mut listener) = futures::select! {
            () = shutdown => return Ok(()),
            connected = connect => connected.map_err(infra)?,
        };

        // LISTEN has been executed: every commit from now on is announced on this connection.
        self.keys.listening();
        let listening = Listening(&self.keys);
        tracing::info!(
            channel = KEY_CHANGES_CHANNEL,
            "listening for API key changes: keys are served from memory"
        );
        let outcome = loop {
            let event = {
                let next = listener.try_recv().fuse();
                let heartbeat = tokio::time::sleep(LISTENER_HEARTBEAT).fuse();
                futures::pin_mut!(next, heartbeat);
                futures::select! {
                    () = shutdown => Wakeup::Shutdown,
                    () = heartbeat => Wakeup::Heartbeat,
                    received = next => Wakeup::Received(received),
                }
            };
            match event {
                Wakeup::Shutdown => break Ok(()),
                Wakeup::Received(Ok(Some(notification))) => match notification.payload() {
                    "" => self.keys.clear(),
                    sha256 => self.keys.evict(sha256),
                },
                Wakeup::Received(Ok(None)) => {
                    break Err(InfrastructureError::unavailable(
                        "the connection listening for API key changes was lost",
                    ));
                }
                // The session is unusable either way (a terminated backend answers with an
                // error before it closes): the caller connects again.
                Wakeup::Received(Err(error)) => break Err(InfrastructureError::unavailable(error)),
                // Quiet for a while: prove the connection still answers. Notifications that
                // arrive meanwhile wait in the connection's buffer for the next receive.
                Wakeup::Heartbeat => {
                    let alive = tokio::time::timeout(
                        LISTENER_HEARTBEAT_TIMEOUT,
                        sqlx::query("SELECT 1").execute(&mut listener),
                    )
                    .await;
                    match alive {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => break Err(InfrastructureError::unavailable(error)),
                        Err(_) => {
                            break Err(InfrastructureError::unavailable(
                                "the connection listening for API key changes stopped answering",
                            ));
                        }
                    }
                }
            }
        };
        drop(listening);
        drop(listener);
        pool.close().await;
        outcome
    }

    /// Whether a listener is listening for key changes, so that keys may be served from memory.
    pub fn is_listening_for_key_changes(&self) -> bool {
        self.keys.is_listening()
    }

    /// How many API keys are held in memory now.
    pub fn cached_key_count(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kyc_domain::ids::{ApiKeyId, FirmId};
    use time::OffsetDateTime;

    fn record(sha256: &str) -> ApiKeyRecord {
        ApiKeyRecord {
            id: ApiKeyId::from_uuid(uuid::Uuid::now_v7()),
            firm_id: FirmId::from_uuid(uuid::Uuid::now_v7()),
            label: "crm".into(),
            scopes: vec!["customers:read".into()],
            prefix: "kyc_live_abc".into(),
            last4: "wxyz".into(),
            sha256: sha256.into(),
            expires_at: None,
            revoked_at: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn ticket(cache: &KeyCache, sha256: &str) -> Ticket {
        match cache.lookup(sha256) {
            Lookup::Miss(ticket) => ticket,
            other => panic!("expected a miss, got {other:?}"),
        }
    }

    #[test]
    fn nothing_is_served_or_kept_while_nobody_listens() {
        let cache = KeyCache::new(8);
        assert!(matches!(cache.lookup("a"), Lookup::Off));
        cache.listening();
        let t = ticket(&cache, "a");
        cache.insert(t, &record("a"));
        assert!(matches!(cache.lookup("a"), Lookup::Hit(r) if r.sha256 == "a"));
        cache.not_listening();
        assert!(matches!(cache.lookup("a"), Lookup::Off));
        cache.listening();
        assert!(
            matches!(cache.lookup("a"), Lookup::Miss(_)),
            "an outage clears what was cached before it"
        );
    }

    #[test]
    fn a_key_cached_longer_than_its_time_to_live_is_read_again() {
        let cache = KeyCache::new(8);
        cache.listening();
        let t = ticket(&cache, "a");
        cache.insert(t, &record("a"));
        assert!(matches!(cache.lookup("a"), Lookup::Hit(_)));
        let long_ago = Instant::now()
            .checked_sub(KEY_ENTRY_TTL + Duration::from_secs(1))
            .expect("the clock has run longer than the time to live");
        if let Some(entry) = cache.lock().entries.get_mut("a") {
            entry.1 = long_ago;
        }
        assert!(matches!(cache.lookup("a"), Lookup::Miss(_)));
        assert_eq!(cache.len(), 0, "the stale entry is dropped");
    }

    #[test]
    fn a_read_that_began_before_an_eviction_is_not_stored() {
        let cache = KeyCache::new(8);
        cache.listening();
        let before = ticket(&cache, "a");
        cache.evict("a");
        cache.insert(before, &record("a"));
        assert!(matches!(cache.lookup("a"), Lookup::Miss(_)));
        let before = ticket(&cache, "a");
        cache.clear();
        cache.insert(before, &record("a"));
        assert!(matches!(cache.lookup("a"), Lookup::Miss(_)));
        let after = ticket(&cache, "a");
        cache.insert(after, &record("a"));
        assert!(matches!(cache.lookup("a"), Lookup::Hit(_)));
    }

    #[test]
    fn a_read_that_spans_an_outage_is_not_stored() {
        let cache = KeyCache::new(8);
        cache.listening();
        let before = ticket(&cache, "a");
        cache.not_listening();
        cache.listening();
        cache.insert(before, &record("a"));
        assert!(matches!(cache.lookup("a"), Lookup::Miss(_)));
    }

    #[test]
    fn the_bound_holds() {
        let cache = KeyCache::new(3);
        cache.listening();
        for key in ["a", "b", "c", "d", "e"] {
            let t = ticket(&cache, key);
            cache.insert(t, &record(key));
            assert!(cache.len() <= 3);
        }
        assert!(matches!(cache.lookup("e"), Lookup::Hit(_)));
        assert_eq!(cache.len(), 3);
    }
}
