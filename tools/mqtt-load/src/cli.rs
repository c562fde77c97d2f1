//! Command line of `mqtt-load` and what it resolves to: the target (a loopback address, plain
//! or TLS, and the CONNECT fields made from templates) shared by both modes, and the bounds every
//! run must have. Limits are checked here so a typo cannot start an unbounded load.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};

/// Most connections one run may open (the ephemeral port range of one source address).
pub const MAX_CONNECTIONS: usize = 60_000;
/// Longest any phase of a run may last.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

#[derive(Debug, clap::Parser)]
#[command(
    name = "mqtt-load",
    version,
    about = "MQTT 3.1.1 load generator for loopback benchmarks: QoS 1 throughput with PUBACK latency, or idle connections held open",
    after_help = "Examples:\n  mqtt-load publish --addr 127.0.0.1:1883 --connections 32 --inflight 16 --duration 10s\n  mqtt-load idle --addr 127.0.0.1:8883 --tls --ca-file mqtt-tls/ca.pem --connections 10000 --hold 30s \\\n      --client-id 'projects/p/locations/l/registries/r/devices/load-{i}' --password-file token.jwt\n\nEach run prints one JSON line on stdout; progress goes to stderr."
)]
pub struct Cli {
    /// Runtime worker threads (1: a single-threaded runtime, for a generator pinned to one core)
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// N connections, each keeping M QoS 1 publishes in flight, until a duration or count is reached
    Publish(PublishArgs),
    /// Open N connections, complete CONNECT, hold them with keepalive, report how many stayed
    Idle(IdleArgs),
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// QoS 1 publishes each connection keeps awaiting their PUBACK
    #[arg(long, default_value_t = 16)]
    pub inflight: usize,
    /// Payload size in bytes
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Stop publishing after this long (e.g. 10s, 500ms, 2m); the run always has a duration
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Stop after this many publishes in total (whichever of duration and count comes first)
    #[arg(long)]
    pub count: Option<u64>,
    /// Topic template; `{i}` is the connection's index
    #[arg(long, default_value = "/devices/load-{i}/events")]
    pub topic: String,
    /// Longest wait for any PUBACK before a connection gives up (also bounds the final drain)
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub ack_timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// How long to hold the connections once all CONNECTs are done (e.g. 30s)
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub hold: Duration,
}

#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// The broker or bridge, host:port; must resolve to loopback only
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub addr: String,
    /// Connections to open
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Index of the first connection (`{i}` in the templates counts from here)
    #[arg(long, default_value_t = 0)]
    pub first_index: u64,
    /// CONNECT client id template; `{i}` is the connection's index
    #[arg(long, default_value = "load-{i}")]
    pub client_id: String,
    /// CONNECT username (sent only with a password, as MQTT 3.1.1 requires)
    #[arg(long, default_value = "unused")]
    pub username: String,
    /// CONNECT password, e.g. a device JWT; `{i}` is replaced as in the other templates
    #[arg(long, conflicts_with = "password_file")]
    pub password: Option<String>,
    /// Read the password from this file (surrounding whitespace dropped)
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Connect with TLS
    #[arg(long)]
    pub tls: bool,
    /// PEM file of the CA certificates the server's certificate must chain to (with --tls)
    #[arg(long, requires = "tls")]
    pub ca_file: Option<PathBuf>,
    /// Name checked against the server certificate (default: the address's IP)
    #[arg(long, requires = "tls")]
    pub server_name: Option<String>,
    /// MQTT keepalive in seconds, sent in CONNECT; idle connections ping at this interval
    #[arg(long, default_value_t = 60)]
    pub keepalive: u16,
    /// CONNECTs (TCP, TLS and CONNACK) in progress at once
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Longest one connection may take to get its CONNACK
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,
}

/// Where and how every connection of a run connects; shared by all of them.
#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: Option<crate::tls::Client>,
    pub client_id: String,
    pub username: String,
    pub password: Option<String>,
    pub keepalive: u16,
    pub connections: usize,
    pub first_index: u64,
    pub connect_concurrency: usize,
    pub connect_timeout: Duration,
}

impl Target {
    pub fn from_args(args: &TargetArgs) -> anyhow::Result<Arc<Target>> {
        ensure!(
            (1..=MAX_CONNECTIONS).contains(&args.connections),
            "--connections must be between 1 and {MAX_CONNECTIONS}"
        );
        ensure!(
            args.connect_concurrency >= 1,
            "--connect-concurrency must be at least 1"
        );
        check_bounded("--connect-timeout", args.connect_timeout)?;
        let addr = loopback_addr(&args.addr)?;
        let tls = if args.tls {
            Some(crate::tls::Client::new(
                args.ca_file.as_deref(),
                args.server_name.as_deref(),
                addr,
            )?)
        } else {
            None
        };
        Ok(Arc::new(Target {
            addr,
            tls,
            client_id: args.client_id.clone(),
            username: args.username.clone(),
            password: read_password(args)?,
            keepalive: args.keepalive,
            connections: args.connections,
            first_index: args.first_index,
            connect_concurrency: args.connect_concurrency,
            connect_timeout: args.connect_timeout,
        }))
    }

    /// The label the JSON result names the target by.
    pub fn describe(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}", self.addr)
    }
}

fn read_password(args: &TargetArgs) -> anyhow::Result<Option<String>> {
    match (&args.password, &args.password_file) {
        (Some(password), _) => Ok(Some(password.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --password-file {}", path.display()))?;
            Ok(Some(text.trim().to_owned()))
        }
        (None, None) => Ok(None),
    }
}

/// Resolves `host:port` and insists on loopback: this tool must never load someone else's server.
fn loopback_addr(text: &str) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .with_context(|| format!("resolving --addr {text}"))?
        .collect();
    let Some(first) = addrs.first() else {
        bail!("--addr {text} resolves to no address");
    };
    if let Some(remote) = addrs.iter().find(|addr| !addr.ip().is_loopback()) {
        bail!(
            "--addr {text} resolves to {remote}, which is not loopback; mqtt-load only targets loopback"
        );
    }
    Ok(*first)
}

/// `{i}` in a template becomes the connection's index.
pub fn expand(template: &str, index: u64) -> String {
    template.replace("{i}", &index.to_string())
}

pub fn check_bounded(flag: &str, value: Duration) -> anyhow::Result<()> {
    ensure!(
        !value.is_zero() && value <= MAX_DURATION,
        "{flag} must be above zero and at most {} s",
        MAX_DURATION.as_secs()
    );
    Ok(())
}

/// `10s`, `500ms`, `2m`, or a plain number of seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 10s, 500ms or 2m"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "'{text}' is not a duration such as 10s, 500ms or 2m"
        ));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_suffixes() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn templates_take_the_index() {
        assert_eq!(
            expand("projects/p/locations/l/registries/r/devices/load-{i}", 7),
            "projects/p/locations/l/registries/r/devices/load-7"
        );
        assert_eq!(
            expand("/devices/load-{i}/events", 0),
            "/devices/load-0/events"
        );
    }

    #[test]
    fn only_loopback_is_a_target() {
        assert!(loopback_addr("127.0.0.1:1883").is_ok());
        assert!(loopback_addr("[::1]:1883").is_ok());
        assert!(loopback_addr("10.0.0.1:1883").is_err());
        assert!(loopback_addr("192.0.2.1:8883").is_err());
    }
}
