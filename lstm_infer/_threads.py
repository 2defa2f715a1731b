"""Thread control: how many cores one forward call uses, and BLAS pinning.

All parallelism inside a forward call is ours (OpenMP workers over
directions x batch slices, see _kernels.pyx). scipy's OpenBLAS must
therefore run single-threaded while we call it: an OpenBLAS call that spins
up its own pool from inside each of our workers (or from many Python
threads at once) oversubscribes the cores and serialises on OpenBLAS's
server lock.

We pin scipy's OpenBLAS to one thread while at least one forward call that
uses BLAS is in flight and restore the previous value when the last of them
returns (reference-counted under a lock, so concurrent callers never race on
the restore). The OpenBLAS that scipy bundles is its own copy, separate from
numpy's, so numpy's matmul threading is never touched. We call OpenBLAS's
own `*_set_num_threads` through ctypes rather than depending on
threadpoolctl, because the runtime dependencies are numpy and scipy only;
if the library cannot be found (scipy built against another BLAS), pinning
is skipped and documented as such.

Concurrent callers share the cores: a call's worker count is
``num_threads // (calls in flight)`` (at least 1), so N Python threads
calling at once do not create N x num_threads OS threads on N cores. The calls
in flight are counted in C (_kernels.call_begin / call_end, atomic under the
GIL), so a small call (model._planned_call) takes no lock at all.
"""
from __future__ import annotations

import ctypes
import glob
import operator
import os
import threading

from . import _kernels

_lock = threading.Lock()
_blas_calls = 0  # calls in flight that use BLAS (they keep it pinned)
_saved_blas_threads = None
_num_threads = None  # None: all available cores


# CPUs this process may run on (its affinity mask), read in C and re-read at most every
# 50 ms: the syscall was a tenth of a small call's overhead, and an affinity change is
# still seen within 50 ms
_available_cores = _kernels.available_cores


# Threads per call beyond this many per available core never help (every task of a
# call is compute- or bandwidth-bound) and only grow OpenMP's pool, which libgomp
# keeps for the life of the process: a request for more is capped here. Without the
# cap, num_threads=2**31-1 made libgomp exit the interpreter (it could not allocate
# the team), and 1000 left 1,002 OS threads behind.
THREADS_PER_CORE_CAP = 4


def max_threads() -> int:
    """The most threads one call uses: THREADS_PER_CORE_CAP x the available cores."""
    return THREADS_PER_CORE_CAP * _available_cores()


def check_num_threads(n, name: str = "num_threads") -> int:
    """A thread count as a positive int (numpy integers accepted), capped at max_threads()."""
    if isinstance(n, bool):
        raise TypeError(f"{name} must be a positive integer; got {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"{name} must be a positive integer; got {n!r} "
                        f"({type(n).__name__})") from None
    if n < 1:
        raise ValueError(f"{name} must be a positive integer; got {n}")
    # the cap is at least THREADS_PER_CORE_CAP: only larger requests ask for the cores
    return n if n <= THREADS_PER_CORE_CAP else min(n, max_threads())


def set_num_threads(n) -> None:
    """Set the default number of threads one forward call may use.

    ``n=None`` or ``0`` restores the default (all available cores). Values above
    ``max_threads()`` (4 per available core) are capped there.
    """
    global _num_threads
    if n is None or (not isinstance(n, bool) and isinstance(n, int) and n == 0):
        _num_threads = None
    else:
        _num_threads = check_num_threads(n)
    _kernels.set_default_threads(_num_threads or 0)


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


def enter_call(num_threads, uses_blas: bool = True) -> int:
    """Register a forward call; returns the worker count it should use.

    Only calls that reach BLAS (float64 models, projections at large batch)
    pin it, until the last of them returns: re-raising OpenBLAS's thread count
    wakes its pool, which then spins on the other cores (measured ~10% of a kws
    call's CPU), so float32 models, which use only our own kernels, leave it alone.
    Calls are counted in C (_kernels.call_begin), so a small call pays no lock."""
    global _blas_calls, _saved_blas_threads
    share = _kernels.call_begin(0 if num_threads is None else check_num_threads(num_threads))
    if uses_blas:
        with _lock:
            _blas_calls += 1
            if _blas is not None and _saved_blas_threads is None:
                prev = _blas[1]()
                if prev != 1:
                    _saved_blas_threads = prev
                    _blas[0](1)
    return share


def exit_call(uses_blas: bool = True) -> None:
    """Unregister a call entered with the same `uses_blas`."""
    global _blas_calls, _saved_blas_threads
    _kernels.call_end()
    if uses_blas:
        with _lock:
            _blas_calls -= 1
            if _blas_calls == 0 and _saved_blas_threads is not None and _blas is not None:
                _blas[0](_saved_blas_threads)
                _saved_blas_threads = None
