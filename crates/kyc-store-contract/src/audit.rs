//! The audit trail is append-only: every save adds to it, nothing rewrites it.

use kyc_domain::events::NotificationType;

use crate::{Stores, change_phone, insert_customer, new_firm, touch_customer, whole_feed};

/// After each save the customer's trail is the previous trail, unchanged, followed by the new
/// events; sequences only grow; a refused save adds nothing; the firm export pages through the
/// log in order, and the event feed carries each save's notification in the same order.
pub async fn the_event_log_only_grows(stores: Stores) {
    let firm = new_firm(&stores).await;
    let mut customer = insert_customer(&stores, firm, None).await;
    let mut previous = stores
        .audit
        .customer_trail(firm, customer.id)
        .await
        .unwrap();
    assert_eq!(previous.len(), 1);
    for round in 0..5 {
        touch_customer(&stores, &mut customer, 300 + round).await;
        let trail = stores
            .audit
            .customer_trail(firm, customer.id)
            .await
            .unwrap();
        assert_eq!(trail.len(), previous.len() + 1);
        assert_eq!(
            &trail[..previous.len()],
            &previous[..],
            "an earlier entry changed"
        );
        previous = trail;
    }
    assert!(previous.windows(2).all(|w| w[0].sequence < w[1].sequence));

    let mut stale = customer.clone();
    stale.saved_at_version(customer.version - 1);
    let events = change_phone(&mut stale, 400);
    assert!(
        stores
            .customers
            .save(&stale, &events, &[], None)
            .await
            .is_err()
    );
    assert_eq!(
        stores
            .audit
            .customer_trail(firm, customer.id)
            .await
            .unwrap(),
        previous
    );

    let other = insert_customer(&stores, firm, None).await;
    let mut exported = Vec::new();
    let mut after = None;
    loop {
        let page = stores.audit.firm_export(firm, after, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.sequence);
        exported.extend(page);
    }
    assert_eq!(exported.len(), previous.len() + 1);
    assert!(exported.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert!(exported.iter().any(|entry| entry.customer_id == other.id));
    // The feed carries the notification of each save, in the order of the log; the refused save
    // added none.
    let feed = whole_feed(&stores, firm, exported.len()).await;
    let order: Vec<_> = feed
        .iter()
        .map(|event| (event.customer_id, event.notification))
        .collect();
    let mut expected = vec![(customer.id, NotificationType::Created)];
    expected.extend((0..5).map(|_| (customer.id, NotificationType::Updated)));
    expected.push((other.id, NotificationType::Created));
    assert_eq!(order, expected);
}
