//! The contract every credits ledger must pass, whatever its backend. Each test is an async
//! function over a [`Subject`]; `tests/postgres.rs` and `tests/sqlite.rs` run every one of them
//! on their backend through [`contract_tests!`].

#![allow(dead_code)]

pub mod model;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kyc_domain::ids::{AttemptNumber, CustomerId, FirmId};
use kyc_domain::ports::{
    Clock, CreditsLedger, EntryKind, HoldKey, HoldState, IdempotencyKey, LedgerError,
};
use kyc_domain::values::Credits;
use kyc_ledger::LedgerAudit;
use time::OffsetDateTime;
use uuid::Uuid;

/// A clock the tests move by hand.
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    /// A clock at noon UTC today, so a test never straddles midnight by accident.
    pub fn new() -> Self {
        let now = OffsetDateTime::now_utc().replace_time(time::macros::time!(12:00));
        Self(Mutex::new(now))
    }

    /// Moves the clock on.
    pub fn advance(&self, by: time::Duration) {
        let mut now = self.0.lock().unwrap();
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

/// One ledger under test: the port, its audit, and the clock it reads.
#[derive(Clone)]
pub struct Subject {
    pub ledger: Arc<dyn CreditsLedger>,
    pub audit: Arc<dyn LedgerAudit>,
    pub clock: Arc<ManualClock>,
}

/// Generates one `#[tokio::test]` per contract test, each on a fresh subject from `$setup`
/// (an async fn returning `Option<Env>` where `Env` has `subject()` and `teardown()`).
#[macro_export]
macro_rules! contract_tests {
    ($setup:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some(env) = $setup().await else { return };
                contract::$name(env.subject()).await;
                env.teardown().await;
            }
        )*
    };
}

pub fn firm() -> FirmId {
    FirmId::from_uuid(Uuid::new_v4())
}

pub fn hold(n: u32) -> HoldKey {
    HoldKey {
        customer: CustomerId::from_uuid(Uuid::new_v4()),
        attempt: AttemptNumber::new(n).unwrap(),
    }
}

pub fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::new(text).unwrap()
}

pub fn fresh_key() -> IdempotencyKey {
    key(&Uuid::new_v4().to_string())
}

pub async fn granted(subject: &Subject, credits: u64) -> FirmId {
    let firm = firm();
    subject
        .ledger
        .grant(firm, Credits::new(credits), "invoice 1", &fresh_key())
        .await
        .unwrap();
    firm
}

async fn assert_sound(subject: &Subject, firm: FirmId) -> kyc_ledger::AuditReport {
    let audit = subject.audit.audit(firm).await.unwrap();
    assert!(audit.is_sound(), "ledger not sound: {audit:?}");
    audit
}

fn available_held_spent(balance: kyc_domain::ports::Balance) -> (u64, u64, u64) {
    (
        balance.available.get(),
        balance.held.get(),
        balance.spent.get(),
    )
}

// ---------------------------------------------------------------------------------------------
// The operations

pub async fn a_grant_adds_available_credits_and_balances_the_entries(subject: Subject) {
    let firm = firm();
    let receipt = subject
        .ledger
        .grant(firm, Credits::new(25), "invoice 7", &key("grant-1"))
        .await
        .unwrap();
    assert_eq!(available_held_spent(receipt.balance), (25, 0, 0));
    let balance = subject.ledger.balance(firm).await.unwrap();
    assert_eq!(balance, receipt.balance);
    let audit = assert_sound(&subject, firm).await;
    assert_eq!(audit.funding_from_entries, -25);
    assert_eq!((audit.operations, audit.entries), (1, 2));
}

pub async fn a_firm_with_no_operations_has_a_zero_balance(subject: Subject) {
    let balance = subject.ledger.balance(firm()).await.unwrap();
    assert_eq!(available_held_spent(balance), (0, 0, 0));
}

pub async fn reserve_then_post_moves_credits_from_available_through_held_to_spent(
    subject: Subject,
) {
    let firm = granted(&subject, 10).await;
    let attempt = hold(1);
    let reserved = subject
        .ledger
        .reserve(firm, attempt, Credits::new(3), &key("reserve-1"))
        .await
        .unwrap();
    assert_eq!(reserved.state, HoldState::Pending);
    assert_eq!(reserved.credits, Credits::new(3));
    assert_eq!(
        available_held_spent(subject.ledger.balance(firm).await.unwrap()),
        (7, 3, 0)
    );
    assert_eq!(
        subject.ledger.hold(firm, attempt).await.unwrap(),
        Some(reserved.clone())
    );
    let posted = subject
        .ledger
        .post(firm, attempt, &key("post-1"))
        .await
        .unwrap();
    assert_eq!(posted.state, HoldState::Posted);
    assert_eq!(posted.created_at, reserved.created_at);
    assert_eq!(
        available_held_spent(subject.ledger.balance(firm).await.unwrap()),
        (7, 0, 3)
    );
    assert_sound(&subject, firm).await;
}

pub async fn void_releases_the_held_credits(subject: Subject) {
    let firm = granted(&subject, 10).await;
    let attempt = hold(1);
    subject
        .ledger
        .reserve(firm, attempt, Credits::new(4), &fresh_key())
        .await
        .unwrap();
    let voided = subject
        .ledger
        .void(firm, attempt, &fresh_key())
        .await
        .unwrap();
    assert_eq!(voided.state, HoldState::Voided);
    assert_eq!(
        available_held_spent(subject.ledger.balance(firm).await.unwrap()),
        (10, 0, 0)
    );
    assert_sound(&subject, firm).await;
}

pub async fn a_refund_gives_back_part_of_a_posted_charge_and_no_more(subject: Subject) {
    let firm = granted(&subject, 10).await;
    let attempt = hold(1);
    subject
        .ledger
        .reserve(firm, attempt, Credits::new(5), &fresh_key())
        .await
        .unwrap();
    subject
        .ledger
        .post(firm, attempt, &fresh_key())
        .await
        .unwrap();
    let receipt = subject
        .ledger
        .refund(
            firm,
            attempt,
            Credits::new(2),
            "duplicate check",
            &fresh_key(),
        )
        .await
        .unwrap();
    assert_eq!(available_held_spent(receipt.balance), (7, 0, 3));
    let too_much = subject
        .ledger
        .refund(firm, attempt, Credits::new(4), "again", &fresh_key())
        .await;
    match too_much {
        Err(LedgerError::RefundNotAllowed { refundable, .. }) => {
            assert_eq!(refundable, Credits::new(3));
        }
        other => panic!("expected RefundNotAllowed, got {other:?}"),
    }
    subject
        .ledger
        .refund(firm, attempt, Credits::new(3), "the rest", &fresh_key())
        .await
        .unwrap();
    assert_eq!(
        available_held_spent(subject.ledger.balance(firm).await.unwrap()),
        (10, 0, 0)
    );
    assert_sound(&subject, firm).await;
}

pub async fn a_refund_of_a_pending_or_unknown_hold_is_refused(subject: Subject) {
    let firm = granted(&subject, 10).await;
    let attempt = hold(1);
    subject
        .ledger
        .reserve(firm, attempt, Credits::new(5), &fresh_key())
        .await
        .unwrap();
    let pending = subject
        .ledger
        .refund(firm, attempt, Credits::new(1), "why", &fresh_key())
        .await;
    assert!(
        matches!(pending, Err(LedgerError::RefundNotAllowed { refundable, .. }) if refundable.is_zero()),
        "{pending:?}"
    );
    let unknown = subject
        .ledger
        .refund(firm, hold(1), Credits::new(1), "why", &fresh_key())
        .await;
    assert!(
        matches!(unknown, Err(LedgerError::HoldNotFound(_))),
        "{unknown:?}"
    );
}

pub async fn posting_or_voiding_an_unknown_hold_is_not_found(subject: Subject) {
    let firm = granted(&subject, 10).await;
    let post = subject.ledger.post(firm, hold(1), &fresh_key()).await;
    assert!(
        matches!(post, Err(LedgerError::HoldNotFound(_))),
        "{post:?}"
    );
    let void = subject.ledger.void(firm, hold(1), &fresh_key()).await;
    assert!(
        matches!(void, Err(LedgerError::HoldNotFound(_))),
        "{void:?}"
    );
    assert_eq!(subject.ledger.hold(firm, hold(1)).await.unwrap(), None);
}

pub async fn a_reserve_beyond_the_available_balance_is_refused_and_changes_nothing(
    subject: Subject,
) {
    let firm = granted(&subject, 2).await;
    let before = subject.audit.audit(firm).await.unwrap();
    let refused = subject
        .ledger
        .reserve(firm, hold(1), Credits::new(3), &fresh_key())
        .await;
    match refused {
        Err(LedgerError::InsufficientCredits {
            available,
            requested,
        }) => assert_eq!((available, requested), (Credits::new(2), Credits::new(3))),
        other => panic!("expected InsufficientCredits, got {other:?}"),
    }
    assert_eq!(subject.audit.audit(firm).await.unwrap(), before);
}

pub async fn zero_amounts_are_invalid(subject: Subject) {
    let firm = granted(&subject, 2).await;
    let grant = subject
        .ledger
        .grant(firm, Credits::ZERO, "nothing", &fresh_key())
        .await;
    assert!(
        matches!(grant, Err(LedgerError::InvalidAmount(_))),
        "{grant:?}"
    );
    let reserve = subject
        .ledger
        .reserve(firm, hold(1), Credits::ZERO, &fresh_key())
        .await;
    assert!(
        matches!(reserve, Err(LedgerError::InvalidAmount(_))),
        "{reserve:?}"
    );
    let huge = subject
        .ledger
        .grant(firm, Credits::new(u64::MAX), "too much", &fresh_key())
        .await;
    assert!(
        matches!(huge, Err(LedgerError::InvalidAmount(_))),
        "{huge:?}"
    );
}

pub async fn firms_never_see_each_others_credits_or_holds(subject: Subject) {
    let rich = granted(&subject, 50).await;
    let poor = firm();
    let attempt = hold(1);
    subject
        .ledger
        .reserve(rich, attempt, Credits::new(5), &key("same-key"))
        .await
        .unwrap();
    assert_eq!(
        available_held_spent(subject.ledger.balance(poor).await.unwrap()),
        (0, 0, 0)
    );
    assert_eq!(subject.ledger.hold(poor, attempt).await.unwrap(), None);
    // The same key in another firm is another operation.
    let refused = subject
        .ledger
        .reserve(poor, attempt, Credits::new(5), &key("same-key"))
        .await;
    assert!(
        matches!(refused, Err(LedgerError::InsufficientCredits { .. })),
        "{refused:?}"
    );
    let post = subject.ledger.post(poor, attempt, &fresh_key()).await;
    assert!(
        matches!(post, Err(LedgerError::HoldNotFound(_))),
        "{post:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Idempotency and resolve-once

pub async fn repeating_any_operation_with_its_key_returns_the_first_result_and_changes_nothing(
    subject: Subject,
) {
    let firm = firm();
    let first_grant = subject
        .ledger
        .grant(firm, Credits::new(10), "invoice", &key("g"))
        .await
        .unwrap();
    let attempt = hold(1);
    let reserved = subject
        .ledger
        .reserve(firm, attempt, Credits::new(4), &key("r"))
        .await
        .unwrap();
    let posted = subject.ledger.post(firm, attempt, &key("p")).await.unwrap();
    let first_refund = subject
        .ledger
        .refund(firm, attempt, Credits::new(1), "goodwill", &key("f"))
        .await
        .unwrap();
    let other = hold(1);
    subject
        .ledger
        .reserve(firm, other, Credits::new(2), &key("r2"))
        .await
        .unwrap();
    let voided = subject.ledger.void(firm, other, &key("v")).await.unwrap();
    let before = subject.audit.audit(firm).await.unwrap();
    let balance = subject.ledger.balance(firm).await.unwrap();

    for _ in 0..2 {
        let grant = subject
            .ledger
            .grant(firm, Credits::new(10), "invoice", &key("g"))
            .await
            .unwrap();
        assert_eq!(grant, first_grant);
        let again = subject
            .ledger
            .reserve(firm, attempt, Credits::new(4), &key("r"))
            .await
            .unwrap();
        // A reserve answers with the hold as it is now: the same hold, since posted.
        assert_eq!((again.key, again.credits), (reserved.key, reserved.credits));
        assert_eq!(again.state, HoldState::Posted);
        assert_eq!(
            subject.ledger.post(firm, attempt, &key("p")).await.unwrap(),
            posted
        );
        let refund = subject
            .ledger
            .refund(firm, attempt, Credits::new(1), "goodwill", &key("f"))
            .await
            .unwrap();
        assert_eq!(refund, first_refund);
        assert_eq!(
            subject.ledger.void(firm, other, &key("v")).await.unwrap(),
            voided
        );
    }
    assert_eq!(subject.audit.audit(firm).await.unwrap(), before);
    assert_eq!(subject.ledger.balance(firm).await.unwrap(), balance);
}

pub async fn reusing_a_key_with_other_parameters_is_a_mismatch_and_changes_nothing(
    subject: Subject,
) {
    let firm = firm();
    subject
        .ledger
        .grant(firm, Credits::new(10), "invoice", &key("g"))
        .await
        .unwrap();
    let attempt = hold(1);
    subject
        .ledger
        .reserve(firm, attempt, Credits::new(4), &key("r"))
        .await
        .unwrap();
    let before = subject.audit.audit(firm).await.unwrap();

    let outcomes = [
        subject
            .ledger
            .grant(firm, Credits::new(11), "invoice", &key("g"))
            .await
            .err(),
        subject
            .ledger
            .grant(firm, Credits::new(10), "another invoice", &key("g"))
            .await
            .err(),
        subject
            .ledger
            .reserve(firm, attempt, Credits::new(5), &key("r"))
            .await
            .err(),
        subject
            .ledger
            .reserve(firm, hold(1), Credits::new(4), &key("r"))
            .await
            .err(),
        subject.ledger.post(firm, attempt, &key("r")).await.err(),
        subject.ledger.void(firm, attempt, &key("g")).await.err(),
        subject
            .ledger
            .refund(firm, attempt, Credits::new(1), "x", &key("g"))
            .await
            .err(),
        // The hold is the attempt's identity: another amount for it under a new key is refused too.
        subject
            .ledger
            .reserve(firm, attempt, Credits::new(9), &key("r-other"))
            .await
            .err(),
    ];
    for (index, outcome) in outcomes.into_iter().enumerate() {
        assert!(
            matches!(outcome, Some(LedgerError::IdempotencyMismatch(_))),
            "case {index}: {outcome:?}"
        );
    }
    assert_eq!(subject.audit.audit(firm).await.unwrap(), before);
    assert_eq!(
        subject
            .ledger
            .hold(firm, attempt)
            .await
            .unwrap()
            .unwrap()
            .state,
        HoldState::Pending
    );
}

pub async fn reserving_an_attempt_again_under_a_new_key_returns_the_same_hold(subject: Subject) {
    let firm = granted(&subject, 10).await;
    let attempt = hold(1);
    let first = subject
        .ledger
        .reserve(firm, attempt, Credits::new(3), &fresh_key())
        .await
        .unwrap();
    let before = subject.audit.audit(firm).await.unwrap();
    let second = subject
        .ledger
        .reserve(firm, attempt, Credits::new(3), &fresh_key())
        .await
        .unwrap();
    assert_eq!(second, first);
    assert_eq!(subject.audit.audit(firm).await.unwrap(), before);
}

pub async fn a_hold_resolves_once_same_outcome_is_a_no_op_the_other_is_refused(subject: Subject) {
    let firm = granted(&subject, 10).await;
    let posted_hold = hold(1);
    let voided_hold = hold(1);
    for attempt in [posted_hold, voided_hold] {
        subject
            .ledger
            .reserve(firm, attempt, Credits::new(2), &fresh_key())
            .await
            .unwrap();
    }
    let posted = subject
        .ledger
        .post(firm, posted_hold, &fresh_key())
        .await
        .unwrap();
    let voided = subject
        .ledger
        .void(firm, voided_hold, &fresh_key())
        .await
        .unwrap();
    let before = subject.audit.audit(firm).await.unwrap();

    assert_eq!(
        subject
            .ledger
            .post(firm, posted_hold, &fresh_key())
            .await
            .unwrap(),
        posted
    );
    assert_eq!(
        subject
            .ledger
            .void(firm, voided_hold, &fresh_key())
            .await
            .unwrap(),
        voided
    );
    let void_posted = subject.ledger.void(firm, posted_hold, &fresh_key()).await;
    assert!(
        matches!(
            void_posted,
            Err(LedgerError::HoldAlreadyResolved {
                state: HoldState::Posted,
                ..
            })
        ),
        "{void_posted:?}"
    );
    let post_voided = subject.ledger.post(firm, voided_hold, &fresh_key()).await;
    assert!(
        matches!(
            post_voided,
            Err(LedgerError::HoldAlreadyResolved {
                state: HoldState::Voided,
                ..
            })
        ),
        "{post_voided:?}"
    );
    assert_eq!(subject.audit.audit(firm).await.unwrap(), before);
}

pub async fn a_refused_operation_does_not_burn_its_key(subject: Subject) {
    let firm = firm();
    let attempt = hold(1);
    let refused = subject
        .ledger
        .reserve(firm, attempt, Credits::new(3), &key("retry-me"))
        .await;
    assert!(matches!(
        refused,
        Err(LedgerError::InsufficientCredits { .. })
    ));
    subject
        .ledger
        .grant(firm, Credits::new(3), "top-up", &fresh_key())
        .await
        .unwrap();
    let reserved = subject
        .ledger
        .reserve(firm, attempt, Credits::new(3), &key("retry-me"))
        .await
        .unwrap();
    assert_eq!(reserved.state, HoldState::Pending);
}

// ---------------------------------------------------------------------------------------------
// Daily cap

pub async fn the_daily_cap_refuses_a_reserve_past_it_and_voided_holds_do_not_count(
    subject: Subject,
) {
    let firm = granted(&subject, 100).await;
    subject
        .ledger
        .set_daily_cap(firm, Some(Credits::new(5)))
        .await
        .unwrap();
    let first = hold(1);
    subject
        .ledger
        .reserve(firm, first, Credits::new(3), &fresh_key())
        .await
        .unwrap();
    subject
        .ledger
        .post(firm, first, &fresh_key())
        .await
        .unwrap();
    let second = hold(1);
    subject
        .ledger
        .reserve(firm, second, Credits::new(2), &fresh_key())
        .await
        .unwrap();
    let refused = subject
        .ledger
        .reserve(firm, hold(1), Credits::new(1), &fresh_key())
        .await;
    match refused {
        Err(LedgerError::DailyCapExceeded {
            cap,
            used_today,
            requested,
        }) => assert_eq!(
            (cap, used_today, requested),
            (Credits::new(5), Credits::new(5), Credits::new(1))
        ),
        other => panic!("expected DailyCapExceeded, got {other:?}"),
    }
    subject
        .ledger
        .void(firm, second, &fresh_key())
        .await
        .unwrap();
    subject
        .ledger
        .reserve(firm, hold(1), Credits::new(2), &fresh_key())
        .await
        .unwrap();
    // Clearing the cap lifts the limit.
    subject.ledger.set_daily_cap(firm, None).await.unwrap();
    subject
        .ledger
        .reserve(firm, hold(1), Credits::new(10), &fresh_key())
        .await
        .unwrap();
}

pub async fn the_daily_cap_starts_again_at_the_next_utc_day(subject: Subject) {
    let firm = granted(&subject, 100).await;
    subject
        .ledger
        .set_daily_cap(firm, Some(Credits::new(2)))
        .await
        .unwrap();
    subject
        .ledger
        .reserve(firm, hold(1), Credits::new(2), &fresh_key())
        .await
        .unwrap();
    let refused = subject
        .ledger
        .reserve(firm, hold(1), Credits::new(1), &fresh_key())
        .await;
    assert!(matches!(refused, Err(LedgerError::DailyCapExceeded { .. })));
    subject.clock.advance(time::Duration::hours(12));
    subject
        .ledger
        .reserve(firm, hold(1), Credits::new(2), &fresh_key())
        .await
        .unwrap();
}

pub async fn the_daily_cap_holds_under_concurrent_reserves(subject: Subject) {
    let firm = granted(&subject, 100).await;
    subject
        .ledger
        .set_daily_cap(firm, Some(Credits::new(7)))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let ledger = Arc::clone(&subject.ledger);
            tokio::spawn(async move {
                ledger
                    .reserve(firm, hold(1), Credits::new(1), &fresh_key())
                    .await
            })
        })
        .collect();
    let mut succeeded = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => succeeded += 1,
            Err(LedgerError::DailyCapExceeded { .. }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(succeeded, 7);
    assert_eq!(
        available_held_spent(subject.ledger.balance(firm).await.unwrap()),
        (93, 7, 0)
    );
    assert_sound(&subject, firm).await;
}

// ---------------------------------------------------------------------------------------------
// Concurrency

pub async fn a_hundred_concurrent_reserves_against_ten_credits_let_exactly_ten_through(
    subject: Subject,
) {
    let firm = granted(&subject, 10).await;
    let done = Arc::new(AtomicBool::new(false));
    // Watches the balance while the reserves race: credits are only ever moved, never made or
    // lost, and the ledger stays sound at every observed point.
    let watcher = {
        let subject = subject.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut observations = 0;
            while !done.load(Ordering::SeqCst) || observations == 0 {
                let balance = subject.ledger.balance(firm).await.unwrap();
                assert_eq!(balance.available.get() + balance.held.get(), 10);
                let audit = subject.audit.audit(firm).await.unwrap();
                assert!(audit.is_sound(), "unsound mid-race: {audit:?}");
                observations += 1;
                tokio::task::yield_now().await;
            }
            observations
        })
    };
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let ledger = Arc::clone(&subject.ledger);
            tokio::spawn(async move {
                ledger
                    .reserve(firm, hold(1), Credits::new(1), &fresh_key())
                    .await
            })
        })
        .collect();
    let mut succeeded = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => succeeded += 1,
            Err(LedgerError::InsufficientCredits { .. }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    done.store(true, Ordering::SeqCst);
    assert!(watcher.await.unwrap() > 0);
    assert_eq!(succeeded, 10);
    assert_eq!(
        available_held_spent(subject.ledger.balance(firm).await.unwrap()),
        (0, 10, 0)
    );
    let audit = assert_sound(&subject, firm).await;
    assert_eq!(audit.operations, 11);
}

pub async fn concurrent_post_and_void_of_one_hold_let_exactly_one_win(subject: Subject) {
    const HOLDS: u64 = 12;
    let firm = granted(&subject, HOLDS).await;
    let mut holds = Vec::new();
    for _ in 0..HOLDS {
        let attempt = hold(1);
        subject
            .ledger
            .reserve(firm, attempt, Credits::new(1), &fresh_key())
            .await
            .unwrap();
        holds.push(attempt);
    }
    let mut posted = 0;
    let mut voided = 0;
    for attempt in holds {
        let post = {
            let ledger = Arc::clone(&subject.ledger);
            tokio::spawn(async move { ledger.post(firm, attempt, &fresh_key()).await })
        };
        let void = {
            let ledger = Arc::clone(&subject.ledger);
            tokio::spawn(async move { ledger.void(firm, attempt, &fresh_key()).await })
        };
        let (post, void) = (post.await.unwrap(), void.await.unwrap());
        match (post, void) {
            (Ok(hold), Err(LedgerError::HoldAlreadyResolved { state, .. })) => {
                assert_eq!((hold.state, state), (HoldState::Posted, HoldState::Posted));
                posted += 1;
            }
            (Err(LedgerError::HoldAlreadyResolved { state, .. }), Ok(hold)) => {
                assert_eq!((hold.state, state), (HoldState::Voided, HoldState::Voided));
                voided += 1;
            }
            other => panic!("expected exactly one winner, got {other:?}"),
        }
        let stored = subject.ledger.hold(firm, attempt).await.unwrap().unwrap();
        assert_ne!(stored.state, HoldState::Pending);
    }
    assert_eq!(posted + voided, HOLDS);
    assert_eq!(
        available_held_spent(subject.ledger.balance(firm).await.unwrap()),
        (voided, 0, posted)
    );
    let audit = assert_sound(&subject, firm).await;
    // One grant, the reserves, and exactly one resolution per hold.
    assert_eq!(audit.operations, i64::try_from(1 + 2 * HOLDS).unwrap());
}

pub async fn concurrent_retries_of_one_reserve_make_one_hold(subject: Subject) {
    let firm = granted(&subject, 10).await;
    let attempt = hold(1);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let ledger = Arc::clone(&subject.ledger);
            tokio::spawn(async move {
                ledger
                    .reserve(firm, attempt, Credits::new(2), &key("start:once"))
                    .await
            })
        })
        .collect();
    for task in tasks {
        let hold = task.await.unwrap().unwrap();
        assert_eq!(hold.credits, Credits::new(2));
    }
    assert_eq!(
        available_held_spent(subject.ledger.balance(firm).await.unwrap()),
        (8, 2, 0)
    );
    assert_eq!(assert_sound(&subject, firm).await.operations, 2);
}

// ---------------------------------------------------------------------------------------------
// Statement and recovery

pub async fn the_statement_pages_newest_first_and_links_holds_to_customer_and_attempt(
    subject: Subject,
) {
    let firm = firm();
    subject
        .ledger
        .grant(firm, Credits::new(20), "invoice 42", &fresh_key())
        .await
        .unwrap();
    let attempt = hold(2);
    subject
        .ledger
        .reserve(firm, attempt, Credits::new(3), &fresh_key())
        .await
        .unwrap();
    subject
        .ledger
        .post(firm, attempt, &fresh_key())
        .await
        .unwrap();
    subject
        .ledger
        .refund(
            firm,
            attempt,
            Credits::new(1),
            "provider outage",
            &fresh_key(),
        )
        .await
        .unwrap();
    let other = hold(1);
    subject
        .ledger
        .reserve(firm, other, Credits::new(2), &fresh_key())
        .await
        .unwrap();
    subject
        .ledger
        .void(firm, other, &fresh_key())
        .await
        .unwrap();

    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = subject
            .ledger
            .statement(firm, cursor.as_deref(), 4)
            .await
            .unwrap();
        assert!(page.entries.len() <= 4);
        entries.extend(page.entries);
        pages += 1;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    let kinds: Vec<EntryKind> = entries.iter().map(|entry| entry.kind).collect();
    assert_eq!(
        kinds,
        [
            EntryKind::Void,
            EntryKind::Reserve,
            EntryKind::Refund,
            EntryKind::Post,
            EntryKind::Reserve,
            EntryKind::Grant
        ]
    );
    let deltas: Vec<i64> = entries.iter().map(|entry| entry.available_delta).collect();
    assert_eq!(deltas, [2, -2, 1, 0, -3, 20]);
    assert_eq!(
        (entries[5].customer, entries[5].reference.as_deref()),
        (None, Some("invoice 42"))
    );
    for entry in &entries[2..5] {
        assert_eq!(entry.customer, Some(attempt.customer));
        assert_eq!(entry.attempt, Some(attempt.attempt));
    }
    assert_eq!(entries[2].reference.as_deref(), Some("provider outage"));
    assert_eq!(entries[0].customer, Some(other.customer));
    let mut ids: Vec<&str> = entries.iter().map(|entry| entry.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6);
    // An unreadable cursor starts again from the newest entry.
    let fresh = subject
        .ledger
        .statement(firm, Some("garbage"), 1)
        .await
        .unwrap();
    assert_eq!(fresh.entries[0].kind, EntryKind::Void);
    // Another firm's statement is empty.
    let empty = subject
        .ledger
        .statement(self::firm(), None, 10)
        .await
        .unwrap();
    assert!(empty.entries.is_empty() && empty.next_cursor.is_none());
}

pub async fn pending_holds_lists_only_pending_holds_older_than_the_cutoff(subject: Subject) {
    let firm_a = granted(&subject, 10).await;
    let firm_b = granted(&subject, 10).await;
    let old_a = hold(1);
    let old_b = hold(1);
    let resolved = hold(1);
    subject
        .ledger
        .reserve(firm_a, old_a, Credits::new(1), &fresh_key())
        .await
        .unwrap();
    subject
        .ledger
        .reserve(firm_b, old_b, Credits::new(1), &fresh_key())
        .await
        .unwrap();
    subject
        .ledger
        .reserve(firm_a, resolved, Credits::new(1), &fresh_key())
        .await
        .unwrap();
    subject
        .ledger
        .post(firm_a, resolved, &fresh_key())
        .await
        .unwrap();
    subject.clock.advance(time::Duration::minutes(10));
    let cutoff = subject.clock.now();
    subject.clock.advance(time::Duration::minutes(1));
    let recent = hold(1);
    subject
        .ledger
        .reserve(firm_a, recent, Credits::new(1), &fresh_key())
        .await
        .unwrap();

    let pending = subject.ledger.pending_holds(cutoff, 100).await.unwrap();
    let mut keys: Vec<HoldKey> = pending.iter().map(|hold| hold.key).collect();
    keys.sort();
    let mut expected = vec![old_a, old_b];
    expected.sort();
    assert_eq!(keys, expected);
    assert!(pending.iter().all(|hold| hold.state == HoldState::Pending));
    assert_eq!(
        subject.ledger.pending_holds(cutoff, 1).await.unwrap().len(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// The property

pub async fn random_operation_sequences_with_retries_keep_the_ledger_sound(subject: Subject) {
    model::run(subject).await;
}
