//! The look-ups the lifecycle needs beyond one customer: the attempt behind a verification link,
//! the customers due for re-screening, and stuck attempts leased to one recovery worker at a time.

use std::collections::HashSet;

use kyc_domain::customer::Customer;
use kyc_domain::events::{Actor, OutboxMessage, outbox_for};
use kyc_domain::ids::{ApplicantId, AttemptNumber, CustomerId, FirmId};
use kyc_domain::ports::{AttemptLocation, LinkLocation, RECOVERY_LEASE};
use kyc_domain::risk::{ProviderLevels, RiskAnswers};
use kyc_domain::status::KycStatus;
use kyc_domain::values::Credits;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::{Stores, insert_customer, new_firm, now, staff, work_of};

/// Confirms risk and begins a verification on a stored customer, and saves it: the attempt is
/// `Starting`, claimed at `now()`.
async fn begin_attempt(stores: &Stores, customer: &mut Customer) -> AttemptNumber {
    let person = staff();
    let mut events = if customer.risk.confirmed.is_none() {
        let answers = RiskAnswers {
            is_designated_service: true,
            handles_cash_or_crypto: false,
            is_new_customer: true,
        };
        customer.confirm_risk(answers, &person, now()).unwrap()
    } else {
        Vec::new()
    };
    let (attempt, started) = customer
        .begin_verification(&person, Credits::new(1), &ProviderLevels::default(), now())
        .unwrap();
    events.extend(started);
    save(stores, customer, &events).await;
    attempt
}

/// Opens a starting attempt with a fresh applicant and the given link token hash, and saves it.
async fn open_attempt(
    stores: &Stores,
    customer: &mut Customer,
    attempt: AttemptNumber,
    token_hash: &str,
) {
    let applicant = ApplicantId::new(format!("{:024x}", Uuid::new_v4().as_u128() >> 32)).unwrap();
    let events = customer
        .complete_verification(
            attempt,
            applicant,
            token_hash.to_owned(),
            &Actor::system("test"),
            now(),
        )
        .unwrap();
    save(stores, customer, &events).await;
}

async fn save(
    stores: &Stores,
    customer: &mut Customer,
    events: &[kyc_domain::events::DomainEvent],
) {
    let version = stores
        .customers
        .save(customer, events, &[], None)
        .await
        .unwrap();
    customer.saved(version);
}

/// A token hash no other test shares.
fn token_hash() -> String {
    format!("{:064x}", Uuid::new_v4().as_u128())
}

fn at(customer: &Customer) -> AttemptLocation {
    AttemptLocation {
        firm_id: customer.firm_id,
        customer_id: customer.id,
    }
}

/// A link is found by its token hash, in any firm, and leads to the attempt it was issued for
/// (the second one after a voided first); a hash nobody issued finds nothing.
pub async fn a_verification_link_leads_to_the_attempt_it_was_issued_for(stores: Stores) {
    let (firm, other_firm) = (new_firm(&stores).await, new_firm(&stores).await);
    let mut customer = insert_customer(&stores, firm, None).await;
    let first = begin_attempt(&stores, &mut customer).await;
    let events = customer
        .abandon_verification(first, "provider refused", &Actor::system("test"), now())
        .unwrap();
    save(&stores, &mut customer, &events).await;
    let second = begin_attempt(&stores, &mut customer).await;
    assert_eq!(second, first.next());
    let hash = token_hash();
    assert_eq!(stores.customers.locate_link(&hash).await.unwrap(), None);
    open_attempt(&stores, &mut customer, second, &hash).await;

    let mut neighbour = insert_customer(&stores, other_firm, None).await;
    let attempt = begin_attempt(&stores, &mut neighbour).await;
    let neighbour_hash = token_hash();
    open_attempt(&stores, &mut neighbour, attempt, &neighbour_hash).await;

    assert_eq!(
        stores.customers.locate_link(&hash).await.unwrap(),
        Some(LinkLocation {
            firm_id: firm,
            customer_id: customer.id,
            attempt: second,
        })
    );
    assert_eq!(
        stores.customers.locate_link(&neighbour_hash).await.unwrap(),
        Some(LinkLocation {
            firm_id: other_firm,
            customer_id: neighbour.id,
            attempt: AttemptNumber::FIRST,
        })
    );
    // Later saves that leave the attempt alone keep the link where it is.
    crate::touch_customer(&stores, &mut customer, 42).await;
    assert_eq!(
        stores
            .customers
            .locate_link(&hash)
            .await
            .unwrap()
            .map(|l| l.attempt),
        Some(second)
    );
    assert_eq!(
        stores.customers.locate_link(&token_hash()).await.unwrap(),
        None
    );
}

/// Stores `customer` as if it had reached `status` with re-screening due at `due`. Storage does
/// not judge transitions, so the state is set directly rather than walked through every verdict.
async fn store_with_due(
    stores: &Stores,
    customer: Customer,
    status: KycStatus,
    due: Option<OffsetDateTime>,
) -> Customer {
    let mut state = customer.into_state();
    state.kyc_status = status;
    state.aml.next_screening_due = due;
    let mut customer = Customer::restore(state);
    save(stores, &mut customer, &[]).await;
    customer
}

/// A new customer of `firm` stored with `status` and re-screening due at `due`.
async fn make(
    stores: &Stores,
    firm: FirmId,
    status: KycStatus,
    due: Option<OffsetDateTime>,
) -> Customer {
    let customer = insert_customer(stores, firm, None).await;
    store_with_due(stores, customer, status, due).await
}

/// Only `VERIFIED` customers whose re-screening is due at or before `now` are listed, across
/// firms, most overdue first, at most `limit`; a save that moves the date or the status takes
/// the customer off the list.
pub async fn verified_customers_due_for_rescreening_are_listed_most_overdue_first(stores: Stores) {
    let (firm, other_firm) = (new_firm(&stores).await, new_firm(&stores).await);
    let t = now();
    let oldest = make(
        &stores,
        firm,
        KycStatus::Verified,
        Some(t - Duration::days(3)),
    )
    .await;
    let older = make(
        &stores,
        other_firm,
        KycStatus::Verified,
        Some(t - Duration::hours(1)),
    )
    .await;
    let exactly_now = make(&stores, firm, KycStatus::Verified, Some(t)).await;
    let _not_yet = make(
        &stores,
        firm,
        KycStatus::Verified,
        Some(t + Duration::seconds(1)),
    )
    .await;
    let _never_screened = make(&stores, firm, KycStatus::Verified, None).await;
    let _failed = make(
        &stores,
        firm,
        KycStatus::Failed,
        Some(t - Duration::days(9)),
    )
    .await;
    let _pending = make(
        &stores,
        other_firm,
        KycStatus::Pending,
        Some(t - Duration::days(9)),
    )
    .await;

    let due = stores.customers.due_for_rescreening(t, 10).await.unwrap();
    assert_eq!(due, vec![at(&oldest), at(&older), at(&exactly_now)]);
    let first = stores.customers.due_for_rescreening(t, 1).await.unwrap();
    assert_eq!(first, vec![at(&oldest)]);
    let earlier = stores
        .customers
        .due_for_rescreening(t - Duration::minutes(30), 10)
        .await
        .unwrap();
    assert_eq!(earlier, vec![at(&oldest), at(&older)]);

    // Screened again: due in a year. Turned RED: no longer verified.
    let rescreened = store_with_due(
        &stores,
        oldest,
        KycStatus::Verified,
        Some(t + Duration::days(365)),
    )
    .await;
    let _turned_red = store_with_due(
        &stores,
        older,
        KycStatus::Failed,
        Some(t - Duration::hours(1)),
    )
    .await;
    let due = stores.customers.due_for_rescreening(t, 10).await.unwrap();
    assert_eq!(due, vec![at(&exactly_now)]);
    let next_year = stores
        .customers
        .due_for_rescreening(t + Duration::days(366), 10)
        .await
        .unwrap();
    assert!(next_year.contains(&at(&rescreened)), "{next_year:?}");
}

/// Concurrent recovery workers get disjoint sets of stuck attempts that together cover them all;
/// a leased attempt comes back only once the lease has run out on the callers' clock, and never
/// once it has opened.
pub async fn concurrent_recovery_workers_lease_disjoint_sets_of_stuck_attempts(stores: Stores) {
    const STUCK: usize = 12;
    const WORKERS: usize = 4;
    let firm = new_firm(&stores).await;
    let mut customers = Vec::new();
    for _ in 0..STUCK {
        let mut customer = insert_customer(&stores, firm, None).await;
        let attempt = begin_attempt(&stores, &mut customer).await;
        customers.push((customer, attempt));
    }
    let all: HashSet<CustomerId> = customers.iter().map(|(c, _)| c.id).collect();
    let at = now() + Duration::seconds(1);

    for round in 0..3 {
        // Each round starts one lease later, when every earlier lease has run out.
        let at = at + RECOVERY_LEASE * round;
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let stores = stores.clone();
                tokio::spawn(async move {
                    stores
                        .customers
                        .stuck_attempts(at, Duration::ZERO, 4)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for worker in workers {
            for location in worker.await.unwrap() {
                assert_eq!(location.firm_id, firm);
                assert!(
                    seen.insert(location.customer_id),
                    "round {round}: {} was leased to two workers",
                    location.customer_id
                );
            }
        }
        assert_eq!(
            seen, all,
            "round {round}: the workers together took every stuck attempt"
        );
        // Within the lease nobody gets them again, however late in the lease.
        let again = stores
            .customers
            .stuck_attempts(
                at + RECOVERY_LEASE - Duration::seconds(1),
                Duration::ZERO,
                100,
            )
            .await
            .unwrap();
        assert!(
            again.is_empty(),
            "round {round}: leased attempts returned again: {again:?}"
        );
    }

    // An attempt that opened is no longer stuck, lease or not.
    let (opened, attempt) = &mut customers[0];
    open_attempt(&stores, opened, *attempt, &token_hash()).await;
    let later = at + RECOVERY_LEASE * 10;
    let stuck = stores
        .customers
        .stuck_attempts(later, Duration::ZERO, 100)
        .await
        .unwrap();
    let stuck: HashSet<CustomerId> = stuck.iter().map(|l| l.customer_id).collect();
    assert_eq!(stuck.len(), STUCK - 1);
    assert!(!stuck.contains(&customers[0].0.id));
}

/// The walk returns the oldest claims first and respects `limit`.
pub async fn stuck_attempts_come_oldest_claim_first(stores: Stores) {
    let firm = new_firm(&stores).await;
    let mut order = Vec::new();
    for _ in 0..3 {
        let mut customer = insert_customer(&stores, firm, None).await;
        begin_attempt(&stores, &mut customer).await;
        order.push(at(&customer));
        // Distinct claim times, whatever the clock's resolution.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let at = now() + Duration::seconds(1);
    let first_two = stores
        .customers
        .stuck_attempts(at, Duration::ZERO, 2)
        .await
        .unwrap();
    assert_eq!(first_two, order[..2]);
    let rest = stores
        .customers
        .stuck_attempts(at, Duration::ZERO, 2)
        .await
        .unwrap();
    assert_eq!(rest, order[2..]);
}

/// A customer of `firm`, not stored, as the lifecycle leaves one: its first attempt open with a
/// link whose token hashes to `token_hash`, `VERIFIED`, re-screening due at `due`. For tests that
/// write rows by hand, such as a migration's backfill.
pub fn verified_customer(firm: FirmId, token_hash: &str, due: OffsetDateTime) -> Customer {
    let email = format!("{}@example.com", Uuid::new_v4().simple());
    let (mut customer, _, _) = crate::new_customer(firm, None, &email);
    let person = staff();
    let answers = RiskAnswers {
        is_designated_service: true,
        handles_cash_or_crypto: false,
        is_new_customer: true,
    };
    customer.confirm_risk(answers, &person, now()).unwrap();
    let (attempt, _) = customer
        .begin_verification(&person, Credits::new(1), &ProviderLevels::default(), now())
        .unwrap();
    let applicant = ApplicantId::new(format!("{:024x}", Uuid::new_v4().as_u128() >> 32)).unwrap();
    customer
        .complete_verification(
            attempt,
            applicant,
            token_hash.to_owned(),
            &Actor::system("test"),
            now(),
        )
        .unwrap();
    let mut state = customer.into_state();
    state.kyc_status = KycStatus::Verified;
    state.aml.next_screening_due = Some(due);
    Customer::restore(state)
}

/// Outbox messages are stamped with the time of the move they come from, on the caller's clock:
/// a delivery worker reading the same clock as the use cases sees them due at once, even when
/// that clock is far from the database's (a test clock, a skewed replica).
pub async fn outbox_messages_fall_due_at_the_time_of_their_move(stores: Stores) {
    let firm = new_firm(&stores).await;
    let yesterday = now() - Duration::days(1);
    let (mut customer, events) = Customer::create(
        CustomerId::from_uuid(Uuid::now_v7()),
        firm,
        kyc_domain::customer::NewCustomer {
            external_id: None,
            full_name: kyc_domain::values::FullName::new("Jane Doe").unwrap(),
            email: kyc_domain::values::Email::new("jane@example.com").unwrap(),
            phone: None,
            customer_type: kyc_domain::values::CustomerType::Individual,
        },
        kyc_domain::values::AddedVia::Integration,
        &crate::crm(),
        yesterday,
    );
    let mut outbox = outbox_for(firm, customer.id, &events);
    outbox.push(screening(&customer));
    let version = stores
        .customers
        .insert(&customer, &events, &outbox)
        .await
        .unwrap();
    customer.saved(version);
    let lease = Duration::minutes(1);
    let due = stores
        .outbox
        .claim_batch(yesterday, yesterday + lease, 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
        work_of(&outbox)
    );
    assert!(due.iter().all(|entry| entry.created_at == yesterday));
    for entry in due {
        stores
            .outbox
            .mark_delivered(entry.id, yesterday)
            .await
            .unwrap();
    }

    // A move an hour ahead of this process's clock is not due before its own time.
    let later = now() + Duration::hours(1);
    let phone = kyc_domain::values::Phone::new("+442000000001").unwrap();
    let events = customer
        .update_contact(
            kyc_domain::customer::ContactUpdate {
                phone: Some(phone),
                ..Default::default()
            },
            &crate::crm(),
            later,
        )
        .unwrap();
    let mut outbox = outbox_for(firm, customer.id, &events);
    outbox.push(screening(&customer));
    stores
        .customers
        .save(&customer, &events, &outbox, None)
        .await
        .unwrap();
    let early = stores
        .outbox
        .claim_batch(now(), now() + lease, 10)
        .await
        .unwrap();
    assert!(early.is_empty(), "due before its move: {early:?}");
    let due = stores
        .outbox
        .claim_batch(later, later + lease, 10)
        .await
        .unwrap();
    assert_eq!(
        due.into_iter().map(|e| e.message).collect::<Vec<_>>(),
        work_of(&outbox)
    );
}

/// A screening job for the customer: work, which the outbox carries.
fn screening(customer: &Customer) -> OutboxMessage {
    OutboxMessage::RunScreening {
        firm_id: customer.firm_id,
        customer_id: customer.id,
    }
}

/// `customer`'s state as the first schema's rows held it: times were then written in `time`'s
/// array form, which the migration's backfill of `next_screening_due` (`due`) reads.
pub fn first_schema_state(customer: &Customer, due: OffsetDateTime) -> serde_json::Value {
    let mut state = serde_json::to_value(customer.state()).unwrap();
    state["aml"]["next_screening_due"] = serde_json::to_value(due).unwrap();
    assert!(state["aml"]["next_screening_due"].is_array());
    state
}

/// `customer`'s state in the form stored before `null` members and the ids were left out: every
/// member present, `id` and `firm_id` included.
pub fn legacy_state(customer: &Customer) -> serde_json::Value {
    let mut state = serde_json::to_value(customer.state()).unwrap();
    state["id"] = serde_json::to_value(customer.id).unwrap();
    state["firm_id"] = serde_json::to_value(customer.firm_id).unwrap();
    state
}
