//! What the registry costs per message on Firestore, measured: devices publish over the real HTTP
//! bridge for a while against the real Firestore emulator, and every registry call that reaches
//! the store is counted. On the Firestore store each of these calls is one billed operation: a
//! device read by id is one document read, a registry read one, a bookkeeping write by id one
//! document write. The cached token, the registry cache (5 s) and the coalesced bookkeeping (one
//! write per device per flush) keep the count far below one per message. The same traffic runs
//! twice: with the token trusted for 10 s (the default without a delivery bus, where a change
//! made through another instance must be picked up by re-reading) and for 300 s (the default
//! with one, which tells every instance of a change at once); both figures are printed and
//! recorded in the README.
//!
//! The 60 s of traffic are 60 s on the bridge's clock, a [`ManualClock`] the test moves 100 ms
//! after each round of sends: the token freshness, the registry cache and the rate buckets see
//! exactly the traffic of 60 real seconds, and the test does not wait for them.

use std::sync::Arc;
use std::time::Duration;

use crate::support::PROJECT;
use crate::support::device::{DeviceApp, Signer, device_path};
use ingest::bridge::Limits;
use ingest::registry::RegistryStore;
use ingest::registry::firestore::{FirestoreSettings, FirestoreStore};
use serde_json::json;
use shared::clock::Clock as _;
use testkit::ManualClock;

const DEVICES: usize = 10;
const RUN: Duration = Duration::from_secs(60);
/// Each device sends one event per this interval: 10 a second, a busy sensor.
const INTERVAL: Duration = Duration::from_millis(100);
/// ingest's default `REGISTRY_FRESHNESS_SECS` without a delivery bus, and with one.
const WITHOUT_BUS: u64 = 10;
const WITH_BUS: u64 = 300;

async fn firestore_store() -> Arc<dyn RegistryStore> {
    let settings = FirestoreSettings {
        project: "registry-cost".into(),
        database: testkit::unique("cost"),
        emulator_host: Some(testkit::emulators::firestore_host()),
    };
    Arc::new(FirestoreStore::open(&settings).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firestore_operations_per_1000_events_stay_far_below_one_per_event() {
    let without = operations_per_1000(WITHOUT_BUS).await;
    let with = operations_per_1000(WITH_BUS).await;
    eprintln!(
        "Firestore operations per 1000 events: {without:.1} trusting a token {WITHOUT_BUS} s, \
         {with:.1} trusting it {WITH_BUS} s ({:.1}x fewer)",
        without / with
    );
    assert!(with < without, "{with:.1} is not below {without:.1}");
}

/// Runs the traffic with tokens trusted for `freshness_secs` and returns the store operations
/// per 1000 events, after checking where they went.
async fn operations_per_1000(freshness_secs: u64) -> f64 {
    let clock = Arc::new(ManualClock::new());
    let app = DeviceApp::spawn_on(
        firestore_store().await,
        Limits::default(),
        None,
        Some(freshness_secs),
        clock.clone(),
        tempfile::TempDir::new().unwrap(),
    )
    .await;
    app.admin.create_registry("reg-1").await;
    for n in 0..DEVICES {
        let id = format!("dev-{n}");
        app.admin
            .create_device("reg-1", &id, "RSA_PEM", "rsa_public")
            .await;
    }
    let before = app.store.calls();

    let app = Arc::new(app);
    // The devices share a key here; distinct issue times keep their tokens distinct, as distinct
    // keys would.
    let now = clock.now().as_second();
    let tokens: Vec<String> = (0..DEVICES)
        .map(|n| Signer::rsa("rsa_private").token(now - 60 - n as i64, now + 3600, PROJECT))
        .collect();
    let mut events = 0;
    // Each round every device sends one event, all at once, as they would at the same instant.
    while clock.elapsed() < RUN {
        let mut round = tokio::task::JoinSet::new();
        for (n, token) in tokens.iter().enumerate() {
            let (app, token) = (Arc::clone(&app), token.clone());
            let path = device_path("reg-1", &format!("dev-{n}"));
            round.spawn(async move {
                let (status, body) = app
                    .publish_event(&token, &path, json!({"binary_data": "AQ=="}))
                    .await;
                assert_eq!(status, 200, "{body}");
            });
        }
        while let Some(sent) = round.join_next().await {
            sent.unwrap();
            events += 1;
        }
        clock.advance(INTERVAL);
    }
    // One flush: what ACTIVITY_FLUSH_SECS (60 s by default) does at most once a minute.
    app.bridge.flush_activity().await;

    let after = app.store.calls();
    let delta = |method: &str| after.get(method).unwrap_or(&0) - before.get(method).unwrap_or(&0);
    let (device_reads, registry_reads) = (delta("get_device"), delta("get_registry"));
    let writes = delta("record_activity");
    let others: usize = after.values().sum::<usize>()
        - before.values().sum::<usize>()
        - device_reads
        - registry_reads
        - writes;
    let operations = device_reads + registry_reads + writes;
    let per_1000 = operations as f64 * 1000.0 / events as f64;
    eprintln!(
        "freshness {freshness_secs} s: {events} events from {DEVICES} devices in {RUN:?}: \
         {device_reads} device reads, {registry_reads} registry reads, {writes} bookkeeping \
         writes = {per_1000:.1} Firestore operations per 1000 events"
    );

    assert_eq!(others, 0, "no other store call is on the message path");
    assert_eq!(
        writes, DEVICES,
        "one coalesced bookkeeping write per device"
    );
    // Each device is read when its token is first seen and once per freshness period after.
    let periods = RUN.as_secs().div_ceil(freshness_secs) as usize + 1;
    assert!(
        device_reads >= DEVICES && device_reads <= DEVICES * periods,
        "{device_reads} device reads"
    );
    // The registry is read once per cache period (5 s), not once per device that missed it.
    let registry_periods = RUN.as_secs().div_ceil(5) as usize + 1;
    assert!(
        registry_reads <= registry_periods,
        "{registry_reads} registry reads"
    );
    assert!(
        events >= DEVICES * 20,
        "only {events} events were sent: too few to measure"
    );
    assert!(per_1000 < 100.0, "{per_1000:.1} operations per 1000 events");
    per_1000
}

/// A device fetching its config over and over costs one store read per freshness period, not
/// one per fetch; a config change made through the admin API reaches the very next fetch (one
/// more read), and the entry lapses with the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_fetches_read_the_store_once_per_change_or_freshness_period() {
    let clock = Arc::new(ManualClock::new());
    let app = DeviceApp::spawn_on(
        firestore_store().await,
        Limits::default(),
        None,
        Some(WITHOUT_BUS),
        clock.clone(),
        tempfile::TempDir::new().unwrap(),
    )
    .await;
    app.admin.create_registry("reg-1").await;
    app.admin
        .create_device("reg-1", "dev-0", "RSA_PEM", "rsa_public")
        .await;
    let path = device_path("reg-1", "dev-0");
    let now = clock.now().as_second();
    let token = Signer::rsa("rsa_private").token(now - 60, now + 3600, PROJECT);
    let reads = || {
        app.store
            .calls()
            .get("list_config_versions")
            .copied()
            .unwrap_or(0)
    };
    let fetch = || async {
        let (status, body) = app.get_config(&token, &path, "?local_version=0").await;
        assert_eq!(status, 200, "{body}");
        (
            body["version"].as_str().unwrap().to_owned(),
            body["binaryData"].clone(),
        )
    };

    let before = reads();
    for _ in 0..50 {
        assert_eq!(fetch().await.0, "1");
    }
    assert_eq!(reads() - before, 1, "50 fetches of an unchanged config");

    let (status, body) = app
        .admin
        .modify_config(&path, json!({"binaryData": "AQ=="}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fetch().await, ("2".to_owned(), json!("AQ==")));
    assert_eq!(fetch().await.0, "2");
    assert_eq!(reads() - before, 2, "one more read after the change");

    clock.advance(Duration::from_secs(WITHOUT_BUS));
    assert_eq!(fetch().await.0, "2");
    assert_eq!(reads() - before, 3, "one more read once the entry lapsed");
}
