"""Dynamic batching under load: requests/s and latency, Batcher vs one call per request.

    python bench/batcher_load.py                      # 1, 8, 32, 128 callers, ~5 s per point
    python bench/batcher_load.py --seconds 2 --callers 32 --max-delay-ms 2

N caller threads each send one request at a time (closed loop): a stream256-sized
sequence (T=100, I=256, H=256, one sequence per request), either straight to the
model (``model(x)``: the calls in flight share the cores, see lstm_infer._threads)
or through one ``lstm_infer.serving.Batcher``. Each point runs for ``--seconds``
after a short warm-up; a request counts if it completes inside the window, and
its latency is submit to result in the caller's thread. Every result is compared
bit for bit with the model on that sequence alone (the ``mismatches`` column).

The table (markdown) gives requests/s, p50/p99 latency, the Batcher's mean batch
size and the mean time of one batched call (the worker's busy time per batch), the
speedup over one call per request at the same number of callers, and the latency
target ``max_delay_ms + 2 batched calls`` next to the measured p99.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import threading
import time

import numpy as np

import lstm_infer as li
from lstm_infer import _kernels
from lstm_infer.serving import Batcher


def machine_line() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=os.path.dirname(os.path.abspath(__file__)),
                             timeout=5).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        rev = "?"
    return (f"machine: {cpu}, {len(os.sched_getaffinity(0))} usable CPUs, SIMD "
            f"{_kernels.simd_level()}; python {platform.python_version()}, numpy "
            f"{np.__version__}, lstm_infer {li.__version__} (git {rev}); load average "
            f"(1 min) at start {load:.2f}")


def run_point(call, inputs, expected, callers, seconds, warmup, on_window=None):
    """`callers` threads in a closed loop on `call(x) -> (out, (h, c))` for `seconds`
    (`on_window()` called as the measured window opens and closes). Returns
    (requests/s, latencies in s, mismatches, errors, on_window's two results)."""
    stop = threading.Event()
    window = [None, None]
    lat = [[] for _ in range(callers)]
    bad, errors = [0] * callers, [0] * callers
    barrier = threading.Barrier(callers + 1)

    def caller(k):
        rng = np.random.default_rng(k)
        barrier.wait()
        while not stop.is_set():
            i = int(rng.integers(len(inputs)))
            t0 = time.perf_counter()
            try:
                out, (h, c) = call(inputs[i])
            except Exception:
                errors[k] += 1
                continue
            t1 = time.perf_counter()
            if window[0] is not None and window[0] <= t0 and t1 <= window[1]:
                lat[k].append(t1 - t0)
                if not (np.array_equal(out, expected[i][0]) and
                        np.array_equal(h, expected[i][1]) and np.array_equal(c, expected[i][2])):
                    bad[k] += 1

    threads = [threading.Thread(target=caller, args=(k,), daemon=True) for k in range(callers)]
    for t in threads:
        t.start()
    barrier.wait()
    time.sleep(warmup)
    marks = [on_window() if on_window else None]
    start = time.perf_counter()
    window[:] = [start, start + seconds]
    time.sleep(seconds)
    marks.append(on_window() if on_window else None)
    stop.set()
    for t in threads:
        t.join()
    lats = np.array([v for per in lat for v in per])
    return len(lats) / seconds, lats, sum(bad), sum(errors), marks


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--callers", default="1,8,32,128", help="comma-separated caller counts")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per point")
    p.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per point")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-delay-ms", type=float, default=2.0)
    p.add_argument("--num-threads", type=int, default=None,
                   help="threads per forward call (default: all cores, shared by the calls "
                        "in flight)")
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--I", type=int, default=256)
    p.add_argument("--H", type=int, default=256)
    p.add_argument("--modes", default="direct,batcher")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    callers = [int(c) for c in a.callers.split(",")]
    modes = a.modes.split(",")

    model = li.LSTM.random(a.I, a.H, seed=a.seed)
    rng = np.random.default_rng(a.seed + 1)
    inputs = [rng.uniform(-3, 3, (a.T, a.I)).astype(np.float32) for _ in range(16)]
    expected = []
    for x in inputs:
        out, (h, c) = model(x)
        expected.append((out, h, c))

    print(machine_line())
    print(f"model: LSTM({a.I}, {a.H}) float32; requests (T, I) = ({a.T}, {a.I}); Batcher("
          f"max_batch={a.max_batch}, max_delay_ms={a.max_delay_ms}, num_threads="
          f"{a.num_threads}); {a.seconds:g} s per point after {a.warmup:g} s warm-up")
    print(f"command: python bench/batcher_load.py {' '.join(argv or sys.argv[1:])}".rstrip())
    print()
    print("| callers | mode | requests/s | p50 ms | p99 ms | mean batch | batch call ms "
          "| vs direct | p99 target ms | mismatches | errors |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in callers:
        direct_rate = None
        for mode in modes:
            if mode == "direct":
                nt = a.num_threads
                rate, lats, bad, err, _ = run_point(lambda x: model(x, num_threads=nt),
                                                    inputs, expected, n, a.seconds, a.warmup)
                direct_rate = rate
                extra = ("-", "-", "-", "-")
            elif mode == "batcher":
                with Batcher(model, max_batch=a.max_batch, max_delay_ms=a.max_delay_ms,
                             num_threads=a.num_threads, max_queue=max(1024, 2 * n)) as b:
                    rate, lats, bad, err, (s0, s1) = run_point(
                        b.predict, inputs, expected, n, a.seconds, a.warmup, b.stats)
                batches = s1["batches"] - s0["batches"]
                reqs = s1["completed"] - s0["completed"]
                mean_b = reqs / batches if batches else 0.0
                call_ms = (s1["busy_s"] - s0["busy_s"]) / batches * 1e3 if batches else 0.0
                vs = f"{rate / direct_rate:.2f}x" if direct_rate else "-"
                extra = (f"{mean_b:.1f}", f"{call_ms:.1f}", vs,
                         f"{a.max_delay_ms + 2 * call_ms:.1f}")
            else:
                raise SystemExit(f"unknown mode {mode!r} (direct, batcher)")
            p50, p99 = ((np.percentile(lats, 50) * 1e3, np.percentile(lats, 99) * 1e3)
                        if len(lats) else (float("nan"),) * 2)
            print(f"| {n} | {mode} | {rate:.0f} | {p50:.1f} | {p99:.1f} | " +
                  " | ".join(extra) + f" | {bad} | {err} |", flush=True)


if __name__ == "__main__":
    main()
