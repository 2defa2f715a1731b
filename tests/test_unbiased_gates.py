"""DESIGN §3: the float32 gate maths is unbiased on every SIMD path.

A long sequence whose forget gate sits near 1 grows a large cell state (|c| ~ 300
here); any bias in sigmoid/tanh (each step's error of the same sign) accumulates
in c instead of averaging out. Each path must stay as close to float64 as a plain
float32 numpy LSTM does. On e66b2a1 the AVX2 path was 6x further off (its
reciprocal's Newton step, r (2 - d r), rounded low).
"""
import numpy as np
import pytest

import lstm_infer as li
from reference import lstm_reference


def _numpy_float32_lstm_cell(w, x):
    """Final cell state of a plain float32 numpy LSTM (numpy's exp and tanh)."""
    f32 = np.float32
    W, R, b = (w[n].astype(f32) for n in ("w_ih", "w_hh", "b"))
    H = R.shape[1]
    h = np.zeros((x.shape[1], H), f32)
    c = np.zeros((x.shape[1], H), f32)
    sig = lambda v: f32(1) / (f32(1) + np.exp(-v))
    for t in range(x.shape[0]):
        z = x[t] @ W.T + h @ R.T + b
        i, f, g, o = sig(z[:, :H]), sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sig(z[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
    return c


def test_long_sequence_large_cell_state(simd_level):
    rng = np.random.default_rng(0)
    H, I, T, B = 64, 16, 300, 4
    k = 1 / np.sqrt(H)
    gate_bias = np.concatenate([np.full(H, 3.0), np.full(H, 10.0), np.full(H, 1.0), np.zeros(H)])
    w = {"w_ih": rng.uniform(-k, k, (4 * H, I)), "w_hh": rng.uniform(-k, k, (4 * H, H)),
         "b": gate_bias + rng.uniform(-1, 1, 4 * H)}
    w = {n: a.astype(np.float32) for n, a in w.items()}
    x = rng.uniform(-3, 3, (T, B, I)).astype(np.float32)
    _, _, c_ref = lstm_reference([[w]], x)
    c_ref = c_ref[0][0]
    assert np.abs(c_ref).max() > 100  # the regime where a bias shows
    err_numpy = np.abs(_numpy_float32_lstm_cell(w, x) - c_ref).max()
    _, (_, c) = li.LSTM([[w]])(x)
    err = np.abs(c[0] - c_ref).max()
    assert err <= 1.5 * err_numpy, (simd_level, err, err_numpy)
