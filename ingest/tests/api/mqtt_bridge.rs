//! The MQTT bridge against real sockets: rumqttc's client for what a device library does, and
//! rumqttc's codec by hand for what no library would send. Every rule of IoT Core's MQTT
//! protocol as the README's MQTT table states it: CONNACK codes and last errors for each refusal,
//! topics, QoS, the config after SUBACK and its resends, pushes from the admin API, one
//! connection per device, token expiry, keepalive, the connect timeout and the message rate.

use std::time::{Duration, Instant};

use crate::support::device::{Signer, device_path};
use crate::support::mqtt::{MqttApp, Raw, WAIT, client_id, connect_packet};
use crate::support::tls_client::{certificate_set, exchange, tls_to};
use crate::support::{PROJECT, REGION};
use ingest::mqtt::MqttSettings;
use jiff::Timestamp;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeReasonCode,
};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions};
use serde_json::Value;
use testkit::emulators::PrivatePubSub;
use testkit::pubsub::PubSubRest;

const REG: &str = "reg-1";

fn settings() -> MqttSettings {
    MqttSettings {
        config_resend: Duration::from_secs(1),
        ..MqttSettings::default()
    }
}

fn token() -> String {
    Signer::rsa("rsa_private").fresh()
}

/// A rumqttc client connected as `dev`, with its event loop polled on its own task until the
/// connection ends; what it receives arrives on the channel.
async fn rumqttc_device(
    app: &MqttApp,
    dev: &str,
) -> (AsyncClient, tokio::sync::mpsc::UnboundedReceiver<Event>) {
    let mut options = MqttOptions::new(client_id(REG, dev), "127.0.0.1", app.addr.port());
    options.set_credentials("unused", token());
    options.set_keep_alive(Duration::from_secs(60));
    options.set_clean_session(true);
    let (client, eventloop) = AsyncClient::new(options, 100);
    let events = poll(eventloop);
    (client, events)
}

fn poll(mut eventloop: EventLoop) -> tokio::sync::mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for the first incoming packet `want` picks out.
async fn next_incoming<T>(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    mut want: impl FnMut(&Incoming) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Incoming(packet))) => {
                if let Some(found) = want(&packet) {
                    return found;
                }
            }
            Ok(Some(Event::Outgoing(_))) => {}
            Ok(None) => panic!("the connection ended before the packet came"),
            Err(_) => panic!("the packet did not come within {WAIT:?}"),
        }
    }
}

fn publish(topic: &str, qos: QoS, pkid: u16, payload: &[u8]) -> Packet {
    let mut publish = Publish::new(topic, qos, payload.to_vec());
    publish.pkid = pkid;
    Packet::Publish(publish)
}

fn subscribe(pkid: u16, filters: &[(&str, QoS)]) -> Packet {
    let mut subscribe =
        Subscribe::new_many(filters.iter().map(|(path, qos)| {
            rumqttc::mqttbytes::v4::SubscribeFilter::new((*path).to_owned(), *qos)
        }));
    subscribe.pkid = pkid;
    Packet::Subscribe(subscribe)
}

fn last_error(device: &Value) -> String {
    device["lastErrorStatus"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn qos1_events_and_state_from_a_rumqttc_client_are_acknowledged_after_the_sink_has_them() {
    let app = MqttApp::spawn(settings()).await;
    let num_id = app.device(REG, "dev-1").await;
    let (client, mut events) = rumqttc_device(&app, "dev-1").await;
    next_incoming(&mut events, |p| {
        matches!(p, Incoming::ConnAck(_)).then_some(())
    })
    .await;

    client
        .publish(
            "/devices/dev-1/events",
            QoS::AtLeastOnce,
            false,
            b"t=21".to_vec(),
        )
        .await
        .unwrap();
    next_incoming(&mut events, |p| {
        matches!(p, Incoming::PubAck(_)).then_some(())
    })
    .await;
    // Acknowledged means written: the line is in the sink already.
    let messages = app.app.sink_messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["data"], "dD0yMQ==");
    let attributes = &messages[0]["attributes"];
    assert_eq!(attributes["deviceId"], "dev-1");
    assert_eq!(attributes["deviceNumId"], num_id.as_str());
    assert_eq!(attributes["deviceRegistryId"], REG);
    assert_eq!(attributes["deviceRegistryLocation"], REGION);
    assert_eq!(attributes["projectId"], PROJECT);
    assert!(attributes.get("subFolder").is_none());

    // By numeric id too, with a subfolder.
    client
        .publish(
            format!("/devices/{num_id}/events/alerts/high"),
            QoS::AtLeastOnce,
            false,
            b"hot".to_vec(),
        )
        .await
        .unwrap();
    client
        .publish(
            "/devices/dev-1/state",
            QoS::AtLeastOnce,
            false,
            b"ok".to_vec(),
        )
        .await
        .unwrap();
    let mut acks = 0;
    next_incoming(&mut events, |p| {
        acks += usize::from(matches!(p, Incoming::PubAck(_)));
        (acks == 2).then_some(())
    })
    .await;
    let messages = app.app.sink_messages();
    assert_eq!(messages[1]["attributes"]["subFolder"], "alerts/high");
    let device = app.device_record(REG, "dev-1").await;
    assert_eq!(device["state"]["binaryData"], "b2s=");
    assert!(device["lastEventTime"].is_string(), "{device}");
    assert!(device["lastStateTime"].is_string(), "{device}");
}

#[tokio::test]
async fn each_refused_connect_gets_its_connack_code_and_the_cause_becomes_the_last_error() {
    let app = MqttApp::spawn(settings()).await;
    app.device(REG, "dev-1").await;
    app.device(REG, "dev-2").await;
    let id = client_id(REG, "dev-1");
    let now = Timestamp::now().as_second();
    let signer = Signer::rsa("rsa_private");

    let expired = signer.token(now - 7200, now - 3600, PROJECT);
    let (_, code) = Raw::connect(app.addr, &id, &expired, 60).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
    let message = last_error(&app.device_record(REG, "dev-1").await);
    assert!(message.contains("expired"), "{message}");

    let wrong_audience = signer.token(now - 60, now + 600, "another-project");
    let (_, code) = Raw::connect(app.addr, &id, &wrong_audience, 60).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
    let message = last_error(&app.device_record(REG, "dev-1").await);
    assert!(message.contains("another-project"), "{message}");

    let other_key = Signer::rsa("rsa2_private").fresh();
    let (_, code) = Raw::connect(app.addr, &id, &other_key, 60).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);

    let (_, code) = Raw::connect(app.addr, &client_id(REG, "no-such-device"), &token(), 60).await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);

    let (_, code) = Raw::connect(app.addr, "dev-1", &token(), 60).await;
    assert_eq!(code, ConnectReturnCode::BadClientId);

    let (_, code) = Raw::connect(app.addr, &id, "", 60).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);

    // A last will is refused after the device proved itself, so the cause is its last error.
    let mut raw = Raw::open(app.addr).await;
    let Packet::Connect(mut connect) = connect_packet(&client_id(REG, "dev-2"), &token(), 60)
    else {
        unreachable!()
    };
    connect.last_will = Some(rumqttc::mqttbytes::v4::LastWill::new(
        "/devices/dev-2/events",
        "gone",
        QoS::AtMostOnce,
        false,
    ));
    raw.send(&Packet::Connect(connect)).await;
    assert!(
        matches!(raw.recv().await, Some(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::NotAuthorized)
    );
    assert_eq!(raw.recv().await, None, "closed after the refusal");
    let message = last_error(&app.device_record(REG, "dev-2").await);
    assert!(message.contains("last will"), "{message}");

    // Blocked.
    let (status, body) = app
        .app
        .admin
        .patch(
            &format!("{}?updateMask=blocked", device_path(REG, "dev-1")),
            serde_json::json!({"blocked": true}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let (_, code) = Raw::connect(app.addr, &id, &token(), 60).await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    let message = last_error(&app.device_record(REG, "dev-1").await);
    assert!(message.contains("blocked"), "{message}");
}

#[tokio::test]
async fn a_registry_with_mqtt_switched_off_refuses_with_connack_5_and_says_how_to_switch_it_on() {
    let app = MqttApp::spawn(settings()).await;
    app.device(REG, "dev-1").await;
    let (status, body) = app
        .app
        .admin
        .patch(
            &format!("/registries/{REG}?updateMask=mqttConfig"),
            serde_json::json!({"mqttConfig": {"mqttEnabledState": "MQTT_DISABLED"}}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let (_, code) = Raw::connect(app.addr, &client_id(REG, "dev-1"), &token(), 60).await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    let message = last_error(&app.device_record(REG, "dev-1").await);
    assert!(message.contains("mqttConfig.mqttEnabledState"), "{message}");
}

#[tokio::test]
async fn mqtt_5_and_3_1_are_refused_with_connack_1() {
    let app = MqttApp::spawn(settings()).await;
    app.device(REG, "dev-1").await;
    let Packet::Connect(mut connect) = connect_packet(&client_id(REG, "dev-1"), &token(), 60)
    else {
        unreachable!()
    };
    connect.protocol = rumqttc::mqttbytes::Protocol::V5;
    let mut raw = Raw::open(app.addr).await;
    raw.send(&Packet::Connect(connect)).await;
    assert!(
        matches!(raw.recv().await, Some(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::RefusedProtocolVersion)
    );
    assert_eq!(raw.recv().await, None);

    // MQTT 3.1: protocol name MQIsdp, level 3.
    let mut raw = Raw::open(app.addr).await;
    let mut bytes = vec![0x10, 0];
    let body: Vec<u8> = [&[0, 6][..], b"MQIsdp", &[3, 2, 0, 60, 0, 1], b"x"].concat();
    bytes[1] = body.len() as u8;
    bytes.extend(body);
    raw.send_bytes(&bytes).await;
    assert!(
        matches!(raw.recv().await, Some(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::RefusedProtocolVersion)
    );
}

#[tokio::test]
async fn a_connection_that_sends_no_connect_is_closed_after_the_connect_timeout() {
    let app = MqttApp::spawn(MqttSettings {
        connect_timeout: Duration::from_secs(1),
        ..settings()
    })
    .await;
    let started = Instant::now();
    let mut silent = Raw::open(app.addr).await;
    assert_eq!(silent.recv().await, None);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // Half a CONNECT is no better than none.
    let mut half = Raw::open(app.addr).await;
    half.send_bytes(&[0x10, 40, 0, 4, b'M']).await;
    assert_eq!(half.recv().await, None);
}

#[tokio::test]
async fn forbidden_publishes_close_the_connection_and_are_recorded() {
    let app = MqttApp::spawn(settings()).await;
    app.device(REG, "dev-1").await;
    app.device(REG, "dev-2").await;
    let id = client_id(REG, "dev-1");
    let cases: [(Packet, &str); 4] = [
        (
            publish("/devices/dev-1/events", QoS::ExactlyOnce, 1, b"x"),
            "QoS 2",
        ),
        (
            {
                let mut retained =
                    Publish::new("/devices/dev-1/events", QoS::AtLeastOnce, b"x".to_vec());
                retained.pkid = 1;
                retained.retain = true;
                Packet::Publish(retained)
            },
            "retained",
        ),
        (
            publish("/devices/dev-2/events", QoS::AtLeastOnce, 1, b"x"),
            "dev-2/events",
        ),
        (
            publish("/devices/dev-1/config", QoS::AtMostOnce, 0, b"x"),
            "not a topic a device may publish to",
        ),
    ];
    for (packet, words) in cases {
        let mut raw = Raw::connected(app.addr, &id, &token()).await;
        raw.send(&packet).await;
        let before_close = raw.until_closed(WAIT).await;
        assert!(
            !before_close.iter().any(|p| matches!(p, Packet::PubAck(_))),
            "{words}: {before_close:?}"
        );
        let message = last_error(&app.device_record(REG, "dev-1").await);
        assert!(message.contains(words), "{words}: {message}");
    }
    assert!(app.app.sink_messages().is_empty());
}

#[tokio::test]
async fn only_the_three_topics_are_granted_and_the_config_follows_the_suback() {
    let app = MqttApp::spawn(settings()).await;
    app.device(REG, "dev-1").await;
    let version = app.set_config(REG, "dev-1", b"{\"interval\": 5}").await;
    let mut raw = Raw::connected(app.addr, &client_id(REG, "dev-1"), &token()).await;
    raw.send(&subscribe(
        7,
        &[
            ("/devices/dev-1/config", QoS::ExactlyOnce),
            ("/devices/dev-1/commands/#", QoS::AtMostOnce),
            ("/devices/dev-1/errors", QoS::AtLeastOnce),
            ("/devices/dev-1/commands/reboot", QoS::AtMostOnce),
            ("/devices/dev-2/config", QoS::AtMostOnce),
            ("#", QoS::AtMostOnce),
        ],
    ))
    .await;
    let Some(Packet::SubAck(suback)) = raw.recv().await else {
        panic!("expected a SUBACK")
    };
    assert_eq!(suback.pkid, 7);
    assert_eq!(
        suback.return_codes,
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce), // QoS 2 granted as 1
            SubscribeReasonCode::Success(QoS::AtMostOnce),
            SubscribeReasonCode::Success(QoS::AtMostOnce), // errors: QoS 0
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
        ]
    );
    let Some(Packet::Publish(config)) = raw.recv().await else {
        panic!("expected the config right after the SUBACK")
    };
    assert_eq!(config.topic, "/devices/dev-1/config");
    assert_eq!(config.qos, QoS::AtLeastOnce);
    assert_eq!(&config.payload[..], b"{\"interval\": 5}");
    assert!(!config.dup);

    // Not acknowledged: sent again, marked as a duplicate, until it is.
    let Some(Some(Packet::Publish(again))) = raw.recv_within(Duration::from_secs(3)).await else {
        panic!("the config was not sent again")
    };
    assert!(again.dup);
    assert_eq!(again.pkid, config.pkid);
    raw.send(&Packet::PubAck(PubAck::new(config.pkid))).await;
    match raw.recv_within(Duration::from_millis(2500)).await {
        None => {}
        Some(other) => panic!("nothing should follow an acknowledged config, got {other:?}"),
    }
    let device = app.device_record(REG, "dev-1").await;
    assert!(device["lastConfigAckTime"].is_string(), "{device}");
    assert!(device["lastConfigSendTime"].is_string(), "{device}");
    let (_, versions) = app
        .app
        .admin
        .get(&format!("{}/configVersions", device_path(REG, "dev-1")))
        .await;
    let acked = versions["deviceConfigs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["version"].as_str() == Some(version.to_string().as_str()))
        .unwrap();
    assert!(acked["deviceAckTime"].is_string(), "{versions}");
}

#[tokio::test]
async fn an_admin_config_change_reaches_the_connected_device_and_replaces_an_unacknowledged_one() {
    let app = MqttApp::spawn(MqttSettings {
        config_resend: Duration::from_secs(30),
        ..settings()
    })
    .await;
    app.device(REG, "dev-1").await;
    let first = app.set_config(REG, "dev-1", b"one").await;
    let mut raw = Raw::connected(app.addr, &client_id(REG, "dev-1"), &token()).await;
    raw.send(&subscribe(
        1,
        &[("/devices/dev-1/config", QoS::AtLeastOnce)],
    ))
    .await;
    assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
    let Some(Packet::Publish(one)) = raw.recv().await else {
        panic!("expected the config")
    };
    assert_eq!(&one.payload[..], b"one");

    // Left unacknowledged, then the operator moves on: the device gets the newer one at once.
    let second = app.set_config(REG, "dev-1", b"two").await;
    assert!(second > first);
    let Some(Packet::Publish(two)) = raw.recv().await else {
        panic!("expected the new config")
    };
    assert_eq!(&two.payload[..], b"two");
    assert_ne!(two.pkid, one.pkid);
    raw.send(&Packet::PubAck(PubAck::new(two.pkid))).await;

    // A rumqttc client at QoS 0 hears a change too.
    app.device(REG, "dev-2").await;
    let (client, mut events) = rumqttc_device(&app, "dev-2").await;
    client
        .subscribe("/devices/dev-2/config", QoS::AtMostOnce)
        .await
        .unwrap();
    let initial = next_incoming(&mut events, |p| match p {
        Incoming::Publish(p) => Some(p.payload.clone()),
        _ => None,
    })
    .await;
    assert!(
        initial.is_empty(),
        "a device with no config gets an empty one"
    );
    app.set_config(REG, "dev-2", b"pushed").await;
    let pushed = next_incoming(&mut events, |p| match p {
        Incoming::Publish(p) => Some(p.payload.clone()),
        _ => None,
    })
    .await;
    assert_eq!(&pushed[..], b"pushed");
}

#[tokio::test]
async fn a_second_connection_for_the_device_closes_the_first_which_is_told_why() {
    let app = MqttApp::spawn(settings()).await;
    app.device(REG, "dev-1").await;
    let id = client_id(REG, "dev-1");
    let mut first = Raw::connected(app.addr, &id, &token()).await;
    first
        .send(&subscribe(1, &[("/devices/dev-1/errors", QoS::AtMostOnce)]))
        .await;
    assert!(matches!(first.recv().await, Some(Packet::SubAck(_))));
    let mut second = Raw::connected(app.addr, &id, &token()).await;
    let before_close = first.until_closed(WAIT).await;
    let told = before_close.iter().any(|p| {
        matches!(p, Packet::Publish(p) if p.topic == "/devices/dev-1/errors"
            && String::from_utf8_lossy(&p.payload).contains("another connection"))
    });
    assert!(told, "{before_close:?}");
    // The second one serves on.
    second
        .send(&publish("/devices/dev-1/events", QoS::AtLeastOnce, 3, b"x"))
        .await;
    assert!(matches!(second.recv().await, Some(Packet::PubAck(ack)) if ack.pkid == 3));
}

#[tokio::test]
async fn the_connection_closes_when_its_token_expires_past_the_allowed_skew() {
    let app = MqttApp::spawn(settings()).await;
    app.device(REG, "dev-1").await;
    let now = Timestamp::now().as_second();
    // Expired 9 min 57 s ago: within the 10 minutes of skew for another 3 s.
    let nearly = Signer::rsa("rsa_private").token(now - 1200, now - 597, PROJECT);
    let started = Instant::now();
    let mut raw = Raw::connected(app.addr, &client_id(REG, "dev-1"), &nearly).await;
    raw.until_closed(Duration::from_secs(10)).await;
    let held = started.elapsed();
    assert!(held >= Duration::from_secs(1), "{held:?}");
    let message = last_error(&app.device_record(REG, "dev-1").await);
    assert!(message.contains("token expired"), "{message}");
}

#[tokio::test]
async fn a_client_silent_past_one_and_a_half_keepalives_is_closed_and_pings_keep_it_open() {
    let app = MqttApp::spawn(settings()).await;
    app.device(REG, "dev-1").await;
    app.device(REG, "dev-2").await;
    let (mut silent, code) = Raw::connect(app.addr, &client_id(REG, "dev-1"), &token(), 1).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let (mut pinging, _) = Raw::connect(app.addr, &client_id(REG, "dev-2"), &token(), 1).await;
    let started = Instant::now();
    let pinger = tokio::spawn(async move {
        for _ in 0..6 {
            pinging.send(&Packet::PingReq).await;
            assert_eq!(pinging.recv().await, Some(Packet::PingResp));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    silent.until_closed(Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1400), "{waited:?}");
    pinger.await.unwrap();
    let device = app.device_record(REG, "dev-2").await;
    assert!(device["lastHeartbeatTime"].is_string(), "{device}");
    let message = last_error(&app.device_record(REG, "dev-1").await);
    assert!(message.contains("keepalive"), "{message}");
}

#[tokio::test]
async fn messages_over_the_connection_rate_are_refused_while_other_devices_go_on() {
    let app = MqttApp::spawn(MqttSettings {
        messages_per_second: 5,
        ..settings()
    })
    .await;
    app.device(REG, "dev-1").await;
    app.device(REG, "dev-2").await;
    let mut fast = Raw::connected(app.addr, &client_id(REG, "dev-1"), &token()).await;
    fast.send(&subscribe(1, &[("/devices/dev-1/errors", QoS::AtMostOnce)]))
        .await;
    assert!(matches!(fast.recv().await, Some(Packet::SubAck(_))));
    for pkid in 1..=20 {
        fast.send(&publish(
            "/devices/dev-1/events",
            QoS::AtLeastOnce,
            pkid,
            b"x",
        ))
        .await;
    }
    let (mut acked, mut refused) = (0, 0);
    while let Some(Some(packet)) = fast.recv_within(Duration::from_millis(800)).await {
        match packet {
            Packet::PubAck(_) => acked += 1,
            Packet::Publish(p) if p.topic == "/devices/dev-1/errors" => {
                let text = String::from_utf8_lossy(&p.payload).to_string();
                assert!(text.contains("RATE_LIMITED"), "{text}");
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!((5..=7).contains(&acked), "acked {acked}");
    assert_eq!(acked + refused, 20);

    // The other device is not slowed, and the fast one is still connected.
    let mut calm = Raw::connected(app.addr, &client_id(REG, "dev-2"), &token()).await;
    calm.send(&publish("/devices/dev-2/events", QoS::AtLeastOnce, 9, b"y"))
        .await;
    assert!(matches!(calm.recv().await, Some(Packet::PubAck(ack)) if ack.pkid == 9));
    fast.send(&Packet::PingReq).await;
    assert_eq!(fast.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn blocking_a_connected_device_closes_its_connection() {
    let app = MqttApp::spawn(settings()).await;
    app.device(REG, "dev-1").await;
    let mut raw = Raw::connected(app.addr, &client_id(REG, "dev-1"), &token()).await;
    let (status, _) = app
        .app
        .admin
        .patch(
            &format!("{}?updateMask=blocked", device_path(REG, "dev-1")),
            serde_json::json!({"blocked": true}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    raw.until_closed(WAIT).await;
}

#[tokio::test]
async fn a_malformed_packet_and_bad_reserved_flags_close_the_connection() {
    let app = MqttApp::spawn(settings()).await;
    app.device(REG, "dev-1").await;
    let id = client_id(REG, "dev-1");
    let mut raw = Raw::connected(app.addr, &id, &token()).await;
    raw.send_bytes(&[0x80, 0x02, 0x00, 0x01]).await; // SUBSCRIBE with flags 0000
    raw.until_closed(WAIT).await;
    let mut raw = Raw::connected(app.addr, &id, &token()).await;
    raw.send_bytes(&[0xF0, 0x00]).await; // packet type 15 does not exist
    raw.until_closed(WAIT).await;
}

#[tokio::test]
async fn shutdown_waits_for_owed_pubacks_then_closes() {
    let app = MqttApp::spawn(settings()).await;
    app.device(REG, "dev-1").await;
    let mut raw = Raw::connected(app.addr, &client_id(REG, "dev-1"), &token()).await;
    raw.send(&publish(
        "/devices/dev-1/events",
        QoS::AtLeastOnce,
        5,
        b"last",
    ))
    .await;
    assert!(matches!(raw.recv().await, Some(Packet::PubAck(ack)) if ack.pkid == 5));
    app.shut_down();
    raw.until_closed(WAIT).await;
    app.mqtt.wait(Duration::from_secs(5)).await;
    // The listener is gone once shutdown began: no new connection is taken.
    assert!(tokio::net::TcpStream::connect(app.addr).await.is_err());
}

#[tokio::test]
async fn with_pubsub_stopped_an_event_gets_no_puback_and_its_resend_lands_once_pubsub_is_back() {
    let emulator = PrivatePubSub::start();
    let rest = PubSubRest::new(&emulator.host);
    let (topic, subscription) = rest.topic_with_subscription(PROJECT).await;
    let sink = ingest::sink::pubsub::PubSubSink::new(ingest::sink::pubsub::PubSubSettings {
        emulator_host: Some(emulator.host.clone()),
        publish_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let app = MqttApp::spawn_with_sink(settings(), Some(std::sync::Arc::new(sink))).await;
    app.app
        .create_registry_routed(REG, &[("", topic.topic())], None)
        .await;
    app.app
        .admin
        .create_device(REG, "dev-1", "RSA_PEM", "rsa_public")
        .await;
    let id = client_id(REG, "dev-1");

    let mut raw = Raw::connected(app.addr, &id, &token()).await;
    raw.send(&publish(
        "/devices/dev-1/events",
        QoS::AtLeastOnce,
        1,
        b"before",
    ))
    .await;
    assert!(matches!(raw.recv().await, Some(Packet::PubAck(ack)) if ack.pkid == 1));
    assert_eq!(rest.pull(&subscription, 1).await.len(), 1);

    emulator.stop();
    raw.send(&publish(
        "/devices/dev-1/events",
        QoS::AtLeastOnce,
        2,
        b"during",
    ))
    .await;
    let before_close = raw.until_closed(Duration::from_secs(15)).await;
    assert!(
        !before_close.iter().any(|p| matches!(p, Packet::PubAck(_))),
        "acknowledged while Pub/Sub was down: {before_close:?}"
    );
    let message = last_error(&app.device_record(REG, "dev-1").await);
    assert!(message.contains("Pub/Sub"), "{message}");

    // Back (empty, as the emulator keeps nothing): the client sends its unacknowledged message
    // again on a new connection, and this time it is acknowledged and can be pulled.
    emulator.restart();
    rest.put(&topic.to_string(), serde_json::json!({})).await;
    rest.put(
        &subscription,
        serde_json::json!({"topic": topic.to_string(), "ackDeadlineSeconds": 60}),
    )
    .await;
    let mut again = Raw::connected(app.addr, &id, &token()).await;
    let Packet::Publish(mut resent) =
        publish("/devices/dev-1/events", QoS::AtLeastOnce, 2, b"during")
    else {
        unreachable!()
    };
    resent.dup = true;
    again.send(&Packet::Publish(resent)).await;
    assert!(matches!(again.recv().await, Some(Packet::PubAck(ack)) if ack.pkid == 2));
    let pulled = rest.pull(&subscription, 1).await;
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].data, b"during");
    assert_eq!(pulled[0].attributes["deviceId"], "dev-1");
}

#[tokio::test]
async fn a_renewed_certificate_reaches_new_connections_while_established_ones_stay_up() {
    use ingest::mqtt::tls::{TlsSource, prepare};
    let app = MqttApp::spawn(settings()).await;
    app.device(REG, "dev-1").await;
    app.device(REG, "dev-2").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (ca_a, cert_a, key_a) = certificate_set("CA A");
    std::fs::write(&cert, cert_a).unwrap();
    std::fs::write(&key, key_a).unwrap();
    let tls = prepare(&TlsSource::Files {
        cert: cert.clone(),
        key: key.clone(),
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = app.mqtt.clone();
    tokio::spawn(async move { serving.serve(listener, Some(tls.acceptor)).await });

    let mut old = tls_to(addr, &ca_a).await.unwrap();
    let connect = connect_packet(&client_id(REG, "dev-1"), &token(), 60);
    assert!(
        matches!(exchange(&mut old, &connect).await, Packet::ConnAck(a) if a.code == ConnectReturnCode::Success)
    );

    // Renewed in place, the way certbot or a secret mount replaces files.
    let (ca_b, cert_b, key_b) = certificate_set("CA B");
    std::fs::write(&key, key_b).unwrap();
    std::fs::write(&cert, cert_b).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut renewed = loop {
        if let Ok(stream) = tls_to(addr, &ca_b).await {
            break stream;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        tls_to(addr, &ca_a).await.is_err(),
        "the old certificate is no longer served"
    );
    let connect = connect_packet(&client_id(REG, "dev-2"), &token(), 60);
    assert!(
        matches!(exchange(&mut renewed, &connect).await, Packet::ConnAck(a) if a.code == ConnectReturnCode::Success)
    );
    assert_eq!(exchange(&mut old, &Packet::PingReq).await, Packet::PingResp);
}

#[tokio::test]
async fn a_connection_idle_past_the_idle_timeout_is_closed() {
    let app = MqttApp::spawn(MqttSettings {
        idle_timeout: Duration::from_secs(1),
        ..settings()
    })
    .await;
    app.device(REG, "dev-1").await;
    // No keepalive: only the idle timeout can end it.
    let (mut raw, code) = Raw::connect(app.addr, &client_id(REG, "dev-1"), &token(), 0).await;
    assert_eq!(code, ConnectReturnCode::Success);
    raw.until_closed(Duration::from_secs(5)).await;
    let message = last_error(&app.device_record(REG, "dev-1").await);
    assert!(message.contains("idle"), "{message}");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_a_slot_frees() {
    let app = MqttApp::spawn(MqttSettings {
        max_connections: 1,
        ..settings()
    })
    .await;
    app.device(REG, "dev-1").await;
    app.device(REG, "dev-2").await;
    let mut first = Raw::connected(app.addr, &client_id(REG, "dev-1"), &token()).await;
    let mut second = Raw::open(app.addr).await;
    second
        .send(&connect_packet(&client_id(REG, "dev-2"), &token(), 60))
        .await;
    assert_eq!(
        second.recv_within(Duration::from_millis(800)).await,
        None,
        "served beyond the cap"
    );
    first.send(&Packet::Disconnect).await;
    assert_eq!(first.recv().await, None);
    assert!(
        matches!(second.recv().await, Some(Packet::ConnAck(a)) if a.code == ConnectReturnCode::Success)
    );
}

#[test]
fn the_admin_role_serves_no_mqtt_even_when_asked_to() {
    let process = crate::support::spawn_ingest(
        &[
            "--role",
            "admin",
            "--mqtt-plain-addr=127.0.0.1:0",
            "--mqtt-addr=127.0.0.1:0",
        ],
        &[],
    );
    assert!(process.admin_url().starts_with("http://"));
    let announced = process.all_announced();
    assert!(
        !announced.keys().any(|label| label.contains("MQTT")),
        "{announced:?}"
    );
}

#[tokio::test]
async fn one_address_holds_at_most_its_cap_of_mqtt_connections_and_a_device_still_connects() {
    let app = MqttApp::spawn(MqttSettings {
        max_connections_per_address: 20,
        ..settings()
    })
    .await;
    app.device(REG, "dev-1").await;
    // 200 silent sockets from 127.0.0.2: 20 are held (until the CONNECT deadline), the rest
    // closed as they arrive.
    let mut silent = Vec::new();
    for _ in 0..200 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        silent.push(socket.connect(app.addr).await.unwrap());
    }
    let mut closed = 0;
    for stream in &mut silent {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(
            Duration::from_millis(20),
            tokio::io::AsyncReadExt::read(stream, &mut byte),
        )
        .await;
        if matches!(read, Ok(Ok(0) | Err(_))) {
            closed += 1;
        }
    }
    assert_eq!(closed, 180, "of 200 sockets from one address");
    let started = Instant::now();
    Raw::connected(app.addr, &client_id(REG, "dev-1"), &token()).await;
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// A connection that sent `header` and then a CONNECT for `dev`: the first packet back, or
/// `None` when the bridge closed without one.
async fn behind_a_proxy(app: &MqttApp, header: &[u8], dev: &str) -> (Raw, Option<Packet>) {
    let mut raw = Raw::open(app.addr).await;
    raw.send_bytes(header).await;
    raw.send(&connect_packet(&client_id(REG, dev), &token(), 60))
        .await;
    let first = raw.recv().await;
    (raw, first)
}

fn accepted(first: &Option<Packet>) -> bool {
    matches!(first, Some(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success)
}

#[tokio::test]
async fn behind_a_proxy_balancer_the_proxy_header_names_the_address_the_cap_counts() {
    let app = MqttApp::spawn(MqttSettings {
        proxy_protocol: true,
        max_connections_per_address: 2,
        ..settings()
    })
    .await;
    for dev in ["dev-1", "dev-2", "dev-3", "dev-4", "dev-5"] {
        app.device(REG, dev).await;
    }
    // No header: closed without a word, whatever follows.
    let (_, first) = behind_a_proxy(&app, b"", "dev-1").await;
    assert_eq!(first, None);

    // Every connection comes from 127.0.0.1, the "balancer"; the cap counts the header's address.
    let v1 = |ip: &str| format!("PROXY TCP4 {ip} 10.0.0.1 40000 8883\r\n").into_bytes();
    let (_held_1, first) = behind_a_proxy(&app, &v1("203.0.113.7"), "dev-1").await;
    assert!(accepted(&first), "{first:?}");
    let (_held_2, first) = behind_a_proxy(&app, &v1("203.0.113.7"), "dev-2").await;
    assert!(accepted(&first), "{first:?}");
    let (_, first) = behind_a_proxy(&app, &v1("203.0.113.7"), "dev-3").await;
    assert_eq!(first, None, "a third connection from 203.0.113.7");
    let (_held_3, first) = behind_a_proxy(&app, &v1("203.0.113.8"), "dev-3").await;
    assert!(accepted(&first), "{first:?}");

    // Version 2, as AWS's NLB and HAProxy send it: TCP over IPv4 from 198.51.100.9:4242.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 9, 10, 0, 0, 1, 0x10, 0x92, 0x22, 0xB3]);
    let (_held_4, first) = behind_a_proxy(&app, &v2, "dev-4").await;
    assert!(accepted(&first), "{first:?}");

    // A header that lies about its family is refused like none at all.
    let (_, first) = behind_a_proxy(&app, b"PROXY TCP4 2001:db8::1 ::1 1 2\r\n", "dev-5").await;
    assert_eq!(first, None);
}

#[tokio::test]
async fn the_reason_for_a_close_arrives_even_when_the_client_has_sent_more_meanwhile() {
    let app = MqttApp::spawn(settings()).await;
    app.device(REG, "dev-1").await;
    for attempt in 0..10 {
        let mut raw = Raw::connected(app.addr, &client_id(REG, "dev-1"), &token()).await;
        raw.send(&subscribe(1, &[("/devices/dev-1/errors", QoS::AtMostOnce)]))
            .await;
        assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
        // A QoS 2 publish closes the connection; the burst behind it is never read, and a
        // socket closed with unread bytes is reset.
        let mut burst = bytes::BytesMut::new();
        publish("/devices/dev-1/events", QoS::ExactlyOnce, 1, b"x")
            .write(&mut burst, usize::MAX)
            .unwrap();
        for pkid in 2..200 {
            publish("/devices/dev-1/events", QoS::AtLeastOnce, pkid, &[0; 1024])
                .write(&mut burst, usize::MAX)
                .unwrap();
        }
        raw.send_bytes(&burst).await;
        // A client busy elsewhere writes again before it reads: like rumqttc, it would drop the
        // connection unread if that write failed because the bridge had reset the socket.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let write = raw.try_send_bytes(&[0xC0, 0x00]).await;
        assert!(
            write.is_ok(),
            "attempt {attempt}: the socket was reset: {write:?}"
        );
        let before_close = raw.until_closed(WAIT).await;
        let told = before_close.iter().any(|p| {
            matches!(p, Packet::Publish(p) if p.topic == "/devices/dev-1/errors"
                && String::from_utf8_lossy(&p.payload).contains("QoS 2"))
        });
        assert!(
            told,
            "attempt {attempt}: no reason before the close: {before_close:?}"
        );
    }
}
