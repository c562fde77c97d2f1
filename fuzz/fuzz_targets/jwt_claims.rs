//! Arbitrary header and claims JSON, really signed (ES256 with the vectors' EC key, or RS256
//! with their RSA key when the header asks for it), so the fuzzer reaches every claim rule
//! behind the signature check. Input: `header JSON 0x00 claims JSON`, or only the claims with
//! the header `{"alg":"ES256","typ":"JWT"}`.
//!
//! Asserts: no panic; an accepted token's claims, read independently with serde_json, are an
//! object with `aud` equal to the project and numeric `iat`/`exp` that round (up, down) to what
//! the verifier returned and obey the time rules; a token whose claims segment changes after
//! signing is refused for its signature.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ingest::auth::jwt::verify;
use iotcore_fuzz::{NOW, TOKEN_REASONS, device_keys, project, sign};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shared::jwt::{Algorithm, MAX_CLOCK_SKEW_SECS, MAX_TOKEN_LIFETIME_SECS};

/// A NumericDate as the rules read it: an integer as is, a float rounded by `round`, saturating.
fn seconds(value: &Value, round: fn(f64) -> f64) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| round(value.as_f64().expect("a number")) as i64)
}

fuzz_target!(|data: &[u8]| {
    let (header, claims) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&br#"{"alg":"ES256","typ":"JWT"}"#[..], data),
    };
    let token = sign(header, claims);
    let keys = device_keys();
    match verify(&token, project(), keys, NOW) {
        Ok(verified) => {
            let read: Value = serde_json::from_slice(claims).expect("accepted claims are JSON");
            let object = read.as_object().expect("accepted claims are an object");
            assert_eq!(object["aud"].as_str(), Some(project().as_str()));
            assert_eq!(seconds(&object["iat"], f64::ceil), verified.iat);
            assert_eq!(seconds(&object["exp"], f64::floor), verified.exp);
            assert!(verified.exp > verified.iat);
            assert!(verified.exp - verified.iat <= MAX_TOKEN_LIFETIME_SECS);
            assert!(verified.iat <= NOW + MAX_CLOCK_SKEW_SECS);
            assert!(NOW <= verified.exp + MAX_CLOCK_SKEW_SECS);
            let rsa = header.windows(5).any(|w| w == b"RS256");
            assert_eq!(verified.alg == Algorithm::RS256, rsa, "{verified:?}");

            // The signature binds the claims: one more space in them, and it no longer verifies.
            let mut changed = claims.to_vec();
            changed.push(b' ');
            let (input, signature) = token.rsplit_once('.').expect("three parts");
            let (header_part, _) = input.split_once('.').expect("three parts");
            let forged = format!(
                "{header_part}.{}.{signature}",
                URL_SAFE_NO_PAD.encode(&changed)
            );
            let refusal = verify(&forged, project(), keys, NOW).expect_err("a forged token");
            assert_eq!(refusal.reason(), "bad_signature", "{refusal}");
        }
        Err(refusal) => {
            assert!(TOKEN_REASONS.contains(&refusal.reason()), "{refusal:?}");
            assert!(!refusal.to_string().is_empty());
        }
    }
});
