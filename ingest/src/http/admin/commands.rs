//! `:sendCommandToDevice`: a command goes to the device's MQTT connection, if this instance holds
//! one subscribed to `/devices/{d}/commands/#`, and the call answers once the connection says how
//! it ended. As in IoT Core, commands are never kept for a device that is not connected and
//! subscribed (FAILED_PRECONDITION), and a QoS 1 command is sent again until its PUBACK, up to
//! the command timeout.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Value, json};
use shared::resources::SendCommandToDeviceRequest;
use shared::status::ErrorInfo;
use shared::{Code, DeviceRef, RegistryName};

use super::AdminState;
use crate::bridge::MAX_SUBFOLDER_BYTES;
use crate::c2d::{CommandFailure, MAX_COMMAND_BYTES, MAX_UNACKED_COMMANDS};
use crate::http::error::ApiError;

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
    let device = found.id.map_or_else(|| device.clone(), DeviceRef::Id);
    let subfolder = request.subfolder.filter(|s| !s.is_empty());
    state
        .delivery
        .send_command(
            registry,
            &device,
            subfolder,
            Bytes::from(request.binary_data),
        )
        .await
        .map_err(|failure| refused(&device.to_string(), &failure))?;
    // `SendCommandToDeviceResponse` has no fields.
    Ok(json!({}))
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
                 /devices/{device}/commands/#, and are not kept for later"
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
    }
}
