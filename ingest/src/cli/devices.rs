//! `ingest devices …`: create devices with their public keys, show, list, block, unblock and
//! delete them, and add or clear keys later. The server checks each key against its declared
//! format and says why one is refused; the CLI passes that on.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context as _;
use serde_json::Value;
use shared::ids::DeviceId;
use shared::resources::{
    Device, DeviceCredential, GatewayAuthMethod, GatewayConfig, GatewayType, ListDevicesResponse,
};

use super::UsageError;
use super::client::{AdminClient, AdminOptions};
use super::keys::{KEY_FORMATS, KeyArgs};
use super::output::{self, Output, decode, emit, print_json};

const CREATE_EXAMPLES: &str = "\
Examples:
  ingest devices create boiler-7 --registry barn-sensors \\
      --public-key rsa_cert.pem --format RSA_X509_PEM
  ingest devices create pump-2 --registry barn-sensors \\
      --public-key ec_public.pem --format ES256_PEM --expires 2027-01-01T00:00:00Z \\
      --public-key ec_next.pem --format ES256_PEM --metadata site=barn --metadata floor=2";

/// Device subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DevicesCommand {
    /// Create a device with up to 3 public keys
    #[command(after_help = CREATE_EXAMPLES, after_long_help = format!("{CREATE_EXAMPLES}\n\n{KEY_FORMATS}"))]
    Create(CreateArgs),
    /// Show one device: keys, blocked, metadata, latest config and state, last activity
    #[command(
        after_help = "Example:\n  ingest devices get boiler-7 --registry barn-sensors --output json"
    )]
    Get(DeviceArgs),
    /// List a registry's devices (every page)
    #[command(after_help = "Example:\n  ingest devices list --registry barn-sensors")]
    List(ListArgs),
    /// Delete a device
    #[command(after_help = "Example:\n  ingest devices delete boiler-7 --registry barn-sensors")]
    Delete(DeviceArgs),
    /// Block a device: every request and connection it makes is refused until unblocked
    #[command(after_help = "Example:\n  ingest devices block boiler-7 --registry barn-sensors")]
    Block(DeviceArgs),
    /// Unblock a device
    #[command(after_help = "Example:\n  ingest devices unblock boiler-7 --registry barn-sensors")]
    Unblock(DeviceArgs),
    /// Add or remove a device's public keys
    #[command(subcommand)]
    Credentials(CredentialsCommand),
}

/// `devices credentials …`.
#[derive(Debug, clap::Subcommand)]
pub enum CredentialsCommand {
    /// Add public keys to a device (3 at most in all), e.g. before rotating to a new key
    #[command(
        after_help = "Example:\n  ingest devices credentials add boiler-7 --registry barn-sensors \\\n      --public-key rsa_cert_2027.pem --format RSA_X509_PEM",
        after_long_help = format!("Example:\n  ingest devices credentials add boiler-7 --registry barn-sensors \\\n      --public-key rsa_cert_2027.pem --format RSA_X509_PEM\n\n{KEY_FORMATS}")
    )]
    Add(AddKeysArgs),
    /// Remove every public key of a device (it can no longer authenticate)
    #[command(
        after_help = "Example:\n  ingest devices credentials clear boiler-7 --registry barn-sensors"
    )]
    Clear(DeviceArgs),
}

/// `devices create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Device id: 3-255 letters, digits and - . _ + ~ %, starting with a letter, not `goog…`
    #[arg(value_name = "DEVICE", value_parser = DeviceId::parse)]
    device: DeviceId,
    /// Registry id
    #[arg(long, value_name = "REGISTRY")]
    registry: String,
    #[command(flatten)]
    keys: KeyArgs,
    /// Operator-defined metadata (repeatable); keys are letters, digits, - and _
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_metadata)]
    metadata: Vec<(String, String)>,
    /// Create the device blocked: it cannot connect until `ingest devices unblock`
    #[arg(long)]
    blocked: bool,
    /// Create a gateway, which may speak for the devices bound to it (`ingest gateways bind`)
    #[arg(long)]
    gateway: bool,
    /// How a gateway's devices prove themselves: bound to it (the default), their own JWT, or
    /// both
    #[arg(long, value_name = "METHOD", requires = "gateway", value_parser = parse_auth_method)]
    gateway_auth_method: Option<GatewayAuthMethod>,
    #[command(flatten)]
    api: AdminOptions,
}

/// `ASSOCIATION_ONLY`, `DEVICE_AUTH_TOKEN_ONLY` or `ASSOCIATION_AND_DEVICE_AUTH_TOKEN`.
fn parse_auth_method(text: &str) -> Result<GatewayAuthMethod, String> {
    serde_json::from_value(serde_json::Value::String(text.to_ascii_uppercase())).map_err(|_| {
        "one of ASSOCIATION_ONLY, DEVICE_AUTH_TOKEN_ONLY, ASSOCIATION_AND_DEVICE_AUTH_TOKEN"
            .to_owned()
    })
}

/// One device: `devices get|delete|block|unblock` and `config get`.
#[derive(Debug, clap::Args)]
pub struct DeviceArgs {
    /// Device id, or its numeric id
    #[arg(value_name = "DEVICE")]
    pub(super) device: String,
    /// Registry id
    #[arg(long, value_name = "REGISTRY")]
    pub(super) registry: String,
    #[command(flatten)]
    pub(super) api: AdminOptions,
}

/// A payload given as text or read from a file: `config set` and `commands send`.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct PayloadArgs {
    /// Read the payload from this file (any bytes: up to 64 KB for a config, 256 KB for a
    /// command)
    #[arg(long, value_name = "PATH")]
    file: Option<std::path::PathBuf>,
    /// Use this text as the payload
    #[arg(long, value_name = "TEXT")]
    data: Option<String>,
}

impl PayloadArgs {
    /// The payload's bytes; `what` names it in the error when the file cannot be read.
    pub(super) fn read(self, what: &str) -> anyhow::Result<Vec<u8>> {
        match (self.file, self.data) {
            (Some(path), _) => std::fs::read(&path)
                .with_context(|| format!("reading {what} file {}", path.display())),
            (None, data) => Ok(data.unwrap_or_default().into_bytes()),
        }
    }
}

/// `devices list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Registry id
    #[arg(long, value_name = "REGISTRY")]
    registry: String,
    /// Devices per request; every page is fetched and printed either way
    #[arg(long, value_name = "N")]
    page_size: Option<u32>,
    #[command(flatten)]
    api: AdminOptions,
}

/// `devices credentials add`.
#[derive(Debug, clap::Args)]
pub struct AddKeysArgs {
    /// Device id, or its numeric id
    #[arg(value_name = "DEVICE")]
    device: String,
    /// Registry id
    #[arg(long, value_name = "REGISTRY")]
    registry: String,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    api: AdminOptions,
}

fn parse_metadata(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or("expected KEY=VALUE, e.g. site=barn")?;
    Ok((key.to_owned(), value.to_owned()))
}

/// Runs a device subcommand.
pub async fn run(command: DevicesCommand) -> anyhow::Result<()> {
    match command {
        DevicesCommand::Create(args) => create(args).await,
        DevicesCommand::Get(args) => get(args).await,
        DevicesCommand::List(args) => list(args).await,
        DevicesCommand::Delete(args) => delete(args).await,
        DevicesCommand::Block(args) => set_blocked(args, true).await,
        DevicesCommand::Unblock(args) => set_blocked(args, false).await,
        DevicesCommand::Credentials(CredentialsCommand::Add(args)) => add_keys(args).await,
        DevicesCommand::Credentials(CredentialsCommand::Clear(args)) => clear_keys(args).await,
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let credentials = args.keys.credentials()?;
    let client = AdminClient::connect(&args.api).await?;
    let body = Device {
        id: Some(args.device),
        credentials,
        blocked: args.blocked,
        metadata: args.metadata.into_iter().collect::<BTreeMap<_, _>>(),
        gateway_config: args.gateway.then(|| GatewayConfig {
            gateway_type: Some(GatewayType::Gateway),
            gateway_auth_method: args.gateway_auth_method,
            ..GatewayConfig::default()
        }),
        ..Device::default()
    };
    let answer = client
        .post(&["registries", &args.registry, "devices"], &body)
        .await?;
    show(client.output, answer, "created ")
}

async fn get(args: DeviceArgs) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.api).await?;
    let path = ["registries", &args.registry, "devices", &args.device];
    let mut answer = client.get(&path, &[]).await?;
    let presence = client
        .get(&[&path[..], &["presence"]].concat(), &[])
        .await?;
    match client.output {
        // The device resource with one more key: scripts reading its fields are unaffected.
        Output::Json => {
            answer["presence"] = presence;
            print_json(&answer)
        }
        Output::Text => {
            let device = decode(answer, "device")?;
            emit(&format!(
                "{}{}",
                describe(&device, ""),
                connection(&presence)
            ))
        }
    }
}

/// Where the device is connected over MQTT, for people.
fn connection(presence: &Value) -> String {
    if presence["connected"] != true {
        return "  connected:      no (no MQTT connection anywhere in the fleet)\n".to_owned();
    }
    let subscriptions = &presence["subscriptions"];
    let mut topics: Vec<&str> = Vec::new();
    if subscriptions["config"] == true {
        topics.push("config");
    }
    if subscriptions["commands"] == true {
        topics.push("commands");
    }
    let topics = if topics.is_empty() {
        "nothing".to_owned()
    } else {
        topics.join(", ")
    };
    format!(
        "  connected:      yes, on instance {} since {} (subscribed to {topics})\n",
        presence["instance"].as_str().unwrap_or("?"),
        presence["since"].as_str().unwrap_or("?"),
    )
}

async fn delete(args: DeviceArgs) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.api).await?;
    let answer = client
        .delete(&["registries", &args.registry, "devices", &args.device])
        .await?;
    match client.output {
        Output::Json => print_json(&answer),
        Output::Text => emit(&format!(
            "deleted device {} from registry {}\n",
            args.device, args.registry
        )),
    }
}

async fn set_blocked(args: DeviceArgs, blocked: bool) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.api).await?;
    let body = Device {
        blocked,
        ..Device::default()
    };
    let answer = client
        .patch(
            &["registries", &args.registry, "devices", &args.device],
            &["blocked"],
            &body,
        )
        .await?;
    let verb = if blocked { "blocked " } else { "unblocked " };
    show(client.output, answer, verb)
}

/// Read, append, write: the API replaces the credential list as a whole.
async fn add_keys(args: AddKeysArgs) -> anyhow::Result<()> {
    let added = args.keys.credentials()?;
    if added.is_empty() {
        return Err(UsageError("give at least one --public-key with its --format".into()).into());
    }
    let client = AdminClient::connect(&args.api).await?;
    let path = ["registries", &args.registry, "devices", &args.device];
    let current = client
        .get(&path, &[("fieldMask", "credentials".to_owned())])
        .await?;
    let mut device: Device = decode(current, "device")?;
    device.credentials.extend(added);
    let answer = client.patch(&path, &["credentials"], &device).await?;
    show(client.output, answer, "updated keys of ")
}

async fn clear_keys(args: DeviceArgs) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.api).await?;
    let answer = client
        .patch(
            &["registries", &args.registry, "devices", &args.device],
            &["credentials"],
            &Device::default(),
        )
        .await?;
    show(client.output, answer, "removed every key of ")
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.api).await?;
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let answer = client
            .get(
                &["registries", &args.registry, "devices"],
                &list_query(args.page_size, &token),
            )
            .await?;
        let page: ListDevicesResponse = decode(answer, "device list")?;
        all.extend(page.devices);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    match client.output {
        Output::Json => print_json(&serde_json::json!({ "devices": all })),
        Output::Text if all.is_empty() => {
            emit(&format!("no devices in registry {}\n", args.registry))
        }
        Output::Text => emit(&all.iter().map(one_line).collect::<String>()),
    }
}

/// A list shows only ids unless a field mask asks for more; `blocked` is worth a glance.
fn list_query(page_size: Option<u32>, token: &str) -> Vec<(&'static str, String)> {
    let mut query = vec![("fieldMask", "blocked".to_owned())];
    if let Some(size) = page_size {
        query.push(("pageSize", size.to_string()));
    }
    if !token.is_empty() {
        query.push(("pageToken", token.to_owned()));
    }
    query
}

fn show(output: Output, answer: Value, verb: &str) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(&answer),
        Output::Text => emit(&describe(&decode(answer, "device")?, verb)),
    }
}

fn one_line(device: &Device) -> String {
    let id = device.id.as_ref().map_or("?", DeviceId::as_str);
    let num_id = device
        .num_id
        .map_or_else(|| "-".to_owned(), |n| n.to_string());
    let blocked = if device.blocked { "blocked" } else { "" };
    let line = format!("{id:<32} numId {num_id:<20} {blocked}");
    format!("{}\n", line.trim_end())
}

/// A device for people: what decides whether it can connect first (blocked, keys), then what it
/// last did.
fn describe(device: &Device, verb: &str) -> String {
    let id = device.id.as_ref().map_or("?", DeviceId::as_str);
    let num_id = device
        .num_id
        .map_or_else(|| "-".to_owned(), |n| n.to_string());
    let mut text = format!("{verb}device {id} (numId {num_id})\n");
    let field = |text: &mut String, label: &str, value: &str| {
        let _ = writeln!(text, "  {label:<16} {value}");
    };
    field(&mut text, "name:", device.name.as_deref().unwrap_or("-"));
    field(
        &mut text,
        "blocked:",
        if device.blocked { "yes" } else { "no" },
    );
    describe_credentials(&mut text, &device.credentials);
    if let Some(gateway) = &device.gateway_config {
        if gateway.is_gateway() {
            let method = gateway.auth_method().as_str();
            field(
                &mut text,
                "gateway:",
                &format!("yes, its devices attach by {method}"),
            );
        }
        if let Some(via) = &gateway.last_accessed_gateway_id {
            let when = gateway.last_accessed_gateway_time.map(|t| t.to_string());
            let when = when.as_deref().unwrap_or("-");
            field(&mut text, "last gateway:", &format!("{via} at {when}"));
        }
    }
    for (i, (key, value)) in device.metadata.iter().enumerate() {
        field(
            &mut text,
            if i == 0 { "metadata:" } else { "" },
            &format!("{key}={value}"),
        );
    }
    let config = device
        .config
        .as_ref()
        .filter(|c| c.version > 0)
        .map_or_else(
            || "none".to_owned(),
            |c| {
                format!(
                    "version {}, {}, set {}",
                    c.version,
                    output::bytes(c.binary_data.len()),
                    output::time(c.cloud_update_time)
                )
            },
        );
    field(&mut text, "config:", &config);
    let state = device.state.as_ref().map_or_else(
        || "none".to_owned(),
        |s| {
            format!(
                "{} at {}",
                output::bytes(s.binary_data.len()),
                output::time(s.update_time)
            )
        },
    );
    field(&mut text, "state:", &state);
    describe_activity(&mut text, device);
    text
}

fn describe_credentials(text: &mut String, credentials: &[DeviceCredential]) {
    if credentials.is_empty() {
        let _ = writeln!(
            text,
            "  {:<16} none (the device cannot authenticate)",
            "keys:"
        );
    }
    for (i, credential) in credentials.iter().enumerate() {
        let label = if i == 0 { "keys:" } else { "" };
        let expiry = credential
            .expiration_time
            .map_or_else(|| "never expires".to_owned(), |t| format!("expires {t}"));
        let _ = writeln!(
            text,
            "  {label:<16} {}, {expiry}",
            credential.public_key.format
        );
    }
}

/// Only the times that are set, so a new device's summary stays short.
fn describe_activity(text: &mut String, device: &Device) {
    let times = [
        ("last heartbeat:", device.last_heartbeat_time),
        ("last event:", device.last_event_time),
        ("last state:", device.last_state_time),
        ("last config ack:", device.last_config_ack_time),
        ("last config sent:", device.last_config_send_time),
    ];
    for (label, time) in times {
        if let Some(time) = time {
            let _ = writeln!(text, "  {label:<16} {time}");
        }
    }
    if let Some(status) = &device.last_error_status {
        let _ = writeln!(
            text,
            "  {:<16} {} (code {}): {}",
            "last error:",
            output::time(device.last_error_time),
            status.code,
            status.message
        );
    }
}
