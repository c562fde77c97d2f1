//! The admin API: IoT Core's device manager (`cloudiot.googleapis.com/v1`) paths and proto3 JSON
//! shapes, so existing tooling works with only a new endpoint. It runs on its own listener, bound
//! to loopback by default; anywhere else it demands a bearer token, or is declared to sit behind
//! Cloud Run's IAM (see the README). Every request is authenticated (`access`), then checked
//! against IoT Core's permissions and the registry's IAM policy (`authorize`), then handled.
//! Nothing here is ever routed on the device port.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use shared::Code;

use super::error::ApiError;
use crate::auth::Authenticator;
use crate::c2d::Fleet;
use crate::registry::RegistryStore;
pub use access::{AdminAccess, CloudRunOwners, Tokens};
pub use tokens_file::TokenSource;

mod access;
mod authorize;
mod commands;
mod devices;
mod fleet_health;
mod gateways;
mod iam;
mod presence;
mod registries;
mod system_params;
mod tokens_file;

/// The largest admin request body: room for 256 KB of metadata or a 64 KB config in base64.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

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
        .route(&format!("{registry}/fleetHealth"), get(fleet_health::get))
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
        .layer(middleware::from_fn_with_state(
            state.clone(),
            authorize::authorize,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            access::authenticate,
        ))
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
