"""Per-layer options (what the ONNX and Keras loaders need), checked by composing
single-layer models: reverse = forward on the reversed sequence, merge = combining
concatenated halves, per-direction activations = two unidirectional models."""
import pickle

import numpy as np
import pytest

import lstm_infer as li
from conftest import TOL_SELF

ATOL = TOL_SELF["float64"]


def _w(I, H, seed, D=1, proj=0):
    return li.LSTM.random(I, H, bidirectional=D == 2, proj_size=proj, dtype="float64",
                          seed=seed).weights[0]


@pytest.fixture
def x():
    return np.random.default_rng(0).uniform(-3, 3, (9, 4, 5))


def test_reverse_layer_is_forward_on_reversed_sequence(x):
    w = _w(5, 6, 1)
    rev = li.LSTM([w], layer_options=[{"direction": "reverse"}])
    fwd = li.LSTM([w])
    out, (h, c) = rev(x)
    ref, (hr, cr) = fwd(x[::-1])
    np.testing.assert_allclose(out, ref[::-1], atol=ATOL, rtol=0)
    np.testing.assert_allclose(h, hr, atol=ATOL, rtol=0)
    assert rev.config.layers[0].direction == "reverse"


def test_reverse_layer_with_lengths_runs_over_each_span(x):
    w = _w(5, 6, 2)
    rev = li.LSTM([w], layer_options=[{"direction": "reverse"}])
    lens = np.array([9, 4, 0, 1])
    out, (h, _) = rev(x, lengths=lens)
    for b, n in enumerate(lens):
        ref, (hb, _) = li.LSTM([w])(x[:n, b:b + 1][::-1]) if n else (np.zeros((0, 1, 6)), (None, None))
        np.testing.assert_allclose(out[:n, b], ref[::-1, 0], atol=ATOL, rtol=0)
        assert not out[n:, b].any()
        if n:
            np.testing.assert_allclose(h[0, b], hb[0, 0], atol=ATOL, rtol=0)


def test_reverse_output_keeps_processing_order(x):
    w = _w(5, 6, 3)
    m = li.LSTM([w], layer_options=[{"direction": "reverse", "reverse_output": True}])
    out, _ = m(x)
    ref, _ = li.LSTM([w])(x[::-1])
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("merge,fn", [("sum", np.add), ("mul", np.multiply),
                                      ("ave", lambda a, b: (a + b) / 2)])
def test_merge_modes(x, merge, fn):
    w = _w(5, 6, 4, D=2)
    cat, (h, c) = li.LSTM([w])(x)
    m = li.LSTM([w], layer_options=[{"merge": merge}])
    out, (hm, cm) = m(x)
    assert out.shape == (9, 4, 6) and m.config.output_size == 6
    np.testing.assert_allclose(out, fn(cat[..., :6], cat[..., 6:]), atol=ATOL, rtol=0)
    np.testing.assert_allclose(hm, h, atol=ATOL, rtol=0)


def test_merged_layer_feeds_next_layer(x):
    w0, w1 = _w(5, 6, 5, D=2), _w(6, 3, 6)
    m = li.LSTM([w0, w1], layer_options=[{"merge": "sum"}, {}])
    cat, _ = li.LSTM([w0])(x)
    ref, _ = li.LSTM([w1])(cat[..., :6] + cat[..., 6:])
    np.testing.assert_allclose(m(x)[0], ref, atol=ATOL, rtol=0)


def test_per_direction_and_per_layer_activations_and_clip(x):
    w = _w(5, 6, 7, D=2)
    a_f = ("hard_sigmoid", "relu", "tanh")
    a_r = (("hard_sigmoid", 1 / 6, 0.5), "tanh", "linear")
    m = li.LSTM([w, _w(12, 4, 8)], layer_options=[
        {"activations": [a_f, a_r], "clip": 0.7},
        {"cell_clip": 0.3, "input_forget": True}])
    fwd = li.LSTM([[w[0]]], activations=a_f, clip=0.7)
    rev = li.LSTM([[w[1]]], activations=a_r, clip=0.7,
                  layer_options=[{"direction": "reverse"}])
    l0 = np.concatenate([fwd(x)[0], rev(x)[0]], axis=-1)
    l1 = li.LSTM([_w(12, 4, 8)], cell_clip=0.3, input_forget=True)(l0)[0]
    np.testing.assert_allclose(m(x)[0], l1, atol=ATOL, rtol=0)
    spec = m.config.layers[0]
    assert spec.activations[1][0].alpha == pytest.approx(1 / 6) and spec.clip == 0.7


def test_options_round_trip_and_pickle(x):
    w = _w(5, 6, 9, D=2)
    m = li.LSTM([w, _w(6, 3, 10)], batch_first=True,
                layer_options=[{"merge": "ave", "activations": ["sigmoid", "tanh", "relu"]},
                               {"direction": "reverse", "reverse_output": True, "clip": 2.0}])
    again = li.LSTM(m.weights, **m.options)
    xb = x.transpose(1, 0, 2)
    np.testing.assert_array_equal(again(xb)[0], m(xb)[0])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(m))(xb)[0], m(xb)[0])
    assert again.config == m.config


@pytest.mark.parametrize("opts,msg", [
    ({"direction": "bidirectional"}, "direction must be one of"),
    ({"merge": "sum"}, "needs a bidirectional layer"),
    ({"reverse_output": True}, "needs direction 'reverse'"),
    ({"bogus": 1}, "unknown option"),
    ({"clip": -1}, "clip must be a positive"),
    ({"activations": ("sigmoid", "tanh")}, "3 functions"),
])
def test_bad_layer_options(opts, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        li.LSTM([_w(5, 6, 1)], layer_options=[opts])
