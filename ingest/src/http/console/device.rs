//! One device: when it was last heard from and whether it is connected, its credentials (add,
//! remove), its config versions with their acknowledgements and an editor that submits with the
//! version it was based on (a stale edit is refused by the API, not overwritten), its state
//! history, its metadata, block and unblock, a command, and delete with confirmation.
//!
//! Each action is one admin API call (`patch`, `:modifyCloudToDeviceConfig`,
//! `:sendCommandToDevice`, `delete`); a success leads back to the page with a notice, a refusal
//! shows the page again with the API's message beside the form and what was typed kept.

use std::collections::BTreeMap;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use jiff::Timestamp;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::fleet_health::last_seen;
use shared::proto3::{decode_base64, encode_base64};
use shared::resources::{
    Device, DeviceCredential, ListDeviceConfigVersionsResponse, ListDeviceStatesResponse,
};

use super::api::{Api, Refusal};
use super::format::{self, Payload, fingerprint};
use super::pages::{self, At, layout, notice_box, refusal_box};
use super::session::{Form, Visit};

/// The key formats IoT Core accepted, as its API names them.
pub(super) const KEY_FORMATS: [&str; 4] =
    ["RSA_PEM", "RSA_X509_PEM", "ES256_PEM", "ES256_X509_PEM"];

/// The device page's query: what was just done.
#[derive(Debug, Default, Deserialize)]
pub(super) struct DeviceQuery {
    #[serde(default)]
    done: String,
}

/// Everything the page shows, read from the API at once.
struct Loaded {
    device: Device,
    configs: ListDeviceConfigVersionsResponse,
    states: ListDeviceStatesResponse,
    presence: Value,
}

async fn load(api: &Api, at: &At) -> Result<Loaded, Refusal> {
    let path = at.api_device();
    let (configs, states, presence) = (
        format!("{path}/configVersions"),
        format!("{path}/states"),
        format!("{path}/presence"),
    );
    let (device, configs, states, presence) = tokio::join!(
        api.get::<Device>(&path),
        api.get(&configs),
        api.get(&states),
        api.get(&presence),
    );
    Ok(Loaded {
        device: device?,
        configs: configs?,
        states: states?,
        presence: presence?,
    })
}

/// A refused action: which form, the API's words, and what the form held.
struct Refused {
    action: String,
    refusal: Refusal,
    form: Form,
}

/// `GET …/devices/{d}`.
pub(super) async fn page(
    visit: Visit,
    Path(at): Path<At>,
    Query(query): Query<DeviceQuery>,
) -> Response {
    device_page(&visit, &at, &query.done, None).await
}

async fn device_page(visit: &Visit, at: &At, done: &str, refused: Option<Refused>) -> Response {
    let api = visit.api(&at.project, &at.location);
    let loaded = match load(&api, at).await {
        Ok(loaded) => loaded,
        Err(refusal) => return pages::refused_page(visit, at, &refusal),
    };
    let now = Timestamp::now();
    let status = refused
        .as_ref()
        .map_or(StatusCode::OK, |r| r.refusal.status);
    let ctx = Ctx {
        visit,
        at,
        refused: refused.as_ref(),
        now,
    };
    let body = html! {
        h1 { "Device " (at.device) }
        @if let Some(text) = done_text(done) { (notice_box(text)) }
        (ctx.summary(&loaded))
        (ctx.block(&loaded.device))
        (ctx.config(&loaded))
        (ctx.states(&loaded.states))
        (ctx.command(&loaded.presence))
        (ctx.credentials(&loaded.device))
        (ctx.metadata(&loaded.device))
        (ctx.delete())
    };
    pages::html(
        status,
        layout(&format!("Device {}", at.device), visit, &at.crumbs(), body),
    )
}

fn done_text(done: &str) -> Option<&'static str> {
    Some(match done {
        "block" => "Saved: the device's blocked flag changed.",
        "config" => {
            "Saved: a new config version was stored (and pushed to the device if it is connected over MQTT)."
        }
        "command" => "Sent: the device acknowledged the command.",
        "queued" => "Queued: the command waits for the device to ask for it.",
        "add-key" => "Saved: the key was added.",
        "remove-key" => "Saved: the key was removed.",
        "metadata" => "Saved: the metadata was replaced.",
        _ => return None,
    })
}

/// What every section of the page needs.
struct Ctx<'a> {
    visit: &'a Visit,
    at: &'a At,
    refused: Option<&'a Refused>,
    now: Timestamp,
}

impl Ctx<'_> {
    /// The form of `action`, with its CSRF field, and the refusal it met, if it did.
    fn form(&self, action: &str, body: Markup) -> Markup {
        html! {
            @if let Some(refused) = self.refused.filter(|r| r.action == action) {
                (refusal_box(&refused.refusal))
            }
            form.card method="post" action={ (self.at.device_href()) "/" (action) } {
                input type="hidden" name="csrf" value=(self.visit.csrf);
                (body)
            }
        }
    }

    /// What the refused form of `action` held in `field`, if it was that one.
    fn draft(&self, action: &str, field: &str) -> Option<String> {
        self.refused
            .filter(|r| r.action == action)
            .map(|r| r.form.get(field).to_owned())
    }

    fn summary(&self, loaded: &Loaded) -> Markup {
        let d = &loaded.device;
        let connected = loaded.presence["connected"].as_bool().unwrap_or(false);
        let time = |t: Option<Timestamp>| format::time(t, self.now);
        html! {
            dl.facts {
                dt { "Numeric id" } dd { (d.num_id.map(|n| n.to_string()).unwrap_or_default()) }
                dt { "Last heard from" } dd { (time(last_seen(d))) }
                dt { "Connected" } dd {
                    @if connected {
                        span.badge.good { "connected over MQTT" } " "
                        span.muted { "since " (loaded.presence["since"].as_str().unwrap_or("?")) " on " (loaded.presence["instance"].as_str().unwrap_or("?")) }
                    } @else { span.muted { "no MQTT connection" } }
                }
                dt { "Blocked" } dd { @if d.blocked { span.badge.bad { "blocked" } } @else { "no" } }
                dt { "Last event" } dd { (time(d.last_event_time)) }
                dt { "Last state" } dd { (time(d.last_state_time)) }
                dt { "Last heartbeat" } dd { (time(d.last_heartbeat_time)) }
                dt { "Last config sent / acknowledged" } dd { (time(d.last_config_send_time)) " / " (time(d.last_config_ack_time)) }
                dt { "Last error" } dd {
                    @match &d.last_error_status {
                        Some(error) => { span.error { (error.message) } " " (time(d.last_error_time)) }
                        None => span.muted { "none" },
                    }
                }
            }
        }
    }

    fn block(&self, device: &Device) -> Markup {
        let (value, label) = if device.blocked {
            ("false", "Unblock")
        } else {
            ("true", "Block")
        };
        html! {
            h2 { "Access" }
            (self.form("block", html! {
                input type="hidden" name="blocked" value=(value);
                p.hint { "A blocked device is refused on every request and its MQTT connection is closed." }
                button type="submit" { (label) " device" }
            }))
        }
    }

    fn config(&self, loaded: &Loaded) -> Markup {
        let latest = loaded.configs.device_configs.first();
        let version = latest.map_or(0, |c| c.version);
        let data = latest.map(|c| c.binary_data.as_slice()).unwrap_or_default();
        let (text, encoding) = match format::text(data) {
            Some(text) => (text.to_owned(), "text"),
            None => (encode_base64(data), "base64"),
        };
        let text = self.draft("config", "data").unwrap_or(text);
        let encoding = self
            .draft("config", "encoding")
            .unwrap_or(encoding.to_owned());
        html! {
            h2 { "Config" }
            table {
                thead { tr { th { "Version" } th { "Set" } th { "Acknowledged by the device" } th { "Payload" } } }
                tbody {
                    @for config in &loaded.configs.device_configs {
                        tr {
                            td { (config.version) }
                            td { (format::time(config.cloud_update_time, self.now)) }
                            td { (format::time(config.device_ack_time, self.now)) }
                            td { (Payload::of(&config.binary_data).render()) }
                        }
                    }
                }
            }
            (self.form("config", html! {
                input type="hidden" name="base_version" value=(version);
                label { "New config, based on version " (version) textarea name="data" rows="6" { (text) } }
                label {
                    "The text is"
                    select name="encoding" {
                        option value="text" selected[encoding == "text"] { "the payload itself (UTF-8)" }
                        option value="base64" selected[encoding == "base64"] { "base64 of the payload" }
                    }
                }
                p.hint { "Saved only if the config is still at version " (version) " (the API's versionToUpdate): a change made meanwhile is not overwritten." }
                button type="submit" { "Save config" }
            }))
        }
    }

    fn states(&self, states: &ListDeviceStatesResponse) -> Markup {
        html! {
            h2 { "State history" }
            @if states.device_states.is_empty() { p.muted { "The device has reported no state." } }
            @for state in &states.device_states {
                div.state {
                    div.when { (format::time(state.update_time, self.now)) }
                    (Payload::of(&state.binary_data).render())
                }
            }
        }
    }

    fn command(&self, presence: &Value) -> Markup {
        let connected = presence["connected"].as_bool().unwrap_or(false);
        let subscribed = presence["subscriptions"]["commands"]
            .as_bool()
            .unwrap_or(false);
        html! {
            h2 { "Send a command" }
            p.hint {
                @if connected && subscribed { "The device is connected and subscribed to its commands topic: a command is delivered now." }
                @else if connected { "The device is connected but not subscribed to /devices/" (self.at.device) "/commands/#: the API will refuse a command unless it is queued with a TTL." }
                @else { "The device holds no MQTT connection: the API will refuse a command unless it is queued with a TTL (the device then fetches it)." }
            }
            (self.form("command", html! {
                label { "Command (text)" textarea name="data" rows="2" { (self.draft("command", "data").unwrap_or_default()) } }
                label { "Subfolder (optional)" input type="text" name="subfolder" value=(self.draft("command", "subfolder").unwrap_or_default()); }
                label { "Queue for up to … seconds if it cannot be delivered now (optional)" input type="number" min="1" name="ttl" value=(self.draft("command", "ttl").unwrap_or_default()); }
                button type="submit" { "Send command" }
            }))
        }
    }

    fn credentials(&self, device: &Device) -> Markup {
        html! {
            h2 { "Credentials" }
            @if device.credentials.is_empty() { p.muted { "No keys: the device cannot authenticate." } }
            @else {
                table {
                    thead { tr { th { "Format" } th { "Fingerprint (SHA-256 of the PEM)" } th { "Expires" } th {} } }
                    tbody {
                        @for credential in &device.credentials {
                            @let print = fingerprint(&credential.public_key.key);
                            tr {
                                td { (credential.public_key.format.as_str()) }
                                td { code { (print) } }
                                td { @match credential.expiration_time { Some(t) => (format::time(Some(t), self.now)), None => span.muted { "never" } } }
                                td {
                                    form.inline method="post" action={ (self.at.device_href()) "/remove-key" } {
                                        input type="hidden" name="csrf" value=(self.visit.csrf);
                                        input type="hidden" name="fingerprint" value=(print);
                                        button.danger type="submit" { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(refused) = self.refused.filter(|r| r.action == "remove-key") { (refusal_box(&refused.refusal)) }
            (self.form("add-key", html! {
                label {
                    "Format"
                    select name="format" {
                        @for name in KEY_FORMATS { option value=(name) selected[self.draft("add-key", "format").as_deref() == Some(name)] { (name) } }
                    }
                }
                label { "Public key (PEM)" textarea name="key" rows="4" { (self.draft("add-key", "key").unwrap_or_default()) } }
                label { "Expires (UTC, optional)" input type="datetime-local" name="expires" value=(self.draft("add-key", "expires").unwrap_or_default()); }
                button type="submit" { "Add key" }
            }))
        }
    }

    fn metadata(&self, device: &Device) -> Markup {
        let current = serde_json::to_string_pretty(&device.metadata).unwrap_or_default();
        html! {
            h2 { "Metadata" }
            @if device.metadata.is_empty() { p.muted { "None." } }
            @else {
                dl.facts { @for (key, value) in &device.metadata { dt { (key) } dd { (value) } } }
            }
            (self.form("metadata", html! {
                label { "All metadata, as a JSON object of strings" textarea name="metadata" rows="4" { (self.draft("metadata", "metadata").unwrap_or(current)) } }
                button type="submit" { "Replace metadata" }
            }))
        }
    }

    fn delete(&self) -> Markup {
        html! {
            h2 { "Delete" }
            (self.form("delete", html! {
                label { span { "Type the device id, " code { (self.at.device) } ", to confirm" } input type="text" name="confirm" autocomplete="off"; }
                button.danger type="submit" { "Delete device" }
            }))
        }
    }
}

/// `POST …/devices/{d}/{action}`.
pub(super) async fn act(visit: Visit, Path(at): Path<At>, form: Form) -> Response {
    let api = visit.api(&at.project, &at.location);
    let outcome = match at.action.as_str() {
        "block" => block(&api, &at, &form).await,
        "config" => config(&api, &at, &form).await,
        "command" => command(&api, &at, &form).await,
        "add-key" => add_key(&api, &at, &form).await,
        "remove-key" => remove_key(&api, &at, &form).await,
        "metadata" => metadata(&api, &at, &form).await,
        "delete" => delete(&api, &at, &form).await,
        _ => return pages::not_found(visit).await,
    };
    match outcome {
        Ok(Done::Page(done)) => pages::redirect(&format!("{}?done={done}", at.device_href())),
        Ok(Done::Deleted) => pages::redirect(&format!("{}?done=deleted", at.fleet_href())),
        Err(refusal) => {
            let refused = Refused {
                action: at.action.clone(),
                refusal,
                form,
            };
            device_page(&visit, &at, "", Some(refused)).await
        }
    }
}

/// How an action ended well.
enum Done {
    /// Back to the device page, with this notice.
    Page(&'static str),
    /// The device is gone: to the fleet page.
    Deleted,
}

async fn block(api: &Api, at: &At, form: &Form) -> Result<Done, Refusal> {
    let blocked = form.get("blocked") == "true";
    let path = format!("{}?updateMask=blocked", at.api_device());
    api.patch::<Value>(&path, json!({"blocked": blocked}))
        .await?;
    Ok(Done::Page("block"))
}

async fn config(api: &Api, at: &At, form: &Form) -> Result<Done, Refusal> {
    let data = match form.get("encoding") {
        "base64" => decode_base64(form.get("data").trim())
            .map_err(|e| Refusal::invalid(format!("the config is not valid base64: {e}")))?,
        _ => form.get("data").as_bytes().to_vec(),
    };
    let base: u64 = form.get("base_version").parse().map_err(|_| {
        Refusal::invalid("the form lost the version it was based on; reload the page")
    })?;
    let body = json!({"versionToUpdate": base.to_string(), "binaryData": encode_base64(&data)});
    let path = format!("{}:modifyCloudToDeviceConfig", at.api_device());
    api.post::<Value>(&path, body).await?;
    Ok(Done::Page("config"))
}

async fn command(api: &Api, at: &At, form: &Form) -> Result<Done, Refusal> {
    let mut body = json!({"binaryData": encode_base64(form.get("data").as_bytes())});
    let subfolder = form.get("subfolder").trim();
    if !subfolder.is_empty() {
        body["subfolder"] = json!(subfolder);
    }
    let ttl = form.get("ttl").trim();
    if !ttl.is_empty() {
        body["ttl"] = json!(format!("{ttl}s"));
    }
    let path = format!("{}:sendCommandToDevice", at.api_device());
    let answer: Value = api.post(&path, body).await?;
    Ok(Done::Page(if answer["queued"] == json!(true) {
        "queued"
    } else {
        "command"
    }))
}

async fn add_key(api: &Api, at: &At, form: &Form) -> Result<Done, Refusal> {
    let mut credential =
        json!({"publicKey": {"format": form.get("format"), "key": form.get("key").trim()}});
    let expires = form.get("expires").trim();
    if !expires.is_empty() {
        let at: jiff::civil::DateTime = expires.parse().map_err(|e| {
            Refusal::invalid(format!(
                "the expiry `{expires}` is not a date and time: {e}"
            ))
        })?;
        let utc = at.to_zoned(jiff::tz::TimeZone::UTC).map_err(|e| {
            Refusal::invalid(format!("the expiry `{expires}` is out of range: {e}"))
        })?;
        credential["expirationTime"] = json!(utc.timestamp().to_string());
    }
    let device: Device = api.get(&at.api_device()).await?;
    let mut credentials = serde_json::to_value(&device.credentials).unwrap_or_else(|_| json!([]));
    if let Value::Array(list) = &mut credentials {
        list.push(credential);
    }
    save_credentials(api, at, credentials).await?;
    Ok(Done::Page("add-key"))
}

async fn remove_key(api: &Api, at: &At, form: &Form) -> Result<Done, Refusal> {
    let device: Device = api.get(&at.api_device()).await?;
    let print = form.get("fingerprint");
    let kept: Vec<&DeviceCredential> = device
        .credentials
        .iter()
        .filter(|c| fingerprint(&c.public_key.key) != print)
        .collect();
    if kept.len() == device.credentials.len() {
        return Err(Refusal::invalid(format!(
            "the device holds no key with fingerprint {print} any more; the page was out of date"
        )));
    }
    save_credentials(api, at, json!(kept)).await?;
    Ok(Done::Page("remove-key"))
}

/// Replaces the device's credential list: the API's `patch` with `updateMask=credentials`, which
/// checks every key and drops the device's cached tokens.
async fn save_credentials(api: &Api, at: &At, credentials: Value) -> Result<(), Refusal> {
    let path = format!("{}?updateMask=credentials", at.api_device());
    api.patch::<Value>(&path, json!({"credentials": credentials}))
        .await?;
    Ok(())
}

async fn metadata(api: &Api, at: &At, form: &Form) -> Result<Done, Refusal> {
    let text = form.get("metadata").trim();
    let metadata: BTreeMap<String, String> = match text {
        "" => BTreeMap::new(),
        text => serde_json::from_str(text).map_err(|e| {
            Refusal::invalid(format!("the metadata is not a JSON object of strings: {e}"))
        })?,
    };
    let path = format!("{}?updateMask=metadata", at.api_device());
    api.patch::<Value>(&path, json!({"metadata": metadata}))
        .await?;
    Ok(Done::Page("metadata"))
}

async fn delete(api: &Api, at: &At, form: &Form) -> Result<Done, Refusal> {
    if form.get("confirm").trim() != at.device {
        return Err(Refusal::invalid(format!(
            "not deleted: type the device id `{}` to confirm",
            at.device
        )));
    }
    api.delete(&at.api_device()).await?;
    Ok(Done::Deleted)
}
