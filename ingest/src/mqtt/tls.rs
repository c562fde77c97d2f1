//! TLS for the MQTT listener. With a certificate and key given (PEM files), they are served and
//! re-read when either file changes, so a renewed certificate takes effect without dropping a
//! connection (established sessions keep the keys they agreed). With none given, ingest makes a
//! local CA and a server certificate for `localhost`, `127.0.0.1`, `::1` and the host name on
//! first start, keeps them in its TLS directory and reuses them afterwards; a device (or a paho
//! client's `tls_set(ca_certs=…)`) trusts the CA file, as IoT Core's guides trusted `roots.pem`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are checked for a change.
const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// Where the listener's certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files the operator manages (and renews).
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// Its private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// A local CA and server certificate made (once) in this directory.
    Embedded(PathBuf),
}

/// The TLS side of the listener, ready to accept.
pub struct Tls {
    /// Wraps accepted TCP streams.
    pub acceptor: TlsAcceptor,
    /// The CA file devices must trust, when the certificate is the embedded one.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// Prepares TLS from `source`, starting the watcher that re-reads renewed files.
pub fn prepare(source: &TlsSource) -> anyhow::Result<Tls> {
    let (cert, key, ca_file) = match source {
        TlsSource::Files { cert, key } => (cert.clone(), key.clone(), None),
        TlsSource::Embedded(dir) => {
            let made = embedded(dir)?;
            (made.cert, made.key, Some(made.ca))
        }
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let resolver = Arc::new(Reloading {
        current: RwLock::new(Arc::new(load(&cert, &key, &provider)?)),
        stamp: RwLock::new(stamp(&cert, &key)),
        cert,
        key,
        provider: provider.clone(),
    });
    spawn_watcher(Arc::downgrade(&resolver));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("configuring TLS")?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        ca_file,
    })
}

/// Serves the newest certificate that loaded.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
    stamp: RwLock<Stamp>,
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

impl Reloading {
    /// Loads the files again when they changed; a file caught half-written fails to load and is
    /// tried again at the next check, while the old certificate goes on being served.
    fn check(&self) {
        let now = stamp(&self.cert, &self.key);
        let changed = *self
            .stamp
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            != now;
        if !changed {
            return;
        }
        match load(&self.cert, &self.key, &self.provider) {
            Ok(loaded) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
                *self
                    .stamp
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = now;
                tracing::info!(cert = %self.cert.display(), "MQTT TLS certificate reloaded");
            }
            Err(err) => tracing::warn!(
                cert = %self.cert.display(),
                error = format!("{err:#}"),
                "the changed MQTT TLS certificate does not load; still serving the previous one"
            ),
        }
    }
}

fn spawn_watcher(resolver: Weak<Reloading>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(RELOAD_CHECK);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(resolver) = resolver.upgrade() else {
                break;
            };
            resolver.check();
        }
    });
}

/// Modification times and sizes of both files: a change to either means reload.
type Stamp = [Option<(SystemTime, u64)>; 2];

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let of = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    [of(cert), of(key)]
}

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the MQTT TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no certificate", cert.display());
    }
    let key_der = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "reading the MQTT TLS key {} (a PEM private key: PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .with_context(|| format!("{} is not a key TLS can use", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .with_context(|| format!("{} is not the key of {}", key.display(), cert.display()))?;
    Ok(certified)
}

/// The embedded certificate's files.
struct Embedded {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Makes the local CA and server certificate in `dir` unless both are there already.
fn embedded(dir: &Path) -> anyhow::Result<Embedded> {
    let files = Embedded {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    if files.ca.exists() && files.cert.exists() && files.key.exists() {
        return Ok(Embedded {
            ca: absolute(&files.ca),
            cert: files.cert,
            key: files.key,
        });
    }
    create_private_dir(dir)?;
    let made = make_certificates().context("making the local MQTT CA and server certificate")?;
    write_file(&dir.join("ca.key"), &made.ca_key, 0o600)?;
    write_file(&files.key, &made.server_key, 0o600)?;
    write_file(&files.cert, &made.server_cert, 0o644)?;
    // Written last: its presence says the set is complete.
    write_file(&files.ca, &made.ca_cert, 0o644)?;
    tracing::info!(dir = %dir.display(), "made a local CA and MQTT server certificate");
    Ok(Embedded {
        ca: absolute(&files.ca),
        cert: files.cert,
        key: files.key,
    })
}

struct MadeCertificates {
    ca_cert: String,
    ca_key: String,
    server_cert: String,
    server_key: String,
}

fn make_certificates() -> Result<MadeCertificates, rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "ingest local MQTT CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(host_name().filter(|name| name != "localhost"));
    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(names)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);
    let server_cert = server.signed_by(&server_key, &issuer)?;
    Ok(MadeCertificates {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key_pem,
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
    })
}

/// This machine's host name, so devices on the LAN can reach it by name too.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid.then(|| name.to_owned())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the MQTT TLS directory {}", dir.display()))
}

fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[tokio::test]
    async fn the_embedded_ca_is_made_once_and_reused_with_private_keys_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("mqtt-tls");
        let first = prepare(&TlsSource::Embedded(tls_dir.clone())).unwrap();
        let ca = first.ca_file.clone().unwrap();
        assert!(ca.is_absolute(), "{}", ca.display());
        let pem = std::fs::read_to_string(&ca).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");

        let again = prepare(&TlsSource::Embedded(tls_dir.clone())).unwrap();
        assert_eq!(again.ca_file.as_deref(), Some(ca.as_path()));
        assert_eq!(
            std::fs::read_to_string(&ca).unwrap(),
            pem,
            "reused, not made anew"
        );

        for (file, mode) in [("ca.key", 0o600), ("server.key", 0o600), ("ca.pem", 0o644)] {
            let meta = std::fs::metadata(tls_dir.join(file)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        }
        let meta = std::fs::metadata(&tls_dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    }

    #[tokio::test]
    async fn a_key_that_is_not_the_certificates_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let one = make_certificates().unwrap();
        let other = make_certificates().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, &one.server_cert).unwrap();
        std::fs::write(&key, &other.server_key).unwrap();
        let err = prepare(&TlsSource::Files { cert, key }).unwrap_err();
        assert!(format!("{err:#}").contains("is not the key of"), "{err:#}");
    }
}
