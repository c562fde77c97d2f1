//! The limits a device lives within, with protocol.md's defaults: payload sizes, per-device
//! rates, and how stale the bridge's view of a registry may be. All of them are configurable so
//! an operator can loosen them for a chatty fleet and tests can make them tiny.

use std::time::Duration;

/// A rate: at most `count` in each `per`, with bursts up to `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How many.
    pub count: u32,
    /// In what time.
    pub per: Duration,
}

impl Rate {
    /// `count` per minute.
    pub const fn per_minute(count: u32) -> Self {
        Self {
            count,
            per: Duration::from_secs(60),
        }
    }

    /// `count` per second.
    pub const fn per_second(count: u32) -> Self {
        Self {
            count,
            per: Duration::from_secs(1),
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.per.as_secs() {
            1 if self.per.subsec_nanos() == 0 => write!(f, "{} per second", self.count),
            60 if self.per.subsec_nanos() == 0 => write!(f, "{} per minute", self.count),
            _ => write!(f, "{} per {:?}", self.count, self.per),
        }
    }
}

/// What a device may send, and how fresh the bridge's registry view is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest telemetry payload, decoded (IoT Core: 256 KB).
    pub max_event_bytes: usize,
    /// The largest state payload, decoded (IoT Core: 64 KB).
    pub max_state_bytes: usize,
    /// The largest config (IoT Core: 64 KB). The admin API refuses bigger configs where they are
    /// written; the bridges size what they send by it.
    pub max_config_bytes: usize,
    /// Requests per device over HTTP: `publishEvent`, `setState` and config fetches all count,
    /// since each costs a registry or Pub/Sub call (IoT Core: 6,000 publishes per minute).
    pub http_requests: Rate,
    /// State updates per device, over any protocol (IoT Core: 1 per second).
    pub state_updates: Rate,
    /// How long a registry read (routing, state topic, protocol switches) is reused. A change
    /// made through the admin API reaches devices within this time. Zero reads it every time.
    pub registry_cache_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: 256 * 1024,
            max_state_bytes: 64 * 1024,
            max_config_bytes: 64 * 1024,
            http_requests: Rate::per_minute(6000),
            state_updates: Rate::per_second(1),
            registry_cache_ttl: Duration::from_secs(5),
        }
    }
}

impl Limits {
    /// The largest HTTP body that can carry a `payload_limit`-byte payload: its base64 with
    /// every `/` escaped as `\/` (some JSON encoders do), plus room for the JSON around it and a
    /// subfolder. Bodies above this are refused before they are buffered whole.
    pub fn http_body_cap(payload_limit: usize) -> usize {
        let base64 = payload_limit.div_ceil(3) * 4;
        base64 * 2 + 8 * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_iot_cores() {
        let limits = Limits::default();
        assert_eq!(limits.max_event_bytes, 262_144);
        assert_eq!(limits.max_state_bytes, 65_536);
        assert_eq!(limits.max_config_bytes, 65_536);
        assert_eq!(limits.http_requests.to_string(), "6000 per minute");
        assert_eq!(limits.state_updates.to_string(), "1 per second");
    }

    #[test]
    fn the_body_cap_leaves_room_for_base64_and_escapes() {
        let cap = Limits::http_body_cap(262_144);
        assert!(cap >= 262_144 * 4 / 3 * 2, "{cap}");
        assert!(cap < 1024 * 1024, "{cap}");
    }
}
