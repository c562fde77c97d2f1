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
