//! `PubSubSink` against the real Pub/Sub emulator: what a subscriber pulls is exactly what was
//! published (data and every attribute), many concurrent publishes all arrive, and the failures a
//! device must see as `503` (emulator stopped, nothing listening) come back as `Unavailable`
//! within the publish timeout instead of hanging. The shared emulator comes from
//! `PUBSUB_EMULATOR_HOST` (`scripts/test` starts one); tests that stop an emulator start their
//! own, private one with `scripts/pubsub-emulator`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest::sink::pubsub::{PubSubSettings, PubSubSink};
use ingest::sink::{Attributes, Message, Sink, SinkError};
use shared::TopicName;
use testkit::emulators::{PrivatePubSub, pubsub_host};
use testkit::pubsub::{PubSubRest, Pulled};
use testkit::unique;

const PROJECT: &str = "sink-tests";

fn settings(host: &str, publish_timeout: Duration) -> PubSubSettings {
    PubSubSettings {
        emulator_host: Some(host.to_owned()),
        publish_timeout,
        ..PubSubSettings::default()
    }
}

fn device_message(data: &[u8], device: &str) -> Message {
    let attributes = [
        ("deviceId", device),
        ("deviceNumId", "2820037566240817"),
        ("deviceRegistryId", "my-registry"),
        ("deviceRegistryLocation", "europe-west1"),
        ("projectId", PROJECT),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Message {
        data: data.to_vec(),
        attributes: Attributes::new(Arc::new(attributes), Some("sensors/temp".into())),
    }
}

fn assert_unavailable(result: Result<(), SinkError>) {
    assert!(
        matches!(result, Err(SinkError::Unavailable { .. })),
        "expected Unavailable, got {result:?}"
    );
}

#[tokio::test]
async fn a_published_message_arrives_with_its_data_and_every_attribute() {
    let host = pubsub_host();
    let rest = PubSubRest::new(&host);
    let (topic, subscription) = rest.topic_with_subscription(PROJECT).await;
    let sink = PubSubSink::new(settings(&host, Duration::from_secs(10)))
        .await
        .unwrap();

    let sent = device_message(&[0, 1, 2, 0xfb, 0xff, b'\n', b'"'], "thermo-1");
    sink.publish(&topic, sent.clone()).await.unwrap();

    let pulled = rest.pull(&subscription, 1).await;
    assert_eq!(
        pulled,
        vec![Pulled {
            data: sent.data,
            attributes: sent.attributes.to_map(),
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_publishes_all_arrive_exactly_as_sent() {
    let host = pubsub_host();
    let rest = PubSubRest::new(&host);
    let (topic, subscription) = rest.topic_with_subscription(PROJECT).await;
    let sink = Arc::new(
        PubSubSink::new(settings(&host, Duration::from_secs(10)))
            .await
            .unwrap(),
    );

    let sent: HashSet<Pulled> = (0..200)
        .map(|i| {
            let message = device_message(format!("reading {i}").as_bytes(), &format!("dev-{i}"));
            Pulled {
                data: message.data,
                attributes: message.attributes.to_map(),
            }
        })
        .collect();
    let tasks: Vec<_> = sent
        .iter()
        .map(|m| {
            let (sink, topic) = (Arc::clone(&sink), topic.clone());
            let message = Message {
                data: m.data.clone(),
                attributes: m.attributes.clone().into(),
            };
            tokio::spawn(async move { sink.publish(&topic, message).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }

    let pulled = rest.pull(&subscription, 200).await;
    assert_eq!(pulled.len(), 200, "every message arrives once");
    assert_eq!(pulled.into_iter().collect::<HashSet<_>>(), sent);
}

#[tokio::test]
async fn flush_sends_a_waiting_batch_without_waiting_for_the_batch_delay() {
    let host = pubsub_host();
    let rest = PubSubRest::new(&host);
    let (topic, subscription) = rest.topic_with_subscription(PROJECT).await;
    let sink = Arc::new(
        PubSubSink::new(PubSubSettings {
            batch_delay: Duration::from_secs(60),
            ..settings(&host, Duration::from_secs(120))
        })
        .await
        .unwrap(),
    );
    let started = Instant::now();
    let publishing = tokio::spawn({
        let (sink, topic) = (Arc::clone(&sink), topic.clone());
        async move {
            sink.publish(&topic, device_message(b"batched", "dev"))
                .await
        }
    });
    // Let the message reach the publisher's batch before flushing.
    tokio::time::sleep(Duration::from_millis(200)).await;

    sink.flush().await;

    publishing.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(rest.pull(&subscription, 1).await.len(), 1);
}

#[tokio::test]
async fn a_topic_that_does_not_exist_is_reported_as_not_found() {
    let host = pubsub_host();
    let sink = PubSubSink::new(settings(&host, Duration::from_secs(10)))
        .await
        .unwrap();
    let topic =
        TopicName::parse(&format!("projects/{PROJECT}/topics/{}", unique("missing"))).unwrap();

    let result = sink.publish(&topic, device_message(b"hi", "dev")).await;

    assert!(
        matches!(&result, Err(SinkError::TopicNotFound(name)) if *name == topic.to_string()),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_stopped_emulator_makes_publish_unavailable_within_the_timeout() {
    let emulator = PrivatePubSub::start();
    let rest = PubSubRest::new(&emulator.host);
    let (topic, subscription) = rest.topic_with_subscription(PROJECT).await;
    let timeout = Duration::from_secs(3);
    let sink = PubSubSink::new(settings(&emulator.host, timeout))
        .await
        .unwrap();
    sink.publish(&topic, device_message(b"before", "dev"))
        .await
        .unwrap();
    assert_eq!(rest.pull(&subscription, 1).await.len(), 1);

    emulator.stop();
    let started = Instant::now();
    let result = sink.publish(&topic, device_message(b"after", "dev")).await;
    let elapsed = started.elapsed();

    assert_unavailable(result);
    assert!(
        elapsed < timeout + Duration::from_secs(1),
        "took {elapsed:?}"
    );
}

#[tokio::test]
async fn nothing_listening_on_the_endpoint_makes_publish_unavailable_promptly() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let timeout = Duration::from_secs(2);
    let sink = PubSubSink::new(settings(&format!("127.0.0.1:{closed_port}"), timeout))
        .await
        .unwrap();
    let topic = TopicName::parse(&format!("projects/{PROJECT}/topics/nowhere")).unwrap();

    let started = Instant::now();
    let result = sink.publish(&topic, device_message(b"hi", "dev")).await;
    let elapsed = started.elapsed();

    assert_unavailable(result);
    assert!(
        elapsed < timeout + Duration::from_secs(1),
        "took {elapsed:?}"
    );
}
