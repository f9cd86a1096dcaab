//! The ledger's rules, written once for both backends: what each operation checks, which entries
//! it writes, and how a repeated idempotency key is answered. A backend only supplies a write
//! transaction that holds the firm's lock ([`WriteTx`]); everything that decides an outcome lives
//! here, so Postgres and SQLite cannot drift apart.

use async_trait::async_trait;
use kyc_domain::ids::{AttemptNumber, CustomerId, FirmId};
use kyc_domain::ports::{
    Balance, Clock, EntryKind, Hold, HoldKey, HoldState, IdempotencyKey, InfrastructureError,
    LedgerError, LedgerReceipt,
};
use kyc_domain::values::Credits;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

/// An account of a firm. Every operation moves credits between two of them, so the entries of an
/// operation always sum to zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Account {
    /// Spendable credits.
    Available,
    /// Credits reserved by pending holds.
    Held,
    /// Credits charged (the platform's revenue), net of refunds.
    Spent,
    /// Where granted credits come from; it goes negative by the total granted.
    Funding,
}

impl Account {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Held => "held",
            Self::Spent => "spent",
            Self::Funding => "funding",
        }
    }
}

/// The cached running balances of a firm's accounts, as stored on its account row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Balances {
    pub(crate) available: i64,
    pub(crate) held: i64,
    pub(crate) spent: i64,
    pub(crate) funded: i64,
}

impl Balances {
    /// The balances after `postings`, or `None` when a sum overflows or an account that cannot be
    /// negative would go below zero.
    fn after(self, postings: &[(Account, i64)]) -> Option<Self> {
        let mut next = self;
        for &(account, amount) in postings {
            let slot = match account {
                Account::Available => &mut next.available,
                Account::Held => &mut next.held,
                Account::Spent => &mut next.spent,
                Account::Funding => &mut next.funded,
            };
            *slot = slot.checked_add(amount)?;
        }
        (next.available >= 0 && next.held >= 0 && next.spent >= 0 && next.funded <= 0)
            .then_some(next)
    }

    pub(crate) fn to_balance(self) -> Result<Balance, LedgerError> {
        Ok(Balance {
            available: credits_from_db(self.available)?,
            held: credits_from_db(self.held)?,
            spent: credits_from_db(self.spent)?,
        })
    }
}

/// The locked account row of a firm.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FirmRow {
    pub(crate) daily_cap: Option<i64>,
    pub(crate) balances: Balances,
}

/// What an idempotency key was first used for, and what it answered.
#[derive(Debug, Clone)]
pub(crate) struct StoredKey {
    pub(crate) operation: String,
    pub(crate) fingerprint: String,
    pub(crate) result: String,
}

/// An operation about to be appended, with its balanced entries.
#[derive(Debug, Clone)]
pub(crate) struct NewOperation {
    pub(crate) id: Uuid,
    pub(crate) firm: FirmId,
    pub(crate) kind: EntryKind,
    pub(crate) credits: i64,
    pub(crate) available_delta: i64,
    pub(crate) hold: Option<HoldKey>,
    pub(crate) reference: Option<String>,
    pub(crate) at: OffsetDateTime,
    pub(crate) postings: Vec<(Account, i64)>,
}

pub(crate) const fn kind_str(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Grant => "grant",
        EntryKind::Reserve => "reserve",
        EntryKind::Post => "post",
        EntryKind::Void => "void",
        EntryKind::Refund => "refund",
    }
}

pub(crate) fn kind_from_str(text: &str) -> Result<EntryKind, LedgerError> {
    match text {
        "grant" => Ok(EntryKind::Grant),
        "reserve" => Ok(EntryKind::Reserve),
        "post" => Ok(EntryKind::Post),
        "void" => Ok(EntryKind::Void),
        "refund" => Ok(EntryKind::Refund),
        other => Err(corrupt(format!("unknown operation kind {other:?}"))),
    }
}

pub(crate) const fn state_str(state: HoldState) -> &'static str {
    match state {
        HoldState::Pending => "pending",
        HoldState::Posted => "posted",
        HoldState::Voided => "voided",
    }
}

pub(crate) fn state_from_str(text: &str) -> Result<HoldState, LedgerError> {
    match text {
        "pending" => Ok(HoldState::Pending),
        "posted" => Ok(HoldState::Posted),
        "voided" => Ok(HoldState::Voided),
        other => Err(corrupt(format!("unknown hold state {other:?}"))),
    }
}

/// A stored value that breaks an invariant the schema should have kept.
pub(crate) fn corrupt(message: String) -> LedgerError {
    LedgerError::Infrastructure(InfrastructureError::internal(message))
}

pub(crate) fn credits_from_db(value: i64) -> Result<Credits, LedgerError> {
    u64::try_from(value)
        .map(Credits::new)
        .map_err(|_| corrupt(format!("negative credits {value} in the ledger")))
}

pub(crate) fn attempt_from_db(value: i64) -> Result<AttemptNumber, LedgerError> {
    u32::try_from(value)
        .ok()
        .and_then(|number| AttemptNumber::new(number).ok())
        .ok_or_else(|| corrupt(format!("invalid attempt number {value}")))
}

/// Builds a hold from stored columns.
pub(crate) fn hold_from_db(
    firm: Uuid,
    customer: Uuid,
    attempt: i64,
    credits: i64,
    state: &str,
    created_at: OffsetDateTime,
) -> Result<Hold, LedgerError> {
    Ok(Hold {
        firm_id: FirmId::from_uuid(firm),
        key: HoldKey {
            customer: CustomerId::from_uuid(customer),
            attempt: attempt_from_db(attempt)?,
        },
        credits: credits_from_db(credits)?,
        state: state_from_str(state)?,
        created_at,
    })
}

/// Times are kept to the microsecond, the precision both databases store, so a hold read back
/// equals the hold that was returned when it was reserved.
pub(crate) fn now_micros(clock: &dyn Clock) -> OffsetDateTime {
    let now = clock.now().to_offset(time::UtcOffset::UTC);
    let nanos = now.nanosecond();
    now.replace_nanosecond(nanos - nanos % 1_000).unwrap_or(now)
}

/// The start and end of the UTC day holding `at`.
fn utc_day(at: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    let start = at.replace_time(time::Time::MIDNIGHT);
    (start, start + time::Duration::DAY)
}

/// A positive amount that fits the databases' signed 64-bit columns.
fn amount(credits: Credits) -> Result<i64, LedgerError> {
    match i64::try_from(credits.get()) {
        Ok(value) if value > 0 => Ok(value),
        _ => Err(LedgerError::InvalidAmount(credits)),
    }
}

/// A digest of an operation's parameters: the JSON array is unambiguous whatever the text holds.
fn fingerprint(parameters: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(parameters.to_string().as_bytes()))
}

fn json_error(error: serde_json::Error) -> LedgerError {
    LedgerError::Infrastructure(InfrastructureError::internal(error))
}

/// One write transaction of one backend, holding the lock of one firm from `lock_firm` on.
/// Dropping it without `commit` rolls everything back.
#[async_trait]
pub(crate) trait WriteTx: Send {
    /// Locks the firm's account row (creating it on first use) until commit or rollback.
    async fn lock_firm(&mut self, firm: FirmId) -> Result<FirmRow, LedgerError>;
    async fn find_key(
        &mut self,
        firm: FirmId,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredKey>, LedgerError>;
    async fn save_key(
        &mut self,
        firm: FirmId,
        key: &IdempotencyKey,
        stored: &StoredKey,
        at: OffsetDateTime,
    ) -> Result<(), LedgerError>;
    async fn find_hold(&mut self, firm: FirmId, hold: HoldKey)
    -> Result<Option<Hold>, LedgerError>;
    async fn insert_hold(&mut self, hold: &Hold) -> Result<(), LedgerError>;
    /// Moves a pending hold to `state`; must touch exactly one row.
    async fn resolve_hold(
        &mut self,
        firm: FirmId,
        hold: HoldKey,
        state: HoldState,
        at: OffsetDateTime,
    ) -> Result<(), LedgerError>;
    /// Credits of the firm's holds reserved in `[from, to)` and not voided.
    async fn reserved_between(
        &mut self,
        firm: FirmId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<i64, LedgerError>;
    /// Credits already refunded on a hold.
    async fn refunded(&mut self, firm: FirmId, hold: HoldKey) -> Result<i64, LedgerError>;
    /// Appends the operation and its entries and stores the new cached balances.
    async fn append(
        &mut self,
        operation: &NewOperation,
        balances: &Balances,
    ) -> Result<(), LedgerError>;
    async fn commit(self) -> Result<(), LedgerError>;
    async fn rollback(self) -> Result<(), LedgerError>;
}

/// Ends a write transaction: commits a success (a replay commits nothing new, cheaply), rolls back
/// a refusal at once, so the firm's lock (on SQLite, the database's write lock) is released
/// before the next writer's turn rather than whenever the driver gets round to it.
async fn finish<T: WriteTx, R>(tx: T, outcome: Result<R, LedgerError>) -> Result<R, LedgerError> {
    match outcome {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(error) => {
            // The refusal is what the caller needs to hear; a failed rollback leaves nothing
            // behind either, since the driver rolls back a connection it cannot reuse.
            let _ = tx.rollback().await;
            Err(error)
        }
    }
}

/// A backend that can open write transactions.
#[async_trait]
pub(crate) trait Backend: Send + Sync {
    type Tx: WriteTx;
    async fn begin(&self) -> Result<Self::Tx, LedgerError>;
}

/// Answers a key seen before: the same operation and parameters get the first result (through
/// `answer`), anything else is a mismatch.
fn check_key(
    stored: &StoredKey,
    operation: &str,
    fingerprint: &str,
    key: &IdempotencyKey,
) -> Result<(), LedgerError> {
    if stored.operation == operation && stored.fingerprint == fingerprint {
        Ok(())
    } else {
        Err(LedgerError::IdempotencyMismatch(key.as_str().to_owned()))
    }
}

/// Appends an operation moving `amount` from `from` to `to`, checking the balances stay valid.
async fn append_transfer<T: WriteTx>(
    tx: &mut T,
    firm: &FirmRow,
    mut operation: NewOperation,
    from: Account,
    to: Account,
) -> Result<Balances, LedgerError> {
    let credits = operation.credits;
    operation.postings = vec![(from, -credits), (to, credits)];
    let after = firm
        .balances
        .after(&operation.postings)
        .ok_or(LedgerError::InvalidAmount(Credits::new(
            credits.unsigned_abs(),
        )))?;
    tx.append(&operation, &after).await?;
    Ok(after)
}

fn new_operation(
    firm: FirmId,
    kind: EntryKind,
    credits: i64,
    available_delta: i64,
    hold: Option<HoldKey>,
    reference: Option<String>,
    at: OffsetDateTime,
) -> NewOperation {
    NewOperation {
        id: Uuid::now_v7(),
        firm,
        kind,
        credits,
        available_delta,
        hold,
        reference,
        at,
        postings: Vec::new(),
    }
}

pub(crate) async fn grant<B: Backend>(
    backend: &B,
    clock: &dyn Clock,
    firm: FirmId,
    credits: Credits,
    reference: &str,
    key: &IdempotencyKey,
) -> Result<LedgerReceipt, LedgerError> {
    let value = amount(credits)?;
    let print = fingerprint(&serde_json::json!([value, reference]));
    let mut tx = backend.begin().await?;
    let outcome: Result<LedgerReceipt, LedgerError> = async {
        let row = tx.lock_firm(firm).await?;
        if let Some(stored) = tx.find_key(firm, key).await? {
            check_key(&stored, "grant", &print, key)?;
            return serde_json::from_str(&stored.result).map_err(json_error);
        }
        let at = now_micros(clock);
        let operation = new_operation(
            firm,
            EntryKind::Grant,
            value,
            value,
            None,
            Some(reference.to_owned()),
            at,
        );
        let id = operation.id;
        let after = append_transfer(
            &mut tx,
            &row,
            operation,
            Account::Funding,
            Account::Available,
        )
        .await?;
        let receipt = LedgerReceipt {
            id: id.to_string(),
            balance: after.to_balance()?,
        };
        let result = serde_json::to_string(&receipt).map_err(json_error)?;
        tx.save_key(firm, key, &stored_key("grant", print, result), at)
            .await?;
        Ok(receipt)
    }
    .await;
    finish(tx, outcome).await
}

fn stored_key(operation: &str, fingerprint: String, result: String) -> StoredKey {
    StoredKey {
        operation: operation.to_owned(),
        fingerprint,
        result,
    }
}

/// The result stored for hold operations: the hold is answered as it is now, so only its identity
/// matters.
const HOLD_RESULT: &str = "hold";

async fn current_hold<T: WriteTx>(
    tx: &mut T,
    firm: FirmId,
    hold: HoldKey,
) -> Result<Hold, LedgerError> {
    tx.find_hold(firm, hold)
        .await?
        .ok_or_else(|| corrupt(format!("idempotency key recorded for missing hold {hold}")))
}

pub(crate) async fn reserve<B: Backend>(
    backend: &B,
    clock: &dyn Clock,
    firm: FirmId,
    hold: HoldKey,
    credits: Credits,
    key: &IdempotencyKey,
) -> Result<Hold, LedgerError> {
    let value = amount(credits)?;
    let print = fingerprint(&serde_json::json!([
        hold.customer.to_string(),
        hold.attempt.get(),
        value
    ]));
    let mut tx = backend.begin().await?;
    let outcome: Result<Hold, LedgerError> = async {
        let row = tx.lock_firm(firm).await?;
        if let Some(stored) = tx.find_key(firm, key).await? {
            check_key(&stored, "reserve", &print, key)?;
            return current_hold(&mut tx, firm, hold).await;
        }
        let at = now_micros(clock);
        if let Some(existing) = tx.find_hold(firm, hold).await? {
            // The hold is the attempt's identity: a second key for the same reservation is the same
            // request retried, while another amount for the same attempt is a caller's mistake.
            if existing.credits != credits {
                return Err(LedgerError::IdempotencyMismatch(key.as_str().to_owned()));
            }
            tx.save_key(
                firm,
                key,
                &stored_key("reserve", print, HOLD_RESULT.to_owned()),
                at,
            )
            .await?;
            return Ok(existing);
        }
        if row.balances.available < value {
            return Err(LedgerError::InsufficientCredits {
                available: credits_from_db(row.balances.available)?,
                requested: credits,
            });
        }
        if let Some(cap) = row.daily_cap {
            // The cap counts what was reserved this UTC day and not given back by a void: a hold
            // counts on the day it was reserved, whenever it is posted, since that is when the
            // firm decided to spend.
            let (from, to) = utc_day(at);
            let used = tx.reserved_between(firm, from, to).await?;
            if used.checked_add(value).is_none_or(|total| total > cap) {
                return Err(LedgerError::DailyCapExceeded {
                    cap: credits_from_db(cap)?,
                    used_today: credits_from_db(used)?,
                    requested: credits,
                });
            }
        }
        let reserved = Hold {
            firm_id: firm,
            key: hold,
            credits,
            state: HoldState::Pending,
            created_at: at,
        };
        tx.insert_hold(&reserved).await?;
        let operation = new_operation(
            firm,
            EntryKind::Reserve,
            value,
            -value,
            Some(hold),
            None,
            at,
        );
        append_transfer(&mut tx, &row, operation, Account::Available, Account::Held).await?;
        tx.save_key(
            firm,
            key,
            &stored_key("reserve", print, HOLD_RESULT.to_owned()),
            at,
        )
        .await?;
        Ok(reserved)
    }
    .await;
    finish(tx, outcome).await
}

/// Posts (`to = Posted`) or voids (`to = Voided`) a pending hold, once.
pub(crate) async fn resolve<B: Backend>(
    backend: &B,
    clock: &dyn Clock,
    firm: FirmId,
    hold: HoldKey,
    to: HoldState,
    key: &IdempotencyKey,
) -> Result<Hold, LedgerError> {
    let (operation_name, kind, destination, available_delta_sign) = match to {
        HoldState::Posted => ("post", EntryKind::Post, Account::Spent, 0),
        HoldState::Voided => ("void", EntryKind::Void, Account::Available, 1),
        HoldState::Pending => {
            return Err(corrupt("a hold cannot be resolved to pending".to_owned()));
        }
    };
    let print = fingerprint(&serde_json::json!([
        hold.customer.to_string(),
        hold.attempt.get()
    ]));
    let mut tx = backend.begin().await?;
    let outcome: Result<Hold, LedgerError> = async {
        let row = tx.lock_firm(firm).await?;
        if let Some(stored) = tx.find_key(firm, key).await? {
            check_key(&stored, operation_name, &print, key)?;
            return current_hold(&mut tx, firm, hold).await;
        }
        let mut current = tx
            .find_hold(firm, hold)
            .await?
            .ok_or(LedgerError::HoldNotFound(hold))?;
        let at = now_micros(clock);
        match current.state {
            HoldState::Pending => {
                tx.resolve_hold(firm, hold, to, at).await?;
                let value = amount(current.credits)?;
                let operation = new_operation(
                    firm,
                    kind,
                    value,
                    value * available_delta_sign,
                    Some(hold),
                    None,
                    at,
                );
                append_transfer(&mut tx, &row, operation, Account::Held, destination).await?;
                current.state = to;
            }
            // Resolving again the same way is the same request retried: answer it unchanged.
            state if state == to => {}
            state => return Err(LedgerError::HoldAlreadyResolved { hold, state }),
        }
        tx.save_key(
            firm,
            key,
            &stored_key(operation_name, print, HOLD_RESULT.to_owned()),
            at,
        )
        .await?;
        Ok(current)
    }
    .await;
    finish(tx, outcome).await
}

pub(crate) async fn refund<B: Backend>(
    backend: &B,
    clock: &dyn Clock,
    firm: FirmId,
    hold: HoldKey,
    credits: Credits,
    reason: &str,
    key: &IdempotencyKey,
) -> Result<LedgerReceipt, LedgerError> {
    let value = amount(credits)?;
    let print = fingerprint(&serde_json::json!([
        hold.customer.to_string(),
        hold.attempt.get(),
        value,
        reason
    ]));
    let mut tx = backend.begin().await?;
    let outcome: Result<LedgerReceipt, LedgerError> = async {
        let row = tx.lock_firm(firm).await?;
        if let Some(stored) = tx.find_key(firm, key).await? {
            check_key(&stored, "refund", &print, key)?;
            return serde_json::from_str(&stored.result).map_err(json_error);
        }
        let charged = tx
            .find_hold(firm, hold)
            .await?
            .ok_or(LedgerError::HoldNotFound(hold))?;
        let refundable = if charged.state == HoldState::Posted {
            amount(charged.credits)? - tx.refunded(firm, hold).await?
        } else {
            0
        };
        if value > refundable {
            return Err(LedgerError::RefundNotAllowed {
                hold,
                requested: credits,
                refundable: credits_from_db(refundable)?,
            });
        }
        let at = now_micros(clock);
        let operation = new_operation(
            firm,
            EntryKind::Refund,
            value,
            value,
            Some(hold),
            Some(reason.to_owned()),
            at,
        );
        let id = operation.id;
        let after =
            append_transfer(&mut tx, &row, operation, Account::Spent, Account::Available).await?;
        let receipt = LedgerReceipt {
            id: id.to_string(),
            balance: after.to_balance()?,
        };
        let result = serde_json::to_string(&receipt).map_err(json_error)?;
        tx.save_key(firm, key, &stored_key("refund", print, result), at)
            .await?;
        Ok(receipt)
    }
    .await;
    finish(tx, outcome).await
}

/// The statement cursor: the position of the last entry shown. Opaque to callers; an unreadable
/// one starts again from the newest entry, as the port asks.
pub(crate) fn encode_cursor(seq: i64) -> String {
    format!("c{seq:x}")
}

pub(crate) fn decode_cursor(cursor: Option<&str>) -> i64 {
    cursor
        .and_then(|text| text.strip_prefix('c'))
        .and_then(|hex| i64::from_str_radix(hex, 16).ok())
        .filter(|seq| *seq > 0)
        .unwrap_or(i64::MAX)
}

/// Page sizes are kept between 1 and 500 so one request cannot read a whole history at once.
pub(crate) fn page_limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, 500))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balances_refuse_to_go_negative() {
        let start = Balances {
            available: 1,
            ..Balances::default()
        };
        assert_eq!(
            start.after(&[(Account::Available, -2), (Account::Held, 2)]),
            None
        );
        let after = start
            .after(&[(Account::Available, -1), (Account::Held, 1)])
            .unwrap();
        assert_eq!((after.available, after.held), (0, 1));
    }

    #[test]
    fn cursors_round_trip_and_garbage_starts_from_the_newest() {
        assert_eq!(decode_cursor(Some(&encode_cursor(42))), 42);
        assert_eq!(decode_cursor(Some("not a cursor")), i64::MAX);
        assert_eq!(decode_cursor(Some("c-5")), i64::MAX);
        assert_eq!(decode_cursor(None), i64::MAX);
    }

    #[test]
    fn amounts_must_be_positive_and_fit_the_database() {
        assert!(matches!(
            amount(Credits::ZERO),
            Err(LedgerError::InvalidAmount(_))
        ));
        assert!(matches!(
            amount(Credits::new(u64::MAX)),
            Err(LedgerError::InvalidAmount(_))
        ));
        assert_eq!(amount(Credits::new(5)).unwrap(), 5);
    }

    #[test]
    fn fingerprints_separate_parameters_unambiguously() {
        let a = fingerprint(&serde_json::json!([1, "a\",\"b"]));
        let b = fingerprint(&serde_json::json!([1, "a", "b"]));
        assert_ne!(a, b);
    }
}
