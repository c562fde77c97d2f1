//! TLS for the agent: rustls with the `ring` crypto provider, installed as the process default
//! before the first client is built. reqwest's own default provider would be aws-lc-rs, whose
//! build needs cmake and a C toolchain configured for the target; `ring` builds for the Pi
//! targets with only the cross C compiler those targets' linker already is. The certificate
//! roots are the system's (through rustls-platform-verifier, i.e. `/etc/ssl/certs` on
//! Raspberry Pi OS) unless the settings name a CA file.

/// Installs the `ring` provider as the process-wide default; later calls do nothing.
pub fn install_provider() {
    // Err only when a provider is installed already, which is what we want either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why no TLS configuration could be made for the MQTT connection.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file holds no usable certificate.
    #[error("the CA file holds no PEM certificate")]
    NoCertificate,
    /// A certificate in the CA file was refused, or the platform roots could not be loaded.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// The rustls configuration of the MQTT connection, trusting what HTTPS trusts: only the PEM
/// bundle `ca_pem` when given (IoT Core's `roots.pem`, or ingest's own `ca.pem`), else the
/// platform's roots through the same verifier reqwest uses.
pub fn client_config(
    ca_pem: Option<&[u8]>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, TlsError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    use rustls_platform_verifier::ConfigVerifierExt as _;

    install_provider();
    let config = match ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem).flatten() {
                roots.add(cert)?;
            }
            if roots.is_empty() {
                return Err(TlsError::NoCertificate);
            }
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
        None => rustls::ClientConfig::with_platform_verifier()?,
    };
    Ok(std::sync::Arc::new(config))
}
