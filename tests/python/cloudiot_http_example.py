#!/usr/bin/env python
"""A device that speaks Cloud IoT Core's HTTP bridge the way Google's published sample did.

Written for the end-to-end tests, in the shape of Google's cloudiot_http_example.py: the same
flags, a PyJWT token with iat/exp/aud, URL-safe base64 in `binary_data`, `requests` for the
calls, and anything other than HTTP 200 treated as failure. It is a client nobody on this project
wrote the server-side assumptions into, so the service must meet it where IoT Core did.

    python cloudiot_http_example.py --project_id=demo-project --registry_id=reg-1 \
        --device_id=dev-1 --private_key_file=rsa_private.pem --algorithm=RS256 \
        --base_url=http://127.0.0.1:8080/v1 --message_type=event --num_messages=5

Each request prints one line with its HTTP status; the script exits 1 at the first non-200.
"""

import argparse
import base64
import datetime
import json
import sys
import time

import jwt
import requests

_BASE_URL = "https://cloudiotdevice.googleapis.com/v1"


def create_jwt(project_id, private_key_file, algorithm, expires_minutes=60):
    """Creates a JWT (https://jwt.io) to authenticate this device.

    The audience is the project id, as Cloud IoT Core required. The key file is read as it is:
    PKCS#8, SEC1 (`EC PRIVATE KEY`) and PKCS#1 PEM all work with PyJWT and `cryptography`.
    """
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    token = {
        "iat": now,
        "exp": now + datetime.timedelta(minutes=expires_minutes),
        "aud": project_id,
    }
    with open(private_key_file, "r") as f:
        private_key = f.read()
    print(
        "Creating JWT using {} from private key file {}".format(
            algorithm, private_key_file
        )
    )
    return jwt.encode(token, private_key, algorithm=algorithm)


def _headers(jwt_token):
    return {
        "authorization": "Bearer {}".format(jwt_token),
        "content-type": "application/json",
        "cache-control": "no-cache",
    }


def _device_path(base_url, project_id, cloud_region, registry_id, device_id):
    return "{}/projects/{}/locations/{}/registries/{}/devices/{}".format(
        base_url, project_id, cloud_region, registry_id, device_id
    )


def publish_message(
    message,
    message_type,
    base_url,
    project_id,
    cloud_region,
    registry_id,
    device_id,
    jwt_token,
):
    """Publishes one event, or sets the device's state, over the HTTP bridge."""
    url_suffix = "publishEvent" if message_type == "event" else "setState"
    publish_url = "{}:{}".format(
        _device_path(base_url, project_id, cloud_region, registry_id, device_id),
        url_suffix,
    )
    msg_bytes = base64.urlsafe_b64encode(message.encode("utf-8"))
    if message_type == "event":
        body = {"binary_data": msg_bytes.decode("ascii")}
    else:
        body = {"state": {"binary_data": msg_bytes.decode("ascii")}}
    return requests.post(
        publish_url, data=json.dumps(body), headers=_headers(jwt_token), timeout=30
    )


def get_config(
    version, base_url, project_id, cloud_region, registry_id, device_id, jwt_token
):
    """Fetches the device's configuration newer than `version` (0: the latest)."""
    config_url = "{}/config?local_version={}".format(
        _device_path(base_url, project_id, cloud_region, registry_id, device_id),
        version,
    )
    return requests.get(config_url, headers=_headers(jwt_token), timeout=30)


def _fail(what, resp):
    print("{} failed: HTTP {}: {}".format(what, resp.status_code, resp.text))
    sys.exit(1)


def parse_command_line_args():
    """Parses command line arguments."""
    parser = argparse.ArgumentParser(
        description="Example Google Cloud IoT Core HTTP device connection code."
    )
    parser.add_argument("--project_id", required=True, help="GCP cloud project name")
    parser.add_argument("--registry_id", required=True, help="Cloud IoT Core registry id")
    parser.add_argument("--device_id", required=True, help="Cloud IoT Core device id")
    parser.add_argument(
        "--private_key_file", required=True, help="Path to private key file."
    )
    parser.add_argument(
        "--algorithm",
        choices=("RS256", "ES256"),
        required=True,
        help="The encryption algorithm to use to generate the JWT.",
    )
    parser.add_argument(
        "--cloud_region", default="us-central1", help="GCP cloud region"
    )
    parser.add_argument(
        "--num_messages",
        type=int,
        default=100,
        help="Number of messages to publish.",
    )
    parser.add_argument(
        "--message_type",
        choices=("event", "state"),
        default="event",
        help=(
            "Indicates whether the message to be published is a "
            "telemetry event or a device state message."
        ),
    )
    parser.add_argument(
        "--base_url",
        default=_BASE_URL,
        help="Base URL for the Cloud IoT Core Device Service API",
    )
    parser.add_argument(
        "--jwt_expires_minutes",
        default=20,
        type=int,
        help="Expiration time, in minutes, for JWT tokens.",
    )
    # Google's sample slept 1 s between events and 5 s between states, fixed; tests set 0.
    parser.add_argument(
        "--delay_seconds",
        type=float,
        default=None,
        help="Pause between messages (default: 1 for events, 5 for states).",
    )
    return parser.parse_args()


def main():
    args = parse_command_line_args()
    identity = (
        args.base_url,
        args.project_id,
        args.cloud_region,
        args.registry_id,
        args.device_id,
    )

    jwt_token = create_jwt(
        args.project_id, args.private_key_file, args.algorithm, args.jwt_expires_minutes
    )
    jwt_iat = datetime.datetime.now(tz=datetime.timezone.utc)
    jwt_exp_mins = args.jwt_expires_minutes
    delay = args.delay_seconds
    if delay is None:
        delay = 1 if args.message_type == "event" else 5

    for i in range(1, args.num_messages + 1):
        seconds_since_issue = (
            datetime.datetime.now(tz=datetime.timezone.utc) - jwt_iat
        ).seconds
        if seconds_since_issue > 60 * jwt_exp_mins:
            print("Refreshing token after {}s".format(seconds_since_issue))
            jwt_token = create_jwt(
                args.project_id, args.private_key_file, args.algorithm, jwt_exp_mins
            )
            jwt_iat = datetime.datetime.now(tz=datetime.timezone.utc)

        payload = "{}/{}-payload-{}".format(args.registry_id, args.device_id, i)
        resp = publish_message(payload, args.message_type, *identity, jwt_token)
        print(
            "Publishing {} message {}/{}: '{}' -> HTTP {}".format(
                args.message_type, i, args.num_messages, payload, resp.status_code
            )
        )
        if resp.status_code != 200:
            _fail("Publishing", resp)
        if i < args.num_messages:
            time.sleep(delay)

    resp = get_config("0", *identity, jwt_token)
    print("Getting config (local_version=0) -> HTTP {}".format(resp.status_code))
    if resp.status_code != 200:
        _fail("Getting config", resp)
    config = resp.json()
    encoded = config.get("binaryData", "")
    # Either alphabet may come back; restore the padding that an unpadded answer leaves off.
    data = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    print(
        "Latest configuration: version {}: {}".format(
            config.get("version"), data.decode("utf-8", errors="replace")
        )
    )
    print("Finished.")


if __name__ == "__main__":
    main()
