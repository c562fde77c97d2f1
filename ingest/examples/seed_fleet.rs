//! Fills an SQLite registry with a fleet for `scripts/bench-console`: registry `fleet` in
//! `bench-project`/`us-central1` with COUNT devices (`dev-00000` …), written straight into the
//! store (the admin API would take minutes for 10,000), each with a last event spread from
//! seconds to months ago, and one in twenty never heard from, so the fleet page's health
//! picture and list have real work to do.
//!
//! Usage: `cargo run --release -p ingest --example seed_fleet -- PATH.db [COUNT]`

use anyhow::Context as _;
use ingest::registry::sqlite::SqliteStore;
use ingest::registry::{Activity, RegistryStore};
use jiff::{SignedDuration, Timestamp};
use shared::resources::{Device, DeviceRegistry};
use shared::{DeviceId, DeviceRef, LocationName, RegistryId, RegistryName};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().context("usage: seed_fleet PATH.db [COUNT]")?;
    let count: u64 = match args.next() {
        Some(n) => n.parse().context("COUNT is a number")?,
        None => 10_000,
    };
    let store = SqliteStore::open(&path)
        .await
        .with_context(|| format!("opening {path}"))?;
    let parent = LocationName::parse("bench-project", "us-central1")?;
    let registry = DeviceRegistry {
        id: Some(RegistryId::parse("fleet")?),
        ..DeviceRegistry::default()
    };
    store.create_registry(&parent, registry).await?;
    let name = RegistryName::from_parts("bench-project", "us-central1", "fleet")?;
    let now = Timestamp::now();
    for i in 0..count {
        let id = DeviceId::parse(&format!("dev-{i:05}"))?;
        let device = Device {
            id: Some(id.clone()),
            ..Device::default()
        };
        store.create_device(&name, device, now).await?;
        if i % 20 == 0 {
            continue;
        }
        // Ages from a few seconds to about four months, spread over every histogram bin.
        let age = ((i * i * 7919) % (120 * 86_400)) >> (i % 12);
        let activity = Activity {
            last_event_time: Some(now - SignedDuration::from_secs(age as i64)),
            ..Activity::default()
        };
        store
            .record_activity(&name, &DeviceRef::Id(id), activity)
            .await?;
    }
    println!("{count} devices in {name} ({path})");
    Ok(())
}
