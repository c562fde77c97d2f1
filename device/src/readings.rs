//! Readings: what the agent measures or is handed, each with a unique id and a timestamp, and
//! the record it is stored as in the spool. Producers are the Pi's own sensors
//! ([`crate::sensors`]), a user command run at an interval, and JSON lines on standard input.
//! The event a reading becomes is JSON: `{"id", "time", "source", "data"}`; the id lets the
//! receiving side drop the duplicates that at-least-once delivery can make.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncBufReadExt as _;

use crate::clock::Clock;
use crate::spool::commit::Committer;

/// One reading, as it is published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Unique across devices, restarts and retries: time in ms and 64 random bits, in hex.
    pub id: String,
    /// When it was taken (RFC 3339, UTC).
    pub time: Timestamp,
    /// `sensors`, `command` or `stdin`.
    pub source: String,
    /// The values.
    pub data: Value,
}

impl Reading {
    /// A new reading taken now.
    pub fn new(source: &str, data: Value, clock: Clock) -> Self {
        let time = clock.timestamp();
        let mut random = [0u8; 8];
        // Without OS randomness the time and a counter still keep ids apart within this process.
        if getrandom::fill(&mut random).is_err() {
            random = fastrand::u64(..).to_le_bytes();
        }
        let id = format!(
            "{:x}-{:016x}",
            time.as_millisecond(),
            u64::from_le_bytes(random)
        );
        Self {
            id,
            time,
            source: source.to_owned(),
            data,
        }
    }
}

/// What the spool holds for one event: the subfolder and the payload bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The event's subfolder.
    pub sub_folder: Option<String>,
    /// The event payload.
    pub payload: Vec<u8>,
}

impl Queued {
    /// The event for `reading`.
    pub fn of(reading: &Reading, sub_folder: Option<&str>) -> Self {
        Self {
            sub_folder: sub_folder.map(str::to_owned),
            payload: serde_json::to_vec(reading).unwrap_or_default(),
        }
    }

    /// `len (u16) | subfolder | payload`.
    pub fn encode(&self) -> Vec<u8> {
        let folder = self.sub_folder.as_deref().unwrap_or("").as_bytes();
        let len = u16::try_from(folder.len()).unwrap_or(0);
        let folder = &folder[..usize::from(len)];
        let mut bytes = Vec::with_capacity(2 + folder.len() + self.payload.len());
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(folder);
        bytes.extend_from_slice(&self.payload);
        bytes
    }

    /// The inverse of [`Queued::encode`]; `None` for bytes it did not make.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (len, rest) = bytes.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len));
        let folder = rest.get(..len)?;
        let sub_folder = std::str::from_utf8(folder).ok()?;
        Some(Self {
            sub_folder: (!sub_folder.is_empty()).then(|| sub_folder.to_owned()),
            payload: rest.get(len..)?.to_vec(),
        })
    }
}

/// Where producers put readings: the spool, through the group commit.
#[derive(Debug, Clone)]
pub struct Intake {
    /// The spool's producer handle.
    pub committer: Committer,
    /// The subfolder every reading goes under.
    pub sub_folder: Option<String>,
    /// The agent's clock.
    pub clock: Clock,
}

impl Intake {
    /// Spools one reading and waits until it is durable.
    pub async fn accept(&self, source: &str, data: Value) -> anyhow::Result<String> {
        let reading = Reading::new(source, data, self.clock);
        let record = Queued::of(&reading, self.sub_folder.as_deref()).encode();
        self.committer.append(record).await?;
        Ok(reading.id)
    }
}

/// Reads JSON lines from standard input until it closes; a line that is not JSON is kept as a
/// string rather than lost. Returns how many readings were accepted (all durable by then).
pub async fn from_stdin(intake: Intake) -> anyhow::Result<u64> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut pending = tokio::task::JoinSet::new();
    let mut count = 0u64;
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let data = serde_json::from_str(line).unwrap_or_else(|_| Value::from(line));
        // Not awaited one by one: a whole group commit can then cover many lines.
        let intake = intake.clone();
        pending.spawn(async move { intake.accept("stdin", data).await });
        count += 1;
        while pending.len() > 1024 {
            if let Some(done) = pending.join_next().await {
                done??;
            }
        }
    }
    while let Some(done) = pending.join_next().await {
        done??;
    }
    Ok(count)
}

/// Runs `command` with `sh -c` every `interval`; each line of its output is a reading.
pub async fn from_command(intake: Intake, command: String, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        match run_command(&command).await {
            Ok(values) => {
                for data in values {
                    if let Err(err) = intake.accept("command", data).await {
                        tracing::error!(error = %err, "cannot spool a reading");
                    }
                }
            }
            Err(err) => tracing::warn!(%command, error = %err, "the readings command failed"),
        }
    }
}

async fn run_command(command: &str) -> anyhow::Result<Vec<Value>> {
    let output = tokio::process::Command::new("sh")
        .args(["-c", command])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await?;
    if !output.status.success() {
        anyhow::bail!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::from(l)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_event_survives_its_encoding() {
        let reading = Reading::new("stdin", serde_json::json!({"t": 21.5}), Clock::default());
        for folder in [None, Some("a/b")] {
            let queued = Queued::of(&reading, folder);
            assert_eq!(Queued::decode(&queued.encode()), Some(queued.clone()));
            let back: Reading = serde_json::from_slice(&queued.payload).unwrap();
            assert_eq!(back, reading);
        }
        assert_eq!(Queued::decode(&[9]), None);
    }

    #[test]
    fn every_reading_gets_its_own_id() {
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|_| Reading::new("sensors", Value::Null, Clock::default()).id)
            .collect();
        assert_eq!(ids.len(), 1000);
    }
}
