//! The delivery bus over Pub/Sub, for several instances: one topic for the fleet, and one
//! subscription per instance, made when it starts and deleted when it stops. A note for one
//! instance carries its name in the `to` attribute (`*` for all), and each subscription's filter
//! lets through only its own and the broadcasts, so an instance is billed only for what concerns
//! it; the receiver checks the attribute again (the emulator accepts filters but ignores them).
//! A crashed instance's subscription is deleted by Pub/Sub after a day without a pull (the
//! shortest expiration policy Pub/Sub allows), and holds at most 10 minutes of notes meanwhile.
//! Notes are acknowledged when they arrive: a note that comes too late is worthless (the admin
//! call waiting for it has answered), and config pushes are covered by the session's own resend.

use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{
    BasePublisher, Publisher, Subscriber, SubscriptionAdmin, TopicAdmin,
};
use google_cloud_pubsub::model::{ExpirationPolicy, Message, Subscription};
use tokio::sync::mpsc;

use super::bus::{Bus, BusError, Envelope};

/// How many received notes may wait for the fleet to act on them.
const INCOMING: usize = 1024;

/// Where the bus lives.
#[derive(Debug, Clone)]
pub struct PubSubBusSettings {
    /// `projects/{p}/topics/{t}`: the fleet's topic, made if missing.
    pub topic: String,
    /// `HOST:PORT` of the Pub/Sub emulator, or `None` for Google's service.
    pub emulator_host: Option<String>,
    /// This instance's name; its subscription is `{topic}-{instance}` in the topic's project.
    pub instance: String,
}

/// The Pub/Sub bus of one instance.
#[derive(Debug)]
pub struct PubSubBus {
    publisher: Publisher,
    admin: SubscriptionAdmin,
    subscription: String,
    receiving: tokio::task::JoinHandle<()>,
}

impl PubSubBus {
    /// Makes the topic if needed and this instance's subscription, and starts receiving: what
    /// arrives for this instance comes out of the returned channel.
    pub async fn open(
        settings: &PubSubBusSettings,
    ) -> anyhow::Result<(Self, mpsc::Receiver<Envelope>)> {
        let (project, topic_id) = split_topic(&settings.topic)?;
        let subscription = format!(
            "projects/{project}/subscriptions/{topic_id}-{}",
            settings.instance
        );
        let endpoint = settings
            .emulator_host
            .as_deref()
            .map(|h| format!("http://{h}"));
        macro_rules! client {
            ($builder:expr) => {{
                let mut builder = $builder;
                if let Some(endpoint) = &endpoint {
                    builder = builder
                        .with_endpoint(endpoint.clone())
                        .with_credentials(Anonymous::new().build());
                }
                builder
                    .build()
                    .await
                    .context("could not set up the Pub/Sub client for the delivery bus")?
            }};
        }
        let topics: TopicAdmin = client!(TopicAdmin::builder());
        let admin: SubscriptionAdmin = client!(SubscriptionAdmin::builder());
        let base: BasePublisher = client!(BasePublisher::builder());
        let subscriber: Subscriber = client!(Subscriber::builder());

        ensure_topic(&topics, &settings.topic).await?;
        let filter = format!(
            "attributes.to = \"{}\" OR attributes.to = \"*\"",
            settings.instance
        );
        let request = Subscription::new()
            .set_name(subscription.clone())
            .set_topic(settings.topic.clone())
            .set_filter(filter)
            .set_ack_deadline_seconds(10)
            .set_message_retention_duration(google_cloud_wkt::Duration::clamp(600, 0))
            .set_expiration_policy(
                ExpirationPolicy::new().set_ttl(google_cloud_wkt::Duration::clamp(86_400, 0)),
            );
        admin
            .create_subscription()
            .with_request(request)
            .send()
            .await
            .with_context(|| {
                format!("could not create the delivery bus subscription {subscription}")
            })?;
        let publisher = base
            .publisher(settings.topic.clone())
            // Notes are few and someone waits for each: send at once.
            .set_delay_threshold(Duration::from_millis(1))
            .build();
        let (tx, incoming) = mpsc::channel(INCOMING);
        let instance = settings.instance.clone();
        let stream = subscriber.subscribe(subscription.clone()).build();
        let receiving = tokio::spawn(receive(stream, instance, tx));
        tracing::info!(%subscription, "delivery bus: receiving notes for this instance");
        let bus = Self {
            publisher,
            admin,
            subscription,
            receiving,
        };
        Ok((bus, incoming))
    }
}

#[async_trait]
impl Bus for PubSubBus {
    async fn send(&self, envelope: &Envelope) -> Result<(), BusError> {
        let body = serde_json::to_vec(envelope).map_err(|e| BusError(e.to_string()))?;
        let message = Message::new().set_data(body).set_attributes([
            ("to", envelope.to.as_deref().unwrap_or("*")),
            ("from", envelope.from.as_str()),
        ]);
        match tokio::time::timeout(Duration::from_secs(10), self.publisher.publish(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(BusError(err.to_string())),
            Err(_) => Err(BusError("Pub/Sub did not confirm within 10 s".into())),
        }
    }

    async fn close(&self) {
        self.receiving.abort();
        let deleted = self
            .admin
            .delete_subscription()
            .set_subscription(self.subscription.clone())
            .send()
            .await;
        match deleted {
            Ok(()) => {
                tracing::info!(subscription = %self.subscription, "delivery bus subscription deleted")
            }
            Err(err) => {
                tracing::warn!(error = %err, subscription = %self.subscription, "could not delete the delivery bus subscription; Pub/Sub removes it after a day unused")
            }
        }
    }

    fn reaches_others(&self) -> bool {
        true
    }
}

async fn ensure_topic(topics: &TopicAdmin, topic: &str) -> anyhow::Result<()> {
    match topics.create_topic().set_name(topic).send().await {
        Ok(_) => Ok(()),
        Err(err) if err.status().is_some_and(|s| s.code == Code::AlreadyExists) => Ok(()),
        // Made by terraform, and this instance may only publish and subscribe.
        Err(err)
            if err
                .status()
                .is_some_and(|s| s.code == Code::PermissionDenied) =>
        {
            Ok(())
        }
        Err(err) => Err(anyhow::Error::new(err)
            .context(format!("could not create the delivery bus topic {topic}"))),
    }
}

/// Receives until the stream ends, handing on notes addressed to `instance` or to all.
async fn receive(
    mut stream: google_cloud_pubsub::subscriber::MessageStream,
    instance: String,
    tx: mpsc::Sender<Envelope>,
) {
    while let Some(received) = stream.next().await {
        let (message, handler) = match received {
            Ok(received) => received,
            Err(err) => {
                tracing::warn!(error = %err, "the delivery bus subscription failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        handler.ack();
        let to = message.attributes.get("to").map(String::as_str);
        if to.is_some_and(|to| to != "*" && to != instance) {
            continue;
        }
        match serde_json::from_slice::<Envelope>(&message.data) {
            Ok(envelope) => {
                if tx.send(envelope).await.is_err() {
                    break;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "a delivery-bus message is not a note; ignored")
            }
        }
    }
    tracing::warn!(
        "the delivery bus stopped receiving: commands and changes from other instances no longer reach this one"
    );
}

fn split_topic(topic: &str) -> anyhow::Result<(&str, &str)> {
    match topic.split('/').collect::<Vec<_>>()[..] {
        ["projects", project, "topics", id] if !project.is_empty() && !id.is_empty() => {
            Ok((project, id))
        }
        _ => anyhow::bail!(
            "--delivery-topic must be a full topic name, projects/PROJECT/topics/TOPIC; got `{topic}`"
        ),
    }
}
