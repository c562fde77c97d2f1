//! The admin API: IoT Core's device manager (`cloudiot.googleapis.com/v1`) paths and proto3 JSON
//! shapes, so existing tooling works with only a new endpoint. It runs on its own listener, bound
//! to loopback by default; anywhere else it demands a bearer token, or is declared to sit behind
//! Cloud Run's IAM (see the README). Nothing here is ever routed on the device port.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use shared::{Code, ErrorInfo};

use super::error::ApiError;
use crate::auth::Authenticator;
use crate::c2d::Fleet;
use crate::registry::RegistryStore;

mod commands;
mod devices;
mod presence;
mod registries;
mod system_params;

/// The largest admin request body: room for 256 KB of metadata or a 64 KB config in base64.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How callers of the admin API prove they may use it.
#[derive(Debug, Clone)]
pub enum AdminAccess {
    /// No check: the listener is on loopback, reachable only from this machine.
    Loopback,
    /// Every request carries `Authorization: Bearer <token>` with this token.
    Token(Arc<str>),
    /// Cloud Run's IAM checked the caller's Google identity before the request arrived.
    CloudRunIam,
}

/// What the admin handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The registry store.
    pub registry: Arc<dyn RegistryStore>,
    /// The token checker, told when a device's keys or blocked flag change.
    pub auth: Authenticator,
    /// The access rule.
    pub access: AdminAccess,
    /// Devices' MQTT connections, here and on the other instances: told of config and device
    /// changes at once, and how commands reach them.
    pub fleet: Fleet,
}

/// The admin API's routes.
pub fn router(state: AdminState) -> Router {
    const LOCATION: &str = "/v1/projects/{project}/locations/{location}";
    let registries = format!("{LOCATION}/registries");
    let registry = format!("{registries}/{{registry}}");
    let devices = format!("{registry}/devices");
    let device = format!("{devices}/{{device}}");
    Router::new()
        .route(&registries, get(registries::list).post(registries::create))
        .route(
            &registry,
            get(registries::get)
                .patch(registries::patch)
                .delete(registries::delete)
                .post(registries::custom_method),
        )
        .route(&devices, get(devices::list).post(devices::create))
        .route(
            &device,
            get(devices::get)
                .patch(devices::patch)
                .delete(devices::delete)
                .post(devices::custom_method),
        )
        .route(
            &format!("{device}/configVersions"),
            get(devices::config_versions),
        )
        .route(&format!("{device}/states"), get(devices::states))
        .route(&format!("{device}/presence"), get(presence::get))
        .route(&format!("{device}/commands"), get(commands::list))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(system_params::apply))
        .layer(middleware::from_fn_with_state(state.clone(), check_access))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        Code::NotFound,
        "no such admin API path; paths look like /v1/projects/{project}/locations/{region}/registries/{registry}/devices/{device}",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        Code::Unimplemented,
        "this HTTP method is not supported on this path",
    )
    .with_http_status(axum::http::StatusCode::METHOD_NOT_ALLOWED)
}

/// Refuses requests without the configured bearer token.
async fn check_access(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let AdminAccess::Token(expected) = &state.access {
        let presented = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        match presented {
            None => {
                return Err(ApiError::new(
                    Code::Unauthenticated,
                    "the admin API needs `Authorization: Bearer <token>`; the CLI sends it from --admin-token or ADMIN_TOKEN",
                )
                .with_info(ErrorInfo::new("ADMIN_TOKEN_MISSING", BTreeMap::new())));
            }
            Some(token) if !constant_time_eq(token.as_bytes(), expected.as_bytes()) => {
                return Err(ApiError::new(
                    Code::Unauthenticated,
                    "the admin bearer token is not the one this server was started with",
                )
                .with_info(ErrorInfo::new("ADMIN_TOKEN_INVALID", BTreeMap::new())));
            }
            Some(_) => {}
        }
    }
    Ok(next.run(request).await)
}

/// Compares secrets without leaking where they first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}
