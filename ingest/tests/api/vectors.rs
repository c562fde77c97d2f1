//! The shared JWT vectors (keys made with the openssl command line, tokens signed by PyJWT) run
//! against ingest's own key parser, token verifier and `Authenticator`: every case must get its
//! recorded verdict and reason. Then the `Authenticator` over a real SQLite registry: the cache,
//! blocked and unknown devices, and invalidation.
//!
//! The vectors file is the repository's `tests/vectors/jwt-vectors.json`, or the path in
//! `IOTCORE_VECTORS`. A missing file fails the tests; they never skip.

use std::collections::HashMap;
use std::sync::Arc;

use ingest::auth::credentials::parse_credential_name;
use ingest::auth::jwt::{self, TokenError};
use ingest::auth::{AuthError, Authenticator};
use ingest::registry::sqlite::SqliteStore;
use ingest::registry::{DeviceUpdate, RegistryStore};
use jiff::Timestamp;
use serde::Deserialize;
use shared::resources::{Device, DeviceCredential, DeviceRegistry, PublicKeyCredential};
use shared::{
    Code, DeviceId, DeviceName, DeviceRef, LocationName, ProjectId, PublicKeyFormat, RegistryId,
    RegistryName,
};
use tempfile::TempDir;

const TOKEN_CASES: usize = 37;
const KEY_CASES: usize = 14;

#[derive(Deserialize)]
struct Vectors {
    project: String,
    keys: HashMap<String, String>,
    token_cases: Vec<TokenCase>,
    key_cases: Vec<KeyCase>,
}

#[derive(Deserialize)]
struct TokenCase {
    name: String,
    token: String,
    credentials: Vec<CaseCredential>,
    now: i64,
    expect: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct CaseCredential {
    format: String,
    key: String,
    expiration_time: Option<i64>,
}

#[derive(Deserialize)]
struct KeyCase {
    name: String,
    format: String,
    key: String,
    expect: String,
    reason: Option<String>,
}

fn load() -> Vectors {
    let path = testkit::vectors::vectors_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "cannot read the JWT test vectors at {}: {err}; set IOTCORE_VECTORS to the path of \
             jwt-vectors.json",
            path.display()
        )
    });
    let vectors: Vectors = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not the vectors file: {err}", path.display()));
    assert_eq!(
        vectors.token_cases.len(),
        TOKEN_CASES,
        "token cases in {}",
        path.display()
    );
    assert_eq!(
        vectors.key_cases.len(),
        KEY_CASES,
        "key cases in {}",
        path.display()
    );
    vectors
}

impl Vectors {
    /// A key by name, or the text itself when it names none (e.g. literal garbage).
    fn key<'a>(&'a self, name: &'a str) -> &'a str {
        self.keys.get(name).map_or(name, String::as_str)
    }

    fn credentials(&self, case: &TokenCase) -> Vec<DeviceCredential> {
        case.credentials
            .iter()
            .map(|c| DeviceCredential {
                public_key: PublicKeyCredential {
                    format: PublicKeyFormat::parse(&c.format)
                        .expect("token cases use valid formats"),
                    key: self.key(&c.key).to_owned(),
                },
                expiration_time: c
                    .expiration_time
                    .map(|t| Timestamp::from_second(t).unwrap()),
            })
            .collect()
    }

    fn project(&self) -> ProjectId {
        ProjectId::parse(&self.project).unwrap()
    }

    fn key_text(&self, name: &str) -> String {
        self.keys[name].clone()
    }

    fn token(&self, name: &str) -> &TokenCase {
        self.token_cases.iter().find(|c| c.name == name).unwrap()
    }
}

/// Compares an outcome with a case's verdict; `None` when they agree, else what differs.
fn judge<T, E: std::fmt::Display>(
    outcome: Result<T, E>,
    reason_of: impl Fn(&E) -> &'static str,
    expect: &str,
    reason: Option<&str>,
) -> Option<String> {
    match (outcome, expect) {
        (Ok(_), "accept") => None,
        (Ok(_), _) => Some(format!("accepted, expected reject ({reason:?})")),
        (Err(err), "reject") => {
            let got = reason_of(&err);
            let message = err.to_string();
            if Some(got) != reason {
                Some(format!("rejected as {got}, expected {reason:?}: {message}"))
            } else if message.trim().is_empty() {
                Some(format!("rejected as {got} with an empty message"))
            } else {
                None
            }
        }
        (Err(err), _) => Some(format!(
            "rejected as {}, expected accept: {err}",
            reason_of(&err)
        )),
    }
}

fn report(kind: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} {kind} case(s) disagree with the vectors:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_token_case_gets_its_recorded_verdict_and_reason() {
    let vectors = load();
    let project = vectors.project();
    let mut failures = Vec::new();
    for case in &vectors.token_cases {
        let keys = jwt::device_keys(&vectors.credentials(case));
        let outcome = jwt::verify(&case.token, &project, &keys, case.now);
        if let Some(why) = judge(
            outcome,
            TokenError::reason,
            &case.expect,
            case.reason.as_deref(),
        ) {
            failures.push(format!("  {}: {why}", case.name));
        }
    }
    report("token", failures);
}

#[test]
fn every_key_case_gets_its_recorded_verdict_and_reason() {
    let vectors = load();
    let mut failures = Vec::new();
    for case in &vectors.key_cases {
        let outcome = parse_credential_name(&case.format, vectors.key(&case.key));
        let reason_of = |err: &ingest::auth::credentials::KeyError| err.reason();
        if let Some(why) = judge(outcome, reason_of, &case.expect, case.reason.as_deref()) {
            failures.push(format!("  {}: {why}", case.name));
        }
    }
    report("key", failures);
}

// ------------------------------------------------------------- the Authenticator over SQLite

/// A fresh SQLite registry with one registry in it, and an `Authenticator` over it.
struct Fixture {
    _dir: TempDir,
    store: Arc<SqliteStore>,
    auth: Authenticator,
    registry: RegistryName,
}

impl Fixture {
    async fn new(project: &ProjectId) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::open(dir.path().join("registry.db"))
                .await
                .unwrap(),
        );
        let parent = LocationName::parse(project.as_str(), "us-central1").unwrap();
        let registry = DeviceRegistry {
            id: Some(RegistryId::parse("reg-1").unwrap()),
            ..DeviceRegistry::default()
        };
        store.create_registry(&parent, registry).await.unwrap();
        let registry = RegistryName::from_parts(project.as_str(), "us-central1", "reg-1").unwrap();
        let auth = Authenticator::new(store.clone(), 1000);
        Self {
            _dir: dir,
            store,
            auth,
            registry,
        }
    }

    /// Creates a device and returns its name by id and by numeric id.
    async fn device(
        &self,
        id: &str,
        credentials: Vec<DeviceCredential>,
    ) -> (DeviceName, DeviceName) {
        let device = Device {
            id: Some(DeviceId::parse(id).unwrap()),
            credentials,
            ..Device::default()
        };
        let created = self
            .store
            .create_device(&self.registry, device, Timestamp::now())
            .await
            .unwrap();
        let name = |device| DeviceName {
            registry: self.registry.clone(),
            device,
        };
        let num = shared::NumId(created.num_id.unwrap());
        (
            name(DeviceRef::Id(DeviceId::parse(id).unwrap())),
            name(DeviceRef::Num(num)),
        )
    }

    async fn set_blocked(&self, name: &DeviceName, blocked: bool) {
        let update = DeviceUpdate {
            blocked: Some(blocked),
            ..DeviceUpdate::default()
        };
        self.store
            .update_device(&self.registry, &name.device, update)
            .await
            .unwrap();
    }
}

fn rsa_credential(vectors: &Vectors) -> Vec<DeviceCredential> {
    vec![DeviceCredential {
        public_key: PublicKeyCredential {
            format: PublicKeyFormat::RsaPem,
            key: vectors.key_text("rsa_public"),
        },
        expiration_time: None,
    }]
}

#[tokio::test]
async fn every_token_case_gets_the_same_verdict_through_the_authenticator() {
    let vectors = load();
    let fixture = Fixture::new(&vectors.project()).await;
    let mut failures = Vec::new();
    for (i, case) in vectors.token_cases.iter().enumerate() {
        let (name, _) = fixture
            .device(&format!("dev-{i}"), vectors.credentials(case))
            .await;
        let outcome = fixture
            .auth
            .authenticate(&name, &case.token, case.now)
            .await;
        if let Some(why) = judge(
            outcome,
            AuthError::reason,
            &case.expect,
            case.reason.as_deref(),
        ) {
            failures.push(format!("  {}: {why}", case.name));
        }
    }
    report("token (via the Authenticator)", failures);
}

#[tokio::test]
async fn a_cached_token_is_served_without_reading_the_registry_until_the_device_changes() {
    let vectors = load();
    let fixture = Fixture::new(&vectors.project()).await;
    let (name, _) = fixture.device("dev-1", rsa_credential(&vectors)).await;
    let case = vectors.token("rs256 against RSA_PEM");

    let first = fixture
        .auth
        .authenticate(&name, &case.token, case.now)
        .await
        .unwrap();
    assert_eq!(first.id.as_str(), "dev-1");
    assert_eq!(fixture.auth.cache().len(), 1);

    // Block the device behind the authenticator's back: the cached token still passes, which
    // shows the registry is not read on a hit ...
    fixture.set_blocked(&name, true).await;
    let again = fixture
        .auth
        .authenticate(&name, &case.token, case.now)
        .await
        .unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&again, &first),
        "not the cached device"
    );

    // ... and once the admin API invalidates the device, the change takes effect.
    fixture.auth.invalidate_device(&fixture.registry, &first.id);
    let err = fixture
        .auth
        .authenticate(&name, &case.token, case.now)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.reason()),
        (Code::PermissionDenied, "blocked")
    );
    assert!(
        err.to_string()
            .contains("ingest devices unblock dev-1 --registry reg-1"),
        "{err}"
    );
    assert!(fixture.auth.cache().is_empty());
}

/// Entries are keyed by the name the request used and the token (so that devices sharing a key
/// never evict each other): a device named by numeric id is cached under that name, and the
/// same token presented under the device's id is checked afresh.
#[tokio::test]
async fn a_device_named_by_numeric_id_is_cached_under_that_name() {
    let vectors = load();
    let fixture = Fixture::new(&vectors.project()).await;
    let (by_id, by_num) = fixture.device("dev-1", rsa_credential(&vectors)).await;
    let case = vectors.token("rs256 against RSA_PEM");

    let via_num = fixture
        .auth
        .authenticate(&by_num, &case.token, case.now)
        .await
        .unwrap();
    assert_eq!(via_num.id.as_str(), "dev-1");
    // Blocked in the store behind the cache's back: only a fresh check can see it.
    fixture.set_blocked(&by_id, true).await;
    let cached = fixture
        .auth
        .authenticate(&by_num, &case.token, case.now)
        .await
        .unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&cached, &via_num),
        "not the cached device"
    );
    let err = fixture
        .auth
        .authenticate(&by_id, &case.token, case.now)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "blocked");
}

#[tokio::test]
async fn a_token_cached_for_one_device_does_not_let_another_in() {
    let vectors = load();
    let fixture = Fixture::new(&vectors.project()).await;
    let (owner, _) = fixture.device("dev-1", rsa_credential(&vectors)).await;
    let ec_key = vec![DeviceCredential {
        public_key: PublicKeyCredential {
            format: PublicKeyFormat::Es256Pem,
            key: vectors.key_text("ec_public"),
        },
        expiration_time: None,
    }];
    let (other, _) = fixture.device("dev-2", ec_key).await;
    let case = vectors.token("rs256 against RSA_PEM");

    fixture
        .auth
        .authenticate(&owner, &case.token, case.now)
        .await
        .unwrap();
    let err = fixture
        .auth
        .authenticate(&other, &case.token, case.now)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.reason()),
        (Code::Unauthenticated, "bad_signature")
    );
}

#[tokio::test]
async fn a_cached_token_lapses_at_exp_plus_skew() {
    let vectors = load();
    let fixture = Fixture::new(&vectors.project()).await;
    let (name, _) = fixture.device("dev-1", rsa_credential(&vectors)).await;
    let case = vectors.token("rs256 against RSA_PEM");
    let ok = fixture
        .auth
        .authenticate(&name, &case.token, case.now)
        .await
        .unwrap();

    let last = ok.token_exp + shared::jwt::MAX_CLOCK_SKEW_SECS;
    assert!(
        fixture
            .auth
            .authenticate(&name, &case.token, last)
            .await
            .is_ok()
    );
    let err = fixture
        .auth
        .authenticate(&name, &case.token, last + 1)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "expired");
}

#[tokio::test]
async fn an_unknown_device_is_not_found_and_named() {
    let vectors = load();
    let fixture = Fixture::new(&vectors.project()).await;
    let name = DeviceName {
        registry: fixture.registry.clone(),
        device: DeviceRef::Id(DeviceId::parse("nobody").unwrap()),
    };
    let case = vectors.token("rs256 against RSA_PEM");
    let err = fixture
        .auth
        .authenticate(&name, &case.token, case.now)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.reason()),
        (Code::NotFound, "unknown_device")
    );
    assert!(err.to_string().contains(&name.to_string()), "{err}");
}

#[tokio::test]
async fn a_blocked_device_is_refused_even_with_a_valid_token() {
    let vectors = load();
    let fixture = Fixture::new(&vectors.project()).await;
    let (name, _) = fixture.device("dev-1", rsa_credential(&vectors)).await;
    fixture.set_blocked(&name, true).await;
    let case = vectors.token("rs256 against RSA_PEM");
    let err = fixture
        .auth
        .authenticate(&name, &case.token, case.now)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Blocked { .. }), "{err:?}");
    assert!(fixture.auth.cache().is_empty());
}

#[tokio::test]
async fn the_audience_is_the_project_of_the_device_named() {
    let vectors = load();
    let other = ProjectId::parse("other-project").unwrap();
    let fixture = Fixture::new(&other).await;
    let (name, _) = fixture.device("dev-1", rsa_credential(&vectors)).await;
    let case = vectors.token("rs256 against RSA_PEM");
    let err = fixture
        .auth
        .authenticate(&name, &case.token, case.now)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.reason()),
        (Code::Unauthenticated, "wrong_audience")
    );
    let accepted = vectors.token("audience is another project");
    assert!(
        fixture
            .auth
            .authenticate(&name, &accepted.token, accepted.now)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_token_is_not_served_from_the_cache_after_its_credential_expires() {
    let vectors = load();
    let fixture = Fixture::new(&vectors.project()).await;
    let case = vectors.token("matching credential expires later");
    let credentials = vectors.credentials(case);
    let expiry = credentials[0].expiration_time.unwrap().as_second();
    let (name, _) = fixture.device("dev-1", credentials).await;

    fixture
        .auth
        .authenticate(&name, &case.token, case.now)
        .await
        .unwrap();
    assert!(
        fixture
            .auth
            .authenticate(&name, &case.token, expiry - 1)
            .await
            .is_ok()
    );
    let err = fixture
        .auth
        .authenticate(&name, &case.token, expiry)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "credential_expired");
}
