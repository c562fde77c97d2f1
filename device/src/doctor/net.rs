//! DNS and TCP, the first network checks of either transport. A TCP failure is sorted by what
//! it tells an owner: refused (nothing listens there, or a firewall rejects), no answer (a
//! firewall drops the packets, or the machine is down), or whatever else the system said.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::Report;

/// How long one network step may take.
pub(super) const NET_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no TCP connection was made.
#[derive(Debug)]
pub(super) enum TcpFailure {
    /// The connection was refused: nothing listens there, or a firewall rejects it.
    Refused(std::io::Error),
    /// No answer within [`NET_TIMEOUT`].
    TimedOut,
    /// Anything else the system said (no route to host, network unreachable …).
    Other(std::io::Error),
}

impl std::fmt::Display for TcpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(err) | Self::Other(err) => write!(f, "{err}"),
            Self::TimedOut => write!(f, "no answer in {} s", NET_TIMEOUT.as_secs()),
        }
    }
}

/// Resolves `host`; on failure a FAIL line tells to check `setting`, the field naming the host.
pub(super) async fn resolve(
    report: &mut Report,
    host: &str,
    port: u16,
    setting: &str,
) -> Option<Vec<SocketAddr>> {
    let what = format!("DNS {host}");
    match tokio::time::timeout(NET_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            report.pass(&what, &list.join(", "));
            Some(addrs)
        }
        Ok(Err(err)) => {
            report.fail(
                &what,
                &err.to_string(),
                &format!("check the host name in {setting}, and the Pi's DNS (/etc/resolv.conf)"),
            );
            None
        }
        Err(_) => {
            report.fail(&what, "no answer in 10 s", "check the Pi's DNS");
            None
        }
    }
}

/// Connects to `port` on the first of `addrs` that answers.
pub(super) async fn connect(addrs: &[SocketAddr], port: u16) -> Result<TcpStream, TcpFailure> {
    let addrs: Vec<SocketAddr> = addrs
        .iter()
        .map(|addr| SocketAddr::new(addr.ip(), port))
        .collect();
    match tokio::time::timeout(NET_TIMEOUT, TcpStream::connect(addrs.as_slice())).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(TcpFailure::Refused(err))
        }
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::TimedOut => Err(TcpFailure::TimedOut),
        Ok(Err(err)) => Err(TcpFailure::Other(err)),
        Err(_) => Err(TcpFailure::TimedOut),
    }
}
