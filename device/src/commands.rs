//! Commands for a device on HTTPS (an extension of the service: IoT Core sent commands over MQTT
//! only). An operator sends one with a `ttl` (`ingest commands send … --ttl 2h`); the service keeps
//! it, and every `commands.poll_interval` the agent asks `GET …/commands?ack=N` for what is
//! pending, N being the last command it carried out. Each new command runs `commands.hook` (`sh
//! -c`, the payload on standard input, the subfolder as `$1`, `IOTCORE_COMMAND_ID` set) within
//! `commands.timeout`, oldest first. The id of the last one carried out is written to
//! `commands.last` in the spool directory before it is acknowledged, so a restart never runs a
//! command twice; one whose hook was interrupted by a power cut runs again (at least once).
//! Without a hook the agent never asks, so nothing is marked delivered that nobody ran. A
//! service without the extension (its `404 UNKNOWN_PATH`) is told once in the log, and the loop
//! ends.
//!
//! Over MQTT (IoT Core's own way) the service delivers each command on
//! `/devices/{d}/commands/{subfolder}` while the device is connected; [`run_pushed`] runs the same
//! hook for each, in order of arrival. MQTT commands carry no id: `IOTCORE_COMMAND_ID` is then the
//! agent's own count since it started.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use shared::device_api::QueuedCommand;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, watch};

use crate::configsync::write_atomically;
use crate::mqtt::connection::PushedCommand;
use crate::token::TokenSource;
use crate::transport::{Failure, Transport};

/// The command loop's parts.
#[derive(Debug)]
pub struct CommandSync {
    /// The way to the service.
    pub transport: Arc<Transport>,
    /// The device's token.
    pub tokens: TokenSource,
    /// Run for each command.
    pub hook: String,
    /// How long one run may take.
    pub timeout: Duration,
    /// How often to ask.
    pub interval: Duration,
    /// Holds the id of the last command carried out.
    pub last_file: PathBuf,
}

impl CommandSync {
    /// Polls until `shutdown` turns true, or the service says it has no queued commands.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut done = read_id(&self.last_file);
        let mut ticks = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            let pending = match self.fetch(done).await {
                Ok(answer) => answer.commands,
                // An ingest from before queued commands answers this path as unknown.
                Err(Failure::Refused {
                    reason,
                    info_reason: Some(why),
                }) if why == "UNKNOWN_PATH" => {
                    tracing::warn!(%reason, "the service offers no queued commands; commands.hook is not used");
                    return;
                }
                Err(failure) => {
                    tracing::warn!(error = %failure, "cannot fetch commands; trying again next poll");
                    continue;
                }
            };
            let carried_out = done;
            let new = pending
                .into_iter()
                .filter(|c| carried_out.is_none_or(|d| c.id > d));
            for command in new {
                let outcome = run_hook(&self.hook, &command, self.timeout).await;
                tracing::info!(id = command.id, %outcome, "command carried out");
                if let Err(err) =
                    write_atomically(&self.last_file, command.id.to_string().as_bytes())
                {
                    tracing::error!(file = %self.last_file.display(), error = %err, "cannot record the command carried out; it may run again after a restart");
                }
                done = Some(command.id);
            }
        }
    }

    async fn fetch(
        &self,
        done: Option<u64>,
    ) -> Result<shared::device_api::CommandsResponse, Failure> {
        let token = self.token()?;
        let answer = self.transport.get_commands(&token, done).await;
        if let Err(Failure::TokenExpired { .. }) = &answer {
            self.tokens.expired(&token);
            return self.transport.get_commands(&self.token()?, done).await;
        }
        answer
    }

    /// A token, as the config loop signs one: a signing failure is the device's own problem.
    fn token(&self) -> Result<String, Failure> {
        self.tokens.token().map_err(|err| Failure::Refused {
            reason: format!("cannot sign a token: {err}"),
            info_reason: None,
        })
    }
}

/// Runs `hook` for each command the MQTT connection delivers, one at a time, until `shutdown`
/// turns true.
pub async fn run_pushed(
    hook: String,
    timeout: Duration,
    mut commands: mpsc::UnboundedReceiver<PushedCommand>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut count = 0;
    loop {
        let pushed = tokio::select! {
            pushed = commands.recv() => pushed,
            _ = shutdown.changed() => return,
        };
        let Some(pushed) = pushed else { return };
        count += 1;
        let command = QueuedCommand {
            id: count,
            subfolder: pushed.sub_folder,
            binary_data: pushed.data,
            ..QueuedCommand::default()
        };
        let outcome = run_hook(&hook, &command, timeout).await;
        tracing::info!(id = count, %outcome, "command carried out");
    }
}

fn read_id(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Runs the hook for one command; `ok` or what went wrong, for the log.
async fn run_hook(hook: &str, command: &QueuedCommand, timeout: Duration) -> String {
    let mut shell = tokio::process::Command::new("sh");
    shell
        .args(["-c", hook, "iotcore-command"])
        .arg(command.subfolder.as_deref().unwrap_or_default())
        .env("IOTCORE_COMMAND_ID", command.id.to_string())
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    let run = async {
        let mut child = shell.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            // A hook that does not read its input is fine: a closed pipe is no failure.
            let _ = stdin.write_all(&command.binary_data).await;
        }
        child.wait().await
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(status)) if status.success() => "ok".to_owned(),
        Ok(Ok(status)) => format!("failed: {status}"),
        Ok(Err(err)) => format!("failed to start: {err}"),
        Err(_) => format!("failed: timed out after {timeout:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(id: u64, data: &[u8], subfolder: Option<&str>) -> QueuedCommand {
        QueuedCommand {
            id,
            subfolder: subfolder.map(str::to_owned),
            binary_data: data.to_vec(),
            ..QueuedCommand::default()
        }
    }

    #[tokio::test]
    async fn the_hook_reads_the_payload_and_gets_the_subfolder_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        let hook = format!(
            "echo \"$IOTCORE_COMMAND_ID $1 $(cat)\" > {}",
            seen.display()
        );
        let outcome = run_hook(
            &hook,
            &command(7, b"reboot", Some("power")),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(outcome, "ok");
        assert_eq!(
            std::fs::read_to_string(&seen).unwrap().trim(),
            "7 power reboot"
        );
    }

    #[tokio::test]
    async fn a_failing_or_slow_hook_is_reported() {
        let quick = Duration::from_millis(300);
        assert!(
            run_hook("exit 4", &command(1, b"", None), quick)
                .await
                .contains("exit status: 4")
        );
        let slow = run_hook("sleep 5", &command(2, b"", None), quick).await;
        assert_eq!(slow, "failed: timed out after 300ms");
    }
}
