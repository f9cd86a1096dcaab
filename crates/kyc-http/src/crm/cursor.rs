//! List cursors: opaque base64url JSON holding the walk's order, the last row's sort key and id,
//! and a binding to the firm and filters the walk started with. The position is a key, not an
//! offset, so rows inserted or updated while a CRM walks neither shift nor repeat the rest; the
//! binding makes a cursor used with other filters a 422 instead of a silently wrong page.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kyc_domain::ids::{CustomerId, FirmId};
use kyc_domain::ports::{CustomerFilter, ListOrder, PagePosition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::ApiError;

#[derive(Debug, Serialize, Deserialize)]
struct Encoded {
    /// `c` for `(created_at, id)`, `u` for `(updated_at, id)`, `d` for `(updated_at, id)`
    /// descending.
    o: String,
    /// Sort key, Unix nanoseconds as text (exact, whatever the storage precision).
    k: String,
    /// Last id.
    i: String,
    /// Binding to firm and filters.
    b: String,
}

fn order_tag(order: ListOrder) -> &'static str {
    match order {
        ListOrder::CreatedAt => "c",
        ListOrder::UpdatedAt => "u",
        ListOrder::UpdatedAtDesc => "d",
    }
}

/// What a cursor is bound to: the firm and every filter (not `limit` or `include`, which may
/// change between pages). `newest_first` is bound only when set, so every cursor issued before
/// it existed (and every CRM cursor, which never sets it) keeps its binding.
fn binding(firm: FirmId, filter: &CustomerFilter) -> String {
    let mut canonical = format!(
        "{firm}|{}|{}|{}|{}",
        filter.kyc_status.map_or("", |s| s.as_str()),
        filter.aml_status.map_or("", |s| s.as_str()),
        filter
            .updated_since
            .map(|t| t.unix_timestamp_nanos().to_string())
            .unwrap_or_default(),
        filter.external_id.as_ref().map_or("", |e| e.as_str()),
    );
    if filter.newest_first {
        canonical.push_str("|newest_first");
    }
    hex::encode(&Sha256::digest(canonical.as_bytes())[..12])
}

/// The cursor resuming after `position`.
pub fn encode(firm: FirmId, filter: &CustomerFilter, position: &PagePosition) -> String {
    let encoded = Encoded {
        o: order_tag(filter.order()).to_owned(),
        k: position.sort_key.unix_timestamp_nanos().to_string(),
        i: position.id.to_string(),
        b: binding(firm, filter),
    };
    // Serialising a struct of strings cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&encoded).unwrap_or_default())
}

/// The position a cursor resumes after.
///
/// # Errors
/// 422 on `cursor` when it is not one of ours, or was issued for other filters.
pub fn decode(text: &str, firm: FirmId, filter: &CustomerFilter) -> Result<PagePosition, ApiError> {
    let malformed = || {
        ApiError::invalid(
            "cursor",
            "cursor is not valid: pass next_cursor exactly as returned",
        )
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| malformed())?;
    let encoded: Encoded = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    if encoded.b != binding(firm, filter) || encoded.o != order_tag(filter.order()) {
        return Err(ApiError::invalid(
            "cursor",
            "cursor was issued for different filters: keep the filters of the first page while walking",
        ));
    }
    let nanos: i128 = encoded.k.parse().map_err(|_| malformed())?;
    Ok(PagePosition {
        sort_key: OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| malformed())?,
        id: CustomerId::parse(&encoded.i).map_err(|_| malformed())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kyc_domain::status::KycStatus;
    use time::macros::datetime;

    fn firm() -> FirmId {
        FirmId::from_uuid(uuid::Uuid::from_u128(7))
    }

    #[test]
    fn a_cursor_round_trips_to_the_same_position() {
        let filter = CustomerFilter::default();
        let position = PagePosition {
            sort_key: datetime!(2026-06-23 01:12:00.123456789 UTC),
            id: CustomerId::from_uuid(uuid::Uuid::from_u128(42)),
        };
        let text = encode(firm(), &filter, &position);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(decode(&text, firm(), &filter).unwrap(), position);
    }

    #[test]
    fn a_cursor_is_refused_under_other_filters_or_another_firm() {
        let filter = CustomerFilter::default();
        let position = PagePosition {
            sort_key: datetime!(2026-06-23 01:12:00 UTC),
            id: CustomerId::from_uuid(uuid::Uuid::from_u128(42)),
        };
        let text = encode(firm(), &filter, &position);
        let other = CustomerFilter {
            kyc_status: Some(KycStatus::Verified),
            ..CustomerFilter::default()
        };
        assert!(decode(&text, firm(), &other).is_err());
        let stranger = FirmId::from_uuid(uuid::Uuid::from_u128(8));
        assert!(decode(&text, stranger, &filter).is_err());
        assert!(decode("not-a-cursor", firm(), &filter).is_err());
    }

    #[test]
    fn a_newest_first_cursor_round_trips_and_is_refused_for_the_ascending_walk() {
        let newest = CustomerFilter {
            newest_first: true,
            ..CustomerFilter::default()
        };
        let position = PagePosition {
            sort_key: datetime!(2026-06-23 01:12:00 UTC),
            id: CustomerId::from_uuid(uuid::Uuid::from_u128(42)),
        };
        let text = encode(firm(), &newest, &position);
        assert_eq!(decode(&text, firm(), &newest).unwrap(), position);
        assert!(decode(&text, firm(), &CustomerFilter::default()).is_err());
        let ascending = encode(firm(), &CustomerFilter::default(), &position);
        assert!(decode(&ascending, firm(), &newest).is_err());
    }

    #[test]
    fn cursors_without_newest_first_keep_the_binding_they_always_had() {
        // Computed as before `newest_first` existed: the firm and the four CRM filters.
        let canonical = format!("{}||||", firm());
        let before = hex::encode(&Sha256::digest(canonical.as_bytes())[..12]);
        assert_eq!(binding(firm(), &CustomerFilter::default()), before);
    }

    fn filters() -> impl proptest::strategy::Strategy<Value = CustomerFilter> {
        use proptest::prelude::*;
        (
            proptest::option::of(proptest::sample::select(KycStatus::ALL.to_vec())),
            any::<bool>(),
            proptest::option::of(0_i64..4_000_000_000),
        )
            .prop_map(|(kyc_status, newest_first, since)| CustomerFilter {
                kyc_status,
                newest_first,
                updated_since: since.and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok()),
                ..CustomerFilter::default()
            })
    }

    proptest::proptest! {
        /// Any text at all is a position or a 422, never a panic.
        #[test]
        fn the_decoder_never_panics_on_any_text(text in "\\PC{0,300}") {
            let _ = decode(&text, firm(), &CustomerFilter::default());
        }

        /// Base64url of any bytes, and of JSON shaped like a cursor with any values, is a
        /// position or a 422.
        #[test]
        fn the_decoder_never_panics_on_cursor_shaped_input(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            o in "\\PC{0,3}", k in "\\PC{0,45}", i in "\\PC{0,40}", b in "\\PC{0,30}",
        ) {
            let _ = decode(&URL_SAFE_NO_PAD.encode(&bytes), firm(), &CustomerFilter::default());
            let json = serde_json::json!({"o": o, "k": k, "i": i, "b": b}).to_string();
            let _ = decode(&URL_SAFE_NO_PAD.encode(json), firm(), &CustomerFilter::default());
        }

        /// Every position round-trips under the filters it was issued for, and is refused under
        /// any other filters or for another firm.
        #[test]
        fn every_position_round_trips_and_binds_its_filters(
            nanos in -2_000_000_000_000_000_000_i128..4_000_000_000_000_000_000_i128,
            id in proptest::prelude::any::<u128>(),
            filter in filters(),
            other in filters(),
            stranger in proptest::prelude::any::<u128>(),
        ) {
            let position = PagePosition {
                sort_key: OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap(),
                id: CustomerId::from_uuid(uuid::Uuid::from_u128(id)),
            };
            let text = encode(firm(), &filter, &position);
            proptest::prop_assert_eq!(decode(&text, firm(), &filter).unwrap(), position);
            if binding(firm(), &other) != binding(firm(), &filter) {
                proptest::prop_assert!(decode(&text, firm(), &other).is_err());
            }
            let stranger = FirmId::from_uuid(uuid::Uuid::from_u128(stranger));
            if stranger != firm() {
                proptest::prop_assert!(decode(&text, stranger, &filter).is_err());
            }
        }
    }
}
