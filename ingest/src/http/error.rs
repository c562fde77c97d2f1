//! The one error type of the HTTP layer. Every refusal becomes Google's JSON error body with a
//! canonical status and a message naming the cause; an internal failure is logged once with its
//! cause chain and answered with a message that reveals nothing about internals. A device
//! refusal also carries a `google.rpc.ErrorInfo` with its machine-readable reason.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shared::resources::FieldViolation;
use shared::{Code, ErrorBody, ErrorInfo, IdError};

use crate::registry::StoreError;
use crate::telemetry::ErrorChain;

/// A refusal or failure, ready to be sent.
#[derive(Debug)]
pub struct ApiError {
    code: Code,
    message: String,
    /// An HTTP status other than the code's usual one (413 for an oversized body).
    http_status: Option<StatusCode>,
    /// The machine-readable reason sent in `details`, if any (boxed: errors travel in every
    /// `Result` of the HTTP layer and should stay small).
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

    /// `400 INVALID_ARGUMENT` naming a field.
    pub fn invalid_field(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(Code::InvalidArgument, format!("{field}: {message}"))
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
        }
        body.error.code = status.as_u16();
        (status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        let code = match &err {
            StoreError::NotFound(_) => Code::NotFound,
            StoreError::AlreadyExists(_) => Code::AlreadyExists,
            StoreError::FailedPrecondition(_) => Code::FailedPrecondition,
            StoreError::VersionMismatch { .. } => Code::Aborted,
            StoreError::BadPageToken => {
                return Self::invalid_field("pageToken", err);
            }
            StoreError::Backend(_) => return Self::internal(err),
        };
        Self::new(code, err.to_string())
    }
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
