//! `ingest gateways …`: bind devices to a gateway and unbind them, as `gcloud iot devices
//! gateways bind|unbind` did, and list a registry's gateways, the devices bound to one, or the
//! gateways one device is bound to. A gateway itself is created with `ingest devices create
//! --gateway`.

use serde_json::json;
use shared::resources::{Device, ListDevicesResponse};

use super::client::{AdminClient, AdminOptions};
use super::output::{Output, decode, emit, print_json};

const EXAMPLES: &str = "\
Examples:
  ingest devices create hall-gw --registry barn-sensors --gateway --public-key gw.pem --format ES256_PEM
  ingest gateways bind hall-gw thermo-3 --registry barn-sensors
  ingest gateways list --registry barn-sensors                    # the registry's gateways
  ingest gateways list --registry barn-sensors --gateway hall-gw  # the devices bound to it
  ingest gateways list --registry barn-sensors --device thermo-3  # the gateways it is bound to
  ingest gateways unbind hall-gw thermo-3 --registry barn-sensors";

/// Gateway subcommands.
#[derive(Debug, clap::Subcommand)]
#[command(after_help = EXAMPLES)]
pub enum GatewaysCommand {
    /// Let a gateway speak for a device (at most 10,000 devices per gateway, 10 gateways per
    /// device)
    Bind(PairArgs),
    /// Stop a gateway speaking for a device; a connection that attached it drops it at once
    Unbind(PairArgs),
    /// List gateways, the devices bound to one (--gateway), or a device's gateways (--device)
    List(ListArgs),
}

/// `gateways bind|unbind`.
#[derive(Debug, clap::Args)]
pub struct PairArgs {
    /// The gateway's id, or its numeric id
    #[arg(value_name = "GATEWAY")]
    gateway: String,
    /// The device's id, or its numeric id
    #[arg(value_name = "DEVICE")]
    device: String,
    /// Registry id
    #[arg(long, value_name = "REGISTRY")]
    registry: String,
    #[command(flatten)]
    api: AdminOptions,
}

/// `gateways list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Registry id
    #[arg(long, value_name = "REGISTRY")]
    registry: String,
    /// List the devices bound to this gateway
    #[arg(long, value_name = "GATEWAY", conflicts_with = "device")]
    gateway: Option<String>,
    /// List the gateways this device is bound to
    #[arg(long, value_name = "DEVICE")]
    device: Option<String>,
    #[command(flatten)]
    api: AdminOptions,
}

/// Runs a gateway subcommand.
pub async fn run(command: GatewaysCommand) -> anyhow::Result<()> {
    match command {
        GatewaysCommand::Bind(args) => pair(args, "bindDeviceToGateway", "bound").await,
        GatewaysCommand::Unbind(args) => pair(args, "unbindDeviceFromGateway", "unbound").await,
        GatewaysCommand::List(args) => list(args).await,
    }
}

async fn pair(args: PairArgs, method: &str, done: &str) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.api).await?;
    let body = json!({"gatewayId": args.gateway, "deviceId": args.device});
    let answer = client
        .post(
            &["registries", &format!("{}:{method}", args.registry)],
            &body,
        )
        .await?;
    match client.output {
        Output::Json => print_json(&answer),
        Output::Text => emit(&format!(
            "{done} device {} and gateway {} in registry {}\n",
            args.device,
            args.gateway,
            client.registry_name(&args.registry)
        )),
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.api).await?;
    let (filter, value, empty) = match (&args.gateway, &args.device) {
        (Some(gateway), _) => (
            "gatewayListOptions.associationsGatewayId",
            gateway.clone(),
            format!("no devices are bound to gateway {gateway}"),
        ),
        (None, Some(device)) => (
            "gatewayListOptions.associationsDeviceId",
            device.clone(),
            format!("device {device} is bound to no gateway"),
        ),
        (None, None) => (
            "gatewayListOptions.gatewayType",
            "GATEWAY".to_owned(),
            format!("no gateways in registry {}", args.registry),
        ),
    };
    let mut all: Vec<Device> = Vec::new();
    let mut token = String::new();
    loop {
        let mut query = vec![
            (filter, value.clone()),
            ("fieldMask", "gatewayConfig".into()),
        ];
        if !token.is_empty() {
            query.push(("pageToken", token.clone()));
        }
        let answer = client
            .get(&["registries", &args.registry, "devices"], &query)
            .await?;
        let page: ListDevicesResponse = decode(answer, "device list")?;
        all.extend(page.devices);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    match client.output {
        Output::Json => print_json(&json!({ "devices": all })),
        Output::Text if all.is_empty() => emit(&format!("{empty}\n")),
        Output::Text => emit(&all.iter().map(one_line).collect::<String>()),
    }
}

fn one_line(device: &Device) -> String {
    let id = device.id.as_ref().map_or("?", |id| id.as_str());
    let num_id = device
        .num_id
        .map_or_else(|| "-".to_owned(), |n| n.to_string());
    let kind = match &device.gateway_config {
        Some(g) if g.is_gateway() => format!("gateway ({})", g.auth_method().as_str()),
        _ => "device".to_owned(),
    };
    format!("{id:<32} numId {num_id:<20} {kind}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_what_kind_of_device_it_is() {
        let gateway =
            json!({"id": "hall-gw", "numId": "7", "gatewayConfig": {"gatewayType": "GATEWAY"}});
        let gateway: Device = serde_json::from_value(gateway).unwrap();
        assert!(one_line(&gateway).contains("gateway (ASSOCIATION_ONLY)"));
        let plain: Device =
            serde_json::from_value(json!({"id": "thermo-3", "numId": "8"})).unwrap();
        assert!(one_line(&plain).trim_end().ends_with("device"));
    }
}
