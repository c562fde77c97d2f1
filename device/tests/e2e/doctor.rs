//! `iotcore-device doctor`, the real binary against a real ingest: every check passes on a good
//! setup, and a broken one (a key the registry does not know, a key others can read, a host that
//! does not answer or does not exist, a clock 20 minutes ahead) gets a FAIL line naming the
//! cause, with the fix. Each transcript is printed, so `cargo test -- --nocapture` shows them.

use std::path::Path;

use crate::support::{
    DeviceFiles, Ingest, SinkKind, device_command, file_events, free_port, new_device,
};

/// Runs doctor; returns (exit code, stdout).
fn doctor(settings: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let output = device_command()
        .args(["doctor", "--config", settings.to_str().unwrap()])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    println!(
        "--- doctor {env:?}\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), stdout)
}

async fn registered() -> (Ingest, DeviceFiles) {
    let ingest = Ingest::start(SinkKind::File).await;
    let files = new_device(&ingest, None).await;
    (ingest, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_every_check_on_a_good_setup_and_sends_a_test_event() {
    let (ingest, files) = registered().await;
    let settings = files.write_settings(&ingest.device_url(), "");
    let (code, out) = doctor(&settings, &[]);
    assert_eq!(code, 0, "{out}");
    let marks: Vec<&str> = out.lines().filter(|l| l.starts_with('[')).collect();
    let expected = [
        "[pass] config file",
        "[pass] private key",
        "[pass] clock",
        "[pass] DNS 127.0.0.1",
        "[pass] TCP 127.0.0.1",
        "[pass] token accepted",
        "[pass] test event accepted",
    ];
    assert_eq!(marks.len(), expected.len(), "{out}");
    for (line, start) in marks.iter().zip(expected) {
        assert!(
            line.starts_with(start),
            "{line:?} should start with {start:?}"
        );
    }
    assert!(
        out.contains("0.0 min ahead of") || out.contains("0.0 min behind"),
        "{out}"
    );
    let events = file_events(&ingest.events_path());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reading["source"], "doctor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_clock_twenty_minutes_ahead() {
    let (ingest, files) = registered().await;
    let settings = files.write_settings(&ingest.device_url(), "");
    let (code, out) = doctor(&settings, &[("IOTCORE_CLOCK_OFFSET_SECS", "1200")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "[FAIL] clock: the device clock is 20.0 min ahead of the server's (allowed: 10 min)"
        ),
        "{out}"
    );
    assert!(out.contains("fix: turn on time sync"), "{out}");
    // The service says the same about the token.
    assert!(
        out.contains("[FAIL] token accepted: UNAUTHENTICATED"),
        "{out}"
    );
    assert!(out.contains("in the future"), "{out}");
    assert!(out.contains("fix: set the device clock right"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_key_the_registry_does_not_know_and_one_others_can_read() {
    let (ingest, files) = registered().await;
    let stranger = DeviceFiles::new();
    let settings = files.write_settings(&ingest.device_url(), "");
    let text = std::fs::read_to_string(&settings).unwrap();
    let wrong = files.path("wrong.toml");
    let other_key = stranger.path("keys/private.pem");
    std::fs::write(
        &wrong,
        text.replace(
            files.path("keys/private.pem").to_str().unwrap(),
            other_key.to_str().unwrap(),
        ),
    )
    .unwrap();
    let (code, out) = doctor(&wrong, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[pass] private key"), "{out}");
    assert!(
        out.contains("[FAIL] token accepted: UNAUTHENTICATED"),
        "{out}"
    );
    assert!(
        out.contains("fix: this key is not registered for the device"),
        "{out}"
    );
    assert!(out.contains("[skip] test event accepted"), "{out}");

    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&other_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = doctor(&wrong, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("mode 644 lets other users read"), "{out}");
    assert!(
        out.contains(&format!("fix: chmod 600 {}", other_key.display())),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_host_that_does_not_answer_or_does_not_exist() {
    let files = DeviceFiles::new();
    let port = free_port();
    let settings = files.write_settings(&format!("http://127.0.0.1:{port}"), "");
    let (code, out) = doctor(&settings, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[skip] clock"), "{out}");
    assert!(
        out.contains(&format!("[FAIL] TCP 127.0.0.1:{port}: Connection refused")),
        "{out}"
    );
    assert!(out.contains("fix: is the service running"), "{out}");
    assert!(out.contains("[skip] token accepted"), "{out}");

    let settings = files.write_settings("http://no-such-host.invalid", "");
    let (code, out) = doctor(&settings, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] DNS no-such-host.invalid"), "{out}");
}
