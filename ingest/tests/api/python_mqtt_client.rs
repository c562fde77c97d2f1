//! A real IoT Core MQTT client nobody here wrote the server into: `tests/python/
//! cloudiot_mqtt_example.py`, in the shape of Google's MQTT sample and the old guides (paho-mqtt
//! 1.x, PyJWT, the JWT as password, QoS 1 events each awaited for its PUBACK, the config topic at
//! QoS 1, `commands/#` at QoS 0 and a command sent to it, a state report), against a running `ingest serve` publishing to
//! the real Pub/Sub emulator. Once over TLS with the CA ingest made itself (as a newcomer would
//! run it), once over WebSocket on the device port (`/mqtt`, as on Cloud Run). What a subscriber
//! pulls is checked for data and every attribute. The interpreter comes from `IOTCORE_PYTHON`.

use std::path::PathBuf;
use std::process::Output;

use crate::support::mqtt_tls::TlsServer;
use crate::support::{PROJECT, REGION};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/python/cloudiot_mqtt_example.py"
);
const REGISTRY: &str = "reg-1";
const CONFIG: &[u8] = b"{\"interval\": 30}";
const MESSAGES: usize = 5;

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
        Self(TlsServer::start(REGISTRY, &[]).await)
    }

    /// A device with the vectors' EC key and a config; returns its numeric id.
    async fn device(&self, id: &str) -> String {
        let created = self
            .post(
                &format!("/registries/{REGISTRY}/devices"),
                json!({"id": id, "credentials": [{"publicKey": {"format": "ES256_PEM", "key": crate::support::key("ec_public")}}]}),
            )
            .await;
        self.post(
            &format!("/registries/{REGISTRY}/devices/{id}:modifyCloudToDeviceConfig"),
            json!({"binaryData": STANDARD.encode(CONFIG)}),
        )
        .await;
        created["numId"].as_str().unwrap().to_owned()
    }

    fn key_file(&self) -> PathBuf {
        let path = self.process.path("ec_private.pem");
        std::fs::write(&path, crate::support::key("ec_private_pkcs8")).unwrap();
        path
    }

    /// Runs the client as the sample's README ran it, plus `extra`.
    async fn client(&self, device: &str, extra: &[String]) -> Output {
        let key = self.key_file();
        let mut args = vec![
            format!("--device_id={device}"),
            format!("--private_key_file={}", key.display()),
            "--algorithm=ES256".into(),
        ];
        args.extend_from_slice(extra);
        sample(&args).await
    }

    /// Checks what the run left behind: every event pulled with its attributes, the state in
    /// the registry, the config heard by the client.
    async fn check(&self, device: &str, num_id: &str, output: &Output) {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.lines().any(|l| l == "CONNACK 0"), "{stdout}");
        let pubacks = stdout.lines().filter(|l| l.starts_with("PUBACK ")).count();
        assert_eq!(pubacks, MESSAGES + 1, "each event and the state: {stdout}");
        let config_line = format!("CONFIG {}", STANDARD.encode(CONFIG));
        assert!(stdout.lines().any(|l| l == config_line), "{stdout}");
        assert!(stdout.lines().any(|l| l == "DONE"), "{stdout}");

        let pulled = self.rest.pull(&self.subscription, MESSAGES).await;
        let mut data: Vec<String> = pulled
            .iter()
            .map(|m| String::from_utf8(m.data.clone()).unwrap())
            .collect();
        data.sort();
        let expected: Vec<String> = (1..=MESSAGES)
            .map(|i| format!("{REGISTRY}/{device}-payload-{i}"))
            .collect();
        assert_eq!(data, expected);
        for message in &pulled {
            let attributes = &message.attributes;
            assert_eq!(attributes["deviceId"], device);
            assert_eq!(attributes["deviceNumId"], num_id);
            assert_eq!(attributes["deviceRegistryId"], REGISTRY);
            assert_eq!(attributes["deviceRegistryLocation"], REGION);
            assert_eq!(attributes["projectId"], PROJECT);
            assert!(!attributes.contains_key("subFolder"));
        }
        let record = self
            .get(&format!("/registries/{REGISTRY}/devices/{device}"))
            .await;
        let state = STANDARD
            .decode(record["state"]["binaryData"].as_str().unwrap())
            .unwrap();
        assert_eq!(state, format!("{REGISTRY}/{device}-state").as_bytes());
    }
}

/// Runs Google's sample for `reg-1` in the test project with `args`; it must succeed.
async fn sample(args: &[String]) -> Output {
    let output = tokio::process::Command::new(python())
        .arg(SCRIPT)
        .args([
            format!("--project_id={PROJECT}"),
            format!("--cloud_region={REGION}"),
            format!("--registry_id={REGISTRY}"),
            format!("--num_messages={MESSAGES}"),
            "--delay_seconds=0".into(),
            "--timeout_seconds=30".into(),
        ])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the client failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Sends `reboot` to `commands/power` through `send` until the device has connected and
/// subscribed (FAILED_PRECONDITION until then), and returns the answer's body.
async fn command_until_delivered<F, Fut>(send: F) -> Value
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (u16, Value)>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match send().await {
            (200, body) => return body,
            (400, body)
                if body["error"]["details"][0]["reason"] == "DEVICE_NOT_CONNECTED"
                    || body["error"]["details"][0]["reason"] == "DEVICE_NOT_SUBSCRIBED" =>
            {
                assert!(tokio::time::Instant::now() < deadline, "{body}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => panic!("unexpected answer to the command: {other:?}"),
        }
    }
}

#[tokio::test]
async fn googles_mqtt_sample_on_one_instance_receives_a_command_sent_through_another() {
    let tls = tempfile::tempdir().unwrap();
    let tls_dir = format!("--mqtt-tls-dir={}", tls.path().display());
    let (a, b) =
        crate::fleet_delivery::two_instances_with(&["--mqtt-addr=127.0.0.1:0", &tls_dir]).await;
    let url = b.process.announced("MQTT bridge");
    let port = url.rsplit(':').next().unwrap().to_owned();
    let key = tls.path().join("rsa_private.pem");
    std::fs::write(&key, crate::support::key("rsa_private")).unwrap();
    let args = [
        "--device_id=dev-1".to_owned(),
        format!("--private_key_file={}", key.display()),
        "--algorithm=RS256".into(),
        format!("--ca_certs={}", b.process.announced("MQTT CA certificate")),
        "--mqtt_bridge_hostname=localhost".into(),
        format!("--mqtt_bridge_port={port}"),
        "--wait_for_command".into(),
    ];
    let (output, answer) = tokio::join!(
        sample(&args),
        command_until_delivered(|| a.command(b"reboot"))
    );
    assert_eq!(answer, json!({}));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let heard = format!(
        "COMMAND /devices/dev-1/commands/power {}",
        STANDARD.encode(b"reboot")
    );
    assert!(stdout.lines().any(|l| l == heard), "{stdout}");
    assert_ne!(a.name(), b.name());
}

#[tokio::test]
async fn googles_mqtt_sample_over_tls_lands_in_pubsub_with_iot_cores_attributes() {
    let server = Server::start().await;
    let num_id = server.device("py-tls").await;
    let url = server.process.announced("MQTT bridge");
    let port = url.rsplit(':').next().unwrap().to_owned();
    let ca = server.process.announced("MQTT CA certificate");
    let flags = [
        format!("--ca_certs={ca}"),
        "--mqtt_bridge_hostname=localhost".into(),
        format!("--mqtt_bridge_port={port}"),
        "--wait_for_command".into(),
    ];
    let client = server.client("py-tls", &flags);
    // The operator's command, sent until the client has connected and subscribed; it answers
    // once written, the client's commands/# being at QoS 0 as in Google's sample.
    let path = format!("/registries/{REGISTRY}/devices/py-tls:sendCommandToDevice");
    let body = json!({"binaryData": STANDARD.encode(b"reboot"), "subfolder": "power"});
    let command = command_until_delivered(|| async {
        let (status, body) = server.try_post(&path, body.clone()).await;
        (status.as_u16(), body)
    });
    let (output, answer) = tokio::join!(client, command);
    assert_eq!(answer, json!({}));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let heard = format!(
        "COMMAND /devices/py-tls/commands/power {}",
        STANDARD.encode(b"reboot")
    );
    assert!(stdout.lines().any(|l| l == heard), "{stdout}");
    server.check("py-tls", &num_id, &output).await;
}

#[tokio::test]
async fn googles_mqtt_sample_over_websocket_on_the_device_port_works_the_same() {
    let server = Server::start().await;
    let num_id = server.device("py-ws").await;
    let device_url = server.process.device_url();
    let port = device_url.rsplit(':').next().unwrap().to_owned();
    let output = server
        .client(
            "py-ws",
            &[
                "--transport=websockets".into(),
                "--no_tls".into(),
                "--mqtt_bridge_hostname=127.0.0.1".into(),
                format!("--mqtt_bridge_port={port}"),
            ],
        )
        .await;
    server.check("py-ws", &num_id, &output).await;
}
