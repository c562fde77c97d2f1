//! Arbitrary bytes as the body of an HTTP `:publishEvent` or `:setState`, decoded the way the
//! device API does (headers, gzip, JSON, base64 `binary_data`). The first byte picks the call,
//! the `Content-Type` and `Content-Encoding` headers, and whether the target gzips the rest
//! itself (so fuzzed JSON also travels the gzip path whole); the rest is the body.
//!
//! Asserts: no panic; the verdict is deterministic; a decoded body, written again as the device
//! agent writes it (`binary_data` in standard base64), decodes to the same payload, subfolder
//! and `gatewayInfo`; the same plain body sent gzipped decodes to the same result; a refusal
//! has one of the known reasons.

#![no_main]

use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};
use ingest::http::device::{DecodedBody, decode_device_body};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use shared::proto3::encode_base64;

/// Small, so bodies over the cap (and gzip bombs) are reached too.
const CAP: usize = 4096;

const REASONS: &[&str] = &[
    "unsupported_media_type",
    "too_large",
    "bad_gzip",
    "bad_json",
    "missing_field",
    "bad_base64",
];

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("Application/JSON; charset=utf-8"),
    Some("text/plain"),
];
const ENCODINGS: &[Option<&str>] = &[None, Some("gzip"), Some("identity"), Some("br")];

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

fn headers(content_type: Option<&str>, encoding: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = content_type {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(value).expect("a header"),
        );
    }
    if let Some(value) = encoding {
        headers.insert(
            CONTENT_ENCODING,
            HeaderValue::from_str(value).expect("a header"),
        );
    }
    headers
}

/// The body the device agent would send for `decoded`.
fn written_again(set_state: bool, decoded: &DecodedBody) -> Vec<u8> {
    let data = Value::String(encode_base64(&decoded.data));
    let mut body = if set_state {
        json!({ "state": { "binary_data": data } })
    } else {
        let mut fields = Map::new();
        fields.insert("binary_data".into(), data);
        if let Some(sub_folder) = &decoded.sub_folder {
            fields.insert("sub_folder".into(), sub_folder.clone().into());
        }
        Value::Object(fields)
    };
    if let Some(info) = &decoded.gateway_info {
        body["gatewayInfo"] = serde_json::to_value(info).expect("GatewayInfo serializes");
    }
    serde_json::to_vec(&body).expect("JSON serializes")
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let set_state = pick & 1 == 1;
    let content_type = CONTENT_TYPES[usize::from(pick >> 1) & 3];
    let self_gzip = pick & 0x80 != 0;
    let (raw, encoding) = if self_gzip {
        (gzip(body), Some("gzip"))
    } else {
        (body.to_vec(), ENCODINGS[usize::from(pick >> 3) & 3])
    };
    let sent = headers(content_type, encoding);
    let verdict = decode_device_body(set_state, &sent, raw.clone(), CAP);
    assert_eq!(
        verdict,
        decode_device_body(set_state, &sent, raw, CAP),
        "not deterministic"
    );
    match verdict {
        Ok(decoded) => {
            let json_headers = headers(Some("application/json"), None);
            let again = written_again(set_state, &decoded);
            if again.len() <= CAP {
                assert_eq!(
                    decode_device_body(set_state, &json_headers, again, CAP).as_ref(),
                    Ok(&decoded),
                    "written again"
                );
            }
            // The plain JSON (whatever the encoding that carried it) is the same gzipped.
            if self_gzip || encoding != Some("gzip") {
                let zipped = gzip(body);
                if zipped.len() <= CAP && body.len() <= CAP {
                    let gz_headers = headers(content_type, Some("gzip"));
                    assert_eq!(
                        decode_device_body(set_state, &gz_headers, zipped, CAP).as_ref(),
                        Ok(&decoded),
                        "the same body gzipped"
                    );
                }
            }
        }
        Err(reason) => assert!(REASONS.contains(&reason), "{reason}"),
    }
});
