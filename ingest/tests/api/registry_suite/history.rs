//! Checks on what a device accumulates: config versions with their optimistic check, reported
//! states, and activity bookkeeping.

use std::sync::Arc;

use ingest::registry::{Activity, RegistryStore, StoreError};
use shared::resources::{DeviceConfig, RpcStatus};

use super::given::*;

pub async fn a_device_starts_at_an_empty_version_1_and_unconditional_updates_follow(
    store: Arc<dyn RegistryStore>,
) {
    let reg = a_registry(&store, "reg-1").await;
    a_device(&store, &reg, "dev-1").await;
    // IoT Core's rule: version 1, empty, from the device's creation.
    let versions = store
        .list_config_versions(&reg, &id("dev-1"), 0)
        .await
        .unwrap();
    assert_eq!(
        versions,
        vec![DeviceConfig {
            version: 1,
            cloud_update_time: Some(at(0)),
            device_ack_time: None,
            binary_data: Vec::new(),
        }]
    );
    let first = store
        .modify_config(&reg, &id("dev-1"), 0, b"one".to_vec(), at(1))
        .await
        .unwrap();
    assert_eq!(
        first,
        DeviceConfig {
            version: 2,
            cloud_update_time: Some(at(1)),
            device_ack_time: None,
            binary_data: b"one".to_vec(),
        }
    );
    let second = store
        .modify_config(&reg, &id("dev-1"), 0, b"two".to_vec(), at(2))
        .await
        .unwrap();
    assert_eq!(second.version, 3);
    let device = store.get_device(&reg, &id("dev-1")).await.unwrap();
    assert_eq!(
        device.config,
        Some(second),
        "the device shows its latest config"
    );
}

pub async fn a_conditional_config_update_with_the_current_version_wins(
    store: Arc<dyn RegistryStore>,
) {
    let reg = a_registry(&store, "reg-1").await;
    let device = a_device(&store, &reg, "dev-1").await;
    let next = store
        .modify_config(&reg, &num(&device), 1, b"one".to_vec(), at(1))
        .await
        .unwrap();
    assert_eq!(
        (next.version, next.binary_data.as_slice()),
        (2, b"one".as_slice())
    );
    let next = store
        .modify_config(&reg, &id("dev-1"), 2, b"two".to_vec(), at(2))
        .await
        .unwrap();
    assert_eq!(
        (next.version, next.binary_data.as_slice()),
        (3, b"two".as_slice())
    );
}

pub async fn a_conditional_config_update_with_a_stale_version_reports_the_current_one(
    store: Arc<dyn RegistryStore>,
) {
    let reg = a_registry(&store, "reg-1").await;
    a_device(&store, &reg, "dev-1").await;
    let err = store
        .modify_config(&reg, &id("dev-1"), 2, b"x".to_vec(), at(0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::VersionMismatch {
                expected: 2,
                current: 1
            }
        ),
        "{err:?}"
    );
    for (second, data) in [(1, "one"), (2, "two"), (3, "three")] {
        store
            .modify_config(&reg, &id("dev-1"), 0, data.into(), at(second))
            .await
            .unwrap();
    }
    let err = store
        .modify_config(&reg, &id("dev-1"), 3, b"late".to_vec(), at(2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::VersionMismatch {
                expected: 3,
                current: 4
            }
        ),
        "{err:?}"
    );
    let latest = store
        .get_device(&reg, &id("dev-1"))
        .await
        .unwrap()
        .config
        .unwrap();
    assert_eq!((latest.version, latest.binary_data), (4, b"three".to_vec()));
}

pub async fn a_config_may_change_once_a_second(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    a_device(&store, &reg, "dev-1").await;
    // The version the device was created with (at 0) is no change: this one is at once.
    store
        .modify_config(&reg, &id("dev-1"), 0, b"one".to_vec(), at(0))
        .await
        .unwrap();
    let soon = at(0) + std::time::Duration::from_millis(400);
    let err = store
        .modify_config(&reg, &id("dev-1"), 0, b"two".to_vec(), soon)
        .await
        .unwrap_err();
    match &err {
        StoreError::ConfigTooSoon {
            resource,
            retry_after,
        } => {
            assert!(resource.to_string().contains("dev-1"), "{err}");
            assert_eq!(*retry_after, std::time::Duration::from_millis(600));
        }
        other => panic!("expected ConfigTooSoon, got {other:?}"),
    }
    assert!(err.to_string().contains("retry in 0.6 s"), "{err}");
    // A stale version is still told as such first.
    let err = store
        .modify_config(&reg, &id("dev-1"), 1, b"two".to_vec(), soon)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::VersionMismatch { .. }), "{err:?}");
    let later = store
        .modify_config(&reg, &id("dev-1"), 0, b"two".to_vec(), at(1))
        .await
        .unwrap();
    assert_eq!(later.version, 3);
}

pub async fn only_the_newest_10_config_versions_are_kept_newest_first(
    store: Arc<dyn RegistryStore>,
) {
    let reg = a_registry(&store, "reg-1").await;
    a_device(&store, &reg, "dev-1").await;
    // Version 1 came with the device; these are 2 to 12.
    for n in 2..=12 {
        let data = format!("config {n}").into_bytes();
        store
            .modify_config(&reg, &id("dev-1"), 0, data, at(n))
            .await
            .unwrap();
    }
    let kept = store
        .list_config_versions(&reg, &id("dev-1"), 0)
        .await
        .unwrap();
    let versions: Vec<u64> = kept.iter().map(|c| c.version).collect();
    assert_eq!(versions, (3..=12).rev().collect::<Vec<u64>>());
    assert_eq!(kept[0].binary_data, b"config 12");
    assert_eq!(kept[0].cloud_update_time, Some(at(12)));

    let limited = store
        .list_config_versions(&reg, &id("dev-1"), 3)
        .await
        .unwrap();
    assert_eq!(limited, kept[..3].to_vec());
}

pub async fn only_the_newest_10_states_are_kept_newest_first(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    a_device(&store, &reg, "dev-1").await;
    for n in 1..=12 {
        let data = format!("state {n}").into_bytes();
        let stored = store
            .record_state(&reg, &id("dev-1"), data.clone(), at(n))
            .await
            .unwrap();
        assert_eq!(
            (stored.update_time, stored.binary_data),
            (Some(at(n)), data)
        );
    }
    let kept = store.list_states(&reg, &id("dev-1"), 0).await.unwrap();
    let times: Vec<_> = kept.iter().map(|s| s.update_time.unwrap()).collect();
    assert_eq!(times, (3..=12).rev().map(at).collect::<Vec<_>>());
    assert_eq!(
        store.list_states(&reg, &id("dev-1"), 2).await.unwrap(),
        kept[..2].to_vec()
    );

    let device = store.get_device(&reg, &id("dev-1")).await.unwrap();
    assert_eq!(
        device.state.as_ref(),
        kept.first(),
        "the device shows its latest state"
    );
}

pub async fn recorded_activity_reads_back_and_absent_fields_stay(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    a_device(&store, &reg, "dev-1").await;
    let error = RpcStatus {
        code: 9,
        message: "no event topic matches subfolder `x`".into(),
    };
    let activity = Activity {
        last_heartbeat_time: Some(at(1)),
        last_event_time: Some(at(2)),
        last_state_time: Some(at(3)),
        last_config_ack_time: Some(at(4)),
        last_config_send_time: Some(at(5)),
        last_error: Some((at(6), error.clone())),
        config_ack_version: None,
        last_accessed_gateway: Some(("gw-1".into(), at(7))),
    };
    store
        .record_activity(&reg, &id("dev-1"), activity)
        .await
        .unwrap();
    let heartbeat_only = Activity {
        last_heartbeat_time: Some(at(10)),
        ..Default::default()
    };
    store
        .record_activity(&reg, &id("dev-1"), heartbeat_only)
        .await
        .unwrap();

    let device = store.get_device(&reg, &id("dev-1")).await.unwrap();
    assert_eq!(device.last_heartbeat_time, Some(at(10)));
    assert_eq!(device.last_event_time, Some(at(2)));
    assert_eq!(device.last_state_time, Some(at(3)));
    assert_eq!(device.last_config_ack_time, Some(at(4)));
    assert_eq!(device.last_config_send_time, Some(at(5)));
    assert_eq!(device.last_error_time, Some(at(6)));
    assert_eq!(device.last_error_status, Some(error));
    let gateway = device.gateway_config.expect("the gateway it spoke through");
    assert_eq!(gateway.last_accessed_gateway_id.as_deref(), Some("gw-1"));
    assert_eq!(gateway.last_accessed_gateway_time, Some(at(7)));
}

pub async fn last_seen_times_are_the_latest_of_event_state_and_heartbeat(
    store: Arc<dyn RegistryStore>,
) {
    let reg = a_registry(&store, "reg-1").await;
    let other = a_registry(&store, "reg-2").await;
    for device in ["dev-1", "dev-2", "dev-3"] {
        a_device(&store, &reg, device).await;
    }
    a_device(&store, &other, "dev-9").await;
    let times = [
        ("dev-1", Some(at(5)), Some(at(9)), None),
        ("dev-2", None, None, Some(at(7))),
    ];
    for (device, event, state, heartbeat) in times {
        let activity = Activity {
            last_event_time: event,
            last_state_time: state,
            last_heartbeat_time: heartbeat,
            ..Default::default()
        };
        store
            .record_activity(&reg, &id(device), activity)
            .await
            .unwrap();
    }
    let mut seen = store.last_seen_times(&reg).await.unwrap();
    seen.sort();
    assert_eq!(
        seen,
        [None, Some(at(7)), Some(at(9))],
        "dev-3 was never heard from"
    );
    let err = store
        .last_seen_times(&registry_name("missing"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

pub async fn a_config_acknowledgement_sets_that_versions_device_ack_time(
    store: Arc<dyn RegistryStore>,
) {
    let reg = a_registry(&store, "reg-1").await;
    a_device(&store, &reg, "dev-1").await;
    for (n, data) in [b"one", b"two"].into_iter().enumerate() {
        store
            .modify_config(&reg, &id("dev-1"), 0, data.to_vec(), at(n as i64 + 1))
            .await
            .unwrap();
    }
    let versions = store
        .list_config_versions(&reg, &id("dev-1"), 0)
        .await
        .unwrap();
    let (latest, older) = (versions[0].version, versions[1].version);
    for (version, when) in [(older, 7), (latest, 8)] {
        let ack = Activity {
            last_config_ack_time: Some(at(when)),
            config_ack_version: Some(version),
            ..Default::default()
        };
        store
            .record_activity(&reg, &id("dev-1"), ack)
            .await
            .unwrap();
    }
    // A version no longer kept is acknowledged without error, and changes nothing.
    let gone = Activity {
        last_config_ack_time: Some(at(9)),
        config_ack_version: Some(12_345),
        ..Default::default()
    };
    store
        .record_activity(&reg, &id("dev-1"), gone)
        .await
        .unwrap();

    let versions = store
        .list_config_versions(&reg, &id("dev-1"), 0)
        .await
        .unwrap();
    assert_eq!(versions[0].device_ack_time, Some(at(8)));
    assert_eq!(versions[1].device_ack_time, Some(at(7)));
    let device = store.get_device(&reg, &id("dev-1")).await.unwrap();
    assert_eq!(device.last_config_ack_time, Some(at(9)));
    let config = device.config.unwrap();
    assert_eq!(
        (config.version, config.device_ack_time),
        (latest, Some(at(8)))
    );
}
