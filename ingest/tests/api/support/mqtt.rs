//! Test helpers for the MQTT bridge: an [`MqttApp`] serving plain MQTT on `127.0.0.1:0` beside
//! the admin and HTTP device APIs of a [`DeviceApp`] (same store, sink and delivery), and a
//! [`Raw`] client that writes and reads single packets with rumqttc's own codec, for the rules a
//! well-behaved client library would never break (QoS 2, MQTT 5, no PUBACK for a config).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ingest::bridge::Limits;
use ingest::mqtt::{MqttBridge, MqttSettings};
use ingest::sink::Sink;
use ingest::telemetry::Metrics;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, Subscribe, SubscribeFilter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::device::{DeviceApp, device_path};
use super::{PROJECT, REGION};

/// How long a test waits for a packet it expects.
pub const WAIT: Duration = Duration::from_secs(10);

/// The MQTT bridge beside the admin and device APIs.
pub struct MqttApp {
    /// Admin API, HTTP device API, bridge, store and sink file.
    pub app: DeviceApp,
    /// Where plain MQTT listens.
    pub addr: SocketAddr,
    /// The bridge itself.
    pub mqtt: MqttBridge,
    stop: watch::Sender<bool>,
}

impl MqttApp {
    /// MQTT with these settings over a file sink; registry reads are not cached.
    pub async fn spawn(settings: MqttSettings) -> Self {
        Self::spawn_with_sink(settings, None).await
    }

    /// MQTT with these settings over `sink` (`None`: the file sink).
    pub async fn spawn_with_sink(settings: MqttSettings, sink: Option<Arc<dyn Sink>>) -> Self {
        let limits = Limits {
            registry_cache_ttl: Duration::ZERO,
            ..Limits::default()
        };
        let app = DeviceApp::spawn_with_sink(limits, sink).await;
        let (stop, stopped) = watch::channel(false);
        let mqtt = MqttBridge::new(
            app.bridge.clone(),
            app.fleet.clone(),
            settings,
            Metrics::default(),
            stopped,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = mqtt.clone();
        tokio::spawn(async move { serving.serve(listener, None).await });
        Self {
            app,
            addr,
            mqtt,
            stop,
        }
    }

    /// Begins shutdown: listeners stop, connections drain and close.
    pub fn shut_down(&self) {
        let _ = self.stop.send(true);
    }

    /// The registry `reg` (events to `projects/demo-project/topics/events`) with the RSA device
    /// `dev` in it; returns the device's numeric id.
    pub async fn device(&self, reg: &str, dev: &str) -> String {
        let (status, _) = self.app.admin.get(&format!("/registries/{reg}")).await;
        if status != reqwest::StatusCode::OK {
            self.app.admin.create_registry(reg).await;
        }
        let device = self
            .app
            .admin
            .create_device(reg, dev, "RSA_PEM", "rsa_public")
            .await;
        device["numId"].as_str().unwrap().to_owned()
    }

    /// The device as the admin API shows it, after writing pending bookkeeping.
    pub async fn device_record(&self, reg: &str, dev: &str) -> serde_json::Value {
        self.app.bridge.flush_activity().await;
        self.app.device(reg, dev).await
    }

    /// `:sendCommandToDevice` through the admin API with `body`, answered as status and JSON.
    pub async fn send_command(
        &self,
        reg: &str,
        dev: &str,
        body: serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let path = format!("{}:sendCommandToDevice", device_path(reg, dev));
        self.app.admin.post(&path, body).await
    }

    /// Sets a new config through the admin API; returns its version.
    pub async fn set_config(&self, reg: &str, dev: &str, data: &[u8]) -> u64 {
        let body = serde_json::json!({"binaryData": shared::proto3::encode_base64(data)});
        let (status, body) = self
            .app
            .admin
            .modify_config(&device_path(reg, dev), body)
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        body["version"].as_str().unwrap().parse().unwrap()
    }
}

/// The client id IoT Core expects: the device's full path.
pub fn client_id(reg: &str, dev: &str) -> String {
    format!("projects/{PROJECT}/locations/{REGION}/registries/{reg}/devices/{dev}")
}

/// A CONNECT as IoT Core's guides send it: clean session, any username, the JWT as password.
pub fn connect_packet(client_id: &str, token: &str, keep_alive: u16) -> Packet {
    let mut connect = Connect::new(client_id);
    connect.keep_alive = keep_alive;
    connect.set_login("unused", token);
    Packet::Connect(connect)
}

/// One TCP connection speaking raw packets.
pub struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// Opens a connection, sending nothing.
    pub async fn open(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    /// Connects as `client_id` with `token`, returning the CONNACK code.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        token: &str,
        keep_alive: u16,
    ) -> (Self, ConnectReturnCode) {
        let mut raw = Self::open(addr).await;
        raw.send(&connect_packet(client_id, token, keep_alive))
            .await;
        match raw.recv().await {
            Some(Packet::ConnAck(ack)) => (raw, ack.code),
            other => panic!("expected a CONNACK, got {other:?}"),
        }
    }

    /// Connects and asserts the CONNECT was accepted.
    pub async fn connected(addr: SocketAddr, client_id: &str, token: &str) -> Self {
        let (raw, code) = Self::connect(addr, client_id, token, 60).await;
        assert_eq!(code, ConnectReturnCode::Success);
        raw
    }

    /// Connects with `token` and subscribes to the device's commands at `qos`; the SUBACK is
    /// read.
    pub async fn subscribed_to_commands(
        addr: SocketAddr,
        reg: &str,
        dev: &str,
        token: &str,
        qos: QoS,
    ) -> Self {
        let mut raw = Self::connected(addr, &client_id(reg, dev), token).await;
        let mut subscribe = Subscribe::new_many([SubscribeFilter::new(
            format!("/devices/{dev}/commands/#"),
            qos,
        )]);
        subscribe.pkid = 1;
        raw.send(&Packet::Subscribe(subscribe)).await;
        assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
        raw
    }

    /// Writes one packet.
    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).unwrap();
        self.send_bytes(&out).await;
    }

    /// Writes raw bytes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        // A peer that already closed may refuse the write; the next read says so.
        let _ = self.try_send_bytes(bytes).await;
    }

    /// Writes raw bytes, saying whether the socket took them (a reset one does not).
    pub async fn try_send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// The next packet, or `None` once the server closed the connection; panics after [`WAIT`].
    pub async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(WAIT)
            .await
            .unwrap_or_else(|| panic!("no packet and no close within {WAIT:?}"))
    }

    /// The next packet (`Some(None)`: closed), or `None` when nothing came within `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Option<Packet>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match Packet::read(&mut self.buf, 1 << 20) {
                Ok(packet) => return Some(Some(packet)),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(err) => panic!("the server sent a malformed packet: {err}"),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => return Some(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Reads until the server closes, skipping packets; returns what came before the close.
    pub async fn until_closed(&mut self, limit: Duration) -> Vec<Packet> {
        let mut seen = Vec::new();
        loop {
            match self.recv_within(limit).await {
                Some(Some(packet)) => seen.push(packet),
                Some(None) => return seen,
                None => panic!("the server did not close within {limit:?}; it sent {seen:?}"),
            }
        }
    }
}
