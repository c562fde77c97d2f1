//! What a device is told when the bridge says no, decided once for every protocol: a canonical
//! status, a stable reason code, a message naming the cause in words a device owner can act on,
//! and when to come back. HTTP turns it into Google's JSON error body (and a status, a
//! `Retry-After`); MQTT into a CONNACK code, a message on the device's `errors` topic and its
//! last error. Failures of the store or of Pub/Sub are logged here, once, with their cause chain;
//! the device hears only what it can act on.

use std::time::Duration;

use shared::{Code, ErrorInfo};

use super::error::BridgeError;
use crate::auth::AuthError;
use crate::registry::StoreError;
use crate::telemetry::ErrorChain;

/// A refusal, ready for any transport to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The canonical status.
    pub code: Code,
    /// A stable reason code for metrics and logs (`expired`, `rate_limited`, `too_large` …).
    pub reason: &'static str,
    /// The cause, for people.
    pub message: String,
    /// When the device may try again, if it was told to wait.
    pub retry_after: Option<Duration>,
    /// The machine-readable reason (`google.rpc.ErrorInfo`) a device acts on; none for an
    /// internal error, which tells nothing. Boxed: refusals travel in `Result`s on the hot path.
    pub info: Option<Box<ErrorInfo>>,
}

impl Refusal {
    /// A refusal with no retry hint; its `ErrorInfo` reason is `reason` in capitals.
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            retry_after: None,
            info: Some(Box::new(ErrorInfo::new(
                reason.to_ascii_uppercase(),
                Default::default(),
            ))),
        }
    }

    /// The `ErrorInfo` reason, or the metrics reason in capitals when there is none.
    pub fn error_type(&self) -> String {
        self.info.as_ref().map_or_else(
            || self.reason.to_ascii_uppercase(),
            |info| info.reason.clone(),
        )
    }

    /// Whether resending the same message could ever succeed (a payload over its limit cannot).
    pub fn is_too_large(&self) -> bool {
        self.reason == "too_large"
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl From<BridgeError> for Refusal {
    fn from(err: BridgeError) -> Self {
        let reason = err.reason();
        let mut info = Some(Box::new(ErrorInfo::new(
            err.error_reason(),
            err.error_metadata(),
        )));
        let retry_after = match &err {
            BridgeError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let (code, message) = match &err {
            BridgeError::Store(StoreError::Backend(_) | StoreError::Unavailable(_))
            | BridgeError::Auth(AuthError::Store(StoreError::Backend(_))) => {
                tracing::warn!(error = %ErrorChain(&err), "the registry store failed a device request");
                (
                    Code::Unavailable,
                    "the device registry cannot be reached right now; the request was not \
                     carried out, retry later"
                        .to_owned(),
                )
            }
            BridgeError::Store(StoreError::NotFound(_)) => (err.code(), err.to_string()),
            BridgeError::Store(_) | BridgeError::Auth(AuthError::Store(_)) => {
                tracing::error!(error = %ErrorChain(&err), "internal error");
                info = None;
                (
                    Code::Internal,
                    "internal error; the service log has the details".to_owned(),
                )
            }
            _ => (err.code(), err.to_string()),
        };
        Self {
            code,
            reason,
            message,
            retry_after,
            info,
        }
    }
}
