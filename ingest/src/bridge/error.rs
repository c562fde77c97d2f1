//! Why the bridge refused a device message, in words a device owner can act on. Each variant
//! maps to one canonical status and one stable reason code (for metrics and debug logs); the
//! transports (HTTP now, MQTT later) turn them into their own answers.

use std::collections::BTreeMap;
use std::time::Duration;

use shared::Code;

use super::limits::Rate;
use crate::auth::AuthError;
use crate::registry::StoreError;
use crate::sink::SinkError;

/// A refused or failed device operation.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The token or the device was refused; the inner error names the cause.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The registry switched this protocol off.
    #[error(
        "the {protocol} bridge is switched off for registry `{registry}` ({field} is {state}); \
         an operator can switch it on with registries.patch ({field}: {enabled})"
    )]
    ProtocolDisabled {
        /// `HTTP` or `MQTT`.
        protocol: &'static str,
        /// The registry's full name.
        registry: String,
        /// The switch, e.g. `httpConfig.httpEnabledState`.
        field: &'static str,
        /// Its value now, e.g. `HTTP_DISABLED`.
        state: &'static str,
        /// The value that switches it on.
        enabled: &'static str,
    },
    /// A payload above its limit.
    #[error("the {what} payload is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// `event` or `state`.
        what: &'static str,
        /// Its decoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The device is over one of its rate limits.
    #[error(
        "device `{device}` sent more {what} than its limit of {rate} allows; retry in {retry}",
        retry = seconds(*retry_after)
    )]
    RateLimited {
        /// The device id.
        device: String,
        /// What is limited, e.g. `HTTP requests`.
        what: &'static str,
        /// The limit.
        rate: Rate,
        /// How long until the device may send again.
        retry_after: Duration,
    },
    /// The subfolder cannot be a Pub/Sub attribute.
    #[error("sub_folder: {0}")]
    BadSubfolder(String),
    /// No event notification config takes the event.
    #[error(
        "no event notification config of registry `{registry}` matches {which}, and none catches \
         all events; add one (registries.patch eventNotificationConfigs) with {fix}",
        which = subfolder.as_ref().map_or_else(|| "events without a subfolder".to_owned(), |s| format!("subfolder `{s}`")),
        fix = subfolder.as_ref().map_or_else(|| "an empty subfolderMatches".to_owned(), |s| format!("subfolderMatches `{s}` or an empty subfolderMatches"))
    )]
    NoRoute {
        /// The registry's full name.
        registry: String,
        /// The event's subfolder, if it had one.
        subfolder: Option<String>,
    },
    /// The device asked for a config version newer than any there is.
    #[error(
        "local_version {asked} is newer than the device's latest config version {latest}; send 0 \
         (or leave it out) to get the latest config"
    )]
    ConfigVersionAhead {
        /// The version the device says it has.
        asked: u64,
        /// The latest version stored (0: none yet).
        latest: u64,
    },
    /// Pub/Sub could not take the message now; nothing was accepted and the device should retry.
    #[error(
        "Pub/Sub is unreachable right now (topic {topic}); the message was not accepted, retry \
         later"
    )]
    SinkUnavailable {
        /// The topic.
        topic: String,
    },
    /// The local message file could not take the message (a full disk, a removed directory).
    #[error(
        "the service could not store the message (its message file cannot be written; the disk \
         may be full); the message was not accepted, retry later"
    )]
    SinkNotWritten {
        /// The topic.
        topic: String,
    },
    /// The registry routes to a topic that does not exist.
    #[error(
        "Pub/Sub topic {topic} does not exist, so the message was not accepted; an operator must \
         create the topic or fix the registry's notification config"
    )]
    TopicNotFound {
        /// The topic.
        topic: String,
    },
    /// Pub/Sub refused the message for a lasting reason (permissions, quota, size); retrying
    /// will not help until an operator acts. Pub/Sub's own words go to the log, not the device.
    #[error(
        "Pub/Sub refused the message for topic {topic}, so it was not accepted; retrying will not \
         help until an operator fixes it (the service log has Pub/Sub's reason)"
    )]
    SinkRejected {
        /// The topic.
        topic: String,
    },
    /// The registry store failed or no longer has the device.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BridgeError {
    /// The canonical status the device is answered with.
    pub fn code(&self) -> Code {
        match self {
            BridgeError::Auth(err) => err.code(),
            BridgeError::ProtocolDisabled { .. } => Code::PermissionDenied,
            BridgeError::TooLarge { .. } | BridgeError::BadSubfolder(_) => Code::InvalidArgument,
            BridgeError::RateLimited { .. } => Code::ResourceExhausted,
            BridgeError::NoRoute { .. } | BridgeError::TopicNotFound { .. } => {
                Code::FailedPrecondition
            }
            BridgeError::ConfigVersionAhead { .. } => Code::OutOfRange,
            BridgeError::SinkUnavailable { .. } | BridgeError::SinkNotWritten { .. } => {
                Code::Unavailable
            }
            BridgeError::SinkRejected { .. } => Code::Internal,
            BridgeError::Store(StoreError::NotFound(_)) => Code::NotFound,
            BridgeError::Store(StoreError::Backend(_) | StoreError::Unavailable(_)) => {
                Code::Unavailable
            }
            BridgeError::Store(_) => Code::Internal,
        }
    }

    /// A stable code for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            BridgeError::Auth(err) => err.reason(),
            BridgeError::ProtocolDisabled { .. } => "protocol_disabled",
            BridgeError::TooLarge { .. } => "too_large",
            BridgeError::RateLimited { .. } => "rate_limited",
            BridgeError::BadSubfolder(_) => "bad_subfolder",
            BridgeError::NoRoute { .. } => "no_route",
            BridgeError::ConfigVersionAhead { .. } => "config_version_ahead",
            BridgeError::SinkUnavailable { .. } => "pubsub_unavailable",
            BridgeError::SinkNotWritten { .. } => "storage_unavailable",
            BridgeError::TopicNotFound { .. } => "topic_not_found",
            BridgeError::SinkRejected { .. } => "pubsub_rejected",
            BridgeError::Store(StoreError::NotFound(_)) => "unknown_device",
            BridgeError::Store(_) => "store_error",
        }
    }

    /// The reason a device reads in the answer's `google.rpc.ErrorInfo`, SCREAMING_SNAKE as
    /// Google writes them; [`BridgeError::reason`] stays the metrics label.
    pub fn error_reason(&self) -> &'static str {
        match self {
            BridgeError::Auth(err) => err.error_reason(),
            BridgeError::ProtocolDisabled { .. } => "PROTOCOL_DISABLED",
            BridgeError::TooLarge { .. } => "PAYLOAD_TOO_LARGE",
            BridgeError::RateLimited { .. } => "RATE_LIMITED",
            BridgeError::BadSubfolder(_) => "BAD_SUBFOLDER",
            BridgeError::NoRoute { .. } => "NO_ROUTE",
            BridgeError::ConfigVersionAhead { .. } => "CONFIG_VERSION_AHEAD",
            BridgeError::SinkUnavailable { .. } => "PUBSUB_UNAVAILABLE",
            BridgeError::SinkNotWritten { .. } => "STORAGE_UNAVAILABLE",
            BridgeError::TopicNotFound { .. } => "TOPIC_NOT_FOUND",
            BridgeError::SinkRejected { .. } => "PUBSUB_REJECTED",
            BridgeError::Store(StoreError::NotFound(_)) => "UNKNOWN_DEVICE",
            BridgeError::Store(StoreError::Backend(_) | StoreError::Unavailable(_)) => {
                "REGISTRY_UNAVAILABLE"
            }
            BridgeError::Store(_) => "INTERNAL",
        }
    }

    /// Non-secret facts for the `ErrorInfo`'s metadata (device, registry, topic).
    pub fn error_metadata(&self) -> BTreeMap<String, String> {
        let one = |key: &str, value: &str| BTreeMap::from([(key.to_owned(), value.to_owned())]);
        match self {
            BridgeError::Auth(err) => err.error_metadata(),
            BridgeError::RateLimited { device, .. } => one("device", device),
            BridgeError::ProtocolDisabled { registry, .. }
            | BridgeError::NoRoute { registry, .. } => one("registry", registry),
            BridgeError::SinkUnavailable { topic }
            | BridgeError::SinkNotWritten { topic }
            | BridgeError::TopicNotFound { topic }
            | BridgeError::SinkRejected { topic } => one("topic", topic),
            BridgeError::ConfigVersionAhead { latest, .. } => {
                one("latestVersion", &latest.to_string())
            }
            BridgeError::TooLarge { .. } | BridgeError::BadSubfolder(_) | BridgeError::Store(_) => {
                BTreeMap::new()
            }
        }
    }

    /// Turns a sink failure into the device's answer, logging what the device is not told.
    pub(crate) fn from_sink(err: SinkError) -> Self {
        match err {
            SinkError::Unavailable { topic, detail } => {
                tracing::warn!(%topic, %detail, "Pub/Sub could not take a device message");
                BridgeError::SinkUnavailable { topic }
            }
            SinkError::NotWritten { topic, detail } => {
                tracing::error!(%topic, %detail, "the message file could not take a device message");
                BridgeError::SinkNotWritten { topic }
            }
            SinkError::TopicNotFound(topic) => BridgeError::TopicNotFound { topic },
            SinkError::Rejected { topic, detail } => {
                tracing::error!(%topic, %detail, "Pub/Sub refused a device message");
                BridgeError::SinkRejected { topic }
            }
        }
    }
}

/// `0.4 s`, `20 s`: enough precision to act on.
fn seconds(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 10.0 {
        format!("{:.1} s", (secs * 10.0).ceil() / 10.0)
    } else {
        format!("{} s", secs.ceil())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_cause_and_the_fix() {
        let err = BridgeError::NoRoute {
            registry: "projects/p/locations/l/registries/r".into(),
            subfolder: Some("alerts".into()),
        };
        let text = err.to_string();
        assert!(text.contains("subfolder `alerts`"), "{text}");
        assert!(text.contains("subfolderMatches `alerts`"), "{text}");
        let text = BridgeError::NoRoute {
            registry: "r".into(),
            subfolder: None,
        }
        .to_string();
        assert!(text.contains("without a subfolder"), "{text}");

        let text = BridgeError::RateLimited {
            device: "dev-1".into(),
            what: "HTTP requests",
            rate: Rate::per_minute(6000),
            retry_after: Duration::from_millis(1234),
        }
        .to_string();
        assert!(
            text.contains("more HTTP requests than its limit of 6000 per minute"),
            "{text}"
        );
        assert!(text.contains("retry in 1.3 s"), "{text}");
    }
}
