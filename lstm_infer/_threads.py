"""Thread control: how many cores one forward call uses, and BLAS pinning.

All parallelism inside a forward call is ours (OpenMP workers over
directions x batch slices, see _kernels.pyx). scipy's OpenBLAS must
therefore run single-threaded while we call it: an OpenBLAS call that spins
up its own pool from inside each of our workers (or from many Python
threads at once) oversubscribes the cores and serialises on OpenBLAS's
server lock.

We pin scipy's OpenBLAS to one thread while at least one forward call is in
flight and restore the previous value when the last one returns
(reference-counted under a lock, so concurrent callers never race on the
restore). The OpenBLAS that scipy bundles is its own copy, separate from
numpy's, so numpy's matmul threading is never touched. We call OpenBLAS's
own `*_set_num_threads` through ctypes rather than depending on
threadpoolctl, because the runtime dependencies are numpy and scipy only;
if the library cannot be found (scipy built against another BLAS), pinning
is skipped and documented as such.

Concurrent callers share the cores: a call's worker count is
``num_threads // (calls in flight)`` (at least 1), so N Python threads
calling at once do not create N x num_threads OS threads on N cores.
"""
from __future__ import annotations

import ctypes
import glob
import os
import threading

_lock = threading.Lock()
_active_calls = 0
_saved_blas_threads = None
_num_threads = None  # None: all available cores


def _available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def set_num_threads(n: int) -> None:
    """Set the default number of threads one forward call may use.

    ``n=None`` or ``0`` restores the default (all available cores).
    """
    global _num_threads
    if n is None or n == 0:
        _num_threads = None
        return
    if not isinstance(n, (int,)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"num_threads must be a positive integer or None; got {n!r}")
    _num_threads = int(n)


def get_num_threads() -> int:
    """The default number of threads of one forward call."""
    return _num_threads or _available_cores()


def _find_openblas():
    """ctypes handles to (set, get) of the OpenBLAS that scipy.linalg uses."""
    try:
        import scipy
    except ImportError:  # pragma: no cover - scipy is a hard dependency
        return None
    root = os.path.dirname(os.path.dirname(scipy.__file__))
    candidates = sorted(glob.glob(os.path.join(root, "scipy.libs", "lib*openblas*.so*")))
    candidates += sorted(glob.glob(os.path.join(root, "scipy", ".dylibs", "lib*openblas*.dylib")))
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            try:
                setter = getattr(lib, prefix + "_set_num_threads")
                getter = getattr(lib, prefix + "_get_num_threads")
            except AttributeError:
                continue
            setter.argtypes = [ctypes.c_int]
            setter.restype = None
            getter.argtypes = []
            getter.restype = ctypes.c_int
            return setter, getter
    return None


_blas = _find_openblas()


def blas_num_threads():
    """Current thread count of scipy's OpenBLAS, or None if it cannot be controlled."""
    return None if _blas is None else _blas[1]()


def enter_call(num_threads, uses_blas: bool = True) -> int:
    """Register a forward call; returns the worker count it should use.

    Only calls that reach BLAS (float64 models, projections at large batch)
    pin it: re-raising OpenBLAS's thread count wakes its pool, which then
    spins on the other cores (measured ~10% of a kws call's CPU), so
    float32 models, which use only our own kernels, leave it alone."""
    global _active_calls, _saved_blas_threads
    if num_threads is not None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive integer; got {num_threads!r}")
        wanted = num_threads
    else:
        wanted = get_num_threads()
    with _lock:
        _active_calls += 1
        if uses_blas and _blas is not None and _saved_blas_threads is None:
            prev = _blas[1]()
            if prev != 1:
                _saved_blas_threads = prev
                _blas[0](1)
        share = max(1, wanted // _active_calls) if num_threads is None else wanted
    return share


def exit_call() -> None:
    global _active_calls, _saved_blas_threads
    with _lock:
        _active_calls -= 1
        if _active_calls == 0 and _saved_blas_threads is not None and _blas is not None:
            _blas[0](_saved_blas_threads)
            _saved_blas_threads = None
