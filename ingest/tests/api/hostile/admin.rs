//! Hostile admin calls: missing, wrong and misplaced credentials, bodies that are not JSON or are
//! far too large or deep, ids and paths that break the rules, limits on keys, configs, metadata
//! and pages, and a race of creates — each refused in Google's error shape, none disturbing the
//! devices.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::{ADMIN_TOKEN, DEVICE, REG, Suite, Target, answered, raw_http, refused};
use crate::support::{PROJECT, REGION, key};

/// A refusal to check: the call, and the status and words of its answer.
async fn check(
    target: &Target,
    request: reqwest::RequestBuilder,
    status: u16,
    words: &[&str],
) -> Result<(), String> {
    refused(&target.send(request).await, status, words)
}

fn device_body(id: &str, credentials: Value) -> Value {
    json!({"id": id, "credentials": credentials})
}

fn rsa_credential() -> Value {
    json!({"publicKey": {"format": "RSA_PEM", "key": key("rsa_public")}})
}

pub async fn run(mut suite: Suite) -> usize {
    let devices = format!("/{REG}/devices");
    let device = Target::device_path(DEVICE);

    let t = &suite.target;
    let outcome = check(
        t,
        t.client().get(t.admin_url("")),
        401,
        &["UNAUTHENTICATED"],
    )
    .await;
    suite.case("admin: no credentials", outcome).await;

    let t = &suite.target;
    let wrong = t.client().get(t.admin_url("")).bearer_auth("guess");
    let outcome = check(t, wrong, 401, &["UNAUTHENTICATED"]).await;
    suite.case("admin: a wrong bearer token", outcome).await;

    let t = &suite.target;
    let jwt = t
        .client()
        .get(t.admin_url(""))
        .bearer_auth(t.signer.fresh());
    let outcome = check(t, jwt, 401, &["UNAUTHENTICATED"]).await;
    suite
        .case("admin: a device's JWT as the admin token", outcome)
        .await;

    let t = &suite.target;
    let query = t
        .client()
        .get(format!("{}?access_token={}", t.admin_url(""), ADMIN_TOKEN));
    let outcome = check(t, query, 401, &["UNAUTHENTICATED"]).await;
    suite
        .case("admin: the token in the query string", outcome)
        .await;

    let t = &suite.target;
    let garbled = t
        .admin(Method::POST, "")
        .header("content-type", "application/json")
        .body("{\"id\":");
    let outcome = check(t, garbled, 400, &["INVALID_ARGUMENT"]).await;
    suite.case("admin: a body that is not JSON", outcome).await;

    let t = &suite.target;
    let path = format!("/v1/projects/{PROJECT}/locations/{REGION}/registries");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        t.admin_addr,
        16 << 20
    );
    let reply = raw_http(t.admin_addr, head.as_bytes(), Duration::from_secs(5)).await;
    let outcome = answered(&reply, 413, &["1 MiB"]);
    suite
        .case(
            "admin: a 16 MB Content-Length, refused before the body",
            outcome,
        )
        .await;

    let t = &suite.target;
    let deep = format!("{}{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
    let nested = t
        .admin(Method::POST, "")
        .header("content-type", "application/json")
        .body(deep);
    let outcome = check(t, nested, 400, &["INVALID_ARGUMENT"]).await;
    suite.case("admin: JSON nested 50,000 deep", outcome).await;

    let t = &suite.target;
    let bad_id = t
        .admin(Method::POST, "")
        .json(&json!({"id": "../etc/passwd"}));
    let outcome = check(t, bad_id, 400, &["INVALID_ARGUMENT", "id"]).await;
    suite
        .case("admin: a registry id with a path in it", outcome)
        .await;

    let t = &suite.target;
    let long_id = t
        .admin(Method::POST, "")
        .json(&json!({"id": "r".repeat(5000)}));
    let outcome = check(t, long_id, 400, &["INVALID_ARGUMENT", "id"]).await;
    suite
        .case("admin: a 5,000-character registry id", outcome)
        .await;

    let t = &suite.target;
    let traversal = t.admin(Method::GET, "/..%2F..%2Fetc%2Fpasswd");
    let answer = t.send(traversal).await;
    let outcome = match answer.0 {
        400 | 404 => Ok(()),
        other => Err(format!("expected 400/404, got {other} {}", answer.1)),
    };
    suite
        .case("admin: an encoded path traversal", outcome)
        .await;

    let t = &suite.target;
    let garbage_key = json!([{"publicKey": {"format": "RSA_PEM", "key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}}]);
    let create = t
        .admin(Method::POST, &devices)
        .json(&device_body("garbage-key", garbage_key));
    let outcome = check(t, create, 400, &["INVALID_ARGUMENT", "key"]).await;
    suite
        .case("admin: a device with a garbage key", outcome)
        .await;

    let t = &suite.target;
    let four = json!([
        rsa_credential(),
        rsa_credential(),
        rsa_credential(),
        rsa_credential()
    ]);
    let create = t
        .admin(Method::POST, &devices)
        .json(&device_body("four-keys", four));
    let outcome = check(t, create, 400, &["INVALID_ARGUMENT", "credentials"]).await;
    suite
        .case("admin: a device with four credentials", outcome)
        .await;

    let t = &suite.target;
    let metadata: serde_json::Map<String, Value> =
        (0..600).map(|i| (format!("k{i}"), json!("v"))).collect();
    let create = t
        .admin(Method::POST, &devices)
        .json(&json!({"id": "much-metadata", "metadata": metadata}));
    let outcome = check(t, create, 400, &["INVALID_ARGUMENT", "metadata"]).await;
    suite.case("admin: 600 metadata keys", outcome).await;

    let t = &suite.target;
    let big_config = json!({"binaryData": shared::proto3::encode_base64(&vec![1u8; 70 * 1024])});
    let modify = t
        .admin(Method::POST, &format!("{device}:modifyCloudToDeviceConfig"))
        .json(&big_config);
    let outcome = check(t, modify, 400, &["INVALID_ARGUMENT", "65536"]).await;
    suite.case("admin: a 70 KB config", outcome).await;

    let t = &suite.target;
    let not_base64 = t
        .admin(Method::POST, &format!("{device}:modifyCloudToDeviceConfig"))
        .json(&json!({"binaryData": "%%%"}));
    let outcome = check(t, not_base64, 400, &["INVALID_ARGUMENT", "binaryData"]).await;
    suite
        .case("admin: a config that is not base64", outcome)
        .await;

    let t = &suite.target;
    let version = t
        .admin(Method::POST, &format!("{device}:modifyCloudToDeviceConfig"))
        .json(&json!({"binaryData": "aGk=", "versionToUpdate": "abc"}));
    let outcome = check(t, version, 400, &["INVALID_ARGUMENT", "versionToUpdate"]).await;
    suite
        .case("admin: versionToUpdate that is not a number", outcome)
        .await;

    let t = &suite.target;
    let page = t.admin(
        Method::GET,
        &format!("{devices}?pageToken=%00%FF%FEgarbage"),
    );
    let outcome = check(t, page, 400, &["INVALID_ARGUMENT", "page"]).await;
    suite.case("admin: a garbled page token", outcome).await;

    let t = &suite.target;
    let mask = t
        .admin(Method::PATCH, &format!("{device}?updateMask=numId"))
        .json(&json!({"numId": "1"}));
    let outcome = check(t, mask, 400, &["INVALID_ARGUMENT", "numId"]).await;
    suite
        .case("admin: an update mask naming an immutable field", outcome)
        .await;

    let t = &suite.target;
    let method = t
        .admin(Method::POST, &format!("{device}:selfDestruct"))
        .json(&json!({}));
    let answer = t.send(method).await;
    let outcome = refused(&answer, 501, &["UNIMPLEMENTED", "selfDestruct"]);
    suite
        .case("admin: a method that does not exist", outcome)
        .await;

    let t = &suite.target;
    let delete = t.admin(Method::DELETE, &format!("/{REG}"));
    let outcome = check(t, delete, 400, &["FAILED_PRECONDITION"]).await;
    suite
        .case("admin: deleting a registry that has devices", outcome)
        .await;

    let t = &suite.target;
    let policy =
        json!({"policy": {"bindings": [{"role": "roles/owner", "members": ["everyone"]}]}});
    let set = t
        .admin(Method::POST, &format!("/{REG}:setIamPolicy"))
        .json(&policy);
    let outcome = check(t, set, 400, &["INVALID_ARGUMENT", "everyone"]).await;
    suite
        .case("admin: an IAM policy with a malformed member", outcome)
        .await;

    let t = &suite.target;
    let creates = (0..10).map(|_| {
        t.send(
            t.admin(Method::POST, &devices)
                .json(&device_body("raced", json!([rsa_credential()]))),
        )
    });
    let statuses: Vec<u16> = futures_util::future::join_all(creates)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    let created = statuses.iter().filter(|s| **s == 200).count();
    let conflicts = statuses.iter().filter(|s| **s == 409).count();
    let outcome = (created == 1 && conflicts == 9)
        .then_some(())
        .ok_or(format!("10 racing creates answered {statuses:?}"));
    suite
        .case("admin: ten racing creates of one device", outcome)
        .await;

    suite.finish()
}
