#!/usr/bin/env python3
"""Pulls a Pub/Sub emulator subscription over REST until killed, appending one line per message
to OUT: the reading's `id` and its `data.n` (-1 when it has none). Acknowledges what it pulled.
Survives the emulator being stopped and started again (connection errors and a subscription
that does not exist yet are retried every 0.2 s).

    collect.py HOST:PORT projects/P/subscriptions/S OUT
"""
import base64
import http.client
import json
import signal
import sys
import time

host, subscription, out_path = sys.argv[1:4]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
conn = None


def call(path, body):
    global conn
    if conn is None:
        conn = http.client.HTTPConnection(host, timeout=30)
    try:
        conn.request("POST", f"/v1/{subscription}:{path}", json.dumps(body),
                     {"content-type": "application/json"})
        response = conn.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException):
        conn.close()
        conn = None
        raise
    if response.status != 200:
        raise OSError(f"{path}: {response.status} {data[:200]!r}")
    return json.loads(data or b"{}")


with open(out_path, "a", buffering=1) as out:
    while True:
        try:
            received = call("pull", {"maxMessages": 1000, "returnImmediately": True})
            received = received.get("receivedMessages", [])
            if not received:
                time.sleep(0.05)
                continue
            lines = []
            for r in received:
                try:
                    reading = json.loads(base64.b64decode(r["message"].get("data", "")))
                    n = reading.get("data", {}).get("n", -1) if isinstance(reading.get("data"), dict) else -1
                    lines.append(f"{reading.get('id', '?')} {n}\n")
                except (ValueError, AttributeError):
                    lines.append("? -1\n")
            out.write("".join(lines))
            out.flush()
            call("acknowledge", {"ackIds": [r["ackId"] for r in received]})
        except (OSError, http.client.HTTPException, ValueError):
            time.sleep(0.2)
