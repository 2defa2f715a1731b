"""How a forward call is timed: warm-up, then back-to-back calls for a time budget.

Timing only: what is timed, and in which order, is `suite`'s business.
"""
from __future__ import annotations

import gc
import time
from typing import Callable, Optional

import numpy as np

QUICK_BUDGET = 0.3   # seconds of timed calls per runner
NORMAL_BUDGET = 2.0
MIN_REPS = 5


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
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
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
    """Median, p10 and p90 in milliseconds, and the number of timed calls."""
    return {"median_ms": float(np.median(times)) * 1e3,
            "p10_ms": float(np.percentile(times, 10)) * 1e3,
            "p90_ms": float(np.percentile(times, 90)) * 1e3, "reps": int(times.size)}
