//! `ingest serve` as the real third-party MQTT clients meet it: MQTT over TLS with the CA it
//! makes itself, the Pub/Sub emulator as the sink, and a registry whose events go to a fresh
//! emulator topic with a subscription to pull them from. The tests of Google's MQTT and gateway
//! samples start it.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::IngestProcess;
use testkit::emulators::pubsub_host;
use testkit::pubsub::PubSubRest;

use super::{PROJECT, REGION, spawn_ingest};

/// The running service and where its events land.
pub struct TlsServer {
    pub process: IngestProcess,
    pub http: reqwest::Client,
    pub rest: PubSubRest,
    pub subscription: String,
    /// Holds the TLS directory the service made its CA in.
    _tls: tempfile::TempDir,
}

impl TlsServer {
    /// Starts it with `extra` flags and creates `registry`, publishing events to a new topic.
    pub async fn start(registry: &str, extra: &[&str]) -> Self {
        let host = pubsub_host();
        let rest = PubSubRest::new(&host);
        let (topic, subscription) = rest.topic_with_subscription(PROJECT).await;
        let dir = tempfile::tempdir().unwrap();
        let sink_host = format!("--pubsub-emulator-host={host}");
        let tls_dir = format!("--mqtt-tls-dir={}", dir.path().join("tls").display());
        let mut args = vec![
            "--sink=pubsub",
            &sink_host,
            "--mqtt-addr=127.0.0.1:0",
            &tls_dir,
        ];
        args.extend(extra);
        let server = Self {
            process: spawn_ingest(&args, &[]),
            http: reqwest::Client::new(),
            rest,
            subscription,
            _tls: dir,
        };
        let events = json!([{"pubsubTopicName": topic.to_string()}]);
        server
            .post(
                "/registries",
                json!({"id": registry, "eventNotificationConfigs": events}),
            )
            .await;
        server
    }

    /// The admin API's URL of `path` below the location.
    pub fn admin(&self, path: &str) -> String {
        format!(
            "{}/v1/projects/{PROJECT}/locations/{REGION}{path}",
            self.process.admin_url()
        )
    }

    /// POSTs `body`, asserting `200`.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.try_post(path, body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    /// POSTs `body`, answering status and JSON.
    pub async fn try_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.admin(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// GETs `path`, asserting `200`.
    pub async fn get(&self, path: &str) -> Value {
        let response = self.http.get(self.admin(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }
}
