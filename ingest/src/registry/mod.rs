//! The device registry: registries, devices, their credentials, configs and states, behind one
//! async trait. SQLite (`sqlite`) is the embedded default; Firestore (`firestore`) is the store
//! that many Cloud Run instances share. Both pass one test suite,
//! so every method is one self-contained operation a remote document store can do on its own: no
//! transaction spans two calls, partial updates name only the fields they change, and config
//! updates carry an optimistic version check instead of a lock.

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::Timestamp;
pub use shared::device_api::QueuedCommand;
use shared::iam::Policy;
use shared::resources::{
    Device, DeviceConfig, DeviceCredential, DeviceRegistry, DeviceState, EventNotificationConfig,
    GatewayAuthMethod, HttpConfig, LogLevel, MqttConfig, RpcStatus, StateNotificationConfig,
};
use shared::{DeviceId, DeviceName, DeviceRef, LocationName, NumId, RegistryId, RegistryName};

pub mod firestore;
pub mod page;
pub mod sqlite;

/// What a store call can fail with. Each variant is an outcome the admin API maps to a status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named registry or device does not exist.
    #[error("{0} not found")]
    NotFound(Resource),
    /// A registry or device with this id exists already.
    #[error("{0} already exists")]
    AlreadyExists(Resource),
    /// The operation needs a different state, e.g. deleting a registry that still has devices.
    #[error("{0}")]
    FailedPrecondition(String),
    /// `versionToUpdate` named a version that is no longer the latest.
    #[error(
        "the config is at version {current}, not {expected}: someone changed it since you read it; read it again and retry"
    )]
    VersionMismatch {
        /// The version the caller expected to replace.
        expected: u64,
        /// The version the device is at now.
        current: u64,
    },
    /// The device's config changed less than [`MIN_CONFIG_INTERVAL`] ago.
    #[error(
        "{resource}'s config changed {ago:.1} s ago; a device's config may change once per second \
         (IoT Core's limit): retry in {wait:.1} s",
        ago = (MIN_CONFIG_INTERVAL - *retry_after).as_secs_f64(),
        wait = retry_after.as_secs_f64()
    )]
    ConfigTooSoon {
        /// The device.
        resource: Resource,
        /// How long until the next change is accepted.
        retry_after: std::time::Duration,
    },
    /// The device has [`MAX_QUEUED_COMMANDS`] commands waiting already.
    #[error(
        "{0} has {MAX_QUEUED_COMMANDS} queued commands waiting already; wait until it fetches them or they expire"
    )]
    QueueFull(Resource),
    /// A `setIamPolicy` carried an etag that is no longer the stored policy's.
    #[error(
        "{0}'s IAM policy changed since you read it (the etag differs): read it again, reapply your change and retry"
    )]
    PolicyChanged(Resource),
    /// A documented limit would be exceeded (bindings per gateway or per device); the message
    /// says which.
    #[error("{0}")]
    Limit(String),
    /// A page token that this store did not hand out.
    #[error("page token is not one this server returned")]
    BadPageToken,
    /// The store cannot take changes now, for a reason an operator can fix (its file was
    /// deleted); the message says which.
    #[error("{0}")]
    Unavailable(String),
    /// The store itself failed (disk, network, corruption); the source says how.
    #[error("registry store failure")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The registry or device a [`StoreError::NotFound`] or [`StoreError::AlreadyExists`] is about:
/// named in the message (`device `projects/…/devices/d``) and, by kind, in the admin API's
/// `ErrorInfo` reason (`DEVICE_NOT_FOUND`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A device registry.
    Registry(RegistryName),
    /// A device, by id or numeric id.
    Device(DeviceName),
}

impl Resource {
    /// The registry `name`.
    pub fn registry(name: &RegistryName) -> Self {
        Resource::Registry(name.clone())
    }

    /// The device `device` of `registry`.
    pub fn device(registry: &RegistryName, device: &DeviceRef) -> Self {
        Resource::Device(DeviceName {
            registry: registry.clone(),
            device: device.clone(),
        })
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Registry(name) => write!(f, "registry `{name}`"),
            Resource::Device(name) => write!(f, "device `{name}`"),
        }
    }
}

/// How often a device's config may change: once per second, IoT Core's documented limit.
pub const MIN_CONFIG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How long until the config after `latest` may be stored at `now`, if that is not yet: both
/// stores decide by this inside the step that stores the new version, so the limit holds across
/// instances. The version a device is created with is no change and does not count.
pub(crate) fn config_too_soon(
    latest: &DeviceConfig,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let changed = latest.cloud_update_time.filter(|_| latest.version > 1)?;
    let since = now.duration_since(changed).unsigned_abs();
    (now >= changed && since < MIN_CONFIG_INTERVAL).then(|| MIN_CONFIG_INTERVAL - since)
}

/// How many queued commands may wait for one device (Azure IoT Hub's device queue holds 50
/// too).
pub const MAX_QUEUED_COMMANDS: usize = 50;

/// How many finished commands (delivered or expired) are kept beside the pending ones, for the
/// operator's record; as many as config versions, since each may hold 256 KB.
pub const MAX_FINISHED_COMMANDS: usize = 10;

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Which page of a list to return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// The most items to return; the store caps it at [`PageRequest::MAX_SIZE`], and 0 means
    /// [`PageRequest::DEFAULT_SIZE`].
    pub size: usize,
    /// The `nextPageToken` of the previous page, if any.
    pub token: Option<String>,
}

impl PageRequest {
    /// The page size when the caller gives none.
    pub const DEFAULT_SIZE: usize = 1000;
    /// The largest page a store returns.
    pub const MAX_SIZE: usize = 10_000;

    /// The size to use: the default for 0, never above the maximum.
    pub fn effective_size(&self) -> usize {
        match self.size {
            0 => Self::DEFAULT_SIZE,
            n => n.min(Self::MAX_SIZE),
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items, ordered by id.
    pub items: Vec<T>,
    /// The token for the next page, `None` on the last one.
    pub next_page_token: Option<String>,
}

/// Restricts a device list to the given ids or numeric ids (either matches; empty lists mean
/// every device), and to at most one of IoT Core's `gatewayListOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Device ids to include.
    pub ids: Vec<DeviceId>,
    /// Numeric ids to include.
    pub num_ids: Vec<NumId>,
    /// `gatewayListOptions`: only gateways, only the devices bound to a gateway, or only the
    /// gateways a device is bound to.
    pub gateway: Option<GatewayFilter>,
}

impl DeviceFilter {
    /// Whether the id lists leave every device in.
    pub fn all_ids(&self) -> bool {
        self.ids.is_empty() && self.num_ids.is_empty()
    }
}

/// One of `gatewayListOptions`' filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayFilter {
    /// `gatewayType`: gateways (`true`) or the other devices (`false`).
    IsGateway(bool),
    /// `associationsGatewayId`: the devices bound to this gateway.
    BoundTo(DeviceRef),
    /// `associationsDeviceId`: the gateways this device is bound to.
    GatewaysOf(DeviceRef),
}

/// How many devices may be bound to one gateway (IoT Core's limit).
pub const MAX_DEVICES_PER_GATEWAY: usize = 10_000;
/// How many gateways one device may be bound to (IoT Core's limit).
pub const MAX_GATEWAYS_PER_DEVICE: usize = 10;

/// Why `device` cannot be bound to `gateway`, both as stored: the gateway must be one, the
/// device must not. Both stores decide by this.
pub(crate) fn check_binding(
    registry: &RegistryName,
    gateway: &Device,
    device: &Device,
) -> StoreResult<()> {
    let is_gateway = |d: &Device| d.gateway_config.as_ref().is_some_and(|g| g.is_gateway());
    let name = |d: &Device| {
        let id = d.id.as_ref().map_or("?", |id| id.as_str());
        format!("{registry}/devices/{id}")
    };
    if !is_gateway(gateway) {
        return Err(StoreError::FailedPrecondition(format!(
            "device `{}` is not a gateway (gatewayConfig.gatewayType GATEWAY); devices are bound to gateways",
            name(gateway)
        )));
    }
    if is_gateway(device) {
        return Err(StoreError::FailedPrecondition(format!(
            "`{}` is a gateway, and a gateway cannot be bound to a gateway",
            name(device)
        )));
    }
    Ok(())
}

/// The refusal to delete a device that still has bindings: `bound` devices bound to it (a
/// gateway) or `gateways` it is bound to. Both stores say it this way.
pub(crate) fn still_bound(
    registry: &RegistryName,
    device: &DeviceRef,
    bound: usize,
    gateways: usize,
) -> StoreError {
    let name = format!("{registry}/devices/{device}");
    let count = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let why = if bound > 0 {
        format!(
            "gateway `{name}` has {} bound to it",
            count(bound, "device", "devices")
        )
    } else {
        format!(
            "device `{name}` is bound to {}",
            count(gateways, "gateway", "gateways")
        )
    };
    StoreError::FailedPrecondition(format!(
        "{why}; unbind them first (:unbindDeviceFromGateway), as IoT Core required"
    ))
}

/// The registry fields a patch may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistryUpdate {
    /// New telemetry routing.
    pub event_notification_configs: Option<Vec<EventNotificationConfig>>,
    /// New state routing (`Some(None)` clears it).
    pub state_notification_config: Option<Option<StateNotificationConfig>>,
    /// MQTT on or off.
    pub mqtt_config: Option<MqttConfig>,
    /// HTTP on or off.
    pub http_config: Option<HttpConfig>,
    /// Logging detail (`Some(None)` clears it).
    pub log_level: Option<Option<LogLevel>>,
}

/// The device fields a patch may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceUpdate {
    /// The whole new credential list (already checked by the caller).
    pub credentials: Option<Vec<DeviceCredential>>,
    /// Blocked or not.
    pub blocked: Option<bool>,
    /// The whole new metadata map.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Logging detail (`Some(None)` clears it).
    pub log_level: Option<Option<LogLevel>>,
    /// How a gateway's devices authenticate (`Some(None)` clears it).
    pub gateway_auth_method: Option<Option<GatewayAuthMethod>>,
}

/// Device bookkeeping the bridges record; each `Some` field overwrites the stored one. Callers
/// coalesce these, so a store sees at most one per device per minute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    /// The last MQTT PINGREQ or PUBLISH.
    pub last_heartbeat_time: Option<Timestamp>,
    /// The last telemetry event.
    pub last_event_time: Option<Timestamp>,
    /// The last state update.
    pub last_state_time: Option<Timestamp>,
    /// The last config acknowledgement.
    pub last_config_ack_time: Option<Timestamp>,
    /// The config version that acknowledgement was for: it gets `last_config_ack_time` as its
    /// `deviceAckTime` (nothing happens when that version is no longer kept).
    pub config_ack_version: Option<u64>,
    /// The last config sent to the device.
    pub last_config_send_time: Option<Timestamp>,
    /// The last error and when it happened.
    pub last_error: Option<(Timestamp, RpcStatus)>,
    /// The gateway (by id) the device last spoke through, and when.
    pub last_accessed_gateway: Option<(String, Timestamp)>,
}

/// Which MQTT connection holds a device, as the registry store records it for the fleet: the
/// instance that holds it, since when, what it subscribed to, and the claim's generation. The
/// record counts only while its instance's lease is live, so an instance that died stops
/// counting on its own once its lease runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The `ingest serve` instance holding the connection.
    pub instance: String,
    /// When the connection was established.
    pub since: Timestamp,
    /// Grows with every claim of this device, across the fleet: a claim's owner can update or
    /// release only its own generation, so a slow or stale instance never erases a newer one.
    pub generation: u64,
    /// Subscribed to `/devices/{d}/config`.
    pub config: bool,
    /// Subscribed to `/devices/{d}/commands/#`.
    pub commands: bool,
}

/// The registry store. Every method is one atomic operation on the store; none relies on a
/// transaction spanning calls.
#[async_trait]
pub trait RegistryStore: Send + Sync + std::fmt::Debug {
    /// Whether the store can take changes now (`/readyz`): `Unavailable` naming the cause when
    /// its file is gone or it does not answer.
    async fn check_ready(&self) -> StoreResult<()>;

    /// Creates a registry (its `id` is set and valid, its fields validated). Fails with
    /// `AlreadyExists` when the id is taken in that location.
    async fn create_registry(
        &self,
        parent: &LocationName,
        registry: DeviceRegistry,
    ) -> StoreResult<DeviceRegistry>;

    /// Reads a registry, with `id` and `name` filled in.
    async fn get_registry(&self, name: &RegistryName) -> StoreResult<DeviceRegistry>;

    /// Lists the registries of a location, ordered by id.
    async fn list_registries(
        &self,
        parent: &LocationName,
        page: &PageRequest,
    ) -> StoreResult<Page<DeviceRegistry>>;

    /// Changes the named fields of a registry and returns it as stored.
    async fn update_registry(
        &self,
        name: &RegistryName,
        update: RegistryUpdate,
    ) -> StoreResult<DeviceRegistry>;

    /// Deletes an empty registry, with its IAM policy; `FailedPrecondition` when it still has
    /// devices.
    async fn delete_registry(&self, name: &RegistryName) -> StoreResult<()>;

    /// The registry's IAM policy as last stored, or `None` when none was ever set.
    async fn get_iam_policy(&self, name: &RegistryName) -> StoreResult<Option<Policy>>;

    /// Stores `policy` (validated, with its new etag) as the registry's IAM policy, when
    /// `expected_etag` is `None` or the stored policy's etag (the empty policy's when none was
    /// set), else `PolicyChanged`.
    async fn set_iam_policy(
        &self,
        name: &RegistryName,
        policy: Policy,
        expected_etag: Option<Vec<u8>>,
    ) -> StoreResult<Policy>;

    /// Creates a device (its `id` set and valid, credentials checked) and allocates its numeric
    /// id, unique across the whole store. Every device starts with config version 1 at `now`:
    /// `device.config`'s data, or empty, as in IoT Core. Returns the device as stored.
    async fn create_device(
        &self,
        registry: &RegistryName,
        device: Device,
        now: Timestamp,
    ) -> StoreResult<Device>;

    /// Reads a device by id or numeric id, with `id`, `name`, `numId`, its latest config and
    /// state filled in. This is the token check's one read.
    async fn get_device(&self, registry: &RegistryName, device: &DeviceRef) -> StoreResult<Device>;

    /// Lists a registry's devices, ordered by id.
    async fn list_devices(
        &self,
        registry: &RegistryName,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Device>>;

    /// When each device of the registry was last heard from
    /// ([`shared::fleet_health::last_seen`]), in no particular order: what the fleet-health
    /// summary counts. This default pages through [`RegistryStore::list_devices`]; a store that
    /// can read only the three times, as SQLite does, reads less.
    async fn last_seen_times(
        &self,
        registry: &RegistryName,
    ) -> StoreResult<Vec<Option<Timestamp>>> {
        let mut times = Vec::new();
        let mut page = PageRequest {
            size: PageRequest::MAX_SIZE,
            token: None,
        };
        loop {
            let listed = self
                .list_devices(registry, &DeviceFilter::default(), &page)
                .await?;
            times.extend(listed.items.iter().map(shared::fleet_health::last_seen));
            match listed.next_page_token {
                Some(token) => page.token = Some(token),
                None => return Ok(times),
            }
        }
    }

    /// Changes the named fields of a device and returns it as stored.
    async fn update_device(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        update: DeviceUpdate,
    ) -> StoreResult<Device>;

    /// Deletes a device with its configs and states; `FailedPrecondition` (see [`still_bound`])
    /// while it is a gateway with devices bound to it or a device bound to a gateway.
    async fn delete_device(&self, registry: &RegistryName, device: &DeviceRef) -> StoreResult<()>;

    /// Binds `device` to `gateway` (each by id or numeric id) in `registry`, after
    /// [`check_binding`]; binding again changes nothing. `Limit` beyond
    /// [`MAX_DEVICES_PER_GATEWAY`] or [`MAX_GATEWAYS_PER_DEVICE`].
    async fn bind_device_to_gateway(
        &self,
        registry: &RegistryName,
        gateway: &DeviceRef,
        device: &DeviceRef,
    ) -> StoreResult<()>;

    /// Removes the binding of `device` to `gateway`; `FailedPrecondition` when there is none.
    async fn unbind_device_from_gateway(
        &self,
        registry: &RegistryName,
        gateway: &DeviceRef,
        device: &DeviceRef,
    ) -> StoreResult<()>;

    /// Whether the device `device` is bound to the gateway `gateway`, both by numeric id, in
    /// `registry`: the bridges' check when a gateway speaks for a device.
    async fn is_bound(
        &self,
        registry: &RegistryName,
        gateway: NumId,
        device: NumId,
    ) -> StoreResult<bool>;

    /// Stores a new config version (the latest plus one) when `version_to_update` is 0 or equals
    /// the latest version, else `VersionMismatch`. Keeps the newest 10 versions.
    async fn modify_config(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        version_to_update: u64,
        data: Vec<u8>,
        now: Timestamp,
    ) -> StoreResult<DeviceConfig>;

    /// The kept config versions, newest first, at most `limit` (0 means all kept).
    async fn list_config_versions(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        limit: usize,
    ) -> StoreResult<Vec<DeviceConfig>>;

    /// Stores a state report as the latest state; keeps the newest 10.
    async fn record_state(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        data: Vec<u8>,
        now: Timestamp,
    ) -> StoreResult<DeviceState>;

    /// The kept states, newest first, at most `limit` (0 means all kept).
    async fn list_states(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        limit: usize,
    ) -> StoreResult<Vec<DeviceState>>;

    /// Records bookkeeping times and the last error.
    async fn record_activity(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        activity: Activity,
    ) -> StoreResult<()>;

    /// Records that `instance` now holds the MQTT connection of the device `device` (by numeric
    /// id) since `now`, with no subscriptions yet. Returns the new claim's generation and the
    /// claim it replaced, if any (live or not: the caller decides whom to tell).
    async fn claim_presence(
        &self,
        device: NumId,
        instance: &str,
        now: Timestamp,
    ) -> StoreResult<(u64, Option<Presence>)>;

    /// Sets what the claim `generation` has subscribed to; nothing happens when a newer claim
    /// holds the device or the claim was released.
    async fn set_presence_subscriptions(
        &self,
        device: NumId,
        generation: u64,
        config: bool,
        commands: bool,
    ) -> StoreResult<()>;

    /// Ends the claim `generation` (the connection closed); nothing happens when a newer claim
    /// holds the device. The generation is kept, so the next claim's is larger.
    async fn release_presence(&self, device: NumId, generation: u64) -> StoreResult<()>;

    /// The device's current claim, if there is one whose instance's lease is live at `now`.
    async fn get_presence(&self, device: NumId, now: Timestamp) -> StoreResult<Option<Presence>>;

    /// Extends `instance`'s lease to `until`: its claims count until then.
    async fn renew_instance(&self, instance: &str, until: Timestamp) -> StoreResult<()>;

    /// Ends `instance`'s lease at once (a clean shutdown): none of its claims count any more.
    async fn end_instance(&self, instance: &str) -> StoreResult<()>;

    /// Keeps a command for the device until it is delivered or `expire_time` passes, with the
    /// next id of the device's queue. `QueueFull` when [`MAX_QUEUED_COMMANDS`] are pending at
    /// `now`; finished ones (delivered or expired) beyond [`MAX_FINISHED_COMMANDS`] are dropped,
    /// oldest first.
    async fn queue_command(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        command: NewCommand,
        now: Timestamp,
    ) -> StoreResult<QueuedCommand>;

    /// The device's kept commands, pending and finished, oldest first.
    async fn list_commands(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
    ) -> StoreResult<Vec<QueuedCommand>>;

    /// Records that the device has every command up to id `up_to`: the undelivered ones get
    /// `deliver_time` `now`. Returns how many it marked.
    async fn mark_commands_delivered(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        up_to: u64,
        now: Timestamp,
    ) -> StoreResult<usize>;
}

/// A command to queue: what [`RegistryStore::queue_command`] keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommand {
    /// Sent to `/devices/{d}/commands/{subfolder}` when given.
    pub subfolder: Option<String>,
    /// The command's bytes.
    pub data: Vec<u8>,
    /// When it stops being delivered.
    pub expire_time: Timestamp,
}

/// What a queue keeps when a command is added at `now` to `kept` (oldest first): the ids of the
/// finished commands to drop so that, with the new one, at most [`MAX_FINISHED_COMMANDS`]
/// finished ones remain beside the pending, or `None` when the pending ones fill the queue. Both
/// stores decide by this. The newest command is never dropped, so the largest kept id is the
/// largest ever given and the next id is one more.
pub(crate) fn commands_to_drop(kept: &[QueuedCommand], now: Timestamp) -> Option<Vec<u64>> {
    let (pending, finished): (Vec<_>, Vec<_>) = kept.iter().partition(|c| c.is_pending(now));
    if pending.len() >= MAX_QUEUED_COMMANDS {
        return None;
    }
    let excess = finished.len().saturating_sub(MAX_FINISHED_COMMANDS);
    Some(finished.iter().take(excess).map(|c| c.id).collect())
}

/// The id the next command queued after `kept` gets.
pub(crate) fn next_command_id(kept: &[QueuedCommand]) -> u64 {
    kept.iter().map(|c| c.id).max().unwrap_or(0) + 1
}

/// Whether a `setIamPolicy` that expects `expected` may replace `stored`: both stores decide by
/// this inside the step that writes.
pub(crate) fn etag_matches(stored: Option<&Policy>, expected: Option<&[u8]>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    match stored {
        Some(policy) => policy.etag == expected,
        None => crate::iam::empty_policy().etag == expected,
    }
}

/// The `name` a device carries in every answer: IoT Core named a device by its numeric id
/// (`…/devices/4086446103292110`), whichever id the call used; both spellings of the path are
/// accepted on input.
pub(crate) fn device_resource_name(registry: &RegistryName, num_id: u64) -> String {
    format!("{registry}/devices/{num_id}")
}

/// The name of registry `id` in `parent`.
pub(crate) fn registry_in(parent: &LocationName, id: RegistryId) -> RegistryName {
    RegistryName {
        project: parent.project.clone(),
        location: parent.location.clone(),
        registry: id,
    }
}

/// The name a registry to create gets: its parent and its id, which the caller must have set.
pub(crate) fn name_to_create(
    parent: &LocationName,
    registry: &DeviceRegistry,
) -> StoreResult<RegistryName> {
    let id = registry
        .id
        .clone()
        .ok_or_else(|| StoreError::FailedPrecondition("a registry to create needs an id".into()))?;
    Ok(registry_in(parent, id))
}

/// A fresh numeric id candidate: uniformly random in [1, 2^53), 53 random bits with zero redrawn,
/// so JavaScript tooling never rounds one. Stores check it is free before taking it.
pub(crate) fn random_num_id() -> StoreResult<u64> {
    loop {
        let mut bytes = [0u8; 8];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| StoreError::Backend("the system random number generator failed".into()))?;
        let candidate = u64::from_le_bytes(bytes) & NumId::MAX_ALLOCATED;
        if candidate != 0 {
            return Ok(candidate);
        }
    }
}
