//! `mqtt-load`: the MQTT 3.1.1 load generator behind `scripts/bench-mqtt`. `publish` opens N
//! connections that each keep M QoS 1 publishes in flight and measures acked messages per second
//! and PUBACK latency; `idle` opens N connections, completes CONNECT and holds them with keepalive
//! so the server's memory per idle connection can be read. Either mode prints exactly one JSON
//! line on stdout (progress goes to stderr), always stops by itself, and only targets loopback.

mod cli;
mod conn;
mod hist;
mod idle;
mod publish;
mod report;
mod tls;

use anyhow::Context;
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = cli::Cli::parse();
    let runtime = build_runtime(args.threads)?;
    let line = runtime.block_on(run(args))?;
    println!("{line}");
    Ok(())
}

async fn run(args: cli::Cli) -> anyhow::Result<String> {
    match args.command {
        cli::Command::Publish(publish) => {
            let target = cli::Target::from_args(&publish.target)?;
            let plan = publish::Plan::from_args(&publish)?;
            let result = publish::run(target, plan).await?;
            serde_json::to_string(&result).context("encoding the result")
        }
        cli::Command::Idle(idle) => {
            let target = cli::Target::from_args(&idle.target)?;
            let plan = idle::Plan::from_args(&idle)?;
            let result = idle::run(target, plan).await?;
            serde_json::to_string(&result).context("encoding the result")
        }
    }
}

/// One thread by default: the benchmark pins the generator to one core, where a second worker
/// would only add hand-offs.
fn build_runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}
