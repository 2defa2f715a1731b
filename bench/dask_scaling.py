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


def _inputs(N, steps, I, chunk):
    """(N, T, I) float32 made on the workers (deterministic per block): no data through
    the client, as when a real job reads its blocks from storage."""
    import dask.array as da

    return da.random.RandomState(0).standard_normal(
        (N, steps, I), chunks=(chunk, -1, -1)).astype(np.float32)


def _run(n_workers, model, N, num_threads, repeats=1):
    from distributed import Client, LocalCluster

    import lstm_infer.dask as ld

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        warm = _inputs(8 * n_workers, 4, model.config.input_size, 4)
        ld.score_array(model, warm, client=client, num_threads=num_threads).compute()
        best = None
        for _ in range(repeats):
            arr = _inputs(N, args.steps, args.input, args.chunk)
            # the last step's output only comes back (N, F): the scoring runs on the
            # workers, the client does not gather N*T*F floats
            r = ld.score_array(model, arr, client=client, num_threads=num_threads)[:, -1]
            t0 = time.perf_counter()
            out = r.compute()
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        return best, out


def _plain(n_calls, I, H, steps, chunk):
    """n_calls engine calls on one thread in this process (the no-dask control)."""
    import lstm_infer as li

    m = li.LSTM.random(I, H, num_layers=2, seed=0)
    x = np.random.default_rng(0).standard_normal((steps, chunk, I)).astype(np.float32)
    m(x, num_threads=1)
    t0 = time.perf_counter()
    for _ in range(n_calls):
        m(x, num_threads=1)
    return time.perf_counter() - t0


def _control(n_calls):
    """The machine's own ceiling: the same calls in 1 process, then 2 processes each doing
    as many (no dask). On an idle 2-core machine the ratio is ~2; under others' load less."""
    import multiprocessing as mp

    a = (n_calls, args.input, args.hidden, args.steps, args.chunk)
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        t1 = pool.apply(_plain, a)
    with ctx.Pool(2) as pool:
        t2 = max(pool.starmap(_plain, [a, a]))
    return 2 * t1 / t2


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=24.0,
                   help="target time of the 1-worker run (default 24)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--input", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--chunk", type=int, default=32, help="sequences per block")
    p.add_argument("--no-control", action="store_true",
                   help="skip the no-dask 1-vs-2-process control")
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
    print(f"model {model}; x ({N}, {args.steps}, {args.input}) float32 in {n_blocks} blocks of "
          f"{args.chunk}; calibration {per_block * 1e3:.0f} ms/block on 1 thread; "
          f"cores {len(os.sched_getaffinity(0))}")
    load0 = os.getloadavg()
    t1, out1 = _run(1, model, N, num_threads=1)
    t2, out2 = _run(2, model, N, num_threads=1)
    control = None if args.no_control else _control(max(8, int(5 / per_block)))
    load1 = os.getloadavg()
    assert np.array_equal(out1, out2), "1-worker and 2-worker results differ"
    seq_s = lambda t: N / t  # noqa: E731
    print(f"{'workers':>8} {'seconds':>9} {'seq/s':>9}")
    print(f"{1:>8} {t1:>9.2f} {seq_s(t1):>9.1f}")
    print(f"{2:>8} {t2:>9.2f} {seq_s(t2):>9.1f}")
    print(f"ratio 2 workers / 1 worker: {t1 / t2:.2f}x (target >= 1.8x); results bit-identical")
    if control is not None:
        print(f"control, the same calls in 1 vs 2 plain processes (no dask): {control:.2f}x "
              f"(the machine's ceiling under its current load)")
    print(f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
