//! Cloud-to-device delivery: which MQTT connection of this process holds each device
//! (`Delivery`), and how the admin API reaches connections held anywhere in the fleet (`fleet`,
//! over the delivery `bus`). A config change is pushed to the device's connection
//! at once; a command goes to a connection subscribed to `commands/#`, and its sender learns how
//! it ended (written at QoS 0, acknowledged at QoS 1, or why not); a change to its keys or
//! blocked flag makes the connection check its token again; a second CONNECT for the same device
//! replaces the first, which is told why (one connection per device, as IoT Core). Across several
//! instances the same happens through presence records in the registry store and the bus.

pub mod bus;
pub mod fleet;
pub mod pubsub;

pub use fleet::{Fleet, FleetParts};

mod config_cache;
mod config_waiters;

pub use config_cache::ConfigCache;
pub use config_waiters::{ConfigWait, ConfigWaiters};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use shared::resources::DeviceConfig;
use shared::{DeviceId, DeviceRef, NumId, RegistryName};
use tokio::sync::{mpsc, oneshot};

/// How many deliveries may wait for a connection before newer ones are dropped. A connection
/// reads them between packets; configs carry their version, so a dropped one is never needed
/// (the next push, or the config sent after SUBACK, is newer).
const QUEUE: usize = 8;

/// IoT Core's limit on a command's data.
pub const MAX_COMMAND_BYTES: usize = 256 * 1024;

/// QoS 1 commands a connection may have awaiting their PUBACK; more are refused as busy.
pub const MAX_UNACKED_COMMANDS: usize = 16;

/// What the rest of the service tells a device's connection.
#[derive(Debug)]
pub enum Control {
    /// The device's config changed; this is the new latest version. Boxed: every connection's
    /// inbox holds a block of these, and a small one keeps idle connections cheap.
    Config(Box<DeviceConfig>),
    /// A command to send to the device.
    Command(Box<Command>),
    /// Commands were queued for the device: if subscribed to them, read the queue again.
    Queued,
    /// The device's keys or blocked flag changed, or it was deleted: check the token again.
    Recheck,
    /// Another connection for the same device was accepted; this one must close.
    Replaced,
}

/// A command on its way to a device's connection.
#[derive(Debug)]
pub struct Command {
    /// Sent to `/devices/{d}/commands/{subfolder}` when given.
    pub subfolder: Option<String>,
    /// The command, as the device receives it.
    pub data: Bytes,
    /// Told how delivery ended. Dropped unanswered when the connection closes first.
    pub done: oneshot::Sender<Result<(), CommandFailure>>,
}

/// Why a command was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CommandFailure {
    /// No MQTT connection of the device is held here.
    NotConnected,
    /// The device is connected but not subscribed to `/devices/{d}/commands/#`.
    NotSubscribed,
    /// The connection has too many deliveries waiting already.
    Busy,
    /// Sent at QoS 1 `sends` times, and no PUBACK came within `waited`: the device may or may
    /// not have it.
    NotAcknowledged { waited: Duration, sends: u32 },
    /// The connection closed before the device acknowledged it: it may or may not have it.
    ConnectionClosed,
    /// The command could not be handed to the instance holding the device (the bus or the
    /// registry store failed): it was not sent.
    Unavailable(String),
    /// The instance holding the device did not say how delivery ended within `waited`: the
    /// device may or may not have it.
    NoAnswer { waited: Duration },
}

/// Whether a delivery reached a connection's inbox.
enum Handed {
    Yes,
    NoConnection,
    InboxFull,
}

type Key = (RegistryName, DeviceId);

#[derive(Debug)]
struct Holder {
    generation: u64,
    /// The claim's generation in the registry store's presence record, once recorded.
    fleet_generation: u64,
    /// This connection's claim is still being recorded in the store.
    claim_pending: bool,
    /// The newest claim another instance said replaced this device while this connection's own
    /// claim was still being recorded: decided once its generation is known.
    replaced_by: u64,
    num_id: NumId,
    tx: mpsc::Sender<Control>,
}

#[derive(Debug, Default)]
struct Table {
    by_id: HashMap<Key, Holder>,
    by_num: HashMap<NumId, Key>,
}

/// The connections of this process, by device. Cheap to clone; clones share the table.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    table: Arc<Mutex<Table>>,
    generations: Arc<AtomicU64>,
    /// HTTP long-polls, woken by [`Delivery::config_changed`] like a connection.
    waiters: ConfigWaiters,
    /// The devices' latest configs, dropped by [`Delivery::config_changed`] and
    /// [`Delivery::device_changed`].
    configs: ConfigCache,
}

/// A connection's claim on its device: its generation and its inbox.
#[derive(Debug)]
pub struct Attachment {
    /// Tells this claim from a newer one for the same device in this process.
    pub generation: u64,
    /// The claim's generation in the fleet's presence records; 0 when it could not be recorded.
    pub fleet_generation: u64,
    /// Deliveries for the connection.
    pub inbox: mpsc::Receiver<Control>,
}

impl Delivery {
    /// A delivery whose config cache is `configs`.
    pub fn new(configs: ConfigCache) -> Self {
        Self {
            configs,
            ..Self::default()
        }
    }

    /// Claims `device` for a new connection; the connection holding it before is told
    /// [`Control::Replaced`].
    pub fn attach(&self, registry: &RegistryName, device: &DeviceId, num_id: NumId) -> Attachment {
        let (tx, inbox) = mpsc::channel(QUEUE);
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let key = (registry.clone(), device.clone());
        let mut table = self.lock();
        table.by_num.insert(num_id, key.clone());
        let holder = Holder {
            generation,
            fleet_generation: 0,
            claim_pending: true,
            replaced_by: 0,
            num_id,
            tx,
        };
        if let Some(old) = table.by_id.insert(key, holder) {
            // The old connection may be gone already; then there is nobody to tell.
            let _ = old.tx.try_send(Control::Replaced);
        }
        Attachment {
            generation,
            fleet_generation: 0,
            inbox,
        }
    }

    /// Releases a claim, unless a newer connection has taken the device since.
    pub fn detach(&self, registry: &RegistryName, device: &DeviceId, generation: u64) {
        let key = (registry.clone(), device.clone());
        let mut table = self.lock();
        if table
            .by_id
            .get(&key)
            .is_some_and(|holder| holder.generation == generation)
            && let Some(holder) = table.by_id.remove(&key)
        {
            table.by_num.remove(&holder.num_id);
        }
    }

    /// Notes the fleet generation of the claim `generation` once the store recorded it (0 when
    /// it could not be recorded: then any claim elsewhere counts as newer).
    pub fn set_fleet_generation(
        &self,
        registry: &RegistryName,
        device: &DeviceId,
        generation: u64,
        fleet_generation: u64,
    ) {
        let key = (registry.clone(), device.clone());
        if let Some(holder) = self.lock().by_id.get_mut(&key)
            && holder.generation == generation
        {
            holder.fleet_generation = fleet_generation;
            holder.claim_pending = false;
            if holder.replaced_by > fleet_generation {
                let _ = holder.tx.try_send(Control::Replaced);
            }
        }
    }

    /// Closes the device's connection here if a newer claim (`fleet_generation`) of the fleet
    /// took the device on another instance. A connection whose own claim is still being
    /// recorded may turn out newer still (it reconnected here meanwhile): the notice waits for
    /// that claim's generation instead of closing the newest connection.
    pub fn replaced_elsewhere(
        &self,
        registry: &RegistryName,
        device: &DeviceId,
        fleet_generation: u64,
    ) {
        let key = (registry.clone(), device.clone());
        let mut table = self.lock();
        let Some(holder) = table.by_id.get_mut(&key) else {
            return;
        };
        if holder.claim_pending {
            holder.replaced_by = holder.replaced_by.max(fleet_generation);
        } else if holder.fleet_generation < fleet_generation {
            let _ = holder.tx.try_send(Control::Replaced);
        }
    }

    /// Drops the device's cached config, pushes the new one to its connection, if it has one
    /// here, and wakes its HTTP long-polls.
    pub fn config_changed(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        config: DeviceConfig,
    ) {
        // Dropped before the waiters wake, so that they read the new version.
        self.configs.changed(registry, device);
        self.waiters.notify(registry, device, config.version);
        self.send(registry, device, Control::Config(Box::new(config)));
    }

    /// The config cache this delivery keeps right.
    pub fn config_cache(&self) -> ConfigCache {
        self.configs.clone()
    }

    /// The HTTP long-poll waiters this delivery wakes on a config change.
    pub fn config_waiters(&self) -> ConfigWaiters {
        self.waiters.clone()
    }

    /// Drops the device's cached config and makes its connection, if any, check its token
    /// again.
    pub fn device_changed(&self, registry: &RegistryName, device: &DeviceRef) {
        // A deleted device's cached config goes with it.
        self.configs.changed(registry, device);
        self.send(registry, device, Control::Recheck);
    }

    /// Sends a command to the device's connection and waits until the connection says how it
    /// ended (it always answers within its command timeout, or closes).
    pub async fn send_command(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        subfolder: Option<String>,
        data: Bytes,
    ) -> Result<(), CommandFailure> {
        let (done, answer) = oneshot::channel();
        let command = Command {
            subfolder,
            data,
            done,
        };
        match self.send(registry, device, Control::Command(Box::new(command))) {
            Handed::Yes => answer
                .await
                .unwrap_or(Err(CommandFailure::ConnectionClosed)),
            Handed::NoConnection => Err(CommandFailure::NotConnected),
            Handed::InboxFull => Err(CommandFailure::Busy),
        }
    }

    /// Tells the device's connection here, if any, that commands were queued for it.
    pub fn commands_queued(&self, registry: &RegistryName, device: &DeviceRef) {
        let _ = self.send(registry, device, Control::Queued);
    }

    /// Whether the device has a connection here (for tests and the admin API).
    pub fn is_connected(&self, registry: &RegistryName, device: &DeviceId) -> bool {
        self.lock()
            .by_id
            .contains_key(&(registry.clone(), device.clone()))
    }

    fn send(&self, registry: &RegistryName, device: &DeviceRef, control: Control) -> Handed {
        let table = self.lock();
        let key = match device {
            DeviceRef::Id(id) => (registry.clone(), id.clone()),
            DeviceRef::Num(num) => match table.by_num.get(num) {
                Some(key) if key.0 == *registry => key.clone(),
                _ => return Handed::NoConnection,
            },
        };
        let Some(holder) = table.by_id.get(&key) else {
            return Handed::NoConnection;
        };
        match holder.tx.try_send(control) {
            Ok(()) => Handed::Yes,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(device = %key.1, "a device connection's inbox is full; delivery dropped");
                Handed::InboxFull
            }
            // The connection is closing and has not detached yet.
            Err(mpsc::error::TrySendError::Closed(_)) => Handed::NoConnection,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> (RegistryName, DeviceId) {
        (
            RegistryName::parse("projects/my-project/locations/us-central1/registries/reg-1")
                .unwrap(),
            DeviceId::parse("dev-1").unwrap(),
        )
    }

    #[test]
    fn a_second_connection_replaces_the_first_and_the_first_cannot_detach_it() {
        let delivery = Delivery::default();
        let (registry, device) = names();
        let mut first = delivery.attach(&registry, &device, NumId(7));
        let mut second = delivery.attach(&registry, &device, NumId(7));
        assert!(matches!(first.inbox.try_recv(), Ok(Control::Replaced)));
        delivery.detach(&registry, &device, first.generation);
        assert!(delivery.is_connected(&registry, &device));

        delivery.config_changed(
            &registry,
            &DeviceRef::Num(NumId(7)),
            DeviceConfig::default(),
        );
        assert!(matches!(second.inbox.try_recv(), Ok(Control::Config(_))));
        delivery.detach(&registry, &device, second.generation);
        assert!(!delivery.is_connected(&registry, &device));
    }

    #[test]
    fn a_replacement_elsewhere_is_decided_by_the_claims_generation_once_known() {
        let delivery = Delivery::default();
        let (registry, device) = names();
        // Held here with generation 5: a newer claim elsewhere (6) closes it.
        let mut held = delivery.attach(&registry, &device, NumId(7));
        delivery.set_fleet_generation(&registry, &device, held.generation, 5);
        delivery.replaced_elsewhere(&registry, &device, 6);
        assert!(matches!(held.inbox.try_recv(), Ok(Control::Replaced)));

        // A reconnect here whose claim is still pending hears of claim 6: it waits, and its own
        // claim (7) turns out newest, so it stays.
        let mut again = delivery.attach(&registry, &device, NumId(7));
        delivery.replaced_elsewhere(&registry, &device, 6);
        assert!(
            again.inbox.try_recv().is_err(),
            "closed before its claim was known"
        );
        delivery.set_fleet_generation(&registry, &device, again.generation, 7);
        assert!(
            again.inbox.try_recv().is_err(),
            "the newest connection was closed"
        );

        // Had its claim been older (a slow store), the notice closes it once known.
        let mut slow = delivery.attach(&registry, &device, NumId(7));
        delivery.replaced_elsewhere(&registry, &device, 9);
        delivery.set_fleet_generation(&registry, &device, slow.generation, 8);
        assert!(matches!(slow.inbox.try_recv(), Ok(Control::Replaced)));

        // A claim the store could not record (0) yields to any claim elsewhere.
        let mut unrecorded = delivery.attach(&registry, &device, NumId(7));
        delivery.replaced_elsewhere(&registry, &device, 10);
        delivery.set_fleet_generation(&registry, &device, unrecorded.generation, 0);
        assert!(matches!(unrecorded.inbox.try_recv(), Ok(Control::Replaced)));
    }

    #[tokio::test]
    async fn a_command_gets_the_connections_answer_or_says_there_is_no_connection() {
        let delivery = Delivery::default();
        let (registry, device) = names();
        let by_id = DeviceRef::Id(device.clone());
        let send = |data: &'static [u8]| {
            delivery.send_command(&registry, &by_id, None, Bytes::from_static(data))
        };
        assert_eq!(send(b"x").await, Err(CommandFailure::NotConnected));

        let mut held = delivery.attach(&registry, &device, NumId(7));
        let connection = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(Control::Command(command)) = held.inbox.recv().await {
                seen.push((command.subfolder.clone(), command.data.clone()));
                let answer = match seen.len() {
                    1 => Ok(()),
                    2 => Err(CommandFailure::NotSubscribed),
                    // The third is dropped unanswered, as by a connection that closes.
                    _ => break,
                };
                let _ = command.done.send(answer);
            }
            seen
        });
        assert_eq!(send(b"one").await, Ok(()));
        assert_eq!(send(b"two").await, Err(CommandFailure::NotSubscribed));
        let third = delivery.send_command(
            &registry,
            &DeviceRef::Num(NumId(7)),
            Some("a/b".into()),
            Bytes::from_static(b"three"),
        );
        assert_eq!(third.await, Err(CommandFailure::ConnectionClosed));
        let seen = connection.await.unwrap();
        let data: Vec<&[u8]> = seen.iter().map(|(_, data)| &data[..]).collect();
        assert_eq!(data, [&b"one"[..], b"two", b"three"]);
        assert_eq!(seen[2].0.as_deref(), Some("a/b"));
        // The inbox is gone with the connection's task: nobody holds the device.
        assert_eq!(send(b"four").await, Err(CommandFailure::NotConnected));
    }
}
