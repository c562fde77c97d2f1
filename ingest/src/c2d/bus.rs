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
    /// Commands were queued for the device this instance holds: its connection reads its queue
    /// again (a command queued while the device was subscribing is not left waiting).
    #[serde(rename_all = "camelCase")]
    CommandsQueued { registry: String, device: String },
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_note_survives_the_json_the_pubsub_bus_carries() {
        let notes = [
            Note::ConfigChanged {
                registry: "projects/p/locations/l/registries/r".into(),
                device: "4086446103292110".into(),
                config: DeviceConfig {
                    version: 7,
                    binary_data: b"\x00on".to_vec(),
                    ..DeviceConfig::default()
                },
            },
            Note::Command {
                id: 9,
                registry: "projects/p/locations/l/registries/r".into(),
                device: "dev-1".into(),
                subfolder: Some("power".into()),
                data: vec![0, 255, 1],
            },
            Note::CommandDone {
                id: 9,
                outcome: Err(CommandFailure::NotAcknowledged {
                    waited: Duration::from_secs(30),
                    sends: 3,
                }),
            },
            Note::Replaced {
                registry: "r".into(),
                device: "d".into(),
                generation: 4,
            },
            Note::CommandsQueued {
                registry: "projects/p/locations/l/registries/r".into(),
                device: "dev-1".into(),
            },
        ];
        for note in notes {
            let envelope = Envelope {
                from: "ingest-a".into(),
                to: Some("ingest-b".into()),
                note,
            };
            let wire = serde_json::to_vec(&envelope).unwrap();
            assert_eq!(serde_json::from_slice::<Envelope>(&wire).unwrap(), envelope);
        }
    }

    #[tokio::test]
    async fn the_in_process_bus_takes_broadcasts_and_refuses_notes_for_other_instances() {
        let note = Note::DeviceChanged {
            registry: "r".into(),
            device: "d".into(),
        };
        let mut envelope = Envelope {
            from: "ingest-a".into(),
            to: None,
            note,
        };
        assert!(InProcess.send(&envelope).await.is_ok());
        envelope.to = Some("ingest-b".into());
        let refused = InProcess.send(&envelope).await.unwrap_err();
        assert!(
            refused.to_string().contains("--delivery-topic"),
            "{refused}"
        );
        assert!(!InProcess.reaches_others());
    }
}
