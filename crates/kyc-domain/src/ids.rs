//! Typed identifiers. A bare `Uuid` never crosses a crate border: every id says what it names, so a
//! firm id can never be passed where a customer id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps a UUID produced by an [`IdGenerator`](crate::ports::IdGenerator) or read back from storage.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside, for adapters that store or print it.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Parses the canonical hyphenated form (or any form `uuid` accepts).
            ///
            /// # Errors
            /// [`InvalidId`] when the text is not a UUID.
            pub fn parse(text: &str) -> Result<Self, InvalidId> {
                Uuid::parse_str(text).map(Self).map_err(|_| InvalidId {
                    kind: stringify!($name),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A tenant: an accounting, legal or real-estate firm. Every other record belongs to one.
    FirmId
);
uuid_id!(
    /// A firm's customer, the person being verified.
    CustomerId
);
uuid_id!(
    /// A back-office login.
    UserId
);
uuid_id!(
    /// An API key used by a firm's CRM.
    ApiKeyId
);
uuid_id!(
    /// One entry of the audit trail.
    EventId
);

/// Text that should have been a UUID but was not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind}: expected a UUID")]
pub struct InvalidId {
    /// Which kind of id was expected.
    pub kind: &'static str,
}

/// The number of a verification attempt of one customer: 1 for the first Start Verification, n + 1
/// after a restart or an attempt the provider refused. Together with the customer id it keys the
/// credit hold and the provider applicant, which is what makes every retry land on the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AttemptNumber(u32);

impl AttemptNumber {
    /// The first attempt of a customer.
    pub const FIRST: Self = Self(1);

    /// Wraps a stored attempt number.
    ///
    /// # Errors
    /// [`InvalidId`] for 0: attempts are counted from 1.
    pub fn new(number: u32) -> Result<Self, InvalidId> {
        if number == 0 {
            Err(InvalidId {
                kind: "AttemptNumber",
            })
        } else {
            Ok(Self(number))
        }
    }

    /// The number as an integer.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The attempt after this one.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for AttemptNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The identity provider's id of an applicant (Sumsub: 24 lowercase hex characters). Opaque here.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApplicantId(String);

impl ApplicantId {
    /// Wraps a provider applicant id.
    ///
    /// # Errors
    /// [`InvalidId`] when empty or longer than 128 characters.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidId> {
        let id = id.into();
        if id.is_empty() || id.len() > 128 {
            return Err(InvalidId {
                kind: "ApplicantId",
            });
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApplicantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id this service gives the provider for one attempt (Sumsub's `externalUserId`). It is derived
/// from `(customer, attempt)` so a retry of the same attempt asks for the same applicant, and the
/// provider answers "already exists" instead of creating a second one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExternalUserId(String);

impl ExternalUserId {
    /// The provider-facing id of `attempt` of `customer`.
    pub fn for_attempt(customer: CustomerId, attempt: AttemptNumber) -> Self {
        Self(format!("{customer}-a{attempt}"))
    }

    /// Reads back an id this service issued, giving its customer and attempt.
    pub fn parse(text: &str) -> Option<(CustomerId, AttemptNumber)> {
        let (customer, attempt) = text.rsplit_once("-a")?;
        let customer = CustomerId::parse(customer).ok()?;
        let attempt = AttemptNumber::new(attempt.parse().ok()?).ok()?;
        Some((customer, attempt))
    }

    /// Wraps an id received from the provider, which may not be one of ours.
    pub fn from_provider(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExternalUserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_user_id_round_trips_to_customer_and_attempt() {
        let customer = CustomerId::from_uuid(Uuid::from_u128(0x1234));
        let attempt = AttemptNumber::new(7).unwrap();
        let ext = ExternalUserId::for_attempt(customer, attempt);
        assert_eq!(
            ExternalUserId::parse(ext.as_str()),
            Some((customer, attempt))
        );
    }

    #[test]
    fn foreign_external_user_ids_do_not_parse() {
        assert_eq!(ExternalUserId::parse("someClientUserId"), None);
        assert_eq!(
            ExternalUserId::parse("00000000-0000-0000-0000-000000001234-a0"),
            None
        );
    }

    #[test]
    fn attempt_zero_is_refused() {
        assert!(AttemptNumber::new(0).is_err());
        assert_eq!(AttemptNumber::FIRST.next().get(), 2);
    }
}
