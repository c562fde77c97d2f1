#!/usr/bin/env python3
"""Writes COUNT readings `{"n": i}` (i = 0 … COUNT-1), one JSON line each, to standard output at
RATE lines a second (0: all at once), in slices every 50 ms.

    feed.py COUNT RATE
"""
import sys
import time

count, rate = int(sys.argv[1]), float(sys.argv[2])
out = sys.stdout
if rate <= 0:
    out.write("".join('{"n": %d}\n' % i for i in range(count)))
    sys.exit(0)
start, sent = time.monotonic(), 0
while sent < count:
    due = min(count, int((time.monotonic() - start) * rate) + 1)
    if due > sent:
        out.write("".join('{"n": %d}\n' % i for i in range(sent, due)))
        out.flush()
        sent = due
    time.sleep(0.05)
