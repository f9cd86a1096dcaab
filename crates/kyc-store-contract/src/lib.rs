//! # kyc-store-contract
//!
//! The storage contract every storage adapter passes, as public async functions over the domain's
//! ports. Each adapter's `tests/contract.rs` builds a fresh store and calls every function through
//! [`contract_tests!`], so the list of guarantees lives here once and no adapter can skip one.
//!
//! | Module | Proves |
//! |---|---|
//! | [`customers`] | round trips, atomic saves, optimistic concurrency, the externalId race, inbound dedupe, attempt look-ups |
//! | [`pagination`] | list filters and counts, cursor walks under concurrent writers, polling with `updated_since`, the newest-first walk |
//! | [`audit`] | the event log only grows, and the feed carries its notifications in order |
//! | [`cache`] | cached customer states are never stale, never cross firms, never differ from a parse (adapters call these with two stores) |
//! | [`tenancy`] | a firm's id never reaches another firm's rows |
//! | [`idempotency`] | claim semantics under concurrency, replay, release, expiry and purge |
//! | [`access`] | users (listed, their role and disabled time changed, within their firm only), sessions, API keys, webhook endpoints and deliveries, the outbox |
//! | [`workers`] | the link look-up, the re-screening walk, stuck attempts leased to one worker at a time, outbox rows due at their move's time |
//! | [`formats`] | times in stored states and audit changes are RFC 3339; legacy rows read the same and are rewritten once (called with the adapter's engine) |
//! | [`delivery`] | the event feed (order, paging, the customer as saved, concurrent writers), the delivery queue (chains, per-endpoint leases, outcomes, replays), endpoint updates and deletes |

pub mod access;
pub mod audit;
pub mod cache;
pub mod customers;
pub mod delivery;
pub mod formats;
pub mod idempotency;
pub mod pagination;
pub mod tenancy;
pub mod workers;

use std::sync::Arc;

use futures::future::BoxFuture;
use kyc_domain::customer::{Customer, NewCustomer};
use kyc_domain::events::{Actor, DomainEvent, OutboxMessage, Person, Role, outbox_for};
use kyc_domain::ids::{ApiKeyId, CustomerId, FirmId, UserId};
use kyc_domain::ports::{
    ApiKeyStore, AuditLog, CustomerStore, DeliveryQueue, EventFeed, FeedEvent, FeedPosition, Firm,
    FirmStore, IdempotencyStore, OutboxStore, QueuedDelivery, SessionStore, UserStore,
    WebhookEndpoint, WebhookEndpointId, WebhookStore,
};
use kyc_domain::values::{AddedVia, CustomerType, Email, ExternalId, FullName};
use time::OffsetDateTime;
use uuid::Uuid;

pub use access::*;
pub use audit::*;
pub use cache::*;
pub use customers::*;
pub use delivery::*;
pub use formats::*;
pub use idempotency::*;
pub use pagination::*;
pub use tenancy::*;
pub use workers::*;

#[doc(hidden)]
pub mod __private {
    pub use futures::FutureExt;
}

/// Every storage port of one adapter, as the use cases hold them.
#[derive(Clone)]
pub struct Stores {
    /// Customers, their events and outbox rows.
    pub customers: Arc<dyn CustomerStore>,
    /// Firms.
    pub firms: Arc<dyn FirmStore>,
    /// Users.
    pub users: Arc<dyn UserStore>,
    /// Sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// API keys.
    pub api_keys: Arc<dyn ApiKeyStore>,
    /// Idempotency records.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Webhook endpoints and deliveries.
    pub webhooks: Arc<dyn WebhookStore>,
    /// The outbox.
    pub outbox: Arc<dyn OutboxStore>,
    /// The audit trail.
    pub audit: Arc<dyn AuditLog>,
    /// The firms' event feeds.
    pub feed: Arc<dyn EventFeed>,
    /// The webhook delivery queue.
    pub queue: Arc<dyn DeliveryQueue>,
}

impl Stores {
    /// Every port served by one adapter value.
    pub fn from_adapter<T>(adapter: T) -> Self
    where
        T: CustomerStore
            + FirmStore
            + UserStore
            + SessionStore
            + ApiKeyStore
            + IdempotencyStore
            + WebhookStore
            + OutboxStore
            + AuditLog
            + EventFeed
            + DeliveryQueue
            + 'static,
    {
        let adapter = Arc::new(adapter);
        Self {
            customers: adapter.clone(),
            firms: adapter.clone(),
            users: adapter.clone(),
            sessions: adapter.clone(),
            api_keys: adapter.clone(),
            idempotency: adapter.clone(),
            webhooks: adapter.clone(),
            outbox: adapter.clone(),
            audit: adapter.clone(),
            feed: adapter.clone(),
            queue: adapter,
        }
    }
}

/// A fresh, empty, migrated store for one test, and how to dispose of it afterwards.
pub struct Harness {
    /// The store under test.
    pub stores: Stores,
    /// Run after the test, pass or fail (drops a per-test database, deletes a file).
    pub teardown: Option<BoxFuture<'static, ()>>,
}

/// Generates one `#[tokio::test]` per contract function. `$setup` is an async function returning
/// `Option<Harness>`; `None` skips the test (the setup prints why).
#[macro_export]
macro_rules! contract_tests {
    ($setup:path) => {
        $crate::contract_tests!(
            $setup;
            inserted_customers_read_back_unchanged_by_every_lookup,
            save_writes_state_events_and_outbox_together,
            notifications_are_queued_only_for_an_endpoint_that_wants_them,
            a_failed_save_writes_nothing,
            two_saves_from_one_version_let_exactly_one_win,
            fifty_concurrent_inserts_of_one_external_id_create_one_customer,
            concurrent_upserts_of_one_external_id_all_return_the_same_customer,
            insert_unless_matched_stores_only_a_customer_nobody_matches,
            an_inbound_provider_event_is_recorded_once,
            attempts_are_found_by_provider_ids_and_stuck_ones_are_listed,
            list_filters_pages_and_counts,
            walking_every_page_while_writers_run_never_skips_or_repeats,
            polling_with_updated_since_and_cursor_loses_no_change,
            a_newest_first_walk_returns_every_customer_once_newest_change_first,
            a_change_is_never_stamped_before_one_that_committed_first,
            the_event_log_only_grows,
            reads_with_one_firms_id_never_return_another_firms_rows,
            one_of_many_concurrent_claims_wins_and_the_rest_see_in_progress,
            completed_keys_replay_and_mismatched_bodies_are_refused,
            released_and_expired_keys_can_be_claimed_again_and_purge_removes_only_expired,
            users_log_in_by_a_globally_unique_email,
            users_are_listed_by_email_and_their_role_and_disabled_time_change,
            another_firms_user_is_never_listed_changed_or_disabled,
            sessions_are_touched_and_deleted,
            api_keys_are_found_by_hash_listed_and_revoked,
            webhook_endpoints_and_deliveries_round_trip,
            outbox_batches_are_disjoint_and_retries_come_back,
            concurrent_outbox_leases_never_exceed_their_limit_or_overlap,
            a_verification_link_leads_to_the_attempt_it_was_issued_for,
            verified_customers_due_for_rescreening_are_listed_most_overdue_first,
            concurrent_recovery_workers_lease_disjoint_sets_of_stuck_attempts,
            stuck_attempts_come_oldest_claim_first,
            outbox_messages_fall_due_at_the_time_of_their_move,
            the_feed_returns_a_firms_events_in_order_with_the_customer_as_saved,
            a_feed_walk_while_writers_run_returns_every_event_once_in_order,
            only_the_oldest_unfinished_message_of_a_customer_is_handed_to_an_endpoint,
            no_endpoint_gets_more_than_its_share_of_leases,
            concurrent_claimers_get_disjoint_deliveries,
            a_delivery_whose_lease_ran_out_is_handed_out_again,
            each_outcome_of_a_delivery_is_applied_and_logged,
            a_gone_endpoint_is_disabled_and_its_messages_wait_until_it_is_enabled,
            a_replay_queues_the_same_event_again_behind_the_customers_messages,
            a_replay_needs_the_firms_endpoint_and_an_event_it_had_queued,
            endpoints_are_updated_within_their_firm,
            a_deleted_endpoint_is_hidden_and_its_pending_messages_dropped,
            a_backlog_waiting_on_one_endpoint_holds_up_no_other,
            a_change_saved_while_its_chain_head_finishes_is_handed_out_next,
        );
    };
    ($setup:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                use $crate::__private::FutureExt as _;
                let Some(harness) = $setup().await else { return };
                let stores = harness.stores.clone();
                let outcome = std::panic::AssertUnwindSafe($crate::$name(stores)).catch_unwind().await;
                drop(harness.stores);
                if let Some(teardown) = harness.teardown {
                    teardown.await;
                }
                if let Err(panic) = outcome {
                    std::panic::resume_unwind(panic);
                }
            }
        )*
    };
}

/// The current time, truncated to microseconds: the precision both backends keep.
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}

/// A new firm, stored.
pub async fn new_firm(stores: &Stores) -> FirmId {
    let id = FirmId::from_uuid(Uuid::now_v7());
    stores
        .firms
        .create_firm(&Firm {
            id,
            name: format!("Firm {id}"),
            created_at: now(),
        })
        .await
        .expect("create firm");
    id
}

/// Registers an enabled webhook endpoint for `firm` that wants `types` (none: every type), so
/// the firm's notifications are queued.
pub async fn add_endpoint(stores: &Stores, firm: FirmId, types: &[&str]) -> WebhookEndpoint {
    let endpoint = WebhookEndpoint {
        id: WebhookEndpointId::from_uuid(Uuid::now_v7()),
        firm_id: firm,
        url: format!("https://crm.example/hooks/{}", Uuid::new_v4().simple()),
        description: None,
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        previous_secret: None,
        previous_secret_expires_at: None,
        disabled_at: None,
        created_at: now(),
    };
    stores
        .webhooks
        .create_endpoint(&endpoint)
        .await
        .expect("create endpoint");
    endpoint
}

/// Leases every due outbox entry for a minute and returns their messages, oldest first.
pub async fn claim_messages(stores: &Stores) -> Vec<OutboxMessage> {
    stores
        .outbox
        .claim_batch(now(), now() + time::Duration::minutes(1), 100)
        .await
        .expect("claim outbox entries")
        .into_iter()
        .map(|entry| entry.message)
        .collect()
}

/// Leases every due delivery (up to 1000, with no per-endpoint cap that matters) for a minute.
pub async fn claim_all_deliveries(stores: &Stores) -> Vec<QueuedDelivery> {
    stores
        .queue
        .claim_deliveries(now(), now() + time::Duration::minutes(1), 1000, 1000)
        .await
        .expect("claim deliveries")
}

/// The work among `messages` (what the outbox carries), in order.
pub fn work_of(messages: &[OutboxMessage]) -> Vec<OutboxMessage> {
    messages
        .iter()
        .filter(|message| message.notification().is_none())
        .cloned()
        .collect()
}

/// The notifications among `messages` (what the feed carries), in order.
pub fn notifications_of(messages: &[OutboxMessage]) -> Vec<OutboxMessage> {
    messages
        .iter()
        .filter(|message| message.notification().is_some())
        .cloned()
        .collect()
}

/// The notification message a feed event was written from.
pub fn message_of(event: &FeedEvent) -> OutboxMessage {
    OutboxMessage::Notify {
        firm_id: event.firm_id,
        customer_id: event.customer_id,
        notification: event.notification,
        previous_kyc_status: event.previous_kyc_status,
        previous_aml_status: event.previous_aml_status,
    }
}

/// How long a feed read may wait for events already written to become readable: a store may
/// hold back an event while a write that could still precede it runs (on a shared server, any
/// write).
pub const FEED_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The firm's feed after `after`, read in pages of `page` until a read returns nothing once at
/// least `count` events were read (or [`FEED_SETTLE`] passed).
pub async fn read_feed(
    stores: &Stores,
    firm: FirmId,
    after: Option<FeedPosition>,
    page: u32,
    count: usize,
) -> Vec<FeedEvent> {
    let deadline = std::time::Instant::now() + FEED_SETTLE;
    let mut cursor = after;
    let mut events: Vec<FeedEvent> = Vec::new();
    loop {
        let read = stores
            .feed
            .read_events(firm, cursor, page)
            .await
            .expect("read the feed");
        match read.last() {
            Some(last) => {
                cursor = Some(last.position);
                events.extend(read);
            }
            None if events.len() >= count || std::time::Instant::now() >= deadline => {
                return events;
            }
            None => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

/// The firm's whole feed, expecting at least `count` events (see [`read_feed`]).
pub async fn whole_feed(stores: &Stores, firm: FirmId, count: usize) -> Vec<FeedEvent> {
    read_feed(stores, firm, None, 100, count).await
}

/// The CRM integration acting through an API key.
pub fn crm() -> Actor {
    Actor::ApiKey {
        id: ApiKeyId::from_uuid(Uuid::from_u128(7)),
        label: "crm".to_owned(),
    }
}

/// A back-office person with staff rights.
pub fn staff() -> Person {
    Person {
        id: UserId::from_uuid(Uuid::from_u128(8)),
        email: Email::new("staff@firm.example").expect("email"),
        role: Role::Staff,
    }
}

/// A new customer (not stored), its creation events and outbox messages.
pub fn new_customer(
    firm: FirmId,
    external_id: Option<&str>,
    email: &str,
) -> (Customer, Vec<DomainEvent>, Vec<OutboxMessage>) {
    let id = CustomerId::from_uuid(Uuid::now_v7());
    let (customer, events) = Customer::create(
        id,
        firm,
        NewCustomer {
            external_id: external_id.map(|e| ExternalId::new(e).expect("external id")),
            full_name: FullName::new("Jane Doe").expect("name"),
            email: Email::new(email).expect("email"),
            phone: None,
            customer_type: CustomerType::Individual,
        },
        AddedVia::Integration,
        &crm(),
        now(),
    );
    let outbox = outbox_for(firm, id, &events);
    (customer, events, outbox)
}

/// Inserts a new customer and returns it at its stored version.
pub async fn insert_customer(stores: &Stores, firm: FirmId, external_id: Option<&str>) -> Customer {
    let email = format!("{}@example.com", Uuid::new_v4().simple());
    let (mut customer, events, outbox) = new_customer(firm, external_id, &email);
    let version = stores
        .customers
        .insert(&customer, &events, &outbox)
        .await
        .expect("insert customer");
    customer.saved(version);
    customer
}

/// Inserts a new customer with a screening job beside its creation notification, so the outbox
/// holds work for it; returns it at its stored version.
pub async fn insert_customer_with_work(stores: &Stores, firm: FirmId) -> Customer {
    let email = format!("{}@example.com", Uuid::new_v4().simple());
    let (mut customer, events, mut outbox) = new_customer(firm, None, &email);
    outbox.push(OutboxMessage::RunScreening {
        firm_id: firm,
        customer_id: customer.id,
    });
    let version = stores
        .customers
        .insert(&customer, &events, &outbox)
        .await
        .expect("insert customer");
    customer.saved(version);
    customer
}

/// Changes the customer's phone (a realistic visible change) and saves it; returns it at its new
/// version.
pub async fn touch_customer(stores: &Stores, customer: &mut Customer, phone_suffix: u32) {
    let events = change_phone(customer, phone_suffix);
    let outbox = outbox_for(customer.firm_id, customer.id, &events);
    let version = stores
        .customers
        .save(customer, &events, &outbox, None)
        .await
        .expect("save customer");
    customer.saved(version);
}

/// Changes the phone in memory, returning the events.
pub fn change_phone(customer: &mut Customer, phone_suffix: u32) -> Vec<DomainEvent> {
    let phone = kyc_domain::values::Phone::new(format!("+4420{:07}", phone_suffix % 10_000_000))
        .expect("phone");
    customer
        .update_contact(
            kyc_domain::customer::ContactUpdate {
                phone: Some(phone),
                ..Default::default()
            },
            &crm(),
            now(),
        )
        .expect("update contact")
}
