//! The device API's request and response bodies (IoT Core's HTTP bridge protocol), one
//! definition for both sides: ingest reads the requests and writes the config answer, the
//! device agent writes the requests and reads the answer. Payload fields stay base64 text here
//! so the service can name the exact field when one does not decode.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::proto3;
use crate::resources::DeviceConfig;

/// `POST …:publishEvent`: `{"binary_data": b64, "sub_folder": "a/b"}` (camelCase accepted).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PublishEventRequest {
    /// The event payload, base64 in either alphabet.
    #[serde(default, alias = "binaryData", skip_serializing_if = "Option::is_none")]
    pub binary_data: Option<String>,
    /// The subfolder the event is routed by.
    #[serde(default, alias = "subFolder", skip_serializing_if = "Option::is_none")]
    pub sub_folder: Option<String>,
    /// Set when a gateway speaks for a device (see [`GatewayInfo`]).
    #[serde(
        default,
        alias = "gatewayInfo",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_info: Option<GatewayInfo>,
}

/// `POST …:setState`: `{"state": {"binary_data": b64}}` (camelCase accepted).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SetStateRequest {
    /// The state; required, but read as optional so its absence gets a message naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StatePayload>,
    /// Set when a gateway speaks for a device (see [`GatewayInfo`]).
    #[serde(
        default,
        alias = "gatewayInfo",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_info: Option<GatewayInfo>,
}

/// The `state` inside a [`SetStateRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatePayload {
    /// The state bytes, base64 in either alphabet.
    #[serde(default, alias = "binaryData", skip_serializing_if = "Option::is_none")]
    pub binary_data: Option<String>,
}

/// IoT Core's `GatewayInfo`, on `publishEvent` and `setState` bodies as `gatewayInfo` (and on
/// `GET …/config` as `gatewayInfo.*` query parameters): a oneof, so at most one field is set, and
/// which one says whose path and token the request carries. Each names a device of the same
/// registry by id or numeric id; an empty string counts as unset, as in proto3.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GatewayInfo {
    /// The path and token are the gateway's; the request acts for this device.
    #[serde(
        default,
        alias = "delegatedDeviceId",
        skip_serializing_if = "Option::is_none"
    )]
    pub delegated_device_id: Option<String>,
    /// The path and token are the device's own; the request came through this gateway.
    #[serde(default, alias = "gatewayId", skip_serializing_if = "Option::is_none")]
    pub gateway_id: Option<String>,
}

/// `GET …/config`'s answer: `{"version": "7", "cloudUpdateTime": …, "binaryData": b64}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigResponse {
    /// The config version; 0 when the device has none yet.
    #[serde(with = "proto3::int64", default)]
    pub version: u64,
    /// When the operator last set it, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_update_time: Option<Timestamp>,
    /// The configuration bytes (either base64 alphabet accepted on input).
    #[serde(with = "proto3::bytes", default, alias = "binary_data")]
    pub binary_data: Vec<u8>,
}

impl From<DeviceConfig> for ConfigResponse {
    fn from(config: DeviceConfig) -> Self {
        Self {
            version: config.version,
            cloud_update_time: config.cloud_update_time,
            binary_data: config.binary_data,
        }
    }
}

/// A command kept for a device that was offline when it was sent (an extension beside IoT
/// Core's API: `:sendCommandToDevice` with a `ttl`). The device fetches pending ones with
/// `GET …/commands?ack=N` (HTTP) or receives them once it subscribes to `commands/#` (MQTT);
/// the admin API lists them with their delivery.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedCommand {
    /// Grows with every command queued for the device: the device acknowledges up to an id.
    #[serde(with = "proto3::int64", default)]
    pub id: u64,
    /// Sent to `/devices/{d}/commands/{subfolder}` over MQTT when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subfolder: Option<String>,
    /// The command, as the device receives it.
    #[serde(with = "proto3::bytes", default)]
    pub binary_data: Vec<u8>,
    /// When it was queued.
    pub queue_time: Timestamp,
    /// When it stops being delivered.
    pub expire_time: Timestamp,
    /// When the device acknowledged it (MQTT PUBACK, or `ack` over HTTP); absent while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_time: Option<Timestamp>,
}

impl QueuedCommand {
    /// Still to be delivered at `now`: not acknowledged, not expired.
    pub fn is_pending(&self, now: Timestamp) -> bool {
        self.deliver_time.is_none() && self.expire_time > now
    }
}

/// `GET …/commands`' answer (and the admin API's list): `{"commands": [...]}`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CommandsResponse {
    /// The commands; the device gets only pending ones.
    #[serde(default)]
    pub commands: Vec<QueuedCommand>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_request_reads_either_spelling_and_writes_snake_case() {
        let camel: PublishEventRequest =
            serde_json::from_str(r#"{"binaryData": "AQ==", "subFolder": "a"}"#).unwrap();
        let snake: PublishEventRequest =
            serde_json::from_str(r#"{"binary_data": "AQ==", "sub_folder": "a"}"#).unwrap();
        assert_eq!(camel, snake);
        assert_eq!(
            serde_json::to_value(&snake).unwrap(),
            serde_json::json!({"binary_data": "AQ==", "sub_folder": "a"})
        );
    }

    #[test]
    fn gateway_info_reads_either_spelling_and_writes_snake_case() {
        let camel: GatewayInfo = serde_json::from_str(r#"{"delegatedDeviceId": "dev-1"}"#).unwrap();
        let snake: GatewayInfo =
            serde_json::from_str(r#"{"delegated_device_id": "dev-1"}"#).unwrap();
        assert_eq!(camel, snake);
        assert_eq!(camel.delegated_device_id.as_deref(), Some("dev-1"));
        assert_eq!(
            serde_json::to_value(&camel).unwrap(),
            serde_json::json!({"delegated_device_id": "dev-1"})
        );
        let via: GatewayInfo = serde_json::from_str(r#"{"gatewayId": "gw-1"}"#).unwrap();
        assert_eq!(via.gateway_id.as_deref(), Some("gw-1"));
        assert_eq!(
            serde_json::from_str::<GatewayInfo>("{}").unwrap(),
            GatewayInfo::default()
        );
    }

    #[test]
    fn a_config_answer_may_use_either_alphabet_and_may_be_empty() {
        let config: ConfigResponse =
            serde_json::from_str(r#"{"version":"3","binaryData":"-_8"}"#).unwrap();
        assert_eq!((config.version, config.binary_data), (3, vec![0xfb, 0xff]));
        let empty: ConfigResponse = serde_json::from_str(r#"{"version":"0"}"#).unwrap();
        assert_eq!(empty, ConfigResponse::default());
        assert!(serde_json::from_str::<ConfigResponse>(r#"{"binaryData":"!!"}"#).is_err());
    }

    #[test]
    fn a_queued_command_is_pending_until_acknowledged_or_expired() {
        let json = serde_json::json!({
            "id": "7",
            "subfolder": "a/b",
            "binaryData": "AQ==",
            "queueTime": "2026-01-01T00:00:00Z",
            "expireTime": "2026-01-01T00:10:00Z",
        });
        let mut command: QueuedCommand = serde_json::from_value(json.clone()).unwrap();
        assert_eq!((command.id, &command.binary_data[..]), (7, &[1u8][..]));
        assert_eq!(serde_json::to_value(&command).unwrap(), json);
        let at = |t: &str| t.parse::<Timestamp>().unwrap();
        assert!(command.is_pending(at("2026-01-01T00:09:59Z")));
        assert!(!command.is_pending(at("2026-01-01T00:10:00Z")));
        command.deliver_time = Some(at("2026-01-01T00:01:00Z"));
        assert!(!command.is_pending(at("2026-01-01T00:02:00Z")));
    }
}
