//! Keeps `docs/state-machine.md` in step with the code: every arrow the lifecycle functions allow
//! is drawn, and every arrow drawn is allowed.

use std::collections::BTreeSet;

use kyc_domain::lifecycle::{AmlTrigger, aml_move};
use kyc_domain::prelude::*;

type Edges = BTreeSet<(String, String, String)>;

fn diagram(section: &str) -> Edges {
    let doc = include_str!("../../../docs/state-machine.md");
    let start = doc
        .find(section)
        .unwrap_or_else(|| panic!("section {section} missing"));
    let block = &doc[start..];
    let block = &block[block.find("```mermaid").expect("a mermaid block")..];
    let block = &block[..block[3..].find("```").expect("closed block") + 3];
    block
        .lines()
        .filter_map(|line| {
            let (arrow, label) = line.trim().split_once(" : ")?;
            let (from, to) = arrow.split_once(" --> ")?;
            (from != "[*]").then(|| (from.to_owned(), to.to_owned(), label.to_owned()))
        })
        .collect()
}

fn person_label(trigger: PersonTrigger) -> &'static str {
    match trigger {
        PersonTrigger::ConfirmRisk {
            designated_service: false,
        } => "risk confirmed, designated service = no",
        PersonTrigger::ConfirmRisk {
            designated_service: true,
        } => "risk confirmed, designated service = yes",
        PersonTrigger::StartVerification => "Start Verification",
        PersonTrigger::OpenLink => "link opened",
        PersonTrigger::Restart => "restart by a compliance officer",
    }
}

#[test]
fn the_person_diagram_matches_person_move() {
    let mut code = Edges::new();
    for from in KycStatus::ALL {
        for trigger in PersonTrigger::ALL {
            if let Some(to) = person_move(from, trigger).ok().filter(|to| *to != from) {
                code.insert((
                    from.to_string(),
                    to.to_string(),
                    person_label(trigger).to_owned(),
                ));
            }
        }
    }
    assert_eq!(diagram("## kyc_status: moves by people"), code);
}

fn reviewed(
    answer: ReviewAnswer,
    reject: Option<RejectType>,
    labels: &[&str],
) -> ProviderEventKind {
    ProviderEventKind::Reviewed(ReviewVerdict {
        answer,
        reject_type: reject,
        reject_labels: labels.iter().map(|l| RejectLabel::new(*l)).collect(),
    })
}

#[test]
fn the_verdict_diagram_matches_the_verdict_table() {
    use ReviewAnswer::{Green, Red};
    let cases = [
        ("applicantPending", ProviderEventKind::Pending),
        ("applicantPrechecked", ProviderEventKind::Prechecked),
        ("applicantOnHold", ProviderEventKind::OnHold),
        ("applicantReviewed GREEN", reviewed(Green, None, &[])),
        (
            "applicantReviewed RED RETRY",
            reviewed(Red, Some(RejectType::Retry), &["BAD_SELFIE"]),
        ),
        (
            "applicantReviewed RED FINAL, AML labels only",
            reviewed(Red, Some(RejectType::Final), &["PEP"]),
        ),
        (
            "applicantReviewed RED FINAL, any other label",
            reviewed(Red, Some(RejectType::Final), &["FORGERY"]),
        ),
        ("applicantReset", ProviderEventKind::Reset),
        (
            "applicantCreated",
            ProviderEventKind::Other {
                event_type: "applicantCreated".into(),
            },
        ),
    ];
    let code: Edges = cases
        .iter()
        .filter_map(|(label, kind)| {
            let effect = kind.verdict_effect()?;
            Some((
                "OPEN_ATTEMPT".to_owned(),
                effect.status.to_string(),
                (*label).to_owned(),
            ))
        })
        .collect();
    assert_eq!(diagram("## kyc_status: moves by provider verdicts"), code);
}

fn aml_label(trigger: AmlTrigger) -> &'static str {
    match trigger {
        AmlTrigger::ScreeningStarted => "screening started",
        AmlTrigger::ScreeningFoundNothing => "screening found nothing",
        AmlTrigger::ScreeningFoundHitsToReview => "screening found hits to review",
        AmlTrigger::ScreeningFoundOnlyReviewedHits => "screening found only reviewed hits",
        AmlTrigger::NewHits => "new hits",
        AmlTrigger::Disposition => "disposition set",
        AmlTrigger::Decision => "decision recorded",
    }
}

#[test]
fn the_aml_diagram_matches_aml_move() {
    let mut code = Edges::new();
    for from in AmlStatus::ALL {
        for trigger in AmlTrigger::ALL {
            if let Some(to) = aml_move(from, trigger).ok().filter(|to| *to != from) {
                code.insert((
                    from.to_string(),
                    to.to_string(),
                    aml_label(trigger).to_owned(),
                ));
            }
        }
    }
    assert_eq!(diagram("## aml.status"), code);
}
