//! Validated values. Each constructor enforces the rule that the contract states for the field, so
//! a value that exists is a value that is valid: adapters cannot build an invalid one by accident,
//! and deserialisation goes through the same constructor (`serde(try_from)`). The one exception is
//! a customer's state read back from storage, which holds only values that passed it already
//! (`stored`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value was refused. `field` is the name the CRM API uses for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    /// The field, as named in the API contract (`email`, `fullName`, …).
    pub field: &'static str,
    /// A sentence a person can act on.
    pub message: String,
}

impl ValidationError {
    /// A refusal of `field` with a readable reason.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

fn bounded_text(
    field: &'static str,
    text: String,
    max_chars: usize,
) -> Result<String, ValidationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ValidationError::new(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if trimmed.chars().count() > max_chars {
        return Err(ValidationError::new(
            field,
            format!("{field} must be at most {max_chars} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(if trimmed.len() == text.len() {
        text
    } else {
        trimmed.to_owned()
    })
}

macro_rules! text_value {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps the text (surrounding whitespace is dropped).
            ///
            /// # Errors
            /// [`ValidationError`] when empty, too long or containing control characters.
            pub fn new(text: impl Into<String>) -> Result<Self, ValidationError> {
                bounded_text($field, text.into(), $max).map(Self)
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(text: String) -> Result<Self, Self::Error> {
                Self::new(text)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_value!(
    /// The CRM's own id of a customer (`externalId`), 1–255 characters, immutable once set.
    ExternalId,
    "externalId",
    255
);
text_value!(
    /// A customer's full name as the CRM knows it, 1–255 characters.
    FullName,
    "fullName",
    255
);

/// An email address. Kept as given; compared case-insensitively (see [`Email::normalized`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Validates the address: one `@`, a non-empty local part of at most 64 characters, a domain
    /// with a dot and no empty labels, no whitespace, at most 254 characters in all.
    ///
    /// # Errors
    /// [`ValidationError`] on `email` when the address is not valid.
    pub fn new(text: impl Into<String>) -> Result<Self, ValidationError> {
        let text = text.into();
        let address = text.trim();
        let invalid = || ValidationError::new("email", "email is not a valid address");
        if address.is_empty() || address.len() > 254 {
            return Err(invalid());
        }
        if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = address.split_once('@').ok_or_else(invalid)?;
        if local.is_empty() || local.len() > 64 || domain.contains('@') {
            return Err(invalid());
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2
            || labels.iter().any(|label| {
                label.is_empty()
                    || label.starts_with('-')
                    || label.ends_with('-')
                    || !label.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
        {
            return Err(invalid());
        }
        Ok(Self(address.to_owned()))
    }

    /// The address as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form used to match records: lower case. Two addresses that differ only in case are one
    /// person to an upsert.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

impl TryFrom<String> for Email {
    type Error = ValidationError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::new(text)
    }
}

impl From<Email> for String {
    fn from(value: Email) -> String {
        value.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A phone number in E.164 form: `+`, then 6 to 15 digits, the first not zero.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

impl Phone {
    /// Validates an E.164 number.
    ///
    /// # Errors
    /// [`ValidationError`] on `phone` when the number is not E.164.
    pub fn new(text: impl Into<String>) -> Result<Self, ValidationError> {
        let text = text.into();
        let number = text.trim();
        let digits = number.strip_prefix('+').unwrap_or("");
        let valid = (6..=15).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0');
        if valid {
            Ok(Self(number.to_owned()))
        } else {
            Err(ValidationError::new(
                "phone",
                "phone must be in E.164 form, for example +61400000000",
            ))
        }
    }

    /// The number as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Phone {
    type Error = ValidationError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::new(text)
    }
}

impl From<Phone> for String {
    fn from(value: Phone) -> String {
        value.0
    }
}

/// What kind of customer a record is. v1 ingests individuals and sole traders only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CustomerType {
    /// A natural person.
    #[default]
    Individual,
    /// A natural person trading under their own name.
    SoleTrader,
}

impl CustomerType {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Individual => "INDIVIDUAL",
            Self::SoleTrader => "SOLE_TRADER",
        }
    }

    /// Parses the contract's spelling.
    ///
    /// # Errors
    /// [`ValidationError`] on `type` for anything else.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        match text {
            "INDIVIDUAL" => Ok(Self::Individual),
            "SOLE_TRADER" => Ok(Self::SoleTrader),
            _ => Err(ValidationError::new(
                "type",
                "type must be INDIVIDUAL or SOLE_TRADER",
            )),
        }
    }
}

/// How a record entered the service. `INTEGRATION` for the CRM API, `ADMIN_MANUAL` for staff; the
/// others are reserved by the published contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AddedVia {
    /// Typed in by a person in the back office.
    AdminManual,
    /// Reserved.
    AiExtracted,
    /// Reserved.
    ContactPortal,
    /// Reserved.
    BulkImport,
    /// Pushed by a CRM over the API.
    Integration,
    /// Reserved.
    System,
}

impl AddedVia {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AdminManual => "ADMIN_MANUAL",
            Self::AiExtracted => "AI_EXTRACTED",
            Self::ContactPortal => "CONTACT_PORTAL",
            Self::BulkImport => "BULK_IMPORT",
            Self::Integration => "INTEGRATION",
            Self::System => "SYSTEM",
        }
    }

    /// Parses the contract's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::AdminManual,
            Self::AiExtracted,
            Self::ContactPortal,
            Self::BulkImport,
            Self::Integration,
            Self::System,
        ]
        .into_iter()
        .find(|v| v.as_str() == text)
    }
}

/// An amount of credits, the unit firms buy and verifications cost. Never negative by type;
/// arithmetic that could overflow or go below zero is checked.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Credits(u64);

impl Credits {
    /// No credits.
    pub const ZERO: Self = Self(0);

    /// Wraps a count of credits.
    pub const fn new(credits: u64) -> Self {
        Self(credits)
    }

    /// The count as an integer.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// `self + other`, or `None` on overflow.
    pub const fn checked_add(self, other: Self) -> Option<Self> {
        match self.0.checked_add(other.0) {
            Some(sum) => Some(Self(sum)),
            None => None,
        }
    }

    /// `self - other`, or `None` when that would go below zero.
    pub const fn checked_sub(self, other: Self) -> Option<Self> {
        match self.0.checked_sub(other.0) {
            Some(rest) => Some(Self(rest)),
            None => None,
        }
    }

    /// Whether this is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} credits", self.0)
    }
}

/// A non-empty note a person wrote: a restart reason, a disposition note, a decision rationale.
/// Up to 4,000 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Note(String);

impl Note {
    /// Validates and wraps a note.
    ///
    /// # Errors
    /// [`ValidationError`] on `note` when empty or longer than 4,000 characters.
    pub fn new(text: impl Into<String>) -> Result<Self, ValidationError> {
        let text = text.into();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ValidationError::new("note", "a note is required"));
        }
        if trimmed.chars().count() > 4_000 {
            return Err(ValidationError::new(
                "note",
                "a note must be at most 4000 characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The note as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Note {
    type Error = ValidationError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::new(text)
    }
}

impl From<Note> for String {
    fn from(value: Note) -> String {
        value.0
    }
}

text_value!(
    /// The name a firm's admin gives an API key, 1–100 characters, shown wherever the key is
    /// listed (the back office, the audit trail of what the key did).
    KeyLabel,
    "label",
    100
);

/// A back-office user's password as typed, 12 to 1,024 characters: long enough that guessing is
/// hopeless, short enough that hashing one cannot be used to tie up the server. Kept exactly as
/// given (spaces count). `Debug` and `Display` print `[redacted]`, so a password never reaches a
/// log by accident; [`Password::expose`] is the one way to read it, for the hasher.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The fewest characters a password may have.
    pub const MIN_CHARS: usize = 12;
    /// The most characters a password may have.
    pub const MAX_CHARS: usize = 1024;

    /// Validates the length and wraps the password.
    ///
    /// # Errors
    /// [`ValidationError`] on `password` when shorter than [`Password::MIN_CHARS`] or longer than
    /// [`Password::MAX_CHARS`] characters.
    pub fn new(text: impl Into<String>) -> Result<Self, ValidationError> {
        let text = text.into();
        let chars = text.chars().count();
        if chars < Self::MIN_CHARS {
            return Err(ValidationError::new(
                "password",
                format!("a password must be at least {} characters", Self::MIN_CHARS),
            ));
        }
        if chars > Self::MAX_CHARS {
            return Err(ValidationError::new(
                "password",
                format!("a password must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        Ok(Self(text))
    }

    /// The password itself, for the one place that needs it: the hasher.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> serde_json::Deserializer<serde_json::de::StrRead<'_>> {
        serde_json::Deserializer::from_str(text)
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Times {
        #[serde(with = "stored_time")]
        at: time::OffsetDateTime,
        #[serde(
            default,
            with = "stored_time::option",
            skip_serializing_if = "Option::is_none"
        )]
        maybe: Option<time::OffsetDateTime>,
    }

    #[test]
    fn stored_times_are_rfc_3339_in_utc_and_read_back_exactly() {
        let at = time::macros::datetime!(2026-11-25 23:28:14.357189990 UTC);
        let times = Times {
            at,
            maybe: Some(at + time::Duration::nanoseconds(1)),
        };
        let written = serde_json::to_string(&times).unwrap();
        assert_eq!(
            written,
            r#"{"at":"2026-11-25T23:28:14.357189990Z","maybe":"2026-11-25T23:28:14.357189991Z"}"#
        );
        assert_eq!(serde_json::from_str::<Times>(&written).unwrap(), times);
        // Whole microseconds take six digits, as PostgreSQL writes a `timestamptz`.
        assert_eq!(
            stored_time::format(time::macros::datetime!(2026-11-25 23:28:14.35 UTC)).unwrap(),
            "2026-11-25T23:28:14.350000Z"
        );
        assert_eq!(
            stored_time::format(time::macros::datetime!(2026-11-25 23:28:14 UTC)).unwrap(),
            "2026-11-25T23:28:14.000000Z"
        );
        let none = Times { at, maybe: None };
        let written = serde_json::to_string(&none).unwrap();
        assert_eq!(serde_json::from_str::<Times>(&written).unwrap(), none);
        let null = r#"{"at":"2026-11-25T23:28:14.357189990Z","maybe":null}"#;
        assert_eq!(serde_json::from_str::<Times>(null).unwrap(), none);
        let before_1970 = Times {
            at: time::macros::datetime!(1950-01-01 00:00:00.5 UTC),
            maybe: None,
        };
        let written = serde_json::to_string(&before_1970).unwrap();
        assert_eq!(
            serde_json::from_str::<Times>(&written).unwrap(),
            before_1970
        );
    }

    #[test]
    fn stored_times_written_in_the_array_form_still_read() {
        // `time`'s own form, as states were written before: same instant, offset included.
        let legacy =
            r#"{"at":[2026,329,23,28,14,357189990,0,0,0],"maybe":[2026,330,9,58,14,0,10,30,0]}"#;
        let times: Times = serde_json::from_str(legacy).unwrap();
        assert_eq!(
            times.at,
            time::macros::datetime!(2026-11-25 23:28:14.357189990 UTC)
        );
        assert_eq!(
            times.maybe,
            Some(time::macros::datetime!(2026-11-25 23:28:14 UTC))
        );
    }

    #[test]
    fn stored_times_written_as_nanoseconds_still_read() {
        let legacy = r#"{"at":1795649294357189990,"maybe":1795649294357189991}"#;
        let times: Times = serde_json::from_str(legacy).unwrap();
        let at = time::macros::datetime!(2026-11-25 23:28:14.357189990 UTC);
        assert_eq!(times.at, at);
        assert_eq!(times.maybe, Some(at + time::Duration::nanoseconds(1)));
    }

    #[test]
    fn any_rfc_3339_form_reads_as_the_same_instant_in_utc() {
        let at = time::macros::datetime!(2026-11-25 23:28:14.5 UTC);
        for text in [
            "2026-11-25T23:28:14.5Z",
            "2026-11-25T23:28:14.500000Z",
            "2026-11-26T09:58:14.5+10:30",
            "2026-11-25t23:28:14.5z",
        ] {
            let read: Times = serde_json::from_str(&format!(r#"{{"at":"{text}"}}"#)).unwrap();
            assert_eq!(read.at, at, "{text}");
            assert_eq!(read.at.offset(), time::UtcOffset::UTC, "{text}");
        }
        for at in [
            time::macros::datetime!(2026-01-01 00:00 UTC),
            time::macros::datetime!(1950-01-01 00:00:00.000000001 UTC),
            time::macros::datetime!(2400-02-29 23:59:59.999999999 UTC),
            time::macros::datetime!(2026-06-30 12:00:00.1 +05:00),
        ] {
            let written = stored_time::format(at).unwrap();
            assert_eq!(stored_time::parse(&written).unwrap(), at, "{written}");
            assert!(written.ends_with('Z'), "{written}");
        }
    }

    #[test]
    fn a_time_rfc_3339_cannot_write_is_stored_in_the_array_form_and_reads_back() {
        let far = time::macros::datetime!(-0001-01-01 00:00 UTC);
        assert_eq!(stored_time::format(far), None);
        let times = Times {
            at: far,
            maybe: Some(far),
        };
        let written = serde_json::to_string(&times).unwrap();
        assert!(written.starts_with(r#"{"at":["#), "{written}");
        assert_eq!(serde_json::from_str::<Times>(&written).unwrap(), times);
    }

    #[test]
    fn a_stored_time_that_is_none_of_the_forms_is_refused() {
        for bad in [
            r#"{"at":"yesterday"}"#,
            r#"{"at":"2026-13-01T00:00:00Z"}"#,
            r#"{"at":"2026-02-30T00:00:00Z"}"#,
            r#"{"at":"2026-11-25 23:28:14"}"#,
            r#"{"at":1.5}"#,
        ] {
            assert!(serde_json::from_str::<Times>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stored_values_read_back_as_they_were_written() {
        let email = Email::new("Jane.Doe@Example.com").unwrap();
        let written = serde_json::to_string(&email).unwrap();
        assert_eq!(stored::email(&mut read(&written)).unwrap(), email);
        let name = FullName::new("Jane Doe").unwrap();
        let written = serde_json::to_string(&name).unwrap();
        assert_eq!(stored::full_name(&mut read(&written)).unwrap(), name);
        let external = ExternalId::new("crm-1").unwrap();
        let written = serde_json::to_string(&Some(&external)).unwrap();
        assert_eq!(
            stored::external_id(&mut read(&written)).unwrap(),
            Some(external)
        );
        let phone = Phone::new("+61400000000").unwrap();
        let written = serde_json::to_string(&Some(&phone)).unwrap();
        assert_eq!(stored::phone(&mut read(&written)).unwrap(), Some(phone));
        assert_eq!(stored::phone(&mut read("null")).unwrap(), None);
        assert!(
            stored::email(&mut read("42")).is_err(),
            "what is not text is still refused"
        );
    }

    #[test]
    fn emails_that_people_use_are_accepted() {
        for ok in ["jane@example.com", "a.b+tag@sub.example.com.au", "x@x.io"] {
            assert!(Email::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn malformed_emails_are_refused_with_the_field_name() {
        for bad in [
            "",
            "jane",
            "jane@",
            "@example.com",
            "jane@example",
            "a b@c.d",
            "a@b@c.d",
            "a@-b.c",
        ] {
            let err = Email::new(bad).unwrap_err();
            assert_eq!(err.field, "email", "{bad}");
        }
    }

    #[test]
    fn email_matching_ignores_case_but_keeps_what_was_given() {
        let email = Email::new("Jane@Example.com").unwrap();
        assert_eq!(email.as_str(), "Jane@Example.com");
        assert_eq!(email.normalized(), "jane@example.com");
    }

    #[test]
    fn phone_numbers_must_be_e164() {
        assert!(Phone::new("+61400000000").is_ok());
        for bad in [
            "0400000000",
            "+0400000000",
            "+61 400 000 000",
            "+1234",
            "+1234567890123456",
        ] {
            assert_eq!(Phone::new(bad).unwrap_err().field, "phone", "{bad}");
        }
    }

    #[test]
    fn external_id_and_full_name_are_bounded_to_255_characters() {
        assert!(ExternalId::new("x".repeat(255)).is_ok());
        assert!(ExternalId::new("x".repeat(256)).is_err());
        assert!(FullName::new("  ").is_err());
        assert_eq!(FullName::new(" Jane Doe ").unwrap().as_str(), "Jane Doe");
        assert_eq!(
            FullName::new("é".repeat(255))
                .unwrap()
                .as_str()
                .chars()
                .count(),
            255
        );
    }

    #[test]
    fn deserialising_goes_through_validation() {
        let bad: Result<Email, _> = serde_json::from_str("\"nope\"");
        assert!(bad.is_err());
        let good: Email = serde_json::from_str("\"a@b.co\"").unwrap();
        assert_eq!(good.as_str(), "a@b.co");
    }

    #[test]
    fn passwords_are_12_to_1024_characters_and_never_printed() {
        assert_eq!(Password::new("eleven-char").unwrap_err().field, "password");
        assert!(Password::new("twelve-chars").is_ok());
        assert!(Password::new("é".repeat(1024)).is_ok());
        assert!(Password::new("x".repeat(1025)).is_err());
        let password = Password::new("  correct horse battery  ").unwrap();
        assert_eq!(password.expose(), "  correct horse battery  ");
        assert!(!format!("{password:?}").contains("horse"));
        assert!(!password.to_string().contains("horse"));
    }

    #[test]
    fn key_labels_are_trimmed_and_1_to_100_characters() {
        assert_eq!(KeyLabel::new("  CRM sync ").unwrap().as_str(), "CRM sync");
        assert_eq!(KeyLabel::new("   ").unwrap_err().field, "label");
        assert!(KeyLabel::new("x".repeat(100)).is_ok());
        assert!(KeyLabel::new("x".repeat(101)).is_err());
    }

    #[test]
    fn scope_sets_are_validated_deduplicated_and_sorted() {
        assert_eq!(
            ApiScope::parse_set("aml:read, customers:read,aml:read,").unwrap(),
            vec![ApiScope::CustomersRead, ApiScope::AmlRead]
        );
        let unknown = ApiScope::parse_set("customers:read,customers:delete").unwrap_err();
        assert_eq!(unknown.field, "scopes");
        assert!(unknown.message.contains("customers:delete"), "{unknown}");
        let none = ApiScope::parse_set(" , ").unwrap_err();
        assert_eq!(none.field, "scopes");
        for scope in ApiScope::ALL {
            assert!(none.message.contains(scope.as_str()), "{none}");
        }
    }

    #[test]
    fn credits_never_go_below_zero() {
        assert_eq!(Credits::new(1).checked_sub(Credits::new(2)), None);
        assert_eq!(
            Credits::new(3).checked_sub(Credits::new(2)),
            Some(Credits::new(1))
        );
    }
}

/// A permission an API key carries. A key can never do more than its scopes allow; none of them
/// can start a verification, which only a person may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ApiScope {
    /// `customers:read`: list and read customers, poll the event feed.
    #[serde(rename = "customers:read")]
    CustomersRead,
    /// `customers:write`: upsert and update customers.
    #[serde(rename = "customers:write")]
    CustomersWrite,
    /// `aml:read`: read only the AML block of customers whose ids the caller already knows.
    #[serde(rename = "aml:read")]
    AmlRead,
    /// `webhooks:manage`: manage the firm's outbound webhook endpoints.
    #[serde(rename = "webhooks:manage")]
    WebhooksManage,
}

impl ApiScope {
    /// Every scope.
    pub const ALL: [Self; 4] = [
        Self::CustomersRead,
        Self::CustomersWrite,
        Self::AmlRead,
        Self::WebhooksManage,
    ];

    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CustomersRead => "customers:read",
            Self::CustomersWrite => "customers:write",
            Self::AmlRead => "aml:read",
            Self::WebhooksManage => "webhooks:manage",
        }
    }

    /// Parses the contract's spelling.
    ///
    /// # Errors
    /// [`ValidationError`] on `scopes` for an unknown scope.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text.trim())
            .ok_or_else(|| {
                ValidationError::new(
                    "scopes",
                    format!(
                        "unknown scope {text:?}; expected one of {}",
                        Self::spelled_list()
                    ),
                )
            })
    }

    /// Parses a comma-separated list (`aml:read, customers:read`): each scope trimmed, blanks
    /// between commas ignored, duplicates dropped, sorted in [`ApiScope::ALL`]'s order. A key
    /// needs at least one scope: one with none could do nothing.
    ///
    /// # Errors
    /// [`ValidationError`] on `scopes` for an unknown scope, or when there is none at all; the
    /// message names the valid scopes.
    pub fn parse_set(text: &str) -> Result<Vec<Self>, ValidationError> {
        let mut scopes = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(Self::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if scopes.is_empty() {
            return Err(ValidationError::new(
                "scopes",
                format!("at least one scope is needed: {}", Self::spelled_list()),
            ));
        }
        scopes.sort();
        scopes.dedup();
        Ok(scopes)
    }

    /// Every scope in the contract's spelling, comma-separated, for messages.
    fn spelled_list() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

/// Reading a customer's values back from storage, which only ever holds values that passed their
/// constructor on the way in: they are wrapped as they are, without validating them again, which
/// was an eighth of the cost of reading a stored state (and a page of customers reads fifty).
/// Only for [`CustomerState`](crate::customer::CustomerState)'s own fields; anything read from
/// outside goes through the constructors.
pub(crate) mod stored {
    use serde::{Deserialize, Deserializer};

    use super::{Email, ExternalId, FullName, Phone};

    /// A stored [`Email`].
    pub(crate) fn email<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Email, D::Error> {
        String::deserialize(deserializer).map(Email)
    }

    /// A stored [`FullName`].
    pub(crate) fn full_name<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<FullName, D::Error> {
        String::deserialize(deserializer).map(FullName)
    }

    /// A stored [`ExternalId`], if any.
    pub(crate) fn external_id<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<ExternalId>, D::Error> {
        Option::<String>::deserialize(deserializer).map(|text| text.map(ExternalId))
    }

    /// A stored [`Phone`], if any.
    pub(crate) fn phone<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Phone>, D::Error> {
        Option::<String>::deserialize(deserializer).map(|text| text.map(Phone))
    }
}

/// How the times inside a customer's state and an audit event's change are stored: RFC 3339
/// strings in UTC with six fractional digits (`2026-11-25T23:28:14.357189Z`), nine when the time
/// has a finer part, so a person reading the database or the audit export reads a date.
///
/// Two earlier forms are still read, for rows written before the one-time data move
/// `0001_rfc3339_times` (run by `migrate`) converted them: an integer of nanoseconds since the Unix epoch, and `time`'s own array of
/// nine integers (year, day of year, hour, minute, second, nanosecond, offset hours, minutes,
/// seconds). A time read back is in UTC; it is the same instant, and every time the domain stores
/// is taken in UTC anyway.
///
/// Reading the states is most of what a page of customers costs, so the form this module writes
/// is read by a parser of its own exact shape, and anything else by `time`'s RFC 3339 parser.
pub mod stored_time {
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

    /// `at` as stored: RFC 3339 in UTC, with six fractional digits, or nine when it has a finer
    /// part than microseconds; `None` for a year outside 0000–9999, which RFC 3339 cannot write
    /// (such a time is stored in `time`'s array form, which is still read).
    pub fn format(at: OffsetDateTime) -> Option<String> {
        let at = at.to_offset(UtcOffset::UTC);
        let (year, month, day) = at.to_calendar_date();
        let (hour, minute, second, nanos) = at.to_hms_nano();
        let mut text = if (0..=9999).contains(&year) {
            format!(
                "{year:04}-{:02}-{day:02}T{hour:02}:{minute:02}:{second:02}",
                u8::from(month)
            )
        } else {
            return None;
        };
        // Microseconds when the time has no finer part (as PostgreSQL's `timestamptz` writes
        // them, so a stamp written by the database and one written here look alike), else
        // nanoseconds.
        if nanos % 1_000 == 0 {
            text.push_str(&format!(".{:06}Z", nanos / 1_000));
        } else {
            text.push_str(&format!(".{nanos:09}Z"));
        }
        Some(text)
    }

    /// A stored time read back from its RFC 3339 text.
    ///
    /// # Errors
    /// When the text is not an RFC 3339 date and time.
    pub fn parse(text: &str) -> Result<OffsetDateTime, time::error::Parse> {
        match parse_canonical(text.as_bytes()) {
            Some(at) => Ok(at),
            None => OffsetDateTime::parse(text, &Rfc3339).map(|at| at.to_offset(UtcOffset::UTC)),
        }
    }

    /// The exact shape [`format`] writes (`YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`), or `None`.
    fn parse_canonical(bytes: &[u8]) -> Option<OffsetDateTime> {
        fn digits(bytes: &[u8]) -> Option<u32> {
            bytes.iter().try_fold(0u32, |value, &byte| {
                byte.is_ascii_digit()
                    .then(|| value * 10 + u32::from(byte - b'0'))
            })
        }
        let (&b'Z', body) = bytes.split_last()? else {
            return None;
        };
        if body.len() < 19
            || body[4] != b'-'
            || body[7] != b'-'
            || body[10] != b'T'
            || body[13] != b':'
            || body[16] != b':'
        {
            return None;
        }
        let nanos = match &body[19..] {
            [] => 0,
            [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
                digits(fraction)? * 10u32.pow(9 - fraction.len() as u32)
            }
            _ => return None,
        };
        let year = i32::try_from(digits(&body[0..4])?).ok()?;
        let month = Month::try_from(u8::try_from(digits(&body[5..7])?).ok()?).ok()?;
        let day = u8::try_from(digits(&body[8..10])?).ok()?;
        let hour = u8::try_from(digits(&body[11..13])?).ok()?;
        let minute = u8::try_from(digits(&body[14..16])?).ok()?;
        let second = u8::try_from(digits(&body[17..19])?).ok()?;
        let date = Date::from_calendar_date(year, month, day).ok()?;
        let time = Time::from_hms_nano(hour, minute, second, nanos).ok()?;
        Some(PrimitiveDateTime::new(date, time).assume_utc())
    }

    /// Writes `at` as [`format`] does, or in `time`'s array form where that has no text.
    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's `with` hands fields by reference
    pub fn serialize<S: Serializer>(at: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
        match format(*at) {
            Some(text) => serializer.serialize_str(&text),
            None => at.serialize(serializer),
        }
    }

    /// Reads a time written in any of the three forms.
    ///
    /// # Errors
    /// When the value is none of them.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<OffsetDateTime, D::Error> {
        deserializer.deserialize_any(StoredTime)
    }

    struct StoredTime;

    impl<'de> Visitor<'de> for StoredTime {
        type Value = OffsetDateTime;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(
                "an RFC 3339 time, nanoseconds since the Unix epoch, or time's array of nine integers",
            )
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<OffsetDateTime, E> {
            parse(text).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, nanos: i64) -> Result<OffsetDateTime, E> {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, nanos: u64) -> Result<OffsetDateTime, E> {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).map_err(E::custom)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<OffsetDateTime, A::Error> {
            OffsetDateTime::deserialize(de::value::SeqAccessDeserializer::new(seq))
        }
    }

    /// The same for an optional time (absent or `null` is `None`).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use time::OffsetDateTime;

        /// Writes `at` as [`super::serialize`] does, or `null`.
        #[allow(clippy::ref_option)] // serde's `with` hands fields by reference
        pub fn serialize<S: Serializer>(
            at: &Option<OffsetDateTime>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::serialize(at, serializer),
                None => serializer.serialize_none(),
            }
        }

        /// Reads an optional time written in any of the three forms.
        ///
        /// # Errors
        /// When the value is none of them.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            #[derive(Deserialize)]
            struct Stored(#[serde(with = "super")] OffsetDateTime);
            Ok(Option::<Stored>::deserialize(deserializer)?.map(|Stored(at)| at))
        }
    }
}
