//! The console's client of the admin API: requests built as a CLI would send them, with the
//! caller's credentials, and answered by the admin router in process (no socket). Every rule the
//! API applies (who may do what, what a valid change is) therefore applies to the console as it
//! is, and a refusal comes back as the API's own status and message, which the pages show.

use axum::Router;
use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower::ServiceExt as _;

/// The largest answer the console reads: a page of devices is far smaller.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// What a path segment must escape: everything that would end or change the segment, and `%`
/// itself, which device ids may hold.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\');

/// `segment` escaped for a URL path.
pub(super) fn escape(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// A refusal (or failure) of the admin API, as the console shows it.
#[derive(Debug, Clone)]
pub(super) struct Refusal {
    /// The HTTP status the API answered.
    pub status: StatusCode,
    /// The canonical code's name (`ABORTED`, `PERMISSION_DENIED` …).
    pub code: String,
    /// The API's message.
    pub message: String,
}

impl Refusal {
    /// A refusal the console makes itself, before calling the API (a form it cannot read).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_ARGUMENT".into(),
            message: message.into(),
        }
    }
}

/// The admin API, called as one caller.
#[derive(Debug, Clone)]
pub(super) struct Api {
    router: Router,
    credentials: Vec<(HeaderName, HeaderValue)>,
    /// `/v1/projects/{p}/locations/{l}`, escaped.
    location: String,
}

impl Api {
    /// The API at `project` and `location`, called with `credentials` (headers the admin API's
    /// authentication reads).
    pub fn new(
        router: Router,
        credentials: Vec<(HeaderName, HeaderValue)>,
        project: &str,
        location: &str,
    ) -> Self {
        Self {
            router,
            credentials,
            location: format!(
                "/v1/projects/{}/locations/{}",
                escape(project),
                escape(location)
            ),
        }
    }

    /// The credentials a request carries to the admin API: the bearer token of a signed-in
    /// session, else the caller's own `Authorization` headers (behind Cloud Run's IAM, the ID
    /// token Cloud Run verified; on loopback, none is needed).
    pub fn credentials(token: Option<&str>, headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        if let Some(token) = token {
            return HeaderValue::from_str(&format!("Bearer {token}"))
                .map(|value| vec![(AUTHORIZATION, value)])
                .unwrap_or_default();
        }
        let serverless = HeaderName::from_static("x-serverless-authorization");
        [AUTHORIZATION, serverless]
            .into_iter()
            .filter_map(|name| Some((name.clone(), headers.get(&name)?.clone())))
            .collect()
    }

    /// `GET {location}{path}`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Refusal> {
        self.call(Method::GET, path, None).await
    }

    /// `POST {location}{path}` with a JSON body.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: Value) -> Result<T, Refusal> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `PATCH {location}{path}` with a JSON body.
    pub async fn patch<T: DeserializeOwned>(&self, path: &str, body: Value) -> Result<T, Refusal> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    /// `DELETE {location}{path}`.
    pub async fn delete(&self, path: &str) -> Result<Value, Refusal> {
        self.call(Method::DELETE, path, None).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, Refusal> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.location));
        for (name, value) in &self.credentials {
            request = request.header(name, value);
        }
        let body = match body {
            Some(json) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let request = request.body(body).map_err(|e| broken(e.to_string()))?;
        // The router's service never fails: every outcome is a response.
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| broken(e.to_string()))?;
        if !status.is_success() {
            return Err(refusal(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| broken(e.to_string()))
    }
}

/// Google's error body, read into a [`Refusal`]; an answer that is not one still says its status.
fn refusal(status: StatusCode, body: &[u8]) -> Refusal {
    let error = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|json| json.get("error").cloned());
    let text = |field: &str| {
        error
            .as_ref()
            .and_then(|e| e.get(field)?.as_str().map(str::to_owned))
    };
    Refusal {
        status,
        code: text("status").unwrap_or_else(|| status.as_str().to_owned()),
        message: text("message").unwrap_or_else(|| format!("the admin API answered {status}")),
    }
}

/// The console could not talk to the API it holds in process: a bug, logged once.
fn broken(why: String) -> Refusal {
    tracing::error!(error = %why, "the console could not call the admin API");
    Refusal {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "INTERNAL".into(),
        message: "internal error; the service log has the details".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_keep_ids_intact() {
        assert_eq!(escape("dev-1.a_b~c+d"), "dev-1.a_b~c+d");
        assert_eq!(escape("50%"), "50%25");
        assert_eq!(escape("a/b?c#d"), "a%2Fb%3Fc%23d");
    }

    #[test]
    fn a_refusal_carries_the_apis_words() {
        let body = br#"{"error":{"code":409,"message":"the config is at version 3, not 2","status":"ABORTED"}}"#;
        let refusal = refusal(StatusCode::CONFLICT, body);
        assert_eq!(refusal.code, "ABORTED");
        assert_eq!(refusal.message, "the config is at version 3, not 2");
        let refusal = super::refusal(StatusCode::BAD_GATEWAY, b"<html>");
        assert!(refusal.message.contains("502"), "{}", refusal.message);
    }
}
