//! Readings: what the agent measures or is handed, each with a unique id and a timestamp, and
//! the record it is stored as in the spool. Producers are the Pi's own sensors
//! ([`crate::sensors`]), a user command run at an interval, and JSON lines on standard input.
//! The event a reading becomes is JSON: `{"id", "time", "source", "data"}`; the id lets the
//! receiving side drop the duplicates that at-least-once delivery can make.
//!
//! A gateway's readings may be of the devices behind it: a JSON line (on standard input, or from
//! the readings command) that is an object with a string field `device` is a reading of that
//! device, the field taken out of its data. A line naming a device the settings do not list is
//! refused at intake, with a message, rather than spooled for a device the bridge would never
//! take it for.

use std::collections::BTreeSet;
use std::sync::Arc;
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

/// What the spool holds for one event: the device behind this gateway it is of (if any), the
/// subfolder and the payload bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The device behind this gateway the event is of; `None` for the agent's own device.
    pub device: Option<String>,
    /// The event's subfolder.
    pub sub_folder: Option<String>,
    /// The event payload.
    pub payload: Vec<u8>,
}

impl Queued {
    /// The event for `reading` of the agent's own device.
    pub fn of(reading: &Reading, sub_folder: Option<&str>) -> Self {
        Self {
            device: None,
            sub_folder: sub_folder.map(str::to_owned),
            payload: serde_json::to_vec(reading).unwrap_or_default(),
        }
    }

    /// `len (u16) | subfolder | payload` for the own device, as every earlier release wrote
    /// it; for a device behind the gateway `0xFFFF | len | device | len | subfolder | payload`
    /// (no subfolder is 65,535 bytes long, so the two never mix up).
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(6 + self.payload.len());
        if let Some(device) = &self.device {
            bytes.extend_from_slice(&GATEWAY_RECORD.to_le_bytes());
            put_field(&mut bytes, device);
        }
        put_field(&mut bytes, self.sub_folder.as_deref().unwrap_or(""));
        bytes.extend_from_slice(&self.payload);
        bytes
    }

    /// The inverse of [`Queued::encode`]; `None` for bytes it did not make.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (device, rest) = match bytes.split_first_chunk::<2>()? {
            (marker, rest) if u16::from_le_bytes(*marker) == GATEWAY_RECORD => {
                let (device, rest) = take_field(rest)?;
                (Some(device.to_owned()), rest)
            }
            _ => (None, bytes),
        };
        let (sub_folder, payload) = take_field(rest)?;
        Some(Self {
            device,
            sub_folder: (!sub_folder.is_empty()).then(|| sub_folder.to_owned()),
            payload: payload.to_vec(),
        })
    }
}

/// The first two bytes of a record of a device behind the gateway.
const GATEWAY_RECORD: u16 = u16::MAX;

/// `len (u16) | text`, the text cut to what the length can say.
fn put_field(bytes: &mut Vec<u8>, text: &str) {
    let len = text.len().min(usize::from(GATEWAY_RECORD - 1));
    bytes.extend_from_slice(&(len as u16).to_le_bytes());
    bytes.extend_from_slice(&text.as_bytes()[..len]);
}

fn take_field(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len));
    let text = std::str::from_utf8(rest.get(..len)?).ok()?;
    Some((text, rest.get(len..)?))
}

/// The device a reading line names in its `device` field (taken out of the data), if any.
pub fn split_device(mut data: Value) -> (Option<String>, Value) {
    let device = match data.as_object_mut() {
        Some(fields) if fields.get("device").is_some_and(Value::is_string) => {
            fields.remove("device")
        }
        _ => None,
    };
    (device.and_then(|d| d.as_str().map(str::to_owned)), data)
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
    /// The devices whose readings are taken: the agent's own id and, for a gateway, the ids
    /// of the devices behind it.
    pub devices: Devices,
}

/// The agent's own device and the devices behind it, which readings may name.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    /// The agent's own device id.
    pub own: String,
    /// The ids of the devices behind this gateway (`[[gateway.devices]]`).
    pub children: Arc<BTreeSet<String>>,
}

impl Devices {
    /// Which device a reading naming `device` is of: `None` for the agent's own; an error that
    /// says why for a device not listed.
    pub fn target(&self, device: Option<String>) -> Result<Option<String>, String> {
        match device {
            None => Ok(None),
            Some(id) if id == self.own => Ok(None),
            Some(id) if self.children.contains(&id) => Ok(Some(id)),
            Some(id) if self.children.is_empty() => Err(format!(
                "a reading for device `{id}` refused: this agent is device `{}` and has no \
                 devices behind it ([[gateway.devices]] in the settings)",
                self.own
            )),
            Some(id) => Err(format!(
                "a reading for device `{id}` refused: it is not one of this gateway's devices \
                 ({}); add it to [[gateway.devices]] in the settings",
                self.children.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

impl Intake {
    /// Spools one reading of the agent's own device and waits until it is durable.
    pub async fn accept(&self, source: &str, data: Value) -> anyhow::Result<String> {
        self.accept_for(None, source, data).await
    }

    /// Spools one reading of `device` (`None`: the agent's own; see [`Devices::target`]) and
    /// waits until it is durable.
    pub async fn accept_for(
        &self,
        device: Option<String>,
        source: &str,
        data: Value,
    ) -> anyhow::Result<String> {
        let reading = Reading::new(source, data, self.clock);
        let mut queued = Queued::of(&reading, self.sub_folder.as_deref());
        queued.device = device;
        self.committer.append(queued.encode()).await?;
        Ok(reading.id)
    }

    /// A reading line's target device and data, or why it is refused.
    fn tagged(&self, line: &str) -> Result<(Option<String>, Value), String> {
        let data = serde_json::from_str(line).unwrap_or_else(|_| Value::from(line));
        let (device, data) = split_device(data);
        Ok((self.devices.target(device)?, data))
    }
}

/// Reads JSON lines from standard input until it closes; a line that is not JSON is kept as a
/// string rather than lost, and one for a device not listed is refused with a log line.
/// Returns how many readings were accepted (all durable by then).
pub async fn from_stdin(intake: Intake) -> anyhow::Result<u64> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut pending = tokio::task::JoinSet::new();
    let mut count = 0u64;
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (device, data) = match intake.tagged(line) {
            Ok(tagged) => tagged,
            Err(refused) => {
                tracing::error!("{refused}");
                continue;
            }
        };
        // Not awaited one by one: a whole group commit can then cover many lines.
        let intake = intake.clone();
        pending.spawn(async move { intake.accept_for(device, "stdin", data).await });
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
            Ok(lines) => {
                for line in lines {
                    let (device, data) = match intake.tagged(&line) {
                        Ok(tagged) => tagged,
                        Err(refused) => {
                            tracing::error!(%command, "{refused}");
                            continue;
                        }
                    };
                    if let Err(err) = intake.accept_for(device, "command", data).await {
                        tracing::error!(error = %err, "cannot spool a reading");
                    }
                }
            }
            Err(err) => tracing::warn!(%command, error = %err, "the readings command failed"),
        }
    }
}

/// The command's output lines, trimmed, empty ones left out.
async fn run_command(command: &str) -> anyhow::Result<Vec<String>> {
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
        .map(str::to_owned)
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
    fn a_reading_of_a_device_behind_the_gateway_survives_its_encoding() {
        let reading = Reading::new("stdin", serde_json::json!({"t": 21.5}), Clock::default());
        for folder in [None, Some("a/b")] {
            let mut queued = Queued::of(&reading, folder);
            queued.device = Some("sensor-1".to_owned());
            assert_eq!(Queued::decode(&queued.encode()), Some(queued.clone()));
        }
        // A record an earlier release wrote still reads as the own device's.
        let old = [&[3u8, 0][..], b"a/b", b"{}"].concat();
        let queued = Queued::decode(&old).unwrap();
        assert_eq!(queued.device, None);
        assert_eq!(queued.sub_folder.as_deref(), Some("a/b"));
        assert_eq!(queued.payload, b"{}");
        assert_eq!(Queued::decode(&[0xff, 0xff, 9]), None);
    }

    #[test]
    fn a_device_field_tags_a_reading_and_leaves_its_data() {
        let (device, data) = split_device(serde_json::json!({"device": "sensor-1", "t": 2}));
        assert_eq!(device.as_deref(), Some("sensor-1"));
        assert_eq!(data, serde_json::json!({"t": 2}));
        // Not a string, or not an object: data like any other.
        let nested = serde_json::json!({"device": {"model": "x"}});
        assert_eq!(split_device(nested.clone()), (None, nested));
        let text = Value::from("device");
        assert_eq!(split_device(text.clone()), (None, text));
    }

    #[test]
    fn only_the_own_device_and_the_listed_ones_are_taken() {
        let devices = Devices {
            own: "gw".to_owned(),
            children: Arc::new(["sensor-1".to_owned()].into()),
        };
        assert_eq!(devices.target(None), Ok(None));
        assert_eq!(devices.target(Some("gw".to_owned())), Ok(None));
        assert_eq!(
            devices.target(Some("sensor-1".to_owned())),
            Ok(Some("sensor-1".to_owned()))
        );
        let refused = devices.target(Some("sensor-9".to_owned())).unwrap_err();
        assert!(
            refused.contains("`sensor-9`") && refused.contains("sensor-1"),
            "{refused}"
        );
        let alone = Devices {
            own: "pi".to_owned(),
            children: Arc::default(),
        };
        let refused = alone.target(Some("sensor-9".to_owned())).unwrap_err();
        assert!(refused.contains("no devices behind it"), "{refused}");
    }

    #[test]
    fn every_reading_gets_its_own_id() {
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|_| Reading::new("sensors", Value::Null, Clock::default()).id)
            .collect();
        assert_eq!(ids.len(), 1000);
    }
}
