//! A registry's fleet: the fleet-health picture (devices heard from in the last 5 minutes, hour
//! and day, or never, and a histogram of how long ago, from the API's `fleetHealth`), then the
//! devices one page at a time with when each was last heard from, its last error, whether it is
//! blocked and whether it holds an MQTT connection, and a form to add a device.
//!
//! Paging follows the store's page tokens, so page 200 of 10,000 devices costs what page 1
//! does. An id prefix starts the listing at the prefix (a page token just below it) and stops
//! where the prefix ends. A status filter reads the listing in larger pages and keeps the
//! devices that match, up to a bound per request, so a rare status never makes one request read
//! the whole registry: the page then says how far it looked and continues from there.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::future::join_all;
use jiff::Timestamp;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::fleet_health::{FleetHealth, last_seen};
use shared::resources::{Device, ListDevicesResponse};

use super::api::{Api, Refusal, escape};
use super::format;
use super::pages::{self, At, layout, notice_box, refusal_box};
use super::session::{Form, Visit};
use crate::registry::page::page_token;

/// Devices shown on one page.
const PAGE_SIZE: usize = 50;
/// With a status filter, devices read per call to the API…
const SCAN_BATCH: usize = 500;
/// …and at most per request, before the page offers to look further.
const SCAN_LIMIT: usize = 5000;
/// The device fields the list needs.
const FIELDS: &str =
    "blocked,lastEventTime,lastStateTime,lastHeartbeatTime,lastErrorTime,lastErrorStatus";

/// The fleet page's query.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct FleetQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    page: String,
    #[serde(default)]
    done: String,
}

/// Which devices the list keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    All,
    /// Heard from within the last hour.
    Recent,
    /// Heard from once, but not within the last day.
    Quiet,
    /// Never heard from.
    Never,
    Blocked,
    /// With a last error.
    Errors,
}

impl Status {
    const ALL: [(Status, &'static str, &'static str); 6] = [
        (Status::All, "", "all"),
        (Status::Recent, "recent", "heard from in the last hour"),
        (Status::Quiet, "quiet", "silent for over a day"),
        (Status::Never, "never", "never heard from"),
        (Status::Blocked, "blocked", "blocked"),
        (Status::Errors, "errors", "with a last error"),
    ];

    fn parse(text: &str) -> Self {
        Self::ALL
            .iter()
            .find(|(_, name, _)| *name == text)
            .map_or(Status::All, |(status, _, _)| *status)
    }

    fn keeps(self, device: &Device, now: Timestamp) -> bool {
        let age = last_seen(device).map(|t| now.duration_since(t).as_secs());
        match self {
            Status::All => true,
            Status::Recent => age.is_some_and(|a| a < 3600),
            Status::Quiet => age.is_some_and(|a| a >= 86_400),
            Status::Never => age.is_none(),
            Status::Blocked => device.blocked,
            Status::Errors => device.last_error_status.is_some(),
        }
    }
}

/// One page of the list.
#[derive(Debug, Default)]
struct Rows {
    devices: Vec<Device>,
    /// The console's token for the next page, when more may follow.
    next: Option<String>,
    /// Devices read to fill the page.
    scanned: usize,
    /// The scan stopped at [`SCAN_LIMIT`] before filling the page.
    capped: bool,
}

/// The page token that starts a listing at the first id with `prefix`: the listing resumes
/// after a token's id, and the largest id below every id starting with `prefix` is `prefix`
/// with its last character lowered by one and followed by `~`, the highest character an id may
/// hold, to beyond an id's longest length.
fn token_before(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    let last = bytes.pop()?;
    bytes.push(last.checked_sub(1)?);
    bytes.extend([b'~'; 256]);
    String::from_utf8(bytes).ok().map(|id| page_token(&id))
}

/// Reads devices from the API until a page of those `status` keeps is full, the prefix ends,
/// the registry ends, or [`SCAN_LIMIT`] were read.
async fn scan(
    api: &Api,
    at: &At,
    prefix: &str,
    status: Status,
    token: &str,
    now: Timestamp,
) -> Result<Rows, Refusal> {
    let mut token = match token {
        "" => token_before(prefix).unwrap_or_default(),
        given => given.to_owned(),
    };
    let batch = if status == Status::All {
        PAGE_SIZE
    } else {
        SCAN_BATCH
    };
    let mut rows = Rows::default();
    loop {
        let path = format!(
            "{}/devices?pageSize={batch}&fieldMask={FIELDS}&pageToken={}",
            at.api_registry(),
            escape(&token)
        );
        let listed: ListDevicesResponse = api.get(&path).await?;
        let count = listed.devices.len();
        let more = !listed.next_page_token.is_empty();
        for (i, device) in listed.devices.into_iter().enumerate() {
            let id = device
                .id
                .as_ref()
                .map(|id| id.to_string())
                .unwrap_or_default();
            if !id.starts_with(prefix) {
                return Ok(rows);
            }
            rows.scanned += 1;
            if status.keeps(&device, now) {
                rows.devices.push(device);
            }
            if rows.devices.len() == PAGE_SIZE {
                rows.next = (i + 1 < count || more).then(|| page_token(&id));
                return Ok(rows);
            }
        }
        if !more {
            return Ok(rows);
        }
        token = listed.next_page_token;
        if rows.scanned >= SCAN_LIMIT {
            rows.next = Some(token);
            rows.capped = true;
            return Ok(rows);
        }
    }
}

/// Whether each device holds an MQTT connection somewhere in the fleet (the API's presence),
/// asked for all the page's devices at once; `None` where the API would not say.
async fn presence(api: &Api, at: &At, devices: &[Device]) -> Vec<Option<bool>> {
    let asks = devices.iter().map(|device| {
        let at = At {
            device: device
                .id
                .as_ref()
                .map(|id| id.to_string())
                .unwrap_or_default(),
            ..at.clone()
        };
        async move {
            let answer: Result<Value, _> = api.get(&format!("{}/presence", at.api_device())).await;
            answer.ok().and_then(|p| p["connected"].as_bool())
        }
    });
    join_all(asks).await
}

/// `GET …/registries/{r}?prefix=&status=&page=`.
pub(super) async fn page(
    visit: Visit,
    Path(at): Path<At>,
    Query(query): Query<FleetQuery>,
) -> Response {
    fleet_page(&visit, &at, &query, None).await
}

/// What the add-device form held when the API refused it.
struct Draft<'a> {
    form: &'a Form,
    refusal: Refusal,
}

async fn fleet_page(
    visit: &Visit,
    at: &At,
    query: &FleetQuery,
    draft: Option<Draft<'_>>,
) -> Response {
    let api = visit.api(&at.project, &at.location);
    let now = Timestamp::now();
    let health: FleetHealth = match api.get(&format!("{}/fleetHealth", at.api_registry())).await {
        Ok(health) => health,
        Err(refusal) => return pages::refused_page(visit, at, &refusal),
    };
    let prefix = query.prefix.trim();
    let status = Status::parse(&query.status);
    let listed = scan(&api, at, prefix, status, &query.page, now).await;
    let rows = match listed {
        Ok(rows) => rows,
        Err(refusal) => return pages::refused_page(visit, at, &refusal),
    };
    let connected = presence(&api, at, &rows.devices).await;
    let status_code = draft.as_ref().map_or(StatusCode::OK, |d| d.refusal.status);
    let body = html! {
        h1 { "Fleet of " (at.registry) }
        @if query.done == "deleted" { (notice_box("The device was deleted.")) }
        p.links { a href={ (at.fleet_href()) "/settings" } { "Registry settings" } }
        (health_picture(&health))
        h2 { "Devices" }
        (filter_form(at, prefix, status))
        (device_table(at, &rows, &connected, now))
        (pager(at, prefix, status, &rows))
        h2 { "Add a device" }
        (add_form(visit, at, draft.as_ref()))
    };
    pages::html(
        status_code,
        layout(
            &format!("Fleet of {}", at.registry),
            visit,
            &at.crumbs(),
            body,
        ),
    )
}

fn health_picture(health: &FleetHealth) -> Markup {
    let cards = [
        ("last 5 minutes", health.heard_within_5_minutes, "good"),
        ("last hour", health.heard_within_hour, "good"),
        ("last day", health.heard_within_day, "warn"),
        ("never", health.never_heard, "none"),
    ];
    html! {
        section.health aria-label="Fleet health" {
            div.cards {
                div.card.total { span.count { (health.device_count) } span.what { "devices" } }
                @for (what, count, tone) in cards {
                    div class={ "card " (tone) } {
                        span.count { (count) }
                        span.what { "heard from: " (what) }
                    }
                }
            }
            (histogram(health))
            p.hint { "Last heard from = the latest event, state or MQTT heartbeat. The server records these at most once a minute per device." }
        }
    }
}

/// The last-seen histogram as inline SVG bars, never-heard last.
fn histogram(health: &FleetHealth) -> Markup {
    let labels = [
        "<1m", "1–5m", "5–15m", "15m–1h", "1–6h", "6–24h", "1–7d", "7–30d", "≥30d",
    ];
    let mut bars: Vec<(&str, u64, &str)> = health
        .last_seen
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(i, (bin, label))| {
            let tone = match i {
                0..=3 => "good",
                4..=5 => "warn",
                _ => "bad",
            };
            (label, bin.devices, tone)
        })
        .collect();
    bars.push(("never", health.never_heard, "none"));
    let tallest = bars.iter().map(|(_, n, _)| *n).max().unwrap_or(0).max(1);
    let (width, height, bar) = (640u64, 150u64, 56u64);
    html! {
        // Room above the bars for the tallest one's count, and below for the labels.
        svg.histogram viewBox={ "0 0 " (width) " " (height + 54) } role="img" aria-label="Devices by when they were last heard from" {
            @for (i, (label, count, tone)) in bars.iter().enumerate() {
                @let x = i as u64 * (bar + 8) + 4;
                @let h = count * height / tallest;
                rect class={ "bar " (tone) } x=(x) y=(height - h + 24) width=(bar) height=(h) {}
                text.value x=(x + bar / 2) y=(height - h + 19) { (count) }
                text.label x=(x + bar / 2) y=(height + 44) { (label) }
            }
        }
    }
}

fn filter_form(at: &At, prefix: &str, status: Status) -> Markup {
    html! {
        form.filters method="get" action=(at.fleet_href()) {
            label { "Id starts with" input type="text" name="prefix" value=(prefix); }
            label {
                "Status"
                select name="status" {
                    @for (option, name, label) in Status::ALL {
                        option value=(name) selected[option == status] { (label) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
    }
}

fn device_table(at: &At, rows: &Rows, connected: &[Option<bool>], now: Timestamp) -> Markup {
    html! {
        @if rows.devices.is_empty() {
            p.muted { "No devices match." }
        } @else {
            table.devices {
                thead { tr { th { "Device" } th { "Last heard from" } th { "Connected" } th { "Last error" } th { "Blocked" } } }
                tbody {
                    @for (device, connected) in rows.devices.iter().zip(connected) {
                        @let id = device.id.as_ref().map(|id| id.to_string()).unwrap_or_default();
                        @let at = At { device: id.clone(), ..at.clone() };
                        tr {
                            td { a href=(at.device_href()) { (id) } }
                            td { (format::time(last_seen(device), now)) }
                            td {
                                @match connected {
                                    Some(true) => span.badge.good { "connected" },
                                    Some(false) => span.muted { "no" },
                                    None => span.muted { "?" },
                                }
                            }
                            td {
                                @if let Some(error) = &device.last_error_status {
                                    span.error { (error.message) } " " span.muted { (format::time(device.last_error_time, now)) }
                                }
                            }
                            td { @if device.blocked { span.badge.bad { "blocked" } } }
                        }
                    }
                }
            }
        }
    }
}

fn pager(at: &At, prefix: &str, status: Status, rows: &Rows) -> Markup {
    let query = |page: &str| {
        let name = Status::ALL
            .iter()
            .find(|(s, _, _)| *s == status)
            .map_or("", |(_, n, _)| *n);
        format!(
            "{}?prefix={}&status={name}&page={}",
            at.fleet_href(),
            escape(prefix),
            escape(page)
        )
    };
    html! {
        p.pager {
            a href=(query("")) { "First page" }
            @if let Some(next) = &rows.next {
                " · " a rel="next" href=(query(next)) {
                    @if rows.capped { "Look further →" } @else { "Next page →" }
                }
            }
            @if rows.capped {
                " " span.muted { "(looked through " (rows.scanned) " devices without filling the page)" }
            }
        }
    }
}

fn add_form(visit: &Visit, at: &At, draft: Option<&Draft<'_>>) -> Markup {
    let field = |name: &str| draft.map_or("", |d| d.form.get(name));
    let format = field("format");
    html! {
        @if let Some(draft) = draft { (refusal_box(&draft.refusal)) }
        form.card method="post" action={ (at.fleet_href()) "/devices" } {
            input type="hidden" name="csrf" value=(visit.csrf);
            label { "Device id" input type="text" name="id" required value=(field("id")) placeholder="boiler-7"; }
            label {
                "Public key format"
                select name="format" {
                    @for name in super::device::KEY_FORMATS {
                        option value=(name) selected[name == format] { (name) }
                    }
                }
            }
            label { "Public key (PEM)" textarea name="key" rows="4" { (field("key")) } }
            button type="submit" { "Add device" }
        }
    }
}

/// `POST …/registries/{r}/devices`: the API's `create`, then the new device's page.
pub(super) async fn create_device(visit: Visit, Path(mut at): Path<At>, form: Form) -> Response {
    let mut device = json!({"id": form.get("id").trim()});
    let key = form.get("key").trim();
    if !key.is_empty() {
        device["credentials"] = json!([{"publicKey": {"format": form.get("format"), "key": key}}]);
    }
    let api = visit.api(&at.project, &at.location);
    match api
        .post::<Device>(&format!("{}/devices", at.api_registry()), device)
        .await
    {
        Ok(created) => {
            at.device = created.id.map(|id| id.to_string()).unwrap_or_default();
            pages::redirect(&at.device_href())
        }
        Err(refusal) => {
            let draft = Draft {
                form: &form,
                refusal,
            };
            fleet_page(&visit, &at, &FleetQuery::default(), Some(draft)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::page::start_after;

    #[test]
    fn a_prefix_listing_starts_just_below_the_prefix() {
        let after = start_after(token_before("dev-1").as_deref()).unwrap();
        for id in ["dev-1", "dev-1%", "dev-10", "dev-1~~~~"] {
            assert!(id > after.as_str(), "{id} is listed");
        }
        for id in ["dev-0", "dev-0~~~~~~~~~~~~", "dev-", "dev"] {
            assert!(id < after.as_str(), "{id} is not listed");
        }
        assert_eq!(token_before(""), None);
    }

    #[test]
    fn statuses_keep_what_they_say() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let heard = |secs: i64| Device {
            last_event_time: Some(now - jiff::SignedDuration::from_secs(secs)),
            ..Device::default()
        };
        assert!(Status::Recent.keeps(&heard(60), now));
        assert!(!Status::Recent.keeps(&heard(7200), now));
        assert!(Status::Quiet.keeps(&heard(2 * 86_400), now));
        assert!(Status::Never.keeps(&Device::default(), now));
        assert!(!Status::Never.keeps(&heard(1), now));
        assert_eq!(Status::parse("blocked"), Status::Blocked);
        assert_eq!(Status::parse("nonsense"), Status::All);
    }
}
