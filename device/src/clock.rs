//! The agent's idea of "now". Tokens and the doctor read the time only through [`Clock`], so a
//! test (or a person reproducing a field report) can run the real binary with its clock shifted
//! by a fixed offset (`IOTCORE_CLOCK_OFFSET_SECS`), exactly as a Pi without a real-time clock
//! that booted with a stale time would be.

use jiff::Timestamp;

/// Wall-clock time, shifted by a fixed number of seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    offset_secs: i64,
}

impl Clock {
    /// The system clock moved `offset_secs` ahead (negative: behind).
    pub fn with_offset(offset_secs: i64) -> Self {
        Self { offset_secs }
    }

    /// Unix seconds, offset applied.
    pub fn now(self) -> i64 {
        Timestamp::now()
            .as_second()
            .saturating_add(self.offset_secs)
    }

    /// The current time as a timestamp, offset applied.
    pub fn timestamp(self) -> Timestamp {
        let now = Timestamp::now();
        now.checked_add(jiff::SignedDuration::from_secs(self.offset_secs))
            .unwrap_or(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_clock_runs_ahead_by_its_offset() {
        let system = Timestamp::now().as_second();
        let ahead = Clock::with_offset(1200).now();
        assert!((ahead - system - 1200).abs() <= 1, "{ahead} vs {system}");
        let ts = Clock::with_offset(-60).timestamp().as_second();
        assert!((system - 60 - ts).abs() <= 1);
    }
}
