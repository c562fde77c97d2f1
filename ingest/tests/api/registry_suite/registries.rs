//! Checks on registries: their life cycle, scoping, pages, and refusing to delete one that
//! still has devices.

use std::sync::Arc;

use ingest::registry::{
    DeviceFilter, PageRequest, RegistryStore, RegistryUpdate, Resource, StoreError,
};
use shared::resources::{
    HttpConfig, HttpState, LogLevel, MqttConfig, MqttState, StateNotificationConfig,
};

use super::given::*;
use super::is_not_found_naming;

pub async fn a_registry_can_be_created_read_listed_updated_and_deleted(
    store: Arc<dyn RegistryStore>,
) {
    let created = store
        .create_registry(&location(), registry("reg-1"))
        .await
        .unwrap();
    let name = registry_name("reg-1");
    assert_eq!(created.name.as_deref(), Some(name.to_string().as_str()));
    assert_eq!(store.get_registry(&name).await.unwrap(), created);

    let listed = store
        .list_registries(&location(), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items, vec![created.clone()]);
    assert_eq!(listed.next_page_token, None);

    let update = RegistryUpdate {
        state_notification_config: Some(Some(StateNotificationConfig {
            pubsub_topic_name: topic("state"),
        })),
        http_config: Some(HttpConfig {
            http_enabled_state: HttpState::HttpDisabled,
        }),
        log_level: Some(Some(LogLevel::Debug)),
        ..Default::default()
    };
    let updated = store.update_registry(&name, update).await.unwrap();
    assert_eq!(
        updated.http_config.http_enabled_state,
        HttpState::HttpDisabled
    );
    assert_eq!(updated.log_level, Some(LogLevel::Debug));
    assert_eq!(
        updated.event_notification_configs, created.event_notification_configs,
        "fields the update does not name stay"
    );
    assert_eq!(updated.mqtt_config, created.mqtt_config);
    assert_eq!(store.get_registry(&name).await.unwrap(), updated);

    let cleared = RegistryUpdate {
        state_notification_config: Some(None),
        mqtt_config: Some(MqttConfig {
            mqtt_enabled_state: MqttState::MqttDisabled,
        }),
        ..Default::default()
    };
    let cleared = store.update_registry(&name, cleared).await.unwrap();
    assert_eq!(cleared.state_notification_config, None);
    assert_eq!(
        cleared.mqtt_config.mqtt_enabled_state,
        MqttState::MqttDisabled
    );
    assert_eq!(cleared.log_level, Some(LogLevel::Debug));

    store.delete_registry(&name).await.unwrap();
    let gone = store.get_registry(&name).await.unwrap_err();
    assert!(is_not_found_naming(&gone, &name.to_string()), "{gone:?}");
}

pub async fn creating_a_registry_twice_is_already_exists(store: Arc<dyn RegistryStore>) {
    a_registry(&store, "reg-1").await;
    let err = store
        .create_registry(&location(), registry("reg-1"))
        .await
        .unwrap_err();
    let StoreError::AlreadyExists(what) = err else {
        panic!("expected AlreadyExists, got {err:?}");
    };
    assert_eq!(what, Resource::Registry(registry_name("reg-1")));
}

pub async fn a_registry_id_is_scoped_to_its_project_and_location(store: Arc<dyn RegistryStore>) {
    let europe = shared::LocationName::parse("demo-project", "europe-west1").unwrap();
    let other_project = shared::LocationName::parse("other-project", "us-central1").unwrap();
    for parent in [location(), europe.clone(), other_project] {
        store
            .create_registry(&parent, registry("reg-1"))
            .await
            .unwrap();
    }
    let listed = store
        .list_registries(&europe, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(
        listed.items[0].name.as_deref(),
        Some("projects/demo-project/locations/europe-west1/registries/reg-1")
    );
}

pub async fn registry_pages_cover_every_registry_once(store: Arc<dyn RegistryStore>) {
    for id in ["reg-c", "reg-a", "reg-b"] {
        a_registry(&store, id).await;
    }
    let mut page = PageRequest {
        size: 2,
        token: None,
    };
    let mut seen = Vec::new();
    loop {
        let got = store.list_registries(&location(), &page).await.unwrap();
        assert!(got.items.len() <= 2);
        seen.extend(got.items.into_iter().map(|r| r.id.unwrap().to_string()));
        match got.next_page_token {
            Some(token) => page.token = Some(token),
            None => break,
        }
    }
    assert_eq!(seen, ["reg-a", "reg-b", "reg-c"]);
}

pub async fn a_missing_registry_is_not_found_by_name(store: Arc<dyn RegistryStore>) {
    let name = registry_name("nowhere");
    let text = name.to_string();
    let errors = [
        store.get_registry(&name).await.unwrap_err(),
        store
            .update_registry(&name, RegistryUpdate::default())
            .await
            .unwrap_err(),
        store.delete_registry(&name).await.unwrap_err(),
        store
            .create_device(&name, device("dev-1"), at(0))
            .await
            .unwrap_err(),
        store
            .list_devices(&name, &DeviceFilter::default(), &PageRequest::default())
            .await
            .unwrap_err(),
    ];
    for err in errors {
        assert!(is_not_found_naming(&err, &text), "{err:?}");
    }
}

pub async fn a_registry_with_devices_cannot_be_deleted_until_they_are(
    store: Arc<dyn RegistryStore>,
) {
    let name = a_registry(&store, "reg-1").await;
    a_device(&store, &name, "dev-1").await;
    a_device(&store, &name, "dev-2").await;

    let err = store.delete_registry(&name).await.unwrap_err();
    let StoreError::FailedPrecondition(why) = err else {
        panic!("expected FailedPrecondition, got {err:?}");
    };
    assert!(
        why.contains('2') && why.contains("delete them first"),
        "{why}"
    );
    store
        .get_registry(&name)
        .await
        .expect("the registry is still there");

    store.delete_device(&name, &id("dev-1")).await.unwrap();
    store.delete_device(&name, &id("dev-2")).await.unwrap();
    store.delete_registry(&name).await.unwrap();
    assert!(store.get_registry(&name).await.is_err());
}
