//! Arbitrary bytes as a device token, verified against a device holding every kind of real key
//! from `tests/vectors/` (RSA and EC, bare and in certificates, one credential expired).
//!
//! Asserts: no panic; the verdict is deterministic (a second verification is identical); an
//! accepted token obeys every rule (`alg` of a usable key, `iat` and `exp` within the skew of
//! `now`, `exp` after `iat` by at most 24 hours, a credential that was in force), and the same
//! token stays accepted identically at any instant inside its window; a refusal has one of the
//! known reasons and a message that renders.

#![no_main]

use ingest::auth::jwt::{MAX_TOKEN_LEN, verify};
use iotcore_fuzz::{NOW, TOKEN_REASONS, device_keys, project};
use libfuzzer_sys::fuzz_target;
use shared::jwt::{MAX_CLOCK_SKEW_SECS, MAX_TOKEN_LIFETIME_SECS};

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let keys = device_keys();
    let verdict = verify(&token, project(), keys, NOW);
    assert_eq!(
        verdict,
        verify(&token, project(), keys, NOW),
        "not deterministic"
    );
    match verdict {
        Ok(verified) => {
            assert!(token.len() <= MAX_TOKEN_LEN);
            assert!(verified.exp > verified.iat, "{verified:?}");
            assert!(
                verified.exp - verified.iat <= MAX_TOKEN_LIFETIME_SECS,
                "{verified:?}"
            );
            assert!(verified.iat <= NOW + MAX_CLOCK_SKEW_SECS, "{verified:?}");
            assert!(NOW <= verified.exp + MAX_CLOCK_SKEW_SECS, "{verified:?}");
            assert!(
                keys.iter().any(|k| k.key.algorithm() == verified.alg
                    && k.expires_at == verified.key_expires_at
                    && k.expires_at.is_none_or(|at| NOW < at)),
                "{verified:?}"
            );
            // Anywhere in the window where the key is still in force, the verdict is the same.
            let later = verified.exp + MAX_CLOCK_SKEW_SECS;
            let later = verified
                .key_expires_at
                .map_or(later, |at| later.min(at - 1));
            assert_eq!(verify(&token, project(), keys, later), Ok(verified));
        }
        Err(refusal) => {
            assert!(TOKEN_REASONS.contains(&refusal.reason()), "{refusal:?}");
            assert!(!refusal.error_reason().is_empty());
            assert!(!refusal.to_string().is_empty());
        }
    }
});
