//! The TLS client every connection of a run shares: rustls over `ring` (installed explicitly,
//! since the workspace's rustls is built without a default provider), trusting only the CA file
//! given, with session resumption off so that each connection pays a full handshake and holds its
//! own session, as separate devices would.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, ensure};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

pub struct Client {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("tls::Client")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `server_name` defaults to the address's IP, which the server certificate must then name
    /// in a SAN (ingest's embedded one and the benchmark's openssl one both do).
    pub fn new(
        ca_file: Option<&Path>,
        server_name: Option<&str>,
        addr: SocketAddr,
    ) -> anyhow::Result<Client> {
        let ca_file =
            ca_file.context("--tls needs --ca-file: the CA the server certificate chains to")?;
        let roots = read_roots(ca_file)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("choosing TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        let name = match server_name {
            Some(name) => ServerName::try_from(name.to_owned())
                .with_context(|| format!("--server-name {name} is not a DNS name or IP"))?,
            None => ServerName::IpAddress(addr.ip().into()),
        };
        Ok(Client {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: name,
        })
    }
}

fn read_roots(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading --ca-file {}", path.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("parsing {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("a certificate in {} is not a usable CA", path.display()))?;
    }
    ensure!(!roots.is_empty(), "{} holds no certificate", path.display());
    Ok(roots)
}
