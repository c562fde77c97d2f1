//! The one-shot client of the HTTP device bridge: `publishEvent`, `setState` and the config
//! fetch, with the paths, JSON bodies and `Authorization: Bearer` header of IoT Core's HTTP
//! protocol. Success is exactly `200`, as Google's own sample had it; anything else becomes a
//! [`ClientError`] carrying the server's Google-style error when it sent one. The token is only
//! ever put in the header, never in an error or a log.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use reqwest::{RequestBuilder, StatusCode, Url};
use shared::cause::innermost_cause;
use shared::device_api::{
    CommandsResponse, ConfigResponse, GatewayInfo, PublishEventRequest, SetStateRequest,
    StatePayload,
};
use shared::{DeviceName, DeviceRef, ErrorBody};

/// How long one request may take; a device on a bad link retries rather than waits forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed call to the bridge.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The bridge refused with Google's JSON error body.
    #[error("{status}: {message}")]
    Refused {
        /// The canonical status name, e.g. `UNAUTHENTICATED`.
        status: &'static str,
        /// The server's explanation, for people.
        message: String,
        /// The `google.rpc.ErrorInfo` reason (`TOKEN_EXPIRED`), for the agent to act on.
        reason: Option<String>,
        /// The HTTP status (`413` says more than its canonical name).
        http: StatusCode,
        /// The server's `Retry-After`, if it sent one (429, 503).
        retry_after: Option<Duration>,
    },
    /// An answer other than `200` that is not Google's error shape (a proxy, a load balancer,
    /// or a success code the protocol does not use).
    #[error("the device bridge at {url} answered HTTP {status} instead of 200: {body}")]
    Http {
        /// The URL requested, without query.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// The start of the body.
        body: String,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// No connection could be made, or no answer came in time.
    #[error("cannot reach the device bridge at {url}: {reason} (check --endpoint)")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// The innermost cause, e.g. "Connection refused (os error 111)".
        reason: String,
    },
    /// A `200` whose body is not what the protocol says.
    #[error("the device bridge answered 200 with an unexpected body: {detail}")]
    BadAnswer {
        /// What was wrong with it.
        detail: String,
    },
    /// The HTTP client could not be set up (no TLS roots, …).
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
}

/// One device's view of the bridge.
#[derive(Debug)]
pub struct IngestClient {
    http: reqwest::Client,
    endpoint: Url,
    device: DeviceName,
}

impl IngestClient {
    /// A client for `device` at `endpoint` (the bridge's base URL, with or without `/v1`),
    /// trusting the system's CA roots.
    pub fn new(endpoint: Url, device: DeviceName) -> Result<Self, ClientError> {
        Self::with_ca(endpoint, device, None)
    }

    /// As [`IngestClient::new`]; with `ca_pem`, only that CA bundle is trusted.
    pub fn with_ca(
        endpoint: Url,
        device: DeviceName,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, ClientError> {
        let setup = |err: reqwest::Error| ClientError::Setup(innermost_cause(&err));
        crate::tls::install_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // Below ingest's 10 s head deadline, which also closes idle connections: a pooled
            // connection reused just as the server closes it fails the request.
            .pool_idle_timeout(Duration::from_secs(8))
            .user_agent(concat!("iotcore-device/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(setup)?;
            if certs.is_empty() {
                return Err(ClientError::Setup(
                    "the CA file holds no PEM certificate".to_owned(),
                ));
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(setup)?;
        Ok(Self {
            http,
            endpoint,
            device,
        })
    }

    /// The server's `Date` header from a plain `GET` of the endpoint (any answer will do), as
    /// Unix seconds: the doctor compares it with the device clock.
    pub async fn server_date(&self) -> Result<Option<i64>, ClientError> {
        let response = self
            .http
            .get(self.endpoint.clone())
            .send()
            .await
            .map_err(|err| self.unreachable(&err))?;
        let date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|text| jiff::fmt::rfc2822::parse(text).ok())
            .map(|zoned| zoned.timestamp().as_second());
        Ok(date)
    }

    /// `POST …:publishEvent` with the payload and, if given, its subfolder.
    pub async fn publish_event(
        &self,
        token: &str,
        data: &[u8],
        sub_folder: Option<&str>,
    ) -> Result<(), ClientError> {
        let body = PublishEventRequest {
            binary_data: Some(URL_SAFE.encode(data)),
            sub_folder: sub_folder.map(str::to_owned),
            gateway_info: None,
        };
        let url = self.device_url(Some("publishEvent"), &[]);
        self.send(self.http.post(url).json(&body), token).await?;
        Ok(())
    }

    /// `POST …:publishEvent` for `child`, a device behind this client's device, a gateway (IoT
    /// Core's `gatewayInfo`): with the child's own token (`SignedBy::Child`) on the child's path,
    /// naming the gateway in `gatewayId`; with the gateway's (`SignedBy::Gateway`) on the
    /// gateway's path, acting for the child in `delegatedDeviceId`.
    pub async fn publish_event_for(
        &self,
        child: &str,
        signed: SignedBy<'_>,
        data: &[u8],
        sub_folder: Option<&str>,
    ) -> Result<(), ClientError> {
        let (url, token, gateway_info) = match signed {
            SignedBy::Child(token) => {
                let device = DeviceRef::parse(child).map_err(|err| {
                    ClientError::Setup(format!("`{child}` is not a device id: {err}"))
                })?;
                let name = DeviceName {
                    registry: self.device.registry.clone(),
                    device,
                };
                let via = GatewayInfo {
                    gateway_id: Some(self.device.device.to_string()),
                    delegated_device_id: None,
                };
                (
                    url_of(&self.endpoint, &name, Some("publishEvent"), &[]),
                    token,
                    via,
                )
            }
            SignedBy::Gateway(token) => {
                let via = GatewayInfo {
                    delegated_device_id: Some(child.to_owned()),
                    gateway_id: None,
                };
                (self.device_url(Some("publishEvent"), &[]), token, via)
            }
        };
        let body = PublishEventRequest {
            binary_data: Some(URL_SAFE.encode(data)),
            sub_folder: sub_folder.map(str::to_owned),
            gateway_info: Some(gateway_info),
        };
        self.send(self.http.post(url).json(&body), token).await?;
        Ok(())
    }

    /// `POST …:setState` with the state bytes.
    pub async fn set_state(&self, token: &str, data: &[u8]) -> Result<(), ClientError> {
        let body = SetStateRequest {
            state: Some(StatePayload {
                binary_data: Some(URL_SAFE.encode(data)),
            }),
            gateway_info: None,
        };
        let url = self.device_url(Some("setState"), &[]);
        self.send(self.http.post(url).json(&body), token).await?;
        Ok(())
    }

    /// `GET …/config?local_version=N`; 0 asks for the latest.
    pub async fn get_config(
        &self,
        token: &str,
        local_version: u64,
    ) -> Result<ConfigResponse, ClientError> {
        let url = self.device_url(None, &["config"]);
        let request = self
            .http
            .get(url)
            .query(&[("local_version", local_version)]);
        let body = self.send(request, token).await?;
        parse_config(&body)
    }

    /// `GET …/commands?ack=N`: the commands queued for the device (an extension of the service),
    /// after telling it the device has carried out every one up to `ack`.
    pub async fn get_commands(
        &self,
        token: &str,
        ack: Option<u64>,
    ) -> Result<CommandsResponse, ClientError> {
        let url = self.device_url(None, &["commands"]);
        let mut request = self.http.get(url);
        if let Some(ack) = ack {
            request = request.query(&[("ack", ack)]);
        }
        let body = self.send(request, token).await?;
        serde_json::from_slice(&body).map_err(|err| ClientError::BadAnswer {
            detail: format!("not a list of commands ({err})"),
        })
    }

    /// `{endpoint}/v1/projects/…/devices/{device}` with `:verb` or further segments; each id
    /// is percent-encoded as a path segment (ids may hold `%` and `+`).
    fn device_url(&self, verb: Option<&str>, tail: &[&str]) -> Url {
        url_of(&self.endpoint, &self.device, verb, tail)
    }

    async fn send(&self, request: RequestBuilder, token: &str) -> Result<Vec<u8>, ClientError> {
        let request = request
            .bearer_auth(token)
            .header("cache-control", "no-cache");
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        let status = response.status();
        let url = without_query(response.url());
        let retry_after = retry_after(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|err| self.unreachable(&err))?;
        if status != StatusCode::OK {
            return Err(refusal(url, status, &body, retry_after));
        }
        Ok(body.to_vec())
    }

    fn unreachable(&self, err: &reqwest::Error) -> ClientError {
        let reason = if err.is_timeout() {
            format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
        } else {
            innermost_cause(err)
        };
        ClientError::Unreachable {
            url: without_query(&self.endpoint),
            reason,
        }
    }
}

/// Who signs a request for a device behind a gateway.
#[derive(Debug, Clone, Copy)]
pub enum SignedBy<'a> {
    /// The device itself, with this token.
    Child(&'a str),
    /// The gateway, with this token.
    Gateway(&'a str),
}

/// `{endpoint}/v1/projects/…/devices/{device}` of `name`, with `:verb` or further segments.
fn url_of(endpoint: &Url, name: &DeviceName, verb: Option<&str>, tail: &[&str]) -> Url {
    let registry = &name.registry;
    let device = match verb {
        Some(verb) => format!("{}:{verb}", name.device),
        None => name.device.to_string(),
    };
    let mut url = endpoint.clone();
    url.set_query(None);
    url.set_fragment(None);
    let has_version = url.path().trim_end_matches('/').ends_with("/v1");
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty();
        if !has_version {
            path.push("v1");
        }
        path.extend(["projects", registry.project.as_str(), "locations"])
            .extend([registry.location.as_str(), "registries"])
            .extend([registry.registry.as_str(), "devices", device.as_str()])
            .extend(tail);
    }
    url
}

/// Google's error body when the answer is one, otherwise the status and the start of the body.
fn refusal(
    url: String,
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> ClientError {
    if let Ok(google) = serde_json::from_slice::<ErrorBody>(body) {
        let reason = google.error.error_info().map(|info| info.reason);
        return ClientError::Refused {
            status: google.error.status.name(),
            reason,
            message: google.error.message,
            http: status,
            retry_after,
        };
    }
    let text = String::from_utf8_lossy(body);
    ClientError::Http {
        url,
        status,
        body: text.chars().take(200).collect::<String>().trim().to_owned(),
        retry_after,
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the bridge, and a proxy sending
/// one just gets the ordinary backoff).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn parse_config(body: &[u8]) -> Result<ConfigResponse, ClientError> {
    serde_json::from_slice(body).map_err(|err| ClientError::BadAnswer {
        detail: format!("not a config ({err})"),
    })
}

fn without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.as_str().trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests;
