//! The command line: its tree, what it accepts and refuses before any request, the files
//! `keygen` writes, and the exit code each failure gets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::CommandFactory as _;

use super::*;

const IDENTITY: [&str; 11] = [
    "--endpoint",
    "http://127.0.0.1:8080",
    "--project",
    "demo-project",
    "--region",
    "us-central1",
    "--registry",
    "reg-1",
    "--device",
    "dev-1",
    "--private-key=k.pem",
];

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    let mut all = vec!["iotcore-device"];
    all.extend(args);
    Cli::try_parse_from(all)
}

fn send_args(extra: &[&str]) -> Result<Cli, clap::Error> {
    let mut args = vec!["send"];
    args.extend(IDENTITY);
    args.extend(extra);
    parse(&args)
}

#[test]
fn the_command_tree_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn send_takes_exactly_one_payload() {
    assert!(send_args(&["--data", "x"]).is_ok());
    assert!(send_args(&["--json", "{}"]).is_ok());
    assert!(send_args(&["--file", "p.bin"]).is_ok());
    assert!(send_args(&[]).is_err());
    assert!(send_args(&["--data", "x", "--json", "{}"]).is_err());
}

#[test]
fn a_state_has_no_subfolder() {
    assert!(send_args(&["--data", "x", "--state"]).is_ok());
    assert!(send_args(&["--data", "x", "--state", "--sub-folder", "a"]).is_err());
}

#[test]
fn algorithms_are_spelled_as_iot_core_spelled_them() {
    assert!(send_args(&["--data", "x", "--algorithm", "ES256"]).is_ok());
    assert!(send_args(&["--data", "x", "--algorithm", "rs256"]).is_ok());
    assert!(send_args(&["--data", "x", "--algorithm", "HS256"]).is_err());
    assert!(parse(&["keygen", "--out", "d", "--algorithm", "RS256"]).is_ok());
}

#[test]
fn lifetimes_read_as_durations_up_to_a_day() {
    assert_eq!(parse_lifetime("1h").unwrap().as_secs(), 3600);
    assert_eq!(parse_lifetime("20m").unwrap().as_secs(), 1200);
    assert_eq!(parse_lifetime("1h30m").unwrap().as_secs(), 5400);
    assert_eq!(parse_lifetime("PT2H").unwrap().as_secs(), 7200);
    assert_eq!(parse_lifetime("600").unwrap().as_secs(), 600);
    assert_eq!(parse_lifetime("24h").unwrap().as_secs(), 86_400);
    for bad in ["25h", "0s", "-1h", "soon"] {
        assert!(parse_lifetime(bad).is_err(), "{bad}");
    }
    assert!(send_args(&["--data", "x", "--token-lifetime", "2d"]).is_err());
}

#[test]
fn an_id_breaking_iot_core_rules_is_a_usage_error() {
    let identity = IdentityArgs {
        endpoint: Url::parse("http://127.0.0.1:1").unwrap(),
        project: "demo-project".into(),
        region: "us-central1".into(),
        registry: "reg-1".into(),
        device: "goog-device".into(),
    };
    let err = identity.device_name().unwrap_err();
    assert_eq!(exit_code(&err), 2, "{err:#}");
}

#[test]
fn refusals_exit_1_and_unreachable_bridges_exit_2() {
    let refused = anyhow::Error::new(ClientError::Refused {
        status: "UNAUTHENTICATED",
        message: "expired".into(),
        reason: Some("TOKEN_EXPIRED".into()),
        http: reqwest::StatusCode::UNAUTHORIZED,
        retry_after: None,
    });
    assert_eq!(exit_code(&refused), 1);
    assert_eq!(format!("{refused:#}"), "UNAUTHENTICATED: expired");
    let unreachable = anyhow::Error::new(ClientError::Unreachable {
        url: "http://127.0.0.1:1".into(),
        reason: "Connection refused".into(),
    });
    assert_eq!(exit_code(&unreachable), 2);
    assert_eq!(exit_code(&anyhow::anyhow!("reading private key file k")), 1);
}

#[test]
fn a_json_payload_is_checked_and_sent_compact() {
    let payload = PayloadArgs {
        data: None,
        file: None,
        json: Some("{ \"a\" : [1, 2] }".into()),
    };
    assert_eq!(read_payload(&payload).unwrap(), br#"{"a":[1,2]}"#);
    let broken = PayloadArgs {
        json: Some("{".into()),
        ..payload
    };
    let err = read_payload(&broken).unwrap_err();
    assert_eq!(exit_code(&err), 2);
}

#[test]
fn keygen_writes_a_private_key_only_its_owner_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");
    let key = DeviceKey::generate(Algorithm::ES256).unwrap();
    let written = files::write_key_files(&out, &key, 1_767_225_600, false).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(&written.private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let private = fs::read_to_string(&written.private).unwrap();
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));
    let public = fs::read_to_string(&written.public).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    let cert = fs::read_to_string(&written.cert).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn keygen_never_replaces_a_key_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let first = DeviceKey::generate(Algorithm::ES256).unwrap();
    let written = files::write_key_files(dir.path(), &first, 0, false).unwrap();
    let before = fs::read(&written.private).unwrap();
    let second = DeviceKey::generate(Algorithm::ES256).unwrap();
    let err = files::write_key_files(dir.path(), &second, 0, false).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err:#}");
    assert_eq!(fs::read(&written.private).unwrap(), before);
    files::write_key_files(dir.path(), &second, 0, true).unwrap();
    assert_ne!(fs::read(&written.private).unwrap(), before);
}

#[test]
fn printed_paths_can_be_pasted_into_a_shell() {
    assert_eq!(
        files::shell_quote(Path::new("/etc/iotcore/public.pem")),
        "/etc/iotcore/public.pem"
    );
    assert_eq!(
        files::shell_quote(Path::new("my keys/it's.pem")),
        r"'my keys/it'\''s.pem'"
    );
}
