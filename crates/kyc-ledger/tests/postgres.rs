//! The ledger contract on Postgres, each test on a fresh database, plus the checks that only make
//! sense with SQL in hand (immutability of the history, migrations beside other crates', several
//! pools on one database standing in for several processes).
//!
//! Reads `DATABASE_URL`. Without it the tests say they are skipped, unless `CI=true`, where they
//! fail: CI must never pass by skipping the production backend.

#[macro_use]
mod contract;

use std::sync::Arc;

use contract::{ManualClock, Subject};
use kyc_domain::ports::{CreditsLedger, HoldKey, IdempotencyKey};
use kyc_domain::values::Credits;
use kyc_ledger::{PgLedger, migrate_postgres};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

struct Env {
    ledger: PgLedger,
    clock: Arc<ManualClock>,
    admin_url: String,
    url: String,
    name: String,
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
        let mut admin = PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

fn database_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("DATABASE_URL must be set when CI=true")
        }
        _ => {
            eprintln!("skipped: DATABASE_URL not set");
            None
        }
    }
}

/// The URL of another database on the same server.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    format!("{server}/{name}{query}")
}

/// Small pools: the server's connections are shared with every other suite running at once.
async fn pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(5)
        .connect(url)
        .await
        .unwrap()
}

async fn setup() -> Option<Env> {
    let admin_url = database_url()?;
    let name = format!("kyc_ledger_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .expect("DATABASE_URL is set but Postgres is unreachable");
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = with_database(&admin_url, &name);
    let pool = pool(&url).await;
    migrate_postgres(&pool).await.unwrap();
    let clock = Arc::new(ManualClock::new());
    let ledger = PgLedger::new(pool).with_clock(clock.clone());
    Some(Env {
        ledger,
        clock,
        admin_url,
        url,
        name,
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

fn any_hold() -> HoldKey {
    HoldKey {
        customer: kyc_domain::ids::CustomerId::from_uuid(uuid::Uuid::new_v4()),
        attempt: kyc_domain::ids::AttemptNumber::FIRST,
    }
}

#[tokio::test]
async fn entries_operations_and_resolved_holds_cannot_be_rewritten() {
    let Some(env) = setup().await else { return };
    let firm = contract::granted(&env.subject(), 5).await;
    let hold = any_hold();
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
        "TRUNCATE ledger_entries CASCADE",
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
    let Some(env) = setup().await else { return };
    // A migration this crate does not know, as the storage crate would leave in the shared table.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (1, 'storage', TRUE, '\\x00', 0)",
    )
    .execute(env.ledger.pool())
    .await
    .unwrap();
    migrate_postgres(env.ledger.pool()).await.unwrap();
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_pools_on_one_database_charge_each_hold_once_like_several_processes() {
    let Some(env) = setup().await else { return };
    let firm = contract::granted(&env.subject(), 30).await;
    let mut ledgers: Vec<Arc<dyn CreditsLedger>> = Vec::new();
    for _ in 0..3 {
        ledgers.push(Arc::new(PgLedger::new(pool(&env.url).await)));
    }
    let holds: Vec<HoldKey> = (0..20).map(|_| any_hold()).collect();
    // Every pool reserves and posts every hold, each with the same keys, as replicas retrying
    // the same Start Verification would.
    let mut tasks = Vec::new();
    for ledger in &ledgers {
        for hold in &holds {
            let ledger = Arc::clone(ledger);
            let hold = *hold;
            tasks.push(tokio::spawn(async move {
                let reserve = IdempotencyKey::for_hold("reserve", hold);
                let post = IdempotencyKey::for_hold("post", hold);
                ledger
                    .reserve(firm, hold, Credits::new(1), &reserve)
                    .await?;
                ledger.post(firm, hold, &post).await
            }));
        }
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let balance = env.ledger.balance(firm).await.unwrap();
    assert_eq!(
        (
            balance.available.get(),
            balance.held.get(),
            balance.spent.get()
        ),
        (10, 0, 20)
    );
    let audit = kyc_ledger::LedgerAudit::audit(&env.ledger, firm)
        .await
        .unwrap();
    assert!(audit.is_sound(), "{audit:?}");
    // One grant, and one reserve and one post per hold.
    assert_eq!(audit.operations, 41);
    for ledger in ledgers {
        drop(ledger);
    }
    env.teardown().await;
}

/// Set in the environment of the child processes of the multi-process test.
const WORKER_URL: &str = "KYC_LEDGER_WORKER_DATABASE_URL";
const WORKER_FIRM: &str = "KYC_LEDGER_WORKER_FIRM";
const WORKER_CUSTOMERS: &str = "KYC_LEDGER_WORKER_CUSTOMERS";

/// The body of one child process of the test below: reserves and posts every hold it is given,
/// with the same keys as its siblings, as replicas retrying one Start Verification would. Run on
/// its own (without the variables) it has nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_process_reserving_and_posting_for_the_multi_process_test() {
    let (Ok(url), Ok(firm), Ok(customers)) = (
        std::env::var(WORKER_URL),
        std::env::var(WORKER_FIRM),
        std::env::var(WORKER_CUSTOMERS),
    ) else {
        return;
    };
    let ledger = Arc::new(PgLedger::new(pool(&url).await));
    let firm = kyc_domain::ids::FirmId::parse(&firm).unwrap();
    let tasks: Vec<_> = customers
        .split(',')
        .map(|customer| {
            let hold = HoldKey {
                customer: kyc_domain::ids::CustomerId::parse(customer).unwrap(),
                attempt: kyc_domain::ids::AttemptNumber::FIRST,
            };
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move {
                let reserve = IdempotencyKey::for_hold("reserve", hold);
                let post = IdempotencyKey::for_hold("post", hold);
                ledger
                    .reserve(firm, hold, Credits::new(1), &reserve)
                    .await?;
                ledger.post(firm, hold, &post).await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_on_one_database_charge_each_hold_once() {
    let Some(env) = setup().await else { return };
    let firm = contract::granted(&env.subject(), 30).await;
    let customers: Vec<String> = (0..20).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "worker_process_reserving_and_posting_for_the_multi_process_test",
                    "--exact",
                    "--test-threads=1",
                ])
                .env(WORKER_URL, &env.url)
                .env(WORKER_FIRM, firm.to_string())
                .env(WORKER_CUSTOMERS, customers.join(","))
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "a worker process failed: {status}");
    }
    let balance = env.ledger.balance(firm).await.unwrap();
    assert_eq!(
        (
            balance.available.get(),
            balance.held.get(),
            balance.spent.get()
        ),
        (10, 0, 20)
    );
    let audit = kyc_ledger::LedgerAudit::audit(&env.ledger, firm)
        .await
        .unwrap();
    assert!(audit.is_sound(), "{audit:?}");
    assert_eq!(audit.operations, 41);
    env.teardown().await;
}
