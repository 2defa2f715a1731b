"""How forward calls are timed.

`round_robin` (what the benchmark uses): every engine of a workload is warmed up,
then timed in `rounds` rounds; in each round every engine runs one block of calls,
and the order of the engines rotates by one each round (round r starts with engine
r mod n), so drift and other load on a shared machine hit every engine alike.
Each block starts with `lead_in` untimed calls (the previous engine's thread pool
may still be spinning, and this one's was idle). With `evict` (``--cold``),
``evict()`` runs before every call, untimed: the caches hold someone else's data
when the call starts. `time_calls`: one function, back-to-back calls for a budget.

`CacheEvictor`: streams through a buffer of twice the last-level cache (sysfs;
`machine.llc_bytes`), from `threads` Python threads at once (each reads its share,
far more than its core's private L2), so the weights and the input are out of
every cache the call's threads use.

Timing only: what is timed is `suite`'s business. GC is off while timing.
"""
from __future__ import annotations

import gc
import math
import threading
import time
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from .machine import llc_bytes

QUICK_BUDGET = 0.3   # seconds of timed calls per runner
NORMAL_BUDGET = 2.0
MIN_REPS = 5
DEFAULT_ROUNDS = 7
MAX_BLOCK_CALLS = 10_000


class CacheEvictor:
    """``evictor()`` reads `nbytes` (default 2x the last-level cache) of memory that
    was written beforehand (untouched pages would all be the one zero page), split
    over `threads` Python threads (numpy's reduction releases the GIL), so each
    thread's core loses its private caches and the shared one is flushed."""

    def __init__(self, nbytes: Optional[int] = None, threads: int = 1):
        self.nbytes = int(nbytes or 2 * llc_bytes())
        self.threads = max(1, int(threads))
        n = max(1, self.nbytes // 8)
        self._buf = np.arange(n, dtype=np.float64)   # every page written
        self._parts = np.array_split(self._buf, self.threads)
        self.sink = 0.0

    def _read(self, part: np.ndarray, out: list, k: int) -> None:
        out[k] = float(np.add.reduce(part))

    def __call__(self) -> None:
        if self.threads == 1:
            self.sink = float(np.add.reduce(self._buf))
            return
        out = [0.0] * self.threads
        workers = [threading.Thread(target=self._read, args=(p, out, k))
                   for k, p in enumerate(self._parts)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        self.sink = sum(out)


def _gc_off():
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    return was


def round_robin(fns: Dict[str, Callable[[], object]], rounds: int = DEFAULT_ROUNDS,
                block_calls: Optional[int] = None, block_time: float = 0.05,
                evict: Optional[Callable[[], None]] = None, lead_in: int = 1,
                warmup: Optional[float] = None, min_reps: int = MIN_REPS,
                progress: Optional[Callable[[int, int, str], None]] = None,
                clock: Callable[[], float] = time.perf_counter) -> Dict[str, np.ndarray]:
    """Seconds per call of each of `fns`, timed round-robin: {name: array (rounds, calls)}.

    Warm-up: each fn is called at least twice and for up to `warmup` seconds (default
    `block_time`), which also estimates its call time (with the eviction, if any).
    Block size: `block_calls` for every engine, else per engine the calls that fill
    `block_time` of wall time, evictions included (at least 1, and at least enough for
    `min_reps` calls over all rounds); an engine's block size is the same in every
    round. Round r times the engines in the order of `fns` rotated by
    r; each block is `lead_in` untimed calls, then the timed ones, each preceded
    (untimed) by ``evict()`` when given. ``progress(round, position, name)`` after
    each block."""
    names = list(fns)
    rounds = max(1, int(rounds))
    warmup = block_time if warmup is None else warmup
    per_call = {}   # name -> median wall time of one (evict +) call in the warm-up
    for name in names:
        fn, spent, n = fns[name], [], 0
        t_end = clock() + warmup
        while n < 2 or clock() < t_end:
            t0 = clock()
            if evict is not None:
                evict()
            fn()
            spent.append(clock() - t0)
            n += 1
        per_call[name] = float(np.median(spent))
    floor = max(1, math.ceil(min_reps / rounds))
    sizes = {name: max(1, int(block_calls)) if block_calls is not None else
             int(min(MAX_BLOCK_CALLS, max(floor, round(block_time / max(per_call[name], 1e-7)))))
             for name in names}
    times = {name: np.empty((rounds, sizes[name])) for name in names}
    was_enabled = _gc_off()
    try:
        for r, order in enumerate(rotation(names, rounds)):
            for pos, name in enumerate(order):
                fn, row = fns[name], times[name][r]
                for _ in range(lead_in):
                    fn()
                for i in range(sizes[name]):
                    if evict is not None:
                        evict()
                    t0 = clock()
                    fn()
                    row[i] = clock() - t0
                if progress is not None:
                    progress(r, pos, name)
    finally:
        if was_enabled:
            gc.enable()
    return times


def rotation(names: Sequence[str], rounds: int):
    """The engine order of each round of `round_robin` (for reports and tests)."""
    names = list(names)
    if not names:
        return [[] for _ in range(rounds)]
    return [names[r % len(names):] + names[:r % len(names)] for r in range(rounds)]


def time_calls(fn: Callable[[], object], budget: float, min_reps: int = MIN_REPS,
               max_reps: int = 100_000, warmup: Optional[float] = None) -> np.ndarray:
    """Seconds per call of `fn`: warm up (at least 2 calls, up to `warmup` seconds,
    default budget/5), then call until `budget` seconds are spent and at least
    `min_reps` calls are made. GC is off while timing."""
    warmup = budget / 5 if warmup is None else warmup
    t_end = time.perf_counter() + warmup
    n = 0
    while n < 2 or time.perf_counter() < t_end:
        fn()
        n += 1
    was_enabled = _gc_off()
    times = []
    try:
        start = time.perf_counter()
        while len(times) < max_reps and (len(times) < min_reps
                                         or time.perf_counter() - start < budget):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    finally:
        if was_enabled:
            gc.enable()
    return np.asarray(times)


def summarize(times: np.ndarray) -> dict:
    """Median, p10 and p90 in milliseconds over all timed calls, and their number; for
    round-robin times (rounds, calls) also each round's median."""
    times = np.asarray(times)
    flat = times.ravel()
    out = {"median_ms": float(np.median(flat)) * 1e3,
           "p10_ms": float(np.percentile(flat, 10)) * 1e3,
           "p90_ms": float(np.percentile(flat, 90)) * 1e3, "reps": int(flat.size)}
    if times.ndim == 2:
        out["round_medians_ms"] = [float(np.median(r)) * 1e3 for r in times]
    return out
