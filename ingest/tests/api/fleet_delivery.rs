//! Two real `ingest serve` processes sharing one Firestore database and one delivery bus — the
//! emulators' — as two Cloud Run or VM instances do: a device's MQTT connection on B is reached
//! through A's admin API. A command sent through A arrives on B's connection and the call answers
//! after the PUBACK; a config changed through A is pushed by B within a second; a device blocked
//! through A is disconnected by B within a second; a CONNECT on A replaces B's connection; a
//! command queued through A while the device was away reaches it once it subscribes on B; and
//! once B is killed with SIGKILL, A stops calling the device connected within the lease bound.

use std::time::{Duration, Instant};

use crate::support::device::Signer;
use crate::support::mqtt::client_id;
use crate::support::spawn_ingest;
use crate::support::{PROJECT, REGION};
use rumqttc::mqttbytes::QoS;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions};
use serde_json::{Value, json};
use shared::proto3::encode_base64;
use testkit::IngestProcess;
use tokio::sync::mpsc;

/// The presence lease both instances run with: short, so the SIGKILL check is quick.
const LEASE_SECS: u64 = 3;

/// "Within a second", as the issue asks, on a busy 2-core machine running the emulators too.
const PROMPT: Duration = Duration::from_secs(1);

pub(crate) struct Instance {
    pub(crate) process: IngestProcess,
    http: reqwest::Client,
}

impl Instance {
    fn start(store: &str, topic: &str, extra: &[&str]) -> Self {
        let lease = format!("--presence-lease-secs={LEASE_SECS}");
        let (store, topic) = (
            format!("--registry={store}"),
            format!("--delivery-topic={topic}"),
        );
        let mut args = vec![
            store.as_str(),
            "--sink=file:/dev/null",
            "--mqtt-plain-addr=127.0.0.1:0",
            &topic,
            &lease,
        ];
        args.extend_from_slice(extra);
        let process = spawn_ingest(
            &args,
            &[
                (
                    "FIRESTORE_EMULATOR_HOST",
                    &testkit::emulators::firestore_host(),
                ),
                ("PUBSUB_EMULATOR_HOST", &testkit::emulators::pubsub_host()),
            ],
        );
        Self {
            process,
            http: reqwest::Client::new(),
        }
    }

    fn admin(&self, path: &str) -> String {
        let base = &self.process.admin_url();
        format!("{base}/v1/projects/{PROJECT}/locations/{REGION}/registries{path}")
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, request: reqwest::RequestBuilder) -> Value {
        let (status, body) = self.call(request).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn presence(&self) -> Value {
        self.ok(self.http.get(self.admin("/reg-1/devices/dev-1/presence")))
            .await
    }

    pub(crate) async fn command(&self, data: &[u8]) -> (u16, Value) {
        let url = self.admin("/reg-1/devices/dev-1:sendCommandToDevice");
        let body = json!({"binaryData": encode_base64(data), "subfolder": "power"});
        self.call(self.http.post(url).json(&body)).await
    }

    /// The config version `dev-1` gets over HTTP from this instance's device bridge, and its
    /// data.
    async fn http_config(&self) -> (u64, Vec<u8>) {
        let base = self.process.device_url();
        let url = format!(
            "{base}/v1/projects/{PROJECT}/locations/{REGION}/registries/reg-1/devices/dev-1/config?local_version=0"
        );
        let token = Signer::rsa("rsa_private").fresh();
        let body = self.ok(self.http.get(url).bearer_auth(token)).await;
        let version = body["version"].as_str().unwrap().parse().unwrap();
        let data = shared::proto3::decode_base64(body["binaryData"].as_str().unwrap_or(""));
        (version, data.unwrap())
    }

    /// Sets `dev-1`'s config through this instance's admin API.
    async fn set_config(&self, data: &[u8]) {
        let url = self.admin("/reg-1/devices/dev-1:modifyCloudToDeviceConfig");
        let body = json!({"binaryData": encode_base64(data)});
        self.ok(self.http.post(url).json(&body)).await;
    }

    fn mqtt_port(&self) -> u16 {
        let url = self.process.announced("MQTT bridge (plain TCP)");
        url.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub(crate) fn name(&self) -> String {
        self.process.announced("instance")
    }
}

/// What a device's rumqttc connection saw: a publish (topic, payload) or its end.
#[derive(Debug)]
enum Seen {
    Publish(String, Vec<u8>),
    SubAck,
    Closed,
}

/// Connects `dev-1` to `port`, subscribes to its config and commands at QoS 1, and hands on
/// what arrives. The client PUBACKs each publish as it reads it.
async fn device_on(port: u16) -> (AsyncClient, mpsc::UnboundedReceiver<Seen>) {
    let mut options = MqttOptions::new(client_id("reg-1", "dev-1"), "127.0.0.1", port);
    options.set_credentials("unused", Signer::rsa("rsa_private").fresh());
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client
        .subscribe("/devices/dev-1/config", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .subscribe("/devices/dev-1/commands/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let seen = match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    Seen::Publish(p.topic.clone(), p.payload.to_vec())
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => Seen::SubAck,
                Ok(_) => continue,
                Err(_) => {
                    let _ = tx.send(Seen::Closed);
                    return;
                }
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    (client, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("the device heard something within 15 s")
        .expect("the device's event loop runs")
}

/// Waits for both SUBACKs and the config sent after the config SUBACK.
async fn settled(rx: &mut mpsc::UnboundedReceiver<Seen>) {
    let (mut subacks, mut config) = (0, false);
    while subacks < 2 || !config {
        match next(rx).await {
            Seen::SubAck => subacks += 1,
            Seen::Publish(topic, _) if topic == "/devices/dev-1/config" => config = true,
            other => panic!("unexpected before the subscriptions settled: {other:?}"),
        }
    }
}

async fn two_instances() -> (Instance, Instance) {
    two_instances_with(&[]).await
}

/// Instances A and B on one fresh database and bus, B started with `b_extra` too, and `dev-1`
/// (the vectors' RSA key) in `reg-1`.
pub(crate) async fn two_instances_with(b_extra: &[&str]) -> (Instance, Instance) {
    let store = format!(
        "firestore:projects/{PROJECT}/databases/{}",
        testkit::unique("fleet")
    );
    let topic = format!("projects/{PROJECT}/topics/{}", testkit::unique("delivery"));
    let (a, b) = (
        Instance::start(&store, &topic, &[]),
        Instance::start(&store, &topic, b_extra),
    );
    let events = format!("projects/{PROJECT}/topics/events");
    a.ok(a
        .http
        .post(a.admin(""))
        .json(&json!({"id": "reg-1", "eventNotificationConfigs": [{"pubsubTopicName": events}]})))
        .await;
    let key = crate::support::key("rsa_public");
    a.ok(a.http.post(a.admin("/reg-1/devices")).json(
        &json!({"id": "dev-1", "credentials": [{"publicKey": {"format": "RSA_PEM", "key": key}}]}),
    ))
    .await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_on_b_gets_a_command_and_a_config_sent_through_a() {
    let (a, b) = two_instances().await;
    assert_ne!(a.name(), b.name());
    let (_client, mut seen) = device_on(b.mqtt_port()).await;
    settled(&mut seen).await;

    let presence = a.presence().await;
    assert_eq!(presence["connected"], true, "{presence}");
    assert_eq!(presence["instance"], b.name(), "{presence}");
    assert_eq!(
        presence["subscriptions"],
        json!({"config": true, "commands": true})
    );

    // The call answers after B's connection got the device's PUBACK.
    let sent = Instant::now();
    let (status, body) = a.command(b"reboot").await;
    assert_eq!((status, &body), (200, &json!({})));
    eprintln!(
        "a command through A answered after the device's PUBACK on B in {:?}",
        sent.elapsed()
    );
    match next(&mut seen).await {
        Seen::Publish(topic, payload) => {
            assert_eq!(topic, "/devices/dev-1/commands/power");
            assert_eq!(payload, b"reboot");
        }
        other => panic!("expected the command, got {other:?}"),
    }

    let changed = Instant::now();
    a.set_config(b"fan=on").await;
    match next(&mut seen).await {
        Seen::Publish(topic, payload) => {
            let took = changed.elapsed();
            assert_eq!(
                (topic.as_str(), payload.as_slice()),
                ("/devices/dev-1/config", &b"fan=on"[..])
            );
            eprintln!("config changed through A reached the device on B in {took:?}");
            assert!(took < PROMPT, "the config took {took:?}");
        }
        other => panic!("expected the config, got {other:?}"),
    }
}

/// B serves a device's config from memory once read (its cache is trusted for 300 s with a
/// bus); a change made through A must still reach the device's next fetch on B within a second,
/// because A's notice drops B's copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_changed_through_a_is_what_the_next_http_fetch_on_b_gets() {
    let (a, b) = two_instances().await;
    assert_eq!(b.http_config().await, (1, Vec::new()));
    assert_eq!(
        b.http_config().await,
        (1, Vec::new()),
        "served again (cached)"
    );

    let changed = Instant::now();
    a.set_config(b"fan=on").await;
    assert_eq!(a.http_config().await, (2, b"fan=on".to_vec()), "A at once");
    loop {
        let (version, data) = b.http_config().await;
        if version == 2 {
            assert_eq!(data, b"fan=on");
            break;
        }
        assert_eq!(version, 1);
        assert!(
            changed.elapsed() < PROMPT,
            "B still serves version 1 after {:?}",
            changed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "config changed through A was served over HTTP by B after {:?}",
        changed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_blocked_through_a_is_disconnected_by_b_within_a_second() {
    let (a, b) = two_instances().await;
    let (_client, mut seen) = device_on(b.mqtt_port()).await;
    settled(&mut seen).await;

    let url = a.admin("/reg-1/devices/dev-1?updateMask=blocked");
    let blocked = Instant::now();
    a.ok(a.http.patch(url).json(&json!({"blocked": true})))
        .await;
    // The errors topic is not subscribed: the next thing the device sees is its connection end.
    match next(&mut seen).await {
        Seen::Closed => {}
        other => panic!("expected the connection to close, got {other:?}"),
    }
    let took = blocked.elapsed();
    eprintln!("a device blocked through A was disconnected by B in {took:?}");
    assert!(took < PROMPT, "disconnecting took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_on_a_closes_the_connection_on_b_and_a_killed_instance_stops_counting() {
    let (a, mut b) = two_instances().await;
    let (_on_b, mut seen_b) = device_on(b.mqtt_port()).await;
    settled(&mut seen_b).await;
    let (_on_a, mut seen_a) = device_on(a.mqtt_port()).await;
    settled(&mut seen_a).await;
    // One connection per device across the fleet, as IoT Core.
    loop {
        match next(&mut seen_b).await {
            Seen::Closed => break,
            Seen::Publish(..) | Seen::SubAck => {}
        }
    }
    assert_eq!(a.presence().await["instance"], a.name());

    // Back on B, then B dies without a word.
    drop((_on_a, seen_a));
    let (_again, mut seen) = device_on(b.mqtt_port()).await;
    settled(&mut seen).await;
    assert_eq!(a.presence().await["instance"], b.name());
    b.process.kill();
    let killed = Instant::now();
    while a.presence().await["connected"] == true {
        assert!(
            killed.elapsed() < Duration::from_secs(LEASE_SECS + 5),
            "A still calls the device connected {:?} after B was killed",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed.elapsed();
    eprintln!("A stopped calling the device connected {took:?} after B's SIGKILL");
    assert!(took <= Duration::from_secs(LEASE_SECS) + Duration::from_secs(1));
    let (status, body) = a.command(b"x").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["details"][0]["reason"],
        "DEVICE_NOT_CONNECTED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_queued_through_a_reaches_the_device_when_it_subscribes_on_b() {
    let (a, b) = two_instances().await;
    let url = a.admin("/reg-1/devices/dev-1:sendCommandToDevice");
    let body = json!({"binaryData": encode_base64(b"wake"), "subfolder": "power", "ttl": "600s"});
    let queued = a.ok(a.http.post(url).json(&body)).await;
    assert_eq!(queued["queued"], true, "{queued}");

    let (_client, mut seen) = device_on(b.mqtt_port()).await;
    let (mut subacks, mut config, mut command) = (0, false, false);
    while subacks < 2 || !config || !command {
        match next(&mut seen).await {
            Seen::SubAck => subacks += 1,
            Seen::Publish(topic, _) if topic == "/devices/dev-1/config" => config = true,
            Seen::Publish(topic, payload) => {
                assert_eq!(
                    (topic.as_str(), payload.as_slice()),
                    ("/devices/dev-1/commands/power", &b"wake"[..])
                );
                assert!(!command, "the queued command arrived twice");
                command = true;
            }
            Seen::Closed => panic!("the connection closed"),
        }
    }
    // B recorded the delivery in the shared store, where A reads it.
    let started = Instant::now();
    loop {
        let list = a
            .ok(a.http.get(a.admin("/reg-1/devices/dev-1/commands")))
            .await;
        if list["commands"][0]["deliverTime"].is_string() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not recorded: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
