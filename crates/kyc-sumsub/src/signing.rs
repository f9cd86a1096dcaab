//! Sumsub's request signature: `X-App-Access-Sig` is the lowercase hex HMAC-SHA256, keyed with the
//! app's secret key, of `ts + METHOD + path_with_query + body`, where `path_with_query` is exactly
//! what goes on the wire (already percent-encoded) and the body is the exact bytes sent.
//!
//! Both the client (to sign) and the simulator (to check) use these functions, and the unit tests
//! pin them to the protocol's published test vectors, so the two cannot drift apart unnoticed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The lowercase hex HMAC-SHA256 signature of one request.
pub fn request_signature(
    secret_key: &[u8],
    timestamp_secs: &str,
    method: &str,
    path_with_query: &str,
    body: &[u8],
) -> String {
    hex::encode(
        request_mac(secret_key, timestamp_secs, method, path_with_query, body)
            .finalize()
            .into_bytes(),
    )
}

/// Whether `signature_hex` is the signature of this request. Compares in constant time, and accepts
/// either hex case (the comparison is on the decoded bytes).
pub fn verify_request_signature(
    secret_key: &[u8],
    timestamp_secs: &str,
    method: &str,
    path_with_query: &str,
    body: &[u8],
    signature_hex: &str,
) -> bool {
    let Ok(signature) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    request_mac(secret_key, timestamp_secs, method, path_with_query, body)
        .verify_slice(&signature)
        .is_ok()
}

fn request_mac(
    secret_key: &[u8],
    timestamp_secs: &str,
    method: &str,
    path_with_query: &str,
    body: &[u8],
) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_key).expect("HMAC takes any key length");
    mac.update(timestamp_secs.as_bytes());
    mac.update(method.to_ascii_uppercase().as_bytes());
    mac.update(path_with_query.as_bytes());
    mac.update(body);
    mac
}

/// Percent-encodes one path segment or query value: every byte outside RFC 3986's unreserved set
/// (`A-Z a-z 0-9 - . _ ~`) becomes `%XX`. The signature covers the encoded form, so encoding is
/// done here once rather than left to the HTTP library.
pub fn encode_component(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Builds `?k1=v1&k2=v2` with every key and value percent-encoded (empty when there are none).
pub fn encode_query(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let joined: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{}={}", encode_component(key), encode_component(value)))
        .collect();
    format!("?{}", joined.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-key";
    const TS: &str = "1607551635";

    #[test]
    fn the_documented_access_token_example_signs_to_the_published_vector() {
        let path = "/resources/accessTokens?userId=cfd20712-24a2-4c7d-9ab0-146f3c142335&levelName=basic-kyc-level&ttlInSecs=600";
        assert_eq!(
            request_signature(SECRET, TS, "POST", path, b""),
            "037e540186fd02eee1ea1835f3f123117314988d898da7c873529415772487bf"
        );
    }

    #[test]
    fn a_create_applicant_request_with_a_body_signs_to_the_published_vector() {
        let path = format!(
            "/resources/applicants{}",
            encode_query(&[("levelName", "basic-kyc-level")])
        );
        assert_eq!(
            request_signature(SECRET, TS, "POST", &path, br#"{"externalUserId":"user-1"}"#),
            "a6614639b6c2f38c70d5aeed3ccaff28e8433185d3ca0bdb39731d55316a7c3b"
        );
    }

    #[test]
    fn a_get_by_external_user_id_without_a_body_signs_to_the_published_vector() {
        let path = format!(
            "/resources/applicants/-;externalUserId={}/one",
            encode_component("user-1")
        );
        assert_eq!(
            request_signature(SECRET, TS, "GET", &path, b""),
            "7cd5f3fe91f7b848b99a0cb4ea8abb62c9b2db38cf83480996094da6519c7477"
        );
    }

    #[test]
    fn verification_accepts_the_right_signature_in_either_case_and_nothing_else() {
        let sig = "7cd5f3fe91f7b848b99a0cb4ea8abb62c9b2db38cf83480996094da6519c7477";
        let path = "/resources/applicants/-;externalUserId=user-1/one";
        assert!(verify_request_signature(SECRET, TS, "GET", path, b"", sig));
        assert!(verify_request_signature(
            SECRET,
            TS,
            "GET",
            path,
            b"",
            &sig.to_uppercase()
        ));
        assert!(!verify_request_signature(
            SECRET,
            "1607551636",
            "GET",
            path,
            b"",
            sig
        ));
        assert!(!verify_request_signature(
            SECRET, TS, "GET", path, b"{}", sig
        ));
        assert!(!verify_request_signature(
            SECRET, TS, "GET", path, b"", "not hex"
        ));
    }

    #[test]
    fn reserved_characters_are_percent_encoded_and_unreserved_ones_kept() {
        assert_eq!(
            encode_component("basic-kyc_level.v1~"),
            "basic-kyc_level.v1~"
        );
        assert_eq!(encode_component("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(encode_query(&[]), "");
        assert_eq!(
            encode_query(&[("levelName", "x y"), ("ttlInSecs", "600")]),
            "?levelName=x%20y&ttlInSecs=600"
        );
    }
}
