//! Every (status, trigger) pair against the tables of product brief §2: moves by people and the
//! link land where the first table says and every other pair is refused without a change; each
//! provider verdict lands where the second table says from every status of an open attempt, and
//! changes nothing in `NOT_STARTED` / `NOT_REQUIRED`.

use kyc_domain::prelude::*;
use kyc_domain::testkit::strategies::{EPOCH, opened_customer, person};
use time::Duration;

use KycStatus::{
    AwaitingResubmission, Failed, InProgress, NotRequired, NotStarted, Pending, Verified,
};

fn answers(designated: bool) -> RiskAnswers {
    RiskAnswers {
        is_designated_service: designated,
        handles_cash_or_crypto: false,
        is_new_customer: true,
    }
}

fn verdict(answer: ReviewAnswer, reject: Option<RejectType>, labels: &[&str]) -> ProviderEventKind {
    ProviderEventKind::Reviewed(ReviewVerdict {
        answer,
        reject_type: reject,
        reject_labels: labels.iter().map(|l| RejectLabel::new(*l)).collect(),
    })
}

fn event(kind: ProviderEventKind, key: &str, seconds: i64) -> ProviderEvent {
    ProviderEvent {
        key: ProviderEventKey::new(key),
        applicant_id: None,
        external_user_id: None,
        created_at: EPOCH + Duration::seconds(seconds),
        kind,
    }
}

/// A customer in `status`, built only through the lifecycle's own moves, with the number of its
/// latest attempt (if any).
fn customer_in(status: KycStatus) -> Customer {
    let officer = person(Role::ComplianceOfficer);
    let (mut customer, attempt) = opened_customer();
    let apply = |c: &mut Customer, kind, key| {
        c.apply_provider_event(attempt, &event(kind, key, 1), EPOCH)
            .unwrap();
    };
    match status {
        Pending => {}
        InProgress => {
            customer.open_link(attempt, EPOCH).unwrap();
        }
        Verified => apply(&mut customer, verdict(ReviewAnswer::Green, None, &[]), "g"),
        Failed => apply(
            &mut customer,
            verdict(ReviewAnswer::Red, Some(RejectType::Final), &["FORGERY"]),
            "f",
        ),
        AwaitingResubmission => apply(
            &mut customer,
            verdict(ReviewAnswer::Red, Some(RejectType::Retry), &["BAD_SELFIE"]),
            "r",
        ),
        NotStarted | NotRequired => {
            // Through a failed and restarted attempt, so that provider events have an attempt to
            // be routed to — a closed one.
            apply(
                &mut customer,
                verdict(ReviewAnswer::Red, Some(RejectType::Final), &["FORGERY"]),
                "f",
            );
            customer
                .restart(
                    Note::new("retry with new documents").unwrap(),
                    &officer,
                    EPOCH,
                )
                .unwrap();
            if status == NotRequired {
                customer
                    .confirm_risk(answers(false), &officer, EPOCH)
                    .unwrap();
            }
        }
    }
    assert_eq!(customer.kyc_status, status);
    customer
}

/// The first table of the brief, plus the two documented non-moves (confirming answers without
/// a move; a link opened where it moves nothing).
fn expected_person_move(from: KycStatus, trigger: PersonTrigger) -> Option<KycStatus> {
    match (from.as_str(), trigger) {
        (
            "NOT_STARTED",
            PersonTrigger::ConfirmRisk {
                designated_service: false,
            },
        ) => Some(NotRequired),
        (
            "NOT_REQUIRED",
            PersonTrigger::ConfirmRisk {
                designated_service: true,
            },
        ) => Some(NotStarted),
        ("NOT_STARTED", PersonTrigger::StartVerification) => Some(Pending),
        ("PENDING" | "AWAITING_RESUBMISSION", PersonTrigger::OpenLink) => Some(InProgress),
        ("FAILED", PersonTrigger::Restart) => Some(NotStarted),
        // Answers recorded, no move.
        (
            "NOT_REQUIRED",
            PersonTrigger::ConfirmRisk {
                designated_service: false,
            },
        ) => Some(from),
        (
            _,
            PersonTrigger::ConfirmRisk {
                designated_service: true,
            },
        ) => Some(from),
        // A late click changes nothing.
        (_, PersonTrigger::OpenLink) => Some(from),
        _ => None,
    }
}

#[test]
fn person_moves_match_the_brief_and_everything_else_is_refused() {
    for from in KycStatus::ALL {
        for trigger in PersonTrigger::ALL {
            let got = person_move(from, trigger).ok();
            assert_eq!(
                got,
                expected_person_move(from, trigger),
                "({from}, {trigger:?})"
            );
        }
    }
}

/// Drives the same pairs through the aggregate, as a compliance officer.
fn apply_trigger(customer: &mut Customer, trigger: PersonTrigger) -> Result<(), LifecycleError> {
    let officer = person(Role::ComplianceOfficer);
    let latest = customer.latest_attempt().map(|a| a.number);
    match trigger {
        PersonTrigger::ConfirmRisk { designated_service } => customer
            .confirm_risk(answers(designated_service), &officer, EPOCH)
            .map(drop),
        PersonTrigger::StartVerification => {
            let (attempt, _) = customer.begin_verification(
                &officer,
                Credits::new(1),
                &ProviderLevels::default(),
                EPOCH,
            )?;
            customer
                .complete_verification(
                    attempt,
                    ApplicantId::new("00000000000000000000beef").unwrap(),
                    "h".into(),
                    &Actor::Customer,
                    EPOCH,
                )
                .map(drop)
        }
        PersonTrigger::OpenLink => match latest {
            Some(attempt) => customer.open_link(attempt, EPOCH).map(drop),
            None => Ok(()),
        },
        PersonTrigger::Restart => customer
            .restart(Note::new("reason").unwrap(), &officer, EPOCH)
            .map(drop),
    }
}

#[test]
fn the_aggregate_makes_exactly_the_person_moves_of_the_table() {
    for from in KycStatus::ALL {
        for trigger in PersonTrigger::ALL {
            let mut customer = customer_in(from);
            let before = customer.clone();
            let result = apply_trigger(&mut customer, trigger);
            match expected_person_move(from, trigger) {
                Some(to) => {
                    assert!(result.is_ok(), "({from}, {trigger:?}) refused: {result:?}");
                    assert_eq!(customer.kyc_status, to, "({from}, {trigger:?})");
                }
                None => {
                    let error = result.expect_err("must be refused");
                    assert!(!error.to_string().is_empty());
                    assert_eq!(
                        customer, before,
                        "a refused ({from}, {trigger:?}) changed the customer"
                    );
                }
            }
        }
    }
}

fn status_bearing_events() -> Vec<(ProviderEventKind, KycStatus)> {
    use ReviewAnswer::{Green, Red};
    vec![
        (ProviderEventKind::Pending, InProgress),
        (ProviderEventKind::Prechecked, InProgress),
        (ProviderEventKind::OnHold, InProgress),
        (verdict(Green, None, &[]), Verified),
        (
            verdict(Red, Some(RejectType::Retry), &["UNSATISFACTORY_PHOTOS"]),
            AwaitingResubmission,
        ),
        (
            verdict(Red, Some(RejectType::Final), &["PEP", "SANCTIONS"]),
            Verified,
        ),
        (
            verdict(Red, Some(RejectType::Final), &["ADVERSE_MEDIA", "FORGERY"]),
            Failed,
        ),
        (
            verdict(Red, Some(RejectType::Final), &["A_LABEL_NOBODY_KNOWS"]),
            Failed,
        ),
        (ProviderEventKind::Reset, Pending),
    ]
}

#[test]
fn every_verdict_lands_where_the_brief_says_from_every_open_status() {
    for from in [Pending, InProgress, Verified, Failed, AwaitingResubmission] {
        for (kind, to) in status_bearing_events() {
            let mut customer = customer_in(from);
            let attempt = customer.latest_attempt().unwrap().number;
            customer
                .apply_provider_event(attempt, &event(kind.clone(), "newest", 60), EPOCH)
                .unwrap();
            assert_eq!(customer.kyc_status, to, "{from} + {}", kind.name());
        }
    }
}

#[test]
fn aml_only_final_rejections_keep_identity_verified_and_open_review() {
    let mut customer = customer_in(InProgress);
    let attempt = customer.latest_attempt().unwrap().number;
    let kind = verdict(
        ReviewAnswer::Red,
        Some(RejectType::Final),
        &["PEP", "SANCTIONS"],
    );
    customer
        .apply_provider_event(attempt, &event(kind, "aml", 60), EPOCH)
        .unwrap();
    assert_eq!(customer.kyc_status, Verified);
    assert_eq!(customer.aml.status, AmlStatus::NeedsReview);
    let flags = customer.aml.flags();
    assert!(flags.pep && flags.sanctions && !flags.adverse_media && !flags.terrorism);
    assert_eq!(customer.crm().label, "Identity OK — AML in review.");
}

#[test]
fn other_event_types_are_recorded_and_change_nothing() {
    for from in [Pending, InProgress, Verified, Failed, AwaitingResubmission] {
        let mut customer = customer_in(from);
        let before = customer.clone();
        let attempt = customer.latest_attempt().unwrap().number;
        let other = ProviderEventKind::Other {
            event_type: "applicantPersonalInfoChanged".into(),
        };
        let events = customer
            .apply_provider_event(attempt, &event(other, "o", 60), EPOCH)
            .unwrap();
        assert_eq!(customer, before);
        assert!(matches!(
            events.as_slice(),
            [DomainEvent {
                change: Change::ProviderEventRecorded {
                    outcome: EventOutcome::NoStatus,
                    ..
                },
                ..
            }]
        ));
    }
}

#[test]
fn verdicts_change_nothing_without_an_open_attempt() {
    for from in [NotStarted, NotRequired] {
        for (kind, _) in status_bearing_events() {
            let mut customer = customer_in(from);
            let before = customer.clone();
            let attempt = customer.latest_attempt().unwrap().number;
            let events = customer
                .apply_provider_event(attempt, &event(kind, "late", 60), EPOCH)
                .unwrap();
            assert_eq!(customer, before, "{from}");
            assert!(matches!(
                events.as_slice(),
                [DomainEvent {
                    change: Change::ProviderEventRecorded {
                        outcome: EventOutcome::AttemptNotOpen,
                        ..
                    },
                    ..
                }]
            ));
        }
    }
}

#[test]
fn an_older_verdict_is_recorded_as_ignored_and_changes_nothing() {
    let mut customer = customer_in(Verified);
    let before = customer.clone();
    let attempt = customer.latest_attempt().unwrap().number;
    let older = verdict(ReviewAnswer::Red, Some(RejectType::Retry), &["BAD_SELFIE"]);
    let events = customer
        .apply_provider_event(attempt, &event(older, "older", 0), EPOCH)
        .unwrap();
    assert_eq!(customer, before);
    assert!(matches!(
        events.as_slice(),
        [DomainEvent {
            change: Change::ProviderEventRecorded {
                outcome: EventOutcome::IgnoredOlder,
                ..
            },
            ..
        }]
    ));
}

#[test]
fn a_green_can_later_turn_red() {
    let mut customer = customer_in(Verified);
    let attempt = customer.latest_attempt().unwrap().number;
    let fraud = verdict(
        ReviewAnswer::Red,
        Some(RejectType::Final),
        &["FRAUDULENT_PATTERNS"],
    );
    customer
        .apply_provider_event(attempt, &event(fraud, "fraud", 120), EPOCH)
        .unwrap();
    assert_eq!(customer.kyc_status, Failed);
    assert_eq!(customer.crm().next_action, NextAction::DoNotOnboard);
}

#[test]
fn identity_fields_freeze_once_verified_but_phone_stays_editable() {
    let mut customer = customer_in(Verified);
    let before = customer.clone();
    let rename = ContactUpdate {
        full_name: Some(FullName::new("Someone Else").unwrap()),
        ..ContactUpdate::default()
    };
    let error = customer
        .update_contact(rename, &Actor::Customer, EPOCH)
        .unwrap_err();
    assert_eq!(error, LifecycleError::IdentityFrozen { field: "fullName" });
    assert_eq!(customer, before);
    let phone = ContactUpdate {
        phone: Some(Phone::new("+61400000001").unwrap()),
        ..ContactUpdate::default()
    };
    customer
        .update_contact(phone, &Actor::Customer, EPOCH)
        .unwrap();
    assert_eq!(
        customer.phone.as_ref().map(Phone::as_str),
        Some("+61400000001")
    );
}

#[test]
fn aml_review_runs_from_hits_to_a_recorded_decision() {
    let officer = person(Role::ComplianceOfficer);
    let staff = person(Role::Staff);
    let mut customer = customer_in(Verified);
    let worker = Actor::system("test");
    customer.start_screening(&worker, EPOCH).unwrap();
    assert_eq!(customer.aml.status, AmlStatus::InProgress);
    let hit = AmlHit {
        key: HitKey::new("hit-1"),
        name: Some("J. Doe".into()),
        categories: [AmlCategory::Pep].into_iter().collect(),
        match_status: "potential_match".into(),
        source: HitSource::Screening,
        found_at: EPOCH,
        disposition: None,
    };
    customer
        .record_screening(vec![hit.clone(), hit.clone()], &worker, EPOCH)
        .unwrap();
    assert_eq!(customer.aml.status, AmlStatus::NeedsReview);
    assert_eq!(customer.aml.hits.len(), 1, "the same hit twice is one hit");
    let decide = |c: &mut Customer, who: &Person| {
        c.record_decision(AmlDecision::Proceed, Note::new("ok").unwrap(), who, EPOCH)
    };
    assert!(matches!(
        decide(&mut customer, &officer),
        Err(LifecycleError::HitsAwaitingDisposition { open: 1 })
    ));
    let dispose = |c: &mut Customer, who: &Person| {
        c.set_disposition(
            &HitKey::new("hit-1"),
            Disposition::FalsePositive,
            Note::new("different person").unwrap(),
            who,
            EPOCH,
        )
    };
    assert!(matches!(
        dispose(&mut customer, &staff),
        Err(LifecycleError::Forbidden { .. })
    ));
    dispose(&mut customer, &officer).unwrap();
    assert!(
        !customer.aml.flags().pep,
        "a false positive does not raise the flag"
    );
    decide(&mut customer, &officer).unwrap();
    assert_eq!(customer.aml.status, AmlStatus::Resolved);
    assert_eq!(customer.crm().onboarding, Onboarding::FirmDecision);
    // New hits reopen review.
    let attempt = customer.latest_attempt().unwrap().number;
    let aml = verdict(ReviewAnswer::Red, Some(RejectType::Final), &["SANCTIONS"]);
    customer
        .apply_provider_event(attempt, &event(aml, "new-hit", 600), EPOCH)
        .unwrap();
    assert_eq!(customer.aml.status, AmlStatus::NeedsReview);
}
