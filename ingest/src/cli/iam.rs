//! `ingest iam …`: a registry's IAM policy, as `gcloud iot registries get-iam-policy`,
//! `set-iam-policy`, `add-iam-policy-binding` and `remove-iam-policy-binding` did, plus `test`,
//! which asks the server which permissions the caller holds. `add` and `remove` read the policy
//! and write it back with its etag, reading again when another admin changed it in between, so
//! no one's grant is lost.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;
use shared::iam::{Binding, Policy, SetIamPolicyRequest, TestIamPermissions};

use super::UsageError;
use super::client::{AdminClient, AdminError, AdminOptions};
use super::output::{Output, decode, emit, print_json};

const EXAMPLES: &str = "\
Examples:
  ingest iam add barn-sensors --member user:alice@example.com --role roles/cloudiot.viewer
  ingest iam remove barn-sensors --member user:alice@example.com --role roles/cloudiot.viewer
  ingest iam get barn-sensors --output json > policy.json
  ingest iam set barn-sensors policy.json
  ingest iam test barn-sensors cloudiot.devices.create cloudiot.devices.updateConfig

Roles: roles/cloudiot.viewer, deviceController, provisioner, editor, admin (and roles/viewer,
editor, owner). Members: user:EMAIL, serviceAccount:EMAIL, domain:DOMAIN, allAuthenticatedUsers.";

/// IAM subcommands.
#[derive(Debug, clap::Subcommand)]
#[command(after_help = EXAMPLES)]
pub enum IamCommand {
    /// Show a registry's IAM policy
    Get(RegistryArgs),
    /// Replace a registry's IAM policy with a JSON file (`-` for stdin); a file holding the etag
    /// it was read with is refused if the policy changed since
    Set(SetArgs),
    /// Grant a role on a registry to a member
    Add(BindingArgs),
    /// Take a role on a registry away from a member
    Remove(BindingArgs),
    /// Show which of the given permissions you hold on a registry
    Test(TestArgs),
}

/// `iam get`.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Registry id
    #[arg(value_name = "REGISTRY")]
    registry: String,
    #[command(flatten)]
    api: AdminOptions,
}

/// `iam set`.
#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// Registry id
    #[arg(value_name = "REGISTRY")]
    registry: String,
    /// The policy as JSON (`{"bindings": [...], "etag": "..."}`), or `-` to read stdin
    #[arg(value_name = "POLICY_FILE")]
    file: PathBuf,
    #[command(flatten)]
    api: AdminOptions,
}

/// `iam add|remove`.
#[derive(Debug, clap::Args)]
pub struct BindingArgs {
    /// Registry id
    #[arg(value_name = "REGISTRY")]
    registry: String,
    /// Who: user:EMAIL, serviceAccount:EMAIL, group:EMAIL, domain:DOMAIN, allAuthenticatedUsers
    #[arg(long, value_name = "MEMBER")]
    member: String,
    /// The role, e.g. roles/cloudiot.viewer
    #[arg(long, value_name = "ROLE")]
    role: String,
    #[command(flatten)]
    api: AdminOptions,
}

/// `iam test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Registry id
    #[arg(value_name = "REGISTRY")]
    registry: String,
    /// Permissions to test, e.g. cloudiot.devices.create
    #[arg(value_name = "PERMISSION", required = true)]
    permissions: Vec<String>,
    #[command(flatten)]
    api: AdminOptions,
}

/// How often `add`/`remove` read the policy again after losing a race to another admin.
const RACE_ATTEMPTS: usize = 5;

/// Runs an IAM subcommand.
pub async fn run(command: IamCommand) -> anyhow::Result<()> {
    match command {
        IamCommand::Get(args) => {
            let client = AdminClient::connect(&args.api).await?;
            let policy = get(&client, &args.registry).await?;
            show(&client, &args.registry, policy, "")
        }
        IamCommand::Set(args) => set(args).await,
        IamCommand::Add(args) => change(args, true).await,
        IamCommand::Remove(args) => change(args, false).await,
        IamCommand::Test(args) => test(args).await,
    }
}

async fn get(client: &AdminClient, registry: &str) -> anyhow::Result<Value> {
    let method = format!("{registry}:getIamPolicy");
    client
        .post(&["registries", &method], &serde_json::json!({}))
        .await
}

async fn put(client: &AdminClient, registry: &str, policy: Policy) -> anyhow::Result<Value> {
    let method = format!("{registry}:setIamPolicy");
    let body = SetIamPolicyRequest {
        policy,
        update_mask: None,
    };
    client.post(&["registries", &method], &body).await
}

async fn set(args: SetArgs) -> anyhow::Result<()> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the policy from stdin")?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading policy file {}", args.file.display()))?
    };
    // Both a bare policy and `get --output json`'s answer are policies; a setIamPolicy request
    // body is accepted too.
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("{} is not JSON: {e}", args.file.display())))?;
    let json = json.get("policy").cloned().unwrap_or(json);
    let policy: Policy = serde_json::from_value(json)
        .map_err(|e| UsageError(format!("{} is not a policy: {e}", args.file.display())))?;
    let client = AdminClient::connect(&args.api).await?;
    let answer = put(&client, &args.registry, policy).await?;
    show(&client, &args.registry, answer, "set ")
}

async fn change(args: BindingArgs, grant: bool) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.api).await?;
    for _ in 0..RACE_ATTEMPTS {
        let mut policy: Policy = decode(get(&client, &args.registry).await?, "policy")?;
        if !edit(&mut policy, &args.member, &args.role, grant) {
            let done = if grant { "holds" } else { "does not hold" };
            emit(&format!(
                "{} {done} {} already; nothing changed\n",
                args.member, args.role
            ))?;
            return Ok(());
        }
        match put(&client, &args.registry, policy).await {
            Ok(answer) => {
                let verb = if grant { "granted; " } else { "revoked; " };
                return show(&client, &args.registry, answer, verb);
            }
            Err(err) if lost_race(&err) => continue,
            Err(err) => return Err(err),
        }
    }
    anyhow::bail!(
        "the policy kept changing under this command ({RACE_ATTEMPTS} attempts); try again"
    )
}

/// Adds or removes `member` in `role`'s binding; whether anything changed.
fn edit(policy: &mut Policy, member: &str, role: &str, grant: bool) -> bool {
    let at = policy.bindings.iter().position(|b| b.role == role);
    match (at, grant) {
        (Some(i), true) if policy.bindings[i].members.iter().any(|m| m == member) => false,
        (Some(i), true) => {
            policy.bindings[i].members.push(member.to_owned());
            true
        }
        (None, true) => {
            policy.bindings.push(Binding {
                role: role.to_owned(),
                members: vec![member.to_owned()],
                condition: None,
            });
            true
        }
        (Some(i), false) => {
            let before = policy.bindings[i].members.len();
            policy.bindings[i].members.retain(|m| m != member);
            policy.bindings[i].members.len() != before
        }
        (None, false) => false,
    }
}

fn lost_race(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<AdminError>(),
        Some(AdminError::Refused { info: Some(info), .. }) if info.reason == "IAM_POLICY_ETAG_MISMATCH"
    )
}

async fn test(args: TestArgs) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.api).await?;
    let method = format!("{}:testIamPermissions", args.registry);
    let body = TestIamPermissions {
        permissions: args.permissions.clone(),
    };
    let answer = client.post(&["registries", &method], &body).await?;
    if client.output == Output::Json {
        return print_json(&answer);
    }
    let held: TestIamPermissions = decode(answer, "permissions")?;
    let mut text = String::new();
    for permission in &args.permissions {
        let mark = if held.permissions.contains(permission) {
            "yes"
        } else {
            "no "
        };
        let _ = writeln!(text, "{mark}  {permission}");
    }
    emit(&text)
}

fn show(client: &AdminClient, registry: &str, answer: Value, verb: &str) -> anyhow::Result<()> {
    if client.output == Output::Json {
        return print_json(&answer);
    }
    let policy: Policy = decode(answer, "policy")?;
    let mut text = format!(
        "{verb}IAM policy of registry {} (etag {})\n",
        client.registry_name(registry),
        shared::proto3::encode_base64(&policy.etag)
    );
    if policy.bindings.is_empty() {
        text.push_str("  no bindings: only owners may use this registry\n");
    }
    for binding in &policy.bindings {
        let _ = writeln!(text, "  {}: {}", binding.role, binding.members.join(", "));
    }
    emit(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_remove_edit_one_binding_and_say_when_nothing_changes() {
        let mut policy = Policy::default();
        assert!(edit(
            &mut policy,
            "user:a@x.io",
            "roles/cloudiot.viewer",
            true
        ));
        assert!(!edit(
            &mut policy,
            "user:a@x.io",
            "roles/cloudiot.viewer",
            true
        ));
        assert!(edit(
            &mut policy,
            "user:b@x.io",
            "roles/cloudiot.viewer",
            true
        ));
        assert_eq!(policy.bindings.len(), 1);
        assert_eq!(policy.bindings[0].members, ["user:a@x.io", "user:b@x.io"]);
        assert!(edit(
            &mut policy,
            "user:a@x.io",
            "roles/cloudiot.viewer",
            false
        ));
        assert!(!edit(
            &mut policy,
            "user:a@x.io",
            "roles/cloudiot.viewer",
            false
        ));
        assert!(!edit(
            &mut policy,
            "user:a@x.io",
            "roles/cloudiot.admin",
            false
        ));
        assert_eq!(policy.bindings[0].members, ["user:b@x.io"]);
    }
}
