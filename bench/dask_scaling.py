"""Scoring a dask array on a LocalCluster: 1 worker vs 2 workers (lstm_infer.dask).

    python bench/dask_scaling.py [--seconds 24] [--hidden 256] [--chunk 32]

Each worker is one process with one thread, and each task runs the engine with
num_threads=1, so "1 worker" uses one core and "2 workers" two: the ratio is the
scaling of worker processes (with the default num_threads, a single worker would already
use every core through the engine's own threads). The collection is sized from a
calibration call so that one worker takes about --seconds (>= 20 s by default). The load
average is printed with the result: on a shared machine other jobs take cores too.
"""
import argparse
import logging
import os
import time

import numpy as np


def _run(n_workers, model, x, num_threads, repeats=1):
    import dask.array as da
    from distributed import Client, LocalCluster

    import lstm_infer.dask as ld

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        warm = da.from_array(x[: 2 * n_workers * 4], chunks=4)
        ld.score_array(model, warm, client=client, num_threads=num_threads).compute()
        best = None
        for _ in range(repeats):
            arr = da.from_array(x, chunks=(args.chunk, -1, -1))
            r = ld.score_array(model, arr, client=client, num_threads=num_threads)
            t0 = time.perf_counter()
            out = r.compute()
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        return best, out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=24.0,
                   help="target time of the 1-worker run (default 24)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--input", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--chunk", type=int, default=32, help="sequences per block")
    args = p.parse_args()

    import lstm_infer as li

    model = li.LSTM.random(args.input, args.hidden, num_layers=2, seed=0)
    rng = np.random.default_rng(0)
    block = rng.standard_normal((args.steps, args.chunk, args.input)).astype(np.float32)
    model(block, num_threads=1)
    t0 = time.perf_counter()
    for _ in range(3):
        model(block, num_threads=1)
    per_block = (time.perf_counter() - t0) / 3
    n_blocks = max(8, int(np.ceil(args.seconds / per_block)))
    n_blocks += n_blocks % 2  # an even count: both workers get the same work
    N = n_blocks * args.chunk
    x = rng.standard_normal((N, args.steps, args.input)).astype(np.float32)
    print(f"model {model}; x ({N}, {args.steps}, {args.input}) float32 in {n_blocks} blocks of "
          f"{args.chunk}; calibration {per_block * 1e3:.0f} ms/block on 1 thread; "
          f"cores {len(os.sched_getaffinity(0))}")
    load0 = os.getloadavg()
    t1, out1 = _run(1, model, x, num_threads=1)
    t2, out2 = _run(2, model, x, num_threads=1)
    load1 = os.getloadavg()
    assert np.array_equal(out1, out2), "1-worker and 2-worker results differ"
    seq_s = lambda t: N / t  # noqa: E731
    print(f"{'workers':>8} {'seconds':>9} {'seq/s':>9}")
    print(f"{1:>8} {t1:>9.2f} {seq_s(t1):>9.1f}")
    print(f"{2:>8} {t2:>9.2f} {seq_s(t2):>9.1f}")
    print(f"ratio 2 workers / 1 worker: {t1 / t2:.2f}x (target >= 1.8x); results bit-identical")
    print(f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
