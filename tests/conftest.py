"""Shared fixtures of the test suite (the DESIGN §3 tolerances: lstm_infer.tolerances)."""
from __future__ import annotations

import os
import sys
import zlib

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)  # `import reference` from every test module
try:  # an installed lstm_infer wins; otherwise the in-place build of this checkout
    import lstm_infer  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(_HERE))

from lstm_infer import _kernels  # noqa: E402

# ----------------------------------------------------------------------------- tolerances
# DESIGN §3's table lives in the package (one source for the suite and the benchmark);
# test modules take it from here: `from conftest import TOL`.
from lstm_infer.tolerances import TOL, TOL_FRAMEWORK, TOL_SELF  # noqa: E402,F401


def dtype_name(dtype) -> str:
    return np.dtype(dtype).name


def max_abs_err(got, want) -> float:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"shape: got {got.shape}, expected {want.shape}"
    return float(np.max(np.abs(got - want))) if got.size else 0.0


def assert_close(got, want, tol, what="", scale_with_magnitude=False):
    """max |got - want| <= tol, with a message that gives the error and where it is.

    ``scale_with_magnitude``: tolerance is ``tol * max(1, max|want|)`` — for
    unbounded activations (relu/linear) whose values are not O(1), where an
    absolute float32 bound makes no sense.
    """
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    if not got.size:
        return
    if scale_with_magnitude:
        tol = tol * max(1.0, float(np.max(np.abs(want))))
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    err = float(np.max(diff))
    if not err <= tol:  # NaN fails too
        idx = np.unravel_index(int(np.nanargmax(diff)) if np.isfinite(diff).any() else 0,
                               diff.shape)
        raise AssertionError(f"{what}: max abs error {err:.3g} > {tol:.3g} at {idx}: "
                             f"got {got[idx]!r}, expected {want[idx]!r}")


# ----------------------------------------------------------------------------- hypothesis
# Small example counts keep the suite fast; HYPOTHESIS_PROFILE=thorough for a deep run.
try:
    from hypothesis import settings as _hsettings

    _hsettings.register_profile("ci", max_examples=25, deadline=None)
    _hsettings.register_profile("thorough", max_examples=500, deadline=None)
    _hsettings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass


# ----------------------------------------------------------------------------- SIMD paths
_LEVELS = ("generic", "avx2", "avx512")
SIMD_LEVELS = _LEVELS[: _LEVELS.index(_kernels.cpu_simd_level()) + 1]


def _use_level(level):
    got = _kernels.set_simd_level(level)
    assert got == level, f"asked for SIMD level {level}, got {got}"


@pytest.fixture(params=SIMD_LEVELS)
def simd_level(request):
    """Run a float32 test on every SIMD path this CPU has (restored afterwards)."""
    prev = _kernels.simd_level()
    _use_level(request.param)
    try:
        yield request.param
    finally:
        _kernels.set_simd_level(prev)


# dtype x SIMD path: the SIMD level only matters for float32 kernels.
DTYPE_PARAMS = [pytest.param(("float32", lvl), id=f"f32-{lvl}") for lvl in SIMD_LEVELS] + [
    pytest.param(("float64", None), id="f64")]


@pytest.fixture(params=DTYPE_PARAMS)
def dtype(request):
    """Model dtype; float32 runs once per SIMD path (restored afterwards)."""
    name, level = request.param
    prev = _kernels.simd_level()
    if level is not None:
        _use_level(level)
    try:
        yield name
    finally:
        _kernels.set_simd_level(prev)


@pytest.fixture
def rng(request):
    """A generator seeded from the test id, so every test is reproducible on its own."""
    seed = zlib.crc32(request.node.nodeid.encode())  # stable across runs (hash() is salted)
    return np.random.default_rng(seed)


@pytest.fixture(autouse=True)
def _restore_threads():
    """Tests may call li.set_num_threads; put the default back."""
    import lstm_infer as li
    yield
    li.set_num_threads(None)
