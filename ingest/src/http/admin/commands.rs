//! `:sendCommandToDevice`: a command goes to the device's MQTT connection, on whichever instance
//! of the fleet holds one subscribed to `/devices/{d}/commands/#`, and the call answers once the
//! connection says how it ended. As in IoT Core, commands are never kept for a device that is not connected and
//! subscribed (FAILED_PRECONDITION), and a QoS 1 command is sent again until its PUBACK, up to
//! the command timeout.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Value, json};
use shared::resources::SendCommandToDeviceRequest;
use shared::status::ErrorInfo;
use shared::{Code, DeviceRef, NumId, RegistryName};

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
    let (Some(id), Some(num_id)) = (found.id, found.num_id) else {
        return Err(refused(&device.to_string(), &CommandFailure::NotConnected));
    };
    let subfolder = request.subfolder.filter(|s| !s.is_empty());
    state
        .fleet
        .send_command(
            registry,
            &id,
            NumId(num_id),
            subfolder,
            Bytes::from(request.binary_data),
        )
        .await
        .map_err(|failure| refused(id.as_str(), &failure))?;
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
