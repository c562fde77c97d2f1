//! The `ingest` binary: `ingest serve` runs the service; every other subcommand is the operator
//! CLI talking to a running service's admin API.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Small allocations are most of what a message costs beyond its system calls; mimalloc makes
// them a fraction of glibc's price (BENCHMARKS.md, "MQTT bridge").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Self-hosted Google Cloud IoT Core: device registry, token checks, admin API and CLI.
#[derive(Debug, Parser)]
#[command(
    name = "ingest",
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  ingest serve\n  ingest registries create barn --project my-project\n  ingest devices create boiler-7 --registry barn --project my-project \\\n      --public-key rsa_cert.pem --format RSA_X509_PEM\n\nEach subcommand has its own --help; `ingest serve` keeps the registry in ./ingest.db\nand serves the admin API on 127.0.0.1:8081 unless told otherwise."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: the HTTP device bridge and the admin API.
    Serve(Box<ingest::config::ServeArgs>),
    #[command(flatten)]
    Admin(ingest::cli::AdminCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Admin(command) => ingest::cli::run(command).await,
    };
    result.unwrap_or_else(|err| {
        eprintln!("error: {err:#}");
        ExitCode::FAILURE
    })
}

/// Runs the service with telemetry around it, flushing traces and metrics on the way out.
async fn serve(args: ingest::config::ServeArgs) -> anyhow::Result<ExitCode> {
    let telemetry = ingest::telemetry::init(args.telemetry_settings())?;
    let result = ingest::server::run(args, ingest::server::shutdown_signal()).await;
    telemetry.shutdown().await;
    result.map(|()| ExitCode::SUCCESS)
}
