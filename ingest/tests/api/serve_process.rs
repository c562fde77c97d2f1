//! The real `ingest serve` process as Cloud Run runs it: JSON logs in Cloud Logging's layout that
//! never carry a device token or payload, even at debug level and even for refused requests, a
//! clean exit on SIGTERM after draining, a refusal to trust Cloud Run's IAM off Cloud Run, and
//! `503` for changes (and on `/readyz`) once the SQLite registry file was deleted under it, and
//! connections beyond the per-address cap named in the log, once, with the flag that lifts it.

use crate::support::device::Signer;
use crate::support::spawn_ingest;
use crate::support::{PROJECT, REGION};
use serde_json::{Value, json};

const PAYLOAD: &[u8] = b"secret-reading-7d1e";

#[tokio::test]
async fn json_logs_name_events_but_never_tokens_or_payloads_and_sigterm_exits_cleanly() {
    let mut service = spawn_ingest(
        &["--log-format", "json", "--sink=file:/dev/null"],
        &[("RUST_LOG", "debug")],
    );
    let http = reqwest::Client::new();
    let admin = format!(
        "{}/v1/projects/{PROJECT}/locations/{REGION}/registries",
        &service.admin_url()
    );
    let topic = format!("projects/{PROJECT}/topics/events");
    let registry = json!({"id": "reg-1", "eventNotificationConfigs": [{"pubsubTopicName": topic}]});
    assert!(
        http.post(&admin)
            .json(&registry)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let device = json!({"id": "dev-1", "credentials": [{"publicKey": {"format": "RSA_PEM", "key": crate::support::key("rsa_public")}}]});
    let created = http
        .post(format!("{admin}/reg-1/devices"))
        .json(&device)
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());

    let token = Signer::rsa("rsa_private").fresh();
    let publish = format!(
        "{}/v1/projects/{PROJECT}/locations/{REGION}/registries/reg-1/devices/dev-1:publishEvent",
        &service.device_url()
    );
    let body = json!({"binary_data": shared::proto3::encode_base64(PAYLOAD)});
    let accepted = http
        .post(&publish)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    let forged = format!("{token}x");
    let refused = http
        .post(&publish)
        .bearer_auth(&forged)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let status = service.terminate();
    assert!(
        status.success(),
        "ingest serve exited with {status} after SIGTERM"
    );

    let log = std::fs::read_to_string(service.path("service.log")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["severity"].is_string() && l["message"].is_string())
    );
    assert!(lines.iter().any(|l| l["message"] == "stopped"), "{log}");
    let signature = token.rsplit('.').next().unwrap();
    for secret in [
        token.as_str(),
        signature,
        &shared::proto3::encode_base64(PAYLOAD),
        std::str::from_utf8(PAYLOAD).unwrap(),
    ] {
        assert!(
            !log.contains(secret),
            "the log holds a secret ({secret}):\n{log}"
        );
    }
}

#[test]
fn trusting_cloud_run_iam_off_cloud_run_refuses_to_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(["serve", "--role", "admin", "--admin-addr", "0.0.0.0:0"])
        .arg("--admin-trust-cloud-run-iam")
        .env_remove("K_SERVICE")
        .env_remove("ADMIN_TOKEN")
        .current_dir(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!output.status.success(), "it started: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not Cloud Run") && stderr.contains("open to anyone"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_deleted_registry_file_refuses_changes_with_503_instead_of_losing_them() {
    let ingest = spawn_ingest(&["--role", "admin"], &[]);
    let http = reqwest::Client::new();
    let url = format!(
        "{}/v1/projects/{PROJECT}/locations/{REGION}/registries",
        ingest.admin_url()
    );
    let create = |id: &str| http.post(&url).json(&json!({"id": id})).send();
    assert_eq!(create("reg-1").await.unwrap().status(), 200);
    let ready = format!("{}/readyz", ingest.admin_url());
    assert_eq!(http.get(&ready).send().await.unwrap().status(), 200);

    std::fs::remove_file(ingest.path("registry.db")).unwrap();
    // A load balancer sees it too, with the cause.
    let not_ready = http.get(&ready).send().await.unwrap();
    assert_eq!(not_ready.status(), 503);
    let why = not_ready.text().await.unwrap();
    assert!(
        why.contains("registry.db") && why.contains("was deleted"),
        "{why}"
    );
    let answer = create("reg-2").await.unwrap();
    assert_eq!(answer.status(), 503);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAVAILABLE", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("registry.db") && message.contains("was deleted"),
        "{message}"
    );
}

#[tokio::test]
async fn connections_beyond_the_per_address_cap_are_named_in_the_log_once_with_the_flag() {
    let ingest = spawn_ingest(
        &["--max-connections-per-address", "1", "--log-format", "json"],
        &[],
    );
    let device = ingest.device_url();
    let addr = device.trim_start_matches("http://");
    let held = tokio::net::TcpStream::connect(addr).await.unwrap();
    for _ in 0..3 {
        let mut refused = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut refused, &mut byte),
        )
        .await
        .expect("the refused connection is closed at once");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let log = ingest.log();
    let warnings: Vec<_> = log
        .lines()
        .filter(|line| line.contains("--max-connections-per-address"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning a minute, not one per refusal:\n{log}"
    );
    let warning: Value = serde_json::from_str(warnings[0]).unwrap();
    assert_eq!(warning["severity"], "WARNING", "{warning}");
    assert_eq!(
        (&warning["ip"], &warning["limit"], &warning["refused"]),
        (&json!("127.0.0.1"), &json!(1), &json!(1)),
        "{warning}"
    );
    drop(held);
}
