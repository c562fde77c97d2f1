//! Names no other test uses. The emulators are shared by every test of a run (and outlive it),
//! so each test's topics, subscriptions, Firestore databases, registries and devices get names of
//! their own instead of wiping what another test may be using.

use std::sync::atomic::{AtomicU32, Ordering};

/// `prefix`, the process id, the time in microseconds and a counter: unique across parallel
/// tests and across earlier runs against the same emulator. Lowercase letters, digits and
/// hyphens only, so it is also a valid Firestore database id for a short prefix.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{now}-{n}", std::process::id())
}
