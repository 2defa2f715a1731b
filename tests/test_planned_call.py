"""forward()'s fast path for small calls (LSTM._planned_call, issue 9 item 5): a
CallPlan cached per thread and call shape, taken when a float32 call has no lengths and
no initial state and x is a behaved float32 array. It must give the general path's bits,
fresh result arrays on every call, and the general path's answer (not garbage) for any x
it declines: byte-swapped, unaligned, non-contiguous, other dtypes."""
import threading

import numpy as np
import pytest

import lstm_infer as li
from lstm_infer import _kernels, model as model_mod

MODELS = {
    "1 layer": lambda: li.LSTM.random(12, 40, seed=1),
    "2 layers bi": lambda: li.LSTM.random(12, 24, num_layers=2, bidirectional=True, seed=2),
    "merge sum": lambda: li.LSTM(li.LSTM.random(12, 24, bidirectional=True, seed=3).weights,
                                 layer_options=[{"merge": "sum"}]),
    "projection": lambda: li.LSTM.random(12, 48, proj_size=20, seed=4),
    "peephole clip": lambda: li.LSTM.random(12, 32, peephole=True, clip=1.0, seed=5),
    "int8": lambda: li.LSTM.random(12, 40, seed=6).quantize("int8"),
    "bf16": lambda: li.LSTM.random(12, 40, seed=7).quantize("bf16"),
    "batch_first": lambda: li.LSTM.random(12, 40, batch_first=True, seed=8),
}


def _general(m, x):
    """The general path: lengths= (all full) keeps a call off the fast path."""
    B, T = x.shape[:2] if m.config.batch_first else x.shape[1::-1]
    return m(x, lengths=np.full(B, T))


def _same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    for u, v in zip(a[1], b[1]):
        if isinstance(u, list):
            for p, q in zip(u, v):
                np.testing.assert_array_equal(p, q)
        else:
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(1, 1), (5, 1), (1, 3), (7, 4)])
def test_fast_path_gives_the_general_paths_bits(simd_level, name, shape):
    m = MODELS[name]()
    T, B = shape
    rng = np.random.default_rng(T * 10 + B)
    x = rng.uniform(-2, 2, (B, T, 12) if m.config.batch_first else (T, B, 12))
    x = x.astype(np.float32)
    fast = m(x, num_threads=1)
    if not m.config.batch_first or T == 1 or B == 1:
        assert m._plans.__dict__, "the call did not take the fast path"
    _same(fast, _general(m, x))
    _same(m(x, num_threads=2), fast)  # another plan (2 threads), the same bits
    if B == 1 and not m.config.batch_first:  # unbatched (T, I)
        u = m(x[:, 0])
        np.testing.assert_array_equal(u[0], fast[0][:, 0])


def test_results_are_fresh_arrays():
    m = MODELS["2 layers bi"]()
    x1 = np.ones((3, 2, 12), np.float32)
    x2 = -x1
    out1, (h1, c1) = m(x1)
    keep = out1.copy(), h1.copy(), c1.copy()
    out2, (h2, c2) = m(x2)
    for a, b in zip((out1, h1, c1), keep):
        np.testing.assert_array_equal(a, b)  # the second call wrote elsewhere
    assert not np.shares_memory(out1, out2) and not np.shares_memory(h1, h2)
    out1[...] = 7  # the caller owns its results: the next call is not affected
    _same(m(x1), (keep[0], (keep[1], keep[2])))


@pytest.mark.parametrize("kind", ["byteswapped", "unaligned", "strided", "float64", "int"])
def test_declined_inputs_get_the_general_answer(kind):
    m = MODELS["1 layer"]()
    x = np.random.default_rng(0).uniform(-1, 1, (4, 2, 12)).astype(np.float32)
    want = m(x)
    if kind == "byteswapped":
        y = x.astype(">f4")
    elif kind == "unaligned":
        buf = np.zeros(x.size * 4 + 1, np.uint8)
        y = np.frombuffer(buf[1:].data, np.float32).reshape(x.shape)
        y[...] = x
        assert not y.flags.aligned
    elif kind == "strided":
        y = np.repeat(x, 2, axis=2)[:, :, ::2]
    elif kind == "float64":
        y = x.astype(np.float64)
    else:
        x = np.arange(4 * 2 * 12).reshape(4, 2, 12) % 3 - 1
        want, y = m(x.astype(np.float32)), x
    _same(m(y), want)
    s = m.stream(batch_size=2)  # the Stream's step uses the same plan checks
    _same((s.step(y), s.state), (want[0], want[1]))


def test_errors_leave_no_call_in_flight():
    m = MODELS["1 layer"]()
    x = np.zeros((2, 1, 12), np.float32)
    x[1, 0, 3] = np.nan
    before = _kernels.calls_in_flight()
    with pytest.raises(ValueError, match="NaN"):
        m(x)
    with pytest.raises(ValueError, match="12 features"):
        m(np.zeros((2, 1, 5), np.float32))
    assert _kernels.calls_in_flight() == before == 0


def test_plan_cache_is_bounded_and_large_calls_bypass_it():
    m = MODELS["1 layer"]()
    for T in range(1, 3 * model_mod.PLANNED_CALL_SHAPES):
        m(np.zeros((T, 1, 12), np.float32))
        assert len(m._plans.__dict__) <= model_mod.PLANNED_CALL_SHAPES
    m._plans.__dict__.clear()
    T = model_mod.PLANNED_CALL_BYTES // m._row_bytes + 1
    m(np.zeros((T, 1, 12), np.float32))
    assert not m._plans.__dict__


def test_threads_share_a_model_bit_identically():
    m = MODELS["2 layers bi"]()
    rng = np.random.default_rng(3)
    xs = [rng.uniform(-1, 1, (1 + i % 4, 1 + i % 3, 12)).astype(np.float32) for i in range(24)]
    want = [m(x, num_threads=1) for x in xs]
    errors = []

    def work(k):
        try:
            for r in range(30):
                i = (k * 7 + r) % len(xs)
                _same(m(xs[i], num_threads=1 + (r % 2)), want[i])
        except Exception as e:  # reported in the main thread
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[0]
    assert _kernels.calls_in_flight() == 0
