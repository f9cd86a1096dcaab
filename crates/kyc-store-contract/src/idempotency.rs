//! Idempotency records: one claimant per key, replay of the stored response, expiry.

use kyc_domain::ids::FirmId;
use kyc_domain::ports::{ClaimOutcome, IdempotencyScope, StoredResponse};
use time::Duration;

use crate::{Stores, new_firm, now};

fn scope(firm: FirmId, key: &str) -> IdempotencyScope {
    IdempotencyScope {
        firm_id: firm,
        method: "POST".to_owned(),
        path: "/v1/customers".to_owned(),
        key: key.to_owned(),
    }
}

fn response() -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("location".to_owned(), "/v1/customers/1".to_owned()),
        ],
        body: br#"{"id":"1"}"#.to_vec(),
    }
}

/// 20 concurrent claims of one key: exactly one is `Claimed`, every other sees `InProgress`.
pub async fn one_of_many_concurrent_claims_wins_and_the_rest_see_in_progress(stores: Stores) {
    let firm = new_firm(&stores).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let stores = stores.clone();
            tokio::spawn(async move {
                stores
                    .idempotency
                    .claim(
                        &scope(firm, "race"),
                        "fp",
                        now(),
                        now() + Duration::hours(24),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut claimed = 0;
    for task in tasks {
        match task.await.unwrap() {
            ClaimOutcome::Claimed => claimed += 1,
            ClaimOutcome::InProgress => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(claimed, 1);
}

/// After `complete`, a claim with the same fingerprint gets the stored response back, byte for
/// byte; a claim with another fingerprint is refused, in progress or completed.
pub async fn completed_keys_replay_and_mismatched_bodies_are_refused(stores: Stores) {
    let firm = new_firm(&stores).await;
    let key = scope(firm, "replay");
    let expires = now() + Duration::hours(24);
    let store = &stores.idempotency;
    assert_eq!(
        store.claim(&key, "fp", now(), expires).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        store.claim(&key, "other", now(), expires).await.unwrap(),
        ClaimOutcome::FingerprintMismatch
    );
    assert!(store.complete(&key, &response()).await.unwrap());
    assert_eq!(
        store.claim(&key, "fp", now(), expires).await.unwrap(),
        ClaimOutcome::Completed(response())
    );
    assert_eq!(
        store.claim(&key, "other", now(), expires).await.unwrap(),
        ClaimOutcome::FingerprintMismatch
    );
    // Completing twice does not overwrite the first response.
    let mut second = response();
    second.status = 500;
    assert!(!store.complete(&key, &second).await.unwrap());
    assert_eq!(
        store.claim(&key, "fp", now(), expires).await.unwrap(),
        ClaimOutcome::Completed(response())
    );
    // Releasing a completed key leaves it alone.
    store.release(&key).await.unwrap();
    assert_eq!(
        store.claim(&key, "fp", now(), expires).await.unwrap(),
        ClaimOutcome::Completed(response())
    );
}

/// A released claim can be claimed again; an expired record counts as absent; `purge_expired`
/// deletes expired records and only those.
pub async fn released_and_expired_keys_can_be_claimed_again_and_purge_removes_only_expired(
    stores: Stores,
) {
    let firm = new_firm(&stores).await;
    let store = &stores.idempotency;
    let start = now();
    let day = Duration::hours(24);

    let released = scope(firm, "released");
    assert_eq!(
        store
            .claim(&released, "fp", start, start + day)
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    store.release(&released).await.unwrap();
    assert!(
        !store.complete(&released, &response()).await.unwrap(),
        "a released key is not claimed"
    );
    assert_eq!(
        store
            .claim(&released, "fp", start, start + day)
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );

    let expired = scope(firm, "expired");
    assert_eq!(
        store
            .claim(&expired, "fp", start, start + day)
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    assert!(store.complete(&expired, &response()).await.unwrap());
    let later = start + day + Duration::seconds(1);
    assert_eq!(
        store
            .claim(&expired, "new", later, later + day)
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );

    for n in 0..3 {
        let old = scope(firm, &format!("old-{n}"));
        store
            .claim(&old, "fp", start, start + Duration::minutes(1))
            .await
            .unwrap();
    }
    let purged = store
        .purge_expired(start + Duration::minutes(2))
        .await
        .unwrap();
    assert_eq!(purged, 3);
    assert_eq!(
        store
            .claim(&released, "fp", start, start + day)
            .await
            .unwrap(),
        ClaimOutcome::InProgress
    );
    assert_eq!(
        store
            .purge_expired(start + Duration::minutes(2))
            .await
            .unwrap(),
        0
    );
}
