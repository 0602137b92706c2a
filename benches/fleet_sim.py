#!/usr/bin/env python3
"""A discrete-event model of a fleet polling one quota-limited store.

    python3 benches/fleet_sim.py

N hosts poll every I seconds (+-10 % jitter); the store's token bucket
allows TPS calls a second (bucket size TPS) and throttles the rest. After
a warm-up a new version is published; printed per strategy and seed:
(seconds until every host has had a successful poll, hosts that did,
throttled calls after the publish). Strategies:

  backoff  a failed poll doubles the wait up to 300 s; success resets it
           (what the watcher did for throttling before 2026-11-26)
  pace     a throttled poll doubles the poll period up to 3 intervals and
           is retried at a random 10-30 % of it; a success shrinks the
           period by I/50 (what the watcher does now)

The model ignores the store's latency and the swap itself.
"""
import heapq
import random


def run(strategy, N=1000, TPS=40, I=10.0, warm=600.0, seed=1, horizon=20):
    rnd = random.Random(seed)
    tokens, last = float(TPS), 0.0
    events = [(rnd.uniform(0, I), h) for h in range(N)]
    heapq.heapify(events)
    period = [I] * N
    published, converged, throttled = warm, [None] * N, 0
    while events:
        t, h = heapq.heappop(events)
        if t > published + horizon * I:
            break
        tokens = min(TPS, tokens + (t - last) * TPS)
        last = t
        ok = tokens >= 1
        if ok:
            tokens -= 1
        if t >= published:
            if not ok:
                throttled += 1
            elif converged[h] is None:
                converged[h] = t - published
        if strategy == "backoff":
            period[h] = I if ok else min(300.0, period[h] * 2)
            wait = period[h] * rnd.uniform(0.9, 1.1)
        elif ok:
            period[h] = max(I, period[h] - I / 50)
            wait = period[h] * rnd.uniform(0.9, 1.1)
        else:
            period[h] = min(3 * I, period[h] * 2)
            wait = period[h] * rnd.uniform(0.1, 0.3)
        heapq.heappush(events, (t + wait, h))
    done = [c for c in converged if c is not None]
    worst = round(max(done), 1) if len(done) == N else None
    return worst, len(done), throttled


if __name__ == "__main__":
    for interval in (30.0, 10.0):
        for strategy in ("backoff", "pace"):
            runs = [run(strategy, I=interval, seed=s) for s in range(3)]
            print(f"interval {interval:>4} s  {strategy:8} {runs}")
