//! The fleet-health summary of a registry, an extension of IoT Core's API (`GET
//! …/registries/{r}/fleetHealth`) that the console draws: how many devices were last heard from
//! within 5 minutes, an hour, a day, or never, and a histogram of how long ago each was last
//! heard from. A device is "heard from" when it sent an event, a state or an MQTT heartbeat;
//! [`last_seen`] is that rule, and [`FleetHealth::tally`] the counting, so every store and the
//! console agree on both.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::resources::Device;

/// When a device was last heard from: the latest of its last event, state and heartbeat times,
/// `None` when it never spoke.
pub fn last_seen(device: &Device) -> Option<Timestamp> {
    [
        device.last_event_time,
        device.last_state_time,
        device.last_heartbeat_time,
    ]
    .into_iter()
    .flatten()
    .max()
}

/// The upper bounds of the histogram's bins, youngest first; one more bin holds everything
/// older, and devices never heard from are counted apart.
pub const BIN_BOUNDS: [Duration; 8] = [
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(3600),
    Duration::from_secs(6 * 3600),
    Duration::from_secs(24 * 3600),
    Duration::from_secs(7 * 24 * 3600),
    Duration::from_secs(30 * 24 * 3600),
];

/// A registry's devices by when they were last heard from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetHealth {
    /// Every device of the registry.
    pub device_count: u64,
    /// Heard from in the last 5 minutes.
    pub heard_within_5_minutes: u64,
    /// Heard from in the last hour (those of the last 5 minutes included).
    pub heard_within_hour: u64,
    /// Heard from in the last day (those of the last hour included).
    pub heard_within_day: u64,
    /// Never heard from.
    pub never_heard: u64,
    /// How long ago devices were last heard from, youngest bin first; the never-heard are not in
    /// it.
    pub last_seen: Vec<LastSeenBin>,
    /// The instant the ages were measured from.
    pub read_time: Option<Timestamp>,
}

/// One bar of the last-seen histogram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastSeenBin {
    /// Last heard from at least this long ago (`"300s"`)…
    #[serde(
        with = "crate::proto3::opt_duration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub older_than: Option<Duration>,
    /// …and less than this long ago; `None` on the last bin, which has no upper bound.
    #[serde(
        with = "crate::proto3::opt_duration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub within: Option<Duration>,
    /// How many devices.
    pub devices: u64,
}

impl FleetHealth {
    /// Counts `last_seen` (one entry per device) at `now`. A time in the future (another
    /// instance's clock ahead of ours) counts as just now.
    pub fn tally(now: Timestamp, last_seen: &[Option<Timestamp>]) -> Self {
        let mut bins = vec![0u64; BIN_BOUNDS.len() + 1];
        let mut health = FleetHealth {
            device_count: last_seen.len() as u64,
            read_time: Some(now),
            ..Self::default()
        };
        for seen in last_seen {
            let Some(seen) = seen else {
                health.never_heard += 1;
                continue;
            };
            let age = now.duration_since(*seen).unsigned_abs();
            let age = if *seen > now { Duration::ZERO } else { age };
            let within = |limit: u64| u64::from(age < Duration::from_secs(limit));
            health.heard_within_5_minutes += within(5 * 60);
            health.heard_within_hour += within(3600);
            health.heard_within_day += within(24 * 3600);
            let bin = BIN_BOUNDS
                .iter()
                .position(|bound| age < *bound)
                .unwrap_or(BIN_BOUNDS.len());
            bins[bin] += 1;
        }
        health.last_seen = bins
            .into_iter()
            .enumerate()
            .map(|(i, devices)| LastSeenBin {
                older_than: i.checked_sub(1).map(|lower| BIN_BOUNDS[lower]),
                within: BIN_BOUNDS.get(i).copied(),
                devices,
            })
            .collect();
        health
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ago(now: Timestamp, secs: i64) -> Option<Timestamp> {
        Some(now - jiff::SignedDuration::from_secs(secs))
    }

    #[test]
    fn last_seen_is_the_latest_of_event_state_and_heartbeat() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let mut device = Device::default();
        assert_eq!(last_seen(&device), None);
        device.last_event_time = ago(now, 30);
        device.last_state_time = ago(now, 10);
        device.last_heartbeat_time = ago(now, 20);
        assert_eq!(last_seen(&device), ago(now, 10));
    }

    #[test]
    fn devices_are_counted_by_how_long_ago_they_were_heard_from() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let seen = [
            None,
            None,
            ago(now, 10),
            ago(now, 299),
            ago(now, 300),
            ago(now, 3599),
            ago(now, 86_399),
            ago(now, 86_400),
            ago(now, 90 * 86_400),
            ago(now, -5),
        ];
        let health = FleetHealth::tally(now, &seen);
        assert_eq!(health.device_count, 10);
        assert_eq!(health.never_heard, 2);
        assert_eq!(
            health.heard_within_5_minutes, 3,
            "10 s, 299 s and the future"
        );
        assert_eq!(health.heard_within_hour, 5);
        assert_eq!(health.heard_within_day, 6);
        let counts: Vec<u64> = health.last_seen.iter().map(|b| b.devices).collect();
        assert_eq!(counts, [2, 1, 1, 1, 0, 1, 1, 0, 1]);
        assert_eq!(health.last_seen[0].older_than, None);
        assert_eq!(health.last_seen[8].within, None);
        assert_eq!(counts.iter().sum::<u64>() + health.never_heard, 10);
    }

    #[test]
    fn the_summary_reads_back_from_its_json() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let health = FleetHealth::tally(now, &[ago(now, 400), None]);
        let json = serde_json::to_value(&health).unwrap();
        assert_eq!(json["lastSeen"][2]["olderThan"], "300s");
        assert_eq!(json["lastSeen"][2]["within"], "900s");
        assert_eq!(json["neverHeard"], 1);
        let back: FleetHealth = serde_json::from_value(json).unwrap();
        assert_eq!(back, health);
    }
}
