//! Helpers of ingest's own tests: an admin API spawned on `127.0.0.1:0` over a fresh SQLite
//! file, typed request helpers, and the real `ingest serve` binary of this build. What the tests
//! of other crates need too (the vectors, names, emulators, the signer) is in `testkit`.

use std::sync::Arc;

use ingest::auth::Authenticator;
use ingest::http::admin::{self, AdminAccess, AdminState};
use ingest::registry::RegistryStore;
use ingest::registry::sqlite::SqliteStore;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

pub mod device;
pub mod mqtt;
pub mod mqtt_tls;
pub mod tls_client;

use testkit::IngestProcess;
pub use testkit::{PROJECT, REGION, key};

/// `ingest serve` of this build as a child process (see [`testkit::spawn_ingest`]), with `args`
/// after the defaults and only the environment in `env`.
pub fn spawn_ingest(args: &[&str], env: &[(&str, &str)]) -> IngestProcess {
    testkit::spawn_ingest(env!("CARGO_BIN_EXE_ingest"), args, env)
}

/// A running admin API with its own database.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub registry: Arc<dyn RegistryStore>,
    pub auth: Authenticator,
    _dir: TempDir,
}

impl TestApp {
    /// Spawns the admin API with no access check (loopback).
    pub async fn spawn() -> Self {
        Self::spawn_with(AdminAccess::Loopback).await
    }

    /// Spawns the admin API with the given access rule.
    pub async fn spawn_with(access: AdminAccess) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = ingest::telemetry::init(ingest::telemetry::LogFormat::Text);
        }
        let dir = TempDir::new().unwrap();
        let store = SqliteStore::open(dir.path().join("registry.db"))
            .await
            .unwrap();
        let registry: Arc<dyn RegistryStore> = Arc::new(store);
        let auth = Authenticator::new(registry.clone(), 1000);
        let app = admin::router(AdminState {
            registry: registry.clone(),
            auth: auth.clone(),
            access,
            fleet: ingest::c2d::Fleet::single(registry.clone(), auth.clone()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base: format!("http://{addr}/v1/projects/{PROJECT}/locations/{REGION}"),
            client: reqwest::Client::new(),
            registry,
            auth,
            _dir: dir,
        }
    }

    /// The URL of a path below the location, e.g. `/registries/r1`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        answer(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        answer(
            self.client
                .post(self.url(path))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// `:modifyCloudToDeviceConfig` on the device at `device_path`, waiting out the per-device
    /// config rate (one change a second) when the server says to: for tests whose subject is
    /// what a change does, not the rate.
    pub async fn modify_config(&self, device_path: &str, body: Value) -> (StatusCode, Value) {
        let path = format!("{device_path}:modifyCloudToDeviceConfig");
        loop {
            let answer = self.post(&path, body.clone()).await;
            let info = &answer.1["error"]["details"][0];
            if info["reason"] != "CONFIG_RATE_EXCEEDED" {
                return answer;
            }
            let wait = info["metadata"]["retryAfterMillis"]
                .as_str()
                .unwrap_or("1000");
            let wait = wait.parse().unwrap_or(1000);
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        }
    }

    pub async fn post_raw(&self, path: &str, body: &'static str) -> (StatusCode, Value) {
        let request = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        answer(request.send().await.unwrap()).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        answer(
            self.client
                .patch(self.url(path))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        answer(self.client.delete(self.url(path)).send().await.unwrap()).await
    }

    /// Creates a registry with an event topic and returns its JSON.
    pub async fn create_registry(&self, id: &str) -> Value {
        let (status, body) = self
            .post(
                "/registries",
                json!({
                    "id": id,
                    "eventNotificationConfigs": [{"pubsubTopicName": format!("projects/{PROJECT}/topics/events")}]
                }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Creates a device holding one credential from the vectors and returns its JSON.
    pub async fn create_device(
        &self,
        registry: &str,
        id: &str,
        format: &str,
        key_name: &str,
    ) -> Value {
        let (status, body) = self
            .post(
                &format!("/registries/{registry}/devices"),
                json!({"id": id, "credentials": [{"publicKey": {"format": format, "key": key(key_name)}}]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

/// Reads an answer as status and JSON.
pub async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("answer ({status}) is not JSON: {text}"));
    (status, body)
}

/// Asserts Google's error shape: HTTP status, canonical status name, and words in the message.
#[track_caller]
pub fn assert_error(answer: &(StatusCode, Value), status: u16, name: &str, words: &[&str]) {
    let (got, body) = answer;
    assert_eq!(got.as_u16(), status, "{body}");
    assert_eq!(body["error"]["code"], status, "{body}");
    assert_eq!(body["error"]["status"], name, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    for word in words {
        assert!(
            message.contains(word),
            "message {message:?} should mention {word:?}"
        );
    }
    // Every refusal (not an internal error, which tells nothing) names its reason for programs.
    if status != 500 {
        let info = &body["error"]["details"][0];
        assert_eq!(
            info["@type"], "type.googleapis.com/google.rpc.ErrorInfo",
            "{body}"
        );
        assert_eq!(info["domain"], "cloudiot.googleapis.com", "{body}");
        assert!(
            info["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{body}"
        );
    }
}

/// The refusal's `google.rpc.ErrorInfo` has this reason and (at least) this metadata.
#[track_caller]
pub fn assert_reason(answer: &(StatusCode, Value), reason: &str, metadata: &[(&str, &str)]) {
    let body = &answer.1;
    let info = &body["error"]["details"][0];
    assert_eq!(info["reason"], reason, "{body}");
    for (key, value) in metadata {
        assert_eq!(info["metadata"][key], *value, "{key} in {body}");
    }
}
