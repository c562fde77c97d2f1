//! Gateways on the HTTP device bridge, over real sockets against a fresh SQLite file and a file
//! sink per test: IoT Core's `gatewayInfo` in both forms. With `delegatedDeviceId` a gateway, on
//! its own path with its own token, publishes, sets state and fetches config for a device bound
//! to it, and the work lands as the device's own (attributes, stored state, bookkeeping naming
//! the gateway); with `gatewayId` a device, with its own token, names the gateway it came
//! through. Every refusal is checked for its status, status name and the words that tell the
//! owner what to do.

use std::time::Duration;

use crate::support::device::{DeviceApp, Signer, device_path};
use crate::support::{assert_error, key};
use reqwest::StatusCode;
use serde_json::{Value, json};

const REG: &str = "reg-1";

/// `reg-1` routing events to `events` and state to `state`, with gateway `gw-1`
/// (`ASSOCIATION_ONLY`, RSA key), gateway `gw-t` (`DEVICE_AUTH_TOKEN_ONLY`, RSA key), and devices
/// `dev-a` (bound to `gw-1`) and `dev-b` (bound to nothing), both with the EC key.
struct Site {
    app: DeviceApp,
    gateway: Signer,
    device: Signer,
}

impl Site {
    async fn spawn() -> Self {
        let app = DeviceApp::spawn().await;
        app.create_registry_routed(REG, &[("", "events")], Some("state"))
            .await;
        create_gateway(&app, "gw-1", "ASSOCIATION_ONLY").await;
        create_gateway(&app, "gw-t", "DEVICE_AUTH_TOKEN_ONLY").await;
        for device in ["dev-a", "dev-b"] {
            app.admin
                .create_device(REG, device, "ES256_PEM", "ec_public")
                .await;
        }
        let site = Self {
            app,
            gateway: Signer::rsa("rsa_private"),
            device: Signer::ec("ec_private_pkcs8"),
        };
        ok_empty(&site.bind("gw-1", "dev-a").await);
        site
    }

    async fn bind(&self, gateway: &str, device: &str) -> (StatusCode, Value) {
        let body = json!({"gatewayId": gateway, "deviceId": device});
        let path = format!("/registries/{REG}:bindDeviceToGateway");
        self.app.admin.post(&path, body).await
    }

    async fn unbind(&self, gateway: &str, device: &str) -> (StatusCode, Value) {
        let body = json!({"gatewayId": gateway, "deviceId": device});
        let path = format!("/registries/{REG}:unbindDeviceFromGateway");
        self.app.admin.post(&path, body).await
    }

    /// `:publishEvent` on `gw-1`'s path with its token, for `device`.
    async fn publish_for(&self, device: &str, data: &str) -> (StatusCode, Value) {
        let body = json!({"binaryData": data, "gatewayInfo": {"delegatedDeviceId": device}});
        let token = self.gateway.fresh();
        self.app.publish_event(&token, &path("gw-1"), body).await
    }

    /// `:publishEvent` on `device`'s own path with its own token, through `gateway`.
    async fn publish_through(&self, device: &str, gateway: &str) -> (StatusCode, Value) {
        let body = json!({"binary_data": "aGk=", "gateway_info": {"gateway_id": gateway}});
        let token = self.device.fresh();
        self.app.publish_event(&token, &path(device), body).await
    }

    /// The device's numeric id, as the admin API shows it.
    async fn num_id(&self, device: &str) -> String {
        let shown = self.app.device(REG, device).await;
        shown["numId"].as_str().unwrap().to_owned()
    }

    /// The device after the bookkeeping is written.
    async fn flushed(&self, device: &str) -> Value {
        self.app.bridge.flush_activity().await;
        self.app.device(REG, device).await
    }
}

async fn create_gateway(app: &DeviceApp, id: &str, auth_method: &str) {
    let body = json!({
        "id": id,
        "gatewayConfig": {"gatewayType": "GATEWAY", "gatewayAuthMethod": auth_method},
        "credentials": [{"publicKey": {"format": "RSA_PEM", "key": key("rsa_public")}}],
    });
    let (status, created) = app
        .admin
        .post(&format!("/registries/{REG}/devices"), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
}

fn path(device: &str) -> String {
    device_path(REG, device)
}

fn ok_empty(answer: &(StatusCode, Value)) {
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(answer.1, json!({}), "success is exactly {{}}");
}

// ------------------------------------------------------------ delegatedDeviceId

#[tokio::test]
async fn a_gateway_publishes_and_sets_state_for_a_bound_device() {
    let site = Site::spawn().await;
    let app = &site.app;
    let num_id = site.num_id("dev-a").await;

    ok_empty(&site.publish_for("dev-a", "MjEuNUM=").await);
    let messages = app.sink_messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["data"], "MjEuNUM=");
    let attributes = &messages[0]["attributes"];
    assert_eq!(attributes["deviceId"], "dev-a", "{attributes}");
    assert_eq!(attributes["deviceNumId"], num_id.as_str(), "{attributes}");
    assert_eq!(attributes["deviceRegistryId"], REG, "{attributes}");

    // snake_case, and the device by its numeric id.
    let body = json!({
        "state": {"binary_data": "b24="},
        "gateway_info": {"delegated_device_id": num_id},
    });
    let token = site.gateway.fresh();
    ok_empty(&app.set_state(&token, &path("gw-1"), body).await);
    let (status, states) = app.admin.get(&format!("{}/states", path("dev-a"))).await;
    assert_eq!(status, StatusCode::OK, "{states}");
    assert_eq!(states["deviceStates"][0]["binaryData"], "b24=", "{states}");
    let state_message = &app.sink_messages()[1];
    assert_eq!(state_message["attributes"]["deviceId"], "dev-a");

    let device = site.flushed("dev-a").await;
    assert_eq!(
        device["gatewayConfig"]["lastAccessedGatewayId"], "gw-1",
        "{device}"
    );
    assert!(
        device["gatewayConfig"]["lastAccessedGatewayTime"].is_string(),
        "{device}"
    );
    assert!(device["lastEventTime"].is_string(), "{device}");
    assert!(device["lastStateTime"].is_string(), "{device}");
    // The work was the device's: the gateway's own record shows none of it.
    let gateway = app.device(REG, "gw-1").await;
    assert!(gateway.get("lastEventTime").is_none(), "{gateway}");
    let (_, gateway_states) = app.admin.get(&format!("{}/states", path("gw-1"))).await;
    assert!(
        gateway_states["deviceStates"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{gateway_states}"
    );
}

#[tokio::test]
async fn a_gateway_fetches_and_long_polls_a_bound_devices_config() {
    let site = Site::spawn().await;
    let app = &site.app;
    let changed = app
        .admin
        .modify_config(&path("dev-a"), json!({"binaryData": "djE="}))
        .await;
    assert_eq!(changed.0, StatusCode::OK, "{}", changed.1);
    let token = site.gateway.fresh();

    let query = "?gatewayInfo.delegatedDeviceId=dev-a";
    let (status, config) = app.get_config(&token, &path("gw-1"), query).await;
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(
        (&config["version"], &config["binaryData"]),
        (&json!("2"), &json!("djE="))
    );

    // Held until the device's config changes, exactly as for the device itself.
    let query = "?local_version=2&wait=20&gateway_info.delegated_device_id=dev-a";
    let gateway_path = path("gw-1");
    let poll = app.get_config(&token, &gateway_path, query);
    let change = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let body = json!({"binaryData": "djI="});
        app.admin.modify_config(&path("dev-a"), body).await
    };
    let ((status, config), changed) = tokio::join!(poll, change);
    assert_eq!(changed.0, StatusCode::OK, "{}", changed.1);
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(
        (&config["version"], &config["binaryData"]),
        (&json!("3"), &json!("djI="))
    );

    let device = site.flushed("dev-a").await;
    assert_eq!(device["gatewayConfig"]["lastAccessedGatewayId"], "gw-1");
    assert!(device["lastConfigSendTime"].is_string(), "{device}");
}

#[tokio::test]
async fn an_unbound_device_is_refused_until_it_is_bound() {
    let site = Site::spawn().await;
    let answer = site.publish_for("dev-b", "aGk=").await;
    assert_error(
        &answer,
        403,
        "PERMISSION_DENIED",
        &["dev-b", "not bound", "gw-1", ":bindDeviceToGateway"],
    );
    let query = "?gatewayInfo.delegatedDeviceId=dev-b";
    let token = site.gateway.fresh();
    let refused = site.app.get_config(&token, &path("gw-1"), query).await;
    assert_error(&refused, 403, "PERMISSION_DENIED", &["not bound"]);

    ok_empty(&site.bind("gw-1", "dev-b").await);
    ok_empty(&site.publish_for("dev-b", "aGk=").await);
    // An unbinding counts at once.
    ok_empty(&site.unbind("gw-1", "dev-b").await);
    let answer = site.publish_for("dev-b", "aGk=").await;
    assert_error(&answer, 403, "PERMISSION_DENIED", &["not bound"]);
    assert_eq!(site.app.sink_messages().len(), 1);

    // The gateway asked, so the gateway's record keeps the refusal.
    let gateway = site.flushed("gw-1").await;
    let message = gateway["lastErrorStatus"]["message"].as_str().unwrap();
    assert!(message.contains("not bound"), "{gateway}");
}

#[tokio::test]
async fn a_gateway_that_needs_device_tokens_cannot_delegate_over_http() {
    let site = Site::spawn().await;
    ok_empty(&site.bind("gw-t", "dev-a").await);
    let body = json!({"binaryData": "aGk=", "gatewayInfo": {"delegatedDeviceId": "dev-a"}});
    let token = site.gateway.fresh();
    let answer = site.app.publish_event(&token, &path("gw-t"), body).await;
    assert_error(
        &answer,
        401,
        "UNAUTHENTICATED",
        &["gw-t", "dev-a", "own JWT", "gatewayInfo.gatewayId"],
    );
    assert!(site.app.sink_messages().is_empty());

    // What the refusal advises works: the device's own token, the gateway named. No binding is
    // needed for DEVICE_AUTH_TOKEN_ONLY.
    ok_empty(&site.publish_through("dev-b", "gw-t").await);
    let device = site.flushed("dev-b").await;
    assert_eq!(device["gatewayConfig"]["lastAccessedGatewayId"], "gw-t");
}

#[tokio::test]
async fn a_blocked_device_is_refused_though_bound() {
    let site = Site::spawn().await;
    let blocked = site
        .app
        .admin
        .patch(
            &format!("{}?updateMask=blocked", path("dev-a")),
            json!({"blocked": true}),
        )
        .await;
    assert_eq!(blocked.0, StatusCode::OK, "{}", blocked.1);
    let answer = site.publish_for("dev-a", "aGk=").await;
    assert_error(
        &answer,
        403,
        "PERMISSION_DENIED",
        &["dev-a", "blocked", "unblock"],
    );
    assert!(site.app.sink_messages().is_empty());
}

#[tokio::test]
async fn a_device_that_is_not_a_gateway_cannot_delegate() {
    let site = Site::spawn().await;
    let body = json!({"binaryData": "aGk=", "gatewayInfo": {"delegatedDeviceId": "dev-a"}});
    let token = site.device.fresh();
    let answer = site.app.publish_event(&token, &path("dev-b"), body).await;
    assert_error(
        &answer,
        400,
        "FAILED_PRECONDITION",
        &["dev-b", "not a gateway", "GATEWAY"],
    );
    // The token is checked first: a device's token does not open the gateway's path.
    let answer = site
        .app
        .publish_event(&token, &path("gw-1"), json!({"binaryData": ""}))
        .await;
    assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "{}", answer.1);
    assert!(site.app.sink_messages().is_empty());
}

// ------------------------------------------------------------ gatewayId

#[tokio::test]
async fn a_device_names_the_gateway_it_came_through() {
    let site = Site::spawn().await;
    let app = &site.app;
    ok_empty(&site.publish_through("dev-a", "gw-1").await);
    let messages = app.sink_messages();
    assert_eq!(messages[0]["attributes"]["deviceId"], "dev-a");

    // By numeric id, on GET …/config too.
    let query = format!("?gatewayInfo.gatewayId={}", site.num_id("gw-1").await);
    let token = site.device.fresh();
    let (status, config) = app.get_config(&token, &path("dev-a"), &query).await;
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(config["version"], "1", "{config}");

    let device = site.flushed("dev-a").await;
    assert_eq!(device["gatewayConfig"]["lastAccessedGatewayId"], "gw-1");
}

#[tokio::test]
async fn a_device_naming_a_gateway_it_may_not_use_is_refused() {
    let site = Site::spawn().await;
    let answer = site.publish_through("dev-b", "gw-1").await;
    assert_error(
        &answer,
        403,
        "PERMISSION_DENIED",
        &["dev-b", "not bound", "gw-1", ":bindDeviceToGateway"],
    );
    let answer = site.publish_through("dev-a", "dev-b").await;
    assert_error(
        &answer,
        400,
        "FAILED_PRECONDITION",
        &["dev-b", "not a gateway"],
    );
    let answer = site.publish_through("dev-a", "gw-none").await;
    assert_error(
        &answer,
        404,
        "NOT_FOUND",
        &["gw-none", "does not exist", REG],
    );
    assert!(site.app.sink_messages().is_empty());

    // The device named the gateway, so the device's record keeps the refusal.
    let device = site.flushed("dev-a").await;
    let message = device["lastErrorStatus"]["message"].as_str().unwrap();
    assert!(message.contains("gw-none"), "{device}");
    assert!(device.get("lastEventTime").is_none(), "{device}");
}

#[tokio::test]
async fn association_and_token_needs_the_binding_besides_the_devices_own_token() {
    let site = Site::spawn().await;
    create_gateway(&site.app, "gw-at", "ASSOCIATION_AND_DEVICE_AUTH_TOKEN").await;
    // dev-b's own token, gw-at named: the token alone does not do while dev-b is unbound.
    let answer = site.publish_through("dev-b", "gw-at").await;
    assert_error(
        &answer,
        403,
        "PERMISSION_DENIED",
        &["dev-b", "not bound", "gw-at", ":bindDeviceToGateway"],
    );
    assert!(site.app.sink_messages().is_empty());

    ok_empty(&site.bind("gw-at", "dev-b").await);
    ok_empty(&site.publish_through("dev-b", "gw-at").await);
    let messages = site.app.sink_messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["attributes"]["deviceId"], "dev-b");
    let device = site.flushed("dev-b").await;
    assert_eq!(device["gatewayConfig"]["lastAccessedGatewayId"], "gw-at");
}

// ------------------------------------------------------------ the oneof itself

#[tokio::test]
async fn both_forms_at_once_or_a_bad_id_is_an_invalid_argument() {
    let site = Site::spawn().await;
    let app = &site.app;
    let token = site.gateway.fresh();
    let both = json!({
        "binaryData": "aGk=",
        "gatewayInfo": {"delegatedDeviceId": "dev-a", "gatewayId": "gw-1"},
    });
    let answer = app.publish_event(&token, &path("gw-1"), both).await;
    assert_error(
        &answer,
        400,
        "INVALID_ARGUMENT",
        &["gatewayInfo", "delegatedDeviceId", "gatewayId", "not both"],
    );

    let bad = json!({"state": {"binaryData": "aGk="}, "gatewayInfo": {"delegatedDeviceId": "-x"}});
    let answer = app.set_state(&token, &path("gw-1"), bad).await;
    assert_error(
        &answer,
        400,
        "INVALID_ARGUMENT",
        &["gatewayInfo.delegatedDeviceId", "-x"],
    );

    let query = "?gatewayInfo.gatewayId=gw-1&gateway_info.delegated_device_id=dev-a";
    let answer = app.get_config(&token, &path("gw-1"), query).await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["not both"]);

    let wrong_type = json!({"binaryData": "aGk=", "gatewayInfo": "dev-a"});
    let answer = app.publish_event(&token, &path("gw-1"), wrong_type).await;
    assert_error(&answer, 400, "INVALID_ARGUMENT", &["gatewayInfo"]);
    assert!(app.sink_messages().is_empty());
}
