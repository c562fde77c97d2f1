//! The `iotcore-device` command line: `keygen` makes a device's key pair, `send` publishes one
//! event or state over the HTTP bridge, `config` fetches the device's configuration, and `token`
//! prints a fresh JWT for curl. [`main`] prints any failure as `error: …` and picks the exit
//! code: 1 when the server refused or a local file was wrong, 2 for usage mistakes and when the
//! bridge cannot be reached (the fix is on the caller's side before any request can work).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use jiff::{SignedDuration, Timestamp};
use reqwest::Url;
use shared::jwt::Algorithm;
use shared::{DeviceName, ProjectId};

use crate::http::{ClientError, IngestClient};
use crate::keys::DeviceKey;
use crate::settings::{self, Overrides, Settings};
use crate::token::{self, Lifetime};
use crate::{agent, doctor};

mod files;

const EXAMPLES: &str = "\
Examples:
  iotcore-device keygen --algorithm ES256 --out /etc/iotcore
  iotcore-device send --endpoint http://127.0.0.1:8080 --project my-project --region us-central1 \\
      --registry barn --device boiler-7 --private-key /etc/iotcore/private.pem --data 'temp=21.5'
  iotcore-device config --endpoint http://127.0.0.1:8080 --project my-project \\
      --registry barn --device boiler-7 --private-key /etc/iotcore/private.pem
  curl -H \"Authorization: Bearer $(iotcore-device token --project my-project \\
      --private-key /etc/iotcore/private.pem)\" …

Every identity flag can also come from the environment (IOTCORE_ENDPOINT, IOTCORE_PROJECT,
IOTCORE_REGION, IOTCORE_REGISTRY, IOTCORE_DEVICE, IOTCORE_PRIVATE_KEY).";

/// The device agent of the self-hosted IoT Core: keys, signed tokens and the HTTP bridge.
#[derive(Debug, Parser)]
#[command(
    name = "iotcore-device",
    version,
    about,
    long_about = None,
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the agent: read sensors, spool every reading, send them, keep the config in sync
    Run(RunArgs),
    /// Check the settings, key, clock and network one by one, and say how to fix what fails
    Doctor(DoctorArgs),
    /// Make a key pair (and a self-signed certificate) for a new device, and print the command
    /// that registers it
    Keygen(KeygenArgs),
    /// Send one telemetry event (or, with --state, one state report) over the HTTP bridge
    Send(SendArgs),
    /// Fetch the device's latest configuration over the HTTP bridge; the data goes to stdout
    Config(ConfigArgs),
    /// Print a fresh device JWT, e.g. for curl
    Token(TokenArgs),
}

/// The two JWT algorithms, spelled as IoT Core spelled them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AlgorithmArg {
    /// ECDSA on P-256 with SHA-256
    #[value(name = "ES256")]
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys
    #[value(name = "RS256")]
    Rs256,
}

impl From<AlgorithmArg> for Algorithm {
    fn from(arg: AlgorithmArg) -> Self {
        match arg {
            AlgorithmArg::Es256 => Algorithm::ES256,
            AlgorithmArg::Rs256 => Algorithm::RS256,
        }
    }
}

#[derive(Debug, clap::Args)]
struct KeygenArgs {
    /// ES256 makes an EC P-256 key; RS256 a 2048-bit RSA key
    #[arg(long, value_enum, ignore_case = true, default_value = "ES256")]
    algorithm: AlgorithmArg,
    /// Directory for private.pem (mode 0600), public.pem and cert.pem; created if missing
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replace key files that already exist there
    #[arg(long)]
    force: bool,
}

/// Which device this is and where the bridge is.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Device identity")]
struct IdentityArgs {
    /// Base URL of the device bridge, e.g. the address `ingest serve` prints as "device bridge
    /// listening on …", or https://<host>
    #[arg(long, env = "IOTCORE_ENDPOINT", value_name = "URL")]
    endpoint: Url,
    /// Google Cloud project id (also the token's audience)
    #[arg(long, env = "IOTCORE_PROJECT", value_name = "PROJECT_ID")]
    project: String,
    /// Region of the registry
    #[arg(
        long,
        env = "IOTCORE_REGION",
        value_name = "REGION",
        default_value = "us-central1"
    )]
    region: String,
    /// Registry id
    #[arg(long, env = "IOTCORE_REGISTRY", value_name = "REGISTRY_ID")]
    registry: String,
    /// Device id (or numeric id)
    #[arg(long, env = "IOTCORE_DEVICE", value_name = "DEVICE_ID")]
    device: String,
}

impl IdentityArgs {
    fn device_name(&self) -> anyhow::Result<DeviceName> {
        DeviceName::from_parts(&self.project, &self.region, &self.registry, &self.device)
            .map_err(|err| UsageError(err.to_string()).into())
    }
}

/// The key a token is signed with.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Signing key")]
struct KeyArgs {
    /// The device's private key: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#1
    /// (`RSA PRIVATE KEY`) PEM, as keygen or openssl writes them
    #[arg(long, env = "IOTCORE_PRIVATE_KEY", value_name = "PEM_FILE")]
    private_key: PathBuf,
    /// The JWT algorithm; by default the one the key signs with
    #[arg(long, value_enum, ignore_case = true)]
    algorithm: Option<AlgorithmArg>,
}

/// What to send: exactly one of these.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
#[command(next_help_heading = "Payload (exactly one)")]
struct PayloadArgs {
    /// The payload, as text
    #[arg(long, value_name = "TEXT")]
    data: Option<String>,
    /// The payload, the bytes of a file (`-` for stdin)
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// The payload, a JSON document (checked, then sent compact)
    #[arg(long, value_name = "JSON")]
    json: Option<String>,
}

#[derive(Debug, clap::Args)]
struct SendArgs {
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    payload: PayloadArgs,
    /// The event's subfolder (selects the registry's topic, and becomes the `subFolder`
    /// attribute)
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with = "state",
        help_heading = "Request"
    )]
    sub_folder: Option<String>,
    /// Report the payload as the device's state (`:setState`) instead of an event
    #[arg(long, help_heading = "Request")]
    state: bool,
    /// How long the token is valid, e.g. 20m, 1h, 24h (at most 24h)
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_lifetime,
        default_value = "1h",
        help_heading = "Request"
    )]
    token_lifetime: Lifetime,
}

#[derive(Debug, clap::Args)]
struct ConfigArgs {
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// The config version the device already has; 0 asks for the latest
    #[arg(
        long,
        value_name = "VERSION",
        default_value_t = 0,
        help_heading = "Request"
    )]
    local_version: u64,
    /// How long the token is valid, e.g. 20m, 1h, 24h (at most 24h)
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_lifetime,
        default_value = "1h",
        help_heading = "Request"
    )]
    token_lifetime: Lifetime,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// Google Cloud project id: the token's audience
    #[arg(long, env = "IOTCORE_PROJECT", value_name = "PROJECT_ID")]
    project: String,
    /// How long the token is valid, e.g. 20m, 1h, 24h (at most 24h)
    #[arg(
        long,
        alias = "token-lifetime",
        value_name = "DURATION",
        value_parser = parse_lifetime,
        default_value = "1h"
    )]
    lifetime: Lifetime,
    #[command(flatten)]
    key: KeyArgs,
}

/// The settings file and the overrides `run` and `doctor` take; each flag beats the file.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Settings")]
struct AgentArgs {
    /// The settings file (TOML)
    #[arg(long, env = "IOTCORE_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Base URL of the device bridge
    #[arg(long, env = "IOTCORE_ENDPOINT", value_name = "URL")]
    endpoint: Option<String>,
    /// Google Cloud project id
    #[arg(long, env = "IOTCORE_PROJECT", value_name = "PROJECT_ID")]
    project: Option<String>,
    /// Region of the registry
    #[arg(long, env = "IOTCORE_REGION", value_name = "REGION")]
    region: Option<String>,
    /// Registry id
    #[arg(long, env = "IOTCORE_REGISTRY", value_name = "REGISTRY_ID")]
    registry: Option<String>,
    /// Device id
    #[arg(long, env = "IOTCORE_DEVICE", value_name = "DEVICE_ID")]
    device: Option<String>,
    /// The device's private key (PEM)
    #[arg(long, env = "IOTCORE_PRIVATE_KEY", value_name = "PEM_FILE")]
    private_key: Option<PathBuf>,
    /// Directory of the spool and the config file
    #[arg(long, env = "IOTCORE_SPOOL_DIR", value_name = "DIR")]
    spool_dir: Option<PathBuf>,
    /// How to reach the service: https (default) or mqtt
    #[arg(long, env = "IOTCORE_TRANSPORT", value_name = "https|mqtt")]
    transport: Option<String>,
    /// The MQTT bridge's host (by default the endpoint's)
    #[arg(long, env = "IOTCORE_MQTT_HOST", value_name = "HOST")]
    mqtt_host: Option<String>,
    /// The MQTT bridge's TLS port (8883 by default, or 443)
    #[arg(long, env = "IOTCORE_MQTT_PORT", value_name = "PORT")]
    mqtt_port: Option<u16>,
    /// Shift the agent's clock (tests, reproducing a skewed Pi)
    #[arg(
        long,
        hide = true,
        env = "IOTCORE_CLOCK_OFFSET_SECS",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    clock_offset_secs: i64,
}

impl AgentArgs {
    /// The settings file's path and whether it was named (a named file must exist).
    fn config_path(&self) -> (PathBuf, bool) {
        match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(settings::DEFAULT_PATH), false),
        }
    }

    fn overrides(&self, stdin: bool) -> Overrides {
        Overrides {
            endpoint: self.endpoint.clone(),
            project: self.project.clone(),
            region: self.region.clone(),
            registry: self.registry.clone(),
            device: self.device.clone(),
            private_key: self.private_key.clone(),
            spool_dir: self.spool_dir.clone(),
            transport: self.transport.clone(),
            mqtt_host: self.mqtt_host.clone(),
            mqtt_port: self.mqtt_port,
            stdin,
            clock_offset_secs: self.clock_offset_secs,
        }
    }
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    agent: AgentArgs,
    /// Also take readings from standard input, one JSON document per line
    #[arg(long)]
    stdin: bool,
}

#[derive(Debug, clap::Args)]
struct DoctorArgs {
    #[command(flatten)]
    agent: AgentArgs,
    /// The port tried when the MQTT port does not answer (tests: a listener on 443 needs root)
    #[arg(
        long,
        hide = true,
        env = "IOTCORE_DOCTOR_MQTT_FALLBACK_PORT",
        default_value_t = doctor::Options::default().mqtt_fallback_port
    )]
    mqtt_fallback_port: u16,
}

/// A mistake in how the command was called that clap cannot see (an id breaking IoT Core's
/// rules); exits with 2 like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// Parses the command line, runs the command, and turns the outcome into the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run_agent(&args),
        Command::Doctor(args) => doctor(&args),
        Command::Keygen(args) => keygen(&args),
        Command::Send(args) => block_on(send(args))?,
        Command::Config(args) => block_on(config(args))?,
        Command::Token(args) => print_token(&args),
    }
}

/// 2 when the fix is on the caller's side before any request can work; 1 otherwise.
fn exit_code(err: &anyhow::Error) -> u8 {
    let usage_or_unreachable = err.chain().any(|cause| {
        cause.is::<UsageError>()
            || matches!(
                cause.downcast_ref::<ClientError>(),
                Some(ClientError::Unreachable { .. })
            )
    });
    if usage_or_unreachable { 2 } else { 1 }
}

/// One request needs no thread pool: a current-thread runtime keeps a Pi Zero's footprint small.
fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    Ok(runtime()?.block_on(future))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run_agent(args: &RunArgs) -> anyhow::Result<()> {
    init_logs();
    let (path, explicit) = args.agent.config_path();
    let file = settings::read_file(&path, explicit)?;
    let settings = Settings::resolve(file, args.agent.overrides(args.stdin))?;
    let runtime = runtime()?;
    let outcome = runtime.block_on(agent::run(settings, shutdown_signal()));
    // Not a plain drop: a read of standard input may still block a thread, and dropping the
    // runtime would wait for it forever.
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome
}

fn doctor(args: &DoctorArgs) -> anyhow::Result<()> {
    let (path, explicit) = args.agent.config_path();
    let options = doctor::Options {
        mqtt_fallback_port: args.mqtt_fallback_port,
    };
    let overrides = args.agent.overrides(false);
    let report = block_on(doctor::run(&path, explicit, overrides, options))?;
    print!("{}", report.text());
    if report.failed() {
        anyhow::bail!("some checks failed; fix them in order, the first one first");
    }
    println!("all checks passed");
    Ok(())
}

/// Logs to stderr (the journal, under systemd); `RUST_LOG` picks the level, `info` by default.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Resolves on SIGTERM (systemd's stop) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let algorithm = Algorithm::from(args.algorithm);
    let key = DeviceKey::generate(algorithm).context("generating the key")?;
    let written = files::write_key_files(&args.out, &key, now(), args.force)?;
    eprintln!(
        "wrote {} (keep it on the device; mode 0600)\n      {}\n      {}",
        written.private.display(),
        written.public.display(),
        written.cert.display()
    );
    let (format, x509_format) = match algorithm {
        Algorithm::ES256 => ("ES256_PEM", "ES256_X509_PEM"),
        Algorithm::RS256 => ("RSA_PEM", "RSA_X509_PEM"),
    };
    eprintln!(
        "register the device (set --project or INGEST_PROJECT; fill in DEVICE and REGISTRY):"
    );
    println!(
        "ingest devices create DEVICE --registry REGISTRY --public-key {} --format {format}",
        files::shell_quote(&written.public)
    );
    eprintln!(
        "or register the certificate instead: --public-key {} --format {x509_format}",
        files::shell_quote(&written.cert)
    );
    Ok(())
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let device = args.identity.device_name()?;
    let key = load_key(&args.key)?;
    let payload = read_payload(&args.payload)?;
    let token = token::sign(&key, &args.identity.project, now(), args.token_lifetime)?;
    let bridge = IngestClient::new(args.identity.endpoint, device)?;
    if args.state {
        bridge.set_state(&token, &payload).await?;
        eprintln!("state accepted ({} bytes)", payload.len());
    } else {
        let sub_folder = args.sub_folder.as_deref();
        bridge.publish_event(&token, &payload, sub_folder).await?;
        eprintln!("event accepted ({} bytes)", payload.len());
    }
    Ok(())
}

async fn config(args: ConfigArgs) -> anyhow::Result<()> {
    let device = args.identity.device_name()?;
    let key = load_key(&args.key)?;
    let token = token::sign(&key, &args.identity.project, now(), args.token_lifetime)?;
    let bridge = IngestClient::new(args.identity.endpoint, device)?;
    let config = bridge.get_config(&token, args.local_version).await?;
    match &config.cloud_update_time {
        Some(time) => eprintln!("version {} (updated {time})", config.version),
        None => eprintln!("version {}", config.version),
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&config.binary_data)
        .and_then(|()| stdout.flush())
        .context("writing the config to stdout")
}

fn print_token(args: &TokenArgs) -> anyhow::Result<()> {
    ProjectId::parse(&args.project).map_err(|err| UsageError(err.to_string()))?;
    let key = load_key(&args.key)?;
    let token = token::sign(&key, &args.project, now(), args.lifetime)?;
    println!("{token}");
    Ok(())
}

fn load_key(args: &KeyArgs) -> anyhow::Result<DeviceKey> {
    let path = &args.private_key;
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading private key file {}", path.display()))?;
    let key = DeviceKey::from_pem(&text)
        .with_context(|| format!("private key file {}", path.display()))?;
    key.check_algorithm(args.algorithm.map(Algorithm::from))?;
    Ok(key)
}

fn read_payload(args: &PayloadArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(text) = &args.data {
        return Ok(text.clone().into_bytes());
    }
    if let Some(json) = &args.json {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|err| UsageError(format!("--json: {err}")))?;
        return Ok(serde_json::to_vec(&value)?);
    }
    match &args.file {
        Some(path) => read_file(path),
        None => Err(UsageError("give one of --data, --file or --json".into()).into()),
    }
}

fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).context("reading stdin")?;
        return Ok(bytes);
    }
    fs::read(path).with_context(|| format!("reading payload file {}", path.display()))
}

/// `1h`, `20m`, `1h30m`, `PT1H` (ISO 8601), or bare seconds.
fn parse_lifetime(text: &str) -> Result<Lifetime, String> {
    let duration = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let signed: SignedDuration = text
                .parse()
                .map_err(|err| format!("not a duration like 1h or 20m ({err})"))?;
            Duration::try_from(signed).map_err(|_| "a duration must not be negative".to_owned())?
        }
    };
    Lifetime::new(duration).map_err(|err| err.to_string())
}

fn now() -> i64 {
    Timestamp::now().as_second()
}

#[cfg(test)]
mod tests;
