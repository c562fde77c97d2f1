//! The MQTT bridge: IoT Core's MQTT 3.1.1 protocol, so firmware written for
//! `mqtt.googleapis.com` connects with only a new host name and CA. One tokio task per
//! connection reads packets with `rumqttc`'s `mqttbytes::v4` codec and drives the same
//! [`Bridge`] as HTTP; what a device may do and what it is told is in the README's MQTT table.
//!
//! Three ways in, one session loop: TLS on `--mqtt-addr` (8883; IoT Core also used 443), plain
//! TCP on `--mqtt-plain-addr` (behind a TLS-terminating load balancer, and for tests), and
//! WebSocket at `GET /mqtt` on the device HTTP port (subprotocol `mqtt`), which is what Cloud Run
//! can host. All share one connection cap; a connection that has not completed its TLS handshake
//! and CONNECT within the connect timeout is closed.

mod connect;
mod queued;
mod session;
pub mod tls;
mod topics;
pub mod websocket;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use self::connect::connack;
use self::session::Live;
use crate::bridge::Bridge;
use crate::c2d::Fleet;
use crate::per_address::PerAddress;
use crate::proxy_protocol;
use crate::telemetry::Metrics;

/// Takes the next whole packet out of `buf` as a connection's reader does (the fixed header's
/// reserved flags checked, a packet above `max` bytes refused): `Ok(None)` until one is whole, the
/// reader's error text when the bytes can never be one. An entry point for the fuzz targets in
/// `fuzz/`; the session reads with the same function.
pub fn take_packet(buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, String> {
    wire::take_packet(buf, max).map_err(|err| err.to_string())
}

/// The protocol level a CONNECT at the start of `buf` asks for, as the listener reads it before
/// parsing (see `wire::connect_level`). For the fuzz targets in `fuzz/`.
pub fn connect_level(buf: &[u8]) -> Option<u8> {
    wire::connect_level(buf)
}

/// Appends one packet's bytes to `out` as the session writes them. For the fuzz targets in
/// `fuzz/`.
pub fn encode_packet(packet: &Packet, out: &mut BytesMut) -> std::io::Result<()> {
    wire::encode(packet, out)
}

/// The MQTT bridge's limits and timings.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Connections (TLS, plain and WebSocket together) served at once.
    pub max_connections: usize,
    /// Time from accepting a connection to its CONNECT (TLS handshake included).
    pub connect_timeout: Duration,
    /// A connection with nothing heard for this long is closed (IoT Core: 20 minutes).
    pub idle_timeout: Duration,
    /// Messages a connection may publish per second (IoT Core: 100).
    pub messages_per_second: u32,
    /// How long an unacknowledged QoS 1 config or command waits before it is sent again.
    pub config_resend: Duration,
    /// How long a QoS 1 command is sent again without a PUBACK before its sender is told the
    /// device did not acknowledge it.
    pub command_timeout: Duration,
    /// Messages of one connection handed to the bridge at once; the socket is not read while
    /// this many wait, so a fast publisher is slowed, not buffered without bound.
    pub max_in_flight: usize,
    /// Largest packet accepted (an event payload at its limit plus its topic).
    pub max_packet_bytes: usize,
    /// How long PUBACKs still owed may be waited for after shutdown begins.
    pub drain_timeout: Duration,
    /// Devices one gateway connection may attach at once (IoT Core: 1,000).
    pub max_attached_devices: usize,
    /// Connections one source address may hold on a listener (0: no limit); more are closed as
    /// they are accepted.
    pub max_connections_per_address: usize,
    /// Each TCP connection starts with a PROXY protocol header (v1 or v2) naming the device's
    /// address, as a proxy load balancer sends it; one without is closed.
    pub proxy_protocol: bool,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(20 * 60),
            messages_per_second: 100,
            config_resend: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            max_in_flight: 64,
            max_packet_bytes: 256 * 1024 + 4096,
            drain_timeout: Duration::from_secs(8),
            max_attached_devices: 1000,
            max_connections_per_address: 0,
            proxy_protocol: false,
        }
    }
}

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    bridge: Bridge,
    fleet: Fleet,
    settings: MqttSettings,
    shutdown: watch::Receiver<bool>,
}

/// The MQTT bridge: listeners and WebSocket connections hand it their streams. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MqttBridge {
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    tasks: TaskTracker,
    metrics: Metrics,
}

impl MqttBridge {
    /// A bridge serving devices through `bridge`, reachable by the admin API through
    /// `fleet`; connections close when `shutdown` turns true.
    pub fn new(
        bridge: Bridge,
        fleet: Fleet,
        settings: MqttSettings,
        metrics: Metrics,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(settings.max_connections.max(1))),
            shared: Arc::new(Shared {
                bridge,
                fleet,
                settings,
                shutdown,
            }),
            tasks: TaskTracker::new(),
            metrics,
        }
    }

    /// Accepts connections on `listener` until shutdown, each wrapped in TLS when `tls` is set.
    pub async fn serve(
        &self,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<()> {
        let mut shutdown = self.shared.shutdown.clone();
        let per_address = PerAddress::new(self.shared.settings.max_connections_per_address);
        loop {
            // Beyond the cap, connections wait in the kernel's backlog.
            let permit = tokio::select! {
                permit = self.permits.clone().acquire_owned() => permit,
                () = stopping(&mut shutdown) => return Ok(()),
            };
            let Ok(permit) = permit else { return Ok(()) };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // EMFILE and friends pass; back off briefly instead of spinning.
                        tracing::warn!(%err, "accepting an MQTT connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = stopping(&mut shutdown) => return Ok(()),
            };
            let _ = stream.set_nodelay(true);
            let bridge = self.clone();
            let tls = tls.clone();
            let per_address = per_address.clone();
            self.tasks.spawn(async move {
                bridge
                    .connection(stream, peer, tls, permit, &per_address)
                    .await;
            });
        }
    }

    /// One accepted TCP connection: its source (from the PROXY header when configured), the
    /// per-address cap, then TLS when `tls` is set, all within the connect deadline.
    async fn connection(
        &self,
        mut stream: tokio::net::TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
        permit: OwnedSemaphorePermit,
        per_address: &PerAddress,
    ) {
        let deadline = tokio::time::Instant::now() + self.shared.settings.connect_timeout;
        let source = if self.shared.settings.proxy_protocol {
            let header = proxy_protocol::read_source(&mut stream);
            match tokio::time::timeout_at(deadline, header).await {
                Ok(Ok(source)) => source.unwrap_or(peer),
                Ok(Err(why)) => {
                    tracing::debug!(%peer, %why, "MQTT connection closed: no valid PROXY header");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "MQTT connection closed: no PROXY header in time");
                    return;
                }
            }
        } else {
            peer
        };
        // Refused and logged (at most once a minute) by `take`.
        let Some(_slot) = per_address.take(source.ip()) else {
            return;
        };
        match tls {
            Some(acceptor) => {
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => self.run(stream, deadline, permit).await,
                    Ok(Err(err)) => tracing::debug!(%source, %err, "MQTT TLS handshake failed"),
                    Err(_) => tracing::debug!(%source, "MQTT TLS handshake timed out"),
                }
            }
            None => self.run(stream, deadline, permit).await,
        }
    }

    /// Serves one connection of any transport: CONNECT within `deadline`, then the session.
    pub(crate) async fn run<S>(
        &self,
        stream: S,
        deadline: tokio::time::Instant,
        _permit: OwnedSemaphorePermit,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.metrics.connection_opened();
        let (mut reader, mut writer) = tokio::io::split(stream);
        // Small to start: most connections sit idle, and the buffer grows for big packets.
        let mut buf = BytesMut::with_capacity(256);
        let connect = match tokio::time::timeout_at(
            deadline,
            read_connect(&mut reader, &mut buf, self.shared.settings.max_packet_bytes),
        )
        .await
        {
            Ok(Ok(connect)) => connect,
            Ok(Err(answer)) => {
                if let Some(code) = answer {
                    refuse(&mut writer, code).await;
                }
                self.metrics.connection_closed();
                return;
            }
            Err(_) => {
                tracing::debug!("no CONNECT within the connect timeout; closing");
                self.metrics.connection_closed();
                return;
            }
        };
        match connect::admit(&self.shared.bridge, connect).await {
            Ok(admitted) => {
                let mut scratch = BytesMut::new();
                let accepted = connack(ConnectReturnCode::Success);
                if wire::write_packet(&mut writer, &mut scratch, &accepted)
                    .await
                    .is_ok()
                {
                    Live::new(reader, writer, buf, self.shared.clone(), admitted)
                        .await
                        .run()
                        .await;
                }
            }
            Err(refused) => {
                tracing::debug!(reason = refused.refusal.reason, "MQTT CONNECT refused");
                refuse(&mut writer, refused.code).await;
            }
        }
        self.metrics.connection_closed();
    }

    /// Serves one connection that arrived some other way (an in-memory pipe in the fuzz target,
    /// a stream a test built), within the connection cap: CONNECT within the connect timeout,
    /// then the session. Returns when the connection is over; `None` at once if the cap is full.
    pub async fn serve_stream<S>(&self, stream: S) -> Option<()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let permit = self.try_permit()?;
        let deadline = tokio::time::Instant::now() + self.shared.settings.connect_timeout;
        self.run(stream, deadline, permit).await;
        Some(())
    }

    /// Takes a connection slot for a WebSocket, if one is free.
    pub(crate) fn try_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// The connect timeout, for the WebSocket handler.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.shared.settings.connect_timeout
    }

    /// Waits for every connection task to end (each closes by itself once shutdown began).
    pub async fn wait(&self, limit: Duration) {
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("MQTT connections still open at the end of the drain were abandoned");
        }
    }

    /// Tracks a connection task that did not come from a listener (a WebSocket).
    pub(crate) fn track<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }
}

/// Reads the first packet, which must be a CONNECT. `Err(Some(code))`: answer with that CONNACK
/// code; `Err(None)`: close without a word (not MQTT, or the client went away).
async fn read_connect<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<rumqttc::mqttbytes::v4::Connect, Option<ConnectReturnCode>> {
    use tokio::io::AsyncReadExt;
    // Wait for the CONNECT's header, to look at its protocol level before the codec does.
    loop {
        if buf.first().is_some_and(|first| first >> 4 != 1) {
            return Err(None);
        }
        if let Some(level) = wire::connect_level(buf) {
            if level != 4 {
                tracing::debug!(level, "MQTT CONNECT with an unsupported protocol level");
                return Err(Some(ConnectReturnCode::RefusedProtocolVersion));
            }
            break;
        }
        match reader.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(_) => {}
        }
    }
    match wire::read_packet(reader, buf, max).await {
        Ok(Packet::Connect(connect)) => Ok(connect),
        Ok(_) => Err(None),
        Err(err) => {
            tracing::debug!(%err, "unreadable MQTT CONNECT");
            Err(None)
        }
    }
}

/// Resolves once shutdown has begun (the flag's guard is not held across an await).
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn refuse<W: AsyncWrite + Unpin>(writer: &mut W, code: ConnectReturnCode) {
    let mut scratch = BytesMut::new();
    let _ = wire::write_packet(writer, &mut scratch, &connack(code)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
}
