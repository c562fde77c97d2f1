//! The verified-token cache that keeps signature checks and registry reads off the hot path: a
//! device presents the same token on every HTTP request (and MQTT reconnect) until it expires, so
//! after the first check a lookup is one SHA-256 and one map probe.
//!
//! Entries are keyed by the SHA-256 of the device name and the token (the token itself is never
//! stored), remember the device the token proved, and lapse at the token's `exp` plus the allowed
//! clock skew, or earlier when the credential that verified it expires (or when the caller's
//! freshness bound ends). The cache holds at most `capacity` entries; when
//! full it first drops lapsed entries, then evicts the entry that would lapse soonest (it has the
//! least verification work left to save), both in O(log n) through an expiry-ordered index.
//! `invalidate_device` drops a device's entries through a per-device index, in O(its entries).
//!
//! One `std::sync::Mutex` guards it all: every critical section is a few map operations with no
//! `.await` inside, far shorter than the SHA-256 that precedes it, so sharding would buy little
//! on the handful of cores an ingest instance runs on.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use aws_lc_rs::digest::{Context, Digest, SHA256, digest};
use shared::jwt::MAX_CLOCK_SKEW_SECS;
use shared::{DeviceId, DeviceName, DeviceRef, RegistryName};

use super::AuthenticatedDevice;
use super::jwt::VerifiedToken;

/// The SHA-256 of a token: what the cache stores instead of the token.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    /// Hashes a token.
    pub fn of(token: &str) -> Self {
        Self::from_digest(digest(&SHA256, token.as_bytes()))
    }

    /// Hashes a token together with the device it is presented for. Devices that share a key
    /// (a fleet provisioned with one key pair) and sign in the same second present the very
    /// same token; keyed by the token alone they would evict each other on every request.
    pub fn for_device(device: &DeviceName, token: &str) -> Self {
        let mut context = Context::new(&SHA256);
        // Ids never contain '/', so the separators keep the parts apart.
        for part in [
            device.registry.project.as_str(),
            device.registry.location.as_str(),
            device.registry.registry.as_str(),
        ] {
            context.update(part.as_bytes());
            context.update(b"/");
        }
        match &device.device {
            DeviceRef::Id(id) => context.update(id.as_str().as_bytes()),
            DeviceRef::Num(num) => {
                context.update(b"#");
                context.update(&num.0.to_be_bytes());
            }
        }
        context.update(b"/");
        context.update(token.as_bytes());
        Self::from_digest(context.finish())
    }

    fn from_digest(hash: Digest) -> Self {
        let mut key = [0; 32];
        key.copy_from_slice(hash.as_ref());
        Self(key)
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to tell entries apart in a debug print.
        let [a, b, c, d, ..] = self.0;
        write!(f, "TokenKey({a:02x}{b:02x}{c:02x}{d:02x}…)")
    }
}

/// Proof that no invalidation happened between taking it and inserting: take one before reading
/// the device from the registry, so a device changed while its token was being checked never
/// gets a stale entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// The last Unix second at which a verified token may be served from the cache: its `exp` plus
/// the clock skew (the verifier's own limit), or the second before its credential expires.
pub fn valid_until(token: &VerifiedToken) -> i64 {
    let by_token = token.exp.saturating_add(MAX_CLOCK_SKEW_SECS);
    match token.key_expires_at {
        Some(expiry) => by_token.min(expiry.saturating_sub(1)),
        None => by_token,
    }
}

/// A bounded cache of verified tokens. See the module documentation for the policy.
pub struct TokenCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

struct Entry {
    device: Arc<AuthenticatedDevice>,
    valid_until: i64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<TokenKey, Entry>,
    /// `(valid_until, key)` of every entry, soonest first.
    by_expiry: BTreeSet<(i64, TokenKey)>,
    /// Registry, then device id, to the keys of that device's entries. Nested so a lookup needs
    /// no owned key.
    by_device: HashMap<RegistryName, HashMap<DeviceId, HashSet<TokenKey>>>,
    /// Bumped by every invalidation; see [`Ticket`].
    invalidations: u64,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 turns caching off.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The most entries it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many entries it holds now, lapsed ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The device a cached token proved, unless the entry has lapsed at `now` (then it is
    /// dropped). The caller checks the device is the one the request names.
    pub fn get(&self, key: &TokenKey, now: i64) -> Option<Arc<AuthenticatedDevice>> {
        let mut inner = self.lock();
        let entry = inner.entries.get(key)?;
        if now <= entry.valid_until {
            return Some(Arc::clone(&entry.device));
        }
        inner.remove(key);
        None
    }

    /// A ticket to pass to [`TokenCache::insert`].
    pub fn ticket(&self) -> Ticket {
        Ticket(self.lock().invalidations)
    }

    /// Caches a token verified for `device`, to be served until `valid_until` (inclusive).
    /// Returns whether it was stored: not when caching is off, the entry has already lapsed, or
    /// a device was invalidated since `ticket` was taken (a cache miss later is cheaper than
    /// serving a device that was just blocked or re-keyed).
    pub fn insert(
        &self,
        ticket: Ticket,
        key: TokenKey,
        device: Arc<AuthenticatedDevice>,
        valid_until: i64,
        now: i64,
    ) -> bool {
        if self.capacity == 0 || valid_until < now {
            return false;
        }
        let mut inner = self.lock();
        if inner.invalidations != ticket.0 {
            return false;
        }
        inner.remove(&key);
        inner.drop_lapsed(now);
        while inner.entries.len() >= self.capacity && inner.evict_soonest() {}
        inner.add(key, device, valid_until);
        true
    }

    /// Drops every entry of a device (by id, so every numeric id it had too). The admin API calls
    /// this after each change to a device: new keys, blocked, deleted.
    pub fn invalidate_device(&self, registry: &RegistryName, device: &DeviceId) {
        let mut inner = self.lock();
        inner.invalidations = inner.invalidations.wrapping_add(1);
        let keys = inner
            .by_device
            .get_mut(registry)
            .and_then(|devices| devices.remove(device));
        if inner.by_device.get(registry).is_some_and(HashMap::is_empty) {
            inner.by_device.remove(registry);
        }
        for key in keys.into_iter().flatten() {
            inner.remove(&key);
        }
    }

    /// The lock, even after a panic elsewhere: every update leaves the maps consistent before
    /// anything that could panic, and `remove` tolerates a missing index entry.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl Inner {
    fn add(&mut self, key: TokenKey, device: Arc<AuthenticatedDevice>, valid_until: i64) {
        self.by_expiry.insert((valid_until, key));
        self.by_device
            .entry(device.registry.clone())
            .or_default()
            .entry(device.id.clone())
            .or_default()
            .insert(key);
        self.entries.insert(
            key,
            Entry {
                device,
                valid_until,
            },
        );
    }

    fn remove(&mut self, key: &TokenKey) {
        let Some(entry) = self.entries.remove(key) else {
            return;
        };
        self.by_expiry.remove(&(entry.valid_until, *key));
        let registry = &entry.device.registry;
        let Some(devices) = self.by_device.get_mut(registry) else {
            return;
        };
        if let Some(keys) = devices.get_mut(&entry.device.id) {
            keys.remove(key);
            if keys.is_empty() {
                devices.remove(&entry.device.id);
            }
        }
        if devices.is_empty() {
            self.by_device.remove(registry);
        }
    }

    /// Drops every entry that lapsed before `now`.
    fn drop_lapsed(&mut self, now: i64) {
        while let Some(&(valid_until, key)) = self.by_expiry.first() {
            if valid_until >= now {
                break;
            }
            self.remove(&key);
        }
    }

    /// Evicts the entry that lapses soonest; false when there is none.
    fn evict_soonest(&mut self) -> bool {
        match self.by_expiry.first() {
            Some(&(_, key)) => {
                self.remove(&key);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use shared::NumId;
    use std::sync::OnceLock;

    use super::*;

    const NOW: i64 = 1_767_225_600;

    fn registry(id: &str) -> RegistryName {
        RegistryName::from_parts("demo-project", "us-central1", id).unwrap()
    }

    fn device(registry_id: &str, id: &str, num: u64) -> Arc<AuthenticatedDevice> {
        Arc::new(AuthenticatedDevice {
            registry: registry(registry_id),
            id: DeviceId::parse(id).unwrap(),
            num_id: NumId(num),
            token_exp: NOW + 3600,
            via_gateway: None,
            attributes: OnceLock::new(),
        })
    }

    fn put(
        cache: &TokenCache,
        token: &str,
        dev: Arc<AuthenticatedDevice>,
        valid_until: i64,
    ) -> bool {
        cache.insert(cache.ticket(), TokenKey::of(token), dev, valid_until, NOW)
    }

    fn has(cache: &TokenCache, token: &str, now: i64) -> bool {
        cache.get(&TokenKey::of(token), now).is_some()
    }

    #[test]
    fn a_cached_token_returns_the_device_it_proved() {
        let cache = TokenCache::new(10);
        assert!(put(&cache, "t1", device("reg-1", "dev-1", 7), NOW + 100));
        let hit = cache.get(&TokenKey::of("t1"), NOW).unwrap();
        let proved = (hit.registry.registry.as_str(), hit.id.as_str(), hit.num_id);
        assert_eq!(proved, ("reg-1", "dev-1", NumId(7)));
        assert!(!has(&cache, "t2", NOW));
    }

    #[test]
    fn an_entry_lapses_after_its_last_valid_second_and_is_dropped() {
        let cache = TokenCache::new(10);
        put(&cache, "t1", device("reg-1", "dev-1", 7), NOW + 100);
        assert!(has(&cache, "t1", NOW + 100));
        assert!(!has(&cache, "t1", NOW + 101));
        assert!(cache.is_empty());
    }

    #[test]
    fn a_token_stays_valid_for_the_skew_after_exp_unless_its_credential_expires() {
        let token = VerifiedToken {
            alg: shared::jwt::Algorithm::ES256,
            iat: NOW,
            exp: NOW + 60,
            key_expires_at: None,
        };
        assert_eq!(valid_until(&token), NOW + 60 + MAX_CLOCK_SKEW_SECS);
        let key_expires_at = Some(NOW + 30);
        assert_eq!(
            valid_until(&VerifiedToken {
                key_expires_at,
                ..token
            }),
            NOW + 29
        );
    }

    #[test]
    fn a_full_cache_drops_lapsed_entries_before_live_ones() {
        let cache = TokenCache::new(2);
        put(&cache, "old", device("reg-1", "dev-1", 1), NOW - 5);
        // Lapsed before it was stored: refused outright.
        assert_eq!(cache.len(), 0);
        put(&cache, "a", device("reg-1", "dev-1", 1), NOW);
        put(&cache, "b", device("reg-1", "dev-2", 2), NOW + 500);
        // At NOW + 1, "a" has lapsed, so "c" takes its place and "b" survives.
        assert!(cache.insert(
            cache.ticket(),
            TokenKey::of("c"),
            device("reg-1", "dev-3", 3),
            NOW + 900,
            NOW + 1
        ));
        assert_eq!(cache.len(), 2);
        assert!(has(&cache, "b", NOW + 1) && has(&cache, "c", NOW + 1));
    }

    #[test]
    fn a_full_cache_evicts_the_entry_that_would_lapse_soonest() {
        let cache = TokenCache::new(2);
        put(&cache, "late", device("reg-1", "dev-1", 1), NOW + 900);
        put(&cache, "soon", device("reg-1", "dev-2", 2), NOW + 100);
        put(&cache, "new", device("reg-1", "dev-3", 3), NOW + 500);
        assert_eq!(cache.len(), 2);
        assert!(!has(&cache, "soon", NOW));
        assert!(has(&cache, "late", NOW) && has(&cache, "new", NOW));
    }

    #[test]
    fn storing_the_same_token_again_replaces_its_entry() {
        let cache = TokenCache::new(2);
        put(&cache, "t", device("reg-1", "dev-1", 1), NOW + 100);
        put(&cache, "t", device("reg-1", "dev-2", 2), NOW + 200);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&TokenKey::of("t"), NOW).unwrap().num_id, NumId(2));
        cache.invalidate_device(&registry("reg-1"), &DeviceId::parse("dev-1").unwrap());
        assert!(has(&cache, "t", NOW));
    }

    #[test]
    fn invalidating_a_device_drops_only_its_entries() {
        let cache = TokenCache::new(10);
        put(&cache, "a1", device("reg-1", "dev-a", 1), NOW + 100);
        put(&cache, "a2", device("reg-1", "dev-a", 1), NOW + 100);
        put(&cache, "b", device("reg-1", "dev-b", 2), NOW + 100);
        put(
            &cache,
            "other-registry",
            device("reg-2", "dev-a", 3),
            NOW + 100,
        );
        cache.invalidate_device(&registry("reg-1"), &DeviceId::parse("dev-a").unwrap());
        assert!(!has(&cache, "a1", NOW) && !has(&cache, "a2", NOW));
        assert!(has(&cache, "b", NOW) && has(&cache, "other-registry", NOW));
        assert_eq!(cache.len(), 2);
        let inner = cache.lock();
        assert_eq!(inner.by_expiry.len(), 2);
        assert!(
            !inner.by_device[&registry("reg-1")].contains_key(&DeviceId::parse("dev-a").unwrap())
        );
    }

    #[test]
    fn a_result_checked_across_an_invalidation_is_not_cached() {
        let cache = TokenCache::new(10);
        let ticket = cache.ticket();
        cache.invalidate_device(&registry("reg-1"), &DeviceId::parse("dev-a").unwrap());
        assert!(!cache.insert(
            ticket,
            TokenKey::of("t"),
            device("reg-1", "dev-a", 1),
            NOW + 100,
            NOW
        ));
        assert!(cache.is_empty());
    }

    #[test]
    fn a_cache_of_capacity_zero_stores_nothing() {
        let cache = TokenCache::new(0);
        assert!(!put(&cache, "t", device("reg-1", "dev-1", 1), NOW + 100));
        assert!(cache.is_empty());
    }

    #[test]
    fn every_index_empties_when_the_entries_go() {
        let cache = TokenCache::new(1);
        for i in 0..50 {
            put(
                &cache,
                &format!("t{i}"),
                device("reg-1", &format!("dev-{i}"), i),
                NOW + i as i64,
            );
        }
        assert_eq!(cache.len(), 1);
        let inner = cache.lock();
        assert_eq!(inner.by_expiry.len(), 1);
        assert_eq!(inner.by_device[&registry("reg-1")].len(), 1);
    }
}
