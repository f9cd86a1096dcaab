//! Customers: what goes in comes back, saves are atomic, concurrent writers cannot overwrite each
//! other, and the externalId race creates one customer.

use std::collections::{HashMap, HashSet};

use kyc_domain::customer::{AttemptPhase, Customer};
use kyc_domain::events::{Actor, NotificationType, OutboxMessage, outbox_for};
use kyc_domain::ids::{ApplicantId, FirmId};
use kyc_domain::ports::{
    InsertOrMatch, RECOVERY_LEASE, SaveError, WebhookEndpoint, WebhookEndpointId,
};
use kyc_domain::provider::{ProviderEvent, ProviderEventKey, ProviderEventKind};
use kyc_domain::risk::{ProviderLevels, RiskAnswers};
use kyc_domain::status::KycStatus;
use kyc_domain::values::{Credits, Email, ExternalId};
use time::Duration;
use uuid::Uuid;

use crate::{
    Stores, add_endpoint, change_phone, claim_all_deliveries, claim_messages, crm,
    deliver_everything, insert_customer, message_of, new_customer, new_firm, notifications_of, now,
    staff, touch_customer, whole_feed, work_of,
};

/// Everything an insert stored comes back equal through `get`, `get_by_external_id` and
/// `find_by_email` (case-insensitively), at version 1, with its creation event, and its creation
/// notification in the feed and queued for the firm's endpoint.
pub async fn inserted_customers_read_back_unchanged_by_every_lookup(stores: Stores) {
    let firm = new_firm(&stores).await;
    add_endpoint(&stores, firm, &[]).await;
    let (mut customer, events, outbox) = new_customer(firm, Some("crm-1"), "Jane.Doe@Example.com");
    let version = stores
        .customers
        .insert(&customer, &events, &outbox)
        .await
        .unwrap();
    assert_eq!(version.version, 1);
    customer.saved(version);

    let by_id = stores.customers.get(firm, customer.id).await.unwrap();
    assert_eq!(by_id.as_ref(), Some(&customer));
    let external = ExternalId::new("crm-1").unwrap();
    let by_external = stores
        .customers
        .get_by_external_id(firm, &external)
        .await
        .unwrap();
    assert_eq!(by_external.as_ref(), Some(&customer));
    let shouted = Email::new("JANE.DOE@EXAMPLE.COM").unwrap();
    let by_email = stores
        .customers
        .find_by_email(firm, &shouted)
        .await
        .unwrap();
    assert_eq!(by_email.as_ref(), Some(&customer));
    // Both upsert lookups at once: by external id, and by email (a store may skip the email
    // lookup when the external id is found, so it is asked again without one).
    let both = stores
        .customers
        .find_upsert_candidates(firm, Some(&external), &shouted)
        .await
        .unwrap();
    assert_eq!(both.by_external_id.as_ref(), Some(&customer));
    assert!(both.by_email.is_none() || both.by_email.as_ref() == Some(&customer));
    let other = ExternalId::new("crm-other").unwrap();
    let by_email_only = stores
        .customers
        .find_upsert_candidates(firm, Some(&other), &shouted)
        .await
        .unwrap();
    assert_eq!(by_email_only.by_external_id, None);
    assert_eq!(by_email_only.by_email.as_ref(), Some(&customer));
    let without_external = stores
        .customers
        .find_upsert_candidates(firm, None, &shouted)
        .await
        .unwrap();
    assert_eq!(without_external.by_external_id, None);
    assert_eq!(without_external.by_email.as_ref(), Some(&customer));
    let nobody = Email::new("nobody@example.com").unwrap();
    let neither = stores
        .customers
        .find_upsert_candidates(firm, Some(&other), &nobody)
        .await
        .unwrap();
    assert_eq!((neither.by_external_id, neither.by_email), (None, None));

    let trail = stores
        .audit
        .customer_trail(firm, customer.id)
        .await
        .unwrap();
    let recorded: Vec<_> = trail.into_iter().map(|entry| entry.event).collect();
    assert_eq!(recorded, events);
    assert_eq!(claim_messages(&stores).await, work_of(&outbox));
    let feed = whole_feed(&stores, firm, 1).await;
    assert_eq!(
        feed.iter().map(message_of).collect::<Vec<_>>(),
        notifications_of(&outbox)
    );
    assert!(feed.iter().all(|event| event.customer == customer));
    let delivered = claim_all_deliveries(&stores).await;
    assert_eq!(
        delivered
            .into_iter()
            .map(|delivery| delivery.event)
            .collect::<Vec<_>>(),
        feed
    );
}

/// A notification is not queued as work: it is appended to the firm's feed, whatever its
/// endpoints, and queued for delivery to each of the firm's endpoints that, as the write runs, is
/// enabled, not deleted and wants its type (an endpoint with no types wants all); other messages
/// go to the outbox. Endpoints of other firms, disabled and deleted ones get nothing, even once
/// enabled again. Holds for an insert and a save, with one message and with several.
pub async fn notifications_are_queued_only_for_an_endpoint_that_wants_them(stores: Stores) {
    let kyc_changed = "customer.kyc_status_changed";
    let none = new_firm(&stores).await;
    let disabled = new_firm(&stores).await;
    let off = add_endpoint(&stores, disabled, &[]).await;
    assert!(
        stores
            .webhooks
            .disable_endpoint(disabled, off.id, now())
            .await
            .unwrap()
    );
    let deleted = new_firm(&stores).await;
    let removed = add_endpoint(&stores, deleted, &[]).await;
    assert!(
        stores
            .webhooks
            .delete_endpoint(deleted, removed.id, now())
            .await
            .unwrap()
    );
    let picky = new_firm(&stores).await;
    let picky_one = add_endpoint(&stores, picky, &[kyc_changed]).await;
    let all = new_firm(&stores).await;
    let all_picky = add_endpoint(&stores, all, &[kyc_changed]).await;
    let all_every = add_endpoint(&stores, all, &[]).await;

    // Several messages: a notification of each kind asked about, and work.
    let several = |customer: &Customer| {
        let notify = |notification| OutboxMessage::Notify {
            firm_id: customer.firm_id,
            customer_id: customer.id,
            notification,
            previous_kyc_status: None,
            previous_aml_status: None,
        };
        vec![
            notify(NotificationType::Created),
            notify(NotificationType::KycStatusChanged),
            OutboxMessage::RunScreening {
                firm_id: customer.firm_id,
                customer_id: customer.id,
            },
        ]
    };
    let mut given = Vec::new();
    let mut given_by_firm: HashMap<FirmId, Vec<OutboxMessage>> = HashMap::new();
    for firm in [none, disabled, deleted, picky, all] {
        let (mut customer, events, _) = new_customer(
            firm,
            None,
            &format!("{}@example.com", Uuid::new_v4().simple()),
        );
        let mut outbox = several(&customer);
        let saved = stores
            .customers
            .insert(&customer, &events, &outbox)
            .await
            .unwrap();
        customer.saved(saved);
        // One message, through a save.
        let events = change_phone(&mut customer, 5);
        let one = outbox_for(firm, customer.id, &events);
        assert_eq!(one.len(), 1, "a phone change notifies once: {one:?}");
        stores
            .customers
            .save(&customer, &events, &one, None)
            .await
            .unwrap();
        outbox.extend(one);
        given.extend(outbox.iter().cloned());
        given_by_firm.insert(firm, outbox);
    }
    let queued = claim_messages(&stores).await;
    assert_eq!(queued, work_of(&given), "the outbox holds the work only");
    for (firm, messages) in &given_by_firm {
        let expected = notifications_of(messages);
        let feed = whole_feed(&stores, *firm, expected.len()).await;
        assert_eq!(
            feed.iter().map(message_of).collect::<Vec<_>>(),
            expected,
            "the feed holds every notification, endpoints or not"
        );
    }

    // Enabled again, the disabled endpoint still has nothing: nothing was queued for it.
    let enabled = WebhookEndpoint {
        disabled_at: None,
        ..off.clone()
    };
    assert!(stores.webhooks.update_endpoint(&enabled).await.unwrap());
    let mut delivered: HashMap<WebhookEndpointId, Vec<NotificationType>> = HashMap::new();
    for delivery in deliver_everything(&stores).await {
        delivered
            .entry(delivery.endpoint.id)
            .or_default()
            .push(delivery.event.notification);
    }
    let expected = HashMap::from([
        (picky_one.id, vec![NotificationType::KycStatusChanged]),
        (all_picky.id, vec![NotificationType::KycStatusChanged]),
        (
            all_every.id,
            vec![
                NotificationType::Created,
                NotificationType::KycStatusChanged,
                NotificationType::Updated,
            ],
        ),
    ]);
    assert_eq!(delivered, expected);
}

/// A successful save makes the new state, every event, the outbox work, the notifications in the
/// feed and their deliveries visible together.
pub async fn save_writes_state_events_and_outbox_together(stores: Stores) {
    let firm = new_firm(&stores).await;
    add_endpoint(&stores, firm, &[]).await;
    let mut customer = insert_customer(&stores, firm, Some("crm-2")).await;
    let before = stores
        .audit
        .customer_trail(firm, customer.id)
        .await
        .unwrap()
        .len();
    let drained = stores
        .outbox
        .claim_batch(now(), now() + Duration::minutes(1), 100)
        .await
        .unwrap();
    for entry in drained {
        stores.outbox.mark_delivered(entry.id, now()).await.unwrap();
    }
    deliver_everything(&stores).await;
    let feed_before = whole_feed(&stores, firm, 1).await;

    let mut events = change_phone(&mut customer, 1);
    events.extend(customer.propose_risk(
        RiskAnswers {
            is_designated_service: true,
            handles_cash_or_crypto: true,
            is_new_customer: false,
        },
        &crm(),
        now(),
    ));
    let mut outbox = outbox_for(firm, customer.id, &events);
    assert!(!outbox.is_empty());
    outbox.push(OutboxMessage::RunScreening {
        firm_id: firm,
        customer_id: customer.id,
    });
    let version = stores
        .customers
        .save(&customer, &events, &outbox, None)
        .await
        .unwrap();
    assert_eq!(version.version, 2);
    customer.saved(version);

    assert_eq!(
        stores.customers.get(firm, customer.id).await.unwrap(),
        Some(customer.clone())
    );
    let trail = stores
        .audit
        .customer_trail(firm, customer.id)
        .await
        .unwrap();
    assert_eq!(trail.len(), before + events.len());
    let tail: Vec<_> = trail[before..]
        .iter()
        .map(|entry| entry.event.clone())
        .collect();
    assert_eq!(tail, events);
    assert_eq!(claim_messages(&stores).await, work_of(&outbox));
    let notifications = notifications_of(&outbox);
    let feed = whole_feed(&stores, firm, feed_before.len() + notifications.len()).await;
    assert_eq!(&feed[..feed_before.len()], &feed_before[..]);
    let written = &feed[feed_before.len()..];
    assert_eq!(
        written.iter().map(message_of).collect::<Vec<_>>(),
        notifications
    );
    assert!(written.iter().all(|event| event.customer == customer));
    let delivered: Vec<_> = deliver_everything(&stores)
        .await
        .into_iter()
        .map(|delivery| delivery.event)
        .collect();
    assert_eq!(delivered, written);
}

/// A save refused part-way (the inbound event was already recorded, or an adopted external id is
/// taken) leaves the state, the event log, the outbox and the feed exactly as they were.
pub async fn a_failed_save_writes_nothing(stores: Stores) {
    let firm = new_firm(&stores).await;
    let mut customer = insert_customer(&stores, firm, None).await;
    let _taken = insert_customer(&stores, firm, Some("crm-taken")).await;
    let key = ProviderEventKey::new(format!("evt-{}", Uuid::new_v4()));
    let events = change_phone(&mut customer, 2);
    let version = stores
        .customers
        .save(&customer, &events, &[], Some(&key))
        .await
        .unwrap();
    customer.saved(version);
    let drained = stores
        .outbox
        .claim_batch(now(), now() + Duration::minutes(1), 100)
        .await
        .unwrap();
    for entry in drained {
        stores.outbox.mark_delivered(entry.id, now()).await.unwrap();
    }
    let stored = stores.customers.get(firm, customer.id).await.unwrap();
    let trail = stores
        .audit
        .customer_trail(firm, customer.id)
        .await
        .unwrap();
    let feed = whole_feed(&stores, firm, 2).await;
    assert_eq!(feed.len(), 2, "the two creations");

    // The same provider event again: the row update ran first and must be rolled back.
    let mut replay = customer.clone();
    let events = change_phone(&mut replay, 3);
    let outbox = outbox_for(firm, replay.id, &events);
    let refused = stores
        .customers
        .save(&replay, &events, &outbox, Some(&key))
        .await;
    assert!(
        matches!(refused, Err(SaveError::DuplicateInbound)),
        "{refused:?}"
    );

    // Adopting an external id another customer has.
    let mut adopter = customer.clone();
    let mut events = adopter
        .adopt_external_id(ExternalId::new("crm-taken").unwrap(), &crm(), now())
        .unwrap();
    events.extend(change_phone(&mut adopter, 4));
    let outbox = outbox_for(firm, adopter.id, &events);
    let refused = stores
        .customers
        .save(&adopter, &events, &outbox, None)
        .await;
    assert!(
        matches!(refused, Err(SaveError::DuplicateExternalId)),
        "{refused:?}"
    );

    assert_eq!(
        stores.customers.get(firm, customer.id).await.unwrap(),
        stored
    );
    assert_eq!(
        stores
            .audit
            .customer_trail(firm, customer.id)
            .await
            .unwrap(),
        trail
    );
    let leaked = stores
        .outbox
        .claim_batch(now(), now() + Duration::minutes(1), 100)
        .await
        .unwrap();
    assert!(
        leaked.is_empty(),
        "outbox rows of a refused save: {leaked:?}"
    );
    assert_eq!(
        whole_feed(&stores, firm, feed.len()).await,
        feed,
        "feed events of a refused save"
    );
    // The version did not move: the next save from the stored version succeeds.
    touch_customer(&stores, &mut customer, 5).await;
    assert_eq!(customer.version, 3);
}

/// Two saves from the same loaded version, racing: exactly one wins, the other gets
/// `VersionConflict`, and the stored state and log are the winner's.
pub async fn two_saves_from_one_version_let_exactly_one_win(stores: Stores) {
    let firm = new_firm(&stores).await;
    let mut customer = insert_customer(&stores, firm, None).await;
    for round in 0..10_u32 {
        let mut left = customer.clone();
        let mut right = customer.clone();
        let left_events = change_phone(&mut left, round * 2 + 100);
        let right_events = change_phone(&mut right, round * 2 + 101);
        let (a, b) = tokio::join!(
            tokio::spawn({
                let stores = stores.clone();
                let (left, events) = (left.clone(), left_events.clone());
                async move { stores.customers.save(&left, &events, &[], None).await }
            }),
            tokio::spawn({
                let stores = stores.clone();
                let (right, events) = (right.clone(), right_events.clone());
                async move { stores.customers.save(&right, &events, &[], None).await }
            }),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let (mut winner, events, saved) = match (&a, &b) {
            (Ok(saved), Err(SaveError::VersionConflict)) => (left, left_events, *saved),
            (Err(SaveError::VersionConflict), Ok(saved)) => (right, right_events, *saved),
            other => panic!("expected one winner and one conflict, got {other:?}"),
        };
        assert_eq!(saved.version, customer.version + 1);
        winner.saved(saved);
        assert_eq!(
            stores.customers.get(firm, customer.id).await.unwrap(),
            Some(winner.clone())
        );
        let trail = stores
            .audit
            .customer_trail(firm, customer.id)
            .await
            .unwrap();
        let last = trail.last().map(|entry| entry.event.clone());
        assert_eq!(last.as_ref(), events.last());
        customer = winner;
    }
    // A save from a stale version is refused even without a race.
    let mut stale = customer.clone();
    stale.saved_at_version(customer.version - 1);
    let events = change_phone(&mut stale, 999);
    assert!(matches!(
        stores.customers.save(&stale, &events, &[], None).await,
        Err(SaveError::VersionConflict)
    ));
}

/// 50 concurrent inserts of different customers with the same externalId: exactly one row, the
/// other 49 get `DuplicateExternalId`.
pub async fn fifty_concurrent_inserts_of_one_external_id_create_one_customer(stores: Stores) {
    let firm = new_firm(&stores).await;
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let stores = stores.clone();
            tokio::spawn(async move {
                let (customer, events, outbox) =
                    new_customer(firm, Some("crm-race"), &format!("p{n}@example.com"));
                stores
                    .customers
                    .insert(&customer, &events, &outbox)
                    .await
                    .map(|_| customer.id)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(id) => winners.push(id),
            Err(SaveError::DuplicateExternalId) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one insert wins");
    let external = ExternalId::new("crm-race").unwrap();
    let stored = stores
        .customers
        .get_by_external_id(firm, &external)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.id, winners[0]);
    let query = kyc_domain::ports::ListQuery {
        filter: kyc_domain::ports::CustomerFilter {
            external_id: Some(external),
            ..Default::default()
        },
        after: None,
        limit: 100,
        include_total: true,
    };
    assert_eq!(
        stores.customers.list(firm, &query).await.unwrap().total,
        Some(1)
    );
    // The losers left no events behind.
    let exported = stores.audit.firm_export(firm, None, 1000).await.unwrap();
    assert!(exported.iter().all(|entry| entry.customer_id == winners[0]));
}

/// `insert_unless_matched` stores a new customer (with its events and outbox) only when the firm
/// has no customer with its external id and none with its email, and otherwise writes nothing and
/// answers the upsert's candidates; matches in other firms do not count. Of 30 concurrent calls
/// for one new external id, one inserts and every other finds it or is refused as a duplicate.
pub async fn insert_unless_matched_stores_only_a_customer_nobody_matches(stores: Stores) {
    let firm = new_firm(&stores).await;
    add_endpoint(&stores, firm, &[]).await;
    let other_firm = new_firm(&stores).await;
    insert_customer(&stores, other_firm, Some("crm-new")).await;

    // No match (the other firm's customer with this external id does not count): stored.
    let (mut created, events, outbox) = new_customer(firm, Some("crm-new"), "new@example.com");
    let InsertOrMatch::Inserted(saved) = stores
        .customers
        .insert_unless_matched(&created, &events, &outbox)
        .await
        .unwrap()
    else {
        panic!("nothing matched, so the customer is stored");
    };
    assert_eq!(saved.version, 1);
    created.saved(saved);
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(
        stores.customers.get(firm, created.id).await.unwrap(),
        Some(created.clone())
    );
    let trail = stores.audit.customer_trail(firm, created.id).await.unwrap();
    assert_eq!(
        trail
            .into_iter()
            .map(|entry| entry.event)
            .collect::<Vec<_>>(),
        events
    );
    assert_eq!(claim_messages(&stores).await, work_of(&outbox));
    let feed = whole_feed(&stores, firm, 1).await;
    assert_eq!(
        feed.iter().map(message_of).collect::<Vec<_>>(),
        notifications_of(&outbox)
    );

    // Matched by external id, by email (another external id, or none): nothing written.
    let by_email = insert_customer(&stores, firm, None).await;
    claim_messages(&stores).await;
    let cases = [
        (
            Some("crm-new"),
            "someone-else@example.com",
            Some(&created),
            None,
        ),
        (
            Some("crm-other"),
            by_email.email.as_str(),
            None,
            Some(&by_email),
        ),
        (None, by_email.email.as_str(), None, Some(&by_email)),
    ];
    for (external_id, email, want_external, want_email) in cases {
        let (candidate, events, outbox) = new_customer(firm, external_id, email);
        let InsertOrMatch::Matched(found) = stores
            .customers
            .insert_unless_matched(&candidate, &events, &outbox)
            .await
            .unwrap()
        else {
            panic!("{external_id:?} / {email} matches, so nothing is stored");
        };
        assert_eq!(found.by_external_id.as_ref(), want_external);
        if want_email.is_some() {
            assert_eq!(found.by_email.as_ref(), want_email);
        }
        assert_eq!(
            stores.customers.get(firm, candidate.id).await.unwrap(),
            None
        );
        assert!(
            stores
                .audit
                .customer_trail(firm, candidate.id)
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert!(
        claim_messages(&stores).await.is_empty(),
        "a match queues nothing"
    );
    assert_eq!(
        whole_feed(&stores, firm, 2).await.len(),
        2,
        "a match writes nothing to the feed"
    );

    // Thirty at once for one new external id: one customer.
    let tasks: Vec<_> = (0..30)
        .map(|n| {
            let stores = stores.clone();
            tokio::spawn(async move {
                let (customer, events, outbox) =
                    new_customer(firm, Some("crm-race"), &format!("race{n}@example.com"));
                match stores
                    .customers
                    .insert_unless_matched(&customer, &events, &outbox)
                    .await
                {
                    Ok(InsertOrMatch::Inserted(_)) => Some(customer.id),
                    Ok(InsertOrMatch::Matched(found)) => {
                        Some(found.by_external_id.expect("found by external id").id)
                    }
                    Err(SaveError::DuplicateExternalId) => None,
                    Err(other) => panic!("unexpected error {other:?}"),
                }
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    let external = ExternalId::new("crm-race").unwrap();
    let stored = stores
        .customers
        .get_by_external_id(firm, &external)
        .await
        .unwrap()
        .expect("one was stored");
    assert_eq!(ids, HashSet::from([stored.id]));
}

/// The upsert of the API (look up by externalId, insert, on a lost race read the winner) run 50
/// times at once: every caller ends with the same customer.
pub async fn concurrent_upserts_of_one_external_id_all_return_the_same_customer(stores: Stores) {
    let firm = new_firm(&stores).await;
    let external = ExternalId::new("crm-upsert").unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let stores = stores.clone();
            let external = external.clone();
            tokio::spawn(async move {
                if let Some(found) = stores
                    .customers
                    .get_by_external_id(firm, &external)
                    .await
                    .unwrap()
                {
                    return found.id;
                }
                let (customer, events, outbox) =
                    new_customer(firm, Some(external.as_str()), &format!("u{n}@example.com"));
                match stores.customers.insert(&customer, &events, &outbox).await {
                    Ok(_) => customer.id,
                    Err(SaveError::DuplicateExternalId) => {
                        stores
                            .customers
                            .get_by_external_id(firm, &external)
                            .await
                            .unwrap()
                            .unwrap()
                            .id
                    }
                    Err(other) => panic!("unexpected error {other:?}"),
                }
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "all upserts resolve to one customer: {ids:?}");
}

/// A provider event passed as `inbound` is recorded with the save; a second delivery is refused
/// with `DuplicateInbound`; orphans are recorded once, and a save naming an orphan's key is
/// refused the same way (a redelivered orphan whose attempt has appeared since has no effect).
pub async fn an_inbound_provider_event_is_recorded_once(stores: Stores) {
    let firm = new_firm(&stores).await;
    let mut customer = insert_customer(&stores, firm, None).await;
    let key = ProviderEventKey::new(format!("evt-{}", Uuid::new_v4()));
    let events = change_phone(&mut customer, 10);
    let version = stores
        .customers
        .save(&customer, &events, &[], Some(&key))
        .await
        .unwrap();
    customer.saved(version);
    let trail = stores
        .audit
        .customer_trail(firm, customer.id)
        .await
        .unwrap();
    assert_eq!(
        trail.last().unwrap().provider_event_key.as_ref(),
        Some(&key)
    );

    let events = change_phone(&mut customer, 11);
    let again = stores
        .customers
        .save(&customer, &events, &[], Some(&key))
        .await;
    assert!(
        matches!(again, Err(SaveError::DuplicateInbound)),
        "{again:?}"
    );

    let orphan = ProviderEvent {
        key: ProviderEventKey::new(format!("orphan-{}", Uuid::new_v4())),
        applicant_id: None,
        external_user_id: None,
        created_at: now(),
        kind: ProviderEventKind::Other {
            event_type: "applicantCreated".to_owned(),
        },
    };
    assert!(stores.customers.record_orphan_event(&orphan).await.unwrap());
    assert!(!stores.customers.record_orphan_event(&orphan).await.unwrap());
    let events = change_phone(&mut customer, 12);
    let after_orphan = stores
        .customers
        .save(&customer, &events, &[], Some(&orphan.key))
        .await;
    assert!(
        matches!(after_orphan, Err(SaveError::DuplicateInbound)),
        "{after_orphan:?}"
    );
}

/// Attempts are found by external user id and applicant id in any firm, and an attempt left in
/// `Starting` is listed for recovery until it opens.
pub async fn attempts_are_found_by_provider_ids_and_stuck_ones_are_listed(stores: Stores) {
    let firm = new_firm(&stores).await;
    let mut customer: Customer = insert_customer(&stores, firm, None).await;
    let person = staff();
    let answers = RiskAnswers {
        is_designated_service: true,
        handles_cash_or_crypto: false,
        is_new_customer: true,
    };
    let mut events = customer.confirm_risk(answers, &person, now()).unwrap();
    let (attempt, started) = customer
        .begin_verification(&person, Credits::new(1), &ProviderLevels::default(), now())
        .unwrap();
    events.extend(started);
    let version = stores
        .customers
        .save(&customer, &events, &[], None)
        .await
        .unwrap();
    customer.saved(version);
    let external_user_id = customer.attempt(attempt).unwrap().external_user_id.clone();
    assert_eq!(
        customer.attempt(attempt).unwrap().phase,
        AttemptPhase::Starting
    );

    let location = stores
        .customers
        .locate_attempt(None, Some(&external_user_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (location.firm_id, location.customer_id),
        (firm, customer.id)
    );
    let owner = stores
        .customers
        .find_by_attempt(None, Some(&external_user_id))
        .await
        .unwrap();
    assert_eq!(
        owner.as_ref(),
        Some(&customer),
        "loaded at its stored version"
    );
    let stuck = stores
        .customers
        .stuck_attempts(now() + Duration::seconds(1), Duration::ZERO, 10)
        .await
        .unwrap();
    assert!(stuck.contains(&location));
    let not_yet = stores
        .customers
        .stuck_attempts(now(), Duration::hours(1), 10)
        .await
        .unwrap();
    assert!(!not_yet.contains(&location));

    let applicant = ApplicantId::new(format!("{:024x}", Uuid::new_v4().as_u128() >> 32)).unwrap();
    let events = customer
        .complete_verification(
            attempt,
            applicant.clone(),
            "hash".to_owned(),
            &Actor::system("test"),
            now(),
        )
        .unwrap();
    let version = stores
        .customers
        .save(&customer, &events, &[], None)
        .await
        .unwrap();
    customer.saved(version);
    assert_eq!(customer.kyc_status, KycStatus::Pending);
    let by_applicant = stores
        .customers
        .locate_attempt(Some(&applicant), None)
        .await
        .unwrap();
    assert_eq!(by_applicant, Some(location));
    let owner = stores
        .customers
        .find_by_attempt(Some(&applicant), None)
        .await
        .unwrap();
    assert_eq!(owner.as_ref(), Some(&customer));
    // Past the lease the first call took, so only the phase keeps it off the list.
    let stuck = stores
        .customers
        .stuck_attempts(
            now() + RECOVERY_LEASE + Duration::seconds(1),
            Duration::ZERO,
            10,
        )
        .await
        .unwrap();
    assert!(!stuck.contains(&location), "an open attempt is not stuck");
    let unknown = ApplicantId::new("ffffffffffffffffffffffff").unwrap();
    assert_eq!(
        stores
            .customers
            .locate_attempt(Some(&unknown), None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        stores
            .customers
            .find_by_attempt(Some(&unknown), None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        stores.customers.find_by_attempt(None, None).await.unwrap(),
        None
    );
}
