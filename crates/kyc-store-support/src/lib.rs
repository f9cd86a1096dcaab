//! # kyc-store-support
//!
//! The storage rules both adapters (PostgreSQL and SQLite) run, written once:
//!
//! - [`engine`]: the small dialect trait a backend implements (binding arguments, reading
//!   columns, taking its write turn, naming its constraints), and the statements built on it;
//! - [`postgres`], [`sqlite`]: how statements run on each database (binding, reading, write
//!   transactions), shared by the storage adapters and the credits ledger;
//! - [`accounts`], [`idempotency`], [`audit`], [`webhooks`], [`outbox`]: those ports whole (and,
//!   for [`customers`], its reads; for [`deliveries`], the event feed, the delivery lease and
//!   replay), as generic functions over an
//!   [`engine::Engine`] and macros that implement the port for an adapter;
//! - [`rules`]: what the customer store's two write paths share (the stored form of a state, row
//!   decoding through the cache, error mapping, the time of a move);
//! - [`times`]: the one-time move of stored times to RFC 3339;
//! - [`turn`]: the writer's turn of a SQLite file, shared by the store and the ledger;
//! - the decoded-state cache of the read path ([`StateCache`]), below.
//!
//! ## The decoded-state cache
//!
//! Customer states already parsed from their stored JSON, so reading the same customer again at
//! the same version skips the parse.
//!
//! Parsing the states is most of what the adapter adds to a page of customers (a CRM polling the
//! list reads the same pages over and over). A state at a given version never changes: every write
//! of a customer row bumps its `version` in the same statement, so a state cached at the version a
//! row carries now is exactly what parsing that row would give. A customer saved elsewhere (by
//! another server replica on the same database) comes back at a newer version, which misses, and is
//! parsed from the row: the cache can be behind, never wrong. Anything that rewrites a stored state
//! (a migration, say) must bump the version too.
//!
//! Entries are keyed by firm and customer and hold one version each, the newest seen, so an old
//! version never takes a slot. The firm in the key is the firm the query was filtered by, so an
//! entry is only ever handed to a read for the firm whose row it came from.
//!
//! The bound is a count of entries, kept as two generations per shard (a cheap approximation of
//! least-recently-used): new and recently read entries go into the young generation; when it is
//! full it becomes the old one and the previous old one is dropped; a hit in the old generation
//! moves the entry back to the young one. A typical state (about 450 bytes of JSON) takes about
//! 1–2 KiB in memory once decoded (its strings, attempts and history allocated separately), so the
//! default 10 000 entries hold roughly 10–20 MiB at most.

pub mod accounts;
pub mod audit;
pub mod customers;
pub mod deliveries;
pub mod engine;
pub mod idempotency;
pub mod outbox;
pub mod postgres;
pub mod rules;
pub mod sqlite;
pub mod times;
pub mod turn;
pub mod webhooks;

/// What the port macros expand to, so an adapter needs nothing else in scope.
#[doc(hidden)]
pub mod reexport {
    pub use async_trait::async_trait;
}

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kyc_domain::customer::CustomerState;
use kyc_domain::ids::{CustomerId, FirmId};

/// How many decoded states a store keeps unless told otherwise (see the module docs for memory).
pub const DEFAULT_STATE_CACHE_ENTRIES: usize = 10_000;

/// Shards bound the contention between concurrent readers: each takes the lock of one shard.
const MAX_SHARDS: usize = 16;

type Key = (FirmId, CustomerId);

#[derive(Default)]
struct Shard {
    young: HashMap<Key, Arc<CustomerState>>,
    old: HashMap<Key, Arc<CustomerState>>,
}

/// A bounded, concurrent map from `(firm, customer)` to the customer's newest decoded state.
pub struct StateCache {
    shards: Box<[Mutex<Shard>]>,
    per_generation: usize,
    capacity: usize,
}

impl std::fmt::Debug for StateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl StateCache {
    /// A cache of at most `capacity` states (at least two when not zero); `0` disables it.
    pub fn new(capacity: usize) -> Self {
        let shards = if capacity == 0 {
            0
        } else {
            (capacity / 512).clamp(1, MAX_SHARDS)
        };
        let per_generation = capacity
            .checked_div(shards)
            .map_or(0, |per_shard| (per_shard / 2).max(1));
        Self {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            per_generation,
            capacity,
        }
    }

    /// Whether the cache holds anything at all; when not, callers skip the work of filling it.
    pub fn enabled(&self) -> bool {
        !self.shards.is_empty()
    }

    fn shard(&self, id: CustomerId) -> Option<&Mutex<Shard>> {
        // The low bits of a v7 (or v4) UUID are random, so they spread customers evenly.
        let bits = id.as_uuid().as_u128() as usize;
        self.shards.get(bits % self.shards.len().max(1))
    }

    /// The state of `id` in `firm` at exactly `version`, if cached: shared with the cache, not
    /// copied (a [`Customer`](kyc_domain::Customer) restored from it copies it on its first
    /// change).
    pub fn get(&self, firm: FirmId, id: CustomerId, version: u64) -> Option<Arc<CustomerState>> {
        let shard = self.shard(id)?;
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (firm, id);
        match shard.young.get(&key) {
            Some(state) if state.version == version => Some(Arc::clone(state)),
            Some(_) => None,
            None => match shard.old.remove(&key) {
                Some(state) if state.version == version => {
                    let found = Arc::clone(&state);
                    self.insert_young(&mut shard, key, state);
                    Some(found)
                }
                Some(state) => {
                    shard.old.insert(key, state);
                    None
                }
                None => None,
            },
        }
    }

    /// Remembers `state` (at `state.version`) for `id` in `firm`, unless a newer version is held.
    pub fn put(&self, firm: FirmId, id: CustomerId, state: Arc<CustomerState>) {
        let Some(shard) = self.shard(id) else { return };
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (firm, id);
        let held = shard
            .young
            .get(&key)
            .or_else(|| shard.old.get(&key))
            .map(|held| held.version);
        if held.is_some_and(|held| held >= state.version) {
            // A concurrent reader that saw the row before a save must not replace the newer state.
            return;
        }
        shard.old.remove(&key);
        self.insert_young(&mut shard, key, state);
    }

    fn insert_young(&self, shard: &mut Shard, key: Key, state: Arc<CustomerState>) {
        if shard.young.len() >= self.per_generation && !shard.young.contains_key(&key) {
            shard.old = std::mem::take(&mut shard.young);
        }
        shard.young.insert(key, state);
    }

    /// How many states are held (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                shard.young.len() + shard.old.len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kyc_domain::customer::Customer;
    use uuid::Uuid;

    fn state(firm: FirmId, version: u64) -> Arc<CustomerState> {
        let mut customer = sample(firm);
        customer.saved_at_version(version);
        Arc::clone(customer.shared_state())
    }

    fn sample(firm: FirmId) -> Customer {
        use kyc_domain::customer::NewCustomer;
        use kyc_domain::events::Actor;
        use kyc_domain::values::{AddedVia, CustomerType, Email, FullName};
        Customer::create(
            CustomerId::from_uuid(Uuid::now_v7()),
            firm,
            NewCustomer {
                external_id: None,
                full_name: FullName::new("Jane Doe").unwrap(),
                email: Email::new("jane@example.com").unwrap(),
                phone: None,
                customer_type: CustomerType::Individual,
            },
            AddedVia::Integration,
            &Actor::Customer,
            time::OffsetDateTime::now_utc(),
        )
        .0
    }

    #[test]
    fn a_state_is_found_only_at_its_version_and_in_its_firm() {
        let cache = StateCache::new(100);
        let firm = FirmId::from_uuid(Uuid::now_v7());
        let other = FirmId::from_uuid(Uuid::now_v7());
        let cached = state(firm, 3);
        let id = cached.id;
        cache.put(firm, id, cached.clone());
        assert_eq!(cache.get(firm, id, 3), Some(cached));
        assert_eq!(cache.get(firm, id, 4), None);
        assert_eq!(cache.get(firm, id, 2), None);
        assert_eq!(cache.get(other, id, 3), None);
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one() {
        let cache = StateCache::new(100);
        let firm = FirmId::from_uuid(Uuid::now_v7());
        let newer = state(firm, 5);
        let id = newer.id;
        cache.put(firm, id, newer.clone());
        let mut older = CustomerState::clone(&newer);
        older.version = 4;
        cache.put(firm, id, Arc::new(older));
        assert_eq!(cache.get(firm, id, 5), Some(newer));
        assert_eq!(cache.get(firm, id, 4), None);
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity_and_zero_disables_it() {
        let firm = FirmId::from_uuid(Uuid::now_v7());
        for capacity in [2, 10, 1_000, 5_000] {
            let cache = StateCache::new(capacity);
            for _ in 0..capacity * 3 {
                let cached = state(firm, 1);
                cache.put(firm, cached.id, cached);
                assert!(cache.len() <= capacity, "{} > {capacity}", cache.len());
            }
            assert!(cache.len() >= capacity / 2, "capacity {capacity} underused");
        }
        let disabled = StateCache::new(0);
        let cached = state(firm, 1);
        let id = cached.id;
        disabled.put(firm, id, cached);
        assert!(!disabled.enabled());
        assert_eq!(disabled.get(firm, id, 1), None);
    }

    #[test]
    fn recently_read_entries_survive_a_generation_turning_over() {
        let cache = StateCache::new(4);
        let firm = FirmId::from_uuid(Uuid::now_v7());
        let kept = state(firm, 1);
        let id = kept.id;
        cache.put(firm, id, kept.clone());
        for _ in 0..20 {
            let filler = state(firm, 1);
            cache.put(firm, filler.id, filler);
            assert_eq!(cache.get(firm, id, 1).as_ref(), Some(&kept));
        }
    }

    #[test]
    fn a_customer_changed_after_a_cache_hit_leaves_the_cached_state_alone() {
        use kyc_domain::customer::ContactUpdate;
        use kyc_domain::events::Actor;
        use kyc_domain::values::FullName;
        let cache = StateCache::new(100);
        let firm = FirmId::from_uuid(Uuid::now_v7());
        let cached = state(firm, 2);
        let id = cached.id;
        let before = CustomerState::clone(&cached);
        cache.put(firm, id, cached);
        let mut customer = Customer::restore_shared(cache.get(firm, id, 2).unwrap());
        let events = customer
            .update_contact(
                ContactUpdate {
                    full_name: Some(FullName::new("Joan Doe").unwrap()),
                    email: None,
                    phone: None,
                },
                &Actor::Customer,
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
        assert!(!events.is_empty());
        assert_eq!(customer.full_name.as_str(), "Joan Doe");
        assert_eq!(cache.get(firm, id, 2).as_deref(), Some(&before));
    }
}
