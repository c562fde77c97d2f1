//! Checks on presence: which instance holds a device's MQTT connection. Claims count only under
//! a live lease, generations only grow, and a stale claim can neither change nor release a newer
//! one.

use std::sync::Arc;

use ingest::registry::{Presence, RegistryStore};
use shared::NumId;

use super::given::*;

async fn a_claimable_device(store: &Arc<dyn RegistryStore>) -> NumId {
    let reg = a_registry(store, "reg-1").await;
    NumId(a_device(store, &reg, "dev-1").await.num_id.unwrap())
}

pub async fn a_claim_counts_while_its_instance_lease_is_live(store: Arc<dyn RegistryStore>) {
    let device = a_claimable_device(&store).await;
    assert_eq!(store.get_presence(device, at(0)).await.unwrap(), None);
    let (generation, previous) = store.claim_presence(device, "inst-a", at(1)).await.unwrap();
    assert_eq!(previous, None);
    // No lease yet: the claim does not count.
    assert_eq!(store.get_presence(device, at(2)).await.unwrap(), None);

    store.renew_instance("inst-a", at(30)).await.unwrap();
    store
        .set_presence_subscriptions(device, generation, true, false)
        .await
        .unwrap();
    let expected = Presence {
        instance: "inst-a".into(),
        since: at(1),
        generation,
        config: true,
        commands: false,
    };
    assert_eq!(
        store.get_presence(device, at(29)).await.unwrap(),
        Some(expected)
    );
    // The lease ran out: an instance that died stops counting on its own.
    assert_eq!(store.get_presence(device, at(30)).await.unwrap(), None);

    store.renew_instance("inst-a", at(90)).await.unwrap();
    assert!(store.get_presence(device, at(31)).await.unwrap().is_some());
    store.end_instance("inst-a").await.unwrap();
    assert_eq!(store.get_presence(device, at(32)).await.unwrap(), None);
}

pub async fn a_newer_claim_wins_and_the_stale_one_cannot_touch_it(store: Arc<dyn RegistryStore>) {
    let device = a_claimable_device(&store).await;
    store.renew_instance("inst-a", at(100)).await.unwrap();
    store.renew_instance("inst-b", at(100)).await.unwrap();
    let (first, _) = store.claim_presence(device, "inst-a", at(1)).await.unwrap();
    let (second, previous) = store.claim_presence(device, "inst-b", at(2)).await.unwrap();
    assert!(second > first, "generations grow: {first} then {second}");
    assert_eq!(
        previous.map(|p| (p.instance, p.generation)),
        Some(("inst-a".into(), first))
    );

    // The replaced connection closes late: its release and subscriptions change nothing.
    store
        .set_presence_subscriptions(device, first, true, true)
        .await
        .unwrap();
    store.release_presence(device, first).await.unwrap();
    let now = store.get_presence(device, at(3)).await.unwrap().unwrap();
    assert_eq!((now.instance.as_str(), now.generation), ("inst-b", second));
    assert!(!now.config && !now.commands);

    store.release_presence(device, second).await.unwrap();
    assert_eq!(store.get_presence(device, at(4)).await.unwrap(), None);
    // A released claim keeps its generation: the next is larger still.
    let (third, previous) = store.claim_presence(device, "inst-a", at(5)).await.unwrap();
    assert!(third > second, "{third} after {second}");
    assert_eq!(previous, None);
}

pub async fn a_deleted_device_leaves_no_presence(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    let num = NumId(a_device(&store, &reg, "dev-1").await.num_id.unwrap());
    store.renew_instance("inst-a", at(100)).await.unwrap();
    store.claim_presence(num, "inst-a", at(1)).await.unwrap();
    store.delete_device(&reg, &id("dev-1")).await.unwrap();
    assert_eq!(store.get_presence(num, at(2)).await.unwrap(), None);
}
