"""Soak test of the Batcher: 100 000 requests with flat RSS.

    python bench/batcher_soak.py                       # 100 000 requests, 8 threads
    python bench/batcher_soak.py --requests 20000 --max-growth-mb 3

8 threads submit mixed traffic through one Batcher: lengths 0..T, a third with an
initial (h, c), every request with a timeout (the timer's heap), some cancelled by
their caller, some invalid (NaN: rejected on submit), and more in flight than the
queue holds (BatcherFull, then a submit that waits for room). RSS (/proc/self/statm) is sampled after a warm-up and at the end;
the run fails (exit 1) if it grew by more than --max-growth-mb, if any result
differs from the model on that sequence alone, or if a
request was left without an outcome. tests/test_batcher.py runs a scaled-down
version under tracemalloc.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import gc
import os
import sys
import threading
import time

import numpy as np

import lstm_infer as li
from lstm_infer.serving import Batcher, BatcherFull


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--T", type=int, default=30)
    p.add_argument("--max-growth-mb", type=float, default=5.0)
    p.add_argument("--seconds", type=float, default=600.0, help="stop early after this long")
    a = p.parse_args(argv)

    model = li.LSTM.random(16, 32, num_layers=2, seed=0)
    rng = np.random.default_rng(1)
    pool = [rng.uniform(-3, 3, (int(rng.integers(0, a.T + 1)), 16)).astype(np.float32)
            for _ in range(64)]
    states = [(rng.uniform(-1, 1, (2, 32)).astype(np.float32),
               rng.uniform(-1, 1, (2, 32)).astype(np.float32)) for _ in range(8)]
    expected = {}
    for i, x in enumerate(pool):
        for j in (None, *range(len(states))):
            expected[i, j] = model(x, state=None if j is None else states[j])
    bad = np.full((5, 16), np.nan, np.float32)

    counts = {k: 0 for k in ("ok", "mismatch", "cancelled", "invalid", "full", "other")}
    lock = threading.Lock()
    per_thread = a.requests // a.threads
    deadline = time.monotonic() + a.seconds
    marks, crashed = [], []

    def worker(k, n, warm):
        try:
            traffic(k, n, warm)
        except BaseException as e:  # reported: the run fails
            with lock:
                crashed.append(repr(e))

    def traffic(k, n, warm):
        r = np.random.default_rng(100 + k)
        local = dict.fromkeys(counts, 0)
        inflight = []
        for it in range(n):
            if time.monotonic() > deadline:
                break
            i = int(r.integers(len(pool)))
            j = int(r.integers(len(states))) if it % 3 == 0 else None
            if it % 97 == 0:
                try:
                    b.submit(bad)
                except ValueError:
                    local["invalid"] += 1
            state = None if j is None else states[j]
            try:
                f = b.submit(pool[i], state, timeout=30.0)
            except BatcherFull:  # 8 x 16 in flight > max_queue: wait for room this time
                local["full"] += 1
                f = b.submit(pool[i], state, timeout=30.0, block=30.0)
            inflight.append((f, i, j))
            if it % 50 == 0:
                f.cancel()
            if len(inflight) >= 16 or it == n - 1:  # a small window of requests in flight
                for f, i, j in inflight:
                    try:
                        out, (h, c) = f.result(timeout=60)
                    except concurrent.futures.CancelledError:
                        local["cancelled"] += 1
                        continue
                    except Exception:
                        local["other"] += 1
                        continue
                    want = expected[i, j]
                    if not (np.array_equal(out, want[0]) and np.array_equal(h, want[1][0])
                            and np.array_equal(c, want[1][1])):
                        local["mismatch"] += 1
                    else:
                        local["ok"] += 1
                inflight.clear()
        with lock:
            for key, v in local.items():
                counts[key] += v if not warm else 0

    def run(n, warm):
        ts = [threading.Thread(target=worker, args=(k, n, warm)) for k in range(a.threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    t0 = time.monotonic()
    with Batcher(model, max_batch=32, max_delay_ms=0.5, max_queue=64, num_threads=1) as b:
        run(max(1, per_thread // 20), warm=True)  # warm-up: pools, caches, stats windows
        gc.collect()
        marks.append(rss_mb())
        print(f"after warm-up: RSS {marks[0]:.1f} MB", flush=True)
        run(per_thread, warm=False)
        gc.collect()
        marks.append(rss_mb())
        stats = b.stats()
    dt = time.monotonic() - t0
    growth = marks[1] - marks[0]
    done = counts["ok"] + counts["mismatch"] + counts["cancelled"] + counts["other"]
    print(f"{done} requests in {dt:.1f} s ({done / dt:.0f}/s) from {a.threads} threads; "
          f"RSS {marks[0]:.1f} -> {marks[1]:.1f} MB (growth {growth:+.2f} MB)")
    print(f"outcomes: {counts}")
    print(f"batcher: batches {stats['batches']}, mean batch {stats['mean_batch_size']:.1f}, "
          f"completed {stats['completed']}, cancelled {stats['cancelled']}, timed out "
          f"{stats['timed_out']}, invalid {stats['invalid']}, full {stats['rejected_full']}, "
          f"queued at end {stats['queued']}")
    failed = []
    if growth > a.max_growth_mb:
        failed.append(f"RSS grew {growth:.2f} MB > {a.max_growth_mb} MB")
    if counts["mismatch"] or counts["other"]:
        failed.append(f"{counts['mismatch']} mismatches, {counts['other']} unexpected errors")
    if crashed:
        failed.append(f"{len(crashed)} submitting threads crashed: {crashed[0]}")
    if stats["queued"]:
        failed.append(f"{stats['queued']} requests left queued")
    if failed:
        print("FAILED: " + "; ".join(failed))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
