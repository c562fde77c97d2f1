//! Checks on devices: creation and numeric ids, reading by either id, lists with pages and
//! filters, patches, deletion, and `NotFound` for devices that are not there.

use std::collections::BTreeMap;
use std::sync::Arc;

use ingest::registry::{
    Activity, DeviceFilter, DeviceUpdate, PageRequest, RegistryStore, Resource, StoreError,
};
use shared::resources::{DeviceConfig, LogLevel, RpcStatus};
use shared::{DeviceId, NumId};

use super::given::*;
use super::is_not_found_naming;

pub async fn a_device_can_be_read_by_id_and_by_numeric_id(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    let created = a_device(&store, &reg, "dev-1").await;
    let num_id = created.num_id.expect("a numeric id is allocated");
    assert!((1..=NumId::MAX_ALLOCATED).contains(&num_id), "{num_id}");
    // Named by its numeric id in answers, as IoT Core did.
    assert_eq!(
        created.name.as_deref(),
        Some(format!("{reg}/devices/{num_id}").as_str())
    );
    assert_eq!(created.credentials, vec![credential("key-1")]);

    let by_id = store.get_device(&reg, &id("dev-1")).await.unwrap();
    let by_num = store.get_device(&reg, &num(&created)).await.unwrap();
    assert_eq!(by_id, created);
    assert_eq!(
        by_num, created,
        "the name keeps the id even when read by number"
    );
}

pub async fn output_only_fields_of_a_new_device_are_ignored(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    let mut input = device("dev-1");
    input.name = Some("projects/x/locations/y/registries/z/devices/w".into());
    input.num_id = Some(42);
    input.last_event_time = Some(at(5));
    input.last_error_status = Some(RpcStatus {
        code: 9,
        message: "made up".into(),
    });
    input.state = Some(shared::resources::DeviceState {
        update_time: Some(at(5)),
        binary_data: b"state".to_vec(),
    });
    input.blocked = true;
    input.metadata = BTreeMap::from([("site".to_owned(), "barn".to_owned())]);
    input.log_level = Some(LogLevel::Info);

    let created = store.create_device(&reg, input, at(0)).await.unwrap();
    assert_ne!(created.num_id, Some(42));
    assert_eq!(
        created.name.as_deref(),
        Some(format!("{reg}/devices/{}", created.num_id.unwrap()).as_str())
    );
    assert_eq!(created.last_event_time, None);
    assert_eq!(created.last_error_status, None);
    assert_eq!(created.state, None);
    assert!(created.blocked, "blocked is an input field");
    assert_eq!(created.metadata["site"], "barn");
    assert_eq!(created.log_level, Some(LogLevel::Info));
}

pub async fn a_new_device_with_config_data_starts_at_version_1(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    let mut input = device("dev-1");
    input.config = Some(DeviceConfig {
        version: 7,
        binary_data: b"hello".to_vec(),
        ..Default::default()
    });
    let created = store.create_device(&reg, input, at(3)).await.unwrap();
    let expected = DeviceConfig {
        version: 1,
        cloud_update_time: Some(at(3)),
        device_ack_time: None,
        binary_data: b"hello".to_vec(),
    };
    assert_eq!(created.config, Some(expected.clone()));
    let versions = store
        .list_config_versions(&reg, &id("dev-1"), 0)
        .await
        .unwrap();
    assert_eq!(versions, vec![expected]);
}

pub async fn creating_a_device_twice_is_already_exists(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    a_device(&store, &reg, "dev-1").await;
    let err = store
        .create_device(&reg, device("dev-1"), at(1))
        .await
        .unwrap_err();
    let StoreError::AlreadyExists(what) = err else {
        panic!("expected AlreadyExists, got {err:?}");
    };
    assert!(matches!(what, Resource::Device(_)), "{what}");
    assert!(
        what.to_string().contains(&format!("{reg}/devices/dev-1")),
        "{what}"
    );
}

pub async fn the_same_device_id_in_two_registries_gets_distinct_numeric_ids(
    store: Arc<dyn RegistryStore>,
) {
    let one = a_registry(&store, "reg-1").await;
    let two = a_registry(&store, "reg-2").await;
    let first = a_device(&store, &one, "dev-1").await;
    let second = a_device(&store, &two, "dev-1").await;
    assert_ne!(first.num_id, second.num_id);
    assert_eq!(store.get_device(&two, &num(&second)).await.unwrap(), second);
}

pub async fn a_device_is_not_found_through_another_registry(store: Arc<dyn RegistryStore>) {
    let one = a_registry(&store, "reg-1").await;
    let two = a_registry(&store, "reg-2").await;
    let device = a_device(&store, &one, "dev-1").await;
    for reference in [id("dev-1"), num(&device)] {
        let err = store.get_device(&two, &reference).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    }
}

pub async fn device_pages_of_two_cover_five_devices_exactly_once(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    for d in ["dev-e", "dev-b", "dev-d", "dev-a", "dev-c"] {
        a_device(&store, &reg, d).await;
    }
    let mut page = PageRequest {
        size: 2,
        token: None,
    };
    let mut pages: Vec<Vec<String>> = Vec::new();
    loop {
        let got = store
            .list_devices(&reg, &DeviceFilter::default(), &page)
            .await
            .unwrap();
        pages.push(
            got.items
                .iter()
                .map(|d| d.id.clone().unwrap().to_string())
                .collect(),
        );
        match got.next_page_token {
            Some(token) => page.token = Some(token),
            None => break,
        }
    }
    let expected: Vec<Vec<String>> = vec![
        vec!["dev-a".into(), "dev-b".into()],
        vec!["dev-c".into(), "dev-d".into()],
        vec!["dev-e".into()],
    ];
    assert_eq!(pages, expected);
}

pub async fn a_device_list_can_be_filtered_by_ids_and_numeric_ids(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    let mut devices = Vec::new();
    for d in ["dev-a", "dev-b", "dev-c", "dev-d"] {
        devices.push(a_device(&store, &reg, d).await);
    }
    let filter = DeviceFilter {
        ids: vec![
            DeviceId::parse("dev-d").unwrap(),
            DeviceId::parse("dev-x").unwrap(),
        ],
        num_ids: vec![NumId(devices[1].num_id.unwrap()), NumId(u64::MAX)],
        gateway: None,
    };
    let got = store
        .list_devices(&reg, &filter, &PageRequest::default())
        .await
        .unwrap();
    let ids: Vec<String> = got
        .items
        .iter()
        .map(|d| d.id.clone().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["dev-b", "dev-d"]);

    let only_nums = DeviceFilter {
        ids: vec![],
        num_ids: vec![NumId(devices[2].num_id.unwrap())],
        gateway: None,
    };
    let got = store
        .list_devices(&reg, &only_nums, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(got.items, vec![devices[2].clone()]);
}

pub async fn a_page_token_the_store_never_issued_is_refused(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    let page = PageRequest {
        size: 2,
        token: Some("not-a-token!".into()),
    };
    let err = store
        .list_devices(&reg, &DeviceFilter::default(), &page)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::BadPageToken), "{err:?}");
    let err = store.list_registries(&location(), &page).await.unwrap_err();
    assert!(matches!(err, StoreError::BadPageToken), "{err:?}");
}

pub async fn updating_a_device_changes_only_the_named_fields(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    let mut input = device("dev-1");
    input.metadata = BTreeMap::from([("site".to_owned(), "barn".to_owned())]);
    input.log_level = Some(LogLevel::Error);
    let created = store.create_device(&reg, input, at(0)).await.unwrap();

    let blocked = DeviceUpdate {
        blocked: Some(true),
        ..Default::default()
    };
    let updated = store
        .update_device(&reg, &id("dev-1"), blocked)
        .await
        .unwrap();
    assert!(updated.blocked);
    assert_eq!(updated.credentials, created.credentials);
    assert_eq!(updated.metadata, created.metadata);
    assert_eq!(updated.log_level, Some(LogLevel::Error));

    let rekeyed = DeviceUpdate {
        credentials: Some(vec![credential("key-2"), credential("key-3")]),
        metadata: Some(BTreeMap::new()),
        log_level: Some(None),
        ..Default::default()
    };
    let updated = store
        .update_device(&reg, &num(&created), rekeyed)
        .await
        .unwrap();
    assert_eq!(
        updated.credentials,
        vec![credential("key-2"), credential("key-3")]
    );
    assert!(updated.metadata.is_empty());
    assert_eq!(updated.log_level, None);
    assert!(updated.blocked, "blocked stays as the first update left it");
    assert_eq!(store.get_device(&reg, &id("dev-1")).await.unwrap(), updated);
}

pub async fn a_deleted_device_is_not_found_and_its_history_is_gone(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    a_device(&store, &reg, "dev-1").await;
    store
        .modify_config(&reg, &id("dev-1"), 0, b"c".to_vec(), at(1))
        .await
        .unwrap();
    store
        .record_state(&reg, &id("dev-1"), b"s".to_vec(), at(2))
        .await
        .unwrap();

    store.delete_device(&reg, &id("dev-1")).await.unwrap();
    let err = store.get_device(&reg, &id("dev-1")).await.unwrap_err();
    assert!(
        is_not_found_naming(&err, &format!("{reg}/devices/dev-1")),
        "{err:?}"
    );

    let again = a_device(&store, &reg, "dev-1").await;
    assert_eq!(
        again.config.map(|c| (c.version, c.binary_data)),
        Some((1, Vec::new())),
        "a new device with the old id inherits nothing: it starts at an empty version 1"
    );
    assert_eq!(again.state, None);
    assert!(
        store
            .list_states(&reg, &id("dev-1"), 0)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn operations_on_a_missing_device_are_not_found_naming_it(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    let ghost = id("ghost");
    let name = format!("{reg}/devices/ghost");
    let errors = [
        store.get_device(&reg, &ghost).await.unwrap_err(),
        store
            .update_device(&reg, &ghost, DeviceUpdate::default())
            .await
            .unwrap_err(),
        store.delete_device(&reg, &ghost).await.unwrap_err(),
        store
            .modify_config(&reg, &ghost, 0, vec![], at(0))
            .await
            .unwrap_err(),
        store
            .list_config_versions(&reg, &ghost, 0)
            .await
            .unwrap_err(),
        store
            .record_state(&reg, &ghost, vec![], at(0))
            .await
            .unwrap_err(),
        store.list_states(&reg, &ghost, 0).await.unwrap_err(),
        store
            .record_activity(&reg, &ghost, Activity::default())
            .await
            .unwrap_err(),
    ];
    for err in errors {
        assert!(is_not_found_naming(&err, &name), "{err:?}");
    }
    let err = store
        .get_device(&reg, &shared::DeviceRef::Num(NumId(12345)))
        .await
        .unwrap_err();
    assert!(
        is_not_found_naming(&err, &format!("{reg}/devices/12345")),
        "{err:?}"
    );
}
