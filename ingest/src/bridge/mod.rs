//! The protocol-neutral core both device bridges drive. [`Bridge::admit`] proves a device for a
//! protocol (its token, the registry's `httpConfig` / `mqttConfig` switch, HTTP's per-device rate)
//! and hands back a [`DeviceSession`], on which events, state and config are carried out with IoT
//! Core's rules (routing by subfolder, the attributes pipelines read, payload sizes, the state
//! rate), each answered only after Pub/Sub has the message, so nothing is acknowledged and then
//! lost. Every refusal comes back as one [`Refusal`]: what the device is told is decided here,
//! once, and HTTP and MQTT only put it in their own words (a status, a CONNACK code).
//!
//! Bookkeeping (`lastEventTime` and friends, the last error) is coalesced in memory and written by
//! [`Bridge::spawn_activity_flusher`] at most once per device per interval; registries are read
//! through a cache of a few seconds (see [`Limits::registry_cache_ttl`]). Every refusal is counted
//! by reason, and one that happens after the device proved itself becomes its last error.

mod activity;
mod error;
mod gateway;
mod limits;
mod rate;
mod refusal;
mod registries;
mod routing;
mod session;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use shared::clock::Clock;
use shared::resources::{DeviceConfig, DeviceRegistry, HttpState, MqttState, RpcStatus};
use shared::{DeviceId, DeviceName, DeviceRef, RegistryName, TopicName};
use tokio::task::JoinHandle;

use self::activity::ActivityBook;
pub use self::activity::FlushReport;
pub use self::error::BridgeError;
pub use self::limits::{Limits, Rate};
pub(crate) use self::rate::Bucket;
use self::rate::RateLimiter;
pub use self::refusal::Refusal;
use self::registries::RegistryCache;
pub use self::routing::{MAX_SUBFOLDER_BYTES, event_topic, message_attributes};
pub use self::session::DeviceSession;
use crate::auth::{AuthError, AuthenticatedDevice, Authenticator};
use crate::c2d::ConfigCache;
use crate::registry::{Activity, QueuedCommand, RegistryStore};
use crate::sink::{Message, Sink, SinkError};
use crate::telemetry::Metrics;

/// How often bookkeeping is written when the caller has no reason to choose otherwise: at most
/// one registry write per device per minute, as the admin API documents.
pub const DEFAULT_ACTIVITY_FLUSH_INTERVAL: Duration = Duration::from_secs(60);

/// The device protocols, as metrics label them and registries switch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// IoT Core's HTTP bridge (`cloudiotdevice.googleapis.com/v1`).
    Http,
    /// MQTT 3.1.1, over TLS, plain TCP or WebSocket.
    Mqtt,
}

impl Protocol {
    /// `http` or `mqtt`: the metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Mqtt => "mqtt",
        }
    }
}

/// What a [`Bridge`] is built from.
#[derive(Debug)]
pub struct BridgeParts {
    /// The registry store: devices, configs, states, bookkeeping.
    pub registry: Arc<dyn RegistryStore>,
    /// The token checker (share it with the admin API so device changes invalidate tokens).
    pub auth: Authenticator,
    /// Where events and states are published.
    pub sink: Arc<dyn Sink>,
    /// The service's instruments.
    pub metrics: Metrics,
    /// Sizes, rates and cache lifetimes.
    pub limits: Limits,
    /// Where "now" comes from for token checks, the registry cache and the rate buckets:
    /// [`SystemClock`](shared::clock::SystemClock), or a clock a test moves by hand.
    pub clock: Arc<dyn Clock>,
    /// The devices' latest configs: the fleet's delivery's
    /// ([`Delivery::config_cache`](crate::c2d::Delivery::config_cache)), which config and
    /// device changes keep right.
    pub configs: ConfigCache,
}

/// The shared device operations. Cheap to clone; clones share caches, limits and bookkeeping.
#[derive(Debug, Clone)]
pub struct Bridge {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Arc<dyn RegistryStore>,
    auth: Authenticator,
    sink: Arc<dyn Sink>,
    metrics: Metrics,
    limits: Limits,
    clock: Arc<dyn Clock>,
    configs: ConfigCache,
    registries: RegistryCache,
    activity: ActivityBook,
    http_rate: RateLimiter,
    state_rate: RateLimiter,
}

impl Bridge {
    /// Builds the bridge. Start [`Bridge::spawn_activity_flusher`] next, or bookkeeping is only
    /// written by explicit [`Bridge::flush_activity`] calls.
    pub fn new(parts: BridgeParts) -> Self {
        let BridgeParts {
            registry,
            auth,
            sink,
            metrics,
            limits,
            clock,
            configs,
        } = parts;
        Self {
            inner: Arc::new(Inner {
                registries: RegistryCache::new(limits.registry_cache_ttl),
                activity: ActivityBook::default(),
                http_rate: RateLimiter::new(limits.http_requests),
                state_rate: RateLimiter::new(limits.state_updates),
                registry,
                auth,
                sink,
                metrics,
                limits,
                clock,
                configs,
            }),
        }
    }

    /// The bridge's clock: what a transport checks a token's times against.
    pub fn clock(&self) -> &dyn Clock {
        self.inner.clock.as_ref()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Lets a device in for `protocol` if `token` proves it is `name` at `now` (Unix seconds):
    /// the registry must have the protocol switched on, and over HTTP (where every request is
    /// admitted anew) the device must be within its request rate. A refused token, or a blocked
    /// device, becomes the named device's last error, as IoT Core showed it to operators.
    pub async fn admit(
        &self,
        protocol: Protocol,
        name: &DeviceName,
        token: &str,
        now: i64,
    ) -> Result<DeviceSession, Refusal> {
        let device = match self.inner.auth.authenticate(name, token, now).await {
            Ok(device) => device,
            Err(err) => return Err(self.refuse_unproven(protocol, name, err)),
        };
        let result = self.check_admission(protocol, &device).await;
        self.settle(protocol, &device, None, result)?;
        Ok(DeviceSession::new(self.clone(), device, protocol))
    }

    /// Counts a refused token and, when it names an existing device by id, keeps the cause as
    /// that device's last error (an unknown device has nowhere to keep it).
    fn refuse_unproven(&self, protocol: Protocol, name: &DeviceName, err: AuthError) -> Refusal {
        let keep = matches!(err, AuthError::Token(_) | AuthError::Blocked { .. });
        let refusal = Refusal::from(BridgeError::Auth(err));
        self.inner.metrics.refused(refusal.reason, protocol.label());
        if let (true, DeviceRef::Id(id)) = (keep, &name.device) {
            self.note_error(&name.registry, id, &refusal);
        }
        refusal
    }

    async fn check_admission(
        &self,
        protocol: Protocol,
        device: &AuthenticatedDevice,
    ) -> Result<(), BridgeError> {
        let registry = self.registry_of(device).await?;
        match protocol {
            Protocol::Http => {
                if registry.http_config.http_enabled_state == HttpState::HttpDisabled {
                    return Err(BridgeError::ProtocolDisabled {
                        protocol: "HTTP",
                        registry: device.registry.to_string(),
                        field: "httpConfig.httpEnabledState",
                        state: "HTTP_DISABLED",
                        enabled: "HTTP_ENABLED",
                    });
                }
                self.check_rate(&self.inner.http_rate, device, "HTTP requests")
            }
            Protocol::Mqtt => {
                if registry.mqtt_config.mqtt_enabled_state == MqttState::MqttDisabled {
                    return Err(BridgeError::ProtocolDisabled {
                        protocol: "MQTT",
                        registry: device.registry.to_string(),
                        field: "mqttConfig.mqttEnabledState",
                        state: "MQTT_DISABLED",
                        enabled: "MQTT_ENABLED",
                    });
                }
                Ok(())
            }
        }
    }

    /// Publishes a telemetry event to the topic its subfolder routes to, with IoT Core's
    /// attributes; returns once Pub/Sub has accepted it.
    #[tracing::instrument(target = "ingest::per_message", name = "publish_event", skip_all, fields(registry = %device.registry.registry, device = %device.id))]
    async fn publish_event(
        &self,
        protocol: Protocol,
        device: &AuthenticatedDevice,
        subfolder: Option<&str>,
        data: Vec<u8>,
    ) -> Result<(), Refusal> {
        let result = self.try_publish_event(device, subfolder, data).await;
        self.settle(protocol, device, Some("event"), result)
    }

    async fn try_publish_event(
        &self,
        device: &AuthenticatedDevice,
        subfolder: Option<&str>,
        data: Vec<u8>,
    ) -> Result<(), BridgeError> {
        let subfolder = checked_subfolder(subfolder)?;
        check_size("event", data.len(), self.inner.limits.max_event_bytes)?;
        let registry = self.registry_of(device).await?;
        let topic = event_topic(&registry, subfolder).ok_or_else(|| BridgeError::NoRoute {
            registry: device.registry.to_string(),
            subfolder: subfolder.map(str::to_owned),
        })?;
        let message = Message {
            data,
            attributes: message_attributes(device, subfolder),
        };
        self.publish(topic, message).await?;
        self.note(
            device,
            Activity {
                last_event_time: Some(Timestamp::now()),
                ..Activity::default()
            },
        );
        Ok(())
    }

    /// Stores a state report (the registry keeps the newest 10) and, when the registry has a
    /// state notification config, publishes it there too; returns once both are done.
    #[tracing::instrument(target = "ingest::per_message", name = "set_state", skip_all, fields(registry = %device.registry.registry, device = %device.id))]
    async fn set_state(
        &self,
        protocol: Protocol,
        device: &AuthenticatedDevice,
        data: Vec<u8>,
    ) -> Result<(), Refusal> {
        let result = self.try_set_state(device, data).await;
        self.settle(protocol, device, Some("state"), result)
    }

    async fn try_set_state(
        &self,
        device: &AuthenticatedDevice,
        data: Vec<u8>,
    ) -> Result<(), BridgeError> {
        check_size("state", data.len(), self.inner.limits.max_state_bytes)?;
        self.check_rate(&self.inner.state_rate, device, "state updates")?;
        let registry = self.registry_of(device).await?;
        let now = Timestamp::now();
        // Stored first: if publishing then fails the device retries, and a repeated state is
        // harmless where a published-but-unstored one would leave the admin API behind.
        self.inner
            .registry
            .record_state(&device.registry, &device_ref(device), data.clone(), now)
            .await?;
        if let Some(config) = &registry.state_notification_config {
            let message = Message {
                data,
                attributes: message_attributes(device, None),
            };
            self.publish(&config.pubsub_topic_name, message).await?;
        }
        self.note(
            device,
            Activity {
                last_state_time: Some(now),
                ..Activity::default()
            },
        );
        Ok(())
    }

    /// The config a device should run: the latest version, whatever `local_version` it has (0
    /// means it has none). A `local_version` above the latest is refused as out of range. Every
    /// device has version 1 from its creation; one without any config (made in Firestore before
    /// that rule) gets version 0 with empty data.
    #[tracing::instrument(target = "ingest::per_message", name = "config", skip_all, fields(registry = %device.registry.registry, device = %device.id))]
    async fn config(
        &self,
        protocol: Protocol,
        device: &AuthenticatedDevice,
        local_version: u64,
    ) -> Result<DeviceConfig, Refusal> {
        let result = self.try_config(device, local_version).await;
        self.settle(protocol, device, Some("config"), result)
    }

    async fn try_config(
        &self,
        device: &AuthenticatedDevice,
        local_version: u64,
    ) -> Result<DeviceConfig, BridgeError> {
        let cached = self
            .inner
            .configs
            .get(device.num_id, self.clock().instant())
            // A device holding a newer version than the cache (pushed to it through another
            // instance whose notice has not arrived yet) is answered from the store.
            .filter(|cached| cached.version >= local_version);
        let latest = match cached {
            Some(latest) => latest,
            None => self.read_latest_config(device).await?,
        };
        if local_version > latest.version {
            return Err(BridgeError::ConfigVersionAhead {
                asked: local_version,
                latest: latest.version,
            });
        }
        self.note(
            device,
            Activity {
                last_config_send_time: Some(Timestamp::now()),
                ..Activity::default()
            },
        );
        Ok(latest)
    }

    /// The latest config in the store, kept in the cache for the next fetch.
    async fn read_latest_config(
        &self,
        device: &AuthenticatedDevice,
    ) -> Result<DeviceConfig, BridgeError> {
        let ticket = self.inner.configs.ticket();
        let latest = self
            .inner
            .registry
            .list_config_versions(&device.registry, &device_ref(device), 1)
            .await?
            .into_iter()
            .next()
            .unwrap_or_default();
        self.inner.configs.keep(
            ticket,
            (&device.registry, &device.id, device.num_id),
            &latest,
            self.clock().instant(),
        );
        Ok(latest)
    }

    /// The device's queued commands still to deliver, oldest first, after recording that it
    /// has every command up to `ack` (an extension: commands sent with a `ttl` while the device
    /// was away).
    async fn pending_commands(
        &self,
        protocol: Protocol,
        device: &AuthenticatedDevice,
        ack: Option<u64>,
    ) -> Result<Vec<QueuedCommand>, Refusal> {
        let result = async {
            let store = &self.inner.registry;
            let now = self.clock().now();
            if let Some(up_to) = ack {
                store
                    .mark_commands_delivered(&device.registry, &device_ref(device), up_to, now)
                    .await?;
            }
            let mut kept = store
                .list_commands(&device.registry, &device_ref(device))
                .await?;
            kept.retain(|command| command.is_pending(now));
            Ok::<_, BridgeError>(kept)
        }
        .await;
        self.settle(protocol, device, None, result)
    }

    /// Counts a refusal the transport made itself before any device was proved (a missing
    /// token, a path it could not read).
    pub fn note_refusal(&self, protocol: Protocol, refusal: &Refusal) {
        self.inner.metrics.refused(refusal.reason, protocol.label());
        tracing::debug!(
            protocol = protocol.label(),
            status = refusal.code.name(),
            reason = refusal.reason,
            "device request refused"
        );
    }

    fn note_error(&self, registry: &RegistryName, device: &DeviceId, refusal: &Refusal) {
        let status = RpcStatus {
            code: refusal.code.rpc_code(),
            message: refusal.message.clone(),
        };
        self.inner.activity.note(
            registry,
            device,
            Activity {
                last_error: Some((Timestamp::now(), status)),
                ..Activity::default()
            },
        );
    }

    /// Writes all pending bookkeeping now, one registry write per device. Call it at shutdown
    /// (the flusher task does so itself when its shutdown signal fires).
    pub async fn flush_activity(&self) -> FlushReport {
        self.inner
            .activity
            .flush(self.inner.registry.as_ref())
            .await
    }

    /// How many devices have bookkeeping waiting for the next flush.
    pub fn pending_activity(&self) -> usize {
        self.inner.activity.pending()
    }

    /// Starts a task that flushes bookkeeping every `every` (see
    /// [`DEFAULT_ACTIVITY_FLUSH_INTERVAL`]) until `shutdown` resolves, then flushes once more and
    /// ends; await the handle to know the last flush is done.
    pub fn spawn_activity_flusher(
        &self,
        every: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let bridge = self.clone();
        // tokio's interval panics on zero; a few milliseconds is already far below any use.
        let every = every.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        bridge.flush_activity().await;
                    }
                    () = &mut shutdown => break,
                }
            }
            bridge.flush_activity().await;
        })
    }

    async fn registry_of(
        &self,
        device: &AuthenticatedDevice,
    ) -> Result<Arc<DeviceRegistry>, BridgeError> {
        let inner = &self.inner;
        Ok(inner
            .registries
            .get(
                inner.registry.as_ref(),
                &device.registry,
                inner.clock.instant(),
            )
            .await?)
    }

    fn check_rate(
        &self,
        limiter: &RateLimiter,
        device: &AuthenticatedDevice,
        what: &'static str,
    ) -> Result<(), BridgeError> {
        limiter
            .check(device.num_id, self.inner.clock.instant())
            .map_err(|retry_after| BridgeError::RateLimited {
                device: device.id.to_string(),
                what,
                rate: limiter.rate(),
                retry_after,
            })
    }

    /// Hands a message to the sink, timing it; `Ok` only once the destination accepted it.
    #[tracing::instrument(target = "ingest::per_message", name = "pubsub.publish", skip_all, fields(topic = %topic))]
    async fn publish(&self, topic: &TopicName, message: Message) -> Result<(), BridgeError> {
        let started = Instant::now();
        let result = self.inner.sink.publish(topic, message).await;
        let outcome = match &result {
            Ok(()) => "ok",
            Err(SinkError::Unavailable { .. } | SinkError::NotWritten { .. }) => "unavailable",
            Err(SinkError::TopicNotFound(_) | SinkError::Rejected { .. }) => "rejected",
        };
        self.inner
            .metrics
            .publish_latency(started.elapsed().as_secs_f64(), outcome);
        result.map_err(BridgeError::from_sink)
    }

    /// Counts the outcome of an operation: accepted by kind, or refused by reason (and kept as
    /// the device's last error); a refusal comes back in the words the device will hear.
    fn settle<T>(
        &self,
        protocol: Protocol,
        device: &AuthenticatedDevice,
        kind: Option<&'static str>,
        result: Result<T, BridgeError>,
    ) -> Result<T, Refusal> {
        match result {
            Ok(value) => {
                if let Some(kind) = kind {
                    self.inner.metrics.accepted(kind, protocol.label());
                }
                Ok(value)
            }
            Err(err) => {
                let refusal = Refusal::from(err);
                self.refused(protocol, device, &refusal);
                Err(refusal)
            }
        }
    }

    /// Counts a refusal of a proved device and keeps it as the device's last error.
    fn refused(&self, protocol: Protocol, device: &AuthenticatedDevice, refusal: &Refusal) {
        self.note_refusal(protocol, refusal);
        self.note_error(&device.registry, &device.id, refusal);
    }

    fn note(&self, device: &AuthenticatedDevice, mut activity: Activity) {
        if let Some(gateway) = &device.via_gateway {
            activity.last_accessed_gateway = Some((gateway.to_string(), Timestamp::now()));
        }
        self.inner
            .activity
            .note(&device.registry, &device.id, activity);
    }
}

fn device_ref(device: &AuthenticatedDevice) -> DeviceRef {
    DeviceRef::Id(device.id.clone())
}

/// An empty subfolder is no subfolder; one too long for a Pub/Sub attribute is refused.
fn checked_subfolder(subfolder: Option<&str>) -> Result<Option<&str>, BridgeError> {
    match subfolder.filter(|s| !s.is_empty()) {
        Some(s) if s.len() > MAX_SUBFOLDER_BYTES => Err(BridgeError::BadSubfolder(format!(
            "is {} bytes; a subfolder becomes a Pub/Sub attribute, which may be at most \
             {MAX_SUBFOLDER_BYTES} bytes",
            s.len()
        ))),
        other => Ok(other),
    }
}

fn check_size(what: &'static str, size: usize, limit: usize) -> Result<(), BridgeError> {
    if size > limit {
        return Err(BridgeError::TooLarge { what, size, limit });
    }
    Ok(())
}
