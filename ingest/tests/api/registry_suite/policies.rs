//! Checks on registries' IAM policies: none until one is set, a stale etag refused, kept apart
//! from registry patches, and gone with the registry.

use std::sync::Arc;

use ingest::registry::{RegistryStore, RegistryUpdate, StoreError};
use shared::iam::{Binding, EMPTY_POLICY_ETAG, Policy};
use shared::proto3::decode_base64;
use shared::resources::{LogLevel, MqttConfig, MqttState};

use super::given::*;
use super::is_not_found_naming;

fn policy(member: &str, etag: &[u8]) -> Policy {
    Policy {
        version: 1,
        bindings: vec![Binding {
            role: "roles/cloudiot.viewer".into(),
            members: vec![member.into()],
            condition: None,
        }],
        audit_configs: vec![],
        etag: etag.to_vec(),
    }
}

pub async fn a_policy_is_stored_with_an_etag_check_and_kept_apart_from_the_registry(
    store: Arc<dyn RegistryStore>,
) {
    store
        .create_registry(&location(), registry("reg-1"))
        .await
        .unwrap();
    let name = registry_name("reg-1");
    assert_eq!(store.get_iam_policy(&name).await.unwrap(), None);

    let empty = decode_base64(EMPTY_POLICY_ETAG).unwrap();
    let first = policy("user:a@example.com", b"etag-one");
    let stored = store
        .set_iam_policy(&name, first.clone(), Some(empty.clone()))
        .await
        .unwrap();
    assert_eq!(stored, first);
    assert_eq!(
        store.get_iam_policy(&name).await.unwrap(),
        Some(first.clone())
    );

    // A writer that read the empty policy has lost the race to the first one.
    let stale = store
        .set_iam_policy(
            &name,
            policy("user:b@example.com", b"etag-two"),
            Some(empty),
        )
        .await
        .unwrap_err();
    assert!(matches!(stale, StoreError::PolicyChanged(_)), "{stale:?}");
    assert!(stale.to_string().contains("reg-1"), "{stale}");
    assert_eq!(store.get_iam_policy(&name).await.unwrap(), Some(first));

    store
        .set_iam_policy(
            &name,
            policy("user:b@example.com", b"etag-two"),
            Some(b"etag-one".to_vec()),
        )
        .await
        .unwrap();
    let blind = policy("user:c@example.com", b"etag-three");
    store
        .set_iam_policy(&name, blind.clone(), None)
        .await
        .expect("no expected etag overwrites");

    // Patching the registry neither drops the policy nor shows it in the registry.
    let update = RegistryUpdate {
        mqtt_config: Some(MqttConfig {
            mqtt_enabled_state: MqttState::MqttDisabled,
        }),
        log_level: Some(Some(LogLevel::Error)),
        ..Default::default()
    };
    store.update_registry(&name, update).await.unwrap();
    assert_eq!(store.get_iam_policy(&name).await.unwrap(), Some(blind));
    let listed = store
        .list_registries(&location(), &Default::default())
        .await
        .unwrap();
    assert_eq!(listed.items, vec![store.get_registry(&name).await.unwrap()]);
}

pub async fn a_policy_goes_with_its_registry(store: Arc<dyn RegistryStore>) {
    let name = registry_name("reg-1");
    let missing = store.get_iam_policy(&name).await.unwrap_err();
    assert!(is_not_found_naming(&missing, "reg-1"), "{missing:?}");
    let missing = store
        .set_iam_policy(&name, policy("user:a@example.com", b"e"), None)
        .await
        .unwrap_err();
    assert!(is_not_found_naming(&missing, "reg-1"), "{missing:?}");

    store
        .create_registry(&location(), registry("reg-1"))
        .await
        .unwrap();
    store
        .set_iam_policy(&name, policy("user:a@example.com", b"e"), None)
        .await
        .unwrap();
    store.delete_registry(&name).await.unwrap();
    store
        .create_registry(&location(), registry("reg-1"))
        .await
        .unwrap();
    assert_eq!(
        store.get_iam_policy(&name).await.unwrap(),
        None,
        "a registry created again under the same id starts without the old grants"
    );
}
