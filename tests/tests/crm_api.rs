//! The CRM API over HTTP against the real binary, on SQLite and on PostgreSQL: the upsert table,
//! idempotency, listing and polling, scopes, authentication, tenancy, rate limits and data
//! minimisation (api.md §1).

use std::collections::BTreeSet;

use kyc_e2e::{Backend, Server, both_backends};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ALL_SCOPES: &str = "customers:read,customers:write,aml:read";

struct Crm<'a> {
    server: &'a Server,
    key: String,
    client: reqwest::Client,
}

impl<'a> Crm<'a> {
    fn new(server: &'a Server, key: String) -> Self {
        Self {
            server,
            key,
            client: server.client(),
        }
    }

    fn for_new_firm(server: &'a Server, scopes: &str) -> (Self, String) {
        let firm = server.create_firm("Acme Accounting");
        let key = server.create_api_key(&firm, scopes);
        (Self::new(server, key), firm)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let response = request
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        assert_no_withheld_fields(&body);
        if !status.is_success() {
            assert!(
                body["error"]["code"].is_string(),
                "{status} without the error envelope: {body}"
            );
            assert!(body["error"]["message"].is_string(), "{body}");
        }
        assert!(
            headers.contains_key("x-request-id"),
            "every response carries X-Request-Id"
        );
        (status, headers, body)
    }

    async fn post(&self, body: Value) -> (StatusCode, Value) {
        let (status, _, body) = self
            .send(
                self.client
                    .post(self.server.url("/api/v1/customers"))
                    .json(&body),
            )
            .await;
        (status, body)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.send(self.client.get(self.server.url(path))).await;
        (status, body)
    }

    async fn patch(&self, id: &str, body: Value) -> (StatusCode, Value) {
        let url = self.server.url(&format!("/api/v1/customers/{id}"));
        let (status, _, body) = self.send(self.client.patch(url).json(&body)).await;
        (status, body)
    }
}

/// Keys that must never leave through the CRM API, at any depth.
fn assert_no_withheld_fields(body: &Value) {
    const WITHHELD: [&str; 12] = [
        "date_of_birth",
        "dob",
        "verified_date_of_birth",
        "address",
        "verified_address",
        "applicant_id",
        "sumsub_applicant_id",
        "hits",
        "aml_screening_data",
        "raw",
        "kyc_rejection_reason",
        "moderation_comment",
    ];
    match body {
        Value::Object(map) => {
            for (key, value) in map {
                let lower = key.to_lowercase();
                assert!(
                    !WITHHELD.contains(&lower.as_str()),
                    "withheld field {key} in a response"
                );
                assert!(
                    !lower.contains("applicant"),
                    "provider ids must not leak: {key}"
                );
                assert_no_withheld_fields(value);
            }
        }
        Value::Array(items) => items.iter().for_each(assert_no_withheld_fields),
        _ => {}
    }
}

fn jane(external_id: Option<&str>, email: &str) -> Value {
    let mut body = json!({"fullName": "Jane Doe", "email": email, "phone": "+61400000000"});
    if let Some(external_id) = external_id {
        body["externalId"] = json!(external_id);
    }
    body
}

both_backends! {
    async fn every_row_of_the_upsert_table(server: &Server) {
        let (crm, _) = Crm::for_new_firm(server, ALL_SCOPES);
        // Nothing matches: create, NOT_STARTED, INTEGRATION, snake_case out.
        let (status, created) = crm.post(jane(Some("crm-1"), "jane@example.com")).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["external_id"], "crm-1");
        assert_eq!(created["full_name"], "Jane Doe");
        assert_eq!(created["kyc_status"], "NOT_STARTED");
        assert_eq!(created["added_via"], "INTEGRATION");
        assert_eq!(created["type"], "INDIVIDUAL");
        assert_eq!(created["identity"], Value::Null);
        assert_eq!(created["aml"]["status"], "NOT_SCREENED");
        assert_eq!(created["crm"]["label"], "Awaiting back office.");
        let id = created["id"].as_str().unwrap().to_owned();
        // Same externalId: update that record.
        let (status, updated) = crm.post(json!({"externalId": "crm-1", "fullName": "Jane Q. Doe", "email": "jane@example.com"})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(updated["id"], id.as_str());
        assert_eq!(updated["full_name"], "Jane Q. Doe");
        // No externalId, email matches: update that record.
        let (status, by_email) = crm.post(json!({"fullName": "Jane Doe", "email": "JANE@example.com"})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(by_email["id"], id.as_str());
        // A record without externalId, then adopted by a new externalId with its email.
        let (status, bare) = crm.post(jane(None, "sam@example.com")).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, adopted) = crm.post(jane(Some("crm-2"), "sam@example.com")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(adopted["id"], bare["id"]);
        assert_eq!(adopted["external_id"], "crm-2");
        // A new externalId whose email belongs to a record with a different externalId: 409.
        let (status, conflict) = crm.post(jane(Some("crm-3"), "sam@example.com")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
        assert_eq!(conflict["error"]["code"], "conflict");
        let (_, list) = crm.get("/api/v1/customers?include=total_count").await;
        assert_eq!(list["total_count"], 2, "the conflict created nothing");
    }

    async fn invalid_input_is_refused_with_the_field_and_changes_nothing(server: &Server) {
        let (crm, _) = Crm::for_new_firm(server, ALL_SCOPES);
        for (body, field) in [
            (json!({"fullName": "Jane", "email": "not-an-email"}), "email"),
            (json!({"fullName": "", "email": "a@b.co"}), "fullName"),
            (json!({"email": "a@b.co"}), "fullName"),
            (json!({"fullName": "Jane", "email": "a@b.co", "phone": "0400 000 000"}), "phone"),
            (json!({"fullName": "Jane", "email": "a@b.co", "externalId": "x".repeat(256)}), "externalId"),
        ] {
            let (status, error) = crm.post(body).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
            assert_eq!(error["error"]["code"], "validation_failed");
            assert_eq!(error["error"]["details"]["field"], field, "{error}");
        }
        let response = crm.client.post(server.url("/api/v1/customers")).bearer_auth(&crm.key)
            .header("content-type", "application/json").body("{not json").send().await.unwrap();
        assert!(matches!(response.status().as_u16(), 400 | 422));
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["code"].is_string());
        let (_, list) = crm.get("/api/v1/customers?include=total_count").await;
        assert_eq!(list["total_count"], 0);
    }

    async fn concurrent_upserts_of_one_external_id_create_one_record(server: &Server) {
        let (crm, _) = Crm::for_new_firm(server, ALL_SCOPES);
        let crm = std::sync::Arc::new(crm);
        let requests = (0..20).map(|i| {
            let client = crm.client.clone();
            let (url, key) = (server.url("/api/v1/customers"), crm.key.clone());
            tokio::spawn(async move {
                client.post(url).bearer_auth(key)
                    .json(&json!({"externalId": "crm-race", "fullName": format!("Racer {i}"), "email": "race@example.com"}))
                    .send().await.unwrap().status()
            })
        });
        let mut created = 0;
        for request in requests {
            let status = request.await.unwrap();
            assert!(status == StatusCode::CREATED || status == StatusCode::OK, "{status}");
            created += usize::from(status == StatusCode::CREATED);
        }
        assert_eq!(created, 1);
        let (_, list) = crm.get("/api/v1/customers?external_id=crm-race&include=total_count").await;
        assert_eq!(list["total_count"], 1);
    }

    async fn idempotency_keys_replay_conflict_and_scope(server: &Server) {
        let (crm, _) = Crm::for_new_firm(server, ALL_SCOPES);
        let post = |key: &str, body: Value| {
            crm.client.post(server.url("/api/v1/customers")).bearer_auth(&crm.key).header("Idempotency-Key", key).json(&body)
        };
        let (first_status, first_headers, first) = crm.send(post("k-1", jane(Some("crm-i"), "i@example.com"))).await;
        assert_eq!(first_status, StatusCode::CREATED);
        assert!(!first_headers.contains_key("idempotent-replayed"));
        let (status, headers, replay) = crm.send(post("k-1", jane(Some("crm-i"), "i@example.com"))).await;
        assert_eq!(status, StatusCode::CREATED, "replayed verbatim, original status");
        assert_eq!(headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
        assert_eq!(replay, first);
        let (status, _, conflict) = crm.send(post("k-1", jane(Some("crm-other"), "o@example.com"))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(conflict["error"]["code"], "idempotency_conflict");
        // The same key on another path does not collide.
        let id = first["id"].as_str().unwrap();
        let patch = crm.client.patch(server.url(&format!("/api/v1/customers/{id}"))).bearer_auth(&crm.key)
            .header("Idempotency-Key", "k-1").json(&json!({"phone": "+61400000009"}));
        let (status, _, patched) = crm.send(patch).await;
        assert_eq!(status, StatusCode::OK, "{patched}");
        assert_eq!(patched["phone"], "+61400000009");
        let (status, _, _) = crm.send(post(&"k".repeat(256), jane(None, "long@example.com"))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    async fn listing_filters_limits_and_total_count(server: &Server) {
        let (crm, _) = Crm::for_new_firm(server, ALL_SCOPES);
        for i in 0..7 {
            crm.post(jane(Some(&format!("crm-{i}")), &format!("p{i}@example.com"))).await;
        }
        let (status, page) = crm.get("/api/v1/customers?limit=3&include=total_count").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["object"], "list");
        assert_eq!(page["limit"], 3);
        assert_eq!(page["data"].as_array().unwrap().len(), 3);
        assert_eq!(page["has_more"], true);
        assert_eq!(page["total_count"], 7);
        let (_, plain) = crm.get("/api/v1/customers").await;
        assert_eq!(plain["limit"], 50);
        assert!(plain.get("total_count").is_none(), "total_count only when asked");
        for bad in ["limit=0", "limit=101", "status=NOPE", "aml_status=NOPE", "updated_since=yesterday"] {
            let (status, error) = crm.get(&format!("/api/v1/customers?{bad}")).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {error}");
        }
        let (_, by_status) = crm.get("/api/v1/customers?status=NOT_STARTED&aml_status=NOT_SCREENED&include=total_count").await;
        assert_eq!(by_status["total_count"], 7);
        let (_, none) = crm.get("/api/v1/customers?status=VERIFIED&include=total_count").await;
        assert_eq!(none["total_count"], 0);
        assert_eq!(none["data"], json!([]));
        assert_eq!(none["next_cursor"], Value::Null);
        let (_, one) = crm.get("/api/v1/customers?external_id=crm-4").await;
        assert_eq!(one["data"][0]["external_id"], "crm-4");
        // A cursor is bound to its filters.
        let cursor = page["next_cursor"].as_str().unwrap();
        let (status, _) = crm.get(&format!("/api/v1/customers?limit=3&status=NOT_STARTED&cursor={cursor}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    async fn walking_pages_while_writes_happen_skips_and_repeats_nothing(server: &Server) {
        let (crm, _) = Crm::for_new_firm(server, ALL_SCOPES);
        let mut before = BTreeSet::new();
        for i in 0..25 {
            let (_, c) = crm.post(jane(Some(&format!("w-{i}")), &format!("w{i}@example.com"))).await;
            before.insert(c["id"].as_str().unwrap().to_owned());
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut writes = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/customers?limit=4&cursor={c}"),
                None => "/api/v1/customers?limit=4".to_owned(),
            };
            let (status, page) = crm.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            seen.extend(page["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()));
            // Writers between pages: updates of earlier records and new records.
            writes += 1;
            crm.post(json!({"externalId": format!("w-{}", writes % 25), "fullName": format!("Renamed {writes}"), "email": format!("w{}@example.com", writes % 25)})).await;
            crm.post(jane(Some(&format!("new-{writes}")), &format!("new{writes}@example.com"))).await;
            if page["has_more"] == false {
                break;
            }
            cursor = Some(page["next_cursor"].as_str().unwrap().to_owned());
        }
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "a record was repeated");
        assert!(before.is_subset(&unique), "a record that existed before the walk was skipped");
    }

    async fn polling_with_a_watermark_misses_no_change(server: &Server) {
        let (crm, _) = Crm::for_new_firm(server, ALL_SCOPES);
        let (_, first) = crm.post(jane(Some("poll-1"), "poll1@example.com")).await;
        let watermark = first["updated_at"].as_str().unwrap().to_owned();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        crm.post(jane(Some("poll-2"), "poll2@example.com")).await;
        crm.post(json!({"externalId": "poll-1", "fullName": "Changed", "email": "poll1@example.com"})).await;
        let (status, page) = crm.get(&format!("/api/v1/customers?updated_since={watermark}&limit=100")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let ids: BTreeSet<_> = page["data"].as_array().unwrap().iter().map(|c| c["external_id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids, BTreeSet::from(["poll-1".to_owned(), "poll-2".to_owned()]));
    }

    async fn a_customer_is_found_by_uuid_or_external_id_and_patched(server: &Server) {
        let (crm, _) = Crm::for_new_firm(server, ALL_SCOPES);
        let (_, created) = crm.post(jane(Some("hubspot:42"), "find@example.com")).await;
        let id = created["id"].as_str().unwrap();
        let (status, by_id) = crm.get(&format!("/api/v1/customers/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        let (status, by_external) = crm.get("/api/v1/customers/hubspot:42").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(by_id, by_external);
        let (status, patched) = crm.patch("hubspot:42", json!({
            "fullName": "Jane Patched",
            "risk": {"isNewCustomer": true, "isDesignatedService": true, "handlesCashOrCrypto": false}
        })).await;
        assert_eq!(status, StatusCode::OK, "{patched}");
        assert_eq!(patched["full_name"], "Jane Patched");
        assert_eq!(patched["kyc_status"], "NOT_STARTED", "proposed risk answers never move the status");
        for forbidden in [json!({"type": "SOLE_TRADER"}), json!({"externalId": "other"}), json!({"kycStatus": "VERIFIED"})] {
            let (status, error) = crm.patch(id, forbidden.clone()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{forbidden}: {error}");
        }
        let (status, aml) = crm.get(&format!("/api/v1/customers/{id}/aml")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(aml["status"], "NOT_SCREENED");
        assert_eq!(aml["flags"], json!({"pep": false, "sanctions": false, "adverse_media": false, "terrorism": false}));
    }

    async fn scopes_authentication_and_tenancy(server: &Server) {
        let (writer, firm) = Crm::for_new_firm(server, ALL_SCOPES);
        let (_, created) = writer.post(jane(Some("crm-s"), "s@example.com")).await;
        let id = created["id"].as_str().unwrap().to_owned();
        // An aml:read key reads /aml and nothing else.
        let reporting = Crm::new(server, server.create_api_key(&firm, "aml:read"));
        let (status, _) = reporting.get(&format!("/api/v1/customers/{id}/aml")).await;
        assert_eq!(status, StatusCode::OK);
        for path in [format!("/api/v1/customers/{id}"), "/api/v1/customers".to_owned()] {
            let (status, error) = reporting.get(&path).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(error["error"]["code"], "insufficient_scope");
        }
        let (status, _) = reporting.post(jane(None, "x@example.com")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // No key can start a verification.
        let (status, _, error) = writer.send(writer.client.post(server.url(&format!("/api/v1/customers/{id}/verification")))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(error["error"]["code"], "human_required");
        assert_eq!(error["error"]["message"], "Verification can only be started by a person in the back office.");
        // Missing and unknown keys.
        let response = writer.client.get(server.url("/api/v1/customers")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let unknown = Crm::new(server, format!("kyc_live_{}", "x".repeat(40)));
        let (status, error) = unknown.get("/api/v1/customers").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(error["error"]["code"], "unauthorized");
        // Another firm sees nothing of this one: 404, never 403.
        let (other, _) = Crm::for_new_firm(server, ALL_SCOPES);
        for path in [format!("/api/v1/customers/{id}"), format!("/api/v1/customers/{id}/aml"), "/api/v1/customers/crm-s".to_owned()] {
            let (status, error) = other.get(&path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(error["error"]["code"], "not_found");
        }
        let (status, _) = other.patch(&id, json!({"phone": "+61400000001"})).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, list) = other.get("/api/v1/customers?include=total_count").await;
        assert_eq!(list["total_count"], 0);
    }

    async fn unknown_routes_and_methods_answer_with_the_envelope(server: &Server) {
        let (crm, _) = Crm::for_new_firm(server, ALL_SCOPES);
        let (status, error) = crm.get("/api/v1/nothing-here").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error["error"]["code"], "not_found");
        let (status, _, _) = crm.send(crm.client.delete(server.url("/api/v1/customers"))).await;
        assert!(status.is_client_error());
        let big = json!({"fullName": "Jane", "email": "big@example.com", "externalId": "b", "padding": "x".repeat(3 * 1024 * 1024)});
        let (status, _) = crm.post(big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let Some(server) = Server::start(Backend::Sqlite, &[("KYC_RATE_LIMIT_PER_MINUTE", "3")]).await
    else {
        return;
    };
    let (crm, _) = Crm::for_new_firm(&server, ALL_SCOPES);
    let mut limited = None;
    for _ in 0..6 {
        let response = crm
            .client
            .get(server.url("/api/v1/customers"))
            .bearer_auth(&crm.key)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            limited = Some((retry_after, response.json::<Value>().await.unwrap()));
            break;
        }
    }
    let (retry_after, body) = limited.expect("the fourth request in a minute is limited");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok()));
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["details"]["limit"], 3);
    assert_eq!(body["error"]["details"]["window_seconds"], 60);
    server.stop().await;
}

mod arranged_through_storage {
    use kyc_domain::ports::ApiKeyRecord;
    use kyc_domain::prelude::*;
    use kyc_e2e::{Backend, Server, sha256_hex};
    use reqwest::StatusCode;
    use serde_json::{Value, json};
    use time::OffsetDateTime;

    use super::{ALL_SCOPES, Crm, jane};

    async fn run(backend: Backend) {
        let Some(server) = Server::start(backend, &[]).await else {
            return;
        };
        identity_freezes_once_verified(&server).await;
        revoked_and_expired_keys_are_unauthorized(&server).await;
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_sqlite() {
        run(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_postgres() {
        run(Backend::Postgres).await;
    }

    /// Drives a customer to VERIFIED through the domain's own moves, saved by the adapter.
    async fn verify(server: &Server, firm: &str, id: &str) {
        let storage = server.database.storage().await;
        let firm = FirmId::parse(firm).unwrap();
        let mut customer = storage
            .customers
            .get(firm, CustomerId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        let officer = Person {
            id: UserId::from_uuid(uuid::Uuid::from_u128(9)),
            email: Email::new("o@firm.example").unwrap(),
            role: Role::ComplianceOfficer,
        };
        let now = OffsetDateTime::now_utc();
        let answers = RiskAnswers {
            is_designated_service: true,
            handles_cash_or_crypto: false,
            is_new_customer: true,
        };
        let mut events = customer.confirm_risk(answers, &officer, now).unwrap();
        let (attempt, more) = customer
            .begin_verification(&officer, Credits::new(1), &ProviderLevels::default(), now)
            .unwrap();
        events.extend(more);
        events.extend(
            customer
                .complete_verification(
                    attempt,
                    ApplicantId::new("0123456789abcdef01234567").unwrap(),
                    "hash".into(),
                    &Actor::system("e2e"),
                    now,
                )
                .unwrap(),
        );
        let green = ProviderEvent {
            key: ProviderEventKey::new(format!("green-{id}")),
            applicant_id: None,
            external_user_id: None,
            created_at: now,
            kind: ProviderEventKind::Reviewed(ReviewVerdict {
                answer: ReviewAnswer::Green,
                reject_type: None,
                reject_labels: vec![],
            }),
        };
        events.extend(customer.apply_provider_event(attempt, &green, now).unwrap());
        storage
            .customers
            .save(&customer, &events, &[], None)
            .await
            .unwrap();
    }

    async fn identity_freezes_once_verified(server: &Server) {
        let (crm, firm) = Crm::for_new_firm(server, ALL_SCOPES);
        let (_, created) = crm.post(jane(Some("crm-v"), "v@example.com")).await;
        let id = created["id"].as_str().unwrap().to_owned();
        verify(server, &firm, &id).await;
        let (_, verified) = crm.get(&format!("/api/v1/customers/{id}")).await;
        assert_eq!(verified["kyc_status"], "VERIFIED");
        for change in [
            json!({"fullName": "Someone Else"}),
            json!({"email": "else@example.com"}),
        ] {
            let (status, error) = crm.patch(&id, change).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(error["error"]["code"], "validation_failed");
        }
        let (status, error) = crm.post(json!({"externalId": "crm-v", "fullName": "Someone Else", "email": "v@example.com"})).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "an upsert cannot change a frozen name either: {error}"
        );
        let (status, patched) = crm.patch(&id, json!({"phone": "+61400000002", "risk": {"isNewCustomer": false, "isDesignatedService": true, "handlesCashOrCrypto": true}})).await;
        assert_eq!(status, StatusCode::OK, "{patched}");
        assert_eq!(patched["phone"], "+61400000002");
        assert_eq!(patched["full_name"], "Jane Doe");
    }

    async fn revoked_and_expired_keys_are_unauthorized(server: &Server) {
        let firm_text = server.create_firm("Keys Pty Ltd");
        let firm = FirmId::parse(&firm_text).unwrap();
        let storage = server.database.storage().await;
        let revoked = server.create_api_key(&firm_text, ALL_SCOPES);
        let record = storage
            .api_keys
            .find_api_key_by_sha256(&sha256_hex(&revoked))
            .await
            .unwrap()
            .expect("stored by hash");
        assert!(!record.sha256.contains(&revoked) && record.prefix.len() == 12);
        let crm = Crm::new(server, revoked.clone());
        let (status, _) = crm.get("/api/v1/customers").await;
        assert_eq!(status, StatusCode::OK);
        storage
            .api_keys
            .revoke_api_key(firm, record.id, OffsetDateTime::now_utc())
            .await
            .unwrap();
        let (status, error) = crm.get("/api/v1/customers").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(error["error"]["code"], "unauthorized");

        let expired = format!("kyc_live_{}", "e".repeat(40));
        let now = OffsetDateTime::now_utc();
        storage
            .api_keys
            .create_api_key(&ApiKeyRecord {
                id: ApiKeyId::from_uuid(uuid::Uuid::new_v4()),
                firm_id: firm,
                label: "expired".into(),
                scopes: ALL_SCOPES.split(',').map(str::to_owned).collect(),
                prefix: expired[..12].to_owned(),
                last4: expired[expired.len() - 4..].to_owned(),
                sha256: sha256_hex(&expired),
                expires_at: Some(now - time::Duration::hours(1)),
                revoked_at: None,
                created_at: now - time::Duration::days(1),
            })
            .await
            .unwrap();
        let (status, error): (StatusCode, Value) =
            Crm::new(server, expired).get("/api/v1/customers").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(error["error"]["code"], "unauthorized");
    }
}
