//! Checks that hold when callers race, and when the store is closed and opened again.

use std::collections::BTreeSet;
use std::sync::Arc;

use ingest::registry::{DeviceFilter, PageRequest, RegistryStore, StoreError};

use super::Fixture;
use super::given::*;

pub async fn twenty_parallel_device_creates_all_get_distinct_numeric_ids(
    store: Arc<dyn RegistryStore>,
) {
    let reg = a_registry(&store, "reg-1").await;
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            let (store, reg) = (Arc::clone(&store), reg.clone());
            tokio::spawn(async move {
                store
                    .create_device(&reg, device(&format!("dev-{n:02}")), at(0))
                    .await
            })
        })
        .collect();
    let mut num_ids = BTreeSet::new();
    for task in tasks {
        let created = task.await.unwrap().expect("every create succeeds");
        num_ids.insert(created.num_id.unwrap());
    }
    assert_eq!(num_ids.len(), 20);
    let listed = store
        .list_devices(&reg, &DeviceFilter::default(), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 20);
}

pub async fn of_ten_racing_conditional_config_updates_exactly_one_wins(
    store: Arc<dyn RegistryStore>,
) {
    let reg = a_registry(&store, "reg-1").await;
    // The device starts at version 1; every racer replaces exactly that.
    a_device(&store, &reg, "dev-1").await;
    let tasks: Vec<_> = (0..10)
        .map(|n| {
            let (store, reg) = (Arc::clone(&store), reg.clone());
            tokio::spawn(async move {
                let data = format!("racer {n}").into_bytes();
                store
                    .modify_config(&reg, &id("dev-1"), 1, data, at(1))
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(config) => winners.push(config),
            Err(StoreError::VersionMismatch {
                expected: 1,
                current: 2,
            }) => {}
            Err(other) => panic!("a loser must see VersionMismatch 1 → 2, got {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(winners[0].version, 2);
    let latest = store.get_device(&reg, &id("dev-1")).await.unwrap().config;
    assert_eq!(latest.as_ref(), winners.first());
}

pub async fn data_survives_reopening_the_store(fixture: &Fixture) {
    let store = fixture.store().await;
    let reg = a_registry(&store, "reg-1").await;
    let created = a_device(&store, &reg, "dev-1").await;
    store
        .modify_config(&reg, &id("dev-1"), 0, b"cfg".to_vec(), at(1))
        .await
        .unwrap();
    store
        .record_state(&reg, &id("dev-1"), b"st".to_vec(), at(2))
        .await
        .unwrap();
    let before = store.get_device(&reg, &id("dev-1")).await.unwrap();
    drop(store);

    let reopened = fixture.store().await;
    assert!(reopened.get_registry(&reg).await.is_ok());
    let after = reopened.get_device(&reg, &num(&created)).await.unwrap();
    assert_eq!(after, before);
    assert_eq!(after.config.unwrap().binary_data, b"cfg");
    assert_eq!(after.state.unwrap().binary_data, b"st");
}
