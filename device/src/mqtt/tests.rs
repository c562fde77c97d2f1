use super::*;
use rumqttc::MqttOptions;

fn device() -> DeviceName {
    DeviceName::from_parts("my-project", "us-central1", "barn", "dev-1").unwrap()
}

/// A session over a real rumqttc client whose event loop is kept but not polled: publishes
/// queue in its request channel, and the test plays the loop's events.
fn session() -> (Session, rumqttc::EventLoop) {
    let options = MqttOptions::new(device().to_string(), "localhost", 8883);
    let (client, events) = AsyncClient::new(options, 16);
    (Session::new(client), events)
}

#[test]
fn topics_are_iot_cores() {
    let topics = Topics::new(&device());
    assert_eq!(topics.events(None), "/devices/dev-1/events");
    assert_eq!(topics.events(Some("a/b")), "/devices/dev-1/events/a/b");
    assert_eq!(topics.state(), "/devices/dev-1/state");
    assert_eq!(topics.config(), "/devices/dev-1/config");
    assert_eq!(topics.commands_filter(), "/devices/dev-1/commands/#");
    assert_eq!(
        topics.command_sub_folder("/devices/dev-1/commands"),
        Some("")
    );
    assert_eq!(
        topics.command_sub_folder("/devices/dev-1/commands/power/now"),
        Some("power/now")
    );
    assert_eq!(topics.command_sub_folder("/devices/dev-1/commandsx"), None);
    assert_eq!(topics.command_sub_folder("/devices/dev-2/commands"), None);
}

#[test]
fn messages_go_a_tenth_of_a_second_s_worth_at_a_time_and_never_faster_than_the_rate() {
    let pacer = Pacer::new(100);
    let start = pacer.epoch + Duration::from_secs(1);
    let tenth = Duration::from_millis(100);
    // A backlog asked for at once: ten at the start of each tenth of a second.
    let slots: Vec<Duration> = (0..25).map(|_| pacer.slot(start) - start).collect();
    let expected: Vec<Duration> = (0..25u32).map(|n| tenth * (n / 10)).collect();
    assert_eq!(slots, expected);
    // After a quiet spell the next message goes at once.
    let later = start + Duration::from_millis(5_030);
    assert_eq!(pacer.slot(later), later);
    // A slow rate has windows of one message: each a spacing after the one before.
    let slow = Pacer::new(4);
    let start = slow.epoch + Duration::from_secs(1);
    let slots: Vec<Duration> = (0..3).map(|_| slow.slot(start) - start).collect();
    let quarter = Duration::from_millis(250);
    assert_eq!(slots, [Duration::ZERO, quarter, quarter * 2]);
}

#[test]
fn a_paced_backlog_stays_within_a_bucket_as_deep_as_the_rate() {
    // Ingest's limiter: a bucket of `rate` tokens, full at the start, refilled at `rate` a second.
    for rate in [1u32, 7, 100, 250, 1000] {
        let pacer = Pacer::new(rate);
        let start = pacer.epoch;
        let mut sent_by: Vec<Duration> = (0..rate * 3).map(|_| pacer.slot(start) - start).collect();
        sent_by.sort();
        for (n, at) in sent_by.iter().enumerate() {
            let allowed = f64::from(rate) * (1.0 + at.as_secs_f64());
            assert!(
                (n + 1) as f64 <= allowed + 1e-9,
                "rate {rate}: message {} at {at:?} exceeds the bucket ({allowed})",
                n + 1
            );
        }
    }
}

#[tokio::test]
async fn each_publish_resolves_on_the_puback_of_its_own_packet_id() {
    let (session, _events) = session();
    let first = session.submit("/t".into(), b"1").unwrap();
    let second = session.submit("/t".into(), b"2").unwrap();
    let mut third = session.submit("/t".into(), b"3").unwrap();
    // Packet ids in the order rumqttc sent the requests, acknowledged out of order.
    session.sent(4);
    session.sent(1);
    session.sent(2);
    session.acked(1);
    assert_eq!(second.await, Ok(Ok(())));
    assert!(third.try_recv().is_err(), "not acknowledged yet");
    session.acked(4);
    assert_eq!(first.await, Ok(Ok(())));
    assert_eq!(session.unacknowledged(), 1);
    session.close();
    assert!(third.await.is_err(), "a closed session fails what is left");
    assert!(session.submit("/t".into(), b"4").is_err());
}

#[tokio::test]
async fn a_puback_for_an_unknown_packet_id_wakes_nobody() {
    let (session, _events) = session();
    let mut waiting = session.submit("/t".into(), b"1").unwrap();
    session.acked(3);
    session.sent(3);
    assert!(waiting.try_recv().is_err());
    session.acked(3);
    assert_eq!(waiting.await, Ok(Ok(())));
}

#[tokio::test]
async fn a_full_request_queue_fails_the_publish_and_keeps_the_order() {
    let options = MqttOptions::new(device().to_string(), "localhost", 8883);
    let (client, _events) = AsyncClient::new(options, 1);
    let session = Session::new(client);
    let first = session.submit("/t".into(), b"1").unwrap();
    assert!(matches!(
        session.submit("/t".into(), b"2"),
        Err(Failure::Transient { .. })
    ));
    session.sent(1);
    session.acked(1);
    assert_eq!(first.await, Ok(Ok(())));
}

#[tokio::test]
async fn a_refusal_on_the_errors_topic_fails_the_publish_of_its_packet_id_only() {
    let (session, _events) = session();
    let first = session.submit("/t".into(), b"1").unwrap();
    let second = session.submit("/t".into(), b"2").unwrap();
    session.sent(1);
    session.sent(2);
    let refusal = super::errors::BridgeError {
        error_type: "RATE_LIMITED".into(),
        description: "slow down".into(),
        device_id: "dev-1".into(),
        message_id: 2,
    };
    assert!(session.refused(2, refusal.failure()));
    assert!(!session.refused(2, refusal.failure()), "told once");
    assert!(matches!(second.await, Ok(Err(Failure::Transient { .. }))));
    session.acked(1);
    assert_eq!(first.await, Ok(Ok(())));
}

#[tokio::test]
async fn a_publish_for_a_device_behind_the_gateway_waits_for_its_attach_or_its_refusal() {
    let options = MqttOptions::new(device().to_string(), "localhost", 8883);
    let (client, _events) = AsyncClient::new(options, 16);
    let session = Arc::new(Session::gateway(client, &["sensor-1".to_owned()]));
    let waiting = tokio::spawn({
        let session = session.clone();
        async move { session.attached("sensor-1").await }
    });
    tokio::task::yield_now().await;
    session
        .attachments
        .send_modify(|all| *all.get_mut("sensor-1").unwrap() = Attachment::Attached);
    assert_eq!(waiting.await.unwrap(), Ok(()));
    let not_bound = Failure::Refused {
        reason: "GATEWAY_NOT_BOUND: …".into(),
        info_reason: Some("GATEWAY_NOT_BOUND".into()),
    };
    session.detached("sensor-1", not_bound.clone());
    assert_eq!(session.attached("sensor-1").await, Err(not_bound));
    assert!(matches!(
        session.attached("sensor-9").await,
        Err(Failure::Refused { .. })
    ));
}
