//! The registry store for Cloud Run: Firestore in native mode, which many ingest instances share,
//! costs nothing at rest and scales with the fleet.
//!
//! Documents mirror resource names, so a path in the console reads like the API:
//!
//! ```text
//! projects/{p}/locations/{l}/registries/{r}                  the registry, as its API JSON
//!   …/devices/{d}                                            the device with its latest config
//!                                                            and state inline, plus `stateSeq`,
//!                                                            and its gateway bindings: `gateways`
//!                                                            (its gateways' numeric ids) or, on
//!                                                            a gateway, `boundDevices` (a count)
//!   …/devices/{d}/configs/{version, 20 digits}               the kept config versions
//!   …/devices/{d}/states/{sequence, 20 digits}               the kept state reports
//!   …/devices/{d}/commands/{id, 20 digits}                   queued commands (`commands`)
//! numIds/{n}                                                 claims numeric id n store-wide
//! presence/{n}                                               which instance holds device n's
//!                                                            MQTT connection (`presence`)
//! instances/{id}                                             each instance's lease
//! ```
//!
//! The hot read — a device's credentials and blocked flag — is one document read by id, or one
//! single-result query on `numId` by numeric id. Every write is one atomic commit whose
//! preconditions do the checking: a numeric id is claimed by creating `numIds/{n}` (a collision
//! fails the commit, and a new id is drawn), and a config version by creating its `configs`
//! document together with the device's `config` field, so of two updates that read the same
//! latest version exactly one commits. Deleting a registry or a device reads what it removes in a
//! transaction, and creating a device reads its registry in one, so no write can slip in between
//! a check and the change it guards. Binding a device to a gateway, or unbinding it, reads and
//! writes both device documents in one transaction (`gateways`).

mod commands;
mod devices;
mod gateways;
mod history;
mod layout;
mod presence;
mod registries;
mod rpc;
mod value;

use async_trait::async_trait;
use firestore::{FirestoreDb, FirestoreDbOptions};
use jiff::Timestamp;
use shared::iam::Policy;
use shared::resources::{Device, DeviceConfig, DeviceRegistry, DeviceState};
use shared::{DeviceRef, LocationName, NumId, RegistryName};

use self::rpc::Rpc;
use super::{
    Activity, DeviceFilter, DeviceUpdate, NewCommand, Page, PageRequest, Presence, QueuedCommand,
    RegistryStore, RegistryUpdate, StoreError, StoreResult,
};

/// Which Firestore database to use, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirestoreSettings {
    /// The Google Cloud project holding the database.
    pub project: String,
    /// The database id, `(default)` for the project's default database.
    pub database: String,
    /// `HOST:PORT` of a Firestore emulator; it is then reached over plain HTTP without
    /// credentials. `None` reaches Google's service with the Application Default Credentials.
    pub emulator_host: Option<String>,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The client could not be built (no credentials found, a bad endpoint).
    #[error("cannot set up the Firestore client")]
    Client(#[from] firestore::errors::FirestoreError),
    /// The database did not answer a first read (wrong database id, no permission, unreachable).
    #[error(
        "Firestore database `projects/{project}/databases/{database}` did not answer a test read; \
         check that it exists (native mode) and that the service account has roles/datastore.user"
    )]
    Probe {
        /// The project.
        project: String,
        /// The database id.
        database: String,
        /// What went wrong.
        #[source]
        source: StoreError,
    },
}

/// The Firestore registry store. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct FirestoreStore {
    rpc: Rpc,
    /// Taken by every bind and unbind of this process, so they run one at a time. Each is a
    /// transaction that reads and writes its gateway's `boundDevices`; concurrent ones on one
    /// gateway all hold the read and wait to write, which the Firestore emulator breaks only by
    /// its lock timeout (20 racing binds on one gateway: 16 failed after 11 s), and Firestore by
    /// aborting the losers, each a rerun of the five a transaction gets. Binding is a rare admin
    /// call, so queueing costs nothing; binds of other instances still race, and the
    /// transaction keeps them correct.
    bindings: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl FirestoreStore {
    /// Connects to the database and checks with one read that it answers.
    pub async fn open(settings: &FirestoreSettings) -> Result<Self, OpenError> {
        let options = FirestoreDbOptions::new(settings.project.clone())
            .with_database_id(settings.database.clone());
        let db = match &settings.emulator_host {
            // The emulator wants no credentials; looking up Google ones on a laptop would fail.
            Some(host) => {
                let options = options.with_firebase_api_url(format!("http://{host}"));
                let anonymous = google_cloud_auth::credentials::anonymous::Builder::new().build();
                FirestoreDb::with_options_auth(options, anonymous).await?
            }
            None => FirestoreDb::with_options(options).await?,
        };
        let store = Self {
            rpc: Rpc::new(db),
            bindings: std::sync::Arc::default(),
        };
        // A document that never exists: reading it proves the database and the permissions.
        let probe = format!("projects/{}/probe/ingest-startup", settings.project);
        if let Err(source) = store.rpc.get(&probe, None).await {
            return Err(OpenError::Probe {
                project: settings.project.clone(),
                database: settings.database.clone(),
                source,
            });
        }
        Ok(store)
    }
}

/// Wraps any failure of Firestore itself.
fn backend(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::Backend(error.into())
}

#[async_trait]
impl RegistryStore for FirestoreStore {
    async fn check_ready(&self) -> StoreResult<()> {
        // One read of a document that need not exist: the database answers, within the RPC
        // timeout, or the instance is not ready.
        match self.rpc.get("readiness/probe", None).await {
            Ok(_) => Ok(()),
            Err(err) => Err(StoreError::Unavailable(format!(
                "the Firestore registry does not answer: {err}"
            ))),
        }
    }

    async fn create_registry(
        &self,
        parent: &LocationName,
        registry: DeviceRegistry,
    ) -> StoreResult<DeviceRegistry> {
        registries::create(&self.rpc, parent, registry).await
    }

    async fn get_registry(&self, name: &RegistryName) -> StoreResult<DeviceRegistry> {
        registries::get(&self.rpc, name).await
    }

    async fn list_registries(
        &self,
        parent: &LocationName,
        page: &PageRequest,
    ) -> StoreResult<Page<DeviceRegistry>> {
        registries::list(&self.rpc, parent, page).await
    }

    async fn update_registry(
        &self,
        name: &RegistryName,
        update: RegistryUpdate,
    ) -> StoreResult<DeviceRegistry> {
        registries::update(&self.rpc, name, update).await
    }

    async fn delete_registry(&self, name: &RegistryName) -> StoreResult<()> {
        registries::delete(&self.rpc, name).await
    }

    async fn bind_device_to_gateway(
        &self,
        registry: &RegistryName,
        gateway: &DeviceRef,
        device: &DeviceRef,
    ) -> StoreResult<()> {
        let _one_at_a_time = self.bindings.lock().await;
        gateways::bind(&self.rpc, registry, gateway, device).await
    }

    async fn unbind_device_from_gateway(
        &self,
        registry: &RegistryName,
        gateway: &DeviceRef,
        device: &DeviceRef,
    ) -> StoreResult<()> {
        let _one_at_a_time = self.bindings.lock().await;
        gateways::unbind(&self.rpc, registry, gateway, device).await
    }

    async fn is_bound(
        &self,
        registry: &RegistryName,
        gateway: NumId,
        device: NumId,
    ) -> StoreResult<bool> {
        gateways::is_bound(&self.rpc, registry, gateway, device).await
    }

    async fn get_iam_policy(&self, name: &RegistryName) -> StoreResult<Option<Policy>> {
        registries::get_policy(&self.rpc, name).await
    }

    async fn set_iam_policy(
        &self,
        name: &RegistryName,
        policy: Policy,
        expected_etag: Option<Vec<u8>>,
    ) -> StoreResult<Policy> {
        registries::set_policy(&self.rpc, name, policy, expected_etag).await
    }

    async fn create_device(
        &self,
        registry: &RegistryName,
        device: Device,
        now: Timestamp,
    ) -> StoreResult<Device> {
        devices::create(&self.rpc, registry, device, now).await
    }

    async fn get_device(&self, registry: &RegistryName, device: &DeviceRef) -> StoreResult<Device> {
        let found = layout::resolve(&self.rpc, registry, device, None).await?;
        layout::from_doc(&self.rpc, registry, found)
    }

    async fn list_devices(
        &self,
        registry: &RegistryName,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Device>> {
        devices::list(&self.rpc, registry, filter, page).await
    }

    async fn update_device(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        update: DeviceUpdate,
    ) -> StoreResult<Device> {
        devices::update(&self.rpc, registry, device, update).await
    }

    async fn delete_device(&self, registry: &RegistryName, device: &DeviceRef) -> StoreResult<()> {
        devices::delete(&self.rpc, registry, device).await
    }

    async fn modify_config(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        version_to_update: u64,
        data: Vec<u8>,
        now: Timestamp,
    ) -> StoreResult<DeviceConfig> {
        history::modify_config(&self.rpc, registry, device, version_to_update, data, now).await
    }

    async fn list_config_versions(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        limit: usize,
    ) -> StoreResult<Vec<DeviceConfig>> {
        history::list(&self.rpc, registry, device, layout::Kind::Configs, limit).await
    }

    async fn record_state(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        data: Vec<u8>,
        now: Timestamp,
    ) -> StoreResult<DeviceState> {
        history::record_state(&self.rpc, registry, device, data, now).await
    }

    async fn list_states(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        limit: usize,
    ) -> StoreResult<Vec<DeviceState>> {
        history::list(&self.rpc, registry, device, layout::Kind::States, limit).await
    }

    async fn record_activity(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        activity: Activity,
    ) -> StoreResult<()> {
        let doc_path = devices::record_activity(&self.rpc, registry, device, &activity).await?;
        match (activity.config_ack_version, activity.last_config_ack_time) {
            (Some(version), Some(time)) => {
                history::record_config_ack(&self.rpc, &doc_path, version, time).await
            }
            _ => Ok(()),
        }
    }

    async fn claim_presence(
        &self,
        device: NumId,
        instance: &str,
        now: Timestamp,
    ) -> StoreResult<(u64, Option<Presence>)> {
        presence::claim(&self.rpc, device.0, instance, now).await
    }

    async fn set_presence_subscriptions(
        &self,
        device: NumId,
        generation: u64,
        config: bool,
        commands: bool,
    ) -> StoreResult<()> {
        presence::subscriptions(&self.rpc, device.0, generation, config, commands).await
    }

    async fn release_presence(&self, device: NumId, generation: u64) -> StoreResult<()> {
        presence::release(&self.rpc, device.0, generation).await
    }

    async fn get_presence(&self, device: NumId, now: Timestamp) -> StoreResult<Option<Presence>> {
        presence::get(&self.rpc, device.0, now).await
    }

    async fn renew_instance(&self, instance: &str, until: Timestamp) -> StoreResult<()> {
        presence::renew(&self.rpc, instance, until).await
    }

    async fn end_instance(&self, instance: &str) -> StoreResult<()> {
        presence::end(&self.rpc, instance).await
    }

    async fn queue_command(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        command: NewCommand,
        now: Timestamp,
    ) -> StoreResult<QueuedCommand> {
        commands::queue(&self.rpc, registry, device, command, now).await
    }

    async fn list_commands(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
    ) -> StoreResult<Vec<QueuedCommand>> {
        commands::list(&self.rpc, registry, device).await
    }

    async fn mark_commands_delivered(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        up_to: u64,
        now: Timestamp,
    ) -> StoreResult<usize> {
        commands::mark_delivered(&self.rpc, registry, device, up_to, now).await
    }
}
