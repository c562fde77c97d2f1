//! The self-signed certificate `keygen` writes beside the public key, for registries that hold
//! `RSA_X509_PEM` / `ES256_X509_PEM` credentials. IoT Core never checked who issued a device
//! certificate nor its dates, so this is the plainest certificate that carries the key: a v1
//! certificate (no extensions), `CN=iotcore-device`, valid from now until 9999-12-31 (RFC 5280's
//! "no well-defined expiration date"), like `openssl req -x509 -days 1000000` in IoT Core's guides.

use std::str::FromStr as _;
use std::time::Duration;

use p256::ecdsa::DerSignature;
use pkcs8::LineEnding;
use pkcs8::der::{DateTime, EncodePem as _};
use rsa::signature::Keypair as _;
use sha2::{Digest as _, Sha256};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder as _, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};

use super::{DeviceKey, KeyError};

/// The subject (and issuer) of every certificate `keygen` makes; nothing reads it.
const SUBJECT: &str = "CN=iotcore-device";

/// Issuer = subject, no extensions.
struct SelfSigned {
    subject: Name,
}

impl BuilderProfile for SelfSigned {
    fn get_issuer(&self, subject: &Name) -> Name {
        subject.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(Vec::new())
    }
}

/// Builds and signs the certificate for `key`, valid from `now` (Unix seconds).
pub(super) fn self_signed(key: &DeviceKey, now: i64) -> Result<String, KeyError> {
    let spki = match key {
        DeviceKey::Rsa(key) => SubjectPublicKeyInfoOwned::from_key(&key.verifying_key()),
        DeviceKey::Ec(key) => SubjectPublicKeyInfoOwned::from_key(key.verifying_key()),
    }
    .map_err(encode)?;
    let serial = serial_number(&spki)?;
    let subject = Name::from_str(SUBJECT).map_err(encode)?;
    let builder = CertificateBuilder::new(SelfSigned { subject }, serial, validity(now)?, spki)
        .map_err(encode)?;
    let certificate = match key {
        DeviceKey::Rsa(key) => builder.build::<_, rsa::pkcs1v15::Signature>(key.as_ref()),
        DeviceKey::Ec(key) => builder.build::<_, DerSignature>(key.as_ref()),
    }
    .map_err(encode)?;
    certificate.to_pem(LineEnding::LF).map_err(encode)
}

/// Derived from the key rather than random: unique per key, and no second RNG call to fail.
fn serial_number(spki: &SubjectPublicKeyInfoOwned) -> Result<SerialNumber, KeyError> {
    let digest = Sha256::digest(spki.subject_public_key.raw_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // A serial is a positive INTEGER: clear the sign bit, and keep it non-zero.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::new(&bytes).map_err(encode)
}

fn validity(now: i64) -> Result<Validity, KeyError> {
    let since_epoch = Duration::from_secs(u64::try_from(now).unwrap_or(0));
    let not_before = DateTime::from_unix_duration(since_epoch).map_err(encode)?;
    let not_after = DateTime::new(9999, 12, 31, 23, 59, 59).map_err(encode)?;
    Ok(Validity::new(Time::from(not_before), Time::from(not_after)))
}

fn encode(err: impl std::fmt::Display) -> KeyError {
    KeyError::Encode {
        what: "certificate",
        detail: err.to_string(),
    }
}
