//! The checks for `transport = "mqtt"`, in the order an MQTT connection is made: the clock (from
//! the HTTPS endpoint's `Date` header when it answers: MQTT carries no time), DNS of `mqtt.host`,
//! TCP to `mqtt.port` (and, when that fails, to 443, to tell a firewall blocking 8883 from a
//! bridge that is down), the TLS handshake, the CONNECT through the agent's own
//! [`connection::connect`] with a newly signed token, and a test event at QoS 1 that must get
//! its PUBACK.
//!
//! A refusing CONNACK is all MQTT 3.1.1 tells a device; the bridge keeps the reason as the
//! device's last error, which only the operator can read. So when the HTTPS endpoint answers,
//! the doctor asks it with the same token: its refusal carries the exact reason (IoT Core's
//! `ErrorInfo`), and the fix follows from it as for HTTPS.

use std::net::SocketAddr;

use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, Outgoing, Packet, QoS};
use shared::device_api::ConfigResponse;

use super::net::{self, TcpFailure};
use super::{Options, Report, https, skip_all, tls, token_fix};
use crate::clock::Clock;
use crate::http::IngestClient;
use crate::keys::DeviceKey;
use crate::mqtt::connection::{self, ConnectFailure, Endpoint};
use crate::mqtt::websocket::WsEndpoint;
use crate::mqtt::{PUBACK_TIMEOUT, Topics};
use crate::readings::Reading;
use crate::settings::Settings;
use crate::token;
use crate::transport::{Failure, classify};

const CONNECT: &str = "MQTT CONNECT";
const TEST_EVENT: &str = "test event accepted";

/// Every check after the key's, for `transport = "mqtt"`.
pub(super) async fn check(
    report: &mut Report,
    settings: &Settings,
    bridge: IngestClient,
    key: Option<DeviceKey>,
    clock: Clock,
    options: &Options,
) {
    let unreachable = "MQTT carries no time, and the HTTPS endpoint did not answer to compare \
                       with; a clock far off shows below as CONNACK 4";
    let https_up = https::check_clock(report, &bridge, clock, unreachable).await;
    let Some((addrs, port)) = reach(report, settings, options.mqtt_fallback_port).await else {
        return skip_all(
            report,
            &[CONNECT, TEST_EVENT],
            "the bridge cannot be reached (see above)",
        );
    };
    let Some(tls) = tls::check(report, settings, &addrs, port).await else {
        return skip_all(
            report,
            &[CONNECT, TEST_EVENT],
            "no TLS connection (see above)",
        );
    };
    let Some(key) = key else {
        return skip_all(report, &[CONNECT, TEST_EVENT], "no usable key (see above)");
    };
    let endpoint = Endpoint {
        host: settings.mqtt.host.clone(),
        port,
        keepalive: settings.mqtt.keepalive,
        tls,
        websocket: None,
    };
    let probe = https_up.then_some(&bridge);
    check_connect(report, settings, &endpoint, &key, clock, probe).await;
}

/// Every check after the key's, for `transport = "mqtt+ws"`: the clock, then the WebSocket and
/// the CONNECT through the agent's own [`connection::connect`] (a failure to open the WebSocket
/// names its step: TCP, TLS or the upgrade), and the test event.
pub(super) async fn check_websocket(
    report: &mut Report,
    settings: &Settings,
    bridge: IngestClient,
    key: Option<DeviceKey>,
    clock: Clock,
) {
    let unreachable = "the HTTPS endpoint, which also serves the WebSocket, did not answer; a \
                       clock far off shows below as CONNACK 4";
    let https_up = https::check_clock(report, &bridge, clock, unreachable).await;
    let Some(key) = key else {
        return skip_all(report, &[CONNECT, TEST_EVENT], "no usable key (see above)");
    };
    let ca = crate::agent::read_ca(settings);
    let tls = match ca.and_then(|ca| Ok(crate::tls::client_config(ca.as_deref())?)) {
        Ok(tls) => tls,
        Err(err) => {
            return report.fail("TLS", &format!("{err:#}"), "check ca_file in the settings");
        }
    };
    let endpoint = Endpoint {
        host: settings.mqtt.host.clone(),
        port: settings.mqtt.port,
        keepalive: settings.mqtt.keepalive,
        tls: tls.clone(),
        websocket: settings.websocket_url().map(|url| WsEndpoint { url, tls }),
    };
    let probe = https_up.then_some(&bridge);
    check_connect(report, settings, &endpoint, &key, clock, probe).await;
}

/// DNS, then TCP to the MQTT port, else to the fallback port; the addresses and the port that
/// answered.
async fn reach(
    report: &mut Report,
    settings: &Settings,
    fallback: u16,
) -> Option<(Vec<SocketAddr>, u16)> {
    let (host, port) = (&settings.mqtt.host, settings.mqtt.port);
    let setting = "mqtt.host (by default the endpoint's host)";
    let addrs = net::resolve(report, host, port, setting).await?;
    let what = format!("TCP {host}:{port}");
    let first = match net::connect(&addrs, port).await {
        Ok(_) => {
            report.pass(&what, "connected");
            return Some((addrs, port));
        }
        Err(failure) => failure,
    };
    if fallback == port {
        report.fail(
            &what,
            &describe(port, &first),
            &unreachable_fix(port, &first),
        );
        return None;
    }
    match net::connect(&addrs, fallback).await {
        Ok(_) => {
            let detail = format!(
                "{}; port {fallback} of the same host answers, so a firewall blocking outgoing \
                 port {port} is the likely cause (the checks below use port {fallback})",
                describe(port, &first)
            );
            let fix = format!(
                "set mqtt.port = {fallback} in the settings (IoT Core served MQTT on 443 too), \
                 or have outgoing TCP port {port} opened in the firewall"
            );
            report.fail(&what, &detail, &fix);
            Some((addrs, fallback))
        }
        Err(second) => {
            let detail = format!(
                "{}; {}",
                describe(port, &first),
                describe(fallback, &second)
            );
            report.fail(&what, &detail, &unreachable_fix(port, &first));
            None
        }
    }
}

/// What happened on one port, for a person.
fn describe(port: u16, failure: &TcpFailure) -> String {
    match failure {
        TcpFailure::Refused(_) => {
            format!(
                "port {port}: connection refused (nothing listens there, or a firewall rejects it)"
            )
        }
        TcpFailure::TimedOut => format!(
            "port {port}: {failure} (a firewall dropping the connection, or the host is down)"
        ),
        TcpFailure::Other(err) => format!("port {port}: {err}"),
    }
}

/// What to check when no port answered, by what the configured one did.
fn unreachable_fix(port: u16, failure: &TcpFailure) -> String {
    match failure {
        TcpFailure::Refused(_) => "is the MQTT bridge running, and are mqtt.host and mqtt.port \
                                   right? (ingest serves MQTT where its --mqtt-addr says)"
            .to_owned(),
        TcpFailure::TimedOut => format!(
            "check that mqtt.host names the bridge's machine and that it is up, and that this \
             network lets outgoing TCP to port {port} through"
        ),
        TcpFailure::Other(_) => {
            "check the Pi's network connection (`ip route`) and mqtt.host".to_owned()
        }
    }
}

/// The CONNECT the agent makes, with a newly signed token; then the test event.
async fn check_connect(
    report: &mut Report,
    settings: &Settings,
    endpoint: &Endpoint,
    key: &DeviceKey,
    clock: Clock,
    probe: Option<&IngestClient>,
) {
    let signed = token::sign(key, &settings.project, clock.now(), settings.token_lifetime);
    let token = match signed {
        Ok(token) => token,
        Err(err) => return report.fail("token", &err.to_string(), "check the private key"),
    };
    let device = &settings.device;
    match connection::connect(device, endpoint, token.clone(), 1).await {
        Ok((client, events)) => {
            let detail = format!("CONNACK 0: the bridge accepted the token of {device}");
            report.pass(CONNECT, &detail);
            test_event(report, settings, client, events, clock).await;
        }
        Err(ConnectFailure::Refused(code)) => {
            let asked = match probe {
                Some(bridge) => Some(bridge.get_config(&token, 0).await.map_err(classify)),
                None => None,
            };
            let (detail, fix) = refusal(code, settings, asked.as_ref());
            report.fail(CONNECT, &detail, &fix);
            report.skip(TEST_EVENT, "the CONNECT was refused");
        }
        Err(ConnectFailure::Failed(reason)) => {
            let fix = match endpoint.websocket {
                Some(_) => {
                    "the endpoint serves MQTT over WebSocket at /mqtt: check the endpoint \
                     URL, ca_file and the network, and that the service is an ingest with its \
                     MQTT bridge on (Cloud Run: the device service)"
                }
                None => {
                    "the TLS check passed, so the bridge answered but did not finish the \
                     CONNECT: try again, and if it lasts ask the operator to look at the \
                     service's log"
                }
            };
            report.fail(CONNECT, &format!("no CONNACK: {reason}"), fix);
            report.skip(TEST_EVENT, "no MQTT connection");
        }
    }
}

/// The line for a refusing CONNACK: what the code means, and what the HTTPS bridge said about
/// the same token (`asked`) when it could be asked.
fn refusal(
    code: ConnectReturnCode,
    settings: &Settings,
    asked: Option<&Result<ConfigResponse, Failure>>,
) -> (String, String) {
    let (meaning, mut fix) = connack(code, settings);
    let mut detail = meaning.to_owned();
    if !matches!(
        code,
        ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
    ) {
        return (detail, fix);
    }
    match asked {
        Some(answer) if accepted_token(answer) => {
            detail.push_str("; the HTTPS bridge accepts the same token");
            if code == ConnectReturnCode::NotAuthorized {
                fix = format!(
                    "the device is known and not blocked, so MQTT is off for its registry: ask \
                     the operator to turn it on (`ingest registries update {} --mqtt`)",
                    settings.device.registry.registry
                );
            }
        }
        Some(Err(
            failure @ (Failure::Refused { .. }
            | Failure::TokenExpired { .. }
            | Failure::ClockWrong { .. }),
        )) => {
            detail.push_str(&format!(
                "; asked over HTTPS with the same token, the service says: {failure}"
            ));
            fix = token_fix(failure).to_owned();
        }
        // Not reachable, or busy: nothing more is known.
        _ => {}
    }
    (detail, fix)
}

/// True when the HTTPS bridge took the token itself: it answered, or refused only because HTTP
/// is off for the registry, which it checks after the token.
fn accepted_token(answer: &Result<ConfigResponse, Failure>) -> bool {
    match answer {
        Ok(_) => true,
        Err(Failure::Refused {
            info_reason: Some(reason),
            ..
        }) => reason == "PROTOCOL_DISABLED",
        Err(_) => false,
    }
}

/// What a CONNACK refusal code means, and what to do about it when nothing more is known.
fn connack(code: ConnectReturnCode, settings: &Settings) -> (&'static str, String) {
    let name = &settings.device;
    let (device, registry) = (&name.device, &name.registry.registry);
    let last_error = format!(
        "the operator sees the bridge's reason as the device's last error (`ingest devices get \
         {device} --registry {registry}`)"
    );
    match code {
        ConnectReturnCode::BadUserNamePassword => (
            "CONNACK 4 (bad user name or password): the bridge refused the token",
            format!(
                "the likely causes: this key is not registered for the device, or its credential \
                 has expired (have the operator register public.pem: `ingest devices create … \
                 --public-key public.pem --format ES256_PEM`, or RSA_PEM), or the device clock is \
                 wrong (see the clock check); MQTT tells the device no more: {last_error}"
            ),
        ),
        ConnectReturnCode::NotAuthorized => (
            "CONNACK 5 (not authorised): unknown or blocked device, or MQTT disabled for the \
             registry",
            format!(
                "check project, region, registry and device in the settings; if they are right, \
                 the device is blocked (ask the operator to unblock it) or MQTT is off for its \
                 registry (`ingest registries update {registry} --mqtt`); {last_error}"
            ),
        ),
        ConnectReturnCode::ServiceUnavailable | ConnectReturnCode::Success => (
            "CONNACK 3 (server unavailable): the bridge cannot check the device now",
            "try again in a minute; if it lasts, the operator should look at the service's log \
             (its registry store may be down)"
                .to_owned(),
        ),
        ConnectReturnCode::BadClientId => (
            "CONNACK 2 (identifier rejected): the bridge refused the client id",
            format!(
                "check project, region, registry and device in the settings: the client id is \
                 {name}"
            ),
        ),
        ConnectReturnCode::RefusedProtocolVersion => (
            "CONNACK 1 (unacceptable protocol version): the server does not take MQTT 3.1.1",
            "is mqtt.port the port of an IoT Core MQTT bridge? The agent speaks MQTT 3.1.1, as \
             IoT Core did"
                .to_owned(),
        ),
    }
}

/// Publishes a test event at QoS 1 and waits for its PUBACK; the bridge's reason, from the
/// device's errors topic, when it closes the connection instead.
async fn test_event(
    report: &mut Report,
    settings: &Settings,
    client: AsyncClient,
    mut events: EventLoop,
    clock: Clock,
) {
    let topics = Topics::new(&settings.device);
    let reading = Reading::new("doctor", serde_json::json!({"test": true}), clock);
    let payload = serde_json::to_vec(&reading).unwrap_or_default();
    // Subscribed first, so a refusal of the event is told there before the bridge closes.
    let _ = client.try_subscribe(topics.errors(), QoS::AtMostOnce);
    let topic = topics.events(settings.sub_folder.as_deref());
    let _ = client.try_publish(topic, QoS::AtLeastOnce, false, payload);
    let acked = tokio::time::timeout(PUBACK_TIMEOUT, acknowledged(&mut events, &topics)).await;
    let no_topic = "the registry needs an event topic matching the subfolder; ask its operator";
    match acked {
        Ok(Ok(())) => report.pass(
            TEST_EVENT,
            &format!(
                "event {} published at QoS 1 and acknowledged (PUBACK)",
                reading.id
            ),
        ),
        Ok(Err(why)) => report.fail(TEST_EVENT, &why, no_topic),
        Err(_) => report.fail(
            TEST_EVENT,
            &format!("no PUBACK within {} s", PUBACK_TIMEOUT.as_secs()),
            "the bridge took the event but its Pub/Sub did not confirm it: ask the operator to \
             look at the service's log",
        ),
    }
    connection::disconnect(&client, &mut events, |_| {}).await;
}

/// Polls until the PUBACK of the one publish; when the connection ends first, why, in the
/// bridge's words from the errors topic if it sent them.
async fn acknowledged(events: &mut EventLoop, topics: &Topics) -> Result<(), String> {
    let errors = topics.errors();
    let (mut pkid, mut told) = (None, None);
    loop {
        match events.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(id))) => pkid = Some(id),
            Ok(Event::Incoming(Packet::PubAck(ack))) if Some(ack.pkid) == pkid => return Ok(()),
            Ok(Event::Incoming(Packet::Publish(publish))) if publish.topic == errors => {
                told = description(&publish.payload);
            }
            Ok(_) => {}
            Err(err) => {
                return Err(match told {
                    Some(said) => format!("no PUBACK; the bridge said on {errors}: {said}"),
                    None => format!("the connection ended without a PUBACK ({err})"),
                });
            }
        }
    }
}

/// The `description` of a message on the errors topic (IoT Core's JSON shape).
fn description(payload: &[u8]) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(payload).ok()?;
    body["description"].as_str().map(str::to_owned)
}
