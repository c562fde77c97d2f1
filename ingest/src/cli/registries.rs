//! `ingest registries …`: create, get, list, update and delete device registries, with the
//! registry's telemetry routing (event topics per subfolder), its state topic and its HTTP/MQTT
//! switches set from flags rather than JSON.

use std::fmt::Write as _;

use serde_json::Value;
use shared::TopicName;
use shared::ids::RegistryId;
use shared::resources::{
    DeviceRegistry, EventNotificationConfig, HttpConfig, HttpState, ListDeviceRegistriesResponse,
    MqttConfig, MqttState, StateNotificationConfig,
};

use super::UsageError;
use super::client::{AdminClient, AdminOptions};
use super::output::{Output, decode, emit, print_json};

const CREATE_EXAMPLES: &str = "\
Examples:
  ingest registries create barn-sensors --event-topic projects/my-project/topics/telemetry
  ingest registries create barn-sensors \\
      --event-topic-for alerts=projects/my-project/topics/alerts \\
      --event-topic projects/my-project/topics/telemetry \\
      --state-topic projects/my-project/topics/state --no-http";

const UPDATE_EXAMPLES: &str = "\
Examples:
  ingest registries update barn-sensors --no-mqtt
  ingest registries update barn-sensors --state-topic ''          # stop publishing states
  ingest registries update barn-sensors --event-topic projects/my-project/topics/telemetry-v2";

/// Registry subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RegistriesCommand {
    /// Create a registry: where its devices' telemetry and state go, which protocols they may use
    #[command(after_help = CREATE_EXAMPLES)]
    Create(CreateArgs),
    /// Show one registry
    #[command(after_help = "Example:\n  ingest registries get barn-sensors --output json")]
    Get(RegistryArgs),
    /// List the registries of the project and region
    #[command(
        after_help = "Example:\n  ingest registries list --project my-project --region europe-west1"
    )]
    List(ListArgs),
    /// Change a registry's topics or protocol switches; only the fields named by flags change
    #[command(after_help = UPDATE_EXAMPLES)]
    Update(UpdateArgs),
    /// Delete a registry (it must hold no devices)
    #[command(after_help = "Example:\n  ingest registries delete barn-sensors")]
    Delete(RegistryArgs),
}

/// `registries create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Registry id: 3-255 letters, digits and - . _ + ~ %, starting with a letter, not `goog…`
    #[arg(value_name = "REGISTRY", value_parser = RegistryId::parse)]
    registry: RegistryId,
    #[command(flatten)]
    settings: RegistrySettings,
    #[command(flatten)]
    api: AdminOptions,
}

/// `registries get|delete`.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Registry id
    #[arg(value_name = "REGISTRY")]
    registry: String,
    #[command(flatten)]
    api: AdminOptions,
}

/// `registries list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    api: AdminOptions,
}

/// `registries update`.
#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// Registry id
    #[arg(value_name = "REGISTRY")]
    registry: String,
    #[command(flatten)]
    settings: RegistrySettings,
    /// Remove every event topic (telemetry is then refused until one is set again)
    #[arg(long, conflicts_with_all = ["event_topic", "event_topic_for"])]
    no_event_topics: bool,
    #[command(flatten)]
    api: AdminOptions,
}

/// The registry fields that flags set, shared by create and update.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Registry settings")]
pub struct RegistrySettings {
    /// Pub/Sub topic (projects/P/topics/T) for telemetry that no --event-topic-for matches. On
    /// update, giving this or --event-topic-for replaces the whole routing list.
    #[arg(long, value_name = "TOPIC", value_parser = TopicName::parse)]
    event_topic: Option<TopicName>,

    /// Send telemetry published to one subfolder (MQTT `/devices/D/events/SUBFOLDER`, HTTP
    /// `subFolder`) to its own topic. Repeatable; the first exact match wins; 10 topics at most.
    #[arg(long, value_name = "SUBFOLDER=TOPIC", value_parser = parse_routed_topic)]
    event_topic_for: Vec<EventNotificationConfig>,

    /// Pub/Sub topic for device state updates; states are stored either way. On update, '' stops
    /// publishing them.
    #[arg(long, value_name = "TOPIC", value_parser = parse_state_topic)]
    state_topic: Option<StateTopic>,

    /// Refuse the HTTP bridge for this registry's devices
    #[arg(long, overrides_with = "http")]
    no_http: bool,
    /// Serve the HTTP bridge (the default)
    #[arg(long, overrides_with = "no_http")]
    http: bool,

    /// Refuse MQTT connections from this registry's devices
    #[arg(long, overrides_with = "mqtt")]
    no_mqtt: bool,
    /// Accept MQTT connections (the default)
    #[arg(long, overrides_with = "no_mqtt")]
    mqtt: bool,
}

/// `--state-topic`: a topic, or none when given as ''.
#[derive(Debug, Clone)]
struct StateTopic(Option<TopicName>);

fn parse_state_topic(text: &str) -> Result<StateTopic, String> {
    if text.is_empty() {
        return Ok(StateTopic(None));
    }
    TopicName::parse(text)
        .map(|topic| StateTopic(Some(topic)))
        .map_err(|err| err.to_string())
}

fn parse_routed_topic(text: &str) -> Result<EventNotificationConfig, String> {
    let (subfolder, topic) = text.split_once('=').ok_or(
        "expected SUBFOLDER=projects/P/topics/T, e.g. alerts=projects/my-project/topics/alerts",
    )?;
    if subfolder.is_empty() {
        return Err("the subfolder is empty; use --event-topic for the catch-all topic".into());
    }
    Ok(EventNotificationConfig {
        subfolder_matches: subfolder.to_owned(),
        pubsub_topic_name: TopicName::parse(topic).map_err(|err| err.to_string())?,
    })
}

impl RegistrySettings {
    /// Subfolder routes first, in the order given, then the catch-all: the server takes the first
    /// exact match, so this order is what a person means.
    fn event_configs(&self) -> Vec<EventNotificationConfig> {
        let mut configs = self.event_topic_for.clone();
        if let Some(topic) = &self.event_topic {
            configs.push(EventNotificationConfig {
                subfolder_matches: String::new(),
                pubsub_topic_name: topic.clone(),
            });
        }
        configs
    }

    fn registry(&self) -> DeviceRegistry {
        DeviceRegistry {
            event_notification_configs: self.event_configs(),
            state_notification_config: self.state_topic.as_ref().and_then(|t| {
                t.0.clone()
                    .map(|pubsub_topic_name| StateNotificationConfig { pubsub_topic_name })
            }),
            http_config: HttpConfig {
                http_enabled_state: if self.no_http {
                    HttpState::HttpDisabled
                } else {
                    HttpState::HttpEnabled
                },
            },
            mqtt_config: MqttConfig {
                mqtt_enabled_state: if self.no_mqtt {
                    MqttState::MqttDisabled
                } else {
                    MqttState::MqttEnabled
                },
            },
            ..DeviceRegistry::default()
        }
    }

    /// The `updateMask` paths for the flags given.
    fn update_mask(&self, clear_events: bool) -> Vec<&'static str> {
        let mut mask = Vec::new();
        if clear_events || self.event_topic.is_some() || !self.event_topic_for.is_empty() {
            mask.push("eventNotificationConfigs");
        }
        if self.state_topic.is_some() {
            mask.push("stateNotificationConfig");
        }
        if self.http || self.no_http {
            mask.push("httpConfig");
        }
        if self.mqtt || self.no_mqtt {
            mask.push("mqttConfig");
        }
        mask
    }
}

/// Runs a registry subcommand.
pub async fn run(command: RegistriesCommand) -> anyhow::Result<()> {
    match command {
        RegistriesCommand::Create(args) => create(args).await,
        RegistriesCommand::Get(args) => get(args).await,
        RegistriesCommand::List(args) => list(args).await,
        RegistriesCommand::Update(args) => update(args).await,
        RegistriesCommand::Delete(args) => delete(args).await,
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.api).await?;
    let body = DeviceRegistry {
        id: Some(args.registry),
        ..args.settings.registry()
    };
    let answer = client.post(&["registries"], &body).await?;
    show(client.output, answer, "created ")
}

async fn get(args: RegistryArgs) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.api).await?;
    let answer = client.get(&["registries", &args.registry], &[]).await?;
    show(client.output, answer, "")
}

async fn update(args: UpdateArgs) -> anyhow::Result<()> {
    let mask = args.settings.update_mask(args.no_event_topics);
    if mask.is_empty() {
        return Err(UsageError(
            "nothing to update: give at least one of --event-topic, --event-topic-for, \
             --no-event-topics, --state-topic, --http/--no-http, --mqtt/--no-mqtt"
                .into(),
        )
        .into());
    }
    let client = AdminClient::connect(&args.api).await?;
    let body = args.settings.registry();
    let answer = client
        .patch(&["registries", &args.registry], &mask, &body)
        .await?;
    show(client.output, answer, "updated ")
}

async fn delete(args: RegistryArgs) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.api).await?;
    let answer = client.delete(&["registries", &args.registry]).await?;
    match client.output {
        Output::Json => print_json(&answer),
        Output::Text => emit(&format!(
            "deleted registry {}\n",
            client.registry_name(&args.registry)
        )),
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.api).await?;
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let answer = client
            .get(&["registries"], &[("pageToken", token.clone())])
            .await?;
        let page: ListDeviceRegistriesResponse = decode(answer, "registry list")?;
        all.extend(page.device_registries);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    match client.output {
        Output::Json => print_json(&serde_json::json!({ "deviceRegistries": all })),
        Output::Text if all.is_empty() => emit("no registries\n"),
        Output::Text => emit(&all.iter().map(one_line).collect::<String>()),
    }
}

fn show(output: Output, answer: Value, verb: &str) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(&answer),
        Output::Text => emit(&describe(&decode(answer, "registry")?, verb)),
    }
}

fn one_line(registry: &DeviceRegistry) -> String {
    let id = registry.id.as_ref().map_or("?", RegistryId::as_str);
    format!(
        "{id:<24} event topics: {:<3} state topic: {:<4} HTTP {:<4} MQTT {}\n",
        registry.event_notification_configs.len(),
        if registry.state_notification_config.is_some() {
            "yes"
        } else {
            "no"
        },
        http_state(registry),
        mqtt_state(registry),
    )
}

/// A registry for people: routing first, since that is what operators come to check.
fn describe(registry: &DeviceRegistry, verb: &str) -> String {
    let mut text = format!(
        "{verb}registry {}\n",
        registry.name.as_deref().unwrap_or("(unnamed)")
    );
    let configs = &registry.event_notification_configs;
    if configs.is_empty() {
        text.push_str("  event topics:  none (telemetry is refused until one is set)\n");
    }
    for (i, config) in configs.iter().enumerate() {
        let label = if i == 0 { "event topics:" } else { "" };
        let matches = if config.subfolder_matches.is_empty() {
            "every other subfolder".to_owned()
        } else {
            format!("subfolder {:?}", config.subfolder_matches)
        };
        let _ = writeln!(
            text,
            "  {label:<14} {}  ({matches})",
            config.pubsub_topic_name
        );
    }
    let state = registry
        .state_notification_config
        .as_ref()
        .map_or("none (states are stored, not published)".to_owned(), |c| {
            c.pubsub_topic_name.to_string()
        });
    let _ = writeln!(text, "  state topic:   {state}");
    let _ = writeln!(text, "  HTTP bridge:   {}", http_state(registry));
    let _ = writeln!(text, "  MQTT bridge:   {}", mqtt_state(registry));
    text
}

fn http_state(registry: &DeviceRegistry) -> &'static str {
    match registry.http_config.http_enabled_state {
        HttpState::HttpDisabled => "off",
        HttpState::HttpEnabled | HttpState::HttpStateUnspecified => "on",
    }
}

fn mqtt_state(registry: &DeviceRegistry) -> &'static str {
    match registry.mqtt_config.mqtt_enabled_state {
        MqttState::MqttDisabled => "off",
        MqttState::MqttEnabled | MqttState::MqttStateUnspecified => "on",
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(flatten)]
        settings: RegistrySettings,
    }

    fn settings(args: &[&str]) -> RegistrySettings {
        Harness::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .expect("flags parse")
            .settings
    }

    #[test]
    fn the_update_mask_names_only_the_fields_given() {
        assert!(settings(&[]).update_mask(false).is_empty());
        assert_eq!(
            settings(&[]).update_mask(true),
            ["eventNotificationConfigs"]
        );
        assert_eq!(
            settings(&["--no-mqtt", "--state-topic", ""]).update_mask(false),
            ["stateNotificationConfig", "mqttConfig"]
        );
        assert_eq!(settings(&["--http"]).update_mask(false), ["httpConfig"]);
    }

    #[test]
    fn subfolder_routes_come_before_the_catch_all() {
        let s = settings(&[
            "--event-topic",
            "projects/demo-project/topics/all",
            "--event-topic-for",
            "alerts=projects/demo-project/topics/alerts",
        ]);
        let configs = s.event_configs();
        assert_eq!(configs[0].subfolder_matches, "alerts");
        assert_eq!(configs[1].subfolder_matches, "");
        assert_eq!(configs[1].pubsub_topic_name.topic(), "all");
    }

    #[test]
    fn switches_turn_protocols_off_and_on() {
        let registry = settings(&["--no-http", "--no-mqtt", "--mqtt"]).registry();
        assert_eq!(
            registry.http_config.http_enabled_state,
            HttpState::HttpDisabled
        );
        assert_eq!(
            registry.mqtt_config.mqtt_enabled_state,
            MqttState::MqttEnabled
        );
    }

    #[test]
    fn malformed_routes_are_refused_with_an_example() {
        assert!(
            parse_routed_topic("projects/demo-project/topics/t")
                .unwrap_err()
                .contains("SUBFOLDER=")
        );
        assert!(parse_routed_topic("=projects/demo-project/topics/t").is_err());
        assert!(parse_routed_topic("a=topics/t").is_err());
    }
}
