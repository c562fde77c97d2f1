//! The Firestore document layout of the registry store, in one place for the modules that read
//! and write it: where a device's document lives (by id, or found by numeric id), how it decodes,
//! the `numIds` claims, the `configs`/`states` history subcollections named by 20-digit numbers,
//! and how a device is named in errors.

use firestore::gcloud_sdk::google::firestore::v1::Document;
use firestore::gcloud_sdk::google::firestore::v1::structured_query::field_filter;
use shared::resources::{Device, GatewayConfig, MAX_CONFIG_VERSIONS, MAX_STATES};
use shared::{DeviceId, DeviceRef, RegistryName};

use super::rpc::{self, Rpc, TxId};
use super::{backend, value};
use crate::registry::{Resource, StoreError, StoreResult, device_resource_name};

/// The store's own field: the sequence number of the latest kept state report.
pub(super) const STATE_SEQ: &str = "stateSeq";

/// The store's own field on a device bound to gateways: their numeric ids (see `gateways`).
pub(super) const GATEWAYS: &str = "gateways";

/// The store's own field on a gateway: how many devices are bound to it (see `gateways`).
pub(super) const BOUND_DEVICES: &str = "boundDevices";

/// The store's own fields of a device document, which are not part of its API JSON.
const OWN_FIELDS: [&str; 3] = [STATE_SEQ, GATEWAYS, BOUND_DEVICES];

/// How a device is named in errors: its full path, by the id or numeric id the caller used.
pub(super) fn describe(registry: &RegistryName, device: &DeviceRef) -> Resource {
    Resource::device(registry, device)
}

pub(super) fn path(registry: &RegistryName, id: &DeviceId) -> String {
    format!("{registry}/devices/{id}")
}

pub(super) fn num_id_path(num_id: u64) -> String {
    format!("numIds/{num_id}")
}

/// The device's document, or `NotFound` naming it (also when its registry does not exist). By
/// id it is one read; by numeric id, one query returning one document.
pub(super) async fn resolve(
    rpc: &Rpc,
    registry: &RegistryName,
    device: &DeviceRef,
    tx: Option<&TxId>,
) -> StoreResult<Document> {
    let found = match device {
        DeviceRef::Id(id) => rpc.get(&path(registry, id), tx).await?,
        DeviceRef::Num(num) => {
            let filter = rpc::compare(
                "numId",
                field_filter::Operator::Equal,
                value::string(num.0.to_string()),
            );
            let query = rpc::ordered("devices", Some(filter), Some(1));
            rpc.query(&registry.to_string(), query, tx)
                .await?
                .into_iter()
                .next()
        }
    };
    found.ok_or_else(|| StoreError::NotFound(describe(registry, device)))
}

/// The device's document path; by id without reading it.
pub(super) async fn resolve_path(
    rpc: &Rpc,
    registry: &RegistryName,
    device: &DeviceRef,
) -> StoreResult<String> {
    match device {
        DeviceRef::Id(id) => Ok(path(registry, id)),
        DeviceRef::Num(_) => {
            let doc = resolve(rpc, registry, device, None).await?;
            Ok(rpc.relative(&doc.name).to_string())
        }
    }
}

/// A device from its document, with its id and name from the document's path. A `gatewayConfig`
/// with nothing left in it (an auth method cleared) reads as none, as in the SQLite store.
pub(super) fn from_doc(rpc: &Rpc, registry: &RegistryName, doc: Document) -> StoreResult<Device> {
    let id = DeviceId::parse(rpc::id_of(rpc.relative(&doc.name))).map_err(backend)?;
    let mut fields = doc.fields;
    for own in OWN_FIELDS {
        fields.remove(own);
    }
    let mut device: Device = value::decode(fields)?;
    device.gateway_config = device
        .gateway_config
        .filter(|g| *g != GatewayConfig::default());
    Ok(named(registry, &id, device))
}

/// The device with its id and its name, which ends in its numeric id as IoT Core's did.
pub(super) fn named(registry: &RegistryName, id: &DeviceId, device: Device) -> Device {
    Device {
        name: device
            .num_id
            .map(|num_id| device_resource_name(registry, num_id)),
        id: Some(id.clone()),
        ..device
    }
}

/// Which history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Config versions, numbered by version.
    Configs,
    /// State reports, numbered by `stateSeq`.
    States,
}

impl Kind {
    pub(super) fn collection(self) -> &'static str {
        match self {
            Kind::Configs => "configs",
            Kind::States => "states",
        }
    }

    /// How many entries are kept.
    pub(super) fn kept(self) -> usize {
        match self {
            Kind::Configs => MAX_CONFIG_VERSIONS,
            Kind::States => MAX_STATES,
        }
    }

    /// The document of entry `number` of the device at `device_path`.
    pub(super) fn path(self, device_path: &str, number: u64) -> String {
        format!("{device_path}/{}/{number:020}", self.collection())
    }
}
