"""Before/after timing of two builds of lstm_infer, round-robin.

    python scripts/ab_bench.py BEFORE_TREE AFTER_TREE [--rounds 3] [--threads 1,2]
                                [--workloads all] [--json out.json]

Each tree is a checkout with its extension built in place (`python setup.py
build_ext --inplace`). Every round runs `python -m lstm_infer bench --no-peers` once
per tree and thread count, in a fresh process with PYTHONPATH set to the tree, the
tree order rotated each round, so drift and other load on a shared machine hit both
builds alike. Prints per workload the median over rounds of each build's median and
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


def run_once(tree: str, threads: int, workloads: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
        subprocess.run([sys.executable, "-m", "lstm_infer", "bench", "--no-peers",
                        "--workloads", workloads, "--threads", str(threads), "--json", out],
                       cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            res = json.load(f)["results"]
    return {r["workload"]: (r["median_ms"], r["p10_ms"]) for r in res
            if r["runner"] == "ours" and r.get("status") == "ok"}


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
