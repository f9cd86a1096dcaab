//! The OpenAPI 3.1 document of the CRM API, generated from the handlers' annotations and the DTOs
//! (utoipa), served at `/api/v1/openapi.json`. A router test checks that every operation it lists
//! is served, and that nothing else is.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::server::Server;
use utoipa::{Modify, OpenApi};

use crate::crm::dto::{
    AmlDto, AmlFlagsDto, CrmDto, CustomerDto, CustomerListDto, IdentityDto, PatchCustomerRequest,
    RiskRequest, UpsertCustomerRequest,
};
use crate::crm::webhooks::{
    CreateWebhookEndpointRequest, EventDto, EventListDto, EventTypeName, PreviousDto,
    ReplayRequest, UpdateWebhookEndpointRequest, WebhookDeliveryDto, WebhookDeliveryListDto,
    WebhookEndpointDto, WebhookEndpointListDto,
};
use crate::crm::{routes, webhooks};
use crate::error::{ErrorBody, ErrorEnvelope};

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("kyc_live_… or kyc_test_…")
                    .description(Some(
                        "An API key of your firm. Scopes: customers:read, customers:write, aml:read, webhooks:manage.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The CRM API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "KYC CRM API",
        version = "1",
        description = "Push customers in, read KYC/AML status back. Compatible with the Instant Compliance v1 customer API. Request bodies are camelCase, responses snake_case; every error is {\"error\":{\"code\",\"message\",\"details\"?}}."
    ),
    paths(
        routes::upsert_customer,
        routes::list_customers,
        routes::get_customer,
        routes::patch_customer,
        routes::get_customer_aml,
        routes::start_verification,
        webhooks::list_events,
        webhooks::create_endpoint,
        webhooks::list_endpoints,
        webhooks::get_endpoint,
        webhooks::update_endpoint,
        webhooks::delete_endpoint,
        webhooks::rotate_secret,
        webhooks::list_deliveries,
        webhooks::replay,
    ),
    components(schemas(
        CustomerDto,
        CustomerListDto,
        AmlDto,
        AmlFlagsDto,
        CrmDto,
        IdentityDto,
        UpsertCustomerRequest,
        PatchCustomerRequest,
        RiskRequest,
        ErrorEnvelope,
        ErrorBody,
        EventDto,
        EventListDto,
        PreviousDto,
        EventTypeName,
        WebhookEndpointDto,
        WebhookEndpointListDto,
        WebhookDeliveryDto,
        WebhookDeliveryListDto,
        CreateWebhookEndpointRequest,
        UpdateWebhookEndpointRequest,
        ReplayRequest,
    )),
    modifiers(&BearerKey),
    tags(
        (name = "customers", description = "Customers and their KYC/AML status"),
        (name = "events", description = "The ordered feed of the firm's events"),
        (name = "webhooks", description = "Signed outbound webhooks (Standard Webhooks): endpoints, delivery logs, replays")
    )
)]
pub struct CrmApiDoc;

/// The document, with `public_url` as its server.
pub fn document(public_url: &str) -> utoipa::openapi::OpenApi {
    let mut doc = CrmApiDoc::openapi();
    doc.servers = Some(vec![Server::new(public_url.trim_end_matches('/'))]);
    doc
}

/// The document as JSON text.
pub fn document_json(public_url: &str) -> String {
    document(public_url)
        .to_json()
        .unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_camel_case_requests_and_snake_case_responses() {
        let json: serde_json::Value =
            serde_json::from_str(&document_json("http://127.0.0.1:8080")).unwrap();
        assert!(json["openapi"].as_str().unwrap().starts_with("3.1"));
        let schemas = &json["components"]["schemas"];
        let upsert = schemas["UpsertCustomerRequest"]["properties"]
            .as_object()
            .unwrap();
        assert!(upsert.contains_key("externalId") && upsert.contains_key("fullName"));
        let customer = schemas["CustomerDto"]["properties"].as_object().unwrap();
        assert!(customer.contains_key("external_id") && customer.contains_key("kyc_status"));
        assert!(customer.contains_key("type"));
        assert_eq!(json["servers"][0]["url"], "http://127.0.0.1:8080");
        let statuses = customer["kyc_status"]["enum"].as_array().unwrap();
        assert_eq!(statuses.len(), 7);
        assert!(statuses.contains(&serde_json::json!("AWAITING_RESUBMISSION")));
        assert_eq!(customer["created_at"]["format"], "date-time");
        let mut required: Vec<&str> = schemas["UpsertCustomerRequest"]["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        required.sort_unstable();
        assert_eq!(required, ["email", "fullName"]);
    }
}
