//! Arbitrary text as the PEM of a device credential, under one of the four formats (the first
//! byte picks it), as `devices.create` and every token check parse it.
//!
//! Asserts: no panic; the verdict is deterministic; an accepted key is of the format's family
//! (RSA of 2048 to 8192 bits, or P-256), and written back as a plain public key PEM (PKCS#1
//! `RSA PUBLIC KEY`, or an EC `PUBLIC KEY`) it parses to the very same key; a refusal has a
//! known reason and a message that renders.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ingest::auth::credentials::{KeyError, MAX_RSA_BITS, MIN_RSA_BITS, parse_credential};
use libfuzzer_sys::fuzz_target;
use shared::PublicKeyFormat;
use shared::jwt::Algorithm;

const REASONS: &[&str] = &[
    "unknown_format",
    "malformed",
    "private_key",
    "format_mismatch",
    "wrong_curve",
    "weak_key",
    "key_too_large",
];

/// The DER of an EC P-256 `SubjectPublicKeyInfo` up to its 65-byte uncompressed point.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, text)) = data.split_first() else {
        return;
    };
    let format = PublicKeyFormat::ALL[usize::from(pick) % PublicKeyFormat::ALL.len()];
    let text = String::from_utf8_lossy(text);
    let verdict = parse_credential(format, &text);
    assert_eq!(
        verdict,
        parse_credential(format, &text),
        "not deterministic"
    );
    match verdict {
        Ok(key) => {
            let again = if format.is_rsa() {
                assert_eq!(key.algorithm(), Algorithm::RS256);
                assert!(
                    (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&key.bits()),
                    "{key:?}"
                );
                parse_credential(
                    PublicKeyFormat::RsaPem,
                    &pem("RSA PUBLIC KEY", key.public_bytes()),
                )
            } else {
                assert_eq!(key.algorithm(), Algorithm::ES256);
                assert_eq!(key.bits(), 256);
                assert_eq!(key.public_bytes().len(), 65, "an uncompressed P-256 point");
                let spki = [P256_SPKI_PREFIX, key.public_bytes()].concat();
                parse_credential(PublicKeyFormat::Es256Pem, &pem("PUBLIC KEY", &spki))
            };
            let again = again.unwrap_or_else(|err| panic!("{key:?} written back: {err}"));
            assert_eq!(again, key);
            assert_eq!(again.bits(), key.bits());
        }
        Err(refusal) => {
            assert!(REASONS.contains(&refusal.reason()), "{refusal:?}");
            assert!(!matches!(refusal, KeyError::UnknownFormat(_)));
            assert!(!refusal.to_string().is_empty());
        }
    }
});
