//! Device handlers: create, get, list (page tokens, id filters, `fieldMask`), patch (with
//! `updateMask`), delete, `:modifyCloudToDeviceConfig`, `/configVersions` and `/states`, as IoT
//! Core's `projects.locations.registries.devices` resource. A device is addressed by id or
//! numeric id. Any change to keys or the blocked flag drops the device's cached tokens at once.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use jiff::Timestamp;
use serde_json::{Value, json};
use shared::resources::{
    Device, DeviceConfig, DeviceCredential, GatewayConfig, GatewayType,
    ListDeviceConfigVersionsResponse, ListDeviceStatesResponse, ListDevicesResponse,
    ModifyCloudToDeviceConfigRequest, validate_metadata,
};
use shared::{Code, DeviceId, DeviceRef, NumId, RegistryName};

use super::AdminState;
use crate::auth::credentials::parse_credential;
use crate::http::error::ApiError;
use crate::http::request::{JsonBody, Query, mask_paths, parse_json};
use crate::registry::{DeviceFilter, DeviceUpdate, GatewayFilter, PageRequest};

/// The largest config payload, as IoT Core allowed.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

pub(super) type DevicePath = Path<(String, String, String, String)>;
type RegistryPath = Path<(String, String, String)>;

pub(super) fn device_name(
    (project, location, registry, device): &(String, String, String, String),
) -> Result<(RegistryName, DeviceRef), ApiError> {
    Ok((
        RegistryName::from_parts(project, location, registry)?,
        DeviceRef::parse(device)?,
    ))
}

/// `POST …/registries/{r}/devices`
pub async fn create(
    State(state): State<AdminState>,
    Path((project, location, registry)): RegistryPath,
    JsonBody(mut device): JsonBody<Device>,
) -> Result<Json<Device>, ApiError> {
    let registry = RegistryName::from_parts(&project, &location, &registry)?;
    // Output only: a device has spoken through no gateway before it exists.
    device.gateway_config = device.gateway_config.map(|g| GatewayConfig {
        last_accessed_gateway_id: None,
        last_accessed_gateway_time: None,
        ..g
    });
    if device.id.is_none() {
        return Err(ApiError::invalid_field(
            "id",
            "required: the id of the device to create",
        ));
    }
    device.validate()?;
    check_credentials(&device.credentials)?;
    if let Some(config) = &device.config {
        check_config_size("config.binaryData", &config.binary_data)?;
        if config.version != 0 {
            return Err(ApiError::invalid_field(
                "config.version",
                format!(
                    "is {}; a new device's config becomes version 1, so leave the version out (or 0)",
                    config.version
                ),
            ));
        }
    }
    let created = state
        .registry
        .create_device(&registry, device, Timestamp::now())
        .await?;
    Ok(Json(created))
}

/// Refuses a credential list with a key that does not parse as its format says.
fn check_credentials(credentials: &[DeviceCredential]) -> Result<(), ApiError> {
    for (i, credential) in credentials.iter().enumerate() {
        let key = &credential.public_key;
        parse_credential(key.format, &key.key).map_err(|err| {
            ApiError::invalid_field(&format!("credentials[{i}].publicKey.key"), err)
        })?;
    }
    Ok(())
}

fn check_config_size(field: &str, data: &[u8]) -> Result<(), ApiError> {
    if data.len() > MAX_CONFIG_BYTES {
        return Err(ApiError::invalid_field(
            field,
            format!(
                "a config may be at most {MAX_CONFIG_BYTES} bytes, this one is {}",
                data.len()
            ),
        ));
    }
    Ok(())
}

/// `GET …/devices/{d}?fieldMask=…`
pub async fn get(
    State(state): State<AdminState>,
    Path(path): DevicePath,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let (registry, device) = device_name(&path)?;
    let mask = mask_paths(&Query::parse(raw.as_deref()), "fieldMask");
    let device = state.registry.get_device(&registry, &device).await?;
    Ok(Json(apply_field_mask(&device, &mask, false)?))
}

/// `GET …/registries/{r}/devices?pageSize=&pageToken=&deviceIds=&deviceNumIds=&fieldMask=`
pub async fn list(
    State(state): State<AdminState>,
    Path((project, location, registry)): RegistryPath,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let registry = RegistryName::from_parts(&project, &location, &registry)?;
    let query = Query::parse(raw.as_deref());
    let filter = device_filter(&query)?;
    let page = PageRequest {
        size: query.number("pageSize")?,
        token: query
            .get("pageToken")
            .filter(|t| !t.is_empty())
            .map(String::from),
    };
    let mask = mask_paths(&query, "fieldMask");
    let page = state
        .registry
        .list_devices(&registry, &filter, &page)
        .await?;
    let devices = page
        .items
        .iter()
        .map(|d| apply_field_mask(d, &mask, true))
        .collect::<Result<Vec<_>, _>>()?;
    let mut body =
        serde_json::to_value(ListDevicesResponse::default()).map_err(ApiError::internal)?;
    body["devices"] = Value::Array(devices);
    if let Some(token) = page.next_page_token {
        body["nextPageToken"] = Value::String(token);
    }
    Ok(Json(body))
}

/// `gatewayListOptions`: at most one of its filters, never ignored (a script asking for a
/// gateway's devices must not get the whole registry).
fn gateway_filter(query: &Query) -> Result<Option<GatewayFilter>, ApiError> {
    const TYPE: &str = "gatewayListOptions.gatewayType";
    const BY_GATEWAY: &str = "gatewayListOptions.associationsGatewayId";
    const BY_DEVICE: &str = "gatewayListOptions.associationsDeviceId";
    let given: Vec<&str> = [TYPE, BY_GATEWAY, BY_DEVICE]
        .into_iter()
        .filter(|name| query.get(name).is_some_and(|v| !v.is_empty()))
        .collect();
    if given.len() > 1 {
        return Err(ApiError::invalid_field(
            "gatewayListOptions",
            format!(
                "set at most one of its filters, not {}",
                given.join(" and ")
            ),
        ));
    }
    let device = |name: &str| -> Result<Option<DeviceRef>, ApiError> {
        query
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|id| DeviceRef::parse(id).map_err(|e| ApiError::invalid_field(name, e)))
            .transpose()
    };
    if let Some(gateway) = device(BY_GATEWAY)? {
        return Ok(Some(GatewayFilter::BoundTo(gateway)));
    }
    if let Some(device) = device(BY_DEVICE)? {
        return Ok(Some(GatewayFilter::GatewaysOf(device)));
    }
    let Some(text) = query.get(TYPE).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    // By name or number, as the enum is read everywhere else.
    let value = text
        .parse::<i64>()
        .map_or_else(|_| json!(text), |n| json!(n));
    let kind: GatewayType =
        serde_json::from_value(value).map_err(|e| ApiError::invalid_field(TYPE, e.to_string()))?;
    Ok(match kind {
        GatewayType::Gateway => Some(GatewayFilter::IsGateway(true)),
        GatewayType::NonGateway => Some(GatewayFilter::IsGateway(false)),
        GatewayType::GatewayTypeUnspecified => None,
    })
}

fn device_filter(query: &Query) -> Result<DeviceFilter, ApiError> {
    let ids = query
        .all("deviceIds")
        .into_iter()
        .map(|id| DeviceId::parse(id).map_err(|e| ApiError::invalid_field("deviceIds", e)))
        .collect::<Result<_, _>>()?;
    let num_ids = query
        .all("deviceNumIds")
        .into_iter()
        .map(|n| NumId::parse(n).map_err(|e| ApiError::invalid_field("deviceNumIds", e)))
        .collect::<Result<_, _>>()?;
    Ok(DeviceFilter {
        ids,
        num_ids,
        gateway: gateway_filter(query)?,
    })
}

/// The device fields a `fieldMask` may name (camelCase JSON names).
const DEVICE_FIELDS: [&str; 17] = [
    "id",
    "name",
    "numId",
    "credentials",
    "lastHeartbeatTime",
    "lastEventTime",
    "lastStateTime",
    "lastConfigAckTime",
    "lastConfigSendTime",
    "blocked",
    "lastErrorTime",
    "lastErrorStatus",
    "config",
    "state",
    "logLevel",
    "metadata",
    "gatewayConfig",
];

/// Keeps only the masked fields. As in IoT Core, `id`, `name` and `numId` are always returned;
/// an empty mask means every field on get, and only those three on list.
fn apply_field_mask(device: &Device, mask: &[String], listing: bool) -> Result<Value, ApiError> {
    let mut value = serde_json::to_value(device).map_err(ApiError::internal)?;
    if let Some(unknown) = mask.iter().find(|p| !DEVICE_FIELDS.contains(&p.as_str())) {
        return Err(ApiError::invalid_field(
            "fieldMask",
            format!("`{unknown}` is not a device field"),
        ));
    }
    if mask.is_empty() && !listing {
        return Ok(value);
    }
    if let Value::Object(fields) = &mut value {
        fields.retain(|k, _| ["id", "name", "numId"].contains(&k.as_str()) || mask.contains(k));
    }
    Ok(value)
}

/// `PATCH …/devices/{d}?updateMask=…`
pub async fn patch(
    State(state): State<AdminState>,
    Path(path): DevicePath,
    RawQuery(raw): RawQuery,
    JsonBody(body): JsonBody<Device>,
) -> Result<Json<Device>, ApiError> {
    let (registry, device) = device_name(&path)?;
    let update = device_update(
        &mask_paths(&Query::parse(raw.as_deref()), "updateMask"),
        body,
    )?;
    let touches_auth = update.credentials.is_some() || update.blocked.is_some();
    let updated = state
        .registry
        .update_device(&registry, &device, update)
        .await?;
    if let (true, Some(id)) = (touches_auth, &updated.id) {
        state.fleet.device_changed(&registry, id).await;
    }
    Ok(Json(updated))
}

const PATCHABLE: &str = "credentials, blocked, metadata, logLevel, gatewayConfig.gatewayAuthMethod";

/// Builds the store update from the mask, checking each named field.
fn device_update(paths: &[String], body: Device) -> Result<DeviceUpdate, ApiError> {
    if paths.is_empty() {
        return Err(ApiError::invalid_field(
            "updateMask",
            format!("required: name the fields to change, from {PATCHABLE}"),
        ));
    }
    body.validate()?;
    let mut update = DeviceUpdate::default();
    for path in paths {
        match path.as_str() {
            "credentials" => {
                check_credentials(&body.credentials)?;
                update.credentials = Some(body.credentials.clone());
            }
            "blocked" => update.blocked = Some(body.blocked),
            "metadata" => {
                validate_metadata(&body.metadata)?;
                update.metadata = Some(body.metadata.clone());
            }
            "logLevel" => update.log_level = Some(body.log_level),
            "gatewayConfig.gatewayAuthMethod" => {
                let method = body
                    .gateway_config
                    .as_ref()
                    .and_then(|g| g.gateway_auth_method);
                update.gateway_auth_method = Some(method);
            }
            "gatewayConfig" | "gatewayConfig.gatewayType" => {
                return Err(ApiError::invalid_field(
                    "updateMask",
                    "a device's gateway type is set when it is created and cannot change; \
                     name gatewayConfig.gatewayAuthMethod to change how a gateway's devices \
                     authenticate",
                ));
            }
            other => {
                return Err(ApiError::invalid_field(
                    "updateMask",
                    format!("`{other}` cannot be changed; patchable fields are {PATCHABLE}"),
                ));
            }
        }
    }
    Ok(update)
}

/// `DELETE …/devices/{d}`
pub async fn delete(
    State(state): State<AdminState>,
    Path(path): DevicePath,
) -> Result<Json<Value>, ApiError> {
    let (registry, device) = device_name(&path)?;
    let existing = state.registry.get_device(&registry, &device).await?;
    state.registry.delete_device(&registry, &device).await?;
    if let Some(id) = &existing.id {
        state.fleet.device_changed(&registry, id).await;
    }
    Ok(Json(serde_json::json!({})))
}

/// `POST …/devices/{d}:modifyCloudToDeviceConfig` and the other `:method` calls.
pub async fn custom_method(
    State(state): State<AdminState>,
    Path((project, location, registry, segment)): DevicePath,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some((device, method)) = segment.split_once(':') else {
        return Err(ApiError::new(
            Code::InvalidArgument,
            "POST on a device needs a method, e.g. …/devices/{device}:modifyCloudToDeviceConfig",
        ));
    };
    let path = (project, location, registry, device.to_owned());
    match method {
        "modifyCloudToDeviceConfig" => {
            let request = parse_json(&body)?;
            let config = modify_config(&state, &path, request).await?;
            Ok(Json(
                serde_json::to_value(config).map_err(ApiError::internal)?,
            ))
        }
        "sendCommandToDevice" => {
            let (registry, device) = device_name(&path)?;
            let request = parse_json(&body)?;
            Ok(Json(
                super::commands::send(&state, &registry, &device, request).await?,
            ))
        }
        other => Err(ApiError::new(
            Code::Unimplemented,
            format!("device method `{other}` is not supported by this server"),
        )),
    }
}

async fn modify_config(
    state: &AdminState,
    path: &(String, String, String, String),
    request: ModifyCloudToDeviceConfigRequest,
) -> Result<DeviceConfig, ApiError> {
    let (registry, device) = device_name(path)?;
    check_config_size("binaryData", &request.binary_data)?;
    let config = state
        .registry
        .modify_config(
            &registry,
            &device,
            request.version_to_update,
            request.binary_data,
            Timestamp::now(),
        )
        .await?;
    state
        .fleet
        .config_changed(&registry, &device, config.clone())
        .await;
    Ok(config)
}

/// `GET …/devices/{d}/configVersions?numVersions=N`
pub async fn config_versions(
    State(state): State<AdminState>,
    Path(path): DevicePath,
    RawQuery(raw): RawQuery,
) -> Result<Json<ListDeviceConfigVersionsResponse>, ApiError> {
    let (registry, device) = device_name(&path)?;
    let limit = Query::parse(raw.as_deref()).number("numVersions")?;
    let device_configs = state
        .registry
        .list_config_versions(&registry, &device, limit)
        .await?;
    Ok(Json(ListDeviceConfigVersionsResponse { device_configs }))
}

/// `GET …/devices/{d}/states?numStates=N`
pub async fn states(
    State(state): State<AdminState>,
    Path(path): DevicePath,
    RawQuery(raw): RawQuery,
) -> Result<Json<ListDeviceStatesResponse>, ApiError> {
    let (registry, device) = device_name(&path)?;
    let limit = Query::parse(raw.as_deref()).number("numStates")?;
    let device_states = state
        .registry
        .list_states(&registry, &device, limit)
        .await?;
    Ok(Json(ListDeviceStatesResponse { device_states }))
}
