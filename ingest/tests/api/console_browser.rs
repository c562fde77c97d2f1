//! The fleet console in a real browser: headless Debian Chromium driven by Playwright
//! (`tests/console/console.test.mjs`) against a real `ingest serve` with an admin bearer token.
//! The script signs in, creates a registry and a device, sees the device in the fleet after it
//! published over the HTTP bridge with a JWT signed here, edits its config (a stale edit is
//! refused), reads its state, blocks it, and checks that requests without the token, forms
//! from another origin and posts without the CSRF token are refused. It writes screenshots of
//! the fleet and device pages to `.build/console/`.
//!
//! `scripts/test` installs what it needs (`IOTCORE_CONSOLE_TEST=$(scripts/console-env)`); without
//! it the test fails rather than skips.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{PROJECT, REGION, key, spawn_ingest};
use testkit::signer::Signer;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/console/console.test.mjs"
);
const TOKEN: &str = "console-test-token-0123456789";
const CHROMIUM: &str = "/usr/bin/chromium";

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.build/console"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn the_console_manages_a_fleet_in_headless_chromium_and_refuses_what_it_must() {
    let modules = std::env::var("IOTCORE_CONSOLE_TEST").unwrap_or_else(|_| {
        panic!(
            "IOTCORE_CONSOLE_TEST is not set: run the tests through scripts/test, or \
             `export IOTCORE_CONSOLE_TEST=$(scripts/console-env)` first (it installs Chromium \
             and playwright-core)"
        )
    });
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: scripts/console-env installs Debian's chromium"
    );
    let dir = tempfile::tempdir().unwrap();
    let sink = format!("--sink=file:{}", dir.path().join("events.jsonl").display());
    let ingest = spawn_ingest(
        &["--admin-token", TOKEN, "--activity-flush-secs", "1", &sink],
        &[],
    );
    let jwt = Signer::rsa("rsa_private").fresh();
    let shots = screenshots();
    let mut command = tokio::process::Command::new("node");
    command
        .arg(SCRIPT)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("CONSOLE_URL", ingest.admin_url())
        .env("DEVICE_URL", ingest.device_url())
        .env("ADMIN_TOKEN", TOKEN)
        .env("PROJECT", PROJECT)
        .env("REGION", REGION)
        .env("DEVICE_KEY", key("rsa_public"))
        .env("DEVICE_KEY_FORMAT", "RSA_PEM")
        .env("DEVICE_JWT", jwt)
        .env("SCREENSHOTS", &shots)
        .env("IOTCORE_CONSOLE_TEST", modules)
        .env("CHROMIUM", CHROMIUM)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .expect("the browser test finished within 3 minutes")
        .expect("running node (scripts/console-env installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the console's browser checks failed (exit {:?}):\n{stdout}\n{}\nservice log:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr),
        ingest.log()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    for shot in ["console-fleet.png", "console-device.png"] {
        let size = std::fs::metadata(shots.join(shot)).map(|m| m.len());
        assert!(size.is_ok_and(|n| n > 1000), "{shot} was not written");
    }
}
