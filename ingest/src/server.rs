//! `ingest serve`: opens the registry store and the sink, binds the device bridge and the admin
//! API (each on its own listener, as the role asks), and serves until the `shutdown` future
//! resolves. Then it stops accepting, drains in-flight requests within a bound, writes pending
//! device bookkeeping and flushes the Pub/Sub publishers. The caller (main, or a test) decides
//! when to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shared::clock::SystemClock;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth::Authenticator;
use crate::bridge::{Bridge, BridgeParts, Limits, Rate};
use crate::c2d::bus::{Bus, InProcess};
use crate::c2d::fleet::new_instance_id;
use crate::c2d::pubsub::{PubSubBus, PubSubBusSettings};
use crate::c2d::{ConfigCache, Delivery, Fleet, FleetParts};
use crate::config::{Listen, Role, ServeArgs, SinkUrl, StoreUrl};
use crate::http::admin::{self, AdminAccess, AdminState};
use crate::http::console::{self, ConsoleSettings};
use crate::http::serve::{ServeOptions, serve};
use crate::http::{device, health_routes};
use crate::mqtt::tls::{self, TlsSource};
use crate::mqtt::{MqttBridge, MqttSettings, websocket};
use crate::registry::RegistryStore;
use crate::registry::firestore::{FirestoreSettings, FirestoreStore};
use crate::registry::sqlite::SqliteStore;
use crate::sink::Sink;
use crate::sink::file::FileSink;
use crate::sink::pubsub::{PubSubSettings, PubSubSink};
use crate::telemetry::Metrics;

/// Opens the configured registry store.
pub async fn open_registry(args: &ServeArgs) -> anyhow::Result<Arc<dyn RegistryStore>> {
    match &args.registry {
        StoreUrl::Sqlite(path) => {
            let store = SqliteStore::open(path)
                .await
                .with_context(|| format!("opening the SQLite registry at {}", path.display()))?;
            Ok(Arc::new(store))
        }
        StoreUrl::Firestore { project, database } => {
            let settings = FirestoreSettings {
                project: project.clone(),
                database: database.clone(),
                emulator_host: args.firestore_emulator_host.clone(),
            };
            let store = FirestoreStore::open(&settings).await.with_context(|| {
                format!("opening the Firestore registry projects/{project}/databases/{database}")
            })?;
            Ok(Arc::new(store))
        }
    }
}

/// Opens the configured sink.
pub async fn open_sink(args: &ServeArgs) -> anyhow::Result<Arc<dyn Sink>> {
    match args.sink() {
        SinkUrl::File(path) => {
            let sink = FileSink::open(&path)
                .await
                .with_context(|| format!("opening the event file {}", path.display()))?;
            tracing::info!(path = %path.display(), "accepted events go to a local file (no Pub/Sub configured)");
            Ok(Arc::new(sink))
        }
        SinkUrl::PubSub => {
            let settings = PubSubSettings {
                emulator_host: args.pubsub_emulator_host.clone(),
                publish_timeout: Duration::from_secs(args.publish_timeout_secs),
                batch_delay: Duration::from_millis(args.pubsub_batch_delay_ms),
                ..PubSubSettings::default()
            };
            match &settings.emulator_host {
                Some(host) => tracing::info!(%host, "accepted events go to the Pub/Sub emulator"),
                None => tracing::info!("accepted events go to Google Cloud Pub/Sub"),
            }
            Ok(Arc::new(PubSubSink::new(settings).await?))
        }
    }
}

/// Runs the service until `shutdown` resolves, then drains and flushes.
pub async fn run(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let access = match args.role {
        Role::Device => None,
        Role::All | Role::Admin => Some(args.admin_access()?),
    };
    if let Some(AdminAccess::Tokens(tokens)) = &access {
        tokens.watch();
    }
    let registry = open_registry(&args).await?;
    let auth = Authenticator::new(registry.clone(), args.token_cache_capacity)
        .with_freshness(args.registry_freshness());
    let (stop, stopped) = watch::channel(false);
    let mut servers = JoinSet::new();
    let mut device_side = None;
    let (fleet, incoming) = open_fleet(&args, registry.clone(), auth.clone()).await?;
    let fleet_task = fleet.spawn(incoming, wait_for(stopped.clone()));

    if args.role != Role::Admin {
        let sink = open_sink(&args).await?;
        let metrics = Metrics::new();
        let bridge = Bridge::new(BridgeParts {
            registry: registry.clone(),
            auth: auth.clone(),
            sink: sink.clone(),
            metrics: metrics.clone(),
            limits: limits(&args),
            clock: Arc::new(SystemClock),
            configs: fleet.delivery().config_cache(),
        });
        let flusher = bridge.spawn_activity_flusher(
            Duration::from_secs(args.activity_flush_secs),
            wait_for(stopped.clone()),
        );
        let mqtt = MqttBridge::new(
            bridge.clone(),
            fleet.clone(),
            mqtt_settings(&args),
            metrics.clone(),
            stopped.clone(),
        );
        let long_poll = device::LongPoll::new(
            fleet.delivery().config_waiters(),
            Duration::from_secs(args.request_timeout_secs),
        );
        let others = websocket::router(mqtt.clone()).merge(health_routes(registry.clone()));
        let app = device::service(bridge, long_poll, others);
        // MQTT first: the device bridge's line then tells a reader every device listener is up.
        spawn_mqtt_listeners(&args, &mqtt, &mut servers).await?;
        let listener = bind(args.device_addr(), "device bridge", "http").await?;
        servers.spawn(serve(
            listener,
            app,
            options(&args, Some(metrics)),
            wait_for(stopped.clone()),
        ));
        device_side = Some((flusher, sink, mqtt));
    }
    if let Some(access) = access {
        let api = admin::router(AdminState {
            registry: registry.clone(),
            auth,
            access: access.clone(),
            fleet,
        });
        // The console calls the admin API in process, so it passes the API's own checks.
        let console = ConsoleSettings {
            secure_cookies: !args.admin_addr.ip().is_loopback(),
        };
        let app = console::router(api.clone(), &access, console)
            .merge(api)
            .merge(health_routes(registry));
        let listener = bind(args.admin_addr, "admin API", "http").await?;
        // Operators' tools keep pooled connections for a while (Google's client libraries
        // through `requests`), and a close racing the reuse of one fails a call that is not
        // retried: the admin API, which is loopback or token- or IAM-guarded, keeps idle
        // connections a minute.
        let admin_options = ServeOptions {
            head_timeout: Duration::from_secs(args.request_head_timeout_secs.max(60)),
            ..options(&args, None)
        };
        servers.spawn(serve(listener, app, admin_options, wait_for(stopped)));
    }

    let outcome = wait_until_stopped(&mut servers, shutdown).await;
    let _ = stop.send(true);
    while servers.join_next().await.is_some() {}
    if let Some((flusher, sink, mqtt)) = device_side {
        // Sessions owe PUBACKs only for messages the sink took, so they end before it flushes.
        mqtt.wait(Duration::from_secs(args.drain_timeout_secs + 1))
            .await;
        let _ = flusher.await;
        sink.flush().await;
    }
    let _ = fleet_task.await;
    tracing::info!("stopped");
    outcome
}

/// This instance's view of the fleet: its name, and the Pub/Sub delivery bus when a topic is
/// configured (else the in-process one).
async fn open_fleet(
    args: &ServeArgs,
    registry: Arc<dyn RegistryStore>,
    auth: Authenticator,
) -> anyhow::Result<(
    Fleet,
    tokio::sync::mpsc::Receiver<crate::c2d::bus::Envelope>,
)> {
    let instance = match &args.instance_id {
        Some(name) => check_instance_id(name)?,
        None => new_instance_id(),
    };
    let (bus, incoming): (Arc<dyn Bus>, _) = match &args.delivery_topic {
        Some(topic) => {
            let settings = PubSubBusSettings {
                topic: topic.clone(),
                emulator_host: args.pubsub_emulator_host.clone(),
                instance: instance.clone(),
            };
            let (bus, incoming) = PubSubBus::open(&settings).await?;
            (Arc::new(bus), incoming)
        }
        None => (Arc::new(InProcess), tokio::sync::mpsc::channel(1).1),
    };
    println!("instance: {instance}");
    let fleet = Fleet::new(FleetParts {
        instance,
        // Configs are cached as long as tokens: both are kept right by the same notices.
        delivery: Delivery::new(ConfigCache::new(Duration::from_secs(
            args.registry_freshness(),
        ))),
        registry,
        auth,
        bus,
        lease: Duration::from_secs(args.presence_lease_secs.max(3)),
        command_timeout: Duration::from_secs(args.mqtt.mqtt_command_timeout_secs.max(1)),
    });
    Ok((fleet, incoming))
}

/// An instance name must fit in a Pub/Sub subscription name: a letter first, then letters,
/// digits and `-._~+%`, at most 100 characters.
fn check_instance_id(name: &str) -> anyhow::Result<String> {
    let valid = name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~+%".contains(c));
    anyhow::ensure!(
        valid,
        "--instance-id `{name}` must start with a letter and hold only letters, digits and \
         -._~+% (at most 100 characters): it becomes part of a Pub/Sub subscription name"
    );
    Ok(name.to_owned())
}

/// Waits for the shutdown signal, or for a server to fail first.
async fn wait_until_stopped(
    servers: &mut JoinSet<std::io::Result<()>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::select! {
        () = shutdown => Ok(()),
        Some(ended) = servers.join_next() => match ended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(anyhow::Error::new(err).context("a listener failed")),
            Err(err) => Err(anyhow::Error::new(err).context("a listener task panicked")),
        },
    }
}

/// Binds the MQTT listeners the settings ask for: TLS (with the operator's certificate or the
/// embedded CA's) and plain TCP.
async fn spawn_mqtt_listeners(
    args: &ServeArgs,
    mqtt: &MqttBridge,
    servers: &mut JoinSet<std::io::Result<()>>,
) -> anyhow::Result<()> {
    let settings = &args.mqtt;
    if let Listen::At(addr) = settings.mqtt_addr {
        let source = match (&settings.mqtt_tls_cert, &settings.mqtt_tls_key) {
            (Some(cert), Some(key)) => TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => TlsSource::Embedded(settings.mqtt_tls_dir.clone()),
        };
        let tls = tls::prepare(&source).context("preparing TLS for the MQTT bridge")?;
        let listener = bind(addr, "MQTT bridge", "mqtts").await?;
        if let Some(ca) = &tls.ca_file {
            println!("MQTT CA certificate: {}", ca.display());
        }
        let mqtt = mqtt.clone();
        servers.spawn(async move { mqtt.serve(listener, Some(tls.acceptor)).await });
    }
    if let Some(addr) = settings.mqtt_plain_addr {
        let listener = bind(addr, "MQTT bridge (plain TCP)", "mqtt").await?;
        let mqtt = mqtt.clone();
        servers.spawn(async move { mqtt.serve(listener, None).await });
    }
    Ok(())
}

fn mqtt_settings(args: &ServeArgs) -> MqttSettings {
    let limits = limits(args);
    MqttSettings {
        max_connections: args.mqtt.mqtt_max_connections,
        connect_timeout: Duration::from_secs(args.mqtt.mqtt_connect_timeout_secs),
        idle_timeout: Duration::from_secs(args.mqtt.mqtt_idle_timeout_secs),
        messages_per_second: args.mqtt.mqtt_messages_per_second,
        config_resend: Duration::from_secs(args.mqtt.mqtt_config_resend_secs.max(1)),
        command_timeout: Duration::from_secs(args.mqtt.mqtt_command_timeout_secs.max(1)),
        max_packet_bytes: limits.max_event_bytes.max(limits.max_state_bytes) + 4096,
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        max_connections_per_address: args.max_connections_per_address(),
        proxy_protocol: args.mqtt.mqtt_proxy_protocol,
        ..MqttSettings::default()
    }
}

fn limits(args: &ServeArgs) -> Limits {
    Limits {
        http_requests: Rate::per_minute(args.events_per_minute),
        ..Limits::default()
    }
}

fn options(args: &ServeArgs, metrics: Option<Metrics>) -> ServeOptions {
    ServeOptions {
        max_connections: args.max_connections,
        max_connections_per_address: args.max_connections_per_address(),
        head_timeout: Duration::from_secs(args.request_head_timeout_secs),
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        metrics,
    }
}

/// Binds a listener and announces its address on stdout, where scripts and tests read the port.
async fn bind(addr: SocketAddr, what: &str, scheme: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} to {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    println!("{what} listening on {scheme}://{local}");
    tracing::info!(addr = %local, "{what} listening");
    Ok(listener)
}

/// A future that resolves once the stop flag is raised.
async fn wait_for(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Resolves on SIGTERM (Cloud Run, systemd) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
