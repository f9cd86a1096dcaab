//! Posted forms (`application/x-www-form-urlencoded`) as a list of fields, which keeps repeated
//! names (the scopes of a new API key are checkboxes of one name).

use axum::extract::{FromRequest, Request};
use bytes::Bytes;

use crate::error::ApiError;

/// The fields of a posted form, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    /// Reads a form body; a body that is not a form reads as no fields.
    pub(crate) fn parse(body: &[u8]) -> Self {
        Self(serde_urlencoded::from_bytes(body).unwrap_or_default())
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }

    /// The first value of `name`, trimmed, or empty.
    pub(crate) fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().trim().to_owned()
    }

    /// The trimmed value of `name`, or `None` when it is missing or blank.
    pub(crate) fn optional(&self, name: &str) -> Option<String> {
        Some(self.text(name)).filter(|value| !value.is_empty())
    }

    /// Every value of `name`.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// A yes/no radio button: `Some(true)` for `yes`, `Some(false)` for `no`, else `None`.
    pub(crate) fn yes_no(&self, name: &str) -> Option<bool> {
        match self.get(name) {
            Some("yes") => Some(true),
            Some("no") => Some(false),
            _ => None,
        }
    }
}

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|_| ApiError::invalid_request("The form could not be read."))?;
        Ok(Self::parse(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_keep_every_value_and_blank_fields_read_as_missing() {
        let fields = Fields::parse(b"scopes=a&scopes=b&label=+CRM+&phone=&designated=yes");
        assert_eq!(fields.all("scopes"), vec!["a", "b"]);
        assert_eq!(fields.text("label"), "CRM");
        assert_eq!(fields.optional("phone"), None);
        assert_eq!(fields.yes_no("designated"), Some(true));
        assert_eq!(fields.yes_no("missing"), None);
    }

    #[test]
    fn a_body_that_is_not_a_form_has_no_fields() {
        assert!(Fields::parse(b"%%%").get("csrf_token").is_none());
    }
}
