#!/usr/bin/env python3
"""Summarises a soak's VmRSS samples (lines `SECONDS KB`, one a second).

    rss.py FILE   prints: start-kB plateau-kB end-kB growth-kB slope-kB/min-over-second-half
start: the first sample under load; plateau: the median of the middle third; growth: end - start;
slope: least-squares fit over the second half of the samples, in kB a minute.
"""
import statistics
import sys

samples = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
if len(samples) < 6:
    print("0 0 0 0 0")
    sys.exit(0)
n = len(samples)
rss = [kb for _, kb in samples]
plateau = statistics.median(rss[n // 3: 2 * n // 3])
half = samples[n // 2:]
xs, ys = [t for t, _ in half], [kb for _, kb in half]
mx, my = statistics.fmean(xs), statistics.fmean(ys)
den = sum((x - mx) ** 2 for x in xs) or 1
slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 60
print(int(rss[0]), int(plateau), int(rss[-1]), int(rss[-1] - rss[0]), round(slope, 1))
