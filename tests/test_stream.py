"""Streaming: chunked results equal one long call; state handling; errors."""
import numpy as np
import pytest

import lstm_infer as li

from conftest import TOL_SELF

ATOL = TOL_SELF["float32"]  # same engine, chunked vs one call


@pytest.mark.parametrize("kw", [dict(), dict(num_layers=2, proj_size=5), dict(peephole=True),
                                dict(batch_first=True)], ids=["plain", "2layer-proj", "peephole",
                                                              "batch_first"])
@pytest.mark.parametrize("chunks", [[1] * 7, [3, 4], [7], [2, 0, 5]], ids=str)
def test_stream_equals_one_call(kw, chunks):
    m = li.LSTM.random(6, 20, seed=3, **kw)
    rng = np.random.default_rng(0)
    B, T = 3, sum(chunks)
    x = rng.uniform(-3, 3, (B, T, 6) if m.config.batch_first else (T, B, 6)).astype(np.float32)
    full, (h, c) = m(x)
    s = m.stream(batch_size=B)
    outs, t = [], 0
    for n in chunks:
        part = x[:, t:t + n] if m.config.batch_first else x[t:t + n]
        outs.append(s.step(part))
        t += n
    got = np.concatenate(outs, axis=1 if m.config.batch_first else 0)
    np.testing.assert_allclose(got, full, atol=ATOL, rtol=0)
    np.testing.assert_allclose(s.state[0], h, atol=ATOL, rtol=0)
    np.testing.assert_allclose(s.state[1], c, atol=ATOL, rtol=0)


def test_stream_unbatched_reset_and_lengths():
    m = li.LSTM.random(4, 8, seed=1)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (10, 4)).astype(np.float32)
    s = m.stream(batch_size=None)
    a = np.concatenate([s.step(x[:5]), s.step(x[5:])])
    np.testing.assert_allclose(a, m(x)[0], atol=ATOL, rtol=0)
    s.reset()
    assert s.state is None
    np.testing.assert_allclose(s.step(x[:5]), m(x[:5])[0], atol=ATOL, rtol=0)
    # a stream whose chunk is shorter keeps its state at its last valid step
    xb = rng.uniform(-1, 1, (6, 2, 4)).astype(np.float32)
    sb = m.stream(batch_size=2)
    sb.step(xb[:3], lengths=[3, 1])
    _, (h_ref, _) = m(xb[:1, 1:2])
    np.testing.assert_allclose(sb.state[0][:, 1], h_ref[:, 0], atol=ATOL, rtol=0)


def test_stream_errors():
    m = li.LSTM.random(4, 8)
    with pytest.raises(ValueError, match="unidirectional"):
        li.LSTM.random(4, 8, bidirectional=True).stream()
    s = m.stream(batch_size=2)
    with pytest.raises(ValueError, match=r"batch size 2.*got 3"):
        s.step(np.zeros((5, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"3-D.*got shape \(5, 4\)"):
        s.step(np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        m.stream(batch_size=0)


# ----------------------------------------------------------------------------- fast path
# Contiguous chunks of the model's dtype without lengths run on a prepared CallPlan (the
# state kept in its buffers); everything else on model.forward. The two must agree bit
# for bit, whatever way a stream alternates between them.
FAST_MODELS = {
    "plain": lambda: li.LSTM.random(6, 20, seed=3),
    "stack-sizes": lambda: li.LSTM([[w] for w in _stack_dirs()]),
    "proj-peephole": lambda: li.LSTM.random(6, 40, 2, proj_size=9, peephole=True, seed=4),
    "int8": lambda: li.LSTM.random(6, 24, seed=5).quantize("int8"),
    "bf16": lambda: li.LSTM.random(6, 24, seed=5).quantize("bf16"),
    "batch_first": lambda: li.LSTM.random(6, 20, seed=3, batch_first=True),
}


def _stack_dirs():
    from reference import cast_weights, random_weights
    layers = cast_weights(random_weights(6, [24, 10], rng=2), np.float32)
    return [l[0] for l in layers]


@pytest.mark.parametrize("name", list(FAST_MODELS))
@pytest.mark.parametrize("threads", [1, 2])
def test_fast_path_is_bit_identical_to_one_call(name, threads):
    m = FAST_MODELS[name]()
    B, T = 3, 9
    rng = np.random.default_rng(7)
    shape = (B, T, 6) if m.config.batch_first else (T, B, 6)
    x = rng.uniform(-3, 3, shape).astype(np.float32)
    h0 = [rng.uniform(-1, 1, (1, B, l.output_size)).astype(np.float32) for l in m.config.layers]
    c0 = [rng.uniform(-1, 1, (1, B, l.hidden_size)).astype(np.float32) for l in m.config.layers]
    state = (np.concatenate(h0), np.concatenate(c0)) if m.config.uniform else (h0, c0)
    full, (h, c) = m(x, state=state, num_threads=threads)
    s = m.stream(batch_size=B, state=state, num_threads=threads)
    step = (lambda t: np.ascontiguousarray(x[:, t:t + 1])) if m.config.batch_first else \
        (lambda t: x[t:t + 1])
    outs = [s.step(step(t)) for t in range(T)]
    assert s._plan is not None  # the chunks took the fast path
    got = np.concatenate(outs, axis=1 if m.config.batch_first else 0)
    assert np.array_equal(got, full)
    st = s.state
    for a, b in zip((st[0], st[1]), (h, c)):
        for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
            assert np.array_equal(u, v)


def test_fast_and_general_paths_alternate():
    """lengths= and non-contiguous chunks take the general path; the state moves between
    the paths (and through reset) without a bit lost."""
    m = li.LSTM.random(5, 16, num_layers=2, seed=8)
    rng = np.random.default_rng(8)
    x = rng.uniform(-3, 3, (12, 2, 5)).astype(np.float32)
    full, (h, c) = m(x)
    s = m.stream(batch_size=2)
    parts = [s.step(x[0:1]), s.step(x[1:3], lengths=[2, 2]),          # fast, general
             s.step(np.asfortranarray(x[3:4])), s.step(x[4:5]),       # general, fast
             s.step(x[5:8]), s.step(x[8:12].astype(np.float64))]      # fast (T=3), general
    assert np.array_equal(np.concatenate(parts), full)
    assert np.array_equal(s.state[0], h) and np.array_equal(s.state[1], c)
    s.reset()
    assert s.state is None and np.array_equal(s.step(x[:1]), full[:1])


def test_fast_path_out_buffer_unbatched_and_errors():
    m = li.LSTM.random(4, 8, seed=9)
    x = np.random.default_rng(9).uniform(-1, 1, (6, 4)).astype(np.float32)
    want, _ = m(x)
    s = m.stream(batch_size=None)
    out = np.empty((1, 8), np.float32)
    for t in range(6):
        assert s.step(x[t:t + 1], out=out) is out
        assert np.array_equal(out, want[t:t + 1])
    with pytest.raises(ValueError, match=r"out must be a writeable C-contiguous float32 array "
                                         r"of shape \(1, 8\); got float32 \(1, 7\)"):
        s.step(x[:1], out=np.empty((1, 7), np.float32))
    bad = x[:1].copy()
    bad[0, 2] = np.nan
    with pytest.raises(ValueError, match="x contains NaN or infinity"):
        s.step(bad)
    # the failed calls changed nothing: the stream goes on where it was
    s2 = m.stream(batch_size=None)
    for t in range(6):
        s2.step(x[t:t + 1])
    assert np.array_equal(s.state[0], s2.state[0])


def test_stream_validates_its_initial_state_at_once():
    m = li.LSTM.random(4, 8)
    with pytest.raises(ValueError, match=r"h0"):
        m.stream(batch_size=2, state=(np.zeros((1, 3, 8), np.float32),
                                      np.zeros((1, 2, 8), np.float32)))
