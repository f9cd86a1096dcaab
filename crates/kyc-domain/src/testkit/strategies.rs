//! Proptest strategies: customers, provider events, delivery orders with duplicates, and
//! sequences of lifecycle commands, with helpers that run them against the aggregate.

use proptest::prelude::*;
use proptest::sample::subsequence;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use crate::aml::{AmlCategory, AmlDecision, AmlHit, Disposition, HitKey, HitSource};
use crate::customer::{ContactUpdate, Customer, NewCustomer};
use crate::error::LifecycleError;
use crate::events::{Actor, DomainEvent, Person, Role};
use crate::ids::{ApplicantId, AttemptNumber, CustomerId, FirmId, UserId};
use crate::provider::{
    ProviderEvent, ProviderEventKey, ProviderEventKind, RejectLabel, RejectType, ReviewAnswer,
    ReviewVerdict,
};
use crate::risk::{ProviderLevels, RiskAnswers};
use crate::values::{AddedVia, Credits, CustomerType, Email, FullName, Note};

/// The time every generated scenario starts at.
pub const EPOCH: OffsetDateTime = datetime!(2026-07-01 00:00 UTC);

fn email(text: &str) -> Email {
    Email::new(text).expect("generated emails are valid")
}

/// A person with `role`.
pub fn person(role: Role) -> Person {
    Person {
        id: UserId::from_uuid(uuid::Uuid::from_u128(0xabc)),
        email: email("person@firm.example"),
        role,
    }
}

/// A new customer, as the CRM would push it.
pub fn new_customer() -> impl Strategy<Value = NewCustomer> {
    (
        "[A-Z][a-z]{1,8} [A-Z][a-z]{1,10}",
        "[a-z]{1,8}",
        proptest::option::of("crm-[0-9]{1,6}"),
    )
        .prop_map(|(name, local, external)| NewCustomer {
            external_id: external.map(|e| crate::values::ExternalId::new(e).expect("valid")),
            full_name: FullName::new(name).expect("valid"),
            email: email(&format!("{local}@example.com")),
            phone: None,
            customer_type: CustomerType::Individual,
        })
}

/// A fresh customer in `NOT_STARTED`.
pub fn fresh_customer() -> Customer {
    Customer::create(
        CustomerId::from_uuid(uuid::Uuid::from_u128(7)),
        FirmId::from_uuid(uuid::Uuid::from_u128(1)),
        NewCustomer {
            external_id: None,
            full_name: FullName::new("Jane Doe").expect("valid"),
            email: email("jane@example.com"),
            phone: None,
            customer_type: CustomerType::Individual,
        },
        AddedVia::Integration,
        &Actor::system("testkit"),
        EPOCH,
    )
    .0
}

/// A customer whose first attempt is open (`PENDING`), and that attempt's number.
pub fn opened_customer() -> (Customer, AttemptNumber) {
    let mut customer = fresh_customer();
    let officer = person(Role::ComplianceOfficer);
    let answers = RiskAnswers {
        is_designated_service: true,
        handles_cash_or_crypto: false,
        is_new_customer: true,
    };
    customer
        .confirm_risk(answers, &officer, EPOCH)
        .expect("confirmable");
    let (attempt, _) = customer
        .begin_verification(&officer, Credits::new(1), &ProviderLevels::default(), EPOCH)
        .expect("startable");
    customer
        .complete_verification(
            attempt,
            ApplicantId::new("0000000000000000000000a1").expect("valid"),
            "hash".into(),
            &Actor::system("testkit"),
            EPOCH,
        )
        .expect("completable");
    (customer, attempt)
}

/// Any kind of provider event, status-bearing or not.
pub fn provider_event_kind() -> impl Strategy<Value = ProviderEventKind> {
    let red = |reject_type: Option<RejectType>, labels: Vec<&'static str>| {
        ProviderEventKind::Reviewed(ReviewVerdict {
            answer: ReviewAnswer::Red,
            reject_type,
            reject_labels: labels.into_iter().map(RejectLabel::new).collect(),
        })
    };
    let aml_labels = vec![
        "PEP",
        "SANCTIONS",
        "ADVERSE_MEDIA",
        "COMPROMISED_PERSONS",
        "CRIMINAL",
    ];
    prop_oneof![
        Just(ProviderEventKind::Pending),
        Just(ProviderEventKind::Prechecked),
        Just(ProviderEventKind::OnHold),
        Just(ProviderEventKind::Reset),
        Just(ProviderEventKind::Reviewed(ReviewVerdict {
            answer: ReviewAnswer::Green,
            reject_type: None,
            reject_labels: vec![],
        })),
        Just(red(Some(RejectType::Retry), vec!["UNSATISFACTORY_PHOTOS"])),
        Just(red(Some(RejectType::Final), vec!["FORGERY", "PEP"])),
        Just(red(None, vec!["SELFIE_MISMATCH"])),
        subsequence(aml_labels, 1..=3).prop_map(move |labels| red(Some(RejectType::Final), labels)),
        prop_oneof![
            Just("applicantCreated"),
            Just("applicantPersonalInfoChanged"),
            Just("applicantSomethingNew")
        ]
        .prop_map(|t| ProviderEventKind::Other {
            event_type: t.to_owned()
        }),
    ]
}

/// `count` distinct provider events of one attempt, with creation times drawn from a few seconds
/// (so that ties on time happen and the key decides).
pub fn provider_events(
    count: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = Vec<ProviderEvent>> {
    proptest::collection::vec((provider_event_kind(), 0i64..40), count).prop_map(|drawn| {
        drawn
            .into_iter()
            .enumerate()
            .map(|(index, (kind, tenths))| ProviderEvent {
                key: ProviderEventKey::new(format!("evt-{index:03}")),
                applicant_id: None,
                external_user_id: None,
                created_at: EPOCH + Duration::milliseconds(tenths * 100),
                kind,
            })
            .collect()
    })
}

/// A set of events and one delivery of them: any order, with any duplicates.
#[derive(Debug, Clone)]
pub struct DeliveryScenario {
    /// The distinct events.
    pub events: Vec<ProviderEvent>,
    /// What arrived, in arrival order.
    pub deliveries: Vec<ProviderEvent>,
}

impl DeliveryScenario {
    /// The events in creation order (ties broken by key), once each.
    pub fn events_in_creation_order(&self) -> Vec<ProviderEvent> {
        let mut events = self.events.clone();
        events.sort_by_key(ProviderEvent::stamp);
        events
    }
}

/// Events plus a shuffled delivery of them with duplicates.
pub fn delivery_scenario() -> impl Strategy<Value = DeliveryScenario> {
    provider_events(1..=8).prop_flat_map(|events| {
        let n = events.len();
        (
            Just(events),
            proptest::collection::vec(0..n, 0..=n),
            any::<proptest::sample::Index>().prop_map(|i| i.index(usize::MAX)),
        )
            .prop_map(|(events, duplicates, seed)| {
                let mut deliveries = events.clone();
                deliveries.extend(duplicates.into_iter().map(|i| events[i].clone()));
                shuffle(&mut deliveries, seed as u64);
                DeliveryScenario { events, deliveries }
            })
    })
}

/// A deterministic Fisher–Yates shuffle driven by `seed` (proptest shrinks the seed).
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = (seed >> 33) as usize % (i + 1);
        items.swap(i, j);
    }
}

/// Delivers events, in the order given, to a fresh [`opened_customer`].
pub fn deliver(events: &[ProviderEvent]) -> Customer {
    let (mut customer, attempt) = opened_customer();
    for event in events {
        customer
            .apply_provider_event(attempt, event, EPOCH)
            .expect("the attempt exists");
    }
    customer
}

/// One command to the aggregate, as a person, the link, the provider or a worker would send it.
#[derive(Debug, Clone)]
pub enum Command {
    /// Confirm risk answers.
    ConfirmRisk(RiskAnswers, Role),
    /// Phase 1 of Start Verification.
    Begin(Role),
    /// Phase 3 for the latest attempt.
    Complete,
    /// Phase 4 for the latest attempt.
    Abandon,
    /// The customer opens the latest attempt's link.
    OpenLink,
    /// A provider event for the latest attempt.
    Provider(ProviderEventKind, i64),
    /// Screening starts.
    StartScreening,
    /// Screening finishes with these hit categories (one hit each).
    RecordScreening(Vec<String>),
    /// A disposition on the n-th hit.
    Disposition(usize, Disposition, Role),
    /// The final decision.
    Decision(AmlDecision, Role),
    /// Restart.
    Restart(Role),
    /// A changed name (refused once verified).
    Rename(String),
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Staff),
        Just(Role::ComplianceOfficer),
        Just(Role::Admin)
    ]
}

/// Any command.
pub fn command() -> impl Strategy<Value = Command> {
    let answers = (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(d, c, n)| RiskAnswers {
        is_designated_service: d,
        handles_cash_or_crypto: c,
        is_new_customer: n,
    });
    prop_oneof![
        (answers, role()).prop_map(|(a, r)| Command::ConfirmRisk(a, r)),
        role().prop_map(Command::Begin),
        Just(Command::Complete),
        Just(Command::Abandon),
        Just(Command::OpenLink),
        (provider_event_kind(), 0i64..1000).prop_map(|(k, t)| Command::Provider(k, t)),
        Just(Command::StartScreening),
        proptest::collection::vec(
            prop_oneof![Just("pep"), Just("sanctions"), Just("terrorism")],
            0..3
        )
        .prop_map(|v| Command::RecordScreening(v.into_iter().map(str::to_owned).collect())),
        (
            0usize..4,
            prop_oneof![
                Just(Disposition::FalsePositive),
                Just(Disposition::TrueMatch)
            ],
            role()
        )
            .prop_map(|(i, d, r)| Command::Disposition(i, d, r)),
        (
            prop_oneof![Just(AmlDecision::Proceed), Just(AmlDecision::Decline)],
            role()
        )
            .prop_map(|(d, r)| Command::Decision(d, r)),
        role().prop_map(Command::Restart),
        "[A-Z][a-z]{2,6}".prop_map(Command::Rename),
    ]
}

/// Runs one command against the aggregate. `step` makes provider keys and times unique per run.
///
/// # Errors
/// Whatever the aggregate refuses.
pub fn run(
    customer: &mut Customer,
    command: &Command,
    step: usize,
) -> Result<Vec<DomainEvent>, LifecycleError> {
    let at = EPOCH + Duration::seconds(step as i64);
    let worker = Actor::system("testkit");
    let latest = customer
        .latest_attempt()
        .map(|a| a.number)
        .unwrap_or(AttemptNumber::FIRST);
    match command {
        Command::ConfirmRisk(answers, role) => customer.confirm_risk(*answers, &person(*role), at),
        Command::Begin(role) => customer
            .begin_verification(
                &person(*role),
                Credits::new(1),
                &ProviderLevels::default(),
                at,
            )
            .map(|(_, events)| events),
        Command::Complete => customer.complete_verification(
            latest,
            ApplicantId::new(format!("{:024x}", latest.get())).expect("valid"),
            "hash".into(),
            &worker,
            at,
        ),
        Command::Abandon => customer.abandon_verification(latest, "refused", &worker, at),
        Command::OpenLink => customer.open_link(latest, at).map(|(_, events)| events),
        Command::Provider(kind, millis) => customer.apply_provider_event(
            latest,
            &ProviderEvent {
                key: ProviderEventKey::new(format!("evt-{step}")),
                applicant_id: None,
                external_user_id: None,
                created_at: EPOCH + Duration::milliseconds(*millis),
                kind: kind.clone(),
            },
            at,
        ),
        Command::StartScreening => customer.start_screening(&worker, at),
        Command::RecordScreening(categories) => {
            let hits = categories
                .iter()
                .map(|c| AmlHit {
                    key: HitKey::new(format!("hit-{c}")),
                    name: Some("Someone".into()),
                    categories: [AmlCategory::parse(c)].into_iter().collect(),
                    match_status: "potential_match".into(),
                    source: HitSource::Screening,
                    found_at: at,
                    disposition: None,
                })
                .collect();
            customer.record_screening(hits, &worker, at)
        }
        Command::Disposition(index, disposition, role) => {
            let key = customer
                .aml
                .hits
                .get(*index)
                .map_or_else(|| HitKey::new("missing"), |h| h.key.clone());
            customer.set_disposition(
                &key,
                *disposition,
                Note::new("reviewed").expect("valid"),
                &person(*role),
                at,
            )
        }
        Command::Decision(decision, role) => customer.record_decision(
            *decision,
            Note::new("decided").expect("valid"),
            &person(*role),
            at,
        ),
        Command::Restart(role) => customer.restart(
            Note::new("new documents").expect("valid"),
            &person(*role),
            at,
        ),
        Command::Rename(name) => customer.update_contact(
            ContactUpdate {
                full_name: Some(FullName::new(name.clone()).expect("valid")),
                ..ContactUpdate::default()
            },
            &worker,
            at,
        ),
    }
}
