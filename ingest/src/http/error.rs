//! The one error type of the HTTP layer. Every refusal becomes Google's JSON error body with a
//! canonical status and a message naming the cause; an internal failure is logged once with its
//! cause chain and answered with a message that reveals nothing about internals. Every refusal
//! also carries a `google.rpc.ErrorInfo` with its machine-readable reason: a specific one where a
//! program may act on it (`DEVICE_NOT_FOUND`, `CONFIG_VERSION_MISMATCH`, `TOKEN_EXPIRED` …), the
//! status name otherwise. An internal error carries none: it tells nothing.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shared::resources::FieldViolation;
use shared::{Code, ErrorBody, ErrorInfo, IdError};

use crate::registry::{Resource, StoreError};
use crate::telemetry::ErrorChain;

/// A refusal or failure, ready to be sent.
#[derive(Debug)]
pub struct ApiError {
    code: Code,
    message: String,
    /// An HTTP status other than the code's usual one (413 for an oversized body).
    http_status: Option<StatusCode>,
    /// The machine-readable reason sent in `details`; without one a refusal sends its status
    /// name as the reason (boxed: errors travel in every `Result` of the HTTP layer and should
    /// stay small).
    info: Option<Box<ErrorInfo>>,
    /// Why an internal error happened; logged, never sent.
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ApiError {
    /// A refusal with a code and a message for the caller.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            http_status: None,
            info: None,
            source: None,
        }
    }

    /// Sends `info` in the body's `details`, for programs that must not parse the message.
    pub fn with_info(mut self, info: ErrorInfo) -> Self {
        self.info = Some(Box::new(info));
        self
    }

    /// Sends a different HTTP status than the code's usual one, as Google does for `413`.
    pub fn with_http_status(mut self, status: StatusCode) -> Self {
        self.http_status = Some(status);
        self
    }

    /// `400 INVALID_ARGUMENT` naming a field, in the message and in the `ErrorInfo`'s metadata.
    pub fn invalid_field(field: &str, message: impl std::fmt::Display) -> Self {
        let metadata = BTreeMap::from([("field".to_owned(), field.to_owned())]);
        Self::new(Code::InvalidArgument, format!("{field}: {message}"))
            .with_info(ErrorInfo::new(Code::InvalidArgument.name(), metadata))
    }

    /// `500 INTERNAL`: the cause is logged, the caller sees only that it failed.
    pub fn internal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            code: Code::Internal,
            message: "internal error; the service log has the details".into(),
            http_status: None,
            info: None,
            source: Some(source.into()),
        }
    }

    /// The canonical status.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message the caller sees.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(source) = &self.source {
            tracing::error!(error = %ErrorChain(source.as_ref()), "request failed");
        }
        let status = self.http_status.unwrap_or_else(|| {
            StatusCode::from_u16(self.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        let mut body = ErrorBody::new(self.code, self.message);
        if let Some(info) = &self.info {
            body = body.with_info(info);
        } else if self.code != Code::Internal {
            body = body.with_info(&ErrorInfo::new(self.code.name(), BTreeMap::new()));
        }
        body.error.code = status.as_u16();
        (status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        let (code, info) = match &err {
            StoreError::NotFound(resource) => (Code::NotFound, about(resource, "NOT_FOUND")),
            StoreError::AlreadyExists(resource) => {
                (Code::AlreadyExists, about(resource, "ALREADY_EXISTS"))
            }
            StoreError::FailedPrecondition(_) => (
                Code::FailedPrecondition,
                ErrorInfo::new(Code::FailedPrecondition.name(), BTreeMap::new()),
            ),
            StoreError::VersionMismatch { expected, current } => (
                Code::Aborted,
                ErrorInfo::new(
                    "CONFIG_VERSION_MISMATCH",
                    BTreeMap::from([
                        ("expectedVersion".to_owned(), expected.to_string()),
                        ("currentVersion".to_owned(), current.to_string()),
                    ]),
                ),
            ),
            StoreError::ConfigTooSoon {
                resource,
                retry_after,
            } => {
                let mut info = about(resource, "CONFIG_TOO_SOON");
                info.reason = "CONFIG_RATE_EXCEEDED".to_owned();
                info.metadata.insert(
                    "retryAfterMillis".to_owned(),
                    retry_after.as_millis().to_string(),
                );
                (Code::ResourceExhausted, info)
            }
            StoreError::QueueFull(resource) => {
                let mut info = about(resource, "QUEUE_FULL");
                info.reason = "COMMAND_QUEUE_FULL".to_owned();
                (Code::ResourceExhausted, info)
            }
            StoreError::PolicyChanged(resource) => {
                let mut info = about(resource, "POLICY_CHANGED");
                info.reason = "IAM_POLICY_ETAG_MISMATCH".to_owned();
                (Code::Aborted, info)
            }
            StoreError::Limit(_) => (
                Code::ResourceExhausted,
                ErrorInfo::new("LIMIT_EXCEEDED", BTreeMap::new()),
            ),
            StoreError::Unavailable(_) => (
                Code::Unavailable,
                ErrorInfo::new("REGISTRY_UNAVAILABLE", BTreeMap::new()),
            ),
            StoreError::BadPageToken => {
                return Self::invalid_field("pageToken", err);
            }
            StoreError::Backend(_) => return Self::internal(err),
        };
        Self::new(code, err.to_string()).with_info(info)
    }
}

/// `REGISTRY_NOT_FOUND`, `DEVICE_ALREADY_EXISTS` …, with the resource's full name as metadata.
fn about(resource: &Resource, outcome: &str) -> ErrorInfo {
    let (kind, name) = match resource {
        Resource::Registry(name) => ("registry", name.to_string()),
        Resource::Device(name) => ("device", name.to_string()),
    };
    let reason = format!("{}_{outcome}", kind.to_ascii_uppercase());
    ErrorInfo::new(reason, BTreeMap::from([(kind.to_owned(), name)]))
}

impl From<FieldViolation> for ApiError {
    fn from(violation: FieldViolation) -> Self {
        Self::invalid_field(&violation.field, violation.message)
    }
}

/// An id in the request path that breaks the naming rules.
impl From<IdError> for ApiError {
    fn from(err: IdError) -> Self {
        Self::new(Code::InvalidArgument, err.to_string())
    }
}
