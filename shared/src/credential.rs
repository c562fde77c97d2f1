//! Device credential formats, named as IoT Core named them. The key checks themselves (PEM
//! parsing, key sizes, curves) live in ingest, which owns the crypto.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The most credentials one device may hold.
pub const MAX_CREDENTIALS: usize = 3;

/// How a device's public key is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PublicKeyFormat {
    /// An RSA public key in PEM (`PUBLIC KEY`, or PKCS#1 `RSA PUBLIC KEY`).
    #[serde(rename = "RSA_PEM")]
    RsaPem,
    /// An X.509 certificate (PEM) wrapping an RSA key.
    #[serde(rename = "RSA_X509_PEM")]
    RsaX509Pem,
    /// An EC P-256 public key in PEM.
    #[serde(rename = "ES256_PEM")]
    Es256Pem,
    /// An X.509 certificate (PEM) wrapping an EC P-256 key.
    #[serde(rename = "ES256_X509_PEM")]
    Es256X509Pem,
}

impl PublicKeyFormat {
    /// Every format, in IoT Core's order.
    pub const ALL: [PublicKeyFormat; 4] = [
        PublicKeyFormat::RsaPem,
        PublicKeyFormat::RsaX509Pem,
        PublicKeyFormat::Es256Pem,
        PublicKeyFormat::Es256X509Pem,
    ];

    /// The format's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PublicKeyFormat::RsaPem => "RSA_PEM",
            PublicKeyFormat::RsaX509Pem => "RSA_X509_PEM",
            PublicKeyFormat::Es256Pem => "ES256_PEM",
            PublicKeyFormat::Es256X509Pem => "ES256_X509_PEM",
        }
    }

    /// Parses a format name; the error lists the valid names.
    pub fn parse(name: &str) -> Result<Self, UnknownFormat> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == name)
            .ok_or_else(|| UnknownFormat(name.to_owned()))
    }

    /// Whether the key is wrapped in an X.509 certificate.
    pub fn is_certificate(self) -> bool {
        matches!(
            self,
            PublicKeyFormat::RsaX509Pem | PublicKeyFormat::Es256X509Pem
        )
    }

    /// Whether the key is an RSA key (else EC P-256).
    pub fn is_rsa(self) -> bool {
        matches!(self, PublicKeyFormat::RsaPem | PublicKeyFormat::RsaX509Pem)
    }
}

impl fmt::Display for PublicKeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is none of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key format `{0}`; use one of RSA_PEM, RSA_X509_PEM, ES256_PEM, ES256_X509_PEM")]
pub struct UnknownFormat(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_their_api_names() {
        for format in PublicKeyFormat::ALL {
            assert_eq!(PublicKeyFormat::parse(format.as_str()), Ok(format));
            let json = serde_json::to_string(&format).unwrap();
            assert_eq!(json, format!("\"{format}\""));
        }
        let err = PublicKeyFormat::parse("RSA_DER").unwrap_err().to_string();
        assert!(
            err.contains("RSA_DER") && err.contains("ES256_X509_PEM"),
            "{err}"
        );
        assert!(PublicKeyFormat::parse("rsa_pem").is_err());
    }

    #[test]
    fn formats_know_their_family() {
        assert!(
            PublicKeyFormat::RsaX509Pem.is_rsa() && PublicKeyFormat::RsaX509Pem.is_certificate()
        );
        assert!(!PublicKeyFormat::Es256Pem.is_rsa() && !PublicKeyFormat::Es256Pem.is_certificate());
    }
}
