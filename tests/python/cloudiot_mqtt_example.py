#!/usr/bin/env python
"""A device that speaks Cloud IoT Core's MQTT bridge the way Google's published sample did.

Written for the end-to-end tests, in the shape of Google's cloudiot_mqtt_example.py and the IoT
Core MQTT guides: the same flags, paho-mqtt's 1.x API (`mqtt.Client(client_id=...)`, the JWT as
the password with an ignored username, `tls_set` with TLS 1.2 and the given CA file), a PyJWT
token with iat/exp/aud, the config topic at QoS 1 and the commands wildcard at QoS 0, telemetry
and state at QoS 1. It is a client nobody on this project wrote the server-side assumptions into,
so the service must meet it where IoT Core did. WebSocket (`/mqtt`) and plain TCP are there for
hosts that only pass HTTP, or tests without TLS.

    python cloudiot_mqtt_example.py --project_id=demo-project --registry_id=reg-1 \\
        --device_id=dev-1 --private_key_file=ec_private.pem --algorithm=ES256 \\
        --ca_certs=mqtt-tls/ca.pem --mqtt_bridge_hostname=localhost \\
        --mqtt_bridge_port=8883 --num_messages=5 --delay_seconds=0

Lines for the test harness to read, one per event, each starting with a keyword:

    CONNACK <rc>                      the CONNACK return code (0: accepted)
    SUBACK mid=<mid> qos=<q>[,<q>]    the granted QoS list (128: refused)
    PUBACK mid=<mid> topic=<topic>    a QoS 1 publish was acknowledged
    CONFIG <base64 payload>           a config message (empty config: nothing after the space)
    COMMAND <topic> <base64 payload>  a command message
    DONE                              everything above arrived in time
    FAILED <reason>                   then the exit status is 1

Every wait has a deadline (--timeout_seconds): paho 1.5's `wait_for_publish()` takes none, so
PUBACKs are awaited by polling `is_published()`.
"""

import argparse
import base64
import datetime
import ssl
import sys
import threading
import time

import jwt
import paho.mqtt.client as mqtt


_print_lock = threading.Lock()


def say(line):
    """Prints one whole line: paho's thread and the main thread both print, and the harness
    must never see two lines run together."""
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def fail(reason):
    """Ends the run: one FAILED line for the harness, exit status 1."""
    say("FAILED {}".format(reason))
    sys.exit(1)


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
    say(
        "Creating JWT using {} from private key file {}".format(
            algorithm, private_key_file
        )
    )
    return jwt.encode(token, private_key, algorithm=algorithm)


class Device:
    """What the paho callbacks saw, shared with the main thread (paho calls them on its own)."""

    def __init__(self, device_id):
        self.device_id = device_id
        self.connack = threading.Event()
        self.connack_rc = None
        self.subacks = threading.Event()
        self.pending_subscriptions = set()
        self.config = threading.Event()
        self.command = threading.Event()
        self.disconnected = threading.Event()
        self.disconnect_rc = None
        self.closing = False
        self.lock = threading.Lock()

    # paho-mqtt 1.x callback signatures.
    def on_connect(self, client, userdata, flags, rc):
        say("CONNACK {}".format(rc))
        say("on_connect: {}".format(mqtt.connack_string(rc)))
        self.connack_rc = rc
        self.connack.set()

    def on_disconnect(self, client, userdata, rc):
        say("on_disconnect: {}".format(mqtt.error_string(rc)))
        self.disconnect_rc = rc
        self.disconnected.set()

    def on_subscribe(self, client, userdata, mid, granted_qos):
        granted = ",".join(str(qos) for qos in granted_qos)
        say("SUBACK mid={} qos={}".format(mid, granted))
        with self.lock:
            self.pending_subscriptions.discard(mid)
            if not self.pending_subscriptions:
                self.subacks.set()

    def on_publish(self, client, userdata, mid):
        say("on_publish: mid={}".format(mid))

    def on_message(self, client, userdata, message):
        payload = base64.b64encode(message.payload).decode("ascii")
        config_topic = "/devices/{}/config".format(self.device_id)
        commands = "/devices/{}/commands".format(self.device_id)
        if message.topic == config_topic:
            say("CONFIG {}".format(payload))
            self.config.set()
        elif message.topic == commands or message.topic.startswith(commands + "/"):
            say("COMMAND {} {}".format(message.topic, payload))
            self.command.set()
        else:
            say("MESSAGE {} {}".format(message.topic, payload))

    def check_connected(self):
        """Fails at once when the bridge dropped the connection before the run was over."""
        if self.disconnected.is_set() and not self.closing:
            fail("the bridge closed the connection: {}".format(
                mqtt.error_string(self.disconnect_rc)))


def wait_for(event, device, timeout, what):
    """Waits for `event` for at most `timeout` seconds, failing early on a lost connection."""
    deadline = time.monotonic() + timeout
    while not event.is_set():
        device.check_connected()
        if time.monotonic() >= deadline:
            fail("timed out after {}s waiting for {}".format(timeout, what))
        event.wait(0.05)


def get_client(args, device):
    """A paho client set up as Google's sample did, plus the transport choice."""
    client_id = "projects/{}/locations/{}/registries/{}/devices/{}".format(
        args.project_id, args.cloud_region, args.registry_id, args.device_id
    )
    say("Device client_id is '{}'".format(client_id))
    client = mqtt.Client(client_id=client_id, transport=args.transport)
    # With Google Cloud IoT Core, the username field is ignored, and the password field is used
    # to transmit a JWT to authorize the device.
    client.username_pw_set(
        username="unused",
        password=create_jwt(
            args.project_id,
            args.private_key_file,
            args.algorithm,
            args.jwt_expires_minutes,
        ),
    )
    if args.transport == "websockets":
        client.ws_set_options(path="/mqtt")
    if not args.no_tls:
        client.tls_set(ca_certs=args.ca_certs, tls_version=ssl.PROTOCOL_TLSv1_2)
    client.on_connect = device.on_connect
    client.on_disconnect = device.on_disconnect
    client.on_subscribe = device.on_subscribe
    client.on_publish = device.on_publish
    client.on_message = device.on_message
    return client


def subscribe(client, device, timeout):
    """The config topic at QoS 1 and every command at QoS 0, as the sample subscribed."""
    topics = [
        ("/devices/{}/config".format(device.device_id), 1),
        ("/devices/{}/commands/#".format(device.device_id), 0),
    ]
    with device.lock:
        for topic, qos in topics:
            rc, mid = client.subscribe(topic, qos=qos)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                fail("subscribing to {}: {}".format(topic, mqtt.error_string(rc)))
            device.pending_subscriptions.add(mid)
    wait_for(device.subacks, device, timeout, "the SUBACKs")


def publish(client, device, topic, payload, timeout):
    """One QoS 1 publish, waiting (with a deadline) for its PUBACK."""
    info = client.publish(topic, payload, qos=1)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        fail("publishing to {}: {}".format(topic, mqtt.error_string(info.rc)))
    deadline = time.monotonic() + timeout
    while not info.is_published():
        device.check_connected()
        if time.monotonic() >= deadline:
            fail("no PUBACK for mid={} on {} within {}s".format(info.mid, topic, timeout))
        time.sleep(0.01)
    say("PUBACK mid={} topic={}".format(info.mid, topic))


def parse_command_line_args():
    """Parses command line arguments."""
    parser = argparse.ArgumentParser(
        description="Example Google Cloud IoT Core MQTT device connection code."
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
        "--num_messages", type=int, default=100, help="Number of messages to publish."
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
        "--mqtt_bridge_hostname",
        default="mqtt.googleapis.com",
        help="MQTT bridge hostname.",
    )
    # Google's sample allowed only 8883 and 443; tests need free ports, so any port goes here.
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
        "--transport",
        choices=("tcp", "websockets"),
        default="tcp",
        help="MQTT over TCP, or over a WebSocket to /mqtt on the bridge's HTTP port.",
    )
    parser.add_argument(
        "--no_tls",
        action="store_true",
        help="Connect without TLS (a plain listener, or a WebSocket to an http:// port).",
    )
    # Google's sample slept 1 s between events and 5 s between states, fixed; tests set 0.
    parser.add_argument(
        "--delay_seconds",
        type=float,
        default=None,
        help="Pause between messages (default: 1 for events, 5 for states).",
    )
    parser.add_argument(
        "--timeout_seconds",
        type=float,
        default=10,
        help="Longest wait for the CONNACK, SUBACKs, each PUBACK and the config.",
    )
    # Not in Google's sample: lets a test send a command while the device is surely listening.
    parser.add_argument(
        "--wait_for_command",
        action="store_true",
        help="After subscribing, wait for one command before publishing.",
    )
    return parser.parse_args()


def main():
    args = parse_command_line_args()
    device = Device(args.device_id)
    delay = args.delay_seconds
    if delay is None:
        delay = 1 if args.message_type == "event" else 5

    client = get_client(args, device)
    try:
        client.connect(args.mqtt_bridge_hostname, args.mqtt_bridge_port)
    except (OSError, ssl.SSLError) as e:
        fail("connecting to {}:{}: {}".format(
            args.mqtt_bridge_hostname, args.mqtt_bridge_port, e))
    client.loop_start()
    try:
        run(client, device, args, delay)
    finally:
        device.closing = True
        client.disconnect()
        client.loop_stop()


def run(client, device, args, delay):
    wait_for(device.connack, device, args.timeout_seconds, "the CONNACK")
    if device.connack_rc != 0:
        fail("the bridge refused the connection: {}".format(
            mqtt.connack_string(device.connack_rc)))
    subscribe(client, device, args.timeout_seconds)
    if args.wait_for_command:
        say("WAITING FOR COMMAND")
        wait_for(device.command, device, args.timeout_seconds, "a command")

    sub_topic = "events" if args.message_type == "event" else "state"
    topic = "/devices/{}/{}".format(args.device_id, sub_topic)
    for i in range(1, args.num_messages + 1):
        payload = "{}/{}-payload-{}".format(args.registry_id, args.device_id, i)
        say("Publishing message {}/{}: '{}'".format(i, args.num_messages, payload))
        publish(client, device, topic, payload, args.timeout_seconds)
        if i < args.num_messages:
            time.sleep(delay)

    # One state report after the telemetry, as a device reports what it applied.
    if args.message_type == "event":
        state = "{}/{}-state".format(args.registry_id, args.device_id)
        say("Publishing state: '{}'".format(state))
        publish(client, device, "/devices/{}/state".format(args.device_id), state,
                args.timeout_seconds)

    wait_for(device.config, device, args.timeout_seconds, "a config message")
    say("DONE")
    say("Finished.")


if __name__ == "__main__":
    main()
