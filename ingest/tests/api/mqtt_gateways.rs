//! Gateways over MQTT, over real sockets: a gateway connects with its own JWT, attaches devices
//! on `/devices/{d}/attach` as its `gatewayAuthMethod` allows (every method × bound or not ×
//! with or without the device's token), then publishes, receives configs and commands for them
//! on their topics over its one connection, and detaches them. Refusals about its devices reach
//! its errors topic and never drop the gateway: a publish for a device not attached, a device
//! blocked or unbound while attached. The paho-mqtt gateway of Google's samples is in
//! `python_mqtt_gateway`.

use std::time::Duration;

use crate::support::device::Signer;
use crate::support::key;
use crate::support::mqtt::{MqttApp, Raw, WAIT, client_id};
use ingest::mqtt::MqttSettings;
use ingest::registry::RegistryStore;
use reqwest::StatusCode;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish, Subscribe, SubscribeFilter};
use serde_json::{Value, json};
use shared::proto3::encode_base64;

const REG: &str = "reg-1";

/// A token signed with the RSA key every device of these tests holds.
fn token() -> String {
    Signer::rsa("rsa_private").fresh()
}

/// A token for no device here: signed with a key none holds.
fn foreign_token() -> String {
    ec_token()
}

/// A token signed with the EC key, which only the devices created with `ec_public` hold.
fn ec_token() -> String {
    Signer::ec("ec_private_pkcs8").fresh()
}

/// Creates gateway `id` with `method` (and the registry, first time).
async fn gateway(app: &MqttApp, id: &str, method: &str) {
    if app.app.admin.get(&format!("/registries/{REG}")).await.0 != StatusCode::OK {
        app.app.admin.create_registry(REG).await;
    }
    let body = json!({
        "id": id,
        "credentials": [{"publicKey": {"format": "RSA_PEM", "key": key("rsa_public")}}],
        "gatewayConfig": {"gatewayType": "GATEWAY", "gatewayAuthMethod": method},
    });
    let (status, created) = app
        .app
        .admin
        .post(&format!("/registries/{REG}/devices"), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["gatewayConfig"]["gatewayType"], "GATEWAY");
}

async fn bind(app: &MqttApp, gateway: &str, device: &str) -> (StatusCode, Value) {
    let body = json!({"gatewayId": gateway, "deviceId": device});
    app.app
        .admin
        .post(&format!("/registries/{REG}:bindDeviceToGateway"), body)
        .await
}

async fn unbind(app: &MqttApp, gateway: &str, device: &str) -> (StatusCode, Value) {
    let body = json!({"gatewayId": gateway, "deviceId": device});
    app.app
        .admin
        .post(&format!("/registries/{REG}:unbindDeviceFromGateway"), body)
        .await
}

fn subscribe(pkid: u16, filters: &[(&str, QoS)]) -> Packet {
    let mut subscribe = Subscribe::new_many(
        filters
            .iter()
            .map(|(path, qos)| SubscribeFilter::new((*path).to_owned(), *qos)),
    );
    subscribe.pkid = pkid;
    Packet::Subscribe(subscribe)
}

fn publish(topic: &str, pkid: u16, payload: &[u8]) -> Packet {
    let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec());
    publish.pkid = pkid;
    Packet::Publish(publish)
}

/// The gateway `gw` connected and subscribed to its errors topic.
async fn gateway_connection(app: &MqttApp, gw: &str) -> Raw {
    let mut raw = Raw::connected(app.addr, &client_id(REG, gw), &token()).await;
    raw.send(&subscribe(
        1,
        &[(&format!("/devices/{gw}/errors"), QoS::AtMostOnce)],
    ))
    .await;
    assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
    raw
}

/// What came next: a PUBACK's packet id, or an error's JSON from the errors topic.
enum Heard {
    PubAck(u16),
    Error(Value),
    Publish(Publish),
}

async fn hear(raw: &mut Raw) -> Heard {
    match raw.recv().await {
        Some(Packet::PubAck(PubAck { pkid })) => Heard::PubAck(pkid),
        Some(Packet::Publish(p)) if p.topic.ends_with("/errors") => {
            Heard::Error(serde_json::from_slice(&p.payload).unwrap())
        }
        Some(Packet::Publish(p)) => Heard::Publish(p),
        other => panic!("expected a PUBACK or a message, got {other:?}"),
    }
}

/// Asserts the next thing heard is an error about `device` naming `words`, and that no PUBACK
/// follows within a moment.
async fn assert_error_about(raw: &mut Raw, device: &str, words: &str) {
    match hear(raw).await {
        Heard::Error(error) => {
            assert_eq!(error["device_id"], device, "{error}");
            let text = error["description"].as_str().unwrap();
            assert!(text.contains(words), "{words}: {error}");
        }
        Heard::PubAck(pkid) => panic!("expected an error about {device}, got PUBACK {pkid}"),
        Heard::Publish(p) => panic!("expected an error about {device}, got {p:?}"),
    }
    let more = raw.recv_within(Duration::from_millis(300)).await;
    assert!(
        !matches!(more, Some(Some(Packet::PubAck(_)))),
        "no PUBACK after a refusal: {more:?}"
    );
}

/// The gateway is still served: a PINGREQ is answered.
async fn assert_still_connected(raw: &mut Raw) {
    raw.send(&Packet::PingReq).await;
    loop {
        match raw.recv().await {
            Some(Packet::PingResp) => return,
            Some(_) => continue,
            None => panic!("the gateway was disconnected"),
        }
    }
}

#[tokio::test]
async fn each_auth_method_attaches_exactly_the_devices_it_should() {
    let app = MqttApp::spawn(MqttSettings::default()).await;
    let methods = [
        "ASSOCIATION_ONLY",
        "DEVICE_AUTH_TOKEN_ONLY",
        "ASSOCIATION_AND_DEVICE_AUTH_TOKEN",
    ];
    for (m, method) in methods.into_iter().enumerate() {
        let gw = format!("gw-{m}");
        gateway(&app, &gw, method).await;
        let mut raw = gateway_connection(&app, &gw).await;
        let mut pkid = 10;
        for bound in [true, false] {
            for with_token in [true, false] {
                let dev = format!("dev-{m}-{bound}-{with_token}");
                app.device(REG, &dev).await;
                if bound {
                    assert_eq!(bind(&app, &gw, &dev).await.0, StatusCode::OK);
                }
                let payload = if with_token {
                    json!({"authorization": token()}).to_string()
                } else {
                    String::new()
                };
                pkid += 1;
                raw.send(&publish(
                    &format!("/devices/{dev}/attach"),
                    pkid,
                    payload.as_bytes(),
                ))
                .await;
                let needs_binding = method != "DEVICE_AUTH_TOKEN_ONLY";
                let needs_token = method != "ASSOCIATION_ONLY";
                let case = format!("{method}, bound {bound}, token {with_token}");
                if (bound || !needs_binding) && (with_token || !needs_token) {
                    assert!(
                        matches!(hear(&mut raw).await, Heard::PubAck(p) if p == pkid),
                        "{case}: expected the attach acknowledged"
                    );
                } else {
                    let words = if !bound && needs_binding {
                        "not bound"
                    } else {
                        "own JWT"
                    };
                    assert_error_about(&mut raw, &dev, words).await;
                }
            }
        }
        // A token that is not the device's is refused even where binding alone would not do.
        if method != "ASSOCIATION_ONLY" {
            let dev = format!("dev-{m}-forged");
            app.device(REG, &dev).await;
            bind(&app, &gw, &dev).await;
            let payload = json!({"authorization": foreign_token()}).to_string();
            raw.send(&publish(
                &format!("/devices/{dev}/attach"),
                99,
                payload.as_bytes(),
            ))
            .await;
            assert_error_about(&mut raw, &dev, "").await;

            // A delegated device with another key type than the gateway's: its own ES256 token
            // attaches it, and the gateway's own JWT offered in its place does not.
            let dev = format!("dev-{m}-ec");
            let (status, created) = app
                .app
                .admin
                .post(
                    &format!("/registries/{REG}/devices"),
                    json!({"id": dev,
                           "credentials": [{"publicKey": {"format": "ES256_PEM", "key": key("ec_public")}}]}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{created}");
            if method != "DEVICE_AUTH_TOKEN_ONLY" {
                assert_eq!(bind(&app, &gw, &dev).await.0, StatusCode::OK);
            }
            let gateways_own = json!({"authorization": token()}).to_string();
            raw.send(&publish(
                &format!("/devices/{dev}/attach"),
                100,
                gateways_own.as_bytes(),
            ))
            .await;
            assert_error_about(&mut raw, &dev, "the device holds only EC (ES256) keys").await;
            let devices_own = json!({"authorization": ec_token()}).to_string();
            raw.send(&publish(
                &format!("/devices/{dev}/attach"),
                101,
                devices_own.as_bytes(),
            ))
            .await;
            assert!(
                matches!(hear(&mut raw).await, Heard::PubAck(101)),
                "{method}: the EC device's own ES256 token attaches it"
            );
        }
        assert_still_connected(&mut raw).await;
    }
}

#[tokio::test]
async fn a_gateway_speaks_for_two_devices_and_their_configs_and_commands_reach_it() {
    let app = MqttApp::spawn(MqttSettings::default()).await;
    gateway(&app, "gw-1", "ASSOCIATION_ONLY").await;
    let mut nums = Vec::new();
    for dev in ["dev-a", "dev-b"] {
        nums.push(app.device(REG, dev).await);
        assert_eq!(bind(&app, "gw-1", dev).await.0, StatusCode::OK);
    }
    app.set_config(REG, "dev-a", b"fan=on").await;
    let mut raw = gateway_connection(&app, "gw-1").await;
    for (pkid, dev) in [(2, "dev-a"), (3, "dev-b")] {
        raw.send(&publish(&format!("/devices/{dev}/attach"), pkid, b"{}"))
            .await;
        assert!(matches!(hear(&mut raw).await, Heard::PubAck(p) if p == pkid));
    }

    // Events for each, with each device's attributes; state for one.
    raw.send(&publish("/devices/dev-a/events/th", 4, b"21.5"))
        .await;
    raw.send(&publish(
        &format!("/devices/{}/events", nums[1]),
        5,
        b"19.0",
    ))
    .await;
    raw.send(&publish("/devices/dev-b/state", 6, b"ok")).await;
    for pkid in [4, 5, 6] {
        assert!(matches!(hear(&mut raw).await, Heard::PubAck(p) if p == pkid));
    }
    let messages = app.app.sink_messages();
    let events: Vec<(&str, &str, &str)> = messages
        .iter()
        .filter(|m| m["topic"].as_str().unwrap().ends_with("/events"))
        .map(|m| {
            let a = &m["attributes"];
            (
                a["deviceId"].as_str().unwrap(),
                a["deviceNumId"].as_str().unwrap(),
                a["subFolder"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("dev-a", nums[0].as_str(), "th"),
            ("dev-b", nums[1].as_str(), "")
        ]
    );

    // Configs after the SUBACK, each on its device's topic; a new one pushed at once.
    raw.send(&subscribe(
        7,
        &[
            ("/devices/dev-a/config", QoS::AtLeastOnce),
            ("/devices/dev-b/config", QoS::AtMostOnce),
        ],
    ))
    .await;
    let mut configs = Vec::new();
    while configs.len() < 2 {
        match raw.recv().await {
            Some(Packet::SubAck(ack)) => assert_eq!(ack.return_codes.len(), 2),
            Some(Packet::Publish(p)) => configs.push((p.topic.clone(), p.payload.to_vec(), p.pkid)),
            other => panic!("expected configs, got {other:?}"),
        }
    }
    configs.sort();
    assert_eq!(configs[0].0, "/devices/dev-a/config");
    assert_eq!(configs[0].1, b"fan=on");
    assert_eq!(configs[1].0, "/devices/dev-b/config");
    assert!(configs[1].1.is_empty(), "dev-b's version 1 is empty");
    raw.send(&Packet::PubAck(PubAck::new(configs[0].2))).await;
    app.set_config(REG, "dev-b", b"fan=off").await;
    match hear(&mut raw).await {
        Heard::Publish(p) => assert_eq!(
            (p.topic.as_str(), &p.payload[..]),
            ("/devices/dev-b/config", &b"fan=off"[..])
        ),
        _ => panic!("expected dev-b's new config"),
    }

    // A command for dev-a reaches the gateway on dev-a's topic; the call answers after PUBACK.
    raw.send(&subscribe(
        8,
        &[("/devices/dev-a/commands/#", QoS::AtLeastOnce)],
    ))
    .await;
    assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
    let body = json!({"binaryData": encode_base64(b"reboot"), "subfolder": "power"});
    let sending = tokio::spawn({
        let admin = app.app.admin.client.clone();
        let url = app.app.admin.url(&format!(
            "/registries/{REG}/devices/dev-a:sendCommandToDevice"
        ));
        async move { admin.post(url).json(&body).send().await.unwrap().status() }
    });
    let command = match hear(&mut raw).await {
        Heard::Publish(p) => p,
        _ => panic!("expected the command"),
    };
    assert_eq!(command.topic, "/devices/dev-a/commands/power");
    assert_eq!(&command.payload[..], b"reboot");
    raw.send(&Packet::PubAck(PubAck::new(command.pkid))).await;
    assert_eq!(sending.await.unwrap(), StatusCode::OK);

    // The devices show the gateway they spoke through.
    let record = app.device_record(REG, "dev-b").await;
    assert_eq!(
        record["gatewayConfig"]["lastAccessedGatewayId"], "gw-1",
        "{record}"
    );
    assert!(record["gatewayConfig"]["lastAccessedGatewayTime"].is_string());

    // Detached, dev-a is refused and no longer reachable; dev-b still is.
    raw.send(&publish("/devices/dev-a/detach", 9, b"")).await;
    assert!(matches!(hear(&mut raw).await, Heard::PubAck(9)));
    raw.send(&publish("/devices/dev-a/events", 10, b"late"))
        .await;
    assert_error_about(&mut raw, "dev-a", "has not attached").await;
    let (status, _) = app
        .send_command(REG, "dev-a", json!({"binaryData": "AA=="}))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "dev-a is not connected any more"
    );
    raw.send(&publish("/devices/dev-b/events", 11, b"still"))
        .await;
    assert!(matches!(hear(&mut raw).await, Heard::PubAck(11)));
}

#[tokio::test]
async fn blocking_or_unbinding_an_attached_device_detaches_it_and_keeps_the_gateway() {
    let app = MqttApp::spawn(MqttSettings::default()).await;
    gateway(&app, "gw-1", "ASSOCIATION_ONLY").await;
    for dev in ["dev-a", "dev-b"] {
        app.device(REG, dev).await;
        bind(&app, "gw-1", dev).await;
    }
    let mut raw = gateway_connection(&app, "gw-1").await;
    for (pkid, dev) in [(2, "dev-a"), (3, "dev-b")] {
        raw.send(&publish(&format!("/devices/{dev}/attach"), pkid, b""))
            .await;
        assert!(matches!(hear(&mut raw).await, Heard::PubAck(p) if p == pkid));
    }

    let (status, _) = app
        .app
        .admin
        .patch(
            &format!("/registries/{REG}/devices/dev-a?updateMask=blocked"),
            json!({"blocked": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_error_about(&mut raw, "dev-a", "blocked").await;
    raw.send(&publish("/devices/dev-a/events", 4, b"x")).await;
    assert_error_about(&mut raw, "dev-a", "has not attached").await;
    raw.send(&publish("/devices/dev-a/attach", 5, b"")).await;
    assert_error_about(&mut raw, "dev-a", "blocked").await;

    assert_eq!(unbind(&app, "gw-1", "dev-b").await.0, StatusCode::OK);
    assert_error_about(&mut raw, "dev-b", "not bound").await;
    raw.send(&publish("/devices/dev-b/events", 7, b"after"))
        .await;
    assert_error_about(&mut raw, "dev-b", "has not attached").await;
    raw.send(&publish("/devices/gw-1/state", 6, b"mine")).await;
    assert!(
        matches!(hear(&mut raw).await, Heard::PubAck(6)),
        "the gateway's own state"
    );
    assert_still_connected(&mut raw).await;
}

#[tokio::test]
async fn an_attached_device_is_present_its_state_is_kept_and_its_own_connection_replaces_it() {
    let app = MqttApp::spawn(MqttSettings::default()).await;
    gateway(&app, "gw-1", "ASSOCIATION_ONLY").await;
    app.device(REG, "dev-a").await;
    bind(&app, "gw-1", "dev-a").await;
    // The test app runs no lease renewal: renew this instance's by hand so its claims count.
    let until = jiff::Timestamp::now() + Duration::from_secs(300);
    app.app
        .store
        .renew_instance(app.app.fleet.instance(), until)
        .await
        .unwrap();
    let presence = || async {
        let (status, body) = app
            .app
            .admin
            .get(&format!("/registries/{REG}/devices/dev-a/presence"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    };
    assert_eq!(presence().await["connected"], false);

    let mut raw = gateway_connection(&app, "gw-1").await;
    raw.send(&publish("/devices/dev-a/attach", 2, b"")).await;
    assert!(matches!(hear(&mut raw).await, Heard::PubAck(2)));
    let present = presence().await;
    assert_eq!(
        present["connected"], true,
        "attached is connected: {present}"
    );

    // State through the gateway is dev-a's, read back through the admin API.
    raw.send(&publish("/devices/dev-a/state", 3, b"door=open"))
        .await;
    assert!(matches!(hear(&mut raw).await, Heard::PubAck(3)));
    let (status, states) = app
        .app
        .admin
        .get(&format!("/registries/{REG}/devices/dev-a/states"))
        .await;
    assert_eq!(status, StatusCode::OK, "{states}");
    assert_eq!(
        states["deviceStates"][0]["binaryData"],
        encode_base64(b"door=open"),
        "{states}"
    );
    let (_, gateway_states) = app
        .app
        .admin
        .get(&format!("/registries/{REG}/devices/gw-1/states"))
        .await;
    assert!(
        gateway_states["deviceStates"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "the gateway's own states stay empty: {gateway_states}"
    );

    // dev-a connects itself: the attachment is replaced, the gateway told and kept.
    let mut own = Raw::connected(app.addr, &client_id(REG, "dev-a"), &token()).await;
    match hear(&mut raw).await {
        Heard::Error(error) => {
            assert_eq!(error["device_id"], "dev-a", "{error}");
            assert_eq!(error["error_type"], "MQTT_REPLACED", "{error}");
        }
        _ => panic!("expected MQTT_REPLACED about dev-a on the gateway's errors topic"),
    }
    raw.send(&publish("/devices/dev-a/events", 4, b"late"))
        .await;
    assert_error_about(&mut raw, "dev-a", "has not attached").await;
    assert_still_connected(&mut raw).await;
    assert_eq!(presence().await["connected"], true, "by its own connection");
    own.send(&publish("/devices/dev-a/events", 5, b"own")).await;
    assert!(matches!(
        own.recv().await,
        Some(Packet::PubAck(PubAck { pkid: 5 }))
    ));
}

#[tokio::test]
async fn only_gateways_attach_and_a_connection_attaches_at_most_its_limit() {
    let app = MqttApp::spawn(MqttSettings {
        max_attached_devices: 1,
        ..MqttSettings::default()
    })
    .await;
    app.device(REG, "plain").await;
    app.device(REG, "dev-a").await;
    let mut plain = Raw::connected(app.addr, &client_id(REG, "plain"), &token()).await;
    plain.send(&publish("/devices/dev-a/attach", 1, b"")).await;
    let before = plain.until_closed(WAIT).await;
    assert!(
        !before.iter().any(|p| matches!(p, Packet::PubAck(_))),
        "{before:?}"
    );
    let record = app.device_record(REG, "plain").await;
    let error = record["lastErrorStatus"]["message"].as_str().unwrap();
    assert!(error.contains("dev-a"), "{error}");

    gateway(&app, "gw-1", "ASSOCIATION_ONLY").await;
    app.device(REG, "dev-b").await;
    bind(&app, "gw-1", "dev-a").await;
    bind(&app, "gw-1", "dev-b").await;
    let mut raw = gateway_connection(&app, "gw-1").await;
    raw.send(&publish("/devices/nobody/attach", 4, b"")).await;
    assert_error_about(&mut raw, "nobody", "does not exist").await;
    raw.send(&publish("/devices/dev-a/attach", 2, b"")).await;
    assert!(matches!(hear(&mut raw).await, Heard::PubAck(2)));
    raw.send(&publish("/devices/dev-b/attach", 3, b"")).await;
    assert_error_about(&mut raw, "dev-b", "detach one first").await;
    raw.send(&publish("/devices/dev-a/attach", 5, b"{not json"))
        .await;
    assert!(
        matches!(hear(&mut raw).await, Heard::PubAck(5)),
        "attached already: acknowledged"
    );
    assert_still_connected(&mut raw).await;
}

#[tokio::test]
async fn bindings_are_managed_by_the_admin_api_with_iot_cores_rules() {
    let app = MqttApp::spawn(MqttSettings::default()).await;
    gateway(&app, "gw-1", "ASSOCIATION_ONLY").await;
    let num = app.device(REG, "dev-a").await;
    let (status, body) = bind(&app, "gw-1", &num).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})), "by numeric id");
    let (status, body) = bind(&app, "dev-a", "gw-1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a gateway"),
        "{body}"
    );
    let (status, body) = bind(&app, "", "dev-a").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["error"]["details"][0]["metadata"]["field"],
        "gatewayId"
    );

    let admin = &app.app.admin;
    let list = |query: &str| {
        let path = format!("/registries/{REG}/devices?{query}");
        async move { admin.get(&path).await.1 }
    };
    let ids = |body: Value| -> Vec<String> {
        body["devices"].as_array().map_or(vec![], |d| {
            d.iter()
                .map(|d| d["id"].as_str().unwrap().to_owned())
                .collect()
        })
    };
    assert_eq!(
        ids(list("gatewayListOptions.associationsGatewayId=gw-1").await),
        ["dev-a"]
    );
    assert_eq!(
        ids(list("gatewayListOptions.associationsDeviceId=dev-a").await),
        ["gw-1"]
    );
    assert_eq!(
        ids(list("gatewayListOptions.gatewayType=GATEWAY").await),
        ["gw-1"]
    );
    assert_eq!(
        ids(list("gatewayListOptions.gatewayType=2").await),
        ["dev-a"]
    );

    let (status, refused) = app
        .app
        .admin
        .delete(&format!("/registries/{REG}/devices/gw-1"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unbind"),
        "{refused}"
    );
    let (status, refused) = app
        .app
        .admin
        .patch(
            &format!("/registries/{REG}/devices/gw-1?updateMask=gatewayConfig.gatewayType"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, changed) = app
        .app
        .admin
        .patch(
            &format!("/registries/{REG}/devices/gw-1?updateMask=gatewayConfig.gatewayAuthMethod"),
            json!({"gatewayConfig": {"gatewayAuthMethod": "DEVICE_AUTH_TOKEN_ONLY"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["gatewayConfig"]["gatewayType"], "GATEWAY");
    assert_eq!(
        changed["gatewayConfig"]["gatewayAuthMethod"],
        "DEVICE_AUTH_TOKEN_ONLY"
    );
    assert_eq!(unbind(&app, "gw-1", "dev-a").await.0, StatusCode::OK);
    let (status, again) = unbind(&app, "gw-1", "dev-a").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{again}");
    let (status, _) = app
        .app
        .admin
        .delete(&format!("/registries/{REG}/devices/gw-1"))
        .await;
    assert_eq!(status, StatusCode::OK);
}
