//! The hosted flow: what the customer's browser shows behind a link the simulator minted. Instead of
//! a document upload it offers the outcomes to simulate, and each button fires the webhooks Sumsub
//! would (`applicantPending`, then `applicantReviewed` or `applicantOnHold`).
//!
//! No signature is needed here, as for the real WebSDK page. Form actions are relative URLs, so the
//! page works wherever the router is mounted.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;
use time::OffsetDateTime;

use super::{Shared, flow, new_applicant};
use crate::simulator::delivery::dispatch;

/// An outcome button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Approve,
    RejectRetry,
    RejectFinal,
    AmlHit,
}

impl Action {
    const ALL: [Self; 4] = [
        Self::Approve,
        Self::RejectRetry,
        Self::RejectFinal,
        Self::AmlHit,
    ];

    fn path(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::RejectRetry => "reject-retry",
            Self::RejectFinal => "reject-final",
            Self::AmlHit => "aml-hit",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Approve => "Approve",
            Self::RejectRetry => "Reject (customer may retry)",
            Self::RejectFinal => "Reject (final)",
            Self::AmlHit => "AML hit (on hold)",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.path() == text)
    }
}

fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}}\
         button{{display:block;width:100%;margin:.5rem 0;padding:.75rem;font-size:1rem}}</style></head>\
         <body><h1>{title}</h1>{body}<p><small>Sumsub simulator — no real verification takes place.</small></p></body></html>",
        title = escape(title)
    );
    (status, Html(html)).into_response()
}

/// Looks up a live link: `(external user id, level)`, or the page to show instead.
fn live_link(shared: &Shared, link_id: &str) -> Result<(String, String), Response> {
    let state = shared.lock();
    match state.links.get(link_id) {
        None => Err(page(
            StatusCode::NOT_FOUND,
            "Link not found",
            "<p>This verification link does not exist.</p>",
        )),
        Some(link) if link.expires_at < OffsetDateTime::now_utc() => Err(page(
            StatusCode::GONE,
            "Link expired",
            "<p>This verification link has expired. Ask for a new one.</p>",
        )),
        Some(link) => Ok((link.external_user_id.clone(), link.level_name.clone())),
    }
}

/// `GET /websdk/p/{link}`: the outcome buttons.
pub(super) async fn show(
    State(shared): State<Arc<Shared>>,
    Path(link_id): Path<String>,
) -> Response {
    let (external_user_id, level_name) = match live_link(&shared, &link_id) {
        Ok(link) => link,
        Err(response) => return response,
    };
    let status = {
        let state = shared.lock();
        state
            .by_external
            .get(&external_user_id)
            .and_then(|id| state.applicants.get(id))
            .map_or("not created yet", |applicant| applicant.review_status)
    };
    let buttons: String = Action::ALL
        .iter()
        .map(|action| {
            format!(
                "<form method=\"post\" action=\"{link}/{path}\"><button type=\"submit\" name=\"action\" value=\"{path}\">{label}</button></form>",
                link = escape(&link_id),
                path = action.path(),
                label = action.label()
            )
        })
        .collect();
    let body = format!(
        "<p>Level <code>{level}</code>, applicant status <strong>{status}</strong>.</p>\
         <p>Choose the outcome of this verification:</p>{buttons}",
        level = escape(&level_name),
        status = escape(status),
    );
    page(StatusCode::OK, "Identity verification", &body)
}

/// `POST /websdk/p/{link}/{action}`: the customer "submits"; the chosen outcome follows.
pub(super) async fn act(
    State(shared): State<Arc<Shared>>,
    Path((link_id, action)): Path<(String, String)>,
) -> Response {
    let Some(action) = Action::parse(&action) else {
        return page(
            StatusCode::NOT_FOUND,
            "Unknown action",
            "<p>No such outcome.</p>",
        );
    };
    let (external_user_id, level_name) = match live_link(&shared, &link_id) {
        Ok(link) => link,
        Err(response) => return response,
    };
    let config = &shared.config;
    let events = {
        let mut state = shared.lock();
        let id = match state.by_external.get(&external_user_id) {
            Some(id) => id.clone(),
            None => {
                // The WebSDK creates the applicant when the link names none yet.
                let applicant = new_applicant(external_user_id.clone(), level_name, &json!({}));
                let id = applicant.id.clone();
                state.insert(applicant);
                id
            }
        };
        let mut events = flow::submit(&mut state, &id, &config.client_id);
        let verdict = match action {
            Action::Approve => {
                flow::approve(&mut state, &id, &config.document_country, &config.client_id)
            }
            Action::RejectRetry => flow::review(
                &mut state,
                &id,
                json!({
                    "reviewAnswer": "RED",
                    "reviewRejectType": "RETRY",
                    "rejectLabels": ["UNSATISFACTORY_PHOTOS"],
                    "moderationComment": "The photos of your document are not readable. Please upload them again.",
                }),
                &config.document_country,
                &config.client_id,
            ),
            Action::RejectFinal => flow::review(
                &mut state,
                &id,
                json!({
                    "reviewAnswer": "RED",
                    "reviewRejectType": "FINAL",
                    "rejectLabels": ["FORGERY"],
                    "clientComment": "Suspected forged document.",
                }),
                &config.document_country,
                &config.client_id,
            ),
            Action::AmlHit => {
                flow::add_hit(&mut state, &id);
                flow::hold(&mut state, &id, &config.client_id)
            }
        };
        events.extend(verdict);
        events
    };
    dispatch(&shared, events);
    page(
        StatusCode::OK,
        "Thank you",
        &format!(
            "<p>Submitted: <strong>{}</strong>. You can close this page.</p>",
            action.label()
        ),
    )
}
