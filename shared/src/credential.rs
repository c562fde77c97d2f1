//! Device credential formats, named as IoT Core named them. The key checks themselves (PEM
//! parsing, key sizes, curves) live in ingest, which owns the crypto.

use std::fmt;

use crate::proto3::proto3_enum;

/// The most credentials one device may hold.
pub const MAX_CREDENTIALS: usize = 3;

proto3_enum! {
    /// How a device's public key is encoded (numbered as in IoT Core's `.proto`).
    pub enum PublicKeyFormat {
        /// An RSA public key in PEM (`PUBLIC KEY`, or PKCS#1 `RSA PUBLIC KEY`).
        RsaPem = ("RSA_PEM", 3),
        /// An X.509 certificate (PEM) wrapping an RSA key.
        RsaX509Pem = ("RSA_X509_PEM", 1),
        /// An EC P-256 public key in PEM.
        Es256Pem = ("ES256_PEM", 2),
        /// An X.509 certificate (PEM) wrapping an EC P-256 key.
        Es256X509Pem = ("ES256_X509_PEM", 4),
    }
}

impl PublicKeyFormat {
    /// Parses a format name; the error lists the valid names.
    pub fn parse(name: &str) -> Result<Self, UnknownFormat> {
        Self::ALL
            .iter()
            .copied()
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
        for &format in PublicKeyFormat::ALL {
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
