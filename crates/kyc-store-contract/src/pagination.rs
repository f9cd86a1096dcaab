//! The CRM list: filters, counts, and walks that stay correct while other requests write.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kyc_domain::customer::Customer;
use kyc_domain::ids::{CustomerId, FirmId};
use kyc_domain::ports::{CustomerFilter, ListQuery, PagePosition};
use kyc_domain::risk::RiskAnswers;
use kyc_domain::status::{AmlStatus, KycStatus};
use kyc_domain::values::ExternalId;
use time::OffsetDateTime;

use crate::{Stores, insert_customer, new_firm, now, staff, touch_customer};

/// Walks every page of `filter` with pages of `limit`, returning the ids in the order seen and
/// each one's sort key.
pub async fn walk(
    stores: &Stores,
    firm: FirmId,
    filter: &CustomerFilter,
    limit: u32,
) -> Vec<(CustomerId, OffsetDateTime)> {
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let query = ListQuery {
            filter: filter.clone(),
            after: after.clone(),
            limit,
            include_total: false,
        };
        let page = stores.customers.list(firm, &query).await.unwrap();
        assert!(page.customers.len() <= limit as usize);
        for customer in &page.customers {
            seen.push((customer.id, filter.order().sort_key(customer)));
        }
        if !page.has_more {
            return seen;
        }
        let (id, sort_key) = *seen.last().expect("a page with more after it is not empty");
        after = Some(PagePosition { sort_key, id });
    }
}

/// Filters by status, AML status and external id combine; `has_more` and `total` are exact.
pub async fn list_filters_pages_and_counts(stores: Stores) {
    let firm = new_firm(&stores).await;
    let other = new_firm(&stores).await;
    let mut not_required = Vec::new();
    for n in 0..5 {
        let mut customer = insert_customer(&stores, firm, Some(&format!("ext-{n}"))).await;
        if n % 2 == 0 {
            let answers = RiskAnswers {
                is_designated_service: false,
                handles_cash_or_crypto: false,
                is_new_customer: true,
            };
            let events = customer.confirm_risk(answers, &staff(), now()).unwrap();
            let version = stores
                .customers
                .save(&customer, &events, &[], None)
                .await
                .unwrap();
            customer.saved(version);
            not_required.push(customer.id);
        }
    }
    let _noise = insert_customer(&stores, other, Some("ext-0")).await;

    let list = |filter: CustomerFilter, limit: u32| {
        let stores = stores.clone();
        async move {
            stores
                .customers
                .list(
                    firm,
                    &ListQuery {
                        filter,
                        after: None,
                        limit,
                        include_total: true,
                    },
                )
                .await
                .unwrap()
        }
    };
    let all = list(CustomerFilter::default(), 100).await;
    assert_eq!(
        (all.customers.len(), all.total, all.has_more),
        (5, Some(5), false)
    );
    let created: Vec<_> = all.customers.iter().map(|c| (c.created_at, c.id)).collect();
    let mut sorted = created.clone();
    sorted.sort();
    assert_eq!(created, sorted, "ordered by (created_at, id)");

    let page = list(CustomerFilter::default(), 2).await;
    assert_eq!(
        (page.customers.len(), page.total, page.has_more),
        (2, Some(5), true)
    );
    let exact = list(CustomerFilter::default(), 5).await;
    assert!(
        !exact.has_more,
        "a page that ends exactly at the last row has no more"
    );

    let filtered = list(
        CustomerFilter {
            kyc_status: Some(KycStatus::NotRequired),
            ..Default::default()
        },
        100,
    )
    .await;
    let mut ids: Vec<_> = filtered.customers.iter().map(|c| c.id).collect();
    ids.sort();
    not_required.sort();
    assert_eq!(ids, not_required);
    assert_eq!(filtered.total, Some(3));

    let none = list(
        CustomerFilter {
            aml_status: Some(AmlStatus::NeedsReview),
            ..Default::default()
        },
        100,
    )
    .await;
    assert_eq!((none.customers.len(), none.total), (0, Some(0)));
    let screened = list(
        CustomerFilter {
            aml_status: Some(AmlStatus::NotScreened),
            ..Default::default()
        },
        100,
    )
    .await;
    assert_eq!(screened.total, Some(5));

    let by_external = list(
        CustomerFilter {
            external_id: Some(ExternalId::new("ext-3").unwrap()),
            kyc_status: Some(KycStatus::NotStarted),
            ..Default::default()
        },
        100,
    )
    .await;
    assert_eq!(by_external.customers.len(), 1);
    assert_eq!(
        by_external.customers[0]
            .external_id
            .as_ref()
            .map(ExternalId::as_str),
        Some("ext-3")
    );

    let uncounted = stores
        .customers
        .list(
            firm,
            &ListQuery {
                filter: CustomerFilter::default(),
                after: None,
                limit: 10,
                include_total: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(uncounted.total, None);
}

/// Walking every page in `(created_at, id)` order while other tasks insert new customers and
/// update existing ones: every customer that existed before the walk is seen exactly once, and
/// nothing is seen twice.
pub async fn walking_every_page_while_writers_run_never_skips_or_repeats(stores: Stores) {
    let firm = new_firm(&stores).await;
    let mut existing = Vec::new();
    for _ in 0..120 {
        existing.push(insert_customer(&stores, firm, None).await);
    }
    let expected: HashSet<_> = existing.iter().map(|c| c.id).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&stores, firm, existing, &stop);

    for _ in 0..3 {
        let seen = walk(&stores, firm, &CustomerFilter::default(), 7).await;
        let unique: HashSet<_> = seen.iter().map(|(id, _)| *id).collect();
        assert_eq!(unique.len(), seen.len(), "a customer was repeated");
        assert!(
            expected.is_subset(&unique),
            "a customer that existed before the walk was skipped"
        );
        let keys: Vec<_> = seen.iter().map(|(id, key)| (*key, *id)).collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "the walk follows (created_at, id)"
        );
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
}

/// The back office's newest-first list: a walk over every page in `(updated_at, id)` descending
/// order returns every customer of the firm exactly once, the latest change first, and a customer
/// changed during the walk moves to the front, behind the walk, so it is never shown twice.
/// `updated_since` wins over `newest_first`: a poll always walks forward.
pub async fn a_newest_first_walk_returns_every_customer_once_newest_change_first(stores: Stores) {
    let firm = new_firm(&stores).await;
    let other = new_firm(&stores).await;
    let mut existing = Vec::new();
    for _ in 0..20 {
        existing.push(insert_customer(&stores, firm, None).await);
    }
    insert_customer(&stores, other, None).await;
    // Change a few of the oldest, so the newest change is not the newest customer.
    for (n, customer) in existing.iter_mut().take(6).enumerate().rev() {
        touch_customer(&stores, customer, 7_000 + u32::try_from(n).unwrap()).await;
    }
    let newest = existing[0].id;
    let filter = CustomerFilter {
        newest_first: true,
        ..Default::default()
    };
    let seen = walk(&stores, firm, &filter, 3).await;
    let ids: Vec<_> = seen.iter().map(|(id, _)| *id).collect();
    let unique: HashSet<_> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a customer was repeated");
    let expected: HashSet<_> = existing.iter().map(|c| c.id).collect();
    assert_eq!(
        unique, expected,
        "every customer of the firm, and only those"
    );
    assert_eq!(ids[0], newest, "the latest change comes first");
    let keys: Vec<_> = seen.iter().map(|(id, key)| (*key, *id)).collect();
    assert!(
        keys.windows(2).all(|w| w[0] > w[1]),
        "the walk follows (updated_at, id) descending"
    );
    let stored: HashMap<_, _> = existing.iter().map(|c| (c.id, c.updated_at)).collect();
    assert!(
        seen.iter().all(|(id, key)| stored[id] == *key),
        "each customer at its latest change"
    );

    // A customer changed after the first page was read moves ahead of the walk: not shown again.
    let first = stores
        .customers
        .list(
            firm,
            &ListQuery {
                filter: filter.clone(),
                after: None,
                limit: 5,
                include_total: true,
            },
        )
        .await
        .unwrap();
    assert_eq!((first.total, first.has_more), (Some(20), true));
    let last = first.customers.last().unwrap();
    let after = PagePosition::after(filter.order(), last);
    let shown: HashSet<_> = first.customers.iter().map(|c| c.id).collect();
    let mut moved = existing
        .iter()
        .find(|c| !shown.contains(&c.id))
        .unwrap()
        .clone();
    touch_customer(&stores, &mut moved, 8_888).await;
    let rest = stores
        .customers
        .list(
            firm,
            &ListQuery {
                filter: filter.clone(),
                after: Some(after),
                limit: 100,
                include_total: false,
            },
        )
        .await
        .unwrap();
    assert!(!rest.has_more);
    assert_eq!(
        rest.customers.len(),
        14,
        "the rest but the customer that moved"
    );
    assert!(
        rest.customers
            .iter()
            .all(|c| !shown.contains(&c.id) && c.id != moved.id)
    );

    let poll = CustomerFilter {
        updated_since: Some(existing[0].updated_at - time::Duration::seconds(3600)),
        newest_first: true,
        ..Default::default()
    };
    let polled = walk(&stores, firm, &poll, 4).await;
    let keys: Vec<_> = polled.iter().map(|(id, key)| (*key, *id)).collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "with updated_since the walk goes forward"
    );
}

/// Polling with `updated_since` and the cursor: every change saved before the poll began is
/// returned, with its latest state, even while other changes land during the walk; the next poll
/// from the largest `updated_at` seen returns what changed after.
pub async fn polling_with_updated_since_and_cursor_loses_no_change(stores: Stores) {
    let firm = new_firm(&stores).await;
    let mut existing = Vec::new();
    for _ in 0..80 {
        existing.push(insert_customer(&stores, firm, None).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let since = now();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut changed = HashMap::new();
    for (n, customer) in existing.iter_mut().enumerate().filter(|(n, _)| n % 3 == 0) {
        touch_customer(&stores, customer, 5_000 + u32::try_from(n).unwrap()).await;
        changed.insert(customer.id, customer.version);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&stores, firm, existing.clone(), &stop);

    let filter = CustomerFilter {
        updated_since: Some(since),
        ..Default::default()
    };
    let seen = walk(&stores, firm, &filter, 6).await;
    let ids: HashSet<_> = seen.iter().map(|(id, _)| *id).collect();
    for id in changed.keys() {
        assert!(ids.contains(id), "a change saved before the poll was lost");
    }
    let keys: Vec<_> = seen.iter().map(|(id, key)| (*key, *id)).collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "the poll follows (updated_at, id)"
    );
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }

    // The next poll from the watermark sees a change made after it.
    let watermark = seen.iter().map(|(_, key)| *key).max().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut late = stores
        .customers
        .get(firm, existing[1].id)
        .await
        .unwrap()
        .unwrap();
    touch_customer(&stores, &mut late, 9_999).await;
    let next = walk(
        &stores,
        firm,
        &CustomerFilter {
            updated_since: Some(watermark),
            ..Default::default()
        },
        6,
    )
    .await;
    assert!(
        next.iter().any(|(id, _)| *id == late.id),
        "the change after the watermark was lost"
    );
    assert!(next.iter().all(|(_, key)| *key > watermark));
}

/// A change whose move was timed before a change of the same firm that committed first (it took
/// its time between the move and the write) is still given an `updated_at` after that change: the
/// order of `updated_at` within a firm is the order of commits, so a CRM that keeps the largest
/// `updated_at` it has listed as its watermark cannot have passed it. The customer read back
/// carries the time the store returned.
pub async fn a_change_is_never_stamped_before_one_that_committed_first(stores: Stores) {
    let firm = new_firm(&stores).await;
    let mut late = insert_customer(&stores, firm, None).await;
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let first = insert_customer(&stores, firm, None).await;
    let read = stores.customers.get(firm, first.id).await.unwrap();
    assert_eq!(read.as_ref(), Some(&first));
    assert_eq!(
        first.created_at, first.updated_at,
        "a new customer is created at the time it is stored"
    );
    let move_time = first.updated_at - time::Duration::seconds(1);
    let events = late
        .update_contact(
            kyc_domain::customer::ContactUpdate {
                phone: Some(kyc_domain::values::Phone::new("+442071234567").unwrap()),
                ..Default::default()
            },
            &crate::crm(),
            move_time,
        )
        .unwrap();
    assert!(
        late.updated_at < first.updated_at,
        "the move is timed before"
    );
    let saved = stores
        .customers
        .save(&late, &events, &[], None)
        .await
        .unwrap();
    assert!(
        saved.at > first.updated_at,
        "stamped {} before {}, which committed first",
        saved.at,
        first.updated_at
    );
    late.saved(saved);
    assert_eq!(
        stores.customers.get(firm, late.id).await.unwrap().as_ref(),
        Some(&late)
    );
    let since = first.updated_at - time::Duration::seconds(10);
    let polled = walk(
        &stores,
        firm,
        &CustomerFilter {
            updated_since: Some(since),
            ..Default::default()
        },
        10,
    )
    .await;
    let order: Vec<_> = polled.iter().map(|(id, _)| *id).collect();
    assert_eq!(order, vec![first.id, late.id], "polled in commit order");
}

/// Two writer tasks: one inserts new customers, one keeps updating the given ones.
fn spawn_writers(
    stores: &Stores,
    firm: FirmId,
    mut existing: Vec<Customer>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let inserter = tokio::spawn({
        let (stores, stop) = (stores.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                insert_customer(&stores, firm, None).await;
                tokio::task::yield_now().await;
            }
        }
    });
    let updater = tokio::spawn({
        let (stores, stop) = (stores.clone(), stop.clone());
        async move {
            let mut round = 0_u32;
            while !stop.load(Ordering::SeqCst) {
                let n = existing.len();
                let customer = &mut existing[round as usize % n];
                touch_customer(&stores, customer, 20_000 + round).await;
                round += 1;
                tokio::task::yield_now().await;
            }
        }
    });
    vec![inserter, updater]
}
