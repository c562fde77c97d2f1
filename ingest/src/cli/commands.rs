//! `ingest commands send …`: a command to a device connected over MQTT and subscribed to its
//! commands topic. The server answers once the device has it (QoS 1: its PUBACK), so the exit
//! status says whether it arrived; a device that is not connected is refused, unless `--ttl`
//! asks the server to queue the command for it. `ingest commands list …` shows the queue.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::bail;
use shared::device_api::CommandsResponse;
use shared::resources::SendCommandToDeviceRequest;

use super::client::{AdminClient, AdminOptions};
use super::devices::PayloadArgs;
use super::output::{self, Output, decode, emit, print_json};

const SEND_EXAMPLES: &str = "\
Examples:
  ingest commands send boiler-7 --registry barn-sensors --data reboot
  ingest commands send boiler-7 --registry barn-sensors --file firmware.json --subfolder ota
  ingest commands send boiler-7 --registry barn-sensors --data reboot --ttl 2h

The device receives it on /devices/boiler-7/commands (or …/commands/ota). It must be connected
over MQTT and subscribed to /devices/boiler-7/commands/#; otherwise the command is refused
(FAILED_PRECONDITION), as in IoT Core. With --ttl (an extension) it is queued instead, until the
device subscribes over MQTT or fetches GET …/devices/boiler-7/commands over HTTP, or the ttl
passes (at most 7d; 50 commands may wait per device).";

/// Command subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CommandsCommand {
    /// Send a command to a connected device; returns once the device has it
    #[command(after_help = SEND_EXAMPLES)]
    Send(SendArgs),
    /// List the commands queued for a device (with --ttl), pending and delivered
    List(ListArgs),
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
    /// Queue the command this long if the device is not connected and subscribed (30s, 10m, 2h,
    /// 1d)
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    ttl: Option<Duration>,
    #[command(flatten)]
    api: AdminOptions,
}

/// `commands list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Device id, or its numeric id
    #[arg(value_name = "DEVICE")]
    device: String,
    /// Registry id
    #[arg(long, value_name = "REGISTRY")]
    registry: String,
    #[command(flatten)]
    api: AdminOptions,
}

/// A whole number with a unit: `s`, `m`, `h` or `d`.
fn parse_ttl(text: &str) -> anyhow::Result<Duration> {
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_at);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!(
            "`{text}` is not a duration: write a whole number and s, m, h or d (90s, 10m, 2h, 1d)"
        ),
    };
    let Ok(number) = number.parse::<u64>() else {
        bail!(
            "`{text}` is not a duration: write a whole number and s, m, h or d (90s, 10m, 2h, 1d)"
        );
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

/// Runs a commands subcommand.
pub async fn run(command: CommandsCommand) -> anyhow::Result<()> {
    match command {
        CommandsCommand::Send(args) => send(args).await,
        CommandsCommand::List(args) => list(args).await,
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
        ttl: args.ttl,
    };
    let answer = client
        .post(&["registries", &args.registry, "devices", &method], &body)
        .await?;
    if client.output == Output::Json {
        return print_json(&answer);
    }
    let text = match (answer["commandId"].as_str(), answer["expireTime"].as_str()) {
        (Some(id), Some(expire)) => format!(
            "device {} is not connected and subscribed to its commands; the command ({}) is \
             queued as #{id} until {expire}\n",
            args.device,
            output::bytes(size)
        ),
        _ => format!(
            "device {} received the command ({})\n",
            args.device,
            output::bytes(size)
        ),
    };
    emit(&text)
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.api).await?;
    let answer = client
        .get(
            &[
                "registries",
                &args.registry,
                "devices",
                &args.device,
                "commands",
            ],
            &[],
        )
        .await?;
    if client.output == Output::Json {
        return print_json(&answer);
    }
    let list: CommandsResponse = decode(answer, "command list")?;
    if list.commands.is_empty() {
        return emit(&format!(
            "no commands are queued for device {}\n",
            args.device
        ));
    }
    let now = jiff::Timestamp::now();
    let mut text = String::new();
    for command in &list.commands {
        let status = match command.deliver_time {
            Some(at) => format!("delivered {at}"),
            None if command.is_pending(now) => format!("pending until {}", command.expire_time),
            None => format!("expired {}", command.expire_time),
        };
        let _ = writeln!(
            text,
            "#{:<4} {}  {:<12} {:<14} {}",
            command.id,
            status,
            output::bytes(command.binary_data.len()),
            command.subfolder.as_deref().unwrap_or("-"),
            output::preview(&command.binary_data)
        );
    }
    emit(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_is_a_whole_number_and_a_unit() {
        assert_eq!(parse_ttl("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_ttl("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_ttl("1d").unwrap(), Duration::from_secs(86_400));
        for bad in ["", "10", "m", "1.5h", "-1s", "10 m", "1w"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
