//! The TLS check of the MQTT path: one handshake with the agent's own TLS settings (`ca_file`,
//! or the system's roots, through [`crate::tls::client_config`]), and a refused certificate told
//! in words a Pi owner can act on: the CA file is not the bridge's, the certificate expired or is
//! not valid yet (often the Pi's clock), or it does not name the host in the settings. rustls's
//! blocking API on a blocking thread: one handshake needs no second async TLS stack beside the
//! one rumqttc brings.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig};

use super::Report;
use super::net::{self, NET_TIMEOUT};
use crate::settings::Settings;

/// What to do about a CA file the agent cannot use, or a CA that is not the bridge's.
const CA_FIX: &str = "point ca_file at the bridge's CA: for ingest's own certificate, the ca.pem \
                      it writes in its --mqtt-tls-dir (copy it to the Pi); for IoT Core, roots.pem; \
                      for a certificate from a public CA, leave ca_file out";
/// What to do when the port answers but does not speak TLS.
const PORT_FIX: &str = "is mqtt.port the bridge's MQTT-over-TLS port? The agent speaks MQTT over \
                        TLS only, not to a plain-TCP MQTT port or an HTTP port";

/// Why the handshake failed.
#[derive(Debug)]
enum Failure {
    /// rustls refused (the certificate, or what the server sent).
    Tls(rustls::Error),
    /// The connection failed or closed during the handshake.
    Io(std::io::Error),
    /// The server said nothing for [`NET_TIMEOUT`].
    TimedOut,
}

/// Handshakes with the bridge on `port`; the agent's TLS settings when the certificate passed.
pub(super) async fn check(
    report: &mut Report,
    settings: &Settings,
    addrs: &[SocketAddr],
    port: u16,
) -> Option<Arc<ClientConfig>> {
    let host = &settings.mqtt.host;
    let what = format!("TLS {host}:{port}");
    let ca_file = settings.ca_file.as_deref();
    let config = match client_config(ca_file) {
        Ok(config) => config,
        Err(err) => {
            report.fail(&what, &format!("{err:#}"), CA_FIX);
            return None;
        }
    };
    let Ok(name) = ServerName::try_from(host.clone()) else {
        let fix = "set mqtt.host to the bridge's host name or IP address";
        report.fail(&what, "the host is not a valid DNS name or IP address", fix);
        return None;
    };
    let outcome = match net::connect(addrs, port).await {
        Ok(stream) => handshake(stream, config.clone(), name).await,
        Err(failure) => Err(Failure::Io(std::io::Error::other(failure.to_string()))),
    };
    if let Err(failure) = outcome {
        let (detail, fix) = explain(&failure, host, ca_file);
        report.fail(&what, &detail, &fix);
        return None;
    }
    let issuer = match ca_file {
        Some(path) => format!("a CA in {}", path.display()),
        None => "a CA among the system's roots".to_owned(),
    };
    let detail =
        format!("handshake passed; the certificate names {host} and is signed by {issuer}");
    report.pass(&what, &detail);
    Some(config)
}

fn client_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    use anyhow::Context as _;
    let pem = match ca_file {
        Some(path) => Some(
            std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?,
        ),
        None => None,
    };
    let config = crate::tls::client_config(pem.as_deref());
    config.with_context(|| format!("CA file {}", display(ca_file)))
}

fn display(ca_file: Option<&Path>) -> String {
    ca_file.map_or_else(|| "(system roots)".to_owned(), |p| p.display().to_string())
}

/// One TLS handshake on `stream`, on a blocking thread with the socket's own timeouts.
async fn handshake(
    stream: tokio::net::TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Result<(), Failure> {
    let mut socket = stream.into_std().map_err(Failure::Io)?;
    let set = socket
        .set_nonblocking(false)
        .and_then(|()| socket.set_read_timeout(Some(NET_TIMEOUT)))
        .and_then(|()| socket.set_write_timeout(Some(NET_TIMEOUT)));
    set.map_err(Failure::Io)?;
    let blocking = tokio::task::spawn_blocking(move || {
        let mut tls = rustls::ClientConnection::new(config, name).map_err(Failure::Tls)?;
        while tls.is_handshaking() {
            tls.complete_io(&mut socket).map_err(io_failure)?;
        }
        // A polite close, so the bridge logs no broken handshake.
        tls.send_close_notify();
        let _ = tls.complete_io(&mut socket);
        Ok(())
    });
    blocking
        .await
        .unwrap_or_else(|err| Err(Failure::Io(std::io::Error::other(err))))
}

/// rustls hands its own error back inside an `io::Error`; a read that timed out is `WouldBlock`.
fn io_failure(err: std::io::Error) -> Failure {
    use std::io::ErrorKind;
    if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
        return Failure::TimedOut;
    }
    if err
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
    {
        if let Some(Ok(tls)) = err
            .into_inner()
            .map(|inner| inner.downcast::<rustls::Error>())
        {
            return Failure::Tls(*tls);
        }
        return Failure::Io(std::io::Error::other("the TLS error was lost"));
    }
    Failure::Io(err)
}

/// The line's detail and fix for a failed handshake.
fn explain(failure: &Failure, host: &str, ca_file: Option<&Path>) -> (String, String) {
    match failure {
        Failure::Tls(rustls::Error::InvalidCertificate(cert)) => certificate(cert, host, ca_file),
        Failure::Tls(err) => (
            format!("the TLS handshake failed: {err}"),
            PORT_FIX.to_owned(),
        ),
        Failure::Io(err) => (
            format!("the connection closed during the TLS handshake ({err})"),
            PORT_FIX.to_owned(),
        ),
        Failure::TimedOut => (
            format!(
                "no answer to the TLS handshake in {} s",
                NET_TIMEOUT.as_secs()
            ),
            PORT_FIX.to_owned(),
        ),
    }
}

/// A refused certificate, by cause.
fn certificate(err: &CertificateError, host: &str, ca_file: Option<&Path>) -> (String, String) {
    let clock_first = "check the Pi's clock first (`timedatectl`, and the clock check above): a \
                       clock that is far off makes a good certificate look";
    match err {
        CertificateError::UnknownIssuer => {
            let detail = match ca_file {
                Some(path) => format!(
                    "the bridge's certificate is not signed by a CA in {} (unknown issuer): \
                     that CA file is not this bridge's",
                    path.display()
                ),
                None => "the bridge's certificate is not signed by any CA the Pi trusts \
                         (unknown issuer; ca_file is not set, so the system's roots are used)"
                    .to_owned(),
            };
            (detail, CA_FIX.to_owned())
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            let when = match err {
                CertificateError::ExpiredContext { time, not_after } => format!(
                    " (it expired {}; the Pi's clock says {})",
                    stamp(*not_after),
                    stamp(*time)
                ),
                _ => String::new(),
            };
            (
                format!("the bridge's certificate has expired{when}"),
                format!(
                    "{clock_first} expired; if the clock is right, the bridge's operator must \
                     renew its certificate"
                ),
            )
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            let when = match err {
                CertificateError::NotValidYetContext { time, not_before } => format!(
                    " (it is valid from {}; the Pi's clock says {})",
                    stamp(*not_before),
                    stamp(*time)
                ),
                _ => String::new(),
            };
            (
                format!("the bridge's certificate is not valid yet{when}"),
                format!(
                    "{clock_first} not valid yet: a Pi without a real-time clock that booted \
                     without network is behind (`sudo timedatectl set-ntp true`)"
                ),
            )
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            name_mismatch(err, host)
        }
        other => (
            format!("the bridge's certificate was refused: {other}"),
            format!("check ca_file ({}) and the Pi's clock", display(ca_file)),
        ),
    }
}

/// The certificate does not name the host the settings connect to.
fn name_mismatch(err: &CertificateError, host: &str) -> (String, String) {
    let names: Vec<String> = match err {
        CertificateError::NotValidForNameContext { presented, .. } => {
            presented.iter().map(|name| plain_name(name)).collect()
        }
        _ => Vec::new(),
    };
    let (listed, example) = match names.first() {
        Some(first) => (
            format!(" (it names {})", names.join(", ")),
            format!(", e.g. mqtt.host = \"{first}\""),
        ),
        None => (String::new(), String::new()),
    };
    (
        format!(
            "the bridge's certificate is not valid for {host}, the host in the settings{listed}"
        ),
        format!(
            "connect by a name the certificate holds{example} (without mqtt.host the endpoint's \
             host is used), or have the operator issue a certificate that names {host}"
        ),
    )
}

/// `DnsName("localhost")` or `IpAddress(127.0.0.1)`, as webpki reports names, as plain text.
fn plain_name(presented: &str) -> String {
    let inner = presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|rest| rest.strip_suffix(')'))
        });
    inner.unwrap_or(presented).to_owned()
}

fn stamp(time: UnixTime) -> String {
    let secs = i64::try_from(time.as_secs()).unwrap_or(i64::MAX);
    jiff::Timestamp::from_second(secs).map_or_else(|_| format!("{secs} s"), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explained(err: CertificateError, ca: Option<&str>) -> (String, String) {
        let failure = Failure::Tls(rustls::Error::InvalidCertificate(err));
        explain(&failure, "bridge.example", ca.map(Path::new))
    }

    #[test]
    fn an_unknown_issuer_names_the_ca_file_and_where_the_right_one_is() {
        let (detail, fix) = explained(CertificateError::UnknownIssuer, Some("/etc/ca.pem"));
        assert!(
            detail.contains("not signed by a CA in /etc/ca.pem"),
            "{detail}"
        );
        assert!(
            fix.contains("ca.pem it writes in its --mqtt-tls-dir"),
            "{fix}"
        );
        let (detail, _) = explained(CertificateError::UnknownIssuer, None);
        assert!(detail.contains("system's roots"), "{detail}");
    }

    #[test]
    fn an_expired_or_early_certificate_points_at_the_clock_first() {
        let expired = CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_000)),
            not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_700_000_000)),
        };
        let (detail, fix) = explained(expired, None);
        assert!(detail.starts_with("the bridge's certificate has expired (it expired 2023-11-14T22:13:20Z; the Pi's clock says 2027-01-15T08:00:00Z)"), "{detail}");
        assert!(fix.starts_with("check the Pi's clock first"), "{fix}");
        let (detail, fix) = explained(CertificateError::NotValidYet, None);
        assert_eq!(detail, "the bridge's certificate is not valid yet");
        assert!(fix.contains("timedatectl set-ntp true"), "{fix}");
    }

    #[test]
    fn a_name_mismatch_names_the_host_and_the_certificates_names() {
        let err = CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("bridge.example").unwrap(),
            presented: vec![
                "DnsName(\"localhost\")".into(),
                "IpAddress(127.0.0.1)".into(),
            ],
        };
        let (detail, fix) = explained(err, None);
        assert_eq!(
            detail,
            "the bridge's certificate is not valid for bridge.example, the host in the settings \
             (it names localhost, 127.0.0.1)"
        );
        assert!(fix.contains("mqtt.host = \"localhost\""), "{fix}");
    }

    #[test]
    fn a_port_that_does_not_speak_tls_is_told_so() {
        let failure = Failure::Tls(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        let (_, fix) = explain(&failure, "h", None);
        assert!(fix.contains("MQTT-over-TLS port"), "{fix}");
    }
}
