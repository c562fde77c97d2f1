//! The real `iotcore-device run` with `transport = "mqtt"` against a real ingest's MQTT bridge
//! over TLS (trusting the CA ingest made, as a device trusts IoT Core's roots.pem): readings
//! arrive with IoT Core's attributes, a config set with the operator CLI reaches the file and
//! hook within a second, a command reaches the commands hook, and no reading is lost when ingest
//! stops and starts again, when the agent is killed with SIGKILL in the middle of a backlog, or
//! across the reconnects that renew a short-lived token; and a message the bridge refuses on the
//! errors topic (over its message rate) is retried at once rather than after the 30 s PUBACK
//! timeout, and not lost. With `transport = "mqtt+ws"` the same session runs over a WebSocket.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::{
    Agent, DeviceFiles, Ingest, Landed, PATIENCE, PROJECT, REGION, SinkKind, eventually,
    file_events, new_device, numbers_and_ids,
};

fn no_env() -> HashMap<&'static str, String> {
    HashMap::new()
}

const NO_SENSORS: &str = "[readings]\nsensors = false\n";

async fn set_config(ingest: &Ingest, files: &DeviceFiles, data: &str) {
    let (device, registry) = (files.device.as_str(), files.registry.as_str());
    ingest
        .cli(&[
            "config",
            "set",
            device,
            "--registry",
            registry,
            "--data",
            data,
        ])
        .await;
}

/// Waits until `agent` has connected `times` times in all.
async fn connected(agent: &Agent, times: usize) {
    eventually(&format!("{times} MQTT connection(s)"), || {
        let count = agent
            .log_text()
            .matches("connected to the MQTT bridge")
            .count();
        (count >= times).then_some(())
    })
    .await;
}

/// Waits until the file sink holds every reading numbered `0..total`; asserts one id each.
async fn all_arrive(ingest: &Ingest, total: u64, agent: &Agent) {
    let events = ingest.events_path();
    let deadline = Instant::now() + PATIENCE * 3;
    loop {
        let (numbers, ids) = numbers_and_ids(&file_events(&events));
        if numbers.len() as u64 == total {
            assert_eq!(numbers, (0..total).collect());
            assert_eq!(ids as u64, total, "one id per reading");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {total} readings\n{}",
            numbers.len(),
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_over_mqtt_arrive_in_pubsub_with_iot_core_attributes() {
    let host = testkit::emulators::pubsub_host();
    let pubsub = testkit::pubsub::PubSubRest::new(&host);
    let (topic, subscription) = pubsub.topic_with_subscription(PROJECT).await;
    let ingest = Ingest::start_mqtt(SinkKind::PubSub(host)).await;
    let files = new_device(&ingest, Some(&topic.to_string())).await;
    let extra = "[readings]\nsensors = false\nsub_folder = \"pi/barn\"\n";
    let settings = files.write_mqtt_settings(&ingest, "", extra);
    let mut agent = Agent::start(&settings, &["--stdin"], &no_env(), files.path("agent.log"));
    agent.feed(0..20);

    let mut landed: Vec<Landed> = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while numbers_and_ids(&landed).0.len() < 20 {
        assert!(
            Instant::now() < deadline,
            "not all readings arrived: {landed:?}\n{}",
            agent.log_text()
        );
        let pulled = pubsub.pull_now(&subscription).await;
        landed.extend(pulled.into_iter().map(Landed::from));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let device = ingest.device_json(&files.registry, &files.device).await;
    let num_id = device["numId"].as_str().unwrap().to_owned();
    for event in &landed {
        let a = &event.attributes;
        assert_eq!(a["deviceId"], files.device, "{a:?}");
        assert_eq!(a["deviceNumId"], num_id);
        assert_eq!(a["deviceRegistryId"], files.registry);
        assert_eq!(a["deviceRegistryLocation"], REGION);
        assert_eq!(a["projectId"], PROJECT);
        assert_eq!(a["subFolder"], "pi/barn");
    }
    let (_, ids) = numbers_and_ids(&landed);
    assert!(ids >= 20, "a distinct id per reading");
    let log = agent.log_text();
    assert!(log.contains("connected to the MQTT bridge"), "{log}");
    assert!(agent.terminate(), "a clean exit on SIGTERM:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_set_with_the_cli_reaches_the_file_and_hook_over_mqtt_within_a_second() {
    let ingest = Ingest::start_mqtt(SinkKind::File).await;
    let files = new_device(&ingest, None).await;
    let config_file = files.path("device-config.json");
    let hook_log = files.path("hook.log");
    // A long poll interval: the config must come by push, not by a poll.
    let extra = format!(
        "{NO_SENSORS}\n[config]\npoll_interval = \"1h\"\nfile = \"{}\"\n\
         hook = \"echo $IOTCORE_CONFIG_VERSION $(cat $IOTCORE_CONFIG_FILE) >> {}\"\n",
        config_file.display(),
        hook_log.display()
    );
    let settings = files.write_mqtt_settings(&ingest, "", &extra);
    let agent = Agent::start(&settings, &[], &no_env(), files.path("agent.log"));
    connected(&agent, 1).await;
    // The empty config every device is created with writes nothing and runs no hook.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!config_file.exists());

    let set_at = Instant::now();
    set_config(&ingest, &files, r#"{"fan":"on"}"#).await;
    let hook = eventually("the hook's run", || {
        std::fs::read_to_string(&hook_log)
            .ok()
            .filter(|t| !t.is_empty())
    })
    .await;
    let took = set_at.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(hook.trim(), r#"1 {"fan":"on"}"#);
    assert_eq!(std::fs::read(&config_file).unwrap(), br#"{"fan":"on"}"#);

    // The state, reported over MQTT, reaches the registry.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let device = ingest.device_json(&files.registry, &files.device).await;
        let state = device["state"]["binaryData"]
            .as_str()
            .map(|data| shared::proto3::decode_base64(data).unwrap())
            .map(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).unwrap());
        if let Some(state) = state
            && state["config_version"] == 1
        {
            assert_eq!(state["hook"], "ok");
            // The bridge records the config's PUBACK.
            assert!(device["lastConfigAckTime"].is_string(), "{device}");
            break;
        }
        assert!(Instant::now() < deadline, "no state: {device}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_with_the_cli_reaches_the_commands_hook_over_mqtt() {
    let ingest = Ingest::start_mqtt(SinkKind::File).await;
    let files = new_device(&ingest, None).await;
    let ran = files.path("commands.log");
    let extra = format!(
        "{NO_SENSORS}\n[commands]\nhook = \"echo $1 $(cat) >> {}\"\n",
        ran.display()
    );
    let settings = files.write_mqtt_settings(&ingest, "", &extra);
    let agent = Agent::start(&settings, &[], &no_env(), files.path("agent.log"));
    connected(&agent, 1).await;
    let (device, registry) = (files.device.as_str(), files.registry.as_str());
    // Without --ttl: delivered to the connected device, or refused (and the CLI fails).
    let send = [
        "commands",
        "send",
        device,
        "--registry",
        registry,
        "--data",
        "reboot",
        "--subfolder",
        "power",
    ];
    let deadline = Instant::now() + PATIENCE;
    // The SUBSCRIBE may still be on its way just after the CONNACK.
    while !agent.log_text().contains("command carried out") {
        assert!(Instant::now() < deadline, "{}", agent.log_text());
        if ingest.try_cli(&send).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let line = eventually("the commands hook's run", || {
        std::fs::read_to_string(&ran).ok().filter(|t| !t.is_empty())
    })
    .await;
    assert_eq!(line.trim(), "power reboot", "{}", agent.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reading_is_lost_over_mqtt_while_ingest_is_stopped_and_restarted() {
    let mut ingest = Ingest::start_mqtt(SinkKind::File).await;
    let files = new_device(&ingest, None).await;
    let settings = files.write_mqtt_settings(&ingest, "", NO_SENSORS);
    let mut agent = Agent::start(&settings, &["--stdin"], &no_env(), files.path("agent.log"));
    let events = ingest.events_path();

    agent.feed(0..200);
    eventually("the first readings in the file sink", || {
        (numbers_and_ids(&file_events(&events)).0.len() == 200).then_some(())
    })
    .await;
    // Readings in flight when ingest stops.
    agent.feed(200..500);
    ingest.stop().await;
    agent.feed(500..700);
    agent
        .wait_for_log("cannot connect to the MQTT bridge")
        .await;
    ingest.resume().await;
    agent.feed(700..800);
    all_arrive(&ingest, 800, &agent).await;
    connected(&agent, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_spooled_before_a_sigkill_over_mqtt_arrive_after_the_restart() {
    // The agent keeps under the bridge's 100 messages a second: 15 s of backlog.
    const TOTAL: u64 = 1_500;
    let mut ingest = Ingest::start_mqtt(SinkKind::File).await;
    let files = new_device(&ingest, None).await;
    ingest.stop().await;
    let settings = files.write_mqtt_settings(&ingest, "", NO_SENSORS);
    let mut agent = Agent::start(&settings, &["--stdin"], &no_env(), files.path("agent.log"));
    agent.feed(0..TOTAL);
    agent.close_stdin();
    agent
        .wait_for_log("standard input closed; all its readings are in the spool")
        .await;

    ingest.resume().await;
    let events = ingest.events_path();
    eventually("the backlog starting to drain", || {
        (!file_events(&events).is_empty()).then_some(())
    })
    .await;
    agent.kill();
    let after_kill = numbers_and_ids(&file_events(&events)).0.len() as u64;
    assert!(
        after_kill < TOTAL,
        "the backlog drained before the kill ({after_kill}); the test needs more readings"
    );

    let restarted = Agent::start(&settings, &[], &no_env(), files.path("agent2.log"));
    all_arrive(&ingest, TOTAL, &restarted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_token_is_renewed_by_reconnecting_and_no_reading_is_lost() {
    let ingest = Ingest::start_mqtt(SinkKind::File).await;
    let files = new_device(&ingest, None).await;
    let config_file = files.path("device-config.json");
    let hook_log = files.path("hook.log");
    let extra = format!(
        "{NO_SENSORS}\n[config]\nfile = \"{}\"\nhook = \"echo ran >> {}\"\n",
        config_file.display(),
        hook_log.display()
    );
    // Renewed at 75 %: every 9 s.
    let top = "token_lifetime = \"12s\"\n";
    let settings = files.write_mqtt_settings(&ingest, top, &extra);
    let mut agent = Agent::start(&settings, &["--stdin"], &no_env(), files.path("agent.log"));
    connected(&agent, 1).await;
    set_config(&ingest, &files, "v1").await;

    // Readings all the while, across two renewals.
    let started = Instant::now();
    let mut n = 0;
    while agent.log_text().matches("renewing the token").count() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{}",
            agent.log_text()
        );
        agent.feed(n..n + 10);
        n += 10;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.feed(n..n + 10);
    n += 10;
    all_arrive(&ingest, n, &agent).await;
    connected(&agent, 3).await;
    let log = agent.log_text();
    assert!(!log.contains("cannot connect"), "{log}");
    // The latest config comes again after each reconnect; the hook ran for it once.
    let hook = std::fs::read_to_string(&hook_log).unwrap();
    assert_eq!(hook.lines().count(), 1, "{hook}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_rate_is_refused_on_the_errors_topic_and_retried_at_once() {
    // Five messages a second per connection: the agent's own pace is 100.
    let ingest = Ingest::start_mqtt_limited(SinkKind::File, 5).await;
    let files = new_device(&ingest, None).await;
    let settings = files.write_mqtt_settings(&ingest, "", NO_SENSORS);
    let mut agent = Agent::start(&settings, &["--stdin"], &no_env(), files.path("agent.log"));
    agent.wait_for_log("connected to the MQTT bridge").await;
    let started = Instant::now();
    agent.feed(0..40);
    let events = ingest.events_path();
    loop {
        let (numbers, ids) = numbers_and_ids(&file_events(&events));
        if numbers.len() == 40 {
            assert_eq!(ids, 40);
            break;
        }
        // Without the errors topic each refused message would wait out its 30 s PUBACK
        // timeout; 40 readings at 5 a second take 8 s, plus the backoff.
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "{} of 40 readings\n{}",
            numbers.len(),
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = agent.log_text();
    assert!(
        log.contains("the MQTT bridge refused a message") && log.contains("RATE_LIMITED"),
        "{log}"
    );
    assert!(
        !log.contains("no PUBACK from the MQTT bridge within"),
        "{log}"
    );
    assert_eq!(
        log.matches("connected to the MQTT bridge").count(),
        1,
        "a refusal keeps the connection:\n{log}"
    );
}

/// `transport = "mqtt+ws"`: the same MQTT session over a WebSocket at `/mqtt` on ingest's HTTP
/// port (how a Cloud Run deployment serves MQTT): readings arrive, and a config set with the CLI
/// is pushed to the file within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtt_ws_readings_arrive_and_a_config_is_pushed_within_a_second() {
    let ingest = Ingest::start(SinkKind::File).await;
    let files = new_device(&ingest, None).await;
    let config_file = files.path("device-config.json");
    let extra = format!(
        "{NO_SENSORS}\n[config]\npoll_interval = \"1h\"\nfile = \"{}\"\n",
        config_file.display()
    );
    let settings =
        files.write_settings_with(&ingest.device_url(), "transport = \"mqtt+ws\"\n", &extra);
    let mut agent = Agent::start(&settings, &["--stdin"], &no_env(), files.path("agent.log"));
    connected(&agent, 1).await;
    agent.feed(0..50);
    all_arrive(&ingest, 50, &agent).await;

    let set_at = Instant::now();
    set_config(&ingest, &files, r#"{"fan":"off"}"#).await;
    eventually("the pushed config in its file", || {
        std::fs::read(&config_file)
            .ok()
            .filter(|data| data == br#"{"fan":"off"}"#)
    })
    .await;
    let took = set_at.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let log = agent.log_text();
    assert!(agent.terminate(), "a clean exit on SIGTERM:\n{log}");
}
