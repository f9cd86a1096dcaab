//! The property test: random sequences of operations, with keys reused on purpose and earlier
//! steps replayed, run against a ledger and against a plain in-memory model of the rules. After
//! every step the ledger must agree with the model, satisfy
//! `available = granted − posted − held + refunded ≥ 0`, have entries that sum to zero, and a
//! replay must have changed nothing.

use std::collections::HashMap;

use kyc_domain::ids::{AttemptNumber, CustomerId, FirmId};
use kyc_domain::ports::{HoldKey, HoldState, IdempotencyKey, LedgerError, LedgerReceipt};
use kyc_domain::values::Credits;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use uuid::Uuid;

use super::Subject;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Grant(u64),
    Reserve(u8, u64),
    Post(u8),
    Void(u8),
    Refund(u8, u64),
}

#[derive(Debug, Clone)]
enum Step {
    /// The action under a key never used before.
    Fresh(Action),
    /// The action under one of a few shared keys, so keys collide across operations.
    Shared(Action, u8),
    /// An earlier step again, with its key: a client's retry.
    Replay(usize),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        2 => (1..8u64).prop_map(Action::Grant),
        4 => (0..5u8, 1..4u64).prop_map(|(hold, credits)| Action::Reserve(hold, credits)),
        2 => (0..5u8).prop_map(Action::Post),
        2 => (0..5u8).prop_map(Action::Void),
        1 => (0..5u8, 1..3u64).prop_map(|(hold, credits)| Action::Refund(hold, credits)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => action().prop_map(Step::Fresh),
        1 => (action(), 0..3u8).prop_map(|(action, key)| Step::Shared(action, key)),
        2 => any::<usize>().prop_map(Step::Replay),
    ]
}

#[derive(Debug, Clone, Copy)]
struct ModelHold {
    credits: u64,
    state: HoldState,
    refunded: u64,
}

/// What a key was first used for, and the receipt it answered (grants and refunds).
#[derive(Debug, Clone)]
struct ModelKey {
    action: Action,
    receipt: Option<LedgerReceipt>,
}

#[derive(Debug, Default)]
struct Model {
    granted: u64,
    holds: HashMap<u8, ModelHold>,
    keys: HashMap<String, ModelKey>,
}

/// What the model expects of one step.
#[derive(Debug)]
enum Expect {
    /// The key was used for this very action: the first answer again, and nothing moves.
    Replay(ModelKey),
    Mismatch,
    Refused(&'static str),
    Applied,
}

fn error_name(error: &LedgerError) -> &'static str {
    match error {
        LedgerError::InsufficientCredits { .. } => "insufficient",
        LedgerError::DailyCapExceeded { .. } => "cap",
        LedgerError::IdempotencyMismatch(_) => "mismatch",
        LedgerError::HoldNotFound(_) => "not_found",
        LedgerError::HoldAlreadyResolved { .. } => "already_resolved",
        LedgerError::RefundNotAllowed { .. } => "refund_not_allowed",
        LedgerError::InvalidAmount(_) => "invalid_amount",
        LedgerError::Infrastructure(_) => "infrastructure",
    }
}

impl Model {
    fn sum(&self, state: HoldState) -> u64 {
        self.holds
            .values()
            .filter(|hold| hold.state == state)
            .map(|hold| hold.credits)
            .sum()
    }

    fn refunded(&self) -> u64 {
        self.holds.values().map(|hold| hold.refunded).sum()
    }

    /// available = granted − posted − held + refunded
    fn available(&self) -> u64 {
        self.granted + self.refunded() - self.sum(HoldState::Posted) - self.sum(HoldState::Pending)
    }

    fn expect(&self, action: &Action, key: &str) -> Expect {
        if let Some(stored) = self.keys.get(key) {
            return if stored.action == *action {
                Expect::Replay(stored.clone())
            } else {
                Expect::Mismatch
            };
        }
        match *action {
            Action::Grant(_) => Expect::Applied,
            Action::Reserve(hold, credits) => match self.holds.get(&hold) {
                Some(existing) if existing.credits == credits => Expect::Applied,
                Some(_) => Expect::Mismatch,
                None if self.available() < credits => Expect::Refused("insufficient"),
                None => Expect::Applied,
            },
            Action::Post(hold) | Action::Void(hold) => {
                let to = if matches!(action, Action::Post(_)) {
                    HoldState::Posted
                } else {
                    HoldState::Voided
                };
                match self.holds.get(&hold) {
                    None => Expect::Refused("not_found"),
                    Some(existing) if existing.state == HoldState::Pending => Expect::Applied,
                    Some(existing) if existing.state == to => Expect::Applied,
                    Some(_) => Expect::Refused("already_resolved"),
                }
            }
            Action::Refund(hold, credits) => match self.holds.get(&hold) {
                None => Expect::Refused("not_found"),
                Some(existing)
                    if existing.state != HoldState::Posted
                        || existing.credits - existing.refunded < credits =>
                {
                    Expect::Refused("refund_not_allowed")
                }
                Some(_) => Expect::Applied,
            },
        }
    }

    fn apply(&mut self, action: &Action) {
        match *action {
            Action::Grant(credits) => self.granted += credits,
            Action::Reserve(hold, credits) => {
                self.holds.entry(hold).or_insert(ModelHold {
                    credits,
                    state: HoldState::Pending,
                    refunded: 0,
                });
            }
            Action::Post(hold) => {
                if let Some(existing) = self.holds.get_mut(&hold) {
                    existing.state = HoldState::Posted;
                }
            }
            Action::Void(hold) => {
                if let Some(existing) = self.holds.get_mut(&hold) {
                    existing.state = HoldState::Voided;
                }
            }
            Action::Refund(hold, credits) => {
                if let Some(existing) = self.holds.get_mut(&hold) {
                    existing.refunded += credits;
                }
            }
        }
    }
}

/// The outcome of one call, reduced to what the model can predict.
#[derive(Debug)]
enum Outcome {
    Receipt(LedgerReceipt),
    Hold { credits: u64, state: HoldState },
    Error(&'static str),
}

fn hold_key(customers: &[CustomerId], hold: u8) -> HoldKey {
    HoldKey {
        customer: customers[usize::from(hold)],
        attempt: AttemptNumber::FIRST,
    }
}

async fn call(
    subject: &Subject,
    firm: FirmId,
    customers: &[CustomerId],
    action: &Action,
    key: &str,
) -> Outcome {
    let key = IdempotencyKey::new(key).unwrap();
    let ledger = &subject.ledger;
    let hold_outcome = |result: Result<kyc_domain::ports::Hold, LedgerError>| match result {
        Ok(hold) => Outcome::Hold {
            credits: hold.credits.get(),
            state: hold.state,
        },
        Err(error) => Outcome::Error(error_name(&error)),
    };
    let receipt_outcome = |result: Result<LedgerReceipt, LedgerError>| match result {
        Ok(receipt) => Outcome::Receipt(receipt),
        Err(error) => Outcome::Error(error_name(&error)),
    };
    match *action {
        Action::Grant(credits) => receipt_outcome(
            ledger
                .grant(firm, Credits::new(credits), "top-up", &key)
                .await,
        ),
        Action::Reserve(hold, credits) => hold_outcome(
            ledger
                .reserve(firm, hold_key(customers, hold), Credits::new(credits), &key)
                .await,
        ),
        Action::Post(hold) => {
            hold_outcome(ledger.post(firm, hold_key(customers, hold), &key).await)
        }
        Action::Void(hold) => {
            hold_outcome(ledger.void(firm, hold_key(customers, hold), &key).await)
        }
        Action::Refund(hold, credits) => receipt_outcome(
            ledger
                .refund(
                    firm,
                    hold_key(customers, hold),
                    Credits::new(credits),
                    "goodwill",
                    &key,
                )
                .await,
        ),
    }
}

async fn run_case(subject: &Subject, steps: &[Step]) -> Result<(), TestCaseError> {
    let firm = FirmId::from_uuid(Uuid::new_v4());
    let customers: Vec<CustomerId> = (0..5)
        .map(|_| CustomerId::from_uuid(Uuid::new_v4()))
        .collect();
    let case = Uuid::new_v4();
    let mut model = Model::default();
    let mut executed: Vec<(Action, String)> = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        let (action, key) = match step {
            Step::Fresh(action) => (action.clone(), format!("{case}:{index}")),
            Step::Shared(action, key) => (action.clone(), format!("{case}:shared:{key}")),
            Step::Replay(pick) if !executed.is_empty() => executed[pick % executed.len()].clone(),
            Step::Replay(_) => continue,
        };
        let expect = model.expect(&action, &key);
        let before = subject.audit.audit(firm).await.unwrap();
        let outcome = call(subject, firm, &customers, &action, &key).await;
        let after = subject.audit.audit(firm).await.unwrap();
        match (&expect, &outcome) {
            (Expect::Replay(stored), Outcome::Receipt(receipt)) => {
                prop_assert_eq!(Some(receipt), stored.receipt.as_ref());
                prop_assert_eq!(&before, &after, "a replay changed the ledger");
            }
            (Expect::Replay(_), Outcome::Hold { credits, state }) => {
                let Some(hold) = model_hold(&model, &action) else {
                    return Err(TestCaseError::fail("replayed a hold that does not exist"));
                };
                prop_assert_eq!((*credits, *state), (hold.credits, hold.state));
                prop_assert_eq!(&before, &after, "a replay changed the ledger");
            }
            (Expect::Mismatch, Outcome::Error("mismatch")) => {
                prop_assert_eq!(&before, &after);
            }
            (Expect::Refused(name), Outcome::Error(actual)) if name == actual => {
                prop_assert_eq!(&before, &after);
            }
            (Expect::Applied, Outcome::Receipt(_) | Outcome::Hold { .. }) => {
                model.apply(&action);
                let receipt = match &outcome {
                    Outcome::Receipt(receipt) => Some(receipt.clone()),
                    _ => None,
                };
                if let Some(receipt) = &receipt {
                    prop_assert_eq!(receipt.balance.available.get(), model.available());
                }
                if let (Outcome::Hold { credits, state }, Some(hold)) =
                    (&outcome, model_hold(&model, &action))
                {
                    prop_assert_eq!((*credits, *state), (hold.credits, hold.state));
                    let stored = subject
                        .ledger
                        .hold(firm, hold_key(&customers, hold_of(&action)))
                        .await
                        .unwrap()
                        .unwrap();
                    prop_assert_eq!((stored.credits.get(), stored.state), (*credits, *state));
                }
                model.keys.insert(
                    key.clone(),
                    ModelKey {
                        action: action.clone(),
                        receipt,
                    },
                );
            }
            (expected, actual) => {
                return Err(TestCaseError::fail(format!(
                    "step {index} {action:?} under {key}: expected {expected:?}, got {actual:?}"
                )));
            }
        }
        executed.push((action, key));

        let balance = subject.ledger.balance(firm).await.unwrap();
        prop_assert_eq!(balance.available.get(), model.available());
        prop_assert_eq!(balance.held.get(), model.sum(HoldState::Pending));
        prop_assert_eq!(
            balance.spent.get(),
            model.sum(HoldState::Posted) - model.refunded()
        );
        prop_assert!(
            after.is_sound(),
            "unsound after step {}: {:?}",
            index,
            after
        );
        prop_assert_eq!(
            after.funding_from_entries,
            -i64::try_from(model.granted).unwrap()
        );
    }
    Ok(())
}

fn hold_of(action: &Action) -> u8 {
    match *action {
        Action::Reserve(hold, _)
        | Action::Post(hold)
        | Action::Void(hold)
        | Action::Refund(hold, _) => hold,
        Action::Grant(_) => 0,
    }
}

/// The hold as the model has it, for hold actions (none for grants and refunds).
fn model_hold(model: &Model, action: &Action) -> Option<ModelHold> {
    match action {
        Action::Reserve(..) | Action::Post(_) | Action::Void(_) => {
            model.holds.get(&hold_of(action)).copied()
        }
        Action::Grant(_) | Action::Refund(..) => None,
    }
}

/// Runs the property with `PROPTEST_CASES` cases (32 by default, so it takes seconds).
pub async fn run(subject: Subject) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(32);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&proptest::collection::vec(step(), 1..40), |steps| {
            handle.block_on(run_case(&subject, &steps))
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}
