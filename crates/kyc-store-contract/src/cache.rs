//! What an adapter that caches decoded customer states must still guarantee: a customer saved
//! through another store on the same database (another server replica) is read at its new
//! version, never a stale one; no read for one firm returns another firm's customer, cached or
//! not; and every read returns exactly what the same read returns with the cache turned off.
//!
//! These take two stores on one database, so adapters call them from their own tests rather than
//! through [`contract_tests!`](crate::contract_tests) (which builds one store per test).

use kyc_domain::customer::Customer;
use kyc_domain::ports::{CustomerFilter, ListQuery};
use kyc_domain::values::ExternalId;
use uuid::Uuid;

use crate::{Stores, insert_customer, new_firm, now, touch_customer, verified_customer};

/// Every read of `customer` through `stores`: by id, by external id, by email, and as the only
/// customer of a list filtered by its external id. All must agree.
async fn read_every_way(stores: &Stores, customer: &Customer) -> Customer {
    let firm = customer.firm_id;
    let by_id = stores
        .customers
        .get(firm, customer.id)
        .await
        .expect("get")
        .expect("found by id");
    let external = customer.external_id.as_ref().expect("has an external id");
    let by_external = stores
        .customers
        .get_by_external_id(firm, external)
        .await
        .expect("get by external id")
        .expect("found by external id");
    let by_email = stores
        .customers
        .find_by_email(firm, &customer.email)
        .await
        .expect("find by email")
        .expect("found by email");
    let page = stores
        .customers
        .list(firm, &by_external_id(external))
        .await
        .expect("list");
    assert_eq!(page.customers.len(), 1, "one customer has this external id");
    assert_eq!(by_external, by_id, "by external id differs from by id");
    assert_eq!(by_email, by_id, "by email differs from by id");
    assert_eq!(page.customers[0], by_id, "the list differs from by id");
    by_id
}

fn by_external_id(external: &ExternalId) -> ListQuery {
    ListQuery {
        filter: CustomerFilter {
            external_id: Some(external.clone()),
            ..Default::default()
        },
        after: None,
        limit: 10,
        include_total: false,
    }
}

/// `here` and `there` are two stores on one database, each with its own cache, as two server
/// replicas would be.
pub async fn a_customer_saved_through_another_store_is_read_at_its_new_version(
    here: Stores,
    there: Stores,
) {
    let firm = new_firm(&here).await;
    let external = format!("replica-{}", Uuid::new_v4().simple());
    let inserted = insert_customer(&here, firm, Some(&external)).await;
    // Twice, so the second read is served by whatever the first one (or the insert) cached.
    for _ in 0..2 {
        assert_eq!(read_every_way(&here, &inserted).await, inserted);
    }

    let mut elsewhere = read_every_way(&there, &inserted).await;
    touch_customer(&there, &mut elsewhere, 4_242).await;
    assert_eq!(elsewhere.version, inserted.version + 1);
    for _ in 0..2 {
        let read = read_every_way(&here, &inserted).await;
        assert_eq!(read.version, elsewhere.version, "a stale version was read");
        assert_eq!(read, elsewhere, "the state saved elsewhere was not read");
    }

    // And back the other way, from the version just read.
    let mut again = read_every_way(&here, &inserted).await;
    touch_customer(&here, &mut again, 4_343).await;
    for _ in 0..2 {
        assert_eq!(read_every_way(&there, &inserted).await, again);
    }
}

/// A customer read (and so cached) for its firm is still invisible to every read with another
/// firm's id, and a customer of that other firm with the same external id and email is returned
/// as itself.
pub async fn the_state_cache_never_crosses_firms(stores: Stores) {
    let firm_a = new_firm(&stores).await;
    let firm_b = new_firm(&stores).await;
    let external = format!("shared-{}", Uuid::new_v4().simple());
    let a = insert_customer(&stores, firm_a, Some(&external)).await;
    assert_eq!(read_every_way(&stores, &a).await, a);

    assert_eq!(stores.customers.get(firm_b, a.id).await.expect("get"), None);
    let external_id = a.external_id.clone().expect("external id");
    let in_b = stores.customers.get_by_external_id(firm_b, &external_id);
    assert_eq!(in_b.await.expect("get by external id"), None);
    let in_b = stores.customers.find_by_email(firm_b, &a.email);
    assert_eq!(in_b.await.expect("find by email"), None);
    let page = stores
        .customers
        .list(firm_b, &by_external_id(&external_id))
        .await
        .expect("list");
    assert!(page.customers.is_empty(), "firm B listed firm A's customer");

    // Firm B's own customer with the same external id: read as itself, both before and after
    // firm A's is read again.
    let b = insert_customer(&stores, firm_b, Some(&external)).await;
    for _ in 0..2 {
        assert_eq!(read_every_way(&stores, &b).await, b);
        assert_eq!(read_every_way(&stores, &a).await, a);
    }
}

/// `cached` and `uncached` are two stores on one database, the second with its cache turned off:
/// every read gives the same customers through both, on first reading and on reading again.
pub async fn reads_are_identical_with_the_state_cache_disabled(cached: Stores, uncached: Stores) {
    let firm = new_firm(&cached).await;
    let mut customers = Vec::new();
    for n in 0..6_u32 {
        let mut customer = insert_customer(&cached, firm, Some(&format!("same-{n}"))).await;
        for change in 0..n % 3 {
            touch_customer(&cached, &mut customer, n * 10 + change).await;
        }
        customers.push(customer);
    }
    // A richer state: verified, with an attempt, a verified identity and a screening date.
    let verified = verified_customer(firm, &format!("{:064x}", Uuid::new_v4().as_u128()), now());
    let version = cached
        .customers
        .insert(&verified, &[], &[])
        .await
        .expect("insert verified");
    let mut verified = verified;
    verified.saved(version);
    let all = ListQuery {
        filter: CustomerFilter::default(),
        after: None,
        limit: 100,
        include_total: true,
    };
    for round in 0..2 {
        for customer in &customers {
            let read = read_every_way(&cached, customer).await;
            assert_eq!(read, read_every_way(&uncached, customer).await);
            assert_eq!(&read, customer, "round {round}: not what was saved");
        }
        let with = cached.customers.get(firm, verified.id).await.expect("get");
        let without = uncached
            .customers
            .get(firm, verified.id)
            .await
            .expect("get");
        assert_eq!(with, without);
        assert_eq!(with.as_ref(), Some(&verified));
        let with = cached.customers.list(firm, &all).await.expect("list");
        let without = uncached.customers.list(firm, &all).await.expect("list");
        assert_eq!(with.customers, without.customers, "round {round}");
        assert_eq!(with.customers.len(), customers.len() + 1);
        assert_eq!(
            (with.has_more, with.total),
            (without.has_more, without.total)
        );
    }
}
