//! `:sendCommandToDevice`: a command goes to the device's MQTT connection, on whichever instance
//! of the fleet holds one subscribed to `/devices/{d}/commands/#`, and the call answers once the
//! connection says how it ended. As in IoT Core, a command for a device that is not connected and
//! subscribed is refused (FAILED_PRECONDITION), and a QoS 1 command is sent again until its
//! PUBACK, up to the command timeout.
//!
//! An extension beside IoT Core's API: with a `ttl` (`"600s"`), a command that would be refused
//! for that reason is queued instead, in the registry store, until the device fetches it over HTTP
//! (`GET …/commands`), subscribes to `commands/#` over MQTT, or the ttl passes; the answer then
//! says `queued` with the command's id. `GET …/devices/{d}/commands` lists the kept commands and
//! their delivery.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;
use jiff::Timestamp;
use serde_json::{Value, json};
use shared::device_api::CommandsResponse;
use shared::resources::SendCommandToDeviceRequest;
use shared::status::ErrorInfo;
use shared::{Code, DeviceRef, NumId, RegistryName};

use super::AdminState;
use super::devices::{DevicePath, device_name};
use crate::bridge::MAX_SUBFOLDER_BYTES;
use crate::c2d::{CommandFailure, MAX_COMMAND_BYTES, MAX_UNACKED_COMMANDS};
use crate::http::error::ApiError;
use crate::registry::NewCommand;

/// The longest a command may be queued (Azure IoT Hub's longest device-queue TTL is two days;
/// a week covers a device that is off over a long weekend and more).
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Sends `request` to `device` and waits for its connection's answer.
pub async fn send(
    state: &AdminState,
    registry: &RegistryName,
    device: &DeviceRef,
    request: SendCommandToDeviceRequest,
) -> Result<Value, ApiError> {
    check(&request)?;
    // An unknown device is NOT_FOUND, not "not connected", as in IoT Core.
    let found = state.registry.get_device(registry, device).await?;
    let (Some(id), Some(num_id)) = (found.id, found.num_id) else {
        return Err(refused(&device.to_string(), &CommandFailure::NotConnected));
    };
    let subfolder = request.subfolder.filter(|s| !s.is_empty());
    // A handle, not a copy: the bytes are copied into the queue only if it comes to that.
    let data = Bytes::from(request.binary_data);
    let sent = state
        .fleet
        .send_command(
            registry,
            &id,
            NumId(num_id),
            subfolder.clone(),
            data.clone(),
        )
        .await;
    match (sent, request.ttl) {
        // `SendCommandToDeviceResponse` has no fields.
        (Ok(()), _) => Ok(json!({})),
        (Err(CommandFailure::NotConnected | CommandFailure::NotSubscribed), Some(ttl)) => {
            let now = Timestamp::now();
            let command = NewCommand {
                subfolder,
                data: data.to_vec(),
                expire_time: now + ttl,
            };
            let queued = state
                .registry
                .queue_command(registry, &DeviceRef::Id(id.clone()), command, now)
                .await?;
            // The device may have subscribed since it was found absent: its connection reads
            // the queue again, wherever it is.
            state
                .fleet
                .commands_queued(registry, &id, NumId(num_id))
                .await;
            Ok(json!({
                "queued": true,
                "commandId": queued.id.to_string(),
                "expireTime": queued.expire_time,
            }))
        }
        (Err(failure), _) => Err(refused(id.as_str(), &failure)),
    }
}

/// `GET …/devices/{d}/commands`: the device's queued commands, pending and finished (delivered
/// or expired), oldest first.
pub async fn list(
    State(state): State<AdminState>,
    Path(path): DevicePath,
) -> Result<Json<CommandsResponse>, ApiError> {
    let (registry, device) = device_name(&path)?;
    let commands = state.registry.list_commands(&registry, &device).await?;
    Ok(Json(CommandsResponse { commands }))
}

fn check(request: &SendCommandToDeviceRequest) -> Result<(), ApiError> {
    if request.binary_data.len() > MAX_COMMAND_BYTES {
        return Err(ApiError::invalid_field(
            "binaryData",
            format!(
                "a command may be at most {MAX_COMMAND_BYTES} bytes, this one is {}",
                request.binary_data.len()
            ),
        ));
    }
    let subfolder = request.subfolder.as_deref().unwrap_or_default();
    if subfolder.len() > MAX_SUBFOLDER_BYTES {
        return Err(ApiError::invalid_field(
            "subfolder",
            format!(
                "is {} bytes; a command subfolder may be at most {MAX_SUBFOLDER_BYTES}",
                subfolder.len()
            ),
        ));
    }
    if subfolder.starts_with('/') || subfolder.contains(['#', '+', '\0']) {
        return Err(ApiError::invalid_field(
            "subfolder",
            "becomes part of the MQTT topic /devices/{d}/commands/{subfolder}: it may not start \
             with `/` or contain `#`, `+` or NUL",
        ));
    }
    if let Some(ttl) = request.ttl
        && (ttl.is_zero() || ttl > MAX_TTL)
    {
        return Err(ApiError::invalid_field(
            "ttl",
            format!(
                "is {}; a queued command's ttl is more than 0 s and at most {} s (7 days)",
                shared::proto3::format_duration(ttl),
                MAX_TTL.as_secs()
            ),
        ));
    }
    Ok(())
}

/// What the operator is told when the command did not reach the device, with a reason a script
/// can act on (`DEVICE_NOT_CONNECTED`, `DEVICE_NOT_SUBSCRIBED`, `COMMANDS_PENDING`,
/// `COMMAND_NOT_ACKNOWLEDGED`, `CONNECTION_CLOSED`) and the device in its metadata.
fn refused(device: &str, failure: &CommandFailure) -> ApiError {
    let reason = match failure {
        CommandFailure::NotConnected => "DEVICE_NOT_CONNECTED",
        CommandFailure::NotSubscribed => "DEVICE_NOT_SUBSCRIBED",
        CommandFailure::Busy => "COMMANDS_PENDING",
        CommandFailure::NotAcknowledged { .. } => "COMMAND_NOT_ACKNOWLEDGED",
        CommandFailure::ConnectionClosed => "CONNECTION_CLOSED",
        CommandFailure::Unavailable(_) => "DELIVERY_UNAVAILABLE",
        CommandFailure::NoAnswer { .. } => "HOLDER_DID_NOT_ANSWER",
    };
    let info = ErrorInfo::new(
        reason,
        BTreeMap::from([("device".to_owned(), device.to_owned())]),
    );
    message(device, failure).with_info(info)
}

fn message(device: &str, failure: &CommandFailure) -> ApiError {
    match failure {
        CommandFailure::NotConnected => ApiError::new(
            Code::FailedPrecondition,
            format!(
                "device `{device}` is not connected over MQTT, so the command was not sent; \
                 commands reach only a connected device subscribed to \
                 /devices/{device}/commands/#; send it with a `ttl` to keep it until the device \
                 asks for it"
            ),
        ),
        CommandFailure::NotSubscribed => ApiError::new(
            Code::FailedPrecondition,
            format!(
                "device `{device}` is connected but not subscribed to \
                 /devices/{device}/commands/#, so the command was not sent"
            ),
        ),
        CommandFailure::Busy => ApiError::new(
            Code::ResourceExhausted,
            format!(
                "device `{device}` has {MAX_UNACKED_COMMANDS} commands awaiting its \
                 acknowledgement already; the command was not sent, retry once it catches up"
            ),
        ),
        CommandFailure::NotAcknowledged { waited, sends } => ApiError::new(
            Code::DeadlineExceeded,
            format!(
                "device `{device}` did not acknowledge the command (QoS 1 PUBACK) within \
                 {:.0} s, after {sends} sends; it may or may not have received it",
                waited.as_secs_f64()
            ),
        ),
        CommandFailure::ConnectionClosed => ApiError::new(
            Code::Unavailable,
            format!(
                "the MQTT connection of device `{device}` closed before the command was \
                 acknowledged; it may or may not have received it"
            ),
        ),
        CommandFailure::Unavailable(why) => ApiError::new(
            Code::Unavailable,
            format!("the command for device `{device}` was not sent: {why}; retry"),
        ),
        CommandFailure::NoAnswer { waited } => ApiError::new(
            Code::DeadlineExceeded,
            format!(
                "the ingest instance holding device `{device}`'s connection did not say within \
                 {:.0} s how the command ended; the device may or may not have received it",
                waited.as_secs_f64()
            ),
        ),
    }
}
