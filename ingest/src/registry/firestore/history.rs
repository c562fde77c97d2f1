//! A device's config versions and state reports: documents under the device named by a 20-digit
//! number (so names sort numerically), each kept to the newest few. The next number is claimed
//! by creating its document in the same commit that updates the device's latest `config` (or
//! `state` and `stateSeq`): of two writers that read the same latest number, the second commit
//! fails on the existing document, re-reads, and either moves on to the next number or — for a
//! conditional config update — reports the version it lost to. The document that falls out of
//! the window is deleted in that commit too, so the history never grows.

use firestore::gcloud_sdk::google::firestore::v1::Write;
use firestore::gcloud_sdk::tonic::Code;
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use shared::resources::{Device, DeviceConfig, DeviceState};
use shared::{DeviceRef, RegistryName};

use super::layout::{self, Kind, STATE_SEQ, describe};
use super::rpc::{self, Rpc};
use super::{backend, value};
use crate::registry::{StoreError, StoreResult, config_too_soon};

/// How often a write that lost the race for a number re-reads and tries the next one. Config
/// updates are limited to one per second per device, so losing this many times in a row means
/// something is wrong.
const ATTEMPTS: usize = 10;

/// Stores the next config version if `version_to_update` is 0 or the latest.
pub(super) async fn modify_config(
    rpc: &Rpc,
    registry: &RegistryName,
    device: &DeviceRef,
    version_to_update: u64,
    data: Vec<u8>,
    now: Timestamp,
) -> StoreResult<DeviceConfig> {
    for _ in 0..ATTEMPTS {
        let doc = layout::resolve(rpc, registry, device, None).await?;
        let device_path = rpc.relative(&doc.name).to_string();
        let latest = layout::from_doc(rpc, registry, doc)?
            .config
            .unwrap_or_default();
        let current = latest.version;
        if version_to_update != 0 && version_to_update != current {
            return Err(StoreError::VersionMismatch {
                expected: version_to_update,
                current,
            });
        }
        if let Some(retry_after) = config_too_soon(&latest, now) {
            return Err(StoreError::ConfigTooSoon {
                resource: describe(registry, device),
                retry_after,
            });
        }
        let config = DeviceConfig {
            version: current + 1,
            cloud_update_time: Some(now),
            device_ack_time: None,
            binary_data: data.clone(),
        };
        let mut latest = value::Fields::new();
        latest.insert(
            "config".into(),
            value::to_value(serde_json::to_value(&config).map_err(backend)?),
        );
        let writes = append(rpc, Kind::Configs, &device_path, config.version, &config)?
            .into_iter()
            .chain([rpc.patch(&device_path, latest)])
            .collect();
        if claimed(rpc, registry, device, writes).await? {
            return Ok(config);
        }
    }
    Err(contended(registry, device))
}

/// Sets `deviceAckTime` on config `version`: on its history document (gone when the version was
/// pruned, which is fine), and on the device's inline latest config when that is still the
/// version acknowledged. The second write runs in a transaction that read the device, so a
/// config update racing it is never overwritten.
pub(super) async fn record_config_ack(
    rpc: &Rpc,
    device_path: &str,
    version: u64,
    time: Timestamp,
) -> StoreResult<()> {
    let ack = value::to_value(serde_json::to_value(time).map_err(backend)?);
    let mut fields = value::Fields::new();
    fields.insert("deviceAckTime".into(), ack);
    match rpc
        .commit(
            vec![rpc.patch(&Kind::Configs.path(device_path, version), fields)],
            None,
        )
        .await
    {
        Ok(()) => {}
        Err(status) if status.code() == Code::NotFound => return Ok(()),
        Err(status) => return Err(backend(status)),
    }
    let outcome = rpc
        .in_transaction(|tx| async move {
            let Some(doc) = rpc.get(device_path, Some(&tx)).await? else {
                return Ok(((), Vec::new()));
            };
            let mut fields = doc.fields;
            fields.remove(STATE_SEQ);
            let config: Option<DeviceConfig> = value::decode::<Device>(fields)?.config;
            let writes = match config {
                Some(mut config) if config.version == version => {
                    config.device_ack_time = Some(time);
                    let mut latest = value::Fields::new();
                    latest.insert(
                        "config".into(),
                        value::to_value(serde_json::to_value(&config).map_err(backend)?),
                    );
                    vec![rpc.update(device_path, latest, &["config"])]
                }
                _ => Vec::new(),
            };
            Ok(((), writes))
        })
        .await?;
    outcome.map_err(backend)
}

/// Stores a state report as the latest state.
pub(super) async fn record_state(
    rpc: &Rpc,
    registry: &RegistryName,
    device: &DeviceRef,
    data: Vec<u8>,
    now: Timestamp,
) -> StoreResult<DeviceState> {
    for _ in 0..ATTEMPTS {
        let doc = layout::resolve(rpc, registry, device, None).await?;
        let device_path = rpc.relative(&doc.name).to_string();
        let seq = u64::try_from(value::integer_field(&doc.fields, STATE_SEQ)).unwrap_or(0) + 1;
        let state = DeviceState {
            update_time: Some(now),
            binary_data: data.clone(),
        };
        let mut latest = value::Fields::new();
        latest.insert(
            "state".into(),
            value::to_value(serde_json::to_value(&state).map_err(backend)?),
        );
        latest.insert(
            STATE_SEQ.into(),
            value::integer(i64::try_from(seq).map_err(backend)?),
        );
        let writes = append(rpc, Kind::States, &device_path, seq, &state)?
            .into_iter()
            .chain([rpc.patch(&device_path, latest)])
            .collect();
        if claimed(rpc, registry, device, writes).await? {
            return Ok(state);
        }
    }
    Err(contended(registry, device))
}

/// The writes that add entry `number` and drop the one that falls out of the window.
fn append<T: serde::Serialize>(
    rpc: &Rpc,
    kind: Kind,
    device_path: &str,
    number: u64,
    entry: &T,
) -> StoreResult<Vec<Write>> {
    let mut writes = vec![rpc.create(&kind.path(device_path, number), value::encode(entry)?)];
    if let Some(dropped) = number.checked_sub(kind.kept() as u64).filter(|&n| n > 0) {
        writes.push(rpc.delete(&kind.path(device_path, dropped)));
    }
    Ok(writes)
}

/// Commits a history append: `true` if it took the number, `false` if another writer did first.
async fn claimed(
    rpc: &Rpc,
    registry: &RegistryName,
    device: &DeviceRef,
    writes: Vec<Write>,
) -> StoreResult<bool> {
    match rpc.commit(writes, None).await {
        Ok(()) => Ok(true),
        Err(status) if status.code() == Code::AlreadyExists => Ok(false),
        Err(status) if status.code() == Code::NotFound => {
            Err(StoreError::NotFound(describe(registry, device)))
        }
        Err(status) => Err(backend(status)),
    }
}

fn contended(registry: &RegistryName, device: &DeviceRef) -> StoreError {
    backend(format!(
        "{} is being changed by too many writers at once; try again",
        describe(registry, device)
    ))
}

/// The kept entries, newest first, at most `limit` (0 means all kept).
pub(super) async fn list<T: DeserializeOwned>(
    rpc: &Rpc,
    registry: &RegistryName,
    device: &DeviceRef,
    kind: Kind,
    limit: usize,
) -> StoreResult<Vec<T>> {
    let doc = layout::resolve(rpc, registry, device, None).await?;
    let device_path = rpc.relative(&doc.name).to_string();
    let limit = match limit {
        0 => kind.kept(),
        n => n.min(kind.kept()),
    };
    // Firestore scans keys ascending only; the history is a handful of documents, so it is read
    // whole and turned around here.
    let query = rpc::ordered(kind.collection(), None, None);
    let mut docs = rpc.query(&device_path, query, None).await?;
    docs.reverse();
    docs.into_iter()
        .take(limit)
        .map(|doc| value::decode(doc.fields))
        .collect()
}
