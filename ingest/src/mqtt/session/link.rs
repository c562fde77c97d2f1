//! One device a connection speaks for: the connection's own device, or one its gateway attached.
//! Each has its own admitted session, fleet claim, subscriptions and config in flight, so config
//! pushes and commands reach an attached device through its gateway's connection exactly as they
//! reach a device connected itself.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use rumqttc::mqttbytes::QoS;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::bridge::DeviceSession;
use crate::c2d::{Attachment, Control};
use crate::mqtt::queued::QueuedCommands;
use crate::mqtt::topics::OwnTopics;

/// A config sent at QoS 1 and not yet acknowledged, kept to be sent again as it was.
#[derive(Debug, Clone)]
pub(super) struct Unacked {
    pub(super) pkid: u16,
    pub(super) version: u64,
    pub(super) payload: bytes::Bytes,
    pub(super) resend_at: Instant,
}

/// The deliveries of every device on the connection, each tagged with its claim's generation;
/// a claim's stream ends with one `None` when the fleet drops it.
pub(super) type Inbox = Pin<Box<dyn Stream<Item = (u64, Option<Control>)> + Send>>;

/// A device the connection speaks for.
pub(super) struct Link {
    pub(super) session: Arc<DeviceSession>,
    pub(super) topics: OwnTopics,
    /// The fleet claim's generation in this process: tells this link's deliveries apart.
    pub(super) generation: u64,
    /// The claim's generation in the fleet's presence records.
    pub(super) fleet_generation: u64,
    pub(super) config_qos: Option<QoS>,
    /// The QoS of the `commands/#` subscription, if there is one.
    pub(super) commands_qos: Option<QoS>,
    /// Sends commands queued for the device; started on the first `commands/#` subscription.
    pub(super) queued: Option<QueuedCommands>,
    pub(super) sent_version: Option<u64>,
    pub(super) unacked: Option<Unacked>,
    /// The device's own token when its gateway attached it with one: checked again when the
    /// device changes.
    pub(super) token: Option<String>,
}

impl Link {
    /// A link for `session`, holding the fleet claim `attachment`, whose deliveries go to the
    /// returned stream.
    pub(super) fn new(
        session: Arc<DeviceSession>,
        attachment: Attachment,
        token: Option<String>,
    ) -> (Self, Inbox) {
        let device = session.device();
        let topics = OwnTopics::new(device.id.as_str(), device.num_id.0);
        let inbox = deliveries(attachment.generation, attachment.inbox);
        let link = Self {
            session,
            topics,
            generation: attachment.generation,
            fleet_generation: attachment.fleet_generation,
            config_qos: None,
            commands_qos: None,
            queued: None,
            sent_version: None,
            unacked: None,
            token,
        };
        (link, inbox)
    }

    /// The fleet claim, as `Fleet::disconnected` takes it.
    pub(super) fn claim(&self) -> (u64, u64) {
        (self.generation, self.fleet_generation)
    }

    /// The device's id.
    pub(super) fn id(&self) -> &str {
        self.session.device().id.as_str()
    }
}

/// `inbox` as a stream of `(generation, delivery)`, ending with `(generation, None)` once.
fn deliveries(generation: u64, inbox: mpsc::Receiver<Control>) -> Inbox {
    Box::pin(futures_util::stream::unfold(
        Some(inbox),
        move |inbox| async move {
            let mut inbox = inbox?;
            match inbox.recv().await {
                Some(control) => Some(((generation, Some(control)), Some(inbox))),
                None => Some(((generation, None), None)),
            }
        },
    ))
}
