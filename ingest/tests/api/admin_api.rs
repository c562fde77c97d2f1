//! The admin API over a real socket, against a fresh SQLite file per test: every call IoT Core's
//! device manager offered here, and every refusal, each answered in Google's error shape with a
//! message naming the cause.

use crate::support::{PROJECT, REGION, TestApp, assert_error, assert_reason, key};
use ingest::http::admin::AdminAccess;
use jiff::Timestamp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::{DeviceRef, RegistryName};

fn topic(name: &str) -> String {
    format!("projects/{PROJECT}/topics/{name}")
}

// ---------------------------------------------------------------- registries

#[tokio::test]
async fn a_registry_is_created_read_and_listed_in_iot_cores_shape() {
    let app = TestApp::spawn().await;
    let created = app.create_registry("reg-1").await;
    assert_eq!(created["id"], "reg-1");
    assert_eq!(
        created["name"],
        format!("projects/{PROJECT}/locations/{REGION}/registries/reg-1")
    );
    assert_eq!(created["mqttConfig"]["mqttEnabledState"], "MQTT_ENABLED");
    assert_eq!(created["httpConfig"]["httpEnabledState"], "HTTP_ENABLED");
    assert_eq!(
        created["eventNotificationConfigs"][0]["pubsubTopicName"],
        topic("events")
    );

    let (status, got) = app.get("/registries/reg-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, created);

    let (status, list) = app.get("/registries").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["deviceRegistries"][0]["id"], "reg-1");
    assert!(list.get("nextPageToken").is_none(), "{list}");
}

#[tokio::test]
async fn registries_are_listed_page_by_page() {
    let app = TestApp::spawn().await;
    for id in ["reg-a", "reg-b", "reg-c"] {
        app.create_registry(id).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let (status, page) = app
            .get(&format!("/registries?pageSize=2&pageToken={token}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["deviceRegistries"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        match page["nextPageToken"].as_str() {
            Some(next) => token = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ["reg-a", "reg-b", "reg-c"]);
}

#[tokio::test]
async fn a_garbled_page_token_is_refused() {
    let app = TestApp::spawn().await;
    let answer = app.get("/registries?pageToken=not-a-token").await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["pageToken"]);
    let answer = app.get("/registries?pageSize=lots").await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["pageSize"]);
}

#[tokio::test]
async fn a_second_registry_with_the_same_id_is_refused() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    let answer = app.post("/registries", json!({"id": "reg-1"})).await;
    assert_error(&answer, 409, "ALREADY_EXISTS", &["reg-1"]);
    let name = format!("projects/{PROJECT}/locations/{REGION}/registries/reg-1");
    assert_reason(&answer, "REGISTRY_ALREADY_EXISTS", &[("registry", &name)]);
}

#[tokio::test]
async fn bad_registry_requests_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "id"),
        (json!({"id": "goog-reg"}), "goog"),
        (json!({"id": "r"}), "3 to 255"),
        (json!({"id": 7}), "id"),
        (
            json!({"id": "reg-1", "eventNotificationConfigs": [{"pubsubTopicName": "events"}]}),
            "eventNotificationConfigs[0].pubsubTopicName",
        ),
        (
            json!({"id": "reg-1", "eventNotificationConfigs": [{"pubsubTopicName": topic("t-a")}, {"pubsubTopicName": topic("t-b")}]}),
            "eventNotificationConfigs[1].subfolderMatches",
        ),
        (
            json!({"id": "reg-1", "httpConfig": {"httpEnabledState": "SOMETIMES"}}),
            "httpConfig.httpEnabledState",
        ),
        (
            json!({"id": "reg-1", "eventNotificationConfigs": {"pubsubTopicName": topic("t-a")}}),
            "eventNotificationConfigs",
        ),
    ];
    for (body, words) in cases {
        let answer = app.post("/registries", body.clone()).await;
        assert_error(&answer, 400, "INVALID_ARGUMENT", &[words]);
    }
    let answer = app.post_raw("/registries", "{\"id\": ").await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["not valid JSON"]);
    let answer = app
        .post(
            "/registries",
            json!({"id": "reg-1", "httpConfig": {"httpEnabledState": "SOMETIMES"}}),
        )
        .await;
    assert_reason(
        &answer,
        "INVALID_ARGUMENT",
        &[("field", "httpConfig.httpEnabledState")],
    );
}

#[tokio::test]
async fn ids_breaking_the_rules_in_the_path_are_refused() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .client
        .get(format!(
            "{}/v1/projects/Not_A_Project/locations/{REGION}/registries/reg-1",
            app.base.split("/v1/").next().unwrap()
        ))
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: Value = body.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("project id")
    );
    let answer = app.get("/registries/goog-x").await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["goog"]);
}

#[tokio::test]
async fn a_missing_registry_is_not_found() {
    let app = TestApp::spawn().await;
    let answer = app.get("/registries/nope-1").await;
    assert_error(&answer, 404, "NOT_FOUND", &["nope-1"]);
    let answer = app.delete("/registries/nope-1").await;
    assert_error(&answer, 404, "NOT_FOUND", &["nope-1"]);
    let answer = app.get("/registries/nope-1/devices").await;
    assert_error(&answer, 404, "NOT_FOUND", &["nope-1"]);
}

#[tokio::test]
async fn a_registry_patch_changes_only_the_masked_fields() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    let (status, patched) = app
        .patch(
            "/registries/reg-1?updateMask=http_config.http_enabled_state,stateNotificationConfig",
            json!({
                "httpConfig": {"httpEnabledState": "HTTP_DISABLED"},
                "stateNotificationConfig": {"pubsubTopicName": topic("state")},
                "eventNotificationConfigs": []
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["httpConfig"]["httpEnabledState"], "HTTP_DISABLED");
    assert_eq!(
        patched["stateNotificationConfig"]["pubsubTopicName"],
        topic("state")
    );
    assert_eq!(
        patched["eventNotificationConfigs"][0]["pubsubTopicName"],
        topic("events"),
        "not in the mask, so unchanged"
    );
    let (_, got) = app.get("/registries/reg-1").await;
    assert_eq!(got, patched);
}

#[tokio::test]
async fn a_registry_patch_without_a_usable_mask_is_refused() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    let answer = app
        .patch("/registries/reg-1", json!({"logLevel": "INFO"}))
        .await;
    assert_error(
        &answer,
        400,
        "INVALID_ARGUMENT",
        &["updateMask", "required"],
    );
    let answer = app
        .patch("/registries/reg-1?updateMask=id", json!({"id": "other-1"}))
        .await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["updateMask", "`id`"]);
    let answer = app
        .patch(
            "/registries/nope-1?updateMask=logLevel",
            json!({"logLevel": "INFO"}),
        )
        .await;
    assert_error(&answer, 404, "NOT_FOUND", &["nope-1"]);
}

#[tokio::test]
async fn a_registry_with_devices_cannot_be_deleted_until_it_is_empty() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    app.create_device("reg-1", "dev-1", "RSA_PEM", "rsa_public")
        .await;
    let answer = app.delete("/registries/reg-1").await;
    assert_error(&answer, 400, "FAILED_PRECONDITION", &["device"]);

    let (status, body) = app.delete("/registries/reg-1/devices/dev-1").await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, body) = app.delete("/registries/reg-1").await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let answer = app.get("/registries/reg-1").await;
    assert_error(&answer, 404, "NOT_FOUND", &["reg-1"]);
}

// ---------------------------------------------------------------- devices

#[tokio::test]
async fn devices_are_created_with_each_of_the_four_key_formats() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    let cases = [
        ("dev-rsa", "RSA_PEM", "rsa_public"),
        ("dev-rsa-pkcs1", "RSA_PEM", "rsa_public_pkcs1"),
        ("dev-rsa-cert", "RSA_X509_PEM", "rsa_cert"),
        ("dev-ec", "ES256_PEM", "ec_public"),
        ("dev-ec-cert", "ES256_X509_PEM", "ec_cert"),
    ];
    let mut num_ids = Vec::new();
    for (id, format, key_name) in cases {
        let device = app.create_device("reg-1", id, format, key_name).await;
        assert_eq!(device["id"], id);
        assert_eq!(device["credentials"][0]["publicKey"]["format"], format);
        let num_id = device["numId"].as_str().expect("numId is a string");
        assert!(num_id.parse::<u64>().unwrap() > 0);
        num_ids.push(num_id.to_owned());
    }
    num_ids.sort();
    num_ids.dedup();
    assert_eq!(num_ids.len(), cases.len(), "numeric ids are unique");
}

#[tokio::test]
async fn bad_keys_are_refused_with_the_cause() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    let cases = [
        ("RSA_PEM", key("rsa_cert"), "certificate"),
        ("ES256_PEM", key("rsa_public"), "RSA"),
        ("RSA_PEM", key("rsa1024_public"), "2048"),
        ("ES256_PEM", key("ec384_public"), "P-256"),
        ("RSA_PEM", key("rsa_private"), "private"),
        ("RSA_PEM", "!garbage".to_owned(), "PEM"),
    ];
    for (format, pem, words) in cases {
        let answer = app
            .post(
                "/registries/reg-1/devices",
                json!({"id": "dev-1", "credentials": [{"publicKey": {"format": format, "key": pem}}]}),
            )
            .await;
        assert_error(
            &answer,
            400,
            "INVALID_ARGUMENT",
            &["credentials[0].publicKey.key", words],
        );
    }
    let answer = app
        .post(
            "/registries/reg-1/devices",
            json!({"id": "dev-1", "credentials": [{"publicKey": {"format": "RSA_DER", "key": key("rsa_public")}}]}),
        )
        .await;
    assert_error(
        &answer,
        400,
        "INVALID_ARGUMENT",
        &["credentials[0].publicKey.format", "RSA_DER"],
    );
    let (status, _) = app.get("/registries/reg-1/devices/dev-1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");
}

#[tokio::test]
async fn bad_device_requests_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    let credential = json!({"publicKey": {"format": "RSA_PEM", "key": key("rsa_public")}});
    let many: serde_json::Map<String, Value> =
        (0..501).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "id"),
        (json!({"id": "1dev"}), "start with a letter"),
        (json!({"id": "dev/1"}), "device id"),
        (json!({"id": "dev-1", "blocked": "yes"}), "blocked"),
        (json!({"id": "dev-1", "metadata": ["a"]}), "metadata"),
        (
            json!({"id": "dev-1", "metadata": {"a b": "c"}}),
            "metadata[\"a b\"]",
        ),
        (
            json!({"id": "dev-1", "metadata": {"big": "x".repeat(32 * 1024 + 1)}}),
            "32768",
        ),
        (json!({"id": "dev-1", "metadata": many}), "500"),
        (
            json!({"id": "dev-1", "credentials": [credential, credential, credential, credential]}),
            "credentials",
        ),
        (
            json!({"id": "dev-1", "credentials": [{"publicKey": {"format": "RSA_PEM"}}]}),
            "credentials[0].publicKey",
        ),
        (
            json!({"id": "dev-1", "credentials": [{"publicKey": {"format": "RSA_PEM", "key": key("rsa_public")}, "expirationTime": "tomorrow"}]}),
            "credentials[0].expirationTime",
        ),
        (
            json!({"id": "dev-1", "config": {"binaryData": "***"}}),
            "config.binaryData",
        ),
        (
            json!({"id": "dev-1", "config": {"binaryData": shared::proto3::encode_base64(&vec![0; 64 * 1024 + 1])}}),
            "config.binaryData",
        ),
    ];
    for (body, words) in cases {
        let answer = app.post("/registries/reg-1/devices", body).await;
        assert_error(&answer, 400, "INVALID_ARGUMENT", &[words]);
    }
}

#[tokio::test]
async fn a_second_device_with_the_same_id_is_refused_and_a_missing_registry_is_not_found() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    app.create_device("reg-1", "dev-1", "RSA_PEM", "rsa_public")
        .await;
    let answer = app
        .post("/registries/reg-1/devices", json!({"id": "dev-1"}))
        .await;
    assert_error(&answer, 409, "ALREADY_EXISTS", &["dev-1"]);
    let registry = format!("projects/{PROJECT}/locations/{REGION}/registries/reg-1");
    let device = format!("{registry}/devices/dev-1");
    assert_reason(&answer, "DEVICE_ALREADY_EXISTS", &[("device", &device)]);
    let answer = app
        .post("/registries/nope-1/devices", json!({"id": "dev-1"}))
        .await;
    assert_error(&answer, 404, "NOT_FOUND", &["nope-1"]);
    let missing = format!("projects/{PROJECT}/locations/{REGION}/registries/nope-1");
    assert_reason(&answer, "REGISTRY_NOT_FOUND", &[("registry", &missing)]);
}

#[tokio::test]
async fn a_device_is_read_by_id_or_by_numeric_id() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    let created = app
        .create_device("reg-1", "dev-1", "ES256_PEM", "ec_public")
        .await;
    let num_id = created["numId"].as_str().unwrap();
    let (status, by_id) = app.get("/registries/reg-1/devices/dev-1").await;
    assert_eq!(status, StatusCode::OK);
    let (status, by_num) = app
        .get(&format!("/registries/reg-1/devices/{num_id}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_id, by_num);
    assert_eq!(by_id["credentials"], created["credentials"]);

    let answer = app.get("/registries/reg-1/devices/dev-2").await;
    assert_error(&answer, 404, "NOT_FOUND", &["dev-2"]);
    assert_reason(&answer, "DEVICE_NOT_FOUND", &[]);
    let answer = app.get("/registries/reg-1/devices/123").await;
    assert_error(&answer, 404, "NOT_FOUND", &["123"]);
}

#[tokio::test]
async fn a_field_mask_trims_what_get_and_list_return() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    app.create_device("reg-1", "dev-1", "RSA_PEM", "rsa_public")
        .await;
    let (status, device) = app
        .get("/registries/reg-1/devices/dev-1?fieldMask=blocked,metadata")
        .await;
    assert_eq!(status, StatusCode::OK);
    let keys: Vec<&String> = device.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["id", "name", "numId"],
        "blocked and metadata are defaults, so absent"
    );

    let (_, list) = app.get("/registries/reg-1/devices").await;
    let listed = &list["devices"][0];
    assert!(
        listed.get("credentials").is_none(),
        "a list returns only ids by default: {listed}"
    );
    assert_eq!(listed["id"], "dev-1");
    let (_, list) = app
        .get("/registries/reg-1/devices?fieldMask=credentials")
        .await;
    assert_eq!(
        list["devices"][0]["credentials"][0]["publicKey"]["format"],
        "RSA_PEM"
    );

    let answer = app
        .get("/registries/reg-1/devices/dev-1?fieldMask=colour")
        .await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["fieldMask", "colour"]);
}

#[tokio::test]
async fn gateway_list_options_are_applied_never_ignored() {
    // A registry without gateways: only NON_GATEWAY matches, and no device has an association
    // (mqtt_gateways covers registries with gateways).
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    app.create_device("reg-1", "dev-1", "RSA_PEM", "rsa_public")
        .await;
    let ids = |page: &Value| page["devices"].as_array().map(Vec::len);
    for (query, count) in [
        ("gatewayListOptions.gatewayType=GATEWAY", 0),
        ("gatewayListOptions.gatewayType=1", 0),
        ("gateway_list_options.gateway_type=NON_GATEWAY", 1),
        ("gatewayListOptions.gatewayType=2", 1),
        ("gatewayListOptions.associationsDeviceId=dev-1", 0),
    ] {
        let (status, page) = app.get(&format!("/registries/reg-1/devices?{query}")).await;
        assert_eq!(
            (status, ids(&page)),
            (StatusCode::OK, Some(count)),
            "{query}: {page}"
        );
    }
    let answer = app
        .get("/registries/reg-1/devices?gatewayListOptions.associationsGatewayId=gw-1")
        .await;
    assert_error(&answer, 404, "NOT_FOUND", &["gw-1"]);
    for (query, words) in [
        (
            "gatewayListOptions.gatewayType=ROUTER",
            &["gatewayType", "GATEWAY (1)"][..],
        ),
        (
            "gatewayListOptions.gatewayType=1&gatewayListOptions.associationsDeviceId=dev-1",
            &["gatewayListOptions", "at most one"][..],
        ),
        (
            "gatewayListOptions.associationsGatewayId=a%20b",
            &["associationsGatewayId"][..],
        ),
    ] {
        let answer = app.get(&format!("/registries/reg-1/devices?{query}")).await;
        assert_error(&answer, 400, "INVALID_ARGUMENT", words);
    }

    // A gateway is created as one, its output-only fields ignored.
    let gateway = json!({"id": "gw-1", "gatewayConfig": {"gatewayType": "GATEWAY",
        "lastAccessedGatewayId": "forged"}});
    let (status, created) = app.post("/registries/reg-1/devices", gateway).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["gatewayConfig"], json!({"gatewayType": "GATEWAY"}));
    let (_, page) = app
        .get("/registries/reg-1/devices?gatewayListOptions.gatewayType=GATEWAY")
        .await;
    assert_eq!(page["devices"][0]["id"], "gw-1");
}

#[tokio::test]
async fn devices_are_listed_by_page_and_filtered_by_ids() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    let mut num_ids = Vec::new();
    for i in 0..5 {
        let d = app
            .create_device("reg-1", &format!("dev-{i}"), "RSA_PEM", "rsa_public")
            .await;
        num_ids.push(d["numId"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let (status, page) = app
            .get(&format!(
                "/registries/reg-1/devices?pageSize=2&pageToken={token}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned()),
        );
        match page["nextPageToken"].as_str() {
            Some(next) => token = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ["dev-0", "dev-1", "dev-2", "dev-3", "dev-4"]);

    let (_, filtered) = app
        .get(&format!(
            "/registries/reg-1/devices?deviceIds=dev-1&deviceIds=dev-3&deviceNumIds={}",
            num_ids[4]
        ))
        .await;
    let ids: Vec<&str> = filtered["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["dev-1", "dev-3", "dev-4"]);
    let answer = app.get("/registries/reg-1/devices?deviceNumIds=abc").await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["deviceNumIds"]);
}

#[tokio::test]
async fn a_device_patch_changes_only_the_masked_fields() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    let created = app
        .create_device("reg-1", "dev-1", "RSA_PEM", "rsa_public")
        .await;
    let num_id = created["numId"].as_str().unwrap();
    let (status, patched) = app
        .patch(
            &format!("/registries/reg-1/devices/{num_id}?updateMask=blocked,metadata"),
            json!({"blocked": true, "metadata": {"site": "barn"}, "credentials": []}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["blocked"], true);
    assert_eq!(patched["metadata"]["site"], "barn");
    assert_eq!(
        patched["credentials"], created["credentials"],
        "not in the mask"
    );

    let (status, patched) = app
        .patch(
            "/registries/reg-1/devices/dev-1?updateMask=credentials",
            json!({"credentials": [{"publicKey": {"format": "ES256_X509_PEM", "key": key("ec_cert")}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        patched["credentials"][0]["publicKey"]["format"],
        "ES256_X509_PEM"
    );
}

#[tokio::test]
async fn bad_device_patches_are_refused() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    app.create_device("reg-1", "dev-1", "RSA_PEM", "rsa_public")
        .await;
    let path = "/registries/reg-1/devices/dev-1";
    let answer = app.patch(path, json!({"blocked": true})).await;
    assert_error(
        &answer,
        400,
        "INVALID_ARGUMENT",
        &["updateMask", "required"],
    );
    let answer = app
        .patch(&format!("{path}?updateMask=numId"), json!({}))
        .await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["updateMask", "numId"]);
    let answer = app
        .patch(
            &format!("{path}?updateMask=credentials"),
            json!({"credentials": [{"publicKey": {"format": "RSA_PEM", "key": key("ec_public")}}]}),
        )
        .await;
    assert_error(
        &answer,
        400,
        "INVALID_ARGUMENT",
        &["credentials[0].publicKey.key"],
    );
    let answer = app
        .patch(
            &format!("{path}?updateMask=metadata"),
            json!({"metadata": {"goog-x": "1"}}),
        )
        .await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["metadata", "goog"]);
    let answer = app
        .patch(
            "/registries/reg-1/devices/dev-9?updateMask=blocked",
            json!({"blocked": true}),
        )
        .await;
    assert_error(&answer, 404, "NOT_FOUND", &["dev-9"]);
}

#[tokio::test]
async fn a_deleted_device_is_gone() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    app.create_device("reg-1", "dev-1", "RSA_PEM", "rsa_public")
        .await;
    let (status, body) = app.delete("/registries/reg-1/devices/dev-1").await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let answer = app.get("/registries/reg-1/devices/dev-1").await;
    assert_error(&answer, 404, "NOT_FOUND", &["dev-1"]);
    let answer = app.delete("/registries/reg-1/devices/dev-1").await;
    assert_error(&answer, 404, "NOT_FOUND", &["dev-1"]);
}

// ---------------------------------------------------------------- configs and states

#[tokio::test]
async fn configs_are_versioned_with_an_optimistic_check() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    app.create_device("reg-1", "dev-1", "RSA_PEM", "rsa_public")
        .await;
    let modify = "/registries/reg-1/devices/dev-1:modifyCloudToDeviceConfig";

    // As in IoT Core, the device was created with an empty version 1; the first change is 2.
    let (_, created) = app.get("/registries/reg-1/devices/dev-1").await;
    assert_eq!(created["config"]["version"], "1", "{created}");
    let (status, v2) = app.post(modify, json!({"binaryData": "b24="})).await;
    assert_eq!(status, StatusCode::OK, "{v2}");
    assert_eq!(v2["version"], "2");
    assert_eq!(v2["binaryData"], "b24=");
    assert!(
        v2["cloudUpdateTime"]
            .as_str()
            .unwrap()
            .parse::<Timestamp>()
            .is_ok()
    );

    // IoT Core's rate: one change a second per device.
    let next = json!({"versionToUpdate": "2", "binaryData": "b2Zm"});
    let answer = app.post(modify, next.clone()).await;
    assert_error(
        &answer,
        429,
        "RESOURCE_EXHAUSTED",
        &["dev-1", "once per second", "retry in"],
    );
    assert_reason(&answer, "CONFIG_RATE_EXCEEDED", &[]);
    let wait: u64 = answer.1["error"]["details"][0]["metadata"]["retryAfterMillis"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1000).contains(&wait), "{wait}");
    let (status, v3) = app
        .modify_config("/registries/reg-1/devices/dev-1", next)
        .await;
    assert_eq!(status, StatusCode::OK, "{v3}");
    assert_eq!(v3["version"], "3");

    let answer = app
        .post(modify, json!({"versionToUpdate": 2, "binaryData": "eA"}))
        .await;
    assert_error(&answer, 409, "ABORTED", &["version 3", "not 2"]);
    assert_reason(
        &answer,
        "CONFIG_VERSION_MISMATCH",
        &[("currentVersion", "3"), ("expectedVersion", "2")],
    );

    let (_, device) = app.get("/registries/reg-1/devices/dev-1").await;
    assert_eq!(device["config"]["version"], "3");
    assert_eq!(device["config"]["binaryData"], "b2Zm");

    let (status, versions) = app
        .get("/registries/reg-1/devices/dev-1/configVersions")
        .await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<&Value> = versions["deviceConfigs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["version"])
        .collect();
    assert_eq!(listed, [&json!("3"), &json!("2"), &json!("1")]);
    let (_, one) = app
        .get("/registries/reg-1/devices/dev-1/configVersions?numVersions=1")
        .await;
    assert_eq!(one["deviceConfigs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_config_given_at_creation_becomes_version_1_and_may_not_name_another() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    let key = key("rsa_public");
    let device = |id: &str, config: Value| json!({"id": id, "credentials": [{"publicKey": {"format": "RSA_PEM", "key": key}}], "config": config});
    let (status, created) = app
        .post(
            "/registries/reg-1/devices",
            device("dev-1", json!({"binaryData": "b24="})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(
        (
            &created["config"]["version"],
            &created["config"]["binaryData"]
        ),
        (&json!("1"), &json!("b24="))
    );
    let answer = app
        .post(
            "/registries/reg-1/devices",
            device("dev-2", json!({"version": "3", "binaryData": "b24="})),
        )
        .await;
    assert_error(
        &answer,
        400,
        "INVALID_ARGUMENT",
        &["config.version", "version 1"],
    );
    let (status, _) = app.get("/registries/reg-1/devices/dev-2").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");
}

#[tokio::test]
async fn bad_config_updates_are_refused() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    app.create_device("reg-1", "dev-1", "RSA_PEM", "rsa_public")
        .await;
    let modify = "/registries/reg-1/devices/dev-1:modifyCloudToDeviceConfig";
    let big = shared::proto3::encode_base64(&vec![7; 64 * 1024 + 1]);
    let answer = app.post(modify, json!({"binaryData": big})).await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["binaryData", "65536"]);
    let answer = app.post(modify, json!({"binaryData": "not base64!"})).await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["binaryData", "base64"]);
    let answer = app
        .post(modify, json!({"versionToUpdate": "-3", "binaryData": ""}))
        .await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["versionToUpdate"]);
    let answer = app
        .post(
            "/registries/reg-1/devices/dev-9:modifyCloudToDeviceConfig",
            json!({"binaryData": ""}),
        )
        .await;
    assert_error(&answer, 404, "NOT_FOUND", &["dev-9"]);
}

#[tokio::test]
async fn states_are_listed_newest_first() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    app.create_device("reg-1", "dev-1", "RSA_PEM", "rsa_public")
        .await;
    let registry = RegistryName::from_parts(PROJECT, REGION, "reg-1").unwrap();
    let device = DeviceRef::parse("dev-1").unwrap();
    for (i, data) in ["one", "two", "three"].iter().enumerate() {
        let at = Timestamp::from_second(1_767_225_600 + i as i64).unwrap();
        app.registry
            .record_state(&registry, &device, data.as_bytes().to_vec(), at)
            .await
            .unwrap();
    }
    let (status, states) = app.get("/registries/reg-1/devices/dev-1/states").await;
    assert_eq!(status, StatusCode::OK, "{states}");
    let data: Vec<&str> = states["deviceStates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["binaryData"].as_str().unwrap())
        .collect();
    assert_eq!(data, ["dGhyZWU=", "dHdv", "b25l"]);
    let (_, two) = app
        .get("/registries/reg-1/devices/dev-1/states?numStates=2")
        .await;
    assert_eq!(two["deviceStates"].as_array().unwrap().len(), 2);
    let (_, device) = app.get("/registries/reg-1/devices/dev-1").await;
    assert_eq!(device["state"]["binaryData"], "dGhyZWU=");
}

#[tokio::test]
async fn unsupported_methods_and_paths_answer_in_googles_shape() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    app.create_device("reg-1", "dev-1", "RSA_PEM", "rsa_public")
        .await;
    let answer = app
        .post(
            "/registries/reg-1/devices/dev-1:sendCommandToDevice",
            json!({"binaryData": ""}),
        )
        .await;
    assert_error(&answer, 400, "FAILED_PRECONDITION", &["subscribed"]);
    let answer = app
        .post("/registries/reg-1/devices/dev-1:fly", json!({}))
        .await;
    assert_error(&answer, 501, "UNIMPLEMENTED", &["fly"]);
    let answer = app.post("/registries/reg-1:teleport", json!({})).await;
    assert_error(&answer, 501, "UNIMPLEMENTED", &["teleport"]);
    let answer = app
        .post("/registries/reg-1:bindDeviceToGateway", json!({}))
        .await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["gatewayId", "required"]);
    let answer = app.get("/nothing/here").await;
    assert_error(&answer, 404, "NOT_FOUND", &["path"]);
}

#[tokio::test]
async fn an_oversized_body_is_refused_and_the_service_keeps_serving() {
    let app = TestApp::spawn().await;
    let body = json!({"id": "reg-1", "junk": "x".repeat(2 * 1024 * 1024)});
    let answer = app.post("/registries", body).await;
    assert_error(&answer, 413, "INVALID_ARGUMENT", &["1 MiB"]);
    app.create_registry("reg-1").await;
}

// ---------------------------------------------------------------- access and caches

#[tokio::test]
async fn with_a_token_configured_the_admin_api_refuses_callers_without_it() {
    let app = TestApp::spawn_with(AdminAccess::token("s3cret")).await;
    let url = app.url("/registries");
    let answer = crate::support::answer(app.client.get(&url).send().await.unwrap()).await;
    assert_error(&answer, 401, "UNAUTHENTICATED", &["Bearer"]);
    assert_reason(&answer, "ADMIN_TOKEN_MISSING", &[]);
    let answer = crate::support::answer(
        app.client
            .get(&url)
            .bearer_auth("guess")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(
        &answer,
        401,
        "UNAUTHENTICATED",
        &["not one this server accepts"],
    );
    assert_reason(&answer, "ADMIN_TOKEN_INVALID", &[]);
    let (status, _) = crate::support::answer(
        app.client
            .get(&url)
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn blocking_a_device_drops_its_cached_tokens_at_once() {
    let app = TestApp::spawn().await;
    app.create_registry("reg-1").await;
    app.create_device("reg-1", "dev-1", "RSA_PEM", "rsa_public")
        .await;
    let vectors = testkit::vectors();
    let case = &vectors["token_cases"][0];
    assert_eq!(case["expect"], "accept");
    let token = case["token"].as_str().unwrap();
    let now = case["now"].as_i64().unwrap();
    let device = shared::DeviceName::parse(&format!(
        "projects/{PROJECT}/locations/{REGION}/registries/reg-1/devices/dev-1"
    ))
    .unwrap();
    app.auth.authenticate(&device, token, now).await.unwrap();

    let (status, _) = app
        .patch(
            "/registries/reg-1/devices/dev-1?updateMask=blocked",
            json!({"blocked": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let err = app
        .auth
        .authenticate(&device, token, now)
        .await
        .unwrap_err();
    assert_eq!(err.code(), shared::Code::PermissionDenied, "{err}");

    let (status, _) = app
        .patch(
            "/registries/reg-1/devices/dev-1?updateMask=blocked",
            json!({"blocked": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.auth.authenticate(&device, token, now).await.unwrap();

    let (status, _) = app
        .patch(
            "/registries/reg-1/devices/dev-1?updateMask=credentials",
            json!({"credentials": [{"publicKey": {"format": "ES256_PEM", "key": key("ec_public")}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let err = app
        .auth
        .authenticate(&device, token, now)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        shared::Code::Unauthenticated,
        "the old key no longer works: {err}"
    );
}
