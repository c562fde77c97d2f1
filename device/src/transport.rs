//! How the agent reaches the service: HTTPS (the [`IngestClient`], polled) or MQTT (the
//! [`MqttLink`], one connection the service pushes config and commands down). An enum rather
//! than a trait object: the set is closed (IoT Core had exactly two device protocols), and an
//! enum needs no boxed futures. Every failure is sorted into a [`Failure`] that tells the sender
//! what to do, the same way for both protocols.
//!
//! A gateway's readings of the devices behind it go over MQTT on the gateway's connection
//! (attached there), over HTTPS with IoT Core's `gatewayInfo`: signed by the device itself when
//! the settings hold its key, else by the gateway acting for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;

use shared::device_api::{CommandsResponse, ConfigResponse};

use crate::http::{ClientError, IngestClient, SignedBy};
use crate::mqtt::MqttLink;
use crate::token::TokenSource;

/// The devices behind this gateway, by id, with their own tokens when the settings hold their
/// keys.
pub type Children = Arc<HashMap<String, Option<TokenSource>>>;

/// The connection to the service.
#[derive(Debug)]
pub enum Transport {
    /// IoT Core's HTTP bridge protocol; the devices behind this gateway, if any.
    Https(IngestClient, Children),
    /// IoT Core's MQTT bridge protocol; the token is the connection's, so the `token` arguments
    /// below are not used.
    Mqtt(MqttLink),
}

/// What a failed call means for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Network trouble, 5xx or 429: retry later, no sooner than `after` if the server said so.
    #[error("{reason}")]
    Transient {
        /// What happened.
        reason: String,
        /// The server's `Retry-After`.
        after: Option<Duration>,
    },
    /// The token was refused as expired: sign a new one and retry at once.
    #[error("{reason}")]
    TokenExpired {
        /// The server's message.
        reason: String,
    },
    /// The token was refused for a time only a wrong device clock explains (issued in the
    /// future, or expired even when signed just now): retrying cannot help until the clock is
    /// set right.
    #[error("{reason}")]
    ClockWrong {
        /// The server's message.
        reason: String,
    },
    /// The device asked for a config version newer than the service has (a fresh registry
    /// forgot the newer ones): ask for the latest instead.
    #[error("{reason}")]
    ConfigVersionAhead {
        /// The server's message.
        reason: String,
    },
    /// This one message can never be accepted (malformed, too large): give it up.
    #[error("{reason}")]
    Rejected {
        /// The server's message.
        reason: String,
    },
    /// The device itself is refused (unknown, blocked, bad key, no topic): retrying cannot help
    /// until the owner or the operator fixes something.
    #[error("{reason}")]
    Refused {
        /// The server's message.
        reason: String,
        /// The server's `ErrorInfo` reason (`DEVICE_BLOCKED`, `BAD_SIGNATURE` …), when it sent
        /// one: what `iotcore-device doctor` reads to say what to fix.
        info_reason: Option<String>,
    },
}

impl Transport {
    /// Publishes one telemetry event of this device, or (`device`) of a device behind this
    /// gateway.
    pub async fn publish_event(
        &self,
        token: &str,
        device: Option<&str>,
        data: &[u8],
        sub_folder: Option<&str>,
    ) -> Result<(), Failure> {
        match (self, device) {
            (Self::Https(bridge, _), None) => bridge
                .publish_event(token, data, sub_folder)
                .await
                .map_err(classify),
            (Self::Https(bridge, children), Some(child)) => {
                publish_for(bridge, children, token, child, data, sub_folder).await
            }
            (Self::Mqtt(link), device) => link.publish_event(device, data, sub_folder).await,
        }
    }

    /// Reports the device state.
    pub async fn set_state(&self, token: &str, data: &[u8]) -> Result<(), Failure> {
        match self {
            Self::Https(bridge, _) => bridge.set_state(token, data).await.map_err(classify),
            Self::Mqtt(link) => link.set_state(data).await,
        }
    }

    /// Fetches the commands queued for the device, acknowledging those up to `ack`.
    pub async fn get_commands(
        &self,
        token: &str,
        ack: Option<u64>,
    ) -> Result<CommandsResponse, Failure> {
        match self {
            Self::Https(bridge, _) => bridge.get_commands(token, ack).await.map_err(classify),
            Self::Mqtt(_) => Err(pushed_over_mqtt("commands")),
        }
    }

    /// Fetches the latest config, given the version the device has.
    pub async fn get_config(&self, token: &str, local: u64) -> Result<ConfigResponse, Failure> {
        match self {
            Self::Https(bridge, _) => bridge.get_config(token, local).await.map_err(classify),
            Self::Mqtt(_) => Err(pushed_over_mqtt("the config")),
        }
    }
}

/// An event of `child` over HTTPS: signed with its own token when it has one (renewed when the
/// server says it expired), else with the gateway's `token`, acting for it.
async fn publish_for(
    bridge: &IngestClient,
    children: &Children,
    token: &str,
    child: &str,
    data: &[u8],
    sub_folder: Option<&str>,
) -> Result<(), Failure> {
    let Some(own) = children.get(child) else {
        return Err(Failure::Refused {
            reason: format!(
                "device `{child}` is not one of this gateway's devices: its readings stay in the \
                 spool until it is back in [[gateway.devices]]"
            ),
            info_reason: None,
        });
    };
    let Some(tokens) = own else {
        return bridge
            .publish_event_for(child, SignedBy::Gateway(token), data, sub_folder)
            .await
            .map_err(classify);
    };
    let own_token = tokens.token().map_err(|err| Failure::Refused {
        reason: format!("cannot sign a token for device `{child}`: {err}"),
        info_reason: None,
    })?;
    let sent = bridge
        .publish_event_for(child, SignedBy::Child(&own_token), data, sub_folder)
        .await
        .map_err(classify);
    if let Err(Failure::TokenExpired { .. }) = &sent {
        // The sender renews the gateway's token on this answer; the child's is renewed here.
        tokens.expired(&own_token);
    }
    sent
}

/// Over MQTT the service pushes config and commands; nothing asks for them.
fn pushed_over_mqtt(what: &str) -> Failure {
    Failure::Refused {
        reason: format!("over MQTT {what} is pushed by the service, not fetched"),
        info_reason: None,
    }
}

/// Sorts a bridge error by what retrying can do about it.
pub fn classify(err: ClientError) -> Failure {
    let reason = err.to_string();
    match err {
        ClientError::Unreachable { .. } | ClientError::BadAnswer { .. } => Failure::Transient {
            reason,
            after: None,
        },
        ClientError::Setup(_) => Failure::Refused {
            reason,
            info_reason: None,
        },
        ClientError::Refused {
            reason: why,
            http,
            retry_after,
            ..
        } => {
            // The ErrorInfo reason, not the message: messages are for people and may change.
            match why.as_deref() {
                Some("TOKEN_EXPIRED") => Failure::TokenExpired { reason },
                Some("TOKEN_ISSUED_IN_FUTURE") => Failure::ClockWrong { reason },
                Some("CONFIG_VERSION_AHEAD") => Failure::ConfigVersionAhead { reason },
                _ => by_status(http, reason, why, retry_after),
            }
        }
        ClientError::Http {
            status,
            retry_after,
            ..
        } => by_status(status, reason, None, retry_after),
    }
}

fn by_status(
    status: StatusCode,
    reason: String,
    info_reason: Option<String>,
    after: Option<Duration>,
) -> Failure {
    match status.as_u16() {
        408 | 429 | 500..=599 => Failure::Transient { reason, after },
        400 | 413 | 415 => Failure::Rejected { reason },
        401 | 403 | 404 | 409 | 412 => Failure::Refused {
            reason,
            info_reason,
        },
        _ => Failure::Transient { reason, after },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(http: u16, status: &'static str, message: &str) -> Failure {
        refused_for(http, status, None, message)
    }

    fn refused_for(http: u16, status: &'static str, why: Option<&str>, message: &str) -> Failure {
        classify(ClientError::Refused {
            status,
            reason: why.map(str::to_owned),
            message: message.to_owned(),
            http: StatusCode::from_u16(http).unwrap(),
            retry_after: Some(Duration::from_secs(3)),
        })
    }

    #[test]
    fn failures_are_sorted_by_what_retrying_can_do() {
        let busy = refused(429, "RESOURCE_EXHAUSTED", "slow down");
        assert_eq!(
            busy,
            Failure::Transient {
                reason: "RESOURCE_EXHAUSTED: slow down".into(),
                after: Some(Duration::from_secs(3))
            }
        );
        assert!(matches!(
            refused(503, "UNAVAILABLE", "pubsub down"),
            Failure::Transient { .. }
        ));
        assert!(matches!(
            refused_for(401, "UNAUTHENTICATED", Some("TOKEN_EXPIRED"), "expired"),
            Failure::TokenExpired { .. }
        ));
        assert!(matches!(
            refused(401, "UNAUTHENTICATED", "bad signature"),
            Failure::Refused { .. }
        ));
        assert!(matches!(
            refused(413, "INVALID_ARGUMENT", "too large"),
            Failure::Rejected { .. }
        ));
        assert!(matches!(
            refused(412, "FAILED_PRECONDITION", "no topic"),
            Failure::Refused { .. }
        ));
        let down = classify(ClientError::Unreachable {
            url: "http://x".into(),
            reason: "refused".into(),
        });
        assert!(matches!(down, Failure::Transient { after: None, .. }));
    }

    #[test]
    fn an_expired_token_is_told_by_the_error_info_reason_not_by_the_message() {
        let odd_words = "la clé a dépassé sa date; nothing here says the usual words";
        assert!(matches!(
            refused_for(401, "UNAUTHENTICATED", Some("TOKEN_EXPIRED"), odd_words),
            Failure::TokenExpired { .. }
        ));
        let misleading = "the token expired 14 min ago";
        assert!(matches!(
            refused_for(401, "UNAUTHENTICATED", Some("BAD_SIGNATURE"), misleading),
            Failure::Refused { .. }
        ));
        assert!(matches!(
            refused(401, "UNAUTHENTICATED", misleading),
            Failure::Refused { .. }
        ));
    }

    #[test]
    fn a_clock_ahead_is_told_by_the_error_info_reason_not_by_the_message() {
        let odd_words = "l'horloge avance; nothing here names the usual word";
        assert!(matches!(
            refused_for(
                401,
                "UNAUTHENTICATED",
                Some("TOKEN_ISSUED_IN_FUTURE"),
                odd_words
            ),
            Failure::ClockWrong { .. }
        ));
        let misleading = "the device clock looks ahead by 20 min";
        assert!(matches!(
            refused_for(401, "UNAUTHENTICATED", Some("BAD_SIGNATURE"), misleading),
            Failure::Refused { .. }
        ));
        assert!(matches!(
            refused(401, "UNAUTHENTICATED", misleading),
            Failure::Refused { .. }
        ));
    }

    #[test]
    fn a_config_version_ahead_is_told_by_the_error_info_reason_not_by_the_status() {
        let odd_words = "version inconnue; no status name in here";
        assert!(matches!(
            refused_for(400, "OUT_OF_RANGE", Some("CONFIG_VERSION_AHEAD"), odd_words),
            Failure::ConfigVersionAhead { .. }
        ));
        // Another refusal with the same status is still a lasting rejection.
        assert!(matches!(
            refused_for(
                400,
                "OUT_OF_RANGE",
                Some("SOMETHING_ELSE"),
                "local_version 4"
            ),
            Failure::Rejected { .. }
        ));
        assert!(matches!(
            refused(400, "OUT_OF_RANGE", "local_version 4 is newer"),
            Failure::Rejected { .. }
        ));
    }
}
