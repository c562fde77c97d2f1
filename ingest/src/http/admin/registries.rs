//! Registry handlers: create, get, list, patch (with `updateMask`) and delete, as IoT Core's
//! `projects.locations.registries` resource, and its custom methods.

use axum::Json;
use axum::extract::{Extension, FromRequest, Path, RawQuery, Request, State};
use axum::response::{IntoResponse, Response};
use shared::resources::{DeviceRegistry, ListDeviceRegistriesResponse};
use shared::{Code, LocationName, RegistryName};

use super::{AdminState, gateways, iam};
use crate::http::error::ApiError;
use crate::http::request::{JsonBody, Query, mask_paths};
use crate::iam::Caller;
use crate::registry::{PageRequest, RegistryUpdate};

/// `POST /v1/projects/{p}/locations/{l}/registries`
pub async fn create(
    State(state): State<AdminState>,
    Path((project, location)): Path<(String, String)>,
    JsonBody(mut registry): JsonBody<DeviceRegistry>,
) -> Result<Json<DeviceRegistry>, ApiError> {
    let parent = LocationName::parse(&project, &location)?;
    if registry.id.is_none() {
        return Err(ApiError::invalid_field(
            "id",
            "required: the id of the registry to create",
        ));
    }
    registry.normalise_and_validate()?;
    let created = state.registry.create_registry(&parent, registry).await?;
    Ok(Json(created))
}

/// `GET /v1/projects/{p}/locations/{l}/registries/{r}`
pub async fn get(
    State(state): State<AdminState>,
    Path((project, location, registry)): Path<(String, String, String)>,
) -> Result<Json<DeviceRegistry>, ApiError> {
    let name = RegistryName::from_parts(&project, &location, &registry)?;
    Ok(Json(state.registry.get_registry(&name).await?))
}

/// `GET /v1/projects/{p}/locations/{l}/registries?pageSize=&pageToken=`
pub async fn list(
    State(state): State<AdminState>,
    Path((project, location)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ListDeviceRegistriesResponse>, ApiError> {
    let parent = LocationName::parse(&project, &location)?;
    let query = Query::parse(raw.as_deref());
    let page = PageRequest {
        size: query.number("pageSize")?,
        token: query
            .get("pageToken")
            .filter(|t| !t.is_empty())
            .map(String::from),
    };
    let page = state.registry.list_registries(&parent, &page).await?;
    Ok(Json(ListDeviceRegistriesResponse {
        device_registries: page.items,
        next_page_token: page.next_page_token.unwrap_or_default(),
    }))
}

/// `PATCH /v1/projects/{p}/locations/{l}/registries/{r}?updateMask=…`
pub async fn patch(
    State(state): State<AdminState>,
    Path((project, location, registry)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    JsonBody(mut body): JsonBody<DeviceRegistry>,
) -> Result<Json<DeviceRegistry>, ApiError> {
    let name = RegistryName::from_parts(&project, &location, &registry)?;
    body.normalise_and_validate()?;
    let update = registry_update(
        &mask_paths(&Query::parse(raw.as_deref()), "updateMask"),
        body,
    )?;
    Ok(Json(state.registry.update_registry(&name, update).await?))
}

/// The fields of a registry that a patch may name.
const PATCHABLE: &str =
    "eventNotificationConfigs, stateNotificationConfig, mqttConfig, httpConfig, logLevel";

/// Builds the store update from the mask, refusing paths that cannot change.
fn registry_update(paths: &[String], body: DeviceRegistry) -> Result<RegistryUpdate, ApiError> {
    if paths.is_empty() {
        return Err(ApiError::invalid_field(
            "updateMask",
            format!("required: name the fields to change, from {PATCHABLE}"),
        ));
    }
    let mut update = RegistryUpdate::default();
    for path in paths {
        match path.as_str() {
            "eventNotificationConfigs" => {
                update.event_notification_configs = Some(body.event_notification_configs.clone());
            }
            "stateNotificationConfig" | "stateNotificationConfig.pubsubTopicName" => {
                update.state_notification_config = Some(body.state_notification_config.clone());
            }
            "mqttConfig" | "mqttConfig.mqttEnabledState" => {
                update.mqtt_config = Some(body.mqtt_config);
            }
            "httpConfig" | "httpConfig.httpEnabledState" => {
                update.http_config = Some(body.http_config);
            }
            "logLevel" => update.log_level = Some(body.log_level),
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

/// `DELETE /v1/projects/{p}/locations/{l}/registries/{r}`
pub async fn delete(
    State(state): State<AdminState>,
    Path((project, location, registry)): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = RegistryName::from_parts(&project, &location, &registry)?;
    state.registry.delete_registry(&name).await?;
    Ok(Json(serde_json::json!({})))
}

/// `POST …/registries/{r}:method` — IoT Core's IAM and gateway binding methods.
pub async fn custom_method(
    State(state): State<AdminState>,
    Path((project, location, registry)): Path<(String, String, String)>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Response, ApiError> {
    let (id, method) = registry.split_once(':').unwrap_or((&registry, ""));
    let name = RegistryName::from_parts(&project, &location, id)?;
    let answer = match method {
        "getIamPolicy" => {
            let JsonBody(body) = JsonBody::from_request(request, &()).await?;
            iam::get(&state, &name, body).await?.into_response()
        }
        "setIamPolicy" => {
            let JsonBody(body) = JsonBody::from_request(request, &()).await?;
            iam::set(&state, &name, body).await?.into_response()
        }
        "testIamPermissions" => {
            let JsonBody(body) = JsonBody::from_request(request, &()).await?;
            iam::test(&state, &name, &caller, body)
                .await?
                .into_response()
        }
        "bindDeviceToGateway" => {
            let JsonBody(body) = JsonBody::from_request(request, &()).await?;
            gateways::bind(&state, &name, body).await?.into_response()
        }
        "unbindDeviceFromGateway" => {
            let JsonBody(body) = JsonBody::from_request(request, &()).await?;
            gateways::unbind(&state, &name, body).await?.into_response()
        }
        _ => {
            return Err(ApiError::new(
                Code::Unimplemented,
                format!("registry method `{method}` is not supported by this server"),
            ));
        }
    };
    Ok(answer)
}
