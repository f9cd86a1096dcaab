//! # kyc-sumsub
//!
//! Everything that speaks Sumsub's protocol, kept at the edge of the hexagon:
//!
//! | Module | Holds |
//! |---|---|
//! | [`signing`] | the request signature (`X-App-Access-Sig`) and the percent-encoding it signs |
//! | [`breaker`] | the circuit breaker that stops calls while the provider keeps failing |
//! | [`client`] | [`SumsubClient`], the signed reqwest client behind the domain's `IdentityProvider` and `AmlScreening` ports |
//! | [`webhook`] | verification of `X-Payload-Digest` and parsing of a webhook into a provider-neutral `ProviderEvent` |
//! | [`simulator`] | an axum router that behaves like Sumsub (signatures, 409s, hosted flow, signed webhooks) for demos and tests |
//!
//! Each module's header names the protocol facts it implements (signature string, digest header,
//! date formats, error shapes), so a change at Sumsub has one obvious place to land.

pub mod breaker;
pub mod client;
pub mod signing;
pub mod simulator;
pub mod webhook;

pub use breaker::{BreakerSettings, CircuitState};
pub use client::{SumsubClient, SumsubConfig};
pub use simulator::{Simulator, SimulatorConfig};
pub use webhook::{DigestAlgorithm, WebhookError, WebhookVerifier};
