//! The embedded registry store: one SQLite file in WAL mode, for a laptop or a single VM.
//! rusqlite is blocking, so every call runs on tokio's blocking pool against one connection,
//! taken in turn; each trait method is one SQLite transaction, and writes take the write lock
//! up front (`BEGIN IMMEDIATE`) so read-check-write sequences such as a conditional config
//! update cannot interleave, not even with another process that opened the same file.

mod codec;
mod commands;
mod devices;
mod gateways;
mod history;
mod presence;
mod registries;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use shared::iam::Policy;
use shared::resources::{Device, DeviceConfig, DeviceRegistry, DeviceState};
use shared::{DeviceRef, LocationName, NumId, RegistryName};
use tokio::sync::Mutex;

use super::{
    Activity, DeviceFilter, DeviceUpdate, NewCommand, Page, PageRequest, Presence, QueuedCommand,
    RegistryStore, RegistryUpdate, Resource, StoreError, StoreResult,
};

/// The schema migrations, in order; migration `i` brings the file to `user_version` `i + 1`.
/// Append only: a released migration never changes.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_presence.sql"),
    include_str!("migrations/0003_commands.sql"),
    include_str!("migrations/0004_config_version_1.sql"),
    include_str!("migrations/0005_iam_policy.sql"),
    include_str!("migrations/0006_gateways.sql"),
];

/// How long a writer waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file could not be opened or configured (permissions, not a database, disk full).
    #[error("cannot open or configure the SQLite database")]
    Sqlite(#[from] rusqlite::Error),
    /// The database file could not be looked at once opened.
    #[error("cannot read the database file's metadata")]
    File(#[source] std::io::Error),
    /// A schema migration failed; the file is left at the previous version.
    #[error("applying schema migration {version} failed")]
    Migration {
        /// The schema version the migration would have produced.
        version: usize,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer build of ingest, whose schema this build does not know.
    #[error(
        "the database is at schema version {found}, but this build knows only up to {known}; run a newer ingest"
    )]
    TooNew {
        /// The file's `user_version`.
        found: i64,
        /// The newest version this build can migrate to.
        known: usize,
    },
}

/// The SQLite registry store. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// The database file as opened: writes are refused once its path names another file or
    /// none (deleted or replaced), rather than written into a file that is gone at restart.
    file: Arc<OpenedFile>,
}

#[derive(Debug)]
struct OpenedFile {
    path: std::path::PathBuf,
    /// Device and inode at open.
    identity: (u64, u64),
}

impl OpenedFile {
    fn at(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            identity: identity(&std::fs::metadata(path)?),
        })
    }

    /// `Unavailable` naming the file when its path no longer names the database opened.
    fn check(&self) -> StoreResult<()> {
        match std::fs::metadata(&self.path) {
            Ok(now) if identity(&now) == self.identity => Ok(()),
            Ok(_) => Err(self.gone("was replaced by another file")),
            Err(_) => Err(self.gone("was deleted")),
        }
    }

    fn gone(&self, what: &str) -> StoreError {
        StoreError::Unavailable(format!(
            "the registry database {} {what} while ingest was running; changes are refused so \
             that none is lost: put the file back or restart ingest",
            self.path.display()
        ))
    }
}

fn identity(metadata: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (metadata.dev(), metadata.ino())
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path`, configures it and brings its schema
    /// up to date. Safe to call on a file another process has open.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        let path = path.as_ref().to_owned();
        let (conn, file) = run_blocking(move || {
            let mut conn = Connection::open(&path)?;
            configure(&conn)?;
            migrate(&mut conn)?;
            let file = OpenedFile::at(&path).map_err(OpenError::File)?;
            Ok::<_, OpenError>((conn, file))
        })
        .await?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            file: Arc::new(file),
        })
    }

    /// Runs `f` with the connection on the blocking pool. Callers queue for the connection on
    /// an async mutex, so waiting costs no blocking-pool thread; the guard moves into the blocking
    /// task and is released when `f` returns, even if the caller stopped waiting. A panic in `f`
    /// unwinds through `Transaction`'s drop, which rolls back, so the connection stays usable.
    async fn with_conn<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let mut conn = Arc::clone(&self.conn).lock_owned().await;
        run_blocking(move || f(&mut conn)).await
    }

    /// Runs `f` in a read transaction, so its queries see one snapshot.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// Runs `f` in a write transaction that holds the write lock from its first statement;
    /// nothing is written unless `f` succeeds.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        let file = Arc::clone(&self.file);
        self.with_conn(move |conn| {
            file.check()?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}

/// Runs blocking work off the async threads; a panic in it resumes in the caller, as if the work
/// had run inline.
async fn run_blocking<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The blocking pool only cancels tasks when the runtime shuts down under us.
        Err(e) => panic!("registry store task did not run: {e}"),
    }
}

/// WAL lets readers in other processes (the CLI, a backup) proceed during writes; NORMAL
/// synchronous is durable across application crashes and only loses the last commits on power
/// loss, the usual trade for WAL.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// Applies the migrations the file has not seen, each in its own transaction together with the
/// `user_version` bump, so a crash leaves the file at a version boundary and a rerun is a no-op.
fn migrate(conn: &mut Connection) -> Result<(), OpenError> {
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index + 1;
        // The version is re-read under the write lock: another process may have migrated the
        // file since we looked.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if found > MIGRATIONS.len() as i64 {
            return Err(OpenError::TooNew {
                found,
                known: MIGRATIONS.len(),
            });
        }
        if found >= version as i64 {
            continue;
        }
        let applied = tx
            .execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", version as i64))
            .and_then(|()| tx.commit());
        applied.map_err(|source| OpenError::Migration { version, source })?;
    }
    Ok(())
}

#[async_trait]
impl RegistryStore for SqliteStore {
    async fn check_ready(&self) -> StoreResult<()> {
        let file = Arc::clone(&self.file);
        self.with_conn(move |conn| {
            file.check()?;
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn create_registry(
        &self,
        parent: &LocationName,
        registry: DeviceRegistry,
    ) -> StoreResult<DeviceRegistry> {
        let parent = parent.clone();
        // Only kept for operators reading the file; the API has no registry creation time, so
        // the trait passes none.
        let now = Timestamp::now();
        self.write(move |tx| registries::create(tx, &parent, &registry, now))
            .await
    }

    async fn get_registry(&self, name: &RegistryName) -> StoreResult<DeviceRegistry> {
        let name = name.clone();
        self.read(move |tx| registries::get(tx, &name)).await
    }

    async fn list_registries(
        &self,
        parent: &LocationName,
        page: &PageRequest,
    ) -> StoreResult<Page<DeviceRegistry>> {
        let (parent, page) = (parent.clone(), page.clone());
        self.read(move |tx| registries::list(tx, &parent, &page))
            .await
    }

    async fn update_registry(
        &self,
        name: &RegistryName,
        update: RegistryUpdate,
    ) -> StoreResult<DeviceRegistry> {
        let name = name.clone();
        self.write(move |tx| registries::update(tx, &name, update))
            .await
    }

    async fn delete_registry(&self, name: &RegistryName) -> StoreResult<()> {
        let name = name.clone();
        self.write(move |tx| registries::delete(tx, &name)).await
    }

    async fn bind_device_to_gateway(
        &self,
        registry: &RegistryName,
        gateway: &DeviceRef,
        device: &DeviceRef,
    ) -> StoreResult<()> {
        let (registry, gateway, device) = (registry.clone(), gateway.clone(), device.clone());
        self.write(move |tx| gateways::bind(tx, &registry, &gateway, &device))
            .await
    }

    async fn unbind_device_from_gateway(
        &self,
        registry: &RegistryName,
        gateway: &DeviceRef,
        device: &DeviceRef,
    ) -> StoreResult<()> {
        let (registry, gateway, device) = (registry.clone(), gateway.clone(), device.clone());
        self.write(move |tx| gateways::unbind(tx, &registry, &gateway, &device))
            .await
    }

    async fn is_bound(
        &self,
        registry: &RegistryName,
        gateway: NumId,
        device: NumId,
    ) -> StoreResult<bool> {
        let registry = registry.clone();
        self.read(move |tx| gateways::is_bound(tx, &registry, gateway, device))
            .await
    }

    async fn get_iam_policy(&self, name: &RegistryName) -> StoreResult<Option<Policy>> {
        let name = name.clone();
        self.read(move |tx| registries::get_policy(tx, &name)).await
    }

    async fn set_iam_policy(
        &self,
        name: &RegistryName,
        policy: Policy,
        expected_etag: Option<Vec<u8>>,
    ) -> StoreResult<Policy> {
        let name = name.clone();
        self.write(move |tx| registries::set_policy(tx, &name, policy, expected_etag))
            .await
    }

    async fn create_device(
        &self,
        registry: &RegistryName,
        device: Device,
        now: Timestamp,
    ) -> StoreResult<Device> {
        let registry = registry.clone();
        self.write(move |tx| devices::create(tx, &registry, &device, now))
            .await
    }

    async fn get_device(&self, registry: &RegistryName, device: &DeviceRef) -> StoreResult<Device> {
        let (registry, device) = (registry.clone(), device.clone());
        self.read(move |tx| devices::get(tx, &registry, &device))
            .await
    }

    async fn list_devices(
        &self,
        registry: &RegistryName,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Device>> {
        let (registry, filter, page) = (registry.clone(), filter.clone(), page.clone());
        self.read(move |tx| devices::list(tx, &registry, &filter, &page))
            .await
    }

    async fn last_seen_times(
        &self,
        registry: &RegistryName,
    ) -> StoreResult<Vec<Option<Timestamp>>> {
        let registry = registry.clone();
        self.read(move |tx| devices::last_seen_times(tx, &registry))
            .await
    }

    async fn update_device(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        update: DeviceUpdate,
    ) -> StoreResult<Device> {
        let (registry, device) = (registry.clone(), device.clone());
        self.write(move |tx| devices::update(tx, &registry, &device, update))
            .await
    }

    async fn delete_device(&self, registry: &RegistryName, device: &DeviceRef) -> StoreResult<()> {
        let (registry, device) = (registry.clone(), device.clone());
        self.write(move |tx| devices::delete(tx, &registry, &device))
            .await
    }

    async fn modify_config(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        version_to_update: u64,
        data: Vec<u8>,
        now: Timestamp,
    ) -> StoreResult<DeviceConfig> {
        let (registry, device) = (registry.clone(), device.clone());
        self.write(move |tx| {
            let pk = devices::resolve(tx, &registry, &device)?;
            let describe = || Resource::device(&registry, &device);
            history::modify_config(tx, pk, version_to_update, data, now, describe)
        })
        .await
    }

    async fn list_config_versions(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        limit: usize,
    ) -> StoreResult<Vec<DeviceConfig>> {
        let (registry, device) = (registry.clone(), device.clone());
        self.read(move |tx| {
            let pk = devices::resolve(tx, &registry, &device)?;
            history::list_configs(tx, pk, limit)
        })
        .await
    }

    async fn record_state(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        data: Vec<u8>,
        now: Timestamp,
    ) -> StoreResult<DeviceState> {
        let (registry, device) = (registry.clone(), device.clone());
        self.write(move |tx| {
            let pk = devices::resolve(tx, &registry, &device)?;
            history::record_state(tx, pk, data, now)
        })
        .await
    }

    async fn list_states(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        limit: usize,
    ) -> StoreResult<Vec<DeviceState>> {
        let (registry, device) = (registry.clone(), device.clone());
        self.read(move |tx| {
            let pk = devices::resolve(tx, &registry, &device)?;
            history::list_states(tx, pk, limit)
        })
        .await
    }

    async fn record_activity(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        activity: Activity,
    ) -> StoreResult<()> {
        let (registry, device) = (registry.clone(), device.clone());
        self.write(move |tx| devices::record_activity(tx, &registry, &device, &activity))
            .await
    }

    async fn claim_presence(
        &self,
        device: NumId,
        instance: &str,
        now: Timestamp,
    ) -> StoreResult<(u64, Option<Presence>)> {
        let (num, instance) = (sql_num(device), instance.to_owned());
        self.write(move |tx| presence::claim(tx, num, &instance, now))
            .await
    }

    async fn set_presence_subscriptions(
        &self,
        device: NumId,
        generation: u64,
        config: bool,
        commands: bool,
    ) -> StoreResult<()> {
        let num = sql_num(device);
        self.write(move |tx| presence::subscriptions(tx, num, generation, config, commands))
            .await
    }

    async fn release_presence(&self, device: NumId, generation: u64) -> StoreResult<()> {
        let num = sql_num(device);
        self.write(move |tx| presence::release(tx, num, generation))
            .await
    }

    async fn get_presence(&self, device: NumId, now: Timestamp) -> StoreResult<Option<Presence>> {
        let num = sql_num(device);
        self.read(move |tx| presence::get(tx, num, now)).await
    }

    async fn renew_instance(&self, instance: &str, until: Timestamp) -> StoreResult<()> {
        let instance = instance.to_owned();
        self.write(move |tx| presence::renew(tx, &instance, until))
            .await
    }

    async fn end_instance(&self, instance: &str) -> StoreResult<()> {
        let instance = instance.to_owned();
        self.write(move |tx| presence::end(tx, &instance)).await
    }

    async fn queue_command(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        command: NewCommand,
        now: Timestamp,
    ) -> StoreResult<QueuedCommand> {
        let (registry, device) = (registry.clone(), device.clone());
        self.write(move |tx| {
            let pk = devices::resolve(tx, &registry, &device)?;
            commands::queue(tx, pk, command, now, || {
                Resource::device(&registry, &device)
            })
        })
        .await
    }

    async fn list_commands(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
    ) -> StoreResult<Vec<QueuedCommand>> {
        let (registry, device) = (registry.clone(), device.clone());
        self.read(move |tx| {
            let pk = devices::resolve(tx, &registry, &device)?;
            commands::list(tx, pk)
        })
        .await
    }

    async fn mark_commands_delivered(
        &self,
        registry: &RegistryName,
        device: &DeviceRef,
        up_to: u64,
        now: Timestamp,
    ) -> StoreResult<usize> {
        let (registry, device) = (registry.clone(), device.clone());
        self.write(move |tx| {
            let pk = devices::resolve(tx, &registry, &device)?;
            commands::mark_delivered(tx, pk, up_to, now)
        })
        .await
    }
}

/// A numeric id as SQLite's integer: allocated ids are below 2^53, so this never wraps.
fn sql_num(num: NumId) -> i64 {
    num.0 as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::StoreError;

    fn user_version(path: &Path) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn a_full_disk_refuses_changes_as_unavailable_naming_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("registry.db"))
            .await
            .unwrap();
        let parent = LocationName::parse("demo-project", "us-central1").unwrap();
        store.check_ready().await.unwrap();
        // SQLite reports a file that may not grow any more exactly as a full disk.
        store
            .with_conn(|conn| {
                let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
                conn.pragma_update(None, "max_page_count", pages)?;
                Ok(())
            })
            .await
            .unwrap();
        let mut refused = None;
        for n in 0..200 {
            let registry = DeviceRegistry {
                id: Some(
                    shared::RegistryId::parse(&format!("reg-{n}-{}", "x".repeat(200))).unwrap(),
                ),
                ..DeviceRegistry::default()
            };
            if let Err(err) = store.create_registry(&parent, registry).await {
                refused = Some(err);
                break;
            }
        }
        let err = refused.expect("the database stopped growing");
        assert!(
            matches!(&err, StoreError::Unavailable(m) if m.contains("full")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn readiness_fails_once_the_file_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let store = SqliteStore::open(&path).await.unwrap();
        store.check_ready().await.unwrap();
        std::fs::remove_file(&path).unwrap();
        let err = store.check_ready().await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Unavailable(m) if m.contains("was deleted")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn opening_twice_applies_the_migrations_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        drop(SqliteStore::open(&path).await.unwrap());
        SqliteStore::open(&path).await.unwrap();
        assert_eq!(user_version(&path), MIGRATIONS.len() as i64);
    }

    #[tokio::test]
    async fn devices_made_before_schema_4_get_their_empty_config_version_1() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        {
            // A file as schema 3 left it: one device with no config at all.
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for migration in &MIGRATIONS[..3] {
                tx.execute_batch(migration).unwrap();
            }
            tx.pragma_update(None, "user_version", 3).unwrap();
            tx.execute_batch(
                "INSERT INTO registries (pk, project, location, id, mqtt_enabled_state, \
                     http_enabled_state, create_time) \
                 VALUES (1, 'demo-project', 'us-central1', 'reg-1', 'MQTT_ENABLED', \
                     'HTTP_ENABLED', 0);
                 INSERT INTO devices (registry_pk, id, num_id, create_time) \
                 VALUES (1, 'dev-1', 42, 1700000000000000);",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let registry = RegistryName::from_parts("demo-project", "us-central1", "reg-1").unwrap();
        let device = store
            .get_device(&registry, &DeviceRef::parse("dev-1").unwrap())
            .await
            .unwrap();
        let config = device.config.expect("version 1 was added");
        assert_eq!((config.version, config.binary_data.len()), (1, 0));
        assert_eq!(
            config.cloud_update_time,
            Some(Timestamp::from_second(1_700_000_000).unwrap())
        );
    }

    #[tokio::test]
    async fn writes_are_refused_once_the_file_is_deleted_or_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let location = LocationName::parse("demo-project", "us-central1").unwrap();
        let registry = |id: &str| DeviceRegistry {
            id: Some(shared::RegistryId::parse(id).unwrap()),
            ..Default::default()
        };
        store
            .create_registry(&location, registry("reg-1"))
            .await
            .unwrap();

        std::fs::remove_file(&path).unwrap();
        let err = store
            .create_registry(&location, registry("reg-2"))
            .await
            .unwrap_err();
        assert!(matches!(&err, StoreError::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains("was deleted"), "{err}");

        // Another file at the path is no better: it is not the database opened.
        std::fs::write(&path, b"").unwrap();
        let err = store
            .create_registry(&location, registry("reg-3"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("was replaced"), "{err}");
    }

    #[tokio::test]
    async fn the_file_is_in_wal_mode_with_foreign_keys_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("registry.db"))
            .await
            .unwrap();
        let conn = store.conn.lock().await;
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        let fk: bool = conn
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .unwrap();
        assert_eq!((mode.as_str(), fk), ("wal", true));
    }

    #[tokio::test]
    async fn a_file_from_a_newer_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteStore::open(&path).await.unwrap_err();
        assert!(matches!(err, OpenError::TooNew { found: 99, .. }), "{err}");
    }

    /// Two processes sharing a file are two connections; the write lock taken up front must
    /// still let only one conditional update win.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn stores_sharing_a_file_never_both_win_a_conditional_update() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let first = SqliteStore::open(&path).await.unwrap();
        let second = SqliteStore::open(&path).await.unwrap();
        let location = LocationName::parse("demo-project", "us-central1").unwrap();
        let registry = DeviceRegistry {
            id: Some(shared::RegistryId::parse("reg-1").unwrap()),
            ..Default::default()
        };
        first.create_registry(&location, registry).await.unwrap();
        let name = RegistryName::from_parts("demo-project", "us-central1", "reg-1").unwrap();
        let device = DeviceRef::parse("dev-1").unwrap();
        let new = Device {
            id: Some(shared::DeviceId::parse("dev-1").unwrap()),
            ..Default::default()
        };
        first
            .create_device(&name, new, Timestamp::UNIX_EPOCH)
            .await
            .unwrap();

        let clock = Arc::new(std::sync::atomic::AtomicU64::new(1));
        // The device starts at version 1; each racer keeps trying to replace the version it last saw, so the two connections'
        // transactions overlap many times.
        let racers: Vec<_> = (0..8u8)
            .map(|n| {
                let store = if n % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                let (name, device, clock) = (name.clone(), device.clone(), clock.clone());
                tokio::spawn(async move {
                    let (mut seen, mut won) = (1, Vec::new());
                    for _ in 0..25 {
                        // A second apart at least, so the per-device config rate never refuses.
                        let tick = clock.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let now = Timestamp::from_second(tick as i64).unwrap();
                        let result = store
                            .modify_config(&name, &device, seen, vec![n], now)
                            .await;
                        match result {
                            Ok(config) => {
                                seen = config.version;
                                won.push(config.version);
                            }
                            // A read that upgraded to a write too late would fail as BUSY.
                            Err(StoreError::VersionMismatch { current, .. }) => seen = current,
                            Err(other) => panic!("expected a win or a mismatch, got {other:?}"),
                        }
                    }
                    won
                })
            })
            .collect();
        let mut won = Vec::new();
        for racer in racers {
            won.extend(racer.await.unwrap());
        }
        won.sort_unstable();
        let expected: Vec<u64> = (2..2 + won.len() as u64).collect();
        assert_eq!(won, expected, "each version is won exactly once");
    }
}
