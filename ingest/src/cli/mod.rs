//! The admin command line: `ingest registries|devices|gateways|config|states|commands|iam …`, a client of the
//! admin API that mirrors IoT Core's `gcloud iot` verbs, so operators can manage registries,
//! devices, keys, configs and commands without writing JSON. `main.rs` flattens [`AdminCommand`] into its own
//! subcommands and calls [`run`], which prints any failure as `error: …` and picks the exit code:
//! 1 when the server refused or a local file could not be read, 2 for usage mistakes and when
//! the admin API cannot be reached.

use std::process::ExitCode;

mod client;
mod commands;
mod config;
mod devices;
mod gateways;
mod iam;
mod id_token;
mod keys;
mod output;
mod registries;

pub use client::{AdminError, AdminOptions, IdTokenMode};
pub use commands::CommandsCommand;
pub use config::{ConfigCommand, StatesCommand};
pub use devices::DevicesCommand;
pub use gateways::GatewaysCommand;
pub use iam::IamCommand;
pub use output::Output;
pub use registries::RegistriesCommand;

const SETUP: &str = "\
Every command talks to the admin API of a running `ingest serve`. Set it up once:
  export INGEST_ADMIN_URL=http://127.0.0.1:8081   # or https://<service>.run.app
  export INGEST_PROJECT=my-project INGEST_REGION=us-central1";

/// The admin subcommands, flattened into the binary's top-level command. Boxed, so that the
/// binary's command enum stays small next to `serve`'s settings.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Manage device registries: telemetry and state topics, HTTP/MQTT switches
    #[command(
        subcommand,
        alias = "registry",
        after_help = format!("{SETUP}\n\nExample:\n  ingest registries create barn-sensors --event-topic projects/my-project/topics/telemetry")
    )]
    Registries(Box<RegistriesCommand>),
    /// Manage devices: create with public keys, show, list, block, delete
    #[command(
        subcommand,
        alias = "device",
        after_help = format!("{SETUP}\n\nExample:\n  ingest devices create boiler-7 --registry barn-sensors \\\n      --public-key rsa_cert.pem --format RSA_X509_PEM")
    )]
    Devices(Box<DevicesCommand>),
    /// Set and read the configuration the cloud sends to a device
    #[command(
        subcommand,
        after_help = format!("{SETUP}\n\nExample:\n  ingest config set boiler-7 --registry barn-sensors --data '{{\"target_temp\": 21}}'")
    )]
    Config(Box<ConfigCommand>),
    /// Read the states devices reported
    #[command(
        subcommand,
        alias = "state",
        after_help = format!("{SETUP}\n\nExample:\n  ingest states list boiler-7 --registry barn-sensors")
    )]
    States(Box<StatesCommand>),
    /// Send commands to devices connected over MQTT
    #[command(
        subcommand,
        alias = "command",
        after_help = format!("{SETUP}\n\nExample:\n  ingest commands send boiler-7 --registry barn-sensors --data reboot")
    )]
    Commands(Box<CommandsCommand>),
    /// Bind devices to gateways and list them
    #[command(
        subcommand,
        alias = "gateway",
        after_help = format!("{SETUP}\n\nExample:\n  ingest gateways bind hall-gw thermo-3 --registry barn-sensors")
    )]
    Gateways(Box<GatewaysCommand>),
    /// Grant and revoke roles on a registry (its IAM policy), and test what you hold
    #[command(
        subcommand,
        after_help = format!("{SETUP}\n\nExample:\n  ingest iam add barn-sensors --member user:alice@example.com --role roles/cloudiot.viewer")
    )]
    Iam(Box<IamCommand>),
}

/// A mistake in how the command was called that clap cannot see (flags that must pair up, an
/// update that names nothing); exits with 2 like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs an admin subcommand. Failures are printed here, because only here is it known which exit
/// code each deserves; the `Err` side is left for the caller's own failures.
pub async fn run(command: AdminCommand) -> anyhow::Result<ExitCode> {
    let result = match command {
        AdminCommand::Registries(command) => registries::run(*command).await,
        AdminCommand::Devices(command) => devices::run(*command).await,
        AdminCommand::Config(command) => config::run(*command).await,
        AdminCommand::States(command) => config::run_states(*command).await,
        AdminCommand::Commands(command) => commands::run(*command).await,
        AdminCommand::Gateways(command) => gateways::run(*command).await,
        AdminCommand::Iam(command) => iam::run(*command).await,
    };
    Ok(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    })
}

/// 2 when the fix is on the caller's side before any request can work (usage, no server); 1 for
/// everything the server or the filesystem refused.
fn exit_code(err: &anyhow::Error) -> u8 {
    let usage_or_unreachable = err.chain().any(|cause| {
        cause.is::<UsageError>()
            || matches!(
                cause.downcast_ref::<AdminError>(),
                Some(AdminError::Unreachable { .. })
            )
    });
    if usage_or_unreachable { 2 } else { 1 }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    #[command(name = "ingest")]
    struct Cli {
        #[command(subcommand)]
        command: AdminCommand,
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn refusals_exit_1_and_unreachable_servers_exit_2() {
        let refused = anyhow::Error::new(AdminError::Refused {
            status: "NOT_FOUND",
            message: "x".into(),
            info: None,
        });
        assert_eq!(exit_code(&refused), 1);
        let unreachable = anyhow::Error::new(AdminError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            reason: "Connection refused".into(),
        })
        .context("outer");
        assert_eq!(exit_code(&unreachable), 2);
        assert_eq!(exit_code(&anyhow::Error::new(UsageError("u".into()))), 2);
        assert_eq!(
            exit_code(&anyhow::anyhow!("reading public key file k.pem")),
            1
        );
    }

    #[test]
    fn the_project_comes_from_the_flag_or_the_environment() {
        let parsed = Cli::try_parse_from([
            "ingest",
            "devices",
            "get",
            "d-1",
            "--registry",
            "r-1",
            "--project",
            "demo-project",
        ]);
        assert!(parsed.is_ok(), "{parsed:?}");
    }
}
