//! The checks over IoT Core's HTTP bridge: the clock against the server's `Date` header, DNS,
//! TCP and TLS to the endpoint, a config fetch (the token is accepted) and a test event. The
//! clock check also serves the MQTT checks: MQTT carries no time, the endpoint's answer does.

use shared::jwt::MAX_CLOCK_SKEW_SECS;

use super::{Report, net, skip_all, token_fix};
use crate::agent;
use crate::clock::Clock;
use crate::http::IngestClient;
use crate::keys::DeviceKey;
use crate::readings::Reading;
use crate::settings::Settings;
use crate::token;
use crate::transport::Transport;

/// Every check after the key's, for `transport = "https"`.
pub(super) async fn check(
    report: &mut Report,
    settings: &Settings,
    bridge: IngestClient,
    key: Option<DeviceKey>,
    clock: Clock,
) {
    check_clock(
        report,
        &bridge,
        clock,
        "cannot ask the server for its time (see below)",
    )
    .await;
    let reachable = check_network(report, settings).await;
    let transport = Transport::Https(bridge, Default::default());
    match (key, reachable) {
        (Some(key), true) => check_service(report, settings, &transport, &key, clock).await,
        (None, _) => skip_all(
            report,
            &["token accepted", "test event accepted"],
            "no usable key (see above)",
        ),
        (_, false) => {
            let why = "the endpoint cannot be reached (see above)";
            report.skip("token accepted", why);
            report.skip("test event accepted", why);
        }
    }
}

/// Compares the device clock with the endpoint's `Date` header; true when the endpoint answered.
/// `unreachable` is the skip line's reason when it did not.
pub(super) async fn check_clock(
    report: &mut Report,
    bridge: &IngestClient,
    clock: Clock,
    unreachable: &str,
) -> bool {
    let what = "clock";
    let server = match bridge.server_date().await {
        Ok(Some(date)) => date,
        Ok(None) => {
            report.skip(what, "the server sent no Date header to compare with");
            return true;
        }
        Err(_) => {
            report.skip(what, unreachable);
            return false;
        }
    };
    let drift = clock.now() - server;
    let minutes = drift.abs() as f64 / 60.0;
    let direction = if drift >= 0 { "ahead of" } else { "behind" };
    let allowed = MAX_CLOCK_SKEW_SECS / 60;
    let detail = format!(
        "the device clock is {minutes:.1} min {direction} the server's (allowed: {allowed} min)"
    );
    if drift.abs() > MAX_CLOCK_SKEW_SECS {
        report.fail(
            what,
            &detail,
            "turn on time sync (`sudo timedatectl set-ntp true`; a Pi without a real-time clock \
             needs the network at boot) or set the time, then check with `timedatectl`",
        );
    } else {
        report.pass(what, &detail);
    }
    true
}

/// DNS, TCP and (for https) TLS; true when the endpoint answers at all.
async fn check_network(report: &mut Report, settings: &Settings) -> bool {
    let url = &settings.endpoint;
    let Some(host) = url.host_str() else {
        report.fail(
            "endpoint",
            "the URL has no host",
            "set endpoint = \"https://HOST\"",
        );
        return false;
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let Some(addrs) = net::resolve(report, host, port, "endpoint").await else {
        return false;
    };
    let what = format!("TCP {host}:{port}");
    match net::connect(&addrs, port).await {
        Ok(_) => report.pass(&what, "connected"),
        Err(net::TcpFailure::TimedOut) => {
            report.fail(
                &what,
                "no answer in 10 s",
                "a firewall is probably dropping the connection",
            );
            return false;
        }
        Err(failure) => {
            report.fail(
                &what,
                &failure.to_string(),
                "is the service running and the port right? A firewall may block outgoing \
                 connections to this port",
            );
            return false;
        }
    }
    if url.scheme() == "https" {
        return check_tls(report, settings, host).await;
    }
    true
}

async fn check_tls(report: &mut Report, settings: &Settings, host: &str) -> bool {
    let tls = format!("TLS {host}");
    match agent::ingest_client(settings) {
        Ok(bridge) => match bridge.server_date().await {
            Ok(_) => {
                report.pass(&tls, "handshake and certificate check passed");
                true
            }
            Err(err) => {
                report.fail(
                    &tls,
                    &err.to_string(),
                    "a certificate the Pi does not trust: set ca_file to the service's CA \
                     bundle, or check that the Pi's clock is right",
                );
                false
            }
        },
        Err(err) => {
            report.fail(&tls, &format!("{err:#}"), "check ca_file");
            false
        }
    }
}

async fn check_service(
    report: &mut Report,
    settings: &Settings,
    transport: &Transport,
    key: &DeviceKey,
    clock: Clock,
) {
    let signed = token::sign(key, &settings.project, clock.now(), settings.token_lifetime);
    let token = match signed {
        Ok(token) => token,
        Err(err) => return report.fail("token", &err.to_string(), "check the private key"),
    };
    let device = settings.device.to_string();
    match transport.get_config(&token, 0).await {
        Ok(config) => report.pass(
            "token accepted",
            &format!("{device} fetched its config (version {})", config.version),
        ),
        Err(failure) => {
            report.fail("token accepted", &failure.to_string(), token_fix(&failure));
            return report.skip("test event accepted", "the token was refused");
        }
    }
    let reading = Reading::new("doctor", serde_json::json!({"test": true}), clock);
    let payload = serde_json::to_vec(&reading).unwrap_or_default();
    match transport
        .publish_event(&token, None, &payload, settings.sub_folder.as_deref())
        .await
    {
        Ok(()) => report.pass(
            "test event accepted",
            &format!("event {} published", reading.id),
        ),
        Err(failure) => report.fail(
            "test event accepted",
            &failure.to_string(),
            "the registry needs an event topic matching the subfolder; ask its operator",
        ),
    }
}
