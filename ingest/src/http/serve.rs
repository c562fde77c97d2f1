//! Serving a router with the limits a public listener needs: a cap on open connections (those
//! beyond it wait in the kernel's accept backlog rather than being accepted and dropped), a cap
//! per source address (one host cannot take every slot; beyond it a connection is closed at
//! once), idle keep-alive connections closed when the cap is nearly reached (so they give way to
//! new ones), a deadline for every request head — which also closes a connection that sends nothing, or sits
//! idle between requests, that long — so that slow or silent sockets cannot hold the cap's slots
//! and lock every device out, a deadline on every request answered in Google's error shape, and
//! a graceful shutdown whose drain is bounded so a stuck request cannot hold up the process's
//! exit.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use shared::Code;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::http::error::ApiError;
use crate::per_address::{AddressSlot, PerAddress};
use crate::telemetry::Metrics;

/// The most a connection may buffer, and so the largest request head: 64 KiB, far above any
/// device's (its token is at most 8 KiB), so that a thousand connections each sending a huge
/// head hold 64 MiB rather than hyper's default of ~400 KiB each. A larger head gets `431`.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Limits of one listener.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Connections one source address may hold at once; more are closed as they are accepted.
    /// 0: no such limit (behind a proxy every connection comes from the proxy).
    pub max_connections_per_address: usize,
    /// How long a connection may take to send a whole request head, counted from when it was
    /// accepted or its previous answer was sent; then it is closed.
    pub head_timeout: Duration,
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
            max_connections_per_address: 0,
            head_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(9),
            metrics: None,
        }
    }
}

/// Serves `app` (an axum `Router`, or a service that routes its hottest paths itself) on
/// `listener` until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish for at most `options.drain_timeout`.
///
/// Requests still running when the drain ends are abandoned: their connections are already
/// closing and end by the request deadline at the latest, or when the runtime stops.
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let limit = options.request_timeout;
    let cap = options.max_connections.max(1);
    let (shed, shedding) = watch::channel(0u64);
    let mut listener = CappedListener {
        listener,
        permits: Arc::new(Semaphore::new(cap)),
        per_address: PerAddress::new(options.max_connections_per_address),
        // Keep-alive connections give way once fewer than a sixteenth of the slots are free.
        shed_below: (cap / 16).max(1),
        shed,
        metrics: options.metrics,
    };
    // HTTP/1.1 only: devices and Cloud Run's front end speak it, and hyper's head deadline
    // applies to HTTP/1 connections from their first byte (an HTTP/2 sniffing step would wait
    // on a silent socket without one).
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.head_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let (stopping_tx, stopping) = watch::channel(false);
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let connection = tokio::select! {
            connection = listener.accept() => connection,
            () = &mut shutdown => break,
        };
        let app = app.clone();
        // The deadline wraps the router here rather than as an axum middleware, whose boxed
        // `Next` cost a clone and an allocation on every request (BENCHMARKS.md).
        let service = service_fn(move |request| within(limit, app.clone(), request));
        let serving = http
            .serve_connection(TokioIo::new(connection), service)
            .with_upgrades();
        connections.spawn(until_done(serving, stopping.clone(), shedding.clone()));
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    connections.close();
    if tokio::time::timeout(options.drain_timeout, connections.wait())
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

/// Serves one connection; once `stopping` turns true, or the listener sheds keep-alive
/// connections, it finishes the request under way, if any, and closes.
async fn until_done<S>(
    serving: hyper::server::conn::http1::UpgradeableConnection<TokioIo<Connection>, S>,
    mut stopping: watch::Receiver<bool>,
    mut shedding: watch::Receiver<u64>,
) where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(serving);
    shedding.mark_unchanged();
    let ended = tokio::select! {
        ended = serving.as_mut() => Some(ended),
        _ = stopping.wait_for(|stop| *stop) => None,
        _ = shedding.changed() => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            serving.as_mut().graceful_shutdown();
            serving.await
        }
    };
    // A head deadline, a client gone mid-request: nothing the service must act on.
    if let Err(err) = ended {
        tracing::debug!(error = %err, "connection ended");
    }
}

/// Routes `request` through `app`, answering `504 DEADLINE_EXCEEDED` when the handler outlives
/// `limit`; dropping its future cancels it.
async fn within<S>(
    limit: Duration,
    mut app: S,
    request: Request<Incoming>,
) -> Result<Response, Infallible>
where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible>,
{
    // Cheap copies (an enum, a reference count) kept for the warning.
    let (method, uri) = (request.method().clone(), request.uri().clone());
    match tokio::time::timeout(limit, app.call(request)).await {
        Ok(answer) => answer,
        Err(_) => {
            tracing::warn!(%method, path = uri.path(), ?limit, "request timed out");
            Ok(ApiError::new(
                Code::DeadlineExceeded,
                format!("the request did not complete within {limit:?}"),
            )
            .into_response())
        }
    }
}

/// A listener that takes a permit before accepting, so at most `permits` connections are open,
/// and at most `per_address`'s limit from one source address.
struct CappedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    per_address: PerAddress,
    /// With fewer free permits than this, connections are told to shed.
    shed_below: usize,
    shed: watch::Sender<u64>,
    metrics: Option<Metrics>,
}

impl CappedListener {
    async fn accept(&mut self) -> Connection {
        loop {
            // The semaphore is never closed, so this always yields a permit.
            let permit = self.permits.clone().acquire_owned().await.ok();
            // axum's own accept retries transient errors (and backs off on EMFILE).
            let (stream, addr) = axum::serve::Listener::accept(&mut self.listener).await;
            let Some(slot) = self.per_address.take(addr.ip()) else {
                // Closed at once (dropped): its permit is free again for the next one. `take`
                // has logged it (at most once a minute).
                continue;
            };
            if self.permits.available_permits() < self.shed_below {
                self.shed.send_modify(|round| *round += 1);
            }
            // Small JSON responses should not wait for Nagle's algorithm.
            let _ = stream.set_nodelay(true);
            if let Some(metrics) = &self.metrics {
                metrics.connection_opened();
            }
            tracing::trace!(%addr, "connection accepted");
            return Connection {
                stream,
                _permit: permit,
                _slot: slot,
                metrics: self.metrics.clone(),
            };
        }
    }
}

/// An accepted connection holding its permit and its address slot; dropping it frees both and
/// counts it closed.
struct Connection {
    stream: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
    _slot: AddressSlot,
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
