//! The HTTP surfaces: the admin API (its own listener), Google's error shape shared by all of
//! them, request parsing helpers and the health endpoints.

use axum::Router;
use axum::routing::get;

pub mod admin;
pub mod device;
pub mod error;
pub mod request;
pub mod serve;

/// `/healthz` (the process is up) and `/readyz` (it can serve); both answer `ok`.
pub fn health_routes() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
}
