//! Long-poll waiters for HTTP devices (an extension: `GET …/config?local_version=N&wait=S`). A
//! request that found no config newer than N registers here under its device, by id and by
//! numeric id (the admin API may name a device either way), and sleeps on a `watch` channel
//! carrying the latest version announced. [`ConfigWaiters::notify`] wakes every waiter of the
//! device; each then reads the store again, so what it answers is never older than the store. The
//! entry goes when its last waiter is dropped, which is also what happens when the client
//! disconnects (hyper drops the handler's future), so abandoned polls leave nothing behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use shared::{DeviceId, DeviceRef, NumId, RegistryName};
use tokio::sync::watch;

type Key = (RegistryName, DeviceId);

#[derive(Debug, Default)]
struct Table {
    by_id: HashMap<Key, watch::Sender<u64>>,
    by_num: HashMap<NumId, Key>,
}

/// The devices some HTTP request is waiting on. Cheap to clone; clones share the table.
#[derive(Debug, Clone, Default)]
pub struct ConfigWaiters {
    table: Arc<Mutex<Table>>,
}

/// One waiting request. Dropping it (answered, timed out, or the client gone) unregisters it.
#[derive(Debug)]
pub struct ConfigWait {
    waiters: ConfigWaiters,
    key: Key,
    num_id: NumId,
    rx: Option<watch::Receiver<u64>>,
}

impl ConfigWaiters {
    /// Registers a waiter for the device. Register *before* reading the store, so a change made
    /// between the read and the wait still wakes it.
    pub fn wait_for(&self, registry: &RegistryName, id: &DeviceId, num_id: NumId) -> ConfigWait {
        let key = (registry.clone(), id.clone());
        let mut table = self.lock();
        table.by_num.insert(num_id, key.clone());
        let rx = table
            .by_id
            .entry(key.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        ConfigWait {
            waiters: self.clone(),
            key,
            num_id,
            rx: Some(rx),
        }
    }

    /// Wakes the device's waiters, if any: its config is now at `version`.
    pub fn notify(&self, registry: &RegistryName, device: &DeviceRef, version: u64) {
        let table = self.lock();
        let key = match device {
            DeviceRef::Id(id) => (registry.clone(), id.clone()),
            DeviceRef::Num(num) => match table.by_num.get(num) {
                Some(key) if key.0 == *registry => key.clone(),
                _ => return,
            },
        };
        if let Some(tx) = table.by_id.get(&key) {
            tx.send_replace(version);
        }
    }

    /// How many devices have a waiter (for tests: nothing leaks).
    pub fn devices_waited_on(&self) -> usize {
        self.lock().by_id.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ConfigWait {
    /// Returns once a version above `local_version` has been announced since this waiter was
    /// registered. Never returns otherwise: the caller bounds it with a timeout.
    pub async fn newer_than(&mut self, local_version: u64) {
        let Some(rx) = self.rx.as_mut() else {
            return std::future::pending().await;
        };
        if rx
            .wait_for(|version| *version > local_version)
            .await
            .is_err()
        {
            // The sender lives while this receiver does; this cannot happen, but must not spin.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for ConfigWait {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut table = self.waiters.lock();
        let last = table
            .by_id
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() == 0);
        if last {
            table.by_id.remove(&self.key);
            table.by_num.remove(&self.num_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn names() -> (RegistryName, DeviceId) {
        (
            RegistryName::parse("projects/my-project/locations/us-central1/registries/reg-1")
                .unwrap(),
            DeviceId::parse("dev-1").unwrap(),
        )
    }

    #[tokio::test]
    async fn a_waiter_wakes_on_a_newer_version_by_either_name_and_leaves_nothing_behind() {
        let waiters = ConfigWaiters::default();
        let (registry, device) = names();
        let mut first = waiters.wait_for(&registry, &device, NumId(7));
        let mut second = waiters.wait_for(&registry, &device, NumId(7));
        waiters.notify(&registry, &DeviceRef::Id(device.clone()), 3);
        let short = Duration::from_millis(50);
        // Version 3 is not newer than the first waiter's 3.
        assert!(
            tokio::time::timeout(short, first.newer_than(3))
                .await
                .is_err()
        );
        waiters.notify(&registry, &DeviceRef::Num(NumId(7)), 4);
        assert!(
            tokio::time::timeout(short, first.newer_than(3))
                .await
                .is_ok()
        );
        assert!(
            tokio::time::timeout(short, second.newer_than(1))
                .await
                .is_ok()
        );
        drop(first);
        assert_eq!(waiters.devices_waited_on(), 1);
        drop(second);
        assert_eq!(waiters.devices_waited_on(), 0);
        // With nobody waiting, a notice is a no-op.
        waiters.notify(&registry, &DeviceRef::Num(NumId(7)), 5);
        assert_eq!(waiters.devices_waited_on(), 0);
    }
}
