//! The agent's settings: a TOML file (default `/etc/iotcore-device/config.toml`, every field
//! documented in `packaging/config.toml`) under flag and environment overrides for the device's
//! identity. [`FileSettings`] is the file as written; [`Settings`] is the checked result the
//! agent runs on, with every default filled in. Nothing below this module reads the environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::SignedDuration;
use reqwest::Url;
use serde::Deserialize;
use shared::DeviceName;
use shared::jwt::Algorithm;

use crate::mqtt::MESSAGES_PER_SECOND;
use crate::token::Lifetime;

/// Where the packaged agent looks for its settings.
pub const DEFAULT_PATH: &str = "/etc/iotcore-device/config.toml";
/// The highest `mqtt.messages_per_second` taken: as good as no pacing at all.
const MAX_MESSAGES_PER_SECOND: u32 = 1_000_000;

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read the settings file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("the settings file {path} is not valid: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, with line and column.
        detail: String,
    },
    /// A required field is set nowhere.
    #[error("`{field}` is not set: put it in the settings file or pass {flag} (or {env})")]
    Missing {
        /// The field's name in the file.
        field: &'static str,
        /// The flag that sets it.
        flag: &'static str,
        /// The environment variable that sets it.
        env: &'static str,
    },
    /// A field has a value that cannot work.
    #[error("`{field}` = {value:?}: {reason}")]
    Invalid {
        /// The field's name in the file.
        field: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

/// The settings file as written: every field optional, unknown fields refused (a typo must not
/// silently fall back to a default).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// Base URL of the device bridge.
    pub endpoint: Option<String>,
    /// Google Cloud project id.
    pub project: Option<String>,
    /// Region of the registry.
    pub region: Option<String>,
    /// Registry id.
    pub registry: Option<String>,
    /// Device id.
    pub device: Option<String>,
    /// The device's private key (PEM).
    pub private_key: Option<PathBuf>,
    /// `ES256` or `RS256`; by default the key's own.
    pub algorithm: Option<String>,
    /// Token lifetime, e.g. `1h`.
    pub token_lifetime: Option<String>,
    /// CA bundle (PEM) that replaces the system roots.
    pub ca_file: Option<PathBuf>,
    /// `https` (default) or `mqtt`.
    pub transport: Option<String>,
    /// The MQTT connection.
    #[serde(default)]
    pub mqtt: MqttSection,
    /// The durable queue.
    #[serde(default)]
    pub spool: SpoolSection,
    /// Sending.
    #[serde(default)]
    pub sender: SenderSection,
    /// What is read and when.
    #[serde(default)]
    pub readings: ReadingsSection,
    /// Config sync and state reports.
    #[serde(default)]
    pub config: ConfigSection,
    /// Commands queued for the device.
    #[serde(default)]
    pub commands: CommandsSection,
    /// The devices behind this agent when it is a gateway.
    #[serde(default)]
    pub gateway: GatewaySection,
}

/// `[gateway]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// `[[gateway.devices]]`: one table per device behind this gateway.
    #[serde(default)]
    pub devices: Vec<GatewayDevice>,
}

/// One device behind this gateway.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayDevice {
    /// Its device id (bound to this gateway in the registry).
    pub id: String,
    /// Its own private key (PEM), when the registry's `gatewayAuthMethod` asks for its token.
    pub private_key: Option<PathBuf>,
}

/// `[spool]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSection {
    /// Directory of the spool.
    pub dir: Option<PathBuf>,
    /// Most bytes on disk; beyond, the oldest readings are dropped.
    pub max_bytes: Option<u64>,
    /// Longest a written reading waits for its fsync, e.g. `1s`.
    pub sync_interval: Option<String>,
}

/// `[mqtt]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// The MQTT bridge's host; by default the endpoint's.
    pub host: Option<String>,
    /// Its TLS port: 8883 (default) or 443.
    pub port: Option<u16>,
    /// Keepalive, e.g. `60s`.
    pub keepalive: Option<String>,
    /// Most messages a second on the connection (the bridge's per-connection limit).
    pub messages_per_second: Option<u32>,
}

/// `[sender]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderSection {
    /// Requests in flight at once while a backlog drains.
    pub concurrency: Option<usize>,
    /// Longest pause between retries, e.g. `5m`.
    pub max_backoff: Option<String>,
}

/// `[readings]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingsSection {
    /// Read the Pi's own sensors.
    pub sensors: Option<bool>,
    /// How often, e.g. `60s`.
    pub interval: Option<String>,
    /// A shell command whose stdout (a JSON document per line) is a reading.
    pub command: Option<String>,
    /// How often the command runs; by default `interval`.
    pub command_interval: Option<String>,
    /// Take JSON lines from standard input as readings.
    pub stdin: Option<bool>,
    /// The subfolder every reading is published under.
    pub sub_folder: Option<String>,
}

/// `[config]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSection {
    /// How often to ask for a new config, e.g. `60s`; `0s` turns config sync off.
    pub poll_interval: Option<String>,
    /// Where the latest config is written.
    pub file: Option<PathBuf>,
    /// A shell command run after each new config.
    pub hook: Option<String>,
}

/// `[commands]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsSection {
    /// A shell command run for each command queued for the device (payload on stdin, subfolder
    /// as `$1`); without it commands are not fetched.
    pub hook: Option<String>,
    /// How often to ask for commands, e.g. `30s`.
    pub poll_interval: Option<String>,
    /// How long one run of the hook may take, e.g. `60s`.
    pub timeout: Option<String>,
}

/// Values from flags or the environment; each one beats the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--endpoint` / `IOTCORE_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `--project` / `IOTCORE_PROJECT`.
    pub project: Option<String>,
    /// `--region` / `IOTCORE_REGION`.
    pub region: Option<String>,
    /// `--registry` / `IOTCORE_REGISTRY`.
    pub registry: Option<String>,
    /// `--device` / `IOTCORE_DEVICE`.
    pub device: Option<String>,
    /// `--private-key` / `IOTCORE_PRIVATE_KEY`.
    pub private_key: Option<PathBuf>,
    /// `--spool-dir` / `IOTCORE_SPOOL_DIR`.
    pub spool_dir: Option<PathBuf>,
    /// `--transport` / `IOTCORE_TRANSPORT`.
    pub transport: Option<String>,
    /// `--mqtt-host` / `IOTCORE_MQTT_HOST`.
    pub mqtt_host: Option<String>,
    /// `--mqtt-port` / `IOTCORE_MQTT_PORT`.
    pub mqtt_port: Option<u16>,
    /// `--stdin`.
    pub stdin: bool,
    /// `IOTCORE_CLOCK_OFFSET_SECS`.
    pub clock_offset_secs: i64,
}

/// Everything the agent runs on, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL of the device bridge.
    pub endpoint: Url,
    /// The device's full name.
    pub device: DeviceName,
    /// The project id, the tokens' audience.
    pub project: String,
    /// The private key file.
    pub private_key: PathBuf,
    /// The algorithm asked for, if any.
    pub algorithm: Option<Algorithm>,
    /// Token lifetime.
    pub token_lifetime: Lifetime,
    /// CA bundle replacing the system roots.
    pub ca_file: Option<PathBuf>,
    /// How the agent reaches the service.
    pub transport: TransportKind,
    /// The MQTT connection's address and keepalive (used with [`TransportKind::Mqtt`]).
    pub mqtt: MqttSettings,
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Spool size bound.
    pub spool_max_bytes: u64,
    /// Group-commit window.
    pub sync_interval: Duration,
    /// Requests in flight while draining.
    pub concurrency: usize,
    /// Longest retry pause.
    pub max_backoff: Duration,
    /// Built-in sensors on.
    pub sensors: bool,
    /// Sensor interval.
    pub interval: Duration,
    /// User command.
    pub command: Option<String>,
    /// User command interval.
    pub command_interval: Duration,
    /// Readings from stdin.
    pub stdin: bool,
    /// Subfolder for events.
    pub sub_folder: Option<String>,
    /// Config poll interval; `None` when config sync is off.
    pub config_poll: Option<Duration>,
    /// Where the config goes.
    pub config_file: PathBuf,
    /// The config hook.
    pub config_hook: Option<String>,
    /// The hook for queued commands; `None`: commands are not fetched.
    pub commands_hook: Option<String>,
    /// How often queued commands are fetched.
    pub commands_poll: Duration,
    /// How long one run of the commands hook may take.
    pub commands_timeout: Duration,
    /// Clock offset for tokens and the doctor.
    pub clock_offset_secs: i64,
    /// The devices behind this gateway; empty for a device on its own.
    pub gateway_devices: Vec<GatewayDevice>,
}

/// The device protocol the agent speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// IoT Core's HTTP bridge, polled.
    Https,
    /// IoT Core's MQTT bridge over TLS: one long-lived connection.
    Mqtt,
    /// The same MQTT session carried over a WebSocket at `/mqtt` on the endpoint (`wss://` for
    /// an `https://` endpoint), as a Cloud Run deployment serves it.
    MqttWs,
}

/// Where and how the MQTT connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    /// Host name (also the TLS server name).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Keepalive: PINGREQ after this long without traffic.
    pub keepalive: Duration,
    /// Most messages the agent publishes each second on the connection: the bridge refuses a
    /// message over its limit without a PUBACK, so the agent keeps under it itself.
    pub messages_per_second: u32,
}

/// Reads the settings file. A missing file at the default path is no error (everything may come
/// from flags); a missing file that was asked for by name is.
pub fn read_file(path: &Path, explicit: bool) -> Result<FileSettings, SettingsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(FileSettings::default());
        }
        Err(source) => {
            return Err(SettingsError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    parse(&text).map_err(|detail| SettingsError::Parse {
        path: path.to_owned(),
        detail,
    })
}

/// Parses settings text.
pub fn parse(text: &str) -> Result<FileSettings, String> {
    toml::from_str(text).map_err(|err| err.to_string().trim().to_owned())
}

impl Settings {
    /// The file's values under the overrides, with defaults, checked.
    pub fn resolve(file: FileSettings, over: Overrides) -> Result<Self, SettingsError> {
        let endpoint_text = required(
            over.endpoint.or(file.endpoint),
            "endpoint",
            "--endpoint",
            "IOTCORE_ENDPOINT",
        )?;
        let endpoint = Url::parse(&endpoint_text).map_err(|err| SettingsError::Invalid {
            field: "endpoint",
            value: endpoint_text.clone(),
            reason: format!("not a URL ({err})"),
        })?;
        let project = required(
            over.project.or(file.project),
            "project",
            "--project",
            "IOTCORE_PROJECT",
        )?;
        let region = over
            .region
            .or(file.region)
            .unwrap_or_else(|| "us-central1".to_owned());
        let registry = required(
            over.registry.or(file.registry),
            "registry",
            "--registry",
            "IOTCORE_REGISTRY",
        )?;
        let device_id = required(
            over.device.or(file.device),
            "device",
            "--device",
            "IOTCORE_DEVICE",
        )?;
        let device =
            DeviceName::from_parts(&project, &region, &registry, &device_id).map_err(|err| {
                SettingsError::Invalid {
                    field: "device",
                    value: device_id.clone(),
                    reason: err.to_string(),
                }
            })?;
        let private_key = required(
            over.private_key.or(file.private_key),
            "private_key",
            "--private-key",
            "IOTCORE_PRIVATE_KEY",
        )?;
        let spool_dir = over
            .spool_dir
            .or(file.spool.dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/iotcore-device"));
        let interval = duration("readings.interval", file.readings.interval, "60s")?;
        let command_interval = match file.readings.command_interval {
            Some(text) => duration("readings.command_interval", Some(text), "60s")?,
            None => interval,
        };
        let poll = duration("config.poll_interval", file.config.poll_interval, "60s")?;
        let transport = transport_kind(over.transport.or(file.transport))?;
        let mqtt = mqtt_settings(&endpoint, file.mqtt, over.mqtt_host, over.mqtt_port)?;
        let settings = Self {
            endpoint,
            device,
            project,
            private_key,
            algorithm: algorithm(file.algorithm)?,
            token_lifetime: lifetime(file.token_lifetime)?,
            ca_file: file.ca_file,
            transport,
            mqtt,
            config_file: file
                .config
                .file
                .unwrap_or_else(|| spool_dir.join("config.bin")),
            spool_dir,
            spool_max_bytes: file.spool.max_bytes.unwrap_or(64 * 1024 * 1024),
            sync_interval: duration("spool.sync_interval", file.spool.sync_interval, "1s")?,
            concurrency: file.sender.concurrency.unwrap_or(16).clamp(1, 256),
            max_backoff: duration("sender.max_backoff", file.sender.max_backoff, "5m")?,
            sensors: file.readings.sensors.unwrap_or(true),
            interval,
            command: file.readings.command,
            command_interval,
            stdin: over.stdin || file.readings.stdin.unwrap_or(false),
            sub_folder: file.readings.sub_folder,
            config_poll: (!poll.is_zero()).then_some(poll),
            config_hook: file.config.hook,
            commands_hook: file.commands.hook,
            commands_poll: duration("commands.poll_interval", file.commands.poll_interval, "60s")?,
            commands_timeout: duration("commands.timeout", file.commands.timeout, "60s")?,
            clock_offset_secs: over.clock_offset_secs,
            gateway_devices: file.gateway.devices,
        };
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), SettingsError> {
        let invalid = |field, value: String, reason: &str| SettingsError::Invalid {
            field,
            value,
            reason: reason.to_owned(),
        };
        if self.interval.is_zero() || self.command_interval.is_zero() {
            return Err(invalid(
                "readings.interval",
                format!("{:?}", self.interval),
                "must be more than 0 s",
            ));
        }
        if self.commands_poll.is_zero() || self.commands_timeout.is_zero() {
            return Err(invalid(
                "commands.poll_interval",
                format!(
                    "{:?} (timeout {:?})",
                    self.commands_poll, self.commands_timeout
                ),
                "the poll interval and the timeout must be more than 0 s",
            ));
        }
        if self.transport == TransportKind::Mqtt && self.mqtt.host.is_empty() {
            return Err(invalid(
                "mqtt.host",
                String::new(),
                "the MQTT host is not set and the endpoint names none",
            ));
        }
        self.check_gateway()?;
        if self.spool_max_bytes < 64 * 1024 {
            return Err(invalid(
                "spool.max_bytes",
                self.spool_max_bytes.to_string(),
                "must be at least 65536",
            ));
        }
        Ok(())
    }

    /// Each device behind this gateway needs a valid id of its own.
    fn check_gateway(&self) -> Result<(), SettingsError> {
        let invalid = |value: &str, reason: String| SettingsError::Invalid {
            field: "gateway.devices",
            value: value.to_owned(),
            reason,
        };
        let own = self.device.device.to_string();
        let mut seen = std::collections::BTreeSet::new();
        for child in &self.gateway_devices {
            shared::DeviceId::parse(&child.id)
                .map_err(|err| invalid(&child.id, format!("not a device id: {err}")))?;
            if child.id == own {
                return Err(invalid(
                    &child.id,
                    "this is the gateway's own id; list the devices behind it".to_owned(),
                ));
            }
            if !seen.insert(child.id.as_str()) {
                return Err(invalid(&child.id, "listed twice".to_owned()));
            }
        }
        Ok(())
    }

    /// Where `transport = "mqtt+ws"` connects: `/mqtt` on the endpoint's host and port, `wss`
    /// for an `https` endpoint (as ingest serves it, and Cloud Run in front of it).
    pub fn websocket_url(&self) -> Option<String> {
        let host = self.endpoint.host_str()?;
        let port = self.endpoint.port_or_known_default()?;
        let scheme = if self.endpoint.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        Some(format!("{scheme}://{host}:{port}/mqtt"))
    }
}

fn required<T>(
    value: Option<T>,
    field: &'static str,
    flag: &'static str,
    env: &'static str,
) -> Result<T, SettingsError> {
    value.ok_or(SettingsError::Missing { field, flag, env })
}

fn transport_kind(text: Option<String>) -> Result<TransportKind, SettingsError> {
    match text.as_deref().map(str::trim) {
        None | Some("https") => Ok(TransportKind::Https),
        Some("mqtt") => Ok(TransportKind::Mqtt),
        Some("mqtt+ws") => Ok(TransportKind::MqttWs),
        Some(other) => Err(SettingsError::Invalid {
            field: "transport",
            value: other.to_owned(),
            reason: "must be \"https\", \"mqtt\" or \"mqtt+ws\"".to_owned(),
        }),
    }
}

/// The `[mqtt]` section under its overrides; the host defaults to the endpoint's.
fn mqtt_settings(
    endpoint: &Url,
    file: MqttSection,
    host: Option<String>,
    port: Option<u16>,
) -> Result<MqttSettings, SettingsError> {
    let host = host
        .or(file.host)
        .or_else(|| endpoint.host_str().map(str::to_owned))
        .unwrap_or_default();
    let port = port.or(file.port).unwrap_or(8883);
    let keepalive = duration("mqtt.keepalive", file.keepalive, "60s")?;
    if port == 0 {
        return Err(SettingsError::Invalid {
            field: "mqtt.port",
            value: port.to_string(),
            reason: "must be a TCP port (IoT Core used 8883 and 443)".to_owned(),
        });
    }
    // Whole seconds on the wire, at most what the CONNECT's field holds; under 5 s it would
    // only add pings.
    if keepalive < Duration::from_secs(5) || keepalive.as_secs() > u64::from(u16::MAX) {
        return Err(SettingsError::Invalid {
            field: "mqtt.keepalive",
            value: format!("{keepalive:?}"),
            reason: "must be between 5 s and 65535 s".to_owned(),
        });
    }
    let messages_per_second = file.messages_per_second.unwrap_or(MESSAGES_PER_SECOND);
    if !(1..=MAX_MESSAGES_PER_SECOND).contains(&messages_per_second) {
        return Err(SettingsError::Invalid {
            field: "mqtt.messages_per_second",
            value: messages_per_second.to_string(),
            reason: format!(
                "must be between 1 and {MAX_MESSAGES_PER_SECOND} (IoT Core allowed 100; match the bridge's limit)"
            ),
        });
    }
    Ok(MqttSettings {
        host,
        port,
        keepalive,
        messages_per_second,
    })
}

fn algorithm(text: Option<String>) -> Result<Option<Algorithm>, SettingsError> {
    match text.as_deref() {
        None => Ok(None),
        Some(name) if name.eq_ignore_ascii_case("ES256") => Ok(Some(Algorithm::ES256)),
        Some(name) if name.eq_ignore_ascii_case("RS256") => Ok(Some(Algorithm::RS256)),
        Some(other) => Err(SettingsError::Invalid {
            field: "algorithm",
            value: other.to_owned(),
            reason: "must be ES256 or RS256".to_owned(),
        }),
    }
}

fn lifetime(text: Option<String>) -> Result<Lifetime, SettingsError> {
    let Some(text) = text else {
        return Ok(Lifetime::default());
    };
    let parsed = parse_duration(&text).and_then(|d| Lifetime::new(d).map_err(|e| e.to_string()));
    parsed.map_err(|reason| SettingsError::Invalid {
        field: "token_lifetime",
        value: text,
        reason,
    })
}

fn duration(
    field: &'static str,
    text: Option<String>,
    default: &str,
) -> Result<Duration, SettingsError> {
    let text = text.unwrap_or_else(|| default.to_owned());
    parse_duration(&text).map_err(|reason| SettingsError::Invalid {
        field,
        value: text,
        reason,
    })
}

/// `1h`, `20m`, `1h30m`, `500ms`, `PT1H` (ISO 8601), or bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let signed: SignedDuration = text
        .trim()
        .parse()
        .map_err(|err| format!("not a duration like 1h, 20m or 500ms ({err})"))?;
    Duration::try_from(signed).map_err(|_| "a duration must not be negative".to_owned())
}

#[cfg(test)]
mod tests;
