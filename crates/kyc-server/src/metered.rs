//! A decorator around the provider ports that records each call's latency and outcome on the
//! `/metrics` registry (`provider_calls_total{operation,outcome}`,
//! `provider_call_duration_seconds{operation}`) and, after each call, whether the provider's
//! circuit is open (`provider_circuit_open`), so the Sumsub client itself stays free of metrics.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use kyc_domain::aml::AmlHit;
use kyc_domain::customer::VerifiedIdentity;
use kyc_domain::ids::{ApplicantId, ExternalUserId};
use kyc_domain::ports::{
    AmlScreening, Applicant, ApplicantRequest, IdentityProvider, ProviderError,
};
use kyc_http::Metrics;

/// The provider ports of `inner`, timed and counted on `metrics`.
pub struct MeteredProvider<P> {
    inner: Arc<P>,
    metrics: Metrics,
    circuit_open: Option<Box<dyn Fn() -> bool + Send + Sync>>,
}

impl<P> MeteredProvider<P> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<P>, metrics: Metrics) -> Self {
        Self {
            inner,
            metrics,
            circuit_open: None,
        }
    }

    /// Also reports `circuit_open()` as `provider_circuit_open` after every call.
    #[must_use]
    pub fn with_circuit(mut self, circuit_open: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.circuit_open = Some(Box::new(circuit_open));
        self
    }

    async fn timed<T>(
        &self,
        operation: &str,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let started = Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ProviderError::Refused { .. }) => "refused",
            Err(ProviderError::Transient { .. }) => "transient",
        };
        self.metrics
            .record_provider_call(operation, outcome, started.elapsed());
        if let Some(circuit_open) = &self.circuit_open {
            self.metrics.set_provider_circuit_open(circuit_open());
        }
        result
    }
}

#[async_trait]
impl<P: IdentityProvider + 'static> IdentityProvider for MeteredProvider<P> {
    async fn create_applicant(
        &self,
        request: &ApplicantRequest,
    ) -> Result<Applicant, ProviderError> {
        self.timed("create_applicant", self.inner.create_applicant(request))
            .await
    }

    async fn find_applicant(
        &self,
        external_user_id: &ExternalUserId,
    ) -> Result<Option<Applicant>, ProviderError> {
        self.timed(
            "find_applicant",
            self.inner.find_applicant(external_user_id),
        )
        .await
    }

    async fn verification_link(
        &self,
        external_user_id: &ExternalUserId,
        level_name: &str,
        ttl_secs: u32,
    ) -> Result<String, ProviderError> {
        self.timed(
            "verification_link",
            self.inner
                .verification_link(external_user_id, level_name, ttl_secs),
        )
        .await
    }

    async fn verified_identity(
        &self,
        applicant_id: &ApplicantId,
    ) -> Result<Option<VerifiedIdentity>, ProviderError> {
        self.timed(
            "verified_identity",
            self.inner.verified_identity(applicant_id),
        )
        .await
    }
}

#[async_trait]
impl<P: AmlScreening + 'static> AmlScreening for MeteredProvider<P> {
    async fn fetch_hits(&self, applicant_id: &ApplicantId) -> Result<Vec<AmlHit>, ProviderError> {
        self.timed("fetch_hits", self.inner.fetch_hits(applicant_id))
            .await
    }

    async fn request_rescreen(&self, applicant_id: &ApplicantId) -> Result<(), ProviderError> {
        self.timed(
            "request_rescreen",
            self.inner.request_rescreen(applicant_id),
        )
        .await
    }
}
