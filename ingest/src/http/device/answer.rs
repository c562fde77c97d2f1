//! How the device API says no: every refusal is Google's JSON error body with a canonical status
//! and a message naming the cause, a `413` for oversized bodies, and a `Retry-After` header when
//! the device is told to come back later. The bridge decides what a device is told
//! ([`Refusal`]); refusals the HTTP layer makes itself ([`HttpRefusal`]) are counted and, once the
//! device is known, kept as its last error, just as the bridge does for its own.

use std::time::Duration;

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use shared::{Code, ErrorInfo};

use crate::bridge::{Bridge, DeviceSession, Protocol, Refusal};
use crate::http::error::ApiError;

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

/// The bridge has already counted the refusal and chosen its words; this only shapes the
/// answer: `413` for a payload over its limit (resending it can never succeed), `Retry-After`
/// when the device was told to wait.
impl From<Refusal> for DeviceApiError {
    fn from(refusal: Refusal) -> Self {
        let too_large = refusal.is_too_large();
        let mut error = ApiError::new(refusal.code, refusal.message);
        if let Some(info) = refusal.info {
            error = error.with_info(*info);
        }
        if too_large {
            error = error.with_http_status(StatusCode::PAYLOAD_TOO_LARGE);
        }
        Self {
            error,
            retry_after: refusal.retry_after,
        }
    }
}

/// A refusal the HTTP layer makes itself: a missing token, a body it cannot read.
#[derive(Debug)]
pub(super) struct HttpRefusal {
    code: Code,
    reason: &'static str,
    message: String,
    http_status: Option<StatusCode>,
}

impl HttpRefusal {
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

    /// The stable reason, as metrics count it.
    pub(super) fn reason(&self) -> &'static str {
        self.reason
    }

    /// The HTTP status it overrides, if any.
    #[cfg(test)]
    pub(super) fn http_status(&self) -> Option<StatusCode> {
        self.http_status
    }

    /// Counts the refusal, keeps it as the device's last error when the device is known, and
    /// turns it into the answer.
    pub(super) fn note(self, bridge: &Bridge, device: Option<&DeviceSession>) -> DeviceApiError {
        match device {
            Some(session) => {
                session.refuse(self.code, self.reason, self.message.clone());
            }
            None => bridge.note_refusal(
                Protocol::Http,
                &Refusal::new(self.code, self.reason, self.message.clone()),
            ),
        }
        let info = ErrorInfo::new(self.reason.to_ascii_uppercase(), Default::default());
        let mut error = ApiError::new(self.code, self.message).with_info(info);
        if let Some(status) = self.http_status {
            error = error.with_http_status(status);
        }
        error.into()
    }
}
