//! Long-poll config, an extension for HTTP devices: `GET …/config?local_version=N&wait=SECONDS`.
//! With `wait` absent or 0, or N = 0, the answer is IoT Core's, at once. Otherwise a config newer
//! than N is answered at once; if there is none the request is held until one is set (woken by
//! `c2d::Delivery::config_changed` through [`ConfigWaiters`]) or the wait ends, and then answered
//! with the latest config read again from the store — on a timeout that is version N itself, so
//! a device tells "nothing new" by the version it already has. A `wait` above the server's bound
//! is shortened to it (the bound keeps a held request inside the listener's request deadline and
//! Cloud Run's); a `wait` that is not a whole number of seconds is refused.

use std::time::Duration;

use shared::resources::DeviceConfig;

use super::answer::HttpRefusal;
use crate::bridge::{DeviceSession, Refusal};
use crate::c2d::ConfigWaiters;
use crate::http::request::Query;

/// The longest wait served when the request deadline allows it.
pub const MAX_WAIT: Duration = Duration::from_secs(55);

/// What the answer needs beyond the request deadline: a held request must be answered by us, not
/// cut off by the `504` of `http::serve`.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// The long-poll side of the device API: where waiters register, and how long they may wait.
#[derive(Debug, Clone)]
pub struct LongPoll {
    /// Woken on every config change of a device.
    pub waiters: ConfigWaiters,
    /// The longest a request is held; a longer `wait` is shortened to this.
    pub max_wait: Duration,
}

impl LongPoll {
    /// Long-polls bounded by [`MAX_WAIT`] and by `request_timeout` less a margin.
    pub fn new(waiters: ConfigWaiters, request_timeout: Duration) -> Self {
        Self {
            waiters,
            max_wait: MAX_WAIT.min(request_timeout.saturating_sub(DEADLINE_MARGIN)),
        }
    }
}

/// `wait` in whole seconds: absent, empty or 0 means no waiting.
pub(super) fn wait_param(query: Option<&str>) -> Result<Duration, HttpRefusal> {
    match Query::parse(query).get("wait") {
        None | Some("") => Ok(Duration::ZERO),
        Some(text) => text.parse().map(Duration::from_secs).map_err(|_| {
            HttpRefusal::invalid(
                "bad_wait",
                format!(
                    "wait: `{}` is not a whole number of seconds; send e.g. `wait=30` to hold \
                     the request until a config newer than local_version exists, or leave it out",
                    text.chars().take(32).collect::<String>()
                ),
            )
        }),
    }
}

/// The latest config, after waiting up to `wait` for one newer than `local_version`.
pub(super) async fn config_after(
    device: &DeviceSession,
    long_poll: &LongPoll,
    local_version: u64,
    wait: Duration,
) -> Result<DeviceConfig, Refusal> {
    let wait = wait.min(long_poll.max_wait);
    if wait.is_zero() || local_version == 0 {
        return device.config(local_version).await;
    }
    let proved = device.device();
    // Registered before the read, so a change landing between the two still wakes us.
    let mut waiter = long_poll
        .waiters
        .wait_for(&proved.registry, &proved.id, proved.num_id);
    let latest = device.config(local_version).await?;
    if latest.version > local_version {
        return Ok(latest);
    }
    if tokio::time::timeout(wait, waiter.newer_than(local_version))
        .await
        .is_err()
    {
        return Ok(latest);
    }
    drop(waiter);
    // The notice only carries a version: what is answered comes from the store.
    device.config(local_version).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_is_whole_seconds_or_absent() {
        assert_eq!(wait_param(None).unwrap(), Duration::ZERO);
        assert_eq!(wait_param(Some("wait=")).unwrap(), Duration::ZERO);
        assert_eq!(
            wait_param(Some("wait=20")).unwrap(),
            Duration::from_secs(20)
        );
        for bad in ["wait=-1", "wait=1.5", "wait=soon"] {
            assert!(wait_param(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_bound_stays_inside_the_request_deadline() {
        let waiters = ConfigWaiters::default();
        let bound = |secs| LongPoll::new(waiters.clone(), Duration::from_secs(secs)).max_wait;
        assert_eq!(bound(30), Duration::from_secs(25));
        assert_eq!(bound(300), MAX_WAIT);
        assert_eq!(bound(3), Duration::ZERO);
    }
}
