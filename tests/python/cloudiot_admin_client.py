"""An operator's script written against Google's official IoT Core client library,
google-cloud-iot 2.9.2, pointed at ingest's admin API instead of cloudiot.googleapis.com.

It uses the REST transport exactly as a user switching over would: `client_options={"api_endpoint":
...}` and, for the admin API's bearer tokens, `google.oauth2.credentials.Credentials(token)`; the
library sends `$alt=json;enum-encoding=int` and enums as numbers. A second client, holding a
token whose principal has no project role, checks the registry's IAM policy being enforced. Every call's answer is checked; the first mismatch fails the script with a
message naming the call. At the end it prints one JSON line, `{"report": ...}`, with what it made,
for the Rust test to check through the raw API.

It runs in phases, so the Rust test can act between them:

- `--phase main` (the default) does all of the above;
- `--phase finish` then checks the two states the test recorded for `dev-rsa-cert` through the
  HTTP device bridge (`--states S1,S2`, oldest first), deletes every device left and the registry,
  and checks both are gone;
- `--phase anonymous` needs no tokens: against an `ingest serve` without any, on loopback, it
  uses `google.auth.credentials.AnonymousCredentials()`, as Google's own emulator guides do, and
  creates, reads and lists a device in a registry of its own.

    cloudiot_admin_client.py --endpoint http://127.0.0.1:8081 --project P --region R \\
        --registry REG --keys DIR --topic projects/P/topics/T --token OWNER --viewer-token VIEWER
    cloudiot_admin_client.py --phase finish --states S1,S2 ... (the same flags)
    cloudiot_admin_client.py --phase anonymous --endpoint ... --project P --region R \\
        --registry REG --keys DIR --topic projects/P/topics/T
"""

import argparse
import base64
import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")  # google.api_core's notices about Python versions

from google.api_core import exceptions  # noqa: E402
from google.api_core.client_options import ClientOptions  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.oauth2.credentials import Credentials  # noqa: E402
from google.cloud import iot_v1  # noqa: E402
from google.protobuf import field_mask_pb2  # noqa: E402

FORMATS = [
    ("dev-rsa", "rsa_public", iot_v1.PublicKeyFormat.RSA_PEM),
    ("dev-rsa-cert", "rsa_cert", iot_v1.PublicKeyFormat.RSA_X509_PEM),
    ("dev-ec", "ec_public", iot_v1.PublicKeyFormat.ES256_PEM),
    ("dev-ec-cert", "ec_cert", iot_v1.PublicKeyFormat.ES256_X509_PEM),
]


def check(what, got, expected):
    if got != expected:
        sys.exit(f"{what}: expected {expected!r}, got {got!r}")


def refused(what, call, status, reason):
    """The call fails with this HTTP status and this google.rpc.ErrorInfo reason. (Over REST,
    google.api_core picks the exception class by HTTP status alone: 409 is `Conflict` whether
    the server said ALREADY_EXISTS or ABORTED, so the reason is what tells them apart.)"""
    try:
        call()
    except exceptions.GoogleAPICallError as err:
        check(f"{what}: HTTP status", err.code, status)
        # Over REST the details arrive as the JSON objects of the error body.
        infos = [d for d in err.details if isinstance(d, dict)
                 and d.get("@type") == "type.googleapis.com/google.rpc.ErrorInfo"]
        check(f"{what}: ErrorInfo reason", [i.get("reason") for i in infos], [reason])
        return
    sys.exit(f"{what}: expected a refusal ({status} {reason}), but the call succeeded")


def iam_checks(client, viewer, parent, name, every):
    """The registry's IAM policy: empty at first, set with an etag, enforced on the viewer."""
    empty = client.get_iam_policy(resource=name)
    check("get_iam_policy before any is set", (list(empty.bindings), empty.etag),
          ([], base64.b64decode("ACAB")))
    refused("viewer lists devices before any grant", lambda: list(viewer.list_devices(parent=name)),
            403, "IAM_PERMISSION_DENIED")
    grant = {"role": "roles/cloudiot.viewer", "members": ["user:viewer@example.com"]}
    policy = client.set_iam_policy(request={"resource": name, "policy": {"bindings": [grant],
                                                                          "etag": empty.etag}})
    check("set_iam_policy bindings", [(b.role, list(b.members)) for b in policy.bindings],
          [("roles/cloudiot.viewer", ["user:viewer@example.com"])])
    check("set_iam_policy gives a new etag", policy.etag not in (b"", empty.etag), True)
    check("get_iam_policy after set", client.get_iam_policy(resource=name), policy)
    refused("set_iam_policy with a stale etag", lambda: client.set_iam_policy(
        request={"resource": name, "policy": {"bindings": [], "etag": empty.etag}}),
        409, "IAM_POLICY_ETAG_MISMATCH")
    refused("set_iam_policy with an unknown role", lambda: client.set_iam_policy(
        request={"resource": name, "policy": {"bindings": [{"role": "roles/cloudiot.god",
                                                            "members": ["user:a@example.com"]}]}}),
        400, "INVALID_ARGUMENT")
    asked = ["cloudiot.devices.list", "cloudiot.devices.create", "cloudiot.registries.setIamPolicy"]
    check("test_iam_permissions as owner",
          list(client.test_iam_permissions(resource=name, permissions=asked).permissions), asked)
    check("test_iam_permissions as viewer",
          list(viewer.test_iam_permissions(resource=name, permissions=asked).permissions),
          ["cloudiot.devices.list"])
    check("viewer lists devices", sorted(d.id for d in viewer.list_devices(parent=name)), every)
    check("viewer reads a registry", viewer.get_device_registry(name=name).name, name)
    refused("viewer creates a device", lambda: viewer.create_device(parent=name, device={"id": "dev-x"}),
            403, "IAM_PERMISSION_DENIED")
    refused("viewer reads the policy", lambda: viewer.get_iam_policy(resource=name),
            403, "IAM_PERMISSION_DENIED")
    refused("viewer lists registries (a project permission)",
            lambda: list(viewer.list_device_registries(parent=parent)), 403, "IAM_PERMISSION_DENIED")


def registry_pages(client, parent, name):
    """A second registry, so pages of one registry each cover both; deleted again at once."""
    other = f"{name}-b"
    client.create_device_registry(parent=parent, device_registry={"id": other.rsplit("/", 1)[1]})
    pages = list(client.list_device_registries(request={"parent": parent, "page_size": 1}).pages)
    check("list_device_registries pages of 1", [len(p.device_registries) for p in pages], [1, 1])
    check("list_device_registries pages of 1 cover both once",
          sorted(r.name for p in pages for r in p.device_registries), [name, other])
    client.delete_device_registry(name=other)
    refused("get_device_registry, deleted", lambda: client.get_device_registry(name=other),
            404, "REGISTRY_NOT_FOUND")


def finish(client, name, states):
    """The states the test recorded through the device bridge, then everything deleted."""
    device_name = f"{name}/devices/dev-rsa-cert"
    listed = client.list_device_states(name=device_name).device_states
    check("list_device_states: the recorded states, newest first",
          [s.binary_data for s in listed], [s.encode() for s in reversed(states)])
    check("list_device_states: update times newest first",
          [s.update_time for s in listed] == sorted((s.update_time for s in listed), reverse=True),
          True)
    check("get_device state is the newest",
          client.get_device(name=device_name).state.binary_data, states[-1].encode())
    left = [d.id for d in client.list_devices(parent=name)]
    check("devices left before deleting", left, ["dev-ec", "dev-rsa", "dev-rsa-cert"])
    for device_id in left:
        client.delete_device(name=f"{name}/devices/{device_id}")
    check("list_devices after deleting each", list(client.list_devices(parent=name)), [])
    client.delete_device_registry(name=name)
    refused("get_device_registry, deleted", lambda: client.get_device_registry(name=name),
            404, "REGISTRY_NOT_FOUND")
    refused("get_device in a deleted registry",
            lambda: client.get_device(name=device_name), 404, "DEVICE_NOT_FOUND")


def anonymous(client, parent, name, args):
    """No bearer token at all: AnonymousCredentials against an ingest that wants none."""
    registry = client.create_device_registry(parent=parent, device_registry={
        "id": args.registry,
        "event_notification_configs": [{"pubsub_topic_name": args.topic}]})
    check("anonymous create_device_registry name", registry.name, name)
    with open(os.path.join(args.keys, "ec_public.pem")) as f:
        pem = f.read()
    created = client.create_device(parent=name, device={
        "id": "dev-anon",
        "credentials": [{"public_key": {"format": iot_v1.PublicKeyFormat.ES256_PEM, "key": pem}}],
        "metadata": {"owner": "nobody"}})
    check("anonymous create_device numId", created.num_id > 0, True)
    check("anonymous create_device name", created.name, f"{name}/devices/{created.num_id}")
    got = client.get_device(name=f"{name}/devices/dev-anon")
    check("anonymous get_device",
          (got.num_id, got.credentials[0].public_key.format, got.credentials[0].public_key.key,
           dict(got.metadata), got.config.version),
          (created.num_id, iot_v1.PublicKeyFormat.ES256_PEM, pem, {"owner": "nobody"}, 1))
    check("anonymous list_devices",
          [(d.id, d.num_id) for d in client.list_devices(parent=name)],
          [("dev-anon", created.num_id)])
    check("anonymous list_device_registries",
          [r.id for r in client.list_device_registries(parent=parent)], [args.registry])
    refused("anonymous get_device, unknown",
            lambda: client.get_device(name=f"{name}/devices/nobody"), 404, "DEVICE_NOT_FOUND")
    print(json.dumps({"report": {"numIds": {"dev-anon": str(created.num_id)}}}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", choices=["main", "finish", "anonymous"], default="main")
    for flag in ["endpoint", "project", "region", "registry", "keys", "topic"]:
        parser.add_argument(f"--{flag}", required=True)
    for flag in ["token", "viewer-token", "states"]:
        parser.add_argument(f"--{flag}")
    args = parser.parse_args()

    def client_with(credentials):
        return iot_v1.DeviceManagerClient(
            transport="rest",
            credentials=credentials,
            client_options=ClientOptions(api_endpoint=args.endpoint),
        )
    parent = f"projects/{args.project}/locations/{args.region}"
    name = f"{parent}/registries/{args.registry}"
    if args.phase == "anonymous":
        return anonymous(client_with(AnonymousCredentials()), parent, name, args)
    client = client_with(Credentials(token=args.token))
    if args.phase == "finish":
        return finish(client, name, args.states.split(","))
    viewer = client_with(Credentials(token=args.viewer_token))

    # Registries, with every enum the client sends as a number.
    registry = client.create_device_registry(
        parent=parent,
        device_registry={
            "id": args.registry,
            "event_notification_configs": [{"pubsub_topic_name": args.topic}],
            "mqtt_config": {"mqtt_enabled_state": iot_v1.MqttState.MQTT_ENABLED},
            "http_config": {"http_enabled_state": iot_v1.HttpState.HTTP_DISABLED},
            "log_level": iot_v1.LogLevel.INFO,
        },
    )
    check("create_device_registry name", registry.name, name)
    check("create_device_registry httpConfig", registry.http_config.http_enabled_state,
          iot_v1.HttpState.HTTP_DISABLED)
    check("create_device_registry logLevel", registry.log_level, iot_v1.LogLevel.INFO)
    refused("create_device_registry twice",
            lambda: client.create_device_registry(parent=parent, device_registry={"id": args.registry}),
            409, "REGISTRY_ALREADY_EXISTS")
    check("get_device_registry topic",
          client.get_device_registry(name=name).event_notification_configs[0].pubsub_topic_name,
          args.topic)
    listed = [r.id for r in client.list_device_registries(parent=parent)]
    check("list_device_registries", args.registry in listed, True)
    updated = client.update_device_registry(
        device_registry={"name": name, "http_config": {"http_enabled_state": iot_v1.HttpState.HTTP_ENABLED},
                         "log_level": iot_v1.LogLevel.DEBUG},
        update_mask=field_mask_pb2.FieldMask(paths=["http_config.http_enabled_state", "log_level"]),
    )
    check("update_device_registry httpConfig", updated.http_config.http_enabled_state,
          iot_v1.HttpState.HTTP_ENABLED)
    check("update_device_registry logLevel", updated.log_level, iot_v1.LogLevel.DEBUG)

    # Devices with each of the four key formats.
    num_ids = {}
    for device_id, key, key_format in FORMATS:
        with open(os.path.join(args.keys, f"{key}.pem")) as f:
            pem = f.read()
        device = client.create_device(parent=name, device={
            "id": device_id,
            "credentials": [{"public_key": {"format": key_format, "key": pem}}],
            "metadata": {"site": "barn"},
        })
        check(f"create_device {device_id} format", device.credentials[0].public_key.format, key_format)
        check(f"create_device {device_id} key", device.credentials[0].public_key.key, pem)
        check(f"create_device {device_id} numId", device.num_id > 0, True)
        # IoT Core named a device by its numeric id in every answer.
        check(f"create_device {device_id} name", device.name, f"{name}/devices/{device.num_id}")
        # IoT Core's rule: every device has config version 1, empty, from its creation.
        check(f"create_device {device_id} config", (device.config.version, device.config.binary_data),
              (1, b""))
        num_ids[device_id] = device.num_id
    refused("create_device with an RSA certificate as RSA_PEM", lambda: client.create_device(
        parent=name, device={"id": "dev-bad", "credentials": [{"public_key": {
            "format": iot_v1.PublicKeyFormat.RSA_PEM,
            "key": open(os.path.join(args.keys, "rsa_cert.pem")).read()}}]}),
        400, "INVALID_ARGUMENT")

    device_name = f"{name}/devices/dev-rsa"
    device = client.get_device(name=device_name)
    check("get_device metadata", dict(device.metadata), {"site": "barn"})
    check("get_device name", device.name, f"{name}/devices/{num_ids['dev-rsa']}")
    masked = client.get_device(request={"name": device_name,
                                        "field_mask": field_mask_pb2.FieldMask(paths=["metadata"])})
    check("get_device fieldMask keeps metadata", dict(masked.metadata), {"site": "barn"})
    check("get_device fieldMask drops credentials", len(masked.credentials), 0)

    every = [d.id for d in client.list_devices(parent=name)]
    check("list_devices", every, sorted(d for d, _, _ in FORMATS))
    by_id = [d.id for d in client.list_devices(request={"parent": name, "device_ids": ["dev-ec", "dev-rsa"]})]
    check("list_devices deviceIds", by_id, ["dev-ec", "dev-rsa"])
    by_num = [d.id for d in client.list_devices(request={"parent": name,
                                                         "device_num_ids": [num_ids["dev-ec-cert"]]})]
    check("list_devices deviceNumIds", by_num, ["dev-ec-cert"])
    def gateway_list(options):
        return [d.id for d in client.list_devices(request={"parent": name, "gateway_list_options": options})]
    # A gateway, bound to one device: every gatewayListOptions filter, then unbound and gone.
    gateway = client.create_device(parent=name, device={"id": "gw-1", "gateway_config": {
        "gateway_type": iot_v1.GatewayType.GATEWAY,
        "gateway_auth_method": iot_v1.GatewayAuthMethod.ASSOCIATION_AND_DEVICE_AUTH_TOKEN}})
    check("create_device gateway type", gateway.gateway_config.gateway_type, iot_v1.GatewayType.GATEWAY)
    check("create_device gateway auth method", gateway.gateway_config.gateway_auth_method,
          iot_v1.GatewayAuthMethod.ASSOCIATION_AND_DEVICE_AUTH_TOKEN)
    client.bind_device_to_gateway(request={"parent": name, "gateway_id": "gw-1",
                                           "device_id": str(num_ids["dev-ec"])})
    check("list_devices gatewayType GATEWAY", gateway_list({"gateway_type": iot_v1.GatewayType.GATEWAY}),
          ["gw-1"])
    check("list_devices gatewayType NON_GATEWAY",
          gateway_list({"gateway_type": iot_v1.GatewayType.NON_GATEWAY}), every)
    check("list_devices associationsGatewayId", gateway_list({"associations_gateway_id": "gw-1"}),
          ["dev-ec"])
    check("list_devices associationsDeviceId", gateway_list({"associations_device_id": "dev-ec"}),
          ["gw-1"])
    refused("bind_device_to_gateway a gateway to itself", lambda: client.bind_device_to_gateway(
        request={"parent": name, "gateway_id": "gw-1", "device_id": "gw-1"}), 400, "FAILED_PRECONDITION")
    refused("delete_device a gateway with a bound device", lambda: client.delete_device(
        name=f"{name}/devices/gw-1"), 400, "FAILED_PRECONDITION")
    client.unbind_device_from_gateway(request={"parent": name, "gateway_id": "gw-1", "device_id": "dev-ec"})
    check("list_devices associationsGatewayId after unbind",
          gateway_list({"associations_gateway_id": "gw-1"}), [])
    client.delete_device(name=f"{name}/devices/gw-1")
    pages = list(client.list_devices(request={"parent": name, "page_size": 3}).pages)
    check("list_devices pages of 3", [len(p.devices) for p in pages], [3, 1])
    check("list_devices pages of 3 cover every device once",
          [d.id for p in pages for d in p.devices], every)
    masked = list(client.list_devices(request={
        "parent": name, "field_mask": field_mask_pb2.FieldMask(paths=["credentials"])}))
    check("list_devices fieldMask credentials: ids", [d.id for d in masked], every)
    check("list_devices fieldMask credentials: keys kept",
          [d.credentials[0].public_key.format for d in masked],
          [f for _, _, f in sorted(FORMATS)])
    check("list_devices fieldMask credentials: metadata dropped",
          [dict(d.metadata) for d in masked], [{}] * len(every))
    check("list_devices fieldMask credentials: numId and name kept",
          [(d.num_id, d.name) for d in masked],
          [(num_ids[d], f"{name}/devices/{num_ids[d]}") for d in every])
    registry_pages(client, parent, name)

    iam_checks(client, viewer, parent, name, every)

    blocked = client.update_device(
        device={"name": device_name, "blocked": True, "metadata": {"site": "field"}},
        update_mask=field_mask_pb2.FieldMask(paths=["blocked", "metadata"]),
    )
    check("update_device blocked", blocked.blocked, True)
    check("update_device metadata", dict(blocked.metadata), {"site": "field"})

    # Configs: unconditional, conditional on the current version, and a stale one refused.
    first = client.modify_cloud_to_device_config(request={"name": device_name, "binary_data": b"fan=low"})
    # IoT Core's documented rate: a device's config changes at most once a second.
    refused("modify_cloud_to_device_config at once again", lambda: client.modify_cloud_to_device_config(
        request={"name": device_name, "binary_data": b"fan=high"}), 429, "CONFIG_RATE_EXCEEDED")
    time.sleep(1.0)
    second = client.modify_cloud_to_device_config(request={
        "name": device_name, "binary_data": b"fan=high", "version_to_update": first.version})
    check("modify_cloud_to_device_config first change", first.version, 2)
    check("modify_cloud_to_device_config conditional", second.version, first.version + 1)
    check("modify_cloud_to_device_config data", second.binary_data, b"fan=high")
    refused("modify_cloud_to_device_config stale", lambda: client.modify_cloud_to_device_config(request={
        "name": device_name, "binary_data": b"fan=off", "version_to_update": first.version}),
        409, "CONFIG_VERSION_MISMATCH")
    versions = client.list_device_config_versions(name=device_name).device_configs
    check("list_device_config_versions: every version, newest first",
          [(c.version, c.binary_data) for c in versions],
          [(3, b"fan=high"), (2, b"fan=low"), (1, b"")])
    check("list_device_states", len(client.list_device_states(name=device_name).device_states), 0)

    refused("send_command_to_device, not connected", lambda: client.send_command_to_device(
        request={"name": device_name, "binary_data": b"reboot"}), 400, "DEVICE_NOT_CONNECTED")
    refused("get_device, unknown", lambda: client.get_device(name=f"{name}/devices/nobody"),
            404, "DEVICE_NOT_FOUND")

    client.delete_device(name=f"{name}/devices/dev-ec-cert")
    refused("get_device, deleted", lambda: client.get_device(name=f"{name}/devices/dev-ec-cert"),
            404, "DEVICE_NOT_FOUND")
    refused("delete_device_registry with devices", lambda: client.delete_device_registry(name=name),
            400, "FAILED_PRECONDITION")

    print(json.dumps({"report": {"numIds": {d: str(n) for d, n in num_ids.items()},
                                 "configVersion": second.version}}))


if __name__ == "__main__":
    main()
