//! The real `iotcore-device run` against a real ingest: readings arrive with IoT Core's
//! attributes (Pub/Sub emulator and the file sink), none is lost while ingest is down or when the
//! agent is killed with SIGKILL in the middle of a backlog, a config set with the operator CLI
//! reaches the device's file and hook and its state shows in the registry, a command queued for
//! the device with the CLI reaches its commands hook once, and a clock 20 minutes ahead is named
//! in the log.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{
    Agent, DeviceFiles, Ingest, Landed, PROJECT, REGION, SinkKind, eventually, file_events,
    new_device, numbers_and_ids,
};

fn no_env() -> HashMap<&'static str, String> {
    HashMap::new()
}

/// `ingest config set DEVICE --registry REGISTRY --data DATA`, the operator's way.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_arrive_in_pubsub_with_iot_core_attributes() {
    let host = testkit::emulators::pubsub_host();
    let pubsub = testkit::pubsub::PubSubRest::new(&host);
    let (topic, subscription) = pubsub.topic_with_subscription(PROJECT).await;
    let topic = topic.to_string();
    let ingest = Ingest::start(SinkKind::PubSub(host)).await;
    let files = new_device(&ingest, Some(&topic)).await;
    let settings = files.write_settings(
        &ingest.device_url(),
        "[readings]\nsensors = true\ninterval = \"1s\"\nsub_folder = \"pi\"\n",
    );
    let mut agent = Agent::start(&settings, &["--stdin"], &no_env(), files.path("agent.log"));
    agent.feed(0..5);

    let mut landed = Vec::new();
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    loop {
        landed.extend(
            pubsub
                .pull_now(&subscription)
                .await
                .into_iter()
                .map(Landed::from),
        );
        let (numbers, _) = numbers_and_ids(&landed);
        let sensors = landed.iter().any(|e| e.reading["source"] == "sensors");
        if numbers.len() == 5 && sensors {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all readings arrived: {landed:?}\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let device_json = ingest.device_json(&files.registry, &files.device).await;
    let num_id = device_json["numId"].as_str().unwrap().to_owned();
    for event in &landed {
        let a = &event.attributes;
        assert_eq!(a["deviceId"], files.device, "{a:?}");
        assert_eq!(a["deviceNumId"], num_id);
        assert_eq!(a["deviceRegistryId"], files.registry);
        assert_eq!(a["deviceRegistryLocation"], REGION);
        assert_eq!(a["projectId"], PROJECT);
        assert_eq!(a["subFolder"], "pi");
        assert!(event.reading["id"].as_str().is_some_and(|id| id.len() > 16));
        assert!(
            event.reading["time"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }
    let sensors = landed
        .iter()
        .find(|e| e.reading["source"] == "sensors")
        .unwrap();
    let values = &sensors.reading["data"];
    assert!(values["load"]["1m"].is_number(), "{values}");
    assert!(
        values["memory"]["total_kb"].as_u64().unwrap() > 0,
        "{values}"
    );
    assert!(
        agent.terminate(),
        "a clean exit on SIGTERM:\n{}",
        agent.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reading_is_lost_while_ingest_is_stopped_and_restarted() {
    let mut ingest = Ingest::start(SinkKind::File).await;
    let files = new_device(&ingest, None).await;
    let settings = files.write_settings(&ingest.device_url(), "[readings]\nsensors = false\n");
    let mut agent = Agent::start(&settings, &["--stdin"], &no_env(), files.path("agent.log"));
    let events = ingest.events_path();

    agent.feed(0..200);
    eventually("the first readings in the file sink", || {
        (numbers_and_ids(&file_events(&events)).0.len() == 200).then_some(())
    })
    .await;
    ingest.stop().await;
    agent.feed(200..700);
    agent.wait_for_log("cannot send readings").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ingest.resume().await;
    agent.feed(700..800);

    let (numbers, ids) = eventually("every reading after the restart", || {
        let (numbers, ids) = numbers_and_ids(&file_events(&events));
        (numbers.len() == 800).then_some((numbers, ids))
    })
    .await;
    assert_eq!(numbers, (0..800).collect());
    assert_eq!(ids, 800, "one id per reading");
    agent.wait_for_log("sending again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_acknowledged_before_a_sigkill_arrive_after_the_restart() {
    const TOTAL: u64 = 20_000;
    let mut ingest = Ingest::start(SinkKind::File).await;
    let files = new_device(&ingest, None).await;
    ingest.stop().await;
    let settings = files.write_settings(&ingest.device_url(), "[readings]\nsensors = false\n");
    let mut agent = Agent::start(&settings, &["--stdin"], &no_env(), files.path("agent.log"));
    agent.feed(0..TOTAL);
    agent.close_stdin();
    // The agent says so only once every line is fsynced in the spool: all are acknowledged.
    agent
        .wait_for_log("standard input closed; all its readings are in the spool")
        .await;

    ingest.resume().await;
    let events = ingest.events_path();
    let at_kill = eventually("the backlog starting to drain", || {
        let count = file_events(&events).len();
        (count > 0).then_some(count)
    })
    .await;
    agent.kill();
    let after_kill = numbers_and_ids(&file_events(&events)).0.len() as u64;
    assert!(
        after_kill < TOTAL,
        "the backlog drained before the kill ({at_kill} then {after_kill}); the test needs more readings"
    );

    let mut restarted = Agent::start(&settings, &[], &no_env(), files.path("agent2.log"));
    let deadline = std::time::Instant::now() + crate::support::PATIENCE * 3;
    let numbers = loop {
        let (numbers, _) = numbers_and_ids(&file_events(&events));
        if numbers.len() as u64 == TOTAL {
            break numbers;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {TOTAL} readings after the restart\n{}",
            numbers.len(),
            restarted.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(numbers, (0..TOTAL).collect());
    assert!(restarted.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_set_with_the_cli_reaches_the_file_and_hook_and_the_state_the_registry() {
    let ingest = Ingest::start(SinkKind::File).await;
    let files = new_device(&ingest, None).await;
    let config_file = files.path("device-config.json");
    let hook_log = files.path("hook.log");
    let extra = format!(
        "[readings]\nsensors = false\n\n[config]\npoll_interval = \"500ms\"\nfile = \"{}\"\n\
         hook = \"echo $IOTCORE_CONFIG_VERSION $(cat $IOTCORE_CONFIG_FILE) >> {}\"\n",
        config_file.display(),
        hook_log.display()
    );
    let settings = files.write_settings(&ingest.device_url(), &extra);
    let agent = Agent::start(&settings, &[], &no_env(), files.path("agent.log"));

    set_config(&ingest, &files, r#"{"fan":"on"}"#).await;
    eventually("the config in the device's file", || {
        (std::fs::read(&config_file).ok()? == br#"{"fan":"on"}"#).then_some(())
    })
    .await;
    let hook = eventually("the hook's run", || std::fs::read_to_string(&hook_log).ok()).await;
    // One run, for version 2: the empty version 1 every device is created with runs no hook.
    assert_eq!(hook.trim(), r#"2 {"fan":"on"}"#);

    set_config(&ingest, &files, r#"{"fan":"off"}"#).await;
    let mut state = serde_json::Value::Null;
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    while state["config_version"] != 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no state with version 3: {state}\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let device = ingest.device_json(&files.registry, &files.device).await;
        if let Some(data) = device["state"]["binaryData"].as_str() {
            let bytes = shared::proto3::decode_base64(data).unwrap();
            state = serde_json::from_slice(&bytes).unwrap();
        }
    }
    assert_eq!(state["hook"], "ok");
    assert_eq!(state["readings_dropped"], 0);
    assert!(
        state["agent"]
            .as_str()
            .unwrap()
            .starts_with("iotcore-device/")
    );
    let hook = std::fs::read_to_string(&hook_log).unwrap();
    assert_eq!(
        hook.lines().count(),
        2,
        "the hook runs once per new config: {hook}"
    );
    // Polls without a change do not report the state again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reports = agent.log_text().matches("state reported").count();
    assert_eq!(reports, 2, "{}", agent.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_twenty_minutes_ahead_is_named_in_the_log_and_nothing_is_lost() {
    let ingest = Ingest::start(SinkKind::File).await;
    let files = new_device(&ingest, None).await;
    let settings = files.write_settings(&ingest.device_url(), "[readings]\nsensors = false\n");
    let ahead = HashMap::from([("IOTCORE_CLOCK_OFFSET_SECS", "1200".to_owned())]);
    let mut agent = Agent::start(&settings, &["--stdin"], &ahead, files.path("agent.log"));
    agent.feed(0..3);
    agent.wait_for_log("the device clock seems wrong").await;
    assert!(file_events(&ingest.events_path()).is_empty());
    agent.kill();

    // With the clock right again, the spooled readings go out.
    let _fixed = Agent::start(&settings, &[], &no_env(), files.path("agent2.log"));
    eventually("the readings once the clock is right", || {
        (numbers_and_ids(&file_events(&ingest.events_path())).0.len() == 3).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_over_its_rate_limit_waits_as_told_and_loses_nothing() {
    // 120 a minute: a burst of 120, then 2 a second, each refusal a 429 with Retry-After.
    let ingest = Ingest::start_limited(SinkKind::File, 120).await;
    let files = new_device(&ingest, None).await;
    let settings = files.write_settings(&ingest.device_url(), "[readings]\nsensors = false\n");
    let mut agent = Agent::start(&settings, &["--stdin"], &no_env(), files.path("agent.log"));
    agent.feed(0..130);
    let events = ingest.events_path();
    let (numbers, ids) = eventually("every reading despite the rate limit", || {
        let (numbers, ids) = numbers_and_ids(&file_events(&events));
        (numbers.len() == 130).then_some((numbers, ids))
    })
    .await;
    assert_eq!(numbers, (0..130).collect());
    assert_eq!(ids, 130);
    let log = agent.log_text();
    assert!(
        log.contains("RESOURCE_EXHAUSTED"),
        "the 429 was seen and logged:\n{log}"
    );
    assert!(
        !log.contains("dropping it"),
        "no reading was given up:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_queued_with_the_cli_reaches_the_commands_hook_once() {
    let ingest = Ingest::start(SinkKind::File).await;
    let files = new_device(&ingest, None).await;
    let ran = files.path("commands.log");
    let extra = format!(
        "[readings]\nsensors = false\n\n[config]\npoll_interval = \"0s\"\n\n[commands]\n\
         poll_interval = \"300ms\"\nhook = \"echo $IOTCORE_COMMAND_ID $1 $(cat) >> {}\"\n",
        ran.display()
    );
    let settings = files.write_settings(&ingest.device_url(), &extra);
    // Queued before the agent runs: an HTTPS device is never "connected".
    let (device, registry) = (files.device.as_str(), files.registry.as_str());
    ingest
        .cli(&[
            "commands",
            "send",
            device,
            "--registry",
            registry,
            "--data",
            "reboot",
            "--subfolder",
            "power",
            "--ttl",
            "10m",
        ])
        .await;
    let agent = Agent::start(&settings, &[], &no_env(), files.path("agent.log"));
    let line = eventually("the commands hook's run", || {
        std::fs::read_to_string(&ran).ok()
    })
    .await;
    assert_eq!(line.trim(), "1 power reboot", "{}", agent.log_text());

    // The next poll acknowledges it; the service records the delivery and the hook never runs
    // for it again.
    let url = format!(
        "{}/v1/projects/{PROJECT}/locations/{REGION}/registries/{registry}/devices/{device}/commands",
        ingest.admin_url()
    );
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    loop {
        let list: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        if list["commands"][0]["deliverTime"].is_string() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no delivery recorded: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(std::fs::read_to_string(&ran).unwrap().lines().count(), 1);
}
