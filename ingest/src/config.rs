//! `ingest serve` settings: flags with environment fallbacks, parsed once at start and passed
//! down; nothing deeper in the code reads the environment.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::http::admin::{AdminAccess, CloudRunOwners, TokenSource, Tokens};
use crate::telemetry::{LogFormat, TelemetrySettings};

/// Settings of `ingest serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Which listeners to run: `all` (device bridge and admin API, the local default), or only
    /// `device` or `admin` (two Cloud Run services from one image).
    #[arg(long, env = "ROLE", default_value = "all", value_name = "ROLE")]
    pub role: Role,

    /// Port of the device bridge (Cloud Run sets PORT).
    #[arg(long, env = "PORT", default_value_t = 8080, value_name = "PORT")]
    pub port: u16,

    /// Address the device bridge binds to.
    #[arg(
        long,
        env = "DEVICE_HOST",
        default_value = "0.0.0.0",
        value_name = "IP"
    )]
    pub device_host: IpAddr,

    /// Address of the admin API. Keep it on loopback: anywhere else it needs --admin-token or
    /// --admin-trust-cloud-run-iam.
    #[arg(
        long,
        env = "ADMIN_ADDR",
        default_value = "127.0.0.1:8081",
        value_name = "ADDR:PORT"
    )]
    pub admin_addr: SocketAddr,

    /// Bearer token the admin API demands from every caller (required when --admin-addr is not
    /// loopback, unless Cloud Run's IAM guards the service).
    #[arg(
        long,
        env = "ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub admin_token: Option<String>,

    /// A file of admin bearer tokens, one per line: `TOKEN PRINCIPAL [ROLE…]`, e.g.
    /// `<random> user:alice@example.com roles/cloudiot.viewer`. Each caller is its principal,
    /// holding the roles listed on every registry plus what registries' IAM policies grant;
    /// `roles/owner` holds everything. TOKEN may be `sha256:HEX` of the token. Read again
    /// within 5 s of a change.
    #[arg(long, env = "ADMIN_TOKENS_FILE", value_name = "PATH")]
    pub admin_tokens_file: Option<PathBuf>,

    /// Trust Cloud Run's IAM to admit only authorised callers to the admin API (deploy the admin
    /// role as its own Cloud Run service without unauthenticated access).
    #[arg(long, env = "ADMIN_TRUST_CLOUD_RUN_IAM")]
    pub admin_trust_cloud_run_iam: bool,

    /// Behind Cloud Run's IAM: the principals that hold every permission
    /// (`user:EMAIL,serviceAccount:EMAIL`); everyone else Cloud Run admits holds only what
    /// registries' IAM policies grant. Empty: everyone Cloud Run admits is an owner.
    #[arg(
        long,
        env = "ADMIN_OWNERS",
        value_name = "PRINCIPALS",
        default_value = ""
    )]
    pub admin_owners: String,

    /// The Cloud Run service this instance runs as (Cloud Run sets `K_SERVICE`); `None` off
    /// Cloud Run, where nothing would stand in front to check callers.
    #[arg(skip = std::env::var("K_SERVICE").ok().filter(|s| !s.is_empty()))]
    pub cloud_run_service: Option<String>,

    /// The registry store: `sqlite:PATH` (created if missing), or
    /// `firestore:projects/PROJECT/databases/DATABASE` for Firestore in native mode (DATABASE is
    /// `(default)` for the project's default database), which many instances can share.
    #[arg(
        long,
        env = "REGISTRY",
        default_value = "sqlite:ingest.db",
        value_name = "STORE"
    )]
    pub registry: StoreUrl,

    /// Where accepted events go: `pubsub` (Google Cloud Pub/Sub, or the emulator when
    /// PUBSUB_EMULATOR_HOST is set) or `file:PATH` (JSON lines). Default: `pubsub` when
    /// PUBSUB_EMULATOR_HOST is set, else `file:events.jsonl`.
    #[arg(long, env = "SINK", value_name = "SINK")]
    pub sink: Option<SinkUrl>,

    /// Host:port of a Firestore emulator; a Firestore registry is then reached there without
    /// credentials.
    #[arg(long, env = "FIRESTORE_EMULATOR_HOST", value_name = "HOST:PORT")]
    pub firestore_emulator_host: Option<String>,

    /// How long a device's verified token is trusted, and its latest config served from memory,
    /// before the device is read from the registry again; 0 re-reads on every request. A device
    /// blocked, re-keyed or sent a config through this instance, or through another one on the
    /// same delivery bus, is refused (or fetches the new config) at once; through an instance
    /// the bus does not reach, within this bound. Default: 300 when every instance sharing the
    /// store hears the others (a SQLite store, or --delivery-topic set), else 10.
    #[arg(long, env = "REGISTRY_FRESHNESS_SECS", value_name = "SECONDS")]
    pub registry_freshness_secs: Option<u64>,

    /// The Pub/Sub topic (`projects/P/topics/T`) of the delivery bus between instances sharing
    /// a Firestore registry: commands, config pushes and device changes reach a device's MQTT
    /// connection on whichever instance holds it. Each instance subscribes while it runs. Unset:
    /// a single instance, whose admin API reaches only its own connections.
    #[arg(long, env = "DELIVERY_TOPIC", value_name = "TOPIC")]
    pub delivery_topic: Option<String>,

    /// This instance's name in presence records and on the delivery bus. Default: `ingest-`
    /// and 12 random hex digits, new at every start.
    #[arg(long, env = "INSTANCE_ID", value_name = "NAME")]
    pub instance_id: Option<String>,

    /// How long this instance's presence records count without a renewal (renewed every third
    /// of it): the bound after which the devices of an instance that died read as disconnected.
    #[arg(
        long,
        env = "PRESENCE_LEASE_SECS",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub presence_lease_secs: u64,

    /// Host:port of a Pub/Sub emulator; Pub/Sub is then reached without credentials.
    #[arg(long, env = "PUBSUB_EMULATOR_HOST", value_name = "HOST:PORT")]
    pub pubsub_emulator_host: Option<String>,

    /// How long a device waits for Pub/Sub to accept its message before it gets 503.
    #[arg(
        long,
        env = "PUBLISH_TIMEOUT_SECS",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    pub publish_timeout_secs: u64,

    /// How long the Pub/Sub publisher holds a message to send it with others to the same topic
    /// (0: at once). Longer means fewer publish calls and less CPU per event, but every device
    /// waits that much longer for its answer, and over one connection sends that much slower
    /// (BENCHMARKS.md has the measured curve).
    #[arg(
        long,
        env = "PUBSUB_BATCH_DELAY_MS",
        default_value_t = 10,
        value_name = "MILLISECONDS",
        value_parser = clap::value_parser!(u64).range(0..=1000)
    )]
    pub pubsub_batch_delay_ms: u64,

    /// Telemetry events a device may publish per minute over HTTP.
    #[arg(
        long,
        env = "EVENTS_PER_MINUTE",
        default_value_t = 6000,
        value_name = "N"
    )]
    pub events_per_minute: u32,

    /// How often device bookkeeping (lastEventTime and friends) is written to the registry.
    #[arg(
        long,
        env = "ACTIVITY_FLUSH_SECS",
        default_value_t = 60,
        value_name = "SECONDS"
    )]
    pub activity_flush_secs: u64,

    /// Most device connections served at once; more wait in the accept queue.
    #[arg(
        long,
        env = "MAX_CONNECTIONS",
        default_value_t = 1000,
        value_name = "N"
    )]
    pub max_connections: usize,

    /// Most connections one source address may hold on the device port; more are closed as they
    /// arrive. 0: no limit. Default 128, and no limit on Cloud Run (where every connection comes
    /// from Google's front end). Fleets behind one NAT share an address: raise it for them.
    #[arg(long, env = "MAX_CONNECTIONS_PER_ADDRESS", value_name = "N")]
    pub max_connections_per_address: Option<usize>,

    /// Longest a connection may take to send a whole request head, counted from when it was
    /// accepted or answered; then it is closed (slow or silent sockets cannot fill the listener).
    #[arg(
        long,
        env = "REQUEST_HEAD_TIMEOUT_SECS",
        default_value_t = 10,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub request_head_timeout_secs: u64,

    /// Longest a request may take before it is answered with DEADLINE_EXCEEDED.
    #[arg(
        long,
        env = "REQUEST_TIMEOUT_SECS",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub request_timeout_secs: u64,

    /// Longest to wait for in-flight requests after SIGTERM (Cloud Run allows 10 s).
    #[arg(
        long,
        env = "DRAIN_TIMEOUT_SECS",
        default_value_t = 8,
        value_name = "SECONDS"
    )]
    pub drain_timeout_secs: u64,

    /// How many verified device tokens to keep cached.
    #[arg(
        long,
        env = "TOKEN_CACHE_CAPACITY",
        default_value_t = 100_000,
        value_name = "N"
    )]
    pub token_cache_capacity: usize,

    /// Log format: `text` for people, `json` for Cloud Logging.
    #[arg(
        long,
        env = "LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,

    /// OTLP/gRPC endpoint for traces and metrics (unset: no export).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otel_endpoint: Option<String>,

    /// Google Cloud project of this service, used to link log lines to traces.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT", value_name = "PROJECT")]
    pub google_cloud_project: Option<String>,

    /// The MQTT bridge's listeners and limits.
    #[command(flatten)]
    pub mqtt: MqttArgs,
}

/// Settings of the MQTT bridge (served with `--role all` or `device`).
#[derive(Debug, Clone, clap::Args)]
pub struct MqttArgs {
    /// Where MQTT over TLS listens (IoT Core used 8883 and 443), or `off`.
    #[arg(
        long,
        env = "MQTT_ADDR",
        default_value = "0.0.0.0:8883",
        value_name = "ADDR:PORT|off"
    )]
    pub mqtt_addr: Listen,

    /// Where plain-TCP MQTT listens (off unless set): behind a TLS-terminating load balancer,
    /// or for tests. Devices on a network should use TLS.
    #[arg(long, env = "MQTT_PLAIN_ADDR", value_name = "ADDR:PORT")]
    pub mqtt_plain_addr: Option<SocketAddr>,

    /// PEM certificate chain for the TLS listener (re-read when it changes). Without it, a local
    /// CA and a certificate for localhost are made in --mqtt-tls-dir.
    #[arg(
        long,
        env = "MQTT_TLS_CERT",
        value_name = "PATH",
        requires = "mqtt_tls_key"
    )]
    pub mqtt_tls_cert: Option<PathBuf>,

    /// PEM private key of --mqtt-tls-cert (re-read when it changes).
    #[arg(
        long,
        env = "MQTT_TLS_KEY",
        value_name = "PATH",
        requires = "mqtt_tls_cert"
    )]
    pub mqtt_tls_key: Option<PathBuf>,

    /// Where the local CA (ca.pem, which devices trust) and server certificate are made and kept
    /// when no --mqtt-tls-cert is given.
    #[arg(
        long,
        env = "MQTT_TLS_DIR",
        default_value = "mqtt-tls",
        value_name = "DIR"
    )]
    pub mqtt_tls_dir: PathBuf,

    /// MQTT connections (TLS, plain and WebSocket together) served at once.
    #[arg(
        long,
        env = "MQTT_MAX_CONNECTIONS",
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub mqtt_max_connections: usize,

    /// Messages one MQTT connection may publish per second (IoT Core: 100); more are refused.
    #[arg(
        long,
        env = "MQTT_MESSAGES_PER_SECOND",
        default_value_t = 100,
        value_name = "N"
    )]
    pub mqtt_messages_per_second: u32,

    /// Time a new MQTT connection has for its TLS handshake and CONNECT.
    #[arg(
        long,
        env = "MQTT_CONNECT_TIMEOUT_SECS",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    pub mqtt_connect_timeout_secs: u64,

    /// An MQTT connection with nothing heard for this long is closed (IoT Core: 20 minutes).
    #[arg(
        long,
        env = "MQTT_IDLE_TIMEOUT_SECS",
        default_value_t = 1200,
        value_name = "SECONDS"
    )]
    pub mqtt_idle_timeout_secs: u64,

    /// How long a config or command sent at QoS 1 waits for its PUBACK before it is sent again.
    #[arg(
        long,
        env = "MQTT_CONFIG_RESEND_SECS",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    pub mqtt_config_resend_secs: u64,

    /// How long a command sent at QoS 1 is sent again without a PUBACK before
    /// `sendCommandToDevice` answers that the device did not acknowledge it.
    #[arg(
        long,
        env = "MQTT_COMMAND_TIMEOUT_SECS",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub mqtt_command_timeout_secs: u64,

    /// Every MQTT TCP connection (TLS and plain) starts with a PROXY protocol header, v1 or v2,
    /// as a proxy load balancer sends it (Google Cloud's external proxy Network Load Balancer
    /// with `proxy_header = "PROXY_V1"`); its source address is the device's, for the
    /// per-address cap and the logs. A connection without one is closed. Only behind such a
    /// balancer: otherwise any client could claim any address.
    #[arg(long, env = "MQTT_PROXY_PROTOCOL")]
    pub mqtt_proxy_protocol: bool,
}

/// A listener address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Not served.
    Off,
    /// Served here.
    At(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") || s.is_empty() {
            return Ok(Listen::Off);
        }
        s.parse().map(Listen::At).map_err(|_| {
            format!("`{s}` is not an address; use ADDR:PORT (e.g. 0.0.0.0:8883) or `off`")
        })
    }
}

/// Which listeners `ingest serve` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The device bridge and the admin API.
    All,
    /// Only the device bridge (the public Cloud Run service).
    Device,
    /// Only the admin API (the IAM-guarded Cloud Run service).
    Admin,
}

/// Where accepted device messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkUrl {
    /// Google Cloud Pub/Sub, or the emulator.
    PubSub,
    /// A JSON-lines file.
    File(PathBuf),
}

impl FromStr for SinkUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "pubsub" => Ok(SinkUrl::PubSub),
            Some(("file", path)) if !path.is_empty() => Ok(SinkUrl::File(PathBuf::from(path))),
            _ => Err(format!(
                "`{s}` is not a sink; use `pubsub` or `file:PATH` (e.g. file:events.jsonl)"
            )),
        }
    }
}

/// Where the registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A Firestore database in native mode.
    Firestore {
        /// The Google Cloud project.
        project: String,
        /// The database id, `(default)` for the default database.
        database: String,
    },
}

impl FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("sqlite", path)) if !path.is_empty() => Ok(StoreUrl::Sqlite(PathBuf::from(path))),
            Some(("firestore", name)) => parse_firestore(name).ok_or_else(|| {
                format!(
                    "`{s}` is not a Firestore database; use \
                     firestore:projects/PROJECT/databases/DATABASE \
                     (e.g. firestore:projects/my-project/databases/(default))"
                )
            }),
            _ => Err(format!(
                "`{s}` is not a registry store; use sqlite:PATH (e.g. sqlite:ingest.db) or \
                 firestore:projects/PROJECT/databases/DATABASE"
            )),
        }
    }
}

/// `projects/PROJECT/databases/DATABASE`, Firestore's own name for a database.
fn parse_firestore(name: &str) -> Option<StoreUrl> {
    let rest = name.strip_prefix("projects/")?;
    let (project, database) = rest.split_once("/databases/")?;
    let plain = |part: &str| !part.is_empty() && !part.contains('/');
    (plain(project) && plain(database)).then(|| StoreUrl::Firestore {
        project: project.into(),
        database: database.into(),
    })
}

/// Why the settings cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The admin API would be reachable from other machines with no protection.
    #[error(
        "the admin API would listen on {0}, reachable from other machines, with no protection: set --admin-token (ADMIN_TOKEN), or --admin-trust-cloud-run-iam when Cloud Run's IAM guards it, or bind it to 127.0.0.1"
    )]
    UnprotectedAdmin(SocketAddr),
    /// `--admin-trust-cloud-run-iam` off Cloud Run: nothing in front would check callers.
    #[error(
        "--admin-trust-cloud-run-iam is set, but this is not Cloud Run (K_SERVICE is unset): no IAM would stand in front, so the admin API on {0} would be open to anyone who reaches it; use --admin-token (ADMIN_TOKEN), bind it to 127.0.0.1, or deploy the admin role as a Cloud Run service without unauthenticated access"
    )]
    CloudRunIamOffCloudRun(SocketAddr),
    /// The tokens file cannot be read or has a mistake.
    #[error("--admin-tokens-file {path}: {why}")]
    TokensFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the line.
        why: String,
    },
    /// `--admin-owners` is not a list of principals, or given where it means nothing.
    #[error("--admin-owners: {0}")]
    Owners(String),
}

impl ServeArgs {
    /// The per-address connection cap in force (see the flag).
    pub fn max_connections_per_address(&self) -> usize {
        let default = if self.cloud_run_service.is_some() {
            0
        } else {
            128
        };
        self.max_connections_per_address.unwrap_or(default)
    }

    /// The token freshness bound: the flag, or the default for this setup (see the flag).
    pub fn registry_freshness(&self) -> u64 {
        let everyone_hears =
            matches!(self.registry, StoreUrl::Sqlite(_)) || self.delivery_topic.is_some();
        self.registry_freshness_secs
            .unwrap_or(if everyone_hears { 300 } else { 10 })
    }

    /// The sink to use: as given, else Pub/Sub when an emulator is named, else a local file.
    pub fn sink(&self) -> SinkUrl {
        match (&self.sink, &self.pubsub_emulator_host) {
            (Some(sink), _) => sink.clone(),
            (None, Some(_)) => SinkUrl::PubSub,
            (None, None) => SinkUrl::File(PathBuf::from("events.jsonl")),
        }
    }

    /// What `telemetry::init` needs.
    pub fn telemetry_settings(&self) -> TelemetrySettings {
        TelemetrySettings {
            project_id: self.google_cloud_project.clone(),
            otlp_endpoint: self.otel_endpoint.clone().filter(|e| !e.is_empty()),
            ..TelemetrySettings::new(self.log_format)
        }
    }

    /// Where the device bridge listens.
    pub fn device_addr(&self) -> SocketAddr {
        SocketAddr::new(self.device_host, self.port)
    }

    /// How admin callers are checked, refusing an exposed admin API with no protection.
    pub fn admin_access(&self) -> Result<AdminAccess, ConfigError> {
        let cloud_run = self.admin_trust_cloud_run_iam && self.admin_tokens().is_none();
        if !self.admin_owners.trim().is_empty() && !cloud_run {
            return Err(ConfigError::Owners(
                "names owners behind Cloud Run's IAM (--admin-trust-cloud-run-iam); with bearer \
                 tokens, give roles/owner to principals in --admin-tokens-file instead"
                    .into(),
            ));
        }
        if let Some(tokens) = self.admin_tokens() {
            return tokens.map(|t| AdminAccess::Tokens(Arc::new(t)));
        }
        match self.admin_addr.ip().is_loopback() {
            true => Ok(AdminAccess::Loopback),
            false if self.admin_trust_cloud_run_iam => match self.cloud_run_service {
                Some(_) => {
                    let owners =
                        CloudRunOwners::parse(&self.admin_owners).map_err(ConfigError::Owners)?;
                    Ok(AdminAccess::CloudRunIam(Arc::new(owners)))
                }
                None => Err(ConfigError::CloudRunIamOffCloudRun(self.admin_addr)),
            },
            false => Err(ConfigError::UnprotectedAdmin(self.admin_addr)),
        }
    }

    /// The bearer tokens from `--admin-token` and `--admin-tokens-file`, if either is given.
    fn admin_tokens(&self) -> Option<Result<TokenSource, ConfigError>> {
        let single = self.admin_token.as_deref().filter(|t| !t.is_empty());
        if single.is_none() && self.admin_tokens_file.is_none() {
            return None;
        }
        let tokens = single.map_or_else(Tokens::default, Tokens::single_owner);
        let Some(path) = &self.admin_tokens_file else {
            return Some(Ok(TokenSource::fixed(tokens)));
        };
        Some(
            TokenSource::from_file(tokens, path).map_err(|why| ConfigError::TokensFile {
                path: path.clone(),
                why,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> ServeArgs {
        Cli::try_parse_from(std::iter::once("ingest").chain(args.iter().copied()))
            .unwrap()
            .serve
    }

    #[test]
    fn the_admin_api_on_loopback_needs_no_token() {
        let args = parse(&[]);
        assert!(matches!(args.admin_access(), Ok(AdminAccess::Loopback)));
    }

    #[test]
    fn an_exposed_admin_api_without_protection_refuses_to_start() {
        let args = parse(&["--admin-addr", "0.0.0.0:8081"]);
        let err = args.admin_access().unwrap_err().to_string();
        assert!(err.contains("--admin-token"), "{err}");
        let args = parse(&["--admin-addr", "0.0.0.0:8081", "--admin-token", "s3cret"]);
        assert!(matches!(args.admin_access(), Ok(AdminAccess::Tokens(_))));
        // Cloud Run's IAM counts only on Cloud Run, which sets K_SERVICE.
        let mut args = parse(&[
            "--admin-addr",
            "0.0.0.0:8081",
            "--admin-trust-cloud-run-iam",
        ]);
        args.cloud_run_service = None;
        let err = args.admin_access().unwrap_err().to_string();
        assert!(
            err.contains("not Cloud Run") && err.contains("0.0.0.0:8081"),
            "{err}"
        );
        args.cloud_run_service = Some("ingest-admin".into());
        assert!(matches!(
            args.admin_access(),
            Ok(AdminAccess::CloudRunIam(_))
        ));
    }

    #[test]
    fn the_sink_defaults_to_a_file_unless_an_emulator_is_named() {
        // Set the fields directly: the test command exports PUBSUB_EMULATOR_HOST, which clap
        // would read as a default.
        let mut args = parse(&[]);
        (args.sink, args.pubsub_emulator_host) = (None, None);
        assert_eq!(args.sink(), SinkUrl::File("events.jsonl".into()));
        args.pubsub_emulator_host = Some("127.0.0.1:8085".into());
        assert_eq!(args.sink(), SinkUrl::PubSub);
        args.sink = Some("file:x.jsonl".parse().unwrap());
        assert_eq!(args.sink(), SinkUrl::File("x.jsonl".into()));
        assert_eq!("pubsub".parse::<SinkUrl>(), Ok(SinkUrl::PubSub));
        assert!("kafka".parse::<SinkUrl>().is_err());
        assert!("file:".parse::<SinkUrl>().is_err());
    }

    #[test]
    fn the_pubsub_batch_delay_is_bounded_to_a_second() {
        assert_eq!(parse(&[]).pubsub_batch_delay_ms, 10);
        assert_eq!(
            parse(&["--pubsub-batch-delay-ms", "0"]).pubsub_batch_delay_ms,
            0
        );
        let too_long = ["ingest", "--pubsub-batch-delay-ms", "1001"];
        assert!(Cli::try_parse_from(too_long).is_err());
    }

    #[test]
    fn store_urls_name_their_kind() {
        assert_eq!(
            "sqlite:/tmp/x.db".parse::<StoreUrl>(),
            Ok(StoreUrl::Sqlite("/tmp/x.db".into()))
        );
        assert_eq!(
            "firestore:projects/p-1/databases/(default)".parse::<StoreUrl>(),
            Ok(StoreUrl::Firestore {
                project: "p-1".into(),
                database: "(default)".into()
            })
        );
        for bad in [
            "firestore:",
            "firestore:p-1",
            "firestore:projects/p-1/databases/",
            "firestore:projects//databases/d",
            "firestore:projects/p/databases/d/x",
        ] {
            assert!(bad.parse::<StoreUrl>().is_err(), "{bad}");
        }
        assert!("postgres://x".parse::<StoreUrl>().is_err());
        assert!("sqlite:".parse::<StoreUrl>().is_err());
    }
}
