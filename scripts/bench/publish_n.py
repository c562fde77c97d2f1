#!/usr/bin/env python3
"""Sends exactly N requests to a URL over C keep-alive connections (one thread each) and fails
unless every one is answered 200. For `scripts/bench-http callgrind`, where the count must be
exact (instructions per request = total / N) and the client's own speed does not matter.

    BENCH_TOKEN=... publish_n.py URL N [CONNECTIONS] [METHOD]

POST sends the body of scripts/bench/publish.lua; GET sends none.
"""
import http.client
import os
import sys
import threading
import urllib.parse

BODY = b'{"binary_data": "eyJ0ZW1wIjogMjEuNX0"}'


def main() -> int:
    url = urllib.parse.urlsplit(sys.argv[1])
    total = int(sys.argv[2])
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    method = sys.argv[4] if len(sys.argv) > 4 else "POST"
    path = url.path + (f"?{url.query}" if url.query else "")
    headers = {"Authorization": "Bearer " + os.environ["BENCH_TOKEN"]}
    if method == "POST":
        headers["Content-Type"] = "application/json"
    body = BODY if method == "POST" else None
    failures = []

    def send(count: int) -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        for _ in range(count):
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                failures.append(response.status)
        conn.close()

    shares = [total // connections + (1 if i < total % connections else 0) for i in range(connections)]
    threads = [threading.Thread(target=send, args=(n,)) for n in shares if n]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        print(f"{len(failures)} of {total} requests were not answered 200: {sorted(set(failures))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
