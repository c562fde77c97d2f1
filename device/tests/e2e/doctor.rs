//! `iotcore-device doctor`, the real binary against a real ingest: every check passes on a good
//! setup, and a broken one (a key the registry does not know, a key others can read, a host that
//! does not answer or does not exist, a clock 20 minutes ahead) gets a FAIL line naming the
//! cause, with the fix. With `transport = "mqtt"` the same against ingest's MQTT bridge over TLS:
//! a good setup, the MQTT port blocked while a fallback port answers, a CA file that is not the
//! bridge's, CONNACK 4 for an expired token and for an unregistered key, CONNACK 5 for MQTT
//! switched off. Each transcript is printed, so `cargo test -- --nocapture` shows them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{
    DeviceFiles, Ingest, PATIENCE, SinkKind, device_command, file_events, free_port, new_device,
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

/// Asserts that the check lines of `out` start with `expected`, one for one.
fn assert_marks(out: &str, expected: &[&str]) {
    let marks: Vec<&str> = out.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(marks.len(), expected.len(), "{out}");
    for (line, start) in marks.iter().zip(expected) {
        assert!(
            line.starts_with(start),
            "{line:?} should start with {start:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_every_check_on_a_good_setup_and_sends_a_test_event() {
    let (ingest, files) = registered().await;
    let settings = files.write_settings(&ingest.device_url(), "");
    let (code, out) = doctor(&settings, &[]);
    assert_eq!(code, 0, "{out}");
    assert_marks(
        &out,
        &[
            "[pass] config file",
            "[pass] private key",
            "[pass] clock",
            "[pass] DNS 127.0.0.1",
            "[pass] TCP 127.0.0.1",
            "[pass] token accepted",
            "[pass] test event accepted",
        ],
    );
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

async fn registered_mqtt() -> (Ingest, DeviceFiles) {
    let ingest = Ingest::start_mqtt(SinkKind::File).await;
    let files = new_device(&ingest, None).await;
    (ingest, files)
}

/// The device's MQTT settings for `ingest`, with each `(from, to)` replaced in the text.
fn mqtt_settings(ingest: &Ingest, files: &DeviceFiles, edits: &[(String, String)]) -> PathBuf {
    let path = files.write_mqtt_settings(ingest, "", "");
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from.as_str()), "{from:?} not in\n{text}");
        text = text.replace(from.as_str(), to);
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn mqtt_port(ingest: &Ingest) -> u16 {
    ingest.mqtt_port.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_over_mqtt_passes_every_check_and_its_test_event_gets_a_puback() {
    let (ingest, files) = registered_mqtt().await;
    let settings = mqtt_settings(&ingest, &files, &[]);
    let (code, out) = doctor(&settings, &[]);
    assert_eq!(code, 0, "{out}");
    let port = mqtt_port(&ingest);
    assert_marks(
        &out,
        &[
            "[pass] config file",
            "[pass] private key",
            "[pass] clock: the device clock is 0.0 min",
            "[pass] DNS localhost",
            &format!("[pass] TCP localhost:{port}: connected"),
            &format!("[pass] TLS localhost:{port}: handshake passed"),
            "[pass] MQTT CONNECT: CONNACK 0: the bridge accepted the token of projects/",
            "[pass] test event accepted: event ",
        ],
    );
    assert!(
        out.contains("published at QoS 1 and acknowledged (PUBACK)"),
        "{out}"
    );
    let ca = ingest.mqtt_ca();
    assert!(
        out.contains(&format!("signed by a CA in {}", ca.display())),
        "{out}"
    );
    let events = file_events(&ingest.events_path());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reading["source"], "doctor");
    assert_eq!(events[0].attributes["deviceId"], files.device);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_over_mqtt_names_a_firewall_when_only_the_fallback_port_answers() {
    let (ingest, files) = registered_mqtt().await;
    let (port, blocked) = (mqtt_port(&ingest), free_port());
    let edits = [(format!("port = {port}\n"), format!("port = {blocked}\n"))];
    let settings = mqtt_settings(&ingest, &files, &edits);
    // The bridge's real port stands in for 443, which a test cannot listen on.
    let fallback = port.to_string();
    let hook = [("IOTCORE_DOCTOR_MQTT_FALLBACK_PORT", fallback.as_str())];
    let (code, out) = doctor(&settings, &hook);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "[FAIL] TCP localhost:{blocked}: port {blocked}: connection refused (nothing listens \
             there, or a firewall rejects it); port {port} of the same host answers, so a \
             firewall blocking outgoing port {blocked} is the likely cause (the checks below use \
             port {port})"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "fix: set mqtt.port = {port} in the settings (IoT Core served MQTT on 443 too), or \
             have outgoing TCP port {blocked} opened in the firewall"
        )),
        "{out}"
    );
    // The rest runs on the port that answers, so the owner knows the fix will work.
    assert!(
        out.contains(&format!("[pass] TLS localhost:{port}")),
        "{out}"
    );
    assert!(out.contains("[pass] MQTT CONNECT: CONNACK 0"), "{out}");
    assert!(out.contains("[pass] test event accepted"), "{out}");

    // Nothing answers on either port: no firewall is blamed.
    let dead = free_port().to_string();
    let hook = [("IOTCORE_DOCTOR_MQTT_FALLBACK_PORT", dead.as_str())];
    let (code, out) = doctor(&settings, &hook);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "[FAIL] TCP localhost:{blocked}: port {blocked}: connection refused (nothing listens \
             there, or a firewall rejects it); port {dead}: connection refused"
        )),
        "{out}"
    );
    assert!(out.contains("fix: is the MQTT bridge running"), "{out}");
    assert!(!out.contains("likely cause"), "{out}");
    assert!(
        out.contains("[skip] MQTT CONNECT: the bridge cannot be reached"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_over_mqtt_names_a_ca_file_that_is_not_the_bridges() {
    let (ingest, files) = registered_mqtt().await;
    // A plausible slip: the device's own certificate, next to its key, given as the CA.
    let wrong_ca = files.path("keys/cert.pem");
    let ca = ingest.mqtt_ca().display().to_string();
    let edits = [(ca, wrong_ca.display().to_string())];
    let settings = mqtt_settings(&ingest, &files, &edits);
    let (code, out) = doctor(&settings, &[]);
    assert_eq!(code, 1, "{out}");
    let port = mqtt_port(&ingest);
    assert!(
        out.contains(&format!(
            "[FAIL] TLS localhost:{port}: the bridge's certificate is not signed by a CA in {} \
             (unknown issuer): that CA file is not this bridge's",
            wrong_ca.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(
            "fix: point ca_file at the bridge's CA: for ingest's own certificate, the \
                      ca.pem it writes in its --mqtt-tls-dir"
        ),
        "{out}"
    );
    assert!(
        out.contains("[skip] MQTT CONNECT: no TLS connection (see above)"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_over_mqtt_explains_connack_4_for_an_expired_token() {
    let (ingest, files) = registered_mqtt().await;
    let settings = mqtt_settings(&ingest, &files, &[]);
    // Two hours behind: the one-hour token expired an hour before it was made.
    let (code, out) = doctor(&settings, &[("IOTCORE_CLOCK_OFFSET_SECS", "-7200")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[FAIL] clock: the device clock is 120.0 min behind the server's"),
        "{out}"
    );
    assert!(
        out.contains(
            "[FAIL] MQTT CONNECT: CONNACK 4 (bad user name or password): the bridge refused the \
             token; asked over HTTPS with the same token, the service says: UNAUTHENTICATED: \
             the token expired"
        ),
        "{out}"
    );
    assert!(out.contains("fix: set the device clock right"), "{out}");
    assert!(
        out.contains("[skip] test event accepted: the CONNECT was refused"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_over_mqtt_explains_connack_4_for_a_key_the_registry_does_not_know() {
    let (ingest, files) = registered_mqtt().await;
    let stranger = DeviceFiles::new();
    let key = |f: &DeviceFiles| f.path("keys/private.pem").display().to_string();

    // Without the HTTPS endpoint, CONNACK 4 is all there is: the likely causes, honestly.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let edits = [(key(&files), key(&stranger)), (ingest.device_url(), dead)];
    let settings = mqtt_settings(&ingest, &files, &edits);
    let (code, out) = doctor(&settings, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[pass] TLS localhost"), "{out}");
    assert!(
        out.contains("[skip] clock: MQTT carries no time, and the HTTPS endpoint did not answer"),
        "{out}"
    );
    assert!(
        out.contains(
            "[FAIL] MQTT CONNECT: CONNACK 4 (bad user name or password): the bridge refused the \
             token\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "fix: the likely causes: this key is not registered for the device, or its \
             credential has expired"
        ),
        "{out}"
    );
    let (device, registry) = (&files.device, &files.registry);
    let where_to_look = format!("`ingest devices get {device} --registry {registry}`");
    assert!(out.contains(&where_to_look), "{out}");
    // And the operator does find the reason there.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let json = ingest.device_json(registry, device).await;
        if let Some(message) = json["lastErrorStatus"]["message"].as_str() {
            assert!(message.contains("signature is not valid"), "{json}");
            break;
        }
        assert!(Instant::now() < deadline, "no last error: {json}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // With it, the same token asked over HTTPS gives the exact reason, and its fix.
    let settings = mqtt_settings(&ingest, &files, &[(key(&files), key(&stranger))]);
    let (code, out) = doctor(&settings, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "[FAIL] MQTT CONNECT: CONNACK 4 (bad user name or password): the bridge refused the \
             token; asked over HTTPS with the same token, the service says: UNAUTHENTICATED: \
             the token's signature is not valid"
        ),
        "{out}"
    );
    assert!(
        out.contains("fix: this key is not registered for the device"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_over_mqtt_explains_connack_5_when_mqtt_is_off_for_the_registry() {
    let (ingest, files) = registered_mqtt().await;
    ingest
        .cli(&["registries", "update", &files.registry, "--no-mqtt"])
        .await;
    let settings = mqtt_settings(&ingest, &files, &[]);
    let (code, out) = doctor(&settings, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "[FAIL] MQTT CONNECT: CONNACK 5 (not authorised): unknown or blocked device, or MQTT \
             disabled for the registry; the HTTPS bridge accepts the same token"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "fix: the device is known and not blocked, so MQTT is off for its registry: ask the \
             operator to turn it on (`ingest registries update {} --mqtt`)",
            files.registry
        )),
        "{out}"
    );
}
