//! Queued commands in Firestore: documents `…/devices/{d}/commands/{id, 20 digits}` holding a
//! `QueuedCommand` each, so names sort by id. Queueing and marking delivery run in transactions
//! that read the device and its queue first: the bound is checked against what the transaction
//! read, a device deleted meanwhile makes it fail, and of two commands queued at once that chose
//! the same id the second one's create fails and is tried again with the next.

use firestore::gcloud_sdk::tonic::Code;
use jiff::Timestamp;

use super::layout::{self, describe};
use super::rpc::{self, Rpc, TxId};
use super::{backend, value};
use crate::registry::{
    NewCommand, QueuedCommand, StoreError, StoreResult, commands_to_drop, next_command_id,
};
use shared::{DeviceRef, RegistryName};

/// The subcollection under a device document.
pub(super) const COLLECTION: &str = "commands";

/// How often a queueing that lost the race for an id tries the next one.
const ATTEMPTS: usize = 5;

fn path(device_path: &str, id: u64) -> String {
    format!("{device_path}/{COLLECTION}/{id:020}")
}

/// The device's document path and its kept commands, oldest first, read in `tx`.
async fn read(
    rpc: &Rpc,
    registry: &RegistryName,
    device: &DeviceRef,
    tx: Option<&TxId>,
) -> StoreResult<(String, Vec<QueuedCommand>)> {
    let doc = layout::resolve(rpc, registry, device, tx).await?;
    let device_path = rpc.relative(&doc.name).to_string();
    let docs = rpc
        .query(&device_path, rpc::ordered(COLLECTION, None, None), tx)
        .await?;
    let kept = docs
        .into_iter()
        .map(|doc| value::decode(doc.fields))
        .collect::<StoreResult<_>>()?;
    Ok((device_path, kept))
}

/// Adds `command` to the device's queue, dropping the oldest finished ones beyond the kept
/// number; `QueueFull` when the pending ones fill the queue.
pub(super) async fn queue(
    rpc: &Rpc,
    registry: &RegistryName,
    device: &DeviceRef,
    command: NewCommand,
    now: Timestamp,
) -> StoreResult<QueuedCommand> {
    for _ in 0..ATTEMPTS {
        let outcome = rpc
            .in_transaction(|tx| {
                let command = command.clone();
                async move {
                    let (device_path, kept) = read(rpc, registry, device, Some(&tx)).await?;
                    let Some(dropped) = commands_to_drop(&kept, now) else {
                        return Err(StoreError::QueueFull(describe(registry, device)));
                    };
                    let queued = QueuedCommand {
                        id: next_command_id(&kept),
                        subfolder: command.subfolder,
                        binary_data: command.data,
                        queue_time: now,
                        expire_time: command.expire_time,
                        deliver_time: None,
                    };
                    let mut writes: Vec<_> = dropped
                        .into_iter()
                        .map(|id| rpc.delete(&path(&device_path, id)))
                        .collect();
                    writes
                        .push(rpc.create(&path(&device_path, queued.id), value::encode(&queued)?));
                    Ok((queued, writes))
                }
            })
            .await?;
        match outcome {
            Ok(queued) => return Ok(queued),
            Err(status) if status.code() == Code::AlreadyExists => continue,
            Err(status) => return Err(backend(status)),
        }
    }
    Err(backend(format!(
        "{} is being sent too many commands at once; try again",
        describe(registry, device)
    )))
}

/// The device's kept commands, oldest first.
pub(super) async fn list(
    rpc: &Rpc,
    registry: &RegistryName,
    device: &DeviceRef,
) -> StoreResult<Vec<QueuedCommand>> {
    Ok(read(rpc, registry, device, None).await?.1)
}

/// Marks the undelivered commands up to id `up_to` delivered at `now`.
pub(super) async fn mark_delivered(
    rpc: &Rpc,
    registry: &RegistryName,
    device: &DeviceRef,
    up_to: u64,
    now: Timestamp,
) -> StoreResult<usize> {
    let time = value::to_value(serde_json::to_value(now).map_err(backend)?);
    rpc.in_transaction(|tx| {
        let time = time.clone();
        async move {
            let (device_path, kept) = read(rpc, registry, device, Some(&tx)).await?;
            let writes: Vec<_> = kept
                .iter()
                .filter(|c| c.id <= up_to && c.deliver_time.is_none())
                .map(|c| {
                    let fields = value::Fields::from([("deliverTime".to_owned(), time.clone())]);
                    rpc.update(&path(&device_path, c.id), fields, &["deliverTime"])
                })
                .collect();
            Ok((writes.len(), writes))
        }
    })
    .await?
    .map_err(backend)
}
