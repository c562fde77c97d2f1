//! `ingest config …` and `ingest states …`: the cloud-to-device config (set a new version, read
//! the latest, list the kept versions) and the states devices reported. `config get` writes the
//! payload itself to stdout, so `ingest config get … > file` round-trips with `--file`.

use std::fmt::Write as _;

use anyhow::Context as _;
use shared::resources::{
    Device, DeviceConfig, ListDeviceConfigVersionsResponse, ListDeviceStatesResponse,
    ModifyCloudToDeviceConfigRequest,
};

use super::client::{AdminClient, AdminError, AdminOptions};
use super::devices::{DeviceArgs, PayloadArgs};
use super::output::{self, Output, decode, emit, emit_bytes, print_json};

const SET_EXAMPLES: &str = "\
Examples:
  ingest config set boiler-7 --registry barn-sensors --data '{\"target_temp\": 21}'
  ingest config set boiler-7 --registry barn-sensors --file config.bin --version-to-update 4

With --version-to-update N the update applies only if the current version is still N, so two
operators cannot overwrite each other's change unseen (the loser gets ABORTED).";

/// Config subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Set a new config version for a device (sent to it over MQTT, fetched over HTTP)
    #[command(after_help = SET_EXAMPLES)]
    Set(SetArgs),
    /// Print a device's latest config payload (the version goes to stderr)
    #[command(
        after_help = "Examples:\n  ingest config get boiler-7 --registry barn-sensors > config.bin\n  ingest config get boiler-7 --registry barn-sensors --output json"
    )]
    Get(DeviceArgs),
    /// List the kept config versions of a device, newest first
    #[command(
        after_help = "Example:\n  ingest config versions boiler-7 --registry barn-sensors --num 3"
    )]
    Versions(VersionsArgs),
}

/// State subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum StatesCommand {
    /// List the states a device reported, newest first
    #[command(
        after_help = "Example:\n  ingest states list boiler-7 --registry barn-sensors --num 5"
    )]
    List(VersionsArgs),
}

/// `config set`.
#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// Device id, or its numeric id
    #[arg(value_name = "DEVICE")]
    device: String,
    /// Registry id
    #[arg(long, value_name = "REGISTRY")]
    registry: String,
    #[command(flatten)]
    payload: PayloadArgs,
    /// Apply only if the device's current config version is N (0: unconditionally)
    #[arg(long, value_name = "N", default_value_t = 0)]
    version_to_update: u64,
    #[command(flatten)]
    api: AdminOptions,
}

/// `config versions` and `states list`.
#[derive(Debug, clap::Args)]
pub struct VersionsArgs {
    /// Device id, or its numeric id
    #[arg(value_name = "DEVICE")]
    device: String,
    /// Registry id
    #[arg(long, value_name = "REGISTRY")]
    registry: String,
    /// At most this many, newest first (the server keeps 10)
    #[arg(long, value_name = "N")]
    num: Option<u32>,
    #[command(flatten)]
    api: AdminOptions,
}

/// Runs a config subcommand.
pub async fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Set(args) => set(args).await,
        ConfigCommand::Get(args) => get(args).await,
        ConfigCommand::Versions(args) => versions(args).await,
    }
}

/// Runs a states subcommand.
pub async fn run_states(command: StatesCommand) -> anyhow::Result<()> {
    match command {
        StatesCommand::List(args) => states(args).await,
    }
}

async fn set(args: SetArgs) -> anyhow::Result<()> {
    let binary_data = args.payload.read("config")?;
    let client = AdminClient::connect(&args.api).await?;
    let method = format!("{}:modifyCloudToDeviceConfig", args.device);
    let body = ModifyCloudToDeviceConfigRequest {
        version_to_update: args.version_to_update,
        binary_data,
    };
    let path = ["registries", &args.registry, "devices", &method];
    let answer = match client.post(&path, &body).await {
        // A device's config may change once a second: the wait is short, so the CLI waits it
        // out once instead of failing an operator who set two configs in a row.
        Err(err) => match err
            .downcast_ref::<AdminError>()
            .and_then(AdminError::config_retry_after)
        {
            Some(wait) => {
                tokio::time::sleep(wait).await;
                client.post(&path, &body).await?
            }
            None => return Err(err),
        },
        Ok(answer) => answer,
    };
    match client.output {
        Output::Json => print_json(&answer),
        Output::Text => {
            let config: DeviceConfig = decode(answer, "device config")?;
            emit(&format!(
                "device {} config is now version {} ({})\n",
                args.device,
                config.version,
                output::bytes(config.binary_data.len())
            ))
        }
    }
}

/// The latest config rides on the device resource: version 1, empty, from the device's creation
/// until an operator sets one.
async fn get(args: DeviceArgs) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.api).await?;
    let answer = client
        .get(
            &["registries", &args.registry, "devices", &args.device],
            &[("fieldMask", "config".to_owned())],
        )
        .await?;
    let device: Device = decode(answer, "device")?;
    let config = device.config.unwrap_or_default();
    match client.output {
        Output::Json => print_json(&serde_json::to_value(&config).context("encoding the config")?),
        Output::Text => {
            // stderr, so that stdout holds exactly the payload.
            eprintln!(
                "version {} of device {}, set {}, acknowledged {}",
                config.version,
                args.device,
                output::time(config.cloud_update_time),
                output::time(config.device_ack_time)
            );
            emit_bytes(&config.binary_data)
        }
    }
}

/// Reads a device's `configVersions` or `states` list, asking for at most `args.num` entries.
async fn device_history(
    args: &VersionsArgs,
    child: &str,
    count_param: &str,
) -> anyhow::Result<(AdminClient, serde_json::Value)> {
    let client = AdminClient::connect(&args.api).await?;
    let query: Vec<_> = args
        .num
        .map(|n| (count_param, n.to_string()))
        .into_iter()
        .collect();
    let path = ["registries", &args.registry, "devices", &args.device, child];
    let answer = client.get(&path, &query).await?;
    Ok((client, answer))
}

async fn versions(args: VersionsArgs) -> anyhow::Result<()> {
    let (client, answer) = device_history(&args, "configVersions", "numVersions").await?;
    if client.output == Output::Json {
        return print_json(&answer);
    }
    let list: ListDeviceConfigVersionsResponse = decode(answer, "config version list")?;
    if list.device_configs.is_empty() {
        return emit(&format!("device {} has no config yet\n", args.device));
    }
    let mut text = String::new();
    for config in &list.device_configs {
        let _ = writeln!(
            text,
            "version {:<4} set {}  acked {}  {:<12} {}",
            config.version,
            output::time(config.cloud_update_time),
            output::time(config.device_ack_time),
            output::bytes(config.binary_data.len()),
            output::preview(&config.binary_data)
        );
    }
    emit(&text)
}

async fn states(args: VersionsArgs) -> anyhow::Result<()> {
    let (client, answer) = device_history(&args, "states", "numStates").await?;
    if client.output == Output::Json {
        return print_json(&answer);
    }
    let list: ListDeviceStatesResponse = decode(answer, "state list")?;
    if list.device_states.is_empty() {
        return emit(&format!(
            "device {} has reported no state yet\n",
            args.device
        ));
    }
    let mut text = String::new();
    for state in &list.device_states {
        let _ = writeln!(
            text,
            "{}  {:<12} {}",
            output::time(state.update_time),
            output::bytes(state.binary_data.len()),
            output::preview(&state.binary_data)
        );
    }
    emit(&text)
}
