//! IAM policies in the proto3 JSON shape of `google.iam.v1` (`Policy`, `Binding` and the three
//! request bodies of `:getIamPolicy`, `:setIamPolicy` and `:testIamPermissions`), as IoT Core's
//! registries carried them, plus the roles IoT Core defined and the permissions each grants. The
//! server enforces them; the CLI and tests read the same tables.

use serde::{Deserialize, Serialize};

use crate::proto3;

/// The etag of a registry whose policy was never set: Google's servers answer this one too.
pub const EMPTY_POLICY_ETAG: &str = "ACAB";

/// A registry's IAM policy: who holds which role on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// The policy language version: 1 (no conditions) is the only one stored; 3 is accepted on
    /// input when no binding has a condition.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: i32,
    /// The role grants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<Binding>,
    /// Audit logging settings: refused, as no audit log exists here (kept to say so).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit_configs: Vec<serde_json::Value>,
    /// Changes with every stored change: a `setIamPolicy` carrying an etag succeeds only when it
    /// is still the stored one (read-modify-write without lost updates).
    #[serde(default, with = "proto3::bytes", skip_serializing_if = "Vec::is_empty")]
    pub etag: Vec<u8>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// One role granted to a list of members.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    /// The role, e.g. `roles/cloudiot.viewer`.
    #[serde(default)]
    pub role: String,
    /// Who holds it: `user:EMAIL`, `serviceAccount:EMAIL`, `group:EMAIL`, `domain:DOMAIN`,
    /// `allAuthenticatedUsers` or `allUsers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// An IAM condition: refused, as conditions are not evaluated here (kept to say so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<serde_json::Value>,
}

/// The body of `POST …/registries/{r}:getIamPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetIamPolicyRequest {
    /// `{"requestedPolicyVersion": N}`; any version is answered with version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<serde_json::Value>,
}

/// The body of `POST …/registries/{r}:setIamPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetIamPolicyRequest {
    /// The new policy.
    #[serde(default)]
    pub policy: Policy,
    /// Which of the policy's fields to replace (`"bindings,etag"` when absent, as Google's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_mask: Option<String>,
}

/// The body of `POST …/registries/{r}:testIamPermissions`, and its answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestIamPermissions {
    /// Asked: the permissions to test; answered: those the caller holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
}

/// Every permission a registry's policy can grant, in IoT Core's spelling.
pub const PERMISSIONS: &[&str] = &[
    "cloudiot.devices.bindGateway",
    "cloudiot.devices.create",
    "cloudiot.devices.delete",
    "cloudiot.devices.get",
    "cloudiot.devices.list",
    "cloudiot.devices.sendCommand",
    "cloudiot.devices.unbindGateway",
    "cloudiot.devices.update",
    "cloudiot.devices.updateConfig",
    "cloudiot.registries.create",
    "cloudiot.registries.delete",
    "cloudiot.registries.get",
    "cloudiot.registries.getIamPolicy",
    "cloudiot.registries.list",
    "cloudiot.registries.setIamPolicy",
    "cloudiot.registries.update",
];

const READ: &[&str] = &[
    "cloudiot.devices.get",
    "cloudiot.devices.list",
    "cloudiot.registries.get",
    "cloudiot.registries.list",
];

const CONTROL: &[&str] = &[
    "cloudiot.devices.sendCommand",
    "cloudiot.devices.updateConfig",
];

const PROVISION: &[&str] = &[
    "cloudiot.devices.create",
    "cloudiot.devices.delete",
    "cloudiot.devices.update",
];

const EDIT: &[&str] = &[
    "cloudiot.devices.bindGateway",
    "cloudiot.devices.unbindGateway",
    "cloudiot.registries.create",
    "cloudiot.registries.delete",
    "cloudiot.registries.update",
];

const POLICY: &[&str] = &[
    "cloudiot.registries.getIamPolicy",
    "cloudiot.registries.setIamPolicy",
];

/// The roles a policy may grant and the permission sets each is made of, as IoT Core documented
/// them: `viewer` reads; `deviceController` also changes configs and sends commands;
/// `provisioner` also creates, changes and deletes devices; `editor` also changes registries and
/// gateway bindings; `admin` also reads and sets policies. The basic roles grant the same as
/// their IoT Core counterparts (`roles/owner` as admin, `roles/editor` as editor, `roles/viewer`
/// as viewer).
pub const ROLES: &[(&str, &[&[&str]])] = &[
    ("roles/cloudiot.viewer", &[READ]),
    ("roles/cloudiot.deviceController", &[READ, CONTROL]),
    ("roles/cloudiot.provisioner", &[READ, CONTROL, PROVISION]),
    ("roles/cloudiot.editor", &[READ, CONTROL, PROVISION, EDIT]),
    (
        "roles/cloudiot.admin",
        &[READ, CONTROL, PROVISION, EDIT, POLICY],
    ),
    ("roles/viewer", &[READ]),
    ("roles/editor", &[READ, CONTROL, PROVISION, EDIT]),
    ("roles/owner", &[READ, CONTROL, PROVISION, EDIT, POLICY]),
];

/// The known role spelled `role`, by its static name.
pub fn role(role: &str) -> Option<&'static str> {
    ROLES
        .iter()
        .map(|(name, _)| *name)
        .find(|name| *name == role)
}

/// Whether `role` grants `permission`; unknown roles grant nothing.
pub fn grants(role: &str, permission: &str) -> bool {
    ROLES
        .iter()
        .find(|(name, _)| *name == role)
        .is_some_and(|(_, sets)| sets.iter().any(|set| set.contains(&permission)))
}

/// The known permission spelled `permission`, by its static name.
pub fn permission(permission: &str) -> Option<&'static str> {
    PERMISSIONS.iter().copied().find(|p| *p == permission)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_iot_core_documented() {
        let viewer = "roles/cloudiot.viewer";
        assert!(grants(viewer, "cloudiot.devices.list"));
        assert!(!grants(viewer, "cloudiot.devices.create"));
        assert!(!grants(viewer, "cloudiot.devices.updateConfig"));
        let controller = "roles/cloudiot.deviceController";
        assert!(grants(controller, "cloudiot.devices.updateConfig"));
        assert!(grants(controller, "cloudiot.devices.sendCommand"));
        assert!(!grants(controller, "cloudiot.devices.delete"));
        let provisioner = "roles/cloudiot.provisioner";
        assert!(grants(provisioner, "cloudiot.devices.delete"));
        assert!(!grants(provisioner, "cloudiot.registries.update"));
        assert!(grants(
            "roles/cloudiot.editor",
            "cloudiot.registries.delete"
        ));
        assert!(!grants(
            "roles/cloudiot.editor",
            "cloudiot.registries.setIamPolicy"
        ));
        assert!(grants(
            "roles/cloudiot.admin",
            "cloudiot.registries.setIamPolicy"
        ));
        assert!(!grants("roles/unknown", "cloudiot.devices.get"));
    }

    #[test]
    fn every_permission_is_granted_by_admin_and_every_role_grant_is_a_permission() {
        for p in PERMISSIONS {
            assert!(grants("roles/cloudiot.admin", p), "{p}");
            assert!(grants("roles/owner", p), "{p}");
        }
        for (role, sets) in ROLES {
            for p in sets.iter().flat_map(|s| s.iter()) {
                assert!(permission(p).is_some(), "{role} grants unknown {p}");
            }
        }
    }

    #[test]
    fn policy_json_round_trips_in_googles_shape() {
        let text = r#"{"version":1,"bindings":[{"role":"roles/cloudiot.viewer","members":["user:a@example.com"]}],"etag":"ACAB"}"#;
        let policy: Policy = serde_json::from_str(text).unwrap();
        assert_eq!(
            policy.etag,
            proto3::decode_base64(EMPTY_POLICY_ETAG).unwrap()
        );
        assert_eq!(policy.bindings[0].members, ["user:a@example.com"]);
        assert_eq!(serde_json::to_string(&policy).unwrap(), text);
    }
}
