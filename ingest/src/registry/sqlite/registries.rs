//! Registry rows: create, read, list, patch and delete, each inside the caller's transaction.
//! A patch reads the stored registry, applies the named fields in Rust and writes the row back,
//! which is safe because the caller's transaction holds the write lock throughout.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, Row, Transaction, named_params};
use shared::iam::Policy;
use shared::resources::DeviceRegistry;
use shared::{LocationName, RegistryId, RegistryName};

use super::codec::{
    enum_column, enum_name, is_unique_violation, json_column, micros, opt_enum_column,
    opt_enum_name, opt_json_column, to_json,
};
use crate::registry::page::{into_page, start_after};
use crate::registry::{
    Page, PageRequest, RegistryUpdate, Resource, StoreError, StoreResult, etag_matches,
    name_to_create,
};

/// The columns [`from_row`] reads, in its order.
const COLUMNS: &str = "id, event_notification_configs, state_notification_config, \
     mqtt_enabled_state, http_enabled_state, log_level";

/// How a registry is named in errors.
pub(super) fn describe(name: &RegistryName) -> Resource {
    Resource::registry(name)
}

/// The registry's row key, or `NotFound` naming it.
pub(super) fn resolve(tx: &Transaction<'_>, name: &RegistryName) -> StoreResult<i64> {
    tx.query_row(
        "SELECT pk FROM registries WHERE project = ?1 AND location = ?2 AND id = ?3",
        (
            name.project.as_str(),
            name.location.as_str(),
            name.registry.as_str(),
        ),
        |row| row.get(0),
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(describe(name)))
}

pub(super) fn create(
    tx: &Transaction<'_>,
    parent: &LocationName,
    registry: &DeviceRegistry,
    now: Timestamp,
) -> StoreResult<DeviceRegistry> {
    let name = name_to_create(parent, registry)?;
    let inserted = tx.execute(
        "INSERT INTO registries (project, location, id, event_notification_configs, \
             state_notification_config, mqtt_enabled_state, http_enabled_state, log_level, \
             create_time) \
         VALUES (:project, :location, :id, :events, :state, :mqtt, :http, :log_level, :now)",
        named_params! {
            ":project": name.project.as_str(),
            ":location": name.location.as_str(),
            ":id": name.registry.as_str(),
            ":events": to_json(&registry.event_notification_configs)?,
            ":state": registry.state_notification_config.as_ref().map(to_json).transpose()?,
            ":mqtt": enum_name(&registry.mqtt_config.mqtt_enabled_state)?,
            ":http": enum_name(&registry.http_config.http_enabled_state)?,
            ":log_level": opt_enum_name(registry.log_level.as_ref())?,
            ":now": micros(now),
        },
    );
    match inserted {
        Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists(describe(&name))),
        other => other.map_err(StoreError::from),
    }?;
    get(tx, &name)
}

pub(super) fn get(tx: &Transaction<'_>, name: &RegistryName) -> StoreResult<DeviceRegistry> {
    let sql = format!(
        "SELECT {COLUMNS} FROM registries WHERE project = ?1 AND location = ?2 AND id = ?3"
    );
    let params = (
        name.project.as_str(),
        name.location.as_str(),
        name.registry.as_str(),
    );
    let parent = name.parent();
    tx.query_row(&sql, params, |row| from_row(&parent, row))
        .optional()?
        .ok_or_else(|| StoreError::NotFound(describe(name)))
}

pub(super) fn list(
    tx: &Transaction<'_>,
    parent: &LocationName,
    page: &PageRequest,
) -> StoreResult<Page<DeviceRegistry>> {
    let after = start_after(page.token.as_deref())?;
    let size = page.effective_size();
    let sql = format!(
        "SELECT {COLUMNS} FROM registries \
         WHERE project = ?1 AND location = ?2 AND id > ?3 ORDER BY id LIMIT ?4"
    );
    // One row more than the page tells whether another page follows.
    let params = (
        parent.project.as_str(),
        parent.location.as_str(),
        after,
        size as i64 + 1,
    );
    let mut stmt = tx.prepare(&sql)?;
    let items = stmt
        .query_map(params, |row| from_row(parent, row))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(into_page(items, size, |r| {
        r.id.as_ref().map(|id| id.as_str())
    }))
}

pub(super) fn update(
    tx: &Transaction<'_>,
    name: &RegistryName,
    update: RegistryUpdate,
) -> StoreResult<DeviceRegistry> {
    let mut registry = get(tx, name)?;
    let RegistryUpdate {
        event_notification_configs,
        state_notification_config,
        mqtt_config,
        http_config,
        log_level,
    } = update;
    if let Some(configs) = event_notification_configs {
        registry.event_notification_configs = configs;
    }
    if let Some(config) = state_notification_config {
        registry.state_notification_config = config;
    }
    if let Some(config) = mqtt_config {
        registry.mqtt_config = config;
    }
    if let Some(config) = http_config {
        registry.http_config = config;
    }
    if let Some(level) = log_level {
        registry.log_level = level;
    }
    tx.execute(
        "UPDATE registries SET event_notification_configs = :events, \
             state_notification_config = :state, mqtt_enabled_state = :mqtt, \
             http_enabled_state = :http, log_level = :log_level \
         WHERE project = :project AND location = :location AND id = :id",
        named_params! {
            ":events": to_json(&registry.event_notification_configs)?,
            ":state": registry.state_notification_config.as_ref().map(to_json).transpose()?,
            ":mqtt": enum_name(&registry.mqtt_config.mqtt_enabled_state)?,
            ":http": enum_name(&registry.http_config.http_enabled_state)?,
            ":log_level": opt_enum_name(registry.log_level.as_ref())?,
            ":project": name.project.as_str(),
            ":location": name.location.as_str(),
            ":id": name.registry.as_str(),
        },
    )?;
    Ok(registry)
}

/// Deletes an empty registry. Devices are counted first so the refusal can say how many stand in
/// the way; the foreign key would refuse anyway, but only with SQLite's wording.
pub(super) fn delete(tx: &Transaction<'_>, name: &RegistryName) -> StoreResult<()> {
    let pk = resolve(tx, name)?;
    let devices: i64 = tx.query_row(
        "SELECT COUNT(*) FROM devices WHERE registry_pk = ?1",
        [pk],
        |row| row.get(0),
    )?;
    if devices > 0 {
        let noun = if devices == 1 { "device" } else { "devices" };
        return Err(StoreError::FailedPrecondition(format!(
            "{} still has {devices} {noun}; delete them first",
            describe(name)
        )));
    }
    tx.execute("DELETE FROM registries WHERE pk = ?1", [pk])?;
    Ok(())
}

/// The registry's stored IAM policy, `None` when none was set; `NotFound` without the registry.
pub(super) fn get_policy(tx: &Transaction<'_>, name: &RegistryName) -> StoreResult<Option<Policy>> {
    let pk = resolve(tx, name)?;
    tx.query_row(
        "SELECT iam_policy FROM registries WHERE pk = ?1",
        [pk],
        |row| opt_json_column(row, 0),
    )
    .map_err(StoreError::from)
}

/// Replaces the registry's IAM policy when the expected etag is still the stored one.
pub(super) fn set_policy(
    tx: &Transaction<'_>,
    name: &RegistryName,
    policy: Policy,
    expected_etag: Option<Vec<u8>>,
) -> StoreResult<Policy> {
    let stored = get_policy(tx, name)?;
    if !etag_matches(stored.as_ref(), expected_etag.as_deref()) {
        return Err(StoreError::PolicyChanged(describe(name)));
    }
    tx.execute(
        "UPDATE registries SET iam_policy = :policy \
         WHERE project = :project AND location = :location AND id = :id",
        named_params! {
            ":policy": to_json(&policy)?,
            ":project": name.project.as_str(),
            ":location": name.location.as_str(),
            ":id": name.registry.as_str(),
        },
    )?;
    Ok(policy)
}

/// Builds a registry from a row of [`COLUMNS`], with its full name.
fn from_row(parent: &LocationName, row: &Row<'_>) -> rusqlite::Result<DeviceRegistry> {
    let id: String = row.get(0)?;
    let id = RegistryId::parse(&id).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })?;
    Ok(DeviceRegistry {
        name: Some(format!("{parent}/registries/{id}")),
        id: Some(id),
        event_notification_configs: json_column(row, 1)?,
        state_notification_config: opt_json_column(row, 2)?,
        mqtt_config: shared::resources::MqttConfig {
            mqtt_enabled_state: enum_column(row, 3)?,
        },
        http_config: shared::resources::HttpConfig {
            http_enabled_state: enum_column(row, 4)?,
        },
        log_level: opt_enum_column(row, 5)?,
    })
}
