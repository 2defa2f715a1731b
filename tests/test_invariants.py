"""Property tests (hypothesis): invariants that hold for every model and input.

Each example draws a model (sizes, layers, direction, projection, peephole),
an input, optional lengths and the float32 SIMD path.
"""
from __future__ import annotations

import contextlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lstm_infer as li
from lstm_infer import _kernels
from conftest import SIMD_LEVELS, TOL, TOL_SELF, assert_close
from reference import (cast_weights, lstm_reference, random_state, random_weights, split_state,
                       stack_state)

# example counts come from the hypothesis profile (conftest.py: "ci" 25, "thorough" 500)
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextlib.contextmanager
def simd(level):
    prev = _kernels.simd_level()
    _kernels.set_simd_level(level)
    try:
        yield
    finally:
        _kernels.set_simd_level(prev)


@st.composite
def problems(draw, bidirectional=None, proj=True, dtypes=("float32", "float64"), max_T=30,
             max_B=12):
    """A model and an input: dict with model, weights (float64), x (T, B, I), state, lengths."""
    H = draw(st.integers(1, 40))
    I = draw(st.integers(1, 8))
    L = draw(st.integers(1, 2))
    D2 = draw(st.booleans()) if bidirectional is None else bidirectional
    P = draw(st.integers(0, H - 1)) if (proj and H > 1 and draw(st.booleans())) else 0
    peephole = draw(st.booleans())
    dtype = draw(st.sampled_from(dtypes))
    T = draw(st.integers(1, max_T))
    B = draw(st.integers(1, max_B))
    seed = draw(st.integers(0, 2 ** 31))
    rng = np.random.default_rng(seed)
    w = random_weights(I, H, L, bidirectional=D2, proj_size=P, peephole=peephole, rng=rng)
    w = cast_weights(cast_weights(w, dtype), np.float64)  # exactly representable in dtype
    x = rng.uniform(-3, 3, (T, B, I)).astype(dtype)
    with_state = draw(st.booleans())
    state = None
    if with_state:
        h0, c0 = random_state(w, B, rng)
        state = (np.concatenate(h0).astype(dtype), np.concatenate(c0).astype(dtype))
    lengths = rng.integers(0, T + 1, B) if draw(st.booleans()) else None
    model = li.LSTM(cast_weights(w, dtype), dtype=dtype)
    return dict(model=model, weights=w, x=x, state=state, lengths=lengths, dtype=dtype,
                num_threads=draw(st.sampled_from([None, 1, 2])),
                simd=draw(st.sampled_from(SIMD_LEVELS)))


def _row_state(state, b):
    return None if state is None else (state[0][:, b:b + 1], state[1][:, b:b + 1])


@SETTINGS
@given(problems())
def test_batch_independence(p):
    """Row b run alone equals row b of the batch (state, lengths and all)."""
    m, x, state, lengths, dt = p["model"], p["x"], p["state"], p["lengths"], p["dtype"]
    with simd(p["simd"]):
        out, (h, c) = m(x, state=state, lengths=lengths, num_threads=p["num_threads"])
        for b in sorted({0, x.shape[1] - 1, x.shape[1] // 2}):
            lb = None if lengths is None else lengths[b:b + 1]
            ob, (hb, cb) = m(x[:, b:b + 1], state=_row_state(state, b), lengths=lb)
            assert_close(ob, out[:, b:b + 1], TOL_SELF[dt], f"row {b} out")
            assert_close(hb, h[:, b:b + 1], TOL_SELF[dt], f"row {b} h_n")
            assert_close(cb, c[:, b:b + 1], TOL_SELF[dt], f"row {b} c_n")


@SETTINGS
@given(problems(), st.randoms(use_true_random=False))
def test_batch_permutation_equivariance(p, random):
    """Permuting the batch (with its lengths and state) permutes the results."""
    m, x, state, lengths, dt = p["model"], p["x"], p["state"], p["lengths"], p["dtype"]
    perm = list(range(x.shape[1]))
    random.shuffle(perm)
    perm = np.array(perm)
    with simd(p["simd"]):
        out, (h, c) = m(x, state=state, lengths=lengths, num_threads=p["num_threads"])
        ps = None if state is None else (state[0][:, perm], state[1][:, perm])
        pl = None if lengths is None else lengths[perm]
        out2, (h2, c2) = m(x[:, perm], state=ps, lengths=pl, num_threads=p["num_threads"])
    assert_close(out2, out[:, perm], TOL_SELF[dt], "out")
    assert_close(h2, h[:, perm], TOL_SELF[dt], "h_n")
    assert_close(c2, c[:, perm], TOL_SELF[dt], "c_n")


@SETTINGS
@given(problems(bidirectional=False), st.lists(st.integers(0, 30), max_size=4))
def test_chunked_calls_equal_one_call(p, cuts):
    """Feeding a sequence in chunks, carrying (h, c), equals one call (unidirectional).

    With lengths, each chunk gets clip(len - offset, 0, chunk length): a row whose
    sequence has ended keeps its state through the remaining chunks."""
    m, x, state, lengths, dt = p["model"], p["x"], p["state"], p["lengths"], p["dtype"]
    T = x.shape[0]
    bounds = sorted({0, T} | {c for c in cuts if c < T})
    with simd(p["simd"]):
        out, (h, c) = m(x, state=state, lengths=lengths, num_threads=p["num_threads"])
        s, parts = state, []
        for t0, t1 in zip(bounds[:-1], bounds[1:]):
            lc = None if lengths is None else np.clip(lengths - t0, 0, t1 - t0)
            o, s = m(x[t0:t1], state=s, lengths=lc, num_threads=p["num_threads"])
            parts.append(o)
    assert_close(np.concatenate(parts), out, TOL_SELF[dt], "chunked out")
    assert_close(s[0], h, TOL_SELF[dt], "chunked h_n")
    assert_close(s[1], c, TOL_SELF[dt], "chunked c_n")


@SETTINGS
@given(problems(dtypes=("float32",)))
def test_float32_close_to_float64(p):
    """The same (float32-representable) weights and input in both precisions agree to
    the float32 tolerance."""
    m32, x, state, lengths = p["model"], p["x"], p["state"], p["lengths"]
    m64 = li.LSTM(p["weights"], dtype="float64")
    with simd(p["simd"]):
        o32, (h32, c32) = m32(x, state=state, lengths=lengths, num_threads=p["num_threads"])
    o64, (h64, c64) = m64(x.astype(np.float64), state=state, lengths=lengths)
    assert_close(o32, o64, TOL["float32"], "out")
    assert_close(h32, h64, TOL["float32"], "h_n")
    assert_close(c32, c64, TOL["float32"], "c_n")


@SETTINGS
@given(problems(proj=False), st.floats(1.0, 8.0), st.floats(1.0, 100.0),
       st.sampled_from([None, 0.5, 3.0]), st.sampled_from([None, 0.7, 4.0]))
def test_h_bounded_and_finite_under_saturation(p, w_scale, x_scale, clip, cell_clip):
    """With sigmoid/tanh/tanh and no projection, |h| <= 1 and everything stays finite,
    even when large weights and inputs saturate every gate."""
    dt = p["dtype"]
    w = cast_weights(p["weights"], np.float64)
    for layer in w:
        for d in layer:
            for n in d:
                d[n] = d[n] * w_scale
    m = li.LSTM(cast_weights(w, dt), dtype=dt, clip=clip, cell_clip=cell_clip)
    x = (p["x"].astype(np.float64) * x_scale).astype(dt)
    state = p["state"]
    with simd(p["simd"]):
        out, (h, c) = m(x, state=state, lengths=p["lengths"], num_threads=p["num_threads"])
    for name, a in (("out", out), ("h_n", h), ("c_n", c)):
        assert np.isfinite(a).all(), f"{name} not finite"
    assert np.abs(out).max(initial=0) <= 1.0
    if state is None or np.abs(state[0]).max() <= 1:
        assert np.abs(h).max(initial=0) <= 1.0
    if cell_clip is not None and state is None:
        assert np.abs(c).max(initial=0) <= cell_clip


@SETTINGS
@given(problems())
def test_deterministic(p):
    """Repeated calls give bitwise identical results (for a given thread count)."""
    m, x, state, lengths = p["model"], p["x"], p["state"], p["lengths"]
    with simd(p["simd"]):
        runs = [m(x, state=state, lengths=lengths, num_threads=p["num_threads"])
                for _ in range(3)]
    for out, (h, c) in runs[1:]:
        np.testing.assert_array_equal(out, runs[0][0])
        np.testing.assert_array_equal(h, runs[0][1][0])
        np.testing.assert_array_equal(c, runs[0][1][1])


@SETTINGS
@given(problems())
def test_final_state_feeds_back(p):
    """(h_n, c_n) is accepted as the next call's state: the second call equals the oracle
    started from it, and 'x then x' in two calls equals one call on the concatenation
    (unidirectional)."""
    m, x, state, dt = p["model"], p["x"], p["state"], p["dtype"]
    w = p["weights"]
    with simd(p["simd"]):
        _, s1 = m(x, state=state)
        out2, s2 = m(x, state=s1)
        if not m.config.bidirectional:
            whole, sw = m(np.concatenate([x, x]), state=state)
            assert_close(out2, whole[x.shape[0]:], TOL_SELF[dt], "second half")
            assert_close(s2[0], sw[0], TOL_SELF[dt], "h_n")
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    ref, rh, rc = lstm_reference(w, f64(x), state=(split_state(f64(s1[0]), w),
                                                   split_state(f64(s1[1]), w)))
    assert_close(out2, ref, TOL[dt], "out from (h_n, c_n)")
    assert_close(s2[0], stack_state(rh), TOL[dt], "h_n from (h_n, c_n)")
    assert_close(s2[1], stack_state(rc), TOL[dt], "c_n from (h_n, c_n)")
