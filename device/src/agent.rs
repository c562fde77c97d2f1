//! `iotcore-device run`: the long-running agent. It opens the spool, starts the group commit,
//! the sender, the config sync (polled over HTTPS; over MQTT the connection task, which the
//! service pushes config and commands down) and the readings' producers (sensors, a command,
//! stdin), and
//! runs until the `shutdown` future resolves (SIGTERM from systemd, Ctrl-C). Then the producers
//! stop, the last readings are fsynced, and whatever was not yet sent stays in the spool for the
//! next start.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shared::jwt::Algorithm;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::commands::{self, CommandSync};
use crate::configsync::ConfigSync;
use crate::http::IngestClient;
use crate::keys::DeviceKey;
use crate::mqtt::connection::{self, Connector, Endpoint};
use crate::mqtt::gateway::Child;
use crate::mqtt::websocket::WsEndpoint;
use crate::readings::{self, Devices, Intake};
use crate::sender::{Health, Held, Sender};
use crate::sensors;
use crate::settings::{Settings, TransportKind};
use crate::spool::Spool;
use crate::spool::commit::Committer;
use crate::tls;
use crate::token::TokenSource;
use crate::transport::Transport;

/// How long in-flight work may take to wind down after the stop signal.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the agent until `shutdown` resolves.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let clock = Clock::with_offset(settings.clock_offset_secs);
    let key = load_key(&settings.private_key, settings.algorithm)?;
    let tokens = TokenSource::new(key, &settings.project, settings.token_lifetime, clock);
    let (transport, connector) = transport(&settings, &tokens)?;
    let transport = Arc::new(transport);
    let spool_dir = settings.spool_dir.join("spool");
    let spool = Arc::new(
        Spool::open(&spool_dir, settings.spool_max_bytes)
            .with_context(|| format!("opening the spool in {}", spool_dir.display()))?,
    );
    tracing::info!(
        device = %settings.device,
        endpoint = %settings.endpoint,
        transport = ?settings.transport,
        gateway_devices = settings.gateway_devices.len(),
        backlog = spool.stats().pending,
        "agent started"
    );
    let (committer, signals, writer) = Committer::start(spool.clone(), settings.sync_interval);
    let (stop, stopped) = watch::channel(false);
    let mut services = JoinSet::new();
    let sender = Sender {
        spool: spool.clone(),
        transport: transport.clone(),
        tokens: tokens.clone(),
        max_backoff: settings.max_backoff,
        health: Arc::new(Health::default()),
        held: Arc::new(Held::default()),
    };
    services.spawn(sender.run(signals, settings.concurrency, stopped.clone()));
    let config_sync = settings.config_poll.map(|interval| ConfigSync {
        transport: transport.clone(),
        tokens: tokens.clone(),
        file: settings.config_file.clone(),
        hook: settings.config_hook.clone(),
        interval,
        spool: spool.clone(),
    });
    match connector {
        None => start_polling(
            &settings,
            config_sync,
            &transport,
            &tokens,
            &stopped,
            &mut services,
        ),
        Some(connector) => start_pushed(&settings, config_sync, connector, &stopped, &mut services),
    }
    let devices = Devices {
        own: settings.device.device.to_string(),
        children: Arc::new(
            settings
                .gateway_devices
                .iter()
                .map(|child| child.id.clone())
                .collect(),
        ),
    };
    let intake = Intake {
        committer,
        sub_folder: settings.sub_folder.clone(),
        clock,
        devices,
    };
    let producers = start_producers(&settings, intake);

    shutdown.await;
    tracing::info!("stopping");
    drop(producers);
    let _ = stop.send(true);
    let wind_down = async {
        let _ = writer.await;
        while services.join_next().await.is_some() {}
    };
    if tokio::time::timeout(STOP_TIMEOUT, wind_down).await.is_err() {
        tracing::warn!("stopped without waiting longer for requests in flight");
    }
    tracing::info!(backlog = spool.stats().pending, "stopped");
    Ok(())
}

/// Over HTTPS: the config and commands are polled.
fn start_polling(
    settings: &Settings,
    config_sync: Option<ConfigSync>,
    transport: &Arc<Transport>,
    tokens: &TokenSource,
    stopped: &watch::Receiver<bool>,
    services: &mut JoinSet<()>,
) {
    if let Some(sync) = config_sync {
        services.spawn(sync.run(stopped.clone()));
    }
    if let Some(hook) = settings.commands_hook.clone() {
        let sync = CommandSync {
            transport: transport.clone(),
            tokens: tokens.clone(),
            hook,
            timeout: settings.commands_timeout,
            interval: settings.commands_poll,
            last_file: settings.spool_dir.join("commands.last"),
        };
        services.spawn(sync.run(stopped.clone()));
    }
}

/// Over MQTT: the connection task subscribes to what is wanted and hands each push on.
fn start_pushed(
    settings: &Settings,
    config_sync: Option<ConfigSync>,
    mut connector: Connector,
    stopped: &watch::Receiver<bool>,
    services: &mut JoinSet<()>,
) {
    if let Some(sync) = config_sync {
        let configs = connector.configs();
        services.spawn(sync.run_pushed(configs, stopped.clone()));
    }
    if let Some(hook) = settings.commands_hook.clone() {
        let pushed = connector.commands();
        let timeout = settings.commands_timeout;
        services.spawn(commands::run_pushed(hook, timeout, pushed, stopped.clone()));
    }
    services.spawn(connector.run(stopped.clone()));
}

/// The way to the service, and over MQTT the task that keeps the connection up.
fn transport(
    settings: &Settings,
    tokens: &TokenSource,
) -> anyhow::Result<(Transport, Option<Connector>)> {
    let children = gateway_children(settings)?;
    if settings.transport == TransportKind::Https {
        let children = children.into_iter().map(|c| (c.id, c.tokens)).collect();
        let client = ingest_client(settings)?;
        return Ok((Transport::Https(client, Arc::new(children)), None));
    }
    let ca = read_ca(settings)?;
    let tls = tls::client_config(ca.as_deref()).context("setting up TLS for MQTT")?;
    let websocket = (settings.transport == TransportKind::MqttWs)
        .then(|| settings.websocket_url())
        .flatten()
        .map(|url| WsEndpoint {
            url,
            tls: tls.clone(),
        });
    let endpoint = Endpoint {
        host: settings.mqtt.host.clone(),
        port: settings.mqtt.port,
        keepalive: settings.mqtt.keepalive,
        tls,
        websocket,
    };
    // Every sender worker, the state report and each attach may await a PUBACK at once.
    let inflight = settings.concurrency + 1 + children.len();
    let inflight = u16::try_from(inflight).unwrap_or(u16::MAX);
    let (link, mut connector) = connection::link(
        &settings.device,
        endpoint,
        tokens.clone(),
        settings.max_backoff,
        inflight,
        settings.mqtt.messages_per_second,
    );
    connector.gateway(children);
    Ok((Transport::Mqtt(link), Some(connector)))
}

/// The devices behind this gateway, each with its own tokens when the settings hold its key
/// (signed like the gateway's: same project, lifetime and clock).
fn gateway_children(settings: &Settings) -> anyhow::Result<Vec<Child>> {
    let mut children = Vec::new();
    for device in &settings.gateway_devices {
        let tokens = match &device.private_key {
            Some(path) => {
                let key = load_key(path, None).with_context(|| {
                    format!("the key of device `{}` (gateway.devices)", device.id)
                })?;
                Some(TokenSource::new(
                    key,
                    &settings.project,
                    settings.token_lifetime,
                    Clock::with_offset(settings.clock_offset_secs),
                ))
            }
            None => None,
        };
        children.push(Child {
            id: device.id.clone(),
            tokens,
        });
    }
    Ok(children)
}

pub(crate) fn read_ca(settings: &Settings) -> anyhow::Result<Option<Vec<u8>>> {
    match &settings.ca_file {
        Some(path) => {
            Ok(Some(std::fs::read(path).with_context(|| {
                format!("reading CA file {}", path.display())
            })?))
        }
        None => Ok(None),
    }
}

/// Starts each configured producer; dropping the set stops them, and with them the spool's
/// writer once the last reading is fsynced.
fn start_producers(settings: &Settings, intake: Intake) -> JoinSet<()> {
    let mut producers = JoinSet::new();
    if settings.sensors {
        let sensors = sensors::of_this_machine(&settings.spool_dir);
        producers.spawn(sensors::run(intake.clone(), sensors, settings.interval));
    }
    if let Some(command) = &settings.command {
        producers.spawn(readings::from_command(
            intake.clone(),
            command.clone(),
            settings.command_interval,
        ));
    }
    if settings.stdin {
        producers.spawn(async move {
            match readings::from_stdin(intake).await {
                Ok(count) => tracing::info!(
                    count,
                    "standard input closed; all its readings are in the spool"
                ),
                Err(err) => tracing::error!(error = %err, "reading standard input failed"),
            }
        });
    }
    producers
}

/// The private key at `path`, checked against the algorithm the settings ask for.
pub fn load_key(path: &Path, algorithm: Option<Algorithm>) -> anyhow::Result<DeviceKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading private key file {}", path.display()))?;
    let key = DeviceKey::from_pem(&text)
        .with_context(|| format!("private key file {}", path.display()))?;
    key.check_algorithm(algorithm)?;
    Ok(key)
}

/// The HTTPS bridge client, with the settings' CA file if any.
pub fn ingest_client(settings: &Settings) -> anyhow::Result<IngestClient> {
    let ca = read_ca(settings)?;
    Ok(IngestClient::with_ca(
        settings.endpoint.clone(),
        settings.device.clone(),
        ca.as_deref(),
    )?)
}
