//! The Pub/Sub emulator's REST API, for what a test does around the service: make a topic with a
//! subscription, and pull what arrived to check data and attributes. The service's own path to
//! Pub/Sub (the sink) is never used here, so a test sees what any subscriber would.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::TopicName;

use crate::unique;

/// The emulator's REST API at one host.
#[derive(Debug)]
pub struct PubSubRest {
    base: String,
    http: reqwest::Client,
}

/// A message as a subscriber (or the file sink's line) holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pulled {
    /// The payload, decoded from base64.
    pub data: Vec<u8>,
    /// IoT Core's attributes (`deviceId`, `subFolder`, …).
    pub attributes: BTreeMap<String, String>,
}

impl Pulled {
    /// From a Pub/Sub `PubsubMessage` in JSON: `data` in base64 and `attributes`.
    pub fn from_message(message: &Value) -> Self {
        let data = message["data"].as_str().unwrap_or("");
        Self {
            data: shared::proto3::decode_base64(data).unwrap(),
            attributes: serde_json::from_value(message["attributes"].clone()).unwrap_or_default(),
        }
    }

    /// The payload read as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.data).unwrap_or(Value::Null)
    }
}

impl PubSubRest {
    /// The REST API of the emulator at `HOST:PORT`.
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

    /// `PUT` of a resource (topic or subscription) with its JSON body.
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

    /// A new topic of `project` and a subscription to it: (topic, subscription path).
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
            let received = self.pull_now(subscription).await;
            if received.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            pulled.extend(received);
        }
        pulled
    }

    /// Pulls and acknowledges whatever is there now, perhaps nothing.
    pub async fn pull_now(&self, subscription: &str) -> Vec<Pulled> {
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
        if !received.is_empty() {
            let ack_ids: Vec<&Value> = received.iter().map(|r| &r["ackId"]).collect();
            self.http
                .post(format!("{}/{subscription}:acknowledge", self.base))
                .json(&json!({"ackIds": ack_ids}))
                .send()
                .await
                .unwrap();
        }
        received
            .iter()
            .map(|r| Pulled::from_message(&r["message"]))
            .collect()
    }
}
