//! The registries of a project and location: a list with a create form, and a settings page
//! that edits a registry's event and state topics and its MQTT and HTTP switches. Both changes
//! are the admin API's `create` and `patch` calls; its refusals are shown beside the form, which
//! keeps what was typed.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::resources::{DeviceRegistry, HttpState, ListDeviceRegistriesResponse, MqttState};

use super::api::{Refusal, escape};
use super::pages::{self, At, layout, notice_box, refusal_box};
use super::session::{Form, Visit};

/// How many registries one page lists.
const PAGE_SIZE: usize = 100;

/// The list page's query: a page token.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    page: String,
}

/// `GET …/registries`.
pub(super) async fn list(
    visit: Visit,
    Path(at): Path<At>,
    Query(query): Query<ListQuery>,
) -> Response {
    list_page(&visit, &at, &query.page, &Settings::new_registry(), None).await
}

/// `POST …/registries`: creates the registry and opens its fleet page.
pub(super) async fn create(visit: Visit, Path(mut at): Path<At>, form: Form) -> Response {
    let settings = Settings::read(&form);
    let mut body = settings.to_json();
    body["id"] = json!(form.get("id").trim());
    let api = visit.api(&at.project, &at.location);
    match api.post::<DeviceRegistry>("/registries", body).await {
        Ok(created) => {
            at.registry = created.id.map(|id| id.to_string()).unwrap_or_default();
            pages::redirect(&at.fleet_href())
        }
        Err(refusal) => {
            list_page(&visit, &at, "", &settings, Some((form.get("id"), &refusal))).await
        }
    }
}

async fn list_page(
    visit: &Visit,
    at: &At,
    token: &str,
    draft: &Settings,
    refused: Option<(&str, &Refusal)>,
) -> Response {
    let api = visit.api(&at.project, &at.location);
    let path = format!(
        "/registries?pageSize={PAGE_SIZE}&pageToken={}",
        escape(token)
    );
    let listed: ListDeviceRegistriesResponse = match api.get(&path).await {
        Ok(listed) => listed,
        Err(refusal) => return pages::refused_page(visit, at, &refusal),
    };
    let status = refused.map_or(StatusCode::OK, |(_, r)| r.status);
    let body = html! {
        h1 { "Registries" }
        @if listed.device_registries.is_empty() { p.muted { "No registries here yet." } }
        @else {
            table {
                thead { tr { th { "Registry" } th { "Event topics" } th { "State topic" } th { "MQTT" } th { "HTTP" } th {} } }
                tbody {
                    @for registry in &listed.device_registries { (row(at, registry)) }
                }
            }
        }
        @if !listed.next_page_token.is_empty() {
            p { a href={ (at.registries_href()) "?page=" (escape(&listed.next_page_token)) } { "Next page →" } }
        }
        h2 { "Create a registry" }
        @if let Some((_, refusal)) = refused { (refusal_box(refusal)) }
        form.card method="post" action=(at.registries_href()) {
            input type="hidden" name="csrf" value=(visit.csrf);
            label { "Registry id" input type="text" name="id" required value=(refused.map_or("", |(id, _)| id)) placeholder="barn-sensors"; }
            (settings_fields(draft))
            button type="submit" { "Create registry" }
        }
    };
    pages::html(status, layout("Registries", visit, &at.crumbs(), body))
}

fn row(at: &At, registry: &DeviceRegistry) -> Markup {
    let id = registry
        .id
        .as_ref()
        .map(|id| id.to_string())
        .unwrap_or_default();
    let at = At {
        registry: id.clone(),
        ..at.clone()
    };
    let settings = Settings::of(registry);
    html! {
        tr {
            td { a href=(at.fleet_href()) { (id) } }
            td { pre.inline { (settings.event_topics) } }
            td { (settings.state_topic) }
            td { (on_off(settings.mqtt)) }
            td { (on_off(settings.http)) }
            td { a href={ (at.fleet_href()) "/settings" } { "Settings" } }
        }
    }
}

fn on_off(on: bool) -> Markup {
    html! { @if on { span.badge.good { "on" } } @else { span.badge.bad { "off" } } }
}

/// `GET …/registries/{r}/settings`.
pub(super) async fn settings(visit: Visit, Path(at): Path<At>) -> Response {
    let api = visit.api(&at.project, &at.location);
    match api.get::<DeviceRegistry>(&at.api_registry()).await {
        Ok(registry) => settings_page(&visit, &at, &Settings::of(&registry), Ok(false)),
        Err(refusal) => pages::refused_page(&visit, &at, &refusal),
    }
}

/// `POST …/registries/{r}/settings`: the API's `patch` of the four fields.
pub(super) async fn update(visit: Visit, Path(at): Path<At>, form: Form) -> Response {
    let settings = Settings::read(&form);
    let api = visit.api(&at.project, &at.location);
    let mask = "eventNotificationConfigs,stateNotificationConfig,mqttConfig,httpConfig";
    let path = format!("{}?updateMask={mask}", at.api_registry());
    match api.patch::<DeviceRegistry>(&path, settings.to_json()).await {
        Ok(saved) => settings_page(&visit, &at, &Settings::of(&saved), Ok(true)),
        Err(refusal) => settings_page(&visit, &at, &settings, Err(refusal)),
    }
}

fn settings_page(
    visit: &Visit,
    at: &At,
    settings: &Settings,
    outcome: Result<bool, Refusal>,
) -> Response {
    let status = outcome.as_ref().err().map_or(StatusCode::OK, |r| r.status);
    let body = html! {
        h1 { "Settings of " (at.registry) }
        @match &outcome {
            Ok(true) => (notice_box("Saved.")),
            Ok(false) => {},
            Err(refusal) => (refusal_box(refusal)),
        }
        form.card method="post" action={ (at.fleet_href()) "/settings" } {
            input type="hidden" name="csrf" value=(visit.csrf);
            (settings_fields(settings))
            button type="submit" { "Save" }
        }
        p { a href=(at.fleet_href()) { "← Fleet of " (at.registry) } }
    };
    pages::html(
        status,
        layout("Registry settings", visit, &at.crumbs(), body),
    )
}

/// The editable fields of a registry, as the forms hold them.
#[derive(Debug, Clone, Default)]
struct Settings {
    /// One line per event notification config: `TOPIC` for every event, or
    /// `SUBFOLDER TOPIC` for one subfolder.
    event_topics: String,
    state_topic: String,
    mqtt: bool,
    http: bool,
}

impl Settings {
    fn new_registry() -> Self {
        Self {
            mqtt: true,
            http: true,
            ..Self::default()
        }
    }

    fn of(registry: &DeviceRegistry) -> Self {
        let event_topics = registry
            .event_notification_configs
            .iter()
            .map(|c| match c.subfolder_matches.as_str() {
                "" => c.pubsub_topic_name.to_string(),
                folder => format!("{folder} {}", c.pubsub_topic_name),
            })
            .collect::<Vec<_>>()
            .join("\n");
        Self {
            event_topics,
            state_topic: registry
                .state_notification_config
                .as_ref()
                .map(|c| c.pubsub_topic_name.to_string())
                .unwrap_or_default(),
            mqtt: registry.mqtt_config.mqtt_enabled_state != MqttState::MqttDisabled,
            http: registry.http_config.http_enabled_state != HttpState::HttpDisabled,
        }
    }

    fn read(form: &Form) -> Self {
        Self {
            event_topics: form.get("event_topics").trim().to_owned(),
            state_topic: form.get("state_topic").trim().to_owned(),
            mqtt: form.checked("mqtt"),
            http: form.checked("http"),
        }
    }

    /// The registry fields in the API's JSON; the API validates the topics.
    fn to_json(&self) -> Value {
        let events: Vec<Value> = self
            .event_topics
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(|line| match line.split_once(char::is_whitespace) {
                Some((folder, topic)) => {
                    json!({"subfolderMatches": folder, "pubsubTopicName": topic.trim()})
                }
                None => json!({"pubsubTopicName": line}),
            })
            .collect();
        let state = match self.state_topic.as_str() {
            "" => json!({}),
            topic => json!({"pubsubTopicName": topic}),
        };
        json!({
            "eventNotificationConfigs": events,
            "stateNotificationConfig": state,
            "mqttConfig": {"mqttEnabledState": if self.mqtt { "MQTT_ENABLED" } else { "MQTT_DISABLED" }},
            "httpConfig": {"httpEnabledState": if self.http { "HTTP_ENABLED" } else { "HTTP_DISABLED" }},
        })
    }
}

fn settings_fields(settings: &Settings) -> Markup {
    html! {
        label {
            span {
                "Event topics, one per line: " code { "projects/P/topics/T" } " for every event, or "
                code { "SUBFOLDER projects/P/topics/T" } " for one subfolder"
            }
            textarea name="event_topics" rows="3" { (settings.event_topics) }
        }
        label { "State topic (empty: states are only stored)" input type="text" name="state_topic" value=(settings.state_topic); }
        label.check { input type="checkbox" name="mqtt" checked[settings.mqtt]; " MQTT enabled" }
        label.check { input type="checkbox" name="http" checked[settings.http]; " HTTP enabled" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_topic_lines_become_notification_configs() {
        let settings = Settings {
            event_topics:
                "projects/my-project/topics/all\n\nalerts projects/my-project/topics/alerts".into(),
            state_topic: String::new(),
            mqtt: true,
            http: false,
        };
        let json = settings.to_json();
        assert_eq!(
            json["eventNotificationConfigs"][0],
            json!({"pubsubTopicName": "projects/my-project/topics/all"})
        );
        assert_eq!(
            json["eventNotificationConfigs"][1]["subfolderMatches"],
            "alerts"
        );
        assert_eq!(json["stateNotificationConfig"], json!({}));
        assert_eq!(json["httpConfig"]["httpEnabledState"], "HTTP_DISABLED");
        let registry: DeviceRegistry = serde_json::from_value(json).unwrap();
        let back = Settings::of(&registry);
        assert_eq!(
            back.event_topics,
            "projects/my-project/topics/all\nalerts projects/my-project/topics/alerts"
        );
        assert!(back.mqtt && !back.http);
    }
}
