//! Push delivery: the firms' ordered event feeds, the webhook delivery queue (one chain per
//! endpoint and customer, a per-endpoint share of leases, the outcome of each attempt, replays),
//! and endpoints changed and deleted.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};

use kyc_domain::customer::Customer;
use kyc_domain::events::{NotificationType, OutboxMessage};
use kyc_domain::ids::CustomerId;
use kyc_domain::ports::{
    DeliveryOutcome, FeedPosition, QueuedDelivery, WebhookDelivery, WebhookEndpoint,
    WebhookEndpointId,
};
use kyc_domain::status::{AmlStatus, KycStatus};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::{
    Stores, add_endpoint, change_phone, insert_customer, new_customer, new_firm, now, read_feed,
    touch_customer, whole_feed,
};

/// A phone suffix no other save in this run uses, so every change is a real one.
fn phone() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A notification about `customer`.
fn notify(
    customer: &Customer,
    notification: NotificationType,
    previous_kyc_status: Option<KycStatus>,
    previous_aml_status: Option<AmlStatus>,
) -> OutboxMessage {
    OutboxMessage::Notify {
        firm_id: customer.firm_id,
        customer_id: customer.id,
        notification,
        previous_kyc_status,
        previous_aml_status,
    }
}

/// Changes the customer's phone and saves it with `outbox`; the customer is left at its new
/// version.
async fn save_with(stores: &Stores, customer: &mut Customer, outbox: &[OutboxMessage]) {
    let events = change_phone(customer, phone());
    let saved = stores
        .customers
        .save(customer, &events, outbox, None)
        .await
        .expect("save customer");
    customer.saved(saved);
}

/// Leases what is due at `at` for an hour, with a per-endpoint share that does not bind.
async fn claim_at(stores: &Stores, at: OffsetDateTime) -> Vec<QueuedDelivery> {
    stores
        .queue
        .claim_deliveries(at, at + Duration::hours(1), 1000, 1000)
        .await
        .expect("claim deliveries")
}

/// The attempt a worker would log for `delivery`: answered with `status`, or failed without one.
pub fn attempt_of(
    delivery: &QueuedDelivery,
    at: OffsetDateTime,
    status: Option<u16>,
) -> WebhookDelivery {
    WebhookDelivery {
        endpoint_id: delivery.endpoint.id,
        firm_id: delivery.endpoint.firm_id,
        message_id: delivery.event.id.to_string(),
        event_type: delivery.event.notification.as_str().to_owned(),
        attempt: delivery.attempts + 1,
        attempted_at: at,
        response_status: status,
        error: status.is_none().then(|| "connection refused".to_owned()),
        duration_ms: 40,
    }
}

/// Finishes `delivery` with `outcome`, logging an attempt at `at` answered with `status`; returns
/// the attempt logged.
async fn finish(
    stores: &Stores,
    delivery: &QueuedDelivery,
    at: OffsetDateTime,
    status: Option<u16>,
    outcome: DeliveryOutcome,
) -> WebhookDelivery {
    let attempt = attempt_of(delivery, at, status);
    stores
        .queue
        .finish_delivery(delivery.id, &attempt, outcome)
        .await
        .expect("finish delivery");
    attempt
}

/// Claims and delivers everything due now, pass after pass, until nothing is left; returns every
/// delivery in the order handed out.
pub async fn deliver_everything(stores: &Stores) -> Vec<QueuedDelivery> {
    let mut delivered = Vec::new();
    loop {
        let batch = claim_at(stores, now()).await;
        if batch.is_empty() {
            return delivered;
        }
        for delivery in &batch {
            finish(
                stores,
                delivery,
                now(),
                Some(200),
                DeliveryOutcome::Delivered,
            )
            .await;
        }
        delivered.extend(batch);
    }
}

/// Who a delivery goes to, about whom, and what.
fn route(delivery: &QueuedDelivery) -> (WebhookEndpointId, CustomerId, NotificationType) {
    (
        delivery.endpoint.id,
        delivery.event.customer_id,
        delivery.event.notification,
    )
}

fn routes(
    deliveries: &[QueuedDelivery],
) -> HashSet<(WebhookEndpointId, CustomerId, NotificationType)> {
    deliveries.iter().map(route).collect()
}

/// The one delivery of `batch` to `endpoint` about `customer`.
fn find(
    batch: &[QueuedDelivery],
    endpoint: &WebhookEndpoint,
    customer: &Customer,
) -> QueuedDelivery {
    let found: Vec<_> = batch
        .iter()
        .filter(|d| d.endpoint.id == endpoint.id && d.event.customer_id == customer.id)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one delivery to the endpoint about the customer: {found:?}"
    );
    found[0].clone()
}

/// A firm's feed holds every notification of its customers in the order written, with the
/// event's id, type, previous statuses, the customer as that save left it and the time the save
/// recorded; it pages with `after`, ends after its last event, and holds no other firm's events.
pub async fn the_feed_returns_a_firms_events_in_order_with_the_customer_as_saved(stores: Stores) {
    let firm = new_firm(&stores).await;
    let other = new_firm(&stores).await;
    let theirs = insert_customer(&stores, other, None).await;
    let mut customer = insert_customer(&stores, firm, None).await;
    let inserted = customer.clone();
    let outbox = [
        notify(
            &customer,
            NotificationType::KycStatusChanged,
            Some(KycStatus::NotStarted),
            None,
        ),
        notify(
            &customer,
            NotificationType::AmlStatusChanged,
            None,
            Some(AmlStatus::NotScreened),
        ),
        OutboxMessage::RunScreening {
            firm_id: firm,
            customer_id: customer.id,
        },
    ];
    save_with(&stores, &mut customer, &outbox).await;
    let moved = customer.clone();
    touch_customer(&stores, &mut customer, phone()).await;
    assert_eq!(
        stores
            .customers
            .get(firm, customer.id)
            .await
            .unwrap()
            .as_ref(),
        Some(&customer)
    );

    let feed = whole_feed(&stores, firm, 4).await;
    let kinds: Vec<_> = feed.iter().map(|event| event.notification).collect();
    assert_eq!(
        kinds,
        vec![
            NotificationType::Created,
            NotificationType::KycStatusChanged,
            NotificationType::AmlStatusChanged,
            NotificationType::Updated,
        ],
        "one event per notification, in order; work is not in the feed"
    );
    assert!(
        feed.iter()
            .all(|event| event.firm_id == firm && event.customer_id == customer.id)
    );
    let previous: Vec<_> = feed
        .iter()
        .map(|event| (event.previous_kyc_status, event.previous_aml_status))
        .collect();
    assert_eq!(
        previous,
        vec![
            (None, None),
            (Some(KycStatus::NotStarted), None),
            (None, Some(AmlStatus::NotScreened)),
            (None, None),
        ]
    );
    let saved_as = [&inserted, &moved, &moved, &customer];
    for (event, saved) in feed.iter().zip(saved_as) {
        assert_eq!(&event.customer, saved, "the customer as the save left it");
        assert_eq!(
            event.occurred_at, saved.updated_at,
            "when the save was recorded"
        );
    }
    assert!(
        feed.windows(2).all(|w| w[0].position < w[1].position),
        "positions increase"
    );
    let ids: HashSet<Uuid> = feed.iter().map(|event| event.id).collect();
    assert_eq!(ids.len(), feed.len(), "every event has its own id");

    // One at a time with `after`, from the start and from the middle.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = stores.feed.read_events(firm, after, 1).await.unwrap();
        assert!(page.len() <= 1, "a page holds at most its limit");
        let Some(last) = page.last() else { break };
        after = Some(last.position);
        paged.extend(page);
    }
    assert_eq!(paged, feed);
    assert_eq!(
        stores
            .feed
            .read_events(firm, Some(feed[1].position), 2)
            .await
            .unwrap(),
        feed[2..4].to_vec()
    );
    assert!(
        stores
            .feed
            .read_events(firm, Some(feed[3].position), 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing after the last event"
    );

    let their_feed = whole_feed(&stores, other, 1).await;
    assert_eq!(their_feed.len(), 1);
    assert_eq!(
        (their_feed[0].firm_id, their_feed[0].customer_id),
        (other, theirs.id)
    );
    assert!(!ids.contains(&their_feed[0].id));
}

/// A reader walking the feed page by page while several writers save customers sees every event
/// exactly once, in increasing positions: once the writers are done, its walk is the whole feed.
pub async fn a_feed_walk_while_writers_run_returns_every_event_once_in_order(stores: Stores) {
    const WRITERS: u32 = 4;
    const ROUNDS: u32 = 12;
    let firm = new_firm(&stores).await;
    let other = new_firm(&stores).await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let stores = stores.clone();
            tokio::spawn(async move {
                let mut written: usize = 0;
                // Another firm's writes interleave with this firm's.
                for round in 0..ROUNDS {
                    let mut customer = insert_customer(&stores, firm, None).await;
                    touch_customer(&stores, &mut customer, writer * 1_000 + round).await;
                    written += 2;
                    if round % 3 == 0 {
                        insert_customer(&stores, other, None).await;
                    }
                }
                written
            })
        })
        .collect();

    let mut walked = Vec::new();
    let mut cursor: Option<FeedPosition> = None;
    loop {
        let finished = writers.iter().all(tokio::task::JoinHandle::is_finished);
        let page = stores.feed.read_events(firm, cursor, 7).await.unwrap();
        if let Some(last) = page.last() {
            cursor = Some(last.position);
        }
        walked.extend(page);
        if finished {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let mut expected = 0;
    for writer in writers {
        expected += writer.await.unwrap();
    }
    let rest = expected.saturating_sub(walked.len());
    walked.extend(read_feed(&stores, firm, cursor, 7, rest).await);

    assert!(
        walked.windows(2).all(|w| w[0].position < w[1].position),
        "the walk went back or repeated an event"
    );
    let whole = whole_feed(&stores, firm, expected).await;
    assert_eq!(whole.len(), expected, "one event per notification written");
    assert_eq!(
        walked.len(),
        whole.len(),
        "the walk skipped or repeated events"
    );
    assert_eq!(walked, whole);
}

/// Only the oldest unfinished message of each (endpoint, customer) is handed out: a customer's
/// second message waits while its first is leased or waiting for a retry, and goes out once the
/// first is delivered; each endpoint's chain moves on its own.
pub async fn only_the_oldest_unfinished_message_of_a_customer_is_handed_to_an_endpoint(
    stores: Stores,
) {
    let firm = new_firm(&stores).await;
    let endpoint = add_endpoint(&stores, firm, &[]).await;
    let other = add_endpoint(&stores, firm, &[]).await;
    let mut a = insert_customer(&stores, firm, None).await;
    touch_customer(&stores, &mut a, phone()).await;
    let b = insert_customer(&stores, firm, None).await;

    let start = now();
    let first = claim_at(&stores, start).await;
    assert_eq!(
        routes(&first),
        HashSet::from([
            (endpoint.id, a.id, NotificationType::Created),
            (endpoint.id, b.id, NotificationType::Created),
            (other.id, a.id, NotificationType::Created),
            (other.id, b.id, NotificationType::Created),
        ]),
        "the heads of the chains only"
    );
    assert_eq!(first.len(), 4);
    let a_first = find(&first, &endpoint, &a);
    assert_eq!(a_first.endpoint, endpoint, "the endpoint as stored");
    assert_eq!(a_first.attempts, 0);
    assert!(
        claim_at(&stores, start).await.is_empty(),
        "a customer's second message went out while its first was leased"
    );

    // A retry keeps the chain waiting; the other endpoint's chain moves once its head is done.
    let retry_at = start + Duration::minutes(5);
    finish(
        &stores,
        &a_first,
        start,
        Some(503),
        DeliveryOutcome::RetryAt(retry_at),
    )
    .await;
    finish(
        &stores,
        &find(&first, &other, &a),
        start,
        Some(200),
        DeliveryOutcome::Delivered,
    )
    .await;
    let next = claim_at(&stores, start + Duration::seconds(1)).await;
    assert_eq!(
        routes(&next),
        HashSet::from([(other.id, a.id, NotificationType::Updated)])
    );
    assert_eq!(next.len(), 1);

    let retried = claim_at(&stores, retry_at).await;
    assert_eq!(retried.len(), 1);
    assert_eq!(
        (retried[0].id, retried[0].attempts, &retried[0].event),
        (a_first.id, 1, &a_first.event)
    );
    finish(
        &stores,
        &retried[0],
        retry_at,
        Some(200),
        DeliveryOutcome::Delivered,
    )
    .await;
    let second = claim_at(&stores, retry_at).await;
    assert_eq!(
        routes(&second),
        HashSet::from([(endpoint.id, a.id, NotificationType::Updated)])
    );
    assert_eq!(second.len(), 1);
}

/// No endpoint has more than `per_endpoint` messages leased at once, counting the ones leased by
/// earlier claims; other endpoints still get theirs; `limit` bounds a batch.
pub async fn no_endpoint_gets_more_than_its_share_of_leases(stores: Stores) {
    let firm = new_firm(&stores).await;
    let slow = add_endpoint(&stores, firm, &[]).await;
    for _ in 0..6 {
        insert_customer(&stores, firm, None).await;
    }
    let quiet = new_firm(&stores).await;
    let fast = add_endpoint(&stores, quiet, &[]).await;
    for _ in 0..2 {
        insert_customer(&stores, quiet, None).await;
    }
    let start = now();
    let lease = start + Duration::hours(1);
    let count = |batch: &[QueuedDelivery], endpoint: &WebhookEndpoint| {
        batch
            .iter()
            .filter(|d| d.endpoint.id == endpoint.id)
            .count()
    };

    let first = stores
        .queue
        .claim_deliveries(start, lease, 100, 2)
        .await
        .unwrap();
    assert_eq!((count(&first, &slow), count(&first, &fast)), (2, 2));
    assert_eq!(first.len(), 4);
    assert!(
        stores
            .queue
            .claim_deliveries(start, lease, 100, 2)
            .await
            .unwrap()
            .is_empty(),
        "an endpoint got more than its share"
    );
    let slow_one = first.iter().find(|d| d.endpoint.id == slow.id).unwrap();
    finish(
        &stores,
        slow_one,
        start,
        Some(200),
        DeliveryOutcome::Delivered,
    )
    .await;
    let freed = stores
        .queue
        .claim_deliveries(start, lease, 100, 2)
        .await
        .unwrap();
    assert_eq!((freed.len(), count(&freed, &slow)), (1, 1));

    let one = stores
        .queue
        .claim_deliveries(start, lease, 1, 100)
        .await
        .unwrap();
    assert_eq!(one.len(), 1, "a batch holds at most its limit");
    let rest = stores
        .queue
        .claim_deliveries(start, lease, 100, 100)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2, "the slow endpoint's last two");
    let handed: HashSet<i64> = [&first, &freed, &one, &rest]
        .into_iter()
        .flat_map(|batch| batch.iter().map(|d| d.id))
        .collect();
    assert_eq!(handed.len(), 8, "every message once");
}

/// Workers claiming at once get disjoint batches that together hold every due message.
pub async fn concurrent_claimers_get_disjoint_deliveries(stores: Stores) {
    let firm = new_firm(&stores).await;
    add_endpoint(&stores, firm, &[]).await;
    add_endpoint(&stores, firm, &[]).await;
    for _ in 0..10 {
        insert_customer(&stores, firm, None).await;
    }
    let start = now();
    let claimers: Vec<_> = (0..4)
        .map(|_| {
            let stores = stores.clone();
            tokio::spawn(async move {
                stores
                    .queue
                    .claim_deliveries(start, start + Duration::minutes(1), 6, 100)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut total = 0;
    for claimer in claimers {
        let batch = claimer.await.unwrap();
        assert!(batch.len() <= 6);
        total += batch.len();
        seen.extend(batch.iter().map(|d| d.id));
    }
    assert_eq!(seen.len(), total, "a message was handed to two workers");
    assert_eq!(total, 20, "every due message was handed out");
    assert!(
        claim_at(&stores, start).await.is_empty(),
        "leased messages were handed out again"
    );
}

/// A message whose lease ran out (its worker died mid-send) is handed out again, as it was, and
/// the customer's next message still waits behind it.
pub async fn a_delivery_whose_lease_ran_out_is_handed_out_again(stores: Stores) {
    let firm = new_firm(&stores).await;
    add_endpoint(&stores, firm, &[]).await;
    let mut customer = insert_customer(&stores, firm, None).await;
    touch_customer(&stores, &mut customer, phone()).await;
    let start = now();
    let leased = stores
        .queue
        .claim_deliveries(start, start + Duration::minutes(1), 10, 10)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].event.notification, NotificationType::Created);
    let during = start + Duration::seconds(30);
    assert!(
        stores
            .queue
            .claim_deliveries(during, during + Duration::minutes(1), 10, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let after = start + Duration::minutes(2);
    let again = stores
        .queue
        .claim_deliveries(after, after + Duration::minutes(1), 10, 10)
        .await
        .unwrap();
    assert_eq!(again, leased, "handed out again as it was, alone");
}

/// Delivered: never sent again, and the customer's next message follows. RetryAt: back at that
/// time (not before) with one more attempt, its chain waiting meanwhile. GaveUp: never sent
/// again, and the chain moves on. Every attempt is in the endpoint's log, newest first.
pub async fn each_outcome_of_a_delivery_is_applied_and_logged(stores: Stores) {
    let firm = new_firm(&stores).await;
    let endpoint = add_endpoint(&stores, firm, &[]).await;
    let mut customers = Vec::new();
    for _ in 0..3 {
        let mut customer = insert_customer(&stores, firm, None).await;
        touch_customer(&stores, &mut customer, phone()).await;
        customers.push(customer);
    }
    let [delivered, retried, gave_up] = [&customers[0], &customers[1], &customers[2]];
    let start = now();
    let mut log = Vec::new();
    let heads = claim_at(&stores, start).await;
    assert_eq!(heads.len(), 3);
    let retried_head = find(&heads, &endpoint, retried);
    let retry_at = start + Duration::minutes(10);
    log.push(
        finish(
            &stores,
            &find(&heads, &endpoint, delivered),
            start,
            Some(200),
            DeliveryOutcome::Delivered,
        )
        .await,
    );
    log.push(
        finish(
            &stores,
            &retried_head,
            start,
            None,
            DeliveryOutcome::RetryAt(retry_at),
        )
        .await,
    );
    log.push(
        finish(
            &stores,
            &find(&heads, &endpoint, gave_up),
            start,
            Some(500),
            DeliveryOutcome::GaveUp,
        )
        .await,
    );

    let next = claim_at(&stores, start).await;
    assert_eq!(
        routes(&next),
        HashSet::from([
            (endpoint.id, delivered.id, NotificationType::Updated),
            (endpoint.id, gave_up.id, NotificationType::Updated),
        ]),
        "delivered and given-up heads let their chains move; a retry holds its chain"
    );
    assert_eq!(next.len(), 2);
    for delivery in &next {
        log.push(
            finish(
                &stores,
                delivery,
                start,
                Some(204),
                DeliveryOutcome::Delivered,
            )
            .await,
        );
    }
    assert!(
        claim_at(&stores, retry_at - Duration::seconds(1))
            .await
            .is_empty(),
        "a retry came back before its time"
    );
    let back = claim_at(&stores, retry_at).await;
    assert_eq!(back.len(), 1);
    assert_eq!(
        (back[0].id, back[0].attempts, &back[0].event),
        (retried_head.id, 1, &retried_head.event)
    );
    log.push(
        finish(
            &stores,
            &back[0],
            retry_at,
            Some(200),
            DeliveryOutcome::Delivered,
        )
        .await,
    );
    let last = claim_at(&stores, retry_at).await;
    assert_eq!(
        routes(&last),
        HashSet::from([(endpoint.id, retried.id, NotificationType::Updated)])
    );
    log.push(
        finish(
            &stores,
            &last[0],
            retry_at,
            Some(200),
            DeliveryOutcome::Delivered,
        )
        .await,
    );
    assert!(
        claim_at(&stores, start + Duration::days(30))
            .await
            .is_empty(),
        "a delivered or given-up message came back"
    );

    log.reverse();
    assert_eq!(
        stores
            .webhooks
            .list_deliveries(firm, endpoint.id, 100)
            .await
            .unwrap(),
        log,
        "every attempt, newest first"
    );
    assert_eq!(
        stores
            .webhooks
            .list_deliveries(firm, endpoint.id, 2)
            .await
            .unwrap(),
        log[..2].to_vec()
    );
}

/// A `410 Gone` disables the endpoint at the attempt's time; its messages (the one answered Gone
/// included) wait, nothing new is queued for it, the firm's other endpoints carry on; once it is
/// enabled again through an update, the waiting messages go out, the Gone one with its attempt
/// counted.
pub async fn a_gone_endpoint_is_disabled_and_its_messages_wait_until_it_is_enabled(stores: Stores) {
    let firm = new_firm(&stores).await;
    let gone = add_endpoint(&stores, firm, &[]).await;
    let other = add_endpoint(&stores, firm, &[]).await;
    let mut c = insert_customer(&stores, firm, None).await;
    let d = insert_customer(&stores, firm, None).await;
    let start = now();
    let first = claim_at(&stores, start).await;
    assert_eq!(first.len(), 4);
    for delivery in first.iter().filter(|d| d.endpoint.id == other.id) {
        finish(
            &stores,
            delivery,
            start,
            Some(200),
            DeliveryOutcome::Delivered,
        )
        .await;
    }
    let c_gone = find(&first, &gone, &c);
    let d_gone = find(&first, &gone, &d);
    let at = start + Duration::seconds(1);
    let answered = finish(&stores, &c_gone, at, Some(410), DeliveryOutcome::Gone).await;
    let failed = finish(
        &stores,
        &d_gone,
        at,
        Some(502),
        DeliveryOutcome::RetryAt(at),
    )
    .await;
    let disabled = stores
        .webhooks
        .get_endpoint(firm, gone.id)
        .await
        .unwrap()
        .expect("a gone endpoint is disabled, not deleted");
    assert_eq!(disabled.disabled_at, Some(at));
    assert_eq!(
        stores
            .webhooks
            .list_deliveries(firm, gone.id, 10)
            .await
            .unwrap(),
        vec![failed, answered]
    );

    touch_customer(&stores, &mut c, phone()).await;
    let later = start + Duration::hours(2);
    let meanwhile = claim_at(&stores, later).await;
    assert_eq!(
        routes(&meanwhile),
        HashSet::from([(other.id, c.id, NotificationType::Updated)]),
        "a disabled endpoint's messages wait; the others carry on"
    );
    finish(
        &stores,
        &meanwhile[0],
        later,
        Some(200),
        DeliveryOutcome::Delivered,
    )
    .await;
    assert!(claim_at(&stores, later).await.is_empty());

    let enabled = WebhookEndpoint {
        disabled_at: None,
        ..disabled
    };
    assert!(stores.webhooks.update_endpoint(&enabled).await.unwrap());
    let resumed = claim_at(&stores, later).await;
    assert_eq!(resumed.len(), 2);
    let c_again = find(&resumed, &gone, &c);
    let d_again = find(&resumed, &gone, &d);
    assert_eq!(
        (c_again.id, c_again.attempts, &c_again.event),
        (c_gone.id, 1, &c_gone.event)
    );
    assert_eq!((d_again.id, d_again.attempts), (d_gone.id, 1));
    for delivery in &resumed {
        finish(
            &stores,
            delivery,
            later,
            Some(200),
            DeliveryOutcome::Delivered,
        )
        .await;
    }
    assert!(
        claim_at(&stores, later).await.is_empty(),
        "a message was queued for the endpoint while it was disabled"
    );
}

/// A replay queues the event again for the endpoint, due at the time given: the same event (id,
/// position, customer as saved) in a new message, behind the customer's messages still waiting;
/// a delivered and a given-up event can both be replayed.
pub async fn a_replay_queues_the_same_event_again_behind_the_customers_messages(stores: Stores) {
    let firm = new_firm(&stores).await;
    let endpoint = add_endpoint(&stores, firm, &[]).await;
    let mut customer = insert_customer(&stores, firm, None).await;
    let start = now();
    let created = claim_at(&stores, start).await;
    assert_eq!(created.len(), 1);
    let created = created[0].clone();
    assert_eq!(
        created.event,
        whole_feed(&stores, firm, 1).await[0],
        "a delivery carries the feed's event"
    );
    finish(
        &stores,
        &created,
        start,
        Some(200),
        DeliveryOutcome::Delivered,
    )
    .await;
    assert!(claim_at(&stores, start).await.is_empty());

    let due = start + Duration::minutes(1);
    assert!(
        stores
            .queue
            .replay(firm, endpoint.id, created.event.id, due)
            .await
            .unwrap()
    );
    assert!(
        claim_at(&stores, due - Duration::seconds(1))
            .await
            .is_empty(),
        "a replay went out before its time"
    );
    let replayed = claim_at(&stores, due).await;
    assert_eq!(replayed.len(), 1);
    assert_ne!(replayed[0].id, created.id, "a new message");
    assert_eq!(
        (
            &replayed[0].event,
            &replayed[0].endpoint,
            replayed[0].attempts
        ),
        (&created.event, &endpoint, 0)
    );
    finish(
        &stores,
        &replayed[0],
        due,
        Some(200),
        DeliveryOutcome::Delivered,
    )
    .await;

    // Behind the customer's message still waiting.
    touch_customer(&stores, &mut customer, phone()).await;
    assert!(
        stores
            .queue
            .replay(firm, endpoint.id, created.event.id, start)
            .await
            .unwrap()
    );
    let waiting = claim_at(&stores, due).await;
    assert_eq!(
        waiting
            .iter()
            .map(|d| d.event.notification)
            .collect::<Vec<_>>(),
        vec![NotificationType::Updated]
    );
    let updated = waiting[0].clone();
    finish(&stores, &updated, due, Some(200), DeliveryOutcome::GaveUp).await;
    let behind = claim_at(&stores, due).await;
    assert_eq!(behind.len(), 1);
    assert_eq!(behind[0].event, created.event);
    finish(
        &stores,
        &behind[0],
        due,
        Some(200),
        DeliveryOutcome::Delivered,
    )
    .await;

    // A given-up event.
    assert!(
        stores
            .queue
            .replay(firm, endpoint.id, updated.event.id, due)
            .await
            .unwrap()
    );
    let again = claim_at(&stores, due).await;
    assert_eq!(again.len(), 1);
    assert_eq!((&again[0].event, again[0].attempts), (&updated.event, 0));
}

/// A replay is refused (and queues nothing) for another firm's endpoint or event, an unknown
/// event, an endpoint that never had the event queued (created after it, or not wanting its
/// type), and a deleted endpoint.
pub async fn a_replay_needs_the_firms_endpoint_and_an_event_it_had_queued(stores: Stores) {
    let firm = new_firm(&stores).await;
    let other = new_firm(&stores).await;
    let endpoint = add_endpoint(&stores, firm, &[]).await;
    let picky = add_endpoint(&stores, firm, &["customer.aml_status_changed"]).await;
    let theirs = add_endpoint(&stores, other, &[]).await;
    insert_customer(&stores, firm, None).await;
    insert_customer(&stores, other, None).await;
    let late = add_endpoint(&stores, firm, &[]).await;
    let event = whole_feed(&stores, firm, 1).await[0].id;
    let their_event = whole_feed(&stores, other, 1).await[0].id;
    deliver_everything(&stores).await;
    let at = now();

    let refused = [
        (other, endpoint.id, event),
        (firm, theirs.id, event),
        (firm, endpoint.id, their_event),
        (firm, theirs.id, their_event),
        (firm, endpoint.id, Uuid::new_v4()),
        (firm, late.id, event),
        (firm, picky.id, event),
        (firm, WebhookEndpointId::from_uuid(Uuid::now_v7()), event),
    ];
    for (asked_by, to, what) in refused {
        assert!(
            !stores.queue.replay(asked_by, to, what, at).await.unwrap(),
            "replayed {what} to {to} for {asked_by}"
        );
    }
    assert!(
        claim_at(&stores, at).await.is_empty(),
        "a refused replay queued a message"
    );
    assert!(
        stores
            .webhooks
            .delete_endpoint(firm, endpoint.id, at)
            .await
            .unwrap()
    );
    assert!(
        !stores
            .queue
            .replay(firm, endpoint.id, event, at)
            .await
            .unwrap()
    );
    // The owners can.
    assert!(
        stores
            .queue
            .replay(other, theirs.id, their_event, at)
            .await
            .unwrap()
    );
    let replayed = claim_at(&stores, at).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(
        (replayed[0].endpoint.id, replayed[0].event.id),
        (theirs.id, their_event)
    );
}

/// An update rewrites the url, description, types, both secrets and the disabled time, and they
/// read back through `get` and `list`; an endpoint created with a previous secret keeps it; an
/// update naming another firm or an unknown endpoint changes nothing.
pub async fn endpoints_are_updated_within_their_firm(stores: Stores) {
    let firm = new_firm(&stores).await;
    let other = new_firm(&stores).await;
    let endpoint = add_endpoint(&stores, firm, &[]).await;
    let rotated = WebhookEndpoint {
        url: "https://crm.example/hooks/v2".to_owned(),
        description: Some("Production CRM".to_owned()),
        event_types: vec![
            "customer.kyc_status_changed".to_owned(),
            "customer.aml_status_changed".to_owned(),
        ],
        secret: "whsec_dGhlIG5ldyBzZWNyZXQgb2YgdGhlIGVuZHBvaW50".to_owned(),
        previous_secret: Some(endpoint.secret.clone()),
        previous_secret_expires_at: Some(now() + Duration::hours(24)),
        disabled_at: Some(now()),
        ..endpoint.clone()
    };
    assert!(stores.webhooks.update_endpoint(&rotated).await.unwrap());
    assert_eq!(
        stores
            .webhooks
            .get_endpoint(firm, endpoint.id)
            .await
            .unwrap()
            .as_ref(),
        Some(&rotated)
    );
    assert_eq!(
        stores.webhooks.list_endpoints(firm).await.unwrap(),
        vec![rotated.clone()]
    );
    let back = WebhookEndpoint {
        description: None,
        event_types: Vec::new(),
        previous_secret: None,
        previous_secret_expires_at: None,
        disabled_at: None,
        ..rotated.clone()
    };
    assert!(stores.webhooks.update_endpoint(&back).await.unwrap());
    assert_eq!(
        stores
            .webhooks
            .get_endpoint(firm, endpoint.id)
            .await
            .unwrap()
            .as_ref(),
        Some(&back)
    );

    let hijack = WebhookEndpoint {
        firm_id: other,
        url: "https://attacker.example/hooks".to_owned(),
        ..back.clone()
    };
    assert!(!stores.webhooks.update_endpoint(&hijack).await.unwrap());
    let unknown = WebhookEndpoint {
        id: WebhookEndpointId::from_uuid(Uuid::now_v7()),
        ..back.clone()
    };
    assert!(!stores.webhooks.update_endpoint(&unknown).await.unwrap());
    assert_eq!(
        stores.webhooks.list_endpoints(firm).await.unwrap(),
        vec![back.clone()]
    );
    assert!(
        stores
            .webhooks
            .list_endpoints(other)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        stores
            .webhooks
            .get_endpoint(other, endpoint.id)
            .await
            .unwrap(),
        None
    );

    let overlapping = WebhookEndpoint {
        id: WebhookEndpointId::from_uuid(Uuid::now_v7()),
        previous_secret: Some("whsec_b2xkIHNlY3JldCBvZiB0aGUgZW5kcG9pbnQ=".to_owned()),
        previous_secret_expires_at: Some(now() + Duration::hours(1)),
        created_at: now(),
        ..back.clone()
    };
    stores.webhooks.create_endpoint(&overlapping).await.unwrap();
    assert_eq!(
        stores
            .webhooks
            .get_endpoint(firm, overlapping.id)
            .await
            .unwrap()
            .as_ref(),
        Some(&overlapping)
    );
}

/// A deleted endpoint is no longer found, listed, changed or delivered to; its pending messages
/// (leased or waiting) are dropped and nothing new is queued for it; its delivery log is kept;
/// a second delete, or one by another firm, is refused.
pub async fn a_deleted_endpoint_is_hidden_and_its_pending_messages_dropped(stores: Stores) {
    let firm = new_firm(&stores).await;
    let other = new_firm(&stores).await;
    let deleted = add_endpoint(&stores, firm, &[]).await;
    let kept = add_endpoint(&stores, firm, &[]).await;
    let mut customer = insert_customer(&stores, firm, None).await;
    touch_customer(&stores, &mut customer, phone()).await;
    let start = now();
    let heads = claim_at(&stores, start).await;
    assert_eq!(heads.len(), 2);
    let logged = finish(
        &stores,
        &find(&heads, &deleted, &customer),
        start,
        Some(503),
        DeliveryOutcome::RetryAt(start),
    )
    .await;

    assert!(
        !stores
            .webhooks
            .delete_endpoint(other, deleted.id, start)
            .await
            .unwrap(),
        "another firm deleted the endpoint"
    );
    assert!(
        stores
            .webhooks
            .delete_endpoint(firm, deleted.id, start)
            .await
            .unwrap()
    );
    assert!(
        !stores
            .webhooks
            .delete_endpoint(firm, deleted.id, start)
            .await
            .unwrap()
    );
    assert_eq!(
        stores
            .webhooks
            .get_endpoint(firm, deleted.id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        stores.webhooks.list_endpoints(firm).await.unwrap(),
        vec![kept.clone()]
    );
    assert!(
        !stores
            .webhooks
            .disable_endpoint(firm, deleted.id, start)
            .await
            .unwrap()
    );
    assert!(
        !stores
            .webhooks
            .update_endpoint(&WebhookEndpoint {
                disabled_at: None,
                ..deleted.clone()
            })
            .await
            .unwrap()
    );
    assert_eq!(
        stores
            .webhooks
            .list_deliveries(firm, deleted.id, 10)
            .await
            .unwrap(),
        vec![logged],
        "the delivery log is kept"
    );

    touch_customer(&stores, &mut customer, phone()).await;
    finish(
        &stores,
        &find(&heads, &kept, &customer),
        start,
        Some(200),
        DeliveryOutcome::Delivered,
    )
    .await;
    let delivered = deliver_everything(&stores).await;
    assert!(
        delivered.iter().all(|d| d.endpoint.id == kept.id),
        "a deleted endpoint was delivered to: {delivered:?}"
    );
    assert_eq!(
        delivered
            .iter()
            .map(|d| d.event.notification)
            .collect::<Vec<_>>(),
        vec![NotificationType::Updated, NotificationType::Updated],
        "the kept endpoint gets the rest of the chain"
    );
    assert!(
        claim_at(&stores, start + Duration::days(1))
            .await
            .is_empty(),
        "a deleted endpoint's message came back"
    );
}

/// Thousands of messages waiting on one endpoint (behind a message in flight, or for the
/// endpoint to be enabled again) keep no message for another endpoint from being handed out.
pub async fn a_backlog_waiting_on_one_endpoint_holds_up_no_other(stores: Stores) {
    const BACKLOG: usize = 2_500;
    let busy = new_firm(&stores).await;
    let stuck = add_endpoint(&stores, busy, &[]).await;
    let (mut customer, events, _) = new_customer(
        busy,
        None,
        &format!("{}@example.com", Uuid::new_v4().simple()),
    );
    let backlog: Vec<_> = (0..BACKLOG)
        .map(|_| notify(&customer, NotificationType::Updated, None, None))
        .collect();
    let saved = stores
        .customers
        .insert(&customer, &events, &backlog)
        .await
        .unwrap();
    customer.saved(saved);
    let start = now();
    let in_flight = claim_at(&stores, start).await;
    assert_eq!(in_flight.len(), 1, "one chain, one message out");

    let quiet = new_firm(&stores).await;
    let fine = add_endpoint(&stores, quiet, &[]).await;
    let first = insert_customer(&stores, quiet, None).await;
    let behind_a_lease = claim_at(&stores, now()).await;
    assert_eq!(
        routes(&behind_a_lease),
        HashSet::from([(fine.id, first.id, NotificationType::Created)]),
        "a message behind another endpoint's backlog was not handed out"
    );

    finish(
        &stores,
        &in_flight[0],
        now(),
        Some(410),
        DeliveryOutcome::Gone,
    )
    .await;
    let second = insert_customer(&stores, quiet, None).await;
    let behind_a_disabled = claim_at(&stores, now()).await;
    assert_eq!(
        routes(&behind_a_disabled),
        HashSet::from([(fine.id, second.id, NotificationType::Created)]),
        "a message behind a disabled endpoint's backlog was not handed out"
    );
    assert!(
        stores
            .webhooks
            .get_endpoint(busy, stuck.id)
            .await
            .unwrap()
            .and_then(|endpoint| endpoint.disabled_at)
            .is_some(),
        "the backlog's endpoint is disabled"
    );
}

/// A customer's change saved while its previous message is being finished never leaves its
/// chain without a head: whichever commits first, the new message is handed out once the old
/// one is done, and never before.
pub async fn a_change_saved_while_its_chain_head_finishes_is_handed_out_next(stores: Stores) {
    let firm = new_firm(&stores).await;
    add_endpoint(&stores, firm, &[]).await;
    let mut customers = Vec::new();
    for _ in 0..20 {
        customers.push(insert_customer(&stores, firm, None).await);
    }
    let heads = claim_at(&stores, now()).await;
    assert_eq!(heads.len(), 20, "one created event per customer");
    let mut races = tokio::task::JoinSet::new();
    for (head, mut customer) in heads.into_iter().zip(customers) {
        let stores = stores.clone();
        races.spawn(async move {
            let finishing = {
                let stores = stores.clone();
                let head = head.clone();
                async move {
                    stores
                        .queue
                        .finish_delivery(
                            head.id,
                            &attempt_of(&head, now(), Some(200)),
                            DeliveryOutcome::Delivered,
                        )
                        .await
                        .expect("finish")
                }
            };
            let saving = async {
                let phone = phone();
                let events = change_phone(&mut customer, phone);
                let outbox = kyc_domain::events::outbox_for(customer.firm_id, customer.id, &events);
                stores
                    .customers
                    .save(&customer, &events, &outbox, None)
                    .await
                    .expect("save");
            };
            tokio::join!(finishing, saving);
        });
    }
    races.join_all().await;
    let next = claim_at(&stores, now()).await;
    assert_eq!(next.len(), 20, "every chain handed out its next message");
    assert!(
        next.iter()
            .all(|d| d.event.notification == NotificationType::Updated)
    );
    assert!(claim_at(&stores, now()).await.is_empty());
}
