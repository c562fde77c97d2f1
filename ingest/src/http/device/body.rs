//! Reading a device's request body the way a careful server must: JSON only (a missing
//! `Content-Type` is read as JSON, since some minimal HTTP clients send none; any other type is a
//! `415` that says what to send), at most a cap that fits the largest payload in base64, gzip
//! inflated only up to that same cap so a small bomb cannot fill memory, and the payload fields
//! decoded from base64 in either alphabet. Every failure names the field or header at fault.

use std::io::Read;
use std::pin::Pin;

use axum::body::{Body, HttpBody};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use flate2::read::MultiGzDecoder;
use serde::de::DeserializeOwned;
use shared::device_api::{GatewayInfo, PublishEventRequest, SetStateRequest};

use super::answer::HttpRefusal;
use crate::http::request::parse_json;

/// Reads the body as JSON into `T`, refusing bodies above `cap` bytes (before and after gzip).
pub(super) async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    cap: usize,
) -> Result<T, HttpRefusal> {
    check_content_type(headers)?;
    let gzip = is_gzip(headers)?;
    let raw = read_capped(body, cap).await?;
    decode_json(gzip, raw, cap)
}

/// The part of [`read_json`] after the socket: inflates (when `gzip`) and parses bytes already
/// read within `cap`.
fn decode_json<T: DeserializeOwned>(
    gzip: bool,
    raw: Vec<u8>,
    cap: usize,
) -> Result<T, HttpRefusal> {
    let plain = if gzip { gunzip(&raw, cap)? } else { raw };
    parse(&plain)
}

/// A `publishEvent` or `setState` body as the handlers decode it, without the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBody {
    /// `sub_folder` (publishEvent only).
    pub sub_folder: Option<String>,
    /// The payload, decoded from base64.
    pub data: Vec<u8>,
    /// The `gatewayInfo` beside the fields, not yet checked.
    pub gateway_info: Option<GatewayInfo>,
}

/// Decodes a body of `:publishEvent` (or `:setState` when `set_state`) whose `raw` bytes were
/// read from the socket within `cap`, by the handlers' steps: the headers, gzip, JSON, the
/// base64 payload. A refusal is its stable reason (`bad_json`, `bad_gzip`, `too_large` …).
/// An entry point for the fuzz targets in `fuzz/`; the handlers call the steps themselves.
pub fn decode_device_body(
    set_state: bool,
    headers: &HeaderMap,
    raw: Vec<u8>,
    cap: usize,
) -> Result<DecodedBody, &'static str> {
    let decode = || {
        check_content_type(headers)?;
        let gzip = is_gzip(headers)?;
        if raw.len() > cap {
            return Err(too_large(cap, "the request body is larger than"));
        }
        if set_state {
            let mut request = decode_json::<SetStateRequest>(gzip, raw, cap)?;
            let gateway_info = request.gateway_info.take();
            Ok(DecodedBody {
                sub_folder: None,
                data: state_payload(request)?,
                gateway_info,
            })
        } else {
            let mut request = decode_json::<PublishEventRequest>(gzip, raw, cap)?;
            let gateway_info = request.gateway_info.take();
            let (sub_folder, data) = event_parts(request)?;
            Ok(DecodedBody {
                sub_folder,
                data,
                gateway_info,
            })
        }
    };
    decode().map_err(|refusal: HttpRefusal| refusal.reason())
}

fn parse<T: DeserializeOwned>(json: &[u8]) -> Result<T, HttpRefusal> {
    parse_json(json).map_err(|err| HttpRefusal::invalid("bad_json", err.message()))
}

/// A `publishEvent` body's subfolder and decoded payload: the handler's step and the fuzz
/// target's, in one place.
pub(super) fn event_parts(
    request: PublishEventRequest,
) -> Result<(Option<String>, Vec<u8>), HttpRefusal> {
    let data = decode_payload("binary_data", request.binary_data.as_deref())?;
    Ok((request.sub_folder, data))
}

/// A `setState` body's decoded payload.
pub(super) fn state_payload(request: SetStateRequest) -> Result<Vec<u8>, HttpRefusal> {
    let state = request.state.ok_or_else(|| {
        HttpRefusal::invalid(
            "missing_field",
            "state: required: {\"state\": {\"binary_data\": <base64>}}",
        )
    })?;
    decode_payload("state.binary_data", state.binary_data.as_deref())
}

/// Decodes a base64 payload field; `field` is how the error names it.
pub(super) fn decode_payload(field: &str, value: Option<&str>) -> Result<Vec<u8>, HttpRefusal> {
    let text = value.ok_or_else(|| {
        HttpRefusal::invalid(
            "missing_field",
            format!("{field}: required: the payload, base64-encoded (an empty string for none)"),
        )
    })?;
    shared::proto3::decode_base64(text)
        .map_err(|err| HttpRefusal::invalid("bad_base64", format!("{field}: {err}")))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), HttpRefusal> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let essence = text.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(unsupported(format!(
        "Content-Type `{}` is not supported: the device API reads JSON bodies; send \
         `Content-Type: application/json`",
        shorten(&text)
    )))
}

/// Whether the body is gzip-compressed; any other encoding is refused.
fn is_gzip(headers: &HeaderMap) -> Result<bool, HttpRefusal> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(false);
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let encoding = text.trim();
    if encoding.eq_ignore_ascii_case("gzip") || encoding.eq_ignore_ascii_case("x-gzip") {
        Ok(true)
    } else if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") {
        Ok(false)
    } else {
        Err(unsupported(format!(
            "Content-Encoding `{}` is not supported; send the body uncompressed or with \
             `Content-Encoding: gzip`",
            shorten(encoding)
        )))
    }
}

/// Buffers the body, refusing it as soon as it is known to exceed `cap`.
async fn read_capped(mut body: Body, cap: usize) -> Result<Vec<u8>, HttpRefusal> {
    let cap64 = u64::try_from(cap).unwrap_or(u64::MAX);
    // A declared Content-Length above the cap is refused without reading a byte.
    if body.size_hint().lower() > cap64 {
        return Err(too_large(cap, "the request body is larger than"));
    }
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|err| {
            HttpRefusal::invalid(
                "unreadable_body",
                format!("could not read the request body: {err}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > cap {
                return Err(too_large(cap, "the request body is larger than"));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// Inflates at most `cap` bytes: a bomb is cut off there, not expanded in full.
fn gunzip(raw: &[u8], cap: usize) -> Result<Vec<u8>, HttpRefusal> {
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    MultiGzDecoder::new(raw)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|err| {
            HttpRefusal::invalid(
                "bad_gzip",
                format!("the body says `Content-Encoding: gzip` but is not valid gzip: {err}"),
            )
        })?;
    if out.len() > cap {
        return Err(too_large(cap, "the gzip body inflates to more than"));
    }
    Ok(out)
}

fn too_large(cap: usize, what: &str) -> HttpRefusal {
    HttpRefusal::invalid(
        "too_large",
        format!(
            "{what} {cap} bytes, more than the largest payload this call accepts can need as \
             base64 in JSON"
        ),
    )
    .with_http_status(StatusCode::PAYLOAD_TOO_LARGE)
}

fn unsupported(message: String) -> HttpRefusal {
    HttpRefusal::invalid("unsupported_media_type", message)
        .with_http_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
}

/// Echoes a header value back without letting a huge one bloat the answer.
fn shorten(text: &str) -> String {
    const MAX: usize = 100;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let cut = (0..=MAX)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}…", &text[..cut])
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_gzip_bomb_is_cut_off_at_the_cap() {
        let bomb = gzip(&vec![b'a'; 10 * 1024 * 1024]);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let refusal = gunzip(&bomb, 1024).unwrap_err();
        assert_eq!(
            refusal_status(&refusal),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(gunzip(&gzip(b"{}"), 1024).unwrap(), b"{}");
    }

    #[test]
    fn json_content_types_pass_and_others_are_refused() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, value.parse().unwrap());
            check_content_type(&headers)
        };
        assert!(check_content_type(&HeaderMap::new()).is_ok());
        assert!(with("application/json").is_ok());
        assert!(with("Application/JSON; charset=utf-8").is_ok());
        let refusal = with("text/plain").unwrap_err();
        assert_eq!(
            refusal_status(&refusal),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_refused() {
        let refusal = read_capped(Body::from(vec![0u8; 2048]), 1024)
            .await
            .unwrap_err();
        assert_eq!(
            refusal_status(&refusal),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        let ok = read_capped(Body::from(vec![0u8; 1024]), 1024)
            .await
            .unwrap();
        assert_eq!(ok.len(), 1024);
    }

    #[test]
    fn payloads_decode_from_either_alphabet_and_name_the_field() {
        assert_eq!(
            decode_payload("binary_data", Some("-_8")).unwrap(),
            [0xfb, 0xff]
        );
        assert_eq!(
            decode_payload("binary_data", Some("+/8=")).unwrap(),
            [0xfb, 0xff]
        );
        let refusal = decode_payload("state.binary_data", Some("!!")).unwrap_err();
        assert!(format!("{refusal:?}").contains("state.binary_data"));
        assert!(decode_payload("binary_data", None).is_err());
    }

    #[test]
    fn a_body_read_whole_decodes_by_the_handlers_steps() {
        let json = HeaderMap::new();
        let event = br#"{"binary_data":"aGk=","sub_folder":"a","gatewayInfo":{"gatewayId":"g"}}"#;
        let decoded = decode_device_body(false, &json, event.to_vec(), 1024).unwrap();
        assert_eq!(decoded.data, b"hi");
        assert_eq!(decoded.sub_folder.as_deref(), Some("a"));
        assert_eq!(
            decoded.gateway_info.and_then(|info| info.gateway_id),
            Some("g".to_owned())
        );
        let mut gzipped = HeaderMap::new();
        gzipped.insert(CONTENT_ENCODING, "gzip".parse().unwrap());
        let state = gzip(br#"{"state":{"binaryData":"-_8"}}"#);
        let decoded = decode_device_body(true, &gzipped, state, 1024).unwrap();
        assert_eq!(decoded.data, [0xfb, 0xff]);
        for (set_state, body, reason) in [
            (true, &br#"{"binary_data":"aGk="}"#[..], "missing_field"),
            (false, b"{", "bad_json"),
            (false, br#"{"binary_data":"!"}"#, "bad_base64"),
            (false, &[b' '; 2048], "too_large"),
        ] {
            let refusal = decode_device_body(set_state, &json, body.to_vec(), 1024).unwrap_err();
            assert_eq!(refusal, reason);
        }
    }

    fn refusal_status(refusal: &HttpRefusal) -> Option<StatusCode> {
        refusal.http_status()
    }
}
