//! What the integration and unit tests of every crate in this workspace share, in one place so
//! that no crate keeps its own copy: the JWT vectors and their keys, names no other test uses,
//! the Pub/Sub and Firestore emulators `scripts/test` starts, the Pub/Sub REST calls a test makes
//! to see what arrived, a device token signer, a real `ingest serve` process with the URLs it
//! printed, and a clock a test moves by hand instead of waiting. Tests may panic on anything
//! unexpected: that is how a test reports it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod clock;
pub mod emulators;
pub mod names;
pub mod pubsub;
pub mod serve;
pub mod signer;
pub mod vectors;

use std::time::{Duration, Instant};

pub use clock::ManualClock;
pub use names::unique;
pub use serve::{DEFAULT_ARGS, IngestProcess, spawn_ingest};
pub use signer::Signer;
pub use vectors::{key, vectors};

/// The project every test uses (the vectors' tokens are made for it).
pub const PROJECT: &str = "demo-project";
/// The region every test uses.
pub const REGION: &str = "us-central1";

/// How long a test waits for something that should happen: generous, because the CI machine is
/// a shared 2-core box.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Waits until `check` gives `Some`, polling every 50 ms, or panics naming `what` after
/// [`PATIENCE`].
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
