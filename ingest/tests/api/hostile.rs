//! The hostile-input suite: what an attacker or a badly written client sends — slow and idle
//! sockets, oversized everything, smuggled requests, forged tokens, wrong topics and client ids,
//! malformed packets — against the real `ingest serve` binary with its default limits (only the
//! head, CONNECT and request deadlines shortened, so the suite runs in seconds). Every case asserts the
//! documented answer (status and words, CONNACK code, or a close) and then that a normal device is
//! still served: an HTTP publish answered `200` within a second and an MQTT CONNECT, PUBLISH and
//! PUBACK, and the events of both in the sink file. The cases and answers are listed in
//! RELIABILITY.md.
//!
//! Each area is one test over one service; a case that fails is recorded and the area goes on,
//! so one run shows every answer that changed.

mod admin;
mod http;
mod jwt;
mod mqtt;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet, Publish};
use serde_json::{Value, json};
use testkit::IngestProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::device::Signer;
use crate::support::mqtt::{Raw, client_id};
use crate::support::{PROJECT, REGION, key, spawn_ingest};

/// The registry and the normal device every case is followed by.
const REG: &str = "hostile";
const DEVICE: &str = "normal";
/// A second device whose key the attacker does not hold.
const OTHER: &str = "victim";
/// The admin bearer token of the service under attack.
const ADMIN_TOKEN: &str = "hostile-suite-admin-token-5c1d";
/// The head and CONNECT deadlines the service runs with here (the defaults are 10 s).
const DEADLINE: Duration = Duration::from_secs(2);
/// The whole-request deadline here (the default is 30 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `ingest serve` with a registry, the normal device and the victim device.
pub struct Target {
    service: IngestProcess,
    /// Holds the sink's `events.jsonl`.
    sink_dir: tempfile::TempDir,
    http: reqwest::Client,
    /// `127.0.0.1:PORT` of the HTTP device bridge.
    pub device_addr: SocketAddr,
    /// `127.0.0.1:PORT` of the admin API.
    pub admin_addr: SocketAddr,
    /// `127.0.0.1:PORT` of plain MQTT.
    pub mqtt_addr: SocketAddr,
    /// Signs the normal device's tokens (RSA).
    pub signer: Signer,
    /// Events the sink must hold so far.
    expected_events: usize,
}

fn addr_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.trim_end_matches('/').parse().unwrap()
}

impl Target {
    /// Starts the service (file sink in its directory, plain MQTT, an admin token) and creates
    /// the registry and its two devices.
    pub async fn start() -> Self {
        let head = format!("--request-head-timeout-secs={}", DEADLINE.as_secs());
        let connect = format!("--mqtt-connect-timeout-secs={}", DEADLINE.as_secs());
        let request = format!("--request-timeout-secs={}", REQUEST_TIMEOUT.as_secs());
        let sink_dir = tempfile::tempdir().unwrap();
        let sink_arg = format!(
            "--sink=file:{}",
            sink_dir.path().join("events.jsonl").display()
        );
        let service = spawn_ingest(
            &[
                &sink_arg,
                "--mqtt-plain-addr=127.0.0.1:0",
                &head,
                &connect,
                &request,
            ],
            &[("ADMIN_TOKEN", ADMIN_TOKEN)],
        );
        let target = Self {
            device_addr: addr_of(&service.device_url()),
            admin_addr: addr_of(&service.admin_url()),
            mqtt_addr: addr_of(&service.announced("MQTT bridge (plain TCP)")),
            service,
            sink_dir,
            // A connection per request: the service closes keep-alive connections idle past
            // the (here 2 s) head deadline, and a pooled one reused at that moment is reset.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            signer: Signer::rsa("rsa_private"),
            expected_events: 0,
        };
        let topic = format!("projects/{PROJECT}/topics/events");
        let registry = json!({"id": REG, "eventNotificationConfigs": [{"pubsubTopicName": topic}]});
        target.admin_ok("", registry).await;
        for (id, key_name) in [(DEVICE, "rsa_public"), (OTHER, "ec_public")] {
            let format = if key_name.starts_with("rsa") {
                "RSA_PEM"
            } else {
                "ES256_PEM"
            };
            let device = json!({"id": id, "credentials": [{"publicKey": {"format": format, "key": key(key_name)}}]});
            target.admin_ok(&format!("/{REG}/devices"), device).await;
        }
        target
    }

    /// `http://127.0.0.1:PORT/v1/projects/P/locations/L/registries{path}` on the admin port.
    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}/v1/projects/{PROJECT}/locations/{REGION}/registries{path}",
            self.admin_addr
        )
    }

    /// The same path on the device port.
    pub fn device_url(&self, path: &str) -> String {
        format!(
            "http://{}/v1/projects/{PROJECT}/locations/{REGION}/registries{path}",
            self.device_addr
        )
    }

    /// `/REG/devices/{device}` — the device part of both ports' paths.
    pub fn device_path(device: &str) -> String {
        format!("/{REG}/devices/{device}")
    }

    async fn admin_ok(&self, path: &str, body: Value) {
        let (status, answer) = self
            .send(
                self.http
                    .post(self.admin_url(path))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&body),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }

    /// A request builder for the admin port carrying the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.admin_url(path))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// A plain client for requests the cases shape themselves.
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a request and reads the answer as status and JSON (`null` when not JSON).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// `POST …/devices/{device}:publishEvent` with `token` and `body`.
    pub async fn publish(&self, device: &str, token: &str, body: Value) -> (u16, Value) {
        let url = self.device_url(&format!("{}:publishEvent", Self::device_path(device)));
        self.send(self.http.post(url).bearer_auth(token).json(&body))
            .await
    }

    /// Whether a normal device is still served: an HTTP publish answered `200` within a second,
    /// an MQTT CONNECT accepted and a QoS 1 event PUBACKed, and both events in the sink.
    async fn still_serves(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let body = json!({"binaryData": "aGVsbG8="});
        let (status, answer) = self.publish(DEVICE, &self.signer.fresh(), body).await;
        if status != 200 || started.elapsed() > Duration::from_secs(1) {
            return Err(format!(
                "the normal HTTP publish got {status} {answer} after {:?}",
                started.elapsed()
            ));
        }
        self.mqtt_publish().await?;
        self.expected_events += 2;
        let lines = std::fs::read_to_string(self.sink_dir.path().join("events.jsonl"))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if lines < self.expected_events {
            return Err(format!(
                "the sink holds {lines} events, {} were acknowledged",
                self.expected_events
            ));
        }
        Ok(())
    }

    async fn mqtt_publish(&self) -> Result<(), String> {
        let (mut raw, code) = tokio::time::timeout(
            Duration::from_secs(1),
            Raw::connect(
                self.mqtt_addr,
                &client_id(REG, DEVICE),
                &self.signer.fresh(),
                60,
            ),
        )
        .await
        .map_err(|_| "the normal MQTT CONNECT was not answered within 1 s".to_owned())?;
        if code != ConnectReturnCode::Success {
            return Err(format!("the normal MQTT CONNECT got {code:?}"));
        }
        let mut publish = Publish::new(format!("/devices/{DEVICE}/events"), QoS::AtLeastOnce, "hi");
        publish.pkid = 1;
        raw.send(&Packet::Publish(publish)).await;
        match raw.recv_within(Duration::from_secs(1)).await {
            Some(Some(Packet::PubAck(ack))) if ack.pkid == 1 => {}
            other => return Err(format!("the normal MQTT publish got {other:?}")),
        }
        raw.send(&Packet::Disconnect).await;
        Ok(())
    }
}

/// Cases of one area over one [`Target`], collecting what went wrong.
pub struct Suite {
    /// The service under attack.
    pub target: Target,
    cases: usize,
    failures: String,
}

impl Suite {
    /// Starts a fresh service for an area.
    pub async fn start() -> Self {
        Self {
            target: Target::start().await,
            cases: 0,
            failures: String::new(),
        }
    }

    /// Records case `name`: `outcome` is its own check (`Err` says what differed from the
    /// documented answer); then the normal device must still be served.
    pub async fn case(&mut self, name: &str, outcome: Result<(), String>) {
        self.cases += 1;
        if let Err(why) = outcome {
            let _ = writeln!(self.failures, "{name}: {why}");
        }
        if let Err(why) = self.target.still_serves().await {
            let _ = writeln!(self.failures, "{name}: afterwards {why}");
        }
    }

    /// Counts `n` more events the sink must hold (a case that published them).
    pub fn add_events(&mut self, n: usize) {
        self.target.expected_events += n;
    }

    /// Fails the test if any case did, listing each; returns how many cases ran.
    pub fn finish(self) -> usize {
        assert!(
            self.failures.is_empty(),
            "{} cases, failures:\n{}\nservice log:\n{}",
            self.cases,
            self.failures,
            self.target.service.log()
        );
        self.cases
    }
}

/// What the service did with a raw request on a socket.
#[derive(Debug)]
pub enum Reply {
    /// An HTTP answer: status and body.
    Answer(u16, String),
    /// It closed the connection without an answer.
    Closed,
    /// Nothing within the wait.
    Silent,
}

/// Writes `bytes` to `addr` and reads one HTTP answer (or the close) within `wait`.
pub async fn raw_http(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // A service that already answered may refuse the rest of the write; the read says what.
    let _ = stream.write_all(bytes).await;
    read_reply(&mut stream, wait).await
}

/// Reads one HTTP answer from `stream` (head, and the body its `Content-Length` announces).
pub async fn read_reply(stream: &mut TcpStream, wait: Duration) -> Reply {
    let deadline = tokio::time::Instant::now() + wait;
    let mut seen = Vec::new();
    loop {
        if let Some(reply) = parse_reply(&seen) {
            return reply;
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Reply::Silent,
            Ok(Ok(0) | Err(_)) => {
                return parse_reply(&seen).unwrap_or(if seen.is_empty() {
                    Reply::Closed
                } else {
                    Reply::Answer(0, String::from_utf8_lossy(&seen).into_owned())
                });
            }
            Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
        }
    }
}

fn parse_reply(seen: &[u8]) -> Option<Reply> {
    let end = seen.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let body = seen.get(end + 4..end + 4 + length)?;
    Some(Reply::Answer(
        status,
        String::from_utf8_lossy(body).into_owned(),
    ))
}

/// `Ok` when `reply` is an answer with `status` whose body holds every one of `words`.
pub fn answered(reply: &Reply, status: u16, words: &[&str]) -> Result<(), String> {
    match reply {
        Reply::Answer(got, body) if *got == status && words.iter().all(|w| body.contains(w)) => {
            Ok(())
        }
        other => Err(format!("expected {status} saying {words:?}, got {other:?}")),
    }
}

/// `Ok` when `reply` is an answer with one of `statuses`, or a close without an answer (hyper
/// closes on some malformed heads before it could answer).
pub fn status_or_close(reply: &Reply, statuses: &[u16]) -> Result<(), String> {
    match reply {
        Reply::Answer(status, _) if statuses.contains(status) => Ok(()),
        Reply::Closed => Ok(()),
        other => Err(format!(
            "expected one of {statuses:?} or a close, got {other:?}"
        )),
    }
}

/// `Ok` when `(status, body)` has `status` and the body's message holds every one of `words`.
pub fn refused(answer: &(u16, Value), status: u16, words: &[&str]) -> Result<(), String> {
    let text = answer.1.to_string();
    if answer.0 == status && words.iter().all(|w| text.contains(w)) {
        Ok(())
    } else {
        Err(format!(
            "expected {status} saying {words:?}, got {} {text:.400}",
            answer.0
        ))
    }
}

/// Whether the service closed `stream` within `limit` (reading and dropping what it sent).
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut sink = [0u8; 1024];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut sink),
        )
        .await
        {
            Err(_) => return Err(format!("still open after {limit:?}")),
            Ok(Ok(0) | Err(_)) => return Ok(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn hostile_http_requests_get_their_answers_and_a_device_is_still_served() {
    let cases = http::run(Suite::start().await).await;
    assert!(cases >= 20, "{cases} HTTP cases");
}

#[tokio::test]
async fn hostile_tokens_get_their_answers_and_a_device_is_still_served() {
    let cases = jwt::run(Suite::start().await).await;
    assert!(cases >= 20, "{cases} token cases");
}

#[tokio::test]
async fn hostile_admin_requests_get_their_answers_and_a_device_is_still_served() {
    let cases = admin::run(Suite::start().await).await;
    assert!(cases >= 12, "{cases} admin cases");
}

#[tokio::test]
async fn hostile_mqtt_clients_get_their_answers_and_a_device_is_still_served() {
    let cases = mqtt::run(Suite::start().await).await;
    assert!(cases >= 20, "{cases} MQTT cases");
}
