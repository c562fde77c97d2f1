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

use std::sync::LazyLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ingest::auth::jwt::verify;
use iotcore_fuzz::{NOW, TOKEN_REASONS, device_keys, pem, project};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shared::jwt::{Algorithm, MAX_CLOCK_SKEW_SECS, MAX_TOKEN_LIFETIME_SECS};

/// The DER inside a PKCS#8 private key PEM of the vectors.
fn pkcs8(name: &str) -> Vec<u8> {
    let body: String = pem(name)
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    STANDARD.decode(body).expect("a vector key is base64")
}

static EC: LazyLock<EcdsaKeyPair> = LazyLock::new(|| {
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8("ec_private_pkcs8"))
        .expect("the vectors' EC key")
});
static RSA: LazyLock<RsaKeyPair> = LazyLock::new(|| {
    RsaKeyPair::from_pkcs8(&pkcs8("rsa_private_pkcs8")).expect("the vectors' RSA key")
});

fn sign(header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let rng = SystemRandom::new();
    let signature = if header.windows(5).any(|w| w == b"RS256") {
        let mut out = vec![0; RSA.public_modulus_len()];
        RSA.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut out)
            .expect("RSA signs");
        out
    } else {
        let signature = EC.sign(&rng, input.as_bytes()).expect("EC signs");
        signature.as_ref().to_vec()
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

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
