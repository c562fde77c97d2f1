//! The HTTP bridge publishing to the real Pub/Sub emulator: what a subscriber pulls is what the
//! device sent, with IoT Core's attributes; subfolders route to their topics; states reach the
//! state topic; a missing topic is refused; and with Pub/Sub stopped the device gets `503`,
//! never a `200` for a message that was not taken. `scripts/test` starts the shared emulator;
//! the outage test starts and stops a private one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::device::{DeviceApp, Signer, device_path};
use crate::support::{PROJECT, REGION, assert_error};
use ingest::bridge::Limits;
use ingest::sink::pubsub::{PubSubSettings, PubSubSink};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::emulators::{PrivatePubSub, pubsub_host};
use testkit::pubsub::PubSubRest;

const REG: &str = "reg-1";

/// A bridge whose sink is the emulator at `host`.
async fn app_on(host: &str, publish_timeout: Duration) -> DeviceApp {
    let sink = PubSubSink::new(PubSubSettings {
        emulator_host: Some(host.to_owned()),
        publish_timeout,
        ..PubSubSettings::default()
    })
    .await
    .unwrap();
    let limits = Limits {
        registry_cache_ttl: Duration::ZERO,
        ..Limits::default()
    };
    DeviceApp::spawn_with_sink(limits, Some(Arc::new(sink))).await
}

fn event(data: &[u8], sub_folder: Option<&str>) -> Value {
    let mut body = json!({"binary_data": shared::proto3::encode_base64(data)});
    if let Some(folder) = sub_folder {
        body["sub_folder"] = json!(folder);
    }
    body
}

/// A device `dev-1` (RSA key) in a registry routed as given: (subfolder, topic id) pairs.
async fn device_in(app: &DeviceApp, events: &[(&str, &str)], state: Option<&str>) -> String {
    app.create_registry_routed(REG, events, state).await;
    let device = app
        .admin
        .create_device(REG, "dev-1", "RSA_PEM", "rsa_public")
        .await;
    device["numId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_event_lands_in_pubsub_with_its_data_and_iot_cores_attributes() {
    let host = pubsub_host();
    let rest = PubSubRest::new(&host);
    let (topic, subscription) = rest.topic_with_subscription(PROJECT).await;
    let app = app_on(&host, Duration::from_secs(10)).await;
    let num_id = device_in(&app, &[("", topic.topic())], None).await;
    let token = Signer::rsa("rsa_private").fresh();

    let path = device_path(REG, "dev-1");
    let answer = app
        .publish_event(&token, &path, event(b"{\"t\": 21.5}", Some("sensors/temp")))
        .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    let answer = app
        .publish_event(&token, &path, event(b"plain", None))
        .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));

    let mut pulled = rest.pull(&subscription, 2).await;
    pulled.sort_by(|a, b| a.data.cmp(&b.data));
    assert_eq!(pulled.len(), 2, "{pulled:?}");
    let (plain, with_folder) = (&pulled[0], &pulled[1]);
    assert_eq!(with_folder.data, b"{\"t\": 21.5}");
    let expected = |sub_folder: Option<&str>| {
        let mut attributes: std::collections::BTreeMap<String, String> = [
            ("deviceId", "dev-1"),
            ("deviceNumId", num_id.as_str()),
            ("deviceRegistryId", REG),
            ("deviceRegistryLocation", REGION),
            ("projectId", PROJECT),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        if let Some(folder) = sub_folder {
            attributes.insert("subFolder".into(), folder.into());
        }
        attributes
    };
    assert_eq!(with_folder.attributes, expected(Some("sensors/temp")));
    assert_eq!(plain.data, b"plain");
    assert_eq!(
        plain.attributes,
        expected(None),
        "no subFolder when none was sent"
    );
}

#[tokio::test]
async fn events_are_routed_by_subfolder_to_their_topics() {
    let host = pubsub_host();
    let rest = PubSubRest::new(&host);
    let (alerts, alerts_sub) = rest.topic_with_subscription(PROJECT).await;
    let (rest_topic, rest_sub) = rest.topic_with_subscription(PROJECT).await;
    let app = app_on(&host, Duration::from_secs(10)).await;
    // The catch-all comes first on purpose: an exact match wins wherever it stands.
    device_in(
        &app,
        &[("", rest_topic.topic()), ("alerts", alerts.topic())],
        None,
    )
    .await;
    let token = Signer::rsa("rsa_private").fresh();
    let path = device_path(REG, "dev-1");
    for (data, folder) in [
        (&b"fire"[..], Some("alerts")),
        (b"reading", Some("sensors")),
        (b"bare", None),
    ] {
        let answer = app.publish_event(&token, &path, event(data, folder)).await;
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    }
    let to_alerts = rest.pull(&alerts_sub, 1).await;
    assert_eq!(to_alerts.len(), 1);
    assert_eq!(to_alerts[0].data, b"fire");
    assert_eq!(to_alerts[0].attributes["subFolder"], "alerts");
    let mut to_rest: Vec<Vec<u8>> = rest
        .pull(&rest_sub, 2)
        .await
        .into_iter()
        .map(|m| m.data)
        .collect();
    to_rest.sort();
    assert_eq!(to_rest, [b"bare".to_vec(), b"reading".to_vec()]);
}

#[tokio::test]
async fn a_state_is_stored_and_published_to_the_state_topic() {
    let host = pubsub_host();
    let rest = PubSubRest::new(&host);
    let (events, _) = rest.topic_with_subscription(PROJECT).await;
    let (state, state_sub) = rest.topic_with_subscription(PROJECT).await;
    let app = app_on(&host, Duration::from_secs(10)).await;
    device_in(&app, &[("", events.topic())], Some(state.topic())).await;
    let token = Signer::rsa("rsa_private").fresh();

    let body = json!({"state": {"binary_data": shared::proto3::encode_base64(b"fw=1.2")}});
    let answer = app
        .set_state(&token, &device_path(REG, "dev-1"), body)
        .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));

    let pulled = rest.pull(&state_sub, 1).await;
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].data, b"fw=1.2");
    assert_eq!(pulled[0].attributes["deviceId"], "dev-1");
    assert!(!pulled[0].attributes.contains_key("subFolder"));
    let (_, states) = app
        .admin
        .get("/registries/reg-1/devices/dev-1/states")
        .await;
    assert_eq!(
        states["deviceStates"][0]["binaryData"],
        shared::proto3::encode_base64(b"fw=1.2")
    );
}

#[tokio::test]
async fn an_event_for_a_topic_that_does_not_exist_is_a_failed_precondition() {
    let host = pubsub_host();
    let app = app_on(&host, Duration::from_secs(10)).await;
    device_in(&app, &[("", "never-created-topic")], None).await;
    let token = Signer::rsa("rsa_private").fresh();
    let answer = app
        .publish_event(&token, &device_path(REG, "dev-1"), event(b"x", None))
        .await;
    assert_error(&answer, 400, "FAILED_PRECONDITION", &["does not exist"]);
    app.bridge.flush_activity().await;
    let device = app.device(REG, "dev-1").await;
    assert_eq!(device["lastErrorStatus"]["code"], 9, "{device}");
}

#[tokio::test]
async fn with_pubsub_stopped_a_device_gets_503_promptly_and_never_200() {
    let emulator = PrivatePubSub::start();
    let rest = PubSubRest::new(&emulator.host);
    let (topic, subscription) = rest.topic_with_subscription(PROJECT).await;
    let timeout = Duration::from_secs(3);
    let app = app_on(&emulator.host, timeout).await;
    device_in(&app, &[("", topic.topic())], None).await;
    let token = Signer::rsa("rsa_private").fresh();
    let path = device_path(REG, "dev-1");

    let answer = app
        .publish_event(&token, &path, event(b"before", None))
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(rest.pull(&subscription, 1).await.len(), 1);

    emulator.stop();
    let started = Instant::now();
    let answer = app
        .publish_event(&token, &path, event(b"during", None))
        .await;
    let waited = started.elapsed();
    assert_error(&answer, 503, "UNAVAILABLE", &["retry"]);
    assert!(
        waited < timeout + Duration::from_secs(2),
        "the device waited {waited:?}, more than the publish timeout allows"
    );

    // The service keeps serving: other calls still get their answers.
    let (status, _) = app.get_config(&token, &path, "?local_version=0").await;
    assert_eq!(status, StatusCode::OK);
}
