//! The task that keeps the MQTT connection up, and the only one that polls rumqttc's event loop
//! (rumqttc moves nothing unless its loop is polled, so nothing slow may run here). Each
//! connection is a fresh `AsyncClient` and `EventLoop` with a token signed just before the
//! CONNECT; rumqttc's own reconnect is not used, because its CONNECT would carry the old token
//! and it would replay publishes whose callers have already been told they failed.
//!
//! - At 75 % of the token's lifetime the task stops taking publishes, lets those in flight be
//!   acknowledged (a few seconds at most), sends DISCONNECT and connects again with a new token,
//!   before the bridge closes the connection at the token's expiry.
//! - A lost connection fails the publishes waiting on it (the sender retries them) and is
//!   reconnected after an exponential backoff with jitter.
//! - CONNACK 4 (bad user name or password: the bridge's answer to any token it refuses) is
//!   retried once at once with a newly signed token; a second 4, or 5 (not authorised), means
//!   the device itself is refused: it is logged with the doctor's hint and retried every
//!   `max_backoff`, and publishes meanwhile fail with [`Failure::Refused`].
//! - The task subscribes to `/devices/{d}/errors` (QoS 0): a PUBLISH the bridge refuses gets no
//!   PUBACK, and the refusal named there by packet id fails that publish at once with the
//!   bridge's reason, instead of after the PUBACK timeout; rumqttc's slot for the packet id is
//!   freed as a PUBACK would free it. Errors are logged without payloads or tokens.
//!   When the bridge closes the connection for a reason about the device itself that retrying
//!   cannot fix (it says so there just before), the next connection waits for the backoff
//!   rather than following at once.
//! - As a gateway, each connection attaches the devices behind it ([`super::gateway`]); an
//!   errors message saying one is not attached (any more) has it attached again.
//! - A config pushed on `/devices/{d}/config` goes to the config sync with a handle to
//!   acknowledge it once the file is durable; a command is acknowledged on arrival (the bridge
//!   resends an unacknowledged one within seconds, and the hook may take longer) and goes to the
//!   commands hook.
//!
//! One attempt, up to the CONNACK, is [`connect`]; `iotcore-device doctor` calls it too, so what
//! the doctor checks is the CONNECT the agent sends.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, PubAck, Publish, QoS, Request, SubscribeReasonCode, TlsConfiguration,
};
use shared::DeviceName;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::errors::BridgeError;
use super::gateway::{self, Child};
use super::websocket::{self, Relay, WsEndpoint};
use super::{MqttLink, Pacer, Session, Topics, transient};
use crate::sender::Backoff;
use crate::token::TokenSource;
use crate::transport::Failure;

/// Time for the TCP connect, TLS handshake and CONNACK.
const CONNECT_TIMEOUT_SECS: u64 = 10;
/// How long publishes in flight may take to be acknowledged before a planned disconnect.
const DRAIN: Duration = Duration::from_secs(3);
/// The shortest a connection lives before its token is renewed, whatever the lifetime.
const MIN_CONNECTION: Duration = Duration::from_secs(5);
/// A connection that breaks sooner than this after its CONNACK does not reset the backoff: a
/// bridge that closes every connection at once (a misconfiguration) must not become a reconnect
/// loop, even when the reason it sends first is lost with the connection.
const STABLE: Duration = Duration::from_secs(5);
/// Room for IoT Core's largest messages (events 256 KB, config 64 KB) and the MQTT header.
const MAX_PACKET: usize = 300 * 1024;

/// Where the MQTT bridge is and how to reach it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Host name, also the TLS server name.
    pub host: String,
    /// TLS port (8883 or 443).
    pub port: u16,
    /// Keepalive asked of the bridge.
    pub keepalive: Duration,
    /// TLS with the agent's roots.
    pub tls: Arc<rustls::ClientConfig>,
    /// MQTT over WebSocket instead of TCP (`transport = "mqtt+ws"`); `host`, `port` and `tls`
    /// are then unused.
    pub websocket: Option<WsEndpoint>,
}

/// A config the bridge pushed; [`PushedConfig::ack`] once it is durable.
#[derive(Debug)]
pub struct PushedConfig {
    /// The config's bytes.
    pub data: Vec<u8>,
    client: AsyncClient,
    publish: Publish,
}

impl PushedConfig {
    /// Sends the PUBACK. On a connection that is gone meanwhile this does nothing: the bridge
    /// sends the latest config again after the next SUBSCRIBE.
    pub fn ack(self) {
        let _ = self.client.try_ack(&self.publish);
    }
}

/// A command the bridge delivered (already acknowledged).
#[derive(Debug)]
pub struct PushedCommand {
    /// The subfolder of `/devices/{d}/commands/{subfolder}`, if any.
    pub sub_folder: Option<String>,
    /// The command's bytes.
    pub data: Vec<u8>,
}

/// The connection task's parts; [`Connector::run`] runs it.
#[derive(Debug)]
pub struct Connector {
    device: DeviceName,
    topics: Topics,
    endpoint: Endpoint,
    tokens: TokenSource,
    max_backoff: Duration,
    inflight: u16,
    live: watch::Sender<Option<Arc<Session>>>,
    trouble: Arc<Mutex<Option<Failure>>>,
    configs: Option<mpsc::UnboundedSender<PushedConfig>>,
    commands: Option<mpsc::UnboundedSender<PushedCommand>>,
    children: Vec<Child>,
}

/// How one connection ended.
#[derive(Debug)]
enum Ended {
    /// The token is due for renewal: connect again now.
    Renew,
    /// The agent is stopping.
    Stopped,
    /// The CONNECT was refused with this code.
    Refused(ConnectReturnCode),
    /// The connection failed or broke; `connected` says whether it had been up.
    Lost { failure: Failure, connected: bool },
}

/// The link the transport publishes through and the task that connects it; `inflight` is how
/// many publishes may await their PUBACK at once (the sender's concurrency, plus the state), and
/// `messages_per_second` how many may go each second.
pub fn link(
    device: &DeviceName,
    endpoint: Endpoint,
    tokens: TokenSource,
    max_backoff: Duration,
    inflight: u16,
    messages_per_second: u32,
) -> (MqttLink, Connector) {
    let (live, watching) = watch::channel(None);
    let trouble = Arc::new(Mutex::new(None));
    let topics = Topics::new(device);
    let link = MqttLink {
        topics: topics.clone(),
        live: watching,
        trouble: trouble.clone(),
        pacer: Pacer::new(messages_per_second),
    };
    let connector = Connector {
        device: device.clone(),
        topics,
        endpoint,
        tokens,
        max_backoff,
        inflight: inflight.max(1),
        live,
        trouble,
        configs: None,
        commands: None,
        children: Vec::new(),
    };
    (link, connector)
}

impl Connector {
    /// Subscribes to the device's config; each push comes out of the receiver.
    pub fn configs(&mut self) -> mpsc::UnboundedReceiver<PushedConfig> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.configs = Some(tx);
        rx
    }

    /// Subscribes to the device's commands; each one comes out of the receiver.
    pub fn commands(&mut self) -> mpsc::UnboundedReceiver<PushedCommand> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.commands = Some(tx);
        rx
    }

    /// Makes this connection a gateway's: after each CONNECT every one of `children` is
    /// attached.
    pub fn gateway(&mut self, children: Vec<Child>) {
        self.children = children;
    }

    /// Connects, and connects again, until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.max_backoff);
        let mut token_retried = false;
        let mut failing = false;
        while !*shutdown.borrow() {
            let pause = match self.connection(&mut shutdown).await {
                Ended::Stopped => break,
                Ended::Renew => {
                    (backoff, token_retried, failing) =
                        (Backoff::new(self.max_backoff), false, false);
                    continue;
                }
                Ended::Refused(ConnectReturnCode::BadUserNamePassword) if !token_retried => {
                    tracing::info!("the MQTT bridge refused the token; connecting with a new one");
                    token_retried = true;
                    continue;
                }
                Ended::Refused(code) => {
                    self.failed(&mut failing, refusal(code));
                    self.max_backoff
                }
                Ended::Lost { failure, connected } => {
                    if connected {
                        (backoff, token_retried) = (Backoff::new(self.max_backoff), false);
                    }
                    self.failed(&mut failing, failure);
                    backoff.next(None)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => break,
            }
        }
        self.live.send_replace(None);
    }

    /// Records why there is no connection, for publishes; logged once per outage.
    fn failed(&self, failing: &mut bool, failure: Failure) {
        if !std::mem::replace(failing, true) {
            let hint = match failure {
                Failure::Refused { .. } => {
                    " (retrying cannot fix this; run `iotcore-device doctor`)"
                }
                _ => "",
            };
            tracing::warn!(error = %failure, "cannot connect to the MQTT bridge{hint}; retrying");
        }
        *self.trouble.lock().unwrap_or_else(PoisonError::into_inner) = Some(failure);
    }

    /// One connection, from CONNECT to its end.
    async fn connection(&self, shutdown: &mut watch::Receiver<bool>) -> Ended {
        let token = match self.tokens.fresh() {
            Ok(token) => token,
            Err(err) => {
                let failure = Failure::Refused {
                    reason: format!("cannot sign a token: {err}"),
                    info_reason: None,
                };
                return Ended::Lost {
                    failure,
                    connected: false,
                };
            }
        };
        let connected = tokio::select! {
            connected = connect(&self.device, &self.endpoint, token, self.inflight) => connected,
            _ = shutdown.changed() => return Ended::Stopped,
        };
        let (client, mut events) = match connected {
            Ok(connected) => connected,
            Err(ConnectFailure::Refused(code)) => return Ended::Refused(code),
            Err(ConnectFailure::Failed(reason)) => return lost(&reason, false),
        };
        let ids: Vec<String> = self.children.iter().map(|c| c.id.clone()).collect();
        let session = Arc::new(Session::gateway(client, &ids));
        self.subscribe(session.client());
        *self.trouble.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.live.send_replace(Some(session.clone()));
        tracing::info!(
            host = %self.endpoint.host,
            port = self.endpoint.port,
            "connected to the MQTT bridge"
        );
        let attaching = gateway::attach_all(&session, &self.children, self.max_backoff);
        let up_at = Instant::now();
        let ended = match self.serve(&session, &mut events, shutdown).await {
            Ended::Lost { failure, connected } => Ended::Lost {
                failure,
                connected: connected && up_at.elapsed() >= STABLE,
            },
            ended => ended,
        };
        drop(attaching);
        self.live.send_replace(None);
        session.close();
        ended
    }

    /// Asks for the errors, and for configs and commands when someone takes them; the SUBACK
    /// is checked as it comes. The errors subscription goes first, so the bridge has it before
    /// any PUBLISH it could refuse.
    fn subscribe(&self, client: &AsyncClient) {
        let _ = client.try_subscribe(self.topics.errors(), QoS::AtMostOnce);
        if self.configs.is_some() {
            let _ = client.try_subscribe(self.topics.config(), QoS::AtLeastOnce);
        }
        if self.commands.is_some() {
            let _ = client.try_subscribe(self.topics.commands_filter(), QoS::AtLeastOnce);
        }
    }

    /// Polls the event loop until the connection breaks, its token is due, or shutdown; the last
    /// two drain the publishes in flight first.
    async fn serve(
        &self,
        session: &Session,
        events: &mut EventLoop,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Ended {
        let renew_at = Instant::now() + renewal(self.tokens.lifetime().as_secs());
        let mut draining: Option<(Instant, Ended)> = None;
        // Why the bridge is about to close the connection, when it just said so.
        let mut closing: Option<Failure> = None;
        loop {
            if let Some((deadline, _)) = &draining
                && (session.unacknowledged() == 0 || Instant::now() >= *deadline)
            {
                let (_, why) = draining.take().unwrap_or((Instant::now(), Ended::Renew));
                disconnect(session.client(), events, |pkid| session.acked(pkid)).await;
                return why;
            }
            let wake = draining
                .as_ref()
                .map_or(renew_at, |(deadline, _)| *deadline);
            tokio::select! {
                polled = events.poll() => match polled {
                    Ok(event) => {
                        let incoming = matches!(event, Event::Incoming(_));
                        match self.handle(session, events, event) {
                            Some(reason) => closing = Some(reason),
                            // Anything the bridge sends after it means it did not close.
                            None if incoming => closing = None,
                            None => {}
                        }
                    }
                    Err(err) => {
                        return match (draining, closing) {
                            (Some((_, why)), _) => why,
                            // Not `connected`: the backoff goes on growing.
                            (None, Some(failure)) => Ended::Lost { failure, connected: false },
                            (None, None) => lost(&err.to_string(), true),
                        };
                    }
                },
                () = tokio::time::sleep_until(wake), if draining.is_none() => {
                    tracing::info!("renewing the token: reconnecting to the MQTT bridge");
                    draining = Some(self.drain(Ended::Renew));
                }
                () = tokio::time::sleep_until(wake), if draining.is_some() => {}
                () = session.stalled.notified(), if draining.is_none() => {
                    return lost("a message got no PUBACK in time", true);
                }
                _ = shutdown.changed(), if draining.is_none() => {
                    draining = Some(self.drain(Ended::Stopped));
                }
            }
        }
    }

    /// Stops handing out the session; what is in flight has [`DRAIN`] to be acknowledged.
    fn drain(&self, why: Ended) -> (Instant, Ended) {
        self.live.send_replace(None);
        (Instant::now() + DRAIN, why)
    }

    /// Handles one event of the loop; for an errors message that announces a close retrying
    /// cannot fix, its reason.
    fn handle(&self, session: &Session, events: &mut EventLoop, event: Event) -> Option<Failure> {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => session.sent(pkid),
            Event::Incoming(Packet::PubAck(ack)) => session.acked(ack.pkid),
            Event::Incoming(Packet::Publish(publish)) if publish.topic == self.topics.errors() => {
                return self.refused(session, events, &publish.payload);
            }
            Event::Incoming(Packet::Publish(publish)) => self.delivered(session, publish),
            Event::Incoming(Packet::SubAck(ack))
                if ack
                    .return_codes
                    .iter()
                    .any(|code| matches!(code, SubscribeReasonCode::Failure)) =>
            {
                tracing::warn!("the MQTT bridge refused a subscription (config or commands)");
            }
            _ => {}
        }
        None
    }

    /// The bridge told of a refusal on the errors topic: the publish it names fails with the
    /// bridge's reason, and a device behind this gateway that it says is not attached is
    /// attached again. An error about this device and no message is what the bridge says
    /// before it closes the connection: when retrying cannot fix it, it is returned.
    fn refused(
        &self,
        session: &Session,
        events: &mut EventLoop,
        payload: &[u8],
    ) -> Option<Failure> {
        let Some(error) = BridgeError::parse(payload) else {
            tracing::warn!("the MQTT bridge sent an errors message that is not its JSON");
            return None;
        };
        let own = self.device.device.to_string();
        let closing = (error.packet_id().is_none() && error.device_id == own)
            .then(|| closing(&error, !self.children.is_empty()))
            .flatten();
        let failure = error.failure();
        let is_child = self.children.iter().any(|c| c.id == error.device_id);
        if is_child
            && (error.packet_id().is_none() || error.error_type == "GATEWAY_DEVICE_NOT_ATTACHED")
        {
            session.detached(&error.device_id, failure.clone());
        }
        let answered = error
            .packet_id()
            .is_some_and(|pkid| session.refused(pkid, failure));
        if let Some(pkid) = error.packet_id().filter(|_| answered) {
            release(events, pkid);
        }
        // A refused publish is also told by its caller (the sender, an attach); anything else
        // (a close, a detach) only here.
        let (device, error_type, message_id, description) = (
            &error.device_id,
            &error.error_type,
            error.message_id,
            &error.description,
        );
        if answered {
            tracing::info!(%device, %error_type, message_id, %description, "the MQTT bridge refused a message");
        } else if let Some(reason) = &closing {
            tracing::warn!(error = %reason, "the MQTT bridge is closing the connection; connecting again after a backoff");
        } else {
            tracing::warn!(%device, %error_type, message_id, %description, "the MQTT bridge reports an error");
        }
        closing
    }

    /// Routes a message the bridge delivered. Nothing here waits: the config sync and the
    /// commands hook run in their own tasks.
    fn delivered(&self, session: &Session, publish: Publish) {
        let client = session.client();
        if publish.topic == self.topics.config() {
            if let Some(configs) = &self.configs {
                let data = publish.payload.to_vec();
                let pushed = PushedConfig {
                    data,
                    client: client.clone(),
                    publish,
                };
                if let Err(mpsc::error::SendError(pushed)) = configs.send(pushed) {
                    pushed.ack();
                }
                return;
            }
        } else if let Some(sub_folder) = self.topics.command_sub_folder(&publish.topic)
            && let Some(commands) = &self.commands
        {
            let command = PushedCommand {
                sub_folder: (!sub_folder.is_empty()).then(|| sub_folder.to_owned()),
                data: publish.payload.to_vec(),
            };
            let _ = client.try_ack(&publish);
            let _ = commands.send(command);
            return;
        }
        tracing::debug!(topic = %publish.topic, "a message on a topic the agent does not use");
        let _ = client.try_ack(&publish);
    }
}

/// Why one connection attempt got no session.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The bridge answered the CONNECT with this CONNACK code.
    Refused(ConnectReturnCode),
    /// TCP, TLS or the CONNACK failed; what happened, in words.
    Failed(String),
}

/// Opens one connection with `token`, up to its CONNACK. The connection task and
/// `iotcore-device doctor` both connect through here, so the doctor checks exactly the CONNECT
/// the agent sends.
pub async fn connect(
    device: &DeviceName,
    endpoint: &Endpoint,
    token: String,
    inflight: u16,
) -> Result<(AsyncClient, EventLoop), ConnectFailure> {
    let capacity = usize::from(inflight) + 64;
    // Over WebSocket, rumqttc connects to a relay's socket; once connected the relay's
    // directory may go (dropped at the end of this call).
    let relay = match &endpoint.websocket {
        Some(ws) => Some(websocket::open(ws).await.map_err(ConnectFailure::Failed)?),
        None => None,
    };
    let options = options(device, endpoint, relay.as_ref(), token, inflight);
    let (client, mut events) = AsyncClient::new(options, capacity);
    events
        .network_options
        .set_connection_timeout(CONNECT_TIMEOUT_SECS);
    match events.poll().await {
        Ok(Event::Incoming(Packet::ConnAck(_))) => Ok((client, events)),
        Err(ConnectionError::ConnectionRefused(code)) => Err(ConnectFailure::Refused(code)),
        // Not the packet itself: it might carry a payload, which is never logged.
        Err(ConnectionError::NotConnAck(_)) | Ok(_) => Err(ConnectFailure::Failed(
            "the bridge answered the CONNECT with no CONNACK".to_owned(),
        )),
        Err(ConnectionError::NetworkTimeout) => Err(ConnectFailure::Failed(format!(
            "no CONNACK within {CONNECT_TIMEOUT_SECS} s"
        ))),
        Err(err) => Err(ConnectFailure::Failed(err.to_string())),
    }
}

/// IoT Core's CONNECT: client id the device's full path, clean session, the JWT as password.
fn options(
    device: &DeviceName,
    endpoint: &Endpoint,
    relay: Option<&Relay>,
    token: String,
    inflight: u16,
) -> MqttOptions {
    let mut options = match relay {
        Some(relay) => {
            let path = relay.socket().to_string_lossy().into_owned();
            let mut options = MqttOptions::new(device.to_string(), path, 0);
            options.set_transport(rumqttc::Transport::unix());
            options
        }
        None => {
            let mut options =
                MqttOptions::new(device.to_string(), endpoint.host.clone(), endpoint.port);
            let tls = TlsConfiguration::Rustls(endpoint.tls.clone());
            options.set_transport(rumqttc::Transport::tls_with_config(tls));
            options
        }
    };
    options
        .set_keep_alive(endpoint.keepalive)
        .set_clean_session(true)
        // IoT Core ignores the user name; the password is the JWT.
        .set_credentials("unused", token)
        .set_manual_acks(true)
        .set_inflight(inflight)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    options
}

/// Sends DISCONNECT and gives the event loop a moment to write it; a PUBACK that comes meanwhile
/// goes to `acked`.
pub async fn disconnect(client: &AsyncClient, events: &mut EventLoop, acked: impl Fn(u16)) {
    if client.try_disconnect().is_err() {
        return;
    }
    let written = async {
        loop {
            match events.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                Ok(Event::Incoming(Packet::PubAck(ack))) => acked(ack.pkid),
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), written).await;
}

/// What a close the bridge announced with `error` means for the next connection: `None` when
/// reconnecting at once may help (a token that expired, the service's own trouble). A gateway
/// refused a topic of another device is most likely not a gateway in the registry: said so.
fn closing(error: &BridgeError, gateway: bool) -> Option<Failure> {
    let reason = match error.failure() {
        Failure::Transient { .. } | Failure::TokenExpired { .. } => return None,
        Failure::ClockWrong { reason }
        | Failure::ConfigVersionAhead { reason }
        | Failure::Rejected { reason }
        | Failure::Refused { reason, .. } => reason,
    };
    let hint = if gateway && error.error_type == "MQTT_TOPIC" {
        " (it refused a topic of a device behind this gateway: is this device a gateway in the \
         registry? `ingest devices create … --gateway`)"
    } else {
        ""
    };
    Some(Failure::Refused {
        reason: format!("the MQTT bridge closed the connection: {reason}{hint}"),
        info_reason: Some(error.error_type.clone()),
    })
}

/// Frees rumqttc's slot for `pkid` as the PUBACK the bridge will never send would have: else
/// the packet id stays taken, and the publish that comes round to it waits for good. A publish
/// held back by that very id goes out next, in its turn. The `PubAck` event this queues finds no
/// waiter (the refusal took it).
fn release(events: &mut EventLoop, pkid: u16) {
    let held = events.state.collision.take_if(|p| p.pkid == pkid);
    let _ = events
        .state
        .handle_incoming_packet(Packet::PubAck(PubAck::new(pkid)));
    if let Some(publish) = held {
        events.pending.push_front(Request::Publish(publish));
    }
}

/// When a connection's token is renewed: at 75 % of its lifetime, but not sooner than
/// [`MIN_CONNECTION`] (a lifetime of a few seconds would otherwise reconnect without pause).
fn renewal(lifetime_secs: u64) -> Duration {
    Duration::from_secs(lifetime_secs * 3 / 4).max(MIN_CONNECTION)
}

fn lost(reason: &str, connected: bool) -> Ended {
    let failure = transient(&format!("the MQTT connection failed: {reason}"));
    Ended::Lost { failure, connected }
}

/// What a CONNACK refusal means for the device, in the words of the HTTP bridge's refusals.
pub fn refusal(code: ConnectReturnCode) -> Failure {
    let refused = |reason: &str| Failure::Refused {
        reason: reason.to_owned(),
        info_reason: None,
    };
    match code {
        ConnectReturnCode::BadUserNamePassword => refused(
            "the MQTT bridge refused the device's token even when newly signed (CONNACK 4): \
             the key is not registered for this device, or the device clock is wrong",
        ),
        ConnectReturnCode::NotAuthorized => refused(
            "the MQTT bridge does not let this device connect (CONNACK 5): it is unknown, \
             blocked, or MQTT is off for its registry",
        ),
        ConnectReturnCode::BadClientId => refused(
            "the MQTT bridge refused the client id (CONNACK 2): check project, region, \
             registry and device",
        ),
        ConnectReturnCode::RefusedProtocolVersion => {
            refused("the MQTT bridge does not speak MQTT 3.1.1 (CONNACK 1)")
        }
        ConnectReturnCode::ServiceUnavailable | ConnectReturnCode::Success => {
            transient("the MQTT bridge is unavailable (CONNACK 3); retrying")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connack_refusals_sort_like_http_refusals() {
        assert!(matches!(
            refusal(ConnectReturnCode::NotAuthorized),
            Failure::Refused { .. }
        ));
        assert!(matches!(
            refusal(ConnectReturnCode::BadUserNamePassword),
            Failure::Refused { .. }
        ));
        assert!(matches!(
            refusal(ConnectReturnCode::ServiceUnavailable),
            Failure::Transient { .. }
        ));
    }

    #[tokio::test]
    async fn a_refused_packet_id_is_freed_in_rumqttc_and_the_publish_held_behind_it_goes_next() {
        let options = MqttOptions::new("d", "localhost", 8883);
        let (_client, mut events) = AsyncClient::new(options.clone(), 4);
        let publish = |pkid| {
            let mut publish = Publish::new("/t", QoS::AtLeastOnce, vec![1]);
            publish.pkid = pkid;
            Request::Publish(publish)
        };
        events.state = rumqttc::MqttState::new(2, true);
        for pkid in [1, 2, 1] {
            let _ = events.state.handle_outgoing_packet(publish(pkid));
        }
        // Packet id 1 was refused: without a PUBACK the third publish is stuck behind it.
        assert!(events.state.collision.is_some());
        assert_eq!(events.state.inflight(), 2);
        release(&mut events, 1);
        assert!(events.state.collision.is_none());
        assert_eq!(events.state.inflight(), 1);
        assert!(matches!(events.pending.front(), Some(Request::Publish(p)) if p.pkid == 1));
        // Its slot is free again: the held publish can take it.
        let _ = events
            .state
            .handle_outgoing_packet(events.pending[0].clone());
        assert!(events.state.collision.is_none());
        assert_eq!(events.state.inflight(), 2);
    }

    #[test]
    fn a_close_announced_for_a_reason_retrying_cannot_fix_slows_the_next_connection() {
        let error = |error_type: &str| BridgeError {
            error_type: error_type.into(),
            description: "words".into(),
            device_id: "gw".into(),
            message_id: 0,
        };
        assert_eq!(closing(&error("TOKEN_EXPIRED"), false), None);
        assert_eq!(closing(&error("PUBSUB_UNAVAILABLE"), true), None);
        let Some(Failure::Refused { reason, .. }) = closing(&error("DEVICE_BLOCKED"), false) else {
            panic!("a blocked device is for the operator");
        };
        assert_eq!(
            reason,
            "the MQTT bridge closed the connection: DEVICE_BLOCKED: words"
        );
        let Some(Failure::Refused { reason, .. }) = closing(&error("MQTT_TOPIC"), true) else {
            panic!("a topic refused to a gateway");
        };
        assert!(reason.contains("is this device a gateway"), "{reason}");
    }

    #[test]
    fn a_connection_is_renewed_at_three_quarters_of_the_token_lifetime() {
        assert_eq!(renewal(3600), Duration::from_secs(2700));
        assert_eq!(renewal(20), Duration::from_secs(15));
        assert_eq!(renewal(2), MIN_CONNECTION);
    }
}
