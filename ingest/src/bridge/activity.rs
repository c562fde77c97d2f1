//! Coalesced device bookkeeping (`lastEventTime`, `lastStateTime`, `lastConfigSendTime`, the last
//! error). Writing these on every message would make the registry the bottleneck and, on
//! Firestore, the bill; instead each message updates an in-memory entry for its device and a
//! flush writes every pending entry once. Flushed every interval (a minute by default), a device
//! costs at most one registry write per interval however many messages it sends. What is lost on
//! a crash is at most one interval of timestamps, which the admin API documents may lag anyway.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use shared::{DeviceId, DeviceRef, RegistryName};

use crate::registry::{Activity, RegistryStore, StoreError};

/// Pending bookkeeping per device, waiting for the next flush.
#[derive(Debug, Default)]
pub(crate) struct ActivityBook {
    /// By registry, then device: a note for a device already pending is found by reference,
    /// where a `(registry, device)` key cost four string copies on every message.
    pending: Mutex<HashMap<RegistryName, HashMap<DeviceId, Activity>>>,
}

/// What a flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Devices whose bookkeeping was written.
    pub written: usize,
    /// Devices whose write failed; their entries wait for the next flush.
    pub retried: usize,
}

impl ActivityBook {
    /// Records something about a device; the newest value of each field wins.
    pub(crate) fn note(&self, registry: &RegistryName, device: &DeviceId, update: Activity) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = pending.get_mut(registry).and_then(|d| d.get_mut(device)) {
            return overlay(entry, update);
        }
        let devices = pending.entry(registry.clone()).or_default();
        overlay(devices.entry(device.clone()).or_default(), update);
    }

    /// Writes every pending entry, one registry call per device. A write that fails for a
    /// passing reason is put back (under anything newer noted meanwhile); a device that no
    /// longer exists is dropped.
    pub(crate) async fn flush(&self, store: &dyn RegistryStore) -> FlushReport {
        let batch =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        let mut report = FlushReport::default();
        let batch = batch.into_iter().flat_map(|(registry, devices)| {
            devices
                .into_iter()
                .map(move |(device, activity)| (registry.clone(), device, activity))
        });
        for (registry, device, activity) in batch {
            let device_ref = DeviceRef::Id(device.clone());
            match store
                .record_activity(&registry, &device_ref, activity.clone())
                .await
            {
                Ok(()) => report.written += 1,
                Err(StoreError::NotFound(_)) => {}
                Err(error) => {
                    tracing::warn!(
                        registry = %registry, device = %device, error = %error,
                        "could not record device activity; will retry at the next flush"
                    );
                    self.put_back(registry, device, activity);
                    report.retried += 1;
                }
            }
        }
        report
    }

    fn put_back(&self, registry: RegistryName, device: DeviceId, older: Activity) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = pending
            .entry(registry)
            .or_default()
            .entry(device)
            .or_default();
        let newer = std::mem::replace(entry, older);
        overlay(entry, newer);
    }

    /// How many devices have bookkeeping waiting.
    pub(crate) fn pending(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(HashMap::len)
            .sum()
    }
}

/// Copies every field `newer` sets over `base`.
fn overlay(base: &mut Activity, newer: Activity) {
    let Activity {
        last_heartbeat_time,
        last_event_time,
        last_state_time,
        last_config_ack_time,
        config_ack_version,
        last_config_send_time,
        last_error,
        last_accessed_gateway,
    } = newer;
    if last_heartbeat_time.is_some() {
        base.last_heartbeat_time = last_heartbeat_time;
    }
    if last_event_time.is_some() {
        base.last_event_time = last_event_time;
    }
    if last_state_time.is_some() {
        base.last_state_time = last_state_time;
    }
    if last_config_ack_time.is_some() {
        base.last_config_ack_time = last_config_ack_time;
        base.config_ack_version = config_ack_version;
    }
    if last_config_send_time.is_some() {
        base.last_config_send_time = last_config_send_time;
    }
    if last_error.is_some() {
        base.last_error = last_error;
    }
    if last_accessed_gateway.is_some() {
        base.last_accessed_gateway = last_accessed_gateway;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use shared::resources::RpcStatus;

    fn at(secs: i64) -> Option<Timestamp> {
        Some(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn newer_fields_win_and_unset_ones_keep_the_older() {
        let mut base = Activity {
            last_event_time: at(1),
            last_state_time: at(2),
            ..Default::default()
        };
        let error = (
            Timestamp::from_second(4).unwrap(),
            RpcStatus {
                code: 9,
                message: "no route".into(),
            },
        );
        overlay(
            &mut base,
            Activity {
                last_event_time: at(3),
                last_error: Some(error.clone()),
                ..Default::default()
            },
        );
        assert_eq!(base.last_event_time, at(3));
        assert_eq!(base.last_state_time, at(2));
        assert_eq!(base.last_error, Some(error));
    }

    #[test]
    fn many_notes_for_one_device_make_one_entry() {
        let book = ActivityBook::default();
        let registry = RegistryName::from_parts("demo-project", "us-central1", "reg-1").unwrap();
        let device = DeviceId::parse("dev-1").unwrap();
        for secs in 0..50 {
            book.note(
                &registry,
                &device,
                Activity {
                    last_event_time: at(secs),
                    ..Default::default()
                },
            );
        }
        assert_eq!(book.pending(), 1);
    }
}
