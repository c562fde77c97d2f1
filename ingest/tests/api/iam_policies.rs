//! IAM on the admin API against a real `ingest serve`: callers known by the principal their
//! bearer token maps to (`--admin-tokens-file`) or by the Google identity Cloud Run verified,
//! holding only what the registry's policy grants unless they are owners. Refusals are Google's
//! `PERMISSION_DENIED` naming the permission; the policy itself is read, written with an etag
//! and tested here through the raw API (the official client does the same in
//! `python_admin_client`).

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::IngestProcess;

use crate::support::{PROJECT, REGION, spawn_ingest};

const OWNER: &str = "owner-token-0123456789abcdef";
const VIEWER: &str = "viewer-token-0123456789abcdef";
const CONTROLLER: &str = "controller-token-0123456789abcdef";
const NOBODY: &str = "nobody-token-0123456789abcdef";

/// An admin API and who calls it.
struct Admin {
    base: String,
    http: reqwest::Client,
    _process: IngestProcess,
}

/// `ingest serve --role admin` reading its bearer tokens from `file`.
fn with_tokens_file_at(file: &std::path::Path) -> Admin {
    let process = spawn_ingest(
        &[
            "--role",
            "admin",
            "--admin-tokens-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    Admin {
        base: format!(
            "{}/v1/projects/{PROJECT}/locations/{REGION}",
            process.admin_url()
        ),
        http: reqwest::Client::new(),
        _process: process,
    }
}

impl Admin {
    /// Sends `method` to `path` (below the location) with `auth` as the Authorization header.
    async fn call(
        &self,
        auth: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", auth);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn as_token(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(&format!("Bearer {token}"), method, path, body)
            .await
    }
}

/// A refusal's ErrorInfo reason and metadata.
fn info(body: &Value) -> (&str, &Value) {
    let info = &body["error"]["details"][0];
    (info["reason"].as_str().unwrap_or(""), &info["metadata"])
}

fn assert_denied(answer: &(StatusCode, Value), permission: &str) {
    let (status, body) = answer;
    assert_eq!(*status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED", "{body}");
    let (reason, metadata) = info(body);
    assert_eq!(reason, "IAM_PERMISSION_DENIED", "{body}");
    assert_eq!(metadata["permission"], permission, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("Permission '{permission}' denied")),
        "{message}"
    );
}

fn with_tokens_file() -> Admin {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin-tokens");
    std::fs::write(
        &file,
        format!(
            "# token  principal  project roles\n\
             {OWNER} user:owner@example.com roles/owner\n\
             {VIEWER} user:viewer@example.com\n\
             {CONTROLLER} serviceAccount:ops@demo.iam.gserviceaccount.com\n\
             {NOBODY} user:nobody@example.com\n"
        ),
    )
    .unwrap();
    // The file is read at start; the service keeps its tokens when the directory goes.
    with_tokens_file_at(&file)
}

#[tokio::test]
async fn a_viewer_can_list_but_not_create_and_a_controller_can_configure_but_not_delete() {
    let admin = with_tokens_file();
    let owner = |m, p: &'static str, b| admin.as_token(OWNER, m, p, b);
    let (status, _) = owner(Method::POST, "/registries", Some(json!({"id": "reg-1"}))).await;
    assert_eq!(status, 200);
    owner(Method::POST, "/registries", Some(json!({"id": "reg-2"}))).await;
    let (status, _) = owner(
        Method::POST,
        "/registries/reg-1/devices",
        Some(json!({"id": "dev-1"})),
    )
    .await;
    assert_eq!(status, 200);

    // An empty policy leaves the registry to its owners.
    let (status, empty) = owner(
        Method::POST,
        "/registries/reg-1:getIamPolicy",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty, json!({"version": 1, "etag": "ACAB"}));
    for token in [VIEWER, CONTROLLER] {
        let answer = admin
            .as_token(token, Method::GET, "/registries/reg-1/devices", None)
            .await;
        assert_denied(&answer, "cloudiot.devices.list");
    }

    let policy = json!({"policy": {"etag": "ACAB", "bindings": [
        {"role": "roles/cloudiot.viewer", "members": ["user:Viewer@example.com"]},
        {"role": "roles/cloudiot.deviceController",
         "members": ["serviceAccount:ops@demo.iam.gserviceaccount.com"]},
    ]}});
    let (status, set) = owner(
        Method::POST,
        "/registries/reg-1:setIamPolicy",
        Some(policy.clone()),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(
        set["bindings"][0]["members"],
        json!(["user:viewer@example.com"])
    );
    assert_ne!(set["etag"], "ACAB");
    let (_, read) = owner(Method::POST, "/registries/reg-1:getIamPolicy", None).await;
    assert_eq!(read, set);

    // The viewer reads, and nothing more.
    let viewer = |m, p: &'static str, b| admin.as_token(VIEWER, m, p, b);
    let (status, list) = viewer(Method::GET, "/registries/reg-1/devices", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["devices"][0]["id"], "dev-1");
    let (status, _) = viewer(
        Method::GET,
        "/registries/reg-1/devices/dev-1/configVersions",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let answer = viewer(
        Method::POST,
        "/registries/reg-1/devices",
        Some(json!({"id": "dev-2"})),
    )
    .await;
    assert_denied(&answer, "cloudiot.devices.create");
    let hint = answer.1["error"]["message"].as_str().unwrap();
    assert!(
        hint.contains("roles/cloudiot.provisioner") && hint.contains("user:viewer@example.com"),
        "{hint}"
    );
    assert_denied(
        &viewer(
            Method::POST,
            "/registries/reg-1/devices/dev-1:modifyCloudToDeviceConfig",
            Some(json!({"binaryData": "AA=="})),
        )
        .await,
        "cloudiot.devices.updateConfig",
    );
    assert_denied(
        &viewer(Method::POST, "/registries/reg-1:getIamPolicy", None).await,
        "cloudiot.registries.getIamPolicy",
    );
    assert_denied(
        &viewer(Method::GET, "/registries", None).await,
        "cloudiot.registries.list",
    );
    assert_denied(
        &viewer(Method::GET, "/registries/reg-2/devices", None).await,
        "cloudiot.devices.list",
    );
    assert_denied(
        &viewer(Method::GET, "/registries/no-such-reg", None).await,
        "cloudiot.registries.get",
    );

    // The device controller changes configs and sends commands, but cannot delete.
    let controller = |m, p: &'static str, b| admin.as_token(CONTROLLER, m, p, b);
    let (status, config) = controller(
        Method::POST,
        "/registries/reg-1/devices/dev-1:modifyCloudToDeviceConfig",
        Some(json!({"binaryData": "ZmFuPW9u"})),
    )
    .await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["version"], "2");
    assert_denied(
        &controller(Method::DELETE, "/registries/reg-1/devices/dev-1", None).await,
        "cloudiot.devices.delete",
    );
    assert_denied(
        &controller(
            Method::PATCH,
            "/registries/reg-1?updateMask=logLevel",
            Some(json!({"logLevel": "DEBUG"})),
        )
        .await,
        "cloudiot.registries.update",
    );
    let (status, _) = owner(Method::GET, "/registries/reg-1/devices/dev-1", None).await;
    assert_eq!(status, 200, "the refused delete left the device");

    // Each caller learns what it holds, whatever the policy says about others.
    let asked = json!({"permissions": ["cloudiot.devices.get", "cloudiot.devices.updateConfig", "cloudiot.devices.delete"]});
    let tested = |token| {
        admin.as_token(
            token,
            Method::POST,
            "/registries/reg-1:testIamPermissions",
            Some(asked.clone()),
        )
    };
    assert_eq!(
        tested(VIEWER).await.1,
        json!({"permissions": ["cloudiot.devices.get"]})
    );
    assert_eq!(
        tested(CONTROLLER).await.1,
        json!({"permissions": ["cloudiot.devices.get", "cloudiot.devices.updateConfig"]})
    );
    assert_eq!(tested(NOBODY).await.1, json!({}));
    assert_eq!(tested(OWNER).await.1, asked);
    let (status, bad) = admin
        .as_token(
            VIEWER,
            Method::POST,
            "/registries/reg-1:testIamPermissions",
            Some(json!({"permissions": ["cloudiot.*"]})),
        )
        .await;
    assert_eq!(status, 400, "{bad}");

    // A stale etag loses; a bad policy is refused naming the field; neither changes anything.
    let (status, stale) = owner(Method::POST, "/registries/reg-1:setIamPolicy", Some(policy)).await;
    assert_eq!(status, 409, "{stale}");
    assert_eq!(info(&stale).0, "IAM_POLICY_ETAG_MISMATCH");
    let conditional = json!({"policy": {"bindings": [{"role": "roles/cloudiot.viewer",
        "members": ["user:nobody@example.com"], "condition": {"expression": "true"}}]}});
    let (status, refused) = owner(
        Method::POST,
        "/registries/reg-1:setIamPolicy",
        Some(conditional),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(info(&refused).1["field"], "policy.bindings[0].condition");
    let (_, unchanged) = owner(Method::POST, "/registries/reg-1:getIamPolicy", None).await;
    assert_eq!(unchanged, set);

    // The owner empties the policy without an etag; the grants are gone at once.
    let (status, _) = owner(
        Method::POST,
        "/registries/reg-1:setIamPolicy",
        Some(json!({"policy": {}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_denied(
        &viewer(Method::GET, "/registries/reg-1/devices", None).await,
        "cloudiot.devices.list",
    );

    let (status, unknown) = admin
        .as_token(
            "not-a-token-of-this-server",
            Method::GET,
            "/registries",
            None,
        )
        .await;
    assert_eq!(
        (status, info(&unknown).0),
        (StatusCode::UNAUTHORIZED, "ADMIN_TOKEN_INVALID")
    );
}

/// A Google ID token as Cloud Run passes it on after checking it: its signature replaced.
fn id_token(email: &str) -> String {
    let part =
        |json: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string());
    format!(
        "Bearer {}.{}.SIGNATURE_REMOVED_BY_GOOGLE",
        part(json!({"alg": "RS256", "typ": "JWT"})),
        part(
            json!({"email": email, "email_verified": true, "aud": "https://admin.example.run.app"})
        )
    )
}

#[tokio::test]
async fn behind_cloud_run_the_verified_email_is_the_principal_and_only_named_owners_hold_everything()
 {
    let process = spawn_ingest(
        &[
            "--role",
            "admin",
            "--admin-addr",
            "0.0.0.0:0",
            "--admin-trust-cloud-run-iam",
            "--admin-owners",
            "user:ops@example.com",
        ],
        &[("K_SERVICE", "iot-admin")],
    );
    let url = process.admin_url().replace("0.0.0.0", "127.0.0.1");
    let admin = Admin {
        base: format!("{url}/v1/projects/{PROJECT}/locations/{REGION}"),
        http: reqwest::Client::new(),
        _process: process,
    };
    let ops = id_token("Ops@Example.com");
    let dev = id_token("dev@example.com");
    let (status, created) = admin
        .call(
            &ops,
            Method::POST,
            "/registries",
            Some(json!({"id": "reg-1"})),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert_denied(
        &admin
            .call(&dev, Method::GET, "/registries/reg-1/devices", None)
            .await,
        "cloudiot.devices.list",
    );

    let grant = json!({"policy": {"bindings": [{"role": "roles/cloudiot.provisioner", "members": ["domain:example.com"]}]}});
    let (status, _) = admin
        .call(
            &ops,
            Method::POST,
            "/registries/reg-1:setIamPolicy",
            Some(grant),
        )
        .await;
    assert_eq!(status, 200);
    let (status, device) = admin
        .call(
            &dev,
            Method::POST,
            "/registries/reg-1/devices",
            Some(json!({"id": "dev-1"})),
        )
        .await;
    assert_eq!(
        status, 200,
        "a provisioner of the domain creates devices: {device}"
    );
    assert_denied(
        &admin
            .call(&dev, Method::DELETE, "/registries/reg-1", None)
            .await,
        "cloudiot.registries.delete",
    );
    let outsider = id_token("someone@elsewhere.org");
    assert_denied(
        &admin
            .call(
                &outsider,
                Method::GET,
                "/registries/reg-1/devices/dev-1",
                None,
            )
            .await,
        "cloudiot.devices.get",
    );

    // X-Serverless-Authorization, when present, is the identity Cloud Run checked.
    let (status, _) = admin
        .http
        .get(format!("{}/registries", admin.base))
        .header("authorization", "Bearer some-app-token")
        .header("x-serverless-authorization", &ops)
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, 200);
    let (status, missing) = admin.call("", Method::GET, "/registries", None).await;
    assert_eq!(
        (status, info(&missing).0),
        (StatusCode::UNAUTHORIZED, "IDENTITY_MISSING")
    );
}

#[tokio::test]
async fn an_edited_tokens_file_takes_effect_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin-tokens");
    std::fs::write(
        &file,
        format!("{OWNER} user:owner@example.com roles/owner\n"),
    )
    .unwrap();
    let admin = with_tokens_file_at(&file);
    let list = |token| admin.as_token(token, Method::GET, "/registries", None);
    assert_eq!(list(OWNER).await.0, StatusCode::OK);
    assert_eq!(list(VIEWER).await.0, StatusCode::UNAUTHORIZED);

    // The owner's token leaked: the operator replaces its line with a new person's.
    std::fs::write(
        &file,
        format!("{VIEWER} user:viewer@example.com roles/owner # rotated\n"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    while list(VIEWER).await.0 != StatusCode::OK {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "the new token was not accepted within 15 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(list(OWNER).await.0, StatusCode::UNAUTHORIZED);

    // A broken edit is logged and changes nothing.
    std::fs::write(&file, "oops\n").unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    assert_eq!(list(VIEWER).await.0, StatusCode::OK);
}
