//! Google's canonical status codes and the JSON error body every refusal uses:
//! `{"error": {"code": 404, "message": "...", "status": "NOT_FOUND"}}`. IoT Core's clients and
//! Google's client libraries parse exactly this shape. A device refusal also carries a
//! `google.rpc.ErrorInfo` in `details`: a stable reason a program can act on, so the device agent
//! never has to read the message, which is written for people and may change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `@type` of a `google.rpc.ErrorInfo` in `details`.
pub const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// The `domain` of this service's `ErrorInfo`s, the one IoT Core's API had.
pub const ERROR_DOMAIN: &str = "cloudiot.googleapis.com";

/// A canonical status (google.rpc.Code) with the HTTP status Google maps it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    /// Not an error.
    Ok,
    /// The request was cancelled by the caller.
    Cancelled,
    /// An error with no better code.
    Unknown,
    /// The request is malformed: a field breaks a rule, a body does not parse.
    InvalidArgument,
    /// The deadline passed before the work finished.
    DeadlineExceeded,
    /// The resource does not exist.
    NotFound,
    /// The resource exists already.
    AlreadyExists,
    /// The caller is known but may not do this (a blocked device, for example).
    PermissionDenied,
    /// A quota or rate limit was hit.
    ResourceExhausted,
    /// The system is not in the state the request needs (registry not empty, no topic matches).
    FailedPrecondition,
    /// A concurrency conflict such as a config version mismatch.
    Aborted,
    /// A value is outside the valid range (a config version newer than the latest).
    OutOfRange,
    /// The operation is not supported.
    Unimplemented,
    /// A bug or an unexpected failure inside the service.
    Internal,
    /// A dependency is down for now; retrying later may work.
    Unavailable,
    /// Data was lost or corrupted.
    DataLoss,
    /// The caller did not prove who it is (no token, a bad or expired token).
    Unauthenticated,
}

impl Code {
    /// The HTTP status Google's REST APIs use for this code.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Ok => 200,
            Code::Cancelled => 499,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        }
    }

    /// The name as it appears in the `status` field, e.g. `NOT_FOUND`.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The numeric google.rpc.Code value, as stored in a device's `lastErrorStatus`.
    pub fn rpc_code(self) -> i32 {
        match self {
            Code::Ok => 0,
            Code::Cancelled => 1,
            Code::Unknown => 2,
            Code::InvalidArgument => 3,
            Code::DeadlineExceeded => 4,
            Code::NotFound => 5,
            Code::AlreadyExists => 6,
            Code::PermissionDenied => 7,
            Code::ResourceExhausted => 8,
            Code::FailedPrecondition => 9,
            Code::Aborted => 10,
            Code::OutOfRange => 11,
            Code::Unimplemented => 12,
            Code::Internal => 13,
            Code::Unavailable => 14,
            Code::DataLoss => 15,
            Code::Unauthenticated => 16,
        }
    }
}

/// The outer JSON error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The one error.
    pub error: ErrorDetail,
}

/// `error` inside the body: HTTP code, a message naming the cause, and the canonical status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The HTTP status, repeated in the body as Google does.
    pub code: u16,
    /// What went wrong, in words the caller can act on.
    pub message: String,
    /// The canonical status name.
    pub status: Code,
    /// Google's `details`: typed objects, each with its `@type`; left out when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Value>,
}

impl ErrorDetail {
    /// The `google.rpc.ErrorInfo` among the details, if the server sent one.
    pub fn error_info(&self) -> Option<ErrorInfo> {
        self.details
            .iter()
            .filter(|detail| detail["@type"] == ERROR_INFO_TYPE)
            .find_map(|detail| serde_json::from_value(detail.clone()).ok())
    }
}

/// `google.rpc.ErrorInfo`: why a request was refused, as a stable SCREAMING_SNAKE `reason`
/// (`TOKEN_EXPIRED`) within a `domain`, with non-secret facts in `metadata` (never a token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Always [`ERROR_INFO_TYPE`].
    #[serde(rename = "@type")]
    pub type_url: String,
    /// The reason, e.g. `TOKEN_EXPIRED`, `DEVICE_BLOCKED`.
    pub reason: String,
    /// Who defines the reasons: [`ERROR_DOMAIN`].
    pub domain: String,
    /// Facts about this refusal, e.g. `{"device": "dev-1"}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl ErrorInfo {
    /// An `ErrorInfo` of this service's domain.
    pub fn new(reason: impl Into<String>, metadata: BTreeMap<String, String>) -> Self {
        Self {
            type_url: ERROR_INFO_TYPE.to_owned(),
            reason: reason.into(),
            domain: ERROR_DOMAIN.to_owned(),
            metadata,
        }
    }
}

impl ErrorBody {
    /// Builds the body for a code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.http_status(),
                message: message.into(),
                status: code,
                details: Vec::new(),
            },
        }
    }

    /// Adds an `ErrorInfo` to the details.
    pub fn with_info(mut self, info: &ErrorInfo) -> Self {
        if let Ok(value) = serde_json::to_value(info) {
            self.error.details.push(value);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_googles_shape() {
        let body = ErrorBody::new(Code::NotFound, "device `d` not found");
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": 404, "message": "device `d` not found", "status": "NOT_FOUND"}})
        );
    }

    #[test]
    fn an_error_info_travels_in_details_and_is_found_again() {
        let metadata = BTreeMap::from([("device".to_owned(), "dev-1".to_owned())]);
        let info = ErrorInfo::new("TOKEN_EXPIRED", metadata);
        let body = ErrorBody::new(Code::Unauthenticated, "words for people").with_info(&info);
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json["error"]["details"],
            serde_json::json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "TOKEN_EXPIRED",
                "domain": "cloudiot.googleapis.com",
                "metadata": {"device": "dev-1"}
            }])
        );
        let parsed: ErrorBody = serde_json::from_value(json).unwrap();
        assert_eq!(parsed.error.error_info(), Some(info));
    }

    #[test]
    fn a_body_without_details_has_no_error_info() {
        let body: ErrorBody = serde_json::from_str(
            r#"{"error": {"code": 404, "message": "m", "status": "NOT_FOUND"}}"#,
        )
        .unwrap();
        assert_eq!(body.error.error_info(), None);
    }

    #[test]
    fn codes_map_to_googles_http_statuses() {
        let table = [
            (Code::InvalidArgument, 400, "INVALID_ARGUMENT", 3),
            (Code::FailedPrecondition, 400, "FAILED_PRECONDITION", 9),
            (Code::OutOfRange, 400, "OUT_OF_RANGE", 11),
            (Code::Unauthenticated, 401, "UNAUTHENTICATED", 16),
            (Code::PermissionDenied, 403, "PERMISSION_DENIED", 7),
            (Code::NotFound, 404, "NOT_FOUND", 5),
            (Code::AlreadyExists, 409, "ALREADY_EXISTS", 6),
            (Code::Aborted, 409, "ABORTED", 10),
            (Code::ResourceExhausted, 429, "RESOURCE_EXHAUSTED", 8),
            (Code::Internal, 500, "INTERNAL", 13),
            (Code::Unavailable, 503, "UNAVAILABLE", 14),
        ];
        for (code, http, name, rpc) in table {
            assert_eq!(code.http_status(), http, "{name}");
            assert_eq!(code.name(), name);
            assert_eq!(code.rpc_code(), rpc, "{name}");
            assert_eq!(serde_json::to_value(code).unwrap(), name);
        }
    }
}
