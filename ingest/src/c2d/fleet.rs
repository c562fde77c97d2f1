//! Cloud-to-device delivery across the fleet. Each instance records in the registry store which
//! device connections it holds (presence, under a lease it renews); the admin API, on whichever
//! instance it runs, looks the device up and reaches the holder over the delivery bus. A config
//! change or a change of a device's keys or blocked flag is told to every instance (each may
//! hold the connection, cached tokens or an HTTP long-poll of that device); a command goes to
//! the one instance that holds the device, which answers once the device has it. A device held
//! by this instance is reached directly, never through the bus.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use shared::resources::DeviceConfig;
use shared::{DeviceId, DeviceRef, NumId, RegistryName};
use tokio::sync::{mpsc, oneshot};

use super::bus::{Bus, Envelope, Note};
use super::{Attachment, CommandFailure, ConfigCache, Delivery};
use crate::auth::Authenticator;
use crate::registry::{Presence, RegistryStore, StoreResult};

/// How much longer than a connection's own command timeout the sender waits for the holder's
/// answer: the bus's latency both ways.
const ANSWER_MARGIN: Duration = Duration::from_secs(10);

/// What a fleet is made of.
#[derive(Debug)]
pub struct FleetParts {
    /// This instance's name in presence records and on the bus; unique in the fleet.
    pub instance: String,
    /// The connections of this process.
    pub delivery: Delivery,
    /// Where presence is recorded.
    pub registry: Arc<dyn RegistryStore>,
    /// Whose cached tokens a device change drops.
    pub auth: Authenticator,
    /// How to reach the other instances.
    pub bus: Arc<dyn Bus>,
    /// How long this instance's claims count without a renewal.
    pub lease: Duration,
    /// How long a connection waits for a command's PUBACK (the holder answers within it).
    pub command_timeout: Duration,
}

/// The fleet as this instance sees it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    parts: FleetParts,
    next_command: AtomicU64,
    /// Commands sent to other instances, awaiting their answer.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Result<(), CommandFailure>>>>,
}

impl Fleet {
    /// A fleet of these parts; [`Fleet::spawn`] starts its background work.
    pub fn new(parts: FleetParts) -> Self {
        Self {
            inner: Arc::new(Inner {
                parts,
                next_command: AtomicU64::new(1),
                waiting: Mutex::default(),
            }),
        }
    }

    /// A single instance with the in-process bus and default lease and timeouts, for tests and
    /// for embedding the admin API and bridge in another program.
    pub fn single(registry: Arc<dyn RegistryStore>, auth: Authenticator) -> Self {
        Self::single_with(registry, auth, ConfigCache::default())
    }

    /// [`Fleet::single`] keeping the devices' latest configs in `configs`.
    pub fn single_with(
        registry: Arc<dyn RegistryStore>,
        auth: Authenticator,
        configs: ConfigCache,
    ) -> Self {
        Self::new(FleetParts {
            instance: new_instance_id(),
            delivery: Delivery::new(configs),
            registry,
            auth,
            bus: Arc::new(super::bus::InProcess),
            lease: Duration::from_secs(30),
            command_timeout: Duration::from_secs(30),
        })
    }

    fn parts(&self) -> &FleetParts {
        &self.inner.parts
    }

    /// This instance's name.
    pub fn instance(&self) -> &str {
        &self.parts().instance
    }

    /// The connections of this process.
    pub fn delivery(&self) -> &Delivery {
        &self.parts().delivery
    }

    /// Renews this instance's lease until `stop` resolves, then ends it (its claims stop
    /// counting at once) and closes the bus; and handles what the bus brings in.
    pub fn spawn(
        &self,
        incoming: mpsc::Receiver<Envelope>,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let receiver = tokio::spawn(self.clone().receive_all(incoming));
        let fleet = self.clone();
        tokio::spawn(async move {
            let mut stop = std::pin::pin!(stop);
            let every = fleet.parts().lease / 3;
            loop {
                fleet.renew().await;
                tokio::select! {
                    () = &mut stop => break,
                    () = tokio::time::sleep(every) => {}
                }
            }
            if let Err(err) = fleet.parts().registry.end_instance(fleet.instance()).await {
                tracing::warn!(error = %err, "could not end this instance's presence lease; its claims lapse with it");
            }
            fleet.parts().bus.close().await;
            receiver.abort();
        })
    }

    async fn renew(&self) {
        let until = Timestamp::now() + self.parts().lease;
        if let Err(err) = self
            .parts()
            .registry
            .renew_instance(self.instance(), until)
            .await
        {
            tracing::warn!(error = %err, "could not renew this instance's presence lease; other instances may see its devices as disconnected");
        }
    }

    /// A device connected here: claims it in this process and in the fleet's presence records,
    /// and tells the instance that held it before, if another, to close that connection.
    pub async fn connected(
        &self,
        registry: &RegistryName,
        device: &DeviceId,
        num_id: NumId,
    ) -> Attachment {
        let mut attachment = self.delivery().attach(registry, device, num_id);
        let claimed = self
            .parts()
            .registry
            .claim_presence(num_id, self.instance(), Timestamp::now())
            .await;
        match claimed {
            Ok((generation, previous)) => {
                attachment.fleet_generation = generation;
                self.delivery().set_fleet_generation(
                    registry,
                    device,
                    attachment.generation,
                    generation,
                );
                if let Some(previous) = previous.filter(|p| p.instance != self.instance()) {
                    let note = Note::Replaced {
                        registry: registry.to_string(),
                        device: device.to_string(),
                        generation,
                    };
                    self.send(Some(previous.instance), note).await;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, %device, "could not record the device's presence; commands sent through other instances will not find it");
                // Unrecorded, it yields to any claim elsewhere, as before the store answered.
                self.delivery()
                    .set_fleet_generation(registry, device, attachment.generation, 0);
            }
        }
        attachment
    }

    /// The connection's subscriptions changed.
    pub async fn subscribed(
        &self,
        num_id: NumId,
        fleet_generation: u64,
        config: bool,
        commands: bool,
    ) {
        if fleet_generation == 0 {
            return;
        }
        let result = self
            .parts()
            .registry
            .set_presence_subscriptions(num_id, fleet_generation, config, commands)
            .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "could not record the connection's subscriptions");
        }
    }

    /// The connection closed: releases its claims (`(generation, fleet_generation)` of its
    /// [`Attachment`]), unless a newer connection holds the device.
    /// `store` is false at shutdown, when ending the lease releases every claim at once.
    pub async fn disconnected(
        &self,
        registry: &RegistryName,
        device: &DeviceId,
        num_id: NumId,
        (generation, fleet_generation): (u64, u64),
        store: bool,
    ) {
        self.delivery().detach(registry, device, generation);
        if store && fleet_generation != 0 {
            let released = self
                .parts()
                .registry
                .release_presence(num_id, fleet_generation)
                .await;
            if let Err(err) = released {
                tracing::warn!(error = %err, "could not release the device's presence; it lapses with this instance's lease");
            }
        }
    }

    /// The device's current claim, if any instance's live lease backs it (and, without a bus,
    /// only this instance's: another's is this process's before a restart).
    pub async fn presence(&self, num_id: NumId) -> StoreResult<Option<Presence>> {
        let found = self
            .parts()
            .registry
            .get_presence(num_id, Timestamp::now())
            .await?;
        let reachable = self.parts().bus.reaches_others();
        Ok(found.filter(|p| reachable || p.instance == self.instance()))
    }

    /// A device's config changed: pushed to its connection wherever it is.
    pub async fn config_changed(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        config: DeviceConfig,
    ) {
        self.delivery()
            .config_changed(registry, device, config.clone());
        let note = Note::ConfigChanged {
            registry: registry.to_string(),
            device: device.to_string(),
            config,
        };
        self.send(None, note).await;
    }

    /// A device's keys or blocked flag changed, or it was deleted: every instance drops its
    /// cached tokens, and its connection checks its token again.
    pub async fn device_changed(&self, registry: &RegistryName, device: &DeviceId) {
        self.parts().auth.invalidate_device(registry, device);
        self.delivery()
            .device_changed(registry, &DeviceRef::Id(device.clone()));
        let note = Note::DeviceChanged {
            registry: registry.to_string(),
            device: device.to_string(),
        };
        self.send(None, note).await;
    }

    /// Commands were queued for the device: its connection, here or on the instance holding
    /// it, reads its queue again. Best effort: a device that is not connected gets them when it
    /// next subscribes.
    pub async fn commands_queued(&self, registry: &RegistryName, device: &DeviceId, num_id: NumId) {
        if self.delivery().is_connected(registry, device) {
            self.delivery()
                .commands_queued(registry, &DeviceRef::Id(device.clone()));
            return;
        }
        let holder = match self.presence(num_id).await {
            Ok(Some(holder)) if holder.instance != self.instance() && holder.commands => holder,
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(error = %err, %device, "could not look up where the device is connected; its queued commands wait for its next subscription");
                return;
            }
        };
        let note = Note::CommandsQueued {
            registry: registry.to_string(),
            device: device.to_string(),
        };
        self.send(Some(holder.instance), note).await;
    }

    /// Sends a command to the device's connection, here or on the instance holding it, and
    /// waits until that says how it ended.
    pub async fn send_command(
        &self,
        registry: &RegistryName,
        device: &DeviceId,
        num_id: NumId,
        subfolder: Option<String>,
        data: Bytes,
    ) -> Result<(), CommandFailure> {
        let by_id = DeviceRef::Id(device.clone());
        if self.delivery().is_connected(registry, device) {
            return self
                .delivery()
                .send_command(registry, &by_id, subfolder, data)
                .await;
        }
        let holder = match self.presence(num_id).await {
            Ok(Some(holder)) => holder,
            Ok(None) => return Err(CommandFailure::NotConnected),
            Err(err) => {
                return Err(CommandFailure::Unavailable(format!(
                    "the registry store could not say where the device is connected: {err}"
                )));
            }
        };
        if holder.instance == self.instance() {
            // Recorded here, but the connection closed since.
            return Err(CommandFailure::NotConnected);
        }
        if !holder.commands {
            return Err(CommandFailure::NotSubscribed);
        }
        self.command_elsewhere(holder.instance, registry, device, subfolder, data)
            .await
    }

    async fn command_elsewhere(
        &self,
        instance: String,
        registry: &RegistryName,
        device: &DeviceId,
        subfolder: Option<String>,
        data: Bytes,
    ) -> Result<(), CommandFailure> {
        let id = self.inner.next_command.fetch_add(1, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        self.waiting().insert(id, done);
        let envelope = Envelope {
            from: self.instance().to_owned(),
            to: Some(instance),
            note: Note::Command {
                id,
                registry: registry.to_string(),
                device: device.to_string(),
                subfolder,
                data: data.to_vec(),
            },
        };
        if let Err(err) = self.parts().bus.send(&envelope).await {
            self.waiting().remove(&id);
            return Err(CommandFailure::Unavailable(err.to_string()));
        }
        let waited = self.parts().command_timeout + ANSWER_MARGIN;
        let outcome = tokio::time::timeout(waited, answer).await;
        self.waiting().remove(&id);
        match outcome {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) | Err(_) => Err(CommandFailure::NoAnswer { waited }),
        }
    }

    fn waiting(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<(), CommandFailure>>>> {
        self.inner
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends a note; a failure is logged: the bus is best effort for broadcasts, whose receivers
    /// also re-read the registry within their freshness bound.
    async fn send(&self, to: Option<String>, note: Note) {
        let envelope = Envelope {
            from: self.instance().to_owned(),
            to,
            note,
        };
        if let Err(err) = self.parts().bus.send(&envelope).await {
            tracing::warn!(error = %err, "a delivery-bus note was not sent");
        }
    }

    async fn receive_all(self, mut incoming: mpsc::Receiver<Envelope>) {
        while let Some(envelope) = incoming.recv().await {
            let for_me = envelope
                .to
                .as_deref()
                .is_none_or(|to| to == self.instance());
            if envelope.from == self.instance() || !for_me {
                continue;
            }
            self.receive(envelope);
        }
    }

    /// Acts on a note from another instance.
    fn receive(&self, envelope: Envelope) {
        let Envelope { from, note, .. } = envelope;
        let result = match note {
            Note::ConfigChanged {
                registry,
                device,
                config,
            } => parse_ref(&registry, &device).map(|(registry, device)| {
                self.delivery().config_changed(&registry, &device, config);
            }),
            Note::DeviceChanged { registry, device } => {
                parse_id(&registry, &device).map(|(registry, device)| {
                    self.parts().auth.invalidate_device(&registry, &device);
                    self.delivery()
                        .device_changed(&registry, &DeviceRef::Id(device));
                })
            }
            Note::Replaced {
                registry,
                device,
                generation,
            } => parse_id(&registry, &device).map(|(registry, device)| {
                self.delivery()
                    .replaced_elsewhere(&registry, &device, generation);
            }),
            Note::Command {
                id,
                registry,
                device,
                subfolder,
                data,
            } => parse_id(&registry, &device).map(|(registry, device)| {
                let fleet = self.clone();
                tokio::spawn(async move {
                    let outcome = fleet
                        .delivery()
                        .send_command(&registry, &DeviceRef::Id(device), subfolder, data.into())
                        .await;
                    fleet
                        .send(Some(from), Note::CommandDone { id, outcome })
                        .await;
                });
            }),
            Note::CommandsQueued { registry, device } => {
                parse_id(&registry, &device).map(|(registry, device)| {
                    self.delivery()
                        .commands_queued(&registry, &DeviceRef::Id(device));
                })
            }
            Note::CommandDone { id, outcome } => {
                if let Some(done) = self.waiting().remove(&id) {
                    let _ = done.send(outcome);
                }
                Ok(())
            }
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, "a delivery-bus note named no valid device; ignored");
        }
    }
}

fn parse_id(registry: &str, device: &str) -> Result<(RegistryName, DeviceId), shared::IdError> {
    Ok((RegistryName::parse(registry)?, DeviceId::parse(device)?))
}

fn parse_ref(registry: &str, device: &str) -> Result<(RegistryName, DeviceRef), shared::IdError> {
    Ok((RegistryName::parse(registry)?, DeviceRef::parse(device)?))
}

/// A fresh instance name: `ingest-` and 12 random hex digits, valid in a Pub/Sub subscription
/// name and unlikely to repeat across restarts.
pub fn new_instance_id() -> String {
    let mut bytes = [0u8; 6];
    // The system RNG failing is no reason not to start; the time is unique enough then.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        let nanos = Timestamp::now().as_nanosecond() as u64;
        bytes.copy_from_slice(&nanos.to_le_bytes()[..6]);
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("ingest-{hex}")
}
