//! The OpenAPI 3.1 document of the back-office JSON API, generated from the handlers'
//! annotations and the DTOs (utoipa), served at `/api/backoffice/openapi.json`. Scripts and
//! tools that drive the back office read it; the pages use the same routes.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::server::Server;
use utoipa::{Modify, OpenApi};

use super::dto::{
    AnswersDto, AttemptDto, AuditDto, ConfirmedDto, CreateCustomerRequest, CreditsDto,
    CustomerDetailDto, CustomerPageDto, DecisionRequest, DispositionRequest, HitDto, QuoteDto,
    RestartRequest, RiskDto, RiskRequest, StartRequest, StartedDto, StatementLineDto,
};
use super::session::{LoginDto, LoginRequest, UserDto};
use super::{routes, session};
use crate::error::{ErrorBody, ErrorEnvelope};

/// The session cookie and the CSRF token of state-changing requests.
struct SessionAuth;

impl Modify for SessionAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                session::SESSION_COOKIE,
                "The session cookie that POST /api/backoffice/session sets.",
            ))),
        );
        components.add_security_scheme(
            "csrf",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRF-Token",
                "The csrf_token of the login answer, on every state-changing request.",
            ))),
        );
    }
}

/// The back-office API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "KYC back-office API",
        version = "1",
        description = "What the back-office pages use: log in with email and password, then read and work the firm's customers. Every route but login needs the session cookie; every state-changing one also the X-CSRF-Token header. Bodies are snake_case; every error is {\"error\":{\"code\",\"message\",\"details\"?}}."
    ),
    paths(
        session::login,
        session::logout,
        routes::list_customers,
        routes::create_customer,
        routes::customer_detail,
        routes::confirm_risk,
        routes::quote,
        routes::start_verification,
        routes::set_disposition,
        routes::record_decision,
        routes::restart,
        routes::credits,
        routes::audit_export,
    ),
    components(schemas(
        LoginRequest,
        LoginDto,
        UserDto,
        CustomerPageDto,
        CustomerDetailDto,
        CreateCustomerRequest,
        RiskRequest,
        RiskDto,
        AnswersDto,
        ConfirmedDto,
        AttemptDto,
        HitDto,
        AuditDto,
        QuoteDto,
        StartRequest,
        StartedDto,
        DispositionRequest,
        DecisionRequest,
        RestartRequest,
        CreditsDto,
        StatementLineDto,
        ErrorEnvelope,
        ErrorBody,
    )),
    modifiers(&SessionAuth),
    tags(
        (name = "session", description = "Log in and out"),
        (name = "customers", description = "The firm's customers and their risk answers"),
        (name = "verification", description = "The price, Start Verification (billable) and restarts"),
        (name = "aml", description = "Dispositions of AML hits and the final decision"),
        (name = "credits", description = "Balance, holds and statement"),
        (name = "audit", description = "The firm's audit trail")
    )
)]
pub struct BackOfficeApiDoc;

/// The document as JSON text, with `public_url` as its server.
pub fn document_json(public_url: &str) -> String {
    let mut doc = BackOfficeApiDoc::openapi();
    doc.servers = Some(vec![Server::new(public_url.trim_end_matches('/'))]);
    doc.to_json().unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_states_the_constraints_the_handlers_enforce() {
        let json: serde_json::Value =
            serde_json::from_str(&document_json("http://127.0.0.1:8080")).unwrap();
        assert!(json["openapi"].as_str().unwrap().starts_with("3.1"));
        let schemas = &json["components"]["schemas"];
        let create = &schemas["CreateCustomerRequest"]["properties"];
        assert_eq!(create["full_name"]["maxLength"], 255);
        assert_eq!(create["phone"]["pattern"], r"^\+[1-9][0-9]{5,14}$");
        assert_eq!(
            schemas["DispositionRequest"]["properties"]["disposition"]["enum"],
            serde_json::json!(["FALSE_POSITIVE", "TRUE_MATCH"])
        );
        assert_eq!(
            schemas["DecisionRequest"]["properties"]["rationale"]["maxLength"],
            4000
        );
        let start = &json["paths"]["/api/backoffice/customers/{id}/verification"]["post"];
        let key = start["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .unwrap();
        assert_eq!(key["required"], true);
        for status in ["402", "409", "502", "503"] {
            assert!(start["responses"].get(status).is_some(), "{status}");
        }
        assert!(json["components"]["securitySchemes"]["session"].is_object());
    }
}
