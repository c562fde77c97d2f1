//! A device admitted for one protocol: the handle a transport holds for as long as it serves that
//! device (one HTTP request, or a whole MQTT connection). Everything the device does goes through
//! it, so counting, bookkeeping and last errors happen in one place whatever the protocol.

use std::sync::Arc;

use jiff::Timestamp;
use shared::Code;
use shared::resources::DeviceConfig;

use super::{Bridge, Protocol, Refusal};
use crate::auth::AuthenticatedDevice;
use crate::registry::{Activity, QueuedCommand};

/// A proved, admitted device. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeviceSession {
    bridge: Bridge,
    /// Shared with the token cache: cloning the device's names for every request cost four
    /// allocations.
    device: Arc<AuthenticatedDevice>,
    protocol: Protocol,
}

impl DeviceSession {
    pub(super) fn new(
        bridge: Bridge,
        device: Arc<AuthenticatedDevice>,
        protocol: Protocol,
    ) -> Self {
        Self {
            bridge,
            device,
            protocol,
        }
    }

    /// The device the token proved.
    pub fn device(&self) -> &AuthenticatedDevice {
        &self.device
    }

    /// The bridge it was admitted by.
    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    /// Publishes a telemetry event to the topic its subfolder routes to, with IoT Core's
    /// attributes; returns once Pub/Sub has accepted it.
    pub async fn publish_event(
        &self,
        subfolder: Option<&str>,
        data: Vec<u8>,
    ) -> Result<(), Refusal> {
        self.bridge
            .publish_event(self.protocol, &self.device, subfolder, data)
            .await
    }

    /// Stores a state report and publishes it to the registry's state topic, if it has one.
    pub async fn set_state(&self, data: Vec<u8>) -> Result<(), Refusal> {
        self.bridge
            .set_state(self.protocol, &self.device, data)
            .await
    }

    /// The latest config; `local_version` above it is refused as out of range.
    pub async fn config(&self, local_version: u64) -> Result<DeviceConfig, Refusal> {
        self.bridge
            .config(self.protocol, &self.device, local_version)
            .await
    }

    /// The queued commands still to deliver, oldest first, after recording that the device has
    /// every one up to `ack`.
    pub async fn pending_commands(&self, ack: Option<u64>) -> Result<Vec<QueuedCommand>, Refusal> {
        self.bridge
            .pending_commands(self.protocol, &self.device, ack)
            .await
    }

    /// A refusal the transport made itself (a body it cannot read, a topic the device may not
    /// use): counted, and kept as the device's last error.
    pub fn refuse(&self, code: Code, reason: &'static str, message: impl Into<String>) -> Refusal {
        let refusal = Refusal::new(code, reason, message);
        self.bridge.refused(self.protocol, &self.device, &refusal);
        refusal
    }

    /// Records a sign of life that carried no message (MQTT's PINGREQ).
    pub fn heartbeat(&self) {
        self.note(Activity {
            last_heartbeat_time: Some(Timestamp::now()),
            ..Activity::default()
        });
    }

    /// Records that a config was sent to the device without being asked (MQTT's push).
    pub fn config_sent(&self) {
        self.note(Activity {
            last_config_send_time: Some(Timestamp::now()),
            ..Activity::default()
        });
    }

    /// Records that the device acknowledged config `version`.
    pub fn config_acked(&self, version: u64) {
        self.note(Activity {
            last_config_ack_time: Some(Timestamp::now()),
            config_ack_version: Some(version),
            ..Activity::default()
        });
    }

    fn note(&self, activity: Activity) {
        self.bridge.note(&self.device, activity);
    }
}
