//! The Cloud Run services in `infra/` and `ingest serve` must agree on every setting: each
//! environment variable (and flag, if any) that terraform gives a service must be one ingest
//! reads, with a value ingest accepts, and each service must get what its role needs. A renamed
//! or retyped setting then breaks this test, not a deployment.
//!
//! The `.tf` files are read with a small line-based reader that relies on `terraform fmt`'s
//! layout (one attribute per line, `env {` on a line of its own), which `scripts/infra-check`
//! enforces. Terraform expressions in values (`var.…`, `local.…`, `"${…}"`) are resolved from the
//! variables' defaults and the `locals` blocks, with the sample values below for what only a real
//! deployment knows.
//!
//! The MQTT VMs (`infra/mqtt_vm.tf`, `infra/vm/`) are checked in [`vm`]: their settings, instance
//! template, load balancer and units, and a rehearsal of their boot script against fakes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Command, FromArgMatches};
use ingest::config::{Role, ServeArgs, SinkUrl};
use ingest::http::admin::AdminAccess;
use ingest::telemetry::LogFormat;

mod vm;

/// Values a terraform expression only has in a real deployment.
const SAMPLES: &[(&str, &str)] = &[
    ("var.project_id", "my-project"),
    // The database's name is var.firestore_database, "(default)" unless set.
    ("google_firestore_database.registry.name", "(default)"),
    ("join(\",\", var.admin_owners)", "user:ops@example.com"),
    // The c2d topic's id, as the provider gives it.
    (
        "google_pubsub_topic.c2d.id",
        "projects/my-project/topics/iotcore-c2d",
    ),
    // The image is set once it is built (infra/README.md).
    (
        "var.image",
        "us-central1-docker.pkg.dev/my-project/iotcore/ingest:0123abc",
    ),
];

/// Settings that exist for a laptop or a test, never for Cloud Run.
const LOCAL_ONLY: &[&str] = &["PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST"];

/// One `google_cloud_run_v2_service` as infra/ declares it.
#[derive(Debug)]
struct Service {
    name: String,
    /// `env { name, value }` in order: the name and the value's terraform expression.
    env: Vec<(String, String)>,
    /// The container's `args = [...]`, when given (the image's CMD, `serve`, otherwise).
    args: Option<Vec<String>>,
    container_ports: Vec<u16>,
    /// Constructs this reader does not follow; the test refuses them rather than miss a setting.
    unreadable: Vec<String>,
}

/// infra/ read once: the two services, the locals and the variables' literal defaults.
#[derive(Debug)]
struct Infra {
    services: BTreeMap<String, Service>,
    locals: BTreeMap<String, String>,
    defaults: BTreeMap<String, String>,
}

fn infra_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra")
}

/// The line without a trailing `#` or `//` comment (outside strings).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'#' if !in_string => return &line[..i],
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

/// Net change of block depth on a line: braces outside strings (so `"${var.x}"` counts nothing).
fn depth_change(line: &str) -> i32 {
    let mut in_string = false;
    let mut escaped = false;
    let mut change = 0;
    for c in line.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '{' if !in_string => change += 1,
            '}' if !in_string => change -= 1,
            _ => {}
        }
    }
    change
}

/// `key = value` on one line.
fn attribute(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once('=')?;
    let key = key.trim();
    let is_identifier = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (is_identifier && !value.starts_with('=')).then(|| (key, value.trim()))
}

/// The contents of a `"…"` literal with no interpolation, or None.
fn string_literal(expr: &str) -> Option<String> {
    let inner = expr.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains("${")).then(|| inner.replace("\\\"", "\""))
}

/// A number or a bool literal, as terraform turns it into a string (`10000`, `0.6`, `true`).
fn plain_literal(expr: &str) -> Option<String> {
    let plain = expr == "true" || expr == "false" || expr.parse::<f64>().is_ok();
    plain.then(|| expr.to_owned())
}

/// The text between `header` (e.g. `resource "x" "`) and the next `"`.
fn quoted_name_after<'a>(line: &'a str, header: &str) -> Option<&'a str> {
    line.strip_prefix(header)?.split('"').next()
}

fn read_infra() -> Infra {
    let mut infra = Infra {
        services: BTreeMap::new(),
        locals: BTreeMap::new(),
        defaults: BTreeMap::new(),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(infra_dir())
        .expect("infra/ is readable")
        .map(|entry| entry.expect("infra/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "tf"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no .tf files in {}",
        infra_dir().display()
    );
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a .tf file is readable");
        read_file(&text, &mut infra);
    }
    infra
}

/// What a line at the top of a block opens: the block kind this reader cares about.
enum Open {
    Service(String),
    Locals,
    Variable(String),
    Other,
}

fn read_file(text: &str, infra: &mut Infra) {
    let mut depth = 0;
    let mut current: Option<(Open, i32)> = None;
    let mut service: Option<Service> = None;
    let mut env: Option<(i32, Option<String>, Option<String>)> = None;
    let mut args: Option<String> = None;

    for raw in text.lines() {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let before = depth;
        depth += depth_change(line);

        if before == 0 && line.ends_with('{') {
            let open = if let Some(name) =
                quoted_name_after(line, "resource \"google_cloud_run_v2_service\" \"")
            {
                service = Some(Service {
                    name: name.to_owned(),
                    env: Vec::new(),
                    args: None,
                    container_ports: Vec::new(),
                    unreadable: Vec::new(),
                });
                Open::Service(name.to_owned())
            } else if line == "locals {" {
                Open::Locals
            } else if let Some(name) = quoted_name_after(line, "variable \"") {
                Open::Variable(name.to_owned())
            } else {
                Open::Other
            };
            current = Some((open, depth));
            continue;
        }

        match &current {
            Some((Open::Locals, _)) if before == 1 => {
                if let Some((key, value)) = attribute(line) {
                    infra.locals.insert(key.to_owned(), value.to_owned());
                }
            }
            Some((Open::Variable(name), _)) if before == 1 => {
                if let Some(("default", value)) = attribute(line)
                    && let Some(literal) = string_literal(value).or_else(|| plain_literal(value))
                {
                    infra.defaults.insert(name.clone(), literal);
                }
            }
            Some((Open::Service(_), _)) => {
                let service = service.as_mut().expect("inside a service");
                if let Some(list) = args.as_mut() {
                    list.push_str(line);
                    if line.contains(']') {
                        service.args = Some(string_list(list));
                        args = None;
                    }
                } else if line == "env {" {
                    env = Some((before, None, None));
                } else if let Some((env_depth, name, value)) = env.as_mut() {
                    if depth == *env_depth {
                        let name = name.take().unwrap_or_else(|| {
                            panic!("an env block of {} has no name", service.name)
                        });
                        let value = value.take().unwrap_or_else(|| {
                            panic!("env {name} of {} has no literal value", service.name)
                        });
                        service.env.push((name, value));
                        env = None;
                    } else {
                        match attribute(line) {
                            Some(("name", expr)) => {
                                *name = Some(string_literal(expr).unwrap_or_else(|| {
                                    panic!("env name {expr} is not a plain string")
                                }))
                            }
                            Some(("value", expr)) => *value = Some(expr.to_owned()),
                            _ => service.unreadable.push(line.to_owned()),
                        }
                    }
                } else if line.starts_with("dynamic \"env\"") || line.starts_with("value_source") {
                    service.unreadable.push(line.to_owned());
                } else if let Some((key, value)) = attribute(line) {
                    match key {
                        "args" => {
                            if value.contains(']') {
                                service.args = Some(string_list(value));
                            } else {
                                args = Some(value.to_owned());
                            }
                        }
                        "command" => service.unreadable.push(line.to_owned()),
                        "container_port" => service
                            .container_ports
                            .push(value.parse().expect("container_port is a number")),
                        _ => {}
                    }
                }
            }
            _ => {}
        }

        if depth == 0
            && let Some((Open::Service(name), _)) = current.take()
        {
            let done = service.take().expect("the service being read");
            infra.services.insert(name, done);
        }
    }
    assert_eq!(depth, 0, "unbalanced braces in a .tf file");
}

/// `["a", "b"]` → `[a, b]`.
fn string_list(text: &str) -> Vec<String> {
    let inner = text
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim();
    inner
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| string_literal(item).unwrap_or_else(|| panic!("{item} is not a plain string")))
        .collect()
}

impl Infra {
    fn service(&self, name: &str) -> &Service {
        self.services
            .get(name)
            .unwrap_or_else(|| panic!("infra/ declares no google_cloud_run_v2_service \"{name}\""))
    }

    /// The value a terraform expression has in a deployment with the sample inputs.
    fn resolve(&self, expr: &str) -> String {
        let expr = expr.trim();
        if let Some(&(_, sample)) = SAMPLES.iter().find(|(name, _)| *name == expr) {
            return sample.to_owned();
        }
        if let Some(inner) = expr.strip_prefix('"').and_then(|e| e.strip_suffix('"')) {
            let mut out = String::new();
            let mut rest = inner;
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let end = rest[start..].find('}').expect("a closed ${…}") + start;
                out.push_str(&self.resolve(&rest[start + 2..end]));
                rest = &rest[end + 1..];
            }
            out.push_str(rest);
            return out;
        }
        if let Some(name) = expr.strip_prefix("local.") {
            let value = self
                .locals
                .get(name)
                .unwrap_or_else(|| panic!("no local {name}"));
            return self.resolve(value);
        }
        if let Some(name) = expr.strip_prefix("var.")
            && let Some(default) = self.defaults.get(name)
        {
            return default.clone();
        }
        panic!("cannot resolve the terraform expression `{expr}`: add a sample for it to SAMPLES")
    }

    /// The service's settings as `ingest serve` would get them: name → value.
    fn settings(&self, service: &Service) -> BTreeMap<String, String> {
        service
            .env
            .iter()
            .map(|(name, expr)| (name.clone(), self.resolve(expr)))
            .collect()
    }
}

/// `ingest serve`'s settings, from its clap definition.
fn serve_command() -> Command {
    ServeArgs::augment_args(Command::new("serve"))
}

/// Every environment variable `ingest serve` reads, with the flag that has the same meaning.
fn ingest_env() -> BTreeMap<String, String> {
    serve_command()
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_owned();
            let long = arg.get_long()?.to_owned();
            Some((env, long))
        })
        .collect()
}

/// Parses a service's settings the way `ingest serve` does, as flags so that this process's own
/// environment (the test command exports PUBSUB_EMULATOR_HOST) cannot leak in.
fn parse_as_ingest(settings: &BTreeMap<String, String>, args: &[String]) -> ServeArgs {
    let env_to_flag = ingest_env();
    let command = serve_command().mut_args(|arg| arg.env(None::<&'static str>));
    let mut argv = vec!["serve".to_owned()];
    for (name, value) in settings {
        let long = env_to_flag
            .get(name)
            .unwrap_or_else(|| panic!("`ingest serve` reads no {name}"));
        let takes_value = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(long.as_str()))
            .is_some_and(|arg| arg.get_action().takes_values());
        if takes_value {
            argv.push(format!("--{long}={value}"));
        } else {
            // A switch (ADMIN_TRUST_CLOUD_RUN_IAM): set it to "true" or leave it out.
            assert_eq!(
                value, "true",
                "{name} is a switch: set it to \"true\" or not at all"
            );
            argv.push(format!("--{long}"));
        }
    }
    argv.extend(args.iter().filter(|arg| *arg != "serve").cloned());
    let matches = command.try_get_matches_from(&argv).unwrap_or_else(|err| {
        panic!("ingest refuses the settings infra/ gives it ({argv:?}):\n{err}")
    });
    ServeArgs::from_arg_matches(&matches).expect("the matches make ServeArgs")
}

#[test]
fn every_setting_infra_gives_a_service_is_one_ingest_reads() {
    let infra = read_infra();
    let known = ingest_env();
    assert!(
        known.contains_key("ROLE") && known.contains_key("PORT"),
        "clap lists {known:?}"
    );
    assert_eq!(
        infra.services.keys().collect::<Vec<_>>(),
        ["admin", "device"],
        "infra/ should declare exactly the two Cloud Run services"
    );
    for service in infra.services.values() {
        assert!(
            service.unreadable.is_empty(),
            "{}: this check cannot follow {:?}; keep env settings as plain `env {{ name = \"…\" value = … }}` blocks",
            service.name,
            service.unreadable
        );
        let mut seen = BTreeSet::new();
        for (name, _) in &service.env {
            assert!(seen.insert(name), "{}: {name} is set twice", service.name);
            assert!(
                known.contains_key(name),
                "{}: infra sets {name}, which `ingest serve` does not read (it reads {:?})",
                service.name,
                known.keys().collect::<Vec<_>>()
            );
            assert_ne!(name, "PORT", "{}: Cloud Run sets PORT itself", service.name);
            assert!(
                !LOCAL_ONLY.contains(&name.as_str()),
                "{}: {name} is for local emulators, never for Cloud Run",
                service.name
            );
        }
        for arg in service.args.iter().flatten() {
            let long = arg
                .strip_prefix("--")
                .map(|a| a.split('=').next().unwrap_or(a));
            assert!(
                arg == "serve" || long.is_some_and(|l| known.values().any(|k| k == l)),
                "{}: argument {arg} is not a flag of `ingest serve`",
                service.name
            );
        }
    }
}

#[test]
fn the_device_service_runs_the_public_bridge_and_publishes_to_pubsub() {
    let infra = read_infra();
    let device = infra.service("device");
    let settings = infra.settings(device);
    let args = parse_as_ingest(&settings, device.args.as_deref().unwrap_or_default());

    assert_eq!(args.role, Role::Device);
    assert_eq!(args.sink(), SinkUrl::PubSub, "events must go to Pub/Sub");
    assert_eq!(args.log_format, LogFormat::Json, "Cloud Logging reads JSON");
    assert_eq!(args.google_cloud_project.as_deref(), Some("my-project"));
    assert!(
        settings.contains_key("REGISTRY"),
        "the default SQLite file is not shared between instances"
    );
    assert!(
        settings["REGISTRY"].starts_with("firestore:"),
        "{}",
        settings["REGISTRY"]
    );
    // Cloud Run sends requests to the container port in PORT; ingest's bridge must listen there.
    assert_eq!(
        device.container_ports,
        [args.port],
        "container port and ingest's port"
    );
    assert!(
        args.device_host.is_unspecified(),
        "the bridge must listen on all interfaces"
    );
    assert!(
        !settings.contains_key("ADMIN_TOKEN"),
        "the device service has no admin API"
    );
    // Cloud Run passes no raw TCP: MQTT arrives as WebSocket on PORT, and a TLS listener would
    // only try to bind 8883 and write a CA into the read-only image.
    assert_eq!(args.mqtt.mqtt_addr, ingest::config::Listen::Off);
    assert_eq!(args.mqtt.mqtt_plain_addr, None);
    // Admin changes reach the instance holding a device's WebSocket only over the delivery bus.
    assert_delivery_bus(&args);
}

/// The service joins the delivery bus on the c2d topic, so the two services, and every instance
/// of each, reach one another's devices.
fn assert_delivery_bus(args: &ServeArgs) {
    assert_eq!(
        args.delivery_topic.as_deref(),
        Some("projects/my-project/topics/iotcore-c2d")
    );
    assert_eq!(
        args.registry_freshness(),
        300,
        "the bus carries every change"
    );
}

#[test]
fn the_admin_service_listens_on_its_container_port_behind_cloud_run_iam() {
    let infra = read_infra();
    let admin = infra.service("admin");
    let settings = infra.settings(admin);
    let mut args = parse_as_ingest(&settings, admin.args.as_deref().unwrap_or_default());
    // Cloud Run sets K_SERVICE; off Cloud Run the IAM switch refuses to start.
    args.cloud_run_service = Some("ingest-admin".into());

    assert_eq!(args.role, Role::Admin);
    // With ROLE=admin ingest serves on ADMIN_ADDR, not on PORT.
    let expected: SocketAddr = ([0, 0, 0, 0], admin.container_ports[0]).into();
    assert_eq!(admin.container_ports.len(), 1);
    assert_eq!(
        args.admin_addr, expected,
        "ADMIN_ADDR must be the container port on all interfaces"
    );
    assert!(
        matches!(args.admin_access(), Ok(AdminAccess::CloudRunIam(_))),
        "the admin API must be guarded by Cloud Run's IAM, got {:?}",
        args.admin_access()
    );
    assert!(
        !settings.contains_key("ADMIN_TOKEN"),
        "no shared secret in terraform state: IAM guards the admin API"
    );
    assert!(
        settings["REGISTRY"].starts_with("firestore:"),
        "{}",
        settings["REGISTRY"]
    );
    assert_eq!(
        settings["REGISTRY"],
        infra.settings(infra.service("device"))["REGISTRY"],
        "both services must share one registry"
    );
    assert_eq!(args.log_format, LogFormat::Json);
    assert_delivery_bus(&args);
}

#[test]
fn the_reader_sees_env_blocks_the_way_terraform_does() {
    let tf = r#"
locals {
  where = "firestore:projects/${var.project_id}/databases/x" # a comment with { a brace
}
variable "level" {
  default = "json"
}
resource "google_cloud_run_v2_service" "device" {
  template {
    containers {
      args = ["serve", "--port=8080"]
      ports {
        container_port = 8080
      }
      env {
        name  = "REGISTRY"
        value = local.where
      }
      env {
        // another comment }
        name  = "LOG_FORMAT"
        value = var.level
      }
    }
  }
}
"#;
    let mut infra = Infra {
        services: BTreeMap::new(),
        locals: BTreeMap::new(),
        defaults: BTreeMap::new(),
    };
    read_file(tf, &mut infra);
    let device = infra.service("device");
    assert!(device.unreadable.is_empty(), "{:?}", device.unreadable);
    assert_eq!(device.container_ports, [8080]);
    assert_eq!(
        device.args.as_deref(),
        Some(&["serve".to_owned(), "--port=8080".to_owned()][..])
    );
    let settings = infra.settings(device);
    assert_eq!(
        settings["REGISTRY"],
        "firestore:projects/my-project/databases/x"
    );
    assert_eq!(settings["LOG_FORMAT"], "json");
}
