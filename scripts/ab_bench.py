"""Before/after timing of two builds of lstm_infer, round-robin.

    python scripts/ab_bench.py BEFORE_TREE AFTER_TREE [--rounds 3] [--threads 1,2]
                                [--workloads all] [--json out.json]

Each tree is a checkout with its extension built in place (`python setup.py
build_ext --inplace`). Every round times every workload once per tree and thread count,
with the same timing code for both (this script's, not each tree's own benchmark
harness, which may have changed between them), in a fresh process with PYTHONPATH set to
the tree, the tree order rotated each round, so drift and other load on a shared machine
hit both builds alike. Prints per workload the median over rounds of each build's median and
of its 10th percentile (less sensitive to other load on a shared machine), and the
after/before ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


# (T, B, I, H, layers, bidirectional, proj): the workloads of `lstm-infer bench`
WORKLOADS = {"kws": (100, 1, 40, 128, 1, False, 0), "stream256": (100, 1, 256, 256, 1, False, 0),
             "lat1024": (50, 1, 1024, 1024, 1, False, 0), "text": (64, 8, 128, 256, 1, False, 0),
             "tput512": (100, 64, 512, 512, 2, False, 0), "asr-bi": (200, 16, 80, 320, 2, True, 0),
             "proj": (100, 4, 256, 1024, 1, False, 256)}

# The same timing code for both builds (each tree's own bench harness may differ): a
# fresh process per (tree, threads), warm-up, then `calls` timed calls per workload.
_TIMER = r"""
import json, sys, time
import numpy as np
import lstm_infer as li
wl, threads, calls = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
res = {}
for name, (T, B, I, H, L, bi, P) in wl.items():
    m = li.LSTM.random(I, H, num_layers=L, bidirectional=bi, proj_size=P)
    x = np.random.default_rng(0).uniform(-1, 1, (T, B, I)).astype(np.float32)
    for _ in range(2):
        m(x, num_threads=threads)
    n = calls
    ts = []
    deadline = time.perf_counter() + 3.0
    while len(ts) < n and (len(ts) < 3 or time.perf_counter() < deadline):
        t = time.perf_counter(); m(x, num_threads=threads); ts.append(time.perf_counter() - t)
    ts.sort()
    res[name] = (1e3 * ts[len(ts) // 2], 1e3 * ts[len(ts) // 10])
print(json.dumps(res))
"""


def run_once(tree: str, threads: int, workloads: str, calls: int = 30) -> dict:
    names = list(WORKLOADS) if workloads == "all" else workloads.split(",")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", _TIMER,
                              json.dumps({n: WORKLOADS[n] for n in names}), str(threads),
                              str(calls)], cwd=tmp, env=env, check=True, capture_output=True,
                             text=True).stdout
    return {k: tuple(v) for k, v in json.loads(out).items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--workloads", default="all")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    trees = {"before": a.before, "after": a.after}
    times = {}  # (build, threads, workload) -> [median per round]
    for rnd in range(a.rounds):
        order = list(trees) if rnd % 2 == 0 else list(trees)[::-1]
        for threads in (int(t) for t in a.threads.split(",")):
            for name in order:
                for wl, ms in run_once(trees[name], threads, a.workloads).items():
                    times.setdefault((name, threads, wl), []).append(ms)
        print(f"round {rnd + 1}/{a.rounds} done", file=sys.stderr)
    rows = []
    for (name, threads, wl), v in sorted(times.items()):
        if name != "before":
            continue
        w = times.get(("after", threads, wl), [(float("nan"), float("nan"))])
        b_med, b_p10 = (statistics.median(x[i] for x in v) for i in (0, 1))
        a_med, a_p10 = (statistics.median(x[i] for x in w) for i in (0, 1))
        rows.append({"workload": wl, "threads": threads, "before_ms": b_med, "after_ms": a_med,
                     "ratio": a_med / b_med, "before_p10_ms": b_p10, "after_p10_ms": a_p10,
                     "ratio_p10": a_p10 / b_p10})
    print("| workload | threads | before ms | after ms | after/before | before p10 | after p10 "
          "| after/before (p10) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['threads']} | {r['before_ms']:.3f} | {r['after_ms']:.3f} "
              f"| {r['ratio']:.3f} | {r['before_p10_ms']:.3f} | {r['after_p10_ms']:.3f} "
              f"| {r['ratio_p10']:.3f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "raw": {"|".join(map(str, k)): v for k, v in times.items()}},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
