//! IoT Core's MQTT bridge as a transport: one long-lived MQTT 3.1.1 connection over TLS (client
//! id = the device's full path, password = its JWT, clean session), kept up by the task in
//! [`connection`]. [`MqttLink`] is the publishing side the sender and the config sync use through
//! [`crate::transport::Transport`]: a publish resolves only when the bridge's PUBACK for it
//! arrives (the bridge sends it after Pub/Sub accepted the message), so the sender acks a reading
//! in the spool exactly as it does after an HTTP `200`. A connection that ends first fails every
//! publish still waiting with [`Failure::Transient`]: the sender keeps those readings and sends
//! them again on the next connection (a duplicate when the PUBACK alone was lost, never a loss).
//!
//! rumqttc 0.25 tells no caller which packet id its publish got; it does report
//! `Outgoing::Publish(pkid)` events in the order it takes requests from its queue (a publish
//! held back by a packet-id collision is reported when it finally goes out, and nothing behind it
//! is taken meanwhile). So [`Session`] queues each caller's waiter in the same lock as its
//! request, moves it to `pkid` when that event comes, and wakes it on the `PubAck` for `pkid`,
//! or fails it when the bridge names `pkid` on the device's errors topic ([`errors`]).
//!
//! As a gateway ([`gateway`]) the same connection carries the events of the devices behind it,
//! each published only once that device is attached on this connection.

pub mod connection;
pub mod errors;
pub mod gateway;
pub mod websocket;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use shared::DeviceName;
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;

use self::gateway::Attachment;
use crate::transport::Failure;

/// How long a publish waits for a connection before it fails (and the sender backs off).
const CONNECTION_WAIT: Duration = Duration::from_secs(10);
/// How long a publish waits for its PUBACK, as an HTTP request waits for its answer. A message
/// the bridge does not acknowledge holds its packet id in rumqttc for good (and would stall the
/// connection when the id comes round again), so a timeout also ends the connection.
pub(crate) const PUBACK_TIMEOUT: Duration = Duration::from_secs(30);
/// IoT Core's limit of messages a connection may publish each second, ingest's default and the
/// agent's (`mqtt.messages_per_second`): the bridge refuses a message over it without a PUBACK,
/// so the agent keeps under it itself.
pub const MESSAGES_PER_SECOND: u32 = 100;

/// IoT Core's topics for one device.
#[derive(Debug, Clone)]
pub struct Topics {
    device: String,
}

impl Topics {
    /// The topics of `name`'s device.
    pub fn new(name: &DeviceName) -> Self {
        Self::of(&name.device.to_string())
    }

    /// The topics of the device with id `device` (one behind this gateway).
    pub fn of(device: &str) -> Self {
        Self {
            device: device.to_owned(),
        }
    }

    /// `/devices/{d}/attach`, where a gateway asks to speak for device `d`.
    pub fn attach(&self) -> String {
        format!("/devices/{}/attach", self.device)
    }

    /// `/devices/{d}/events`, or `/devices/{d}/events/{sub_folder}`.
    pub fn events(&self, sub_folder: Option<&str>) -> String {
        match sub_folder {
            Some(sub) if !sub.is_empty() => format!("/devices/{}/events/{sub}", self.device),
            _ => format!("/devices/{}/events", self.device),
        }
    }

    /// `/devices/{d}/state`.
    pub fn state(&self) -> String {
        format!("/devices/{}/state", self.device)
    }

    /// `/devices/{d}/config`.
    pub fn config(&self) -> String {
        format!("/devices/{}/config", self.device)
    }

    /// `/devices/{d}/errors`, where the bridge tells a subscribed device why it refused something.
    pub fn errors(&self) -> String {
        format!("/devices/{}/errors", self.device)
    }

    /// `/devices/{d}/commands/#`, the filter for every command.
    pub fn commands_filter(&self) -> String {
        format!("/devices/{}/commands/#", self.device)
    }

    /// For a topic the bridge delivered a command on, its subfolder (empty for none); `None`
    /// when it is no command topic of this device.
    pub fn command_sub_folder<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let base = format!("/devices/{}/commands", self.device);
        match topic.strip_prefix(base.as_str())? {
            "" => Some(""),
            rest => rest.strip_prefix('/'),
        }
    }
}

/// The publishing side of the MQTT transport. Cheap to share: the connection task swaps the live
/// session in and out underneath.
#[derive(Debug)]
pub struct MqttLink {
    topics: Topics,
    live: watch::Receiver<Option<Arc<Session>>>,
    trouble: Arc<Mutex<Option<Failure>>>,
    /// Keeps the publishes under the message rate.
    pacer: Pacer,
}

impl MqttLink {
    /// Publishes one telemetry event at QoS 1, of this device or (`device`) of one behind this
    /// gateway; `Ok` once the bridge acknowledged it.
    pub async fn publish_event(
        &self,
        device: Option<&str>,
        data: &[u8],
        sub_folder: Option<&str>,
    ) -> Result<(), Failure> {
        let session = self.session().await?;
        let topic = match device {
            None => self.topics.events(sub_folder),
            Some(child) => {
                session.attached(child).await?;
                Topics::of(child).events(sub_folder)
            }
        };
        self.pacer.pace().await;
        session.publish(topic, data).await
    }

    /// Reports the device state at QoS 1; `Ok` once the bridge acknowledged it.
    pub async fn set_state(&self, data: &[u8]) -> Result<(), Failure> {
        let session = self.session().await?;
        self.pacer.pace().await;
        session.publish(self.topics.state(), data).await
    }

    /// The live session, waiting a little for one while the connection task (re)connects.
    async fn session(&self) -> Result<Arc<Session>, Failure> {
        let mut live = self.live.clone();
        let waited = tokio::time::timeout(CONNECTION_WAIT, live.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(session)) => session.clone().ok_or_else(|| transient("not connected")),
            Ok(Err(_)) => Err(transient("the MQTT connection is stopped")),
            Err(_) => Err(self
                .trouble()
                .unwrap_or_else(|| transient("not connected to the MQTT bridge yet (connecting)"))),
        }
    }

    fn trouble(&self) -> Option<Failure> {
        self.trouble
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Spaces messages out to a rate, a tenth of a second's worth at a time: the messages due in one
/// tenth go together at its start, so a backlog paced at 100 a second costs one wake-up per ten
/// messages rather than one each. A bridge that counts with a token bucket as deep as its
/// per-second limit (ingest's, IoT Core's "100 per second") never sees more than it allows.
/// A message whose moment has come takes no timer.
#[derive(Debug)]
struct Pacer {
    /// The moment the next message is due at the exact rate.
    next: Mutex<Instant>,
    /// The time between two messages.
    spacing: Duration,
    /// Messages due within one window go at its start; windows count from `epoch`.
    window: Duration,
    epoch: Instant,
}

impl Pacer {
    fn new(messages_per_second: u32) -> Self {
        let rate = messages_per_second.max(1);
        let now = Instant::now();
        let spacing = Duration::from_secs(1) / rate;
        Self {
            next: Mutex::new(now),
            spacing,
            window: spacing * (rate / 10).max(1),
            epoch: now,
        }
    }

    /// Waits for this message's moment at the rate.
    async fn pace(&self) {
        let now = Instant::now();
        let slot = self.slot(now);
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
    }

    /// Reserves a message's place at the rate and says when, at `now` or later, it may go: the
    /// start of the window its place falls in.
    fn slot(&self, now: Instant) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let due = (*next).max(now);
        *next = due + self.spacing;
        let since = due.duration_since(self.epoch).as_nanos();
        let into_window = since % self.window.as_nanos().max(1);
        let window_start = due - Duration::from_nanos(u64::try_from(into_window).unwrap_or(0));
        window_start.max(now)
    }
}

/// One connection's publishes: the waiters of those not yet given a packet id (in request
/// order), and of those in flight by packet id; and, for a gateway, where each device behind it
/// stands on this connection.
#[derive(Debug)]
pub(crate) struct Session {
    client: AsyncClient,
    waiters: Mutex<Waiters>,
    /// Told when a publish got no PUBACK in time: the connection task then reconnects.
    pub(crate) stalled: Notify,
    /// By device id, for the devices behind this gateway.
    pub(crate) attachments: watch::Sender<HashMap<String, Attachment>>,
}

/// Told `Ok` on the PUBACK, or the bridge's refusal from the errors topic.
type Waiter = oneshot::Sender<Result<(), Failure>>;

#[derive(Debug, Default)]
struct Waiters {
    closed: bool,
    queued: VecDeque<Waiter>,
    in_flight: HashMap<u16, Waiter>,
}

impl Session {
    /// A session for a device that speaks only for itself.
    #[cfg(test)]
    pub(crate) fn new(client: AsyncClient) -> Self {
        Self::gateway(client, &[])
    }

    /// A session for a gateway with the devices `children` behind it, none attached yet.
    pub(crate) fn gateway(client: AsyncClient, children: &[String]) -> Self {
        let attachments = children
            .iter()
            .map(|id| (id.clone(), Attachment::Attaching))
            .collect();
        Self {
            client,
            waiters: Mutex::new(Waiters::default()),
            stalled: Notify::new(),
            attachments: watch::Sender::new(attachments),
        }
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes at QoS 1 and waits for the PUBACK, at most [`PUBACK_TIMEOUT`] (after which the
    /// connection is renewed: the packet id stays taken in rumqttc).
    pub(crate) async fn publish(&self, topic: String, data: &[u8]) -> Result<(), Failure> {
        let acked = self.submit(topic, data)?;
        match tokio::time::timeout(PUBACK_TIMEOUT, acked).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(transient(
                "the MQTT connection closed before the bridge acknowledged the message",
            )),
            Err(_) => {
                self.stalled.notify_one();
                Err(transient(&format!(
                    "no PUBACK from the MQTT bridge within {} s; reconnecting",
                    PUBACK_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// Queues a QoS 1 publish; the receiver resolves on its PUBACK or refusal, or fails when the
    /// session ends. The waiter and the request enter their queues under one lock, so their
    /// orders match.
    fn submit(
        &self,
        topic: String,
        data: &[u8],
    ) -> Result<oneshot::Receiver<Result<(), Failure>>, Failure> {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.waiters();
        if waiters.closed {
            return Err(transient("the MQTT connection is closing"));
        }
        waiters.queued.push_back(tx);
        // Not the async `publish`: a caller dropped while it waits would leave its waiter queued
        // without a request, and every later PUBACK would wake the wrong caller.
        if let Err(err) = self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, data)
        {
            waiters.queued.pop_back();
            return Err(transient(&format!("cannot queue the MQTT publish: {err}")));
        }
        Ok(rx)
    }

    /// rumqttc sent the next queued publish with packet id `pkid`.
    pub(crate) fn sent(&self, pkid: u16) {
        let mut waiters = self.waiters();
        if let Some(waiter) = waiters.queued.pop_front() {
            waiters.in_flight.insert(pkid, waiter);
        }
    }

    /// The bridge acknowledged `pkid`.
    pub(crate) fn acked(&self, pkid: u16) {
        if let Some(waiter) = self.waiters().in_flight.remove(&pkid) {
            // The caller may have given up waiting; the reading then goes out again.
            let _ = waiter.send(Ok(()));
        }
    }

    /// The bridge refused `pkid` (on the errors topic): its publish fails with `failure`.
    /// Whether a publish was waiting for `pkid`.
    pub(crate) fn refused(&self, pkid: u16, failure: Failure) -> bool {
        match self.waiters().in_flight.remove(&pkid) {
            Some(waiter) => {
                let _ = waiter.send(Err(failure));
                true
            }
            None => false,
        }
    }

    /// Whether the session has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.waiters().closed
    }

    /// Publishes still waiting for their PUBACK.
    pub(crate) fn unacknowledged(&self) -> usize {
        let waiters = self.waiters();
        waiters.queued.len() + waiters.in_flight.len()
    }

    /// Ends the session: every waiter fails at once, and no new publish is taken.
    pub(crate) fn close(&self) {
        let mut waiters = self.waiters();
        waiters.closed = true;
        waiters.queued.clear();
        waiters.in_flight.clear();
        drop(waiters);
        // A publish waiting for its device's attach learns at once that it will not come here.
        self.attachments.send_modify(|all| {
            for attachment in all.values_mut() {
                if matches!(attachment, Attachment::Attaching) {
                    *attachment = Attachment::Refused(transient("the MQTT connection closed"));
                }
            }
        });
    }

    pub(crate) fn client(&self) -> &AsyncClient {
        &self.client
    }
}

fn transient(reason: &str) -> Failure {
    Failure::Transient {
        reason: reason.to_owned(),
        after: None,
    }
}

#[cfg(test)]
mod tests;
