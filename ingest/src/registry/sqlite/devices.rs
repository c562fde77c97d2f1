//! Device rows: create (with numeric id allocation), read with the latest config and state,
//! list with filters and pages, patch, delete and activity bookkeeping, each inside the caller's
//! transaction.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rusqlite::types::Type;
use rusqlite::{OptionalExtension, Row, Transaction, named_params};
use shared::resources::{
    Device, DeviceConfig, DeviceCredential, DeviceState, GatewayConfig, LogLevel, RpcStatus,
};
use shared::{DeviceId, DeviceRef, RegistryName};

use super::codec::{
    backend, is_unique_violation, json_column, micros, opt_enum_column, opt_enum_name,
    required_time, time_column, to_json,
};
use super::{gateways, history, registries};
use crate::registry::page::{into_page, start_after};
use crate::registry::{
    Activity, DeviceFilter, DeviceUpdate, GatewayFilter, Page, PageRequest, Resource, StoreError,
    StoreResult, device_resource_name, still_bound,
};

/// A device with its latest config (highest version) and latest state (last inserted); the
/// column order is what [`from_row`] reads.
const SELECT: &str = "SELECT d.id, d.num_id, d.credentials, d.blocked, d.metadata, d.log_level, \
         d.last_heartbeat_time, d.last_event_time, d.last_state_time, d.last_config_ack_time, \
         d.last_config_send_time, d.last_error_time, d.last_error_code, d.last_error_message, \
         c.version, c.binary_data, c.cloud_update_time, c.device_ack_time, \
         s.update_time, s.binary_data, \
         d.gateway_type, d.gateway_auth_method, d.last_accessed_gateway_id, \
         d.last_accessed_gateway_time \
     FROM devices d \
     LEFT JOIN device_configs c ON c.device_pk = d.pk \
         AND c.version = (SELECT MAX(version) FROM device_configs WHERE device_pk = d.pk) \
     LEFT JOIN device_states s \
         ON s.pk = (SELECT MAX(pk) FROM device_states WHERE device_pk = d.pk)";

/// Random numeric ids collide with odds of about n / 2^53; a few retries make a failure
/// practically impossible while bounding the loop.
const NUM_ID_ATTEMPTS: usize = 16;

/// How a device is named in errors: its full path, by the id or numeric id the caller used.
fn describe(registry: &RegistryName, device: &DeviceRef) -> Resource {
    Resource::device(registry, device)
}

/// The device's row key, or `NotFound` naming it (also when its registry does not exist).
pub(super) fn resolve(
    tx: &Transaction<'_>,
    registry: &RegistryName,
    device: &DeviceRef,
) -> StoreResult<i64> {
    const BY_REGISTRY: &str = "SELECT d.pk FROM devices d JOIN registries r ON r.pk = d.registry_pk \
         WHERE r.project = ?1 AND r.location = ?2 AND r.id = ?3";
    let scope = (
        registry.project.as_str(),
        registry.location.as_str(),
        registry.registry.as_str(),
    );
    let found = match device {
        DeviceRef::Id(id) => tx
            .query_row(
                &format!("{BY_REGISTRY} AND d.id = ?4"),
                (scope.0, scope.1, scope.2, id.as_str()),
                |row| row.get(0),
            )
            .optional()?,
        // A numeric id beyond SQLite's integers was never allocated.
        DeviceRef::Num(num) => match i64::try_from(num.0) {
            Ok(num) => tx
                .query_row(
                    &format!("{BY_REGISTRY} AND d.num_id = ?4"),
                    (scope.0, scope.1, scope.2, num),
                    |row| row.get(0),
                )
                .optional()?,
            Err(_) => None,
        },
    };
    found.ok_or_else(|| StoreError::NotFound(describe(registry, device)))
}

/// Creates a device. Output-only fields of the input (name, numeric id, times, state, config
/// version) are ignored; the config data, or none, becomes version 1.
pub(super) fn create(
    tx: &Transaction<'_>,
    registry: &RegistryName,
    device: &Device,
    now: Timestamp,
) -> StoreResult<Device> {
    let registry_pk = registries::resolve(tx, registry)?;
    let id = device
        .id
        .clone()
        .ok_or_else(|| StoreError::FailedPrecondition("a device to create needs an id".into()))?;
    let taken = || StoreError::AlreadyExists(describe(registry, &DeviceRef::Id(id.clone())));
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM devices WHERE registry_pk = ?1 AND id = ?2)",
        (registry_pk, id.as_str()),
        |row| row.get(0),
    )?;
    if exists {
        return Err(taken());
    }
    let num_id = allocate_num_id(tx)?;
    let gateway = device.gateway_config.as_ref();
    let inserted = tx.execute(
        "INSERT INTO devices (registry_pk, id, num_id, credentials, blocked, metadata, \
             log_level, create_time, gateway_type, gateway_auth_method) \
         VALUES (:registry, :id, :num_id, :credentials, :blocked, :metadata, :log_level, :now, \
             :gateway_type, :gateway_auth_method)",
        named_params! {
            ":gateway_type": opt_enum_name(gateway.and_then(|g| g.gateway_type.as_ref()))?,
            ":gateway_auth_method": opt_enum_name(gateway.and_then(|g| g.gateway_auth_method.as_ref()))?,
            ":registry": registry_pk,
            ":id": id.as_str(),
            ":num_id": num_id,
            ":credentials": to_json(&device.credentials)?,
            ":blocked": device.blocked,
            ":metadata": to_json(&device.metadata)?,
            ":log_level": opt_enum_name(device.log_level.as_ref())?,
            ":now": micros(now),
        },
    );
    // The checks above ran under the write lock, so a constraint failure here is a bug; still,
    // say what it means rather than "backend failure".
    match inserted {
        Err(e) if is_unique_violation(&e) => return Err(taken()),
        other => other?,
    };
    let pk = tx.last_insert_rowid();
    // Every device has config version 1 from its creation, empty unless data was given.
    let data = device.config.as_ref().map(|c| c.binary_data.as_slice());
    history::insert_config(tx, pk, 1, data.unwrap_or_default(), now)?;
    by_pk(tx, registry, pk)
}

/// Picks a random numeric id in [1, 2^53) that no device in the store holds.
fn allocate_num_id(tx: &Transaction<'_>) -> StoreResult<i64> {
    let mut taken = tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM devices WHERE num_id = ?1)")?;
    for _ in 0..NUM_ID_ATTEMPTS {
        let candidate = i64::try_from(crate::registry::random_num_id()?)
            .expect("a 53-bit number fits in an i64");
        if !taken.query_row([candidate], |row| row.get::<_, bool>(0))? {
            return Ok(candidate);
        }
    }
    Err(backend(format!(
        "no free numeric id after {NUM_ID_ATTEMPTS} random picks"
    )))
}

pub(super) fn get(
    tx: &Transaction<'_>,
    registry: &RegistryName,
    device: &DeviceRef,
) -> StoreResult<Device> {
    let pk = resolve(tx, registry, device)?;
    by_pk(tx, registry, pk)
}

/// Reads a device known to exist.
pub(super) fn by_pk(tx: &Transaction<'_>, registry: &RegistryName, pk: i64) -> StoreResult<Device> {
    let sql = format!("{SELECT} WHERE d.pk = ?1");
    Ok(tx.query_row(&sql, [pk], |row| from_row(registry, row))?)
}

pub(super) fn list(
    tx: &Transaction<'_>,
    registry: &RegistryName,
    filter: &DeviceFilter,
    page: &PageRequest,
) -> StoreResult<Page<Device>> {
    let registry_pk = registries::resolve(tx, registry)?;
    let after = start_after(page.token.as_deref())?;
    let size = page.effective_size();
    let ids: Vec<&str> = filter.ids.iter().map(DeviceId::as_str).collect();
    // Numeric ids beyond SQLite's integers cannot match any device.
    let nums: Vec<i64> = filter
        .num_ids
        .iter()
        .filter_map(|n| i64::try_from(n.0).ok())
        .collect();
    let (is_gateway, bound_to, gateways_of) = match &filter.gateway {
        None => (None, None, None),
        Some(GatewayFilter::IsGateway(yes)) => (Some(*yes), None, None),
        Some(GatewayFilter::BoundTo(gateway)) => {
            (None, Some(resolve(tx, registry, gateway)?), None)
        }
        Some(GatewayFilter::GatewaysOf(device)) => {
            (None, None, Some(resolve(tx, registry, device)?))
        }
    };
    let sql = format!(
        "{SELECT} WHERE d.registry_pk = :registry AND d.id > :after \
             AND (:all OR d.id IN (SELECT value FROM json_each(:ids)) \
                  OR d.num_id IN (SELECT value FROM json_each(:nums))) \
             AND (:is_gateway IS NULL \
                  OR :is_gateway = (COALESCE(d.gateway_type, '') = 'GATEWAY')) \
             AND (:bound_to IS NULL OR d.pk IN \
                  (SELECT device_pk FROM gateway_bindings WHERE gateway_pk = :bound_to)) \
             AND (:gateways_of IS NULL OR d.pk IN \
                  (SELECT gateway_pk FROM gateway_bindings WHERE device_pk = :gateways_of)) \
         ORDER BY d.id LIMIT :limit"
    );
    let mut stmt = tx.prepare(&sql)?;
    // One row more than the page tells whether another page follows.
    let rows = stmt.query_map(
        named_params! {
            ":registry": registry_pk,
            ":after": after,
            ":all": filter.all_ids(),
            ":is_gateway": is_gateway,
            ":bound_to": bound_to,
            ":gateways_of": gateways_of,
            ":ids": to_json(&ids)?,
            ":nums": to_json(&nums)?,
            ":limit": size as i64 + 1,
        },
        |row| from_row(registry, row),
    )?;
    let items = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(into_page(items, size, |d| {
        d.id.as_ref().map(|id| id.as_str())
    }))
}

/// Each device's last-seen time, by [`shared::fleet_health::last_seen`]'s rule, computed in
/// SQL so that a fleet of 10,000 costs one pass over one table and no JSON decoding.
pub(super) fn last_seen_times(
    tx: &Transaction<'_>,
    registry: &RegistryName,
) -> StoreResult<Vec<Option<Timestamp>>> {
    let registry_pk = registries::resolve(tx, registry)?;
    let mut stmt = tx.prepare(
        "SELECT MAX(COALESCE(last_event_time, 0), COALESCE(last_state_time, 0), \
             COALESCE(last_heartbeat_time, 0)) \
         FROM devices WHERE registry_pk = ?1",
    )?;
    let rows = stmt.query_map([registry_pk], |row| row.get::<_, i64>(0))?;
    rows.map(|micros| {
        let micros = micros?;
        // 0: none of the three times was ever set.
        (micros > 0)
            .then(|| Timestamp::from_microsecond(micros).map_err(backend))
            .transpose()
    })
    .collect()
}

pub(super) fn update(
    tx: &Transaction<'_>,
    registry: &RegistryName,
    device: &DeviceRef,
    update: DeviceUpdate,
) -> StoreResult<Device> {
    let pk = resolve(tx, registry, device)?;
    let DeviceUpdate {
        credentials,
        blocked,
        metadata,
        log_level,
        gateway_auth_method,
    } = update;
    tx.execute(
        "UPDATE devices SET credentials = COALESCE(:credentials, credentials), \
             blocked = COALESCE(:blocked, blocked), \
             metadata = COALESCE(:metadata, metadata), \
             log_level = CASE WHEN :set_log_level THEN :log_level ELSE log_level END, \
             gateway_auth_method = CASE WHEN :set_auth THEN :auth ELSE gateway_auth_method END \
         WHERE pk = :pk",
        named_params! {
            ":set_auth": gateway_auth_method.is_some(),
            ":auth": opt_enum_name(gateway_auth_method.flatten().as_ref())?,
            ":credentials": credentials.as_ref().map(to_json).transpose()?,
            ":blocked": blocked,
            ":metadata": metadata.as_ref().map(to_json).transpose()?,
            ":set_log_level": log_level.is_some(),
            ":log_level": opt_enum_name(log_level.flatten().as_ref())?,
            ":pk": pk,
        },
    )?;
    by_pk(tx, registry, pk)
}

/// Deletes a device; its configs and states go with it (ON DELETE CASCADE). One with gateway
/// bindings is refused, saying how many.
pub(super) fn delete(
    tx: &Transaction<'_>,
    registry: &RegistryName,
    device: &DeviceRef,
) -> StoreResult<()> {
    let pk = resolve(tx, registry, device)?;
    let (bound, gateways) = gateways::binding_counts(tx, pk)?;
    if bound + gateways > 0 {
        return Err(still_bound(registry, device, bound, gateways));
    }
    tx.execute("DELETE FROM devices WHERE pk = ?1", [pk])?;
    Ok(())
}

pub(super) fn record_activity(
    tx: &Transaction<'_>,
    registry: &RegistryName,
    device: &DeviceRef,
    activity: &Activity,
) -> StoreResult<()> {
    let pk = resolve(tx, registry, device)?;
    let error = activity.last_error.as_ref();
    let gateway = activity.last_accessed_gateway.as_ref();
    tx.execute(
        "UPDATE devices SET \
             last_heartbeat_time = COALESCE(:heartbeat, last_heartbeat_time), \
             last_event_time = COALESCE(:event, last_event_time), \
             last_state_time = COALESCE(:state, last_state_time), \
             last_config_ack_time = COALESCE(:config_ack, last_config_ack_time), \
             last_config_send_time = COALESCE(:config_send, last_config_send_time), \
             last_error_time = COALESCE(:error_time, last_error_time), \
             last_error_code = COALESCE(:error_code, last_error_code), \
             last_error_message = COALESCE(:error_message, last_error_message), \
             last_accessed_gateway_id = COALESCE(:gateway_id, last_accessed_gateway_id), \
             last_accessed_gateway_time = COALESCE(:gateway_time, last_accessed_gateway_time) \
         WHERE pk = :pk",
        named_params! {
            ":gateway_id": gateway.map(|(id, _)| id.as_str()),
            ":gateway_time": gateway.map(|(_, time)| micros(*time)),
            ":heartbeat": activity.last_heartbeat_time.map(micros),
            ":event": activity.last_event_time.map(micros),
            ":state": activity.last_state_time.map(micros),
            ":config_ack": activity.last_config_ack_time.map(micros),
            ":config_send": activity.last_config_send_time.map(micros),
            ":error_time": error.map(|(time, _)| micros(*time)),
            ":error_code": error.map(|(_, status)| status.code),
            ":error_message": error.map(|(_, status)| status.message.as_str()),
            ":pk": pk,
        },
    )?;
    if let (Some(version), Some(time)) =
        (activity.config_ack_version, activity.last_config_ack_time)
    {
        tx.execute(
            "UPDATE device_configs SET device_ack_time = ?1 WHERE device_pk = ?2 AND version = ?3",
            rusqlite::params![micros(time), pk, i64::try_from(version).unwrap_or(i64::MAX)],
        )?;
    }
    Ok(())
}

/// Builds a device from a row of [`SELECT`], with its full name.
fn from_row(registry: &RegistryName, row: &Row<'_>) -> rusqlite::Result<Device> {
    let id: String = row.get(0)?;
    let id = DeviceId::parse(&id)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, Type::Text, e.into()))?;
    let credentials: Vec<DeviceCredential> = json_column(row, 2)?;
    let metadata: BTreeMap<String, String> = json_column(row, 4)?;
    let log_level: Option<LogLevel> = opt_enum_column(row, 5)?;
    let num_id: u64 = row.get(1)?;
    Ok(Device {
        name: Some(device_resource_name(registry, num_id)),
        id: Some(id),
        num_id: Some(num_id),
        credentials,
        blocked: row.get(3)?,
        metadata,
        log_level,
        last_heartbeat_time: time_column(row, 6)?,
        last_event_time: time_column(row, 7)?,
        last_state_time: time_column(row, 8)?,
        last_config_ack_time: time_column(row, 9)?,
        last_config_send_time: time_column(row, 10)?,
        last_error_time: time_column(row, 11)?,
        last_error_status: last_error(row)?,
        config: latest_config(row)?,
        state: latest_state(row)?,
        gateway_config: gateway_config(row)?,
    })
}

/// The gateway columns, `None` when none is set.
fn gateway_config(row: &Row<'_>) -> rusqlite::Result<Option<GatewayConfig>> {
    let config = GatewayConfig {
        gateway_type: opt_enum_column(row, 20)?,
        gateway_auth_method: opt_enum_column(row, 21)?,
        last_accessed_gateway_id: row.get(22)?,
        last_accessed_gateway_time: time_column(row, 23)?,
    };
    Ok((config != GatewayConfig::default()).then_some(config))
}

fn last_error(row: &Row<'_>) -> rusqlite::Result<Option<RpcStatus>> {
    let Some(code) = row.get::<_, Option<i32>>(12)? else {
        return Ok(None);
    };
    let message = row.get::<_, Option<String>>(13)?.unwrap_or_default();
    Ok(Some(RpcStatus { code, message }))
}

/// The joined config columns, `None` when the device has no config yet.
fn latest_config(row: &Row<'_>) -> rusqlite::Result<Option<DeviceConfig>> {
    let Some(version) = row.get::<_, Option<u64>>(14)? else {
        return Ok(None);
    };
    Ok(Some(DeviceConfig {
        version,
        binary_data: row.get(15)?,
        cloud_update_time: Some(required_time(row, 16)?),
        device_ack_time: time_column(row, 17)?,
    }))
}

/// The joined state columns, `None` when the device never reported one.
fn latest_state(row: &Row<'_>) -> rusqlite::Result<Option<DeviceState>> {
    let Some(update_time) = time_column(row, 18)? else {
        return Ok(None);
    };
    Ok(Some(DeviceState {
        update_time: Some(update_time),
        binary_data: row.get(19)?,
    }))
}
