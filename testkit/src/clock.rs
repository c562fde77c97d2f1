//! A clock that stands still until the test moves it, for the service's `shared::clock::Clock`:
//! a test advances it instead of sleeping, so what happens over seconds of traffic (cache
//! periods, token freshness, rates) is measured without waiting for them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use shared::clock::Clock;

/// Starts at the real time of its creation and moves only by [`ManualClock::advance`].
#[derive(Debug)]
pub struct ManualClock {
    start: Timestamp,
    start_instant: Instant,
    elapsed: Mutex<Duration>,
}

impl ManualClock {
    /// A clock at the current time.
    pub fn new() -> Self {
        Self {
            start: Timestamp::now(),
            start_instant: Instant::now(),
            elapsed: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.elapsed.lock().unwrap() += by;
    }

    /// How far the clock has been moved since it was made.
    pub fn elapsed(&self) -> Duration {
        *self.elapsed.lock().unwrap()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.start + self.elapsed()
    }

    fn instant(&self) -> Instant {
        self.start_instant + self.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_moves_only_when_told() {
        let clock = ManualClock::new();
        let (wall, mono) = (clock.now(), clock.instant());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!((clock.now(), clock.instant()), (wall, mono));
        clock.advance(Duration::from_secs(10));
        assert_eq!(clock.now().duration_since(wall).as_secs(), 10);
        assert_eq!(clock.instant() - mono, Duration::from_secs(10));
    }
}
