//! The MQTT bridge VMs (`infra/mqtt_vm.tf`, `infra/vm/`), checked without a cloud account:
//!
//! - what terraform gives ingest on them is a set of settings `ingest serve` reads and accepts,
//!   serving MQTT over TLS on the port the load balancer forwards to;
//! - the instance template boots the image with cloud-init and systemd (no container
//!   declaration), with the cloud-init file carrying the script and units byte for byte;
//! - ports, health checks, firewall rules and the service account's grants fit together;
//! - the stop timeout covers ingest's drain;
//! - the systemd units pass `systemd-analyze verify`;
//! - and a rehearsal: `infra/vm/start.sh` fetches the certificate and key from a fake metadata
//!   server and Secret Manager, starts this build's `ingest` with the VMs' settings, a device
//!   publishes over TLS, a rotated certificate reaches new connections, and SIGTERM ends it.
//!
//! What cannot run here (Container-Optimized OS, docker pulling from Artifact Registry, the load
//! balancer and health checkers) is listed in infra/README.md.
//!
//! The `.tf` files are read into a tree of blocks by a line-based reader that relies on
//! `terraform fmt`'s layout, like the reader of the Cloud Run services in the parent module.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use ingest::config::{Listen, Role, SinkUrl};
use ingest::telemetry::LogFormat;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet, Publish};
use serde_json::{Value, json};

use super::{Infra, LOCAL_ONLY, infra_dir, parse_as_ingest, read_infra, strip_comment};
use crate::support::device::Signer;
use crate::support::mqtt::{client_id, connect_packet};
use crate::support::tls_client::{certificate_set, exchange, tls_to};
use crate::support::{PROJECT, REGION, spawn_ingest};

// --- A tree of the .tf files ---------------------------------------------------------------------

/// A block (`resource "t" "n" { … }`, `metadata = { … }`) with its attributes and inner blocks.
#[derive(Debug, Default)]
struct Block {
    /// What precedes `{`: `resource "google_compute_instance_template" "mqtt"`, `disk`, or
    /// `metadata =` for a map.
    head: String,
    /// `key = expression`, the expression as written (lines joined with `\n`).
    attrs: Vec<(String, String)>,
    blocks: Vec<Block>,
}

impl Block {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The attribute, which must be there.
    fn get(&self, key: &str) -> &str {
        self.attr(key)
            .unwrap_or_else(|| panic!("{} has no attribute {key}", self.head))
    }

    fn block(&self, head: &str) -> Option<&Block> {
        self.blocks.iter().find(|b| b.head == head)
    }

    /// The inner block, which must be there.
    fn child(&self, head: &str) -> &Block {
        self.block(head)
            .unwrap_or_else(|| panic!("{} has no block {head}", self.head))
    }

    /// The top-level `resource "kind" "name"`.
    fn resource(&self, kind: &str, name: &str) -> &Block {
        self.child(&format!("resource \"{kind}\" \"{name}\""))
    }

    /// A map local (`name = { … }` in a `locals` block), entry by entry.
    fn local_map(&self, name: &str) -> &Block {
        let head = format!("{name} =");
        self.blocks
            .iter()
            .filter(|b| b.head == "locals")
            .find_map(|b| b.block(&head))
            .unwrap_or_else(|| panic!("no map local {name}"))
    }

    /// A plain local's expression.
    fn local(&self, name: &str) -> &str {
        self.blocks
            .iter()
            .filter(|b| b.head == "locals")
            .find_map(|b| b.attr(name))
            .unwrap_or_else(|| panic!("no local {name}"))
    }
}

/// Net depth of `(`, `[` and `{` on a line, outside strings.
fn balance(text: &str) -> i32 {
    let (mut in_string, mut escaped, mut depth) = (false, false, 0);
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '(' | '[' | '{' if !in_string => depth += 1,
            ')' | ']' | '}' if !in_string => depth -= 1,
            _ => {}
        }
    }
    depth
}

/// `key = value` with a plain or quoted key.
fn key_value(line: &str) -> Option<(String, &str)> {
    let (key, value) = line.split_once(" = ").or_else(|| line.split_once('='))?;
    let key = key.trim().trim_matches('"');
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (plain && !value.starts_with('=')).then(|| (key.to_owned(), value.trim()))
}

fn parse_tree(texts: &[String]) -> Block {
    let mut stack = vec![Block::default()];
    // An attribute whose value spans lines: its key, text so far and open depth.
    let mut pending: Option<(String, String, i32)> = None;
    for text in texts {
        for raw in text.lines() {
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            if let Some((key, mut value, depth)) = pending.take() {
                value.push('\n');
                value.push_str(line);
                let depth = depth + balance(line);
                if depth > 0 {
                    pending = Some((key, value, depth));
                } else {
                    stack.last_mut().unwrap().attrs.push((key, value));
                }
                continue;
            }
            if line.starts_with('}') {
                let done = stack.pop().expect("a block to close");
                stack
                    .last_mut()
                    .expect("an enclosing block")
                    .blocks
                    .push(done);
                continue;
            }
            if let Some((key, value)) = key_value(line) {
                if value == "{" {
                    stack.push(Block {
                        head: format!("{key} ="),
                        ..Block::default()
                    });
                } else if balance(value) > 0 {
                    pending = Some((key, value.to_owned(), balance(value)));
                } else {
                    stack
                        .last_mut()
                        .unwrap()
                        .attrs
                        .push((key, value.to_owned()));
                }
                continue;
            }
            let head = line
                .strip_suffix('{')
                .unwrap_or_else(|| panic!("a line this reader does not follow: {line}"));
            stack.push(Block {
                head: head.trim().to_owned(),
                ..Block::default()
            });
        }
    }
    assert!(pending.is_none(), "an unfinished attribute");
    assert_eq!(stack.len(), 1, "unbalanced blocks");
    stack.pop().unwrap()
}

/// Every `.tf` file of infra/ as one tree.
fn tree() -> Block {
    let mut files: Vec<PathBuf> = std::fs::read_dir(infra_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tf"))
        .collect();
    files.sort();
    let texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    parse_tree(&texts)
}

/// `["a", "b"]` → `[a, b]`.
fn strings(list: &str) -> Vec<String> {
    let inner = list.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or_else(|| panic!("{s} is not a plain string"))
                .to_owned()
        })
        .collect()
}

/// The VMs' settings: a map local with every value resolved as in a deployment.
fn resolved(infra: &Infra, tree: &Block, map: &str) -> BTreeMap<String, String> {
    tree.local_map(map)
        .attrs
        .iter()
        .map(|(k, expr)| (k.clone(), resolve(infra, tree, expr)))
        .collect()
}

/// [`Infra::resolve`], plus fields of map locals (`local.mqtt_tls_secrets.cert`) and list locals.
fn resolve(infra: &Infra, tree: &Block, expr: &str) -> String {
    if let Some((map, field)) = expr
        .strip_prefix("local.")
        .and_then(|rest| rest.split_once('.'))
    {
        let entry = tree.local_map(map).get(field).to_owned();
        return resolve(infra, tree, &entry);
    }
    infra.resolve(expr)
}

fn vm_files(name: &str) -> String {
    std::fs::read_to_string(infra_dir().join("vm").join(name))
        .unwrap_or_else(|e| panic!("infra/vm/{name}: {e}"))
}

/// `Key=Value` of a unit file's section lines.
fn unit_setting(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit sets no {key}"))
        .to_owned()
}

// --- Settings and template -----------------------------------------------------------------------

/// Resources and data sources of the MQTT VMs: everything whose name says so.
fn mqtt_resources(tree: &Block) -> Vec<&Block> {
    tree.blocks
        .iter()
        .filter(|b| b.head.starts_with("resource ") || b.head.starts_with("data "))
        .filter(|b| b.head.contains("mqtt"))
        .collect()
}

#[test]
fn the_mqtt_vms_exist_only_when_asked_for_and_the_image_is_set() {
    let infra = read_infra();
    let tree = tree();
    assert_eq!(infra.defaults["mqtt_vm_enabled"], "false");
    assert_eq!(tree.local("mqtt_vm"), "var.mqtt_vm_enabled && local.deploy");
    assert_eq!(tree.local("mqtt_secrets"), "var.mqtt_vm_enabled");
    let resources = mqtt_resources(&tree);
    assert!(resources.len() > 15, "{resources:?}");
    for block in resources {
        let gate = block
            .attr("count")
            .or_else(|| block.attr("for_each"))
            .unwrap_or_else(|| panic!("{} is created whatever mqtt_vm_enabled says", block.head));
        assert!(
            gate.contains("local.mqtt_vm")
                || gate.contains("local.mqtt_secrets")
                || gate.contains("google_secret_manager_secret.mqtt_tls"),
            "{}: {gate}",
            block.head
        );
    }
}

#[test]
fn every_setting_the_vms_give_ingest_is_one_it_reads_and_it_serves_mqtt_over_tls() {
    let infra = read_infra();
    let tree = tree();
    let env = resolved(&infra, &tree, "mqtt_vm_env");
    for name in env.keys() {
        assert!(
            !LOCAL_ONLY.contains(&name.as_str()),
            "{name} is for laptops"
        );
    }
    // Panics naming any setting `ingest serve` does not read or does not accept.
    let args = parse_as_ingest(&env, &[]);
    let boot = resolved(&infra, &tree, "mqtt_vm_boot");

    assert_eq!(args.role, Role::Device, "the VMs serve devices only");
    let mqtt: SocketAddr = "0.0.0.0:8883".parse().unwrap();
    assert_eq!(args.mqtt.mqtt_addr, Listen::At(mqtt));
    assert_eq!(
        args.mqtt.mqtt_plain_addr, None,
        "devices speak TLS to ingest"
    );
    assert!(
        !args.mqtt.mqtt_proxy_protocol,
        "a passthrough load balancer sends no PROXY header"
    );
    let tls_dir = Path::new(&boot["IOTCORE_TLS_DIR"]);
    let cert = args.mqtt.mqtt_tls_cert.as_deref().expect("a certificate");
    let key = args.mqtt.mqtt_tls_key.as_deref().expect("a key");
    assert_eq!(cert, tls_dir.join("cert.pem"), "where start.sh writes it");
    assert_eq!(key, tls_dir.join("key.pem"), "where start.sh writes it");
    assert_eq!(args.sink(), SinkUrl::PubSub);
    assert_eq!(args.log_format, LogFormat::Json);
    assert_eq!(
        env["REGISTRY"],
        infra.settings(infra.service("device"))["REGISTRY"],
        "the VMs share the Cloud Run services' registry"
    );
    super::assert_delivery_bus(&args);
    assert_eq!(
        args.port.to_string(),
        resolve(&infra, &tree, "local.mqtt_vm_health_port")
    );
    assert!(args.device_host.is_unspecified());
    assert_eq!(
        args.mqtt.mqtt_max_connections.to_string(),
        infra.defaults["mqtt_max_connections"]
    );
    assert_eq!(
        args.max_connections_per_address().to_string(),
        infra.defaults["mqtt_max_connections_per_address"]
    );
    assert_eq!(
        args.activity_flush_secs.to_string(),
        infra.defaults["mqtt_activity_flush_seconds"]
    );
    assert!(args.admin_token.is_none() && args.admin_tokens_file.is_none());
}

#[test]
fn the_instance_template_boots_the_image_with_cloud_init_and_no_container_declaration() {
    let infra = read_infra();
    let tree = tree();
    let template = tree.resource("google_compute_instance_template", "mqtt");
    let boot = resolved(&infra, &tree, "mqtt_vm_boot");
    assert_eq!(
        tree.local_map("mqtt_vm_boot").get("IOTCORE_IMAGE"),
        "var.image",
        "the same image as the Cloud Run services"
    );
    assert_eq!(boot["IOTCORE_IMAGE"], infra.resolve("var.image"));

    let metadata = template.child("metadata =");
    let user_data = metadata.get("user-data");
    assert!(
        user_data.starts_with("templatefile(\"${path.module}/vm/cloud-init.yaml\""),
        "{user_data}"
    );
    for (var, source) in [
        (
            "boot_env",
            "join(\"\\n\", [for k, v in local.mqtt_vm_boot : \"${k}=${v}\"])",
        ),
        (
            "ingest_env",
            "join(\"\\n\", [for k, v in local.mqtt_vm_env : \"${k}=${v}\"])",
        ),
        ("start_sh", "file(\"${path.module}/vm/start.sh\")"),
        (
            "ingest_service",
            "file(\"${path.module}/vm/iotcore-ingest.service\")",
        ),
        (
            "tls_refresh_service",
            "file(\"${path.module}/vm/iotcore-tls-refresh.service\")",
        ),
        (
            "tls_refresh_timer",
            "file(\"${path.module}/vm/iotcore-tls-refresh.timer\")",
        ),
    ] {
        let line = format!("{var} = {source}");
        assert!(
            user_data
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == line.split_whitespace().collect::<Vec<_>>()),
            "user-data should pass `{line}` to the template:\n{user_data}"
        );
    }
    assert_eq!(metadata.get("block-project-ssh-keys"), "\"true\"");
    assert_eq!(metadata.get("enable-oslogin"), "\"TRUE\"");
    assert_eq!(metadata.get("serial-port-enable"), "\"false\"");
    assert_eq!(metadata.get("google-logging-enabled"), "\"true\"");
    // The deprecated agent's metadata key, in any file terraform or the VMs read.
    let shipped = ["tf", "yaml", "sh", "service", "timer"];
    for entry in walk(&infra_dir()).into_iter().filter(|p| {
        p.extension()
            .is_some_and(|e| shipped.iter().any(|s| e == *s))
    }) {
        let text = std::fs::read_to_string(&entry).unwrap_or_default();
        assert!(
            !text.contains(&format!("gce-container-{}", "declaration")),
            "{} uses the container declaration",
            entry.display()
        );
    }

    let disk = template.child("disk");
    assert_eq!(disk.get("boot"), "true");
    assert_eq!(
        disk.get("source_image"),
        "data.google_compute_image.cos[0].self_link"
    );
    let image = tree.child("data \"google_compute_image\" \"cos\"");
    assert_eq!(image.get("project"), "\"cos-cloud\"");
    assert_eq!(image.get("family"), "\"cos-stable\"");

    let account = template.child("service_account");
    assert_eq!(account.get("email"), "google_service_account.mqtt[0].email");
    assert_eq!(strings(account.get("scopes")), ["cloud-platform"]);
    let nic = template.child("network_interface");
    assert!(
        nic.block("access_config").is_none(),
        "no unconditional external address"
    );
    // Only the single VM without a load balancer has one (checked in
    // `without_the_load_balancer_one_vm_keeps_a_reserved_address_and_nothing_else_changes`).
    let external = nic.child("dynamic \"access_config\"");
    assert_eq!(
        external.get("for_each"),
        "local.mqtt_vm_single ? [\"nic0\"] : []"
    );
    let shielded = template.child("shielded_instance_config");
    assert_eq!(shielded.get("enable_secure_boot"), "true");

    let group = tree.resource("google_compute_region_instance_group_manager", "mqtt");
    assert_eq!(
        group.child("version").get("instance_template"),
        "google_compute_instance_template.mqtt[0].self_link_unique"
    );
}

#[test]
fn cloud_init_writes_the_script_and_units_byte_for_byte_and_starts_them() {
    let template = vm_files("cloud-init.yaml");
    assert!(template.starts_with("#cloud-config\n"));
    let values = [
        ("boot_env", "IOTCORE_PROJECT=p\nIOTCORE_TLS_DIR=/run/x"),
        ("ingest_env", "ROLE=device\nMQTT_ADDR=0.0.0.0:8883"),
        ("start_sh", &vm_files("start.sh")),
        ("ingest_service", &vm_files("iotcore-ingest.service")),
        (
            "tls_refresh_service",
            &vm_files("iotcore-tls-refresh.service"),
        ),
        ("tls_refresh_timer", &vm_files("iotcore-tls-refresh.timer")),
    ];
    let rendered = render(&template, &values);
    let files = written_files(&rendered);
    let expect = [
        ("/etc/iotcore/boot.env", values[0].1),
        ("/etc/iotcore/ingest.env", values[1].1),
        ("/etc/iotcore/start.sh", values[2].1),
        ("/etc/systemd/system/iotcore-ingest.service", values[3].1),
        (
            "/etc/systemd/system/iotcore-tls-refresh.service",
            values[4].1,
        ),
        ("/etc/systemd/system/iotcore-tls-refresh.timer", values[5].1),
    ];
    assert_eq!(
        files.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expect.iter().map(|(p, _)| *p).collect::<BTreeSet<_>>()
    );
    for (path, content) in expect {
        assert_eq!(
            files[path].trim_end(),
            content.trim_end(),
            "{path} as cloud-init writes it"
        );
    }
    for command in [
        "systemctl daemon-reload",
        "systemctl start iotcore-tls-refresh.timer",
        "systemctl start iotcore-ingest.service",
    ] {
        assert!(
            rendered.contains(&format!("\n  - {command}\n")),
            "runcmd lacks `{command}`"
        );
    }
    // The units run the script where cloud-init puts it, with the settings it writes.
    for unit in ["iotcore-ingest.service", "iotcore-tls-refresh.service"] {
        let text = vm_files(unit);
        assert_eq!(
            unit_setting(&text, "EnvironmentFile"),
            "/etc/iotcore/boot.env"
        );
        assert!(text.contains("/bin/bash /etc/iotcore/start.sh fetch-tls"));
    }
}

/// The template with `${indent(6, name)}` replaced as terraform's templatefile does.
fn render(template: &str, values: &[(&str, &str)]) -> String {
    let placeholders: Vec<String> = values
        .iter()
        .map(|(name, _)| format!("${{indent(6, {name})}}"))
        .collect();
    // Nothing else for templatefile to interpret: no other `${…}` or `%{…}` in the template.
    let mut rest = template.to_owned();
    for placeholder in &placeholders {
        assert_eq!(
            rest.matches(placeholder.as_str()).count(),
            1,
            "{placeholder}"
        );
        rest = rest.replace(placeholder.as_str(), "");
    }
    assert!(
        !rest.contains("${") && !rest.contains("%{"),
        "the template has directives it should not have"
    );
    // The values go in as they are: templatefile does not interpret them again.
    let mut out = template.to_owned();
    for ((_, value), placeholder) in values.iter().zip(&placeholders) {
        out = out.replace(placeholder.as_str(), &value.replace('\n', "\n      "));
    }
    out
}

/// `write_files` of a rendered cloud-config: path → content (a `|` block indented 6 spaces).
fn written_files(yaml: &str) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut path = None;
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(p) = line.trim().strip_prefix("- path: ") {
            path = Some(p.to_owned());
        } else if line.trim() == "content: |" {
            let mut content = String::new();
            while let Some(next) = lines.peek() {
                if next.is_empty() || next.starts_with("      ") {
                    content.push_str(next.strip_prefix("      ").unwrap_or(""));
                    content.push('\n');
                    lines.next();
                } else {
                    break;
                }
            }
            let path = path.take().expect("content after a path");
            files.insert(path, content);
        }
    }
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.ends_with(".terraform") {
            out.extend(walk(&path));
        } else if path.is_file() {
            out.push(path);
        }
    }
    out
}

// --- Ports, health checks, firewall, identity ----------------------------------------------------

#[test]
fn ports_health_checks_and_firewall_rules_fit_what_ingest_listens_on() {
    let infra = read_infra();
    let tree = tree();
    let env = resolved(&infra, &tree, "mqtt_vm_env");
    let boot = resolved(&infra, &tree, "mqtt_vm_boot");
    let args = parse_as_ingest(&env, &[]);
    let Listen::At(tls) = args.mqtt.mqtt_addr else {
        panic!("no TLS listener")
    };
    let health_port = resolve(&infra, &tree, "local.mqtt_vm_health_port");
    assert_eq!(args.port.to_string(), health_port);
    let lb_ports = strings(tree.local("mqtt_vm_ports"));
    assert_eq!(lb_ports, ["8883", "443"], "IoT Core's two MQTT ports");

    // What the host publishes: each load-balancer port to ingest's TLS port, the health port to
    // ingest's HTTP port, and nothing else.
    let published: BTreeMap<String, String> = boot["IOTCORE_PUBLISH"]
        .split_whitespace()
        .map(|pair| {
            let (host, container) = pair.split_once(':').unwrap();
            (host.to_owned(), container.to_owned())
        })
        .collect();
    let mut expected: BTreeMap<String, String> = lb_ports
        .iter()
        .map(|p| (p.clone(), tls.port().to_string()))
        .collect();
    expected.insert(health_port.clone(), args.port.to_string());
    assert_eq!(published, expected);

    let rule = tree.resource("google_compute_forwarding_rule", "mqtt");
    assert_eq!(rule.get("ports"), "local.mqtt_vm_ports");
    assert_eq!(rule.get("load_balancing_scheme"), "\"EXTERNAL\"");
    assert_eq!(rule.get("ip_protocol"), "\"TCP\"");
    let backend = tree.resource("google_compute_region_backend_service", "mqtt");
    assert_eq!(backend.get("load_balancing_scheme"), "\"EXTERNAL\"");
    assert_eq!(backend.get("protocol"), "\"TCP\"");
    assert_eq!(
        backend.child("backend").get("balancing_mode"),
        "\"CONNECTION\""
    );
    assert_eq!(
        backend.get("health_checks"),
        "[google_compute_region_health_check.mqtt_ready[0].id]"
    );

    // The load balancer asks whether ingest can serve; autohealing whether it is alive.
    let ready = tree.resource("google_compute_region_health_check", "mqtt_ready");
    let alive = tree.resource("google_compute_health_check", "mqtt_alive");
    for (check, path) in [(ready, "\"/readyz\""), (alive, "\"/healthz\"")] {
        let http = check.child("http_health_check");
        assert_eq!(http.get("request_path"), path);
        assert_eq!(http.get("port"), "local.mqtt_vm_health_port");
    }
    let group = tree.resource("google_compute_region_instance_group_manager", "mqtt");
    assert_eq!(
        group.child("auto_healing_policies").get("health_check"),
        "google_compute_health_check.mqtt_alive[0].id"
    );

    // Devices on the MQTT ports only; the health port from the health checkers only.
    let devices = tree.resource("google_compute_firewall", "mqtt_devices");
    assert_eq!(devices.child("allow").get("ports"), "local.mqtt_vm_ports");
    assert_eq!(
        devices.get("source_ranges"),
        "var.mqtt_device_source_ranges"
    );
    let checks = tree.resource("google_compute_firewall", "mqtt_health_checks");
    assert_eq!(
        checks.child("allow").get("ports"),
        "[local.mqtt_vm_health_port]"
    );
    assert_eq!(checks.get("source_ranges"), "local.health_check_ranges");
    let ranges = strings(tree.local("health_check_ranges"));
    for google in ["35.191.0.0/16", "130.211.0.0/22"] {
        assert!(ranges.iter().any(|r| r == google), "{ranges:?}");
    }
    assert!(!ranges.iter().any(|r| r.ends_with("/0")), "{ranges:?}");
    for rule in [devices, checks] {
        assert_eq!(
            rule.get("target_service_accounts"),
            "[google_service_account.mqtt[0].email]"
        );
    }
}

#[test]
fn the_vms_service_account_holds_only_what_they_need() {
    let tree = tree();
    let mut grants = BTreeSet::new();
    for block in tree
        .blocks
        .iter()
        .filter(|b| b.head.starts_with("resource "))
    {
        let member = block.attr("member").unwrap_or_default();
        if !member.contains("google_service_account.mqtt") {
            continue;
        }
        let kind = block.head.split('"').nth(1).unwrap().to_owned();
        grants.insert((kind, block.get("role").trim_matches('"').to_owned()));
    }
    let expected: BTreeSet<(String, String)> = [
        ("google_pubsub_topic_iam_member", "roles/pubsub.publisher"),
        ("google_project_iam_member", "roles/datastore.user"),
        ("google_project_iam_member", "roles/logging.logWriter"),
        (
            "google_artifact_registry_repository_iam_member",
            "roles/artifactregistry.reader",
        ),
        (
            "google_secret_manager_secret_iam_member",
            "roles/secretmanager.secretAccessor",
        ),
    ]
    .iter()
    .map(|(k, r)| ((*k).to_owned(), (*r).to_owned()))
    .collect();
    assert_eq!(grants, expected);
    // Publisher on the event and state topics only; accessor on the two TLS secrets only.
    let topics = tree.resource("google_pubsub_topic_iam_member", "mqtt_publishes");
    assert!(topics.get("for_each").contains(
        "events = google_pubsub_topic.events.id, state = google_pubsub_topic.state.id }"
    ));
    let secrets = tree.resource("google_secret_manager_secret_iam_member", "mqtt_tls");
    assert!(
        secrets
            .get("for_each")
            .contains("google_secret_manager_secret.mqtt_tls")
    );
    let names: Vec<&str> = tree
        .local_map("mqtt_tls_secrets")
        .attrs
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(names, ["cert", "key"]);
    // And the delivery bus, as the Cloud Run services (iam.tf).
    let members = tree.local("delivery_bus_members");
    assert!(
        members.contains("for k in local.mqtt_vm_key : k => google_service_account.mqtt[0].member"),
        "{members}"
    );
}

// --- Without the load balancer -------------------------------------------------------------------

/// Values of the variables an existence condition reads, as a deployment sets them.
type Vars<'a> = BTreeMap<&'a str, &'a str>;

/// Evaluates a terraform condition of `var.…`, `local.…` (followed into the `locals` blocks),
/// `== null`, `!= null`, `!`, `&&`, `||` and parentheses: what every `count` of the MQTT
/// resources is made of. Anything else panics, so a new construct is noticed.
fn holds(tree: &Block, vars: &Vars, expr: &str) -> bool {
    let mut spaced = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '(' | ')' => spaced.push_str(&format!(" {c} ")),
            '!' if chars.peek() != Some(&'=') => spaced.push_str(" ! "),
            _ => spaced.push(c),
        }
    }
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut at = 0;
    let value = or(tree, vars, &tokens, &mut at);
    assert_eq!(at, tokens.len(), "unread tokens in `{expr}`");
    value
}

fn or(tree: &Block, vars: &Vars, t: &[&str], at: &mut usize) -> bool {
    let mut value = and(tree, vars, t, at);
    while t.get(*at) == Some(&"||") {
        *at += 1;
        value |= and(tree, vars, t, at);
    }
    value
}

fn and(tree: &Block, vars: &Vars, t: &[&str], at: &mut usize) -> bool {
    let mut value = not(tree, vars, t, at);
    while t.get(*at) == Some(&"&&") {
        *at += 1;
        value &= not(tree, vars, t, at);
    }
    value
}

fn not(tree: &Block, vars: &Vars, t: &[&str], at: &mut usize) -> bool {
    let token = t[*at];
    *at += 1;
    if token == "!" {
        return !not(tree, vars, t, at);
    }
    if token == "(" {
        let value = or(tree, vars, t, at);
        assert_eq!(t[*at], ")");
        *at += 1;
        return value;
    }
    if let Some(op @ ("==" | "!=")) = t.get(*at).copied() {
        assert_eq!(t[*at + 1], "null", "only comparisons with null");
        *at += 2;
        let name = token
            .strip_prefix("var.")
            .expect("a variable compared with null");
        let is_null = vars[name] == "null";
        return if op == "==" { is_null } else { !is_null };
    }
    if let Some(name) = token.strip_prefix("var.") {
        return match vars.get(name) {
            Some(&"true") => true,
            Some(&"false") => false,
            other => panic!("var.{name} is {other:?}, not a bool this test sets"),
        };
    }
    let name = token
        .strip_prefix("local.")
        .unwrap_or_else(|| panic!("`{token}` in a condition"));
    holds(tree, vars, tree.local(name))
}

/// The MQTT resources a deployment with `vars` creates: those whose `count = COND ? 1 : 0` holds
/// (`kind.name`). Resources gated by `for_each` exist with the VMs either way and are left out.
fn created(tree: &Block, vars: &Vars) -> BTreeSet<String> {
    mqtt_resources(tree)
        .into_iter()
        .filter(|b| b.head.starts_with("resource "))
        .filter_map(|b| {
            let condition = b.attr("count")?.strip_suffix(" ? 1 : 0")?;
            let parts: Vec<&str> = b.head.split('"').collect();
            holds(tree, vars, condition).then(|| format!("{}.{}", parts[1], parts[3]))
        })
        .collect()
}

/// A deployment with the MQTT VMs, the image set and a Cloud DNS zone, with `overrides`.
fn deployment<'a>(infra: &'a Infra, overrides: &[(&'a str, &'a str)]) -> Vars<'a> {
    let mut vars: Vars = [
        "mqtt_vm_load_balancer",
        "mqtt_static_ip",
        "mqtt_vm_enabled",
        "mqtt_dns_zone",
        "image",
        "kms_key_name",
    ]
    .into_iter()
    .map(|name| {
        (
            name,
            infra.defaults.get(name).map_or("null", String::as_str),
        )
    })
    .collect();
    vars.insert("mqtt_vm_enabled", "true");
    vars.insert("image", "us-central1-docker.pkg.dev/p/iotcore/ingest:1");
    vars.insert("mqtt_dns_zone", "example-com");
    vars.extend(overrides.iter().copied());
    vars
}

const LOAD_BALANCER: &[&str] = &[
    "google_compute_forwarding_rule.mqtt",
    "google_compute_region_backend_service.mqtt",
    "google_compute_region_health_check.mqtt_ready",
    "google_compute_region_instance_group_manager.mqtt",
    "google_compute_region_autoscaler.mqtt",
];
const SINGLE_VM: &[&str] = &[
    "google_compute_instance_group_manager.mqtt_single",
    "google_compute_per_instance_config.mqtt",
];
/// What both paths have: the template, autohealing's check, the firewall, the address, the name.
const BOTH: &[&str] = &[
    "google_compute_instance_template.mqtt",
    "google_compute_health_check.mqtt_alive",
    "google_compute_firewall.mqtt_devices",
    "google_compute_firewall.mqtt_health_checks",
    "google_compute_network.mqtt",
    "google_compute_subnetwork.mqtt",
    "google_service_account.mqtt",
    "google_compute_address.mqtt",
    "google_dns_record_set.mqtt",
];

#[test]
fn the_load_balancer_is_the_default_and_false_swaps_it_for_one_vm() {
    let infra = read_infra();
    let tree = tree();
    assert_eq!(infra.defaults["mqtt_vm_load_balancer"], "true");
    let has = |set: &BTreeSet<String>, names: &[&str]| names.iter().all(|n| set.contains(*n));
    let none = |set: &BTreeSet<String>, names: &[&str]| !names.iter().any(|n| set.contains(*n));

    let balanced = created(&tree, &deployment(&infra, &[]));
    assert!(has(&balanced, LOAD_BALANCER), "{balanced:?}");
    assert!(has(&balanced, BOTH), "{balanced:?}");
    assert!(none(&balanced, SINGLE_VM), "{balanced:?}");

    for static_ip in ["true", "false"] {
        let single = created(
            &tree,
            &deployment(
                &infra,
                &[
                    ("mqtt_vm_load_balancer", "false"),
                    ("mqtt_static_ip", static_ip),
                ],
            ),
        );
        assert!(
            none(&single, LOAD_BALANCER),
            "no forwarding rule, backend service, load-balancer check or autoscaler: {single:?}"
        );
        assert!(has(&single, SINGLE_VM), "{single:?}");
        assert!(
            has(&single, BOTH),
            "the single VM always has its reserved address (mqtt_static_ip = {static_ip}): {single:?}"
        );
    }
    // The load balancer's address stays optional.
    let ephemeral = created(&tree, &deployment(&infra, &[("mqtt_static_ip", "false")]));
    assert!(!ephemeral.contains("google_compute_address.mqtt"));

    // Nothing at all without mqtt_vm_enabled or the image, on either path.
    for lb in ["true", "false"] {
        for (var, value) in [("mqtt_vm_enabled", "false"), ("image", "null")] {
            let off = created(
                &tree,
                &deployment(&infra, &[("mqtt_vm_load_balancer", lb), (var, value)]),
            );
            assert!(off.is_empty(), "{var} = {value}: {off:?}");
        }
    }
}

#[test]
fn without_the_load_balancer_one_vm_keeps_a_reserved_address_and_nothing_else_changes() {
    let infra = read_infra();
    let tree = tree();
    let single = deployment(&infra, &[("mqtt_vm_load_balancer", "false")]);
    let balanced = deployment(&infra, &[]);

    // Only the single VM's template gives nic0 an external address, on the address's tier.
    let template = tree.resource("google_compute_instance_template", "mqtt");
    let external = template
        .child("network_interface")
        .child("dynamic \"access_config\"");
    let condition = external.get("for_each").split(" ? ").next().unwrap();
    assert!(holds(&tree, &single, condition));
    assert!(
        !holds(&tree, &balanced, condition),
        "VMs behind the load balancer have no external address"
    );
    let address = tree.resource("google_compute_address", "mqtt");
    assert_eq!(address.get("address_type"), "\"EXTERNAL\"");
    assert_eq!(address.get("region"), "var.region");
    assert_eq!(
        external.child("content").get("network_tier"),
        address.get("network_tier")
    );

    // A zonal group of one in the deployment's region, with the same template and autohealing
    // check as the regional group, replaced in place (a stateful group cannot surge), and no
    // autoscaler.
    let group = tree.resource("google_compute_instance_group_manager", "mqtt_single");
    let regional = tree.resource("google_compute_region_instance_group_manager", "mqtt");
    assert_eq!(group.get("zone"), "local.mqtt_zones[0]");
    assert!(
        tree.local("mqtt_zones")
            .contains("data.google_compute_zones.mqtt")
    );
    assert_eq!(
        tree.child("data \"google_compute_zones\" \"mqtt\"")
            .get("region"),
        "var.region"
    );
    for path in [
        ["version", "instance_template"],
        ["auto_healing_policies", "health_check"],
        ["auto_healing_policies", "initial_delay_sec"],
        ["instance_lifecycle_policy", "force_update_on_repair"],
    ] {
        assert_eq!(
            group.child(path[0]).get(path[1]),
            regional.child(path[0]).get(path[1]),
            "{path:?}"
        );
    }
    assert_eq!(
        group.child("auto_healing_policies").get("health_check"),
        "google_compute_health_check.mqtt_alive[0].id",
        "/healthz, as the regional group"
    );
    let update = group.child("update_policy");
    assert_eq!(update.get("replacement_method"), "\"RECREATE\"");
    assert_eq!(update.get("max_surge_fixed"), "0");
    assert_eq!(update.get("max_unavailable_fixed"), "1");
    // The per-instance config creates the VM and raises the size to 1; terraform leaves it.
    assert_eq!(group.get("target_size"), "0");
    assert_eq!(
        group.child("lifecycle").get("ignore_changes"),
        "[target_size]"
    );
    for block in &tree.blocks {
        assert!(
            !block
                .attr("target")
                .is_some_and(|t| t.contains("google_compute_instance_group_manager.mqtt_single")),
            "{} scales the single VM",
            block.head
        );
    }

    // The VM's nic0 keeps the reserved address across recreation; the group never deletes it.
    let config = tree.resource("google_compute_per_instance_config", "mqtt");
    assert_eq!(
        config.get("instance_group_manager"),
        "google_compute_instance_group_manager.mqtt_single[0].name"
    );
    assert_eq!(
        config.get("zone"),
        "google_compute_instance_group_manager.mqtt_single[0].zone"
    );
    let ip = config.child("preserved_state").child("external_ip");
    assert_eq!(ip.get("interface_name"), "\"nic0\"");
    assert_eq!(ip.get("auto_delete"), "\"NEVER\"");
    assert_eq!(
        ip.child("ip_address").get("address"),
        "google_compute_address.mqtt[0].self_link"
    );
    assert!(
        config
            .child("lifecycle")
            .child("precondition")
            .get("condition")
            .contains("var.mqtt_hostname != null"),
        "the single VM needs mqtt_hostname as the load balancer does"
    );

    // The firewall is the same on both paths: the MQTT ports from the devices' ranges, the health
    // port from Google's checkers, both to the VMs' service account only.
    for name in ["mqtt_devices", "mqtt_health_checks"] {
        let rule = tree.resource("google_compute_firewall", name);
        assert_eq!(rule.get("count"), "local.mqtt_vm ? 1 : 0", "{name}");
        assert_eq!(
            rule.get("target_service_accounts"),
            "[google_service_account.mqtt[0].email]"
        );
    }

    // The name points at the forwarding rule with the load balancer, at the VM's address
    // without; the DNS record and both outputs follow it.
    let (condition, branches) = tree
        .local("mqtt_bridge_ip")
        .split_once(" ? ")
        .expect("a conditional");
    let (when_true, when_false) = branches.split_once(" : ").unwrap();
    for (vars, expect) in [
        (
            &balanced,
            "one(google_compute_forwarding_rule.mqtt[*].ip_address)",
        ),
        (&single, "one(google_compute_address.mqtt[*].address)"),
    ] {
        let chosen = if holds(&tree, vars, condition) {
            when_true
        } else {
            when_false
        };
        assert_eq!(chosen, expect);
    }
    let record = tree.resource("google_dns_record_set", "mqtt");
    assert_eq!(record.get("rrdatas"), "[local.mqtt_bridge_ip]");
    assert_eq!(record.get("type"), "\"A\"");
    let output = |name: &str| {
        tree.child(&format!("output \"{name}\""))
            .get("value")
            .to_owned()
    };
    assert_eq!(output("mqtt_bridge_ip"), "local.mqtt_bridge_ip");
    assert!(output("mqtt_dns_record").contains("IN A ${local.mqtt_bridge_ip}"));
    assert_eq!(
        output("mqtt_bridge_hostname"),
        "local.mqtt_vm ? var.mqtt_hostname : null"
    );
}

// --- Stop timeout and units ----------------------------------------------------------------------

/// Seconds between ACPI shutdown and power-off that Compute Engine gives a standard VM (the
/// Compute API's `Scheduling.skipGuestOsShutdown`: 120 s for standard VMs, 30 s for Spot).
const GUEST_SHUTDOWN_SECONDS: u64 = 120;

#[test]
fn the_stop_timeout_covers_ingests_drain_and_fits_the_vms_shutdown() {
    let infra = read_infra();
    let tree = tree();
    let env = resolved(&infra, &tree, "mqtt_vm_env");
    let boot = resolved(&infra, &tree, "mqtt_vm_boot");
    let args = parse_as_ingest(&env, &[]);
    // After SIGTERM ingest drains its listeners (DRAIN_TIMEOUT_SECS), then waits for the MQTT
    // sessions (DRAIN_TIMEOUT_SECS + 1), then flushes Pub/Sub (PUBLISH_TIMEOUT_SECS at most per
    // batch) and the bookkeeping (server.rs, `run`).
    let ingest_needs = 2 * args.drain_timeout_secs + 1 + args.publish_timeout_secs;
    let docker_waits: u64 = boot["IOTCORE_STOP_SECONDS"].parse().unwrap();
    let unit = vm_files("iotcore-ingest.service");
    let systemd_waits: u64 = unit_setting(&unit, "TimeoutStopSec").parse().unwrap();
    assert!(
        ingest_needs < docker_waits,
        "docker stop gives {docker_waits} s, ingest may need {ingest_needs} s"
    );
    assert!(
        docker_waits < systemd_waits,
        "systemd ({systemd_waits} s) must outwait docker stop ({docker_waits} s)"
    );
    assert!(
        systemd_waits < GUEST_SHUTDOWN_SECONDS,
        "the VM powers off {GUEST_SHUTDOWN_SECONDS} s after the shutdown signal"
    );
    assert_eq!(
        unit_setting(&unit, "ExecStop"),
        "/bin/bash /etc/iotcore/start.sh stop"
    );
}

/// A tool the checks below run: its absence fails under CI=true and is told loudly otherwise.
fn tool(name: &str) -> bool {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "{name} is needed by infra_settings::vm and is missing (CI=true)"
        );
        eprintln!(
            "\n*** NOT CHECKED: {name} is not installed, so the MQTT VM check that needs it did not \
             run (it is a failure under CI=true) ***\n"
        );
    }
    found
}

#[test]
fn the_vms_systemd_units_pass_systemd_analyze_verify() {
    if !tool("systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for unit in [
        "iotcore-ingest.service",
        "iotcore-tls-refresh.service",
        "iotcore-tls-refresh.timer",
    ] {
        let path = dir.path().join(unit);
        std::fs::write(&path, vm_files(unit)).unwrap();
        paths.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {}\n{said}",
        out.status
    );
}

// --- The rehearsal -------------------------------------------------------------------------------

/// What the fake metadata server and Secret Manager answer, and what they were asked.
#[derive(Default)]
struct Fakes {
    /// Secret name → its latest version's payload.
    secrets: BTreeMap<String, String>,
    /// Secret accesses answered.
    accesses: usize,
}

const FAKE_TOKEN: &str = "ya29.fake-token-of-the-vm";

/// The metadata server's token endpoint (only with `Metadata-Flavor: Google`, as the real one)
/// and Secret Manager's `versions/latest:access` (only with that token as bearer).
async fn fake_google(
    State(fakes): State<Arc<Mutex<Fakes>>>,
    uri: Uri,
    headers: HeaderMap,
) -> axum::response::Response {
    let path = uri.path();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if path == "/computeMetadata/v1/instance/service-accounts/default/token" {
        if header("metadata-flavor") != Some("Google") {
            return (
                StatusCode::FORBIDDEN,
                "Missing Metadata-Flavor:Google header",
            )
                .into_response();
        }
        let body = json!({"access_token": FAKE_TOKEN, "expires_in": 3599, "token_type": "Bearer"});
        return axum::Json(body).into_response();
    }
    let prefix = "/v1/projects/my-project/secrets/";
    if let Some(secret) = path
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix("/versions/latest:access"))
    {
        if header("authorization") != Some(&format!("Bearer {FAKE_TOKEN}")) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let mut fakes = fakes.lock().unwrap();
        let Some(payload) = fakes.secrets.get(secret).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        fakes.accesses += 1;
        // Pretty-printed over several lines, as the real API answers.
        let body = json!({
            "name": format!("projects/123/secrets/{secret}/versions/1"),
            "payload": {"data": shared::proto3::encode_base64(payload.as_bytes()), "dataCrc32c": "1"},
        });
        return serde_json::to_string_pretty(&body).unwrap().into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

/// `bash infra/vm/start.sh COMMAND` with only `env` (and PATH) in its environment.
fn start_sh(command: &str, env: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(infra_dir().join("vm/start.sh"))
        .arg(command)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env);
    cmd
}

/// The boot script running ingest, and the lines it announced on stdout.
struct Booted {
    child: Child,
    announced: Arc<Mutex<BTreeMap<String, String>>>,
    log: PathBuf,
}

impl Booted {
    fn start(env: &BTreeMap<String, String>, log: PathBuf) -> Self {
        let mut child = start_sh("run", env)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let announced = Arc::new(Mutex::new(BTreeMap::new()));
        let seen = Arc::clone(&announced);
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((label, url)) = line.split_once(" listening on ") {
                    seen.lock()
                        .unwrap()
                        .insert(label.trim().to_owned(), url.trim().to_owned());
                }
            }
        });
        Self {
            child,
            announced,
            log,
        }
    }

    /// The address `label` listens on, once announced.
    fn address(&mut self, label: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(url) = self.announced.lock().unwrap().get(label) {
                return url.split_once("://").unwrap().1.parse().unwrap();
            }
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "start.sh run announced no {label} ({exited:?}); its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registers `barn/dev-1` (RSA) in a fresh SQLite registry through the admin API of a separate
/// `ingest serve --role admin`, as an operator does before the VMs serve the device.
async fn registry_with_a_device(path: &Path) {
    let registry = format!("--registry=sqlite:{}", path.display());
    let mut admin = spawn_ingest(&["--role", "admin", &registry], &[]);
    let http = reqwest::Client::new();
    let base = format!(
        "{}/v1/projects/{PROJECT}/locations/{REGION}/registries",
        admin.admin_url()
    );
    let events = format!("projects/{PROJECT}/topics/events");
    let created = http
        .post(&base)
        .json(&json!({"id": "barn", "eventNotificationConfigs": [{"pubsubTopicName": events}]}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let key = crate::support::key("rsa_public");
    let device =
        json!({"id": "dev-1", "credentials": [{"publicKey": {"format": "RSA_PEM", "key": key}}]});
    let created = http
        .post(format!("{base}/barn/devices"))
        .json(&device)
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    assert!(admin.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_boot_script_fetches_the_certificate_from_secret_manager_and_starts_ingest_on_its_ports()
 {
    if !(tool("bash") && tool("curl")) {
        return;
    }
    let infra = read_infra();
    let tree = tree();
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = dir.path().join("run/iotcore/tls");

    // Secret Manager holds the certificate and key, as `gcloud secrets versions add` left them.
    let mut boot = resolved(&infra, &tree, "mqtt_vm_boot");
    let (ca_a, cert_a, key_a) = certificate_set("rehearsal CA A");
    let fakes = Arc::new(Mutex::new(Fakes::default()));
    {
        let mut f = fakes.lock().unwrap();
        f.secrets
            .insert(boot["IOTCORE_TLS_CERT_SECRET"].clone(), cert_a.clone());
        f.secrets
            .insert(boot["IOTCORE_TLS_KEY_SECRET"].clone(), key_a.clone());
    }
    let app = axum::Router::new()
        .fallback(fake_google)
        .with_state(fakes.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let google = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The VMs' boot settings, with what a laptop has instead of a VM: the fakes, a TLS directory
    // of its own, this build's ingest instead of the container.
    boot.insert(
        "IOTCORE_METADATA_URL".into(),
        format!("http://{google}/computeMetadata/v1"),
    );
    boot.insert("IOTCORE_SECRETS_URL".into(), format!("http://{google}/v1"));
    boot.insert("IOTCORE_TLS_DIR".into(), tls_dir.display().to_string());
    boot.insert("IOTCORE_TLS_OWNER".into(), String::new());
    boot.insert("IOTCORE_RUNTIME".into(), "exec".into());
    boot.insert(
        "IOTCORE_INGEST_BIN".into(),
        env!("CARGO_BIN_EXE_ingest").into(),
    );
    let env_file = dir.path().join("ingest.env");
    boot.insert("IOTCORE_ENV_FILE".into(), env_file.display().to_string());

    // fetch-tls, as ExecStartPre runs it.
    let out = start_sh("fetch-tls", &boot).output().unwrap();
    assert!(
        out.status.success(),
        "start.sh fetch-tls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(tls_dir.join("cert.pem")).unwrap(),
        cert_a
    );
    assert_eq!(
        std::fs::read_to_string(tls_dir.join("key.pem")).unwrap(),
        key_a
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |f: &str| {
        std::fs::metadata(tls_dir.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        mode("key.pem"),
        0o400,
        "the key is readable by its owner only"
    );
    assert_eq!(fakes.lock().unwrap().accesses, 2);

    // ingest's settings as terraform writes them to ingest.env, but for where a laptop differs:
    // loopback ports the OS picks, the TLS directory above, a SQLite registry with a device in
    // it and a file sink instead of Firestore and Pub/Sub (so no delivery bus).
    let mut settings = resolved(&infra, &tree, "mqtt_vm_env");
    let registry = dir.path().join("registry.db");
    registry_with_a_device(&registry).await;
    let events = dir.path().join("events.jsonl");
    for (name, value) in [
        ("MQTT_ADDR", "127.0.0.1:0".to_owned()),
        ("PORT", "0".to_owned()),
        ("DEVICE_HOST", "127.0.0.1".to_owned()),
        (
            "MQTT_TLS_CERT",
            tls_dir.join("cert.pem").display().to_string(),
        ),
        (
            "MQTT_TLS_KEY",
            tls_dir.join("key.pem").display().to_string(),
        ),
        ("REGISTRY", format!("sqlite:{}", registry.display())),
        ("SINK", format!("file:{}", events.display())),
    ] {
        settings.insert(name.to_owned(), value);
    }
    settings.remove("DELIVERY_TOPIC");
    let lines: String = settings.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(&env_file, format!("# written by the rehearsal\n\n{lines}")).unwrap();

    // run, as ExecStart runs it.
    let mut booted = Booted::start(&boot, dir.path().join("ingest.log"));
    let mqtt = booted.address("MQTT bridge");
    let health = booted.address("device bridge");
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let answer = http
            .get(format!("http://{health}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{path}");
    }

    // A device connects over TLS with the certificate from Secret Manager and publishes.
    let mut device = tls_to(mqtt, &ca_a).await.unwrap();
    let served = device.get_ref().1.peer_certificates().unwrap()[0].clone();
    let expected = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(cert_a.as_bytes()).unwrap()
    };
    assert_eq!(
        served, expected,
        "the certificate from the fake Secret Manager"
    );
    let token = Signer::rsa("rsa_private").fresh();
    let connect = connect_packet(&client_id("barn", "dev-1"), &token, 60);
    let answer = exchange(&mut device, &connect).await;
    assert!(
        matches!(answer, Packet::ConnAck(ref a) if a.code == ConnectReturnCode::Success),
        "{answer:?}"
    );
    let mut publish = Publish::new(
        "/devices/dev-1/events",
        QoS::AtLeastOnce,
        b"rehearsal-21.5".to_vec(),
    );
    publish.pkid = 7;
    let answer = exchange(&mut device, &Packet::Publish(publish)).await;
    assert!(
        matches!(answer, Packet::PubAck(ref a) if a.pkid == 7),
        "{answer:?}"
    );
    let line: Value = serde_json::from_str(
        std::fs::read_to_string(&events)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        line["data"],
        shared::proto3::encode_base64(b"rehearsal-21.5"),
        "{line}"
    );
    drop(device);

    // Rotation: a new version in Secret Manager, the timer's fetch-tls, and new connections get
    // the new certificate within ingest's 5 s re-read.
    let (ca_b, cert_b, key_b) = certificate_set("rehearsal CA B");
    {
        let mut f = fakes.lock().unwrap();
        f.secrets
            .insert(boot["IOTCORE_TLS_CERT_SECRET"].clone(), cert_b);
        f.secrets
            .insert(boot["IOTCORE_TLS_KEY_SECRET"].clone(), key_b);
    }
    let out = start_sh("fetch-tls", &boot).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while tls_to(mqtt, &ca_b).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was not served; log:\n{}",
            std::fs::read_to_string(&booted.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        tls_to(mqtt, &ca_a).await.is_err(),
        "the old certificate is gone"
    );

    // SIGTERM, as docker stop (and systemd) send it: ingest drains and exits cleanly, well
    // within the stop timeout.
    let started = Instant::now();
    let pid = booted.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = booted.child.wait().unwrap();
    assert!(
        status.success(),
        "{status}; log:\n{}",
        std::fs::read_to_string(&booted.log).unwrap_or_default()
    );
    let stop: u64 = boot["IOTCORE_STOP_SECONDS"].parse().unwrap();
    assert!(started.elapsed() < Duration::from_secs(stop));
    let log = std::fs::read_to_string(&booted.log).unwrap();
    assert!(
        log.contains("\"severity\""),
        "JSON logs for Cloud Logging:\n{log}"
    );
    assert!(!log.contains(&token), "a device token was logged");
}
