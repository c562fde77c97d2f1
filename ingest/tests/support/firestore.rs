//! The Firestore emulator for tests: its address from `FIRESTORE_EMULATOR_HOST` (which
//! `scripts/test` starts and exports; a test fails, never skips, without it), and database ids that
//! no other test uses, so each test starts from an empty database without wiping a shared one.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};

/// `HOST:PORT` of the Firestore emulator.
pub fn emulator_host() -> String {
    std::env::var("FIRESTORE_EMULATOR_HOST").expect(
        "FIRESTORE_EMULATOR_HOST is not set: run scripts/test, which starts the Firestore \
         emulator, or start one with `eval \"export $(scripts/firestore-emulator start)\"`",
    )
}

/// A database id unique to this call: `prefix`, the process and a counter.
pub fn unique_database(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}
