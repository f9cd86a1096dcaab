//! Users, sessions, API keys, webhook endpoints and deliveries, and the outbox.

use std::collections::HashSet;

use kyc_domain::events::Role;
use kyc_domain::ids::{ApiKeyId, FirmId, UserId};
use kyc_domain::ports::{
    ApiKeyRecord, CreateUserError, Session, User, WebhookDelivery, WebhookEndpoint,
    WebhookEndpointId,
};
use kyc_domain::values::Email;
use time::Duration;
use uuid::Uuid;

use crate::{Stores, insert_customer_with_work, new_firm, now};

fn user(firm: FirmId, email: &str) -> User {
    User {
        id: UserId::from_uuid(Uuid::now_v7()),
        firm_id: firm,
        email: Email::new(email).unwrap(),
        role: Role::ComplianceOfficer,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        created_at: now(),
        disabled_at: None,
    }
}

/// A user is found by email in any case, whatever the firm; the same email in another firm (in
/// another case) is refused.
pub async fn users_log_in_by_a_globally_unique_email(stores: Stores) {
    let a = new_firm(&stores).await;
    let b = new_firm(&stores).await;
    let alice = user(a, "Alice@Firm.example");
    stores.users.create_user(&alice).await.unwrap();
    let found = stores
        .users
        .find_user_by_email(&Email::new("alice@firm.EXAMPLE").unwrap())
        .await
        .unwrap();
    assert_eq!(found.as_ref(), Some(&alice));
    assert_eq!(
        stores.users.get_user(a, alice.id).await.unwrap(),
        Some(alice.clone())
    );
    let twin = user(b, "ALICE@firm.example");
    let refused = stores.users.create_user(&twin).await;
    assert!(
        matches!(refused, Err(CreateUserError::DuplicateEmail)),
        "{refused:?}"
    );
    assert_eq!(stores.users.get_user(b, twin.id).await.unwrap(), None);
    assert_eq!(
        stores
            .users
            .find_user_by_email(&Email::new("bob@firm.example").unwrap())
            .await
            .unwrap(),
        None
    );
}

/// A firm's users are listed by email compared without case, character by character; a user's
/// role and disabled time change and read back by every look-up; a user created disabled stays
/// so; an unknown id changes nothing.
pub async fn users_are_listed_by_email_and_their_role_and_disabled_time_change(stores: Stores) {
    let firm = new_firm(&stores).await;
    let run = Uuid::new_v4().simple().to_string();
    // Upper case sorts before lower case by character code, and '.' before letters: the list
    // must compare the lower-cased emails, byte by byte, whatever the database's collation.
    let emails = [
        format!("Zoe.{run}@firm.example"),
        format!("a.b.{run}@firm.example"),
        format!("ab.{run}@firm.example"),
        format!("Bob.{run}@firm.example"),
    ];
    let mut users = Vec::new();
    for email in &emails {
        let user = user(firm, email);
        stores.users.create_user(&user).await.unwrap();
        users.push(user);
    }
    let mut disabled = user(firm, &format!("carol.{run}@firm.example"));
    disabled.disabled_at = Some(now() - Duration::days(1));
    stores.users.create_user(&disabled).await.unwrap();
    users.push(disabled.clone());

    let listed: Vec<String> = stores
        .users
        .list_users(firm)
        .await
        .unwrap()
        .iter()
        .map(|u| u.email.to_string())
        .collect();
    let mut expected: Vec<&User> = users.iter().collect();
    expected.sort_by_key(|u| u.email.normalized());
    assert_eq!(
        listed,
        expected
            .iter()
            .map(|u| u.email.to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        stores.users.get_user(firm, disabled.id).await.unwrap(),
        Some(disabled.clone()),
        "a user created disabled reads back disabled"
    );

    let bob = &users[3];
    assert!(
        stores
            .users
            .set_user_role(firm, bob.id, Role::Admin)
            .await
            .unwrap()
    );
    let at = now();
    assert!(
        stores
            .users
            .set_user_disabled(firm, bob.id, Some(at))
            .await
            .unwrap()
    );
    let changed = User {
        role: Role::Admin,
        disabled_at: Some(at),
        ..bob.clone()
    };
    assert_eq!(
        stores.users.get_user(firm, bob.id).await.unwrap(),
        Some(changed.clone())
    );
    assert_eq!(
        stores.users.find_user_by_email(&bob.email).await.unwrap(),
        Some(changed.clone()),
        "login sees the disabled time"
    );
    assert!(
        stores
            .users
            .list_users(firm)
            .await
            .unwrap()
            .contains(&changed)
    );
    assert!(
        stores
            .users
            .set_user_disabled(firm, bob.id, None)
            .await
            .unwrap()
    );
    assert_eq!(
        stores
            .users
            .get_user(firm, bob.id)
            .await
            .unwrap()
            .map(|u| u.disabled_at),
        Some(None),
        "enabled again"
    );

    let nobody = UserId::from_uuid(Uuid::now_v7());
    assert!(
        !stores
            .users
            .set_user_role(firm, nobody, Role::Admin)
            .await
            .unwrap()
    );
    assert!(
        !stores
            .users
            .set_user_disabled(firm, nobody, Some(at))
            .await
            .unwrap()
    );
}

/// Another firm's user is never listed, and a change of role or disabled time made with one
/// firm's id and another firm's user changes nothing.
pub async fn another_firms_user_is_never_listed_changed_or_disabled(stores: Stores) {
    let a = new_firm(&stores).await;
    let b = new_firm(&stores).await;
    let ours = user(a, &format!("{}@a.example", Uuid::new_v4().simple()));
    let theirs = User {
        role: Role::Staff,
        ..user(b, &format!("{}@b.example", Uuid::new_v4().simple()))
    };
    stores.users.create_user(&ours).await.unwrap();
    stores.users.create_user(&theirs).await.unwrap();

    assert_eq!(
        stores.users.list_users(a).await.unwrap(),
        vec![ours.clone()]
    );
    assert_eq!(
        stores.users.list_users(b).await.unwrap(),
        vec![theirs.clone()]
    );
    assert!(
        !stores
            .users
            .set_user_role(a, theirs.id, Role::Admin)
            .await
            .unwrap(),
        "firm A changed the role of B's user"
    );
    assert!(
        !stores
            .users
            .set_user_disabled(a, theirs.id, Some(now()))
            .await
            .unwrap(),
        "firm A disabled B's user"
    );
    assert_eq!(
        stores.users.get_user(b, theirs.id).await.unwrap(),
        Some(theirs),
        "B's user is unchanged"
    );
    assert_eq!(stores.users.get_user(a, ours.id).await.unwrap(), Some(ours));
}

/// Sessions are found by token hash, touched forward only, and gone once deleted.
pub async fn sessions_are_touched_and_deleted(stores: Stores) {
    let firm = new_firm(&stores).await;
    let alice = user(firm, &format!("{}@firm.example", Uuid::new_v4().simple()));
    stores.users.create_user(&alice).await.unwrap();
    let start = now();
    let session = Session {
        token_hash: format!("{:064x}", Uuid::new_v4().as_u128()),
        user_id: alice.id,
        firm_id: firm,
        created_at: start,
        last_seen_at: start,
        expires_at: start + Duration::hours(12),
    };
    stores.sessions.create_session(&session).await.unwrap();
    assert_eq!(
        stores
            .sessions
            .get_session(&session.token_hash)
            .await
            .unwrap(),
        Some(session.clone())
    );
    let later = start + Duration::minutes(5);
    assert!(
        stores
            .sessions
            .touch_session(&session.token_hash, later)
            .await
            .unwrap()
    );
    assert!(
        stores
            .sessions
            .touch_session(&session.token_hash, start)
            .await
            .unwrap()
    );
    let touched = stores
        .sessions
        .get_session(&session.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        touched.last_seen_at, later,
        "a late touch moved last_seen_at backwards"
    );
    assert!(
        stores
            .sessions
            .delete_session(&session.token_hash)
            .await
            .unwrap()
    );
    assert_eq!(
        stores
            .sessions
            .get_session(&session.token_hash)
            .await
            .unwrap(),
        None
    );
    assert!(
        !stores
            .sessions
            .delete_session(&session.token_hash)
            .await
            .unwrap()
    );
    assert!(
        !stores
            .sessions
            .touch_session(&session.token_hash, later)
            .await
            .unwrap()
    );
}

/// Keys are found by the SHA-256 of the whole key, listed newest first per firm, and revoked once.
pub async fn api_keys_are_found_by_hash_listed_and_revoked(stores: Stores) {
    let firm = new_firm(&stores).await;
    let key = |label: &str, created_at| ApiKeyRecord {
        id: ApiKeyId::from_uuid(Uuid::now_v7()),
        firm_id: firm,
        label: label.to_owned(),
        scopes: vec!["customers:read".to_owned(), "customers:write".to_owned()],
        prefix: "kyc_live_1a2".to_owned(),
        last4: "9f3c".to_owned(),
        sha256: format!("{:064x}", Uuid::new_v4().as_u128()),
        expires_at: Some(now() + Duration::days(90)),
        revoked_at: None,
        created_at,
    };
    let old = key("old", now() - Duration::days(1));
    let new = key("new", now());
    stores.api_keys.create_api_key(&old).await.unwrap();
    stores.api_keys.create_api_key(&new).await.unwrap();
    assert_eq!(
        stores
            .api_keys
            .find_api_key_by_sha256(&new.sha256)
            .await
            .unwrap(),
        Some(new.clone())
    );
    assert_eq!(
        stores
            .api_keys
            .find_api_key_by_sha256(&"0".repeat(64))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        stores.api_keys.list_api_keys(firm).await.unwrap(),
        vec![new.clone(), old.clone()]
    );
    let at = now();
    assert!(
        stores
            .api_keys
            .revoke_api_key(firm, old.id, at)
            .await
            .unwrap()
    );
    assert!(
        !stores
            .api_keys
            .revoke_api_key(firm, old.id, at + Duration::hours(1))
            .await
            .unwrap()
    );
    let revoked = stores
        .api_keys
        .find_api_key_by_sha256(&old.sha256)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(at));
}

/// Endpoints round-trip and disable once; deliveries list newest first per endpoint.
pub async fn webhook_endpoints_and_deliveries_round_trip(stores: Stores) {
    let firm = new_firm(&stores).await;
    let endpoint = |url: &str| WebhookEndpoint {
        id: WebhookEndpointId::from_uuid(Uuid::now_v7()),
        firm_id: firm,
        url: url.to_owned(),
        description: Some("CRM".to_owned()),
        event_types: vec!["customer.kyc_status_changed".to_owned()],
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        previous_secret: None,
        previous_secret_expires_at: None,
        disabled_at: None,
        created_at: now(),
    };
    let first = endpoint("https://crm.example/one");
    let second = endpoint("https://crm.example/two");
    stores.webhooks.create_endpoint(&first).await.unwrap();
    stores.webhooks.create_endpoint(&second).await.unwrap();
    assert_eq!(
        stores.webhooks.list_endpoints(firm).await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    let at = now();
    assert!(
        stores
            .webhooks
            .disable_endpoint(firm, second.id, at)
            .await
            .unwrap()
    );
    assert!(
        !stores
            .webhooks
            .disable_endpoint(firm, second.id, at)
            .await
            .unwrap()
    );
    let disabled = stores
        .webhooks
        .get_endpoint(firm, second.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(disabled.disabled_at, Some(at));

    let delivery = |attempt, status| WebhookDelivery {
        endpoint_id: first.id,
        firm_id: firm,
        message_id: "msg_2Kx".to_owned(),
        event_type: "customer.kyc_status_changed".to_owned(),
        attempt,
        attempted_at: now(),
        response_status: status,
        error: status.is_none().then(|| "timed out".to_owned()),
        duration_ms: 30_000,
    };
    let tries = [
        delivery(1, None),
        delivery(2, Some(503)),
        delivery(3, Some(200)),
    ];
    for d in &tries {
        stores.webhooks.record_delivery(d).await.unwrap();
    }
    let listed = stores
        .webhooks
        .list_deliveries(firm, first.id, 2)
        .await
        .unwrap();
    assert_eq!(listed, vec![tries[2].clone(), tries[1].clone()]);
    assert!(
        stores
            .webhooks
            .list_deliveries(firm, second.id, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Workers leasing and finishing entries side by side, while new work is written: no lease
/// holds more entries than it asked for, no entry is handed to two workers, and every entry is
/// handed out. (A lease that picked its entries in a sub-select of `id IN (…)` could run the
/// locking pick again under concurrent updates and lease several times its limit.)
pub async fn concurrent_outbox_leases_never_exceed_their_limit_or_overlap(stores: Stores) {
    const LIMIT: u32 = 7;
    let firm = new_firm(&stores).await;
    for _ in 0..60 {
        insert_customer_with_work(&stores, firm).await;
    }
    let written = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stores, written) = (stores.clone(), written.clone());
        tokio::spawn(async move {
            for _ in 0..60 {
                insert_customer_with_work(&stores, firm).await;
            }
            written.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (stores, written) = (stores.clone(), written.clone());
        workers.push(tokio::spawn(async move {
            let mut leased = Vec::new();
            let mut empty_in_a_row = 0;
            // Until the writer is done and the outbox has stayed empty for a few leases.
            while empty_in_a_row < 3 || !written.load(std::sync::atomic::Ordering::SeqCst) {
                let at = now();
                let batch = stores
                    .outbox
                    .claim_batch(at, at + Duration::minutes(5), LIMIT)
                    .await
                    .unwrap();
                assert!(
                    batch.len() <= LIMIT as usize,
                    "a lease of {LIMIT} handed out {}",
                    batch.len()
                );
                if batch.is_empty() {
                    empty_in_a_row += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
                empty_in_a_row = 0;
                let ids: Vec<i64> = batch.iter().map(|entry| entry.id).collect();
                stores.outbox.mark_all_delivered(&ids, now()).await.unwrap();
                leased.extend(ids);
            }
            leased
        }));
    }
    writer.await.unwrap();
    let mut seen = HashSet::new();
    for worker in workers {
        for id in worker.await.unwrap() {
            assert!(seen.insert(id), "entry {id} was handed to two workers");
        }
    }
    assert_eq!(seen.len(), 120, "every entry is handed out once");
}

/// Two workers claiming at once get disjoint batches; a delivered entry never comes back; a
/// retried one comes back when due with one more attempt; a lease that ran out is handed out again.
pub async fn outbox_batches_are_disjoint_and_retries_come_back(stores: Stores) {
    let firm = new_firm(&stores).await;
    for _ in 0..10 {
        insert_customer_with_work(&stores, firm).await;
    }
    let start = now();
    let lease = start + Duration::minutes(1);
    let (left, right) = tokio::join!(
        stores.outbox.claim_batch(start, lease, 6),
        stores.outbox.claim_batch(start, lease, 6)
    );
    let (left, right) = (left.unwrap(), right.unwrap());
    let left_ids: HashSet<_> = left.iter().map(|e| e.id).collect();
    let right_ids: HashSet<_> = right.iter().map(|e| e.id).collect();
    assert!(
        left_ids.is_disjoint(&right_ids),
        "an entry was handed to two workers"
    );
    assert_eq!(left_ids.len() + right_ids.len(), 10);
    assert!(left.windows(2).all(|w| w[0].id < w[1].id));
    assert!(
        stores
            .outbox
            .claim_batch(start, lease, 100)
            .await
            .unwrap()
            .is_empty(),
        "leased entries were handed out again"
    );

    let mut all: Vec<_> = left.into_iter().chain(right).collect();
    all.sort_by_key(|e| e.id);
    let (retried, rest) = all.split_first().unwrap();
    let (expired_lease, delivered) = rest.split_first().unwrap();
    for entry in delivered {
        stores.outbox.mark_delivered(entry.id, start).await.unwrap();
    }
    stores
        .outbox
        .schedule_retry(
            retried.id,
            start + Duration::minutes(5),
            "503 from endpoint",
        )
        .await
        .unwrap();

    // Before the retry is due and before the lease ends: nothing.
    assert!(
        stores
            .outbox
            .claim_batch(start + Duration::seconds(30), lease, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // The lease ran out: the entry whose worker vanished comes back.
    let after_lease = start + Duration::minutes(2);
    let again = stores
        .outbox
        .claim_batch(after_lease, after_lease + Duration::minutes(1), 100)
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![expired_lease.id]
    );
    stores
        .outbox
        .mark_delivered(expired_lease.id, after_lease)
        .await
        .unwrap();
    // The retry is due: it comes back, counted.
    let due = start + Duration::minutes(6);
    let retry = stores
        .outbox
        .claim_batch(due, due + Duration::minutes(1), 100)
        .await
        .unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(
        (retry[0].id, retry[0].attempts, &retry[0].message),
        (retried.id, retried.attempts + 1, &retried.message)
    );
}
