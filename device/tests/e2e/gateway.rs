//! The real `iotcore-device run` as a gateway over MQTT (TLS) against a real ingest: readings
//! tagged with a device behind it land with that device's attributes, none lost, across a token
//! renewal that re-attaches; a device the gateway may not speak for is refused at attach (and
//! said so in the log) while the others' readings flow, and gets through once it is bound.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::{
    Agent, DeviceFiles, Ingest, Landed, PATIENCE, PROJECT, REGION, SinkKind, device_command,
    file_events, numbers_and_ids,
};

const NO_SENSORS: &str = "[readings]\nsensors = false\n";

fn no_env() -> HashMap<&'static str, String> {
    HashMap::new()
}

/// A gateway's files, registered in a registry of its own with `method` as its
/// `gatewayAuthMethod`.
async fn new_gateway(ingest: &Ingest, topic: &str, method: &str) -> DeviceFiles {
    let files = DeviceFiles::new();
    let registry = files.registry.as_str();
    ingest
        .cli(&["registries", "create", registry, "--event-topic", topic])
        .await;
    let public = files.public_key();
    ingest
        .cli(&[
            "devices",
            "create",
            &files.device,
            "--registry",
            registry,
            "--public-key",
            public.to_str().unwrap(),
            "--format",
            "ES256_PEM",
            "--gateway",
            "--gateway-auth-method",
            method,
        ])
        .await;
    files
}

/// A device `id` in the gateway's registry, with a key of its own when `with_key` (its private
/// key's path is returned), bound to the gateway when `bound`.
async fn new_child(
    ingest: &Ingest,
    gateway: &DeviceFiles,
    id: &str,
    with_key: bool,
    bound: bool,
) -> Option<PathBuf> {
    let registry = gateway.registry.as_str();
    let mut create = vec!["devices", "create", id, "--registry", registry];
    let keys = gateway.path(&format!("keys-{id}"));
    let public = keys.join("public.pem").display().to_string();
    if with_key {
        let made = device_command()
            .args(["keygen", "--algorithm", "ES256", "--out"])
            .arg(&keys)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        create.extend(["--public-key", &public, "--format", "ES256_PEM"]);
    }
    ingest.cli(&create).await;
    if bound {
        bind(ingest, gateway, id).await;
    }
    with_key.then(|| keys.join("private.pem"))
}

async fn bind(ingest: &Ingest, gateway: &DeviceFiles, id: &str) {
    let registry = gateway.registry.as_str();
    ingest
        .cli(&[
            "gateways",
            "bind",
            &gateway.device,
            id,
            "--registry",
            registry,
        ])
        .await;
}

/// `[[gateway.devices]]` tables for `children` (id, private key).
fn gateway_section(children: &[(&str, Option<&PathBuf>)]) -> String {
    children
        .iter()
        .map(|(id, key)| match key {
            Some(key) => format!(
                "\n[[gateway.devices]]\nid = \"{id}\"\nprivate_key = \"{}\"\n",
                key.display()
            ),
            None => format!("\n[[gateway.devices]]\nid = \"{id}\"\n"),
        })
        .collect()
}

/// The events of `device` among `landed`.
fn of(landed: &[Landed], device: &str) -> Vec<Landed> {
    landed
        .iter()
        .filter(|e| e.attributes.get("deviceId").map(String::as_str) == Some(device))
        .cloned()
        .collect()
}

/// Waits until the file sink holds readings `0..count` of each of `devices`, one id each.
async fn all_arrive_for(ingest: &Ingest, devices: &[&str], count: u64, agent: &Agent) {
    let deadline = Instant::now() + PATIENCE * 3;
    loop {
        let landed = file_events(&ingest.events_path());
        let complete = devices.iter().all(|device| {
            let (numbers, ids) = numbers_and_ids(&of(&landed, device));
            numbers == (0..count).collect::<BTreeSet<_>>() && ids as u64 == count
        });
        if complete {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every reading of {devices:?} arrived\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_of_devices_behind_a_gateway_arrive_in_pubsub_as_theirs_across_a_renewal() {
    let host = testkit::emulators::pubsub_host();
    let pubsub = testkit::pubsub::PubSubRest::new(&host);
    let (topic, subscription) = pubsub.topic_with_subscription(PROJECT).await;
    let ingest = Ingest::start_mqtt(SinkKind::PubSub(host)).await;
    let gateway = new_gateway(&ingest, &topic.to_string(), "ASSOCIATION_ONLY").await;
    // One device that is only bound, one with a key of its own (its token goes with the attach).
    new_child(&ingest, &gateway, "thermo-a", false, true).await;
    let key_b = new_child(&ingest, &gateway, "thermo-b", true, true).await;
    let extra = format!(
        "{NO_SENSORS}{}",
        gateway_section(&[("thermo-a", None), ("thermo-b", key_b.as_ref())])
    );
    // Renewed, and so re-attached, every 9 s.
    let settings = gateway.write_mqtt_settings(&ingest, "token_lifetime = \"12s\"\n", &extra);
    let mut agent = Agent::start(
        &settings,
        &["--stdin"],
        &no_env(),
        gateway.path("agent.log"),
    );
    agent.feed(0..10);
    agent.feed_for("thermo-a", 0..10);
    agent.feed_for("thermo-b", 0..10);
    agent.wait_for_log("renewing the token").await;
    agent.feed(10..20);
    agent.feed_for("thermo-a", 10..20);
    agent.feed_for("thermo-b", 10..20);

    let devices = [gateway.device.as_str(), "thermo-a", "thermo-b"];
    let mut landed: Vec<Landed> = Vec::new();
    let deadline = Instant::now() + PATIENCE * 2;
    while devices
        .iter()
        .any(|d| numbers_and_ids(&of(&landed, d)).0.len() < 20)
    {
        assert!(
            Instant::now() < deadline,
            "not all readings arrived: {landed:?}\n{}",
            agent.log_text()
        );
        landed.extend(
            pubsub
                .pull_now(&subscription)
                .await
                .into_iter()
                .map(Landed::from),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for device in devices {
        let theirs = of(&landed, device);
        let (numbers, ids) = numbers_and_ids(&theirs);
        assert_eq!(numbers, (0..20).collect(), "{device}");
        assert!(ids >= 20, "{device}: a distinct id per reading");
        let resource = ingest.device_json(&gateway.registry, device).await;
        let num_id = resource["numId"].as_str().unwrap();
        for event in &theirs {
            let a = &event.attributes;
            assert_eq!(a["deviceNumId"], num_id, "{a:?}");
            assert_eq!(a["deviceRegistryId"], gateway.registry);
            assert_eq!(a["deviceRegistryLocation"], REGION);
            assert_eq!(a["projectId"], PROJECT);
            // The tag chose the device; it is not part of the data.
            assert!(event.reading["data"].get("device").is_none(), "{event:?}");
        }
    }
    let log = agent.log_text();
    assert!(
        log.matches("attached a device behind this gateway").count() >= 4,
        "both devices attached on each of two connections:\n{log}"
    );
    assert!(!log.contains("refused"), "{log}");
    assert!(agent.terminate(), "a clean exit on SIGTERM:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_the_gateway_may_not_speak_for_is_refused_at_attach_while_the_others_flow() {
    let ingest = Ingest::start_mqtt(SinkKind::File).await;
    let topic = format!("projects/{PROJECT}/topics/events");
    let gateway = new_gateway(&ingest, &topic, "ASSOCIATION_AND_DEVICE_AUTH_TOKEN").await;
    let key_b = new_child(&ingest, &gateway, "thermo-b", true, true).await;
    // Not bound: this gateway may not speak for it yet.
    let key_c = new_child(&ingest, &gateway, "thermo-c", true, false).await;
    let extra = format!(
        "{NO_SENSORS}{}",
        gateway_section(&[("thermo-b", key_b.as_ref()), ("thermo-c", key_c.as_ref())])
    );
    let settings = gateway.write_mqtt_settings(&ingest, "", &extra);
    let mut agent = Agent::start(
        &settings,
        &["--stdin"],
        &no_env(),
        gateway.path("agent.log"),
    );
    // More readings of the refused device than there are sender workers (16), interleaved
    // with the others': they must not take every worker.
    for n in 0..4 {
        agent.feed_for("thermo-c", n * 10..n * 10 + 10);
        agent.feed_for("thermo-b", n * 10..n * 10 + 10);
        agent.feed(n * 10..n * 10 + 10);
    }
    // A device not in the settings is refused at intake.
    agent.feed_for("thermo-x", 0..1);
    all_arrive_for(&ingest, &[&gateway.device, "thermo-b"], 40, &agent).await;
    let landed = file_events(&ingest.events_path());
    assert!(of(&landed, "thermo-c").is_empty());
    assert!(of(&landed, "thermo-x").is_empty());
    let log = agent.log_text();
    assert!(
        log.contains("the MQTT bridge refused to attach a device behind this gateway")
            && log.contains("GATEWAY_NOT_BOUND"),
        "{log}"
    );
    assert!(
        log.contains("a reading for device `thermo-x` refused"),
        "{log}"
    );
    // No token or payload in the log.
    assert!(
        !log.contains("authorization") && !log.contains("\"n\""),
        "{log}"
    );

    // Once bound, the next attach (with backoff) gets through, and nothing was lost.
    bind(&ingest, &gateway, "thermo-c").await;
    all_arrive_for(&ingest, &["thermo-c"], 40, &agent).await;
    assert!(agent.terminate(), "{}", agent.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_device_is_no_gateway_says_so_and_does_not_reconnect_in_a_loop() {
    let ingest = Ingest::start_mqtt(SinkKind::File).await;
    // A plain device: the bridge closes its connection at the first attach.
    let files = crate::support::new_device(&ingest, None).await;
    let extra = format!("{NO_SENSORS}{}", gateway_section(&[("thermo-a", None)]));
    let settings = files.write_mqtt_settings(&ingest, "", &extra);
    let text = std::fs::read_to_string(&settings).unwrap();
    let text = text.replace("max_backoff = \"1s\"", "max_backoff = \"4s\"");
    std::fs::write(&settings, text).unwrap();
    let agent = Agent::start(&settings, &[], &no_env(), files.path("agent.log"));
    let deadline = Instant::now() + PATIENCE;
    while !agent.log_text().contains("is this device a gateway") {
        assert!(Instant::now() < deadline, "{}", agent.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = agent
        .log_text()
        .matches("connected to the MQTT bridge")
        .count();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let log = agent.log_text();
    let during = log.matches("connected to the MQTT bridge").count() - before;
    // With the backoff (½ s doubling to this test's 4 s) three or four; without, a dozen.
    assert!(during <= 5, "{during} connections in 5 s:\n{log}");
    assert!(
        log.contains("the MQTT bridge is closing the connection; connecting again after a backoff"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_a_gateway_sends_for_its_devices_with_gateway_info() {
    let ingest = Ingest::start(SinkKind::File).await;
    let topic = format!("projects/{PROJECT}/topics/events");
    let gateway = new_gateway(&ingest, &topic, "ASSOCIATION_ONLY").await;
    // Sent by the gateway acting for it (delegatedDeviceId), and as itself (gatewayId).
    new_child(&ingest, &gateway, "thermo-a", false, true).await;
    let key_b = new_child(&ingest, &gateway, "thermo-b", true, true).await;
    // Not bound: refused, while the others flow.
    new_child(&ingest, &gateway, "thermo-c", false, false).await;
    let extra = format!(
        "{NO_SENSORS}{}",
        gateway_section(&[
            ("thermo-a", None),
            ("thermo-b", key_b.as_ref()),
            ("thermo-c", None)
        ])
    );
    let settings = gateway.write_settings(&ingest.device_url(), &extra);
    let mut agent = Agent::start(
        &settings,
        &["--stdin"],
        &no_env(),
        gateway.path("agent.log"),
    );
    for n in 0..3 {
        agent.feed_for("thermo-c", n * 10..n * 10 + 10);
        agent.feed_for("thermo-a", n * 10..n * 10 + 10);
        agent.feed_for("thermo-b", n * 10..n * 10 + 10);
        agent.feed(n * 10..n * 10 + 10);
    }
    let devices = [gateway.device.as_str(), "thermo-a", "thermo-b"];
    all_arrive_for(&ingest, &devices, 30, &agent).await;
    let landed = file_events(&ingest.events_path());
    assert!(of(&landed, "thermo-c").is_empty());
    let log = agent.log_text();
    assert!(
        log.contains("PERMISSION_DENIED") && log.contains("thermo-c` is not bound"),
        "{log}"
    );
    bind(&ingest, &gateway, "thermo-c").await;
    all_arrive_for(&ingest, &["thermo-c"], 30, &agent).await;
}
