//! `ingest commands send …`: a command to a device connected over MQTT and subscribed to its
//! commands topic. The server answers once the device has it (QoS 1: its PUBACK), so the exit
//! status says whether it arrived; a device that is not connected is refused, not queued.

use shared::resources::SendCommandToDeviceRequest;

use super::client::{AdminClient, AdminOptions};
use super::devices::PayloadArgs;
use super::output::{self, Output, emit, print_json};

const SEND_EXAMPLES: &str = "\
Examples:
  ingest commands send boiler-7 --registry barn-sensors --data reboot
  ingest commands send boiler-7 --registry barn-sensors --file firmware.json --subfolder ota

The device receives it on /devices/boiler-7/commands (or …/commands/ota). It must be connected
over MQTT and subscribed to /devices/boiler-7/commands/#; otherwise the command is refused
(FAILED_PRECONDITION), as in IoT Core: commands are not kept for later.";

/// Command subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CommandsCommand {
    /// Send a command to a connected device; returns once the device has it
    #[command(after_help = SEND_EXAMPLES)]
    Send(SendArgs),
}

/// `commands send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Device id, or its numeric id
    #[arg(value_name = "DEVICE")]
    device: String,
    /// Registry id
    #[arg(long, value_name = "REGISTRY")]
    registry: String,
    #[command(flatten)]
    payload: PayloadArgs,
    /// Deliver on /devices/{d}/commands/SUBFOLDER instead of /devices/{d}/commands
    #[arg(long, value_name = "SUBFOLDER")]
    subfolder: Option<String>,
    #[command(flatten)]
    api: AdminOptions,
}

/// Runs a commands subcommand.
pub async fn run(command: CommandsCommand) -> anyhow::Result<()> {
    match command {
        CommandsCommand::Send(args) => send(args).await,
    }
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let binary_data = args.payload.read("command")?;
    let size = binary_data.len();
    let client = AdminClient::connect(&args.api).await?;
    let method = format!("{}:sendCommandToDevice", args.device);
    let body = SendCommandToDeviceRequest {
        binary_data,
        subfolder: args.subfolder,
    };
    let answer = client
        .post(&["registries", &args.registry, "devices", &method], &body)
        .await?;
    match client.output {
        Output::Json => print_json(&answer),
        Output::Text => emit(&format!(
            "device {} received the command ({})\n",
            args.device,
            output::bytes(size)
        )),
    }
}
