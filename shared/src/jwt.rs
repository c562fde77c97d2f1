//! The device token contract: the claims a device signs and the time rules every verifier and
//! signer shares (10 minutes of clock skew, a lifetime of at most 24 hours).

use serde::{Deserialize, Serialize};

/// Clock skew tolerated either way between a device and the service, in seconds.
pub const MAX_CLOCK_SKEW_SECS: i64 = 10 * 60;

/// The longest a device token may live (`exp - iat`), in seconds.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 24 * 60 * 60;

/// The claims a device signs. Verifiers accept `iat`/`exp` as integers or floats; signers write
/// integers, as IoT Core's samples did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issued at, in Unix seconds.
    pub iat: i64,
    /// Expires at, in Unix seconds.
    pub exp: i64,
    /// The Google Cloud project id the device belongs to.
    pub aud: String,
}

/// The two signature algorithms a device may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, for RSA keys of at least 2048 bits.
    RS256,
    /// ECDSA on P-256 with SHA-256, signature as the 64-byte `r||s` pair.
    ES256,
}

impl Algorithm {
    /// The algorithm named by a JOSE `alg` header, if it is one of the two allowed.
    pub fn from_header(alg: &str) -> Option<Self> {
        match alg {
            "RS256" => Some(Algorithm::RS256),
            "ES256" => Some(Algorithm::ES256),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rs256_and_es256_are_allowed() {
        assert_eq!(Algorithm::from_header("RS256"), Some(Algorithm::RS256));
        assert_eq!(Algorithm::from_header("ES256"), Some(Algorithm::ES256));
        for other in ["none", "HS256", "RS512", "ES384", "PS256", "rs256", ""] {
            assert_eq!(Algorithm::from_header(other), None, "{other}");
        }
    }

    #[test]
    fn claims_serialize_as_iot_core_samples_sign_them() {
        let claims = Claims {
            iat: 1,
            exp: 2,
            aud: "demo-project".into(),
        };
        assert_eq!(
            serde_json::to_string(&claims).unwrap(),
            r#"{"iat":1,"exp":2,"aud":"demo-project"}"#
        );
    }
}
