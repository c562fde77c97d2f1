//! A registry's IAM methods, as IoT Core's: `:getIamPolicy` answers the stored policy (an empty
//! one with etag `ACAB` when none was set), `:setIamPolicy` replaces it after checking it can be
//! enforced, refusing a stale etag, and `:testIamPermissions` answers which of the asked
//! permissions the caller holds. Who may call the first two is checked in `authorize`.

use axum::Json;
use shared::RegistryName;
use shared::iam::{self, GetIamPolicyRequest, Policy, SetIamPolicyRequest, TestIamPermissions};

use super::AdminState;
use super::authorize::registry_policy;
use crate::http::error::ApiError;
use crate::iam::{Caller, empty_policy, new_etag, validate};
use crate::registry::{Resource, StoreError};

/// `POST …/registries/{r}:getIamPolicy`
pub async fn get(
    state: &AdminState,
    name: &RegistryName,
    _request: GetIamPolicyRequest,
) -> Result<Json<Policy>, ApiError> {
    let stored = state.registry.get_iam_policy(name).await?;
    Ok(Json(stored.unwrap_or_else(empty_policy)))
}

/// `POST …/registries/{r}:setIamPolicy`
pub async fn set(
    state: &AdminState,
    name: &RegistryName,
    request: SetIamPolicyRequest,
) -> Result<Json<Policy>, ApiError> {
    let mask = update_mask(request.update_mask.as_deref())?;
    let mut policy = request.policy;
    if !mask.contains(&"bindings") {
        let stored = state.registry.get_iam_policy(name).await?;
        policy.bindings = stored.unwrap_or_else(empty_policy).bindings;
    }
    let expected = (mask.contains(&"etag") && !policy.etag.is_empty()).then(|| policy.etag.clone());
    let mut policy = validate(policy).map_err(|v| ApiError::invalid_field(&v.field, v.message))?;
    policy.etag = new_etag();
    let stored = state
        .registry
        .set_iam_policy(name, policy, expected)
        .await?;
    tracing::info!(registry = %name, bindings = stored.bindings.len(), "IAM policy set");
    Ok(Json(stored))
}

/// The fields `updateMask` names (Google's default `bindings, etag` when absent).
fn update_mask(mask: Option<&str>) -> Result<Vec<&'static str>, ApiError> {
    let Some(mask) = mask.filter(|m| !m.trim().is_empty()) else {
        return Ok(vec!["bindings", "etag"]);
    };
    mask.split(',')
        .map(str::trim)
        .map(|path| match path {
            "bindings" => Ok("bindings"),
            "etag" => Ok("etag"),
            "version" => Ok("version"),
            other => Err(ApiError::invalid_field(
                "updateMask",
                format!("`{other}` cannot be set; the mask may name bindings, etag and version"),
            )),
        })
        .collect()
}

/// `POST …/registries/{r}:testIamPermissions`
pub async fn test(
    state: &AdminState,
    name: &RegistryName,
    caller: &Caller,
    request: TestIamPermissions,
) -> Result<Json<TestIamPermissions>, ApiError> {
    for (i, asked) in request.permissions.iter().enumerate() {
        if iam::permission(asked).is_none() {
            return Err(ApiError::invalid_field(
                &format!("permissions[{i}]"),
                format!(
                    "`{asked}` is not a permission of a registry; they are {}",
                    iam::PERMISSIONS.join(", ")
                ),
            ));
        }
    }
    let policy = match registry_policy(state, name).await? {
        Some(policy) => policy,
        // Only a caller who could read the registry learns that it does not exist.
        None if caller.holds_on_project("cloudiot.registries.get") => {
            return Err(StoreError::NotFound(Resource::registry(name)).into());
        }
        None => Policy::default(),
    };
    let permissions = request
        .permissions
        .into_iter()
        .filter(|p| caller.holds(&policy, p))
        .collect();
    Ok(Json(TestIamPermissions { permissions }))
}
