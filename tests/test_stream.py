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
