//! Public keys on the command line: `--public-key`, `--format` and `--expires`, repeatable and
//! paired in order, read into the credentials the admin API takes. Also the help text that
//! tells a person which openssl command makes a key in each format, because a key registered
//! under the wrong format is the most common mistake.

use std::path::PathBuf;

use anyhow::Context as _;
use jiff::Timestamp;
use shared::PublicKeyFormat;
use shared::credential::MAX_CREDENTIALS;
use shared::resources::{DeviceCredential, PublicKeyCredential};

use super::UsageError;

/// After the examples: how to make a key in each format, since the format must match the file.
pub const KEY_FORMATS: &str = "\
Key formats (the file must hold what its format says):
  RSA_PEM         RSA public key of 2048 bits or more (-----BEGIN PUBLIC KEY-----)
  RSA_X509_PEM    X.509 certificate holding an RSA key (-----BEGIN CERTIFICATE-----)
  ES256_PEM       EC P-256 public key (-----BEGIN PUBLIC KEY-----)
  ES256_X509_PEM  X.509 certificate holding an EC P-256 key (-----BEGIN CERTIFICATE-----)

Making them with openssl (devices sign their JWTs with the private key; never upload it):
  RSA_PEM
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa_private.pem
    openssl rsa -in rsa_private.pem -pubout -out rsa_public.pem
  RSA_X509_PEM
    openssl req -x509 -nodes -newkey rsa:2048 -keyout rsa_private.pem -out rsa_cert.pem \\
        -days 365 -subj /CN=unused
  ES256_PEM
    openssl ecparam -genkey -name prime256v1 -noout -out ec_private.pem
    openssl ec -in ec_private.pem -pubout -out ec_public.pem
  ES256_X509_PEM
    openssl req -x509 -new -key ec_private.pem -out ec_cert.pem -days 365 -subj /CN=unused";

/// Public keys given as parallel, repeatable flags, paired in order.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Public keys")]
pub struct KeyArgs {
    /// PEM file holding a public key or certificate (repeatable, up to 3; never the private key)
    #[arg(long = "public-key", value_name = "PEM_FILE", requires = "formats")]
    files: Vec<PathBuf>,
    /// Format of the matching --public-key: RSA_PEM, RSA_X509_PEM (a certificate from
    /// `openssl req -x509 …`), ES256_PEM or ES256_X509_PEM; one per --public-key, in order
    #[arg(
        long = "format",
        value_name = "FORMAT",
        value_enum,
        ignore_case = true,
        id = "formats"
    )]
    formats: Vec<KeyFormat>,
    /// When the matching --public-key stops being accepted (RFC 3339, e.g. 2027-01-01T00:00:00Z),
    /// or `never`; paired in order, so write `never` for keys before one that expires
    #[arg(long = "expires", value_name = "TIME", value_parser = parse_expiry)]
    expires: Vec<Expiry>,
}

/// The key formats, named as IoT Core named them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyFormat {
    /// RSA public key in PEM (BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY), 2048 bits or more
    #[value(name = "RSA_PEM")]
    Rsa,
    /// X.509 certificate (BEGIN CERTIFICATE) holding an RSA key, e.g. from `openssl req -x509
    /// -newkey rsa:2048 …`
    #[value(name = "RSA_X509_PEM")]
    RsaX509,
    /// EC P-256 public key in PEM (BEGIN PUBLIC KEY)
    #[value(name = "ES256_PEM")]
    Es256,
    /// X.509 certificate (BEGIN CERTIFICATE) holding an EC P-256 key
    #[value(name = "ES256_X509_PEM")]
    Es256X509,
}

impl From<KeyFormat> for PublicKeyFormat {
    fn from(format: KeyFormat) -> Self {
        match format {
            KeyFormat::Rsa => PublicKeyFormat::RsaPem,
            KeyFormat::RsaX509 => PublicKeyFormat::RsaX509Pem,
            KeyFormat::Es256 => PublicKeyFormat::Es256Pem,
            KeyFormat::Es256X509 => PublicKeyFormat::Es256X509Pem,
        }
    }
}

/// `--expires`: a time, or `never`.
#[derive(Debug, Clone, Copy)]
struct Expiry(Option<Timestamp>);

fn parse_expiry(text: &str) -> Result<Expiry, String> {
    if text.eq_ignore_ascii_case("never") {
        return Ok(Expiry(None));
    }
    text.parse::<Timestamp>()
        .map(|t| Expiry(Some(t)))
        .map_err(|err| {
            format!("expected an RFC 3339 time such as 2027-01-01T00:00:00Z, or `never` ({err})")
        })
}

impl KeyArgs {
    /// Pairs the flags and reads each file; a miscount is a usage error, not a guess.
    pub fn credentials(&self) -> anyhow::Result<Vec<DeviceCredential>> {
        self.check_counts()?;
        self.files
            .iter()
            .zip(&self.formats)
            .enumerate()
            .map(|(i, (path, format))| {
                let key = std::fs::read_to_string(path)
                    .with_context(|| format!("reading public key file {}", path.display()))?;
                Ok(DeviceCredential {
                    public_key: PublicKeyCredential {
                        format: (*format).into(),
                        key,
                    },
                    expiration_time: self.expires.get(i).and_then(|e| e.0),
                })
            })
            .collect()
    }

    fn check_counts(&self) -> Result<(), UsageError> {
        let (keys, formats, expires) = (self.files.len(), self.formats.len(), self.expires.len());
        if keys > MAX_CREDENTIALS {
            return Err(UsageError(format!(
                "a device may hold at most {MAX_CREDENTIALS} public keys, got {keys} --public-key"
            )));
        }
        if formats != keys {
            return Err(UsageError(format!(
                "give one --format per --public-key, in the same order (got {keys} --public-key and {formats} --format)"
            )));
        }
        if expires > keys {
            return Err(UsageError(format!(
                "more --expires ({expires}) than --public-key ({keys}); each --expires belongs to the --public-key in the same position"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(flatten)]
        keys: KeyArgs,
    }

    fn keys(args: &[&str]) -> Result<KeyArgs, clap::Error> {
        Harness::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|h| h.keys)
    }

    #[test]
    fn each_key_needs_its_own_format() {
        let args = keys(&[
            "--public-key",
            "a.pem",
            "--public-key",
            "b.pem",
            "--format",
            "RSA_PEM",
        ])
        .unwrap();
        let err = args.check_counts().unwrap_err().to_string();
        assert!(err.contains("one --format per --public-key"), "{err}");
        assert!(
            keys(&["--public-key", "a.pem"]).is_err(),
            "a key without a format is a usage error"
        );
    }

    #[test]
    fn formats_are_read_in_any_case() {
        let args = keys(&["--public-key", "a.pem", "--format", "es256_x509_pem"]).unwrap();
        assert_eq!(args.formats, [KeyFormat::Es256X509]);
    }

    #[test]
    fn expiries_pair_with_keys_in_order() {
        let args = keys(&[
            "--public-key",
            "a.pem",
            "--format",
            "RSA_PEM",
            "--expires",
            "never",
            "--public-key",
            "b.pem",
            "--format",
            "RSA_PEM",
            "--expires",
            "2027-01-01T00:00:00Z",
        ])
        .unwrap();
        assert!(args.check_counts().is_ok());
        assert_eq!(args.expires[0].0, None);
        assert_eq!(
            args.expires[1].0.map(|t| t.as_second()),
            Some(1_798_761_600)
        );
        assert!(
            keys(&[
                "--public-key",
                "a",
                "--format",
                "RSA_PEM",
                "--expires",
                "tomorrow"
            ])
            .is_err()
        );
    }

    #[test]
    fn a_missing_key_file_is_named() {
        let args = keys(&[
            "--public-key",
            "/nonexistent/rsa_cert.pem",
            "--format",
            "RSA_X509_PEM",
        ])
        .unwrap();
        let err = format!("{:#}", args.credentials().unwrap_err());
        assert!(
            err.contains("reading public key file /nonexistent/rsa_cert.pem"),
            "{err}"
        );
    }

    #[test]
    fn every_cli_format_maps_to_the_api_format_of_the_same_name() {
        use clap::ValueEnum;
        for format in KeyFormat::value_variants() {
            let name = format.to_possible_value().unwrap().get_name().to_owned();
            assert_eq!(PublicKeyFormat::from(*format).as_str(), name);
        }
    }
}
