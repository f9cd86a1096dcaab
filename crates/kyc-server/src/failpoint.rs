//! Test-only fault injection (`KYC_FAILPOINT`): a decorator around the credits ledger port that
//! makes the process stop, forever, at one point of Start Verification, so an end-to-end test can
//! kill it there with SIGKILL and check that a restart on the same database recovers exactly as
//! product.md §4 promises (one charge, one applicant, or none).
//!
//! It lives only in the composition: the domain and the ledger adapters know nothing of it. It is
//! never on unless both `KYC_FAILPOINT` and `KYC_ALLOW_FAILPOINTS` are set, so a stray variable in
//! production cannot freeze every start.

use std::sync::Arc;

use async_trait::async_trait;
use clap::ValueEnum;
use kyc_domain::ids::FirmId;
use kyc_domain::ports::{
    Balance, CreditsLedger, Hold, HoldKey, IdempotencyKey, LedgerError, LedgerReceipt,
    StatementPage,
};
use kyc_domain::values::Credits;
use time::OffsetDateTime;

/// Where the process stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Failpoint {
    /// `post` never returns, and never reaches the ledger: the hold is reserved, the attempt
    /// claimed and the applicant created, as a crash between the phases would leave them.
    HoldBeforePost,
    /// `reserve` reaches the ledger, then never returns: the hold is pending and the attempt was
    /// never claimed.
    HoldAfterReserve,
}

impl Failpoint {
    /// The value of `KYC_FAILPOINT` that selects it.
    pub fn name(self) -> &'static str {
        match self {
            Self::HoldBeforePost => "hold-before-post",
            Self::HoldAfterReserve => "hold-after-reserve",
        }
    }
}

/// The credits ledger of `inner`, stopping forever at `failpoint`.
pub struct FailpointLedger {
    inner: Arc<dyn CreditsLedger>,
    failpoint: Failpoint,
}

impl FailpointLedger {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn CreditsLedger>, failpoint: Failpoint) -> Self {
        Self { inner, failpoint }
    }

    async fn hold_forever(&self, hold: HoldKey) -> ! {
        tracing::warn!(
            failpoint = self.failpoint.name(),
            %hold,
            "failpoint reached: this request holds here until the process is killed"
        );
        std::future::pending::<()>().await;
        unreachable!("a pending future never completes")
    }
}

#[async_trait]
impl CreditsLedger for FailpointLedger {
    async fn grant(
        &self,
        firm: FirmId,
        credits: Credits,
        reference: &str,
        key: &IdempotencyKey,
    ) -> Result<LedgerReceipt, LedgerError> {
        self.inner.grant(firm, credits, reference, key).await
    }

    async fn reserve(
        &self,
        firm: FirmId,
        hold: HoldKey,
        credits: Credits,
        key: &IdempotencyKey,
    ) -> Result<Hold, LedgerError> {
        let reserved = self.inner.reserve(firm, hold, credits, key).await?;
        if self.failpoint == Failpoint::HoldAfterReserve {
            self.hold_forever(hold).await;
        }
        Ok(reserved)
    }

    async fn post(
        &self,
        firm: FirmId,
        hold: HoldKey,
        key: &IdempotencyKey,
    ) -> Result<Hold, LedgerError> {
        if self.failpoint == Failpoint::HoldBeforePost {
            self.hold_forever(hold).await;
        }
        self.inner.post(firm, hold, key).await
    }

    async fn void(
        &self,
        firm: FirmId,
        hold: HoldKey,
        key: &IdempotencyKey,
    ) -> Result<Hold, LedgerError> {
        self.inner.void(firm, hold, key).await
    }

    async fn refund(
        &self,
        firm: FirmId,
        hold: HoldKey,
        credits: Credits,
        reason: &str,
        key: &IdempotencyKey,
    ) -> Result<LedgerReceipt, LedgerError> {
        self.inner.refund(firm, hold, credits, reason, key).await
    }

    async fn hold(&self, firm: FirmId, hold: HoldKey) -> Result<Option<Hold>, LedgerError> {
        self.inner.hold(firm, hold).await
    }

    async fn balance(&self, firm: FirmId) -> Result<Balance, LedgerError> {
        self.inner.balance(firm).await
    }

    async fn statement<'a>(
        &self,
        firm: FirmId,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> Result<StatementPage, LedgerError> {
        self.inner.statement(firm, cursor, limit).await
    }

    async fn set_daily_cap(&self, firm: FirmId, cap: Option<Credits>) -> Result<(), LedgerError> {
        self.inner.set_daily_cap(firm, cap).await
    }

    async fn pending_holds(
        &self,
        created_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Hold>, LedgerError> {
        self.inner.pending_holds(created_before, limit).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kyc_domain::ids::{AttemptNumber, CustomerId};
    use kyc_domain::ports::MockCreditsLedger;
    use uuid::Uuid;

    use super::*;

    fn hold_key() -> HoldKey {
        HoldKey {
            customer: CustomerId::from_uuid(Uuid::from_u128(7)),
            attempt: AttemptNumber::FIRST,
        }
    }

    fn pending(firm: FirmId) -> Hold {
        Hold {
            firm_id: firm,
            key: hold_key(),
            credits: Credits::new(1),
            state: kyc_domain::ports::HoldState::Pending,
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn firm() -> FirmId {
        FirmId::from_uuid(Uuid::from_u128(1))
    }

    #[tokio::test]
    async fn hold_before_post_never_reaches_the_ledger_and_never_returns() {
        let mut inner = MockCreditsLedger::new();
        inner.expect_post().never();
        let ledger = FailpointLedger::new(Arc::new(inner), Failpoint::HoldBeforePost);
        let key = IdempotencyKey::for_hold("post", hold_key());
        let posted = tokio::time::timeout(
            Duration::from_millis(50),
            ledger.post(firm(), hold_key(), &key),
        )
        .await;
        assert!(posted.is_err(), "post must hold");
    }

    #[tokio::test]
    async fn hold_after_reserve_reserves_then_never_returns() {
        let mut inner = MockCreditsLedger::new();
        inner
            .expect_reserve()
            .times(1)
            .returning(|firm, _, _, _| Ok(pending(firm)));
        let ledger = FailpointLedger::new(Arc::new(inner), Failpoint::HoldAfterReserve);
        let key = IdempotencyKey::for_hold("reserve", hold_key());
        let reserved = tokio::time::timeout(
            Duration::from_millis(50),
            ledger.reserve(firm(), hold_key(), Credits::new(1), &key),
        )
        .await;
        assert!(
            reserved.is_err(),
            "reserve must hold after the ledger answered"
        );
    }

    #[tokio::test]
    async fn the_other_operations_pass_through() {
        let mut inner = MockCreditsLedger::new();
        inner
            .expect_post()
            .times(1)
            .returning(|firm, _, _| Ok(pending(firm)));
        inner
            .expect_balance()
            .times(1)
            .returning(|_| Ok(Balance::default()));
        let ledger = FailpointLedger::new(Arc::new(inner), Failpoint::HoldAfterReserve);
        let key = IdempotencyKey::for_hold("post", hold_key());
        assert!(ledger.post(firm(), hold_key(), &key).await.is_ok());
        assert_eq!(ledger.balance(firm()).await.unwrap(), Balance::default());
    }
}
