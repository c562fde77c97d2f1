//! The console's frame and its small pages: the layout every page shares (breadcrumbs, sign out,
//! the stylesheet), the boxes that show a notice or the admin API's refusal, the landing and
//! login forms, redirects, and the pages for a refused or broken request.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::api::{Refusal, escape};
use super::session::{Form, Visit};

/// Where a page is: the project, location, registry and device of its path (the later ones empty
/// above their level), and the device action a `POST` names.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct At {
    pub project: String,
    pub location: String,
    #[serde(default)]
    pub registry: String,
    #[serde(default)]
    pub device: String,
    #[serde(default)]
    pub action: String,
}

impl At {
    /// The console's page of the location's registries.
    pub fn registries_href(&self) -> String {
        format!(
            "/console/projects/{}/locations/{}/registries",
            escape(&self.project),
            escape(&self.location)
        )
    }

    /// The registry's fleet page.
    pub fn fleet_href(&self) -> String {
        format!("{}/{}", self.registries_href(), escape(&self.registry))
    }

    /// The device's page.
    pub fn device_href(&self) -> String {
        format!("{}/devices/{}", self.fleet_href(), escape(&self.device))
    }

    /// The registry below the location, as the admin API's path.
    pub fn api_registry(&self) -> String {
        format!("/registries/{}", escape(&self.registry))
    }

    /// The device below the location, as the admin API's path.
    pub fn api_device(&self) -> String {
        format!("{}/devices/{}", self.api_registry(), escape(&self.device))
    }

    /// The breadcrumbs down to this place; the last one is the page itself.
    pub fn crumbs(&self) -> Vec<(String, String)> {
        let mut crumbs = vec![(
            format!("{} / {}", self.project, self.location),
            self.registries_href(),
        )];
        if !self.registry.is_empty() {
            crumbs.push((self.registry.clone(), self.fleet_href()));
        }
        if !self.device.is_empty() {
            crumbs.push((self.device.clone(), self.device_href()));
        }
        crumbs
    }
}

/// A whole page: the frame around `body`.
pub(super) fn layout(
    title: &str,
    visit: &Visit,
    crumbs: &[(String, String)],
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · iotcore console" }
                link rel="stylesheet" href="/console/console.css";
            }
            body {
                header.top {
                    nav.crumbs {
                        a href="/console" { "iotcore console" }
                        @for (label, href) in crumbs {
                            " › " a href=(href) { (label) }
                        }
                    }
                    @if visit.signed_in {
                        form.signout method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(visit.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// `markup` as an HTML answer with `status`.
pub(super) fn html(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// The admin API's refusal, in its words.
pub(super) fn refusal_box(refusal: &Refusal) -> Markup {
    html! {
        div.refusal role="alert" {
            strong { (refusal.code) } ": " (refusal.message)
        }
    }
}

/// A confirmation of what was just done.
pub(super) fn notice_box(text: &str) -> Markup {
    html! { div.notice role="status" { (text) } }
}

/// A page that could not be shown because the admin API refused a read: its status and words;
/// a refused token leads back to the login form.
pub(super) fn refused_page(visit: &Visit, at: &At, refusal: &Refusal) -> Response {
    if refusal.status == StatusCode::UNAUTHORIZED {
        let form = LoginForm {
            project: at.project.clone(),
            location: at.location.clone(),
            next: None,
        };
        return login(&visit.csrf, &form, Some(&refusal.message), refusal.status);
    }
    let page = layout(
        "Refused",
        visit,
        &at.crumbs(),
        html! { h1 { "Not shown" } (refusal_box(refusal)) },
    );
    html(refusal.status, page)
}

/// `303 See Other` to `location` (a path of the console).
pub(super) fn redirect(location: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, location.to_owned())]).into_response()
}

/// A bare page for a refused change (no session details on it).
pub(super) fn forbidden(why: &str) -> Response {
    bare(StatusCode::FORBIDDEN, "Refused", why)
}

/// A bare page for a failure of the console itself, logged once.
pub(super) fn broken(why: &str) -> Response {
    tracing::error!(error = %why, "console failure");
    bare(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal error",
        "internal error; the service log has the details",
    )
}

fn bare(status: StatusCode, title: &str, text: &str) -> Response {
    html(
        status,
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { (title) " · iotcore console" }
                    link rel="stylesheet" href="/console/console.css";
                }
                body { main { h1 { (title) } div.refusal role="alert" { (text) } p { a href="/console" { "Back to the console" } } } }
            }
        },
    )
}

/// What the login and landing forms hold.
#[derive(Debug, Clone)]
pub(super) struct LoginForm {
    pub project: String,
    pub location: String,
    /// The console page asked for before signing in.
    pub next: Option<String>,
}

impl Default for LoginForm {
    fn default() -> Self {
        Self {
            project: String::new(),
            location: "us-central1".into(),
            next: None,
        }
    }
}

impl LoginForm {
    /// The fields of a submitted form.
    pub fn read(form: &Form) -> Self {
        let next = Some(form.get("next").to_owned()).filter(|n| !n.is_empty());
        Self {
            project: form.get("project").trim().to_owned(),
            location: form.get("location").trim().to_owned(),
            next,
        }
    }

    /// Where to go once signed in: the page asked for, if it is the console's, else the
    /// registries of the project and location given.
    pub fn destination(&self) -> String {
        match &self.next {
            // Only a path of this console: never another host (`//evil`), never the API.
            Some(next) if next.starts_with("/console/") => next.clone(),
            _ => At {
                project: self.project.clone(),
                location: self.location.clone(),
                ..At::default()
            }
            .registries_href(),
        }
    }
}

/// The login form, with `why` the last refusal.
pub(super) fn login(
    csrf: &str,
    form: &LoginForm,
    why: Option<&str>,
    status: StatusCode,
) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · iotcore console" }
                link rel="stylesheet" href="/console/console.css";
            }
            body {
                main.narrow {
                    h1 { "iotcore console" }
                    @if let Some(why) = why { div.refusal role="alert" { (why) } }
                    form.card method="post" action="/console/login" {
                        input type="hidden" name="csrf" value=(csrf);
                        @if let Some(next) = &form.next { input type="hidden" name="next" value=(next); }
                        label { "Admin bearer token" input type="password" name="token" autocomplete="current-password" required autofocus; }
                        (place_fields(form))
                        button type="submit" { "Sign in" }
                    }
                    p.hint { "The token is one the server accepts (--admin-token or --admin-tokens-file). It is kept in a cookie this browser sends only to this console, which scripts cannot read." }
                }
            }
        }
    };
    html(status, page)
}

fn place_fields(form: &LoginForm) -> Markup {
    html! {
        label { "Project" input type="text" name="project" value=(form.project) required placeholder="my-project"; }
        label { "Location" input type="text" name="location" value=(form.location) required; }
    }
}

/// `GET /console`: pick a project and location.
pub(super) async fn landing(visit: Visit) -> Response {
    let form = LoginForm::default();
    let body = html! {
        h1 { "Registries of a project" }
        form.card method="get" action="/console/go" {
            (place_fields(&form))
            button type="submit" { "Open" }
        }
        p.hint { "Registries live in a project and a location, as in IoT Core: the names the CLI takes as --project and --region." }
    };
    html(StatusCode::OK, layout("Console", &visit, &[], body))
}

/// The landing form's fields.
#[derive(Debug, Deserialize)]
pub(super) struct Place {
    #[serde(default)]
    project: String,
    #[serde(default)]
    location: String,
}

/// `GET /console/go?project=&location=`: to that location's registries.
pub(super) async fn go(Query(place): Query<Place>) -> Response {
    let at = At {
        project: place.project.trim().to_owned(),
        location: place.location.trim().to_owned(),
        ..At::default()
    };
    if at.project.is_empty() || at.location.is_empty() {
        return redirect("/console");
    }
    redirect(&at.registries_href())
}

/// Any other path under `/console`.
pub(super) async fn not_found(visit: Visit) -> Response {
    let body = html! {
        h1 { "No such page" }
        p { a href="/console" { "Start again" } }
    };
    html(
        StatusCode::NOT_FOUND,
        layout("Not found", &visit, &[], body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_signing_in_only_console_pages_are_destinations() {
        let form = |next: &str| LoginForm {
            project: "p".into(),
            location: "l".into(),
            next: Some(next.into()),
        };
        let registries = "/console/projects/p/locations/l/registries";
        assert_eq!(
            form("/console/projects/p/locations/l/registries/r").destination(),
            "/console/projects/p/locations/l/registries/r"
        );
        for elsewhere in [
            "//evil.example/console/",
            "https://evil.example/",
            "/v1/projects",
            "/console",
        ] {
            assert_eq!(form(elsewhere).destination(), registries, "{elsewhere}");
        }
    }
}
