//! The use cases of a firm's webhook endpoints (the CRM API, the admin page and the CLI drive the
//! same ones), their delivery log and replays, and the firm's event feed.

use std::sync::Arc;

use time::Duration;
use tracing::instrument;
use uuid::Uuid;

use crate::events::NotificationType;
use crate::ids::FirmId;
use crate::ports::{
    Clock, Credentials, DeliveryQueue, EventFeed, FeedEvent, FeedPosition, IdGenerator,
    InfrastructureError, WebhookDelivery, WebhookEndpoint, WebhookEndpointId, WebhookStore,
};

/// The longest endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// The longest endpoint description accepted, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 500;

/// Every notification type an endpoint can ask for, in the contract's order.
pub const NOTIFICATION_TYPES: [NotificationType; 4] = [
    NotificationType::Created,
    NotificationType::Updated,
    NotificationType::KycStatusChanged,
    NotificationType::AmlStatusChanged,
];

/// The ports the webhook use cases drive.
#[derive(Clone)]
pub struct WebhookPorts {
    /// Endpoints and the delivery log.
    pub endpoints: Arc<dyn WebhookStore>,
    /// The delivery queue (replays).
    pub queue: Arc<dyn DeliveryQueue>,
    /// The firms' event feeds.
    pub feed: Arc<dyn EventFeed>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Endpoint ids.
    pub ids: Arc<dyn IdGenerator>,
    /// Signing secrets.
    pub credentials: Arc<dyn Credentials>,
}

/// A new endpoint, as an admin or a CRM asks for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewEndpoint {
    /// Where to POST.
    pub url: String,
    /// A note.
    pub description: Option<String>,
    /// The types wanted; `None` or empty: all.
    pub events: Option<Vec<String>>,
}

/// A change to an endpoint; each `None` leaves its field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointChanges {
    /// A new URL.
    pub url: Option<String>,
    /// A new description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
    /// New types (empty: all).
    pub events: Option<Vec<String>>,
    /// Enable (after a `410 Gone`, say) or disable it.
    pub enabled: Option<bool>,
}

/// Why a webhook request was refused. Each message is a sentence a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A field is invalid.
    #[error("{message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        message: String,
    },
    /// No such endpoint in this firm (another firm's are never found).
    #[error("There is no such webhook endpoint in this firm.")]
    EndpointNotFound,
    /// No such event for this endpoint.
    #[error("This endpoint was never sent an event with this id.")]
    EventNotFound,
    /// Infrastructure failure.
    #[error(transparent)]
    Infrastructure(#[from] InfrastructureError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> WebhookError {
    WebhookError::Invalid {
        field,
        message: message.into(),
    }
}

/// The URL, checked: absolute `https://` (or `http://`, for receivers on a private network),
/// with a host, no credentials and no fragment, at most [`MAX_URL_LEN`] bytes.
///
/// # Errors
/// [`WebhookError::Invalid`] on `url`.
pub fn check_url(text: &str) -> Result<String, WebhookError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid("url", "The url is required."));
    }
    if text.len() > MAX_URL_LEN {
        return Err(invalid(
            "url",
            format!("The url must be at most {MAX_URL_LEN} characters."),
        ));
    }
    let parsed = url::Url::parse(text).map_err(|_| {
        invalid(
            "url",
            "The url must be an absolute http:// or https:// URL.",
        )
    })?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid(
            "url",
            "The url must be an absolute http:// or https:// URL with a host.",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "url",
            "The url must not carry a user name or password.",
        ));
    }
    if parsed.fragment().is_some() {
        return Err(invalid("url", "The url must not have a #fragment."));
    }
    Ok(parsed.into())
}

/// The description, trimmed (empty: none), at most [`MAX_DESCRIPTION_LEN`] characters.
///
/// # Errors
/// [`WebhookError::Invalid`] on `description`.
pub fn check_description(text: Option<&str>) -> Result<Option<String>, WebhookError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(invalid(
            "description",
            format!("The description must be at most {MAX_DESCRIPTION_LEN} characters."),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(invalid(
            "description",
            "The description must not contain control characters.",
        ));
    }
    Ok(Some(text.to_owned()))
}

/// The types, checked and in the contract's order without repeats (empty: all).
///
/// # Errors
/// [`WebhookError::Invalid`] on `events` naming an unknown type.
pub fn check_events(events: &[String]) -> Result<Vec<String>, WebhookError> {
    for event in events {
        if !NOTIFICATION_TYPES.iter().any(|t| t.as_str() == event) {
            return Err(invalid(
                "events",
                format!(
                    "Unknown event type `{event}`; expected some of {}.",
                    NOTIFICATION_TYPES.map(NotificationType::as_str).join(", ")
                ),
            ));
        }
    }
    Ok(NOTIFICATION_TYPES
        .iter()
        .map(|t| t.as_str())
        .filter(|t| events.iter().any(|e| e == t))
        .map(str::to_owned)
        .collect())
}

/// The use cases of a firm's webhook endpoints and event feed.
#[derive(Clone)]
pub struct WebhookService {
    ports: WebhookPorts,
    secret_overlap: Duration,
}

impl WebhookService {
    /// Wires the ports; a rotated secret keeps signing beside the new one for `secret_overlap`.
    pub fn new(ports: WebhookPorts, secret_overlap: Duration) -> Self {
        Self {
            ports,
            secret_overlap,
        }
    }

    /// Registers an endpoint of `firm`, enabled, with a fresh secret. It receives every
    /// notification written from now on that it wants.
    ///
    /// # Errors
    /// [`WebhookError::Invalid`] for a bad field; nothing is stored.
    #[instrument(skip_all, fields(firm_id = %firm), err(level = "info"))]
    pub async fn create(
        &self,
        firm: FirmId,
        new: NewEndpoint,
    ) -> Result<WebhookEndpoint, WebhookError> {
        let endpoint = WebhookEndpoint {
            id: self.ports.ids.webhook_endpoint_id(),
            firm_id: firm,
            url: check_url(&new.url)?,
            description: check_description(new.description.as_deref())?,
            event_types: check_events(new.events.as_deref().unwrap_or_default())?,
            secret: self.ports.credentials.mint_webhook_secret(),
            previous_secret: None,
            previous_secret_expires_at: None,
            disabled_at: None,
            created_at: self.ports.clock.now(),
        };
        self.ports.endpoints.create_endpoint(&endpoint).await?;
        Ok(endpoint)
    }

    /// The firm's endpoints, oldest first.
    ///
    /// # Errors
    /// [`WebhookError::Infrastructure`] only.
    pub async fn list(&self, firm: FirmId) -> Result<Vec<WebhookEndpoint>, WebhookError> {
        Ok(self.ports.endpoints.list_endpoints(firm).await?)
    }

    /// The firm's endpoint.
    ///
    /// # Errors
    /// [`WebhookError::EndpointNotFound`] for an unknown or deleted one, or another firm's.
    pub async fn get(
        &self,
        firm: FirmId,
        id: WebhookEndpointId,
    ) -> Result<WebhookEndpoint, WebhookError> {
        self.ports
            .endpoints
            .get_endpoint(firm, id)
            .await?
            .ok_or(WebhookError::EndpointNotFound)
    }

    /// Applies `changes` to the firm's endpoint. Enabling it resumes delivery of the messages
    /// that waited while it was disabled.
    ///
    /// # Errors
    /// [`WebhookError::EndpointNotFound`], [`WebhookError::Invalid`]; on error nothing changes.
    #[instrument(skip_all, fields(firm_id = %firm, endpoint_id = %id), err(level = "info"))]
    pub async fn update(
        &self,
        firm: FirmId,
        id: WebhookEndpointId,
        changes: EndpointChanges,
    ) -> Result<WebhookEndpoint, WebhookError> {
        let mut endpoint = self.get(firm, id).await?;
        if let Some(url) = &changes.url {
            endpoint.url = check_url(url)?;
        }
        if let Some(description) = &changes.description {
            endpoint.description = check_description(description.as_deref())?;
        }
        if let Some(events) = &changes.events {
            endpoint.event_types = check_events(events)?;
        }
        match changes.enabled {
            Some(true) => endpoint.disabled_at = None,
            Some(false) if endpoint.disabled_at.is_none() => {
                endpoint.disabled_at = Some(self.ports.clock.now());
            }
            _ => {}
        }
        self.store(&endpoint).await?;
        Ok(endpoint)
    }

    /// Deletes the firm's endpoint: nothing more is sent to it; its log is kept.
    ///
    /// # Errors
    /// [`WebhookError::EndpointNotFound`].
    #[instrument(skip_all, fields(firm_id = %firm, endpoint_id = %id), err(level = "info"))]
    pub async fn delete(&self, firm: FirmId, id: WebhookEndpointId) -> Result<(), WebhookError> {
        let now = self.ports.clock.now();
        if self.ports.endpoints.delete_endpoint(firm, id, now).await? {
            Ok(())
        } else {
            Err(WebhookError::EndpointNotFound)
        }
    }

    /// Gives the firm's endpoint a new secret; the one it replaces keeps signing beside it (two
    /// signatures in `webhook-signature`) for the overlap, so the receiver can switch without
    /// losing a message. Returns the endpoint with the new secret.
    ///
    /// # Errors
    /// [`WebhookError::EndpointNotFound`].
    #[instrument(skip_all, fields(firm_id = %firm, endpoint_id = %id), err(level = "info"))]
    pub async fn rotate_secret(
        &self,
        firm: FirmId,
        id: WebhookEndpointId,
    ) -> Result<WebhookEndpoint, WebhookError> {
        let mut endpoint = self.get(firm, id).await?;
        let now = self.ports.clock.now();
        let fresh = self.ports.credentials.mint_webhook_secret();
        endpoint.previous_secret = Some(std::mem::replace(&mut endpoint.secret, fresh));
        endpoint.previous_secret_expires_at = Some(now + self.secret_overlap);
        self.store(&endpoint).await?;
        Ok(endpoint)
    }

    async fn store(&self, endpoint: &WebhookEndpoint) -> Result<(), WebhookError> {
        if self.ports.endpoints.update_endpoint(endpoint).await? {
            Ok(())
        } else {
            Err(WebhookError::EndpointNotFound)
        }
    }

    /// The newest `limit` attempts to the firm's endpoint, newest first.
    ///
    /// # Errors
    /// [`WebhookError::EndpointNotFound`].
    pub async fn deliveries(
        &self,
        firm: FirmId,
        id: WebhookEndpointId,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, WebhookError> {
        self.get(firm, id).await?;
        Ok(self
            .ports
            .endpoints
            .list_deliveries(firm, id, limit)
            .await?)
    }

    /// Sends the event `event` to the firm's endpoint again (same `webhook-id`), behind that
    /// customer's messages already waiting.
    ///
    /// # Errors
    /// [`WebhookError::EndpointNotFound`]; [`WebhookError::EventNotFound`] when the endpoint
    /// was never sent that event.
    #[instrument(skip_all, fields(firm_id = %firm, endpoint_id = %id), err(level = "info"))]
    pub async fn replay(
        &self,
        firm: FirmId,
        id: WebhookEndpointId,
        event: Uuid,
    ) -> Result<(), WebhookError> {
        self.get(firm, id).await?;
        let now = self.ports.clock.now();
        if self.ports.queue.replay(firm, id, event, now).await? {
            Ok(())
        } else {
            Err(WebhookError::EventNotFound)
        }
    }

    /// Up to `limit` of the firm's events after `after`, in commit order.
    ///
    /// # Errors
    /// [`WebhookError::Infrastructure`] only.
    pub async fn events(
        &self,
        firm: FirmId,
        after: Option<FeedPosition>,
        limit: u32,
    ) -> Result<Vec<FeedEvent>, WebhookError> {
        Ok(self.ports.feed.read_events(firm, after, limit).await?)
    }
}
