//! The device's own key pair: generating one (`keygen`), reading the private key a device signs
//! its tokens with, and writing the PEM files an operator registers. Keys that openssl made are
//! read as they are — PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY` and PKCS#1 `RSA PRIVATE KEY` —
//! because IoT Core's guides told people to make them that way. All of it is pure-Rust
//! RustCrypto so the agent cross-compiles to every Raspberry Pi without a C toolchain.
//!
//! Key material never reaches a log: [`DeviceKey`]'s `Debug` shows only the algorithm.

mod cert;

use std::fmt;

use getrandom::SysRng;
use p256::ecdsa::{Signature as EcSignature, SigningKey as EcSigningKey};
use p256::elliptic_curve::Generate as _;
use pkcs8::der::zeroize::Zeroizing;
use pkcs8::der::{Decode as _, pem};
use pkcs8::{
    DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding,
    ObjectIdentifier, PrivateKeyInfoRef,
};
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs1v15::SigningKey as RsaSigningKey;
use rsa::signature::{Keypair as _, SignatureEncoding as _, Signer as _};
use rsa::traits::PublicKeyParts as _;
use sha2::Sha256;
use shared::jwt::Algorithm;

/// The RSA modulus `keygen` makes: the size IoT Core's guides used, and the least ingest accepts.
pub const RSA_BITS: usize = 2048;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

const MAKE_EC_KEY: &str = "openssl ecparam -genkey -name prime256v1 -noout -out ec_private.pem";
const MAKE_RSA_KEY: &str =
    "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa_private.pem";

/// Why a key cannot be made, read or used. Each message says what was found and what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text holds no PEM block at all.
    #[error(
        "no PEM block found; expected -----BEGIN PRIVATE KEY----- (PKCS#8), -----BEGIN EC \
         PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----, as `iotcore-device keygen` or \
         openssl writes them"
    )]
    NotPem,
    /// The PEM holds a public key or certificate where the private key belongs.
    #[error(
        "this is {what} (-----BEGIN {label}-----), not a private key; a device signs with its \
         private key (private.pem from `iotcore-device keygen`) and only the public half is \
         registered"
    )]
    NotPrivate {
        /// What the block is, in words.
        what: &'static str,
        /// The PEM label found.
        label: String,
    },
    /// A passphrase-protected PKCS#8 key.
    #[error(
        "the private key is encrypted (-----BEGIN ENCRYPTED PRIVATE KEY-----); a device must \
         sign unattended, so store it decrypted with mode 0600: \
         `openssl pkey -in encrypted.pem -out private.pem`"
    )]
    Encrypted,
    /// A PEM label this agent has no use for (an OpenSSH key, a CSR …).
    #[error(
        "unsupported PEM block -----BEGIN {label}-----; convert it to PKCS#8: \
         `openssl pkey -in key.pem -out private.pem`"
    )]
    UnsupportedLabel {
        /// The PEM label found.
        label: String,
    },
    /// The key's algorithm is neither RSA nor EC.
    #[error(
        "the key's algorithm ({oid}) is neither RSA nor EC; IoT Core devices sign with RS256 \
         (RSA) or ES256 (EC P-256): `{MAKE_EC_KEY}`"
    )]
    UnsupportedAlgorithm {
        /// The PKCS#8 algorithm OID.
        oid: ObjectIdentifier,
    },
    /// An EC key on a curve other than P-256.
    #[error(
        "the EC key is on {curve}; ES256 needs P-256 (openssl calls it prime256v1): \
         `{MAKE_EC_KEY}`"
    )]
    WrongCurve {
        /// The curve's name, or its OID when unknown.
        curve: String,
    },
    /// An RSA key too small for ingest to register.
    #[error(
        "the RSA key has {bits} bits; IoT Core and ingest need at least {RSA_BITS}: \
         `{MAKE_RSA_KEY}`"
    )]
    WeakRsa {
        /// The modulus size.
        bits: usize,
    },
    /// `--algorithm` names the other algorithm than the key signs with.
    #[error(
        "--algorithm {asked} does not fit this key: an {kind} key signs {fits}; drop \
         --algorithm or pass the matching key"
    )]
    AlgorithmMismatch {
        /// The algorithm asked for.
        asked: &'static str,
        /// The key's kind, "RSA" or "EC P-256".
        kind: &'static str,
        /// The algorithm the key signs with.
        fits: &'static str,
    },
    /// The PEM or DER inside does not decode as the label says.
    #[error("the {label} block does not decode: {detail}")]
    Malformed {
        /// The PEM label.
        label: String,
        /// The decoder's complaint.
        detail: String,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
    /// Encoding a key, a signature or a certificate failed (a bug, not bad input).
    #[error("could not encode the {what}: {detail}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's complaint.
        detail: String,
    },
}

/// A device's private key, ready to sign tokens.
pub enum DeviceKey {
    /// RSA, signing RS256 (RSASSA-PKCS1-v1_5 with SHA-256).
    Rsa(Box<RsaSigningKey<Sha256>>),
    /// EC P-256, signing ES256.
    Ec(Box<EcSigningKey>),
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The algorithm only: nothing of the key belongs in a log or a panic message.
        write!(f, "DeviceKey({})", self.algorithm().as_str())
    }
}

impl DeviceKey {
    /// A new key from the operating system's RNG: P-256 for ES256, 2048-bit RSA for RS256.
    pub fn generate(algorithm: Algorithm) -> Result<Self, KeyError> {
        let random = |err: getrandom::Error| KeyError::Random(err.to_string());
        match algorithm {
            Algorithm::ES256 => {
                let key = EcSigningKey::try_generate_from_rng(&mut SysRng).map_err(random)?;
                Ok(Self::Ec(Box::new(key)))
            }
            Algorithm::RS256 => {
                let key = rsa::PrivateKey::new(&mut SysRng, RSA_BITS)
                    .map_err(|err| KeyError::Random(err.to_string()))?;
                Ok(Self::Rsa(Box::new(RsaSigningKey::new(key))))
            }
        }
    }

    /// Reads a private key from PEM text in any of the three forms openssl writes. Leading
    /// blocks such as `EC PARAMETERS` (from `openssl ecparam -genkey` without `-noout`) are
    /// skipped.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let block = key_block(text)?;
        let (label, der) =
            pem::decode_vec(block.as_bytes()).map_err(|err| KeyError::Malformed {
                label: block_label(block).to_owned(),
                detail: err.to_string(),
            })?;
        let der = Zeroizing::new(der);
        match label {
            "PRIVATE KEY" => from_pkcs8(&der),
            "EC PRIVATE KEY" => from_sec1(&der),
            "RSA PRIVATE KEY" => {
                let key = rsa::PrivateKey::from_pkcs1_der(&der).map_err(malformed(label))?;
                rsa_key(key)
            }
            other => Err(refusal_for(other)),
        }
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Rsa(_) => Algorithm::RS256,
            Self::Ec(_) => Algorithm::ES256,
        }
    }

    /// Checks that `asked` (from `--algorithm`), if given, is what this key signs with.
    pub fn check_algorithm(&self, asked: Option<Algorithm>) -> Result<(), KeyError> {
        match asked {
            Some(asked) if asked != self.algorithm() => Err(KeyError::AlgorithmMismatch {
                asked: asked.as_str(),
                kind: match self {
                    Self::Rsa(_) => "RSA",
                    Self::Ec(_) => "EC P-256",
                },
                fits: self.algorithm().as_str(),
            }),
            _ => Ok(()),
        }
    }

    /// The JWS signature over `message`: PKCS#1 v1.5 for RS256, the 64-byte `r||s` pair (not
    /// DER) for ES256.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let failed = |err: rsa::signature::Error| KeyError::Encode {
            what: "signature",
            detail: err.to_string(),
        };
        match self {
            Self::Rsa(key) => Ok(key.try_sign(message).map_err(failed)?.to_vec()),
            Self::Ec(key) => {
                let signature: EcSignature = key.try_sign(message).map_err(failed)?;
                Ok(signature.to_bytes().to_vec())
            }
        }
    }

    /// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), which openssl, PyJWT and
    /// this agent all read.
    pub fn private_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        let encoded = match self {
            Self::Rsa(key) => key.to_pkcs8_pem(LineEnding::LF),
            Self::Ec(key) => key.to_pkcs8_pem(LineEnding::LF),
        };
        encoded.map_err(|err| KeyError::Encode {
            what: "private key",
            detail: err.to_string(),
        })
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`): what `RSA_PEM` and
    /// `ES256_PEM` credentials hold.
    pub fn public_pem(&self) -> Result<String, KeyError> {
        let encoded = match self {
            Self::Rsa(key) => key.verifying_key().to_public_key_pem(LineEnding::LF),
            Self::Ec(key) => key.verifying_key().to_public_key_pem(LineEnding::LF),
        };
        encoded.map_err(|err| KeyError::Encode {
            what: "public key",
            detail: err.to_string(),
        })
    }

    /// A self-signed X.509 certificate for this key (`RSA_X509_PEM` / `ES256_X509_PEM`), valid
    /// from `now` (Unix seconds) with no end date, as IoT Core's guides made them.
    pub fn self_signed_certificate_pem(&self, now: i64) -> Result<String, KeyError> {
        cert::self_signed(self, now)
    }
}

/// The first PEM block in `text` that is not curve parameters.
fn key_block(text: &str) -> Result<&str, KeyError> {
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let from_begin = &rest[start..];
        let label = block_label(from_begin);
        let end_marker = format!("-----END {label}-----");
        let Some(end) = from_begin.find(&end_marker) else {
            return Err(KeyError::Malformed {
                label: label.to_owned(),
                detail: format!("no `{end_marker}` line"),
            });
        };
        let block = &from_begin[..end + end_marker.len()];
        if label != "EC PARAMETERS" {
            return Ok(block);
        }
        rest = &from_begin[block.len()..];
    }
    Err(KeyError::NotPem)
}

/// The label of a block starting with `-----BEGIN `.
fn block_label(block: &str) -> &str {
    let after = block.strip_prefix("-----BEGIN ").unwrap_or(block);
    after.split_once("-----").map_or(after, |(label, _)| label)
}

fn refusal_for(label: &str) -> KeyError {
    let not_private = |what| KeyError::NotPrivate {
        what,
        label: label.to_owned(),
    };
    match label {
        "PUBLIC KEY" | "RSA PUBLIC KEY" => not_private("a public key"),
        "CERTIFICATE" => not_private("a certificate"),
        "ENCRYPTED PRIVATE KEY" => KeyError::Encrypted,
        other => KeyError::UnsupportedLabel {
            label: other.to_owned(),
        },
    }
}

fn malformed<E: fmt::Display>(label: &str) -> impl FnOnce(E) -> KeyError + '_ {
    move |err| KeyError::Malformed {
        label: label.to_owned(),
        detail: err.to_string(),
    }
}

/// PKCS#8 holds either kind; its algorithm identifier says which.
fn from_pkcs8(der: &[u8]) -> Result<DeviceKey, KeyError> {
    let info = PrivateKeyInfoRef::from_der(der).map_err(malformed("PRIVATE KEY"))?;
    match info.algorithm.oid {
        RSA_ENCRYPTION => {
            let key = rsa::PrivateKey::from_pkcs8_der(der).map_err(malformed("PRIVATE KEY"))?;
            rsa_key(key)
        }
        EC_PUBLIC_KEY => {
            let curve = info.algorithm.parameters_oid().ok();
            check_curve(curve)?;
            let key = EcSigningKey::from_pkcs8_der(der).map_err(malformed("PRIVATE KEY"))?;
            Ok(DeviceKey::Ec(Box::new(key)))
        }
        oid => Err(KeyError::UnsupportedAlgorithm { oid }),
    }
}

/// SEC1 (`openssl ecparam -genkey`) names its curve inside; check it before p256 reads the key,
/// so a P-384 key gets a message that says so.
fn from_sec1(der: &[u8]) -> Result<DeviceKey, KeyError> {
    let parsed = sec1::EcPrivateKey::from_der(der).map_err(malformed("EC PRIVATE KEY"))?;
    if let Some(sec1::EcParameters::NamedCurve(curve)) = parsed.parameters {
        check_curve(Some(curve))?;
    }
    let secret = p256::SecretKey::from_sec1_der(der).map_err(malformed("EC PRIVATE KEY"))?;
    Ok(DeviceKey::Ec(Box::new(EcSigningKey::from(secret))))
}

fn check_curve(curve: Option<ObjectIdentifier>) -> Result<(), KeyError> {
    match curve {
        Some(P256) => Ok(()),
        Some(other) => Err(KeyError::WrongCurve {
            curve: curve_name(other),
        }),
        None => Err(KeyError::WrongCurve {
            curve: "a curve the key does not name".to_owned(),
        }),
    }
}

fn curve_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.3.132.0.34" => "P-384 (secp384r1)".to_owned(),
        "1.3.132.0.35" => "P-521 (secp521r1)".to_owned(),
        "1.3.132.0.10" => "secp256k1".to_owned(),
        other => format!("the curve {other}"),
    }
}

fn rsa_key(key: rsa::PrivateKey) -> Result<DeviceKey, KeyError> {
    let bits = key.size() * 8;
    if bits < RSA_BITS {
        return Err(KeyError::WeakRsa { bits });
    }
    Ok(DeviceKey::Rsa(Box::new(RsaSigningKey::new(key))))
}

#[cfg(test)]
mod tests;
