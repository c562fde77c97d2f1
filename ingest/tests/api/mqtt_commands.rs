//! `:sendCommandToDevice` through the admin API to a device's MQTT connection in the same
//! process, over real sockets: the topic with and without subfolder, the call answering after
//! the PUBACK, QoS 1 resends with DUP until the command timeout, QoS 0, and every refusal
//! (not connected, not subscribed, unknown device, too large, a bad subfolder).

use std::time::{Duration, Instant};

use crate::support::assert_error;
use crate::support::device::Signer;
use crate::support::mqtt::{MqttApp, Raw, client_id};
use ingest::mqtt::MqttSettings;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions};
use serde_json::{Value, json};
use shared::proto3::encode_base64;

const REG: &str = "reg-1";

fn token() -> String {
    Signer::rsa("rsa_private").fresh()
}

fn command(data: &[u8], subfolder: Option<&str>) -> Value {
    let mut body = json!({"binaryData": encode_base64(data)});
    if let Some(subfolder) = subfolder {
        body["subfolder"] = json!(subfolder);
    }
    body
}

async fn send(app: &MqttApp, dev: &str, body: Value) -> (reqwest::StatusCode, Value) {
    app.send_command(REG, dev, body).await
}

/// A raw connection for `dev` subscribed to its commands at `qos`.
async fn subscribed(app: &MqttApp, dev: &str, qos: QoS) -> Raw {
    Raw::subscribed_to_commands(app.addr, REG, dev, &token(), qos).await
}

/// The `google.rpc.ErrorInfo` reason of a refusal.
fn reason(body: &Value) -> &str {
    body["error"]["details"][0]["reason"]
        .as_str()
        .unwrap_or_default()
}

async fn next_publish(raw: &mut Raw) -> Publish {
    match raw.recv().await {
        Some(Packet::Publish(publish)) => publish,
        other => panic!("expected a command, got {other:?}"),
    }
}

#[tokio::test]
async fn a_subscribed_rumqttc_device_gets_commands_on_its_topics_and_the_call_answers_after_it() {
    let app = MqttApp::spawn(MqttSettings::default()).await;
    let num_id = app.device(REG, "dev-1").await;
    let mut options = MqttOptions::new(client_id(REG, "dev-1"), "127.0.0.1", app.addr.port());
    options.set_credentials("unused", token());
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client
        .subscribe("/devices/dev-1/commands/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    // The client acknowledges each command as its event loop reads it.
    let (tx, mut received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(Incoming::SubAck(_)) => {
                    let _ = tx.send(None);
                }
                Event::Incoming(Incoming::Publish(p)) => {
                    let _ = tx.send(Some((p.topic, p.payload.to_vec(), p.qos)));
                }
                _ => {}
            }
        }
    });
    assert_eq!(received.recv().await, Some(None), "SUBACK first");

    let answer = send(&app, "dev-1", command(b"reboot", None)).await;
    assert_eq!(answer, (reqwest::StatusCode::OK, json!({})));
    let got = received.recv().await.unwrap().unwrap();
    assert_eq!(
        got,
        (
            "/devices/dev-1/commands".to_owned(),
            b"reboot".to_vec(),
            QoS::AtLeastOnce
        )
    );

    // By numeric id, with a subfolder.
    let (status, body) = send(&app, &num_id, command(b"{\"led\":1}", Some("led/a"))).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let got = received.recv().await.unwrap().unwrap();
    assert_eq!(got.0, "/devices/dev-1/commands/led/a");
    assert_eq!(got.1, b"{\"led\":1}");
}

#[tokio::test]
async fn an_unacknowledged_qos1_command_is_sent_again_with_dup_until_the_timeout() {
    let app = MqttApp::spawn(MqttSettings {
        config_resend: Duration::from_millis(500),
        command_timeout: Duration::from_millis(1600),
        ..MqttSettings::default()
    })
    .await;
    app.device(REG, "dev-1").await;
    let mut raw = subscribed(&app, "dev-1", QoS::AtLeastOnce).await;

    // Never acknowledged: sent, then sent again with DUP and the same packet id, then given up.
    let started = Instant::now();
    let (answer, sends) = tokio::join!(send(&app, "dev-1", command(b"open", None)), async {
        let first = next_publish(&mut raw).await;
        assert!(!first.dup);
        assert_eq!(first.qos, QoS::AtLeastOnce);
        let mut sends = vec![first];
        while let Some(Some(Packet::Publish(again))) = raw.recv_within(Duration::from_secs(3)).await
        {
            assert!(again.dup);
            assert_eq!(again.pkid, sends[0].pkid);
            assert_eq!(&again.payload[..], b"open");
            sends.push(again);
        }
        sends
    });
    assert_error(
        &answer,
        504,
        "DEADLINE_EXCEEDED",
        &["did not acknowledge", "dev-1"],
    );
    assert_eq!(reason(&answer.1), "COMMAND_NOT_ACKNOWLEDGED");
    assert!(
        (3..=4).contains(&sends.len()),
        "sent {} times in 1.6 s at a 0.5 s resend",
        sends.len()
    );
    assert!(started.elapsed() >= Duration::from_millis(1600));

    // Acknowledged on its resend: the call answers OK.
    let (answer, ()) = tokio::join!(send(&app, "dev-1", command(b"close", None)), async {
        let first = next_publish(&mut raw).await;
        let again = next_publish(&mut raw).await;
        assert!(again.dup);
        assert_eq!(again.pkid, first.pkid);
        raw.send(&Packet::PubAck(PubAck::new(again.pkid))).await;
    });
    assert_eq!(answer, (reqwest::StatusCode::OK, json!({})));
}

#[tokio::test]
async fn at_qos0_a_command_is_sent_once_and_answered_when_written() {
    let app = MqttApp::spawn(MqttSettings {
        config_resend: Duration::from_millis(300),
        ..MqttSettings::default()
    })
    .await;
    app.device(REG, "dev-1").await;
    let mut raw = subscribed(&app, "dev-1", QoS::AtMostOnce).await;
    let answer = send(&app, "dev-1", command(b"blink", None)).await;
    assert_eq!(answer, (reqwest::StatusCode::OK, json!({})));
    let publish = next_publish(&mut raw).await;
    assert_eq!(publish.qos, QoS::AtMostOnce);
    assert_eq!(&publish.payload[..], b"blink");
    assert!(
        raw.recv_within(Duration::from_secs(1)).await.is_none(),
        "a QoS 0 command is not sent again"
    );
}

#[tokio::test]
async fn commands_are_refused_with_the_reason_when_they_cannot_be_delivered() {
    let app = MqttApp::spawn(MqttSettings::default()).await;
    app.device(REG, "dev-1").await;

    let answer = send(&app, "dev-1", command(b"x", None)).await;
    assert_error(
        &answer,
        400,
        "FAILED_PRECONDITION",
        &["not connected", "ttl"],
    );
    assert_eq!(reason(&answer.1), "DEVICE_NOT_CONNECTED");
    let answer = send(&app, "nobody", command(b"x", None)).await;
    assert_error(&answer, 404, "NOT_FOUND", &["nobody"]);

    let mut raw = Raw::connected(app.addr, &client_id(REG, "dev-1"), &token()).await;
    let answer = send(&app, "dev-1", command(b"x", None)).await;
    assert_error(
        &answer,
        400,
        "FAILED_PRECONDITION",
        &["not subscribed", "commands/#"],
    );
    assert_eq!(reason(&answer.1), "DEVICE_NOT_SUBSCRIBED");

    let too_big = vec![b'a'; 256 * 1024 + 1];
    let answer = send(&app, "dev-1", command(&too_big, None)).await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["binaryData", "262144"]);
    let answer = send(&app, "dev-1", command(b"x", Some("a/#"))).await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["subfolder", "#"]);

    // None of it reached the connection, which is still up.
    assert!(raw.recv_within(Duration::from_millis(300)).await.is_none());
    raw.send(&Packet::PingReq).await;
    assert!(matches!(raw.recv().await, Some(Packet::PingResp)));
}
