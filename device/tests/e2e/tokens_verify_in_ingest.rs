//! Tokens the device agent signs must pass ingest's own verifier. Each test runs the real
//! `iotcore-device` binary — `keygen` for fresh keys, `token` for a JWT — and checks the token
//! with `ingest::auth::jwt::verify` against the public key or certificate as ingest parses it
//! when an operator registers it. Only this test depends on ingest (a dev-dependency): the agent
//! itself never does, and the two meet through the binary, as they do in the field.

use std::path::Path;
use std::process::Command;

use ingest::auth::credentials::parse_credential;
use ingest::auth::jwt::{self, DeviceKey, TokenError, VerifiedToken};
use shared::jwt::Algorithm;
use shared::{ProjectId, PublicKeyFormat};
use testkit::{PROJECT, key};

/// Runs `iotcore-device` with no IOTCORE_* settings from the developer's shell; returns stdout.
fn device(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_iotcore-device"))
        .args(args)
        .env_remove("IOTCORE_PROJECT")
        .env_remove("IOTCORE_PRIVATE_KEY")
        .output()
        .expect("running iotcore-device");
    assert!(
        output.status.success(),
        "iotcore-device {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A fresh token from the binary, signed with the key at `private_key`.
fn token(private_key: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "token",
        "--project",
        PROJECT,
        "--private-key",
        private_key.to_str().unwrap(),
    ];
    args.extend(extra);
    let printed = device(&args);
    assert_eq!(printed.lines().count(), 1, "one line: {printed:?}");
    printed.trim_end().to_owned()
}

fn verify_as(
    token: &str,
    project: &str,
    format: PublicKeyFormat,
    pem: &str,
) -> Result<VerifiedToken, TokenError> {
    let key = parse_credential(format, pem)
        .unwrap_or_else(|err| panic!("ingest refuses to register the {format:?} key: {err}"));
    let keys = [DeviceKey {
        key,
        expires_at: None,
    }];
    let project = ProjectId::parse(project).unwrap();
    jwt::verify(token, &project, &keys, jiff::Timestamp::now().as_second())
}

fn verify(token: &str, format: PublicKeyFormat, pem: &str) -> VerifiedToken {
    verify_as(token, PROJECT, format, pem)
        .unwrap_or_else(|err| panic!("ingest refused a device token ({format:?}): {err}"))
}

#[test]
fn tokens_signed_with_keys_from_keygen_pass_ingest_verification() {
    let cases = [
        (
            "ES256",
            Algorithm::ES256,
            PublicKeyFormat::Es256Pem,
            PublicKeyFormat::Es256X509Pem,
            "ES256_PEM",
        ),
        (
            "RS256",
            Algorithm::RS256,
            PublicKeyFormat::RsaPem,
            PublicKeyFormat::RsaX509Pem,
            "RSA_PEM",
        ),
    ];
    for (name, algorithm, format, x509_format, format_name) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("keys");
        let printed = device(&[
            "keygen",
            "--algorithm",
            name,
            "--out",
            out.to_str().unwrap(),
        ]);
        let public_path = out.join("public.pem");
        assert_eq!(
            printed.trim_end(),
            format!(
                "ingest devices create DEVICE --registry REGISTRY --public-key {} --format {format_name}",
                public_path.display()
            )
        );
        let token = token(&out.join("private.pem"), &[]);
        let public = std::fs::read_to_string(&public_path).unwrap();
        let verified = verify(&token, format, &public);
        assert_eq!(verified.alg, algorithm);
        let cert = std::fs::read_to_string(out.join("cert.pem")).unwrap();
        assert_eq!(verify(&token, x509_format, &cert).alg, algorithm);
    }
}

#[test]
fn tokens_signed_with_openssl_made_keys_pass_ingest_verification() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("rsa_private", PublicKeyFormat::RsaPem, "rsa_public"),
        ("rsa_private", PublicKeyFormat::RsaX509Pem, "rsa_cert"),
        ("ec_private", PublicKeyFormat::Es256Pem, "ec_public"),
        ("ec_private", PublicKeyFormat::Es256X509Pem, "ec_cert"),
        ("ec_private_pkcs8", PublicKeyFormat::Es256Pem, "ec_public"),
    ];
    for (private, format, public) in cases {
        let path = dir.path().join(format!("{private}.pem"));
        std::fs::write(&path, key(private)).unwrap();
        let token = token(&path, &[]);
        verify(&token, format, &key(public));
    }
}

#[test]
fn a_token_lives_as_long_as_asked_and_names_its_project() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ec_private.pem");
    std::fs::write(&path, key("ec_private")).unwrap();
    let token = token(&path, &["--lifetime", "20m"]);
    let verified = verify(&token, PublicKeyFormat::Es256Pem, &key("ec_public"));
    assert_eq!(verified.exp - verified.iat, 20 * 60);

    let refused = verify_as(
        &token,
        "other-project",
        PublicKeyFormat::Es256Pem,
        &key("ec_public"),
    )
    .unwrap_err();
    assert_eq!(refused.reason(), "wrong_audience", "{refused}");
}

#[test]
fn a_token_does_not_verify_against_another_devices_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rsa_private.pem");
    std::fs::write(&path, key("rsa_private")).unwrap();
    let token = token(&path, &[]);
    let refused = verify_as(
        &token,
        PROJECT,
        PublicKeyFormat::RsaPem,
        &key("rsa2_public"),
    )
    .unwrap_err();
    assert_eq!(refused.reason(), "bad_signature", "{refused}");
}
