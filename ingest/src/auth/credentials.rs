//! Device public keys: turns the PEM text an operator registers under one of IoT Core's four
//! formats into a [`VerifyingKey`] ready for aws-lc-rs, or refuses it with a [`KeyError`] that says
//! what was found and what to do instead. The same parser runs when a credential is registered and
//! when a stored one is loaded for a token check, so both always agree on what a key means.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, VerificationAlgorithm,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
use jsonwebtoken::DecodingKey;
use shared::PublicKeyFormat;
use shared::credential::UnknownFormat;
use shared::jwt::Algorithm;
use spki::{AlgorithmIdentifierRef, AsAlgorithmIdentifierRef, ObjectIdentifier};
use x509_cert::der::Decode;

use super::jws;

/// The smallest RSA modulus IoT Core accepted.
pub const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus aws-lc-rs verifies with (`RSA_PKCS1_2048_8192_SHA256`).
pub const MAX_RSA_BITS: usize = 8192;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

const GEN_RSA: &str =
    "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa_private.pem";
const GEN_EC: &str = "openssl ecparam -genkey -name prime256v1 -noout -out ec_private.pem";

/// Why a credential cannot be registered (or, for a stored one, used).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The format name is none of RSA_PEM, RSA_X509_PEM, ES256_PEM, ES256_X509_PEM.
    #[error(transparent)]
    UnknownFormat(#[from] UnknownFormat),
    /// The text is not PEM, or its contents do not decode as a key or certificate.
    #[error("the key is not a readable PEM public key: {detail}")]
    Malformed {
        /// What is wrong, in words an operator can act on.
        detail: String,
    },
    /// A private key was uploaded; it must stay on the device.
    #[error(
        "this is a private key (`-----BEGIN {label}-----`), which must never leave the device; \
         register the PUBLIC key instead, made with `{command}`"
    )]
    PrivateKey {
        /// The PEM label found.
        label: String,
        /// The openssl command that writes the matching public key or certificate.
        command: &'static str,
    },
    /// The text holds something other than what the format names (a certificate under RSA_PEM,
    /// an EC key under RSA_PEM, an RSA key under ES256_PEM …).
    #[error("{format} expects {expected}, but this is {found}; {advice}")]
    FormatMismatch {
        /// The format the credential was registered under.
        format: PublicKeyFormat,
        /// What that format takes.
        expected: &'static str,
        /// What the text actually holds.
        found: String,
        /// Which format to use instead, or how to convert.
        advice: String,
    },
    /// An EC key on a curve other than P-256.
    #[error(
        "the key is an EC key on {curve}; ES256 needs P-256 (prime256v1) — generate one with `{GEN_EC}`"
    )]
    WrongCurve {
        /// The curve found, by name or OID.
        curve: String,
    },
    /// An RSA key below 2048 bits.
    #[error(
        "the key is a {bits}-bit RSA key; IoT Core requires at least {MIN_RSA_BITS} bits — generate one with `{GEN_RSA}`"
    )]
    WeakKey {
        /// The modulus size found.
        bits: usize,
    },
    /// An RSA key above 8192 bits, which the verifier cannot use.
    #[error(
        "the key is a {bits}-bit RSA key; the largest supported is {MAX_RSA_BITS} bits — use 2048, 3072 or 4096 bits"
    )]
    KeyTooLarge {
        /// The modulus size found.
        bits: usize,
    },
}

impl KeyError {
    /// A stable code for the failure, as the test vectors name it.
    pub fn reason(&self) -> &'static str {
        match self {
            KeyError::UnknownFormat(_) => "unknown_format",
            KeyError::Malformed { .. } => "malformed",
            KeyError::PrivateKey { .. } => "private_key",
            KeyError::FormatMismatch { .. } => "format_mismatch",
            KeyError::WrongCurve { .. } => "wrong_curve",
            KeyError::WeakKey { .. } => "weak_key",
            KeyError::KeyTooLarge { .. } => "key_too_large",
        }
    }

    fn malformed(detail: impl Into<String>) -> Self {
        KeyError::Malformed {
            detail: detail.into(),
        }
    }
}

/// A device public key, parsed once and ready to verify signatures. Cloning shares it.
#[derive(Clone)]
pub struct VerifyingKey {
    inner: Arc<KeyInner>,
}

struct KeyInner {
    alg: Algorithm,
    bits: usize,
    /// RSA: the PKCS#1 `RSAPublicKey` DER; EC: the uncompressed SEC1 point.
    public: Box<[u8]>,
    /// Parsed once here so each verification skips re-parsing the key.
    parsed: ParsedPublicKey,
    /// The same key as jsonwebtoken takes it, built once too (see `jws`).
    decoding: DecodingKey,
}

impl VerifyingKey {
    fn new(alg: Algorithm, bits: usize, public: Vec<u8>) -> Result<Self, KeyError> {
        let algorithm: &'static dyn VerificationAlgorithm = match alg {
            Algorithm::RS256 => &RSA_PKCS1_2048_8192_SHA256,
            Algorithm::ES256 => &ECDSA_P256_SHA256_FIXED,
        };
        let parsed = ParsedPublicKey::new(algorithm, &public).map_err(|e| {
            KeyError::malformed(format!(
                "the key's numbers are not a valid public key ({e})"
            ))
        })?;
        let decoding = jws::decoding_key(alg, &public);
        let public = public.into_boxed_slice();
        Ok(Self {
            inner: Arc::new(KeyInner {
                alg,
                bits,
                public,
                parsed,
                decoding,
            }),
        })
    }

    /// The one token algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.alg
    }

    /// The key size in bits (the RSA modulus, or 256 for P-256).
    pub fn bits(&self) -> usize {
        self.inner.bits
    }

    /// The raw key: PKCS#1 `RSAPublicKey` DER for RSA, the uncompressed SEC1 point for EC.
    pub fn public_bytes(&self) -> &[u8] {
        &self.inner.public
    }

    /// The key for jsonwebtoken, which the JWS layer (`jws`) verifies tokens with.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.inner.decoding
    }

    /// Whether `signature` is this key's signature over `signing_input` (for ES256, in the
    /// 64-byte `r||s` form JWS uses), with the key as parsed once.
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        self.inner
            .parsed
            .verify_sig(signing_input, signature)
            .is_ok()
    }
}

impl PartialEq for VerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        self.inner.alg == other.inner.alg && self.inner.public == other.inner.public
    }
}

impl Eq for VerifyingKey {}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the shape: key bytes have no place in logs.
        write!(
            f,
            "VerifyingKey({}, {} bits)",
            self.inner.alg.as_str(),
            self.inner.bits
        )
    }
}

/// Parses a credential given its format name as the API spells it (`RSA_PEM` …).
pub fn parse_credential_name(format: &str, pem: &str) -> Result<VerifyingKey, KeyError> {
    parse_credential(PublicKeyFormat::parse(format)?, pem)
}

/// Parses and checks a credential registered under `format`: the PEM must hold what the format
/// names, RSA keys need 2048 to 8192 bits, EC keys must be P-256, private keys are refused.
/// Certificate validity dates are not checked: IoT Core did not check them either.
pub fn parse_credential(format: PublicKeyFormat, pem: &str) -> Result<VerifyingKey, KeyError> {
    let text = unescape_newlines(pem);
    refuse_private_keys(&text, format)?;
    let block = first_block(&text)?;
    let found = decode_block(format, &block)?;
    check_format(format, &found)?;
    into_key(found.material)
}

/// JSON-escaped PEM pasted as one line (`-----BEGIN…-----\nMIIB…`) is a common slip; read it
/// as the multi-line text it stands for.
fn unescape_newlines(pem: &str) -> Cow<'_, str> {
    if !pem.contains('\n') && pem.contains("\\n") {
        Cow::Owned(pem.replace("\\n", "\n"))
    } else {
        Cow::Borrowed(pem)
    }
}

/// The labels of every `-----BEGIN …-----` line, in order.
fn begin_labels(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|line| {
        line.trim()
            .strip_prefix("-----BEGIN ")?
            .strip_suffix("-----")
    })
}

/// Refuses text holding any private key, wherever it sits (`openssl ecparam -genkey` writes an
/// `EC PARAMETERS` block before the key, for one).
fn refuse_private_keys(text: &str, format: PublicKeyFormat) -> Result<(), KeyError> {
    let Some(label) = begin_labels(text).find(|l| l.ends_with("PRIVATE KEY")) else {
        return Ok(());
    };
    let rsa = match label {
        "RSA PRIVATE KEY" => true,
        "EC PRIVATE KEY" => false,
        _ => format.is_rsa(),
    };
    let command = match (rsa, format.is_certificate()) {
        (true, false) => "openssl rsa -in rsa_private.pem -pubout -out rsa_public.pem",
        (false, false) => "openssl ec -in ec_private.pem -pubout -out ec_public.pem",
        (true, true) => {
            "openssl req -x509 -key rsa_private.pem -out rsa_cert.pem -subj /CN=unused -days 3650"
        }
        (false, true) => {
            "openssl req -x509 -key ec_private.pem -out ec_cert.pem -subj /CN=unused -days 3650"
        }
    };
    Err(KeyError::PrivateKey {
        label: label.to_owned(),
        command,
    })
}

/// One PEM block, decoded.
struct Block<'a> {
    label: &'a str,
    der: Vec<u8>,
}

/// The first PEM block of the text; text around it (such as `openssl x509 -text` output) and
/// any further blocks (a certificate chain) are ignored, as Go's `pem.Decode` ignored them.
fn first_block(text: &str) -> Result<Block<'_>, KeyError> {
    let mut lines = text.lines().map(str::trim);
    let label = lines
        .by_ref()
        .find_map(|line| line.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .ok_or_else(|| not_pem(text))?;
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    for line in lines {
        if line == end {
            let der = STANDARD_PAD_INDIFFERENT.decode(&body).map_err(|_| {
                KeyError::malformed(format!("the `{label}` block is not valid base64"))
            })?;
            return Ok(Block { label, der });
        }
        body.push_str(line);
    }
    Err(KeyError::malformed(format!(
        "the `{label}` block has no `{end}` line; was the text cut off?"
    )))
}

fn not_pem(text: &str) -> KeyError {
    let text = text.trim();
    let detail = if text.is_empty() {
        "the key text is empty".to_owned()
    } else if text.starts_with("ssh-") || text.starts_with("ecdsa-sha2-") {
        "this is an OpenSSH public key; convert it with `ssh-keygen -e -m PKCS8 -f key.pub`"
            .to_owned()
    } else {
        "expected PEM text starting with `-----BEGIN PUBLIC KEY-----` or `-----BEGIN CERTIFICATE-----`"
            .to_owned()
    };
    KeyError::malformed(detail)
}

/// What a PEM block turned out to hold.
struct Found {
    certificate: bool,
    material: Material,
}

/// The key inside a block, before any policy is applied.
enum Material {
    Rsa {
        pkcs1: Vec<u8>,
        bits: usize,
    },
    Ec {
        curve: Option<ObjectIdentifier>,
        point: Vec<u8>,
    },
    Other {
        algorithm: ObjectIdentifier,
    },
}

fn decode_block(format: PublicKeyFormat, block: &Block<'_>) -> Result<Found, KeyError> {
    let (certificate, material) = match block.label {
        "PUBLIC KEY" => (false, material_from_spki_der(&block.der)?),
        "RSA PUBLIC KEY" => (false, rsa_material(&block.der)?),
        "CERTIFICATE" => (true, material_from_certificate(&block.der)?),
        other => {
            return Err(KeyError::FormatMismatch {
                format,
                expected: expected(format),
                found: format!("a PEM block labelled `{other}`"),
                advice: "upload the device's public key or certificate".to_owned(),
            });
        }
    };
    Ok(Found {
        certificate,
        material,
    })
}

fn material_from_spki_der(der: &[u8]) -> Result<Material, KeyError> {
    let spki = spki::SubjectPublicKeyInfoRef::try_from(der)
        .map_err(|e| KeyError::malformed(format!("the public key does not decode ({e})")))?;
    material_from_spki(spki.algorithm, spki.subject_public_key.as_bytes())
}

fn material_from_certificate(der: &[u8]) -> Result<Material, KeyError> {
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| {
        KeyError::malformed(format!("the certificate does not decode as X.509 ({e})"))
    })?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    material_from_spki(
        spki.algorithm.as_algo_ref(),
        spki.subject_public_key.as_bytes(),
    )
}

fn material_from_spki(
    algorithm: AlgorithmIdentifierRef<'_>,
    key: Option<&[u8]>,
) -> Result<Material, KeyError> {
    let key =
        key.ok_or_else(|| KeyError::malformed("the public key bit string is not whole bytes"))?;
    if algorithm.oid == RSA_ENCRYPTION {
        rsa_material(key)
    } else if algorithm.oid == EC_PUBLIC_KEY {
        Ok(Material::Ec {
            // Explicit curve parameters (not a named curve) read as "no curve": never P-256.
            curve: algorithm.oids().ok().and_then(|(_, curve)| curve),
            point: key.to_vec(),
        })
    } else {
        Ok(Material::Other {
            algorithm: algorithm.oid,
        })
    }
}

fn rsa_material(pkcs1: &[u8]) -> Result<Material, KeyError> {
    let key = pkcs1::RsaPublicKeyRef::try_from(pkcs1)
        .map_err(|e| KeyError::malformed(format!("the RSA public key does not decode ({e})")))?;
    // `as_bytes` has leading zeros stripped, so the first byte holds the top bit.
    let modulus = key.modulus.as_bytes();
    let bits = match modulus.first() {
        Some(top) => modulus.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    };
    Ok(Material::Rsa {
        pkcs1: pkcs1.to_vec(),
        bits,
    })
}

fn check_format(format: PublicKeyFormat, found: &Found) -> Result<(), KeyError> {
    let family_rsa = match found.material {
        Material::Rsa { .. } => Some(true),
        Material::Ec { .. } => Some(false),
        Material::Other { .. } => None,
    };
    if found.certificate == format.is_certificate() && family_rsa == Some(format.is_rsa()) {
        return Ok(());
    }
    let advice = match family_rsa {
        Some(rsa) => {
            let instead = format_for(rsa, found.certificate);
            let extract = if found.certificate && !format.is_certificate() {
                ", or register the bare key from `openssl x509 -in cert.pem -pubkey -noout`"
            } else {
                ""
            };
            format!("register it as {instead} instead{extract}")
        }
        None => format!(
            "IoT Core accepts only RSA (RS256) and EC P-256 (ES256) keys; generate one with `{GEN_RSA}` or `{GEN_EC}`"
        ),
    };
    Err(KeyError::FormatMismatch {
        format,
        expected: expected(format),
        found: describe(found),
        advice,
    })
}

fn format_for(rsa: bool, certificate: bool) -> PublicKeyFormat {
    match (rsa, certificate) {
        (true, false) => PublicKeyFormat::RsaPem,
        (true, true) => PublicKeyFormat::RsaX509Pem,
        (false, false) => PublicKeyFormat::Es256Pem,
        (false, true) => PublicKeyFormat::Es256X509Pem,
    }
}

fn expected(format: PublicKeyFormat) -> &'static str {
    match format {
        PublicKeyFormat::RsaPem => {
            "an RSA public key (`-----BEGIN PUBLIC KEY-----` or `-----BEGIN RSA PUBLIC KEY-----`)"
        }
        PublicKeyFormat::RsaX509Pem => {
            "an X.509 certificate (`-----BEGIN CERTIFICATE-----`) holding an RSA key"
        }
        PublicKeyFormat::Es256Pem => "an EC P-256 public key (`-----BEGIN PUBLIC KEY-----`)",
        PublicKeyFormat::Es256X509Pem => {
            "an X.509 certificate (`-----BEGIN CERTIFICATE-----`) holding an EC P-256 key"
        }
    }
}

fn describe(found: &Found) -> String {
    let key = match &found.material {
        Material::Rsa { bits, .. } => format!("a {bits}-bit RSA key"),
        Material::Ec { curve, .. } => format!("an EC key on {}", curve_name(curve.as_ref())),
        Material::Other { algorithm } => {
            format!("a key of algorithm {}", algorithm_name(algorithm))
        }
    };
    if found.certificate {
        format!("an X.509 certificate holding {key}")
    } else {
        key
    }
}

fn curve_name(curve: Option<&ObjectIdentifier>) -> String {
    let Some(oid) = curve else {
        return "explicitly given (unnamed) curve parameters".to_owned();
    };
    let name = match oid.to_string().as_str() {
        "1.2.840.10045.3.1.7" => "P-256",
        "1.3.132.0.34" => "P-384 (secp384r1)",
        "1.3.132.0.35" => "P-521 (secp521r1)",
        "1.3.132.0.10" => "secp256k1",
        "1.3.132.0.33" => "P-224 (secp224r1)",
        other => return format!("the curve with OID {other}"),
    };
    name.to_owned()
}

fn algorithm_name(oid: &ObjectIdentifier) -> String {
    let name = match oid.to_string().as_str() {
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        "1.2.840.10040.4.1" => "DSA",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS (a PSS-only RSA key)",
        other => return format!("OID {other}"),
    };
    name.to_owned()
}

fn into_key(material: Material) -> Result<VerifyingKey, KeyError> {
    match material {
        Material::Rsa { bits, .. } if bits < MIN_RSA_BITS => Err(KeyError::WeakKey { bits }),
        Material::Rsa { bits, .. } if bits > MAX_RSA_BITS => Err(KeyError::KeyTooLarge { bits }),
        Material::Rsa { pkcs1, bits } => VerifyingKey::new(Algorithm::RS256, bits, pkcs1),
        Material::Ec { curve, point } => {
            if curve != Some(P256) {
                return Err(KeyError::WrongCurve {
                    curve: curve_name(curve.as_ref()),
                });
            }
            if point.len() != 65 || point.first() != Some(&0x04) {
                return Err(KeyError::malformed(
                    "the EC point is not in uncompressed form; export it with \
                     `openssl ec -in ec_private.pem -pubout -conv_form uncompressed`",
                ));
            }
            VerifyingKey::new(Algorithm::ES256, 256, point)
        }
        // check_format refuses other algorithms before this point.
        Material::Other { algorithm } => Err(KeyError::malformed(format!(
            "unsupported key algorithm {}",
            algorithm_name(&algorithm)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(label: &str, der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
    }

    /// A minimal RSA SPKI with a modulus of `bits` bits (not a real key, enough for the policy).
    fn rsa_spki_pem(bits: usize) -> String {
        use spki::der::Encode;
        let mut modulus = vec![0xffu8; bits / 8];
        modulus[bits / 8 - 1] = 0x01;
        let n = spki::der::asn1::UintRef::new(&modulus).unwrap();
        let e = spki::der::asn1::UintRef::new(&[1, 0, 1]).unwrap();
        let pkcs1 = pkcs1::RsaPublicKey {
            modulus: n,
            public_exponent: e,
        }
        .to_der()
        .unwrap();
        let spki = spki::SubjectPublicKeyInfoRef {
            algorithm: AlgorithmIdentifierRef {
                oid: RSA_ENCRYPTION,
                parameters: Some(spki::der::AnyRef::NULL),
            },
            subject_public_key: spki::der::asn1::BitStringRef::from_bytes(&pkcs1).unwrap(),
        };
        pem("PUBLIC KEY", &spki.to_der().unwrap())
    }

    #[test]
    fn a_1024_bit_key_is_weak_and_the_message_says_how_to_make_a_good_one() {
        let err = parse_credential(PublicKeyFormat::RsaPem, &rsa_spki_pem(1024)).unwrap_err();
        assert_eq!(err.reason(), "weak_key");
        let msg = err.to_string();
        assert!(
            msg.contains("1024-bit") && msg.contains("rsa_keygen_bits:2048"),
            "{msg}"
        );
    }

    #[test]
    fn an_rsa_key_above_8192_bits_is_refused_as_too_large() {
        let err = parse_credential(PublicKeyFormat::RsaPem, &rsa_spki_pem(16384)).unwrap_err();
        assert_eq!(err, KeyError::KeyTooLarge { bits: 16384 });
    }

    #[test]
    fn a_2048_bit_modulus_passes_the_size_policy() {
        // Not a real key, but aws-lc accepts any odd modulus with a valid exponent.
        let key = parse_credential(PublicKeyFormat::RsaPem, &rsa_spki_pem(2048)).unwrap();
        assert_eq!(key.bits(), 2048);
        assert_eq!(key.algorithm(), Algorithm::RS256);
    }

    #[test]
    fn text_without_pem_armour_is_malformed() {
        for text in [
            "",
            "   ",
            "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA",
            "hello",
        ] {
            let err = parse_credential(PublicKeyFormat::RsaPem, text).unwrap_err();
            assert_eq!(err.reason(), "malformed", "{text:?}");
        }
    }

    #[test]
    fn an_openssh_key_is_malformed_with_a_conversion_hint() {
        let err = parse_credential(PublicKeyFormat::RsaPem, "ssh-rsa AAAAB3NzaC1yc2E user@host")
            .unwrap_err();
        assert!(err.to_string().contains("ssh-keygen -e -m PKCS8"), "{err}");
    }

    #[test]
    fn a_block_without_its_end_line_is_malformed() {
        let text = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n";
        let err = parse_credential(PublicKeyFormat::RsaPem, text).unwrap_err();
        assert!(err.to_string().contains("cut off"), "{err}");
    }

    #[test]
    fn a_body_that_is_not_base64_is_malformed() {
        let text = "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n";
        let err = parse_credential(PublicKeyFormat::RsaPem, text).unwrap_err();
        assert_eq!(err.reason(), "malformed");
    }

    #[test]
    fn every_private_key_label_is_refused_with_the_pubout_command() {
        for (label, format, command) in [
            ("RSA PRIVATE KEY", PublicKeyFormat::RsaPem, "openssl rsa"),
            ("EC PRIVATE KEY", PublicKeyFormat::Es256Pem, "openssl ec"),
            ("PRIVATE KEY", PublicKeyFormat::Es256Pem, "openssl ec"),
            (
                "ENCRYPTED PRIVATE KEY",
                PublicKeyFormat::RsaPem,
                "openssl rsa",
            ),
            (
                "PRIVATE KEY",
                PublicKeyFormat::RsaX509Pem,
                "openssl req -x509",
            ),
        ] {
            let err = parse_credential(format, &pem(label, b"secret")).unwrap_err();
            assert_eq!(err.reason(), "private_key", "{label}");
            let msg = err.to_string();
            assert!(msg.contains("PUBLIC key") && msg.contains(command), "{msg}");
        }
    }

    #[test]
    fn a_private_key_after_ec_parameters_is_still_refused() {
        let text = format!(
            "{}{}",
            pem("EC PARAMETERS", b"x"),
            pem("EC PRIVATE KEY", b"y")
        );
        let err = parse_credential(PublicKeyFormat::Es256Pem, &text).unwrap_err();
        assert_eq!(err.reason(), "private_key");
    }

    #[test]
    fn an_unexpected_pem_label_is_a_format_mismatch_naming_it() {
        let err = parse_credential(PublicKeyFormat::RsaPem, &pem("CERTIFICATE REQUEST", b"x"))
            .unwrap_err();
        assert_eq!(err.reason(), "format_mismatch");
        assert!(err.to_string().contains("CERTIFICATE REQUEST"), "{err}");
    }

    #[test]
    fn an_unknown_format_name_is_refused_with_the_valid_names() {
        let err = parse_credential_name("RSA_DER", "irrelevant").unwrap_err();
        assert_eq!(err.reason(), "unknown_format");
        assert!(err.to_string().contains("ES256_X509_PEM"), "{err}");
    }

    #[test]
    fn json_escaped_newlines_are_read_as_line_breaks() {
        let text = rsa_spki_pem(2048).replace('\n', "\\n");
        assert!(parse_credential(PublicKeyFormat::RsaPem, &text).is_ok());
    }

    #[test]
    fn an_ed25519_key_is_refused_as_unsupported() {
        use spki::der::Encode;
        let spki = spki::SubjectPublicKeyInfoRef {
            algorithm: AlgorithmIdentifierRef {
                oid: ObjectIdentifier::new_unwrap("1.3.101.112"),
                parameters: None,
            },
            subject_public_key: spki::der::asn1::BitStringRef::from_bytes(&[7; 32]).unwrap(),
        };
        let text = pem("PUBLIC KEY", &spki.to_der().unwrap());
        let err = parse_credential(PublicKeyFormat::Es256Pem, &text).unwrap_err();
        assert_eq!(err.reason(), "format_mismatch");
        assert!(err.to_string().contains("Ed25519"), "{err}");
    }

    #[test]
    fn a_key_debug_print_shows_no_key_bytes() {
        let key = parse_credential(PublicKeyFormat::RsaPem, &rsa_spki_pem(2048)).unwrap();
        assert_eq!(format!("{key:?}"), "VerifyingKey(RS256, 2048 bits)");
    }
}
