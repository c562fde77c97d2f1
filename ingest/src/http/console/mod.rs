//! The fleet console: HTML pages under `/console` on the admin listener (never the device port)
//! for the everyday work IoT Core's Cloud Console did: registries, a fleet's health at a glance,
//! and one device's keys, configs, states and commands.
//!
//! The console is a client of the admin API, in process: every page and every action is a call
//! through the admin router itself (`api`), with the caller's own credentials, so it passes the
//! same authentication, the same IoT Core permission and registry IAM checks and the same
//! handlers as a CLI call would, and a refusal shows the API's own message. Nothing here decides
//! what a caller may do. What the console adds is only what a browser needs (`session`): a login
//! form that keeps a bearer token in an `HttpOnly`, `SameSite=Strict` cookie, and CSRF checks on
//! every change. Pages are rendered on the server with `maud`; the stylesheet is compiled in.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use super::admin::AdminAccess;

mod api;
mod device;
mod fleet;
mod format;
mod pages;
mod registries;
mod session;

/// How the console is served.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Mark the session cookie `Secure` (browsers then send it over HTTPS only): everywhere but a
    /// loopback admin listener, which a browser reaches over plain HTTP.
    pub secure_cookies: bool,
}

/// What the console's handlers share: the admin API to call, and how callers sign in.
#[derive(Debug, Clone)]
pub(crate) struct Console {
    /// The admin API's router, called in process.
    api: Router,
    /// Whether callers sign in with a bearer token (a login form), or arrive already known
    /// (loopback, or Cloud Run's IAM with the identity on every request).
    tokens: bool,
    settings: ConsoleSettings,
}

/// The console's routes, calling `api` (the admin API's router) for everything they show or do.
pub fn router(api: Router, access: &AdminAccess, settings: ConsoleSettings) -> Router {
    const LOCATION: &str = "/console/projects/{project}/locations/{location}";
    let registries = format!("{LOCATION}/registries");
    let registry = format!("{registries}/{{registry}}");
    let device = format!("{registry}/devices/{{device}}");
    let console = Console {
        api,
        tokens: matches!(access, AdminAccess::Tokens(_)),
        settings,
    };
    Router::new()
        .route("/console", get(pages::landing))
        .route("/console/", get(pages::landing))
        .route("/console/go", get(pages::go))
        .route("/console/console.css", get(stylesheet))
        .route(
            "/console/login",
            get(session::login_page).post(session::login),
        )
        .route("/console/logout", post(session::logout))
        .route(&registries, get(registries::list).post(registries::create))
        .route(&registry, get(fleet::page))
        .route(
            &format!("{registry}/settings"),
            get(registries::settings).post(registries::update),
        )
        .route(&format!("{registry}/devices"), post(fleet::create_device))
        .route(&device, get(device::page))
        .route(&format!("{device}/{{action}}"), post(device::act))
        // Not a fallback: the admin router this merges into has its own.
        .route("/console/{*rest}", get(pages::not_found))
        .layer(middleware::from_fn_with_state(
            console.clone(),
            session::guard,
        ))
        .with_state(console)
}

/// The stylesheet, compiled into the binary: the console works offline, with no CDN.
async fn stylesheet() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("console.css"),
    )
}
