//! The HTTP device bridge over real sockets, against a fresh SQLite file and a file sink per
//! test: events land with IoT Core's data and attributes, subfolders route, state is stored and
//! published, configs are fetched by version, and every bad input is answered with its documented
//! status, status name and a message naming the cause, after which a normal publish still works.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::device::{DeviceApp, Signer, device_path, topic_name};
use crate::support::{PROJECT, REGION, assert_error};
use flate2::Compression;
use flate2::write::GzEncoder;
use ingest::bridge::{Limits, Rate};
use jiff::Timestamp;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};

const REG: &str = "reg-1";

/// An app with `reg-1` routing everything to `events`, state to `state`, and two devices:
/// `dev-a` (RSA key) and `dev-b` (EC key).
struct Fleet {
    app: DeviceApp,
    a: Signer,
    b: Signer,
}

impl Fleet {
    async fn spawn() -> Self {
        Self::with_app(DeviceApp::spawn().await).await
    }

    async fn with_app(app: DeviceApp) -> Self {
        app.create_registry_routed(REG, &[("", "events")], Some("state"))
            .await;
        app.admin
            .create_device(REG, "dev-a", "RSA_PEM", "rsa_public")
            .await;
        app.admin
            .create_device(REG, "dev-b", "ES256_PEM", "ec_public")
            .await;
        Self {
            app,
            a: Signer::rsa("rsa_private"),
            b: Signer::ec("ec_private_pkcs8"),
        }
    }
}

fn a_path() -> String {
    device_path(REG, "dev-a")
}

fn event(data: &[u8]) -> Value {
    json!({"binary_data": shared::proto3::encode_base64(data)})
}

fn attributes(pairs: &[(&str, &str)]) -> Value {
    let map: BTreeMap<&str, &str> = pairs.iter().copied().collect();
    serde_json::to_value(map).unwrap()
}

fn ok_empty(answer: &(StatusCode, Value)) {
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(answer.1, json!({}), "success is exactly {{}}");
}

// ---------------------------------------------------------------- events

#[tokio::test]
async fn an_event_lands_in_the_sink_with_its_data_and_every_attribute() {
    let fleet = Fleet::spawn().await;
    let app = &fleet.app;
    let token = fleet.a.fresh();
    let num_id = app.device(REG, "dev-a").await["numId"]
        .as_str()
        .unwrap()
        .to_owned();

    ok_empty(&app.publish_event(&token, &a_path(), event(b"21.5C")).await);
    let with_folder = json!({"binary_data": "aGk=", "sub_folder": "a/b"});
    ok_empty(&app.publish_event(&token, &a_path(), with_folder).await);

    let messages = app.sink_messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    let base = [
        ("deviceId", "dev-a"),
        ("deviceNumId", num_id.as_str()),
        ("deviceRegistryId", REG),
        ("deviceRegistryLocation", REGION),
        ("projectId", PROJECT),
    ];
    assert_eq!(messages[0]["topic"], topic_name("events"));
    assert_eq!(messages[0]["data"], shared::proto3::encode_base64(b"21.5C"));
    assert_eq!(messages[0]["attributes"], attributes(&base));
    let mut with_sub = base.to_vec();
    with_sub.push(("subFolder", "a/b"));
    assert_eq!(messages[1]["data"], "aGk=");
    assert_eq!(messages[1]["attributes"], attributes(&with_sub));
}

#[tokio::test]
async fn camel_case_fields_and_an_empty_subfolder_are_accepted() {
    let fleet = Fleet::spawn().await;
    let app = &fleet.app;
    let body = json!({"binaryData": "aGk=", "subFolder": "", "gatewayInfo": {}, "extra": 1});
    ok_empty(&app.publish_event(&fleet.a.fresh(), &a_path(), body).await);
    let messages = app.sink_messages();
    assert_eq!(messages[0]["data"], "aGk=");
    assert!(messages[0]["attributes"].get("subFolder").is_none());
}

#[tokio::test]
async fn events_are_routed_by_exact_subfolder_then_the_catch_all() {
    let fleet = Fleet::spawn().await;
    let app = &fleet.app;
    app.create_registry_routed("reg-r", &[("", "all"), ("alerts", "alerts")], None)
        .await;
    app.admin
        .create_device("reg-r", "dev-r", "RSA_PEM", "rsa_public")
        .await;
    let token = fleet.a.fresh();
    let path = device_path("reg-r", "dev-r");
    for sub in ["alerts", "other"] {
        let body = json!({"binary_data": "aGk=", "sub_folder": sub});
        ok_empty(&app.publish_event(&token, &path, body).await);
    }
    ok_empty(&app.publish_event(&token, &path, event(b"x")).await);
    let topics: Vec<Value> = app
        .sink_messages()
        .iter()
        .map(|m| m["topic"].clone())
        .collect();
    assert_eq!(
        topics,
        [topic_name("alerts"), topic_name("all"), topic_name("all")]
    );
}

#[tokio::test]
async fn an_event_no_config_matches_is_refused_and_becomes_the_last_error() {
    let fleet = Fleet::spawn().await;
    let app = &fleet.app;
    app.create_registry_routed("reg-n", &[("alerts", "alerts")], None)
        .await;
    app.admin
        .create_device("reg-n", "dev-n", "RSA_PEM", "rsa_public")
        .await;
    let path = device_path("reg-n", "dev-n");
    let body = json!({"binary_data": "aGk=", "sub_folder": "other"});
    let answer = app.publish_event(&fleet.a.fresh(), &path, body).await;
    assert_error(
        &answer,
        400,
        "FAILED_PRECONDITION",
        &["subfolder `other`", "subfolderMatches"],
    );
    assert!(app.sink_messages().is_empty());

    let before = app.device("reg-n", "dev-n").await;
    assert!(before.get("lastErrorStatus").is_none(), "{before}");
    app.bridge.flush_activity().await;
    let after = app.device("reg-n", "dev-n").await;
    assert_eq!(after["lastErrorStatus"]["code"], 9, "{after}");
    let message = after["lastErrorStatus"]["message"].as_str().unwrap();
    assert!(message.contains("other"), "{message}");
    assert!(after.get("lastErrorTime").is_some(), "{after}");
}

#[tokio::test]
async fn a_gzip_body_is_accepted() {
    let fleet = Fleet::spawn().await;
    let app = &fleet.app;
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(event(b"compressed").to_string().as_bytes())
        .unwrap();
    let request = app
        .raw_post(&format!("{}:publishEvent", a_path()))
        .header(AUTHORIZATION, format!("Bearer {}", fleet.a.fresh()))
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_ENCODING, "gzip")
        .body(encoder.finish().unwrap());
    ok_empty(&app.send(request).await);
    assert_eq!(
        app.sink_messages()[0]["data"],
        shared::proto3::encode_base64(b"compressed")
    );
}

#[tokio::test]
async fn both_base64_alphabets_are_accepted_with_or_without_padding() {
    let fleet = Fleet::spawn().await;
    let app = &fleet.app;
    let token = fleet.a.fresh();
    for text in ["+/8=", "-_8", "-_8=", "+/8"] {
        let answer = app
            .publish_event(&token, &a_path(), json!({"binary_data": text}))
            .await;
        ok_empty(&answer);
    }
    for message in app.sink_messages() {
        assert_eq!(message["data"], "+/8=", "the payload is the bytes fb ff");
    }
}

#[tokio::test]
async fn a_device_may_be_named_by_its_numeric_id() {
    let fleet = Fleet::spawn().await;
    let app = &fleet.app;
    let num_id = app.device(REG, "dev-b").await["numId"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = device_path(REG, &num_id);
    let token = fleet.b.fresh();
    ok_empty(&app.publish_event(&token, &path, event(b"by number")).await);
    let (status, config) = app.get_config(&token, &path, "").await;
    assert_eq!(status, StatusCode::OK, "{config}");
    let message = &app.sink_messages()[0];
    assert_eq!(message["attributes"]["deviceId"], "dev-b");
    assert_eq!(message["attributes"]["deviceNumId"], num_id);
}

// ---------------------------------------------------------------- state

#[tokio::test]
async fn a_message_file_that_cannot_be_written_is_named_as_the_cause() {
    // /dev/full takes the open and fails every write with "no space left on device".
    let sink = ingest::sink::file::FileSink::open("/dev/full")
        .await
        .expect("/dev/full is needed for this test (Linux)");
    let app = DeviceApp::spawn_with_sink(Limits::default(), Some(std::sync::Arc::new(sink))).await;
    let fleet = Fleet::with_app(app).await;
    let answer = fleet
        .app
        .publish_event(&fleet.a.fresh(), &a_path(), event(b"21.5C"))
        .await;
    assert_error(
        &answer,
        503,
        "UNAVAILABLE",
        &["message file", "retry later"],
    );
    let message = answer.1["error"]["message"].as_str().unwrap();
    assert!(!message.contains("Pub/Sub"), "{message}");
    assert_eq!(
        answer.1["error"]["details"][0]["reason"],
        "STORAGE_UNAVAILABLE"
    );
}

#[tokio::test]
async fn set_state_stores_the_state_and_publishes_it_to_the_state_topic() {
    let fleet = Fleet::spawn().await;
    let app = &fleet.app;
    let body = json!({"state": {"binary_data": shared::proto3::encode_base64(b"on")}});
    ok_empty(&app.set_state(&fleet.a.fresh(), &a_path(), body).await);

    let (status, states) = app.admin.get(&format!("{}/states", a_path())).await;
    assert_eq!(status, StatusCode::OK, "{states}");
    assert_eq!(states["deviceStates"][0]["binaryData"], "b24=");

    let messages = app.sink_messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["topic"], topic_name("state"));
    assert_eq!(messages[0]["data"], "b24=");
    assert_eq!(messages[0]["attributes"]["deviceId"], "dev-a");
    assert!(messages[0]["attributes"].get("subFolder").is_none());

    app.bridge.flush_activity().await;
    assert!(
        app.device(REG, "dev-a")
            .await
            .get("lastStateTime")
            .is_some()
    );
}

#[tokio::test]
async fn without_a_state_topic_state_is_only_stored() {
    let fleet = Fleet::spawn().await;
    let app = &fleet.app;
    app.create_registry_routed("reg-s", &[("", "events")], None)
        .await;
    app.admin
        .create_device("reg-s", "dev-s", "RSA_PEM", "rsa_public")
        .await;
    let path = device_path("reg-s", "dev-s");
    let body = json!({"state": {"binaryData": "b2Zm"}});
    ok_empty(&app.set_state(&fleet.a.fresh(), &path, body).await);
    assert!(app.sink_messages().is_empty());
    let (_, states) = app.admin.get(&format!("{path}/states")).await;
    assert_eq!(states["deviceStates"][0]["binaryData"], "b2Zm");
}

#[tokio::test]
async fn a_second_state_update_within_a_second_is_refused() {
    let fleet = Fleet::spawn().await;
    let app = &fleet.app;
    let token = fleet.a.fresh();
    let body = json!({"state": {"binary_data": "b24="}});
    ok_empty(&app.set_state(&token, &a_path(), body.clone()).await);
    let answer = app.set_state(&token, &a_path(), body.clone()).await;
    assert_error(
        &answer,
        429,
        "RESOURCE_EXHAUSTED",
        &["state updates", "1 per second"],
    );
    // Another device is not slowed by dev-a's limit.
    let b_path = device_path(REG, "dev-b");
    ok_empty(&app.set_state(&fleet.b.fresh(), &b_path, body).await);
}

// ---------------------------------------------------------------- config

async fn modify_config(app: &DeviceApp, data: &str) {
    let (status, body) = app
        .admin
        .modify_config(&a_path(), json!({"binaryData": data}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_new_device_gets_the_empty_version_1_it_was_created_with() {
    let fleet = Fleet::spawn().await;
    let (status, config) = fleet.app.get_config(&fleet.a.fresh(), &a_path(), "").await;
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(
        (&config["version"], &config["binaryData"]),
        (&json!("1"), &json!(""))
    );
    let time = config["cloudUpdateTime"].as_str().unwrap();
    time.parse::<Timestamp>().unwrap();
}

#[tokio::test]
async fn the_config_is_the_latest_whatever_local_version_the_device_has() {
    let fleet = Fleet::spawn().await;
    let app = &fleet.app;
    for data in ["djE=", "djI=", "djM="] {
        modify_config(app, data).await;
    }
    let token = fleet.a.fresh();
    // Versions 2 to 4: the device was created with version 1.
    for query in [
        "",
        "?local_version=0",
        "?local_version=2",
        "?localVersion=4",
    ] {
        let (status, config) = app.get_config(&token, &a_path(), query).await;
        assert_eq!(status, StatusCode::OK, "{query}: {config}");
        assert_eq!(config["version"], "4", "{query}");
        assert_eq!(config["binaryData"], "djM=", "{query}");
        let time = config["cloudUpdateTime"].as_str().unwrap();
        time.parse::<Timestamp>().unwrap();
    }
    let answer = app.get_config(&token, &a_path(), "?local_version=5").await;
    assert_error(
        &answer,
        400,
        "OUT_OF_RANGE",
        &["local_version 5", "version 4"],
    );
    // The device agent acts on this reason (it asks for the latest), never on the words.
    let info = &answer.1["error"]["details"][0];
    assert_eq!(info["reason"], "CONFIG_VERSION_AHEAD", "{}", answer.1);
    assert_eq!(info["metadata"]["latestVersion"], "4", "{}", answer.1);

    app.bridge.flush_activity().await;
    let device = app.device(REG, "dev-a").await;
    assert!(device.get("lastConfigSendTime").is_some(), "{device}");
}

// ---------------------------------------------------------------- refusals

#[tokio::test]
async fn bookkeeping_is_coalesced_into_one_write_per_flush() {
    let fleet = Fleet::spawn().await;
    let app = &fleet.app;
    let token = fleet.a.fresh();
    for i in 0..50 {
        let answer = app
            .publish_event(&token, &a_path(), event(format!("{i}").as_bytes()))
            .await;
        ok_empty(&answer);
    }
    assert_eq!(app.sink_messages().len(), 50);
    assert_eq!(app.store.activity_writes(), 0);
    assert!(
        app.device(REG, "dev-a")
            .await
            .get("lastEventTime")
            .is_none()
    );

    let report = app.bridge.flush_activity().await;
    assert_eq!(report.written, 1);
    assert_eq!(app.store.activity_writes(), 1);
    assert!(
        app.device(REG, "dev-a")
            .await
            .get("lastEventTime")
            .is_some()
    );
}

/// One row of the bad-input table: what was sent, the answer, and the expected HTTP status,
/// status name and words in the message.
type Case = (
    &'static str,
    (StatusCode, Value),
    u16,
    &'static str,
    &'static [&'static str],
);

/// The per-device HTTP limit in the table: small, but above what any other row's device sends.
const TABLE_RATE: u32 = 10;

#[tokio::test]
async fn bad_inputs_are_each_refused_with_a_status_that_names_the_cause() {
    let limits = Limits {
        registry_cache_ttl: Duration::ZERO,
        http_requests: Rate::per_minute(TABLE_RATE),
        ..Limits::default()
    };
    let fleet = Fleet::with_app(DeviceApp::spawn_with(limits).await).await;
    let app = &fleet.app;
    let a_token = fleet.a.fresh();
    let a_publish = format!("{}:publishEvent", a_path());
    let b_path = device_path(REG, "dev-b");
    let b_num = app.device(REG, "dev-b").await["numId"]
        .as_str()
        .unwrap()
        .to_owned();
    let now = Timestamp::now().as_second();

    // Devices some rows need: blocked, in an HTTP-disabled registry, and one to rate-limit.
    app.admin
        .create_device(REG, "dev-blocked", "RSA_PEM", "rsa_public")
        .await;
    let blocked = device_path(REG, "dev-blocked");
    let (status, _) = app
        .admin
        .patch(
            &format!("{blocked}?updateMask=blocked"),
            json!({"blocked": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .admin
        .post(
            "/registries",
            json!({
                "id": "reg-off",
                "eventNotificationConfigs": [{"pubsubTopicName": topic_name("events")}],
                "httpConfig": {"httpEnabledState": "HTTP_DISABLED"}
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.admin
        .create_device("reg-off", "dev-off", "RSA_PEM", "rsa_public")
        .await;
    app.admin
        .create_device(REG, "dev-rl", "RSA_PEM", "rsa_public")
        .await;
    let rl_path = device_path(REG, "dev-rl");
    for _ in 0..TABLE_RATE {
        ok_empty(&app.publish_event(&a_token, &rl_path, event(b"x")).await);
    }
    // dev-a's token, once accepted for dev-a, is cached; it must still not open dev-b.
    ok_empty(&app.publish_event(&a_token, &a_path(), event(b"x")).await);

    let no_auth = app.raw_post(&a_publish).json(&event(b"x"));
    let basic = app
        .raw_post(&a_publish)
        .header(AUTHORIZATION, "Basic dXNlcjpwYXNz")
        .json(&event(b"x"));
    let text_body = app
        .raw_post(&a_publish)
        .header(AUTHORIZATION, format!("Bearer {a_token}"))
        .header(CONTENT_TYPE, "text/plain")
        .body(event(b"x").to_string());
    let huge_body = app
        .raw_post(&a_publish)
        .header(AUTHORIZATION, format!("Bearer {a_token}"))
        .header(CONTENT_TYPE, "application/json")
        .body(vec![b' '; 4 * 1024 * 1024]);
    let expired = fleet.a.token(now - 7200, now - 3600, PROJECT);
    let from_the_future = fleet.a.token(now + 3600, now + 7200, PROJECT);
    let oversized = event(&vec![7u8; Limits::default().max_event_bytes + 1]);

    let table: Vec<Case> = vec![
        (
            "missing token",
            app.send(no_auth).await,
            401,
            "UNAUTHENTICATED",
            &["Authorization", "Bearer"],
        ),
        (
            "not a bearer token",
            app.send(basic).await,
            401,
            "UNAUTHENTICATED",
            &["Bearer"],
        ),
        (
            "garbled token",
            app.publish_event("not-a-jwt", &a_path(), event(b"x")).await,
            401,
            "UNAUTHENTICATED",
            &["well-formed JWT"],
        ),
        (
            "token signed with another device's key",
            app.publish_event(&fleet.b.fresh(), &a_path(), event(b"x"))
                .await,
            401,
            "UNAUTHENTICATED",
            &["signature"],
        ),
        (
            "token for dev-a on dev-b's path",
            app.publish_event(&a_token, &b_path, event(b"x")).await,
            401,
            "UNAUTHENTICATED",
            &["signature"],
        ),
        (
            "token for dev-a on dev-b's numeric id",
            app.publish_event(&a_token, &device_path(REG, &b_num), event(b"x"))
                .await,
            401,
            "UNAUTHENTICATED",
            &["signature"],
        ),
        (
            "blocked device",
            app.publish_event(&a_token, &blocked, event(b"x")).await,
            403,
            "PERMISSION_DENIED",
            &["blocked"],
        ),
        (
            "expired token",
            app.publish_event(&expired, &a_path(), event(b"x")).await,
            401,
            "UNAUTHENTICATED",
            &["expired", "clock"],
        ),
        (
            "token issued in the future",
            app.publish_event(&from_the_future, &a_path(), event(b"x"))
                .await,
            401,
            "UNAUTHENTICATED",
            &["in the future", "clock"],
        ),
        (
            "bad base64",
            app.publish_event(&a_token, &a_path(), json!({"binary_data": "%%%"}))
                .await,
            400,
            "INVALID_ARGUMENT",
            &["binary_data", "base64"],
        ),
        (
            "no payload field",
            app.publish_event(&a_token, &a_path(), json!({"data": "aGk="}))
                .await,
            400,
            "INVALID_ARGUMENT",
            &["binary_data", "required"],
        ),
        (
            "payload over 256 KB",
            app.publish_event(&a_token, &a_path(), oversized).await,
            413,
            "INVALID_ARGUMENT",
            &["262145 bytes", "262144"],
        ),
        (
            "body far over the cap",
            app.send(huge_body).await,
            413,
            "INVALID_ARGUMENT",
            &["larger than"],
        ),
        (
            "wrong content type",
            app.send(text_body).await,
            415,
            "INVALID_ARGUMENT",
            &["text/plain", "application/json"],
        ),
        (
            "unknown registry",
            app.publish_event(&a_token, &device_path("reg-none", "dev-a"), event(b"x"))
                .await,
            404,
            "NOT_FOUND",
            &["reg-none", "does not exist"],
        ),
        (
            "unknown device id",
            app.publish_event(&a_token, &device_path(REG, "dev-none"), event(b"x"))
                .await,
            404,
            "NOT_FOUND",
            &["dev-none", "does not exist"],
        ),
        (
            "unknown numeric id",
            app.publish_event(&a_token, &device_path(REG, "987654321"), event(b"x"))
                .await,
            404,
            "NOT_FOUND",
            &["987654321", "does not exist"],
        ),
        (
            "device id that breaks the naming rules",
            app.publish_event(&a_token, &device_path(REG, "x"), event(b"x"))
                .await,
            400,
            "INVALID_ARGUMENT",
            &["device id `x`"],
        ),
        (
            "unknown method",
            app.send(
                app.raw_post(&format!("{}:sendCommand", a_path()))
                    .header(AUTHORIZATION, format!("Bearer {a_token}"))
                    .json(&json!({})),
            )
            .await,
            404,
            "NOT_FOUND",
            &[":sendCommand", "publishEvent"],
        ),
        (
            "over the per-device rate",
            app.publish_event(&a_token, &rl_path, event(b"x")).await,
            429,
            "RESOURCE_EXHAUSTED",
            &["HTTP requests", "10 per minute"],
        ),
        (
            "HTTP switched off for the registry",
            app.publish_event(&a_token, &device_path("reg-off", "dev-off"), event(b"x"))
                .await,
            403,
            "PERMISSION_DENIED",
            &["HTTP_DISABLED", "httpConfig.httpEnabledState"],
        ),
    ];
    for (label, answer, status, name, words) in &table {
        eprintln!("case: {label}");
        assert_error(answer, *status, name, words);
        assert_error_info(label, &answer.1);
    }
    // The reasons a device acts on, whatever the message says.
    for (label, reason) in [
        ("expired token", "TOKEN_EXPIRED"),
        ("token issued in the future", "TOKEN_ISSUED_IN_FUTURE"),
        ("blocked device", "DEVICE_BLOCKED"),
        ("unknown device id", "UNKNOWN_DEVICE"),
        ("over the per-device rate", "RATE_LIMITED"),
        ("HTTP switched off for the registry", "PROTOCOL_DISABLED"),
        ("payload over 256 KB", "PAYLOAD_TOO_LARGE"),
    ] {
        let (_, answer, ..) = table.iter().find(|case| case.0 == label).unwrap();
        assert_eq!(answer.1["error"]["details"][0]["reason"], reason, "{label}");
    }
    let (_, blocked, ..) = table.iter().find(|c| c.0 == "blocked device").unwrap();
    let metadata = &blocked.1["error"]["details"][0]["metadata"];
    assert!(
        metadata["device"]
            .as_str()
            .unwrap()
            .ends_with("/devices/dev-blocked"),
        "{metadata}"
    );

    // The refusals left nothing in the sink beyond the setup's accepted events...
    let accepted = app.sink_messages().len();
    assert_eq!(accepted, TABLE_RATE as usize + 1);
    // ...and a normal publish still succeeds.
    ok_empty(
        &app.publish_event(&a_token, &a_path(), event(b"after"))
            .await,
    );
    assert_eq!(app.sink_messages().len(), accepted + 1);
}

/// Every device refusal carries one `google.rpc.ErrorInfo` of IoT Core's domain with a
/// SCREAMING_SNAKE reason, and never the token.
#[track_caller]
fn assert_error_info(label: &str, body: &Value) {
    let details = body["error"]["details"].as_array();
    let info = details.and_then(|d| d.first()).unwrap_or(&Value::Null);
    assert_eq!(
        info["@type"], "type.googleapis.com/google.rpc.ErrorInfo",
        "{label}: {body}"
    );
    assert_eq!(info["domain"], "cloudiot.googleapis.com", "{label}: {body}");
    let reason = info["reason"].as_str().unwrap_or_default();
    assert!(
        !reason.is_empty()
            && reason
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
        "{label}: reason {reason:?}"
    );
    assert!(
        !body.to_string().contains("eyJ"),
        "{label}: a token in {body}"
    );
}

#[tokio::test]
async fn a_rate_limited_answer_says_when_to_retry() {
    let limits = Limits {
        registry_cache_ttl: Duration::ZERO,
        http_requests: Rate::per_minute(1),
        ..Limits::default()
    };
    let fleet = Fleet::with_app(DeviceApp::spawn_with(limits).await).await;
    let app = &fleet.app;
    let token = fleet.a.fresh();
    ok_empty(&app.publish_event(&token, &a_path(), event(b"x")).await);
    let response = app
        .raw_post(&format!("{}:publishEvent", a_path()))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .json(&event(b"x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // dev-b has its own budget.
    let b_path = device_path(REG, "dev-b");
    ok_empty(
        &app.publish_event(&fleet.b.fresh(), &b_path, event(b"x"))
            .await,
    );
}

#[tokio::test]
async fn the_flusher_writes_on_its_interval_and_once_more_at_shutdown() {
    let fleet = Fleet::spawn().await;
    let app = &fleet.app;
    let token = fleet.a.fresh();

    let (stop_fast, fast_stopped) = tokio::sync::oneshot::channel::<()>();
    let fast = app
        .bridge
        .spawn_activity_flusher(Duration::from_millis(20), async {
            let _ = fast_stopped.await;
        });
    ok_empty(&app.publish_event(&token, &a_path(), event(b"x")).await);
    tokio::time::timeout(Duration::from_secs(10), async {
        while app.store.activity_writes() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the interval flush wrote the bookkeeping");
    stop_fast.send(()).unwrap();
    fast.await.unwrap();

    let (stop_slow, slow_stopped) = tokio::sync::oneshot::channel::<()>();
    let slow = app
        .bridge
        .spawn_activity_flusher(Duration::from_secs(3600), async {
            let _ = slow_stopped.await;
        });
    ok_empty(&app.publish_event(&token, &a_path(), event(b"y")).await);
    assert_eq!(app.bridge.pending_activity(), 1);
    stop_slow.send(()).unwrap();
    slow.await.unwrap();
    assert_eq!(
        app.bridge.pending_activity(),
        0,
        "shutdown flushed what was pending"
    );
}

/// A fleet provisioned with one key pair signs identical tokens when its devices wake in the same
/// second; each device's token must still be cached for that device, or every request would read
/// the registry and check the signature again.
#[tokio::test]
async fn devices_sharing_a_key_and_a_token_each_stay_cached() {
    let app = DeviceApp::spawn().await;
    app.admin.create_registry(REG).await;
    for id in ["dev-x", "dev-y"] {
        app.admin
            .create_device(REG, id, "RSA_PEM", "rsa_public")
            .await;
    }
    let token = Signer::rsa("rsa_private").fresh();
    let reads_before = app.store.calls().get("get_device").copied().unwrap_or(0);
    for _ in 0..5 {
        for id in ["dev-x", "dev-y"] {
            let answer = app
                .publish_event(&token, &device_path(REG, id), event(b"x"))
                .await;
            ok_empty(&answer);
        }
    }
    let reads = app.store.calls().get("get_device").copied().unwrap_or(0) - reads_before;
    assert_eq!(reads, 2, "one registry read per device, then the cache");
}

// ---------------------------------------------------------------- long-poll config (extension)

#[tokio::test]
async fn a_long_poll_is_answered_within_100_ms_of_a_config_change() {
    let fleet = Fleet::spawn().await;
    let app = &fleet.app;
    modify_config(app, "djE=").await;
    let token = fleet.a.fresh();
    let poll = async {
        let answer = app
            .get_config(&token, &a_path(), "?local_version=2&wait=20")
            .await;
        (answer, Instant::now())
    };
    let change = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        modify_config(app, "djI=").await;
        Instant::now()
    };
    let (((status, config), answered), changed) = tokio::join!(poll, change);
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(config["version"], "3", "{config}");
    assert_eq!(config["binaryData"], "djI=", "{config}");
    let late = answered.saturating_duration_since(changed);
    assert!(
        late < Duration::from_millis(100),
        "answered {late:?} after the change"
    );
    assert_eq!(
        fleet
            .app
            .fleet
            .delivery()
            .config_waiters()
            .devices_waited_on(),
        0
    );
}

#[tokio::test]
async fn a_long_poll_times_out_with_the_version_the_device_has() {
    let fleet = Fleet::spawn().await;
    modify_config(&fleet.app, "djE=").await;
    let started = Instant::now();
    let (status, config) = fleet
        .app
        .get_config(&fleet.a.fresh(), &a_path(), "?local_version=2&wait=1")
        .await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(config["version"], "2", "{config}");
    assert!(took >= Duration::from_secs(1), "answered after {took:?}");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(
        fleet
            .app
            .fleet
            .delivery()
            .config_waiters()
            .devices_waited_on(),
        0
    );
}

#[tokio::test]
async fn a_long_poll_answers_at_once_when_a_newer_config_exists_or_it_has_none() {
    let fleet = Fleet::spawn().await;
    let token = fleet.a.fresh();
    let started = Instant::now();
    let (status, config) = fleet
        .app
        .get_config(&token, &a_path(), "?local_version=0&wait=20")
        .await;
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(config["version"], "1", "{config}");
    modify_config(&fleet.app, "djE=").await;
    modify_config(&fleet.app, "djI=").await;
    let (status, config) = fleet
        .app
        .get_config(&token, &a_path(), "?local_version=2&wait=20")
        .await;
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(config["version"], "3", "{config}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_malformed_wait_is_refused_naming_it() {
    let fleet = Fleet::spawn().await;
    let answer = fleet
        .app
        .get_config(&fleet.a.fresh(), &a_path(), "?local_version=1&wait=soon")
        .await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["wait", "soon"]);
}
