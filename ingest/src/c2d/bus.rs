//! The delivery bus: how one `ingest serve` reaches the others. A note is either for one instance
//! (a command for the device it holds, the answer to a command, "your connection was replaced")
//! or for all of them (a config changed, a device's keys or blocked flag changed). Two
//! implementations: [`InProcess`], for a single instance, where there is nobody else to tell, and
//! the Pub/Sub bus (`pubsub`), one topic with one subscription per instance.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shared::resources::DeviceConfig;

use super::CommandFailure;

/// What one instance tells another. Registry and device names travel as their strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Note {
    /// The device's config changed (for all): push it to a connection held here.
    #[serde(rename_all = "camelCase")]
    ConfigChanged {
        registry: String,
        /// By id or numeric id, as the admin call named it.
        device: String,
        config: DeviceConfig,
    },
    /// The device's keys or blocked flag changed, or it was deleted (for all): drop its cached
    /// tokens and make its connection check its token again.
    #[serde(rename_all = "camelCase")]
    DeviceChanged { registry: String, device: String },
    /// A newer claim of the fleet took the device (for its previous holder).
    #[serde(rename_all = "camelCase")]
    Replaced {
        registry: String,
        device: String,
        generation: u64,
    },
    /// A command for the device this instance holds; answer with [`Note::CommandDone`].
    #[serde(rename_all = "camelCase")]
    Command {
        id: u64,
        registry: String,
        device: String,
        subfolder: Option<String>,
        #[serde(with = "shared::proto3::bytes")]
        data: Vec<u8>,
    },
    /// How the command `id` ended.
    #[serde(rename_all = "camelCase")]
    CommandDone {
        id: u64,
        outcome: Result<(), CommandFailure>,
    },
}

/// A note with its sender and addressee (`None`: every instance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: String,
    pub to: Option<String>,
    pub note: Note,
}

/// Why a note could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("the delivery bus could not send the note: {0}")]
pub struct BusError(pub String);

/// Reaches the other instances.
#[async_trait]
pub trait Bus: Send + Sync + std::fmt::Debug {
    /// Sends the envelope to its addressee (or to everyone else); returns once the bus took it.
    async fn send(&self, envelope: &Envelope) -> Result<(), BusError>;

    /// Stops receiving and removes what the bus made for this instance (its subscription).
    async fn close(&self);

    /// Whether other instances can be reached at all; without, a claim by another instance is
    /// a stale one (of this process before a restart).
    fn reaches_others(&self) -> bool;
}

/// The bus of a single instance: there are no other instances. Broadcasts reach nobody, and a
/// note for another instance cannot be sent (its claim is stale: that instance is not running).
#[derive(Debug, Default)]
pub struct InProcess;

#[async_trait]
impl Bus for InProcess {
    async fn send(&self, envelope: &Envelope) -> Result<(), BusError> {
        match &envelope.to {
            None => Ok(()),
            Some(to) => Err(BusError(format!(
                "instance `{to}` is not this process, and this server has no delivery bus to \
                 reach others (--delivery-topic)"
            ))),
        }
    }

    async fn close(&self) {}

    fn reaches_others(&self) -> bool {
        false
    }
}
