//! A device's side of MQTT over TLS without a client library: certificates made for a test
//! (a CA and a `localhost` certificate it signed), a TLS connection that trusts only that CA, and
//! one packet written and its answer read with rumqttc's codec.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::mqttbytes::v4::Packet;

/// A CA named `ca_name` and a `localhost` certificate it signed: (CA PEM, certificate PEM, key
/// PEM).
pub fn certificate_set(ca_name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = leaf.signed_by(&key, &Issuer::new(ca, ca_key)).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// A TLS connection to `addr` as `localhost`, trusting only `ca_pem`.
pub async fn tls_to(
    addr: SocketAddr,
    ca_pem: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
}

/// Writes `packet` and reads the packet that answers it (10 s at most).
pub async fn exchange<S>(stream: &mut S, packet: &Packet) -> Packet
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = bytes::BytesMut::new();
    packet.write(&mut out, usize::MAX).unwrap();
    stream.write_all(&out).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    loop {
        match Packet::read(&mut buf, 1 << 20) {
            Ok(packet) => return packet,
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(err) => panic!("{err}"),
        }
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_buf(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(n)) if n > 0), "no answer: {read:?}");
    }
}
