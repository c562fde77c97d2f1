#!/usr/bin/env python
"""The baseline for device/bench/mqtt.sh: a device publishing readings the way the IoT Core
guides and Google's published cloudiot_mqtt_example.py did, in Python.

paho-mqtt 1.x (`mqtt.Client(client_id=...)`, `tls_set` with the bridge's CA and TLS 1.2), the
device's full path as the client id, user name `unused` and a PyJWT token (iat, exp, aud = the
project) as the password; the config topic at QoS 1 and the commands at QoS 0, as the sample
subscribed; then every reading at QoS 1 with `publish(...).wait_for_publish()`: one message in
flight at a time, the next sent when the bridge's PUBACK for this one arrived.

The readings are the bench's JSON lines (`--readings_file`), each wrapped in the event the agent
publishes for it (`{"id", "time", "source", "data"}`), so both send the same bytes' worth.

For the bench harness, on stdout:

    CONNECTED                  the CONNACK accepted the token and the subscriptions were granted
    PUBLISHING                 the idle pause (--idle_seconds) is over, the first publish goes now
    DONE <n>                   n readings were acknowledged; then, with --hold, it waits for SIGTERM
    FAILED <reason>            exit status 1

With --hold the process stays alive after DONE, so the harness can read its CPU time and peak
memory from /proc before it ends.
"""

import argparse
import datetime
import json
import os
import signal
import ssl
import sys
import threading
import time

import jwt
import paho.mqtt.client as mqtt


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fail(reason):
    say("FAILED {}".format(reason))
    sys.exit(1)


def create_jwt(project_id, private_key_file, algorithm, expires_minutes):
    """A device token: issued now, expiring in `expires_minutes`, for the project."""
    issued = datetime.datetime.now(tz=datetime.timezone.utc)
    claims = {
        "iat": issued,
        "exp": issued + datetime.timedelta(minutes=expires_minutes),
        "aud": project_id,
    }
    with open(private_key_file, "r") as f:
        key = f.read()
    return jwt.encode(claims, key, algorithm=algorithm)


def error_str(rc):
    return "{}: {}".format(rc, mqtt.error_string(rc))


class State:
    """What paho's network thread reports to the main thread."""

    def __init__(self):
        self.connected = threading.Event()
        self.connack_rc = None
        self.subscribed = threading.Event()
        self.pending_subscriptions = set()
        self.lock = threading.Lock()
        self.disconnected = False


def get_client(args, state):
    """A paho client set up as Google's sample set it up."""
    client_id = "projects/{}/locations/{}/registries/{}/devices/{}".format(
        args.project_id, args.cloud_region, args.registry_id, args.device_id
    )
    client = mqtt.Client(client_id=client_id)
    # The bridge ignores the user name; the password carries the JWT.
    client.username_pw_set(
        username="unused",
        password=create_jwt(
            args.project_id, args.private_key_file, args.algorithm, args.jwt_expires_minutes
        ),
    )
    client.tls_set(ca_certs=args.ca_certs, tls_version=ssl.PROTOCOL_TLSv1_2)

    def on_connect(client, userdata, flags, rc):
        state.connack_rc = rc
        state.connected.set()

    def on_disconnect(client, userdata, rc):
        state.disconnected = True
        if rc != 0:
            sys.stderr.write("on_disconnect: {}\n".format(error_str(rc)))

    def on_subscribe(client, userdata, mid, granted_qos):
        with state.lock:
            state.pending_subscriptions.discard(mid)
            if not state.pending_subscriptions:
                state.subscribed.set()

    def on_message(client, userdata, message):
        # The sample printed what it received; a config arrives once after the connect.
        sys.stderr.write("received {} bytes on {}\n".format(len(message.payload), message.topic))

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(args.mqtt_bridge_hostname, args.mqtt_bridge_port)
    return client


def wait(event, seconds, what):
    if not event.wait(seconds):
        fail("no {} within {} s".format(what, seconds))


def subscribe(client, state, device_id, timeout):
    topics = [
        ("/devices/{}/config".format(device_id), 1),
        ("/devices/{}/commands/#".format(device_id), 0),
    ]
    with state.lock:
        for topic, qos in topics:
            rc, mid = client.subscribe(topic, qos=qos)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                fail("subscribing to {}: {}".format(topic, error_str(rc)))
            state.pending_subscriptions.add(mid)
    wait(state.subscribed, timeout, "SUBACK")


def event_payload(line):
    """The event the agent makes of a reading: a unique id (time in ms and 64 random bits, in
    hex), the time, the source and the reading itself, as compact JSON."""
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    millis = int(now.timestamp() * 1000)
    event = {
        "id": "{:x}-{}".format(millis, os.urandom(8).hex()),
        "time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "source": "stdin",
        "data": json.loads(line),
    }
    return json.dumps(event, separators=(",", ":"))


def parse_command_line_args():
    parser = argparse.ArgumentParser(
        description="Publishes readings over Cloud IoT Core's MQTT bridge, one QoS 1 message "
        "at a time, as Google's MQTT device sample did."
    )
    parser.add_argument("--project_id", required=True, help="GCP cloud project name")
    parser.add_argument("--registry_id", required=True, help="Cloud IoT Core registry id")
    parser.add_argument("--device_id", required=True, help="Cloud IoT Core device id")
    parser.add_argument("--private_key_file", required=True, help="Path to private key file.")
    parser.add_argument(
        "--algorithm", choices=("RS256", "ES256"), required=True, help="The token's algorithm."
    )
    parser.add_argument("--cloud_region", default="us-central1", help="GCP cloud region")
    parser.add_argument("--ca_certs", default="roots.pem", help="CA root certificates (PEM).")
    parser.add_argument(
        "--mqtt_bridge_hostname", default="mqtt.googleapis.com", help="MQTT bridge hostname."
    )
    parser.add_argument("--mqtt_bridge_port", type=int, default=8883, help="MQTT bridge port.")
    parser.add_argument(
        "--jwt_expires_minutes", type=int, default=20, help="Lifetime of the JWT, in minutes."
    )
    parser.add_argument(
        "--readings_file", required=True, help="JSON lines, one reading each, to publish."
    )
    parser.add_argument(
        "--idle_seconds", type=float, default=0, help="Pause after connecting, before publishing."
    )
    parser.add_argument(
        "--timeout_seconds", type=float, default=30, help="Longest wait for a PUBACK."
    )
    parser.add_argument(
        "--messages_per_second",
        type=float,
        default=0,
        help="Publish at most this many a second (0: as fast as the PUBACKs come back).",
    )
    parser.add_argument(
        "--hold", action="store_true", help="After DONE, wait for SIGTERM before exiting."
    )
    return parser.parse_args()


def main():
    args = parse_command_line_args()
    state = State()
    try:
        client = get_client(args, state)
    except (OSError, ssl.SSLError) as e:
        fail("connecting: {}".format(e))
    client.loop_start()

    wait(state.connected, args.timeout_seconds, "CONNACK")
    if state.connack_rc != 0:
        fail("the bridge refused the connection: {}".format(mqtt.connack_string(state.connack_rc)))
    subscribe(client, state, args.device_id, args.timeout_seconds)
    say("CONNECTED")
    if args.idle_seconds > 0:
        time.sleep(args.idle_seconds)
    say("PUBLISHING")

    topic = "/devices/{}/events".format(args.device_id)
    sent = 0
    spacing = 1 / args.messages_per_second if args.messages_per_second > 0 else 0
    next_slot = time.monotonic()
    with open(args.readings_file, "r") as readings:
        for line in readings:
            if spacing:
                # At the bridge's rate, as the agent paces itself (the sample slept 1 s instead).
                pause = next_slot - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                next_slot = max(next_slot, time.monotonic()) + spacing
            info = client.publish(topic, event_payload(line), qos=1)
            info.wait_for_publish(args.timeout_seconds)
            if not info.is_published():
                fail("no PUBACK for message {} within {} s".format(sent + 1, args.timeout_seconds))
            sent += 1

    client.disconnect()
    client.loop_stop()
    say("DONE {}".format(sent))
    if args.hold:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            signal.pause()


if __name__ == "__main__":
    main()
