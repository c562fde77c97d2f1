//! Who may do what on the admin API. A caller is a principal (`user:alice@example.com`) with the
//! roles it holds across the whole project, given at startup; a registry's stored policy grants
//! more, on that registry only. A permission is held when a project role or a registry binding
//! whose member matches the caller grants it. Owners (project role `roles/owner`: the loopback
//! caller, the single `--admin-token`, and whoever the operator names) hold every permission,
//! so an empty policy leaves a registry to its owners and nothing opens up by default.

use std::collections::BTreeSet;
use std::sync::Arc;

use shared::iam::{self, Binding, Policy};
use shared::resources::FieldViolation;

/// The project role that holds every permission.
pub const OWNER_ROLE: &str = "roles/owner";

/// The most members a policy may list across its bindings, as Google's IAM allows.
pub const MAX_POLICY_MEMBERS: usize = 1500;

/// An authenticated caller of the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `user:EMAIL` or `serviceAccount:EMAIL`, lower-cased; for the single `--admin-token` and
    /// the loopback caller a name that no policy member matches (`owner`).
    pub principal: Arc<str>,
    /// The roles it holds on every registry and on the project itself (listing and creating
    /// registries).
    pub project_roles: Arc<[&'static str]>,
}

impl Caller {
    /// The caller that holds everything: loopback, or the single owner token.
    pub fn owner() -> Self {
        Self {
            principal: "owner".into(),
            project_roles: Arc::new([OWNER_ROLE]),
        }
    }

    /// A caller known by its Google account email (`…gserviceaccount.com` is a service account).
    pub fn from_email(email: &str, project_roles: Arc<[&'static str]>) -> Self {
        let email = email.to_ascii_lowercase();
        let kind = if email.ends_with(".gserviceaccount.com") {
            "serviceAccount"
        } else {
            "user"
        };
        Self {
            principal: format!("{kind}:{email}").into(),
            project_roles,
        }
    }

    /// Whether a project role grants `permission`.
    pub fn holds_on_project(&self, permission: &str) -> bool {
        self.project_roles
            .iter()
            .any(|role| iam::grants(role, permission))
    }

    /// Whether a project role or a binding of `policy` that names this caller grants
    /// `permission`.
    pub fn holds(&self, policy: &Policy, permission: &str) -> bool {
        self.holds_on_project(permission)
            || policy.bindings.iter().any(|binding| {
                iam::grants(&binding.role, permission) && binding.members.iter().any(|m| self.is(m))
            })
    }

    /// Whether the policy member `member` names this caller. Groups are never matched: an ID
    /// token or a bearer token says nothing about group membership.
    fn is(&self, member: &str) -> bool {
        let principal = &*self.principal;
        match member.split_once(':') {
            _ if member == "allUsers" || member == "allAuthenticatedUsers" => true,
            Some(("domain", domain)) => principal
                .rsplit_once('@')
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain)),
            Some(("user" | "serviceAccount", _)) => member.eq_ignore_ascii_case(principal),
            _ => false,
        }
    }
}

/// Checks a policy to store: known roles, well-formed members, no conditions or audit configs,
/// at most [`MAX_POLICY_MEMBERS`] members. Returns it tidied: version 1, bindings merged by role,
/// members sorted and without duplicates, empty bindings dropped.
pub fn validate(policy: Policy) -> Result<Policy, FieldViolation> {
    if !matches!(policy.version, 0 | 1 | 3) {
        return Err(FieldViolation::new(
            "policy.version",
            format!("{} is not a policy version; use 1 (or 3)", policy.version),
        ));
    }
    if !policy.audit_configs.is_empty() {
        return Err(FieldViolation::new(
            "policy.auditConfigs",
            "audit logging is not configurable on this server; send the policy without auditConfigs",
        ));
    }
    let mut merged: Vec<(&'static str, BTreeSet<String>)> = Vec::new();
    let mut total = 0;
    for (i, binding) in policy.bindings.into_iter().enumerate() {
        let field = |what: &str| format!("policy.bindings[{i}].{what}");
        if binding.condition.is_some() {
            return Err(FieldViolation::new(
                field("condition"),
                "IAM conditions are not evaluated by this server; grant the role without a condition",
            ));
        }
        let role = iam::role(&binding.role).ok_or_else(|| {
            let known: Vec<_> = iam::ROLES.iter().map(|(name, _)| *name).collect();
            FieldViolation::new(
                field("role"),
                format!(
                    "`{}` is not a role of this resource; roles are {}",
                    binding.role,
                    known.join(", ")
                ),
            )
        })?;
        for (j, member) in binding.members.iter().enumerate() {
            check_member(member).map_err(|why| {
                // Named (escaped, shortened) so the caller sees which entry of a long list.
                let shown: String = member.chars().take(80).collect();
                FieldViolation::new(field(&format!("members[{j}]")), format!("{shown:?}: {why}"))
            })?;
        }
        total += binding.members.len();
        let slot = match merged.iter().position(|(r, _)| *r == role) {
            Some(at) => &mut merged[at].1,
            None => {
                merged.push((role, BTreeSet::new()));
                &mut merged.last_mut().expect("just pushed").1
            }
        };
        slot.extend(binding.members.iter().map(|m| normalise_member(m)));
    }
    if total > MAX_POLICY_MEMBERS {
        return Err(FieldViolation::new(
            "policy.bindings",
            format!("{total} members in all; a policy may name at most {MAX_POLICY_MEMBERS}"),
        ));
    }
    let bindings = merged
        .into_iter()
        .filter(|(_, members)| !members.is_empty())
        .map(|(role, members)| Binding {
            role: role.to_owned(),
            members: members.into_iter().collect(),
            condition: None,
        })
        .collect();
    Ok(Policy {
        version: 1,
        bindings,
        audit_configs: Vec::new(),
        etag: policy.etag,
    })
}

/// Why `member` is not a member this server can match, if it is not.
fn check_member(member: &str) -> Result<(), &'static str> {
    const SHAPE: &str = "members look like user:EMAIL, serviceAccount:EMAIL, group:EMAIL, \
                         domain:DOMAIN, allAuthenticatedUsers or allUsers";
    if member == "allUsers" || member == "allAuthenticatedUsers" {
        return Ok(());
    }
    let Some((kind, value)) = member.split_once(':') else {
        return Err(SHAPE);
    };
    let email = |v: &str| {
        v.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
    };
    let plain = !value.is_empty()
        && value.len() <= 254
        && !value.contains(|c: char| c.is_whitespace() || c.is_control());
    match kind {
        "user" | "serviceAccount" | "group" if plain && email(value) => Ok(()),
        "domain" if plain && value.contains('.') && !value.contains('@') => Ok(()),
        _ => Err(SHAPE),
    }
}

/// Emails compare without case: stored lower-cased, as Google's IAM shows them.
fn normalise_member(member: &str) -> String {
    match member.split_once(':') {
        Some((kind, value)) => format!("{kind}:{}", value.to_ascii_lowercase()),
        None => member.to_owned(),
    }
}

/// A fresh etag for a stored policy: 8 random bytes.
pub fn new_etag() -> Vec<u8> {
    let mut bytes = vec![0u8; 8];
    // The system generator does not fail on Linux; a zero etag would still differ from the
    // empty policy's and from any random one with overwhelming odds.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes
}

/// The policy of a registry that never had one set.
pub fn empty_policy() -> Policy {
    Policy {
        version: 1,
        etag: shared::proto3::decode_base64(iam::EMPTY_POLICY_ETAG).expect("a valid constant"),
        ..Policy::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(principal: &str) -> Caller {
        Caller {
            principal: principal.into(),
            project_roles: Arc::new([]),
        }
    }

    fn policy(role: &str, members: &[&str]) -> Policy {
        Policy {
            bindings: vec![Binding {
                role: role.into(),
                members: members.iter().map(|m| (*m).to_owned()).collect(),
                condition: None,
            }],
            ..Policy::default()
        }
    }

    #[test]
    fn members_match_by_email_domain_and_everyone() {
        let alice = Caller::from_email("Alice@Example.com", Arc::new([]));
        assert_eq!(&*alice.principal, "user:alice@example.com");
        let list = "cloudiot.devices.list";
        for member in [
            "user:alice@example.com",
            "user:ALICE@example.com",
            "domain:example.com",
            "allAuthenticatedUsers",
            "allUsers",
        ] {
            assert!(
                alice.holds(&policy("roles/cloudiot.viewer", &[member]), list),
                "{member}"
            );
        }
        for member in [
            "user:bob@example.com",
            "serviceAccount:alice@example.com",
            "group:alice@example.com",
            "domain:example.org",
        ] {
            assert!(
                !alice.holds(&policy("roles/cloudiot.viewer", &[member]), list),
                "{member}"
            );
        }
        let robot = Caller::from_email("ci@p.iam.gserviceaccount.com", Arc::new([]));
        assert_eq!(
            &*robot.principal,
            "serviceAccount:ci@p.iam.gserviceaccount.com"
        );
    }

    #[test]
    fn a_binding_grants_only_its_roles_permissions() {
        let p = policy("roles/cloudiot.deviceController", &["user:c@example.com"]);
        let c = caller("user:c@example.com");
        assert!(c.holds(&p, "cloudiot.devices.updateConfig"));
        assert!(!c.holds(&p, "cloudiot.devices.delete"));
        assert!(!caller("user:d@example.com").holds(&p, "cloudiot.devices.get"));
    }

    #[test]
    fn owners_hold_everything_without_a_policy() {
        let owner = Caller::owner();
        for p in iam::PERMISSIONS {
            assert!(owner.holds(&Policy::default(), p), "{p}");
        }
        let viewer = Caller {
            project_roles: Arc::new(["roles/cloudiot.viewer"]),
            ..caller("user:v@example.com")
        };
        assert!(viewer.holds_on_project("cloudiot.registries.list"));
        assert!(!viewer.holds_on_project("cloudiot.registries.create"));
    }

    #[test]
    fn validation_tidies_and_refuses_what_cannot_be_enforced() {
        let mut p = policy(
            "roles/cloudiot.viewer",
            &["user:B@example.com", "user:a@example.com"],
        );
        p.bindings.push(Binding {
            role: "roles/cloudiot.viewer".into(),
            members: vec!["user:b@example.com".into()],
            condition: None,
        });
        p.bindings.push(Binding {
            role: "roles/cloudiot.admin".into(),
            members: vec![],
            condition: None,
        });
        let tidy = validate(p).unwrap();
        assert_eq!(tidy.version, 1);
        assert_eq!(tidy.bindings.len(), 1);
        assert_eq!(
            tidy.bindings[0].members,
            ["user:a@example.com", "user:b@example.com"]
        );

        let err =
            validate(policy("roles/cloudiot.superuser", &["user:a@example.com"])).unwrap_err();
        assert_eq!(err.field, "policy.bindings[0].role");
        assert!(err.message.contains("roles/cloudiot.viewer"), "{err}");
        for bad in [
            "alice@example.com",
            "user:",
            "user:nobody",
            "domain:a@b.c",
            "robot:x@y.z",
        ] {
            let err = validate(policy("roles/cloudiot.viewer", &[bad])).unwrap_err();
            assert_eq!(err.field, "policy.bindings[0].members[0]", "{bad}");
        }
        let mut conditional = policy("roles/cloudiot.viewer", &["user:a@example.com"]);
        conditional.bindings[0].condition = Some(serde_json::json!({"expression": "true"}));
        assert!(
            validate(conditional)
                .unwrap_err()
                .message
                .contains("conditions")
        );
        let many: Vec<String> = (0..=MAX_POLICY_MEMBERS)
            .map(|i| format!("user:u{i}@example.com"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(validate(policy("roles/cloudiot.viewer", &many)).is_err());
    }
}
