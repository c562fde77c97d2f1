//! `iotcore-device doctor`: the checks a Pi owner needs when the agent cannot connect, in the
//! order the causes are usually found in the field. Each prints one `pass`/`FAIL`/`skip` line
//! and, on failure, the fix. Later checks that cannot run because an earlier one failed are
//! skipped rather than piled on.
//!
//! The settings file and the key are checked here; the rest follows the transport the settings
//! choose, as the agent would use it: [`https`] (clock, DNS, TCP, TLS, a config fetch, a test
//! event) or [`mqtt`] (clock, DNS, TCP with a fallback port, TLS, the CONNECT, a test event with
//! its PUBACK). [`net`] and [`tls`] are the steps they share or own; [`report`] prints.

use std::path::Path;

use crate::agent;
use crate::clock::Clock;
use crate::keys::DeviceKey;
use crate::settings::{self, FileSettings, Overrides, Settings, TransportKind};
use crate::transport::Failure;

mod https;
mod mqtt;
mod net;
mod report;
mod tls;

pub use report::{Report, Verdict};

/// How the doctor runs, beyond the agent's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The port tried when the MQTT port does not answer, to tell a firewall blocking 8883 from
    /// a bridge that is down: 443, where IoT Core served MQTT too. Tests set another (a listener
    /// on 443 needs root), through the hidden `IOTCORE_DOCTOR_MQTT_FALLBACK_PORT`.
    pub mqtt_fallback_port: u16,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mqtt_fallback_port: 443,
        }
    }
}

/// Runs every check.
pub async fn run(path: &Path, explicit: bool, overrides: Overrides, options: Options) -> Report {
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
    // Over MQTT too: the endpoint's Date header is the only clock to compare with.
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
    match settings.transport {
        TransportKind::Https => https::check(&mut report, &settings, bridge, key, clock).await,
        TransportKind::Mqtt => {
            mqtt::check(&mut report, &settings, bridge, key, clock, &options).await;
        }
        TransportKind::MqttWs => {
            mqtt::check_websocket(&mut report, &settings, bridge, key, clock).await;
        }
    }
    report
}

/// A skip line for each of `checks`, all for the same reason.
fn skip_all(report: &mut Report, checks: &[&str], why: &str) {
    for check in checks {
        report.skip(check, why);
    }
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
