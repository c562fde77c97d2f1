//! Gateway bindings, kept on the device documents themselves rather than in documents of their
//! own: a bound device's store-owned field `gateways` lists the numeric ids of its gateways (as
//! strings, like `numId`; at most 10), and a gateway's `boundDevices` counts the devices bound to
//! it (both absent when there are none). So the bridges' check (`is_bound`) is the one device
//! read they would do anyway, "the devices bound to a gateway" is an `array-contains` query on
//! `gateways`, "the gateways of a device" an `in` query on `numId`, and deleting a device sees
//! its bindings in the document it reads anyway. Binding and unbinding read both documents and
//! write both in one transaction, so the list and the count never disagree and the limits hold
//! under concurrent binds. Neither field is API JSON: `layout::from_doc` strips them.

use firestore::gcloud_sdk::google::firestore::v1::structured_query::{Filter, field_filter};
use firestore::gcloud_sdk::google::firestore::v1::{Document, Value, Write};
use shared::resources::{Device, GatewayType};
use shared::{DeviceRef, NumId, RegistryName};

use super::layout::{BOUND_DEVICES, GATEWAYS, from_doc, resolve};
use super::rpc::{self, Rpc, TxId};
use super::{backend, value};
use crate::registry::{
    GatewayFilter, MAX_DEVICES_PER_GATEWAY, MAX_GATEWAYS_PER_DEVICE, StoreError, StoreResult,
    check_binding,
};

/// The field path of a device's gateway type, for the "gateways only" query.
const GATEWAY_TYPE: &str = "gatewayConfig.gatewayType";

/// A device document's binding fields, read before the document decodes into a `Device`, which
/// has no place for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Bindings {
    /// The numeric ids of the gateways the device is bound to.
    pub(super) gateways: Vec<String>,
    /// How many devices are bound to it, for a gateway.
    pub(super) bound_devices: usize,
}

impl Bindings {
    pub(super) fn of(doc: &Document) -> Self {
        Self {
            gateways: value::strings_field(&doc.fields, GATEWAYS),
            bound_devices: usize::try_from(value::integer_field(&doc.fields, BOUND_DEVICES))
                .unwrap_or(0),
        }
    }
}

/// A device as a binding transaction read it.
struct Loaded {
    path: String,
    device: Device,
    bindings: Bindings,
}

impl Loaded {
    async fn read(
        rpc: &Rpc,
        registry: &RegistryName,
        device: &DeviceRef,
        tx: &TxId,
    ) -> StoreResult<Self> {
        let doc = resolve(rpc, registry, device, Some(tx)).await?;
        let path = rpc.relative(&doc.name).to_string();
        let bindings = Bindings::of(&doc);
        let device = from_doc(rpc, registry, doc)?;
        Ok(Self {
            path,
            device,
            bindings,
        })
    }

    /// The numeric id as `gateways` lists it.
    fn key(&self) -> StoreResult<String> {
        num_key(&self.device)
    }
}

fn num_key(device: &Device) -> StoreResult<String> {
    device
        .num_id
        .map(|n| n.to_string())
        .ok_or_else(|| backend("a stored device has no numId"))
}

/// Binds `device` to `gateway` after the shared checks and IoT Core's limits; a binding that
/// exists already is left as it is.
pub(super) async fn bind(
    rpc: &Rpc,
    registry: &RegistryName,
    gateway: &DeviceRef,
    device: &DeviceRef,
) -> StoreResult<()> {
    rpc.in_transaction(|tx| async move {
        let gw = Loaded::read(rpc, registry, gateway, &tx).await?;
        let dev = Loaded::read(rpc, registry, device, &tx).await?;
        check_binding(registry, &gw.device, &dev.device)?;
        let key = gw.key()?;
        if dev.bindings.gateways.contains(&key) {
            return Ok(((), Vec::new()));
        }
        // The same wording as the SQLite store's.
        if gw.bindings.bound_devices >= MAX_DEVICES_PER_GATEWAY {
            return Err(StoreError::Limit(format!(
                "gateway `{registry}/devices/{gateway}` has {MAX_DEVICES_PER_GATEWAY} devices \
                 bound already, IoT Core's limit; unbind some or use another gateway"
            )));
        }
        if dev.bindings.gateways.len() >= MAX_GATEWAYS_PER_DEVICE {
            return Err(StoreError::Limit(format!(
                "device `{registry}/devices/{device}` is bound to {MAX_GATEWAYS_PER_DEVICE} \
                 gateways already, IoT Core's limit; unbind it from one first"
            )));
        }
        let mut gateways = dev.bindings.gateways.clone();
        gateways.push(key);
        let count = gw.bindings.bound_devices + 1;
        Ok(((), binding_writes(rpc, &dev, gateways, &gw, count)))
    })
    .await?
    .map_err(backend)
}

/// Removes a binding, or says there is none.
pub(super) async fn unbind(
    rpc: &Rpc,
    registry: &RegistryName,
    gateway: &DeviceRef,
    device: &DeviceRef,
) -> StoreResult<()> {
    rpc.in_transaction(|tx| async move {
        let gw = Loaded::read(rpc, registry, gateway, &tx).await?;
        let dev = Loaded::read(rpc, registry, device, &tx).await?;
        let key = gw.key()?;
        if !dev.bindings.gateways.contains(&key) {
            return Err(not_bound(registry, gateway, device));
        }
        let gateways = dev
            .bindings
            .gateways
            .iter()
            .filter(|g| **g != key)
            .cloned()
            .collect();
        let count = gw.bindings.bound_devices.saturating_sub(1);
        Ok(((), binding_writes(rpc, &dev, gateways, &gw, count)))
    })
    .await?
    .map_err(backend)
}

/// The refusal to unbind a pair that is not bound, worded as the SQLite store's.
fn not_bound(registry: &RegistryName, gateway: &DeviceRef, device: &DeviceRef) -> StoreError {
    StoreError::FailedPrecondition(format!(
        "device `{registry}/devices/{device}` is not bound to gateway `{registry}/devices/{gateway}`"
    ))
}

/// The writes that leave `device` bound to `gateways` and `gateway` with `count` devices. An
/// empty list or a zero count removes the field, so an unbound device reads as one never bound.
fn binding_writes(
    rpc: &Rpc,
    device: &Loaded,
    gateways: Vec<String>,
    gateway: &Loaded,
    count: usize,
) -> Vec<Write> {
    let list = (!gateways.is_empty()).then(|| value::strings(gateways));
    let count = (count > 0).then(|| value::integer(i64::try_from(count).unwrap_or(i64::MAX)));
    vec![
        rpc.update(&device.path, field(GATEWAYS, list), &[GATEWAYS]),
        rpc.update(&gateway.path, field(BOUND_DEVICES, count), &[BOUND_DEVICES]),
    ]
}

/// One field, or none: a masked field left out is removed.
fn field(name: &str, value: Option<Value>) -> value::Fields {
    value.map(|v| (name.to_owned(), v)).into_iter().collect()
}

/// Whether the device `device` lists the gateway `gateway`, both by numeric id, in `registry`:
/// one query for the device. The gateway need not be read: a binding is made with both devices
/// in the registry, and a gateway with devices bound cannot be deleted, so a listed gateway
/// exists there.
pub(super) async fn is_bound(
    rpc: &Rpc,
    registry: &RegistryName,
    gateway: NumId,
    device: NumId,
) -> StoreResult<bool> {
    match resolve(rpc, registry, &DeviceRef::Num(device), None).await {
        Ok(doc) => Ok(Bindings::of(&doc).gateways.contains(&gateway.0.to_string())),
        Err(StoreError::NotFound(_)) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Which devices a list keeps under its `gatewayListOptions`, with the devices it names resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Selection {
    /// No `gatewayListOptions`: every device.
    Every,
    /// `gatewayType`: the gateways (`true`) or every other device.
    Gateways(bool),
    /// The devices whose `gateways` lists this numeric id.
    BoundTo(String),
    /// The devices with these numeric ids: the gateways a device is bound to.
    NumIds(Vec<NumId>),
}

impl Selection {
    /// The selection `filter` makes; `NotFound` naming the gateway or device it refers to when
    /// that does not exist.
    pub(super) async fn of(
        rpc: &Rpc,
        registry: &RegistryName,
        filter: Option<&GatewayFilter>,
    ) -> StoreResult<Self> {
        Ok(match filter {
            None => Self::Every,
            Some(GatewayFilter::IsGateway(yes)) => Self::Gateways(*yes),
            Some(GatewayFilter::BoundTo(gateway)) => {
                let doc = resolve(rpc, registry, gateway, None).await?;
                Self::BoundTo(num_key(&from_doc(rpc, registry, doc)?)?)
            }
            Some(GatewayFilter::GatewaysOf(device)) => {
                let doc = resolve(rpc, registry, device, None).await?;
                let gateways = Bindings::of(&doc).gateways;
                Self::NumIds(
                    gateways
                        .iter()
                        .filter_map(|g| g.parse().ok())
                        .map(NumId)
                        .collect(),
                )
            }
        })
    }

    /// The query filter that yields exactly the selected devices, when a single-field index can
    /// serve it. "Every other device" has none: a device created without `gatewayConfig` has no
    /// `gatewayType`, and Firestore's `!=` (like every filter) skips documents missing the field.
    /// A store-owned "is gateway" flag written on create would leave out every device stored
    /// before it existed, so those lists scan the registry in id order and test each device
    /// instead; gateways are the few, so the scan reads little beyond the page it fills.
    pub(super) fn narrow(&self) -> Option<Filter> {
        match self {
            Self::Gateways(true) => Some(rpc::compare(
                GATEWAY_TYPE,
                field_filter::Operator::Equal,
                value::string(GatewayType::Gateway.as_str()),
            )),
            Self::BoundTo(key) => Some(rpc::compare(
                GATEWAYS,
                field_filter::Operator::ArrayContains,
                value::string(key.clone()),
            )),
            Self::Every | Self::Gateways(false) | Self::NumIds(_) => None,
        }
    }

    /// Whether the list keeps `device`, whose document held `bindings`. Applied to every
    /// candidate, also those a narrowing query or an id filter found.
    pub(super) fn keeps(&self, device: &Device, bindings: &Bindings) -> bool {
        match self {
            Self::Every => true,
            Self::Gateways(yes) => {
                device
                    .gateway_config
                    .as_ref()
                    .is_some_and(|g| g.is_gateway())
                    == *yes
            }
            Self::BoundTo(key) => bindings.gateways.contains(key),
            Self::NumIds(nums) => device.num_id.is_some_and(|n| nums.contains(&NumId(n))),
        }
    }
}
