//! A short-lived cache of registries, so that routing an event, finding the state topic and
//! checking the protocol switches cost a map probe instead of a registry read per message. An
//! entry is reused for the configured TTL (5 s by default), which is therefore how long a change
//! to a registry's topics or switches may take to reach devices. When an entry lapses under load,
//! the requests that miss together wait for one read rather than each reading the store: on
//! Firestore every read is billed, and an instance serving many devices of one registry would
//! otherwise pay a burst of reads every TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use shared::RegistryName;
use shared::resources::DeviceRegistry;

use crate::registry::{RegistryStore, StoreResult};

/// Above this many entries an insert first drops the expired ones, so a stream of lookups for
/// many registries cannot grow the map without bound.
const SWEEP_ABOVE: usize = 1024;

/// Registries read within the last TTL.
#[derive(Debug)]
pub(crate) struct RegistryCache {
    ttl: Duration,
    entries: Mutex<HashMap<RegistryName, Entry>>,
    /// One gate per registry being read: misses queue on it and find the entry on their turn.
    reading: Mutex<HashMap<RegistryName, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Debug, Clone)]
struct Entry {
    read_at: Instant,
    registry: Arc<DeviceRegistry>,
}

impl RegistryCache {
    /// A cache keeping entries for `ttl`; zero reads the store every time.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
            reading: Mutex::new(HashMap::new()),
        }
    }

    /// The registry `name` as read at most a TTL before `now`.
    pub(crate) async fn get(
        &self,
        store: &dyn RegistryStore,
        name: &RegistryName,
        now: Instant,
    ) -> StoreResult<Arc<DeviceRegistry>> {
        if let Some(fresh) = self.fresh(name, now) {
            return Ok(fresh);
        }
        if self.ttl.is_zero() {
            return Ok(Arc::new(store.get_registry(name).await?));
        }
        let gate = self.gate(name);
        let _turn = gate.lock().await;
        // Whoever held the gate before may have read it for us.
        if let Some(fresh) = self.fresh(name, now) {
            return Ok(fresh);
        }
        let read = store.get_registry(name).await;
        self.reading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        let registry = Arc::new(read?);
        self.insert(name, Arc::clone(&registry), now);
        Ok(registry)
    }

    /// The gate for reading `name`, shared by everyone who misses it meanwhile.
    fn gate(&self, name: &RegistryName) -> Arc<tokio::sync::Mutex<()>> {
        let mut reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(reading.entry(name.clone()).or_default())
    }

    fn fresh(&self, name: &RegistryName, now: Instant) -> Option<Arc<DeviceRegistry>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(name)
            .filter(|entry| now.saturating_duration_since(entry.read_at) < self.ttl)
            .map(|entry| Arc::clone(&entry.registry))
    }

    fn insert(&self, name: &RegistryName, registry: Arc<DeviceRegistry>, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= SWEEP_ABOVE {
            entries.retain(|_, entry| now.saturating_duration_since(entry.read_at) < self.ttl);
        }
        entries.insert(
            name.clone(),
            Entry {
                read_at: now,
                registry,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RegistryUpdate;
    use crate::registry::sqlite::SqliteStore;
    use shared::resources::{HttpConfig, HttpState};
    use shared::{LocationName, RegistryId};

    async fn store_with_registry() -> (tempfile::TempDir, SqliteStore, RegistryName) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("r.db")).await.unwrap();
        let parent = LocationName::parse("demo-project", "us-central1").unwrap();
        let registry = DeviceRegistry {
            id: Some(RegistryId::parse("reg-1").unwrap()),
            ..Default::default()
        };
        store.create_registry(&parent, registry).await.unwrap();
        let name = RegistryName::from_parts("demo-project", "us-central1", "reg-1").unwrap();
        (dir, store, name)
    }

    async fn disable_http(store: &SqliteStore, name: &RegistryName) {
        let update = RegistryUpdate {
            http_config: Some(HttpConfig {
                http_enabled_state: HttpState::HttpDisabled,
            }),
            ..Default::default()
        };
        store.update_registry(name, update).await.unwrap();
    }

    #[tokio::test]
    async fn a_change_shows_only_after_the_ttl() {
        let (_dir, store, name) = store_with_registry().await;
        let cache = RegistryCache::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let before = cache.get(&store, &name, t0).await.unwrap();
        disable_http(&store, &name).await;
        let cached = cache
            .get(&store, &name, t0 + Duration::from_secs(4))
            .await
            .unwrap();
        assert_eq!(cached, before);
        let reread = cache
            .get(&store, &name, t0 + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            reread.http_config.http_enabled_state,
            HttpState::HttpDisabled
        );
    }

    #[tokio::test]
    async fn a_zero_ttl_reads_every_time() {
        let (_dir, store, name) = store_with_registry().await;
        let cache = RegistryCache::new(Duration::ZERO);
        let t0 = Instant::now();
        cache.get(&store, &name, t0).await.unwrap();
        disable_http(&store, &name).await;
        let reread = cache.get(&store, &name, t0).await.unwrap();
        assert_eq!(
            reread.http_config.http_enabled_state,
            HttpState::HttpDisabled
        );
    }
}
