//! Per-device rate limits as token buckets: a device may burst up to the limit's count, then
//! earns tokens back at count per period. Devices are keyed by numeric id, which is unique across
//! the whole installation, so one device's bucket never slows another. A bucket left alone for a
//! whole period is full again, which is the same as having none, so such buckets are swept away:
//! memory follows the devices active in the last period or two, not every device ever seen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shared::NumId;

use super::limits::Rate;

/// One limit over all devices.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: Rate,
    state: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    map: HashMap<NumId, Bucket>,
    last_sweep: Option<Instant>,
}

/// One token bucket: a whole limiter for a single holder, such as one MQTT connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// A bucket holding `rate.count` tokens at `now`.
    pub(crate) fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate.count),
            updated: now,
        }
    }

    /// Takes one token at `now`, or says how long until one is available. A count of 0 (or a
    /// zero period) turns the limit off.
    pub(crate) fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        if rate.count == 0 || rate.per.is_zero() {
            return Ok(());
        }
        let capacity = f64::from(rate.count);
        let per_sec = capacity / rate.per.as_secs_f64();
        let earned = now.saturating_duration_since(self.updated).as_secs_f64() * per_sec;
        self.tokens = (self.tokens + earned).min(capacity);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / per_sec))
        }
    }
}

impl RateLimiter {
    /// A limiter allowing `rate` per device; a count of 0 turns the limit off.
    pub(crate) fn new(rate: Rate) -> Self {
        Self {
            rate,
            state: Mutex::new(Buckets {
                map: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    /// The limit it enforces.
    pub(crate) fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one token for `device` at `now`, or says how long until one is available.
    pub(crate) fn check(&self, device: NumId, now: Instant) -> Result<(), Duration> {
        if self.rate.count == 0 || self.rate.per.is_zero() {
            return Ok(());
        }
        // A poisoned lock only means another request panicked mid-update; the buckets are
        // still usable numbers, so carry on rather than refuse every device.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.sweep(now, self.rate.per);
        state
            .map
            .entry(device)
            .or_insert_with(|| Bucket::full(self.rate, now))
            .take(self.rate, now)
    }

    /// How many devices hold a bucket now (for tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map
            .len()
    }
}

impl Buckets {
    /// At most once per period, drops the buckets untouched for a whole period (full again).
    fn sweep(&mut self, now: Instant, per: Duration) {
        let due = self
            .last_sweep
            .is_none_or(|last| now.saturating_duration_since(last) >= per);
        if due {
            self.map
                .retain(|_, bucket| now.saturating_duration_since(bucket.updated) < per);
            self.last_sweep = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_may_burst_to_the_count_then_waits_for_tokens() {
        let limiter = RateLimiter::new(Rate::per_minute(3));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(NumId(1), t0).is_ok());
        }
        let wait = limiter.check(NumId(1), t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            limiter
                .check(NumId(1), t0 + Duration::from_secs(20))
                .is_ok()
        );
        assert!(
            limiter
                .check(NumId(1), t0 + Duration::from_secs(21))
                .is_err()
        );
    }

    #[test]
    fn one_device_over_its_limit_does_not_slow_another() {
        let limiter = RateLimiter::new(Rate::per_second(1));
        let t0 = Instant::now();
        assert!(limiter.check(NumId(1), t0).is_ok());
        assert!(limiter.check(NumId(1), t0).is_err());
        assert!(limiter.check(NumId(2), t0).is_ok());
    }

    #[test]
    fn idle_devices_are_forgotten() {
        let limiter = RateLimiter::new(Rate::per_second(1));
        let t0 = Instant::now();
        for n in 0..100 {
            limiter.check(NumId(n), t0).unwrap();
        }
        assert_eq!(limiter.tracked(), 100);
        limiter
            .check(NumId(1000), t0 + Duration::from_secs(2))
            .unwrap();
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn a_zero_count_turns_the_limit_off() {
        let limiter = RateLimiter::new(Rate::per_second(0));
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(limiter.check(NumId(1), t0).is_ok());
        }
    }
}
