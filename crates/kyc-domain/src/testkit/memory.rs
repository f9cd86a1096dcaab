//! In-memory adapters of the ports the use cases drive, for domain tests and for outside suites
//! that want the real use cases without a database or a provider. They keep the contracts the
//! ports document (optimistic concurrency, duplicate detection, idempotent ledger operations), and
//! the customer store, ledger and provider share a [`Faults`] switch that simulates a crash before
//! or after any port call. [`MemoryAccounts`] holds users and API keys, and [`FakeCredentials`]
//! stands in for password hashing and key minting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};

use crate::aml::AmlHit;
use crate::customer::{AttemptPhase, Customer, CustomerState, VerifiedIdentity};
use crate::events::{DomainEvent, OutboxMessage, Role};
use crate::ids::{
    ApiKeyId, ApplicantId, AttemptNumber, CustomerId, ExternalUserId, FirmId, UserId,
};
use crate::ports::{
    AmlScreening, ApiKeyRecord, ApiKeyStore, Applicant, ApplicantRequest, AttemptLocation, Balance,
    Clock, CreateUserError, Credentials, CreditsLedger, CustomerPage, CustomerStore, EntryKind,
    Hold, HoldKey, HoldState, IdGenerator, IdempotencyKey, IdentityProvider, InfrastructureError,
    IssuedToken, LedgerError, LedgerReceipt, LinkLocation, ListOrder, ListQuery, MintedApiKey,
    ProviderError, RECOVERY_LEASE, SaveError, Saved, StatementEntry, StatementPage, User,
    UserStore, WebhookEndpointId,
};
use crate::provider::{ProviderEvent, ProviderEventKey};
use crate::status::KycStatus;
use crate::values::{Credits, Email, ExternalId, Password};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A crash simulated by a panic never holds a lock, but a failing assertion elsewhere might:
    // keep going with the data as it is.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts port calls and panics at a chosen one, before or after its effect: the panic unwinds
/// the use case exactly as a killed process would stop it, while the adapters keep what was
/// already written.
#[derive(Debug, Default)]
pub struct Faults {
    calls: AtomicUsize,
    crash_before: AtomicUsize,
    crash_after: AtomicUsize,
}

/// The panic message of a simulated crash.
pub const CRASH: &str = "simulated crash";

impl Faults {
    /// Crash when call number `n` (1-based) starts, before it has any effect.
    pub fn crash_before_call(&self, n: usize) {
        self.calls.store(0, Ordering::SeqCst);
        self.crash_before.store(n, Ordering::SeqCst);
        self.crash_after.store(0, Ordering::SeqCst);
    }

    /// Crash when call number `n` has had its effect but before its caller sees the result.
    pub fn crash_after_call(&self, n: usize) {
        self.calls.store(0, Ordering::SeqCst);
        self.crash_before.store(0, Ordering::SeqCst);
        self.crash_after.store(n, Ordering::SeqCst);
    }

    /// No more crashes.
    pub fn disarm(&self) {
        self.crash_before.store(0, Ordering::SeqCst);
        self.crash_after.store(0, Ordering::SeqCst);
    }

    /// How many port calls were made since the last arming.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn enter(&self) -> usize {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(self.crash_before.load(Ordering::SeqCst) != n, "{CRASH}");
        n
    }

    fn leave(&self, n: usize) {
        assert!(self.crash_after.load(Ordering::SeqCst) != n, "{CRASH}");
    }
}

/// A clock that moves only when told.
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: OffsetDateTime) -> Self {
        Self(Mutex::new(now))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: time::Duration) {
        let mut now = lock(&self.0);
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *lock(&self.0)
    }
}

/// Sequential ids (one count for every kind, so no two ids it makes are equal) and readable,
/// deterministic link tokens.
#[derive(Debug, Default)]
pub struct SequentialIds(AtomicU64);

impl SequentialIds {
    fn next(&self) -> uuid::Uuid {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        uuid::Uuid::from_u128(u128::from(n))
    }
}

impl IdGenerator for SequentialIds {
    fn customer_id(&self) -> CustomerId {
        CustomerId::from_uuid(self.next())
    }

    fn user_id(&self) -> UserId {
        UserId::from_uuid(self.next())
    }

    fn api_key_id(&self) -> ApiKeyId {
        ApiKeyId::from_uuid(self.next())
    }

    fn webhook_endpoint_id(&self) -> WebhookEndpointId {
        WebhookEndpointId::from_uuid(self.next())
    }

    fn link_token(&self, attempt: &ExternalUserId) -> IssuedToken {
        IssuedToken {
            token: format!("token-{attempt}"),
            token_hash: format!("hash-{attempt}"),
        }
    }
}

/// Back-office users and API keys in memory, keeping what [`UserStore`] and [`ApiKeyStore`]
/// promise: emails unique across firms whatever their case, every read and change scoped to the
/// firm, a revocation time never overwritten.
#[derive(Debug, Default)]
pub struct MemoryAccounts {
    users: Mutex<Vec<User>>,
    api_keys: Mutex<Vec<ApiKeyRecord>>,
}

impl MemoryAccounts {
    /// Changes the firm's user `id` with `change`; `false` when there is no such user.
    fn change_user(&self, firm: FirmId, id: UserId, change: impl FnOnce(&mut User)) -> bool {
        let mut users = lock(&self.users);
        match users.iter_mut().find(|u| u.firm_id == firm && u.id == id) {
            Some(user) => {
                change(user);
                true
            }
            None => false,
        }
    }
}

#[async_trait]
impl UserStore for MemoryAccounts {
    async fn create_user(&self, user: &User) -> Result<(), CreateUserError> {
        let mut users = lock(&self.users);
        let email = user.email.normalized();
        if users.iter().any(|u| u.email.normalized() == email) {
            return Err(CreateUserError::DuplicateEmail);
        }
        if users.iter().any(|u| u.id == user.id) {
            return Err(CreateUserError::Infrastructure(
                InfrastructureError::internal("a user with this id already exists"),
            ));
        }
        users.push(user.clone());
        Ok(())
    }

    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>, InfrastructureError> {
        let email = email.normalized();
        Ok(lock(&self.users)
            .iter()
            .find(|u| u.email.normalized() == email)
            .cloned())
    }

    async fn get_user(
        &self,
        firm: FirmId,
        id: UserId,
    ) -> Result<Option<User>, InfrastructureError> {
        Ok(lock(&self.users)
            .iter()
            .find(|u| u.firm_id == firm && u.id == id)
            .cloned())
    }

    async fn list_users(&self, firm: FirmId) -> Result<Vec<User>, InfrastructureError> {
        let mut users: Vec<User> = lock(&self.users)
            .iter()
            .filter(|u| u.firm_id == firm)
            .cloned()
            .collect();
        users.sort_by_key(|u| (u.email.normalized(), u.id));
        Ok(users)
    }

    async fn set_user_role(
        &self,
        firm: FirmId,
        id: UserId,
        role: Role,
    ) -> Result<bool, InfrastructureError> {
        Ok(self.change_user(firm, id, |user| user.role = role))
    }

    async fn set_user_disabled(
        &self,
        firm: FirmId,
        id: UserId,
        disabled_at: Option<OffsetDateTime>,
    ) -> Result<bool, InfrastructureError> {
        Ok(self.change_user(firm, id, |user| user.disabled_at = disabled_at))
    }
}

#[async_trait]
impl ApiKeyStore for MemoryAccounts {
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), InfrastructureError> {
        let mut keys = lock(&self.api_keys);
        if keys
            .iter()
            .any(|k| k.id == key.id || k.sha256 == key.sha256)
        {
            return Err(InfrastructureError::internal(
                "an API key with this id or hash already exists",
            ));
        }
        keys.push(key.clone());
        Ok(())
    }

    async fn find_api_key_by_sha256(
        &self,
        sha256: &str,
    ) -> Result<Option<ApiKeyRecord>, InfrastructureError> {
        Ok(lock(&self.api_keys)
            .iter()
            .find(|k| k.sha256 == sha256)
            .cloned())
    }

    async fn list_api_keys(&self, firm: FirmId) -> Result<Vec<ApiKeyRecord>, InfrastructureError> {
        let mut keys: Vec<ApiKeyRecord> = lock(&self.api_keys)
            .iter()
            .filter(|k| k.firm_id == firm)
            .cloned()
            .collect();
        keys.sort_by_key(|k| std::cmp::Reverse((k.created_at, k.id)));
        Ok(keys)
    }

    async fn revoke_api_key(
        &self,
        firm: FirmId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<bool, InfrastructureError> {
        let mut keys = lock(&self.api_keys);
        match keys
            .iter_mut()
            .find(|k| k.firm_id == firm && k.id == id && k.revoked_at.is_none())
        {
            Some(key) => {
                key.revoked_at = Some(at);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Credentials for tests: cheap, deterministic, and plainly not production ones. A password's
/// "hash" is [`FakeCredentials::hash_of`] it (a marker and the password's SHA-256, unsalted, which
/// no login should ever accept); keys are numbered in the order minted (`kyc_test_000…0001`),
/// with their real SHA-256, so a key minted here is found by the hash of what was shown.
#[derive(Debug, Default)]
pub struct FakeCredentials(AtomicU64);

impl FakeCredentials {
    /// What [`Credentials::hash_password`] returns for `password` here.
    pub fn hash_of(password: &Password) -> String {
        format!(
            "$fake-not-a-hash${}",
            sha256_hex(password.expose().as_bytes())
        )
    }
}

#[async_trait]
impl Credentials for FakeCredentials {
    async fn hash_password(&self, password: &Password) -> Result<String, InfrastructureError> {
        Ok(Self::hash_of(password))
    }

    fn mint_api_key(&self, sandbox: bool) -> MintedApiKey {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        let prefix = if sandbox { "kyc_test_" } else { "kyc_live_" };
        // 43 characters after the prefix, as a real key has.
        let key = format!("{prefix}{n:0>43}");
        MintedApiKey {
            prefix: key[..12].to_owned(),
            last4: key[key.len() - 4..].to_owned(),
            sha256: sha256_hex(key.as_bytes()),
            key,
        }
    }

    fn mint_webhook_secret(&self) -> String {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        // 32 base64 characters decode to 24 bytes, as a real secret's do.
        format!("whsec_{n:A>32}")
    }
}

/// SHA-256 (FIPS 180-4) as lowercase hex, written out here because the domain depends on no
/// hashing library and the fakes must keep the ports' promise that keys are matched by it.
pub fn sha256_hex(message: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a_2f98,
        0x7137_4491,
        0xb5c0_fbcf,
        0xe9b5_dba5,
        0x3956_c25b,
        0x59f1_11f1,
        0x923f_82a4,
        0xab1c_5ed5,
        0xd807_aa98,
        0x1283_5b01,
        0x2431_85be,
        0x550c_7dc3,
        0x72be_5d74,
        0x80de_b1fe,
        0x9bdc_06a7,
        0xc19b_f174,
        0xe49b_69c1,
        0xefbe_4786,
        0x0fc1_9dc6,
        0x240c_a1cc,
        0x2de9_2c6f,
        0x4a74_84aa,
        0x5cb0_a9dc,
        0x76f9_88da,
        0x983e_5152,
        0xa831_c66d,
        0xb003_27c8,
        0xbf59_7fc7,
        0xc6e0_0bf3,
        0xd5a7_9147,
        0x06ca_6351,
        0x1429_2967,
        0x27b7_0a85,
        0x2e1b_2138,
        0x4d2c_6dfc,
        0x5338_0d13,
        0x650a_7354,
        0x766a_0abb,
        0x81c2_c92e,
        0x9272_2c85,
        0xa2bf_e8a1,
        0xa81a_664b,
        0xc24b_8b70,
        0xc76c_51a3,
        0xd192_e819,
        0xd699_0624,
        0xf40e_3585,
        0x106a_a070,
        0x19a4_c116,
        0x1e37_6c08,
        0x2748_774c,
        0x34b0_bcb5,
        0x391c_0cb3,
        0x4ed8_aa4a,
        0x5b9c_ca4f,
        0x682e_6ff3,
        0x748f_82ee,
        0x78a5_636f,
        0x84c8_7814,
        0x8cc7_0208,
        0x90be_fffa,
        0xa450_6ceb,
        0xbef9_a3f7,
        0xc671_78f2,
    ];
    let mut state: [u32; 8] = [
        0x6a09_e667,
        0xbb67_ae85,
        0x3c6e_f372,
        0xa54f_f53a,
        0x510e_527f,
        0x9b05_688c,
        0x1f83_d9ab,
        0x5be0_cd19,
    ];
    let mut padded = message.to_vec();
    padded.push(0x80);
    while padded.len() % 64 != 56 {
        padded.push(0);
    }
    let bits = (message.len() as u64).wrapping_mul(8);
    padded.extend_from_slice(&bits.to_be_bytes());
    for block in padded.chunks_exact(64) {
        let mut w = [0_u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let choice = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(choice)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let majority = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(majority);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (word, add) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *word = word.wrapping_add(add);
        }
    }
    state.iter().map(|word| format!("{word:08x}")).collect()
}

#[derive(Default)]
struct StoreData {
    customers: HashMap<CustomerId, CustomerState>,
    events: Vec<(CustomerId, DomainEvent)>,
    outbox: Vec<OutboxMessage>,
    inbound: HashSet<ProviderEventKey>,
    orphans: Vec<ProviderEvent>,
    /// Recovery leases by attempt: the time from which the attempt may be returned again, as the
    /// adapters keep them.
    leases: HashMap<(CustomerId, AttemptNumber), OffsetDateTime>,
}

/// Customer storage in memory.
#[derive(Default)]
pub struct MemoryStore {
    data: Mutex<StoreData>,
    faults: Arc<Faults>,
}

impl MemoryStore {
    /// A store sharing `faults` with the other fakes.
    pub fn new(faults: Arc<Faults>) -> Self {
        Self {
            data: Mutex::default(),
            faults,
        }
    }

    /// Every audit event recorded for a customer.
    pub fn events_of(&self, id: CustomerId) -> Vec<DomainEvent> {
        lock(&self.data)
            .events
            .iter()
            .filter(|(c, _)| *c == id)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Every outbox message written.
    pub fn outbox(&self) -> Vec<OutboxMessage> {
        lock(&self.data).outbox.clone()
    }

    /// Provider events recorded as orphaned.
    pub fn orphans(&self) -> Vec<ProviderEvent> {
        lock(&self.data).orphans.clone()
    }
}

/// The `updated_at` a write records: the customer's own, moved just past the firm's newest one
/// when another write of the firm got there first (writes here take turns, so this keeps the
/// order of `updated_at` the order of the writes, as the real stores do).
fn stamp(data: &StoreData, customer: &Customer) -> OffsetDateTime {
    let newest = data
        .customers
        .values()
        .filter(|c| c.firm_id == customer.firm_id)
        .map(|c| c.updated_at)
        .max();
    match newest {
        Some(newest) if newest >= customer.updated_at => newest + time::Duration::nanoseconds(1),
        _ => customer.updated_at,
    }
}

#[async_trait]
impl CustomerStore for MemoryStore {
    async fn insert(
        &self,
        customer: &Customer,
        events: &[DomainEvent],
        outbox: &[OutboxMessage],
    ) -> Result<Saved, SaveError> {
        let call = self.faults.enter();
        let mut data = lock(&self.data);
        let taken = customer.external_id.as_ref().is_some_and(|ext| {
            data.customers
                .values()
                .any(|c| c.firm_id == customer.firm_id && c.external_id.as_ref() == Some(ext))
        });
        if taken {
            return Err(SaveError::DuplicateExternalId);
        }
        let at = stamp(&data, customer);
        let saved = Saved { version: 1, at };
        data.customers
            .insert(customer.id, customer.as_saved(saved).into_state());
        data.events
            .extend(events.iter().map(|e| (customer.id, e.clone())));
        data.outbox.extend_from_slice(outbox);
        drop(data);
        self.faults.leave(call);
        Ok(saved)
    }

    async fn save<'a>(
        &self,
        customer: &Customer,
        events: &[DomainEvent],
        outbox: &[OutboxMessage],
        inbound: Option<&'a ProviderEventKey>,
    ) -> Result<Saved, SaveError> {
        let call = self.faults.enter();
        let mut data = lock(&self.data);
        let stored = data
            .customers
            .get(&customer.id)
            .filter(|c| c.firm_id == customer.firm_id)
            .map(|c| c.version);
        if stored != Some(customer.version) {
            return Err(SaveError::VersionConflict);
        }
        if let Some(key) = inbound {
            if data.inbound.contains(key) || data.orphans.iter().any(|o| &o.key == key) {
                return Err(SaveError::DuplicateInbound);
            }
            data.inbound.insert(key.clone());
        }
        let saved = Saved {
            version: customer.version + 1,
            at: stamp(&data, customer),
        };
        data.customers
            .insert(customer.id, customer.as_saved(saved).into_state());
        data.events
            .extend(events.iter().map(|e| (customer.id, e.clone())));
        data.outbox.extend_from_slice(outbox);
        drop(data);
        self.faults.leave(call);
        Ok(saved)
    }

    async fn get(
        &self,
        firm: FirmId,
        id: CustomerId,
    ) -> Result<Option<Customer>, InfrastructureError> {
        Ok(lock(&self.data)
            .customers
            .get(&id)
            .filter(|c| c.firm_id == firm)
            .cloned()
            .map(Customer::restore))
    }

    async fn get_by_external_id(
        &self,
        firm: FirmId,
        external_id: &ExternalId,
    ) -> Result<Option<Customer>, InfrastructureError> {
        Ok(lock(&self.data)
            .customers
            .values()
            .find(|c| c.firm_id == firm && c.external_id.as_ref() == Some(external_id))
            .cloned()
            .map(Customer::restore))
    }

    async fn find_by_email(
        &self,
        firm: FirmId,
        email: &Email,
    ) -> Result<Option<Customer>, InfrastructureError> {
        let wanted = email.normalized();
        Ok(lock(&self.data)
            .customers
            .values()
            .filter(|c| c.firm_id == firm && c.email.normalized() == wanted)
            .min_by_key(|c| (c.created_at, c.id))
            .cloned()
            .map(Customer::restore))
    }

    async fn list(
        &self,
        firm: FirmId,
        query: &ListQuery,
    ) -> Result<CustomerPage, InfrastructureError> {
        let order = query.filter.order();
        let key = |c: &CustomerState| match order {
            ListOrder::CreatedAt => (c.created_at, c.id),
            ListOrder::UpdatedAt | ListOrder::UpdatedAtDesc => (c.updated_at, c.id),
        };
        let data = lock(&self.data);
        let filter = &query.filter;
        let mut matching: Vec<&CustomerState> = data
            .customers
            .values()
            .filter(|c| c.firm_id == firm)
            .filter(|c| filter.kyc_status.is_none_or(|s| c.kyc_status == s))
            .filter(|c| filter.aml_status.is_none_or(|s| c.aml.status == s))
            .filter(|c| filter.updated_since.is_none_or(|t| c.updated_at > t))
            .filter(|c| {
                filter
                    .external_id
                    .as_ref()
                    .is_none_or(|e| c.external_id.as_ref() == Some(e))
            })
            .collect();
        let total = query.include_total.then_some(matching.len() as u64);
        matching.sort_by_key(|c| key(c));
        if order.is_descending() {
            matching.reverse();
        }
        let after = query.after.as_ref().map(|p| (p.sort_key, p.id));
        let past = |c: &CustomerState, a| {
            if order.is_descending() {
                key(c) < a
            } else {
                key(c) > a
            }
        };
        let rest: Vec<_> = matching
            .into_iter()
            .filter(|c| after.is_none_or(|a| past(c, a)))
            .collect();
        let limit = query.limit as usize;
        Ok(CustomerPage {
            has_more: rest.len() > limit,
            customers: rest
                .into_iter()
                .take(limit)
                .cloned()
                .map(Customer::restore)
                .collect(),
            total,
        })
    }

    async fn locate_attempt<'a>(
        &self,
        applicant_id: Option<&'a ApplicantId>,
        external_user_id: Option<&'a ExternalUserId>,
    ) -> Result<Option<AttemptLocation>, InfrastructureError> {
        Ok(lock(&self.data)
            .customers
            .values()
            .find(|c| {
                Customer::restore((*c).clone())
                    .attempt_for_provider(applicant_id, external_user_id)
                    .is_some()
            })
            .map(|c| AttemptLocation {
                firm_id: c.firm_id,
                customer_id: c.id,
            }))
    }

    async fn record_orphan_event(
        &self,
        event: &ProviderEvent,
    ) -> Result<bool, InfrastructureError> {
        let mut data = lock(&self.data);
        if data.orphans.iter().any(|o| o.key == event.key) {
            return Ok(false);
        }
        data.orphans.push(event.clone());
        Ok(true)
    }

    async fn locate_link<'a>(
        &self,
        token_hash: &'a str,
    ) -> Result<Option<LinkLocation>, InfrastructureError> {
        Ok(lock(&self.data).customers.values().find_map(|c| {
            c.attempts
                .iter()
                .find(|a| a.link_token_hash.as_deref() == Some(token_hash))
                .map(|a| LinkLocation {
                    firm_id: c.firm_id,
                    customer_id: c.id,
                    attempt: a.number,
                })
        }))
    }

    async fn due_for_rescreening(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<AttemptLocation>, InfrastructureError> {
        let data = lock(&self.data);
        let mut due: Vec<(OffsetDateTime, CustomerId, FirmId)> = data
            .customers
            .values()
            .filter(|c| c.kyc_status == KycStatus::Verified)
            .filter_map(|c| {
                c.aml
                    .next_screening_due
                    .filter(|at| *at <= now)
                    .map(|at| (at, c.id, c.firm_id))
            })
            .collect();
        due.sort();
        Ok(due
            .into_iter()
            .take(limit as usize)
            .map(|(_, customer_id, firm_id)| AttemptLocation {
                firm_id,
                customer_id,
            })
            .collect())
    }

    async fn stuck_attempts(
        &self,
        now: OffsetDateTime,
        older_than: Duration,
        limit: u32,
    ) -> Result<Vec<AttemptLocation>, InfrastructureError> {
        let claimed_before = now - older_than;
        let mut data = lock(&self.data);
        let data = &mut *data;
        let mut stuck: Vec<(OffsetDateTime, CustomerId, AttemptNumber, FirmId)> = data
            .customers
            .values()
            .flat_map(|c| {
                c.attempts
                    .iter()
                    .filter(|a| a.phase == AttemptPhase::Starting && a.claimed_at < claimed_before)
                    .map(|a| (a.claimed_at, c.id, a.number, c.firm_id))
            })
            .filter(|(_, id, number, _)| {
                data.leases
                    .get(&(*id, *number))
                    .is_none_or(|until| *until <= now)
            })
            .collect();
        stuck.sort();
        stuck.truncate(limit as usize);
        for (_, id, number, _) in &stuck {
            data.leases.insert((*id, *number), now + RECOVERY_LEASE);
        }
        Ok(stuck
            .into_iter()
            .map(|(_, customer_id, _, firm_id)| AttemptLocation {
                firm_id,
                customer_id,
            })
            .collect())
    }
}

#[derive(Default)]
struct LedgerData {
    granted: HashMap<FirmId, u64>,
    refunded: HashMap<FirmId, u64>,
    holds: BTreeMap<(FirmId, HoldKey), Hold>,
    keys: HashMap<(FirmId, String), String>,
    statement: Vec<(FirmId, StatementEntry)>,
    caps: HashMap<FirmId, Credits>,
}

impl LedgerData {
    fn balance(&self, firm: FirmId) -> Balance {
        let sum = |state| -> u64 {
            self.holds
                .values()
                .filter(|h| h.firm_id == firm && h.state == state)
                .map(|h| h.credits.get())
                .sum()
        };
        let granted = self.granted.get(&firm).copied().unwrap_or(0);
        let refunded = self.refunded.get(&firm).copied().unwrap_or(0);
        let (held, posted) = (sum(HoldState::Pending), sum(HoldState::Posted));
        Balance {
            available: Credits::new(granted + refunded - held - posted),
            held: Credits::new(held),
            spent: Credits::new(posted - refunded),
        }
    }

    /// Remembers `key` for `fingerprint`, or refuses it when it was used for something else.
    fn claim_key(
        &mut self,
        firm: FirmId,
        key: &IdempotencyKey,
        fingerprint: String,
    ) -> Result<bool, LedgerError> {
        match self.keys.get(&(firm, key.as_str().to_owned())) {
            Some(known) if *known == fingerprint => Ok(false),
            Some(_) => Err(LedgerError::IdempotencyMismatch(key.as_str().to_owned())),
            None => {
                self.keys
                    .insert((firm, key.as_str().to_owned()), fingerprint);
                Ok(true)
            }
        }
    }

    fn log(
        &mut self,
        firm: FirmId,
        at: OffsetDateTime,
        kind: EntryKind,
        credits: Credits,
        delta: i64,
        hold: Option<HoldKey>,
    ) {
        let id = format!("entry-{}", self.statement.len() + 1);
        self.statement.push((
            firm,
            StatementEntry {
                id,
                at,
                kind,
                credits,
                available_delta: delta,
                customer: hold.map(|h| h.customer),
                attempt: hold.map(|h| h.attempt),
                reference: None,
            },
        ));
    }
}

/// The credits ledger in memory: the same rules as the real adapters, without double entry.
pub struct MemoryLedger {
    data: Mutex<LedgerData>,
    faults: Arc<Faults>,
    clock: Arc<dyn Clock>,
}

impl MemoryLedger {
    /// A ledger sharing `faults` with the other fakes.
    pub fn new(faults: Arc<Faults>, clock: Arc<dyn Clock>) -> Self {
        Self {
            data: Mutex::default(),
            faults,
            clock,
        }
    }

    /// Every hold, for assertions.
    pub fn holds(&self) -> Vec<Hold> {
        lock(&self.data).holds.values().cloned().collect()
    }
}

#[async_trait]
impl CreditsLedger for MemoryLedger {
    async fn grant(
        &self,
        firm: FirmId,
        credits: Credits,
        reference: &str,
        key: &IdempotencyKey,
    ) -> Result<LedgerReceipt, LedgerError> {
        if credits.is_zero() {
            return Err(LedgerError::InvalidAmount(credits));
        }
        let mut data = lock(&self.data);
        if data.claim_key(firm, key, format!("grant:{credits}:{reference}"))? {
            *data.granted.entry(firm).or_default() += credits.get();
            data.log(
                firm,
                self.clock.now(),
                EntryKind::Grant,
                credits,
                credits.get() as i64,
                None,
            );
        }
        Ok(LedgerReceipt {
            id: key.as_str().to_owned(),
            balance: data.balance(firm),
        })
    }

    async fn reserve(
        &self,
        firm: FirmId,
        hold: HoldKey,
        credits: Credits,
        key: &IdempotencyKey,
    ) -> Result<Hold, LedgerError> {
        let call = self.faults.enter();
        let mut data = lock(&self.data);
        if let Some(existing) = data.holds.get(&(firm, hold)) {
            if existing.credits != credits {
                return Err(LedgerError::IdempotencyMismatch(key.as_str().to_owned()));
            }
            return Ok(existing.clone());
        }
        let available = data.balance(firm).available;
        if available < credits {
            return Err(LedgerError::InsufficientCredits {
                available,
                requested: credits,
            });
        }
        if let Some(cap) = data.caps.get(&firm).copied() {
            let today = self.clock.now().date();
            let used: u64 = data
                .holds
                .values()
                .filter(|h| {
                    h.firm_id == firm
                        && h.state != HoldState::Voided
                        && h.created_at.date() == today
                })
                .map(|h| h.credits.get())
                .sum();
            if used + credits.get() > cap.get() {
                return Err(LedgerError::DailyCapExceeded {
                    cap,
                    used_today: Credits::new(used),
                    requested: credits,
                });
            }
        }
        data.claim_key(firm, key, format!("reserve:{hold}:{credits}"))?;
        let created = Hold {
            firm_id: firm,
            key: hold,
            credits,
            state: HoldState::Pending,
            created_at: self.clock.now(),
        };
        data.holds.insert((firm, hold), created.clone());
        data.log(
            firm,
            created.created_at,
            EntryKind::Reserve,
            credits,
            -(credits.get() as i64),
            Some(hold),
        );
        drop(data);
        self.faults.leave(call);
        Ok(created)
    }

    async fn post(
        &self,
        firm: FirmId,
        hold: HoldKey,
        _key: &IdempotencyKey,
    ) -> Result<Hold, LedgerError> {
        self.resolve(firm, hold, HoldState::Posted)
    }

    async fn void(
        &self,
        firm: FirmId,
        hold: HoldKey,
        _key: &IdempotencyKey,
    ) -> Result<Hold, LedgerError> {
        self.resolve(firm, hold, HoldState::Voided)
    }

    async fn refund(
        &self,
        firm: FirmId,
        hold: HoldKey,
        credits: Credits,
        reason: &str,
        key: &IdempotencyKey,
    ) -> Result<LedgerReceipt, LedgerError> {
        let mut data = lock(&self.data);
        let posted = data
            .holds
            .get(&(firm, hold))
            .filter(|h| h.state == HoldState::Posted)
            .map(|h| h.credits);
        let Some(charged) = posted else {
            return Err(LedgerError::HoldNotFound(hold));
        };
        if data.claim_key(firm, key, format!("refund:{hold}:{credits}:{reason}"))? {
            if credits > charged {
                return Err(LedgerError::RefundNotAllowed {
                    hold,
                    requested: credits,
                    refundable: charged,
                });
            }
            *data.refunded.entry(firm).or_default() += credits.get();
            data.log(
                firm,
                self.clock.now(),
                EntryKind::Refund,
                credits,
                credits.get() as i64,
                Some(hold),
            );
        }
        Ok(LedgerReceipt {
            id: key.as_str().to_owned(),
            balance: data.balance(firm),
        })
    }

    async fn hold(&self, firm: FirmId, hold: HoldKey) -> Result<Option<Hold>, LedgerError> {
        Ok(lock(&self.data).holds.get(&(firm, hold)).cloned())
    }

    async fn balance(&self, firm: FirmId) -> Result<Balance, LedgerError> {
        Ok(lock(&self.data).balance(firm))
    }

    async fn statement<'a>(
        &self,
        firm: FirmId,
        _cursor: Option<&'a str>,
        limit: u32,
    ) -> Result<StatementPage, LedgerError> {
        let entries = lock(&self.data)
            .statement
            .iter()
            .rev()
            .filter(|(f, _)| *f == firm)
            .take(limit as usize)
            .map(|(_, e)| e.clone())
            .collect();
        Ok(StatementPage {
            entries,
            next_cursor: None,
        })
    }

    async fn set_daily_cap(&self, firm: FirmId, cap: Option<Credits>) -> Result<(), LedgerError> {
        let mut data = lock(&self.data);
        match cap {
            Some(cap) => data.caps.insert(firm, cap),
            None => data.caps.remove(&firm),
        };
        Ok(())
    }

    async fn pending_holds(
        &self,
        created_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Hold>, LedgerError> {
        Ok(lock(&self.data)
            .holds
            .values()
            .filter(|h| h.state == HoldState::Pending && h.created_at < created_before)
            .take(limit as usize)
            .cloned()
            .collect())
    }
}

impl MemoryLedger {
    fn resolve(
        &self,
        firm: FirmId,
        hold: HoldKey,
        outcome: HoldState,
    ) -> Result<Hold, LedgerError> {
        let call = self.faults.enter();
        let now = self.clock.now();
        let mut data = lock(&self.data);
        let current = data
            .holds
            .get(&(firm, hold))
            .cloned()
            .ok_or(LedgerError::HoldNotFound(hold))?;
        if current.state == outcome {
            return Ok(current);
        }
        if current.state != HoldState::Pending {
            return Err(LedgerError::HoldAlreadyResolved {
                hold,
                state: current.state,
            });
        }
        let resolved = Hold {
            state: outcome,
            ..current
        };
        data.holds.insert((firm, hold), resolved.clone());
        let (kind, delta) = match outcome {
            HoldState::Posted => (EntryKind::Post, 0),
            HoldState::Voided | HoldState::Pending => {
                (EntryKind::Void, resolved.credits.get() as i64)
            }
        };
        data.log(firm, now, kind, resolved.credits, delta, Some(hold));
        drop(data);
        self.faults.leave(call);
        Ok(resolved)
    }
}

/// How the fake provider answers applicant creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderMode {
    /// Creates applicants (idempotently by external user id).
    Normal,
    /// Refuses definitely, with this status and reason.
    Refuse(u16, String),
    /// Times out: the outcome is unknown to the caller.
    Unavailable,
}

/// An identity provider and AML screening in memory.
pub struct FakeProvider {
    applicants: Mutex<BTreeMap<ExternalUserId, ApplicantId>>,
    mode: Mutex<ProviderMode>,
    hits: Mutex<Vec<AmlHit>>,
    create_calls: AtomicUsize,
    faults: Arc<Faults>,
}

impl FakeProvider {
    /// A provider sharing `faults` with the other fakes.
    pub fn new(faults: Arc<Faults>) -> Self {
        Self {
            applicants: Mutex::default(),
            mode: Mutex::new(ProviderMode::Normal),
            hits: Mutex::default(),
            create_calls: AtomicUsize::new(0),
            faults,
        }
    }

    /// Changes how creation is answered.
    pub fn set_mode(&self, mode: ProviderMode) {
        *lock(&self.mode) = mode;
    }

    /// The hits screening will return.
    pub fn set_hits(&self, hits: Vec<AmlHit>) {
        *lock(&self.hits) = hits;
    }

    /// Every applicant created, by external user id.
    pub fn applicants(&self) -> BTreeMap<ExternalUserId, ApplicantId> {
        lock(&self.applicants).clone()
    }

    /// How many times creation was asked for.
    pub fn create_calls(&self) -> usize {
        self.create_calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl IdentityProvider for FakeProvider {
    async fn create_applicant(
        &self,
        request: &ApplicantRequest,
    ) -> Result<Applicant, ProviderError> {
        let call = self.faults.enter();
        self.create_calls.fetch_add(1, Ordering::SeqCst);
        match lock(&self.mode).clone() {
            ProviderMode::Normal => {}
            ProviderMode::Refuse(status, reason) => {
                return Err(ProviderError::Refused { status, reason });
            }
            ProviderMode::Unavailable => {
                return Err(ProviderError::Transient {
                    reason: "timeout".into(),
                });
            }
        }
        let id = {
            let mut applicants = lock(&self.applicants);
            let next = applicants.len() + 1;
            applicants
                .entry(request.external_user_id.clone())
                .or_insert_with(|| {
                    ApplicantId::new(format!("{next:024x}"))
                        .expect("24 hex characters are a valid applicant id")
                })
                .clone()
        };
        self.faults.leave(call);
        Ok(Applicant {
            id,
            external_user_id: request.external_user_id.clone(),
        })
    }

    async fn find_applicant(
        &self,
        external_user_id: &ExternalUserId,
    ) -> Result<Option<Applicant>, ProviderError> {
        Ok(lock(&self.applicants)
            .get(external_user_id)
            .map(|id| Applicant {
                id: id.clone(),
                external_user_id: external_user_id.clone(),
            }))
    }

    async fn verification_link(
        &self,
        external_user_id: &ExternalUserId,
        _level: &str,
        _ttl: u32,
    ) -> Result<String, ProviderError> {
        Ok(format!(
            "https://provider.example/websdk/{external_user_id}"
        ))
    }

    async fn verified_identity(
        &self,
        _applicant_id: &ApplicantId,
    ) -> Result<Option<VerifiedIdentity>, ProviderError> {
        Ok(Some(VerifiedIdentity {
            verified_legal_name: "JANE DOE".into(),
            verified_country: "AUS".into(),
        }))
    }
}

#[async_trait]
impl AmlScreening for FakeProvider {
    async fn fetch_hits(&self, _applicant_id: &ApplicantId) -> Result<Vec<AmlHit>, ProviderError> {
        Ok(lock(&self.hits).clone())
    }

    async fn request_rescreen(&self, _applicant_id: &ApplicantId) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// Every fake wired together, with the service on top.
pub struct World {
    /// Shared fault switch.
    pub faults: Arc<Faults>,
    /// The clock.
    pub clock: Arc<ManualClock>,
    /// Customers.
    pub store: Arc<MemoryStore>,
    /// Credits.
    pub ledger: Arc<MemoryLedger>,
    /// Provider and screening.
    pub provider: Arc<FakeProvider>,
    /// The use cases.
    pub service: crate::usecases::KycService,
}

impl World {
    /// A fresh world at `now` with default settings.
    pub fn new(now: OffsetDateTime) -> Self {
        let faults = Arc::new(Faults::default());
        let clock = Arc::new(ManualClock::new(now));
        let store = Arc::new(MemoryStore::new(faults.clone()));
        let ledger = Arc::new(MemoryLedger::new(faults.clone(), clock.clone()));
        let provider = Arc::new(FakeProvider::new(faults.clone()));
        let service = crate::usecases::KycService::new(
            crate::usecases::Ports {
                customers: store.clone(),
                ledger: ledger.clone(),
                provider: provider.clone(),
                screening: provider.clone(),
                clock: clock.clone(),
                ids: Arc::new(SequentialIds::default()),
            },
            crate::usecases::Settings::default(),
        );
        Self {
            faults,
            clock,
            store,
            ledger,
            provider,
            service,
        }
    }

    /// Posted holds of a customer: its charges.
    pub fn charges_of(&self, customer: CustomerId) -> Vec<AttemptNumber> {
        self.ledger
            .holds()
            .into_iter()
            .filter(|h| h.key.customer == customer && h.state == HoldState::Posted)
            .map(|h| h.key.attempt)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    //! The fake keeps what the storage contract demands of the real adapters for the worker
    //! look-ups, so domain tests that rely on it see the same leases and walks.

    use uuid::Uuid;

    use super::*;
    use crate::customer::NewCustomer;
    use crate::events::{Actor, Person, Role};
    use crate::ids::UserId;
    use crate::ports::{CustomerFilter, PagePosition};
    use crate::risk::{ProviderLevels, RiskAnswers};
    use crate::values::{AddedVia, CustomerType, FullName};

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    /// A customer with a starting attempt claimed at `claimed_at`.
    fn starting(firm: FirmId, claimed_at: OffsetDateTime, n: u128) -> Customer {
        let person = Person {
            id: UserId::from_uuid(Uuid::from_u128(1)),
            email: Email::new("staff@firm.example").unwrap(),
            role: Role::Staff,
        };
        let (mut customer, _) = Customer::create(
            CustomerId::from_uuid(Uuid::from_u128(100 + n)),
            firm,
            NewCustomer {
                external_id: None,
                full_name: FullName::new("Jane Doe").unwrap(),
                email: Email::new("jane@example.com").unwrap(),
                phone: None,
                customer_type: CustomerType::Individual,
            },
            AddedVia::Integration,
            &Actor::system("test"),
            claimed_at,
        );
        let answers = RiskAnswers {
            is_designated_service: true,
            handles_cash_or_crypto: false,
            is_new_customer: true,
        };
        customer.confirm_risk(answers, &person, claimed_at).unwrap();
        customer
            .begin_verification(
                &person,
                Credits::new(1),
                &ProviderLevels::default(),
                claimed_at,
            )
            .unwrap();
        customer
    }

    #[tokio::test]
    async fn stuck_attempts_are_leased_oldest_first_until_the_lease_runs_out() {
        let store = MemoryStore::default();
        let firm = FirmId::from_uuid(Uuid::from_u128(50));
        let mut order = Vec::new();
        for n in 0..3_i64 {
            let customer = starting(firm, t0() + Duration::seconds(n), n.unsigned_abs().into());
            store.insert(&customer, &[], &[]).await.unwrap();
            order.push(customer.id);
        }
        let ids = |found: Vec<AttemptLocation>| -> Vec<CustomerId> {
            found.into_iter().map(|l| l.customer_id).collect()
        };
        let stuck_after = Duration::minutes(2);
        let now = t0() + Duration::minutes(7);
        let first = store.stuck_attempts(now, stuck_after, 2).await.unwrap();
        assert_eq!(ids(first), order[..2]);
        let second = store.stuck_attempts(now, stuck_after, 2).await.unwrap();
        assert_eq!(ids(second), order[2..]);
        let within = now + RECOVERY_LEASE - Duration::seconds(1);
        let leased = store.stuck_attempts(within, stuck_after, 10).await.unwrap();
        assert!(leased.is_empty());
        let after = store
            .stuck_attempts(now + RECOVERY_LEASE, stuck_after, 10)
            .await
            .unwrap();
        assert_eq!(ids(after), order);
        let young = store
            .stuck_attempts(now + RECOVERY_LEASE * 2, Duration::hours(1), 10)
            .await
            .unwrap();
        assert!(
            young.is_empty(),
            "claimed less than an hour before: not stuck"
        );
    }

    #[tokio::test]
    async fn links_and_due_rescreenings_are_found_across_firms() {
        let store = MemoryStore::default();
        let firm = FirmId::from_uuid(Uuid::from_u128(50));
        let mut customer = starting(firm, t0(), 0);
        let attempt = customer.latest_attempt().unwrap().number;
        customer
            .complete_verification(
                attempt,
                ApplicantId::new("0123456789abcdef01234567").unwrap(),
                "hash-of-the-token".to_owned(),
                &Actor::system("test"),
                t0(),
            )
            .unwrap();
        let mut state = customer.into_state();
        state.kyc_status = KycStatus::Verified;
        state.aml.next_screening_due = Some(t0() + Duration::days(365));
        let customer = Customer::restore(state);
        store.insert(&customer, &[], &[]).await.unwrap();

        assert_eq!(
            store.locate_link("hash-of-the-token").await.unwrap(),
            Some(LinkLocation {
                firm_id: firm,
                customer_id: customer.id,
                attempt,
            })
        );
        assert_eq!(store.locate_link("another-hash").await.unwrap(), None);
        let due = t0() + Duration::days(365);
        assert!(
            store
                .due_for_rescreening(due - Duration::seconds(1), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.due_for_rescreening(due, 10).await.unwrap(),
            vec![AttemptLocation {
                firm_id: firm,
                customer_id: customer.id,
            }]
        );
    }

    #[test]
    fn sha256_matches_the_published_test_vectors() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Two blocks of padding.
        assert_eq!(
            sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn fake_keys_look_like_real_ones_and_are_matched_by_their_sha256() {
        let credentials = FakeCredentials::default();
        let live = credentials.mint_api_key(false);
        let sandbox = credentials.mint_api_key(true);
        assert!(live.key.starts_with("kyc_live_"));
        assert!(sandbox.key.starts_with("kyc_test_"));
        assert_eq!(live.key.len(), "kyc_live_".len() + 43);
        assert_ne!(live.key[9..], sandbox.key[9..]);
        assert_eq!(live.prefix, live.key[..12]);
        assert_eq!(live.last4, live.key[live.key.len() - 4..]);
        assert_eq!(live.sha256, sha256_hex(live.key.as_bytes()));
        assert!(!format!("{live:?}").contains(&live.key));
    }

    #[tokio::test]
    async fn newest_first_walks_from_the_latest_change_down_and_resumes_below_the_cursor() {
        let store = MemoryStore::default();
        let firm = FirmId::from_uuid(Uuid::from_u128(60));
        for n in 0..5_u32 {
            let at = t0() + Duration::seconds(i64::from(n));
            store
                .insert(&starting(firm, at, u128::from(n)), &[], &[])
                .await
                .unwrap();
        }
        let filter = CustomerFilter {
            newest_first: true,
            ..CustomerFilter::default()
        };
        let page = |after| ListQuery {
            filter: filter.clone(),
            after,
            limit: 2,
            include_total: false,
        };
        let first = store.list(firm, &page(None)).await.unwrap();
        let updated: Vec<_> = first.customers.iter().map(|c| c.updated_at).collect();
        assert_eq!(
            updated,
            [t0() + Duration::seconds(4), t0() + Duration::seconds(3)]
        );
        let after = PagePosition::after(ListOrder::UpdatedAtDesc, &first.customers[1]);
        let second = store.list(firm, &page(Some(after))).await.unwrap();
        let updated: Vec<_> = second.customers.iter().map(|c| c.updated_at).collect();
        assert_eq!(
            updated,
            [t0() + Duration::seconds(2), t0() + Duration::seconds(1)]
        );
        assert!(second.has_more);
    }
}
