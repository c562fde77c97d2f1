//! Config and state. Every poll interval the agent asks `…/config?local_version=N` with the
//! version it has; a newer config is written to the config file atomically (temp file, fsync,
//! rename, fsync of the directory: a reader sees the old file or the new one, never half), its
//! version beside it (`config.version`, so a restart does not run the hook again), and then the
//! hook runs with `IOTCORE_CONFIG_FILE` and `IOTCORE_CONFIG_VERSION` set. The agent's state
//! (agent version, config version applied, the hook's outcome, readings dropped) is reported
//! with `:setState` when it changed, not on every poll.
//!
//! Over MQTT the service pushes each config instead ([`ConfigSync::run_pushed`]); it goes through
//! the same write and hook, and is acknowledged (PUBACK) once the file is durable. An MQTT config
//! message carries no version, and the bridge sends the latest config after every connect: a
//! config whose bytes equal the file's is the one applied already, and the version the agent
//! writes, hands the hook and reports is its own count of configs applied.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::mqtt::connection::PushedConfig;
use crate::spool::Spool;
use crate::token::TokenSource;
use crate::transport::{Failure, Transport};

/// The config loop's parts.
#[derive(Debug)]
pub struct ConfigSync {
    /// The way to the service.
    pub transport: Arc<Transport>,
    /// The device's token.
    pub tokens: TokenSource,
    /// Where the config goes.
    pub file: PathBuf,
    /// Run after a new config.
    pub hook: Option<String>,
    /// How often to poll.
    pub interval: Duration,
    /// For the dropped count in the state.
    pub spool: Arc<Spool>,
}

/// The least time between two state reports over MQTT (the bridge allows one a second).
const STATE_SPACING: Duration = Duration::from_millis(1100);

/// What the agent reports as its state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    config_version: u64,
    hook: String,
    dropped: u64,
}

impl State {
    fn to_json(&self) -> Value {
        json!({
            "agent": concat!("iotcore-device/", env!("CARGO_PKG_VERSION")),
            "config_version": self.config_version,
            "hook": self.hook,
            "readings_dropped": self.dropped,
        })
    }
}

impl ConfigSync {
    /// Polls until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut version = read_version(&self.version_file());
        let mut hook = "none".to_owned();
        let mut reported: Option<State> = None;
        let mut ticks = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            match self.poll(version).await {
                Ok(Some((new_version, outcome))) => {
                    version = new_version;
                    hook = outcome;
                }
                Ok(None) => {}
                Err(failure) => {
                    tracing::warn!(error = %failure, "cannot fetch the config; trying again next poll");
                    continue;
                }
            }
            self.report_if_changed(&mut reported, version, &hook).await;
        }
    }

    /// Over MQTT: applies each config the service pushes until `shutdown` turns true, and
    /// reports the state when it changed (checked on each push and every poll interval).
    pub async fn run_pushed(
        self,
        mut pushed: mpsc::UnboundedReceiver<PushedConfig>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut version = read_version(&self.version_file());
        let mut hook = "none".to_owned();
        let mut reported: Option<State> = None;
        // The first report follows the config the bridge pushes right after connecting.
        let start = tokio::time::Instant::now() + self.interval;
        let mut ticks = tokio::time::interval_at(start, self.interval);
        let mut last_report = None;
        loop {
            tokio::select! {
                config = pushed.recv() => {
                    let Some(config) = config else { return };
                    if let Some(outcome) = self.take_pushed(version, config).await {
                        version += 1;
                        hook = outcome;
                    }
                }
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            // The bridge refuses a second state within a second without a PUBACK.
            if let Some(last) = last_report {
                tokio::time::sleep_until(last + STATE_SPACING).await;
            }
            if self.report_if_changed(&mut reported, version, &hook).await {
                last_report = Some(tokio::time::Instant::now());
            }
        }
    }

    /// A pushed config: written and its hook run when it differs from the file (the hook's
    /// outcome), acknowledged either way once nothing more needs to be durable.
    async fn take_pushed(&self, version: u64, mut config: PushedConfig) -> Option<String> {
        let data = std::mem::take(&mut config.data);
        let current = std::fs::read(&self.file).ok();
        // No file and an empty config: the empty version every device is created with.
        let unchanged = match &current {
            Some(bytes) => *bytes == data,
            None => data.is_empty(),
        };
        if unchanged {
            config.ack();
            return None;
        }
        self.apply(version + 1, &data, move || config.ack()).await
    }

    /// Reports the state unless the last report said the same; whether it sent one.
    async fn report_if_changed(
        &self,
        reported: &mut Option<State>,
        version: u64,
        hook: &str,
    ) -> bool {
        let state = State {
            config_version: version,
            hook: hook.to_owned(),
            dropped: self.spool.dropped(),
        };
        if reported.as_ref() != Some(&state) && self.report(&state).await {
            *reported = Some(state);
            return true;
        }
        false
    }

    /// One poll: the new version and the hook's outcome when the config changed.
    async fn poll(&self, version: u64) -> Result<Option<(u64, String)>, Failure> {
        let config = match self.fetch(version).await {
            // The service forgot newer versions (a fresh registry): take its latest.
            Err(Failure::ConfigVersionAhead { .. }) => self.fetch(0).await?,
            other => other?,
        };
        let latest = config.version;
        // Every device is created with an empty version 1 (IoT Core's rule): that is no config
        // an operator set, so it is not written and the hook does not run for it.
        let creation_default = latest == 1 && config.binary_data.is_empty();
        if latest == version || latest == 0 || creation_default {
            return Ok(None);
        }
        let outcome = self.apply(latest, &config.binary_data, || {}).await;
        Ok(outcome.map(|outcome| (latest, outcome)))
    }

    /// Writes config `version` durably (the file, then its version), calls `durable`, and runs
    /// the hook: its outcome, or `None` when the config could not be written.
    async fn apply(&self, version: u64, data: &[u8], durable: impl FnOnce()) -> Option<String> {
        if let Err(err) = write_atomically(&self.file, data)
            .and_then(|()| write_atomically(&self.version_file(), version.to_string().as_bytes()))
        {
            tracing::error!(file = %self.file.display(), error = %err, "cannot write the new config");
            return None;
        }
        durable();
        tracing::info!(version, file = %self.file.display(), "new config written");
        Some(match &self.hook {
            Some(hook) => run_hook(hook, &self.file, version).await,
            None => "none".to_owned(),
        })
    }

    async fn fetch(&self, version: u64) -> Result<shared::device_api::ConfigResponse, Failure> {
        let token = self.token()?;
        let answer = self.transport.get_config(&token, version).await;
        if let Err(Failure::TokenExpired { .. }) = &answer {
            self.tokens.expired(&token);
            return self.transport.get_config(&self.token()?, version).await;
        }
        answer
    }

    async fn report(&self, state: &State) -> bool {
        let body = state.to_json().to_string();
        let sent = match self.token() {
            Ok(token) => self.transport.set_state(&token, body.as_bytes()).await,
            Err(failure) => Err(failure),
        };
        match sent {
            Ok(()) => {
                tracing::info!(config_version = state.config_version, "state reported");
                true
            }
            Err(failure) => {
                tracing::warn!(error = %failure, "cannot report the state; trying again next poll");
                false
            }
        }
    }

    fn token(&self) -> Result<String, Failure> {
        self.tokens.token().map_err(|err| Failure::Refused {
            reason: format!("cannot sign a token: {err}"),
            info_reason: None,
        })
    }

    fn version_file(&self) -> PathBuf {
        let mut name = self.file.file_name().unwrap_or_default().to_owned();
        name.push(".version");
        self.file.with_file_name(name)
    }
}

fn read_version(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// Temp file beside the target, fsync, rename over it, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(&dir)?.sync_all()
}

/// Runs the hook with `sh -c`; returns `ok` or what went wrong, for the state report.
async fn run_hook(hook: &str, file: &Path, version: u64) -> String {
    let outcome = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new("sh")
            .args(["-c", hook])
            .env("IOTCORE_CONFIG_FILE", file)
            .env("IOTCORE_CONFIG_VERSION", version.to_string())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .status(),
    )
    .await;
    let result = match outcome {
        Ok(Ok(status)) if status.success() => "ok".to_owned(),
        Ok(Ok(status)) => format!("failed: {status}"),
        Ok(Err(err)) => format!("failed to start: {err}"),
        Err(_) => "failed: timed out after 300 s".to_owned(),
    };
    if result == "ok" {
        tracing::info!(version, "config hook ran");
    } else {
        tracing::warn!(version, %hook, outcome = %result, "config hook failed");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.json");
        write_atomically(&path, b"first version, long").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config.json"], "no temp file left behind");
    }

    #[tokio::test]
    async fn the_hook_sees_the_file_and_version_and_its_failure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        let seen = dir.path().join("seen");
        let hook = format!(
            "echo \"$IOTCORE_CONFIG_FILE $IOTCORE_CONFIG_VERSION\" > {}",
            seen.display()
        );
        assert_eq!(run_hook(&hook, &file, 7).await, "ok");
        let text = std::fs::read_to_string(&seen).unwrap();
        assert_eq!(text.trim(), format!("{} 7", file.display()));
        assert!(
            run_hook("exit 3", &file, 8)
                .await
                .contains("exit status: 3")
        );
    }
}
