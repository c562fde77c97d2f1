//! The emulators a test talks to: the shared Pub/Sub and Firestore emulators that `scripts/test`
//! starts and exports (a test fails, never skips, without them), and a private Pub/Sub emulator a
//! test can stop to see how the service behaves when Pub/Sub is down.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `HOST:PORT` of the shared Pub/Sub emulator (`PUBSUB_EMULATOR_HOST`).
pub fn pubsub_host() -> String {
    std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_else(|_| {
        panic!(
            "PUBSUB_EMULATOR_HOST is not set: these tests need the Pub/Sub emulator. Run \
             scripts/test, or `eval \"export $(scripts/pubsub-emulator start)\"` first"
        )
    })
}

/// `HOST:PORT` of the shared Firestore emulator (`FIRESTORE_EMULATOR_HOST`).
pub fn firestore_host() -> String {
    std::env::var("FIRESTORE_EMULATOR_HOST").unwrap_or_else(|_| {
        panic!(
            "FIRESTORE_EMULATOR_HOST is not set: run scripts/test, which starts the Firestore \
             emulator, or start one with `eval \"export $(scripts/firestore-emulator start)\"`"
        )
    })
}

/// A Pub/Sub emulator of this test's own, stopped when dropped (even if the test panics).
#[derive(Debug)]
pub struct PrivatePubSub {
    dir: tempfile::TempDir,
    /// `HOST:PORT` it listens on.
    pub host: String,
}

impl PrivatePubSub {
    /// Starts one with `scripts/pubsub-emulator` in a directory of its own.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = script(&dir, "start").output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let host = stdout
            .lines()
            .find_map(|line| line.strip_prefix("PUBSUB_EMULATOR_HOST="))
            .map(str::to_owned)
            .unwrap_or_default();
        assert!(
            output.status.success() && !host.is_empty(),
            "scripts/pubsub-emulator start failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self { dir, host }
    }

    /// Stops it: from now on nothing listens at [`Self::host`].
    pub fn stop(&self) {
        let status = script(&self.dir, "stop").status().unwrap();
        assert!(status.success(), "scripts/pubsub-emulator stop failed");
    }

    /// Starts the stopped emulator again on the same port, empty (it keeps nothing).
    pub fn restart(&self) {
        let port = self.host.rsplit(':').next().unwrap_or_default();
        let output = script(&self.dir, "start").arg(port).output().unwrap();
        assert!(
            output.status.success(),
            "scripts/pubsub-emulator start {port} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivatePubSub {
    fn drop(&mut self) {
        // Quiet: after an explicit `stop` there is nothing left and the script says so.
        let _ = script(&self.dir, "stop").stderr(Stdio::null()).status();
    }
}

fn script(dir: &tempfile::TempDir, action: &str) -> Command {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/pubsub-emulator");
    let mut command = Command::new(path);
    command.arg(action).env("PUBSUB_EMULATOR_DIR", dir.path());
    command
}
