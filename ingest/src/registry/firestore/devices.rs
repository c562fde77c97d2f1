//! Device documents: `{registry}/devices/{id}`, holding the device's API JSON (credentials,
//! blocked, metadata, bookkeeping times, and the latest config and state inline, so the token
//! check is one read) without its id and name, plus the store's own `stateSeq` counter and
//! gateway bindings (`gateways`, `boundDevices`: see `gateways`). The numeric id is the JSON's
//! `numId` string, which a single-result query finds, and is claimed store-wide by a
//! `numIds/{n}` document created in the same commit as the device.

use std::collections::BTreeMap;

use firestore::gcloud_sdk::google::firestore::v1::structured_query::{Projection, field_filter};
use firestore::gcloud_sdk::google::firestore::v1::{Document, Write};
use firestore::gcloud_sdk::tonic::Code;
use jiff::Timestamp;
use shared::resources::{Device, DeviceConfig, GatewayConfig};
use shared::{DeviceRef, NumId, RegistryName};

use super::gateways::{Bindings, Selection};
use super::layout::{Kind, describe, from_doc, named, num_id_path, path, resolve, resolve_path};
use super::rpc::{self, Rpc};
use super::{backend, registries, value};
use crate::registry::page::{into_page, start_after};
use crate::registry::{
    Activity, DeviceFilter, DeviceUpdate, Page, PageRequest, StoreError, StoreResult,
    random_num_id, still_bound,
};

/// Random numeric ids collide with odds of about n / 2^53; a few retries make a failure
/// practically impossible while bounding the loop.
const NUM_ID_ATTEMPTS: usize = 16;

/// Firestore's limit on the values of one `in` filter.
const IN_FILTER_LIMIT: usize = 30;

/// The API JSON's `gatewayConfig`. Its entries are written by nested field paths only: the
/// type and auth method are set on create, and a patch of the whole map would erase them.
const GATEWAY_CONFIG: &str = "gatewayConfig";

/// The entry an update of the auth method sets.
const GATEWAY_AUTH_METHOD: &str = "gatewayConfig.gatewayAuthMethod";

/// The entries recorded activity through a gateway sets.
const LAST_ACCESSED_GATEWAY: [&str; 2] = [
    "gatewayConfig.lastAccessedGatewayId",
    "gatewayConfig.lastAccessedGatewayTime",
];

/// Creates a device. Output-only fields of the input are ignored (of `gatewayConfig`, only the
/// type and auth method are kept); the config data, or none, becomes version 1.
pub(super) async fn create(
    rpc: &Rpc,
    registry: &RegistryName,
    device: Device,
    now: Timestamp,
) -> StoreResult<Device> {
    let id = device
        .id
        .clone()
        .ok_or_else(|| StoreError::FailedPrecondition("a device to create needs an id".into()))?;
    let device_path = path(registry, &id);
    // Every device has config version 1 from its creation, empty unless data was given.
    let config = DeviceConfig {
        version: 1,
        cloud_update_time: Some(now),
        device_ack_time: None,
        binary_data: device
            .config
            .as_ref()
            .map(|c| c.binary_data.clone())
            .unwrap_or_default(),
    };
    for _ in 0..NUM_ID_ATTEMPTS {
        let num_id = random_num_id()?;
        let stored = Device {
            num_id: Some(num_id),
            credentials: device.credentials.clone(),
            blocked: device.blocked,
            metadata: device.metadata.clone(),
            log_level: device.log_level,
            config: Some(config.clone()),
            gateway_config: settable_gateway_config(device.gateway_config.as_ref()),
            ..Default::default()
        };
        let mut claim = value::Fields::new();
        claim.insert("device".into(), value::string(device_path.clone()));
        let mut writes = vec![
            rpc.create(&device_path, value::encode(&stored)?),
            rpc.create(&num_id_path(num_id), claim),
        ];
        writes.push(rpc.create(
            &Kind::Configs.path(&device_path, 1),
            value::encode(&config)?,
        ));
        // The registry is read in the transaction, so a registry delete cannot slip in between.
        let registry_path = registry.to_string();
        let committed = rpc
            .in_transaction(|tx| {
                let (registry_path, writes) = (registry_path.clone(), writes.clone());
                async move {
                    match rpc.get(&registry_path, Some(&tx)).await? {
                        Some(_) => Ok(((), writes)),
                        None => Err(StoreError::NotFound(registries::describe(registry))),
                    }
                }
            })
            .await?;
        match committed {
            Ok(()) => return Ok(named(registry, &id, stored)),
            Err(status) if status.code() == Code::AlreadyExists => {
                // Either the device id or the numeric id was taken; only the latter is retried.
                if rpc.get(&device_path, None).await?.is_some() {
                    return Err(StoreError::AlreadyExists(describe(
                        registry,
                        &DeviceRef::Id(id),
                    )));
                }
            }
            Err(status) => return Err(backend(status)),
        }
    }
    Err(backend(format!(
        "no free numeric id after {NUM_ID_ATTEMPTS} random picks"
    )))
}

/// The type and auth method of a `gatewayConfig` given on create; `None` when neither is set.
fn settable_gateway_config(given: Option<&GatewayConfig>) -> Option<GatewayConfig> {
    let config = GatewayConfig {
        gateway_type: given.and_then(|g| g.gateway_type),
        gateway_auth_method: given.and_then(|g| g.gateway_auth_method),
        ..Default::default()
    };
    (config != GatewayConfig::default()).then_some(config)
}

/// Lists a registry's devices in id order: those the filter's ids name (all when it names none)
/// that its `gatewayListOptions` select too, as in the SQLite store.
pub(super) async fn list(
    rpc: &Rpc,
    registry: &RegistryName,
    filter: &DeviceFilter,
    page: &PageRequest,
) -> StoreResult<Page<Device>> {
    registries::get(rpc, registry).await?;
    let after = start_after(page.token.as_deref())?;
    let size = page.effective_size();
    let selection = Selection::of(rpc, registry, filter.gateway.as_ref()).await?;
    let found = if !filter.all_ids() {
        kept(
            rpc,
            registry,
            filtered(rpc, registry, filter).await?,
            &selection,
        )?
    } else if let Selection::NumIds(nums) = &selection {
        kept(
            rpc,
            registry,
            by_num_ids(rpc, registry, nums).await?,
            &selection,
        )?
    } else {
        scan(rpc, registry, &selection, &after, size + 1).await?
    };
    let mut devices = BTreeMap::new();
    for device in found {
        let id = device
            .id
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_default();
        if id.as_str() > after.as_str() {
            devices.insert(id, device);
        }
    }
    let items: Vec<Device> = devices.into_values().take(size + 1).collect();
    Ok(into_page(items, size, |d| {
        d.id.as_ref().map(|id| id.as_str())
    }))
}

/// The first `want` devices after the id `after`, in id order, that `selection` keeps: pages of
/// the registry's devices (narrowed by the selection's query when it has one) until enough are
/// kept or none are left. A narrowed query yields only devices it keeps, so it is one round;
/// without one ("every other device") the rounds read past the gateways it skips.
async fn scan(
    rpc: &Rpc,
    registry: &RegistryName,
    selection: &Selection,
    after: &str,
    want: usize,
) -> StoreResult<Vec<Device>> {
    let parent = registry.to_string();
    let mut cursor = (!after.is_empty()).then(|| rpc.full(&format!("{parent}/devices/{after}")));
    let mut found = Vec::new();
    loop {
        let mut query = rpc::ordered("devices", selection.narrow(), Some(want));
        if let Some(name) = cursor.take() {
            rpc::resume_after(&mut query, name);
        }
        let docs = rpc.query(&parent, query, None).await?;
        let exhausted = docs.len() < want;
        cursor = docs.last().map(|doc| doc.name.clone());
        found.extend(kept(rpc, registry, docs, selection)?);
        if exhausted || found.len() >= want {
            return Ok(found);
        }
    }
}

/// The devices of `docs` that `selection` keeps.
fn kept(
    rpc: &Rpc,
    registry: &RegistryName,
    docs: Vec<Document>,
    selection: &Selection,
) -> StoreResult<Vec<Device>> {
    let mut kept = Vec::new();
    for doc in docs {
        let bindings = Bindings::of(&doc);
        let device = from_doc(rpc, registry, doc)?;
        if selection.keeps(&device, &bindings) {
            kept.push(device);
        }
    }
    Ok(kept)
}

/// The documents of the devices a filter names: by id one read each, by numeric id as
/// [`by_num_ids`]. Filters are short lists, so this never scans the registry.
async fn filtered(
    rpc: &Rpc,
    registry: &RegistryName,
    filter: &DeviceFilter,
) -> StoreResult<Vec<Document>> {
    let mut docs = Vec::new();
    for id in &filter.ids {
        docs.extend(rpc.get(&path(registry, id), None).await?);
    }
    docs.extend(by_num_ids(rpc, registry, &filter.num_ids).await?);
    Ok(docs)
}

/// The documents of the devices with these numeric ids: `in` queries of up to 30 values.
async fn by_num_ids(
    rpc: &Rpc,
    registry: &RegistryName,
    nums: &[NumId],
) -> StoreResult<Vec<Document>> {
    let mut docs = Vec::new();
    for chunk in nums.chunks(IN_FILTER_LIMIT) {
        let any_of = value::strings(chunk.iter().map(|NumId(n)| n.to_string()));
        let filter = rpc::compare("numId", field_filter::Operator::In, any_of);
        let query = rpc::ordered("devices", Some(filter), None);
        docs.extend(rpc.query(&registry.to_string(), query, None).await?);
    }
    Ok(docs)
}

pub(super) async fn update(
    rpc: &Rpc,
    registry: &RegistryName,
    device: &DeviceRef,
    update: DeviceUpdate,
) -> StoreResult<Device> {
    let doc = resolve(rpc, registry, device, None).await?;
    let doc_path = rpc.relative(&doc.name).to_string();
    let mut current = from_doc(rpc, registry, doc)?;
    let mut mask = Vec::new();
    if let Some(credentials) = update.credentials {
        current.credentials = credentials;
        mask.push("credentials");
    }
    if let Some(blocked) = update.blocked {
        current.blocked = blocked;
        mask.push("blocked");
    }
    if let Some(metadata) = update.metadata {
        current.metadata = metadata;
        mask.push("metadata");
    }
    if let Some(log_level) = update.log_level {
        current.log_level = log_level;
        mask.push("logLevel");
    }
    if let Some(method) = update.gateway_auth_method {
        // Only the auth method: a gateway stays a gateway.
        current
            .gateway_config
            .get_or_insert_default()
            .gateway_auth_method = method;
        mask.push(GATEWAY_AUTH_METHOD);
    }
    let stored = Device {
        id: None,
        name: None,
        ..current.clone()
    };
    let write = rpc.update(&doc_path, value::encode(&stored)?, &mask);
    commit_to_device(rpc, registry, device, vec![write]).await?;
    // As it reads back: a `gatewayConfig` left empty is none.
    current.gateway_config = current
        .gateway_config
        .filter(|g| *g != GatewayConfig::default());
    Ok(current)
}

/// Deletes a device with its config and state history, its queued commands and its numeric id
/// claim, in one transaction that first reads them all, so a config, state or command written
/// meanwhile is either read and deleted or fails because the device is gone. A device with
/// gateway bindings is refused; a bind writes the device it binds, so one racing the delete
/// either is seen here or fails the commit.
pub(super) async fn delete(
    rpc: &Rpc,
    registry: &RegistryName,
    device: &DeviceRef,
) -> StoreResult<()> {
    rpc.in_transaction(|tx| async move {
        let doc = resolve(rpc, registry, device, Some(&tx)).await?;
        let bindings = Bindings::of(&doc);
        if bindings.bound_devices > 0 || !bindings.gateways.is_empty() {
            let (bound, gateways) = (bindings.bound_devices, bindings.gateways.len());
            return Err(still_bound(registry, device, bound, gateways));
        }
        let doc_path = rpc.relative(&doc.name).to_string();
        let num_id = from_doc(rpc, registry, doc)?.num_id;
        let mut writes: Vec<Write> = Vec::new();
        let collections = [
            Kind::Configs.collection(),
            Kind::States.collection(),
            super::commands::COLLECTION,
        ];
        for collection in collections {
            let mut query = rpc::ordered(collection, None, None);
            query.select = Some(Projection {
                fields: vec![rpc::name_field()],
            });
            for child in rpc.query(&doc_path, query, Some(&tx)).await? {
                writes.push(rpc.delete(rpc.relative(&child.name)));
            }
        }
        if let Some(num_id) = num_id {
            writes.push(rpc.delete(&num_id_path(num_id)));
            writes.push(rpc.delete(&super::presence::claim_path(num_id)));
        }
        writes.push(rpc.delete(&doc_path));
        Ok(((), writes))
    })
    .await?
    .map_err(backend)
}

/// Overwrites the bookkeeping fields the activity sets. By id this is one write and no read.
/// Returns the device's document path, for the config acknowledgement that may follow.
pub(super) async fn record_activity(
    rpc: &Rpc,
    registry: &RegistryName,
    device: &DeviceRef,
    activity: &Activity,
) -> StoreResult<String> {
    let doc_path = resolve_path(rpc, registry, device).await?;
    let (error_time, error_status) = activity.last_error.clone().unzip();
    let (gateway_id, gateway_time) = activity.last_accessed_gateway.clone().unzip();
    let partial = Device {
        last_heartbeat_time: activity.last_heartbeat_time,
        last_event_time: activity.last_event_time,
        last_state_time: activity.last_state_time,
        last_config_ack_time: activity.last_config_ack_time,
        last_config_send_time: activity.last_config_send_time,
        last_error_time: error_time,
        last_error_status: error_status,
        gateway_config: Some(GatewayConfig {
            last_accessed_gateway_id: gateway_id,
            last_accessed_gateway_time: gateway_time,
            ..Default::default()
        }),
        ..Default::default()
    };
    // Exactly the fields the activity carries (the encoding leaves out the ones it does not);
    // of `gatewayConfig` only the last-accessed entries, by nested path, so the type and auth
    // method stay.
    let fields = value::encode(&partial)?;
    let mut mask: Vec<String> = fields
        .keys()
        .filter(|name| *name != GATEWAY_CONFIG)
        .cloned()
        .collect();
    if activity.last_accessed_gateway.is_some() {
        mask.extend(LAST_ACCESSED_GATEWAY.map(String::from));
    }
    let mask: Vec<&str> = mask.iter().map(String::as_str).collect();
    let write = rpc.update(&doc_path, fields, &mask);
    commit_to_device(rpc, registry, device, vec![write]).await?;
    Ok(doc_path)
}

/// Commits writes that require the device document; its absence is `NotFound` naming it.
pub(super) async fn commit_to_device(
    rpc: &Rpc,
    registry: &RegistryName,
    device: &DeviceRef,
    writes: Vec<Write>,
) -> StoreResult<()> {
    match rpc.commit(writes, None).await {
        Ok(()) => Ok(()),
        Err(status) if status.code() == Code::NotFound => {
            Err(StoreError::NotFound(describe(registry, device)))
        }
        Err(status) => Err(backend(status)),
    }
}
