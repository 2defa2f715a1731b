"""What a small call costs beyond its arithmetic (issue 9 item 5: <= 5 us at T=1, B=1).

    python bench/call_overhead.py                 # kws (I=40, H=128) and stream256 sizes
    python bench/call_overhead.py --sizes 40x128 --number 20000 --repeat 9

For each size, 1 thread, back to back (timeit: min over --repeat blocks of --number
calls, per call):

  model(x)         the public call at T=1, B=1 (takes model._planned_call)
  plan call        the cached CallPlan the call runs (`plan.try_run(x)`): the kernels
                   plus ~1 us of C checks and binding (callgrind: ~1,100 instructions)
  Stream.step      a stream of the same model on the same frame (its own CallPlan)
  general path     model(x, lengths=[1]): the fully validated path, for scale

`model(x) - plan call` is the Python overhead of the fast path; the plan call minus
its ~1 us of C checks is the arithmetic. Measurement only: nothing is asserted.
"""
from __future__ import annotations

import argparse
import timeit

import numpy as np

import lstm_infer as li


def measure(I: int, H: int, number: int, repeat: int) -> dict:
    m = li.LSTM.random(I, H, seed=0)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 1, I)).astype(np.float32)
    m(x, num_threads=1)
    plan = next(iter(m._plans.__dict__.values()))
    s = m.stream(batch_size=1, num_threads=1)
    lens = np.ones(1, np.intc)
    fns = {"model(x)": lambda: m(x, num_threads=1),
           "plan call": lambda: plan.try_run(x),
           "Stream.step": lambda: s.step(x),
           "general path": lambda: m(x, lengths=lens, num_threads=1)}
    res = {}
    for _ in range(2):  # two passes, interleaved: drift hits every entry alike
        for name, fn in fns.items():
            t = min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6
            res[name] = min(res.get(name, t), t)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="40x128,256x256", help="IxH,IxH,...")
    ap.add_argument("--number", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args(argv)
    for spec in a.sizes.split(","):
        I, H = (int(v) for v in spec.split("x"))
        r = measure(I, H, a.number, a.repeat)
        extra = r["model(x)"] - r["plan call"]
        print(f"I={I} H={H}: " + ", ".join(f"{k} {v:.2f} us" for k, v in r.items())
              + f"; model(x) - plan call = {extra:.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
