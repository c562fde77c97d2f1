//! The admin API's resources in the proto3 JSON shape of IoT Core's
//! `google.cloud.iot.v1` (`DeviceRegistry`, `Device`, `DeviceCredential`, `DeviceConfig`,
//! `DeviceState` and the list responses), plus the rules a registry or device must obey before it
//! is stored. Default values are left out of the JSON, as Google's servers do.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};

use crate::credential::{MAX_CREDENTIALS, PublicKeyFormat};
use crate::ids::{DeviceId, RegistryId, TopicName};
use crate::proto3::{self, proto3_enum};

/// The most event notification configs one registry may hold.
pub const MAX_EVENT_NOTIFICATION_CONFIGS: usize = 10;
/// The most metadata pairs one device may hold.
pub const MAX_METADATA_PAIRS: usize = 500;
/// The longest metadata key, in characters.
pub const MAX_METADATA_KEY_LEN: usize = 128;
/// The largest metadata value, in bytes.
pub const MAX_METADATA_VALUE_BYTES: usize = 32 * 1024;
/// The largest total of all metadata keys and values, in bytes.
pub const MAX_METADATA_TOTAL_BYTES: usize = 256 * 1024;
/// The config versions kept per device.
pub const MAX_CONFIG_VERSIONS: usize = 10;
/// The states kept per device.
pub const MAX_STATES: usize = 10;

/// A rule a request broke, naming the field in the API's camelCase path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldViolation {
    /// The field, e.g. `credentials[1].publicKey.key`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

proto3_enum! {
    /// Whether the MQTT bridge serves a registry's devices.
    #[derive(Default)]
    pub enum MqttState {
        /// Not set: treated as enabled, as IoT Core did.
        MqttStateUnspecified = ("MQTT_STATE_UNSPECIFIED", 0),
        /// Devices may connect over MQTT.
        #[default]
        MqttEnabled = ("MQTT_ENABLED", 1),
        /// MQTT connections are refused.
        MqttDisabled = ("MQTT_DISABLED", 2),
    }
}

proto3_enum! {
    /// Whether the HTTP bridge serves a registry's devices.
    #[derive(Default)]
    pub enum HttpState {
        /// Not set: treated as enabled, as IoT Core did.
        HttpStateUnspecified = ("HTTP_STATE_UNSPECIFIED", 0),
        /// Devices may use the HTTP bridge.
        #[default]
        HttpEnabled = ("HTTP_ENABLED", 1),
        /// HTTP bridge requests are refused.
        HttpDisabled = ("HTTP_DISABLED", 2),
    }
}

proto3_enum! {
    /// How much the service logs about a registry's or device's activity.
    pub enum LogLevel {
        /// Not set: the registry's level applies.
        LogLevelUnspecified = ("LOG_LEVEL_UNSPECIFIED", 0),
        /// No logging.
        None = ("NONE", 10),
        /// Errors only.
        Error = ("ERROR", 20),
        /// Informational events such as connections.
        Info = ("INFO", 30),
        /// Everything, including each message's metadata (never its payload).
        Debug = ("DEBUG", 40),
    }
}

/// Rewrites every enum field of an API answer (`"format": "RSA_PEM"`) as its number
/// (`"format": 3`), for a caller that asked for `$alt=json;enum-encoding=int`. The fields are
/// known by name: no other field of IoT Core's resources shares one with an enum.
pub fn enums_to_numbers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                let number = field.as_str().and_then(|text| enum_number(name, text));
                match number {
                    Some(number) => *field = number.into(),
                    None => enums_to_numbers(field),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(enums_to_numbers),
        _ => {}
    }
}

/// The number of enum value `text` of the field `name`, if that field is an enum.
fn enum_number(name: &str, text: &str) -> Option<i32> {
    let values = match name {
        "mqttEnabledState" => MqttState::NUMBERS,
        "httpEnabledState" => HttpState::NUMBERS,
        "logLevel" => LogLevel::NUMBERS,
        "format" => PublicKeyFormat::NUMBERS,
        "gatewayType" => GatewayType::NUMBERS,
        "gatewayAuthMethod" => GatewayAuthMethod::NUMBERS,
        _ => return None,
    };
    values
        .iter()
        .find(|(n, _)| *n == text)
        .map(|(_, number)| *number)
}

proto3_enum! {
    /// Whether a device is a gateway that speaks for others.
    pub enum GatewayType {
        /// Not set: not a gateway.
        GatewayTypeUnspecified = ("GATEWAY_TYPE_UNSPECIFIED", 0),
        /// The device is a gateway.
        Gateway = ("GATEWAY", 1),
        /// The device is not a gateway.
        NonGateway = ("NON_GATEWAY", 2),
    }
}

proto3_enum! {
    /// How a gateway's devices prove themselves.
    pub enum GatewayAuthMethod {
        /// Not set.
        GatewayAuthMethodUnspecified = ("GATEWAY_AUTH_METHOD_UNSPECIFIED", 0),
        /// Being bound to the gateway is enough.
        AssociationOnly = ("ASSOCIATION_ONLY", 1),
        /// Each device's own token is needed.
        DeviceAuthTokenOnly = ("DEVICE_AUTH_TOKEN_ONLY", 2),
        /// Both.
        AssociationAndDeviceAuthToken = ("ASSOCIATION_AND_DEVICE_AUTH_TOKEN", 3),
    }
}

/// `gatewayConfig` of a device.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayConfig {
    /// Gateway or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_type: Option<GatewayType>,
    /// How its devices authenticate, for a gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_auth_method: Option<GatewayAuthMethod>,
    /// Output only: the gateway the device last spoke through, by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_accessed_gateway_id: Option<String>,
    /// Output only: when it last spoke through a gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_accessed_gateway_time: Option<Timestamp>,
}

impl GatewayConfig {
    /// Whether this makes the device a gateway.
    pub fn is_gateway(&self) -> bool {
        self.gateway_type == Some(GatewayType::Gateway)
    }

    /// What a gateway's devices must show to be attached: unset means association only, as
    /// in IoT Core.
    pub fn auth_method(&self) -> GatewayAuthMethod {
        match self.gateway_auth_method {
            None | Some(GatewayAuthMethod::GatewayAuthMethodUnspecified) => {
                GatewayAuthMethod::AssociationOnly
            }
            Some(method) => method,
        }
    }
}

impl GatewayAuthMethod {
    /// Whether the device must be bound to the gateway.
    pub fn needs_binding(self) -> bool {
        !matches!(self, GatewayAuthMethod::DeviceAuthTokenOnly)
    }

    /// Whether the device must show its own token.
    pub fn needs_device_token(self) -> bool {
        matches!(
            self,
            GatewayAuthMethod::DeviceAuthTokenOnly
                | GatewayAuthMethod::AssociationAndDeviceAuthToken
        )
    }
}

/// The body of `:bindDeviceToGateway` and `:unbindDeviceFromGateway`: each by id or numeric id.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BindDeviceToGatewayRequest {
    /// The gateway.
    #[serde(default)]
    pub gateway_id: String,
    /// The device.
    #[serde(default)]
    pub device_id: String,
}

/// `mqttConfig` of a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MqttConfig {
    /// On or off.
    #[serde(default)]
    pub mqtt_enabled_state: MqttState,
}

/// `httpConfig` of a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpConfig {
    /// On or off.
    #[serde(default)]
    pub http_enabled_state: HttpState,
}

/// Where telemetry with a given subfolder goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventNotificationConfig {
    /// The subfolder this config catches; empty catches every event no other config matches.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subfolder_matches: String,
    /// The topic, `projects/{p}/topics/{t}`.
    pub pubsub_topic_name: TopicName,
}

/// Where state updates are published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateNotificationConfig {
    /// The topic, `projects/{p}/topics/{t}`.
    pub pubsub_topic_name: TopicName,
}

/// A device registry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistry {
    /// The registry id (required on create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RegistryId>,
    /// The full resource name (output only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Telemetry routing, first exact subfolder match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_notification_configs: Vec<EventNotificationConfig>,
    /// State routing; absent or an empty topic means state is only stored.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "state_config_or_empty"
    )]
    pub state_notification_config: Option<StateNotificationConfig>,
    /// MQTT on or off.
    #[serde(default)]
    pub mqtt_config: MqttConfig,
    /// HTTP on or off.
    #[serde(default)]
    pub http_config: HttpConfig,
    /// Logging detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
}

/// Reads `stateNotificationConfig`, taking `{}` or `{"pubsubTopicName": ""}` as "none" so that
/// tools can clear it the way IoT Core allowed.
fn state_config_or_empty<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<StateNotificationConfig>, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        #[serde(default)]
        pubsub_topic_name: String,
    }
    let raw: Option<Raw> = Option::deserialize(d)?;
    match raw {
        Some(raw) if !raw.pubsub_topic_name.is_empty() => {
            let topic =
                TopicName::parse(&raw.pubsub_topic_name).map_err(serde::de::Error::custom)?;
            Ok(Some(StateNotificationConfig {
                pubsub_topic_name: topic,
            }))
        }
        _ => Ok(None),
    }
}

impl DeviceRegistry {
    /// Normalises unspecified switches to their IoT Core defaults and checks the rules a
    /// registry must obey: at most 10 event configs, no two with the same subfolder.
    pub fn normalise_and_validate(&mut self) -> Result<(), FieldViolation> {
        if self.mqtt_config.mqtt_enabled_state == MqttState::MqttStateUnspecified {
            self.mqtt_config.mqtt_enabled_state = MqttState::MqttEnabled;
        }
        if self.http_config.http_enabled_state == HttpState::HttpStateUnspecified {
            self.http_config.http_enabled_state = HttpState::HttpEnabled;
        }
        if self.log_level == Some(LogLevel::LogLevelUnspecified) {
            self.log_level = None;
        }
        let configs = &self.event_notification_configs;
        if configs.len() > MAX_EVENT_NOTIFICATION_CONFIGS {
            return Err(FieldViolation::new(
                "eventNotificationConfigs",
                format!(
                    "at most {MAX_EVENT_NOTIFICATION_CONFIGS} configs are allowed, got {}",
                    configs.len()
                ),
            ));
        }
        for (i, config) in configs.iter().enumerate() {
            let field = format!("eventNotificationConfigs[{i}].subfolderMatches");
            if configs[..i]
                .iter()
                .any(|c| c.subfolder_matches == config.subfolder_matches)
            {
                let what = if config.subfolder_matches.is_empty() {
                    "only one config may catch all subfolders (an empty subfolderMatches)".into()
                } else {
                    format!(
                        "subfolder `{}` is matched by an earlier config already",
                        config.subfolder_matches
                    )
                };
                return Err(FieldViolation::new(field, what));
            }
            if config.subfolder_matches.len() > 256 {
                return Err(FieldViolation::new(field, "must be at most 256 characters"));
            }
        }
        Ok(())
    }
}

/// A public key as uploaded: its format and its PEM text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeyCredential {
    /// The encoding of `key`.
    pub format: PublicKeyFormat,
    /// The PEM text.
    pub key: String,
}

/// One device credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCredential {
    /// The public key.
    pub public_key: PublicKeyCredential,
    /// After this instant the credential no longer verifies tokens. The Unix epoch, which IoT
    /// Core returned for "never", reads as no expiry.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "expiry_or_never"
    )]
    pub expiration_time: Option<Timestamp>,
}

fn expiry_or_never<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    let time: Option<Timestamp> = Option::deserialize(d)?;
    Ok(time.filter(|t| *t != Timestamp::UNIX_EPOCH))
}

/// The error a device last caused, as `google.rpc.Status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcStatus {
    /// The numeric google.rpc.Code.
    #[serde(default)]
    pub code: i32,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A config version sent to a device.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceConfig {
    /// The version, starting at 1; 0 means the device has no config yet.
    #[serde(with = "proto3::int64", default)]
    pub version: u64,
    /// When the operator set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_update_time: Option<Timestamp>,
    /// When the device acknowledged it (MQTT only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_ack_time: Option<Timestamp>,
    /// The config payload.
    #[serde(with = "proto3::bytes", default)]
    pub binary_data: Vec<u8>,
}

/// A state a device reported.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceState {
    /// When the service received it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<Timestamp>,
    /// The state payload.
    #[serde(with = "proto3::bytes", default)]
    pub binary_data: Vec<u8>,
}

/// A device.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// The device id (required on create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<DeviceId>,
    /// The full resource name (output only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The numeric id (output only), as a decimal string.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "proto3::opt_int64"
    )]
    pub num_id: Option<u64>,
    /// Up to three public keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<DeviceCredential>,
    /// Output only: the last MQTT PINGREQ or PUBLISH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Timestamp>,
    /// Output only: the last telemetry event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_time: Option<Timestamp>,
    /// Output only: the last state update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state_time: Option<Timestamp>,
    /// Output only: the last config acknowledgement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_config_ack_time: Option<Timestamp>,
    /// Output only: the last time a config was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_config_send_time: Option<Timestamp>,
    /// A blocked device is refused on every request and connection.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocked: bool,
    /// Output only: when the last error happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_time: Option<Timestamp>,
    /// Output only: the last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_status: Option<RpcStatus>,
    /// The latest config (output only except for its data on create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<DeviceConfig>,
    /// The latest state (output only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DeviceState>,
    /// Logging detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
    /// Operator-defined key/value pairs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Whether the device is a gateway, how its devices authenticate, and the gateway the
    /// device last spoke through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_config: Option<GatewayConfig>,
}

impl Device {
    /// Checks the credential count and the metadata limits (key shape, value and total sizes,
    /// number of pairs). Key material is checked by the caller, which owns the crypto.
    pub fn validate(&self) -> Result<(), FieldViolation> {
        if self.credentials.len() > MAX_CREDENTIALS {
            return Err(FieldViolation::new(
                "credentials",
                format!(
                    "a device may hold at most {MAX_CREDENTIALS} credentials, got {}",
                    self.credentials.len()
                ),
            ));
        }
        validate_metadata(&self.metadata)
    }
}

/// The metadata rules: at most 500 pairs; keys of 1 to 128 letters, digits, `-` and `_`, not
/// starting with `goog`; values up to 32 KB; all keys and values together up to 256 KB.
pub fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<(), FieldViolation> {
    if metadata.len() > MAX_METADATA_PAIRS {
        return Err(FieldViolation::new(
            "metadata",
            format!(
                "at most {MAX_METADATA_PAIRS} keys are allowed, got {}",
                metadata.len()
            ),
        ));
    }
    let mut total = 0;
    for (key, value) in metadata {
        let field = format!("metadata[{key:?}]");
        let key_ok = (1..=MAX_METADATA_KEY_LEN).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !key_ok {
            return Err(FieldViolation::new(
                field,
                format!("keys must be 1 to {MAX_METADATA_KEY_LEN} letters, digits, - and _"),
            ));
        }
        if key.starts_with("goog") {
            return Err(FieldViolation::new(
                field,
                "keys must not start with `goog` (reserved by Google)",
            ));
        }
        if value.len() > MAX_METADATA_VALUE_BYTES {
            return Err(FieldViolation::new(
                field,
                format!(
                    "values must be at most {MAX_METADATA_VALUE_BYTES} bytes, got {}",
                    value.len()
                ),
            ));
        }
        total += key.len() + value.len();
    }
    if total > MAX_METADATA_TOTAL_BYTES {
        return Err(FieldViolation::new(
            "metadata",
            format!(
                "keys and values together must be at most {MAX_METADATA_TOTAL_BYTES} bytes, got {total}"
            ),
        ));
    }
    Ok(())
}

/// `ListDeviceRegistriesResponse`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListDeviceRegistriesResponse {
    /// This page.
    #[serde(default)]
    pub device_registries: Vec<DeviceRegistry>,
    /// Pass as `pageToken` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}

/// `ListDevicesResponse`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListDevicesResponse {
    /// This page.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Pass as `pageToken` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}

/// `ListDeviceConfigVersionsResponse`: newest first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListDeviceConfigVersionsResponse {
    /// The kept versions.
    #[serde(default)]
    pub device_configs: Vec<DeviceConfig>,
}

/// `ListDeviceStatesResponse`: newest first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListDeviceStatesResponse {
    /// The kept states.
    #[serde(default)]
    pub device_states: Vec<DeviceState>,
}

/// `ModifyCloudToDeviceConfigRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModifyCloudToDeviceConfigRequest {
    /// 0 for an unconditional update; otherwise the version the update must replace.
    #[serde(with = "proto3::int64", default)]
    pub version_to_update: u64,
    /// The new config.
    #[serde(with = "proto3::bytes", default)]
    pub binary_data: Vec<u8>,
}

/// `SendCommandToDeviceRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendCommandToDeviceRequest {
    /// The command, as the device receives it.
    #[serde(with = "proto3::bytes", default)]
    pub binary_data: Vec<u8>,
    /// Sent to `/devices/{d}/commands/{subfolder}` when given; `/devices/{d}/commands` if not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subfolder: Option<String>,
    /// An extension beside IoT Core's API: when the device is not connected and subscribed,
    /// keep the command this long for it instead of refusing (`"600s"`).
    #[serde(
        with = "crate::proto3::opt_duration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<std::time::Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn enums_read_by_name_or_by_iot_cores_number_and_write_by_name() {
        // The numbers of google/cloud/iot/v1/resources.proto, as Google's clients send them.
        fn check<T>(table: &[(&str, i64, T)])
        where
            T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
        {
            for (name, number, value) in table {
                assert_eq!(serde_json::from_value::<T>(json!(name)).unwrap(), *value);
                assert_eq!(serde_json::from_value::<T>(json!(number)).unwrap(), *value);
                assert_eq!(serde_json::to_value(value).unwrap(), json!(name));
            }
        }
        check(&[
            ("MQTT_STATE_UNSPECIFIED", 0, MqttState::MqttStateUnspecified),
            ("MQTT_ENABLED", 1, MqttState::MqttEnabled),
            ("MQTT_DISABLED", 2, MqttState::MqttDisabled),
        ]);
        check(&[
            ("HTTP_STATE_UNSPECIFIED", 0, HttpState::HttpStateUnspecified),
            ("HTTP_ENABLED", 1, HttpState::HttpEnabled),
            ("HTTP_DISABLED", 2, HttpState::HttpDisabled),
        ]);
        check(&[
            ("LOG_LEVEL_UNSPECIFIED", 0, LogLevel::LogLevelUnspecified),
            ("NONE", 10, LogLevel::None),
            ("ERROR", 20, LogLevel::Error),
            ("INFO", 30, LogLevel::Info),
            ("DEBUG", 40, LogLevel::Debug),
        ]);
        check(&[
            ("RSA_X509_PEM", 1, PublicKeyFormat::RsaX509Pem),
            ("ES256_PEM", 2, PublicKeyFormat::Es256Pem),
            ("RSA_PEM", 3, PublicKeyFormat::RsaPem),
            ("ES256_X509_PEM", 4, PublicKeyFormat::Es256X509Pem),
        ]);
        check(&[
            (
                "GATEWAY_TYPE_UNSPECIFIED",
                0,
                GatewayType::GatewayTypeUnspecified,
            ),
            ("GATEWAY", 1, GatewayType::Gateway),
            ("NON_GATEWAY", 2, GatewayType::NonGateway),
        ]);
        check(&[
            (
                "GATEWAY_AUTH_METHOD_UNSPECIFIED",
                0,
                GatewayAuthMethod::GatewayAuthMethodUnspecified,
            ),
            ("ASSOCIATION_ONLY", 1, GatewayAuthMethod::AssociationOnly),
            (
                "DEVICE_AUTH_TOKEN_ONLY",
                2,
                GatewayAuthMethod::DeviceAuthTokenOnly,
            ),
            (
                "ASSOCIATION_AND_DEVICE_AUTH_TOKEN",
                3,
                GatewayAuthMethod::AssociationAndDeviceAuthToken,
            ),
        ]);
    }

    #[test]
    fn an_answer_can_carry_enums_as_numbers() {
        let mut answer = json!({
            "deviceRegistries": [{
                "id": "reg-1",
                "mqttConfig": {"mqttEnabledState": "MQTT_DISABLED"},
                "httpConfig": {"httpEnabledState": "HTTP_ENABLED"},
                "logLevel": "DEBUG",
            }],
            "devices": [
                {"credentials": [{"publicKey": {"format": "ES256_PEM", "key": "k"}}]},
                {
                    "id": "gw-1",
                    "gatewayConfig": {
                        "gatewayType": "GATEWAY",
                        "gatewayAuthMethod": "ASSOCIATION_AND_DEVICE_AUTH_TOKEN",
                        "lastAccessedGatewayId": "GATEWAY",
                    },
                },
                {"gatewayConfig": {"gatewayType": "NON_GATEWAY"}},
            ],
            "error": {"status": "NOT_FOUND", "message": "DEBUG"},
        });
        enums_to_numbers(&mut answer);
        assert_eq!(
            answer,
            json!({
                "deviceRegistries": [{
                    "id": "reg-1",
                    "mqttConfig": {"mqttEnabledState": 2},
                    "httpConfig": {"httpEnabledState": 1},
                    "logLevel": 40,
                }],
                "devices": [
                    {"credentials": [{"publicKey": {"format": 2, "key": "k"}}]},
                    {
                        "id": "gw-1",
                        "gatewayConfig": {
                            "gatewayType": 1,
                            "gatewayAuthMethod": 3,
                            // A string field whose text happens to be an enum name stays.
                            "lastAccessedGatewayId": "GATEWAY",
                        },
                    },
                    {"gatewayConfig": {"gatewayType": 2}},
                ],
                "error": {"status": "NOT_FOUND", "message": "DEBUG"},
            })
        );
    }

    #[test]
    fn an_unknown_enum_value_is_refused_naming_the_valid_ones() {
        for bad in [json!(5), json!("RSA"), json!(-1), json!(1.5), json!(true)] {
            let err = serde_json::from_value::<PublicKeyFormat>(bad.clone()).unwrap_err();
            assert!(err.to_string().contains("RSA_PEM"), "{bad}: {err}");
        }
        let err = serde_json::from_value::<MqttState>(json!(7)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`7` is not a MqttState; use one of MQTT_STATE_UNSPECIFIED (0), MQTT_ENABLED (1), MQTT_DISABLED (2)"
        );
    }

    fn topic(t: &str) -> TopicName {
        TopicName::parse(&format!("projects/demo-project/topics/{t}")).unwrap()
    }

    #[test]
    fn a_registry_reads_and_writes_iot_cores_json() {
        let json = serde_json::json!({
            "id": "reg-1",
            "eventNotificationConfigs": [
                {"subfolderMatches": "alerts", "pubsubTopicName": "projects/demo-project/topics/alerts"},
                {"pubsubTopicName": "projects/demo-project/topics/events"}
            ],
            "stateNotificationConfig": {"pubsubTopicName": "projects/demo-project/topics/state"},
            "httpConfig": {"httpEnabledState": "HTTP_DISABLED"},
            "someFutureField": 1
        });
        let mut registry: DeviceRegistry = serde_json::from_value(json).unwrap();
        registry.normalise_and_validate().unwrap();
        assert_eq!(
            registry.event_notification_configs[1].pubsub_topic_name,
            topic("events")
        );
        assert_eq!(
            registry.http_config.http_enabled_state,
            HttpState::HttpDisabled
        );
        assert_eq!(
            registry.mqtt_config.mqtt_enabled_state,
            MqttState::MqttEnabled
        );
        let out = serde_json::to_value(&registry).unwrap();
        assert_eq!(out["mqttConfig"]["mqttEnabledState"], "MQTT_ENABLED");
        assert_eq!(
            out["eventNotificationConfigs"][0]["subfolderMatches"],
            "alerts"
        );
        assert!(
            out["eventNotificationConfigs"][1]
                .get("subfolderMatches")
                .is_none()
        );
    }

    #[test]
    fn an_empty_state_topic_clears_the_state_config() {
        for json in [
            serde_json::json!({"stateNotificationConfig": {"pubsubTopicName": ""}}),
            serde_json::json!({"stateNotificationConfig": {}}),
            serde_json::json!({"stateNotificationConfig": null}),
        ] {
            let registry: DeviceRegistry = serde_json::from_value(json).unwrap();
            assert_eq!(registry.state_notification_config, None);
        }
        let bad = serde_json::json!({"stateNotificationConfig": {"pubsubTopicName": "state"}});
        assert!(serde_json::from_value::<DeviceRegistry>(bad).is_err());
    }

    #[test]
    fn registry_rules_name_the_field() {
        let config = |s: &str| EventNotificationConfig {
            subfolder_matches: s.into(),
            pubsub_topic_name: topic("t-1"),
        };
        let cases: Vec<(Vec<EventNotificationConfig>, Option<&str>)> = vec![
            (vec![config("a"), config("")], None),
            ((0..10).map(|i| config(&format!("s{i}"))).collect(), None),
            (
                (0..11).map(|i| config(&format!("s{i}"))).collect(),
                Some("eventNotificationConfigs"),
            ),
            (
                vec![config(""), config("")],
                Some("eventNotificationConfigs[1].subfolderMatches"),
            ),
            (
                vec![config("a"), config("b"), config("a")],
                Some("eventNotificationConfigs[2].subfolderMatches"),
            ),
            (
                vec![config(&"x".repeat(257))],
                Some("eventNotificationConfigs[0].subfolderMatches"),
            ),
        ];
        for (configs, field) in cases {
            let mut registry = DeviceRegistry {
                event_notification_configs: configs,
                ..Default::default()
            };
            let result = registry.normalise_and_validate();
            assert_eq!(result.err().map(|v| v.field), field.map(String::from));
        }
    }

    #[test]
    fn a_device_reads_and_writes_iot_cores_json() {
        let json = serde_json::json!({
            "id": "dev-1",
            "numId": "2820826361193805",
            "credentials": [{
                "publicKey": {"format": "RSA_X509_PEM", "key": "-----BEGIN CERTIFICATE-----"},
                "expirationTime": "1970-01-01T00:00:00Z"
            }],
            "blocked": true,
            "metadata": {"site": "barn"},
            "config": {"version": 3, "binaryData": "aGk"}
        });
        let device: Device = serde_json::from_value(json).unwrap();
        assert_eq!(device.num_id, Some(2820826361193805));
        assert_eq!(device.credentials[0].expiration_time, None);
        assert_eq!(device.config.as_ref().unwrap().binary_data, b"hi");
        let out = serde_json::to_value(&device).unwrap();
        assert_eq!(out["numId"], "2820826361193805");
        assert_eq!(out["config"]["version"], "3");
        assert_eq!(out["config"]["binaryData"], "aGk=");
        assert_eq!(out["credentials"][0]["publicKey"]["format"], "RSA_X509_PEM");
        let unblocked = serde_json::to_value(Device::default()).unwrap();
        assert!(
            unblocked.get("blocked").is_none(),
            "false is the default and is left out"
        );
    }

    #[test]
    fn wrong_field_types_are_refused() {
        for json in [
            serde_json::json!({"blocked": "yes"}),
            serde_json::json!({"metadata": ["a"]}),
            serde_json::json!({"credentials": [{"publicKey": {"format": "RSA_DER", "key": "x"}}]}),
            serde_json::json!({"id": "x"}),
            serde_json::json!({"config": {"binaryData": "!!"}}),
        ] {
            assert!(
                serde_json::from_value::<Device>(json.clone()).is_err(),
                "{json}"
            );
        }
    }

    #[test]
    fn metadata_rules_hold() {
        let map = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect()
        };
        let ok = |m: BTreeMap<String, String>| validate_metadata(&m).is_ok();
        assert!(ok(map(&[
            ("site", "barn".into()),
            ("floor_2-b", String::new())
        ])));
        assert!(ok(map(&[(&"k".repeat(128), "v".into())])));
        assert!(!ok(map(&[(&"k".repeat(129), "v".into())])));
        assert!(!ok(map(&[("", "v".into())])));
        assert!(!ok(map(&[("a b", "v".into())])));
        assert!(!ok(map(&[("googkey", "v".into())])));
        assert!(ok(map(&[("big", "v".repeat(32 * 1024))])));
        assert!(!ok(map(&[("big", "v".repeat(32 * 1024 + 1))])));
        let many: BTreeMap<String, String> =
            (0..501).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(!ok(many));
        let heavy: BTreeMap<String, String> = (0..9)
            .map(|i| (format!("k{i}"), "v".repeat(30 * 1024)))
            .collect();
        let err = validate_metadata(&heavy).unwrap_err();
        assert_eq!(err.field, "metadata");
        let err = validate_metadata(&map(&[("a b", "v".into())])).unwrap_err();
        assert_eq!(err.field, "metadata[\"a b\"]");
    }

    #[test]
    fn a_device_may_hold_at_most_three_credentials() {
        let credential = DeviceCredential {
            public_key: PublicKeyCredential {
                format: PublicKeyFormat::RsaPem,
                key: String::new(),
            },
            expiration_time: None,
        };
        let mut device = Device {
            credentials: vec![credential; 3],
            ..Default::default()
        };
        assert!(device.validate().is_ok());
        device.credentials.push(device.credentials[0].clone());
        assert_eq!(device.validate().unwrap_err().field, "credentials");
    }

    #[test]
    fn a_modify_request_accepts_the_version_as_string_or_number() {
        for json in [
            r#"{"versionToUpdate":"4","binaryData":"aGk="}"#,
            r#"{"versionToUpdate":4,"binaryData":"aGk"}"#,
        ] {
            let req: ModifyCloudToDeviceConfigRequest = serde_json::from_str(json).unwrap();
            assert_eq!(req.version_to_update, 4);
            assert_eq!(req.binary_data, b"hi");
        }
        let req: ModifyCloudToDeviceConfigRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(req.version_to_update, 0);
    }
}
