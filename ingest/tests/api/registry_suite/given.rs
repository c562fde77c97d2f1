//! Builders for the names and resources the checks use.

use std::sync::Arc;

use ingest::registry::RegistryStore;
use jiff::Timestamp;
use shared::resources::{
    Device, DeviceCredential, DeviceRegistry, EventNotificationConfig, PublicKeyCredential,
};
use shared::{
    DeviceId, DeviceRef, LocationName, NumId, PublicKeyFormat, RegistryId, RegistryName, TopicName,
};

pub fn location() -> LocationName {
    LocationName::parse("demo-project", "us-central1").unwrap()
}

pub fn registry_name(id: &str) -> RegistryName {
    RegistryName::from_parts("demo-project", "us-central1", id).unwrap()
}

pub fn id(device: &str) -> DeviceRef {
    DeviceRef::Id(DeviceId::parse(device).unwrap())
}

pub fn num(device: &Device) -> DeviceRef {
    DeviceRef::Num(NumId(
        device.num_id.expect("a stored device has a numeric id"),
    ))
}

pub fn topic(name: &str) -> TopicName {
    TopicName::parse(&format!("projects/demo-project/topics/{name}")).unwrap()
}

/// A fixed instant plus `seconds`, so times compare exactly.
pub fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).unwrap()
}

pub fn credential(key: &str) -> DeviceCredential {
    DeviceCredential {
        public_key: PublicKeyCredential {
            format: PublicKeyFormat::Es256Pem,
            key: key.into(),
        },
        expiration_time: Some(at(86_400)),
    }
}

pub fn registry(id: &str) -> DeviceRegistry {
    DeviceRegistry {
        id: Some(RegistryId::parse(id).unwrap()),
        event_notification_configs: vec![EventNotificationConfig {
            subfolder_matches: String::new(),
            pubsub_topic_name: topic("events"),
        }],
        ..Default::default()
    }
}

pub fn device(id: &str) -> Device {
    Device {
        id: Some(DeviceId::parse(id).unwrap()),
        credentials: vec![credential("key-1")],
        ..Default::default()
    }
}

/// Creates registry `id` in the test location and returns its name.
pub async fn a_registry(store: &Arc<dyn RegistryStore>, id: &str) -> RegistryName {
    store
        .create_registry(&location(), registry(id))
        .await
        .unwrap();
    registry_name(id)
}

/// Creates device `id` in `registry` and returns it as stored.
pub async fn a_device(store: &Arc<dyn RegistryStore>, registry: &RegistryName, id: &str) -> Device {
    store
        .create_device(registry, device(id), at(0))
        .await
        .unwrap()
}
