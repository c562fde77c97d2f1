//! The baseline for `scripts/bench-http`: a bare axum hello-world on the same runtime settings as
//! ingest, so the benchmark can report ingest's publishEvent rate as a ratio of what axum itself
//! does on the same machine in the same run.

use axum::Router;
use axum::routing::post;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let app = Router::new().route("/", post(|| async { "{}" }).get(|| async { "{}" }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("hello-world listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
