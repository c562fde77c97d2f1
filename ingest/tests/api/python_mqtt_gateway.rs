//! A real IoT Core MQTT gateway nobody here wrote the server into: `tests/python/
//! cloudiot_mqtt_gateway.py`, in the shape of the gateway half of Google's MQTT sample (paho-mqtt
//! 1.x, PyJWT, the gateway's JWT as password, `{"authorization" : ""}` attaches each awaited for
//! its PUBACK, the devices' config topics at QoS 1 and `commands/#` at QoS 0, QoS 1 events,
//! detaches), against a running `ingest serve` over TLS with the CA it made itself, publishing to
//! the real Pub/Sub emulator. An ASSOCIATION_ONLY gateway speaks for two bound devices: each
//! device's config and a command sent through the admin API reach the gateway on that device's
//! topics; its events land in Pub/Sub with the device's own attributes; after the detach, an
//! event for a device is refused on the gateway's errors topic; and each device's record names
//! the gateway it last came through. The interpreter comes from `IOTCORE_PYTHON`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::support::mqtt_tls::TlsServer;
use crate::support::{PROJECT, REGION};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/python/cloudiot_mqtt_gateway.py"
);
const REGISTRY: &str = "reg-gw";
const GATEWAY: &str = "gw-1";
/// Events the gateway publishes for each device.
const MESSAGES: usize = 3;

/// A device behind the gateway: its config, and the command sent to it (subfolder, data).
struct Bound {
    id: &'static str,
    config: &'static [u8],
    subfolder: Option<&'static str>,
    command: &'static [u8],
}

const DEVICES: [Bound; 2] = [
    Bound {
        id: "dev-a",
        config: b"{\"fan\": \"on\"}",
        subfolder: Some("power"),
        command: b"reboot",
    },
    Bound {
        id: "dev-b",
        config: b"{\"fan\": \"off\", \"rate\": 5}",
        subfolder: None,
        command: b"blink",
    },
];

impl Bound {
    fn command_topic(&self) -> String {
        match self.subfolder {
            Some(sub) => format!("/devices/{}/commands/{sub}", self.id),
            None => format!("/devices/{}/commands", self.id),
        }
    }
}

fn python() -> PathBuf {
    let Some(path) = std::env::var_os("IOTCORE_PYTHON") else {
        panic!(
            "IOTCORE_PYTHON is not set: run the tests through scripts/test, or \
             `export IOTCORE_PYTHON=$(scripts/python-env)` first"
        );
    };
    PathBuf::from(path)
}

/// The shared TLS server (see `support::mqtt_tls`), with this test's helpers.
struct Server(TlsServer);

impl std::ops::Deref for Server {
    type Target = TlsServer;

    fn deref(&self) -> &TlsServer {
        &self.0
    }
}

impl Server {
    async fn start() -> Self {
        Self(TlsServer::start(REGISTRY, &["--activity-flush-secs=1"]).await)
    }

    /// The gateway, with the vectors' EC key: the script signs its JWT with it.
    async fn gateway(&self) {
        let created = self
            .post(
                &format!("/registries/{REGISTRY}/devices"),
                json!({
                    "id": GATEWAY,
                    "credentials": [{"publicKey": {"format": "ES256_PEM", "key": crate::support::key("ec_public")}}],
                    "gatewayConfig": {"gatewayType": "GATEWAY", "gatewayAuthMethod": "ASSOCIATION_ONLY"},
                }),
            )
            .await;
        assert_eq!(created["gatewayConfig"]["gatewayType"], "GATEWAY");
    }

    /// A device with a key of its own (never used: the gateway speaks for it), bound to the
    /// gateway, with its config; returns its numeric id.
    async fn bound_device(&self, device: &Bound) -> String {
        let created = self
            .post(
                &format!("/registries/{REGISTRY}/devices"),
                json!({"id": device.id, "credentials": [{"publicKey": {"format": "RSA_PEM", "key": crate::support::key("rsa_public")}}]}),
            )
            .await;
        let bound = self
            .post(
                &format!("/registries/{REGISTRY}:bindDeviceToGateway"),
                json!({"gatewayId": GATEWAY, "deviceId": device.id}),
            )
            .await;
        assert_eq!(bound, json!({}));
        self.post(
            &format!(
                "/registries/{REGISTRY}/devices/{}:modifyCloudToDeviceConfig",
                device.id
            ),
            json!({"binaryData": STANDARD.encode(device.config)}),
        )
        .await;
        created["numId"].as_str().unwrap().to_owned()
    }

    /// Sends `device` its command until it is delivered (the device attached and subscribed
    /// through the gateway); returns the last answer.
    async fn command(&self, device: &Bound) -> (StatusCode, Value) {
        let path = format!(
            "/registries/{REGISTRY}/devices/{}:sendCommandToDevice",
            device.id
        );
        let mut body = json!({"binaryData": STANDARD.encode(device.command)});
        if let Some(sub) = device.subfolder {
            body["subfolder"] = json!(sub);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, answer) = self.try_post(&path, body.clone()).await;
            let reason = &answer["error"]["details"][0]["reason"];
            let not_yet = status == StatusCode::BAD_REQUEST
                && (reason == "DEVICE_NOT_CONNECTED" || reason == "DEVICE_NOT_SUBSCRIBED");
            if !not_yet || tokio::time::Instant::now() >= deadline {
                return (status, answer);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs the gateway script; once it prints READY, sends each device its command. Returns
    /// whether it succeeded, its stdout lines, its stderr, and the command answers.
    async fn run_gateway(&self) -> Run {
        let key = self.process.path("gateway_ec_private.pem");
        std::fs::write(&key, crate::support::key("ec_private_pkcs8")).unwrap();
        let url = self.process.announced("MQTT bridge");
        let port = url.rsplit(':').next().unwrap().to_owned();
        let ca = self.process.announced("MQTT CA certificate");
        let mut child = tokio::process::Command::new(python())
            .arg(SCRIPT)
            .args([
                format!("--project_id={PROJECT}"),
                format!("--cloud_region={REGION}"),
                format!("--registry_id={REGISTRY}"),
                format!("--gateway_id={GATEWAY}"),
                format!("--private_key_file={}", key.display()),
                "--algorithm=ES256".into(),
                format!("--ca_certs={ca}"),
                "--mqtt_bridge_hostname=localhost".into(),
                format!("--mqtt_bridge_port={port}"),
                format!("--num_messages={MESSAGES}"),
                "--timeout_seconds=20".into(),
                "--commands_per_device=1".into(),
            ])
            .args(DEVICES.iter().map(|d| format!("--device_id={}", d.id)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stdout = Vec::new();
        let mut answers = Vec::new();
        let run = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let ready = line == "READY";
                stdout.push(line);
                if ready {
                    let (a, b) = tokio::join!(self.command(&DEVICES[0]), self.command(&DEVICES[1]));
                    answers = vec![a, b];
                }
            }
            child.wait().await.unwrap()
        };
        let status = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the gateway script ran for over a minute");
        Run {
            success: status.success(),
            stdout,
            stderr: stderr.await.unwrap(),
            answers,
        }
    }
}

/// What a run of the script left.
struct Run {
    success: bool,
    stdout: Vec<String>,
    stderr: String,
    answers: Vec<(StatusCode, Value)>,
}

impl Run {
    fn output(&self) -> String {
        format!("{}\n{}", self.stdout.join("\n"), self.stderr)
    }

    /// The script's final JSON report.
    fn report(&self) -> Value {
        let reports: Vec<&str> = self
            .stdout
            .iter()
            .filter_map(|l| l.strip_prefix("REPORT "))
            .collect();
        assert_eq!(reports.len(), 1, "one REPORT line: {}", self.output());
        serde_json::from_str(reports[0]).unwrap()
    }
}

fn b64(data: &[u8]) -> Value {
    json!(STANDARD.encode(data))
}

#[tokio::test]
async fn googles_gateway_sample_speaks_for_two_bound_devices_over_tls() {
    let server = Server::start().await;
    server.gateway().await;
    let mut num_ids = BTreeMap::new();
    for device in &DEVICES {
        num_ids.insert(device.id, server.bound_device(device).await);
    }

    let run = server.run_gateway().await;
    assert!(run.success, "the gateway script failed:\n{}", run.output());
    let report = run.report();

    // Each device's config on its own topic, once, right after the SUBACK; the gateway's own
    // (never set: version 1, empty) on its topic.
    let mut configs = serde_json::Map::new();
    configs.insert(format!("/devices/{GATEWAY}/config"), json!([""]));
    for device in &DEVICES {
        configs.insert(
            format!("/devices/{}/config", device.id),
            json!([b64(device.config)]),
        );
    }
    assert_eq!(
        report["configs"],
        Value::Object(configs),
        "{}",
        run.output()
    );
    for device in &DEVICES {
        let line = format!(
            "CONFIG /devices/{}/config {}",
            device.id,
            STANDARD.encode(device.config)
        );
        assert!(run.stdout.contains(&line), "{line}: {}", run.output());
    }

    // Each command answered once delivered, and heard on its device's topic.
    assert_eq!(
        run.answers,
        [(StatusCode::OK, json!({})), (StatusCode::OK, json!({}))],
        "{}",
        run.output()
    );
    let mut commands = serde_json::Map::new();
    for device in &DEVICES {
        commands.insert(device.command_topic(), json!([b64(device.command)]));
    }
    assert_eq!(
        report["commands"],
        Value::Object(commands),
        "{}",
        run.output()
    );

    // Every event acknowledged; after the detach, exactly one error, about the detached device
    // and the refused message, and no PUBACK for it.
    let published: serde_json::Map<String, Value> = DEVICES
        .iter()
        .map(|d| (d.id.to_owned(), json!(MESSAGES)))
        .collect();
    assert_eq!(report["published"], Value::Object(published));
    assert_eq!(report["late_device"], "dev-a");
    assert_eq!(report["late_puback"], false);
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{}", run.output());
    let error = &errors[0];
    assert_eq!(error["device_id"], "dev-a", "{error}");
    assert_eq!(
        error["error_type"], "GATEWAY_DEVICE_NOT_ATTACHED",
        "{error}"
    );
    assert_eq!(error["message_id"], report["late_mid"], "{error}");
    assert!(report["late_mid"].as_u64().unwrap() > 0);
    let description = error["description"].as_str().unwrap();
    assert!(description.contains("has not attached"), "{error}");

    // In Pub/Sub: each device's events, with that device's attributes, never the gateway's.
    let pulled = server
        .rest
        .pull(&server.subscription, MESSAGES * DEVICES.len())
        .await;
    let mut data: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for message in &pulled {
        let attributes = &message.attributes;
        let device = attributes["deviceId"].clone();
        assert_eq!(
            attributes["deviceNumId"],
            num_ids[device.as_str()],
            "{attributes:?}"
        );
        assert_eq!(attributes["deviceRegistryId"], REGISTRY);
        assert_eq!(attributes["deviceRegistryLocation"], REGION);
        assert_eq!(attributes["projectId"], PROJECT);
        assert!(!attributes.contains_key("subFolder"), "{attributes:?}");
        data.entry(device)
            .or_default()
            .push(String::from_utf8(message.data.clone()).unwrap());
    }
    let expected: BTreeMap<String, Vec<String>> = DEVICES
        .iter()
        .map(|d| {
            let payloads = (1..=MESSAGES)
                .map(|i| format!("{REGISTRY}/{}-payload-{i}", d.id))
                .collect();
            (d.id.to_owned(), payloads)
        })
        .collect();
    for payloads in data.values_mut() {
        payloads.sort();
    }
    assert_eq!(data, expected);
    // The refused event after the detach never landed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late = server.rest.pull_now(&server.subscription).await;
    assert!(late.is_empty(), "nothing more in Pub/Sub: {late:?}");

    // Each device's record names the gateway it came through (bookkeeping is flushed every
    // second, so it may take a moment).
    for device in &DEVICES {
        let path = format!("/registries/{REGISTRY}/devices/{}", device.id);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let record = loop {
            let record = server.get(&path).await;
            if record["gatewayConfig"]["lastAccessedGatewayId"] == GATEWAY
                || tokio::time::Instant::now() >= deadline
            {
                break record;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let config = &record["gatewayConfig"];
        assert_eq!(config["lastAccessedGatewayId"], GATEWAY, "{record}");
        assert!(config["lastAccessedGatewayTime"].is_string(), "{record}");
    }
}
