//! Where a device message goes and what it carries: the registry's event notification configs
//! pick the topic by subfolder, and every message gets IoT Core's attributes, spelled exactly as
//! existing Pub/Sub pipelines read them.

use std::collections::BTreeMap;
use std::sync::Arc;

use shared::TopicName;
use shared::attributes;
use shared::resources::DeviceRegistry;

use crate::auth::AuthenticatedDevice;
use crate::sink::Attributes;

/// The longest subfolder: Pub/Sub refuses attribute values above 1024 bytes.
pub const MAX_SUBFOLDER_BYTES: usize = 1024;

/// The topic for an event: the first config whose `subfolderMatches` equals the subfolder, else
/// the one with an empty match (wherever it stands in the list), else none.
pub fn event_topic<'a>(
    registry: &'a DeviceRegistry,
    subfolder: Option<&str>,
) -> Option<&'a TopicName> {
    let configs = &registry.event_notification_configs;
    let exact = subfolder.and_then(|wanted| {
        configs
            .iter()
            .find(|c| !c.subfolder_matches.is_empty() && c.subfolder_matches == wanted)
    });
    exact
        .or_else(|| configs.iter().find(|c| c.subfolder_matches.is_empty()))
        .map(|c| &c.pubsub_topic_name)
}

/// `deviceId`, `deviceNumId`, `deviceRegistryId`, `deviceRegistryLocation`, `projectId`, and
/// `subFolder` only when there is a non-empty one. The device's five are built once per
/// authenticated device and shared.
pub fn message_attributes(device: &AuthenticatedDevice, subfolder: Option<&str>) -> Attributes {
    let shared = device
        .attributes
        .get_or_init(|| Arc::new(device_attributes(device)));
    let subfolder = subfolder.filter(|s| !s.is_empty()).map(str::to_owned);
    Attributes::new(Arc::clone(shared), subfolder)
}

fn device_attributes(device: &AuthenticatedDevice) -> BTreeMap<String, String> {
    let registry = &device.registry;
    BTreeMap::from([
        (attributes::DEVICE_ID.to_owned(), device.id.to_string()),
        (
            attributes::DEVICE_NUM_ID.to_owned(),
            device.num_id.to_string(),
        ),
        (
            attributes::DEVICE_REGISTRY_ID.to_owned(),
            registry.registry.to_string(),
        ),
        (
            attributes::DEVICE_REGISTRY_LOCATION.to_owned(),
            registry.location.to_string(),
        ),
        (
            attributes::PROJECT_ID.to_owned(),
            registry.project.to_string(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::resources::EventNotificationConfig;
    use shared::{DeviceId, NumId, RegistryName};

    fn registry(configs: &[(&str, &str)]) -> DeviceRegistry {
        DeviceRegistry {
            event_notification_configs: configs
                .iter()
                .map(|(matches, topic)| EventNotificationConfig {
                    subfolder_matches: (*matches).to_owned(),
                    pubsub_topic_name: TopicName::parse(&format!(
                        "projects/demo-project/topics/{topic}"
                    ))
                    .unwrap(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn topic_of(registry: &DeviceRegistry, subfolder: Option<&str>) -> Option<String> {
        event_topic(registry, subfolder).map(|t| t.topic().to_owned())
    }

    #[test]
    fn exact_matches_win_then_the_catch_all() {
        let r = registry(&[("", "all"), ("alerts", "alerts-1"), ("alerts", "alerts-2")]);
        assert_eq!(topic_of(&r, Some("alerts")).as_deref(), Some("alerts-1"));
        assert_eq!(topic_of(&r, Some("other")).as_deref(), Some("all"));
        assert_eq!(topic_of(&r, None).as_deref(), Some("all"));
    }

    #[test]
    fn without_a_catch_all_unmatched_events_have_no_topic() {
        let r = registry(&[("alerts", "alerts")]);
        assert_eq!(topic_of(&r, Some("other")), None);
        assert_eq!(topic_of(&r, None), None);
        assert_eq!(topic_of(&registry(&[]), None), None);
    }

    #[test]
    fn attributes_are_spelled_as_iot_core_did() {
        let device = AuthenticatedDevice {
            registry: RegistryName::from_parts("demo-project", "us-central1", "reg-1").unwrap(),
            id: DeviceId::parse("dev-1").unwrap(),
            num_id: NumId(42),
            token_exp: 0,
            via_gateway: None,
            attributes: Default::default(),
        };
        let attrs = message_attributes(&device, Some("a/b")).to_map();
        let expected = [
            ("deviceId", "dev-1"),
            ("deviceNumId", "42"),
            ("deviceRegistryId", "reg-1"),
            ("deviceRegistryLocation", "us-central1"),
            ("projectId", "demo-project"),
            ("subFolder", "a/b"),
        ];
        assert_eq!(
            attrs,
            expected
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        );
        assert!(
            !message_attributes(&device, Some(""))
                .to_map()
                .contains_key("subFolder")
        );
        assert!(
            !message_attributes(&device, None)
                .to_map()
                .contains_key("subFolder")
        );
        // Built once, then shared by every message of the device.
        let (a, b) = (
            message_attributes(&device, None),
            message_attributes(&device, None),
        );
        assert!(std::ptr::eq(a.device_map(), b.device_map()));
    }
}
