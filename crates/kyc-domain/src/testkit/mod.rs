//! Test support for suites outside this crate (enabled by the `proptest` feature):
//!
//! - [`strategies`]: proptest strategies for customer input, provider events, delivery orders with
//!   duplicates, and sequences of lifecycle commands;
//! - [`invariants`]: [`invariants::check`], which every reachable customer satisfies, and
//!   [`invariants::LifecycleView`], the part of a customer that must not depend on delivery order;
//! - [`memory`]: in-memory adapters of every port the use cases drive, with fault injection that
//!   simulates a crash before or after any port call, for tests that kill a start half-way.
//!
//! A suite checking order-insensitivity from outside looks like this:
//!
//! ```
//! use kyc_domain::testkit::{invariants, strategies};
//! use proptest::prelude::*;
//!
//! proptest!(ProptestConfig::with_cases(16), |(scenario in strategies::delivery_scenario())| {
//!     let in_order = strategies::deliver(&scenario.events_in_creation_order());
//!     let shuffled = strategies::deliver(&scenario.deliveries);
//!     prop_assert_eq!(invariants::LifecycleView::of(&in_order), invariants::LifecycleView::of(&shuffled));
//!     prop_assert!(invariants::check(&shuffled).is_ok());
//! });
//! ```

pub mod invariants;
pub mod memory;
pub mod strategies;
