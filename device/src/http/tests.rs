//! The ingest client against a one-connection fake server on `127.0.0.1:0`: the request line,
//! headers and JSON body each call sends, and how each kind of answer comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use serde_json::{Value, json};

use super::*;

const PATH: &str = "/v1/projects/demo-project/locations/us-central1/registries/reg-1/devices/dev-1";

/// What the fake server received.
#[derive(Debug)]
struct Seen {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Serves one request with `status` and `body`, and hands back what it received.
async fn serve_once(status: &'static str, body: &'static str) -> (Url, JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let seen = read_request(&mut stream).await;
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(answer.as_bytes()).await.unwrap();
        seen
    });
    (url, task)
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Seen {
    let mut buffer = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the headers ended");
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        body.extend_from_slice(&chunk[..n]);
    }
    Seen {
        request_line,
        headers,
        body,
    }
}

fn device(name: &str) -> DeviceName {
    DeviceName::parse(name).unwrap()
}

fn client(url: Url) -> IngestClient {
    IngestClient::new(url, device(&PATH["/v1/".len()..])).unwrap()
}

#[tokio::test]
async fn an_event_is_posted_as_iot_core_defined_it() {
    let (url, server) = serve_once("200 OK", "{}").await;
    client(url)
        .publish_event("tok.en.sig", b"temp=21.5\xff", Some("sensors/a"))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert_eq!(
        seen.request_line,
        format!("POST {PATH}:publishEvent HTTP/1.1")
    );
    assert_eq!(seen.header("authorization"), Some("Bearer tok.en.sig"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(
        seen.json(),
        json!({"binary_data": URL_SAFE.encode(b"temp=21.5\xff"), "sub_folder": "sensors/a"})
    );
}

#[tokio::test]
async fn an_event_of_a_device_behind_the_gateway_names_it_with_gateway_info() {
    let parent = "/v1/projects/demo-project/locations/us-central1/registries/reg-1/devices";
    // Signed by the gateway: its path, acting for the device.
    let (url, server) = serve_once("200 OK", "{}").await;
    client(url)
        .publish_event_for("sensor-1", SignedBy::Gateway("gw.tok.en"), b"x", None)
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert_eq!(
        seen.request_line,
        format!("POST {PATH}:publishEvent HTTP/1.1")
    );
    assert_eq!(seen.header("authorization"), Some("Bearer gw.tok.en"));
    assert_eq!(
        seen.json(),
        json!({"binary_data": "eA==", "gateway_info": {"delegated_device_id": "sensor-1"}})
    );
    // Signed by the device itself: its own path, naming the gateway.
    let (url, server) = serve_once("200 OK", "{}").await;
    client(url)
        .publish_event_for("sensor-1", SignedBy::Child("s1.tok.en"), b"x", Some("a"))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert_eq!(
        seen.request_line,
        format!("POST {parent}/sensor-1:publishEvent HTTP/1.1")
    );
    assert_eq!(seen.header("authorization"), Some("Bearer s1.tok.en"));
    assert_eq!(
        seen.json(),
        json!({"binary_data": "eA==", "sub_folder": "a", "gateway_info": {"gateway_id": "dev-1"}})
    );
}

#[tokio::test]
async fn an_event_without_a_subfolder_sends_none() {
    let (url, server) = serve_once("200 OK", "{}").await;
    client(url).publish_event("t", b"x", None).await.unwrap();
    assert_eq!(server.await.unwrap().json(), json!({"binary_data": "eA=="}));
}

#[tokio::test]
async fn a_state_is_posted_under_state() {
    let (url, server) = serve_once("200 OK", "{}").await;
    client(url).set_state("t", b"on").await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(seen.request_line, format!("POST {PATH}:setState HTTP/1.1"));
    assert_eq!(seen.json(), json!({"state": {"binary_data": "b24="}}));
}

#[tokio::test]
async fn the_config_is_fetched_and_decoded() {
    let body = r#"{"version":"7","cloudUpdateTime":"2026-01-01T00:00:00Z","binaryData":"eyJmYW4iOiJvbiJ9"}"#;
    let (url, server) = serve_once("200 OK", body).await;
    let config = client(url).get_config("t", 0).await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(
        seen.request_line,
        format!("GET {PATH}/config?local_version=0 HTTP/1.1")
    );
    assert_eq!(config.version, 7);
    assert_eq!(config.binary_data, br#"{"fan":"on"}"#);
    assert_eq!(
        config.cloud_update_time.map(|t| t.to_string()).as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
}

#[tokio::test]
async fn a_google_error_comes_back_as_its_status_and_message() {
    let body = r#"{"error":{"code":401,"message":"the token expired 2 h ago","status":"UNAUTHENTICATED"}}"#;
    let (url, _server) = serve_once("401 Unauthorized", body).await;
    let err = client(url).set_state("t", b"x").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "UNAUTHENTICATED: the token expired 2 h ago"
    );
}

#[tokio::test]
async fn any_success_other_than_200_is_a_failure() {
    let (url, _server) = serve_once("204 No Content", "").await;
    let err = client(url).set_state("t", b"x").await.unwrap_err();
    assert!(
        matches!(err, ClientError::Http { status, .. } if status == StatusCode::NO_CONTENT),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let err = client(url).set_state("t", b"x").await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("--endpoint"), "{err}");
}

#[test]
fn urls_keep_a_base_path_add_v1_once_and_encode_ids() {
    let name = device("projects/demo-project/locations/us-central1/registries/r%1/devices/d+2");
    let url = |base: &str| {
        IngestClient::new(Url::parse(base).unwrap(), name.clone())
            .unwrap()
            .device_url(Some("publishEvent"), &[])
            .to_string()
    };
    let tail =
        "projects/demo-project/locations/us-central1/registries/r%251/devices/d+2:publishEvent";
    assert_eq!(url("http://h:1"), format!("http://h:1/v1/{tail}"));
    assert_eq!(url("http://h:1/v1"), format!("http://h:1/v1/{tail}"));
    assert_eq!(url("https://h/iot/v1/"), format!("https://h/iot/v1/{tail}"));
    assert_eq!(url("https://h/iot?x=1"), format!("https://h/iot/v1/{tail}"));
}

#[test]
fn a_config_answer_may_use_either_alphabet_and_may_be_empty() {
    let config = parse_config(br#"{"version":"3","binaryData":"-_8"}"#).unwrap();
    assert_eq!(config.binary_data, [0xfb, 0xff]);
    let empty = parse_config(br#"{"version":"0"}"#).unwrap();
    assert_eq!((empty.version, empty.binary_data.len()), (0, 0));
    assert!(parse_config(b"not json").is_err());
    assert!(parse_config(br#"{"binaryData":"!!"}"#).is_err());
}

#[tokio::test]
async fn a_429_carries_the_servers_retry_after() {
    let body = r#"{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED"}}"#;
    // The extra header rides in after the status line.
    let (url, _server) = serve_once("429 Too Many Requests\r\nretry-after: 7", body).await;
    let err = client(url)
        .publish_event("t", b"x", None)
        .await
        .unwrap_err();
    match err {
        ClientError::Refused {
            status,
            http,
            retry_after,
            ..
        } => {
            assert_eq!(status, "RESOURCE_EXHAUSTED");
            assert_eq!(http, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("not a refusal: {other:?}"),
    }
}

#[tokio::test]
async fn the_error_info_reason_is_read_from_the_details() {
    let body = r#"{"error":{"code":401,"message":"words for people","status":"UNAUTHENTICATED",
        "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"TOKEN_EXPIRED",
        "domain":"cloudiot.googleapis.com","metadata":{}}]}}"#;
    let (url, _server) = serve_once("401 Unauthorized", body).await;
    let err = client(url).set_state("t", b"x").await.unwrap_err();
    match err {
        ClientError::Refused {
            reason, message, ..
        } => {
            assert_eq!(reason.as_deref(), Some("TOKEN_EXPIRED"));
            assert_eq!(message, "words for people");
        }
        other => panic!("not a refusal: {other:?}"),
    }
}

#[tokio::test]
async fn the_servers_date_header_is_read_for_the_clock_check() {
    let (url, _server) =
        serve_once("404 Not Found\r\ndate: Thu, 26 Nov 2026 00:44:51 GMT", "").await;
    let date = client(url).server_date().await.unwrap();
    let expected: jiff::Timestamp = "2026-11-26T00:44:51Z".parse().unwrap();
    assert_eq!(date, Some(expected.as_second()));
}

#[test]
fn a_ca_file_must_hold_a_certificate() {
    let url = Url::parse("https://iot.example.com").unwrap();
    let err = IngestClient::with_ca(
        url.clone(),
        device(&PATH["/v1/".len()..]),
        Some(b"not a certificate"),
    )
    .unwrap_err();
    assert!(matches!(err, ClientError::Setup(_)), "{err}");
    let key = crate::keys::DeviceKey::generate(shared::jwt::Algorithm::ES256).unwrap();
    let cert = key.self_signed_certificate_pem(1_767_225_600).unwrap();
    IngestClient::with_ca(url, device(&PATH["/v1/".len()..]), Some(cert.as_bytes())).unwrap();
}
