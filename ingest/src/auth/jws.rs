//! The JWS layer of a device token, done by `jsonwebtoken` over aws-lc-rs: the header (`alg`),
//! the signature's base64url and its check, ES256 in the 64-byte `r||s` form. `jwt` keeps IoT
//! Core's rules on top (which algorithms, which keys, the claims, every message).
//!
//! jsonwebtoken builds a verifier per signature from a [`DecodingKey`], which holds key bytes
//! only, so its own aws-lc-rs backend would parse the public key again for every token (an RSA
//! key parse costs a sixth of an RS256 check). A device key is parsed once, when its credential
//! is loaded ([`VerifyingKey`]); [`signature_verifies`] lends that parsed key to this module's
//! [`CryptoProvider`] for the one synchronous call, through a thread-local slot, and the provider
//! uses it only if it is the very key jsonwebtoken was handed (same algorithm, same bytes).
//! Anything else, such as the Google ID tokens `google-cloud-auth` checks in the same process,
//! goes to jsonwebtoken's own aws-lc-rs provider unchanged.

use std::cell::RefCell;
use std::sync::{LazyLock, Once};

use jsonwebtoken::crypto::{self, CryptoProvider, JwtVerifier, aws_lc};
use jsonwebtoken::errors::Result as JwtResult;
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{DecodingKey, Header};
use shared::jwt::Algorithm;

use super::credentials::VerifyingKey;

/// The header of `token` (a compact JWS), as jsonwebtoken reads it.
pub fn header(token: &str) -> JwtResult<Header> {
    jsonwebtoken::decode_header(token)
}

/// The algorithm for jsonwebtoken's name of it, if it is one a device may use.
pub fn device_algorithm(alg: jsonwebtoken::Algorithm) -> Option<Algorithm> {
    match alg {
        jsonwebtoken::Algorithm::RS256 => Some(Algorithm::RS256),
        jsonwebtoken::Algorithm::ES256 => Some(Algorithm::ES256),
        _ => None,
    }
}

/// The key as jsonwebtoken takes it: PKCS#1 DER for RSA, the SEC1 point for P-256.
pub fn decoding_key(alg: Algorithm, public: &[u8]) -> DecodingKey {
    match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_der(public),
        Algorithm::ES256 => DecodingKey::from_ec_der(public),
    }
}

/// Whether `signature` (the token's third segment, base64url) is `key`'s `alg` signature over
/// `signing_input` (`header.claims`).
pub fn signature_verifies(
    key: &VerifyingKey,
    alg: Algorithm,
    signature: &str,
    signing_input: &[u8],
) -> bool {
    install_provider();
    LENT.with(|slot| *slot.borrow_mut() = Some(key.clone()));
    let verified = crypto::verify(
        signature,
        signing_input,
        key.decoding_key(),
        jwt_algorithm(alg),
    );
    LENT.with(|slot| slot.borrow_mut().take());
    verified.unwrap_or(false)
}

fn jwt_algorithm(alg: Algorithm) -> jsonwebtoken::Algorithm {
    match alg {
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
    }
}

thread_local! {
    /// The parsed key of the verification running on this thread, if any.
    static LENT: RefCell<Option<VerifyingKey>> = const { RefCell::new(None) };
}

/// jsonwebtoken's aws-lc-rs provider, except that a device key lent for the call is used as
/// already parsed.
static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory: aws_lc::DEFAULT_PROVIDER.signer_factory,
    verifier_factory: verifier,
    key_utils: aws_lc::DEFAULT_PROVIDER.key_utils.clone(),
});

/// Makes [`PROVIDER`] the process's jsonwebtoken provider, once. If something else chose one
/// first, that one verifies: still correct, only without the parsed key.
fn install_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if CryptoProvider::install_default(&PROVIDER).is_err() {
            tracing::warn!(
                "jsonwebtoken already has a crypto provider; device keys are parsed per token"
            );
        }
    });
}

fn verifier(alg: &jsonwebtoken::Algorithm, key: &DecodingKey) -> JwtResult<Box<dyn JwtVerifier>> {
    let lent = LENT.with(|slot| slot.borrow().clone()).filter(|lent| {
        Some(lent.algorithm()) == device_algorithm(*alg)
            && key.try_get_as_bytes().ok() == Some(lent.public_bytes())
    });
    match lent {
        Some(key) => Ok(Box::new(Parsed { key, alg: *alg })),
        None => (aws_lc::DEFAULT_PROVIDER.verifier_factory)(alg, key),
    }
}

/// A verifier over a key parsed when its credential was loaded.
struct Parsed {
    key: VerifyingKey,
    alg: jsonwebtoken::Algorithm,
}

impl Verifier<Vec<u8>> for Parsed {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        if self.key.verify(msg, signature) {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for Parsed {
    fn algorithm(&self) -> jsonwebtoken::Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_two_device_algorithms_map() {
        use jsonwebtoken::Algorithm as J;
        assert_eq!(device_algorithm(J::RS256), Some(Algorithm::RS256));
        assert_eq!(device_algorithm(J::ES256), Some(Algorithm::ES256));
        for other in [J::HS256, J::RS512, J::ES384, J::PS256, J::EdDSA] {
            assert_eq!(device_algorithm(other), None, "{other:?}");
        }
    }
}
