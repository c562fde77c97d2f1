//! Two real `ingest serve` processes sharing one Firestore database — the emulator's — as two
//! Cloud Run instances share one: a device blocked or re-keyed through one instance is refused by
//! the other within the freshness bound (`REGISTRY_FRESHNESS_SECS`), although the other had just
//! accepted and cached the device's token; and a config changed through one is fetched from the
//! other within the same bound, although the other had just served (and cached) the older one.

use std::time::{Duration, Instant};

use crate::support::device::Signer;
use crate::support::spawn_ingest;
use crate::support::{PROJECT, REGION};
use serde_json::{Value, json};
use testkit::IngestProcess;

/// The bound both instances run with: short, so the test is quick.
const FRESHNESS_SECS: u64 = 2;

/// What the test allows beyond the bound: process scheduling on a busy 2-core machine and the
/// polling interval.
const SLACK: Duration = Duration::from_secs(3);

struct Instance {
    process: IngestProcess,
    http: reqwest::Client,
}

impl Instance {
    fn start(store: &str, emulator: &str) -> Self {
        let freshness = FRESHNESS_SECS.to_string();
        let process = spawn_ingest(
            &[&format!("--registry={store}"), "--sink=file:/dev/null"],
            &[
                ("FIRESTORE_EMULATOR_HOST", emulator),
                ("REGISTRY_FRESHNESS_SECS", &freshness),
            ],
        );
        Self {
            process,
            http: reqwest::Client::new(),
        }
    }

    fn admin(&self, path: &str) -> String {
        let base = &self.process.admin_url();
        format!("{base}/v1/projects/{PROJECT}/locations/{REGION}/registries{path}")
    }

    async fn admin_send(&self, request: reqwest::RequestBuilder) -> Value {
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{status}: {body}");
        body
    }

    /// Publishes one event as `dev-1` and returns the HTTP status and the error status name.
    async fn publish(&self, token: &str) -> (u16, String) {
        let base = &self.process.device_url();
        let url = format!(
            "{base}/v1/projects/{PROJECT}/locations/{REGION}/registries/reg-1/devices/dev-1:publishEvent"
        );
        let response = self
            .http
            .post(url)
            .bearer_auth(token)
            .json(&json!({"binary_data": "AQ=="}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let name = body["error"]["status"].as_str().unwrap_or("").to_string();
        (status, name)
    }

    /// The config version `dev-1` gets over HTTP from this instance.
    async fn config_version(&self, token: &str) -> u64 {
        let base = &self.process.device_url();
        let url = format!(
            "{base}/v1/projects/{PROJECT}/locations/{REGION}/registries/reg-1/devices/dev-1/config?local_version=0"
        );
        let request = self.http.get(url).bearer_auth(token);
        let body = self.admin_send(request).await;
        body["version"].as_str().unwrap().parse().unwrap()
    }

    /// Publishes until the answer is `want`, and returns how long that took.
    async fn until(&self, token: &str, want: u16) -> Duration {
        let start = Instant::now();
        let deadline = Duration::from_secs(FRESHNESS_SECS) + SLACK + Duration::from_secs(10);
        loop {
            let (status, _) = self.publish(token).await;
            if status == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < deadline,
                "still {status}, not {want}, after {:?}",
                start.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Two instances on a fresh database of the Firestore emulator, and `dev-1` (the vectors' RSA
/// key) in `reg-1`, made through the first.
async fn two_instances(database_prefix: &str) -> (Instance, Instance) {
    let emulator = testkit::emulators::firestore_host();
    let store = format!(
        "firestore:projects/{PROJECT}/databases/{}",
        testkit::unique(database_prefix)
    );
    let (a, b) = (
        Instance::start(&store, &emulator),
        Instance::start(&store, &emulator),
    );
    let topic = format!("projects/{PROJECT}/topics/events");
    let registry = json!({"id": "reg-1", "eventNotificationConfigs": [{"pubsubTopicName": topic}]});
    a.admin_send(a.http.post(a.admin("")).json(&registry)).await;
    let device = json!({"id": "dev-1", "credentials": credential("rsa_public")});
    a.admin_send(a.http.post(a.admin("/reg-1/devices")).json(&device))
        .await;
    (a, b)
}

fn credential(key: &str) -> Value {
    json!([{"publicKey": {"format": "RSA_PEM", "key": crate::support::key(key)}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_or_rekey_through_one_instance_reaches_the_other_within_the_bound() {
    let (a, b) = two_instances("fresh").await;

    // B reads the device that A created, and caches the token.
    let old_key = Signer::rsa("rsa_private").fresh();
    assert_eq!(b.publish(&old_key).await.0, 200);
    assert_eq!(b.publish(&old_key).await.0, 200);

    // Blocked through A: A refuses at once, B within the bound.
    let device = a.admin("/reg-1/devices/dev-1");
    a.admin_send(
        a.http
            .patch(format!("{device}?updateMask=blocked"))
            .json(&json!({"blocked": true})),
    )
    .await;
    assert_eq!(a.publish(&old_key).await, (403, "PERMISSION_DENIED".into()));
    let took = b.until(&old_key, 403).await;
    assert!(
        took <= Duration::from_secs(FRESHNESS_SECS) + SLACK,
        "B refused the blocked device only after {took:?}"
    );
    assert_eq!(b.publish(&old_key).await, (403, "PERMISSION_DENIED".into()));

    // Unblocked and re-keyed through A: B refuses the old key's token and takes the new one's.
    a.admin_send(
        a.http
            .patch(format!("{device}?updateMask=blocked,credentials"))
            .json(&json!({"blocked": false, "credentials": credential("rsa2_public")})),
    )
    .await;
    let new_key = Signer::rsa("rsa2_private").fresh();
    assert_eq!(a.publish(&old_key).await.0, 401);
    let took = b.until(&new_key, 200).await;
    assert!(
        took <= Duration::from_secs(FRESHNESS_SECS) + SLACK,
        "{took:?}"
    );
    assert_eq!(
        b.publish(&old_key).await,
        (401, "UNAUTHENTICATED".into()),
        "B still takes a token of the replaced key"
    );
    drop((a.process, b.process));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_changed_through_one_instance_is_fetched_from_the_other_within_the_bound() {
    let (a, b) = two_instances("fresh-config").await;
    let token = Signer::rsa("rsa_private").fresh();
    assert_eq!(b.config_version(&token).await, 1);
    assert_eq!(a.config_version(&token).await, 1);

    let changed = Instant::now();
    a.admin_send(
        a.http
            .post(a.admin("/reg-1/devices/dev-1:modifyCloudToDeviceConfig"))
            .json(&json!({"binaryData": "AQ=="})),
    )
    .await;
    assert_eq!(
        a.config_version(&token).await,
        2,
        "A, which made the change"
    );
    while b.config_version(&token).await != 2 {
        let took = changed.elapsed();
        assert!(
            took <= Duration::from_secs(FRESHNESS_SECS) + SLACK,
            "B still serves version 1 after {took:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((a.process, b.process));
}
