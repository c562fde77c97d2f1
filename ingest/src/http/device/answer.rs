//! How the device API says no: every refusal is Google's JSON error body with a canonical status
//! and a message naming the cause, a `413` for oversized bodies, and a `Retry-After` header when
//! the device is told to come back later. Refusals the HTTP layer makes itself ([`Refusal`]) are
//! counted and, once the device is known, kept as its last error, just as the bridge does for its
//! own.

use std::time::Duration;

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use shared::{Code, ErrorInfo};

use crate::auth::{AuthError, AuthenticatedDevice};
use crate::bridge::{Bridge, BridgeError};
use crate::http::error::{ApiError, ErrorChain};
use crate::registry::StoreError;

/// A refusal of the device API, ready to be sent.
#[derive(Debug)]
pub(super) struct DeviceApiError {
    error: ApiError,
    retry_after: Option<Duration>,
}

impl IntoResponse for DeviceApiError {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

impl From<ApiError> for DeviceApiError {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

/// The bridge has already counted the refusal; this only shapes the answer.
impl From<BridgeError> for DeviceApiError {
    fn from(err: BridgeError) -> Self {
        let retry_after = match &err {
            BridgeError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        Self {
            error: api_error(err),
            retry_after,
        }
    }
}

fn api_error(err: BridgeError) -> ApiError {
    let info = ErrorInfo::new(err.error_reason(), err.error_metadata());
    let code = err.code();
    let error = match &err {
        BridgeError::TooLarge { .. } => {
            ApiError::new(code, err.to_string()).with_http_status(StatusCode::PAYLOAD_TOO_LARGE)
        }
        BridgeError::Store(StoreError::Backend(_))
        | BridgeError::Auth(AuthError::Store(StoreError::Backend(_))) => {
            tracing::warn!(error = %ErrorChain(&err), "the registry store failed a device request");
            ApiError::new(
                Code::Unavailable,
                "the device registry cannot be reached right now; the request was not carried \
                 out, retry later",
            )
        }
        BridgeError::Store(StoreError::NotFound(_)) => ApiError::new(code, err.to_string()),
        BridgeError::Store(_) | BridgeError::Auth(AuthError::Store(_)) => {
            return ApiError::internal(err);
        }
        _ => ApiError::new(code, err.to_string()),
    };
    error.with_info(info)
}

/// A refusal the HTTP layer makes itself: a missing token, a body it cannot read.
#[derive(Debug)]
pub(super) struct Refusal {
    code: Code,
    reason: &'static str,
    message: String,
    http_status: Option<StatusCode>,
}

impl Refusal {
    /// A refusal with a canonical status, a stable reason for metrics, and the caller's message.
    pub(super) fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            http_status: None,
        }
    }

    /// `400 INVALID_ARGUMENT`.
    pub(super) fn invalid(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, reason, message)
    }

    /// Sends a different HTTP status than the code's usual one (413, 415).
    pub(super) fn with_http_status(mut self, status: StatusCode) -> Self {
        self.http_status = Some(status);
        self
    }

    /// The HTTP status it overrides, if any.
    #[cfg(test)]
    pub(super) fn http_status(&self) -> Option<StatusCode> {
        self.http_status
    }

    /// Counts the refusal, keeps it as the device's last error when the device is known, and
    /// turns it into the answer.
    pub(super) fn note(
        self,
        bridge: &Bridge,
        device: Option<&AuthenticatedDevice>,
    ) -> DeviceApiError {
        bridge.note_refusal(device, self.code, self.reason, &self.message);
        let info = ErrorInfo::new(self.reason.to_ascii_uppercase(), Default::default());
        let mut error = ApiError::new(self.code, self.message).with_info(info);
        if let Some(status) = self.http_status {
            error = error.with_http_status(status);
        }
        error.into()
    }
}
