//! `iotcore-device doctor`: the checks a Pi owner needs when the agent cannot connect, in the
//! order the causes are usually found in the field. Each prints one `pass`/`FAIL`/`skip` line
//! and, on failure, the fix. Later checks that cannot run because an earlier one failed are
//! skipped rather than piled on.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use shared::jwt::MAX_CLOCK_SKEW_SECS;
use tokio::net::TcpStream;

use crate::agent;
use crate::clock::Clock;
use crate::http::IngestClient;
use crate::keys::DeviceKey;
use crate::readings::Reading;
use crate::settings::{self, FileSettings, Overrides, Settings};
use crate::token;
use crate::transport::{Failure, Transport};

const NET_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It works.
    Pass,
    /// It does not; the line says how to fix it.
    Fail,
    /// Not checked, because something before it failed.
    Skip,
}

/// The report: lines as printed, and whether everything passed.
#[derive(Debug, Default)]
pub struct Report {
    text: String,
    failed: bool,
}

impl Report {
    fn line(&mut self, verdict: Verdict, what: &str, detail: &str, fix: Option<&str>) {
        let mark = match verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        };
        self.failed |= verdict == Verdict::Fail;
        let _ = writeln!(self.text, "[{mark}] {what}: {detail}");
        if let Some(fix) = fix {
            let _ = writeln!(self.text, "       fix: {fix}");
        }
    }

    fn pass(&mut self, what: &str, detail: &str) {
        self.line(Verdict::Pass, what, detail, None);
    }

    fn fail(&mut self, what: &str, detail: &str, fix: &str) {
        self.line(Verdict::Fail, what, detail, Some(fix));
    }

    fn skip(&mut self, what: &str, why: &str) {
        self.line(Verdict::Skip, what, why, None);
    }

    /// The printed lines.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True when any check failed.
    pub fn failed(&self) -> bool {
        self.failed
    }
}

/// Runs every check.
pub async fn run(path: &Path, explicit: bool, overrides: Overrides) -> Report {
    let mut report = Report::default();
    let file = check_config_file(&mut report, path, explicit);
    let settings = match Settings::resolve(file, overrides) {
        Ok(settings) => settings,
        Err(err) => {
            report.fail(
                "settings",
                &err.to_string(),
                "complete the settings file (see /usr/share/doc/iotcore-device/config.toml)",
            );
            return report;
        }
    };
    let key = check_key(&mut report, &settings);
    let clock = Clock::with_offset(settings.clock_offset_secs);
    let bridge = match agent::ingest_client(&settings) {
        Ok(bridge) => bridge,
        Err(err) => {
            report.fail(
                "HTTPS client",
                &format!("{err:#}"),
                "check ca_file in the settings",
            );
            return report;
        }
    };
    check_clock(&mut report, &bridge, clock).await;
    let reachable = check_network(&mut report, &settings).await;
    let transport = Transport::Https(bridge);
    match (key, reachable) {
        (Some(key), true) => check_service(&mut report, &settings, &transport, &key, clock).await,
        (None, _) => {
            report.skip("token accepted", "no usable key (see above)");
            report.skip("test event accepted", "no usable key (see above)");
        }
        (_, false) => {
            report.skip(
                "token accepted",
                "the endpoint cannot be reached (see above)",
            );
            report.skip(
                "test event accepted",
                "the endpoint cannot be reached (see above)",
            );
        }
    }
    report
}

fn check_config_file(report: &mut Report, path: &Path, explicit: bool) -> FileSettings {
    let what = format!("config file {}", path.display());
    match settings::read_file(path, true) {
        Ok(file) => {
            report.pass(&what, "readable and valid");
            file
        }
        Err(settings::SettingsError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && !explicit =>
        {
            report.skip(&what, "not there; using flags and IOTCORE_* variables only");
            FileSettings::default()
        }
        Err(err) => {
            report.fail(
                &what,
                &err.to_string(),
                "fix the file (the packaged example lists every field), or make it readable by \
                 the agent's user",
            );
            FileSettings::default()
        }
    }
}

fn check_key(report: &mut Report, settings: &Settings) -> Option<DeviceKey> {
    let path = &settings.private_key;
    let what = format!("private key {}", path.display());
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            report.fail(
                &what,
                &format!("mode {mode:o} lets other users read the device's identity"),
                &format!("chmod 600 {}", path.display()),
            );
            return None;
        }
    }
    match agent::load_key(path, settings.algorithm) {
        Ok(key) => {
            report.pass(
                &what,
                &format!("readable, owner-only, an {} key", key.algorithm().as_str()),
            );
            Some(key)
        }
        Err(err) => {
            report.fail(
                &what,
                &format!("{err:#}"),
                "point private_key at the device's PEM private key (ES256: a P-256 key; \
                 RS256: RSA of at least 2048 bits), e.g. one made by `iotcore-device keygen`",
            );
            None
        }
    }
}

async fn check_clock(report: &mut Report, bridge: &IngestClient, clock: Clock) {
    let what = "clock";
    let server = match bridge.server_date().await {
        Ok(Some(date)) => date,
        Ok(None) => return report.skip(what, "the server sent no Date header to compare with"),
        Err(_) => return report.skip(what, "cannot ask the server for its time (see below)"),
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
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(NET_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(err)) => {
                report.fail(
                    &format!("DNS {host}"),
                    &err.to_string(),
                    "check the host name in endpoint, and the Pi's DNS (/etc/resolv.conf)",
                );
                return false;
            }
            Err(_) => {
                report.fail(
                    &format!("DNS {host}"),
                    "no answer in 10 s",
                    "check the Pi's DNS",
                );
                return false;
            }
        };
    let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    report.pass(&format!("DNS {host}"), &list.join(", "));
    let what = format!("TCP {host}:{port}");
    match tokio::time::timeout(NET_TIMEOUT, TcpStream::connect(addrs.as_slice())).await {
        Ok(Ok(_)) => report.pass(&what, "connected"),
        Ok(Err(err)) => {
            report.fail(
                &what,
                &err.to_string(),
                "is the service running and the port right? A firewall may block outgoing \
                 connections to this port",
            );
            return false;
        }
        Err(_) => {
            report.fail(
                &what,
                "no answer in 10 s",
                "a firewall is probably dropping the connection",
            );
            return false;
        }
    }
    if url.scheme() == "https" {
        let tls = format!("TLS {host}");
        match agent::ingest_client(settings) {
            Ok(bridge) => match bridge.server_date().await {
                Ok(_) => report.pass(&tls, "handshake and certificate check passed"),
                Err(err) => {
                    report.fail(
                        &tls,
                        &err.to_string(),
                        "a certificate the Pi does not trust: set ca_file to the service's CA \
                         bundle, or check that the Pi's clock is right",
                    );
                    return false;
                }
            },
            Err(err) => {
                report.fail(&tls, &format!("{err:#}"), "check ca_file");
                return false;
            }
        }
    }
    true
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
        .publish_event(&token, &payload, settings.sub_folder.as_deref())
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

/// The fix for a refused token, by the `ErrorInfo` reason the service sent (never its message,
/// which is written for people and may change).
fn token_fix(failure: &Failure) -> &'static str {
    const GENERIC: &str = "check the settings against the registry, and the service's log";
    match failure {
        Failure::TokenExpired { .. } | Failure::ClockWrong { .. } => {
            "set the device clock right (see the clock check above), then try again"
        }
        Failure::Refused {
            info_reason: Some(reason),
            ..
        } => match reason.as_str() {
            "BAD_SIGNATURE" | "CREDENTIAL_EXPIRED" | "NO_CREDENTIALS" => {
                "this key is not registered for the device: have the operator add its public key \
                 (`ingest devices create … --public-key public.pem --format ES256_PEM`, or RSA_PEM), \
                 or point private_key at the key that is registered"
            }
            "DEVICE_BLOCKED" => {
                "the device is blocked in the registry: ask its operator to unblock it"
            }
            "UNKNOWN_DEVICE" | "WRONG_AUDIENCE" => {
                "check project, region, registry and device in the settings against the registry"
            }
            _ => GENERIC,
        },
        _ => GENERIC,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(info_reason: Option<&str>, message: &str) -> Failure {
        Failure::Refused {
            reason: message.to_owned(),
            info_reason: info_reason.map(str::to_owned),
        }
    }

    #[test]
    fn the_fix_follows_the_error_info_reason_not_the_message() {
        let blocked = token_fix(&refused(
            Some("DEVICE_BLOCKED"),
            "the signature and the clock",
        ));
        assert!(blocked.contains("unblock"), "{blocked}");
        let key = token_fix(&refused(Some("BAD_SIGNATURE"), "the device is blocked"));
        assert!(key.contains("not registered"), "{key}");
        let clock = token_fix(&Failure::ClockWrong {
            reason: "nothing about time here".into(),
        });
        assert!(clock.contains("clock"), "{clock}");
        let words_only = token_fix(&refused(None, "the device clock looks ahead; blocked"));
        assert!(words_only.contains("service's log"), "{words_only}");
    }
}
