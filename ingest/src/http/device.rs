//! The HTTP device bridge, as IoT Core's `cloudiotdevice.googleapis.com/v1` served it: devices
//! `POST …/devices/{device}:publishEvent` and `:setState` and `GET …/devices/{device}/config`,
//! each with `Authorization: Bearer <JWT>`. `{device}` may be the id or the numeric id; the token
//! must prove that very device. Success is exactly `200` (`{}` for the two POSTs), and only after
//! Pub/Sub has the message; every refusal is Google's JSON error body naming its cause.
//!
//! Each handler reads the path, has the [`Bridge`] prove and admit the device (token, registry
//! switch, rate limit), reads the body, then hands over to the [`DeviceSession`] it got back, which
//! does the work every protocol shares.
//!
//! Answers where IoT Core left room to choose:
//! - no or a malformed `Authorization` header: `401 UNAUTHENTICATED` saying what is missing;
//!   token problems carry the verifier's message (expired, clock ahead, wrong key …);
//! - a device or registry that does not exist: `404 NOT_FOUND`; a blocked device, or a registry
//!   with `httpConfig.httpEnabledState: HTTP_DISABLED`: `403 PERMISSION_DENIED`;
//! - a payload above its limit, or a body too big to hold one: `413` with `INVALID_ARGUMENT`, not
//!   `RESOURCE_EXHAUSTED`, because resending the same payload can never succeed and Google's
//!   client libraries retry `RESOURCE_EXHAUSTED`;
//! - `Content-Type` other than `application/json` (any parameters): `415` with
//!   `INVALID_ARGUMENT`; no `Content-Type` at all is read as JSON. `Content-Encoding` may be
//!   `gzip` or absent, anything else is a `415`;
//! - a device over its request or state rate: `429 RESOURCE_EXHAUSTED` with `Retry-After`;
//! - Pub/Sub unreachable, or the registry store down: `503 UNAVAILABLE`, retry later; a topic
//!   that does not exist: `400 FAILED_PRECONDITION`; Pub/Sub refusing the message for a lasting
//!   reason: `500 INTERNAL` (its words go to the log, not the device);
//! - `local_version` above the latest config: `400 OUT_OF_RANGE`; any version up to the latest
//!   gets the latest config in full (IoT Core sent data only when newer; sending it always means
//!   a client that applies whatever it receives never applies an empty config);
//! - a body without `binary_data` (or `state.binary_data`): `400 INVALID_ARGUMENT`, since unknown
//!   fields are ignored and a misspelt field would otherwise publish an empty payload;
//! - a POST without `:publishEvent` or `:setState`, or any other path: `404 NOT_FOUND`.
//!
//! A gateway may speak for a device, as IoT Core's `gatewayInfo` let it (`device/gateway.rs`):
//! with `delegatedDeviceId` the path and token are the gateway's and the call is carried out for
//! the named device; with `gatewayId` they are the device's own and the gateway is only
//! recorded, once the bridge has checked it may speak for the device. Either way the device's
//! `lastAccessedGatewayId` becomes the gateway. Without `gatewayInfo` nothing changes.
//!
//! An extension beside IoT Core's calls: `GET …/devices/{device}/commands?ack=N` answers the
//! commands an operator queued for the device with a `ttl` while it was away (`{"commands":
//! [{"id", "binaryData", "subfolder", …}]}`, oldest first), after recording that it has every
//! command up to id N. A device acknowledges what it has carried out with its next call, so a
//! command is delivered at least once; a malformed `ack` is `400`.

mod answer;
mod body;
mod gateway;
mod long_poll;
mod route;

pub use body::{DecodedBody, decode_device_body};
pub use long_poll::LongPoll;

use axum::Json;
use axum::Router;
use axum::body::Body;
use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use hyper::body::Incoming;
use shared::device_api::{CommandsResponse, ConfigResponse, PublishEventRequest, SetStateRequest};
use shared::{Code, DeviceName};

use self::answer::{DeviceApiError, HttpRefusal};
use self::body::{event_parts, read_json, state_payload};
use self::gateway::acting;
use self::long_poll::{config_after, wait_param};
use self::route::{DeviceRoute, Resource};
use crate::bridge::{Bridge, DeviceSession, Limits, Protocol};
use crate::http::request::Query;

/// What the device routes share: the bridge, and for `/config`'s long-poll its waiters.
#[derive(Clone)]
struct DeviceApi {
    bridge: Bridge,
    long_poll: LongPoll,
}

/// The device listener: the device API, whose paths [`DeviceRoute`] reads, beside `others`
/// (`/mqtt`, `/healthz` …). Device calls (`/v1/…`) go straight to the device API, past axum's
/// router, whose routing of every request (a lookup, a boxed service cloned, two boxed futures)
/// cost several percent of a publish; anything else goes to `others`, and what they do not
/// serve to the device API's `404`.
pub fn service(bridge: Bridge, long_poll: LongPoll, others: Router) -> DeviceService {
    let api = DeviceApi { bridge, long_poll };
    let router = Router::new()
        .fallback(dispatch)
        .with_state(api.clone())
        .merge(others);
    DeviceService { api, router }
}

/// See [`service`].
#[derive(Clone)]
pub struct DeviceService {
    api: DeviceApi,
    router: Router,
}

impl std::fmt::Debug for DeviceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceService").finish_non_exhaustive()
    }
}

impl tower::Service<Request<Incoming>> for DeviceService {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        if request.uri().path().starts_with("/v1/") {
            let api = self.api.clone();
            return Box::pin(async move { Ok(dispatch(State(api), request.map(Body::new)).await) });
        }
        Box::pin(self.router.call(request))
    }
}

/// Sends a request to its call: `POST …{device}:method`, `GET …/config`, `GET …/commands`.
async fn dispatch(State(api): State<DeviceApi>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(route) = DeviceRoute::parse(parts.uri.path()) else {
        return not_found(&api.bridge).into_response();
    };
    let headers = &parts.headers;
    let query = parts.uri.query();
    match (&parts.method, route.resource) {
        (&Method::POST, Resource::Device) => device_method(&api.bridge, route, headers, body)
            .await
            .into_response(),
        (&Method::GET | &Method::HEAD, Resource::Config) => {
            config(&api, route, query, headers).await.into_response()
        }
        (&Method::GET | &Method::HEAD, Resource::Commands) => {
            commands(&api.bridge, route, query, headers)
                .await
                .into_response()
        }
        _ => method_not_allowed(&api.bridge).into_response(),
    }
}

/// The `:method` calls a device may POST.
#[derive(Debug, Clone, Copy)]
enum DeviceMethod {
    PublishEvent,
    SetState,
}

/// `POST …/devices/{device}:publishEvent` and `:setState`.
async fn device_method(
    bridge: &Bridge,
    route: DeviceRoute<'_>,
    headers: &HeaderMap,
    body: Body,
) -> Result<EmptyObject, DeviceApiError> {
    let (device, method) = split_method(route.device).map_err(|r| r.note(bridge, None))?;
    let name = device_name(bridge, route.registry, device)?;
    let caller = admit(bridge, &name, headers).await?;
    match method {
        DeviceMethod::PublishEvent => publish_event(bridge, caller, headers, body).await?,
        DeviceMethod::SetState => set_state(bridge, caller, headers, body).await?,
    }
    Ok(EmptyObject)
}

/// The `{}` a successful POST answers, as `Json(json!({}))` would send it but without building
/// and serializing a map for every request.
struct EmptyObject;

impl IntoResponse for EmptyObject {
    fn into_response(self) -> Response {
        (
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            "{}",
        )
            .into_response()
    }
}

/// The whole body is checked before `gatewayInfo` is acted on, so a malformed request costs no
/// store reads, and its refusal is the caller's: the caller sent it.
async fn publish_event(
    bridge: &Bridge,
    caller: DeviceSession,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), DeviceApiError> {
    let cap = Limits::http_body_cap(bridge.limits().max_event_bytes);
    let (subfolder, data, via) = read_json::<PublishEventRequest>(headers, body, cap)
        .await
        .and_then(|mut request| {
            let info = request.gateway_info.take();
            let (subfolder, data) = event_parts(request)?;
            Ok((subfolder, data, gateway::from_body(info.as_ref())?))
        })
        .map_err(|r| r.note(bridge, Some(&caller)))?;
    let device = acting(bridge, caller, via).await?;
    Ok(device.publish_event(subfolder.as_deref(), data).await?)
}

async fn set_state(
    bridge: &Bridge,
    caller: DeviceSession,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), DeviceApiError> {
    let cap = Limits::http_body_cap(bridge.limits().max_state_bytes);
    let (data, via) = read_json::<SetStateRequest>(headers, body, cap)
        .await
        .and_then(|mut request| {
            let info = request.gateway_info.take();
            Ok((state_payload(request)?, gateway::from_body(info.as_ref())?))
        })
        .map_err(|r| r.note(bridge, Some(&caller)))?;
    let device = acting(bridge, caller, via).await?;
    Ok(device.set_state(data).await?)
}

/// `GET …/devices/{device}/config?local_version=N[&wait=SECONDS]` (`wait`: [`long_poll`]).
async fn config(
    DeviceApi { bridge, long_poll }: &DeviceApi,
    route: DeviceRoute<'_>,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Json<ConfigResponse>, DeviceApiError> {
    let name = device_name(bridge, route.registry, route.device)?;
    let caller = admit(bridge, &name, headers).await?;
    let (local_version, wait, via) = local_version(query)
        .and_then(|version| Ok((version, wait_param(query)?, gateway::from_query(query)?)))
        .map_err(|r| r.note(bridge, Some(&caller)))?;
    let device = acting(bridge, caller, via).await?;
    let config = config_after(&device, long_poll, local_version, wait).await?;
    Ok(Json(config.into()))
}

/// `GET …/devices/{device}/commands?ack=N`: the pending queued commands, after recording that
/// the device has every one up to N.
async fn commands(
    bridge: &Bridge,
    route: DeviceRoute<'_>,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Json<CommandsResponse>, DeviceApiError> {
    let name = device_name(bridge, route.registry, route.device)?;
    let caller = admit(bridge, &name, headers).await?;
    let (ack, via) = ack_param(query)
        .and_then(|ack| Ok((ack, gateway::from_query(query)?)))
        .map_err(|r| r.note(bridge, Some(&caller)))?;
    let device = acting(bridge, caller, via).await?;
    let commands = device.pending_commands(ack).await?;
    Ok(Json(CommandsResponse { commands }))
}

/// `ack`: the id of the newest command the device has; absent or empty acknowledges nothing.
fn ack_param(query: Option<&str>) -> Result<Option<u64>, HttpRefusal> {
    match Query::parse(query).get("ack") {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            HttpRefusal::invalid(
                "bad_ack",
                format!(
                    "ack: `{}` is not a command id; send the `id` of the newest command the \
                     device has carried out, or leave it out",
                    text.chars().take(32).collect::<String>()
                ),
            )
        }),
    }
}

/// `local_version` (or `localVersion`): absent or empty means 0, the latest.
fn local_version(query: Option<&str>) -> Result<u64, HttpRefusal> {
    match Query::parse(query).get("localVersion") {
        None | Some("") => Ok(0),
        Some(text) => text.parse().map_err(|_| {
            HttpRefusal::invalid(
                "bad_local_version",
                format!("local_version: `{text}` is not a non-negative integer"),
            )
        }),
    }
}

/// `dev-1:publishEvent` → the device segment and the call.
fn split_method(segment: &str) -> Result<(&str, DeviceMethod), HttpRefusal> {
    let unknown = |what: String| {
        HttpRefusal::new(
            Code::NotFound,
            "unknown_method",
            format!(
                "{what}; devices POST to …/devices/{{device}}:publishEvent or \
                 …/devices/{{device}}:setState"
            ),
        )
    };
    let Some((device, method)) = segment.split_once(':') else {
        return Err(unknown("a POST on a device needs a `:method`".into()));
    };
    match method {
        "publishEvent" => Ok((device, DeviceMethod::PublishEvent)),
        "setState" => Ok((device, DeviceMethod::SetState)),
        other => Err(unknown(format!(
            "the device API has no `:{}` call",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

/// The device the path names. A segment that does not decode (its escapes are not UTF-8) is
/// refused in Google's error shape, as is a name that is not valid.
fn device_name(
    bridge: &Bridge,
    registry: [&str; 3],
    device: &str,
) -> Result<DeviceName, DeviceApiError> {
    let bad_path = |message: String| HttpRefusal::invalid("bad_path", message).note(bridge, None);
    let parts = [registry[0], registry[1], registry[2], device].map(route::decoded);
    let [Some(project), Some(location), Some(registry), Some(device)] = &parts else {
        return Err(bad_path(
            "the request path cannot be read: a percent-encoded segment is not UTF-8".into(),
        ));
    };
    DeviceName::from_parts(project, location, registry, device)
        .map_err(|err| bad_path(err.to_string()))
}

/// Proves the device with the request's bearer token, checked against the bridge's clock, and
/// admits the request (HTTP switched on for the registry, the device within its rate).
async fn admit(
    bridge: &Bridge,
    name: &DeviceName,
    headers: &HeaderMap,
) -> Result<DeviceSession, DeviceApiError> {
    let token = bearer_token(headers).map_err(|r| r.note(bridge, None))?;
    let now = bridge.clock().now().as_second();
    Ok(bridge.admit(Protocol::Http, name, token, now).await?)
}

/// The token of `Authorization: Bearer <JWT>`; the scheme in any case. Refusals never echo the
/// header, which may hold a token.
fn bearer_token(headers: &HeaderMap) -> Result<&str, HttpRefusal> {
    let unauthenticated =
        |reason, message: &str| HttpRefusal::new(Code::Unauthenticated, reason, message.to_owned());
    let value = headers.get(AUTHORIZATION).ok_or_else(|| {
        unauthenticated(
            "missing_token",
            "the request has no `Authorization` header; every device API call needs \
             `Authorization: Bearer <JWT>` with a token signed by the device's private key",
        )
    })?;
    let text = value.to_str().map_err(|_| {
        unauthenticated(
            "garbled_token",
            "the `Authorization` header is not plain ASCII text; it must be `Bearer <JWT>`",
        )
    })?;
    let text = text.trim();
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthenticated(
            "garbled_token",
            "the `Authorization` header must be `Bearer <JWT>`; its scheme is not `Bearer`",
        ));
    }
    match token.trim() {
        "" => Err(unauthenticated(
            "missing_token",
            "the `Authorization` header has the `Bearer` scheme but no token after it",
        )),
        token => Ok(token),
    }
}

fn not_found(bridge: &Bridge) -> DeviceApiError {
    HttpRefusal::new(
        Code::NotFound,
        "unknown_path",
        "no such device API path; device calls look like \
         /v1/projects/{project}/locations/{region}/registries/{registry}/devices/{device}:publishEvent, \
         …:setState, …/config or …/commands",
    )
    .note(bridge, None)
}

fn method_not_allowed(bridge: &Bridge) -> DeviceApiError {
    HttpRefusal::new(
        Code::Unimplemented,
        "method_not_allowed",
        "this HTTP method is not supported here: devices POST …:publishEvent and …:setState and \
         GET …/config and …/commands",
    )
    .with_http_status(StatusCode::METHOD_NOT_ALLOWED)
    .note(bridge, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        for value in [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER  abc.def.ghi ",
        ] {
            assert_eq!(
                bearer_token(&headers(value)).unwrap(),
                "abc.def.ghi",
                "{value}"
            );
        }
        for value in ["Basic dXNlcjpwYXNz", "abc.def.ghi", "Bearer", "Bearer   "] {
            assert!(bearer_token(&headers(value)).is_err(), "{value}");
        }
        assert!(bearer_token(&HeaderMap::new()).is_err());
    }

    #[tokio::test]
    async fn a_successful_post_answers_an_empty_json_object() {
        let response = EmptyObject.into_response();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 16)
            .await
            .unwrap();
        assert_eq!(&body[..], b"{}");
    }

    #[test]
    fn the_method_is_split_off_the_device_segment() {
        assert!(matches!(
            split_method("dev-1:publishEvent"),
            Ok(("dev-1", DeviceMethod::PublishEvent))
        ));
        assert!(matches!(
            split_method("123:setState"),
            Ok(("123", DeviceMethod::SetState))
        ));
        assert!(split_method("dev-1").is_err());
        assert!(split_method("dev-1:sendCommand").is_err());
    }

    #[test]
    fn local_version_reads_both_spellings() {
        assert_eq!(local_version(None).unwrap(), 0);
        assert_eq!(local_version(Some("local_version=3")).unwrap(), 3);
        assert_eq!(local_version(Some("localVersion=4")).unwrap(), 4);
        assert_eq!(local_version(Some("local_version=")).unwrap(), 0);
        assert!(local_version(Some("local_version=-1")).is_err());
    }

    #[test]
    fn ack_is_a_command_id_or_nothing() {
        assert_eq!(ack_param(None).unwrap(), None);
        assert_eq!(ack_param(Some("ack=")).unwrap(), None);
        assert_eq!(ack_param(Some("ack=12")).unwrap(), Some(12));
        for bad in ["ack=-1", "ack=x", "ack=1.5"] {
            assert!(ack_param(Some(bad)).is_err(), "{bad}");
        }
    }
}
