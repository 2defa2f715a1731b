"""Throughput of one shared model called from several Python threads at once."""
from __future__ import annotations

import threading
import time
from typing import List

import numpy as np

from .timing import NORMAL_BUDGET
from .workloads import make_input, make_model, workload


def concurrency_scaling(name: str, max_threads: int, budget: float = NORMAL_BUDGET,
                        seed: int = 0) -> List[dict]:
    """Throughput of one shared model called from 1..max_threads Python threads at once
    (each call with num_threads=1): calls/s, speedup over one thread, and a check that
    every thread got exactly the serial result. This is the "truly parallel across
    Python threads" claim, measured: the GIL is released for the whole forward."""
    wl = workload(name)
    model = make_model(wl, seed)
    x = make_input(wl, seed + 1)
    serial = model(x, num_threads=1)[0]
    rows, base = [], None
    for n in range(1, max_threads + 1):
        counts, mismatches = [0] * n, [0] * n
        stop = threading.Event()
        barrier = threading.Barrier(n + 1)

        def worker(i):
            barrier.wait()
            while not stop.is_set():
                out = model(x, num_threads=1)[0]
                counts[i] += 1
                if not np.array_equal(out, serial):
                    mismatches[i] += 1

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        time.sleep(budget)
        stop.set()
        for t in threads:
            t.join()
        rate = sum(counts) / (time.perf_counter() - t0)
        base = base or rate
        rows.append({"workload": name, "python_threads": n, "calls_per_s": rate,
                     "sequences_per_s": rate * wl.B, "speedup": rate / base,
                     "mismatches": int(sum(mismatches)), "calls": int(sum(counts))})
    return rows
