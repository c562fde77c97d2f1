#!/usr/bin/env python
"""A gateway that speaks Cloud IoT Core's MQTT bridge the way Google's published sample did.

Written for the end-to-end tests, in the shape of the gateway half of Google's
cloudiot_mqtt_example.py (python-docs-samples, iot/api-client/mqtt_example: `attach_device`,
`detach_device`, `listen_for_messages` with a gateway_id) and the IoT Core gateway guides:
paho-mqtt's 1.x API, the gateway's own PyJWT token as the password with an ignored username,
`tls_set` with TLS 1.2 and the given CA file, its errors topic at QoS 0 and its own config topic
at QoS 1, then for each bound device an attach on `/devices/{device}/attach` with
`{"authorization" : ""}` (the sample's payload for ASSOCIATION_ONLY gateways), the device's
config topic at QoS 1 and its commands wildcard at QoS 0, telemetry at QoS 1 on the device's
events topic, and a detach on `/devices/{device}/detach`. Google's sample slept five seconds
for an attach to land; this one waits for the attach's PUBACK instead, with a deadline.

    python cloudiot_mqtt_gateway.py --project_id=demo-project --registry_id=reg-1 \\
        --gateway_id=gw-1 --device_id=dev-a --device_id=dev-b \\
        --private_key_file=ec_private.pem --algorithm=ES256 \\
        --ca_certs=mqtt-tls/ca.pem --mqtt_bridge_hostname=localhost \\
        --mqtt_bridge_port=8883 --num_messages=3

What it does, in order, failing (exit status 1) when any step does not happen in time:
connect as the gateway; subscribe to its errors and config topics; attach each device; subscribe
to each device's config and commands; publish --num_messages events for each device; wait for
every config; print READY and wait for one command per device (--commands_per_device); detach
each device; publish one more event for the first device, which the bridge must refuse on the
gateway's errors topic without a PUBACK; disconnect.

Lines for the test harness to read, each starting with a keyword:

    CONNACK <rc>                     the CONNACK return code (0: accepted)
    ATTACHED <device> / DETACHED <device>   the attach or detach was acknowledged
    PUBACK mid=<mid> topic=<topic>   a QoS 1 publish was acknowledged
    CONFIG <topic> <base64 payload>  a config message (an empty config: an empty payload)
    COMMAND <topic> <base64 payload> a command message
    ERROR <json>                     a message on the gateway's errors topic
    READY                            every config arrived; now waiting for the commands
    REPORT <json>                    the last line of a run that passed: what it saw
    FAILED <reason>                  then the exit status is 1
"""

import argparse
import base64
import datetime
import json
import ssl
import sys
import threading
import time

import jwt
import paho.mqtt.client as mqtt


_print_lock = threading.Lock()


def say(line):
    """Prints one whole line: paho's thread and the main thread both print."""
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def fail(reason):
    """Ends the run: one FAILED line for the harness, exit status 1."""
    say("FAILED {}".format(reason))
    sys.exit(1)


def create_jwt(project_id, private_key_file, algorithm, expires_minutes=60):
    """Creates the gateway's JWT (https://jwt.io); the audience is the project id."""
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    token = {
        "iat": now,
        "exp": now + datetime.timedelta(minutes=expires_minutes),
        "aud": project_id,
    }
    with open(private_key_file, "r") as f:
        private_key = f.read()
    say(
        "Creating JWT using {} from private key file {}".format(
            algorithm, private_key_file
        )
    )
    return jwt.encode(token, private_key, algorithm=algorithm)


class Gateway:
    """What the paho callbacks saw, shared with the main thread (paho calls them on its own)."""

    def __init__(self, gateway_id):
        self.gateway_id = gateway_id
        self.lock = threading.Lock()
        self.connack_rc = None
        self.disconnected = False
        self.disconnect_rc = None
        self.closing = False
        # SUBACKs by mid: the granted QoS list.
        self.subacks = {}
        # Topic -> [base64 payload, ...], in arrival order.
        self.configs = {}
        self.commands = {}
        # Every message on the errors topic, parsed.
        self.errors = []

    # paho-mqtt 1.x callback signatures.
    def on_connect(self, client, userdata, flags, rc):
        say("CONNACK {}".format(rc))
        say("on_connect: {}".format(mqtt.connack_string(rc)))
        with self.lock:
            self.connack_rc = rc

    def on_disconnect(self, client, userdata, rc):
        say("on_disconnect: {}".format(mqtt.error_string(rc)))
        with self.lock:
            self.disconnect_rc = rc
            self.disconnected = True

    def on_subscribe(self, client, userdata, mid, granted_qos):
        say("SUBACK mid={} qos={}".format(mid, ",".join(str(q) for q in granted_qos)))
        with self.lock:
            self.subacks[mid] = list(granted_qos)

    def on_publish(self, client, userdata, mid):
        say("on_publish: mid={}".format(mid))

    def on_message(self, client, userdata, message):
        topic = message.topic
        payload = base64.b64encode(message.payload).decode("ascii")
        parts = topic.split("/")
        kind = parts[3] if len(parts) > 3 and parts[:2] == ["", "devices"] else ""
        with self.lock:
            if kind == "config" and len(parts) == 4:
                say("CONFIG {} {}".format(topic, payload))
                self.configs.setdefault(topic, []).append(payload)
            elif kind == "commands":
                say("COMMAND {} {}".format(topic, payload))
                self.commands.setdefault(topic, []).append(payload)
            elif topic == "/devices/{}/errors".format(self.gateway_id):
                text = message.payload.decode("utf-8", "replace")
                say("ERROR {}".format(text))
                try:
                    self.errors.append(json.loads(text))
                except ValueError:
                    self.errors.append({"unparsed": text})
            else:
                say("MESSAGE {} {}".format(topic, payload))

    def check_connected(self):
        """Fails at once when the bridge dropped the connection before the run was over."""
        if self.disconnected and not self.closing:
            fail("the bridge closed the connection: {}".format(
                mqtt.error_string(self.disconnect_rc)))


def wait_until(gateway, predicate, timeout, what):
    """Polls `predicate` (called under the gateway's lock) for at most `timeout` seconds,
    failing early on a lost connection."""
    deadline = time.monotonic() + timeout
    while True:
        with gateway.lock:
            if predicate():
                return
        gateway.check_connected()
        if time.monotonic() >= deadline:
            fail("timed out after {}s waiting for {}".format(timeout, what))
        time.sleep(0.02)


def get_client(args, gateway):
    """A paho client for the gateway, set up as Google's sample did."""
    client_id = "projects/{}/locations/{}/registries/{}/devices/{}".format(
        args.project_id, args.cloud_region, args.registry_id, args.gateway_id
    )
    say("Gateway client_id is '{}'".format(client_id))
    client = mqtt.Client(client_id=client_id)
    # With Google Cloud IoT Core, the username field is ignored, and the password field is used
    # to transmit a JWT to authorize the gateway.
    client.username_pw_set(
        username="unused",
        password=create_jwt(
            args.project_id,
            args.private_key_file,
            args.algorithm,
            args.jwt_expires_minutes,
        ),
    )
    client.tls_set(ca_certs=args.ca_certs, tls_version=ssl.PROTOCOL_TLSv1_2)
    client.on_connect = gateway.on_connect
    client.on_disconnect = gateway.on_disconnect
    client.on_subscribe = gateway.on_subscribe
    client.on_publish = gateway.on_publish
    client.on_message = gateway.on_message
    return client


def subscribe(client, gateway, topics, timeout):
    """Subscribes to [(topic, qos), ...] in one SUBSCRIBE and waits for a SUBACK granting all."""
    rc, mid = client.subscribe(topics)
    if rc != mqtt.MQTT_ERR_SUCCESS:
        fail("subscribing to {}: {}".format(topics, mqtt.error_string(rc)))
    wait_until(gateway, lambda: mid in gateway.subacks, timeout,
               "the SUBACK for {}".format(topics))
    granted = gateway.subacks[mid]
    if len(granted) != len(topics) or 128 in granted:
        fail("the bridge refused a subscription to {}: granted {}".format(topics, granted))


def publish(client, gateway, topic, payload, timeout):
    """One QoS 1 publish, waiting (with a deadline) for its PUBACK."""
    info = client.publish(topic, payload, qos=1)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        fail("publishing to {}: {}".format(topic, mqtt.error_string(info.rc)))
    deadline = time.monotonic() + timeout
    while not info.is_published():
        gateway.check_connected()
        if time.monotonic() >= deadline:
            fail("no PUBACK for mid={} on {} within {}s".format(info.mid, topic, timeout))
        time.sleep(0.01)
    say("PUBACK mid={} topic={}".format(info.mid, topic))
    return info.mid


def attach_device(client, gateway, device_id, auth, timeout):
    """Attaches the device to the gateway, as the sample did, and waits for the PUBACK."""
    attach_topic = "/devices/{}/attach".format(device_id)
    attach_payload = '{{"authorization" : "{}"}}'.format(auth)
    publish(client, gateway, attach_topic, attach_payload, timeout)
    say("ATTACHED {}".format(device_id))


def detach_device(client, gateway, device_id, timeout):
    """Detaches the device from the gateway and waits for the PUBACK."""
    detach_topic = "/devices/{}/detach".format(device_id)
    publish(client, gateway, detach_topic, "{}", timeout)
    say("DETACHED {}".format(device_id))


def parse_command_line_args():
    """Parses command line arguments."""
    parser = argparse.ArgumentParser(
        description="Example Google Cloud IoT Core MQTT gateway connection code."
    )
    parser.add_argument("--project_id", required=True, help="GCP cloud project name")
    parser.add_argument("--registry_id", required=True, help="Cloud IoT Core registry id")
    parser.add_argument("--gateway_id", required=True, help="The gateway's device id")
    parser.add_argument(
        "--device_id",
        action="append",
        required=True,
        help="A device bound to the gateway (repeat for more).",
    )
    parser.add_argument(
        "--private_key_file", required=True, help="Path to the gateway's private key file."
    )
    parser.add_argument(
        "--algorithm",
        choices=("RS256", "ES256"),
        required=True,
        help="Which encryption algorithm to use to generate the JWT.",
    )
    parser.add_argument(
        "--cloud_region", default="us-central1", help="GCP cloud region"
    )
    parser.add_argument(
        "--ca_certs",
        default="roots.pem",
        help="CA root from https://pki.google.com/roots.pem (here: the bridge's CA file)",
    )
    parser.add_argument(
        "--num_messages",
        type=int,
        default=10,
        help="Number of events to publish for each device.",
    )
    parser.add_argument(
        "--mqtt_bridge_hostname",
        default="mqtt.googleapis.com",
        help="MQTT bridge hostname.",
    )
    parser.add_argument(
        "--mqtt_bridge_port", type=int, default=8883, help="MQTT bridge port."
    )
    parser.add_argument(
        "--jwt_expires_minutes",
        default=20,
        type=int,
        help="Expiration time, in minutes, for JWT tokens.",
    )
    parser.add_argument(
        "--timeout_seconds",
        type=float,
        default=10,
        help="Longest wait for the CONNACK, each SUBACK and PUBACK, the configs, the commands.",
    )
    parser.add_argument(
        "--commands_per_device",
        type=int,
        default=1,
        help="Commands to wait for on each device's topics after READY (0: none).",
    )
    parser.add_argument(
        "--quiet_seconds",
        type=float,
        default=1.5,
        help="How long a refused publish must stay without a PUBACK.",
    )
    return parser.parse_args()


def main():
    args = parse_command_line_args()
    gateway = Gateway(args.gateway_id)
    client = get_client(args, gateway)
    try:
        client.connect(args.mqtt_bridge_hostname, args.mqtt_bridge_port)
    except (OSError, ssl.SSLError) as e:
        fail("connecting to {}:{}: {}".format(
            args.mqtt_bridge_hostname, args.mqtt_bridge_port, e))
    client.loop_start()
    try:
        report = run(client, gateway, args)
    finally:
        gateway.closing = True
        client.disconnect()
        client.loop_stop()
    say("REPORT {}".format(json.dumps(report, sort_keys=True)))


def run(client, gateway, args):
    timeout = args.timeout_seconds
    wait_until(gateway, lambda: gateway.connack_rc is not None, timeout, "the CONNACK")
    if gateway.connack_rc != 0:
        fail("the bridge refused the connection: {}".format(
            mqtt.connack_string(gateway.connack_rc)))

    # The topic gateways receive error updates on. QoS must be 0.
    error_topic = "/devices/{}/errors".format(args.gateway_id)
    # The topic gateways receive configuration updates on.
    gateway_config_topic = "/devices/{}/config".format(args.gateway_id)
    subscribe(client, gateway, [(error_topic, 0), (gateway_config_topic, 1)], timeout)

    for device_id in args.device_id:
        attach_device(client, gateway, device_id, "", timeout)

    for device_id in args.device_id:
        # The config topic at QoS 1 (the latest config comes right after the SUBACK), every
        # command at QoS 0, as the sample subscribed.
        subscribe(client, gateway, [
            ("/devices/{}/config".format(device_id), 1),
            ("/devices/{}/commands/#".format(device_id), 0),
        ], timeout)

    published = {}
    for device_id in args.device_id:
        topic = "/devices/{}/events".format(device_id)
        for i in range(1, args.num_messages + 1):
            payload = "{}/{}-payload-{}".format(args.registry_id, device_id, i)
            say("Publishing message {}/{} for {}: '{}'".format(
                i, args.num_messages, device_id, payload))
            publish(client, gateway, topic, payload, timeout)
            published[device_id] = published.get(device_id, 0) + 1

    config_topics = [gateway_config_topic] + [
        "/devices/{}/config".format(d) for d in args.device_id
    ]
    wait_until(gateway, lambda: all(t in gateway.configs for t in config_topics), timeout,
               "a config on each of {}".format(config_topics))

    say("READY")
    wanted = args.commands_per_device

    def commands_for(device_id):
        prefix = "/devices/{}/commands".format(device_id)
        return sum(len(v) for t, v in gateway.commands.items()
                   if t == prefix or t.startswith(prefix + "/"))

    wait_until(gateway, lambda: all(commands_for(d) >= wanted for d in args.device_id),
               timeout, "{} command(s) for each device".format(wanted))

    for device_id in args.device_id:
        detach_device(client, gateway, device_id, timeout)

    # Detached, the first device is no longer the gateway's to speak for: the bridge must
    # refuse its event on the gateway's errors topic and never acknowledge it.
    late_device = args.device_id[0]
    late_topic = "/devices/{}/events".format(late_device)
    errors_before = len(gateway.errors)
    late = client.publish(late_topic, "after-detach", qos=1)
    if late.rc != mqtt.MQTT_ERR_SUCCESS:
        fail("publishing to {}: {}".format(late_topic, mqtt.error_string(late.rc)))
    say("Published mid={} to {} after the detach".format(late.mid, late_topic))
    wait_until(
        gateway,
        lambda: any(e.get("device_id") == late_device
                    for e in gateway.errors[errors_before:]),
        timeout,
        "an error about {} on {}".format(late_device, error_topic),
    )
    time.sleep(args.quiet_seconds)
    gateway.check_connected()
    late_puback = late.is_published()
    if late_puback:
        fail("the event for detached {} was acknowledged (mid={})".format(
            late_device, late.mid))

    with gateway.lock:
        return {
            "gateway": args.gateway_id,
            "published": published,
            "configs": dict(gateway.configs),
            "commands": dict(gateway.commands),
            "errors": list(gateway.errors),
            "late_device": late_device,
            "late_mid": late.mid,
            "late_puback": late_puback,
        }


if __name__ == "__main__":
    main()
