//! A device's config versions and reported states, each kept to the newest few. Callers resolve
//! the device first, in the same transaction, so these functions take its row key.

use jiff::Timestamp;
use rusqlite::{Row, Transaction};
use shared::resources::{DeviceConfig, DeviceState, MAX_CONFIG_VERSIONS, MAX_STATES};

use super::codec::{micros, required_time, sql_limit, time_column, truncate};
use crate::registry::{Resource, StoreError, StoreResult, config_too_soon};

/// Stores config `version` and drops versions that fell out of the kept window.
pub(super) fn insert_config(
    tx: &Transaction<'_>,
    device_pk: i64,
    version: u64,
    data: &[u8],
    now: Timestamp,
) -> StoreResult<DeviceConfig> {
    let version_sql = i64::try_from(version)
        .map_err(|_| StoreError::FailedPrecondition("the config version is exhausted".into()))?;
    tx.execute(
        "INSERT INTO device_configs (device_pk, version, binary_data, cloud_update_time) \
         VALUES (?1, ?2, ?3, ?4)",
        (device_pk, version_sql, data, micros(now)),
    )?;
    tx.execute(
        "DELETE FROM device_configs WHERE device_pk = ?1 AND version <= ?2",
        (device_pk, version_sql - MAX_CONFIG_VERSIONS as i64),
    )?;
    Ok(DeviceConfig {
        version,
        cloud_update_time: Some(truncate(now)),
        device_ack_time: None,
        binary_data: data.to_vec(),
    })
}

/// Stores the next config version if `version_to_update` is 0 or the latest. The caller's write
/// transaction makes the check and the insert one step: a racing update sees the new version.
pub(super) fn modify_config(
    tx: &Transaction<'_>,
    device_pk: i64,
    version_to_update: u64,
    data: Vec<u8>,
    now: Timestamp,
    describe: impl FnOnce() -> Resource,
) -> StoreResult<DeviceConfig> {
    let latest = list_configs(tx, device_pk, 1)?
        .into_iter()
        .next()
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
            resource: describe(),
            retry_after,
        });
    }
    insert_config(tx, device_pk, current + 1, &data, now)
}

/// Kept config versions, newest first; `limit` 0 means all.
pub(super) fn list_configs(
    tx: &Transaction<'_>,
    device_pk: i64,
    limit: usize,
) -> StoreResult<Vec<DeviceConfig>> {
    let mut stmt = tx.prepare_cached(
        "SELECT version, binary_data, cloud_update_time, device_ack_time FROM device_configs \
         WHERE device_pk = ?1 ORDER BY version DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map((device_pk, sql_limit(limit)), config_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn config_from_row(row: &Row<'_>) -> rusqlite::Result<DeviceConfig> {
    Ok(DeviceConfig {
        version: row.get(0)?,
        binary_data: row.get(1)?,
        cloud_update_time: Some(required_time(row, 2)?),
        device_ack_time: time_column(row, 3)?,
    })
}

/// Stores a state as the latest and drops the ones beyond the kept window.
pub(super) fn record_state(
    tx: &Transaction<'_>,
    device_pk: i64,
    data: Vec<u8>,
    now: Timestamp,
) -> StoreResult<DeviceState> {
    tx.execute(
        "INSERT INTO device_states (device_pk, update_time, binary_data) VALUES (?1, ?2, ?3)",
        (device_pk, micros(now), &data),
    )?;
    tx.execute(
        "DELETE FROM device_states WHERE device_pk = ?1 AND pk NOT IN \
             (SELECT pk FROM device_states WHERE device_pk = ?1 ORDER BY pk DESC LIMIT ?2)",
        (device_pk, MAX_STATES as i64),
    )?;
    Ok(DeviceState {
        update_time: Some(truncate(now)),
        binary_data: data,
    })
}

/// Kept states, newest first; `limit` 0 means all.
pub(super) fn list_states(
    tx: &Transaction<'_>,
    device_pk: i64,
    limit: usize,
) -> StoreResult<Vec<DeviceState>> {
    let mut stmt = tx.prepare_cached(
        "SELECT update_time, binary_data FROM device_states \
         WHERE device_pk = ?1 ORDER BY pk DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map((device_pk, sql_limit(limit)), |row| {
        Ok(DeviceState {
            update_time: Some(required_time(row, 0)?),
            binary_data: row.get(1)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
