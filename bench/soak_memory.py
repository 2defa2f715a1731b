"""Memory soak of the serving paths: RSS must stay flat over many calls.

    nice python bench/soak_memory.py                      # 100 000 / 100 000 / 10 000
    python bench/soak_memory.py --calls 20000 --requests 20000 --cycles 2000 --max-growth-mb 3
    python bench/soak_memory.py --max-seconds 600 --json soak.json

Three phases, each after a warm-up (5 % of its iterations, at least 50; the
batcher's also fills its bounded latency window) and a ``gc.collect()``, with RSS (/proc/self/statm) sampled at 0, 25, 50, 75 and 100 %:

  forward    --calls direct forward calls on one shared float32 model and its int8 and
             bfloat16 twins: mixed T and B, lengths, initial states, every tenth call a
             chunk of a stream, one thread per call (every 50th: two); every result
             checked bit for bit against the same call made before the phase (a pool of
             64 inputs).
  batcher    --requests single sequences from 8 threads through one Batcher (lengths
             0..30, a third with an initial state, every request with a timeout), each
             result checked against the model on that sequence alone.
  save/load  --cycles native save + ``li.load`` + a forward + unload, alternating a
             float32 and an int8 model (memory-mapped files, overwritten each cycle),
             the loaded model's output checked against the original's.

A phase fails if RSS grew by more than --max-growth-mb between its first and last
sample, or if any result differed; the exit status is then 1. --max-seconds bounds
the whole run (each phase gets its share); a phase cut short by it is reported, and
the exit status is 2 (the growth check still applies to what ran). The tests run a
scaled-down version (tests/test_serving_reliability.py); bench/batcher_soak.py soaks
the Batcher's cancel / timeout / back-pressure paths.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time

import numpy as np

import lstm_infer as li
from lstm_infer import serving
from lstm_infer.serving import Batcher

I, H = 16, 48
CHECKPOINTS = (0.25, 0.5, 0.75, 1.0)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _same(got, want) -> bool:
    out, (h, c) = got
    w_out, (w_h, w_c) = want
    return np.array_equal(out, w_out) and np.array_equal(h, w_h) and np.array_equal(c, w_c)


class Phase:
    """Iterations of one phase: a warm-up, then `n` timed-out-able steps with RSS samples."""

    def __init__(self, name, n, deadline):
        self.name, self.planned, self.deadline = name, n, deadline
        self.done = self.mismatches = 0
        self.rss = []           # (iterations done, MB)
        self.seconds = 0.0
        self.cut_short = False

    def sample(self):
        gc.collect()
        self.rss.append((self.done, rss_mb()))

    def report(self) -> dict:
        first, last = self.rss[0][1], self.rss[-1][1]
        return {"phase": self.name, "planned": self.planned, "done": self.done,
                "mismatches": self.mismatches, "seconds": round(self.seconds, 2),
                "cut_short": self.cut_short, "rss_start_mb": round(first, 2),
                "rss_end_mb": round(last, 2), "rss_peak_mb": round(max(m for _, m in self.rss), 2),
                "growth_mb": round(last - first, 2),
                "rss_mb": [[d, round(m, 2)] for d, m in self.rss]}


def run_steps(phase, step, warmup):
    """warmup untimed calls of step(i), then phase.planned calls with RSS samples at the
    checkpoints; stops early at phase.deadline."""
    for i in range(warmup):
        step(-1 - i)
    t0 = time.monotonic()
    phase.sample()
    marks = [max(1, int(round(f * phase.planned))) for f in CHECKPOINTS]
    for i in range(phase.planned):
        if time.monotonic() > phase.deadline:
            phase.cut_short = True
            break
        phase.mismatches += not step(i)
        phase.done += 1
        if phase.done in marks:
            phase.sample()
    if phase.cut_short:
        phase.sample()
    phase.seconds = time.monotonic() - t0


def _warmup(n):
    return max(50, n // 20)


# ----------------------------------------------------------------------------- phases
def forward_phase(n, deadline):
    base = li.LSTM.random(I, H, num_layers=2, seed=0)
    models = [base, base.quantize("int8"), base.quantize("bfloat16")]
    rng = np.random.default_rng(1)
    pool = []
    for k in range(64):
        T, B = int(rng.integers(1, 40)), int(rng.choice([1, 2, 4, 8]))
        x = rng.uniform(-3, 3, (T, B, I)).astype(np.float32)
        lengths = rng.integers(0, T + 1, B) if k % 2 else None
        state = None
        if k % 3 == 0:
            state = (rng.uniform(-1, 1, (2, B, H)).astype(np.float32),
                     rng.uniform(-1, 1, (2, B, H)).astype(np.float32))
        m = models[k % len(models)]
        pool.append((m, x, lengths, state, m(x, state=state, lengths=lengths)))
    stream_x = rng.uniform(-3, 3, (1000, 1, I)).astype(np.float32)
    stream_want = base(stream_x)[0]
    stream = [base.stream(batch_size=1, num_threads=1), 0]   # the stream and its position
    phase = Phase("forward", n, deadline)

    def step(i):
        if i % 10 == 0:   # one streaming chunk (T=1..4); restart at the end
            s, pos = stream
            if pos >= stream_x.shape[0]:
                s.reset()
                pos = 0
            T = 1 + (i // 10) % 4
            out = s.step(stream_x[pos:pos + T])
            stream[1] = pos + out.shape[0]
            return np.array_equal(out, stream_want[pos:pos + out.shape[0]])
        m, x, lengths, state, want = pool[i % len(pool)]
        # one thread per call (the soak is about memory; a 2-thread call on a shared
        # machine mostly waits for its second core), every 50th call with 2
        nt = 2 if i % 50 == 1 else 1
        return _same(m(x, state=state, lengths=lengths, num_threads=nt), want)

    run_steps(phase, step, _warmup(n))
    return phase


def batcher_phase(n, deadline, threads=8):
    model = li.LSTM.random(I, H, seed=2)
    rng = np.random.default_rng(3)
    pool = [rng.uniform(-3, 3, (int(rng.integers(0, 31)), I)).astype(np.float32)
            for _ in range(64)]
    states = [(rng.uniform(-1, 1, (1, H)).astype(np.float32),
               rng.uniform(-1, 1, (1, H)).astype(np.float32)) for _ in range(4)]
    expected = {(i, j): model(x, state=None if j is None else states[j])
                for i, x in enumerate(pool) for j in (None, 0, 1, 2, 3)}
    phase = Phase("batcher", n, deadline)

    with Batcher(model, max_batch=32, max_delay_ms=0.5, max_queue=256, num_threads=1) as b:
        def traffic(count, offset, bad, stop_at):
            window = []

            def drain(keep):
                while len(window) > keep:
                    f, key = window.pop(0)
                    bad[0] += not _same(f.result(60), expected[key])
            for it in range(count):
                if time.monotonic() > stop_at:
                    break
                k = offset + it
                i, j = k % len(pool), (k // 3) % 4 if k % 3 == 0 else None
                window.append((b.submit(pool[i], None if j is None else states[j],
                                        timeout=60.0, block=60.0), (i, j)))
                drain(keep=16)
            drain(keep=0)

        def run(total, first):
            per = [total // threads + (t < total % threads) for t in range(threads)]
            bad = [[0] for _ in range(threads)]
            ts = [threading.Thread(target=traffic,
                                   args=(per[t], first + 7919 * t, bad[t], deadline))
                  for t in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            return sum(x[0] for x in bad)

        # the warm-up also fills the latency window of stats() (the last 10 000
        # requests, bounded by design), so its filling is not counted as growth
        run(max(_warmup(n), min(n, getattr(serving, "_STATS_WINDOW", 10_000))), 0)
        t0 = time.monotonic()
        phase.sample()
        done_before = b.stats()["completed"]
        pieces = [int(round(f * n)) for f in (0,) + CHECKPOINTS]
        for a, z in zip(pieces, pieces[1:]):
            phase.mismatches += run(z - a, a)
            phase.done = b.stats()["completed"] - done_before
            phase.sample()
            if time.monotonic() > deadline:
                phase.cut_short = phase.done < n
                break
        phase.seconds = time.monotonic() - t0
    return phase


def save_load_phase(n, deadline, folder):
    models = [li.LSTM.random(I, H, num_layers=2, seed=4),
              li.LSTM.random(I, H, seed=5).quantize("int8")]
    x = np.random.default_rng(6).uniform(-3, 3, (20, 2, I)).astype(np.float32)
    want = [m(x) for m in models]
    paths = [os.path.join(folder, f"soak_{k}.safetensors") for k in range(len(models))]
    phase = Phase("save/load", n, deadline)

    def step(i):
        k = i % len(models)
        models[k].save(paths[k])
        loaded = li.load(paths[k])
        ok = _same(loaded(x, num_threads=1), want[k])
        del loaded
        return ok

    run_steps(phase, step, _warmup(n) // 5)
    return phase


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=100_000, help="forward calls (default 100000)")
    p.add_argument("--requests", type=int, default=100_000,
                   help="batched requests (default 100000)")
    p.add_argument("--cycles", type=int, default=10_000,
                   help="save/load cycles (default 10000)")
    p.add_argument("--max-growth-mb", type=float, default=5.0,
                   help="most RSS growth accepted per phase (default 5 MB)")
    p.add_argument("--max-seconds", type=float, default=3600.0,
                   help="bound on the whole run; each phase gets its share (default 3600)")
    p.add_argument("--dir", help="folder for the save/load files (default: a temporary one)")
    p.add_argument("--json", help="also write the report as JSON")
    a = p.parse_args(argv)
    if not os.path.exists("/proc/self/statm"):
        print("needs /proc/self/statm (Linux)", file=sys.stderr)
        return 2

    start = time.monotonic()
    share = a.max_seconds / 3
    print(f"lstm_infer {li.__version__} from {os.path.dirname(li.__file__)}; "
          f"RSS at start {rss_mb():.1f} MB", flush=True)
    phases = []
    with tempfile.TemporaryDirectory(dir=a.dir) as folder:
        for k, (fn, args) in enumerate(((forward_phase, (a.calls,)),
                                        (batcher_phase, (a.requests,)),
                                        (save_load_phase, (a.cycles,)))):
            deadline = start + share * (k + 1)
            extra = (folder,) if fn is save_load_phase else ()
            phase = fn(*args, deadline, *extra)
            r = phase.report()
            phases.append(r)
            print(f"{r['phase']:<10} {r['done']:>7} of {r['planned']:<7} in {r['seconds']:7.1f} s  "
                  f"RSS {r['rss_start_mb']:.1f} -> {r['rss_end_mb']:.1f} MB (growth "
                  f"{r['growth_mb']:+.2f} MB, peak {r['rss_peak_mb']:.1f})  samples "
                  + " ".join(f"{m:.1f}" for _, m in r["rss_mb"])
                  + f"  mismatches {r['mismatches']}"
                  + ("  CUT SHORT by --max-seconds" if r["cut_short"] else ""), flush=True)
    failed = [f"{r['phase']}: RSS grew {r['growth_mb']:.2f} MB > {a.max_growth_mb} MB"
              for r in phases if r["growth_mb"] > a.max_growth_mb]
    failed += [f"{r['phase']}: {r['mismatches']} results differ" for r in phases
               if r["mismatches"]]
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"version": li.__version__, "max_growth_mb": a.max_growth_mb,
                       "seconds": round(time.monotonic() - start, 1), "phases": phases,
                       "failed": failed}, f, indent=2)
    if failed:
        print("FAILED: " + "; ".join(failed))
        return 1
    if any(r["cut_short"] for r in phases):
        print("incomplete: stopped by --max-seconds (the growth bound held for what ran)")
        return 2
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
