//! `ingest serve`: opens the registry store, binds the admin listener and serves until the
//! `shutdown` future resolves. The caller (main, or a test) decides when to stop.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::config::{ServeArgs, StoreUrl};
use crate::http::admin::{self, AdminState};
use crate::http::health_routes;
use crate::registry::Registry;
use crate::registry::sqlite::SqliteRegistry;

/// Opens the configured registry store.
pub async fn open_registry(url: &StoreUrl) -> anyhow::Result<Arc<dyn Registry>> {
    match url {
        StoreUrl::Sqlite(path) => {
            let store = SqliteRegistry::open(path)
                .await
                .with_context(|| format!("opening the SQLite registry at {}", path.display()))?;
            Ok(Arc::new(store))
        }
    }
}

/// Runs the service until `shutdown` resolves, then lets in-flight requests finish.
pub async fn run(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let access = args.admin_access()?;
    let registry = open_registry(&args.registry).await?;
    let auth = Authenticator::new(registry.clone(), args.token_cache_capacity);
    let listener = TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding the admin API to {}", args.admin_addr))?;
    let addr = listener.local_addr().context("reading the admin address")?;
    // Printed on stdout, not logged: scripts and tests read the bound port from this line.
    println!("admin API listening on http://{addr}");
    tracing::info!(%addr, access = ?access_kind(&access), "admin API listening");
    let app = admin::router(AdminState {
        registry,
        auth,
        access,
    })
    .merge(health_routes());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the admin API")
}

fn access_kind(access: &admin::AdminAccess) -> &'static str {
    match access {
        admin::AdminAccess::Loopback => "loopback only",
        admin::AdminAccess::Token(_) => "bearer token",
        admin::AdminAccess::CloudRunIam => "Cloud Run IAM",
    }
}

/// Resolves on SIGTERM (Cloud Run, systemd) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
