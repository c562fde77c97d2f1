//! The latest config of each device recently asked for, so that a device fetching its config
//! (HTTP `GET …/config`, the config sent after an MQTT SUBACK) costs a map probe instead of a
//! registry read: on SQLite that read went through the store's single connection and was the
//! whole cost of the request (BENCHMARKS.md), on Firestore it is billed.
//!
//! Kept right by the notices that already push configs to connections: a config change made
//! through this instance, or reported by the delivery bus, and a device changed or deleted, drop
//! the device's entry, so its next fetch reads the store. An entry also lapses after the registry
//! freshness bound (the token cache's: long when every instance sharing the store hears the
//! others, short when some change may come from where the bus does not reach). A read that ran
//! while any change was noted is not kept (a ticket, as in the token cache), so a store read that
//! lost a race with a change cannot pin the older version. Entries are keyed by numeric id, which
//! a device deleted and made again does not share with its predecessor.
//!
//! Bounded by the bytes of config data held ([`MAX_BYTES`]); past it, lapsed entries are swept
//! and, if that is not enough, the new entry is not kept (its device is served from the store).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use shared::resources::DeviceConfig;
use shared::{DeviceId, DeviceRef, NumId, RegistryName};

/// Config data held at most: a thousand devices with IoT Core's largest config (64 KiB), or a
/// hundred thousand with 640-byte ones.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// How long an entry is served when nothing says otherwise: the freshness bound of a single
/// instance, which hears every change.
pub const DEFAULT_FRESHNESS: Duration = Duration::from_secs(300);

/// The latest configs. Cheap to clone; clones share the entries.
#[derive(Debug, Clone)]
pub struct ConfigCache {
    freshness: Duration,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    by_num: HashMap<NumId, Entry>,
    /// Registry, then device id, to the numeric id of the entry: a change names the device
    /// either way.
    by_id: HashMap<RegistryName, HashMap<DeviceId, NumId>>,
    bytes: usize,
    /// Bumped by every change noted; see [`Ticket`].
    changes: u64,
    last_sweep: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    registry: RegistryName,
    id: DeviceId,
    config: DeviceConfig,
    read_at: Instant,
}

/// Proof that no change was noted between taking it (before reading the store) and keeping
/// what was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

impl Default for ConfigCache {
    fn default() -> Self {
        Self::new(DEFAULT_FRESHNESS)
    }
}

impl ConfigCache {
    /// A cache serving entries for `freshness`; zero turns it off.
    pub fn new(freshness: Duration) -> Self {
        Self {
            freshness,
            inner: Arc::default(),
        }
    }

    /// The device's cached latest config, if read within the freshness bound.
    pub fn get(&self, num_id: NumId, now: Instant) -> Option<DeviceConfig> {
        let inner = self.lock();
        let entry = inner.by_num.get(&num_id)?;
        self.is_fresh(entry, now).then(|| entry.config.clone())
    }

    /// Take one before reading the store, and give it to [`ConfigCache::keep`].
    pub fn ticket(&self) -> Ticket {
        Ticket(self.lock().changes)
    }

    /// Keeps `config`, read from the store at `now`, as the device's latest, unless a change was
    /// noted since `ticket` was taken or the cache is full.
    pub fn keep(
        &self,
        ticket: Ticket,
        device: (&RegistryName, &DeviceId, NumId),
        config: &DeviceConfig,
        now: Instant,
    ) {
        if self.freshness.is_zero() {
            return;
        }
        let mut inner = self.lock();
        if inner.changes != ticket.0 {
            return;
        }
        self.sweep_if_due(&mut inner, now);
        let (registry, id, num_id) = device;
        inner.remove(num_id);
        if inner.bytes + config.binary_data.len() > MAX_BYTES {
            self.sweep(&mut inner, now);
            if inner.bytes + config.binary_data.len() > MAX_BYTES {
                return;
            }
        }
        inner.bytes += config.binary_data.len();
        inner
            .by_id
            .entry(registry.clone())
            .or_default()
            .insert(id.clone(), num_id);
        let entry = Entry {
            registry: registry.clone(),
            id: id.clone(),
            config: config.clone(),
            read_at: now,
        };
        inner.by_num.insert(num_id, entry);
    }

    /// The device's config changed, or the device itself did (keys, blocked, deleted): its next
    /// fetch reads the store.
    pub fn changed(&self, registry: &RegistryName, device: &DeviceRef) {
        let mut inner = self.lock();
        inner.changes += 1;
        let num_id = match device {
            DeviceRef::Num(num) => Some(*num),
            DeviceRef::Id(id) => inner
                .by_id
                .get(registry)
                .and_then(|ids| ids.get(id))
                .copied(),
        };
        if let Some(num_id) = num_id
            && inner
                .by_num
                .get(&num_id)
                .is_some_and(|e| e.registry == *registry)
        {
            inner.remove(num_id);
        }
    }

    /// How many devices have an entry (for tests).
    pub fn len(&self) -> usize {
        self.lock().by_num.len()
    }

    /// Whether no device has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn is_fresh(&self, entry: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(entry.read_at) < self.freshness
    }

    /// Drops lapsed entries once per freshness period, so memory follows the devices that
    /// fetched their config lately.
    fn sweep_if_due(&self, inner: &mut Inner, now: Instant) {
        let due = inner
            .last_sweep
            .is_none_or(|last| now.saturating_duration_since(last) >= self.freshness);
        if due {
            self.sweep(inner, now);
        }
    }

    fn sweep(&self, inner: &mut Inner, now: Instant) {
        inner.last_sweep = Some(now);
        let lapsed: Vec<NumId> = inner
            .by_num
            .iter()
            .filter(|(_, entry)| !self.is_fresh(entry, now))
            .map(|(num, _)| *num)
            .collect();
        for num_id in lapsed {
            inner.remove(num_id);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn remove(&mut self, num_id: NumId) {
        let Some(entry) = self.by_num.remove(&num_id) else {
            return;
        };
        self.bytes -= entry.config.binary_data.len();
        if let Some(ids) = self.by_id.get_mut(&entry.registry) {
            if ids.get(&entry.id) == Some(&num_id) {
                ids.remove(&entry.id);
            }
            if ids.is_empty() {
                self.by_id.remove(&entry.registry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn registry() -> RegistryName {
        RegistryName::from_parts("my-project", "us-central1", "reg-1").unwrap()
    }

    fn config(version: u64, data: &[u8]) -> DeviceConfig {
        DeviceConfig {
            version,
            binary_data: data.to_vec(),
            ..DeviceConfig::default()
        }
    }

    fn id(text: &str) -> DeviceId {
        text.parse().unwrap()
    }

    /// Keeps `config` for device `device` (numeric id `num`) of [`registry`], read at `now`
    /// with a ticket taken just before.
    fn keep(cache: &ConfigCache, device: &str, num: u64, config: &DeviceConfig, now: Instant) {
        let ticket = cache.ticket();
        cache.keep(ticket, (&registry(), &id(device), NumId(num)), config, now);
    }

    #[test]
    fn a_kept_config_is_served_until_it_lapses() {
        let cache = ConfigCache::new(Duration::from_secs(10));
        let start = Instant::now();
        let ticket = cache.ticket();
        cache.keep(
            ticket,
            (&registry(), &id("dev-d"), NumId(7)),
            &config(3, b"on"),
            start,
        );
        assert_eq!(cache.get(NumId(7), start).unwrap().version, 3);
        assert_eq!(
            cache
                .get(NumId(7), start + Duration::from_secs(9))
                .unwrap()
                .binary_data,
            b"on"
        );
        assert!(
            cache
                .get(NumId(7), start + Duration::from_secs(10))
                .is_none()
        );
        assert!(cache.get(NumId(8), start).is_none());
    }

    #[test]
    fn a_change_by_id_or_by_numeric_id_drops_the_entry() {
        let cache = ConfigCache::new(Duration::from_secs(10));
        let now = Instant::now();
        for device in [DeviceRef::Id(id("dev-d")), DeviceRef::Num(NumId(7))] {
            keep(&cache, "dev-d", 7, &config(3, b""), now);
            assert!(cache.get(NumId(7), now).is_some());
            cache.changed(&registry(), &device);
            assert!(cache.get(NumId(7), now).is_none(), "{device:?}");
            assert!(cache.is_empty());
        }
    }

    #[test]
    fn a_change_in_another_registry_leaves_the_entry() {
        let cache = ConfigCache::new(Duration::from_secs(10));
        let now = Instant::now();
        keep(&cache, "dev-d", 7, &config(3, b""), now);
        let other = RegistryName::from_parts("my-project", "us-central1", "reg-2").unwrap();
        cache.changed(&other, &DeviceRef::Id(id("dev-d")));
        cache.changed(&other, &DeviceRef::Num(NumId(7)));
        assert!(cache.get(NumId(7), now).is_some());
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_kept() {
        let cache = ConfigCache::new(Duration::from_secs(10));
        let now = Instant::now();
        let ticket = cache.ticket();
        // The store was read (version 3), then a change to version 4 was noted.
        cache.changed(&registry(), &DeviceRef::Id(id("dev-d")));
        cache.keep(
            ticket,
            (&registry(), &id("dev-d"), NumId(7)),
            &config(3, b""),
            now,
        );
        assert!(cache.get(NumId(7), now).is_none());
    }

    #[test]
    fn zero_freshness_keeps_nothing() {
        let cache = ConfigCache::new(Duration::ZERO);
        let now = Instant::now();
        keep(&cache, "dev-d", 7, &config(3, b""), now);
        assert!(cache.get(NumId(7), now).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn memory_is_bounded_by_config_bytes_and_lapsed_entries_are_swept() {
        let cache = ConfigCache::new(Duration::from_secs(10));
        let start = Instant::now();
        let big = config(2, &vec![0; MAX_BYTES / 2]);
        keep(&cache, "dev-a", 1, &big, start);
        keep(&cache, "dev-b", 2, &big, start);
        // Full: a third is served from the store rather than kept.
        keep(&cache, "dev-c", 3, &config(2, b"x"), start);
        assert!(cache.get(NumId(3), start).is_none());
        assert_eq!(cache.len(), 2);
        // Once the first two lapse they make room.
        let later = start + Duration::from_secs(11);
        keep(&cache, "dev-c", 3, &config(2, b"x"), later);
        assert!(cache.get(NumId(3), later).is_some());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_device_made_again_under_the_same_id_does_not_get_its_predecessors_entry() {
        let cache = ConfigCache::new(Duration::from_secs(10));
        let now = Instant::now();
        keep(&cache, "dev-d", 7, &config(5, b"old"), now);
        // Deleted (a device change drops the entry) and made again with a new numeric id.
        cache.changed(&registry(), &DeviceRef::Id(id("dev-d")));
        keep(&cache, "dev-d", 9, &config(1, b""), now);
        assert!(cache.get(NumId(7), now).is_none());
        assert_eq!(cache.get(NumId(9), now).unwrap().version, 1);
        cache.changed(&registry(), &DeviceRef::Id(id("dev-d")));
        assert!(cache.is_empty());
    }
}
