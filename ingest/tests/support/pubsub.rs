//! Helpers for tests against the real Pub/Sub emulator: the shared emulator that `scripts/test`
//! starts (`PUBSUB_EMULATOR_HOST`), the emulator's REST API for topics, subscriptions and pulls,
//! and private emulators a test can stop to see how ingest behaves when Pub/Sub is down.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::TopicName;

pub fn shared_emulator_host() -> String {
    std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_else(|_| {
        panic!(
            "PUBSUB_EMULATOR_HOST is not set: these tests need the Pub/Sub emulator. Run \
             scripts/test, or `eval \"$(scripts/pubsub-emulator start)\"; export \
             PUBSUB_EMULATOR_HOST` first"
        )
    })
}

/// A name no other test (or earlier run against the same emulator) uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{now}-{n}", std::process::id())
}

/// The emulator's REST API, for what the sink does not do: topics, subscriptions, pulls.
pub struct Rest {
    base: String,
    http: reqwest::Client,
}

/// A message as a subscriber sees it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Pulled {
    pub data: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
}

impl Rest {
    pub fn new(host: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Self {
            base: format!("http://{host}/v1"),
            http,
        }
    }

    pub async fn put(&self, path: &str, body: Value) {
        let response = self
            .http
            .put(format!("{}/{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(
            status.is_success(),
            "PUT {path}: {status} {}",
            response.text().await.unwrap()
        );
    }

    /// A new topic and a subscription to it; returns (topic, subscription path).
    pub async fn topic_with_subscription(&self, project: &str) -> (TopicName, String) {
        let topic = format!("projects/{project}/topics/{}", unique("events"));
        let subscription = format!("projects/{project}/subscriptions/{}", unique("sub"));
        self.put(&topic, json!({})).await;
        self.put(
            &subscription,
            json!({"topic": topic, "ackDeadlineSeconds": 60}),
        )
        .await;
        (TopicName::parse(&topic).unwrap(), subscription)
    }

    /// Pulls (and acknowledges) until `count` messages arrived or 20 s passed.
    pub async fn pull(&self, subscription: &str, count: usize) -> Vec<Pulled> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut pulled = Vec::new();
        while pulled.len() < count && Instant::now() < deadline {
            let body: Value = self
                .http
                .post(format!("{}/{subscription}:pull", self.base))
                .json(&json!({"maxMessages": 1000, "returnImmediately": true}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let received = body["receivedMessages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if received.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let ack_ids: Vec<&Value> = received.iter().map(|r| &r["ackId"]).collect();
            self.http
                .post(format!("{}/{subscription}:acknowledge", self.base))
                .json(&json!({"ackIds": ack_ids}))
                .send()
                .await
                .unwrap();
            pulled.extend(received.iter().map(|r| parse_pulled(&r["message"])));
        }
        pulled
    }
}

pub fn parse_pulled(message: &Value) -> Pulled {
    let data = message["data"].as_str().unwrap_or("");
    Pulled {
        data: shared::proto3::decode_base64(data).unwrap(),
        attributes: serde_json::from_value(message["attributes"].clone()).unwrap_or_default(),
    }
}

/// An emulator of this test's own, stopped when dropped (even if the test panics).
pub struct PrivateEmulator {
    dir: tempfile::TempDir,
    pub host: String,
}

impl PrivateEmulator {
    pub fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/pubsub-emulator")
    }

    pub fn command(dir: &tempfile::TempDir, action: &str) -> Command {
        let mut command = Command::new(Self::script());
        command.arg(action).env("PUBSUB_EMULATOR_DIR", dir.path());
        command
    }

    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = Self::command(&dir, "start").output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let host = stdout
            .lines()
            .find_map(|line| line.strip_prefix("PUBSUB_EMULATOR_HOST="))
            .map(str::to_owned);
        let emulator = Self {
            dir,
            host: host.unwrap_or_default(),
        };
        assert!(
            output.status.success() && !emulator.host.is_empty(),
            "scripts/pubsub-emulator start failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
        emulator
    }

    pub fn stop(&self) {
        let status = Self::command(&self.dir, "stop").status().unwrap();
        assert!(status.success(), "scripts/pubsub-emulator stop failed");
    }

    /// Starts the stopped emulator again on the same port, empty (it keeps nothing).
    pub fn restart(&self) {
        let port = self.host.rsplit(':').next().unwrap();
        let output = Self::command(&self.dir, "start")
            .arg(port)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "scripts/pubsub-emulator start {port} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivateEmulator {
    fn drop(&mut self) {
        // Quiet: after an explicit `stop` there is nothing left and the script says so.
        let _ = Self::command(&self.dir, "stop")
            .stderr(std::process::Stdio::null())
            .status();
    }
}
