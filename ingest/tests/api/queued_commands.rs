//! Queued commands, an extension beside IoT Core's API: `:sendCommandToDevice` with a `ttl` keeps
//! a command for a device that is not connected and subscribed, until it fetches it over HTTP
//! (`GET …/commands?ack=N`) or subscribes to `commands/#` over MQTT, or the ttl passes. Over real
//! sockets in one process: delivered once over HTTP and once over MQTT with the delivery recorded,
//! expiry, a full queue, bad input, and a command queued while the device was subscribing.

use std::time::Duration;

use crate::support::device::{Signer, device_path};
use crate::support::mqtt::{MqttApp, Raw};
use crate::support::{PROJECT, REGION, assert_error, assert_reason};
use ingest::mqtt::MqttSettings;
use ingest::registry::NewCommand;
use reqwest::StatusCode;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PubAck};
use serde_json::{Value, json};
use shared::proto3::encode_base64;
use shared::{DeviceId, DeviceRef, NumId, RegistryName};

const REG: &str = "reg-1";

fn token() -> String {
    Signer::rsa("rsa_private").fresh()
}

/// A command body with a ttl and, if given, a subfolder.
fn queued(data: &[u8], subfolder: Option<&str>, ttl: &str) -> Value {
    let mut body = json!({"binaryData": encode_base64(data), "ttl": ttl});
    if let Some(subfolder) = subfolder {
        body["subfolder"] = json!(subfolder);
    }
    body
}

async fn send(app: &MqttApp, dev: &str, body: Value) -> (reqwest::StatusCode, Value) {
    app.send_command(REG, dev, body).await
}

/// The admin API's list of the device's kept commands.
async fn kept(app: &MqttApp, dev: &str) -> Vec<Value> {
    let (status, body) = app
        .app
        .admin
        .get(&format!("{}/commands", device_path(REG, dev)))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["commands"].as_array().cloned().unwrap_or_default()
}

/// What the device fetches over HTTP with `query`.
async fn fetch(app: &MqttApp, dev: &str, query: &str) -> Vec<Value> {
    let (status, body) = app
        .app
        .get_commands(&token(), &device_path(REG, dev), query)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["commands"].as_array().cloned().unwrap_or_default()
}

/// A raw MQTT connection for `dev`, subscribed to its commands at QoS 1.
async fn subscribed(app: &MqttApp, dev: &str) -> Raw {
    Raw::subscribed_to_commands(app.addr, REG, dev, &token(), QoS::AtLeastOnce).await
}

#[tokio::test]
async fn a_queued_command_reaches_an_http_device_once_and_its_delivery_is_recorded() {
    let app = MqttApp::spawn(MqttSettings::default()).await;
    app.device(REG, "dev-1").await;

    let (status, body) = send(&app, "dev-1", queued(b"reboot", Some("power"), "600s")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["queued"], &body["commandId"]),
        (&json!(true), &json!("1"))
    );
    assert!(body["expireTime"].is_string(), "{body}");

    // Fetched until acknowledged: at least once.
    for _ in 0..2 {
        let commands = fetch(&app, "dev-1", "").await;
        assert_eq!(commands.len(), 1, "{commands:?}");
        assert_eq!(commands[0]["id"], "1");
        assert_eq!(commands[0]["binaryData"], encode_base64(b"reboot"));
        assert_eq!(commands[0]["subfolder"], "power");
    }
    assert!(fetch(&app, "dev-1", "?ack=1").await.is_empty());
    assert!(fetch(&app, "dev-1", "").await.is_empty());

    let record = kept(&app, "dev-1").await;
    assert_eq!(record.len(), 1);
    assert!(record[0]["deliverTime"].is_string(), "{record:?}");

    let answer = app
        .app
        .get_commands(&token(), &device_path(REG, "dev-1"), "?ack=latest")
        .await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["ack", "latest"]);
}

#[tokio::test]
async fn queued_commands_reach_an_mqtt_device_once_it_subscribes() {
    let app = MqttApp::spawn(MqttSettings::default()).await;
    app.device(REG, "dev-1").await;
    for (data, subfolder) in [(&b"first"[..], None), (&b"second"[..], Some("ota"))] {
        let (status, body) = send(&app, "dev-1", queued(data, subfolder, "600s")).await;
        assert_eq!(
            (status, &body["queued"]),
            (StatusCode::OK, &json!(true)),
            "{body}"
        );
    }

    // Oldest first, each after the PUBACK of the one before.
    let mut raw = subscribed(&app, "dev-1").await;
    for (topic, data) in [
        ("/devices/dev-1/commands", &b"first"[..]),
        ("/devices/dev-1/commands/ota", &b"second"[..]),
    ] {
        match raw.recv().await {
            Some(Packet::Publish(publish)) => {
                assert_eq!(
                    (publish.topic.as_str(), &publish.payload[..]),
                    (topic, data)
                );
                assert_eq!(publish.qos, QoS::AtLeastOnce);
                raw.send(&Packet::PubAck(PubAck::new(publish.pkid))).await;
            }
            other => panic!("expected the queued command {topic}, got {other:?}"),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let record = kept(&app, "dev-1").await;
        if record.iter().all(|c| c["deliverTime"].is_string()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not recorded: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fetch(&app, "dev-1", "").await.is_empty());

    // Delivered once: a new subscription gets nothing more, and a command with a ttl to a
    // subscribed device is sent at once, not queued.
    drop(raw);
    let mut raw = subscribed(&app, "dev-1").await;
    assert!(raw.recv_within(Duration::from_millis(500)).await.is_none());
    let (answer, ()) = tokio::join!(send(&app, "dev-1", queued(b"now", None, "600s")), async {
        match raw.recv().await {
            Some(Packet::Publish(publish)) => {
                assert_eq!(&publish.payload[..], b"now");
                raw.send(&Packet::PubAck(PubAck::new(publish.pkid))).await;
            }
            other => panic!("expected the live command, got {other:?}"),
        }
    });
    assert_eq!(answer, (StatusCode::OK, json!({})));
    assert_eq!(
        kept(&app, "dev-1").await.len(),
        2,
        "the live one is not queued"
    );
}

#[tokio::test]
async fn an_expired_command_is_not_delivered() {
    let app = MqttApp::spawn(MqttSettings::default()).await;
    app.device(REG, "dev-1").await;
    let (status, body) = send(&app, "dev-1", queued(b"stale", None, "0.3s")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fetch(&app, "dev-1", "").await.len(), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(fetch(&app, "dev-1", "").await.is_empty());
    let mut raw = subscribed(&app, "dev-1").await;
    assert!(raw.recv_within(Duration::from_millis(500)).await.is_none());
    // Kept for the record, never delivered.
    let record = kept(&app, "dev-1").await;
    assert_eq!(record.len(), 1);
    assert!(record[0].get("deliverTime").is_none(), "{record:?}");
}

#[tokio::test]
async fn a_full_queue_is_resource_exhausted_and_bad_ttls_are_refused() {
    let app = MqttApp::spawn(MqttSettings::default()).await;
    app.device(REG, "dev-1").await;
    for n in 0..50 {
        let (status, body) = send(
            &app,
            "dev-1",
            queued(format!("{n}").as_bytes(), None, "60s"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let answer = send(&app, "dev-1", queued(b"one more", None, "60s")).await;
    assert_error(
        &answer,
        429,
        "RESOURCE_EXHAUSTED",
        &["dev-1", "50 queued commands"],
    );
    assert_reason(&answer, "COMMAND_QUEUE_FULL", &[]);
    assert!(
        answer.1["error"]["details"][0]["metadata"]["device"]
            .as_str()
            .is_some_and(|d| d.ends_with("/devices/dev-1"))
    );

    for (ttl, words) in [
        ("0s", &["ttl", "more than 0"][..]),
        ("604801s", &["ttl", "604800"][..]),
        ("10m", &["ttl", "600s"][..]),
    ] {
        let answer = send(&app, "dev-1", queued(b"x", None, ttl)).await;
        assert_error(&answer, 400, "INVALID_ARGUMENT", words);
    }
    // A device that does not exist is not found, ttl or not.
    let answer = send(&app, "nobody", queued(b"x", None, "60s")).await;
    assert_error(&answer, 404, "NOT_FOUND", &["nobody"]);
}

#[tokio::test]
async fn a_command_queued_while_the_device_subscribed_is_sent_when_the_fleet_is_told() {
    // The race the admin API closes: it found the device unsubscribed, and the device subscribed
    // (and read its empty queue) before the command was stored. Telling the fleet, as the admin
    // API does after queueing, makes the connection read its queue again.
    let app = MqttApp::spawn(MqttSettings::default()).await;
    let num_id: u64 = app.device(REG, "dev-1").await.parse().unwrap();
    let mut raw = subscribed(&app, "dev-1").await;
    assert!(raw.recv_within(Duration::from_millis(300)).await.is_none());

    let registry = RegistryName::from_parts(PROJECT, REGION, REG).unwrap();
    let device = DeviceId::parse("dev-1").unwrap();
    let command = NewCommand {
        subfolder: None,
        data: b"late".to_vec(),
        expire_time: jiff::Timestamp::now() + Duration::from_secs(600),
    };
    app.app
        .admin
        .registry
        .queue_command(
            &registry,
            &DeviceRef::Id(device.clone()),
            command,
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    assert!(
        raw.recv_within(Duration::from_millis(300)).await.is_none(),
        "nothing reads the queue unasked"
    );
    app.app
        .fleet
        .commands_queued(&registry, &device, NumId(num_id))
        .await;
    match raw.recv().await {
        Some(Packet::Publish(publish)) => {
            assert_eq!(&publish.payload[..], b"late");
            raw.send(&Packet::PubAck(PubAck::new(publish.pkid))).await;
        }
        other => panic!("expected the queued command, got {other:?}"),
    }
    // Told again with nothing pending: nothing is sent twice.
    app.app
        .fleet
        .commands_queued(&registry, &device, NumId(num_id))
        .await;
    assert!(raw.recv_within(Duration::from_millis(500)).await.is_none());
}
