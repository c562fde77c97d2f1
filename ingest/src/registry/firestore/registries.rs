//! Registry documents: `projects/{p}/locations/{l}/registries/{r}`, holding the registry's API
//! JSON without its id and name, which the path already says, and its IAM policy in the store's
//! own field `iamPolicy` (absent until one is set), so the policy goes with the registry.

use firestore::gcloud_sdk::google::firestore::v1::Document;
use firestore::gcloud_sdk::google::firestore::v1::structured_query::Projection;
use firestore::gcloud_sdk::google::firestore::v1::value::ValueType;
use firestore::gcloud_sdk::tonic::Code;
use shared::iam::Policy;
use shared::resources::DeviceRegistry;
use shared::{LocationName, RegistryId, RegistryName};

use super::rpc::{self, Rpc};
use super::{backend, value};
use crate::registry::page::{into_page, start_after};
use crate::registry::{
    Page, PageRequest, RegistryUpdate, Resource, StoreError, StoreResult, etag_matches,
    name_to_create, registry_in,
};

/// The store's own field: the registry's IAM policy, as the policy's API JSON.
const IAM_POLICY: &str = "iamPolicy";

/// How many of a registry's devices a refused delete counts before saying "more than".
const COUNT_LIMIT: usize = 100;

/// How a registry is named in errors.
pub(super) fn describe(name: &RegistryName) -> Resource {
    Resource::registry(name)
}

pub(super) async fn create(
    rpc: &Rpc,
    parent: &LocationName,
    registry: DeviceRegistry,
) -> StoreResult<DeviceRegistry> {
    let name = name_to_create(parent, &registry)?;
    let stored = DeviceRegistry {
        id: None,
        name: None,
        ..registry
    };
    let write = rpc.create(&name.to_string(), value::encode(&stored)?);
    match rpc.commit(vec![write], None).await {
        Ok(()) => Ok(named(&name, stored)),
        Err(status) if status.code() == Code::AlreadyExists => {
            Err(StoreError::AlreadyExists(describe(&name)))
        }
        Err(status) => Err(backend(status)),
    }
}

pub(super) async fn get(rpc: &Rpc, name: &RegistryName) -> StoreResult<DeviceRegistry> {
    let doc = rpc
        .get(&name.to_string(), None)
        .await?
        .ok_or_else(|| StoreError::NotFound(describe(name)))?;
    Ok(named(name, decode(doc)?))
}

pub(super) async fn list(
    rpc: &Rpc,
    parent: &LocationName,
    page: &PageRequest,
) -> StoreResult<Page<DeviceRegistry>> {
    let after = start_after(page.token.as_deref())?;
    let size = page.effective_size();
    let parent_path = parent.to_string();
    let filter = (!after.is_empty())
        .then(|| rpc::name_after(rpc.full(&format!("{parent_path}/registries/{after}"))));
    let query = rpc::ordered("registries", filter, Some(size + 1));
    let items = rpc
        .query(&parent_path, query, None)
        .await?
        .into_iter()
        .map(|doc| from_doc(parent, doc))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(into_page(items, size, |r| {
        r.id.as_ref().map(|id| id.as_str())
    }))
}

pub(super) async fn update(
    rpc: &Rpc,
    name: &RegistryName,
    update: RegistryUpdate,
) -> StoreResult<DeviceRegistry> {
    let mut registry = get(rpc, name).await?;
    let mut mask = Vec::new();
    if let Some(v) = update.event_notification_configs {
        registry.event_notification_configs = v;
        mask.push("eventNotificationConfigs");
    }
    if let Some(v) = update.state_notification_config {
        registry.state_notification_config = v;
        mask.push("stateNotificationConfig");
    }
    if let Some(v) = update.mqtt_config {
        registry.mqtt_config = v;
        mask.push("mqttConfig");
    }
    if let Some(v) = update.http_config {
        registry.http_config = v;
        mask.push("httpConfig");
    }
    if let Some(v) = update.log_level {
        registry.log_level = v;
        mask.push("logLevel");
    }
    let stored = DeviceRegistry {
        id: None,
        name: None,
        ..registry.clone()
    };
    // A masked field absent from the encoding (an emptied list, a cleared level) is removed,
    // which reads back as its default: the same as the API's omitted default.
    let write = rpc.update(&name.to_string(), value::encode(&stored)?, &mask);
    match rpc.commit(vec![write], None).await {
        Ok(()) => Ok(registry),
        Err(status) if status.code() == Code::NotFound => Err(StoreError::NotFound(describe(name))),
        Err(status) => Err(backend(status)),
    }
}

/// Deletes an empty registry. The devices are counted in the same transaction that deletes, and
/// a device create reads the registry in its own transaction, so a device created meanwhile
/// either is counted or fails as "registry not found".
pub(super) async fn delete(rpc: &Rpc, name: &RegistryName) -> StoreResult<()> {
    let path = name.to_string();
    rpc.in_transaction(|tx| {
        let path = path.clone();
        async move {
            if rpc.get(&path, Some(&tx)).await?.is_none() {
                return Err(StoreError::NotFound(describe(name)));
            }
            let mut query = rpc::ordered("devices", None, Some(COUNT_LIMIT + 1));
            query.select = Some(Projection {
                fields: vec![rpc::name_field()],
            });
            let devices = rpc.query(&path, query, Some(&tx)).await?.len();
            if devices > 0 {
                return Err(still_has_devices(name, devices));
            }
            Ok(((), vec![rpc.delete(&path)]))
        }
    })
    .await?
    .map_err(backend)
}

fn still_has_devices(name: &RegistryName, devices: usize) -> StoreError {
    let count = if devices > COUNT_LIMIT {
        format!("more than {COUNT_LIMIT} devices")
    } else if devices == 1 {
        "1 device".to_string()
    } else {
        format!("{devices} devices")
    };
    StoreError::FailedPrecondition(format!(
        "{} still has {count}; delete them first",
        describe(name)
    ))
}

/// A registry from its document, with its id and name from the document's path.
fn from_doc(parent: &LocationName, doc: Document) -> StoreResult<DeviceRegistry> {
    let id = RegistryId::parse(rpc::id_of(&doc.name)).map_err(backend)?;
    let name = registry_in(parent, id);
    Ok(named(&name, decode(doc)?))
}

/// The registry fields of a document, without the store's own.
fn decode(doc: Document) -> StoreResult<DeviceRegistry> {
    let mut fields = doc.fields;
    fields.remove(IAM_POLICY);
    value::decode(fields)
}

/// The registry's stored IAM policy, `None` when none was set; `NotFound` without the registry.
pub(super) async fn get_policy(rpc: &Rpc, name: &RegistryName) -> StoreResult<Option<Policy>> {
    let doc = rpc
        .get(&name.to_string(), None)
        .await?
        .ok_or_else(|| StoreError::NotFound(describe(name)))?;
    policy_of(doc)
}

fn policy_of(mut doc: Document) -> StoreResult<Option<Policy>> {
    match doc.fields.remove(IAM_POLICY).and_then(|v| v.value_type) {
        Some(ValueType::MapValue(map)) => Ok(Some(value::decode(map.fields)?)),
        Some(_) => Err(backend("the registry's iamPolicy field is not a map")),
        None => Ok(None),
    }
}

/// Replaces the registry's IAM policy when the expected etag is still the stored one: read and
/// written in one transaction, so of two racing read-modify-writes one fails.
pub(super) async fn set_policy(
    rpc: &Rpc,
    name: &RegistryName,
    policy: Policy,
    expected_etag: Option<Vec<u8>>,
) -> StoreResult<Policy> {
    let path = name.to_string();
    let encoded = value::to_value(serde_json::to_value(&policy).map_err(backend)?);
    rpc.in_transaction(|tx| {
        let (path, encoded, expected) = (path.clone(), encoded.clone(), expected_etag.clone());
        async move {
            let doc = rpc
                .get(&path, Some(&tx))
                .await?
                .ok_or_else(|| StoreError::NotFound(describe(name)))?;
            if !etag_matches(policy_of(doc)?.as_ref(), expected.as_deref()) {
                return Err(StoreError::PolicyChanged(describe(name)));
            }
            let fields = [(IAM_POLICY.to_owned(), encoded)].into_iter().collect();
            Ok(((), vec![rpc.update(&path, fields, &[IAM_POLICY])]))
        }
    })
    .await?
    .map_err(backend)?;
    Ok(policy)
}

fn named(name: &RegistryName, registry: DeviceRegistry) -> DeviceRegistry {
    DeviceRegistry {
        id: Some(name.registry.clone()),
        name: Some(name.to_string()),
        ..registry
    }
}
