//! The HTTP surfaces: the admin API and the fleet console (their own listener), Google's error shape shared by all of
//! them, request parsing helpers and the health endpoints.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use crate::registry::RegistryStore;

pub mod admin;
pub mod console;
pub mod device;
pub mod error;
pub mod request;
pub mod serve;

/// `/healthz` (the process is up: `ok`) and `/readyz` (it can serve: `ok`, or `503` naming
/// why not, e.g. the registry database was deleted), for load balancers and orchestrators.
pub fn health_routes(registry: Arc<dyn RegistryStore>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move {
                match registry.check_ready().await {
                    Ok(()) => (StatusCode::OK, "ok".to_owned()),
                    Err(err) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {err}\n"),
                    ),
                }
            }),
        )
}
