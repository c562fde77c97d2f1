//! What a device token check costs: RS256 and ES256 verification with no token cache (keys
//! already parsed, and with the key parsing a cache miss also pays), and the cached path — the
//! same token again through `TokenCache` alone and through `Authenticator::authenticate` over a
//! real SQLite registry. Tokens and keys come from the shared vectors file (tokens are judged at
//! the vectors' `now`, so they never expire here); `IOTCORE_VECTORS` overrides its path.
//!
//! Run: `cargo bench -p ingest --bench verify`.

use std::hint::black_box;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use ingest::auth::Authenticator;
use ingest::auth::cache::TokenKey;
use ingest::auth::jwt::{self, DeviceKey};
use ingest::registry::RegistryStore;
use ingest::registry::sqlite::SqliteStore;
use jiff::Timestamp;
use serde_json::Value;
use shared::resources::{Device, DeviceCredential, DeviceRegistry, PublicKeyCredential};
use shared::{
    DeviceId, DeviceName, DeviceRef, LocationName, ProjectId, PublicKeyFormat, RegistryId,
    RegistryName,
};

/// One token case of the vectors, with its device's credentials.
struct Case {
    token: String,
    now: i64,
    credentials: Vec<DeviceCredential>,
}

struct Vectors {
    project: ProjectId,
    json: Value,
}

impl Vectors {
    fn load() -> Self {
        let path = std::env::var_os("IOTCORE_VECTORS").map_or_else(
            || {
                let beside = concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../shared/vectors/jwt-vectors.json"
                );
                let in_repo = concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../tests/vectors/jwt-vectors.json"
                );
                [beside, in_repo]
                    .into_iter()
                    .map(PathBuf::from)
                    .find(|p| p.exists())
                    .expect("the JWT vectors file exists (set IOTCORE_VECTORS to its path)")
            },
            PathBuf::from,
        );
        let text = std::fs::read_to_string(&path).expect("the JWT vectors file is readable");
        let json: Value = serde_json::from_str(&text).expect("the vectors file is JSON");
        let project = json["project"]
            .as_str()
            .expect("the vectors name a project");
        Self {
            project: ProjectId::parse(project).expect("the vectors' project id is valid"),
            json,
        }
    }

    fn case(&self, name: &str) -> Case {
        let cases = self.json["token_cases"]
            .as_array()
            .expect("token_cases is a list");
        let case = cases
            .iter()
            .find(|c| c["name"] == name)
            .expect("the vectors hold the benchmarked case");
        let credentials = case["credentials"]
            .as_array()
            .expect("credentials is a list")
            .iter()
            .map(|c| self.credential(c))
            .collect();
        Case {
            token: case["token"].as_str().expect("token is text").to_owned(),
            now: case["now"].as_i64().expect("now is an integer"),
            credentials,
        }
    }

    fn credential(&self, c: &Value) -> DeviceCredential {
        let format = c["format"].as_str().expect("format is text");
        let key = c["key"].as_str().expect("key is text");
        DeviceCredential {
            public_key: PublicKeyCredential {
                format: PublicKeyFormat::parse(format).expect("a known format"),
                key: self.json["keys"][key]
                    .as_str()
                    .expect("a known key")
                    .to_owned(),
            },
            expiration_time: None,
        }
    }
}

fn uncached(c: &mut Criterion, vectors: &Vectors) {
    let mut group = c.benchmark_group("uncached");
    for (label, name) in [
        ("rs256", "rs256 against RSA_PEM"),
        ("es256", "es256 against ES256_PEM"),
    ] {
        let case = vectors.case(name);
        let keys: Vec<DeviceKey> = jwt::device_keys(&case.credentials);
        assert!(jwt::verify(&case.token, &vectors.project, &keys, case.now).is_ok());
        group.bench_function(format!("{label}_verify"), |b| {
            b.iter(|| {
                jwt::verify(
                    black_box(&case.token),
                    &vectors.project,
                    black_box(&keys),
                    case.now,
                )
            })
        });
        group.bench_function(format!("{label}_parse_key_and_verify"), |b| {
            b.iter(|| {
                let keys = jwt::device_keys(black_box(&case.credentials));
                jwt::verify(black_box(&case.token), &vectors.project, &keys, case.now)
            })
        });
    }
    group.finish();
}

fn cached(c: &mut Criterion, vectors: &Vectors) {
    let case = vectors.case("rs256 against RSA_PEM");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (auth, name) = runtime.block_on(authenticator(&dir, vectors, &case));
    runtime
        .block_on(auth.authenticate(&name, &case.token, case.now))
        .expect("the token is valid, so it is now cached");

    let mut group = c.benchmark_group("cached");
    group.bench_function("token_cache_get", |b| {
        let cache = auth.cache();
        b.iter(|| {
            cache.get(
                &TokenKey::for_device(&name, black_box(&case.token)),
                case.now,
            )
        })
    });
    group.bench_function("authenticate_hit", |b| {
        b.iter(|| authenticate_without_awaiting(&auth, &name, black_box(&case.token), case.now))
    });
    group.finish();
}

/// A cache hit never awaits, so one poll must finish it; polling directly keeps runtime
/// overhead out of the figure, and a `Pending` here would mean the hit path reached the store.
fn authenticate_without_awaiting(auth: &Authenticator, name: &DeviceName, token: &str, now: i64) {
    let mut future = pin!(auth.authenticate(name, token, now));
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(result) => {
            black_box(result.expect("the cached token is accepted"));
        }
        Poll::Pending => panic!("a cache hit must not wait on the registry"),
    }
}

async fn authenticator(
    dir: &tempfile::TempDir,
    vectors: &Vectors,
    case: &Case,
) -> (Authenticator, DeviceName) {
    let store = Arc::new(
        SqliteStore::open(dir.path().join("bench.db"))
            .await
            .expect("the SQLite registry opens"),
    );
    let project = vectors.project.as_str();
    let parent = LocationName::parse(project, "us-central1").expect("a valid location");
    let registry = DeviceRegistry {
        id: Some(RegistryId::parse("reg-1").expect("a valid registry id")),
        ..DeviceRegistry::default()
    };
    store
        .create_registry(&parent, registry)
        .await
        .expect("the registry is created");
    let registry = RegistryName::from_parts(project, "us-central1", "reg-1").expect("a valid name");
    let id = DeviceId::parse("dev-1").expect("a valid device id");
    let device = Device {
        id: Some(id.clone()),
        credentials: case.credentials.clone(),
        ..Device::default()
    };
    store
        .create_device(&registry, device, Timestamp::now())
        .await
        .expect("the device is created");
    let name = DeviceName {
        registry,
        device: DeviceRef::Id(id),
    };
    (Authenticator::new(store, 1000), name)
}

fn benches(c: &mut Criterion) {
    let vectors = Vectors::load();
    uncached(c, &vectors);
    cached(c, &vectors);
}

criterion_group!(verify, benches);
criterion_main!(verify);
