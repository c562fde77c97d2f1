//! One device's MQTT connection after its CONNECT was accepted, until it closes.
//!
//! Events and states are handed to the bridge as they arrive, several at a time, and each QoS 1
//! PUBACK is written only once the bridge accepted that message (Pub/Sub has it, the state is
//! stored), in the order the PUBLISHes came (MQTT 3.1.1 §4.6). A message the bridge could not
//! take gets no PUBACK; the connection is then closed (after the PUBACKs of the messages before
//! it) so the client sends it again on its next connection. Only a device over its message rate
//! stays connected: that one message is refused and the device told on its `errors` topic.
//!
//! The config is sent right after a SUBACK for `/devices/{d}/config` and whenever the admin API
//! changes it; at QoS 1 it is sent again (as it was, DUP set) until acknowledged, a newer version
//! pushed meanwhile replacing it. A command from the admin API goes to a connection subscribed
//! to `/devices/{d}/commands/#`, at that subscription's QoS; at QoS 1 it is sent again until
//! acknowledged or the command timeout passes, and its sender is told which; commands queued for
//! the device while it was away follow the SUBACK (`queued`).
//!
//! A gateway's connection also speaks for the devices it attached (`gateway`): each is a `Link`
//! of its own, with its own subscriptions, config and commands, and a refusal about one of them
//! is told on the gateway's errors topic without closing the connection.
//!
//! The connection is closed when its token expires (plus the allowed clock skew), when the
//! client is silent past 1.5 × its keepalive or for the idle timeout, when another connection for
//! the same device is accepted, when the device is blocked or re-keyed and its token no longer
//! passes, and at shutdown (after the PUBACKs still owed, within the drain timeout). Every such
//! close is told on the `errors` topic when subscribed and kept as the device's last error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::stream::{FuturesOrdered, SelectAll};
use futures_util::{FutureExt, StreamExt};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    Packet, PubAck, Publish, SubAck, Subscribe, SubscribeReasonCode, UnsubAck, Unsubscribe,
};
use shared::Code;
use shared::jwt::MAX_CLOCK_SKEW_SECS;
use shared::resources::DeviceConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use self::link::{Inbox, Link, Unacked};
use super::Shared;
use super::connect::Admitted;
use super::queued::QueuedCommands;
use super::topics::{self, PublishTopic, Subscription};
use super::wire::{self, ReadError};
use crate::bridge::{Bucket, Rate, Refusal};
use crate::c2d::{Command, CommandFailure, Control, MAX_UNACKED_COMMANDS};

mod gateway;
mod link;

type Pending = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// How a handed-over message ended.
struct Outcome {
    /// The PUBLISH's packet id (QoS 1), or `None` (QoS 0).
    pkid: Option<u16>,
    result: Result<(), Refusal>,
    /// The device a gateway sent it for, when not its own: a refusal the device caused is told
    /// about it and leaves the gateway connected.
    delegated: Option<String>,
}

/// Why the connection ends.
enum Close {
    /// The client disconnected, or the socket failed: nothing to tell.
    Quietly,
    /// The service ends the connection for this reason, told to the device.
    Because(Refusal),
}

/// A command sent at QoS 1 and not yet acknowledged.
#[derive(Debug)]
struct UnackedCommand {
    pkid: u16,
    topic: String,
    payload: bytes::Bytes,
    first_sent: Instant,
    resend_at: Instant,
    sends: u32,
    done: tokio::sync::oneshot::Sender<Result<(), CommandFailure>>,
}

/// The connection's state.
pub(crate) struct Live<R, W> {
    reader: R,
    writer: W,
    buf: BytesMut,
    /// Packets encoded and not yet written: PUBACKs that became due together go out in one write.
    out: BytesMut,
    shared: Arc<Shared>,
    token: String,
    /// The connection's own device.
    own: Link,
    /// The devices a gateway attached, in attach order.
    attached: Vec<Link>,
    /// Whether the own device is a gateway; read the first time it matters.
    is_gateway: Option<bool>,
    /// Every link's deliveries.
    inboxes: SelectAll<Inbox>,
    in_flight: FuturesOrdered<Pending>,
    bucket: Bucket,
    rate: Rate,
    unacked_commands: Vec<UnackedCommand>,
    errors: bool,
    next_pkid: u16,
    keep_alive: Option<Duration>,
    last_heard: Instant,
    token_deadline: Instant,
    /// Set once the connection must close: no more reading, the PUBACKs still owed are
    /// written, then it closes.
    closing: Option<Close>,
    /// One timer for every deadline. Hearing from the client only moves deadlines later, so the
    /// timer is not re-armed per packet: when it fires, the real deadlines are looked at again.
    timer: Pin<Box<tokio::time::Sleep>>,
    timer_at: Instant,
}

impl<R, W> Live<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    pub(crate) async fn new(
        reader: R,
        writer: W,
        buf: BytesMut,
        shared: Arc<Shared>,
        admitted: Admitted,
    ) -> Self {
        let device = admitted.session.device();
        let attachment = shared
            .fleet
            .connected(&device.registry, &device.id, device.num_id)
            .await;
        let rate = Rate::per_second(shared.settings.messages_per_second);
        let now = Instant::now();
        let wall = admitted.session.bridge().clock().now().as_second();
        let token_deadline = token_deadline(device.token_exp, wall, now);
        let (own, inbox) = Link::new(Arc::new(admitted.session), attachment, None);
        let mut inboxes = SelectAll::new();
        inboxes.push(inbox);
        Self {
            reader,
            writer,
            buf,
            out: BytesMut::new(),
            token: admitted.token,
            own,
            attached: Vec::new(),
            is_gateway: None,
            inboxes,
            in_flight: FuturesOrdered::new(),
            bucket: Bucket::full(rate, now.into_std()),
            rate,
            unacked_commands: Vec::new(),
            errors: false,
            next_pkid: 0,
            keep_alive: (admitted.keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(admitted.keep_alive) * 1500)),
            last_heard: now,
            token_deadline,
            closing: None,
            timer: Box::pin(tokio::time::sleep_until(now)),
            timer_at: now,
            shared,
        }
    }

    /// Serves the connection until it ends.
    pub(crate) async fn run(mut self) {
        let mut shutdown = self.shared.shutdown.clone();
        let mut drain_deadline: Option<Instant> = None;
        loop {
            if self.closing.is_some() && self.in_flight.is_empty() {
                break;
            }
            let reading =
                self.closing.is_none() && self.in_flight.len() < self.shared.settings.max_in_flight;
            let deadline = drain_deadline.unwrap_or_else(|| self.next_deadline());
            if deadline < self.timer_at || self.timer.is_elapsed() {
                self.timer.as_mut().reset(deadline);
                self.timer_at = deadline;
            }
            tokio::select! {
                Some(outcome) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    if let Err(close) = self.finished_all(outcome).await {
                        self.close(close);
                    }
                }
                Some((generation, control)) = self.inboxes.next(), if self.closing.is_none() => {
                    if let Err(close) = self.control(generation, control).await {
                        self.close(close);
                    }
                }
                () = super::stopping(&mut shutdown), if drain_deadline.is_none() => {
                    drain_deadline = Some(Instant::now() + self.shared.settings.drain_timeout);
                    self.close(Close::Because(Refusal::new(
                        Code::Unavailable,
                        "mqtt_shutdown",
                        "the server is shutting down; reconnect (another instance will take the \
                         connection)",
                    )));
                }
                () = &mut self.timer => {
                    if drain_deadline.is_some_and(|at| Instant::now() >= at) {
                        tracing::warn!(device = %self.own.id(), "PUBACKs still owed at the end of the drain were not sent");
                        break;
                    }
                    if let Err(close) = self.on_deadline().await {
                        self.close(close);
                    }
                }
                read = self.reader.read_buf(&mut self.buf), if reading => {
                    if let Err(close) = self.received(read).await {
                        self.close(close);
                    }
                }
            }
        }
        self.finish().await;
    }

    /// Marks the connection as closing; the first reason wins.
    fn close(&mut self, close: Close) {
        if self.closing.is_none() {
            self.closing = Some(close);
        }
    }

    async fn finish(mut self) {
        let _ = self.flush().await;
        if let Some(Close::Because(refusal)) = self.closing.take() {
            tracing::debug!(device = %self.own.id(), reason = refusal.reason, "closing an MQTT connection");
            self.tell(&refusal, None, None).await;
        }
        // At shutdown the instance's lease ends, which releases every claim at once.
        let store = !*self.shared.shutdown.borrow();
        for link in std::iter::once(&self.own).chain(&self.attached) {
            let device = link.session.device();
            self.shared
                .fleet
                .disconnected(
                    &device.registry,
                    &device.id,
                    device.num_id,
                    link.claim(),
                    store,
                )
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.writer.shutdown()).await;
        // Read and drop what the client still sends until it closes too (2 s, 256 KiB at
        // most): a socket closed with unread bytes is reset, and a client whose next write
        // then fails drops the connection without reading the reason just written.
        let mut sink = [0u8; 4096];
        let drain = async {
            let mut total = 0;
            while total < 256 * 1024 {
                match self.reader.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }

    /// Every link: the own device's first.
    fn links(&self) -> impl Iterator<Item = &Link> {
        std::iter::once(&self.own).chain(&self.attached)
    }

    /// The link whose claim is `generation`.
    fn link_mut(&mut self, generation: u64) -> Option<&mut Link> {
        std::iter::once(&mut self.own)
            .chain(&mut self.attached)
            .find(|link| link.generation == generation)
    }

    /// The earliest moment something is due: keepalive, idle, token expiry, a config resend.
    fn next_deadline(&self) -> Instant {
        let idle = self.last_heard + self.shared.settings.idle_timeout;
        let mut due = idle.min(self.token_deadline);
        if let Some(keep_alive) = self.keep_alive {
            due = due.min(self.last_heard + keep_alive);
        }
        for unacked in self.links().filter_map(|link| link.unacked.as_ref()) {
            due = due.min(unacked.resend_at);
        }
        for command in &self.unacked_commands {
            due = due.min(command.resend_at);
        }
        due
    }

    async fn on_deadline(&mut self) -> Result<(), Close> {
        let now = Instant::now();
        if now >= self.token_deadline {
            return Err(self.refuse(
                Code::Unauthenticated,
                "mqtt_token_expired",
                "the connection's token expired (its exp plus the allowed 10 minutes of clock \
                 skew have passed); reconnect with a fresh token"
                    .to_owned(),
            ));
        }
        if let Some(keep_alive) = self.keep_alive
            && now >= self.last_heard + keep_alive
        {
            return Err(self.refuse(
                Code::DeadlineExceeded,
                "mqtt_keepalive",
                format!(
                    "nothing was heard from the client for 1.5 × its keepalive ({:.0} s); \
                     the connection is closed",
                    keep_alive.as_secs_f64()
                ),
            ));
        }
        if now >= self.last_heard + self.shared.settings.idle_timeout {
            return Err(self.refuse(
                Code::DeadlineExceeded,
                "mqtt_idle",
                format!(
                    "the connection was idle for {} s and is closed; reconnect when there is \
                     something to send",
                    self.shared.settings.idle_timeout.as_secs()
                ),
            ));
        }
        let due: Vec<u64> = self
            .links()
            .filter(|link| link.unacked.as_ref().is_some_and(|u| now >= u.resend_at))
            .map(|link| link.generation)
            .collect();
        for generation in due {
            self.resend_config(generation).await?;
        }
        self.resend_commands(now).await
    }

    async fn received(&mut self, read: std::io::Result<usize>) -> Result<(), Close> {
        match read {
            Ok(0) | Err(_) => return Err(Close::Quietly),
            Ok(_) => {}
        }
        self.last_heard = Instant::now();
        let max = self.shared.settings.max_packet_bytes;
        loop {
            let packet = match wire::take_packet(&mut self.buf, max) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(()),
                Err(err) => return Err(self.read_failed(err)),
            };
            self.packet(packet).await?;
            if self.closing.is_some() {
                return Ok(());
            }
        }
    }

    fn read_failed(&self, err: ReadError) -> Close {
        match err {
            ReadError::Closed | ReadError::Io(_) => Close::Quietly,
            ReadError::TooLarge { .. } => {
                self.refuse(Code::InvalidArgument, "too_large", err.to_string())
            }
            ReadError::Malformed(_) => {
                self.refuse(Code::InvalidArgument, "mqtt_malformed", err.to_string())
            }
        }
    }

    async fn packet(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Publish(publish) => self.publish(publish).await,
            Packet::PubAck(ack) => {
                self.acked(ack.pkid);
                Ok(())
            }
            Packet::Subscribe(subscribe) => self.subscribe(subscribe).await,
            Packet::Unsubscribe(unsubscribe) => self.unsubscribe(unsubscribe).await,
            Packet::PingReq => {
                self.own.session.heartbeat();
                self.write(&Packet::PingResp).await
            }
            Packet::Disconnect => Err(Close::Quietly),
            other => Err(self.refuse(
                Code::InvalidArgument,
                "mqtt_unexpected_packet",
                format!(
                    "a client may not send {} here (QoS 2 flows and a second CONNECT are not \
                     supported)",
                    packet_name(&other)
                ),
            )),
        }
    }

    async fn publish(&mut self, publish: Publish) -> Result<(), Close> {
        if publish.qos == QoS::ExactlyOnce {
            return Err(self.refuse(
                Code::InvalidArgument,
                "mqtt_qos2",
                "QoS 2 is not supported, as in IoT Core; publish at QoS 0 or 1".to_owned(),
            ));
        }
        if publish.retain {
            return Err(self.refuse(
                Code::InvalidArgument,
                "mqtt_retain",
                "retained messages are not supported, as in IoT Core; publish with retain off"
                    .to_owned(),
            ));
        }
        if publish.topic.contains(['+', '#']) {
            // MQTT 3.1.1 §3.3.2.1: wildcards belong to filters; a topic name with one is a
            // protocol violation, not a subfolder named `#`.
            return Err(self.refuse(
                Code::InvalidArgument,
                "mqtt_topic",
                format!(
                    "`{}` has a wildcard (`+` or `#`); those are for SUBSCRIBE filters, a \
                     PUBLISH names one topic",
                    topics::shorten(&publish.topic)
                ),
            ));
        }
        let pkid = (publish.qos == QoS::AtLeastOnce).then_some(publish.pkid);
        let (device, rest) = topics::split(&publish.topic).unwrap_or_default();
        let mut link = None;
        if !device.is_empty() && !self.own.topics.is_named(device) {
            link = self.attached.iter().position(|l| l.topics.is_named(device));
            if link.is_none() || matches!(rest, "attach" | "detach") {
                let (device, rest) = (device.to_owned(), rest.to_owned());
                return self.publish_as_gateway(&device, &rest, publish, pkid).await;
            }
        }
        let target = link.map_or(&self.own, |at| &self.attached[at]);
        let topic = match target.topics.publish(&publish.topic) {
            Ok(topic) => topic,
            Err(message) if link.is_some() => {
                let refusal = target
                    .session
                    .refuse(Code::InvalidArgument, "mqtt_topic", message);
                self.settled(pkid, Err(refusal), Some(target.id().to_owned()));
                return Ok(());
            }
            Err(message) => {
                return Err(self.refuse(Code::InvalidArgument, "mqtt_topic", message));
            }
        };
        let session = target.session.clone();
        let delegated = link.map(|_| session.device().id.to_string());
        if let Err(retry_after) = self.bucket.take(self.rate, Instant::now().into_std()) {
            let refusal = session.refuse(
                Code::ResourceExhausted,
                "rate_limited",
                format!(
                    "device `{}` sent more MQTT messages than its limit of {} allows; this \
                     message was not accepted (no PUBACK), retry in {:.1} s",
                    self.own.id(),
                    self.rate,
                    retry_after.as_secs_f64()
                ),
            );
            self.settled(pkid, Err(refusal), delegated);
            return Ok(());
        }
        let data = publish.payload.to_vec();
        let pending: Pending = match topic {
            PublishTopic::Event(subfolder) => {
                let subfolder = subfolder.map(str::to_owned);
                Box::pin(async move {
                    let result = session.publish_event(subfolder.as_deref(), data).await;
                    Outcome {
                        pkid,
                        result,
                        delegated,
                    }
                })
            }
            PublishTopic::State => Box::pin(async move {
                let result = session.set_state(data).await;
                Outcome {
                    pkid,
                    result,
                    delegated,
                }
            }),
        };
        self.in_flight.push_back(pending);
        Ok(())
    }

    /// Queues an outcome known already, behind the messages still in flight, so its PUBACK (or
    /// its refusal) keeps the order of the PUBLISHes.
    fn settled(
        &mut self,
        pkid: Option<u16>,
        result: Result<(), Refusal>,
        delegated: Option<String>,
    ) {
        self.in_flight.push_back(Box::pin(async move {
            Outcome {
                pkid,
                result,
                delegated,
            }
        }));
    }

    /// Settles `first` and every other message already done behind it, then writes their
    /// PUBACKs at once.
    async fn finished_all(&mut self, first: Outcome) -> Result<(), Close> {
        let mut next = Some(first);
        while let Some(outcome) = next.take() {
            self.finished(outcome).await?;
            next = self.in_flight.next().now_or_never().flatten();
        }
        self.flush().await
    }

    /// A handed-over message ended: queue its PUBACK, or tell the device why not.
    async fn finished(&mut self, outcome: Outcome) -> Result<(), Close> {
        match outcome.result {
            Ok(()) => {
                if let Some(pkid) = outcome.pkid {
                    self.queue(&Packet::PubAck(PubAck::new(pkid)));
                }
                Ok(())
            }
            // Counted and kept as the last error by the bridge (or when the rate refused it).
            Err(refusal) if refusal.reason == "rate_limited" => {
                let about = outcome.delegated.as_deref();
                self.tell(&refusal, outcome.pkid, about).await;
                Ok(())
            }
            // A device behind a gateway caused it: the gateway stays connected. Not when the
            // service failed: the gateway must then reconnect to send the message again.
            Err(refusal) if outcome.delegated.is_some() && !is_transient(&refusal) => {
                let about = outcome.delegated.as_deref();
                self.tell(&refusal, outcome.pkid, about).await;
                Ok(())
            }
            Err(refusal) => {
                let about = outcome.delegated.as_deref();
                self.tell(&refusal, outcome.pkid, about).await;
                Err(Close::Quietly)
            }
        }
    }

    async fn subscribe(&mut self, subscribe: Subscribe) -> Result<(), Close> {
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        // The links (by generation) that get their config, and their queued commands, after
        // the SUBACK.
        let mut send_config = Vec::new();
        let mut send_queued = Vec::new();
        for filter in &subscribe.filters {
            let qos = if filter.qos == QoS::AtMostOnce {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            let Some(link) = self.subscriber(&filter.path) else {
                // Kept as the gateway's last error; nothing is published before the SUBACK.
                self.own.session.refuse(
                    Code::FailedPrecondition,
                    "gateway_device_not_attached",
                    format!(
                        "`{}` belongs to a device this gateway has not attached; publish to \
                         /devices/{{device}}/attach first",
                        filter.path
                    ),
                );
                codes.push(SubscribeReasonCode::Failure);
                continue;
            };
            let code = match link.topics.subscription(&filter.path) {
                Ok(Subscription::Config) => {
                    link.config_qos = Some(qos);
                    send_config.push(link.generation);
                    SubscribeReasonCode::Success(qos)
                }
                Ok(Subscription::Commands) => {
                    link.commands_qos = Some(qos);
                    send_queued.push(link.generation);
                    SubscribeReasonCode::Success(qos)
                }
                Ok(Subscription::Errors) => {
                    // Errors about a gateway's devices go to the gateway's own errors topic.
                    self.errors = true;
                    SubscribeReasonCode::Success(QoS::AtMostOnce)
                }
                Err(message) => {
                    link.session
                        .refuse(Code::InvalidArgument, "mqtt_subscription", message);
                    SubscribeReasonCode::Failure
                }
            };
            codes.push(code);
        }
        // Recorded before SUBACK: once the device knows it is subscribed, so does the fleet.
        self.record_all_subscriptions().await;
        self.write(&Packet::SubAck(SubAck::new(subscribe.pkid, codes)))
            .await?;
        for generation in send_config {
            self.send_latest_config(generation).await?;
        }
        for generation in send_queued {
            self.wake_queued(generation);
        }
        Ok(())
    }

    /// The link a SUBSCRIBE filter is for: an attached device's, or else the own device's,
    /// which refuses what is not its own with the usual message. `None` for a device a gateway
    /// has not attached.
    fn subscriber(&mut self, filter: &str) -> Option<&mut Link> {
        let device = topics::split(filter).map_or("", |(device, _)| device);
        if let Some(at) = self.attached.iter().position(|l| l.topics.is_named(device)) {
            return Some(&mut self.attached[at]);
        }
        let foreign = !device.is_empty() && !self.own.topics.is_named(device);
        if foreign && self.is_gateway == Some(true) {
            return None;
        }
        Some(&mut self.own)
    }

    /// Sends a fresh subscription the latest config, even one sent before.
    async fn send_latest_config(&mut self, generation: u64) -> Result<(), Close> {
        let Some(link) = self.link_mut(generation) else {
            return Ok(());
        };
        link.sent_version = None;
        link.unacked = None;
        let (session, about) = (link.session.clone(), self.about(generation));
        match session.config(0).await {
            Ok(config) => self.send_config(generation, config).await,
            Err(refusal) => {
                self.tell(&refusal, None, about.as_deref()).await;
                Ok(())
            }
        }
    }

    /// The attached device `generation` is, for errors about it; `None` for the own device.
    fn about(&self, generation: u64) -> Option<String> {
        self.attached
            .iter()
            .find(|l| l.generation == generation)
            .map(|l| l.id().to_owned())
    }

    async fn unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), Close> {
        for topic in &unsubscribe.topics {
            let Some(link) = self.subscriber(topic) else {
                continue;
            };
            match link.topics.subscription(topic) {
                Ok(Subscription::Config) => {
                    link.config_qos = None;
                    link.unacked = None;
                }
                Ok(Subscription::Commands) => link.commands_qos = None,
                Ok(Subscription::Errors) => self.errors = false,
                Err(_) => {}
            }
        }
        self.record_all_subscriptions().await;
        self.write(&Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
            .await
    }

    /// Tells the fleet's presence records what each link is subscribed to.
    async fn record_all_subscriptions(&mut self) {
        let shared = self.shared.clone();
        for link in std::iter::once(&self.own).chain(&self.attached) {
            record_subscriptions(&shared, link).await;
        }
    }

    /// Sends link `generation` its `config` unless a version at least as new was sent already.
    async fn send_config(&mut self, generation: u64, config: DeviceConfig) -> Result<(), Close> {
        let resend = self.shared.settings.config_resend;
        let pkid = self.pkid();
        let Some(link) = self.link_mut(generation) else {
            return Ok(());
        };
        let Some(qos) = link.config_qos else {
            return Ok(());
        };
        if link.sent_version.is_some_and(|sent| sent >= config.version) {
            return Ok(());
        }
        let payload = bytes::Bytes::from(config.binary_data);
        let mut publish = Publish::from_bytes(link.topics.config_topic(), qos, payload.clone());
        if qos == QoS::AtLeastOnce {
            publish.pkid = pkid;
            link.unacked = Some(Unacked {
                pkid,
                version: config.version,
                payload,
                resend_at: Instant::now() + resend,
            });
        }
        link.sent_version = Some(config.version);
        link.session.config_sent();
        self.write(&Packet::Publish(publish)).await
    }

    /// Sends link `generation`'s unacknowledged config again, DUP set. No store read: a newer
    /// version reaches the connection as a push and replaces this one in `send_config`.
    async fn resend_config(&mut self, generation: u64) -> Result<(), Close> {
        let resend = self.shared.settings.config_resend;
        let Some(link) = self.link_mut(generation) else {
            return Ok(());
        };
        let Some(unacked) = link.unacked.as_mut() else {
            return Ok(());
        };
        unacked.resend_at = Instant::now() + resend;
        let again = resent(
            link.topics.config_topic(),
            unacked.payload.clone(),
            unacked.pkid,
        );
        link.session.config_sent();
        self.write(&again).await
    }

    fn acked(&mut self, pkid: u16) {
        let config = std::iter::once(&mut self.own)
            .chain(&mut self.attached)
            .find_map(|link| {
                let unacked = link.unacked.take_if(|unacked| unacked.pkid == pkid)?;
                Some((link.session.clone(), unacked.version))
            });
        if let Some((session, version)) = config {
            session.config_acked(version);
        } else if let Some(at) = self.unacked_commands.iter().position(|c| c.pkid == pkid) {
            let _ = self.unacked_commands.swap_remove(at).done.send(Ok(()));
        }
    }

    /// Sends link `generation` a command at the QoS it subscribed to `commands/#` with; its
    /// sender is answered once it is written (QoS 0), or acknowledged (QoS 1, from `acked`).
    async fn command(&mut self, generation: u64, command: Command) -> Result<(), Close> {
        let Command {
            subfolder,
            data,
            done,
        } = command;
        let Some(link) = self.link_mut(generation) else {
            let _ = done.send(Err(CommandFailure::NotSubscribed));
            return Ok(());
        };
        let Some(qos) = link.commands_qos else {
            let _ = done.send(Err(CommandFailure::NotSubscribed));
            return Ok(());
        };
        let topic = link.topics.command_topic(subfolder.as_deref());
        let mut publish = Publish::from_bytes(topic.clone(), qos, data.clone());
        if qos == QoS::AtMostOnce {
            self.write(&Packet::Publish(publish)).await?;
            let _ = done.send(Ok(()));
            return Ok(());
        }
        if self.unacked_commands.len() >= MAX_UNACKED_COMMANDS {
            let _ = done.send(Err(CommandFailure::Busy));
            return Ok(());
        }
        publish.pkid = self.pkid();
        let now = Instant::now();
        self.unacked_commands.push(UnackedCommand {
            pkid: publish.pkid,
            topic,
            payload: data,
            first_sent: now,
            resend_at: now
                + self
                    .shared
                    .settings
                    .config_resend
                    .min(self.shared.settings.command_timeout),
            sends: 1,
            done,
        });
        self.write(&Packet::Publish(publish)).await
    }

    /// Sends the QoS 1 commands that are due again (DUP set), and answers those past the
    /// command timeout or whose sender stopped waiting.
    async fn resend_commands(&mut self, now: Instant) -> Result<(), Close> {
        let (resend, timeout) = (
            self.shared.settings.config_resend,
            self.shared.settings.command_timeout,
        );
        let mut index = 0;
        while index < self.unacked_commands.len() {
            let command = &mut self.unacked_commands[index];
            if command.done.is_closed() {
                self.unacked_commands.swap_remove(index);
                continue;
            }
            if now < command.resend_at {
                index += 1;
                continue;
            }
            let give_up_at = command.first_sent + timeout;
            if now >= give_up_at {
                let command = self.unacked_commands.swap_remove(index);
                let failure = CommandFailure::NotAcknowledged {
                    waited: now - command.first_sent,
                    sends: command.sends,
                };
                let _ = command.done.send(Err(failure));
                continue;
            }
            command.resend_at = (now + resend).min(give_up_at);
            command.sends += 1;
            let again = resent(command.topic.clone(), command.payload.clone(), command.pkid);
            self.queue(&again);
            index += 1;
        }
        self.flush().await
    }

    /// A delivery for link `generation`.
    async fn control(&mut self, generation: u64, control: Option<Control>) -> Result<(), Close> {
        if generation != self.own.generation {
            return self.attached_control(generation, control).await;
        }
        match control {
            Some(Control::Config(config)) => self.send_config(generation, *config).await,
            Some(Control::Command(command)) => self.command(generation, *command).await,
            Some(Control::Queued) => {
                self.wake_queued(generation);
                Ok(())
            }
            Some(Control::Recheck) => self.recheck().await,
            Some(Control::Replaced) | None => Err(self.refuse(
                Code::Aborted,
                "mqtt_replaced",
                "another connection for this device was accepted; a device may hold one \
                 connection at a time"
                    .to_owned(),
            )),
        }
    }

    /// Reads link `generation`'s queued commands again, when it subscribed to them.
    fn wake_queued(&mut self, generation: u64) {
        let shared = self.shared.clone();
        if let Some(link) = self.link_mut(generation)
            && link.commands_qos.is_some()
        {
            queued_commands(link, &shared).wake();
        }
    }

    /// The device's keys or blocked flag changed: its token must pass again to stay connected.
    async fn recheck(&mut self) -> Result<(), Close> {
        let bridge = self.own.session.bridge().clone();
        let device = self.own.session.device();
        let name = shared::DeviceName {
            registry: device.registry.clone(),
            device: shared::DeviceRef::Id(device.id.clone()),
        };
        let now = bridge.clock().now().as_second();
        match bridge
            .admit(crate::bridge::Protocol::Mqtt, &name, &self.token, now)
            .await
        {
            Ok(_) => Ok(()),
            Err(refusal) => Err(Close::Because(refusal)),
        }
    }

    /// Counts a refusal, keeps it as the device's last error, and closes with it.
    fn refuse(&self, code: Code, reason: &'static str, message: String) -> Close {
        Close::Because(self.own.session.refuse(code, reason, message))
    }

    /// Tells the device about a refusal on its errors topic, when it subscribed to it; about
    /// one of a gateway's devices (`about`, its id), on the gateway's errors topic.
    async fn tell(&mut self, refusal: &Refusal, message_id: Option<u16>, about: Option<&str>) {
        if !self.errors {
            return;
        }
        let body = serde_json::json!({
            "error_type": refusal.error_type(),
            "description": refusal.message,
            "device_id": about.unwrap_or(self.own.id()),
            "message_id": message_id.unwrap_or(0),
        });
        let publish = Publish::new(
            self.own.topics.errors_topic(),
            QoS::AtMostOnce,
            body.to_string(),
        );
        let _ = self.write(&Packet::Publish(publish)).await;
    }

    /// Encodes a packet to go out with the next flush.
    fn queue(&mut self, packet: &Packet) {
        // Only packets of our own making are encoded, and they always fit.
        let _ = wire::encode(packet, &mut self.out);
    }

    /// Writes everything queued.
    async fn flush(&mut self) -> Result<(), Close> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = wire::write_all(&mut self.writer, &self.out).await;
        self.out.clear();
        result.map_err(|_| Close::Quietly)
    }

    /// Writes a packet (after anything queued before it).
    async fn write(&mut self, packet: &Packet) -> Result<(), Close> {
        self.queue(packet);
        self.flush().await
    }

    /// The next packet id not held by an unacknowledged config or command.
    fn pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1).max(1);
            let id = self.next_pkid;
            let taken = self
                .links()
                .any(|l| l.unacked.as_ref().is_some_and(|u| u.pkid == id))
                || self.unacked_commands.iter().any(|c| c.pkid == id);
            if !taken {
                return id;
            }
        }
    }
}

/// The link's queued-command task, started on first use.
fn queued_commands<'a>(link: &'a mut Link, shared: &Shared) -> &'a QueuedCommands {
    let (session, delivery) = (&link.session, shared.fleet.delivery());
    link.queued
        .get_or_insert_with(|| QueuedCommands::start(session.clone(), delivery.clone()))
}

/// Tells the fleet's presence record what `link` is subscribed to.
async fn record_subscriptions(shared: &Shared, link: &Link) {
    shared
        .fleet
        .subscribed(
            link.session.device().num_id,
            link.fleet_generation,
            link.config_qos.is_some(),
            link.commands_qos.is_some(),
        )
        .await;
}

/// Whether a refusal is the service's failure rather than the message's: the message must then
/// be sent again, so the connection closes for the client to resend it.
fn is_transient(refusal: &Refusal) -> bool {
    matches!(
        refusal.code,
        Code::Unavailable | Code::Internal | Code::DeadlineExceeded | Code::Unknown
    )
}

/// A QoS 1 PUBLISH sent again as it was: same packet id, DUP set (MQTT 3.1.1 §4.4).
fn resent(topic: String, payload: bytes::Bytes, pkid: u16) -> Packet {
    let mut publish = Publish::from_bytes(topic, QoS::AtLeastOnce, payload);
    publish.pkid = pkid;
    publish.dup = true;
    Packet::Publish(publish)
}

/// When a connection holding a token that expires at `exp` must close: `exp` plus the skew,
/// counted from `wall` (Unix seconds, the bridge's clock) at the instant `now`.
fn token_deadline(exp: i64, wall: i64, now: Instant) -> Instant {
    let left = exp.saturating_add(MAX_CLOCK_SKEW_SECS).saturating_sub(wall);
    now + Duration::from_secs(u64::try_from(left).unwrap_or(0))
}

fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "a second CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::SubAck(_) => "SUBACK",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingResp => "PINGRESP",
        _ => "this packet",
    }
}
