//! Gateway bindings: which devices a gateway may speak for, one row per pair in
//! `gateway_bindings`, each inside the caller's transaction.

use rusqlite::{OptionalExtension, Transaction};
use shared::{DeviceRef, NumId, RegistryName};

use super::devices::{by_pk, resolve};
use crate::registry::{
    MAX_DEVICES_PER_GATEWAY, MAX_GATEWAYS_PER_DEVICE, StoreError, StoreResult, check_binding,
};

/// Binds `device` to `gateway` after the shared checks and IoT Core's limits; a binding that
/// exists already is left as it is.
pub(super) fn bind(
    tx: &Transaction<'_>,
    registry: &RegistryName,
    gateway: &DeviceRef,
    device: &DeviceRef,
) -> StoreResult<()> {
    let gateway_pk = resolve(tx, registry, gateway)?;
    let device_pk = resolve(tx, registry, device)?;
    check_binding(
        registry,
        &by_pk(tx, registry, gateway_pk)?,
        &by_pk(tx, registry, device_pk)?,
    )?;
    if bound(tx, gateway_pk, device_pk)? {
        return Ok(());
    }
    let (devices_of_gateway, _) = binding_counts(tx, gateway_pk)?;
    if devices_of_gateway >= MAX_DEVICES_PER_GATEWAY {
        return Err(StoreError::Limit(format!(
            "gateway `{registry}/devices/{gateway}` has {MAX_DEVICES_PER_GATEWAY} devices bound \
             already, IoT Core's limit; unbind some or use another gateway"
        )));
    }
    let (_, gateways_of_device) = binding_counts(tx, device_pk)?;
    if gateways_of_device >= MAX_GATEWAYS_PER_DEVICE {
        return Err(StoreError::Limit(format!(
            "device `{registry}/devices/{device}` is bound to {MAX_GATEWAYS_PER_DEVICE} gateways \
             already, IoT Core's limit; unbind it from one first"
        )));
    }
    tx.execute(
        "INSERT INTO gateway_bindings (gateway_pk, device_pk) VALUES (?1, ?2)",
        (gateway_pk, device_pk),
    )?;
    Ok(())
}

/// Removes a binding, or says there is none.
pub(super) fn unbind(
    tx: &Transaction<'_>,
    registry: &RegistryName,
    gateway: &DeviceRef,
    device: &DeviceRef,
) -> StoreResult<()> {
    let gateway_pk = resolve(tx, registry, gateway)?;
    let device_pk = resolve(tx, registry, device)?;
    let removed = tx.execute(
        "DELETE FROM gateway_bindings WHERE gateway_pk = ?1 AND device_pk = ?2",
        (gateway_pk, device_pk),
    )?;
    if removed == 0 {
        return Err(not_bound(registry, gateway, device));
    }
    Ok(())
}

/// The refusal to unbind a pair that is not bound.
pub(crate) fn not_bound(
    registry: &RegistryName,
    gateway: &DeviceRef,
    device: &DeviceRef,
) -> StoreError {
    StoreError::FailedPrecondition(format!(
        "device `{registry}/devices/{device}` is not bound to gateway `{registry}/devices/{gateway}`"
    ))
}

/// Whether the pair, by numeric ids, is bound in `registry`.
pub(super) fn is_bound(
    tx: &Transaction<'_>,
    registry: &RegistryName,
    gateway: NumId,
    device: NumId,
) -> StoreResult<bool> {
    let gateway = resolve(tx, registry, &DeviceRef::Num(gateway));
    let device = resolve(tx, registry, &DeviceRef::Num(device));
    match (gateway, device) {
        (Ok(gateway), Ok(device)) => bound(tx, gateway, device),
        (Err(StoreError::NotFound(_)), _) | (_, Err(StoreError::NotFound(_))) => Ok(false),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

fn bound(tx: &Transaction<'_>, gateway_pk: i64, device_pk: i64) -> StoreResult<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM gateway_bindings WHERE gateway_pk = ?1 AND device_pk = ?2",
            (gateway_pk, device_pk),
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// How many devices are bound to the device `pk` (as a gateway), and to how many gateways it is
/// bound (as a device).
pub(super) fn binding_counts(tx: &Transaction<'_>, pk: i64) -> StoreResult<(usize, usize)> {
    let count = |sql: &str| -> StoreResult<usize> {
        let n: i64 = tx.query_row(sql, [pk], |row| row.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    };
    Ok((
        count("SELECT COUNT(*) FROM gateway_bindings WHERE gateway_pk = ?1")?,
        count("SELECT COUNT(*) FROM gateway_bindings WHERE device_pk = ?1")?,
    ))
}
