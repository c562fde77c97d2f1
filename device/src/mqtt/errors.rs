//! What the bridge says on `/devices/{d}/errors`, the topic IoT Core's bridge told a device why
//! it refused something on. A refused PUBLISH gets no PUBACK, so without this topic the agent
//! would only learn of the refusal when its PUBACK timeout ran out; with it, the publish waiting
//! for that packet id fails at once with the bridge's reason. The body is IoT Core's JSON,
//! `{"error_type", "description", "device_id", "message_id"}`: `message_id` is the packet id of
//! the refused PUBLISH (0 when the error is about no message, e.g. a connection being closed),
//! `device_id` the device it is about (a device behind a gateway, or the gateway itself), and
//! `error_type` the bridge's reason (`RATE_LIMITED`, `GATEWAY_NOT_BOUND` …), which the agent acts
//! on, never the description, as over HTTPS it acts on the `ErrorInfo` reason.

use serde::Deserialize;

use crate::transport::Failure;

/// One message on the errors topic.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BridgeError {
    /// The bridge's reason, e.g. `RATE_LIMITED`.
    #[serde(default)]
    pub error_type: String,
    /// For people.
    #[serde(default)]
    pub description: String,
    /// The device it is about.
    #[serde(default)]
    pub device_id: String,
    /// The packet id of the refused PUBLISH; 0 for none.
    #[serde(default)]
    pub message_id: u64,
}

impl BridgeError {
    /// The message in `payload`; `None` when it is not the bridge's JSON.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        serde_json::from_slice(payload).ok()
    }

    /// The packet id of the PUBLISH it refuses, if it refuses one.
    pub fn packet_id(&self) -> Option<u16> {
        u16::try_from(self.message_id).ok().filter(|id| *id != 0)
    }

    /// What the refusal means for the message, sorted as the HTTPS path sorts the same refusal
    /// (`transport::classify`): retried with backoff, refused until someone fixes something
    /// (kept and retried every `max_backoff`), or dropped because it can never be accepted.
    pub fn failure(&self) -> Failure {
        let reason = format!("{}: {}", self.error_type, self.description);
        match self.error_type.as_str() {
            // The service's own trouble, or a limit that passes; over MQTT an expired token is
            // the connection's, and the connection is renewed with a fresh one.
            "RATE_LIMITED"
            | "PUBSUB_UNAVAILABLE"
            | "STORAGE_UNAVAILABLE"
            | "REGISTRY_UNAVAILABLE"
            | "INTERNAL"
            | "TOKEN_EXPIRED"
            // The agent attaches the device again.
            | "GATEWAY_DEVICE_NOT_ATTACHED"
            | "GATEWAY_ATTACH_LIMIT"
            // Why the bridge closes a connection that a new one mends: the server stopping,
            // the token's end, a missed keepalive, idleness, another connection of the device.
            | "MQTT_SHUTDOWN"
            | "MQTT_TOKEN_EXPIRED"
            | "MQTT_KEEPALIVE"
            | "MQTT_IDLE"
            | "MQTT_REPLACED" => Failure::Transient {
                reason,
                after: None,
            },
            "TOKEN_ISSUED_IN_FUTURE" => Failure::ClockWrong { reason },
            // This message can never be accepted (HTTPS answers 400 or 413).
            "PAYLOAD_TOO_LARGE" | "TOO_LARGE" | "BAD_SUBFOLDER" | "MQTT_TOPIC" | "MQTT_MALFORMED" => {
                Failure::Rejected { reason }
            }
            // Blocked, unknown, not bound, no topic, a bad key …: only the operator can fix it.
            _ => Failure::Refused {
                reason,
                info_reason: Some(self.error_type.clone()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(error_type: &str, message_id: u64) -> BridgeError {
        let body = serde_json::json!({
            "error_type": error_type,
            "description": "words for people",
            "device_id": "sensor-1",
            "message_id": message_id,
        });
        BridgeError::parse(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn the_bridges_json_is_read_and_names_the_refused_packet() {
        let refused = error("RATE_LIMITED", 7);
        assert_eq!(refused.device_id, "sensor-1");
        assert_eq!(refused.packet_id(), Some(7));
        assert_eq!(error("DEVICE_BLOCKED", 0).packet_id(), None);
        assert_eq!(error("DEVICE_BLOCKED", 70_000).packet_id(), None);
        assert_eq!(BridgeError::parse(b"not json"), None);
    }

    #[test]
    fn refusals_are_sorted_by_the_error_type_as_over_https() {
        assert!(matches!(
            error("RATE_LIMITED", 1).failure(),
            Failure::Transient { after: None, .. }
        ));
        assert!(matches!(
            error("PUBSUB_UNAVAILABLE", 1).failure(),
            Failure::Transient { .. }
        ));
        assert!(matches!(
            error("MQTT_SHUTDOWN", 0).failure(),
            Failure::Transient { .. }
        ));
        assert!(matches!(
            error("PAYLOAD_TOO_LARGE", 1).failure(),
            Failure::Rejected { .. }
        ));
        let Failure::Refused {
            reason,
            info_reason,
        } = error("GATEWAY_NOT_BOUND", 1).failure()
        else {
            panic!("not bound is for the operator to fix");
        };
        assert_eq!(info_reason.as_deref(), Some("GATEWAY_NOT_BOUND"));
        assert_eq!(reason, "GATEWAY_NOT_BOUND: words for people");
        assert!(matches!(
            error("SOMETHING_NEW", 1).failure(),
            Failure::Refused { .. }
        ));
    }
}
