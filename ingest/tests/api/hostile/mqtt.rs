//! Hostile MQTT: sockets that never CONNECT, half a CONNECT, the wrong protocol, bad client ids,
//! someone else's device, malformed and oversized packets, forbidden QoS, topics and
//! subscriptions, a second CONNECT, floods. Before CONNECT the answer is a CONNACK code or a close
//! at the deadline; after it, a misbehaving device (the victim device, connected with its own
//! key) is closed or refused on its own, and the normal device is not touched.

use std::time::Duration;

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnectReturnCode, Packet, Publish, Subscribe, SubscribeFilter, SubscribeReasonCode,
};
use tokio::net::TcpStream;

use super::{DEADLINE, DEVICE, OTHER, REG, Suite, Target, closed_within};
use crate::support::PROJECT;
use crate::support::device::Signer;
use crate::support::mqtt::{Raw, client_id, connect_packet};

/// Long enough for any answer the bridge gives at once.
const PROMPT: Duration = Duration::from_secs(5);

/// The CONNACK code answering `bytes` sent first on a new connection, then a close.
async fn connack_for(target: &Target, bytes: &[u8], code: ConnectReturnCode) -> Result<(), String> {
    let mut raw = Raw::open(target.mqtt_addr).await;
    raw.send_bytes(bytes).await;
    match raw.recv_within(PROMPT).await {
        Some(Some(Packet::ConnAck(ack))) if ack.code == code => {}
        other => return Err(format!("expected CONNACK {code:?}, got {other:?}")),
    }
    match raw.recv_within(PROMPT).await {
        Some(None) => Ok(()),
        other => Err(format!("expected a close after the CONNACK, got {other:?}")),
    }
}

fn encode(packet: &Packet) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    packet.write(&mut out, usize::MAX).unwrap();
    out.to_vec()
}

fn connect_bytes(client: &str, token: &str) -> Vec<u8> {
    encode(&connect_packet(client, token, 60))
}

/// `bytes` sent first on a new connection: closed (promptly, with no CONNACK of success).
async fn closes_before_connack(target: &Target, bytes: &[u8]) -> Result<(), String> {
    let mut raw = Raw::open(target.mqtt_addr).await;
    raw.send_bytes(bytes).await;
    let mut seen = Vec::new();
    loop {
        match raw.recv_within(PROMPT).await {
            Some(Some(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                return Err("accepted".to_owned());
            }
            Some(Some(packet)) => seen.push(packet),
            Some(None) => return Ok(()),
            None => return Err(format!("still open after {PROMPT:?}, sent {seen:?}")),
        }
    }
}

/// The victim device connected with its own key: the misbehaving client of the cases below.
async fn misbehaving(target: &Target) -> Raw {
    Raw::connected(
        target.mqtt_addr,
        &client_id(REG, OTHER),
        &Signer::ec("ec_private_pkcs8").fresh(),
    )
    .await
}

/// A connected device sends `bytes`: closed, with no PUBACK before the close.
async fn closes_after(target: &Target, bytes: &[u8]) -> Result<(), String> {
    let mut raw = misbehaving(target).await;
    raw.send_bytes(bytes).await;
    let mut seen = Vec::new();
    loop {
        match raw.recv_within(PROMPT).await {
            Some(Some(Packet::PubAck(_))) => return Err("acknowledged".to_owned()),
            Some(Some(packet)) => seen.push(packet),
            Some(None) => return Ok(()),
            None => return Err(format!("still open after {PROMPT:?}, sent {seen:?}")),
        }
    }
}

fn publish(topic: &str, qos: QoS, payload: Vec<u8>) -> Vec<u8> {
    let mut publish = Publish::new(topic, qos, payload);
    publish.pkid = u16::from(qos != QoS::AtMostOnce);
    encode(&Packet::Publish(publish))
}

/// A SUBSCRIBE to `filter`: its return code.
async fn granted(target: &Target, filter: &str, qos: QoS) -> Result<SubscribeReasonCode, String> {
    let mut raw = misbehaving(target).await;
    let mut subscribe = Subscribe::new_many([SubscribeFilter::new(filter.to_owned(), qos)]);
    subscribe.pkid = 7;
    raw.send(&Packet::Subscribe(subscribe)).await;
    loop {
        match raw.recv_within(PROMPT).await {
            Some(Some(Packet::SubAck(ack))) => return Ok(ack.return_codes[0]),
            Some(Some(_)) => {}
            other => return Err(format!("expected a SUBACK, got {other:?}")),
        }
    }
}

async fn refused_subscription(target: &Target, filter: &str) -> Result<(), String> {
    match granted(target, filter, QoS::AtLeastOnce).await? {
        SubscribeReasonCode::Failure => Ok(()),
        other => Err(format!("expected a failure code, got {other:?}")),
    }
}

/// `count` silent sockets from `127.0.0.2`: the normal device (from 127.0.0.1) still connects.
async fn flood(target: &Target, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        if let Ok(stream) = socket.connect(target.mqtt_addr).await {
            held.push(stream);
        }
    }
    held
}

pub async fn run(mut suite: Suite) -> usize {
    let token = suite.target.signer.fresh();
    let own = client_id(REG, DEVICE);

    let t = &suite.target;
    let mut silent = TcpStream::connect(t.mqtt_addr).await.unwrap();
    let outcome = closed_within(&mut silent, DEADLINE * 3)
        .await
        .and_then(|after| {
            (after >= DEADLINE - Duration::from_millis(200))
                .then_some(())
                .ok_or(format!("closed after {after:?}, before the deadline"))
        });
    suite
        .case("a socket that never sends CONNECT", outcome)
        .await;

    let t = &suite.target;
    let mut half = Raw::open(t.mqtt_addr).await;
    half.send_bytes(&[0x10, 40, 0, 4, b'M']).await;
    let outcome = match half.recv_within(DEADLINE * 3).await {
        Some(None) => Ok(()),
        other => Err(format!("expected a close at the deadline, got {other:?}")),
    };
    suite.case("half a CONNECT", outcome).await;

    let t = &suite.target;
    let held = flood(t, 1000).await;
    let outcome = if held.is_empty() {
        Err("no socket from 127.0.0.2 connected".to_owned())
    } else {
        Ok(())
    };
    suite
        .case("1,000 silent sockets from one other address", outcome)
        .await;
    drop(held);

    let t = &suite.target;
    let Packet::Connect(mut v5) = connect_packet(&own, &token, 60) else {
        unreachable!()
    };
    v5.protocol = rumqttc::mqttbytes::Protocol::V5;
    let outcome = connack_for(
        t,
        &encode(&Packet::Connect(v5)),
        ConnectReturnCode::RefusedProtocolVersion,
    )
    .await;
    suite.case("MQTT 5", outcome).await;

    let t = &suite.target;
    let v31: Vec<u8> = [&[0x10, 15, 0, 6][..], b"MQIsdp", &[3, 2, 0, 60, 0, 1], b"x"].concat();
    let outcome = connack_for(t, &v31, ConnectReturnCode::RefusedProtocolVersion).await;
    suite.case("MQTT 3.1", outcome).await;

    let t = &suite.target;
    let mut wrong_name = connect_bytes(&own, &token);
    wrong_name[4..8].copy_from_slice(b"MQTX");
    let outcome = closes_before_connack(t, &wrong_name).await;
    suite.case("protocol name MQTX", outcome).await;

    let t = &suite.target;
    let mut reserved = connect_bytes(&own, &token);
    let flags = 2 + 4 + 1; // fixed header (2 bytes: short packet) + name + level
    reserved[flags] |= 1;
    let outcome = closes_before_connack(t, &reserved).await;
    suite
        .case("CONNECT with the reserved flag set", outcome)
        .await;

    let t = &suite.target;
    let outcome = closes_before_connack(
        t,
        &publish("/devices/normal/events", QoS::AtLeastOnce, b"x".to_vec()),
    )
    .await;
    suite.case("PUBLISH before CONNECT", outcome).await;

    let t = &suite.target;
    let outcome = connack_for(
        t,
        &connect_bytes("hello", &token),
        ConnectReturnCode::BadClientId,
    )
    .await;
    suite
        .case("a client id that is not a device path", outcome)
        .await;

    let t = &suite.target;
    let long_id = format!(
        "projects/{PROJECT}/locations/x/registries/{REG}/devices/{}",
        "d".repeat(5000)
    );
    let outcome = connack_for(
        t,
        &connect_bytes(&long_id, &token),
        ConnectReturnCode::BadClientId,
    )
    .await;
    suite.case("a 5,000-character client id", outcome).await;

    let t = &suite.target;
    let outcome = connack_for(
        t,
        &connect_bytes(&client_id(REG, OTHER), &token),
        ConnectReturnCode::BadUserNamePassword,
    )
    .await;
    suite
        .case(
            "another device's client id with this device's token",
            outcome,
        )
        .await;

    let t = &suite.target;
    let outcome = connack_for(
        t,
        &connect_bytes(&client_id(REG, "nobody"), &token),
        ConnectReturnCode::NotAuthorized,
    )
    .await;
    suite.case("a device that does not exist", outcome).await;

    let t = &suite.target;
    let outcome = connack_for(
        t,
        &connect_bytes(&own, ""),
        ConnectReturnCode::BadUserNamePassword,
    )
    .await;
    suite.case("no password", outcome).await;

    let t = &suite.target;
    let outcome = closes_before_connack(t, &[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    suite
        .case("a remaining length in five bytes", outcome)
        .await;

    let t = &suite.target;
    let outcome = closes_after(t, &[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    suite.case("a PUBLISH announcing 256 MB", outcome).await;

    let t = &suite.target;
    let outcome = closes_after(
        t,
        &publish(
            &format!("/devices/{OTHER}/events"),
            QoS::AtLeastOnce,
            vec![b'x'; 300 * 1024],
        ),
    )
    .await;
    suite.case("a 300 KB event", outcome).await;

    let t = &suite.target;
    let outcome = closes_after(t, &connect_bytes(&client_id(REG, OTHER), &token)).await;
    suite.case("a second CONNECT", outcome).await;

    let t = &suite.target;
    let outcome = closes_after(
        t,
        &publish(
            &format!("/devices/{OTHER}/events"),
            QoS::ExactlyOnce,
            b"x".to_vec(),
        ),
    )
    .await;
    suite.case("an event at QoS 2", outcome).await;

    let t = &suite.target;
    let outcome = closes_after(
        t,
        &publish(
            &format!("/devices/{DEVICE}/events"),
            QoS::AtLeastOnce,
            b"x".to_vec(),
        ),
    )
    .await;
    suite
        .case("an event on another device's topic", outcome)
        .await;

    let t = &suite.target;
    let outcome = closes_after(
        t,
        &publish(
            &format!("/devices/{OTHER}/events/#"),
            QoS::AtLeastOnce,
            b"x".to_vec(),
        ),
    )
    .await;
    suite.case("a wildcard in a PUBLISH topic", outcome).await;

    let t = &suite.target;
    let outcome = closes_after(t, &publish("/foo/bar", QoS::AtLeastOnce, b"x".to_vec())).await;
    suite
        .case("a topic that is not a device topic", outcome)
        .await;

    let t = &suite.target;
    let outcome = closes_after(t, &publish("", QoS::AtLeastOnce, b"x".to_vec())).await;
    suite.case("an empty topic", outcome).await;

    let t = &suite.target;
    let mut not_utf8 = publish("/devices/victim/events/xx", QoS::AtLeastOnce, b"x".to_vec());
    let at = not_utf8.windows(2).position(|w| w == b"xx").unwrap();
    not_utf8[at..at + 2].copy_from_slice(&[0xC3, 0x28]);
    let outcome = closes_after(t, &not_utf8).await;
    suite.case("a topic that is not UTF-8", outcome).await;

    let t = &suite.target;
    let outcome = closes_after(t, &[0x80, 0x02, 0x00, 0x01]).await;
    suite
        .case("SUBSCRIBE with reserved flags 0000", outcome)
        .await;

    let t = &suite.target;
    let outcome = closes_after(t, &[0xF0, 0x00]).await;
    suite.case("packet type 15", outcome).await;

    let t = &suite.target;
    let outcome = closes_after(t, &[0x62, 0x02, 0x00, 0x09]).await;
    suite.case("a PUBREL for nothing", outcome).await;

    let t = &suite.target;
    let outcome = refused_subscription(t, &format!("/devices/{DEVICE}/config")).await;
    suite
        .case("a subscription to another device's config", outcome)
        .await;

    let t = &suite.target;
    let outcome = refused_subscription(t, "#").await;
    suite.case("a subscription to #", outcome).await;

    let t = &suite.target;
    let outcome = refused_subscription(t, "/devices/+/commands/#").await;
    suite
        .case("a subscription to every device's commands", outcome)
        .await;

    let t = &suite.target;
    let mut flood_raw = misbehaving(t).await;
    let mut burst = Vec::new();
    for pkid in 1..=500u16 {
        let mut p = Publish::new(
            format!("/devices/{OTHER}/events"),
            QoS::AtLeastOnce,
            b"x".to_vec(),
        );
        p.pkid = pkid;
        burst.extend(encode(&Packet::Publish(p)));
    }
    flood_raw.send_bytes(&burst).await;
    let mut acked = 0;
    while let Some(Some(packet)) = flood_raw.recv_within(Duration::from_millis(1500)).await {
        if matches!(packet, Packet::PubAck(_)) {
            acked += 1;
        }
    }
    let outcome = (acked <= 150).then_some(()).ok_or(format!(
        "{acked} of a 500-message burst acknowledged (limit 100/s)"
    ));
    suite.case("500 events in one burst", outcome).await;

    let t = &suite.target;
    let mut pinger = misbehaving(t).await;
    pinger.send_bytes(&[0xC0, 0x00].repeat(10_000)).await;
    let mut pongs = 0;
    while let Some(Some(Packet::PingResp)) = pinger.recv_within(Duration::from_millis(500)).await {
        pongs += 1;
    }
    let outcome = (pongs > 0).then_some(()).ok_or("no PINGRESP".to_owned());
    suite.case("10,000 PINGREQs at once", outcome).await;

    suite.finish()
}
