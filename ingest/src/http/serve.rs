//! Serving a router with the limits a public listener needs: a cap on open connections (those
//! beyond it wait in the kernel's accept backlog rather than being accepted and dropped), a
//! deadline on every request answered in Google's error shape, and a graceful shutdown whose
//! drain is bounded so a stuck request cannot hold up the process's exit.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use shared::Code;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::http::error::ApiError;
use crate::telemetry::Metrics;

/// Limits of one listener.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long a handler may take before the caller gets `504 DEADLINE_EXCEEDED`.
    pub request_timeout: Duration,
    /// How long in-flight requests may run on after shutdown begins.
    pub drain_timeout: Duration,
    /// Counts open connections when set.
    pub metrics: Option<Metrics>,
}

impl Default for ServeOptions {
    /// Cloud Run's defaults: it gives a container 10 s after SIGTERM.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            request_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(9),
            metrics: None,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish for at most `options.drain_timeout`.
///
/// Requests still running when the drain ends are abandoned: their connections are already
/// closing and end by the request deadline at the latest, or when the runtime stops.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = app.layer(middleware::from_fn_with_state(
        options.request_timeout,
        deadline,
    ));
    let listener = CappedListener {
        listener,
        permits: Arc::new(Semaphore::new(options.max_connections.max(1))),
        metrics: options.metrics,
    };
    let (draining_tx, draining_rx) = oneshot::channel();
    let signal = async move {
        shutdown.await;
        let _ = draining_tx.send(());
    };
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        _ = draining_rx => {}
    }
    if tokio::time::timeout(options.drain_timeout, server)
        .await
        .is_err()
    {
        tracing::warn!(
            drain_timeout = ?options.drain_timeout,
            "requests still running at the end of the drain were abandoned"
        );
    }
    Ok(())
}

/// Answers `504 DEADLINE_EXCEEDED` when the handler outlives `limit`; dropping its future
/// cancels it.
async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%method, %path, ?limit, "request timed out");
            ApiError::new(
                Code::DeadlineExceeded,
                format!("the request did not complete within {limit:?}"),
            )
            .into_response()
        }
    }
}

/// A listener that takes a permit before accepting, so at most `permits` connections are open.
struct CappedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    metrics: Option<Metrics>,
}

impl axum::serve::Listener for CappedListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        // The semaphore is never closed, so this always yields a permit.
        let permit = self.permits.clone().acquire_owned().await.ok();
        // axum's own accept retries transient errors (and backs off on EMFILE).
        let (stream, addr) = axum::serve::Listener::accept(&mut self.listener).await;
        // Small JSON responses should not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        if let Some(metrics) = &self.metrics {
            metrics.connection_opened();
        }
        let connection = Connection {
            stream,
            _permit: permit,
            metrics: self.metrics.clone(),
        };
        (connection, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted connection holding its permit; dropping it frees the slot and counts it closed.
struct Connection {
    stream: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
    metrics: Option<Metrics>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.connection_closed();
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
