"""This machine's limits, measured (``lstm-infer roofline``): what a workload's
GFLOP/s and bandwidth can be held against.

- float32 sgemm peak: scipy's BLAS ``sgemm`` on an N x N x N product (default
  N = 2048, Fortran-ordered operands so nothing is copied), at 1 thread and at all
  usable CPUs (scipy's OpenBLAS pinned through `lstm_infer._threads`; if that BLAS
  cannot be pinned, its own default is used and the result says so). Best call of
  several; GFLOP/s = 2 N^3 / time.
- read bandwidth, 1 thread: BLAS ``dasum`` (one vectorised read stream) over a
  buffer of half the L2, half the last-level cache, and far more than it (8x, at
  least 256 MiB), each written first (untouched pages are all one zero page); best
  pass, GB/s = bytes / time. (``numpy.sum`` is slower than the caches on this
  kind of CPU: its float32 pairwise loop measures the adder, not the memory.)
- AMX: when /proc/cpuinfo lists amx_bf16 / amx_int8, they are noted as present but
  not measurable here (numpy and scipy have no AMX kernels); no number is invented.

These are single runs on a possibly shared machine: the result records the other
load at the start, and a busy machine gives low figures.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from typing import Dict, Optional, Tuple

import numpy as np

from .machine import (_busy_cores, _cpu_model, cache_sizes, cpu_flags, llc_bytes,
                      usable_cpus)

SGEMM_N = 2048
QUICK_SGEMM_N = 1024
DRAM_MIN_BYTES = 256 << 20
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
AMX_FLAGS = ("amx_bf16", "amx_int8")


@contextmanager
def blas_threads(n: int):
    """scipy's OpenBLAS at `n` threads inside the block (restored after); yields
    whether it could be pinned."""
    from .. import _threads
    blas = getattr(_threads, "_blas", None)
    if blas is None:
        yield False
        return
    setter, getter = blas
    prev = getter()
    setter(int(n))
    try:
        yield True
    finally:
        setter(prev)


def _best(fn, min_time: float, min_calls: int = 3) -> float:
    """Shortest of repeated ``fn()`` calls (at least `min_calls`, for `min_time` s)."""
    fn()  # warm: pages, caches, thread pool
    best, n, start = math.inf, 0, time.perf_counter()
    while n < min_calls or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return best


def sgemm_gflops(n: int = SGEMM_N, threads: int = 1, min_time: float = 0.5) -> Tuple[float, bool]:
    """(GFLOP/s of scipy's sgemm on n x n x n at `threads` BLAS threads, pinned?)."""
    from scipy.linalg import blas
    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32))
    b = np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32))
    with blas_threads(threads) as pinned:
        t = _best(lambda: blas.sgemm(1.0, a, b), min_time)
    return 2.0 * n ** 3 / t / 1e9, pinned


def read_gbs(nbytes: int, min_time: float = 0.2) -> float:
    """GB/s of one thread reading a buffer of `nbytes` (BLAS dasum, best pass; each
    timed sample reads at least 16 MiB, so small buffers are read many times)."""
    from scipy.linalg import blas
    buf = np.arange(max(1, nbytes // 8), dtype=np.float64)   # every page written
    passes = max(1, (16 << 20) // buf.nbytes)

    def read():
        for _ in range(passes):
            blas.dasum(buf)
    with blas_threads(1):
        t = _best(read, min_time)
    return buf.nbytes * passes / t / 1e9


def _blas_name() -> str:
    try:
        import scipy
        cfg = scipy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"scipy {scipy.__version__} {cfg.get('name')} {cfg.get('version')}"
    except Exception:
        return "scipy BLAS"


def measure(quick: bool = False, sgemm_n: Optional[int] = None,
            sizes: Optional[Dict[str, int]] = None, min_time: Optional[float] = None) -> dict:
    """The limits as a dict (`render` prints it; ``lstm-infer bench --roofline`` reads
    its JSON). `sizes` overrides the bandwidth buffers ({"L2": bytes, ...}); `quick`
    uses N = 1024 and shorter timings."""
    n = sgemm_n or (QUICK_SGEMM_N if quick else SGEMM_N)
    min_time = (0.1 if quick else 0.5) if min_time is None else min_time
    flags = cpu_flags()
    caches = cache_sizes()
    llc = llc_bytes()
    busy = _busy_cores()
    if sizes is None:
        sizes = {}
        if 2 in caches:
            sizes["L2"] = caches[2] // 2
        if 3 in caches:
            sizes["L3"] = caches[3] // 2
        sizes["DRAM"] = max((4 if quick else 8) * llc, DRAM_MIN_BYTES // (2 if quick else 1))
    cpus = usable_cpus()
    single, pinned = sgemm_gflops(n, 1, min_time)
    multi = single if cpus == 1 else sgemm_gflops(n, cpus, min_time)[0]
    bandwidth = {level: {"bytes": int(b), "gb_s": read_gbs(b, min_time / 2)}
                 for level, b in sizes.items()}
    amx = {f: "present; not measurable here (numpy / scipy have no AMX kernels)"
           for f in AMX_FLAGS if f in flags}
    return {
        "cpu": _cpu_model(), "usable_cpus": cpus,
        "isa": [f for f in ISA_FLAGS if f in flags],
        "caches": {f"L{k}": v for k, v in sorted(caches.items())},
        "busy_cores_at_start": busy,
        "sgemm": {"n": n, "blas": _blas_name(), "threads_pinned": pinned,
                  "single_thread_gflops": single, "all_threads": cpus,
                  "all_threads_gflops": multi},
        "bandwidth": {"method": "scipy BLAS dasum, 1 thread, best pass", **bandwidth},
        "amx": amx,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def peak_for(roofline: dict, threads: int) -> Tuple[float, int]:
    """(sgemm GFLOP/s, threads it was measured at) to hold a `threads`-thread call
    against: the 1-thread peak, the all-CPU peak at or above that many threads, and
    in between the 1-thread peak x threads, capped by the all-CPU one. (An all-CPU
    figure below the 1-thread one, as other load can make it, counts as the 1-thread
    one: more threads never lower a peak.)"""
    s = roofline["sgemm"]
    one, all_n = s["single_thread_gflops"], s["all_threads"]
    all_g = max(s["all_threads_gflops"], one)
    if threads <= 1:
        return one, 1
    if threads >= all_n:
        return all_g, all_n
    return min(one * threads, all_g), threads


def load(path: str) -> dict:
    """A roofline JSON written by ``lstm-infer roofline --json`` (ValueError if not one)."""
    with open(path) as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
    try:
        s = doc["sgemm"]
        float(s["single_thread_gflops"]), float(s["all_threads_gflops"]), int(s["all_threads"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: not a roofline file (written by `lstm-infer roofline "
                         f"--json`): no sgemm figures") from None
    return doc


def _size(b: int) -> str:
    return f"{b / 2**20:.0f} MiB" if b >= 2**20 else f"{b / 2**10:.0f} KiB"


def render(d: dict) -> str:
    """The limits as text."""
    s = d["sgemm"]
    caches = ", ".join(f"{k} {_size(v)}" for k, v in d["caches"].items()) or "unknown"
    lines = [f"machine: {d['cpu']}, {d['usable_cpus']} usable CPUs; "
             f"ISA: {' '.join(d['isa']) or 'unknown'}",
             f"caches (cpu0): {caches}"]
    if d.get("busy_cores_at_start") is not None:
        lines.append(f"other load at start: {d['busy_cores_at_start']:.2f} cores busy")
    pin = "" if s["threads_pinned"] else " (BLAS threads not pinnable: its default used)"
    lines.append(f"sgemm float32, {s['n']}x{s['n']}x{s['n']} ({s['blas']}){pin}: "
                 f"{s['single_thread_gflops']:.1f} GFLOP/s at 1 thread, "
                 f"{s['all_threads_gflops']:.1f} GFLOP/s at {s['all_threads']} threads")
    bw = d["bandwidth"]
    parts = [f"{k} ({_size(v['bytes'])}) {v['gb_s']:.1f} GB/s"
             for k, v in bw.items() if k != "method"]
    lines.append(f"read bandwidth ({bw['method']}): " + "; ".join(parts))
    if d["amx"]:
        lines += [f"{f}: {note}" for f, note in d["amx"].items()]
    else:
        lines.append("AMX: not on this CPU (no amx_bf16 / amx_int8 flag)")
    return "\n".join(lines)
