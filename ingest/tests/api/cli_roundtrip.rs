//! The operator CLI against a real `ingest serve`: each test starts the binary on a free port
//! with a fresh SQLite registry, drives it with the same binary's admin subcommands, and checks
//! exit codes and what a person or a script would read. Keys come from the shared JWT vectors.

use crate::support::spawn_ingest;
use testkit::IngestProcess;

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ingest");

/// Environment that would otherwise leak into the server or the CLI from the developer's shell.
const FOREIGN_ENV: [&str; 10] = [
    "ADMIN_ADDR",
    "ADMIN_TOKEN",
    "ADMIN_TRUST_CLOUD_RUN_IAM",
    "REGISTRY",
    "INGEST_ADMIN_URL",
    "INGEST_PROJECT",
    "INGEST_REGION",
    "INGEST_ID_TOKEN",
    "INGEST_OUTPUT",
    "RUST_LOG",
];

/// A running `ingest serve` with only the admin API.
struct Server {
    process: IngestProcess,
    admin_url: String,
}

impl Server {
    fn start() -> Self {
        let process = spawn_ingest(&["--role", "admin"], &[]);
        let admin_url = process.admin_url();
        Self { process, admin_url }
    }

    /// Runs the CLI against this server with the test project and region.
    fn cli(&self, args: &[&str]) -> Run {
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--admin-url",
            &self.admin_url,
            "--project",
            "demo-project",
            "--region",
            "us-central1",
        ]);
        run(&all)
    }

    /// Writes a key from the vectors to a file named after it.
    fn key_file(&self, name: &str) -> PathBuf {
        let path = self.process.path(&format!("{name}.pem"));
        std::fs::write(&path, crate::support::key(name)).unwrap();
        path
    }

    fn create_registry(&self) {
        let run = self.cli(&[
            "registries",
            "create",
            "reg-1",
            "--event-topic",
            "projects/demo-project/topics/events",
        ]);
        run.assert_success();
    }

    fn create_device(&self, device: &str, key: &str, format: &str) -> Run {
        let path = self.key_file(key);
        self.cli(&[
            "devices",
            "create",
            device,
            "--registry",
            "reg-1",
            "--public-key",
            path.to_str().unwrap(),
            "--format",
            format,
        ])
    }
}

/// One finished CLI run.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn assert_success(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }

    fn assert_refused(&self, status: &str) -> &Self {
        assert_eq!(self.code, 1, "expected a refusal: {self:#?}");
        assert!(
            self.stderr.starts_with(&format!("error: {status}: ")),
            "expected `error: {status}: …`: {self:#?}"
        );
        self
    }
}

fn run(args: &[&str]) -> Run {
    let mut command = Command::new(BIN);
    command.args(args);
    for name in FOREIGN_ENV {
        command.env_remove(name);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("running the ingest CLI");
    Run {
        code: status.code().expect("the CLI exited by itself"),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The value of a `label: value` line of a text summary.
fn field<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.trim_start().strip_prefix(label))
        .map(str::trim)
}

const ALL_FORMATS: [(&str, &str, &str); 4] = [
    ("dev-rsa", "rsa_public", "RSA_PEM"),
    ("dev-rsa-cert", "rsa_cert", "RSA_X509_PEM"),
    ("dev-ec", "ec_public", "ES256_PEM"),
    ("dev-ec-cert", "ec_cert", "ES256_X509_PEM"),
];

#[test]
fn devices_with_each_key_format_are_created_shown_and_listed() {
    let server = Server::start();
    server.create_registry();
    for (device, key, format) in ALL_FORMATS {
        let created = server.create_device(device, key, format);
        created.assert_success();
        assert!(created.stdout.contains(device), "{created:#?}");
    }

    let shown = server.cli(&["devices", "get", "dev-rsa-cert", "--registry", "reg-1"]);
    shown.assert_success();
    assert!(shown.stdout.contains("device dev-rsa-cert"), "{shown:#?}");
    assert!(shown.stdout.contains("RSA_X509_PEM"), "{shown:#?}");
    assert_eq!(field(&shown.stdout, "blocked:"), Some("no"), "{shown:#?}");
    // Presence, from the fleet's records: this device never connected over MQTT.
    assert!(
        shown
            .stdout
            .contains("connected:      no (no MQTT connection anywhere"),
        "{shown:#?}"
    );

    let listed = server.cli(&["devices", "list", "--registry", "reg-1", "--page-size", "1"]);
    listed.assert_success();
    for (device, _, _) in ALL_FORMATS {
        assert!(
            listed.stdout.contains(device),
            "{device} missing: {listed:#?}"
        );
    }
    assert_eq!(listed.stdout.lines().count(), 4, "{listed:#?}");
}

#[test]
fn a_certificate_uploaded_as_rsa_pem_is_refused_naming_the_cause() {
    let server = Server::start();
    server.create_registry();
    let refused = server.create_device("dev-wrong", "rsa_cert", "RSA_PEM");
    refused.assert_refused("INVALID_ARGUMENT");
    assert!(
        refused.stderr.to_lowercase().contains("certificate"),
        "the message should say the file is a certificate: {refused:#?}"
    );
    let missing = server.cli(&["devices", "get", "dev-wrong", "--registry", "reg-1"]);
    missing.assert_refused("NOT_FOUND");
}

#[test]
fn a_blocked_device_reads_back_as_blocked_and_can_be_unblocked() {
    let server = Server::start();
    server.create_registry();
    server
        .create_device("dev-ec", "ec_public", "ES256_PEM")
        .assert_success();

    let blocked = server.cli(&["devices", "block", "dev-ec", "--registry", "reg-1"]);
    blocked.assert_success();
    assert!(
        blocked.stdout.contains("blocked device dev-ec"),
        "{blocked:#?}"
    );

    let json = server.cli(&[
        "devices",
        "get",
        "dev-ec",
        "--registry",
        "reg-1",
        "--output",
        "json",
    ]);
    json.assert_success();
    let device: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(device["blocked"], true, "{json:#?}");
    assert!(
        json.stdout.contains("\"blocked\": true"),
        "pretty-printed: {json:#?}"
    );

    server
        .cli(&["devices", "unblock", "dev-ec", "--registry", "reg-1"])
        .assert_success();
    let json = server.cli(&[
        "devices",
        "get",
        "dev-ec",
        "--registry",
        "reg-1",
        "-o",
        "json",
    ]);
    let device: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_ne!(device["blocked"], true, "{json:#?}");
}

#[test]
fn config_versions_advance_and_a_stale_version_is_refused() {
    let server = Server::start();
    server.create_registry();
    server
        .create_device("dev-rsa", "rsa_public", "RSA_PEM")
        .assert_success();
    let config = |extra: &[&str]| {
        let mut args = vec!["config", "set", "dev-rsa", "--registry", "reg-1"];
        args.extend(extra);
        server.cli(&args)
    };

    let first = config(&["--data", "{\"fan\": \"low\"}"]);
    first.assert_success();
    // The device was created with an empty version 1.
    assert!(first.stdout.contains("version 2"), "{first:#?}");
    let file = server.process.path("config.json");
    std::fs::write(&file, "{\"fan\": \"high\"}").unwrap();
    // At once: a device's config may change once a second, and the CLI waits that out itself.
    let second = config(&["--file", file.to_str().unwrap(), "--version-to-update", "2"]);
    second.assert_success();
    assert!(second.stdout.contains("version 3"), "{second:#?}");

    let stale = config(&["--data", "{\"fan\": \"off\"}", "--version-to-update", "2"]);
    assert_eq!(stale.code, 1, "{stale:#?}");
    assert!(stale.stderr.starts_with("error: "), "{stale:#?}");
    assert!(
        stale.stderr.contains("version"),
        "the refusal names the version: {stale:#?}"
    );

    let versions = server.cli(&["config", "versions", "dev-rsa", "--registry", "reg-1"]);
    versions.assert_success();
    let lines: Vec<&str> = versions.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{versions:#?}");
    assert!(
        lines[0].starts_with("version 3") && lines[0].contains("high"),
        "{versions:#?}"
    );
    assert!(
        lines[1].starts_with("version 2") && lines[1].contains("low"),
        "{versions:#?}"
    );
    assert!(lines[2].starts_with("version 1"), "{versions:#?}");

    let latest = server.cli(&["config", "get", "dev-rsa", "--registry", "reg-1"]);
    latest.assert_success();
    assert_eq!(
        latest.stdout, "{\"fan\": \"high\"}",
        "stdout is the payload alone"
    );
    assert!(latest.stderr.contains("version 3"), "{latest:#?}");
}

#[test]
fn a_command_for_an_absent_device_is_refused_or_queued_with_a_ttl_and_listed() {
    let server = Server::start();
    server.create_registry();
    server
        .create_device("dev-rsa", "rsa_public", "RSA_PEM")
        .assert_success();
    let send = |extra: &[&str]| {
        let mut args = vec!["commands", "send", "dev-rsa", "--registry", "reg-1"];
        args.extend(extra);
        server.cli(&args)
    };

    let refused = send(&["--data", "reboot"]);
    refused.assert_refused("FAILED_PRECONDITION");
    assert!(refused.stderr.contains("ttl"), "{refused:#?}");

    let queued = send(&["--data", "reboot", "--subfolder", "power", "--ttl", "2h"]);
    queued.assert_success();
    assert!(queued.stdout.contains("queued as #1"), "{queued:#?}");
    let bad = send(&["--data", "reboot", "--ttl", "2 hours"]);
    assert_eq!(bad.code, 2, "{bad:#?}");
    assert!(bad.stderr.contains("not a duration"), "{bad:#?}");

    let list = server.cli(&["commands", "list", "dev-rsa", "--registry", "reg-1"]);
    list.assert_success();
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{list:#?}");
    for part in ["#1", "pending until", "6 bytes", "power", "\"reboot\""] {
        assert!(lines[0].contains(part), "{part} in {list:#?}");
    }
}

#[test]
fn registries_can_be_updated_listed_and_deleted_once_empty() {
    let server = Server::start();
    server.create_registry();
    let updated = server.cli(&[
        "registries",
        "update",
        "reg-1",
        "--no-mqtt",
        "--state-topic",
        "projects/demo-project/topics/state",
    ]);
    updated.assert_success();
    assert!(
        updated.stdout.contains("MQTT bridge:   off"),
        "{updated:#?}"
    );
    assert!(
        updated
            .stdout
            .contains("projects/demo-project/topics/state"),
        "{updated:#?}"
    );
    assert!(
        updated
            .stdout
            .contains("projects/demo-project/topics/events"),
        "events kept: {updated:#?}"
    );

    let nothing = server.cli(&["registries", "update", "reg-1"]);
    assert_eq!(
        nothing.code, 2,
        "an update naming no field is a usage error: {nothing:#?}"
    );

    let listed = server.cli(&["registries", "list"]);
    listed.assert_success();
    assert!(listed.stdout.starts_with("reg-1"), "{listed:#?}");

    server
        .create_device("dev-ec", "ec_cert", "ES256_X509_PEM")
        .assert_success();
    server
        .cli(&["registries", "delete", "reg-1"])
        .assert_refused("FAILED_PRECONDITION");
    server
        .cli(&["devices", "delete", "dev-ec", "--registry", "reg-1"])
        .assert_success();
    server
        .cli(&["registries", "delete", "reg-1"])
        .assert_success();
    server
        .cli(&["registries", "get", "reg-1"])
        .assert_refused("NOT_FOUND");
}

#[test]
fn keys_can_be_added_to_and_cleared_from_a_device() {
    let server = Server::start();
    server.create_registry();
    server
        .create_device("dev-rsa", "rsa_public", "RSA_PEM")
        .assert_success();
    let cert = server.key_file("rsa_cert");
    let added = server.cli(&[
        "devices",
        "credentials",
        "add",
        "dev-rsa",
        "--registry",
        "reg-1",
        "--public-key",
        cert.to_str().unwrap(),
        "--format",
        "RSA_X509_PEM",
        "--expires",
        "2030-01-01T00:00:00Z",
    ]);
    added.assert_success();
    assert!(
        added.stdout.contains("RSA_PEM, never expires"),
        "{added:#?}"
    );
    assert!(
        added
            .stdout
            .contains("RSA_X509_PEM, expires 2030-01-01T00:00:00Z"),
        "{added:#?}"
    );

    let cleared = server.cli(&[
        "devices",
        "credentials",
        "clear",
        "dev-rsa",
        "--registry",
        "reg-1",
    ]);
    cleared.assert_success();
    assert!(
        cleared.stdout.contains("keys:            none"),
        "{cleared:#?}"
    );
}

#[test]
fn a_missing_key_file_is_named_in_the_error() {
    let server = Server::start();
    server.create_registry();
    let run = server.cli(&[
        "devices",
        "create",
        "dev-1",
        "--registry",
        "reg-1",
        "--public-key",
        "/nonexistent/rsa_cert.pem",
        "--format",
        "RSA_X509_PEM",
    ]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr
            .contains("reading public key file /nonexistent/rsa_cert.pem"),
        "{run:#?}"
    );
}

#[test]
fn an_unreachable_admin_api_exits_2_with_a_hint() {
    // A port that was free a moment ago refuses connections.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = run(&[
        "registries",
        "list",
        "--admin-url",
        &url,
        "--project",
        "demo-project",
    ]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr
            .starts_with(&format!("error: cannot reach the admin API at {url}")),
        "{run:#?}"
    );
    assert!(run.stderr.contains("ingest serve"), "{run:#?}");
}

#[test]
fn the_help_of_devices_create_explains_every_key_format() {
    let help = run(&["devices", "create", "--help"]);
    help.assert_success();
    for format in ["RSA_PEM", "RSA_X509_PEM", "ES256_PEM", "ES256_X509_PEM"] {
        assert!(help.stdout.contains(format), "{format} missing from help");
    }
    assert!(
        help.stdout.contains("--public-key <PEM_FILE>"),
        "{}",
        help.stdout
    );
    assert!(help.stdout.contains("openssl req -x509"), "{}", help.stdout);
    assert!(help.stdout.contains("Examples:"), "{}", help.stdout);
}

#[test]
fn usage_mistakes_exit_2() {
    let missing_project = run(&["devices", "list", "--registry", "reg-1"]);
    assert_eq!(missing_project.code, 2, "{missing_project:#?}");
    assert!(
        missing_project.stderr.contains("--project"),
        "{missing_project:#?}"
    );

    let unpaired = run(&[
        "devices",
        "create",
        "dev-1",
        "--registry",
        "reg-1",
        "--project",
        "demo-project",
        "--public-key",
        "a.pem",
        "--public-key",
        "b.pem",
        "--format",
        "RSA_PEM",
    ]);
    assert_eq!(unpaired.code, 2, "{unpaired:#?}");
    assert!(
        unpaired.stderr.contains("one --format per --public-key"),
        "{unpaired:#?}"
    );
}

#[test]
fn iam_grants_a_role_that_the_server_then_enforces_on_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("admin-tokens");
    let (owner, viewer) = (
        "owner-token-0123456789abcdef",
        "viewer-token-0123456789abcdef",
    );
    std::fs::write(
        &tokens,
        format!("{owner} user:owner@example.com roles/owner\n{viewer} user:viewer@example.com\n"),
    )
    .unwrap();
    let process = spawn_ingest(
        &[
            "--role",
            "admin",
            "--admin-tokens-file",
            tokens.to_str().unwrap(),
        ],
        &[],
    );
    let admin_url = process.admin_url();
    let as_token = |token: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--admin-url", &admin_url, "--project", "demo-project"]);
        all.extend(["--region", "us-central1", "--admin-token", token]);
        run(&all)
    };
    as_token(owner, &["registries", "create", "reg-1"]).assert_success();

    let empty = as_token(owner, &["iam", "get", "reg-1"]);
    empty.assert_success();
    assert!(
        empty.stdout.contains("(etag ACAB)") && empty.stdout.contains("only owners"),
        "{empty:#?}"
    );
    let before = as_token(viewer, &["devices", "list", "--registry", "reg-1"]);
    before.assert_refused("PERMISSION_DENIED");
    assert!(
        before.stderr.contains("'cloudiot.devices.list'"),
        "{before:#?}"
    );

    let granted = as_token(
        owner,
        &[
            "iam",
            "add",
            "reg-1",
            "--member",
            "user:viewer@example.com",
            "--role",
            "roles/cloudiot.viewer",
        ],
    );
    granted.assert_success();
    assert!(
        granted
            .stdout
            .contains("roles/cloudiot.viewer: user:viewer@example.com"),
        "{granted:#?}"
    );
    as_token(viewer, &["devices", "list", "--registry", "reg-1"]).assert_success();
    let tested = as_token(
        viewer,
        &[
            "iam",
            "test",
            "reg-1",
            "cloudiot.devices.list",
            "cloudiot.devices.create",
        ],
    );
    tested.assert_success();
    assert_eq!(
        tested.stdout, "yes  cloudiot.devices.list\nno   cloudiot.devices.create\n",
        "{tested:#?}"
    );
    as_token(viewer, &["iam", "get", "reg-1"]).assert_refused("PERMISSION_DENIED");

    // A policy file read before the grant carries the old etag: setting it would undo the grant
    // unseen, so it is refused.
    let stale = dir.path().join("stale.json");
    std::fs::write(&stale, r#"{"bindings": [], "etag": "ACAB"}"#).unwrap();
    let refused = as_token(owner, &["iam", "set", "reg-1", stale.to_str().unwrap()]);
    refused.assert_refused("ABORTED");
    assert!(
        refused.stderr.contains("changed since you read it"),
        "{refused:#?}"
    );

    let revoked = as_token(
        owner,
        &[
            "iam",
            "remove",
            "reg-1",
            "--member",
            "user:viewer@example.com",
            "--role",
            "roles/cloudiot.viewer",
        ],
    );
    revoked.assert_success();
    as_token(viewer, &["devices", "list", "--registry", "reg-1"])
        .assert_refused("PERMISSION_DENIED");
}

#[test]
fn a_gateway_is_created_devices_are_bound_listed_and_unbound() {
    let server = Server::start();
    server.create_registry();
    let key = server.key_file("rsa_public");
    let key = key.to_str().unwrap();
    let created = server.cli(&[
        "devices",
        "create",
        "hall-gw",
        "--registry",
        "reg-1",
        "--public-key",
        key,
        "--format",
        "RSA_PEM",
        "--gateway",
        "--gateway-auth-method",
        "device_auth_token_only",
    ]);
    created.assert_success();
    assert!(
        created
            .stdout
            .contains("gateway:         yes, its devices attach by DEVICE_AUTH_TOKEN_ONLY"),
        "{created:#?}"
    );
    server
        .create_device("thermo-3", "rsa_public", "RSA_PEM")
        .assert_success();
    server
        .cli(&[
            "gateways",
            "bind",
            "hall-gw",
            "thermo-3",
            "--registry",
            "reg-1",
        ])
        .assert_success();

    let gateways = server.cli(&["gateways", "list", "--registry", "reg-1"]);
    gateways.assert_success();
    assert_eq!(gateways.stdout.lines().count(), 1, "{gateways:#?}");
    assert!(gateways.stdout.starts_with("hall-gw "), "{gateways:#?}");
    let bound = server.cli(&[
        "gateways",
        "list",
        "--registry",
        "reg-1",
        "--gateway",
        "hall-gw",
    ]);
    assert!(bound.stdout.starts_with("thermo-3 "), "{bound:#?}");
    let of = server.cli(&[
        "gateways",
        "list",
        "--registry",
        "reg-1",
        "--device",
        "thermo-3",
    ]);
    assert!(of.stdout.starts_with("hall-gw "), "{of:#?}");

    let refused = server.cli(&["devices", "delete", "hall-gw", "--registry", "reg-1"]);
    refused.assert_refused("FAILED_PRECONDITION");
    assert!(refused.stderr.contains("unbind"), "{refused:#?}");
    server
        .cli(&[
            "gateways",
            "unbind",
            "hall-gw",
            "thermo-3",
            "--registry",
            "reg-1",
        ])
        .assert_success();
    let none = server.cli(&[
        "gateways",
        "list",
        "--registry",
        "reg-1",
        "--gateway",
        "hall-gw",
    ]);
    assert_eq!(
        none.stdout, "no devices are bound to gateway hall-gw\n",
        "{none:#?}"
    );
    let again = server.cli(&[
        "gateways",
        "unbind",
        "hall-gw",
        "thermo-3",
        "--registry",
        "reg-1",
    ]);
    again.assert_refused("FAILED_PRECONDITION");
    assert!(again.stderr.contains("is not bound"), "{again:#?}");
}
