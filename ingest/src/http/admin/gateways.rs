//! `:bindDeviceToGateway` and `:unbindDeviceFromGateway` on a registry, as IoT Core's: each
//! names the gateway and the device by id or numeric id and answers `{}`. An unbinding is told
//! to the fleet at once, so a gateway that has the device attached stops speaking for it.

use axum::Json;
use serde_json::{Value, json};
use shared::resources::BindDeviceToGatewayRequest;
use shared::{DeviceRef, RegistryName};

use super::AdminState;
use crate::http::error::ApiError;

/// The pair a request names.
fn pair(request: &BindDeviceToGatewayRequest) -> Result<(DeviceRef, DeviceRef), ApiError> {
    let parse = |field: &str, value: &str| {
        if value.is_empty() {
            return Err(ApiError::invalid_field(
                field,
                "required: a device id or numeric id",
            ));
        }
        DeviceRef::parse(value).map_err(|e| ApiError::invalid_field(field, e))
    };
    Ok((
        parse("gatewayId", &request.gateway_id)?,
        parse("deviceId", &request.device_id)?,
    ))
}

/// `POST …/registries/{r}:bindDeviceToGateway`
pub async fn bind(
    state: &AdminState,
    registry: &RegistryName,
    request: BindDeviceToGatewayRequest,
) -> Result<Json<Value>, ApiError> {
    let (gateway, device) = pair(&request)?;
    state
        .registry
        .bind_device_to_gateway(registry, &gateway, &device)
        .await?;
    Ok(Json(json!({})))
}

/// `POST …/registries/{r}:unbindDeviceFromGateway`
pub async fn unbind(
    state: &AdminState,
    registry: &RegistryName,
    request: BindDeviceToGatewayRequest,
) -> Result<Json<Value>, ApiError> {
    let (gateway, device) = pair(&request)?;
    state
        .registry
        .unbind_device_from_gateway(registry, &gateway, &device)
        .await?;
    let unbound = state.registry.get_device(registry, &device).await?;
    if let Some(id) = &unbound.id {
        state.fleet.device_changed(registry, id).await;
    }
    Ok(Json(json!({})))
}
