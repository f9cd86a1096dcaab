//! Tenant isolation: every read scoped by firm A returns nothing of firm B, whatever id is given.

use kyc_domain::customer::Customer;
use kyc_domain::events::Role;
use kyc_domain::ids::{ApiKeyId, UserId};
use kyc_domain::ports::{
    ApiKeyRecord, ClaimOutcome, CustomerFilter, IdempotencyScope, ListQuery, SaveError, User,
    WebhookDelivery, WebhookEndpoint, WebhookEndpointId,
};
use kyc_domain::values::{Email, ExternalId};
use time::Duration;
use uuid::Uuid;

use crate::{Stores, change_phone, insert_customer, new_firm, now, whole_feed};

/// Firm B owns a customer (with external id and email), a user, an API key, a webhook endpoint
/// with a delivery and a queued message, events, feed events and an idempotency key. Every read
/// and targeted write made with firm A's id and B's ids finds nothing and changes nothing.
pub async fn reads_with_one_firms_id_never_return_another_firms_rows(stores: Stores) {
    let a = new_firm(&stores).await;
    let b = new_firm(&stores).await;
    let _a_customer = insert_customer(&stores, a, Some("a-only")).await;
    let theirs: Customer = insert_customer(&stores, b, Some("shared-ext")).await;
    let user = User {
        id: UserId::from_uuid(Uuid::now_v7()),
        firm_id: b,
        email: Email::new(format!("{}@b.example", Uuid::new_v4().simple())).unwrap(),
        role: Role::Admin,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        created_at: now(),
        disabled_at: None,
    };
    stores.users.create_user(&user).await.unwrap();
    let key = ApiKeyRecord {
        id: ApiKeyId::from_uuid(Uuid::now_v7()),
        firm_id: b,
        label: "b crm".to_owned(),
        scopes: vec!["customers:write".to_owned()],
        prefix: "kyc_live_abc".to_owned(),
        last4: "wxyz".to_owned(),
        sha256: format!("{:064x}", Uuid::new_v4().as_u128()),
        expires_at: None,
        revoked_at: None,
        created_at: now(),
    };
    stores.api_keys.create_api_key(&key).await.unwrap();
    let endpoint = WebhookEndpoint {
        id: WebhookEndpointId::from_uuid(Uuid::now_v7()),
        firm_id: b,
        url: "https://b.example/hooks".to_owned(),
        description: None,
        event_types: vec![],
        secret: "whsec_b".to_owned(),
        previous_secret: None,
        previous_secret_expires_at: None,
        disabled_at: None,
        created_at: now(),
    };
    stores.webhooks.create_endpoint(&endpoint).await.unwrap();
    // A customer created once the endpoint is there: its creation is queued for it.
    let queued = insert_customer(&stores, b, None).await;
    stores
        .webhooks
        .record_delivery(&WebhookDelivery {
            endpoint_id: endpoint.id,
            firm_id: b,
            message_id: "msg_1".to_owned(),
            event_type: "customer.created".to_owned(),
            attempt: 1,
            attempted_at: now(),
            response_status: Some(200),
            error: None,
            duration_ms: 12,
        })
        .await
        .unwrap();

    let customers = &stores.customers;
    assert_eq!(customers.get(a, theirs.id).await.unwrap(), None);
    let shared = ExternalId::new("shared-ext").unwrap();
    assert_eq!(
        customers.get_by_external_id(a, &shared).await.unwrap(),
        None
    );
    assert_eq!(
        customers.find_by_email(a, &theirs.email).await.unwrap(),
        None
    );
    let candidates = customers
        .find_upsert_candidates(a, Some(&shared), &theirs.email)
        .await
        .unwrap();
    assert_eq!(
        (candidates.by_external_id, candidates.by_email),
        (None, None),
        "the upsert lookups of firm A see none of B's customers"
    );
    let filters = [
        CustomerFilter::default(),
        CustomerFilter {
            external_id: Some(shared.clone()),
            ..Default::default()
        },
        CustomerFilter {
            kyc_status: Some(theirs.kyc_status),
            ..Default::default()
        },
        CustomerFilter {
            aml_status: Some(theirs.aml.status),
            ..Default::default()
        },
        CustomerFilter {
            updated_since: Some(now() - Duration::hours(1)),
            ..Default::default()
        },
        CustomerFilter {
            newest_first: true,
            ..Default::default()
        },
    ];
    for filter in filters {
        let page = customers
            .list(
                a,
                &ListQuery {
                    filter,
                    after: None,
                    limit: 100,
                    include_total: true,
                },
            )
            .await
            .unwrap();
        assert!(page.customers.iter().all(|c| c.firm_id == a));
        assert!(page.customers.iter().all(|c| c.id != theirs.id));
        assert_eq!(page.total, Some(page.customers.len() as u64));
    }
    // A save of B's customer carrying firm A's id changes nothing.
    let mut state = theirs.clone().into_state();
    state.firm_id = a;
    let mut forged = Customer::restore(state);
    let events = change_phone(&mut forged, 77);
    let refused = customers.save(&forged, &events, &[], None).await;
    assert!(
        matches!(refused, Err(SaveError::VersionConflict)),
        "{refused:?}"
    );
    assert_eq!(
        customers.get(b, theirs.id).await.unwrap(),
        Some(theirs.clone())
    );

    assert_eq!(stores.users.get_user(a, user.id).await.unwrap(), None);
    assert!(stores.api_keys.list_api_keys(a).await.unwrap().is_empty());
    assert!(
        !stores
            .api_keys
            .revoke_api_key(a, key.id, now())
            .await
            .unwrap()
    );
    let found = stores
        .api_keys
        .find_api_key_by_sha256(&key.sha256)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.revoked_at, None, "firm A could revoke B's key");
    assert_eq!(
        stores.webhooks.get_endpoint(a, endpoint.id).await.unwrap(),
        None
    );
    assert!(stores.webhooks.list_endpoints(a).await.unwrap().is_empty());
    assert!(
        !stores
            .webhooks
            .disable_endpoint(a, endpoint.id, now())
            .await
            .unwrap()
    );
    assert!(
        stores
            .webhooks
            .list_deliveries(a, endpoint.id, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        stores
            .webhooks
            .get_endpoint(b, endpoint.id)
            .await
            .unwrap()
            .unwrap()
            .disabled_at,
        None
    );
    assert!(
        stores
            .audit
            .customer_trail(a, theirs.id)
            .await
            .unwrap()
            .is_empty()
    );
    let export = stores.audit.firm_export(a, None, 1000).await.unwrap();
    assert!(!export.is_empty() && export.iter().all(|entry| entry.firm_id == a));
    let feed = whole_feed(&stores, a, 1).await;
    assert!(!feed.is_empty() && feed.iter().all(|event| event.firm_id == a));
    assert!(feed.iter().all(|event| event.customer_id != theirs.id));

    // B's endpoint, B's event: firm A can neither change, delete nor replay them.
    let their_event = whole_feed(&stores, b, 2)
        .await
        .into_iter()
        .find(|event| event.customer_id == queued.id)
        .expect("B's event");
    assert!(
        !stores
            .webhooks
            .update_endpoint(&WebhookEndpoint {
                firm_id: a,
                url: "https://a.example/stolen".to_owned(),
                ..endpoint.clone()
            })
            .await
            .unwrap()
    );
    assert!(
        !stores
            .webhooks
            .delete_endpoint(a, endpoint.id, now())
            .await
            .unwrap()
    );
    assert!(
        !stores
            .queue
            .replay(a, endpoint.id, their_event.id, now())
            .await
            .unwrap()
    );
    assert_eq!(
        stores.webhooks.get_endpoint(b, endpoint.id).await.unwrap(),
        Some(endpoint.clone()),
        "firm A changed B's endpoint"
    );
    assert!(
        stores
            .queue
            .replay(b, endpoint.id, their_event.id, now())
            .await
            .unwrap(),
        "B replays its own event"
    );

    // The same idempotency key in two firms is two keys.
    let scope = |firm| IdempotencyScope {
        firm_id: firm,
        method: "POST".to_owned(),
        path: "/v1/customers".to_owned(),
        key: "same-key".to_owned(),
    };
    let expires = now() + Duration::hours(24);
    assert_eq!(
        stores
            .idempotency
            .claim(&scope(b), "f", now(), expires)
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        stores
            .idempotency
            .claim(&scope(a), "g", now(), expires)
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
}
