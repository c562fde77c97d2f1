//! The Google Cloud Pub/Sub sink, for the real service or the emulator. One gRPC client is shared
//! by one batching publisher per topic, each made on the topic's first message and kept for the
//! life of the process (the official crate's publisher runs a background task per topic, so
//! making one per message would defeat batching). A device is answered `200` only after Pub/Sub
//! confirmed its message, so every publish waits for that confirmation, but never longer than
//! `publish_timeout`. The crate's own retry loop is bounded to just under that too (see
//! `retry_budget`): left at its default it keeps a device waiting for up to ten minutes while
//! Pub/Sub is unreachable, and goes on retrying after `publish` gave up.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_gax::retry_policy::RetryPolicyExt as _;
use google_cloud_pubsub::client::{BasePublisher, Publisher};
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::retry_policy::RetryableErrors;
use shared::TopicName;

use super::{Message, Sink, SinkError};

/// How to reach Pub/Sub and how to batch.
#[derive(Debug, Clone)]
pub struct PubSubSettings {
    /// `HOST:PORT` of a Pub/Sub emulator (plain HTTP/2, no credentials); `None` means Google's
    /// endpoint with application-default credentials.
    pub emulator_host: Option<String>,
    /// The longest a publish waits for Pub/Sub's confirmation before the device is told to retry.
    pub publish_timeout: Duration,
    /// The longest `flush` waits at shutdown.
    pub flush_timeout: Duration,
    /// A batch is sent after this delay...
    pub batch_delay: Duration,
    /// ...or once it holds this many messages...
    pub batch_messages: u32,
    /// ...or this many bytes, whichever comes first.
    pub batch_bytes: u32,
}

impl Default for PubSubSettings {
    fn default() -> Self {
        Self {
            emulator_host: None,
            publish_timeout: Duration::from_secs(10),
            flush_timeout: Duration::from_secs(10),
            batch_delay: Duration::from_millis(10),
            batch_messages: 100,
            batch_bytes: 1_000_000,
        }
    }
}

/// Publishes to Pub/Sub through one long-lived batching publisher per topic.
#[derive(Debug)]
pub struct PubSubSink {
    client: BasePublisher,
    settings: PubSubSettings,
    // A std mutex: only held to look up or insert, never across an `.await`. Publishers are
    // cheap handles (a channel sender) and are cloned out.
    publishers: Mutex<HashMap<TopicName, Publisher>>,
}

impl PubSubSink {
    /// Makes the shared client: for the emulator when `emulator_host` is set, else for Google's
    /// endpoint with application-default credentials. Those are resolved lazily: with none to
    /// be found this still succeeds (the crate falls back to the metadata server), and every
    /// publish then ends `Unavailable` after `publish_timeout`.
    pub async fn new(settings: PubSubSettings) -> anyhow::Result<Self> {
        let budget = retry_budget(settings.publish_timeout, settings.batch_delay);
        let mut builder =
            BasePublisher::builder().with_retry_policy(RetryableErrors.with_time_limit(budget));
        if let Some(host) = &settings.emulator_host {
            // Both are needed: with an https endpoint or real credentials the crate hangs
            // against the emulator instead of failing.
            builder = builder
                .with_endpoint(emulator_endpoint(host))
                .with_credentials(Anonymous::new().build());
        }
        let client = builder
            .build()
            .await
            .context("could not set up the Pub/Sub client")?;
        Ok(Self {
            client,
            settings,
            publishers: Mutex::new(HashMap::new()),
        })
    }

    /// The publisher for `topic`, made on first use.
    fn publisher(&self, topic: &TopicName) -> Publisher {
        let mut publishers = self
            .publishers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        publishers
            .entry(topic.clone())
            .or_insert_with(|| {
                self.client
                    .publisher(topic.to_string())
                    .set_delay_threshold(self.settings.batch_delay)
                    .set_message_count_threshold(self.settings.batch_messages)
                    .set_byte_threshold(self.settings.batch_bytes)
                    .build()
            })
            .clone()
    }

    fn all_publishers(&self) -> Vec<Publisher> {
        let publishers = self
            .publishers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        publishers.values().cloned().collect()
    }
}

/// How long the crate may keep retrying a batch. Its default is ten minutes, and it keeps
/// retrying after `publish` gave up and the device was told to retry (measured: such a message
/// was delivered once Pub/Sub came back), so unconfirmed messages would pile up in memory during
/// an outage and arrive twice. The crate stops a little before `publish` does, which also lets
/// its own error ("connection refused") reach the log instead of a bare timeout.
fn retry_budget(publish_timeout: Duration, batch_delay: Duration) -> Duration {
    const MARGIN: Duration = Duration::from_millis(200);
    // Never so little that a healthy first attempt has no time.
    publish_timeout
        .saturating_sub(batch_delay + MARGIN)
        .max(publish_timeout / 2)
}

/// `HOST:PORT` as the crate wants it: an explicit `http://` (the emulator has no TLS).
fn emulator_endpoint(host: &str) -> String {
    if host.starts_with("http://") || host.starts_with("https://") {
        host.to_owned()
    } else {
        format!("http://{host}")
    }
}

fn to_pubsub(message: Message) -> google_cloud_pubsub::model::Message {
    google_cloud_pubsub::model::Message::new()
        .set_data(message.data)
        .set_attributes(message.attributes.iter())
}

/// Sorts a failed publish into what the device should be told.
fn classify(topic: &TopicName, error: &PublishError) -> SinkError {
    let code = match error {
        PublishError::Rpc(rpc) => rpc.status().map(|status| status.code.name()),
        _ => None,
    };
    let topic_name = topic.to_string();
    let detail = error.to_string();
    match code {
        Some("NOT_FOUND") => SinkError::TopicNotFound(topic_name),
        Some("PERMISSION_DENIED" | "INVALID_ARGUMENT") => SinkError::Rejected {
            topic: topic_name,
            detail,
        },
        // Transport failures, UNAVAILABLE and the like (after the crate's own retries),
        // and a publisher that shut down: all worth retrying later.
        _ => SinkError::Unavailable {
            topic: topic_name,
            detail,
        },
    }
}

#[async_trait]
impl Sink for PubSubSink {
    async fn publish(&self, topic: &TopicName, message: Message) -> Result<(), SinkError> {
        let confirmation = self.publisher(topic).publish(to_pubsub(message));
        match tokio::time::timeout(self.settings.publish_timeout, confirmation).await {
            Ok(Ok(_message_id)) => Ok(()),
            Ok(Err(error)) => Err(classify(topic, &error)),
            Err(_elapsed) => Err(SinkError::Unavailable {
                topic: topic.to_string(),
                detail: format!(
                    "Pub/Sub did not confirm within {:?}",
                    self.settings.publish_timeout
                ),
            }),
        }
    }

    async fn flush(&self) {
        let mut flushes = tokio::task::JoinSet::new();
        for publisher in self.all_publishers() {
            flushes.spawn(async move { publisher.flush().await });
        }
        let all_done = async { while flushes.join_next().await.is_some() {} };
        if tokio::time::timeout(self.settings.flush_timeout, all_done)
            .await
            .is_err()
        {
            tracing::warn!(
                timeout = ?self.settings.flush_timeout,
                "Pub/Sub publishers did not flush in time; unconfirmed messages were not acknowledged to devices"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emulator_host_becomes_a_plain_http_endpoint() {
        assert_eq!(emulator_endpoint("127.0.0.1:8085"), "http://127.0.0.1:8085");
        assert_eq!(emulator_endpoint("http://[::1]:8085"), "http://[::1]:8085");
    }

    #[test]
    fn the_crate_stops_retrying_just_before_publish_gives_up() {
        let budget = retry_budget(Duration::from_secs(10), Duration::from_millis(10));
        assert!(budget < Duration::from_secs(10) && budget > Duration::from_secs(9));
        let tiny = retry_budget(Duration::from_millis(100), Duration::from_millis(10));
        assert_eq!(tiny, Duration::from_millis(50));
    }

    #[test]
    fn the_defaults_bound_the_wait_and_batch_briefly() {
        let settings = PubSubSettings::default();
        assert_eq!(settings.publish_timeout, Duration::from_secs(10));
        assert_eq!(settings.batch_delay, Duration::from_millis(10));
        assert_eq!(settings.batch_messages, 100);
        assert_eq!(settings.batch_bytes, 1_000_000);
    }
}
