"""What every runner's output is checked against, and how far it may be.

Ours is checked against our own float64 model on the same weights (`reference`);
the peers against ours. The test suite anchors our float64 model to its
independent numpy oracle (tests/reference.py), so the benchmark needs none of
its own. Tolerances come from the one table, `lstm_infer.tolerances`, read at
the time of the check.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from .. import tolerances


def float64_twin(model):
    """`model` (unquantized) rebuilt in float64 on the same weights and options."""
    from .. import LSTM
    return LSTM(model.weights, **dict(model.options, dtype="float64"))


def reference(model, x) -> Tuple[np.ndarray, ...]:
    """(out, h_n, c_n) of `model`'s float64 twin on `x`."""
    out, (h, c) = float64_twin(model)(x)
    return out, h, c


def tol_vs_float64(dtype: str = "float32") -> float:
    """Max abs difference accepted between ours and our float64 model (DESIGN §3)."""
    return tolerances.TOL[dtype]


def tol_vs_ours(dtype: str = "float32") -> float:
    """Max abs difference accepted between a peer and ours (DESIGN §3)."""
    return tolerances.TOL_FRAMEWORK[dtype]


# Runners that compute in less than float32 (int8, bf16: ours quantized, onnxruntime
# int8, OpenVINO bf16) are checked against our float64 model with this bound. It is
# a sanity bound that catches a wrongly wired engine (outputs off by O(0.1-1)), not
# a precision target: their measured max abs errors (1e-3 .. 2e-2 on the standard
# workloads) are reported as they are.
REDUCED_PRECISION_BOUND = 0.1


def tol_reduced() -> float:
    """Max abs difference accepted between a reduced-precision runner and float64."""
    return REDUCED_PRECISION_BOUND


def tolerance() -> float:
    """The largest difference any float32 check accepts."""
    return max(tol_vs_float64(), tol_vs_ours())


def _pairs(g, w):
    """(got, want) array pairs of one output: a stack whose layers differ gives h_n / c_n
    as one array per layer; the other side may give them stacked (D*L, B, H)."""
    if not isinstance(g, (list, tuple)) and not isinstance(w, (list, tuple)):
        return [(g, w)]
    gs = list(g) if isinstance(g, (list, tuple)) else [g]
    ws = list(w) if isinstance(w, (list, tuple)) else [w]
    if len(gs) == len(ws):
        return list(zip(gs, ws))
    try:
        return [(np.concatenate(gs), np.concatenate(ws))]
    except ValueError:   # layers of different widths against one array: no match
        return [(np.zeros(0), np.zeros(1))]


def max_abs_diff(got: Sequence, want: Sequence) -> float:
    """Largest |got - want| over the pairs whose both sides are given (NaN-safe: NaN -> inf).
    Per-layer lists (h_n, c_n of a stack whose layers differ) are compared per layer."""
    worst = 0.0
    for g0, w0 in zip(got, want):
        if g0 is None or w0 is None:
            continue
        for g, w in _pairs(g0, w0):
            g, w = np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64)
            if g.shape != w.shape:
                return float("inf")
            if g.size:
                d = np.abs(g - w).max()
                worst = max(worst, float(d) if np.isfinite(d) else float("inf"))
    return worst


def output_errors(got: Sequence, want: Sequence) -> Tuple[float, float]:
    """Max and mean |got - want| of the outputs ``out`` (the first of each triple)."""
    d = np.abs(np.asarray(got[0], np.float64) - np.asarray(want[0], np.float64))
    return float(d.max()), float(d.mean())
