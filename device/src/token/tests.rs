//! Tokens as IoT Core's samples made them: three URL-safe segments, the `alg`/`typ` header, the
//! three claims, and signatures that the RustCrypto verifying keys of the vectors' public keys
//! accept (ES256 as 64 raw bytes). That ingest accepts them is tested in
//! `ingest/tests/device_tokens.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::pkcs8::DecodePublicKey as _;
use rsa::signature::Verifier as _;
use serde_json::{Value, json};

use super::*;
use testkit::key;

const NOW: i64 = 1_767_225_600;

struct Decoded {
    header: Value,
    claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

fn decode(token: &str) -> Decoded {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    for part in &parts {
        assert!(
            part.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "URL-safe base64 without padding: {part}"
        );
    }
    let json = |part: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap();
    Decoded {
        header: json(parts[0]),
        claims: json(parts[1]),
        signing_input: format!("{}.{}", parts[0], parts[1]),
        signature: URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
    }
}

fn signed_with(name: &str, lifetime: Lifetime) -> Decoded {
    let device_key = DeviceKey::from_pem(&key(name)).unwrap();
    decode(&sign(&device_key, "demo-project", NOW, lifetime).unwrap())
}

#[test]
fn a_token_carries_the_header_and_claims_iot_core_samples_signed() {
    let token = signed_with("ec_private", Lifetime::default());
    assert_eq!(token.header, json!({"alg": "ES256", "typ": "JWT"}));
    assert_eq!(
        token.claims,
        json!({"iat": NOW, "exp": NOW + 3600, "aud": "demo-project"})
    );
    let rsa = signed_with("rsa_private", Lifetime::default());
    assert_eq!(rsa.header["alg"], "RS256");
}

#[test]
fn an_es256_signature_is_64_raw_bytes_that_the_public_key_verifies() {
    let token = signed_with("ec_private", Lifetime::default());
    assert_eq!(token.signature.len(), 64, "r||s, not DER");
    let public = p256::ecdsa::VerifyingKey::from_public_key_pem(&key("ec_public")).unwrap();
    let signature = p256::ecdsa::Signature::from_slice(&token.signature).unwrap();
    public
        .verify(token.signing_input.as_bytes(), &signature)
        .unwrap();
}

#[test]
fn an_rs256_signature_verifies_with_the_public_key() {
    let token = signed_with("rsa_private", Lifetime::default());
    assert_eq!(token.signature.len(), 256);
    let public = rsa::PublicKey::from_public_key_pem(&key("rsa_public")).unwrap();
    let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public);
    let signature = rsa::pkcs1v15::Signature::try_from(token.signature.as_slice()).unwrap();
    verifier
        .verify(token.signing_input.as_bytes(), &signature)
        .unwrap();
}

#[test]
fn a_tampered_token_no_longer_verifies() {
    let token = signed_with("ec_private", Lifetime::default());
    let public = p256::ecdsa::VerifyingKey::from_public_key_pem(&key("ec_public")).unwrap();
    let signature = p256::ecdsa::Signature::from_slice(&token.signature).unwrap();
    let tampered = token.signing_input.replace('.', "x.");
    assert!(public.verify(tampered.as_bytes(), &signature).is_err());
}

#[test]
fn the_lifetime_sets_exp_and_may_be_at_most_24_hours() {
    let day = Lifetime::new(Duration::from_secs(24 * 3600)).unwrap();
    let token = signed_with("ec_private", day);
    assert_eq!(token.claims["exp"], NOW + 24 * 3600);
    for secs in [0, 24 * 3600 + 1] {
        let err = Lifetime::new(Duration::from_secs(secs)).unwrap_err();
        assert!(err.to_string().contains("at most 24 h"), "{err}");
    }
    assert_eq!(
        Lifetime::new(Duration::from_millis(1500))
            .unwrap()
            .as_secs(),
        1
    );
}

#[test]
fn the_agent_renews_its_token_at_three_quarters_of_the_lifetime() {
    let device_key = DeviceKey::from_pem(&key("ec_private")).unwrap();
    let hour = Lifetime::new(Duration::from_secs(3600)).unwrap();
    let source = TokenSource::new(device_key, "demo-project", hour, Clock::default());
    assert!(!source.due(NOW, NOW + 2699));
    assert!(source.due(NOW, NOW + 2700), "renewed at 45 of 60 minutes");
    assert!(source.due(NOW, NOW - 1), "renewed when the clock went back");

    let first = source.token().unwrap();
    assert_eq!(source.token().unwrap(), first, "reused while fresh");
    source.expired("some other token");
    assert!(source.current.lock().unwrap().is_some());
    source.expired(&first);
    assert!(
        source.current.lock().unwrap().is_none(),
        "forgotten once refused"
    );
    let renewed = decode(&source.token().unwrap());
    assert_eq!(
        renewed.claims["exp"].as_i64().unwrap() - renewed.claims["iat"].as_i64().unwrap(),
        3600
    );
}
