//! The credits ledger: double-entry, two-phase holds (reserve → post | void), like a card
//! authorisation. Each operation carries an idempotency key chosen by the caller; a repeat returns
//! the first result, so a retry after a timeout or a crash can never charge twice.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::InfrastructureError;
use crate::ids::{AttemptNumber, CustomerId, FirmId};
use crate::values::{Credits, ValidationError};

/// A caller-chosen key that makes an operation safe to repeat: 1–255 printable characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a key.
    ///
    /// # Errors
    /// [`ValidationError`] on `Idempotency-Key` when empty, longer than 255 characters, or holding
    /// control characters.
    pub fn new(key: impl Into<String>) -> Result<Self, ValidationError> {
        let key = key.into();
        if key.is_empty() || key.chars().count() > 255 || key.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "Idempotency-Key",
                "Idempotency-Key must be 1 to 255 printable characters",
            ));
        }
        Ok(Self(key))
    }

    /// The key of the operation `operation` on the hold of an attempt.
    pub fn for_hold(operation: &str, hold: HoldKey) -> Self {
        Self(format!("{operation}:{}:{}", hold.customer, hold.attempt))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = ValidationError;
    fn try_from(key: String) -> Result<Self, Self::Error> {
        Self::new(key)
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> Self {
        key.0
    }
}

/// The identity of a hold: one per verification attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HoldKey {
    /// The customer.
    pub customer: CustomerId,
    /// The attempt.
    pub attempt: AttemptNumber,
}

impl fmt::Display for HoldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.customer, self.attempt)
    }
}

/// Where a hold stands. A hold is resolved once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    /// Credits reserved, not yet charged.
    Pending,
    /// The charge is final.
    Posted,
    /// Released; nothing charged.
    Voided,
}

/// A hold of credits for one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The firm.
    pub firm_id: FirmId,
    /// Which attempt.
    pub key: HoldKey,
    /// How much.
    pub credits: Credits,
    /// Where it stands.
    pub state: HoldState,
    /// When it was reserved.
    pub created_at: OffsetDateTime,
}

/// A firm's balance, derived from the ledger's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Balance {
    /// Spendable now: granted − posted − held + refunded.
    pub available: Credits,
    /// Reserved by pending holds.
    pub held: Credits,
    /// Charged, net of refunds.
    pub spent: Credits,
}

/// The kind of a ledger operation, as shown on the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Credits added (a top-up).
    Grant,
    /// A hold reserved.
    Reserve,
    /// A hold became a charge.
    Post,
    /// A hold was released.
    Void,
    /// A posted charge was given back.
    Refund,
}

/// One line of a firm's statement: one operation, with its effect on the spendable balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementEntry {
    /// The operation's id (stable, for cursors and references).
    pub id: String,
    /// When.
    pub at: OffsetDateTime,
    /// What.
    pub kind: EntryKind,
    /// How many credits the operation moved.
    pub credits: Credits,
    /// The change to the available balance (negative for a reserve, positive for a grant, a void
    /// or a refund, zero for a post, which only turns held credits into spent ones).
    pub available_delta: i64,
    /// The customer, for operations on a hold.
    pub customer: Option<CustomerId>,
    /// The attempt, for operations on a hold.
    pub attempt: Option<AttemptNumber>,
    /// The grant's reference or the refund's reason.
    pub reference: Option<String>,
}

/// A page of the statement, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementPage {
    /// The entries.
    pub entries: Vec<StatementEntry>,
    /// Pass to get the next (older) page; `None` on the last.
    pub next_cursor: Option<String>,
}

/// Why a ledger operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Not enough available credits; nothing changed.
    #[error("insufficient credits: {available} available, {requested} needed")]
    InsufficientCredits {
        /// Available now.
        available: Credits,
        /// Asked for.
        requested: Credits,
    },
    /// The firm's daily spend cap would be exceeded; nothing changed.
    #[error(
        "daily spend cap of {cap} reached: {used_today} already used today, {requested} more requested"
    )]
    DailyCapExceeded {
        /// The cap.
        cap: Credits,
        /// Reserved or charged today (UTC).
        used_today: Credits,
        /// Asked for.
        requested: Credits,
    },
    /// The idempotency key was used before for a different operation or different parameters.
    #[error("idempotency key {0} was already used with different parameters")]
    IdempotencyMismatch(String),
    /// No hold for this attempt.
    #[error("no hold for attempt {0}")]
    HoldNotFound(HoldKey),
    /// The hold was already resolved the other way (posting a voided hold, voiding a posted one).
    #[error("the hold for attempt {hold} is already {state:?}")]
    HoldAlreadyResolved {
        /// The hold.
        hold: HoldKey,
        /// How it was resolved.
        state: HoldState,
    },
    /// A refund of a charge that is not posted, or of more than was charged and not yet refunded.
    #[error("cannot refund {requested}: the attempt {hold} has {refundable} refundable")]
    RefundNotAllowed {
        /// The hold.
        hold: HoldKey,
        /// Asked for.
        requested: Credits,
        /// What is left to refund.
        refundable: Credits,
    },
    /// A zero amount, or an amount too large.
    #[error("invalid amount: {0}")]
    InvalidAmount(Credits),
    /// Infrastructure failure; nothing changed.
    #[error(transparent)]
    Infrastructure(#[from] InfrastructureError),
}

/// The receipt of a grant or refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerReceipt {
    /// The operation's id.
    pub id: String,
    /// The balance right after it.
    pub balance: Balance,
}

/// The credits ledger of every firm.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait CreditsLedger: Send + Sync {
    /// Adds credits to a firm (a top-up), with an external reference.
    ///
    /// # Errors
    /// [`LedgerError::InvalidAmount`] for zero; [`LedgerError::IdempotencyMismatch`] when the key
    /// was used with other parameters; [`LedgerError::Infrastructure`].
    async fn grant(
        &self,
        firm: FirmId,
        credits: Credits,
        reference: &str,
        key: &IdempotencyKey,
    ) -> Result<LedgerReceipt, LedgerError>;

    /// Reserves credits for an attempt (a pending hold). A repeat with the same key returns the
    /// hold as it is now.
    ///
    /// # Errors
    /// [`LedgerError::InsufficientCredits`], [`LedgerError::DailyCapExceeded`],
    /// [`LedgerError::InvalidAmount`], [`LedgerError::IdempotencyMismatch`] (the key, or the hold,
    /// exists with other parameters), [`LedgerError::Infrastructure`]. No balance ever goes
    /// negative, under any concurrency.
    async fn reserve(
        &self,
        firm: FirmId,
        hold: HoldKey,
        credits: Credits,
        key: &IdempotencyKey,
    ) -> Result<Hold, LedgerError>;

    /// Turns a pending hold into a final charge. Posting a posted hold returns it unchanged.
    ///
    /// # Errors
    /// [`LedgerError::HoldNotFound`], [`LedgerError::HoldAlreadyResolved`] (it was voided),
    /// [`LedgerError::IdempotencyMismatch`], [`LedgerError::Infrastructure`].
    async fn post(
        &self,
        firm: FirmId,
        hold: HoldKey,
        key: &IdempotencyKey,
    ) -> Result<Hold, LedgerError>;

    /// Releases a pending hold. Voiding a voided hold returns it unchanged.
    ///
    /// # Errors
    /// [`LedgerError::HoldNotFound`], [`LedgerError::HoldAlreadyResolved`] (it was posted),
    /// [`LedgerError::IdempotencyMismatch`], [`LedgerError::Infrastructure`].
    async fn void(
        &self,
        firm: FirmId,
        hold: HoldKey,
        key: &IdempotencyKey,
    ) -> Result<Hold, LedgerError>;

    /// Gives back (part of) a posted charge, with a reason.
    ///
    /// # Errors
    /// [`LedgerError::HoldNotFound`], [`LedgerError::RefundNotAllowed`],
    /// [`LedgerError::InvalidAmount`], [`LedgerError::IdempotencyMismatch`],
    /// [`LedgerError::Infrastructure`].
    async fn refund(
        &self,
        firm: FirmId,
        hold: HoldKey,
        credits: Credits,
        reason: &str,
        key: &IdempotencyKey,
    ) -> Result<LedgerReceipt, LedgerError>;

    /// The hold of an attempt, if one was reserved.
    ///
    /// # Errors
    /// [`LedgerError::Infrastructure`] only.
    async fn hold(&self, firm: FirmId, hold: HoldKey) -> Result<Option<Hold>, LedgerError>;

    /// The firm's balance.
    ///
    /// # Errors
    /// [`LedgerError::Infrastructure`] only.
    async fn balance(&self, firm: FirmId) -> Result<Balance, LedgerError>;

    /// A page of the firm's statement, newest first.
    ///
    /// # Errors
    /// [`LedgerError::Infrastructure`] only (an unreadable cursor starts from the newest).
    async fn statement<'a>(
        &self,
        firm: FirmId,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> Result<StatementPage, LedgerError>;

    /// Sets or clears the firm's daily spend cap.
    ///
    /// # Errors
    /// [`LedgerError::Infrastructure`] only.
    async fn set_daily_cap(&self, firm: FirmId, cap: Option<Credits>) -> Result<(), LedgerError>;

    /// Pending holds reserved before `created_before`, of every firm: work for the recovery worker.
    ///
    /// # Errors
    /// [`LedgerError::Infrastructure`] only.
    async fn pending_holds(
        &self,
        created_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Hold>, LedgerError>;
}
