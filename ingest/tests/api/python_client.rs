//! A real IoT Core client nobody here wrote against a real `ingest serve`: the Python device in
//! `tests/python/cloudiot_http_example.py`, shaped like Google's published HTTP sample (PyJWT,
//! `requests`, URL-safe base64, anything but 200 is failure), publishes events and a state and
//! fetches its config over the device bridge. The test then reads what reached the file sink and
//! the registry. The interpreter comes from `IOTCORE_PYTHON`, which `scripts/test` sets up with
//! `scripts/python-env`; without it the test fails rather than skips.

use crate::support::spawn_ingest;
use testkit::IngestProcess;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::{PROJECT, REGION};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use serde_json::{Value, json};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/python/cloudiot_http_example.py"
);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
const REGISTRY: &str = "reg-1";
const EVENT_TOPIC: &str = "projects/demo-project/topics/events";

/// The interpreter of the venv that `scripts/python-env` made.
fn python() -> PathBuf {
    let Some(path) = std::env::var_os("IOTCORE_PYTHON") else {
        panic!(
            "IOTCORE_PYTHON is not set: run the tests through scripts/test, or \
             `export IOTCORE_PYTHON=$(scripts/python-env)` first (it makes .build/venv with \
             requests, PyJWT and cryptography)"
        );
    };
    PathBuf::from(path)
}

/// A running `ingest serve` with both listeners and a file sink.
struct Server {
    /// Kept for its `Drop`, which stops the service.
    _process: IngestProcess,
    admin_url: String,
    device_url: String,
    http: reqwest::Client,
    sink: PathBuf,
    /// Holds the sink file and the key files the client reads.
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sink = dir.path().join("events.jsonl");
        let process = spawn_ingest(&[&format!("--sink=file:{}", sink.display())], &[]);
        Self {
            admin_url: process.admin_url(),
            device_url: process.device_url(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            sink,
            dir,
            _process: process,
        }
    }

    /// An admin API URL below the test location.
    fn admin(&self, path: &str) -> String {
        format!(
            "{}/v1/projects/{PROJECT}/locations/{REGION}{path}",
            self.admin_url
        )
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self.http.post(self.admin(path)).json(&body).send().await;
        ok_json(response.unwrap()).await
    }

    async fn get(&self, path: &str) -> Value {
        ok_json(self.http.get(self.admin(path)).send().await.unwrap()).await
    }

    /// A registry whose events all go to [`EVENT_TOPIC`].
    async fn create_registry(&self) {
        let body = json!({
            "id": REGISTRY,
            "eventNotificationConfigs": [{"pubsubTopicName": EVENT_TOPIC}],
        });
        self.post("/registries", body).await;
    }

    /// A device holding one public key from the vectors, with a first config; returns its numId.
    async fn create_device(&self, device: &str, format: &str, public_key: &str) -> String {
        let body = json!({
            "id": device,
            "credentials": [{"publicKey": {"format": format, "key": crate::support::key(public_key)}}],
        });
        let created = self
            .post(&format!("/registries/{REGISTRY}/devices"), body)
            .await;
        let config = json!({"versionToUpdate": "0", "binaryData": STANDARD.encode(CONFIG)});
        let path = format!("/registries/{REGISTRY}/devices/{device}:modifyCloudToDeviceConfig");
        self.post(&path, config).await;
        created["numId"].as_str().unwrap().to_owned()
    }

    /// Writes a private key from the vectors where the client can read it.
    fn key_file(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, crate::support::key(name)).unwrap();
        path
    }

    /// The sink's JSON lines, once there are at least `count` (publishing is acknowledged only
    /// after the sink took the message, so they should all be there already).
    fn sink_lines(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&self.sink).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .filter(|line| !line.trim().is_empty())
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            if lines.len() >= count || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The config every test device gets, so the client's config fetch has something to show.
const CONFIG: &str = r#"{"fan":"on"}"#;

async fn ok_json(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "admin API answered {status}: {text}"
    );
    serde_json::from_str(&text).unwrap()
}

/// One device as the Python client sees it.
struct Client<'a> {
    server: &'a Server,
    device: &'a str,
    private_key: PathBuf,
    algorithm: &'a str,
}

impl Client<'_> {
    /// Runs the sample for `count` messages of `message_type`; it fetches the config after.
    async fn run(&self, message_type: &str, count: u32) -> Output {
        let mut command = tokio::process::Command::new(python());
        command
            .arg(SCRIPT)
            .arg(format!("--project_id={PROJECT}"))
            .arg(format!("--cloud_region={REGION}"))
            .arg(format!("--registry_id={REGISTRY}"))
            .arg(format!("--device_id={}", self.device))
            .arg(format!("--private_key_file={}", self.private_key.display()))
            .arg(format!("--algorithm={}", self.algorithm))
            .arg(format!("--base_url={}/v1", self.server.device_url))
            .arg(format!("--message_type={message_type}"))
            .arg(format!("--num_messages={count}"))
            .arg("--delay_seconds=0")
            // No proxy settings from the shell may divert loopback requests.
            .env_clear()
            .kill_on_drop(true);
        tokio::time::timeout(CLIENT_TIMEOUT, command.output())
            .await
            .expect("the Python client did not finish in time")
            .expect("running the Python client")
    }
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[track_caller]
fn assert_succeeded(output: &Output, requests: usize) {
    assert!(output.status.success(), "{}", describe(output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let answered = stdout
        .lines()
        .filter(|l| l.ends_with("-> HTTP 200"))
        .count();
    assert_eq!(answered, requests, "{}", describe(output));
    assert!(
        // Version 1 came with the device; the test's config is version 2.
        stdout.contains(&format!("Latest configuration: version 2: {CONFIG}")),
        "{}",
        describe(output)
    );
}

/// Five events, then one state, each run ending in a config fetch; then the sink holds the five
/// events with IoT Core's attributes and the registry holds the state.
async fn events_state_and_config_round_trip(
    device: &str,
    format: &str,
    public_key: &str,
    private_key: &str,
) {
    let server = Server::start();
    server.create_registry().await;
    let num_id = server.create_device(device, format, public_key).await;
    let client = Client {
        server: &server,
        device,
        private_key: server.key_file(private_key),
        algorithm: if format.starts_with("ES256") {
            "ES256"
        } else {
            "RS256"
        },
    };

    assert_succeeded(&client.run("event", 5).await, 6);
    assert_succeeded(&client.run("state", 1).await, 2);

    let lines = server.sink_lines(5);
    assert_eq!(lines.len(), 5, "{lines:#?}");
    for (i, line) in lines.iter().enumerate() {
        assert_event(line, &format!("{REGISTRY}/{device}-payload-{}", i + 1));
        assert_eq!(
            line["attributes"],
            json!({
                "deviceId": device,
                "deviceNumId": num_id,
                "deviceRegistryId": REGISTRY,
                "deviceRegistryLocation": REGION,
                "projectId": PROJECT,
            }),
            "{line:#}"
        );
    }

    let states = server
        .get(&format!("/registries/{REGISTRY}/devices/{device}/states"))
        .await;
    let latest = &states["deviceStates"][0];
    assert_eq!(
        decode(latest["binaryData"].as_str().unwrap()),
        format!("{REGISTRY}/{device}-payload-1"),
        "{states:#}"
    );
}

#[track_caller]
fn assert_event(line: &Value, payload: &str) {
    assert_eq!(line["topic"], EVENT_TOPIC, "{line:#}");
    assert_eq!(decode(line["data"].as_str().unwrap()), payload, "{line:#}");
    for field in ["messageId", "publishTime"] {
        let value = line[field].as_str().unwrap_or_default();
        assert!(!value.is_empty(), "{field} missing: {line:#}");
    }
}

fn decode(data: &str) -> String {
    String::from_utf8(STANDARD.decode(data).unwrap()).unwrap()
}

#[tokio::test]
async fn the_python_http_sample_publishes_events_and_state_with_an_rsa_key() {
    events_state_and_config_round_trip("dev-rsa", "RSA_PEM", "rsa_public", "rsa_private").await;
}

#[tokio::test]
async fn the_python_http_sample_publishes_events_and_state_with_an_openssl_ec_key() {
    // `ec_private` is SEC1 (`EC PRIVATE KEY`), as `openssl ecparam -genkey` writes it.
    events_state_and_config_round_trip("dev-ec", "ES256_PEM", "ec_public", "ec_private").await;
}

#[tokio::test]
async fn the_python_http_sample_fails_when_its_key_is_not_the_registered_one() {
    let server = Server::start();
    server.create_registry().await;
    server
        .create_device("dev-rsa", "RSA_PEM", "rsa_public")
        .await;
    let client = Client {
        server: &server,
        device: "dev-rsa",
        private_key: server.key_file("rsa2_private"),
        algorithm: "RS256",
    };
    let output = client.run("event", 1).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("-> HTTP 401"), "{}", describe(&output));
    assert!(stdout.contains("UNAUTHENTICATED"), "{}", describe(&output));
    assert!(
        server.sink_lines(0).is_empty(),
        "a refused event reached the sink"
    );
}
