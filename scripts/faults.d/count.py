#!/usr/bin/env python3
"""Counts what a collector file holds against the COUNT readings n = 0 … COUNT-1 that were fed.

    count.py FILE COUNT          prints: distinct-n distinct-ids messages missing duplicates
    count.py FILE COUNT --missing  also prints (stderr) the first missing numbers

distinct-n: readings 0 … COUNT-1 that arrived at least once; messages: every message of a
reading; duplicates = messages - distinct ids (the agent resends a reading with its own id).
A reading that arrived under two ids would make distinct-ids exceed distinct-n.
"""
import sys

path, count = sys.argv[1], int(sys.argv[2])
numbers, ids, messages = set(), set(), 0
try:
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 2 or not line.endswith("\n"):
                continue
            rid, n = parts[0], int(parts[1])
            if 0 <= n < count:
                numbers.add(n)
                ids.add(rid)
                messages += 1
except FileNotFoundError:
    pass
missing = count - len(numbers)
print(len(numbers), len(ids), messages, missing, messages - len(ids))
if "--missing" in sys.argv and missing:
    gone = [n for n in range(count) if n not in numbers]
    print("missing:", gone[:20], "…" if len(gone) > 20 else "", file=sys.stderr)
