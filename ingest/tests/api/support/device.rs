//! Test helpers for the HTTP device bridge: a [`DeviceApp`] that serves the admin API and the
//! device API on two `127.0.0.1:0` listeners over one fresh SQLite file and a `FileSink` in a
//! temporary directory, typed helpers for the device calls (tokens come from `testkit::Signer`).
//!
//! The store (SQLite, or one the test gives) is wrapped in a [`CountingStore`] so tests can
//! see which calls reached it. The activity flusher runs with a long interval, so a test decides when
//! bookkeeping is written by calling `bridge.flush_activity()`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ingest::auth::Authenticator;
use ingest::bridge::{Bridge, BridgeParts, Limits};
use ingest::c2d::{ConfigCache, Fleet};
use ingest::http::admin::{self, AdminAccess, AdminState};
use ingest::http::device::LongPoll;
use ingest::registry::sqlite::SqliteStore;
use ingest::registry::{
    Activity, DeviceFilter, DeviceUpdate, NewCommand, Page, PageRequest, Presence, QueuedCommand,
    RegistryStore, RegistryUpdate, StoreResult,
};
use ingest::sink::Sink;
use ingest::sink::file::FileSink;
use ingest::telemetry::Metrics;
use jiff::Timestamp;
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};
use shared::clock::{Clock, SystemClock};
use shared::iam::Policy;
use shared::resources::{Device, DeviceConfig, DeviceRegistry, DeviceState};
use shared::{DeviceRef, LocationName, NumId, RegistryName};
use tempfile::TempDir;

use super::{PROJECT, REGION, TestApp, answer};
pub use testkit::Signer;

/// The admin API and the device API over one store and one file sink.
pub struct DeviceApp {
    /// The admin API (its `create_registry`, `get`, `patch` … helpers work as usual).
    pub admin: TestApp,
    /// `http://127.0.0.1:PORT/v1/projects/demo-project/locations/us-central1` on the device port.
    pub device_base: String,
    /// The bridge behind the device API.
    pub bridge: Bridge,
    /// Counts the store calls the bridge's bookkeeping makes.
    pub store: Arc<CountingStore>,
    /// The JSON-lines file the sink writes.
    pub sink_path: PathBuf,
    /// How the admin API reaches devices' MQTT connections (an MQTT test serves them).
    pub fleet: Fleet,
}

impl DeviceApp {
    /// Default limits, except that registry reads are not cached, so a test sees an admin change
    /// at once.
    pub async fn spawn() -> Self {
        Self::spawn_with(Limits {
            registry_cache_ttl: Duration::ZERO,
            ..Limits::default()
        })
        .await
    }

    /// Spawns both APIs with the given limits.
    pub async fn spawn_with(limits: Limits) -> Self {
        Self::spawn_with_sink(limits, None).await
    }

    /// Spawns both APIs with the given limits and sink (`None`: a `FileSink` at `sink_path`).
    pub async fn spawn_with_sink(limits: Limits, sink: Option<Arc<dyn Sink>>) -> Self {
        let dir = TempDir::new().unwrap();
        let sqlite = SqliteStore::open(dir.path().join("registry.db"))
            .await
            .unwrap();
        Self::spawn_on(
            Arc::new(sqlite),
            limits,
            sink,
            None,
            Arc::new(SystemClock),
            dir,
        )
        .await
    }

    /// Spawns both APIs over `store`, trusting cached tokens for `freshness_secs` (`None`: until
    /// they expire), the bridge reading the time from `clock`; `dir` holds the sink file and
    /// lives as long as the app.
    pub async fn spawn_on(
        store: Arc<dyn RegistryStore>,
        limits: Limits,
        sink: Option<Arc<dyn Sink>>,
        freshness_secs: Option<u64>,
        clock: Arc<dyn Clock>,
        dir: TempDir,
    ) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = ingest::telemetry::init(ingest::telemetry::LogFormat::Text);
        }
        let store = Arc::new(CountingStore::new(store));
        let registry: Arc<dyn RegistryStore> = store.clone();
        let mut auth = Authenticator::new(registry.clone(), 1000);
        if let Some(secs) = freshness_secs {
            auth = auth.with_freshness(secs);
        }
        let sink_path = dir.path().join("messages.jsonl");
        let sink = match sink {
            Some(sink) => sink,
            None => Arc::new(FileSink::open(&sink_path).await.unwrap()),
        };
        // Configs are cached as long as tokens are trusted, as `ingest serve` does.
        let configs = freshness_secs.map_or_else(ConfigCache::default, |secs| {
            ConfigCache::new(Duration::from_secs(secs))
        });
        let fleet = Fleet::single_with(registry.clone(), auth.clone(), configs);
        let bridge = Bridge::new(BridgeParts {
            registry: registry.clone(),
            auth: auth.clone(),
            sink,
            metrics: Metrics::default(),
            limits,
            clock,
            configs: fleet.delivery().config_cache(),
        });
        bridge.spawn_activity_flusher(Duration::from_secs(3600), std::future::pending());
        let admin_base = serve(admin::router(AdminState {
            registry: registry.clone(),
            auth: auth.clone(),
            access: AdminAccess::Loopback,
            fleet: fleet.clone(),
        }))
        .await;
        let long_poll = LongPoll::new(fleet.delivery().config_waiters(), Duration::from_secs(30));
        // The device listener as `ingest serve` runs it, but idle connections are kept for as
        // long as a test may pause between calls (its own head deadline is 10 s).
        let app = ingest::http::device::service(bridge.clone(), long_poll, axum::Router::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let device_base = base_url(listener.local_addr().unwrap());
        let options = ingest::http::serve::ServeOptions {
            head_timeout: Duration::from_secs(300),
            ..Default::default()
        };
        tokio::spawn(ingest::http::serve::serve(
            listener,
            app,
            options,
            std::future::pending(),
        ));
        let admin = TestApp {
            base: admin_base,
            client: reqwest::Client::new(),
            registry,
            auth,
            _dir: dir,
        };
        Self {
            admin,
            device_base,
            bridge,
            store,
            sink_path,
            fleet,
        }
    }

    /// The device API URL of `path` (below the location, e.g. `/registries/r/devices/d:setState`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.device_base)
    }

    /// `POST {path}:publishEvent` with a JSON body.
    pub async fn publish_event(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.post_json(token, &format!("{path}:publishEvent"), body)
            .await
    }

    /// `POST {path}:setState` with a JSON body.
    pub async fn set_state(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.post_json(token, &format!("{path}:setState"), body)
            .await
    }

    /// `GET {path}/commands{query}` (query with its `?`, or empty).
    pub async fn get_commands(&self, token: &str, path: &str, query: &str) -> (StatusCode, Value) {
        self.get_as_device(token, &format!("{path}/commands{query}"))
            .await
    }

    /// `GET {path}/config{query}` (query with its `?`, or empty).
    pub async fn get_config(&self, token: &str, path: &str, query: &str) -> (StatusCode, Value) {
        self.get_as_device(token, &format!("{path}/config{query}"))
            .await
    }

    async fn get_as_device(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let request = self
            .admin
            .client
            .get(self.url(path))
            .header(AUTHORIZATION, format!("Bearer {token}"));
        answer(request.send().await.unwrap()).await
    }

    async fn post_json(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let request = self
            .admin
            .client
            .post(self.url(path))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .json(&body);
        answer(request.send().await.unwrap()).await
    }

    /// A POST built by the test (headers, raw body), answered as status and JSON.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        answer(request.send().await.unwrap()).await
    }

    /// A POST to `path` (with its `:method`) and nothing set yet, for tests that craft headers.
    pub fn raw_post(&self, path: &str) -> reqwest::RequestBuilder {
        self.admin.client.post(self.url(path))
    }

    /// Every message the sink has written so far, in order.
    pub fn sink_messages(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.sink_path).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The device as the admin API shows it.
    pub async fn device(&self, registry: &str, device: &str) -> Value {
        let (status, body) = self
            .admin
            .get(&format!("/registries/{registry}/devices/{device}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Creates a registry with the given event notification configs (pairs of subfolder match
    /// and topic id) and, if given, a state topic.
    pub async fn create_registry_routed(
        &self,
        id: &str,
        events: &[(&str, &str)],
        state_topic: Option<&str>,
    ) -> Value {
        let configs: Vec<Value> = events
            .iter()
            .map(|(matches, topic)| {
                json!({"subfolderMatches": matches, "pubsubTopicName": topic_name(topic)})
            })
            .collect();
        let mut body = json!({"id": id, "eventNotificationConfigs": configs});
        if let Some(topic) = state_topic {
            body["stateNotificationConfig"] = json!({"pubsubTopicName": topic_name(topic)});
        }
        let (status, created) = self.admin.post("/registries", body).await;
        assert_eq!(status, StatusCode::OK, "{created}");
        created
    }
}

/// `projects/demo-project/topics/{topic}`.
pub fn topic_name(topic: &str) -> String {
    format!("projects/{PROJECT}/topics/{topic}")
}

/// The device path below the location: `/registries/{r}/devices/{d}`.
pub fn device_path(registry: &str, device: &str) -> String {
    format!("/registries/{registry}/devices/{device}")
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    base_url(addr)
}

fn base_url(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}/v1/projects/{PROJECT}/locations/{REGION}")
}

/// A registry store that counts the calls reaching it, by method, and passes every call through
/// to the real store.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn RegistryStore>,
    calls: Mutex<BTreeMap<&'static str, usize>>,
}

impl CountingStore {
    fn new(inner: Arc<dyn RegistryStore>) -> Self {
        Self {
            inner,
            calls: Mutex::default(),
        }
    }

    fn count(&self, method: &'static str) {
        *self.calls.lock().unwrap().entry(method).or_default() += 1;
    }

    /// How many calls of each method reached the store so far.
    pub fn calls(&self) -> BTreeMap<&'static str, usize> {
        self.calls.lock().unwrap().clone()
    }

    /// How many `record_activity` calls reached the store.
    pub fn activity_writes(&self) -> usize {
        self.calls().get("record_activity").copied().unwrap_or(0)
    }
}

#[async_trait]
impl RegistryStore for CountingStore {
    async fn check_ready(&self) -> StoreResult<()> {
        self.inner.check_ready().await
    }

    async fn create_registry(
        &self,
        parent: &LocationName,
        registry: DeviceRegistry,
    ) -> StoreResult<DeviceRegistry> {
        self.count("create_registry");
        self.inner.create_registry(parent, registry).await
    }

    async fn get_registry(&self, name: &RegistryName) -> StoreResult<DeviceRegistry> {
        self.count("get_registry");
        self.inner.get_registry(name).await
    }

    async fn list_registries(
        &self,
        parent: &LocationName,
        page: &PageRequest,
    ) -> StoreResult<Page<DeviceRegistry>> {
        self.count("list_registries");
        self.inner.list_registries(parent, page).await
    }

    async fn update_registry(
        &self,
        name: &RegistryName,
        update: RegistryUpdate,
    ) -> StoreResult<DeviceRegistry> {
        self.count("update_registry");
        self.inner.update_registry(name, update).await
    }

    async fn delete_registry(&self, name: &RegistryName) -> StoreResult<()> {
        self.count("delete_registry");
        self.inner.delete_registry(name).await
    }

    async fn bind_device_to_gateway(
        &self,
        registry: &RegistryName,
        gateway: &DeviceRef,
        device: &DeviceRef,
    ) -> StoreResult<()> {
        self.count("bind_device_to_gateway");
        self.inner
            .bind_device_to_gateway(registry, gateway, device)
            .await
    }

    async fn unbind_device_from_gateway(
        &self,
        registry: &RegistryName,
        gateway: &DeviceRef,
        device: &DeviceRef,
    ) -> StoreResult<()> {
        self.count("unbind_device_from_gateway");
        self.inner
            .unbind_device_from_gateway(registry, gateway, device)
            .await
    }

    async fn is_bound(
        &self,
        registry: &RegistryName,
        gateway: NumId,
        device: NumId,
    ) -> StoreResult<bool> {
        self.count("is_bound");
        self.inner.is_bound(registry, gateway, device).await
    }

    async fn get_iam_policy(&self, name: &RegistryName) -> StoreResult<Option<Policy>> {
        self.count("get_iam_policy");
        self.inner.get_iam_policy(name).await
    }

    async fn set_iam_policy(
        &self,
        name: &RegistryName,
        policy: Policy,
        expected_etag: Option<Vec<u8>>,
    ) -> StoreResult<Policy> {
        self.count("set_iam_policy");
        self.inner.set_iam_policy(name, policy, expected_etag).await
    }

    async fn create_device(
        &self,
        registry: &RegistryName,
        device: Device,
        now: Timestamp,
    ) -> StoreResult<Device> {
        self.count("create_device");
        self.inner.create_device(registry, device, now).await
    }

    async fn get_device(&self, registry: &RegistryName, device: &DeviceRef) -> StoreResult<Device> {
        self.count("get_device");
        self.inner.get_device(registry, device).await
    }

    async fn list_devices(
        &self,
        registry: &RegistryName,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Device>> {
        self.count("list_devices");
        self.inner.list_devices(registry, filter, page).await
    }

    async fn update_device(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        update: DeviceUpdate,
    ) -> StoreResult<Device> {
        self.count("update_device");
        self.inner.update_device(registry, device, update).await
    }

    async fn delete_device(&self, registry: &RegistryName, device: &DeviceRef) -> StoreResult<()> {
        self.count("delete_device");
        self.inner.delete_device(registry, device).await
    }

    async fn modify_config(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        version_to_update: u64,
        data: Vec<u8>,
        now: Timestamp,
    ) -> StoreResult<DeviceConfig> {
        self.count("modify_config");
        self.inner
            .modify_config(registry, device, version_to_update, data, now)
            .await
    }

    async fn list_config_versions(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        limit: usize,
    ) -> StoreResult<Vec<DeviceConfig>> {
        self.count("list_config_versions");
        self.inner
            .list_config_versions(registry, device, limit)
            .await
    }

    async fn record_state(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        data: Vec<u8>,
        now: Timestamp,
    ) -> StoreResult<DeviceState> {
        self.count("record_state");
        self.inner.record_state(registry, device, data, now).await
    }

    async fn list_states(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        limit: usize,
    ) -> StoreResult<Vec<DeviceState>> {
        self.count("list_states");
        self.inner.list_states(registry, device, limit).await
    }

    async fn record_activity(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        activity: Activity,
    ) -> StoreResult<()> {
        self.count("record_activity");
        self.inner.record_activity(registry, device, activity).await
    }

    async fn claim_presence(
        &self,
        device: NumId,
        instance: &str,
        now: Timestamp,
    ) -> StoreResult<(u64, Option<Presence>)> {
        self.count("claim_presence");
        self.inner.claim_presence(device, instance, now).await
    }

    async fn set_presence_subscriptions(
        &self,
        device: NumId,
        generation: u64,
        config: bool,
        commands: bool,
    ) -> StoreResult<()> {
        self.count("set_presence_subscriptions");
        self.inner
            .set_presence_subscriptions(device, generation, config, commands)
            .await
    }

    async fn release_presence(&self, device: NumId, generation: u64) -> StoreResult<()> {
        self.count("release_presence");
        self.inner.release_presence(device, generation).await
    }

    async fn get_presence(&self, device: NumId, now: Timestamp) -> StoreResult<Option<Presence>> {
        self.count("get_presence");
        self.inner.get_presence(device, now).await
    }

    async fn renew_instance(&self, instance: &str, until: Timestamp) -> StoreResult<()> {
        self.count("renew_instance");
        self.inner.renew_instance(instance, until).await
    }

    async fn end_instance(&self, instance: &str) -> StoreResult<()> {
        self.count("end_instance");
        self.inner.end_instance(instance).await
    }

    async fn queue_command(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        command: NewCommand,
        now: Timestamp,
    ) -> StoreResult<QueuedCommand> {
        self.count("queue_command");
        self.inner
            .queue_command(registry, device, command, now)
            .await
    }

    async fn list_commands(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
    ) -> StoreResult<Vec<QueuedCommand>> {
        self.count("list_commands");
        self.inner.list_commands(registry, device).await
    }

    async fn mark_commands_delivered(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        up_to: u64,
        now: Timestamp,
    ) -> StoreResult<usize> {
        self.count("mark_commands_delivered");
        self.inner
            .mark_commands_delivered(registry, device, up_to, now)
            .await
    }
}
