//! Google's official IoT Core admin client, `google-cloud-iot` 2.9.2 for Python, against a real
//! `ingest serve` with a tokens file: `tests/python/cloudiot_admin_client.py` drives registries,
//! devices with all four key formats, gets with a field mask, lists with each id filter and page
//! tokens, the registry's IAM policy (set, read, tested, and enforced on a second client whose
//! token's principal holds only what the policy grants), device updates, conditional configs,
//! states and refusals through the library's REST transport, which
//! sends `$alt=json;enum-encoding=int` and enums as numbers, and checks every answer. This test
//! then reads what the script made through the raw API, with and without numbers for enums, and
//! checks that partial responses (`$fields`) are refused by name. Then it records two states
//! through the HTTP device bridge, and the script's `finish` phase reads them back newest first
//! and deletes every device and the registry. A second test runs the script's `anonymous` phase
//! with `AnonymousCredentials` against an `ingest serve` that has no tokens at all.

use std::process::Output;
use std::time::Duration;

use crate::support::device::Signer;
use crate::support::{PROJECT, REGION, spawn_ingest};
use serde_json::Value;
use shared::proto3::encode_base64;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/python/cloudiot_admin_client.py"
);
const REGISTRY: &str = "reg-1";
/// The tokens the script's two clients present: an owner's, and one whose principal holds no
/// project role.
const OWNER_TOKEN: &str = "owner-token-0123456789abcdef";
const VIEWER_TOKEN: &str = "viewer-token-0123456789abcdef";

/// Runs the script's `phase` against `admin_url` with the common flags and `extra` ones.
async fn run_script(
    phase: &str,
    admin_url: &str,
    registry: &str,
    keys: &std::path::Path,
    extra: &[&str],
) -> Output {
    let python = std::env::var_os("IOTCORE_PYTHON").unwrap_or_else(|| {
        panic!(
            "IOTCORE_PYTHON is not set: run the tests through scripts/test, or \
             `export IOTCORE_PYTHON=$(scripts/python-env)` first (it installs google-cloud-iot)"
        )
    });
    let mut command = tokio::process::Command::new(python);
    command
        .arg(SCRIPT)
        .args(["--phase", phase])
        .args([
            "--endpoint",
            admin_url,
            "--project",
            PROJECT,
            "--region",
            REGION,
        ])
        .args(["--registry", registry, "--keys"])
        .arg(keys)
        .args(["--topic", &format!("projects/{PROJECT}/topics/events")])
        .args(extra)
        // No proxy settings from the shell may divert loopback requests.
        .env_clear()
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the Python client finished within 2 minutes")
        .expect("running the Python client")
}

/// The script's report line, after asserting it passed every check.
fn report_of(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the client's checks failed (exit {:?}):\n{stdout}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|line| serde_json::from_str::<Value>(line).ok())
        .and_then(|line| line.get("report").cloned())
        .unwrap_or_else(|| panic!("no report line in {stdout}"))
}

/// The keys of the four formats, as the script reads them.
fn write_keys(dir: &std::path::Path) {
    for key in ["rsa_public", "rsa_cert", "ec_public", "ec_cert"] {
        let path = dir.join(format!("{key}.pem"));
        std::fs::write(path, crate::support::key(key)).unwrap();
    }
}

async fn get(http: &reqwest::Client, url: String) -> (u16, Value) {
    let response = http.get(url).bearer_auth(OWNER_TOKEN).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn googles_admin_client_library_manages_registries_devices_and_configs() {
    let keys = tempfile::tempdir().unwrap();
    let tokens = keys.path().join("admin-tokens");
    std::fs::write(
        &tokens,
        format!(
            "{OWNER_TOKEN} user:owner@example.com roles/owner\n\
             {VIEWER_TOKEN} user:viewer@example.com\n"
        ),
    )
    .unwrap();
    let tokens = tokens.to_str().unwrap();
    // Both listeners: the device bridge records the states the script's last phase reads.
    let sink = format!("--sink=file:{}", keys.path().join("events.jsonl").display());
    let ingest = spawn_ingest(&[&sink, "--admin-tokens-file", tokens], &[]);
    write_keys(keys.path());
    let tokens = ["--token", OWNER_TOKEN, "--viewer-token", VIEWER_TOKEN];
    let admin_url = ingest.admin_url();
    let output = run_script("main", &admin_url, REGISTRY, keys.path(), &tokens).await;
    let report = report_of(&output);

    // What the library made reads back through the raw API, by numeric id.
    let http = reqwest::Client::new();
    let base = format!(
        "{}/v1/projects/{PROJECT}/locations/{REGION}/registries/{REGISTRY}",
        ingest.admin_url()
    );
    let num_id = report["numIds"]["dev-rsa"].as_str().unwrap();
    let (status, device) = get(&http, format!("{base}/devices/{num_id}")).await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["id"], "dev-rsa");
    assert_eq!(device["blocked"], true);
    assert_eq!(device["credentials"][0]["publicKey"]["format"], "RSA_PEM");
    assert_eq!(device["config"]["binaryData"], "ZmFuPWhpZ2g="); // fan=high
    let (_, registry) = get(&http, base.clone()).await;
    assert_eq!(
        (
            &registry["logLevel"],
            &registry["httpConfig"]["httpEnabledState"]
        ),
        (&Value::from("DEBUG"), &Value::from("HTTP_ENABLED"))
    );

    // The same answers with enums as numbers, as the library asks for them.
    let int = "%24alt=json%3Benum-encoding%3Dint";
    let (_, device) = get(&http, format!("{base}/devices/{num_id}?{int}")).await;
    assert_eq!(device["credentials"][0]["publicKey"]["format"], 3);
    let (_, registry) = get(&http, format!("{base}?{int}")).await;
    assert_eq!(
        (
            &registry["logLevel"],
            &registry["mqttConfig"]["mqttEnabledState"]
        ),
        (&Value::from(40), &Value::from(1))
    );
    let (_, list) = get(
        &http,
        format!("{base}/devices?fieldMask=credentials&$alt=json;enum-encoding=int"),
    )
    .await;
    let formats: Vec<&Value> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["credentials"][0]["publicKey"]["format"])
        .collect();
    assert_eq!(
        formats,
        [2, 3, 1].map(Value::from).iter().collect::<Vec<_>>()
    );
    let (_, plain) = get(&http, format!("{base}?$alt=json&$prettyPrint=false")).await;
    assert_eq!(plain["logLevel"], "DEBUG");

    let (status, refused) = get(&http, format!("{base}?%24fields=name")).await;
    assert_eq!(status, 400, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("$fields"), "{message}");

    // Two states of dev-rsa-cert through the device bridge, as the device itself would.
    let states = ["door=open", "door=shut"];
    let set_state = format!(
        "{}/v1/projects/{PROJECT}/locations/{REGION}/registries/{REGISTRY}/devices/dev-rsa-cert:setState",
        ingest.device_url()
    );
    for (n, state) in states.iter().enumerate() {
        if n > 0 {
            // A state a second, IoT Core's documented per-device rate.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let body = serde_json::json!({"state": {"binaryData": encode_base64(state.as_bytes())}});
        let token = Signer::rsa("rsa_private").fresh();
        let response = http
            .post(&set_state)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert_eq!(status, 200, "{}", response.text().await.unwrap());
    }
    let states = states.join(",");
    let finish = [&tokens[..], &["--states", &states]].concat();
    let output = run_script("finish", &admin_url, REGISTRY, keys.path(), &finish).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the client's finish phase failed (exit {:?}):\n{stdout}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    let (status, gone) = get(&http, base).await;
    assert_eq!(status, 404, "{gone}");
}

#[tokio::test]
async fn googles_admin_client_library_works_with_anonymous_credentials_on_an_open_loopback() {
    let keys = tempfile::tempdir().unwrap();
    write_keys(keys.path());
    // No tokens file: the admin API is open, on loopback only.
    let ingest = spawn_ingest(&["--role", "admin"], &[]);
    let admin_url = ingest.admin_url();
    let output = run_script("anonymous", &admin_url, "reg-anon", keys.path(), &[]).await;
    let report = report_of(&output);

    // What the anonymous client made reads back through the raw API, with no bearer token.
    let num_id = report["numIds"]["dev-anon"].as_str().unwrap();
    let url = format!(
        "{admin_url}/v1/projects/{PROJECT}/locations/{REGION}/registries/reg-anon/devices/{num_id}"
    );
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let device: Value = response.json().await.unwrap();
    assert_eq!(device["id"], "dev-anon", "{device}");
    assert_eq!(device["metadata"]["owner"], "nobody", "{device}");
    assert_eq!(
        device["credentials"][0]["publicKey"]["format"], "ES256_PEM",
        "{device}"
    );
}
