//! Device tokens for tests: RS256 and ES256 JWTs signed with a private key from the vectors,
//! with the `iat`, `exp` and `aud` a test chooses (expired, from the future, for another
//! project), which the device agent's own signer would never make.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use serde_json::json;

use crate::{PROJECT, key};

/// Signs device tokens with a private key from the vectors file.
#[derive(Debug)]
pub enum Signer {
    /// RS256.
    Rsa(RsaKeyPair),
    /// ES256 (P-256, the JWS `r||s` signature form).
    Ec(EcdsaKeyPair),
}

impl Signer {
    /// An RS256 signer from a PKCS#8 RSA key in the vectors (`rsa_private`, `rsa2_private`).
    pub fn rsa(key_name: &str) -> Self {
        Signer::Rsa(RsaKeyPair::from_pkcs8(&der(key_name)).unwrap())
    }

    /// An ES256 signer from a PKCS#8 P-256 key in the vectors (`ec_private_pkcs8`).
    pub fn ec(key_name: &str) -> Self {
        Signer::Ec(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der(key_name)).unwrap(),
        )
    }

    /// A token valid now: issued a minute ago, expiring in an hour, for the test project.
    pub fn fresh(&self) -> String {
        let now = Timestamp::now().as_second();
        self.token(now - 60, now + 3600, PROJECT)
    }

    /// A token with the given claims.
    pub fn token(&self, iat: i64, exp: i64, aud: &str) -> String {
        let alg = match self {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
        };
        let header = json!({"alg": alg, "typ": "JWT"});
        let claims = json!({"iat": iat, "exp": exp, "aud": aud});
        self.signed(header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    /// A token whose header and claims segments are exactly these bytes (JSON or not, the
    /// header's `alg` whatever it says), signed with this key: for tokens no library would make.
    pub fn signed(&self, header: &[u8], claims: &[u8]) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = self.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .unwrap();
                signature
            }
            Signer::Ec(pair) => pair.sign(&rng, message).unwrap().as_ref().to_vec(),
        }
    }
}

/// The DER inside a PEM key from the vectors.
fn der(key_name: &str) -> Vec<u8> {
    let pem = key(key_name);
    let (label, der) = pem_rfc7468::decode_vec(pem.as_bytes()).unwrap();
    assert_eq!(label, "PRIVATE KEY", "{key_name} is not PKCS#8");
    der
}
