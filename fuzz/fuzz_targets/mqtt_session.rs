//! A whole MQTT session: the bridge's own connection handling (CONNECT, admission, then the live
//! session with its subscriptions, publishes, acknowledgements, rate limit and gateway topics)
//! fed a client's byte stream over an in-memory pipe, against a real SQLite registry holding one
//! device (an EC key of the vectors) and a file sink. Input: the bytes the client sends after a
//! valid CONNECT for that device (signed at start-up, so the fuzzer is past authentication at
//! once); a first byte of `0` sends the rest with no CONNECT, to reach admission too.
//!
//! Asserts: no panic; once the client has sent everything and closed its side, the session ends
//! within 5 s (nothing waits forever on a peer that is gone); everything the bridge wrote is a
//! sequence of well-formed MQTT 3.1.1 packets, and a session opened with the valid CONNECT is
//! answered first with CONNACK 0.

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use bytes::BytesMut;
use ingest::auth::Authenticator;
use ingest::bridge::{Bridge, BridgeParts, Limits};
use ingest::c2d::Fleet;
use ingest::mqtt::{MqttBridge, MqttSettings};
use ingest::registry::RegistryStore;
use ingest::registry::sqlite::SqliteStore;
use ingest::sink::file::FileSink;
use ingest::telemetry::Metrics;
use iotcore_fuzz::{pem, sign};
use libfuzzer_sys::fuzz_target;
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet};
use shared::clock::SystemClock;
use shared::resources::{
    Device, DeviceCredential, DeviceRegistry, EventNotificationConfig, PublicKeyCredential,
};
use shared::{DeviceId, LocationName, PublicKeyFormat, RegistryId, RegistryName, TopicName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

/// The bridge, the runtime it runs on, and a valid CONNECT for its device.
struct World {
    runtime: Runtime,
    mqtt: MqttBridge,
    connect: Vec<u8>,
}

const PROJECT: &str = "demo-project";
const CLIENT_ID: &str = "projects/demo-project/locations/us-central1/registries/fuzz/devices/dev";

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mqtt = runtime.block_on(bridge());
    World {
        runtime,
        mqtt,
        connect: connect_bytes(),
    }
});

/// A SQLite registry (a fresh file) with registry `fuzz` and EC device `dev`, a sink writing to
/// /dev/null, and the MQTT bridge over them with the default settings.
async fn bridge() -> MqttBridge {
    let path = std::env::temp_dir().join(format!("mqtt-session-fuzz-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let store = SqliteStore::open(&path)
        .await
        .expect("the SQLite store opens");
    let registry: std::sync::Arc<dyn RegistryStore> = std::sync::Arc::new(store);
    let location = LocationName::parse(PROJECT, "us-central1").expect("a location");
    let topic = TopicName::parse("projects/demo-project/topics/events").expect("a topic");
    registry
        .create_registry(
            &location,
            DeviceRegistry {
                id: Some(RegistryId::parse("fuzz").expect("an id")),
                event_notification_configs: vec![EventNotificationConfig {
                    subfolder_matches: String::new(),
                    pubsub_topic_name: topic,
                }],
                ..Default::default()
            },
        )
        .await
        .expect("the registry is created");
    let name = RegistryName::from_parts(PROJECT, "us-central1", "fuzz").expect("a name");
    let device = Device {
        id: Some(DeviceId::parse("dev").expect("an id")),
        credentials: vec![DeviceCredential {
            public_key: PublicKeyCredential {
                format: PublicKeyFormat::Es256Pem,
                key: pem("ec_public").to_owned(),
            },
            expiration_time: None,
        }],
        ..Default::default()
    };
    registry
        .create_device(&name, device, jiff::Timestamp::now())
        .await
        .expect("the device is created");
    let auth = Authenticator::new(registry.clone(), 1000);
    let sink = FileSink::open("/dev/null").await.expect("the sink opens");
    let fleet = Fleet::single(registry.clone(), auth.clone());
    let bridge = Bridge::new(BridgeParts {
        registry,
        auth,
        sink: std::sync::Arc::new(sink),
        metrics: Metrics::default(),
        limits: Limits::default(),
        clock: std::sync::Arc::new(SystemClock),
        configs: fleet.delivery().config_cache(),
    });
    let (_, stop) = tokio::sync::watch::channel(false);
    // The sender is dropped: the bridge never sees a shutdown, as for a running service.
    MqttBridge::new(
        bridge,
        fleet,
        MqttSettings::default(),
        Metrics::default(),
        stop,
    )
}

/// A CONNECT for the device with a token valid for a day from now.
fn connect_bytes() -> Vec<u8> {
    let now = jiff::Timestamp::now().as_second();
    let claims = format!(
        r#"{{"iat":{now},"exp":{},"aud":"{PROJECT}"}}"#,
        now + 86_000
    );
    let token = sign(br#"{"alg":"ES256","typ":"JWT"}"#, claims.as_bytes());
    let mut connect = rumqttc::mqttbytes::v4::Connect::new(CLIENT_ID);
    connect.keep_alive = 60;
    connect.set_login("unused", token);
    let mut out = BytesMut::new();
    Packet::Connect(connect)
        .write(&mut out, usize::MAX)
        .expect("a CONNECT encodes");
    out.to_vec()
}

fuzz_target!(|data: &[u8]| {
    let world = &*WORLD;
    let (with_connect, rest) = match data.split_first() {
        Some((0, rest)) => (false, rest),
        _ => (true, data),
    };
    let mut input = if with_connect {
        world.connect.clone()
    } else {
        Vec::new()
    };
    input.extend_from_slice(rest);
    let output = world.runtime.block_on(session(&world.mqtt, input));
    check_output(&output, with_connect);
});

/// Runs one session over a pipe: writes `input`, closes the client's side, and returns all the
/// bridge wrote; panics if the session outlives the client by 5 s.
async fn session(mqtt: &MqttBridge, input: Vec<u8>) -> Vec<u8> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (mut from_bridge, mut to_bridge) = tokio::io::split(client);
    let write = async move {
        // The bridge may close before reading everything; that is an answer, not a failure.
        let _ = to_bridge.write_all(&input).await;
        let _ = to_bridge.shutdown().await;
    };
    let read = async move {
        let mut output = Vec::new();
        let _ = from_bridge.read_to_end(&mut output).await;
        output
    };
    let serve = async {
        tokio::time::timeout(Duration::from_secs(5), mqtt.serve_stream(server))
            .await
            .expect("the session ends within 5 s of the client closing")
            .expect("a connection slot is free");
    };
    let ((), output, ()) = tokio::join!(write, read, serve);
    output
}

/// Everything the bridge wrote is whole MQTT 3.1.1 packets; a valid CONNECT is answered first
/// with CONNACK 0.
fn check_output(output: &[u8], with_connect: bool) {
    let mut buf = BytesMut::from(output);
    let mut first = true;
    while !buf.is_empty() {
        let packet = Packet::read(&mut buf, 1 << 20)
            .unwrap_or_else(|err| panic!("the bridge wrote a malformed packet: {err:?}"));
        if first && with_connect {
            assert!(
                matches!(
                    packet,
                    Packet::ConnAck(ConnAck {
                        code: ConnectReturnCode::Success,
                        ..
                    })
                ),
                "a valid CONNECT was answered with {packet:?}"
            );
        }
        first = false;
    }
}
