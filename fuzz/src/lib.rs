//! What the fuzz targets share: the real device keys and tokens of `tests/vectors/`, loaded once,
//! the project and instant the vectors are judged at, and a signer for tokens of any shape.

use std::sync::LazyLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ingest::auth::credentials::parse_credential;
use ingest::auth::jwt::DeviceKey;
use serde_json::Value;
use shared::{ProjectId, PublicKeyFormat};

/// The vectors' instant (Unix seconds): every token case is judged at it.
pub const NOW: i64 = 1_767_225_600;

static VECTORS: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../../tests/vectors/jwt-vectors.json"))
        .expect("tests/vectors/jwt-vectors.json is JSON")
});

/// The vectors' project, `demo-project`.
pub fn project() -> &'static ProjectId {
    static PROJECT: LazyLock<ProjectId> = LazyLock::new(|| {
        let name = VECTORS["project"].as_str().expect("a project");
        ProjectId::parse(name).expect("a valid project id")
    });
    &PROJECT
}

/// A key of the vectors by name (`rsa_public`, `ec_private_pkcs8` …): PEM text.
pub fn pem(name: &str) -> &'static str {
    VECTORS["keys"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no key {name} in the vectors"))
}

/// A device holding every key format: an RSA key, an RSA certificate, an EC key, an EC
/// certificate, and a second RSA key whose credential expired before [`NOW`] (so the
/// `credential_expired` path is reachable).
pub fn device_keys() -> &'static [DeviceKey] {
    static KEYS: LazyLock<Vec<DeviceKey>> = LazyLock::new(|| {
        let key = |format, name, expires_at| DeviceKey {
            key: parse_credential(format, pem(name)).expect("a vector key parses"),
            expires_at,
        };
        vec![
            key(PublicKeyFormat::RsaPem, "rsa_public", None),
            key(PublicKeyFormat::RsaX509Pem, "rsa_cert", Some(NOW + 3_600)),
            key(PublicKeyFormat::Es256Pem, "ec_public", None),
            key(PublicKeyFormat::Es256X509Pem, "ec_cert", None),
            key(PublicKeyFormat::RsaPem, "rsa2_public", Some(NOW - 1)),
        ]
    });
    &KEYS
}

/// Every stable reason `ingest::auth::jwt::TokenError::reason` may give.
pub const TOKEN_REASONS: &[&str] = &[
    "malformed",
    "unsupported_algorithm",
    "missing_claim",
    "wrong_audience",
    "expired",
    "issued_in_future",
    "bad_lifetime",
    "no_credentials",
    "bad_signature",
    "credential_expired",
];

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

/// A JWS over exactly these header and claims bytes: RS256 with the vectors' RSA key when the
/// header mentions `RS256`, else ES256 with their EC key (`ec_public`).
pub fn sign(header: &[u8], claims: &[u8]) -> String {
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
