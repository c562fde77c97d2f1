//! `GET …/devices/{d}/presence`, an extension of IoT Core's API: whether the device holds an MQTT
//! connection anywhere in the fleet, on which instance, since when, and what it subscribed to.
//! IoT Core had no such call (its console showed only "last heartbeat"); it is a separate path
//! so that the `Device` resource stays exactly IoT Core's for its client libraries.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use shared::NumId;

use super::AdminState;
use super::devices::{DevicePath, device_name};
use crate::http::error::ApiError;

/// Answers `{"connected": false}` or `{"connected": true, "instance", "since",
/// "subscriptions": {"config", "commands"}}`.
pub async fn get(
    State(state): State<AdminState>,
    Path(path): DevicePath,
) -> Result<Json<Value>, ApiError> {
    let (registry, device) = device_name(&path)?;
    // An unknown device is NOT_FOUND, not "not connected".
    let found = state.registry.get_device(&registry, &device).await?;
    let Some(num_id) = found.num_id else {
        return Ok(Json(json!({"connected": false})));
    };
    let answer = match state.fleet.presence(NumId(num_id)).await? {
        None => json!({"connected": false}),
        Some(presence) => json!({
            "connected": true,
            "instance": presence.instance,
            "since": presence.since,
            "subscriptions": {"config": presence.config, "commands": presence.commands},
        }),
    };
    Ok(Json(answer))
}
