//! Seeding: customers straight through the storage adapter (`CustomerStore::insert` of
//! `Customer::create`, as the API would store them, without the HTTP round trip), and for a share
//! of them an open verification attempt driven through the aggregate (confirm the risk answers,
//! begin and complete the verification, save), so that provider webhooks route to real attempts.
//!
//! Firms and API keys are made through the server's own CLI (see `main`), so the keys are real.

use std::sync::Arc;
use std::time::Instant;

use kyc_domain::customer::{Customer, NewCustomer};
use kyc_domain::events::{Actor, Person, Role};
use kyc_domain::ids::{ApiKeyId, ApplicantId, CustomerId, ExternalUserId, FirmId, UserId};
use kyc_domain::ports::CustomerStore;
use kyc_domain::risk::{ProviderLevels, RiskAnswers};
use kyc_domain::values::{AddedVia, Credits, CustomerType, Email, ExternalId, FullName};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

/// A seeded customer, as the harness addresses it.
#[derive(Debug, Clone)]
pub struct SeededCustomer {
    /// Its id.
    pub id: CustomerId,
    /// `crm-<firm>-<n>`.
    pub external_id: String,
    /// Its email.
    pub email: String,
}

/// An open attempt webhooks can be sent for.
#[derive(Debug, Clone)]
pub struct SeededAttempt {
    /// `ExternalUserId::for_attempt(customer, 1)`.
    pub external_user_id: String,
    /// The applicant id stored on the attempt.
    pub applicant_id: String,
}

/// What one firm holds after seeding.
#[derive(Debug, Clone, Default)]
pub struct SeededFirm {
    /// Customers still `NOT_STARTED` (targets of reads, lists and upserts of existing ids).
    pub not_started: Vec<SeededCustomer>,
    /// Every customer id of the firm (targets of reads).
    pub all: Vec<CustomerId>,
}

/// Everything seeded.
#[derive(Debug, Default)]
pub struct Seeded {
    /// Per firm, in the order of `firm_ids`.
    pub firms: Vec<SeededFirm>,
    /// Open attempts across all firms.
    pub attempts: Vec<SeededAttempt>,
}

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedPlan {
    /// The firms (made through the CLI).
    pub firm_ids: Vec<FirmId>,
    /// Customers in all, spread round-robin over the firms.
    pub customers: usize,
    /// How many of them get an open attempt.
    pub attempts: usize,
    /// Parallel writers.
    pub concurrency: usize,
}

struct Seeder {
    store: Arc<dyn CustomerStore>,
    firm_ids: Vec<FirmId>,
    actor: Actor,
    person: Person,
    levels: ProviderLevels,
}

/// Seeds per `plan`; prints progress to stderr.
///
/// # Errors
/// A value the domain refuses, or a storage failure.
pub async fn seed(store: Arc<dyn CustomerStore>, plan: &SeedPlan) -> Result<Seeded, String> {
    let seeder = Arc::new(Seeder {
        store,
        firm_ids: plan.firm_ids.clone(),
        actor: Actor::ApiKey {
            id: ApiKeyId::from_uuid(Uuid::now_v7()),
            label: "kyc-bench seeding".to_owned(),
        },
        person: Person {
            id: UserId::from_uuid(Uuid::now_v7()),
            email: Email::new("seeder@bench.example").map_err(|e| e.message)?,
            role: Role::Staff,
        },
        levels: ProviderLevels {
            standard: "basic-kyc-level".to_owned(),
            enhanced: "basic-kyc-level".to_owned(),
        },
    });
    // Every `stride`-th customer of each firm gets an attempt, so attempts spread over firms and
    // ages; at least one customer in two stays without one.
    let stride = plan
        .customers
        .checked_div(plan.attempts)
        .map_or(usize::MAX, |stride| stride.max(2));
    let started = Instant::now();
    let writers = plan.concurrency.max(1);
    let mut tasks = Vec::with_capacity(writers);
    for writer in 0..writers {
        let seeder = seeder.clone();
        let total = plan.customers;
        let attempts = plan.attempts;
        let firms = plan.firm_ids.len();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut index = writer;
            while index < total {
                // Counted within the firm, so that every firm keeps customers without one
                // whatever the number of firms and the stride.
                let in_firm = index / firms;
                let with_attempt = in_firm.is_multiple_of(stride) && index / stride < attempts;
                out.push(seeder.one(index, with_attempt).await?);
                if index % 20_000 == 0 && index > 0 {
                    eprintln!("  seeded ~{index} customers in {:.0?}", started.elapsed());
                }
                index += writers;
            }
            Ok::<_, String>(out)
        }));
    }
    let mut seeded = Seeded {
        firms: vec![SeededFirm::default(); plan.firm_ids.len()],
        attempts: Vec::with_capacity(plan.attempts),
    };
    for task in tasks {
        let rows = task.await.map_err(|e| format!("seeding task: {e}"))??;
        for (firm, customer, attempt) in rows {
            let of_firm = &mut seeded.firms[firm];
            of_firm.all.push(customer.id);
            match attempt {
                Some(attempt) => seeded.attempts.push(attempt),
                None => of_firm.not_started.push(customer),
            }
        }
    }
    eprintln!(
        "  seeded {} customers ({} with an open attempt) in {:.1?}",
        plan.customers,
        seeded.attempts.len(),
        started.elapsed()
    );
    Ok(seeded)
}

impl Seeder {
    async fn one(
        &self,
        index: usize,
        with_attempt: bool,
    ) -> Result<(usize, SeededCustomer, Option<SeededAttempt>), String> {
        let firm = index % self.firm_ids.len();
        let external_id = format!("crm-{firm}-{index}");
        let email = format!("customer{index}.firm{firm}@bench.example");
        let input = NewCustomer {
            external_id: Some(ExternalId::new(external_id.clone()).map_err(|e| e.message)?),
            full_name: FullName::new(format!("Customer {index}")).map_err(|e| e.message)?,
            email: Email::new(email.clone()).map_err(|e| e.message)?,
            phone: None,
            customer_type: CustomerType::Individual,
        };
        let id = CustomerId::from_uuid(Uuid::now_v7());
        let now = OffsetDateTime::now_utc();
        let (mut customer, events) = Customer::create(
            id,
            self.firm_ids[firm],
            input,
            AddedVia::Integration,
            &self.actor,
            now,
        );
        let version = self
            .store
            .insert(&customer, &events, &[])
            .await
            .map_err(|e| format!("insert customer: {e}"))?;
        customer.saved(version);
        let seeded = SeededCustomer {
            id,
            external_id,
            email,
        };
        if !with_attempt {
            return Ok((firm, seeded, None));
        }
        let attempt = self.open_attempt(&mut customer, now).await?;
        Ok((firm, seeded, Some(attempt)))
    }

    /// The back-office path of Start Verification without the provider and the ledger: the
    /// aggregate moves exactly as it does there, and one save stores all three moves.
    async fn open_attempt(
        &self,
        customer: &mut Customer,
        now: OffsetDateTime,
    ) -> Result<SeededAttempt, String> {
        let answers = RiskAnswers {
            is_designated_service: true,
            handles_cash_or_crypto: false,
            is_new_customer: true,
        };
        let mut events = customer
            .confirm_risk(answers, &self.person, now)
            .map_err(|e| format!("confirm risk: {e}"))?;
        let (number, begun) = customer
            .begin_verification(&self.person, Credits::new(1), &self.levels, now)
            .map_err(|e| format!("begin verification: {e}"))?;
        events.extend(begun);
        let applicant_id = customer.id.as_uuid().simple().to_string();
        let link_token_hash = hex::encode(Sha256::digest(Uuid::new_v4().as_bytes()));
        events.extend(
            customer
                .complete_verification(
                    number,
                    ApplicantId::new(applicant_id.clone()).map_err(|e| e.to_string())?,
                    link_token_hash,
                    &Actor::Person(self.person.clone()),
                    now,
                )
                .map_err(|e| format!("complete verification: {e}"))?,
        );
        self.store
            .save(customer, &events, &[], None)
            .await
            .map_err(|e| format!("save the attempt: {e}"))?;
        Ok(SeededAttempt {
            external_user_id: ExternalUserId::for_attempt(customer.id, number)
                .as_str()
                .to_owned(),
            applicant_id,
        })
    }
}
