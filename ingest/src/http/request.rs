//! Reading requests the way Google's REST front end does: JSON bodies whose errors name the field
//! at fault, query parameters in camelCase or snake_case, repeated or comma-separated lists, and
//! field masks. Every failure is an [`ApiError`] in Google's shape, never axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_LENGTH;
use serde::de::DeserializeOwned;
use shared::Code;

use super::admin::MAX_BODY_BYTES;
use super::error::ApiError;

/// A JSON body parsed into `T`; a malformed body or a field of the wrong type is a
/// `400 INVALID_ARGUMENT` naming the field, an oversized body a `413`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // A `Content-Length` over the limit is refused before any of the body is read, so a
        // caller cannot make the connection wait for megabytes it will refuse anyway.
        let announced = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::new(
                    Code::InvalidArgument,
                    format!("could not read the request body: {rejection}"),
                )
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        Code::InvalidArgument,
        "request body is too large for the admin API (limit 1 MiB)",
    )
    .with_http_status(StatusCode::PAYLOAD_TOO_LARGE)
}

/// Parses JSON, naming the field path of the first error.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return parse_json(b"{}");
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() || path == "." {
            ApiError::new(
                Code::InvalidArgument,
                format!("request body is not valid JSON: {inner}"),
            )
        } else {
            ApiError::invalid_field(&path, format!("invalid value: {inner}"))
        }
    })?;
    de.end().map_err(|err| {
        ApiError::new(
            Code::InvalidArgument,
            format!("request body is not valid JSON: {err}"),
        )
    })?;
    Ok(value)
}

/// Query parameters, with snake_case names folded to camelCase (`page_size` = `pageSize`).
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .map(|(k, v)| (snake_to_camel(&k), v.into_owned()))
            .collect();
        Self(pairs)
    }

    /// The first value of a parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter; comma-separated values are split too.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// A non-negative integer parameter, 0 when absent.
    pub fn number(&self, name: &str) -> Result<usize, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(0),
            Some(text) => text.parse().map_err(|_| {
                ApiError::invalid_field(name, format!("`{text}` is not a non-negative integer"))
            }),
        }
    }
}

/// `device_ack_time` → `deviceAckTime`; camelCase passes through unchanged.
pub fn snake_to_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for ch in name.chars() {
        if ch == '_' {
            upper = true;
        } else if upper {
            out.extend(ch.to_uppercase());
            upper = false;
        } else {
            out.push(ch);
        }
    }
    out
}

/// The paths of a field mask parameter (`updateMask` or `fieldMask`), in camelCase.
pub fn mask_paths(query: &Query, name: &str) -> Vec<String> {
    query.all(name).into_iter().map(snake_to_camel).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_names_fold_to_camel_case() {
        assert_eq!(snake_to_camel("page_size"), "pageSize");
        assert_eq!(snake_to_camel("pageSize"), "pageSize");
        assert_eq!(
            snake_to_camel("state_notification_config.pubsub_topic_name"),
            "stateNotificationConfig.pubsubTopicName"
        );
    }

    #[test]
    fn repeated_and_comma_separated_values_are_both_lists() {
        let q = Query::parse(Some("device_ids=a1x,b2y&deviceIds=c3z&pageSize=5"));
        assert_eq!(q.all("deviceIds"), vec!["a1x", "b2y", "c3z"]);
        assert_eq!(q.number("pageSize").unwrap(), 5);
        assert_eq!(q.number("missing").unwrap(), 0);
        let err = Query::parse(Some("pageSize=-1"))
            .number("pageSize")
            .unwrap_err();
        assert!(err.message().starts_with("pageSize:"), "{}", err.message());
    }

    #[test]
    fn json_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        struct Body {
            #[allow(dead_code)]
            blocked: Option<bool>,
        }
        let err = parse_json::<Body>(br#"{"blocked": "yes"}"#).unwrap_err();
        assert!(err.message().starts_with("blocked:"), "{}", err.message());
        let err = parse_json::<Body>(b"{not json").unwrap_err();
        assert!(
            err.message().contains("not valid JSON"),
            "{}",
            err.message()
        );
        let err = parse_json::<Body>(b"{} trailing").unwrap_err();
        assert!(
            err.message().contains("not valid JSON"),
            "{}",
            err.message()
        );
        assert!(
            parse_json::<Body>(b"").is_ok(),
            "an empty body reads as {{}}"
        );
    }
}
