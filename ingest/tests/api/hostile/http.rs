//! Hostile HTTP on the device port, mostly as raw bytes on a socket: heads that never end or
//! never start, oversized heads, URIs and bodies, request smuggling, broken chunking and gzip,
//! bodies that are not what they claim, paths and methods that do not exist.

use std::io::Write as _;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{
    DEADLINE, DEVICE, OTHER, REQUEST_TIMEOUT, Reply, Suite, Target, answered, closed_within,
    raw_http, refused, status_or_close,
};

/// Long enough for any answer the service gives at once.
const PROMPT: Duration = Duration::from_secs(5);
/// Past the head deadline, with room for a busy machine.
const PAST_DEADLINE: Duration = Duration::from_secs(6);

/// A request head for the normal device's publish with `extra` header lines and `body`.
fn publish_request(target: &Target, extra: &str, body: &[u8]) -> Vec<u8> {
    let path = format!(
        "/v1/projects/{}/locations/{}/registries{}:publishEvent",
        crate::support::PROJECT,
        crate::support::REGION,
        Target::device_path(DEVICE)
    );
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n{extra}\r\n",
        target.device_addr,
        target.signer.fresh()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// The normal device's publish with `body` sent under `Content-Encoding: {encoding}`.
fn encoded_request(target: &Target, encoding: &str, body: &[u8]) -> Vec<u8> {
    let headers = format!(
        "Content-Type: application/json\r\nContent-Encoding: {encoding}\r\nContent-Length: {}\r\n",
        body.len()
    );
    publish_request(target, &headers, body)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A socket that sent `bytes` and then nothing: closed by the head deadline?
async fn stalls(target: &Target, bytes: &[u8]) -> Result<(), String> {
    let mut stream = TcpStream::connect(target.device_addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    match closed_within(&mut stream, PAST_DEADLINE).await? {
        after if after >= DEADLINE - Duration::from_millis(200) => Ok(()),
        after => Err(format!("closed after {after:?}, before the deadline")),
    }
}

/// A head sent one byte every 300 ms: closed at the deadline, not kept alive by the trickle.
async fn trickles(target: &Target) -> Result<(), String> {
    let mut stream = TcpStream::connect(target.device_addr).await.unwrap();
    let head = b"POST /v1/projects/p/locations/l/registries/r/devices/d:publishEvent HTTP/1.1\r\n";
    let started = std::time::Instant::now();
    for byte in head.iter().cycle() {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        if started.elapsed() > PAST_DEADLINE {
            return Err(format!("still reading the head after {PAST_DEADLINE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

/// A request smuggling a second one behind a body whose length the two headers disagree on:
/// at most one answer (a refusal) comes back before the close, never one for the smuggled GET.
async fn answers_once(addr: std::net::SocketAddr, request: &[u8]) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(PROMPT, stream.read_to_end(&mut seen)).await;
    let text = String::from_utf8_lossy(&seen);
    let answers = text.matches("HTTP/1.1 ").count();
    match (answers, text.starts_with("HTTP/1.1 400")) {
        (0, _) | (1, true) => Ok(()),
        _ => Err(format!(
            "{answers} answers, the smuggled request was served: {text:.300}"
        )),
    }
}

/// Writes `requests` in one go and counts the `200`s read back, which must be `expected`.
async fn pipelined_answers(
    addr: std::net::SocketAddr,
    requests: &[u8],
    expected: usize,
) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(requests).await.unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + PROMPT;
    let count = |seen: &[u8]| seen.windows(12).filter(|w| w == b"HTTP/1.1 200").count();
    while count(&seen) < expected {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let ok = count(&seen);
    (ok == expected).then_some(()).ok_or(format!(
        "{ok} of {expected} pipelined publishes answered 200"
    ))
}

pub async fn run(mut suite: Suite) -> usize {
    let t = &suite.target;
    let addr = t.device_addr;
    let host = format!("Host: {addr}\r\n");
    let json_type = "Content-Type: application/json\r\n";
    let event = br#"{"binaryData":"aGk="}"#;

    let outcome = stalls(t, b"").await;
    suite
        .case("a socket that never sends a byte", outcome)
        .await;
    let t = &suite.target;
    let outcome = stalls(t, b"POST /v1/x HTTP/1.1\r\nHost: a\r\n").await;
    suite.case("a head that never ends", outcome).await;
    let t = &suite.target;
    let outcome = trickles(t).await;
    suite
        .case("a head trickled a byte at a time", outcome)
        .await;

    let t = &suite.target;
    let big_header = format!("X-Pad: {}\r\n", "a".repeat(200 * 1024));
    let reply = raw_http(addr, &publish_request(t, &big_header, b""), PROMPT).await;
    let outcome = status_or_close(&reply, &[431]);
    suite.case("a 200 KB header", outcome).await;

    let t = &suite.target;
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let reply = raw_http(addr, &publish_request(t, &many, b""), PROMPT).await;
    let outcome = status_or_close(&reply, &[431]);
    suite.case("500 header lines", outcome).await;

    let uri = format!("GET /{} HTTP/1.1\r\n{host}\r\n", "x".repeat(100 * 1024));
    let reply = raw_http(addr, uri.as_bytes(), PROMPT).await;
    let outcome = status_or_close(&reply, &[414]);
    suite.case("a 100 KB URI", outcome).await;

    let reply = raw_http(
        addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        PROMPT,
    )
    .await;
    let outcome = status_or_close(&reply, &[400]);
    suite
        .case("a TLS ClientHello on the plain port", outcome)
        .await;

    let reply = raw_http(addr, b"GET / HTTP/9.9\r\n\r\n", PROMPT).await;
    let outcome = status_or_close(&reply, &[400]);
    suite.case("HTTP/9.9", outcome).await;

    let reply = raw_http(addr, b"\0\0\0\0\0\0\0\0\r\n\r\n", PROMPT).await;
    let outcome = status_or_close(&reply, &[400]);
    suite.case("NUL bytes for a request line", outcome).await;

    let t = &suite.target;
    let smuggle = publish_request(
        t,
        &format!("{json_type}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n"),
        b"0\r\n\r\nGET /v1/projects HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let outcome = answers_once(addr, &smuggle).await;
    suite
        .case("Content-Length and Transfer-Encoding together", outcome)
        .await;

    let t = &suite.target;
    let two_lengths = publish_request(
        t,
        &format!("{json_type}Content-Length: 21\r\nContent-Length: 5\r\n"),
        event,
    );
    let reply = raw_http(addr, &two_lengths, PROMPT).await;
    let outcome = status_or_close(&reply, &[400]);
    suite.case("two different Content-Lengths", outcome).await;

    let t = &suite.target;
    let bad_chunk = publish_request(
        t,
        &format!("{json_type}Transfer-Encoding: chunked\r\n"),
        b"zz\r\nhello\r\n0\r\n\r\n",
    );
    let reply = raw_http(addr, &bad_chunk, PROMPT).await;
    let outcome = status_or_close(&reply, &[400]);
    suite.case("a chunk size that is not hex", outcome).await;

    let t = &suite.target;
    let short = publish_request(t, &format!("{json_type}Content-Length: 1000\r\n"), event);
    let reply = raw_http(addr, &short, REQUEST_TIMEOUT * 3).await;
    let outcome = answered(&reply, 504, &["DEADLINE_EXCEEDED"]);
    suite
        .case("a body shorter than its Content-Length", outcome)
        .await;

    let t = &suite.target;
    let length = format!("{json_type}Content-Length: {}\r\n", 8 << 20);
    let huge = publish_request(t, &length, &[b' '; 4096]);
    let reply = raw_http(addr, &huge, PROMPT).await;
    let outcome = answered(&reply, 413, &["larger than"]);
    suite
        .case("an 8 MB Content-Length, refused before the body", outcome)
        .await;

    let t = &suite.target;
    let bomb = gzip(&vec![b' '; 64 * 1024 * 1024]);
    let zipped = encoded_request(t, "gzip", &bomb);
    let reply = raw_http(addr, &zipped, PROMPT).await;
    let outcome = answered(&reply, 413, &[]);
    suite.case("a gzip bomb (64 MB of spaces)", outcome).await;

    let t = &suite.target;
    let not_gzip = encoded_request(t, "gzip", event);
    let reply = raw_http(addr, &not_gzip, PROMPT).await;
    let outcome = answered(&reply, 400, &["gzip"]);
    suite
        .case("Content-Encoding gzip on a plain body", outcome)
        .await;

    let t = &suite.target;
    let brotli = encoded_request(t, "br", event);
    let reply = raw_http(addr, &brotli, PROMPT).await;
    let outcome = match reply {
        Reply::Answer(400 | 415, ref body) if body.contains("br") => Ok(()),
        other => Err(format!(
            "expected 415/400 naming the encoding, got {other:?}"
        )),
    };
    suite.case("an unsupported Content-Encoding", outcome).await;

    let t = &suite.target;
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep = publish_request(
        t,
        &format!("{json_type}Content-Length: {}\r\n", nested.len()),
        nested.as_bytes(),
    );
    let reply = raw_http(addr, &deep, PROMPT).await;
    let outcome = answered(&reply, 400, &["INVALID_ARGUMENT"]);
    suite.case("JSON nested 100,000 deep", outcome).await;

    let t = &suite.target;
    let not_utf8 = b"{\"binaryData\":\"\xff\xfe\"}";
    let garbled = publish_request(
        t,
        &format!("{json_type}Content-Length: {}\r\n", not_utf8.len()),
        not_utf8,
    );
    let reply = raw_http(addr, &garbled, PROMPT).await;
    let outcome = answered(&reply, 400, &["INVALID_ARGUMENT"]);
    suite.case("a JSON body that is not UTF-8", outcome).await;

    let t = &suite.target;
    let token = t.signer.fresh();
    let answer = t
        .publish(
            DEVICE,
            &token,
            json!({"binaryData": "aGk=", "subFolder": "../../etc"}),
        )
        .await;
    // A subfolder is a string attribute, never a path: IoT Core took any, and so do we.
    let outcome = (answer.0 == 200)
        .then_some(())
        .ok_or(format!("expected 200, got {} {}", answer.0, answer.1));
    suite.add_events(1);
    suite
        .case("a subFolder of ../../etc (only a name: accepted)", outcome)
        .await;

    let t = &suite.target;
    let answer = t
        .publish(
            DEVICE,
            &token,
            json!({"binaryData": "aGk=", "subFolder": "a".repeat(10_000)}),
        )
        .await;
    let outcome = refused(&answer, 400, &["sub_folder", "1024 bytes"]);
    suite.case("a 10,000-character subFolder", outcome).await;

    let t = &suite.target;
    let answer = t
        .publish(OTHER, &token, json!({"binaryData": "aGk="}))
        .await;
    let outcome = refused(&answer, 401, &["signature"]);
    suite
        .case("a publish on another device's path", outcome)
        .await;

    let t = &suite.target;
    let url = t.device_url(&format!("{}:publishEvent", Target::device_path(DEVICE)));
    let answer = t.send(t.client().get(url).bearer_auth(&token)).await;
    let outcome = match answer.0 {
        404 | 405 => Ok(()),
        other => Err(format!("expected 405/404, got {other} {}", answer.1)),
    };
    suite.case("GET on publishEvent", outcome).await;

    let t = &suite.target;
    let answer = t
        .send(t.client().get(t.device_url("")).bearer_auth(&token))
        .await;
    let outcome = refused(&answer, 404, &["NOT_FOUND"]);
    suite
        .case("the admin API's registry list on the device port", outcome)
        .await;

    let t = &suite.target;
    let url = t.device_url(&format!(
        "{}:modifyCloudToDeviceConfig",
        Target::device_path(DEVICE)
    ));
    let answer = t
        .send(
            t.client()
                .post(url)
                .bearer_auth(&token)
                .json(&json!({"binaryData": "aGk="})),
        )
        .await;
    let outcome = match answer.0 {
        404 | 405 => Ok(()),
        other => Err(format!("expected 404, got {other} {}", answer.1)),
    };
    suite
        .case("an admin method on the device port", outcome)
        .await;

    let t = &suite.target;
    let url = format!(
        "http://{addr}/v1/projects/%2e%2e/locations/x/registries/%2F/devices/..%2f:publishEvent"
    );
    let answer = t
        .send(
            t.client()
                .post(url)
                .bearer_auth(&token)
                .json(&json!({"binaryData": "aGk="})),
        )
        .await;
    let outcome = match answer.0 {
        400 | 401 | 404 => Ok(()),
        other => Err(format!("expected 400/404, got {other} {}", answer.1)),
    };
    suite
        .case("percent-encoded dots and slashes in the path", outcome)
        .await;

    let t = &suite.target;
    let mut pipelined = Vec::new();
    for _ in 0..50 {
        pipelined.extend(publish_request(
            t,
            &format!("{json_type}Content-Length: {}\r\n", event.len()),
            event,
        ));
    }
    let outcome = pipelined_answers(addr, &pipelined, 50).await;
    suite.add_events(50);
    suite
        .case("50 pipelined publishes on one connection", outcome)
        .await;

    suite.finish()
}
