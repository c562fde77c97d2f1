//! What the admin API's caller may do. Each path and method needs one IoT Core permission, on the
//! project (listing and creating registries) or on one registry; [`needed`] is the one table
//! saying which, and a path it does not know is open only to owners, so a route added without
//! an entry here fails closed. Owners pass without a store read; anyone else passes when a
//! project role or the registry's policy grants the permission, and is otherwise refused with
//! Google's `PERMISSION_DENIED` naming the permission, the resource and a role that has it.

use std::collections::BTreeMap;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use shared::iam::{self, Policy};
use shared::{Code, ErrorInfo, RegistryName};

use super::AdminState;
use crate::http::error::ApiError;
use crate::iam::{Caller, empty_policy};
use crate::registry::StoreError;

/// The permission a request needs, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Need {
    /// Nothing: `:testIamPermissions` answers every caller about itself.
    Nothing,
    /// A permission on the project: every registry of it.
    Project(&'static str, String),
    /// A permission on one registry.
    Registry(&'static str, RegistryName),
}

/// The permission `method` on `path` needs; `None` for a path this table does not know. Paths
/// are `/v1/projects/{p}/locations/{l}/registries[/{r}[:m]][/devices[/{d}[:m]][/{sub}]]`.
pub(super) fn needed(method: &Method, path: &str) -> Option<Result<Need, ApiError>> {
    let rest = path.strip_prefix("/v1/projects/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let (project, location) = match parts.get(..4)? {
        [project, "locations", location, "registries"] => (*project, *location),
        _ => return None,
    };
    let read = *method == Method::GET || *method == Method::HEAD;
    let Some(registry) = parts.get(4) else {
        let parent = format!("projects/{project}/locations/{location}");
        let permission = match *method {
            _ if read => "cloudiot.registries.list",
            Method::POST => "cloudiot.registries.create",
            _ => return None,
        };
        return Some(Ok(Need::Project(permission, parent)));
    };
    let (registry, custom) = match registry.split_once(':') {
        Some((id, method)) => (id, Some(method)),
        None => (*registry, None),
    };
    let name = match RegistryName::from_parts(project, location, registry) {
        Ok(name) => name,
        Err(e) => return Some(Err(e.into())),
    };
    let permission = match (&parts[5..], custom) {
        ([], None) => match *method {
            _ if read => "cloudiot.registries.get",
            Method::PATCH => "cloudiot.registries.update",
            Method::DELETE => "cloudiot.registries.delete",
            _ => return None,
        },
        ([], Some(custom)) if *method == Method::POST => match custom {
            "getIamPolicy" => "cloudiot.registries.getIamPolicy",
            "setIamPolicy" => "cloudiot.registries.setIamPolicy",
            "testIamPermissions" => return Some(Ok(Need::Nothing)),
            "bindDeviceToGateway" => "cloudiot.devices.bindGateway",
            "unbindDeviceFromGateway" => "cloudiot.devices.unbindGateway",
            _ => return None,
        },
        (["fleetHealth"], None) if read => "cloudiot.devices.list",
        (["devices"], None) => match *method {
            _ if read => "cloudiot.devices.list",
            Method::POST => "cloudiot.devices.create",
            _ => return None,
        },
        (["devices", device], None) => device_permission(method, device)?,
        (
            [
                "devices",
                _,
                "configVersions" | "states" | "presence" | "commands",
            ],
            None,
        ) if read => "cloudiot.devices.get",
        _ => return None,
    };
    Some(Ok(Need::Registry(permission, name)))
}

/// What a call on one device needs: the resource methods, or a custom `:method`.
fn device_permission(method: &Method, device: &str) -> Option<&'static str> {
    match device.split_once(':') {
        None => match *method {
            Method::GET | Method::HEAD => Some("cloudiot.devices.get"),
            Method::PATCH => Some("cloudiot.devices.update"),
            Method::DELETE => Some("cloudiot.devices.delete"),
            _ => None,
        },
        Some((_, custom)) if *method == Method::POST => match custom {
            "modifyCloudToDeviceConfig" => Some("cloudiot.devices.updateConfig"),
            "sendCommandToDevice" => Some("cloudiot.devices.sendCommand"),
            _ => None,
        },
        Some(_) => None,
    }
}

/// Lets the request through when its [`Caller`] holds what it needs.
pub(super) async fn authorize(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::internal("the admin API ran authorize before authenticate"))?;
    match needed(request.method(), request.uri().path()) {
        // Owners reach every path, including the fallback's "no such path" answer.
        None if every_permission(&caller) => {}
        None => {
            return Err(ApiError::new(
                Code::PermissionDenied,
                "this path is open only to owners",
            ));
        }
        Some(Err(invalid_name)) => return Err(invalid_name),
        Some(Ok(Need::Nothing)) => {}
        Some(Ok(Need::Project(permission, parent))) => {
            if !caller.holds_on_project(permission) {
                return Err(denied(&caller, permission, &parent));
            }
        }
        Some(Ok(Need::Registry(permission, name))) => {
            let held = caller.holds_on_project(permission)
                || registry_policy(&state, &name)
                    .await?
                    .is_some_and(|policy| caller.holds(&policy, permission));
            if !held {
                return Err(denied(&caller, permission, &name.to_string()));
            }
        }
    }
    Ok(next.run(request).await)
}

fn every_permission(caller: &Caller) -> bool {
    iam::PERMISSIONS.iter().all(|p| caller.holds_on_project(p))
}

/// The registry's policy, `None` when the registry does not exist (which a caller without
/// rights is not told).
pub(super) async fn registry_policy(
    state: &AdminState,
    name: &RegistryName,
) -> Result<Option<Policy>, ApiError> {
    match state.registry.get_iam_policy(name).await {
        Ok(policy) => Ok(Some(policy.unwrap_or_else(empty_policy))),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Google's refusal, in its words, with a role that would grant the permission.
fn denied(caller: &Caller, permission: &str, resource: &str) -> ApiError {
    let role = iam::ROLES
        .iter()
        .map(|(role, _)| *role)
        .find(|role| role.starts_with("roles/cloudiot.") && iam::grants(role, permission))
        .unwrap_or("roles/cloudiot.admin");
    let message = format!(
        "Permission '{permission}' denied on resource '{resource}' (or it may not exist) for \
         {principal}: ask an owner to grant it a role that includes it, such as {role}",
        principal = caller.principal,
    );
    let metadata = BTreeMap::from([
        ("permission".to_owned(), permission.to_owned()),
        ("resource".to_owned(), resource.to_owned()),
        ("principal".to_owned(), caller.principal.to_string()),
    ]);
    ApiError::new(Code::PermissionDenied, message)
        .with_info(ErrorInfo::new("IAM_PERMISSION_DENIED", metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: &str = "/v1/projects/my-project/locations/us-central1/registries";

    fn permission(method: Method, path: &str) -> Option<&'static str> {
        match needed(&method, &format!("{L}{path}"))?.ok()? {
            Need::Nothing => Some(""),
            Need::Project(p, _) | Need::Registry(p, _) => Some(p),
        }
    }

    /// Every route of the admin router, with what it needs.
    #[test]
    fn every_route_needs_its_iot_core_permission() {
        let cases = [
            (Method::GET, "", "cloudiot.registries.list"),
            (Method::POST, "", "cloudiot.registries.create"),
            (Method::GET, "/reg", "cloudiot.registries.get"),
            (Method::PATCH, "/reg", "cloudiot.registries.update"),
            (Method::DELETE, "/reg", "cloudiot.registries.delete"),
            (
                Method::POST,
                "/reg:getIamPolicy",
                "cloudiot.registries.getIamPolicy",
            ),
            (
                Method::POST,
                "/reg:setIamPolicy",
                "cloudiot.registries.setIamPolicy",
            ),
            (Method::POST, "/reg:testIamPermissions", ""),
            (
                Method::POST,
                "/reg:bindDeviceToGateway",
                "cloudiot.devices.bindGateway",
            ),
            (
                Method::POST,
                "/reg:unbindDeviceFromGateway",
                "cloudiot.devices.unbindGateway",
            ),
            (Method::GET, "/reg/devices", "cloudiot.devices.list"),
            (Method::GET, "/reg/fleetHealth", "cloudiot.devices.list"),
            (Method::POST, "/reg/devices", "cloudiot.devices.create"),
            (Method::GET, "/reg/devices/d", "cloudiot.devices.get"),
            (Method::HEAD, "/reg/devices/d", "cloudiot.devices.get"),
            (Method::PATCH, "/reg/devices/d", "cloudiot.devices.update"),
            (Method::DELETE, "/reg/devices/d", "cloudiot.devices.delete"),
            (
                Method::POST,
                "/reg/devices/d:modifyCloudToDeviceConfig",
                "cloudiot.devices.updateConfig",
            ),
            (
                Method::POST,
                "/reg/devices/d:sendCommandToDevice",
                "cloudiot.devices.sendCommand",
            ),
            (
                Method::GET,
                "/reg/devices/d/configVersions",
                "cloudiot.devices.get",
            ),
            (Method::GET, "/reg/devices/d/states", "cloudiot.devices.get"),
            (
                Method::GET,
                "/reg/devices/d/presence",
                "cloudiot.devices.get",
            ),
            (
                Method::GET,
                "/reg/devices/d/commands",
                "cloudiot.devices.get",
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(
                permission(method.clone(), path),
                Some(expected),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn unknown_paths_and_methods_need_an_owner() {
        for (method, path) in [
            (Method::PUT, "/reg"),
            (Method::POST, "/reg"),
            (Method::POST, "/reg:deleteEverything"),
            (Method::POST, "/reg/devices/d:reboot"),
            (Method::DELETE, "/reg/devices/d/states"),
            (Method::POST, "/reg/fleetHealth"),
            (Method::GET, "/reg/devices/d/secrets"),
            (Method::GET, "/reg/groups/g"),
        ] {
            assert_eq!(permission(method.clone(), path), None, "{method} {path}");
        }
        assert!(needed(&Method::GET, "/v1/projects/p/other").is_none());
    }

    #[test]
    fn a_refusal_names_the_permission_the_resource_and_a_role() {
        let caller = Caller::from_email("v@example.com", std::sync::Arc::new([]));
        let err = denied(
            &caller,
            "cloudiot.devices.create",
            "projects/p/locations/l/registries/r",
        );
        let text = format!("{err:?}");
        assert_eq!(err.code(), Code::PermissionDenied);
        assert!(text.contains("Permission 'cloudiot.devices.create' denied on resource 'projects/p/locations/l/registries/r'"), "{text}");
        assert!(text.contains("roles/cloudiot.provisioner"), "{text}");
    }
}
