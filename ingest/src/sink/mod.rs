//! Where accepted device messages go: Google Cloud Pub/Sub (`pubsub`, real or the emulator), or,
//! with no Pub/Sub configured, a local JSON-lines file (`file`) so the whole path works with
//! nothing but the Rust toolchain. A device is answered `200` only after `publish` returned `Ok`.
//! An `Err` means the message was not confirmed and the device must retry; after a timeout it may
//! still have arrived, so consumers see at-least-once delivery, as with IoT Core itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use shared::TopicName;

pub mod file;
pub mod pubsub;

/// One message for a topic: the device payload and IoT Core's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The payload, exactly as the device sent it (decoded from base64).
    pub data: Vec<u8>,
    /// `deviceId`, `deviceNumId`, `deviceRegistryId`, `deviceRegistryLocation`, `projectId`,
    /// and `subFolder` when there is one.
    pub attributes: Attributes,
}

/// A message's attributes: those every message of its device carries, built once and shared,
/// and its `subFolder`, if any. Building a map of IoT Core's five device attributes for each
/// message cost a dozen allocations (BENCHMARKS.md).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    device: Arc<BTreeMap<String, String>>,
    sub_folder: Option<String>,
}

/// The attribute that carries an event's subfolder.
const SUB_FOLDER: &str = shared::attributes::SUB_FOLDER;

impl Attributes {
    /// The device's shared attributes, plus `subFolder` when given.
    pub fn new(device: Arc<BTreeMap<String, String>>, sub_folder: Option<String>) -> Self {
        Self { device, sub_folder }
    }

    /// Every attribute, the device's first, in key order (`subFolder` sorts after them all).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let device = self.device.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        device.chain(self.sub_folder.as_deref().map(|v| (SUB_FOLDER, v)))
    }

    /// The part shared by every message of the device.
    #[cfg(test)]
    pub(crate) fn device_map(&self) -> &BTreeMap<String, String> {
        &self.device
    }

    /// The attributes as one map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl From<BTreeMap<String, String>> for Attributes {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self::new(Arc::new(map), None)
    }
}

/// Why a message was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The destination cannot take messages right now (unreachable, timed out, overloaded);
    /// the device should retry later.
    #[error("the message could not be delivered to {topic} in time: {detail}")]
    Unavailable {
        /// The topic.
        topic: String,
        /// What went wrong.
        detail: String,
    },
    /// The local message file could not be written (a full disk, a removed directory); the
    /// device should retry later.
    #[error("the message for {topic} could not be written to the local message file: {detail}")]
    NotWritten {
        /// The topic.
        topic: String,
        /// What went wrong.
        detail: String,
    },
    /// The topic does not exist; retrying will not help until an operator creates it.
    #[error(
        "Pub/Sub topic {0} does not exist; create it or fix the registry's notification config"
    )]
    TopicNotFound(String),
    /// The destination refused the message for another lasting reason (permissions, size).
    #[error("Pub/Sub refused the message for {topic}: {detail}")]
    Rejected {
        /// The topic.
        topic: String,
        /// What Pub/Sub said.
        detail: String,
    },
}

/// A destination for device messages.
#[async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Delivers one message; resolves only once the destination has accepted it (or failed).
    async fn publish(&self, topic: &TopicName, message: Message) -> Result<(), SinkError>;

    /// Sends whatever is batched and waits (bounded) for it; called once at shutdown.
    async fn flush(&self);
}
