//! The admin API client every CLI command shares: the connection options (`--admin-url`,
//! `--project`, `--region`, tokens, `--output`), resource URLs under
//! `/v1/projects/{p}/locations/{l}`, the bearer token, and the translation of each failure into
//! an [`AdminError`] whose kind decides the exit code.

use std::fmt;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::Serialize;
use serde_json::Value;
use shared::cause::innermost_cause;
use shared::{ErrorBody, ErrorInfo};

use super::id_token;
use super::output::Output;

/// How long one request may take before the CLI gives up; admin calls are small.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the admin API is and how to prove who we are; every admin subcommand takes these.
#[derive(Clone, clap::Args)]
#[command(next_help_heading = "Admin API options")]
pub struct AdminOptions {
    /// Base URL of the admin API: the address `ingest serve` prints as "admin API listening on
    /// …", or the https:// URL of the Cloud Run service.
    #[arg(
        long,
        env = "INGEST_ADMIN_URL",
        value_name = "URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub admin_url: Url,

    /// Google Cloud project id the registries belong to (part of every resource name).
    #[arg(long, env = "INGEST_PROJECT", value_name = "PROJECT_ID")]
    pub project: String,

    /// Region of the registries, as IoT Core named it.
    #[arg(
        long,
        env = "INGEST_REGION",
        value_name = "REGION",
        default_value = "us-central1"
    )]
    pub region: String,

    /// Bearer token the server was started with (its ADMIN_TOKEN). Sent as
    /// `Authorization: Bearer`; never printed.
    #[arg(
        long,
        env = "ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Attach a Google ID token (from application-default credentials, audience = the admin URL's
    /// origin) for a service behind Cloud Run's IAM. `auto`: only for https:// URLs on a
    /// non-loopback host when no --admin-token is given. A bare `--id-token` means `always`.
    #[arg(
        long,
        env = "INGEST_ID_TOKEN",
        value_name = "WHEN",
        value_enum,
        default_value = "auto",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "always"
    )]
    pub id_token: IdTokenMode,

    /// `text`: a short summary for people; `json`: the server's JSON, pretty-printed, for scripts.
    #[arg(
        long,
        short = 'o',
        env = "INGEST_OUTPUT",
        value_name = "FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub output: Output,
}

// Written by hand so that a token can never reach a log or a panic message.
impl fmt::Debug for AdminOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminOptions")
            .field("admin_url", &self.admin_url.as_str())
            .field("project", &self.project)
            .field("region", &self.region)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("id_token", &self.id_token)
            .field("output", &self.output)
            .finish()
    }
}

/// When to send a Google ID token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IdTokenMode {
    /// For https:// URLs on a non-loopback host, unless --admin-token is given.
    Auto,
    /// Always (with --admin-token too: the ID token then goes in `X-Serverless-Authorization`).
    Always,
    /// Never.
    Never,
}

/// A failure talking to the admin API; the kind decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The server refused the request with Google's JSON error body.
    #[error("{status}: {message}")]
    Refused {
        /// The canonical status name, e.g. `NOT_FOUND`.
        status: &'static str,
        /// The server's explanation.
        message: String,
        /// The `google.rpc.ErrorInfo` the server sent, if any: its reason is what to act on.
        info: Option<ErrorInfo>,
    },
    /// Something answered with an error status but not in Google's shape (a proxy, a load
    /// balancer, Cloud Run's IAM front end).
    #[error("the admin API at {url} answered HTTP {status}{hint}: {body}")]
    Http {
        /// The URL requested, without query.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// What to try, when the status suggests it.
        hint: &'static str,
        /// The start of the body.
        body: String,
    },
    /// No connection could be made, or no answer came in time.
    #[error(
        "cannot reach the admin API at {url}: {reason} (is `ingest serve` running? set --admin-url)"
    )]
    Unreachable {
        /// The base URL.
        url: String,
        /// The innermost cause, e.g. "Connection refused (os error 111)".
        reason: String,
    },
}

impl AdminError {
    /// How long the server asked to wait before a config change is accepted (its per-device
    /// rate), when that is why it refused.
    pub fn config_retry_after(&self) -> Option<Duration> {
        let AdminError::Refused {
            info: Some(info), ..
        } = self
        else {
            return None;
        };
        if info.reason != "CONFIG_RATE_EXCEEDED" {
            return None;
        }
        let millis = info.metadata.get("retryAfterMillis")?.parse().ok()?;
        Some(Duration::from_millis(millis))
    }
}

/// A bearer secret that prints as `<redacted>`.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A connection to one project and region of the admin API.
#[derive(Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    base: Url,
    project: String,
    region: String,
    admin_token: Option<Secret>,
    id_token: Option<Secret>,
    /// How the command should print its result.
    pub output: Output,
}

impl AdminClient {
    /// Builds the client, fetching a Google ID token first when one is wanted.
    pub async fn connect(options: &AdminOptions) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("ingest-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("setting up the HTTP client")?;
        let id_token = if wants_id_token(options) {
            let audience = options.admin_url.origin().ascii_serialization();
            Some(Secret(id_token::fetch(&audience).await?))
        } else {
            None
        };
        Ok(Self {
            http,
            base: options.admin_url.clone(),
            project: options.project.clone(),
            region: options.region.clone(),
            admin_token: options
                .admin_token
                .clone()
                .filter(|t| !t.is_empty())
                .map(Secret),
            id_token,
            output: options.output,
        })
    }

    /// The URL of `projects/{p}/locations/{l}/…segments`, each segment percent-encoded (ids may
    /// hold `%` and `+`).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["v1", "projects", &self.project, "locations", &self.region])
                .extend(segments);
        }
        url
    }

    /// The full resource name of a registry, as the server names it.
    pub fn registry_name(&self, registry: &str) -> String {
        format!(
            "projects/{}/locations/{}/registries/{registry}",
            self.project, self.region
        )
    }

    /// `GET` with query parameters.
    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.send(self.request(Method::GET, segments).query(query))
            .await
    }

    /// `POST` a JSON body.
    pub async fn post(&self, segments: &[&str], body: &impl Serialize) -> anyhow::Result<Value> {
        self.send(self.request(Method::POST, segments).json(body))
            .await
    }

    /// `PATCH` a JSON body with an `updateMask`.
    pub async fn patch(
        &self,
        segments: &[&str],
        update_mask: &[&str],
        body: &impl Serialize,
    ) -> anyhow::Result<Value> {
        let request = self
            .request(Method::PATCH, segments)
            .query(&[("updateMask", update_mask.join(","))])
            .json(body);
        self.send(request).await
    }

    /// `DELETE`.
    pub async fn delete(&self, segments: &[&str]) -> anyhow::Result<Value> {
        self.send(self.request(Method::DELETE, segments)).await
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let mut request = self.http.request(method, self.url(segments));
        match (&self.admin_token, &self.id_token) {
            (Some(admin), Some(google)) => {
                // Cloud Run's IAM reads this header when `Authorization` carries the app's own
                // token, so both checks can be passed at once.
                request = request
                    .bearer_auth(&admin.0)
                    .header("X-Serverless-Authorization", format!("Bearer {}", google.0));
            }
            (Some(token), None) | (None, Some(token)) => request = request.bearer_auth(&token.0),
            (None, None) => {}
        }
        request
    }

    async fn send(&self, request: RequestBuilder) -> anyhow::Result<Value> {
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        let status = response.status();
        let url = without_query(response.url());
        let body = response
            .bytes()
            .await
            .map_err(|err| self.unreachable(&err))?;
        if !status.is_success() {
            return Err(refusal(url, status, &body).into());
        }
        if body.is_empty() {
            return Ok(Value::Object(serde_json::Map::new()));
        }
        serde_json::from_slice(&body).with_context(|| {
            format!("the admin API at {url} answered with something other than JSON")
        })
    }

    fn unreachable(&self, err: &reqwest::Error) -> AdminError {
        let reason = if err.is_timeout() {
            format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
        } else {
            innermost_cause(err)
        };
        AdminError::Unreachable {
            url: self.base.as_str().trim_end_matches('/').to_owned(),
            reason,
        }
    }
}

/// Auto mode: a Google identity is only useful to a remote TLS endpoint; a loopback or plain-http
/// server is a local `ingest serve` that never checks one.
fn wants_id_token(options: &AdminOptions) -> bool {
    match options.id_token {
        IdTokenMode::Always => true,
        IdTokenMode::Never => false,
        IdTokenMode::Auto => {
            options.admin_token.as_deref().is_none_or(str::is_empty)
                && options.admin_url.scheme() == "https"
                && !is_loopback(&options.admin_url)
        }
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return true;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let host = host.to_ascii_lowercase();
            host == "localhost" || host.ends_with(".localhost")
        }
    }
}

/// Decodes an error answer: Google's body when it is one, otherwise the status and the start of
/// whatever came back.
fn refusal(url: String, status: StatusCode, body: &[u8]) -> AdminError {
    if let Ok(google) = serde_json::from_slice::<ErrorBody>(body) {
        return AdminError::Refused {
            status: google.error.status.name(),
            info: google.error.error_info(),
            message: google.error.message,
        };
    }
    let hint = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            " (behind Cloud Run's IAM the caller needs roles/run.invoker and an ID token: see --id-token)"
        }
        _ => "",
    };
    let text = String::from_utf8_lossy(body);
    AdminError::Http {
        url,
        status,
        hint,
        body: text.chars().take(200).collect::<String>().trim().to_owned(),
    }
}

fn without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_remote_https_urls_get_an_id_token_in_auto_mode() {
        let options = |url: &str, token: Option<&str>| AdminOptions {
            admin_url: Url::parse(url).expect("test url"),
            project: "demo-project".into(),
            region: "us-central1".into(),
            admin_token: token.map(String::from),
            id_token: IdTokenMode::Auto,
            output: Output::Text,
        };
        assert!(wants_id_token(&options(
            "https://admin-abc.a.run.app",
            None
        )));
        assert!(!wants_id_token(&options(
            "https://admin-abc.a.run.app",
            Some("t")
        )));
        assert!(!wants_id_token(&options("http://admin.example.com", None)));
        assert!(!wants_id_token(&options("https://127.0.0.1:8081", None)));
        assert!(!wants_id_token(&options("https://[::1]:8081", None)));
        assert!(!wants_id_token(&options("https://localhost:8081", None)));
    }

    #[test]
    fn ids_are_percent_encoded_in_urls() {
        let client = AdminClient {
            http: reqwest::Client::new(),
            base: Url::parse("http://127.0.0.1:8081/prefix/").expect("test url"),
            project: "demo-project".into(),
            region: "us-central1".into(),
            admin_token: None,
            id_token: None,
            output: Output::Text,
        };
        let url = client.url(&[
            "registries",
            "r%1",
            "devices",
            "d+2:modifyCloudToDeviceConfig",
        ]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8081/prefix/v1/projects/demo-project/locations/us-central1/registries/r%251/devices/d+2:modifyCloudToDeviceConfig"
        );
    }

    #[test]
    fn a_google_error_body_becomes_a_refusal() {
        let body =
            br#"{"error":{"code":404,"message":"device `d` not found","status":"NOT_FOUND"}}"#;
        let err = refusal("u".into(), StatusCode::NOT_FOUND, body);
        assert_eq!(err.to_string(), "NOT_FOUND: device `d` not found");
        let err = refusal("u".into(), StatusCode::FORBIDDEN, b"<html>Forbidden</html>");
        assert!(err.to_string().contains("roles/run.invoker"), "{err}");
    }
}
