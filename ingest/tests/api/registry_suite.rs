//! The registry store contract, as checks any store must pass. Each check is a plain
//! `async fn` over `Arc<dyn Registry>` (or, for reopening, a [`Fixture`] that can open the same
//! data again), and `suite!` turns the whole list into one `#[tokio::test]` per check for a
//! store. Both stores run every check: SQLite on a fresh file, Firestore on a fresh database of
//! the real Firestore emulator (`FIRESTORE_EMULATOR_HOST`, which `scripts/test` starts).

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ingest::registry::firestore::{FirestoreSettings, FirestoreStore};
use ingest::registry::sqlite::SqliteStore;
use ingest::registry::{RegistryStore, StoreError};

/// Opens a store over a fixture's data.
type Opener =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn RegistryStore>> + Send>> + Send + Sync>;

/// Opens stores over one test's private data, as often as a check asks.
struct Fixture {
    open: Opener,
    /// Whatever must live as long as the data (a temporary directory, an emulator namespace).
    _keep: Box<dyn Any + Send + Sync>,
}

impl Fixture {
    /// A store over this fixture's data; a second call opens the same data anew.
    async fn store(&self) -> Arc<dyn RegistryStore> {
        (self.open)().await
    }
}

/// A fresh SQLite file in its own temporary directory.
async fn sqlite_fixture() -> Fixture {
    let dir = tempfile::TempDir::new().expect("a temporary directory");
    let path = dir.path().join("registry.db");
    Fixture {
        open: Box::new(move || {
            let path = path.clone();
            Box::pin(async move {
                let store = SqliteStore::open(path).await.expect("the store opens");
                Arc::new(store) as Arc<dyn RegistryStore>
            })
        }),
        _keep: Box::new(dir),
    }
}

/// A fresh database of the Firestore emulator: named databases are separate, so each test's data
/// starts empty without a wipe that would race the other tests.
async fn firestore_fixture() -> Fixture {
    let settings = FirestoreSettings {
        project: "registry-suite".into(),
        database: testkit::unique("suite"),
        emulator_host: Some(testkit::emulators::firestore_host()),
    };
    Fixture {
        open: Box::new(move || {
            let settings = settings.clone();
            Box::pin(async move {
                let store = FirestoreStore::open(&settings)
                    .await
                    .expect("the Firestore emulator answers");
                Arc::new(store) as Arc<dyn RegistryStore>
            })
        }),
        _keep: Box::new(()),
    }
}

/// One `#[tokio::test]` per check for the store that `$fixture` opens. The multi-thread runtime
/// lets the concurrency checks really race.
macro_rules! suite {
    ($store:ident, $fixture:path) => {
        mod $store {
            use super::*;

            suite!(@on_store $fixture;
                a_registry_can_be_created_read_listed_updated_and_deleted,
                creating_a_registry_twice_is_already_exists,
                a_registry_id_is_scoped_to_its_project_and_location,
                registry_pages_cover_every_registry_once,
                a_missing_registry_is_not_found_by_name,
                a_registry_with_devices_cannot_be_deleted_until_they_are,
                a_device_can_be_read_by_id_and_by_numeric_id,
                output_only_fields_of_a_new_device_are_ignored,
                a_new_device_with_config_data_starts_at_version_1,
                creating_a_device_twice_is_already_exists,
                the_same_device_id_in_two_registries_gets_distinct_numeric_ids,
                a_device_is_not_found_through_another_registry,
                device_pages_of_two_cover_five_devices_exactly_once,
                a_device_list_can_be_filtered_by_ids_and_numeric_ids,
                a_page_token_the_store_never_issued_is_refused,
                updating_a_device_changes_only_the_named_fields,
                a_deleted_device_is_not_found_and_its_history_is_gone,
                operations_on_a_missing_device_are_not_found_naming_it,
                a_device_starts_at_an_empty_version_1_and_unconditional_updates_follow,
                a_conditional_config_update_with_the_current_version_wins,
                a_conditional_config_update_with_a_stale_version_reports_the_current_one,
                a_config_may_change_once_a_second,
                only_the_newest_10_config_versions_are_kept_newest_first,
                only_the_newest_10_states_are_kept_newest_first,
                recorded_activity_reads_back_and_absent_fields_stay,
                last_seen_times_are_the_latest_of_event_state_and_heartbeat,
                a_config_acknowledgement_sets_that_versions_device_ack_time,
                twenty_parallel_device_creates_all_get_distinct_numeric_ids,
                of_ten_racing_conditional_config_updates_exactly_one_wins,
                a_claim_counts_while_its_instance_lease_is_live,
                a_newer_claim_wins_and_the_stale_one_cannot_touch_it,
                a_deleted_device_leaves_no_presence,
                queued_commands_get_growing_ids_and_are_delivered_up_to_an_id,
                a_full_queue_refuses_more_until_commands_expire,
                a_deleted_device_takes_its_queued_commands_along,
                a_policy_is_stored_with_an_etag_check_and_kept_apart_from_the_registry,
                a_policy_goes_with_its_registry,
                devices_are_bound_to_a_gateway_listed_by_it_and_unbound,
                only_a_gateway_takes_devices_and_bound_devices_are_not_deleted,
                a_device_is_bound_to_at_most_ten_gateways,
                twenty_devices_bound_at_once_are_all_listed_and_counted,
            );
            suite!(@on_fixture $fixture; data_survives_reopening_the_store);
        }
    };
    (@on_store $fixture:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let fixture = $fixture().await;
                checks::$check(fixture.store().await).await;
            }
        )*
    };
    (@on_fixture $fixture:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let fixture = $fixture().await;
                checks::$check(&fixture).await;
            }
        )*
    };
}

suite!(sqlite, sqlite_fixture);
suite!(firestore, firestore_fixture);

mod commands;
mod concurrency;
mod devices;
mod gateways;
mod given;
mod history;
mod policies;
mod presence;
mod registries;

/// Every check, in one namespace for `suite!`.
mod checks {
    pub use super::commands::*;
    pub use super::concurrency::*;
    pub use super::devices::*;
    pub use super::gateways::*;
    pub use super::history::*;
    pub use super::policies::*;
    pub use super::presence::*;
    pub use super::registries::*;
}

/// Whether `err` is `NotFound` and its text names `what`.
fn is_not_found_naming(err: &StoreError, what: &str) -> bool {
    matches!(err, StoreError::NotFound(resource) if resource.to_string().contains(what))
}
