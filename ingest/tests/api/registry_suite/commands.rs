//! Checks on queued commands: ids grow per device, delivery is recorded up to an id, a device's
//! queue holds at most 50 pending commands and keeps 10 finished ones for the record, and the
//! queue goes with its device.

use std::sync::Arc;

use ingest::registry::{
    MAX_FINISHED_COMMANDS, MAX_QUEUED_COMMANDS, NewCommand, RegistryStore, StoreError,
};

use super::given::*;
use super::is_not_found_naming;

fn command(data: &str, subfolder: Option<&str>, expire: i64) -> NewCommand {
    NewCommand {
        subfolder: subfolder.map(str::to_owned),
        data: data.as_bytes().to_vec(),
        expire_time: at(expire),
    }
}

pub async fn queued_commands_get_growing_ids_and_are_delivered_up_to_an_id(
    store: Arc<dyn RegistryStore>,
) {
    let reg = a_registry(&store, "reg-1").await;
    let device = a_device(&store, &reg, "dev-1").await;
    for (n, (data, subfolder)) in [("reboot", None), ("fw", Some("ota/v2")), ("x", None)]
        .into_iter()
        .enumerate()
    {
        let queued = store
            .queue_command(
                &reg,
                &id("dev-1"),
                command(data, subfolder, 600),
                at(n as i64),
            )
            .await
            .unwrap();
        assert_eq!(queued.id, n as u64 + 1, "{data}");
        assert_eq!(
            (queued.queue_time, queued.expire_time),
            (at(n as i64), at(600))
        );
    }
    // Read by numeric id too, oldest first, as queued.
    let kept = store.list_commands(&reg, &num(&device)).await.unwrap();
    let summary: Vec<_> = kept
        .iter()
        .map(|c| {
            (
                c.id,
                c.binary_data.clone(),
                c.subfolder.clone(),
                c.deliver_time,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, b"reboot".to_vec(), None, None),
            (2, b"fw".to_vec(), Some("ota/v2".to_owned()), None),
            (3, b"x".to_vec(), None, None),
        ]
    );

    let marked = store
        .mark_commands_delivered(&reg, &id("dev-1"), 2, at(10))
        .await
        .unwrap();
    assert_eq!(marked, 2);
    // Already delivered ones keep their first delivery time.
    let again = store
        .mark_commands_delivered(&reg, &num(&device), 2, at(20))
        .await
        .unwrap();
    assert_eq!(again, 0);
    let kept = store.list_commands(&reg, &id("dev-1")).await.unwrap();
    let delivered: Vec<_> = kept.iter().map(|c| (c.id, c.deliver_time)).collect();
    assert_eq!(
        delivered,
        vec![(1, Some(at(10))), (2, Some(at(10))), (3, None)]
    );
    let pending: Vec<_> = kept
        .iter()
        .filter(|c| c.is_pending(at(11)))
        .map(|c| c.id)
        .collect();
    assert_eq!(pending, vec![3]);
}

pub async fn a_full_queue_refuses_more_until_commands_expire(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    a_device(&store, &reg, "dev-1").await;
    for n in 0..MAX_QUEUED_COMMANDS {
        store
            .queue_command(
                &reg,
                &id("dev-1"),
                command(&n.to_string(), None, 100),
                at(1),
            )
            .await
            .unwrap();
    }
    let err = store
        .queue_command(&reg, &id("dev-1"), command("one more", None, 100), at(2))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::QueueFull(resource) if resource.to_string().contains("dev-1")),
        "{err:?}"
    );
    assert!(err.to_string().contains("50 queued commands"), "{err}");

    // Once they expired there is room; only the newest finished ones are kept beside it.
    let queued = store
        .queue_command(&reg, &id("dev-1"), command("later", None, 300), at(100))
        .await
        .unwrap();
    assert_eq!(queued.id, MAX_QUEUED_COMMANDS as u64 + 1);
    let kept = store.list_commands(&reg, &id("dev-1")).await.unwrap();
    assert_eq!(kept.len(), MAX_FINISHED_COMMANDS + 1);
    let first_kept = (MAX_QUEUED_COMMANDS - MAX_FINISHED_COMMANDS) as u64 + 1;
    assert_eq!(kept.first().map(|c| c.id), Some(first_kept));
    assert_eq!(
        kept.last().map(|c| c.binary_data.as_slice()),
        Some(&b"later"[..])
    );
}

pub async fn a_deleted_device_takes_its_queued_commands_along(store: Arc<dyn RegistryStore>) {
    let reg = a_registry(&store, "reg-1").await;
    a_device(&store, &reg, "dev-1").await;
    store
        .queue_command(&reg, &id("dev-1"), command("reboot", None, 600), at(1))
        .await
        .unwrap();
    store.delete_device(&reg, &id("dev-1")).await.unwrap();
    let err = store.list_commands(&reg, &id("dev-1")).await.unwrap_err();
    assert!(is_not_found_naming(&err, "dev-1"), "{err:?}");
    let err = store
        .queue_command(&reg, &id("dev-1"), command("reboot", None, 600), at(2))
        .await
        .unwrap_err();
    assert!(is_not_found_naming(&err, "dev-1"), "{err:?}");

    // A new device of the same id starts with an empty queue.
    a_device(&store, &reg, "dev-1").await;
    assert!(
        store
            .list_commands(&reg, &id("dev-1"))
            .await
            .unwrap()
            .is_empty()
    );
    let queued = store
        .queue_command(&reg, &id("dev-1"), command("hello", None, 600), at(3))
        .await
        .unwrap();
    assert_eq!(queued.id, 1);
}
