//! The ledger contract on SQLite, each test on its own database file, plus the checks that only
//! make sense with SQL in hand (immutability of the history, migrations beside other crates').

#[macro_use]
mod contract;

use std::path::PathBuf;
use std::sync::Arc;

use contract::{ManualClock, Subject};
use kyc_domain::ports::{CreditsLedger, HoldKey, IdempotencyKey};
use kyc_domain::values::Credits;
use kyc_ledger::{SqliteLedger, migrate_sqlite, sqlite_options};
use sqlx::SqlitePool;
use sqlx::sqlite::SqlitePoolOptions;

struct Env {
    ledger: SqliteLedger,
    clock: Arc<ManualClock>,
    path: PathBuf,
}

impl Env {
    fn subject(&self) -> Subject {
        Subject {
            ledger: Arc::new(self.ledger.clone()),
            audit: Arc::new(self.ledger.clone()),
            clock: Arc::clone(&self.clock),
        }
    }

    async fn teardown(self) {
        self.ledger.pool().close().await;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

async fn pool_at(path: &std::path::Path) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(sqlite_options(path))
        .await
        .unwrap()
}

async fn setup() -> Option<Env> {
    let path = std::env::temp_dir().join(format!("kyc-ledger-{}.db", uuid::Uuid::new_v4()));
    let pool = pool_at(&path).await;
    migrate_sqlite(&pool).await.unwrap();
    let clock = Arc::new(ManualClock::new());
    let ledger = SqliteLedger::new(pool).with_clock(clock.clone());
    Some(Env {
        ledger,
        clock,
        path,
    })
}

contract_tests!(setup;
    a_grant_adds_available_credits_and_balances_the_entries,
    a_firm_with_no_operations_has_a_zero_balance,
    reserve_then_post_moves_credits_from_available_through_held_to_spent,
    void_releases_the_held_credits,
    a_refund_gives_back_part_of_a_posted_charge_and_no_more,
    a_refund_of_a_pending_or_unknown_hold_is_refused,
    posting_or_voiding_an_unknown_hold_is_not_found,
    a_reserve_beyond_the_available_balance_is_refused_and_changes_nothing,
    zero_amounts_are_invalid,
    firms_never_see_each_others_credits_or_holds,
    repeating_any_operation_with_its_key_returns_the_first_result_and_changes_nothing,
    reusing_a_key_with_other_parameters_is_a_mismatch_and_changes_nothing,
    reserving_an_attempt_again_under_a_new_key_returns_the_same_hold,
    a_hold_resolves_once_same_outcome_is_a_no_op_the_other_is_refused,
    a_refused_operation_does_not_burn_its_key,
    the_daily_cap_refuses_a_reserve_past_it_and_voided_holds_do_not_count,
    the_daily_cap_starts_again_at_the_next_utc_day,
    the_daily_cap_holds_under_concurrent_reserves,
    a_hundred_concurrent_reserves_against_ten_credits_let_exactly_ten_through,
    concurrent_post_and_void_of_one_hold_let_exactly_one_win,
    concurrent_retries_of_one_reserve_make_one_hold,
    the_statement_pages_newest_first_and_links_holds_to_customer_and_attempt,
    pending_holds_lists_only_pending_holds_older_than_the_cutoff,
    random_operation_sequences_with_retries_keep_the_ledger_sound,
);

#[tokio::test]
async fn entries_operations_and_resolved_holds_cannot_be_rewritten() {
    let env = setup().await.unwrap();
    let firm = contract::granted(&env.subject(), 5).await;
    let hold = HoldKey {
        customer: kyc_domain::ids::CustomerId::from_uuid(uuid::Uuid::new_v4()),
        attempt: kyc_domain::ids::AttemptNumber::FIRST,
    };
    let ledger = &env.ledger;
    ledger
        .reserve(
            firm,
            hold,
            Credits::new(1),
            &IdempotencyKey::new("r").unwrap(),
        )
        .await
        .unwrap();
    ledger
        .post(firm, hold, &IdempotencyKey::new("p").unwrap())
        .await
        .unwrap();
    for statement in [
        "UPDATE ledger_entries SET amount_credits = amount_credits * 2",
        "DELETE FROM ledger_entries",
        "UPDATE ledger_operations SET credits = 1000",
        "DELETE FROM ledger_operations",
        "UPDATE ledger_holds SET state = 'voided'",
        "DELETE FROM ledger_holds",
    ] {
        let refused = sqlx::query(statement).execute(ledger.pool()).await;
        assert!(refused.is_err(), "{statement} was allowed");
    }
    env.teardown().await;
}

#[tokio::test]
async fn migrating_twice_beside_another_crates_migrations_succeeds() {
    let env = setup().await.unwrap();
    // A migration this crate does not know, as the storage crate would leave in the shared table.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (1, 'storage', TRUE, X'00', 0)",
    )
    .execute(env.ledger.pool())
    .await
    .unwrap();
    migrate_sqlite(env.ledger.pool()).await.unwrap();
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_on_one_file_serialise_reserves_like_two_processes() {
    let env = setup().await.unwrap();
    let second = SqliteLedger::new(pool_at(&env.path).await);
    let firm = contract::granted(&env.subject(), 10).await;
    let ledgers: [Arc<dyn CreditsLedger>; 2] = [Arc::new(env.ledger.clone()), Arc::new(second)];
    let tasks: Vec<_> = (0..40)
        .map(|index| {
            let ledger = Arc::clone(&ledgers[index % 2]);
            tokio::spawn(async move {
                let hold = HoldKey {
                    customer: kyc_domain::ids::CustomerId::from_uuid(uuid::Uuid::new_v4()),
                    attempt: kyc_domain::ids::AttemptNumber::FIRST,
                };
                ledger
                    .reserve(firm, hold, Credits::new(1), &contract::fresh_key())
                    .await
            })
        })
        .collect();
    let mut succeeded = 0;
    for task in tasks {
        if task.await.unwrap().is_ok() {
            succeeded += 1;
        }
    }
    assert_eq!(succeeded, 10);
    let audit = kyc_ledger::LedgerAudit::audit(&env.ledger, firm)
        .await
        .unwrap();
    assert!(audit.is_sound(), "{audit:?}");
    assert_eq!(audit.cached_available, 0);
    env.teardown().await;
}

/// A ledger handed a writer's turn writes only in that turn: while another writer of the file
/// (the storage adapter, in the server) holds it, the ledger's grant and cap change wait, and
/// both go through once it is passed on. Reads never wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_writer_turn_orders_the_ledgers_writes_with_the_other_writers() {
    let env = setup().await.unwrap();
    let turn = kyc_store_support::turn::WriterTurn::new();
    let ledger = env.ledger.clone().with_writer_turn(turn.clone());
    assert!(ledger.writer_turn().is_shared_with(&turn));
    let firm = kyc_domain::ids::FirmId::from_uuid(uuid::Uuid::new_v4());
    let held = turn.take().await;
    let writes = {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            ledger
                .grant(firm, Credits::new(5), "top-up", &contract::fresh_key())
                .await
                .unwrap();
            ledger
                .set_daily_cap(firm, Some(Credits::new(3)))
                .await
                .unwrap();
        })
    };
    // Long enough for both writes to finish many times over if they did not wait for the turn.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!writes.is_finished(), "the ledger wrote outside the turn");
    assert_eq!(ledger.balance(firm).await.unwrap().available, Credits::ZERO);
    drop(held);
    writes.await.unwrap();
    assert_eq!(
        ledger.balance(firm).await.unwrap().available,
        Credits::new(5)
    );
    env.teardown().await;
}
