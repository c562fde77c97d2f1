//! Checks on gateways: creating one, binding and unbinding devices (by id or numeric id), the
//! rules (only a gateway takes devices, a gateway is never bound, bound devices are not deleted),
//! IoT Core's limit on gateways per device, and the `gatewayListOptions` filters.

use std::sync::Arc;

use ingest::registry::{
    DeviceFilter, DeviceUpdate, GatewayFilter, MAX_GATEWAYS_PER_DEVICE, PageRequest, RegistryStore,
    StoreError,
};
use shared::resources::{Device, GatewayAuthMethod, GatewayConfig, GatewayType};
use shared::{NumId, RegistryName};

use super::given::*;
use super::is_not_found_naming;

/// Creates gateway `id` with `method`.
async fn a_gateway(
    store: &Arc<dyn RegistryStore>,
    registry: &RegistryName,
    id: &str,
    method: GatewayAuthMethod,
) -> Device {
    let gateway = Device {
        gateway_config: Some(GatewayConfig {
            gateway_type: Some(GatewayType::Gateway),
            gateway_auth_method: Some(method),
            ..Default::default()
        }),
        ..device(id)
    };
    store.create_device(registry, gateway, at(0)).await.unwrap()
}

/// The ids of the devices `filter` lists.
async fn listed(
    store: &Arc<dyn RegistryStore>,
    registry: &RegistryName,
    gateway: GatewayFilter,
) -> Vec<String> {
    let filter = DeviceFilter {
        gateway: Some(gateway),
        ..Default::default()
    };
    let page = store
        .list_devices(registry, &filter, &PageRequest::default())
        .await
        .unwrap();
    page.items
        .iter()
        .map(|d| d.id.as_ref().unwrap().to_string())
        .collect()
}

pub async fn devices_are_bound_to_a_gateway_listed_by_it_and_unbound(
    store: Arc<dyn RegistryStore>,
) {
    let reg = a_registry(&store, "reg-1").await;
    let gw = a_gateway(&store, &reg, "gw-1", GatewayAuthMethod::AssociationOnly).await;
    let config = gw.gateway_config.clone().unwrap();
    assert_eq!(config.gateway_type, Some(GatewayType::Gateway));
    assert_eq!(
        config.gateway_auth_method,
        Some(GatewayAuthMethod::AssociationOnly)
    );
    assert_eq!(store.get_device(&reg, &id("gw-1")).await.unwrap(), gw);
    a_gateway(&store, &reg, "gw-2", GatewayAuthMethod::DeviceAuthTokenOnly).await;
    let a = a_device(&store, &reg, "dev-a").await;
    a_device(&store, &reg, "dev-b").await;
    a_device(&store, &reg, "dev-c").await;

    // By id and by numeric id alike; binding twice changes nothing.
    store
        .bind_device_to_gateway(&reg, &id("gw-1"), &num(&a))
        .await
        .unwrap();
    store
        .bind_device_to_gateway(&reg, &num(&gw), &id("dev-b"))
        .await
        .unwrap();
    store
        .bind_device_to_gateway(&reg, &id("gw-1"), &id("dev-a"))
        .await
        .unwrap();
    store
        .bind_device_to_gateway(&reg, &id("gw-2"), &id("dev-a"))
        .await
        .unwrap();

    assert_eq!(
        listed(&store, &reg, GatewayFilter::BoundTo(id("gw-1"))).await,
        ["dev-a", "dev-b"]
    );
    assert_eq!(
        listed(&store, &reg, GatewayFilter::BoundTo(num(&gw))).await,
        ["dev-a", "dev-b"]
    );
    assert_eq!(
        listed(&store, &reg, GatewayFilter::GatewaysOf(id("dev-a"))).await,
        ["gw-1", "gw-2"]
    );
    assert!(
        listed(&store, &reg, GatewayFilter::GatewaysOf(id("dev-c")))
            .await
            .is_empty()
    );
    assert_eq!(
        listed(&store, &reg, GatewayFilter::IsGateway(true)).await,
        ["gw-1", "gw-2"]
    );
    assert_eq!(
        listed(&store, &reg, GatewayFilter::IsGateway(false)).await,
        ["dev-a", "dev-b", "dev-c"]
    );
    let gw_num = NumId(gw.num_id.unwrap());
    let a_num = NumId(a.num_id.unwrap());
    assert!(store.is_bound(&reg, gw_num, a_num).await.unwrap());
    let c_num = NumId(
        store
            .get_device(&reg, &id("dev-c"))
            .await
            .unwrap()
            .num_id
            .unwrap(),
    );
    assert!(!store.is_bound(&reg, gw_num, c_num).await.unwrap());
    assert!(
        !store
            .is_bound(&reg, gw_num, NumId(u64::MAX >> 12))
            .await
            .unwrap()
    );
    // Bindings are scoped to their registry.
    let other = a_registry(&store, "reg-2").await;
    assert!(!store.is_bound(&other, gw_num, a_num).await.unwrap());

    store
        .unbind_device_from_gateway(&reg, &id("gw-1"), &num(&a))
        .await
        .unwrap();
    assert!(!store.is_bound(&reg, gw_num, a_num).await.unwrap());
    assert_eq!(
        listed(&store, &reg, GatewayFilter::BoundTo(id("gw-1"))).await,
        ["dev-b"]
    );
    let again = store
        .unbind_device_from_gateway(&reg, &id("gw-1"), &id("dev-a"))
        .await
        .unwrap_err();
    assert!(
        matches!(&again, StoreError::FailedPrecondition(m) if m.contains("not bound")),
        "{again:?}"
    );

    // The auth method may change; the device stays a gateway.
    let update = DeviceUpdate {
        gateway_auth_method: Some(Some(GatewayAuthMethod::AssociationAndDeviceAuthToken)),
        ..Default::default()
    };
    let changed = store
        .update_device(&reg, &id("gw-1"), update)
        .await
        .unwrap();
    let config = changed.gateway_config.unwrap();
    assert_eq!(config.gateway_type, Some(GatewayType::Gateway));
    assert_eq!(
        config.gateway_auth_method,
        Some(GatewayAuthMethod::AssociationAndDeviceAuthToken)
    );
}

pub async fn only_a_gateway_takes_devices_and_bound_devices_are_not_deleted(
    store: Arc<dyn RegistryStore>,
) {
    let reg = a_registry(&store, "reg-1").await;
    a_gateway(&store, &reg, "gw-1", GatewayAuthMethod::AssociationOnly).await;
    a_gateway(&store, &reg, "gw-2", GatewayAuthMethod::AssociationOnly).await;
    a_device(&store, &reg, "dev-a").await;
    a_device(&store, &reg, "dev-b").await;

    let not_gateway = store
        .bind_device_to_gateway(&reg, &id("dev-a"), &id("dev-b"))
        .await
        .unwrap_err();
    assert!(
        matches!(&not_gateway, StoreError::FailedPrecondition(m) if m.contains("dev-a") && m.contains("not a gateway")),
        "{not_gateway:?}"
    );
    let gateway_to_gateway = store
        .bind_device_to_gateway(&reg, &id("gw-1"), &id("gw-2"))
        .await
        .unwrap_err();
    assert!(
        matches!(&gateway_to_gateway, StoreError::FailedPrecondition(m) if m.contains("gw-2")),
        "{gateway_to_gateway:?}"
    );
    let missing = store
        .bind_device_to_gateway(&reg, &id("gw-1"), &id("nobody"))
        .await
        .unwrap_err();
    assert!(is_not_found_naming(&missing, "nobody"), "{missing:?}");
    let missing = store
        .bind_device_to_gateway(&reg, &id("gw-9"), &id("dev-a"))
        .await
        .unwrap_err();
    assert!(is_not_found_naming(&missing, "gw-9"), "{missing:?}");

    store
        .bind_device_to_gateway(&reg, &id("gw-1"), &id("dev-a"))
        .await
        .unwrap();
    for (who, what) in [
        ("gw-1", "has 1 device bound"),
        ("dev-a", "is bound to 1 gateway"),
    ] {
        let refused = store.delete_device(&reg, &id(who)).await.unwrap_err();
        assert!(
            matches!(&refused, StoreError::FailedPrecondition(m) if m.contains(what) && m.contains("unbind")),
            "{who}: {refused:?}"
        );
        store.get_device(&reg, &id(who)).await.expect("still there");
    }
    store
        .unbind_device_from_gateway(&reg, &id("gw-1"), &id("dev-a"))
        .await
        .unwrap();
    store.delete_device(&reg, &id("dev-a")).await.unwrap();
    store.delete_device(&reg, &id("gw-1")).await.unwrap();
}

pub async fn a_device_is_bound_to_at_most_ten_gateways(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    a_device(&store, &reg, "dev-a").await;
    for n in 0..=MAX_GATEWAYS_PER_DEVICE {
        let gateway = format!("gw-{n}");
        a_gateway(&store, &reg, &gateway, GatewayAuthMethod::AssociationOnly).await;
        let bound = store
            .bind_device_to_gateway(&reg, &id(&gateway), &id("dev-a"))
            .await;
        if n < MAX_GATEWAYS_PER_DEVICE {
            bound.unwrap();
        } else {
            let err = bound.unwrap_err();
            assert!(
                matches!(&err, StoreError::Limit(m) if m.contains("10 gateways")),
                "{err:?}"
            );
        }
    }
    let gateways = listed(&store, &reg, GatewayFilter::GatewaysOf(id("dev-a"))).await;
    assert_eq!(gateways.len(), MAX_GATEWAYS_PER_DEVICE);
}

pub async fn twenty_devices_bound_at_once_are_all_listed_and_counted(
    store: Arc<dyn RegistryStore>,
) {
    let reg = a_registry(&store, "reg-1").await;
    a_gateway(&store, &reg, "gw-1", GatewayAuthMethod::AssociationOnly).await;
    let ids: Vec<String> = (0..20).map(|n| format!("dev-{n:02}")).collect();
    for dev in &ids {
        a_device(&store, &reg, dev).await;
    }
    // Every bind writes the gateway's count: racing binds must neither be lost nor counted twice.
    let tasks: Vec<_> = ids
        .iter()
        .map(|dev| {
            let (store, reg, dev) = (Arc::clone(&store), reg.clone(), dev.clone());
            tokio::spawn(async move {
                store
                    .bind_device_to_gateway(&reg, &id("gw-1"), &id(&dev))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("every bind succeeds");
    }
    assert_eq!(
        listed(&store, &reg, GatewayFilter::BoundTo(id("gw-1"))).await,
        ids
    );

    /// The gateway's bound-device count, as its refused deletion states it.
    async fn count_in_refusal(store: &Arc<dyn RegistryStore>, reg: &RegistryName) -> String {
        let refused = store.delete_device(reg, &id("gw-1")).await.unwrap_err();
        match refused {
            StoreError::FailedPrecondition(message) => message,
            other => panic!("expected FailedPrecondition, got {other:?}"),
        }
    }
    let message = count_in_refusal(&store, &reg).await;
    assert!(message.contains("has 20 devices bound"), "{message}");

    // Binding a bound device again counts nothing; an unbind counts one off.
    store
        .bind_device_to_gateway(&reg, &id("gw-1"), &id("dev-07"))
        .await
        .unwrap();
    let message = count_in_refusal(&store, &reg).await;
    assert!(message.contains("has 20 devices bound"), "{message}");
    store
        .unbind_device_from_gateway(&reg, &id("gw-1"), &id("dev-07"))
        .await
        .unwrap();
    let message = count_in_refusal(&store, &reg).await;
    assert!(message.contains("has 19 devices bound"), "{message}");
    let still: Vec<String> = ids.iter().filter(|d| *d != "dev-07").cloned().collect();
    assert_eq!(
        listed(&store, &reg, GatewayFilter::BoundTo(id("gw-1"))).await,
        still
    );

    // Unbound one by one down to none, the gateway can go: the count reached exactly 0.
    for dev in &still {
        store
            .unbind_device_from_gateway(&reg, &id("gw-1"), &id(dev))
            .await
            .unwrap();
    }
    store.delete_device(&reg, &id("gw-1")).await.unwrap();
}
