"""Per-layer options (what the ONNX and Keras loaders need): direction, reverse_output,
merge, per-direction activations and per-layer clip / cell_clip / input_forget.

The kernels (float32 on every SIMD path, and float64) are checked against the numpy
oracle (tests/reference.py), with lengths (0, 1, partial, full) and initial states; the
oracle's own reading of each option is pinned by identities at the end (reverse =
forward on the reversed sequence, merge = combining the concatenated halves, ...), so
an option ignored by both sides cannot pass."""
import pickle

import numpy as np
import pytest

import lstm_infer as li
from conftest import TOL, assert_close
from reference import cast_weights, lstm_reference, random_state, random_weights

T = 9


def _layer(I, H, seed, D=1, proj=0, peephole=False):
    """One canonical layer, float64 values exactly representable in float32."""
    w = random_weights(I, H, bidirectional=D == 2, proj_size=proj, peephole=peephole, rng=seed)
    return cast_weights(cast_weights(w, np.float32), np.float64)[0]


def _lengths(B):
    """Full, partial, 0 and 1 first, then random."""
    base = [T, 4, 0, 1]
    extra = np.random.default_rng(B).integers(0, T + 1, max(0, B - 4))
    return np.array(base[:B] + list(extra))


def _per_layer(a, layers):
    """The model's h_n / c_n (stacked (D*L, B, F) for uniform stacks) as per-layer lists."""
    if isinstance(a, list):
        return a
    D = len(layers[0])
    return [a[k * D:(k + 1) * D] for k in range(len(layers))]


def _check(dtype, layers, layer_options, *, B=4, state=True, unbounded=False, **model_kw):
    """The model on `dtype` kernels vs the oracle: out, h_n and c_n of every layer."""
    rng = np.random.default_rng(len(layers) * 100 + B)
    m = li.LSTM(cast_weights(layers, dtype), dtype=dtype, layer_options=layer_options,
                **model_kw)
    I = layers[0][0]["w_ih"].shape[1]
    x = rng.uniform(-3, 3, (T, B, I)).astype(dtype)
    lens = _lengths(B)
    st = None
    if state:
        h0, c0 = random_state(layers, B, rng)
        st = ([a.astype(dtype) for a in h0], [a.astype(dtype) for a in c0])
    out, (h, c) = m(x, state=st, lengths=lens)
    ref_state = None if st is None else ([a.astype(np.float64) for a in st[0]],
                                         [a.astype(np.float64) for a in st[1]])
    ref, rh, rc = lstm_reference(layers, x.astype(np.float64), state=ref_state, lengths=lens,
                                 layer_options=layer_options, **model_kw)
    tol = TOL[dtype]
    assert out.dtype == np.dtype(dtype)
    assert_close(out, ref, tol, "out", scale_with_magnitude=unbounded)
    for k, (hk, ck) in enumerate(zip(_per_layer(h, layers), _per_layer(c, layers))):
        assert_close(hk, rh[k], tol, f"h_n[{k}]", scale_with_magnitude=unbounded)
        assert_close(ck, rc[k], tol, f"c_n[{k}]", scale_with_magnitude=unbounded)
    return m, out


# ----------------------------------------------------------------------------- kernels vs oracle
SHAPES = {"H6": dict(H=6), "H20-proj7-peephole": dict(H=20, proj=7, peephole=True)}


@pytest.mark.parametrize("B", [4, 11], ids=["B4", "B11"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("opts", [{"direction": "forward"}, {"direction": "reverse"},
                                  {"direction": "reverse", "reverse_output": True}],
                         ids=["forward", "reverse", "reverse-output"])
def test_direction_and_reverse_output(dtype, opts, shape, B):
    s = SHAPES[shape]
    m, _ = _check(dtype, [_layer(5, s["H"], 1, proj=s.get("proj", 0),
                                 peephole=s.get("peephole", False))], [opts], B=B)
    spec = m.config.layers[0]
    assert spec.direction == opts["direction"]
    assert spec.reverse_output == opts.get("reverse_output", False)


@pytest.mark.parametrize("B", [4, 11], ids=["B4", "B11"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("merge", ["concat", "sum", "mul", "ave"])
def test_merge_modes(dtype, merge, shape, B):
    s = SHAPES[shape]
    H_out = s.get("proj") or s["H"]
    m, out = _check(dtype, [_layer(5, s["H"], 2, D=2, proj=s.get("proj", 0),
                                   peephole=s.get("peephole", False))], [{"merge": merge}], B=B)
    F = 2 * H_out if merge == "concat" else H_out
    assert out.shape == (T, B, F) and m.config.output_size == F
    assert m.config.layers[0].merge == merge


@pytest.mark.parametrize("opts", [
    [{"merge": "sum"}, {}],
    [{"merge": "ave"}, {"direction": "reverse", "reverse_output": True}],
    [{"direction": "reverse", "reverse_output": True}, {"merge": "mul"}],  # Keras go_backwards
], ids=["sum-forward", "ave-go_backwards", "go_backwards-mul"])
def test_options_in_a_stack(dtype, opts):
    """A merged layer feeds the next one with its merged (not concatenated) output."""
    D0 = 1 if opts[0].get("direction") == "reverse" else 2
    D1 = 2 if "merge" in opts[1] else 1
    l0 = _layer(5, 6, 3, D=D0)
    in1 = 12 if D0 == 2 and opts[0].get("merge", "concat") == "concat" else 6
    _check(dtype, [l0, _layer(in1, 4, 4, D=D1)], opts)


def test_per_direction_and_per_layer_activations_and_clips(dtype):
    a_f = ("hard_sigmoid", "relu", "tanh")
    a_r = (("hard_sigmoid", 1 / 6, 0.5), "tanh", "linear")
    layers = [_layer(5, 6, 5, D=2, peephole=True), _layer(12, 4, 6)]
    opts = [{"activations": [a_f, a_r], "clip": 0.7},
            {"cell_clip": 0.3, "input_forget": True}]
    m, _ = _check(dtype, layers, opts, unbounded=True)
    spec = m.config.layers[0]
    assert spec.activations[1][0].alpha == pytest.approx(1 / 6) and spec.clip == 0.7
    assert m.config.layers[1].cell_clip == 0.3 and m.config.layers[1].input_forget


def test_layer_options_override_model_defaults(dtype):
    """Model-level clip / cell_clip / input_forget / activations are every layer's
    default; a layer's own value replaces them for that layer only."""
    layers = [_layer(5, 16, 7, D=2), _layer(32, 16, 8, D=2), _layer(32, 16, 9, D=2)]
    opts = [{}, {"clip": 3.0, "activations": ("sigmoid", "tanh", "tanh")},
            {"cell_clip": None, "input_forget": False}]
    m, _ = _check(dtype, layers, opts, clip=0.5, cell_clip=0.4, input_forget=True,
                  activations=("hard_sigmoid", "tanh", "relu"), unbounded=True)
    l0, l1, l2 = m.config.layers
    assert (l0.clip, l0.cell_clip, l0.input_forget) == (0.5, 0.4, True)
    assert (l1.clip, l1.cell_clip, l1.activations[0][2].name) == (3.0, 0.4, "tanh")
    assert (l2.clip, l2.cell_clip, l2.input_forget) == (0.5, None, False)


def test_without_state_or_lengths(dtype):
    layers = [_layer(5, 6, 10, D=2), _layer(6, 5, 11)]
    _check(dtype, layers, [{"merge": "ave"}, {"direction": "reverse", "reverse_output": True}],
           state=False)


# ----------------------------------------------------------------------------- the oracle itself
def _ref(layers, x, opts, lengths=None, **kw):
    return lstm_reference(layers, x, lengths=lengths, layer_options=opts, **kw)


@pytest.fixture
def x64():
    return np.random.default_rng(0).uniform(-3, 3, (T, 4, 5))


def test_reference_reverse_is_forward_on_reversed_spans(x64):
    w = _layer(5, 6, 1)
    lens = np.array([9, 4, 0, 1])
    out, (h,), (c,) = _ref([w], x64, [{"direction": "reverse"}], lens)
    rout, (rh,), _ = _ref([w], x64, [{"direction": "reverse", "reverse_output": True}], lens)
    for b, n in enumerate(lens):
        if n == 0:
            assert not out[:, b].any() and not h[0, b].any()
            continue
        fwd, (fh,), _ = _ref([w], x64[:n, b:b + 1][::-1].copy(), [{}])
        np.testing.assert_allclose(out[:n, b], fwd[::-1, 0], rtol=0, atol=1e-14)
        np.testing.assert_allclose(rout[:n, b], fwd[:, 0], rtol=0, atol=1e-14)  # processing order
        np.testing.assert_allclose(h[0, b], fh[0, 0], rtol=0, atol=1e-14)
        assert not out[n:, b].any() and not rout[n:, b].any()
    np.testing.assert_array_equal(rh, h)  # the state does not depend on the output order
    assert not np.allclose(out, rout)


@pytest.mark.parametrize("merge,fn", [("sum", np.add), ("mul", np.multiply),
                                      ("ave", lambda a, b: (a + b) / 2)])
def test_reference_merge_combines_the_halves(x64, merge, fn):
    w = _layer(5, 6, 4, D=2)
    cat, (h,), _ = _ref([w], x64, [{}])
    out, (hm,), _ = _ref([w], x64, [{"merge": merge}])
    np.testing.assert_array_equal(out, fn(cat[..., :6], cat[..., 6:]))
    np.testing.assert_array_equal(hm, h)
    w1 = _layer(6, 3, 5)
    np.testing.assert_array_equal(_ref([w, w1], x64, [{"merge": merge}, {}])[0],
                                  _ref([w1], out, [{}])[0])


def test_reference_per_direction_activations_and_layer_clips(x64):
    w = _layer(5, 6, 7, D=2)
    a_f = ("hard_sigmoid", "relu", "tanh")
    a_r = (("hard_sigmoid", 1 / 6, 0.5), "tanh", "linear")
    out, _, _ = _ref([w], x64, [{"activations": [a_f, a_r], "clip": 0.7}])
    fwd, _, _ = _ref([[w[0]]], x64, [{}], activations=a_f, clip=0.7)
    rev, _, _ = _ref([[w[1]]], x64, [{"direction": "reverse", "activations": a_r}], clip=0.7)
    np.testing.assert_array_equal(out, np.concatenate([fwd, rev], axis=-1))
    for other in ({"activations": [a_r, a_f], "clip": 0.7}, {"activations": [a_f, a_r]}):
        assert not np.allclose(_ref([w], x64, [other])[0], out)  # each setting matters


# ----------------------------------------------------------------------------- options as data
def test_options_round_trip_and_pickle(x64):
    w = _layer(5, 6, 9, D=2)
    m = li.LSTM([w, _layer(6, 3, 10)], batch_first=True,
                layer_options=[{"merge": "ave", "activations": ["sigmoid", "tanh", "relu"]},
                               {"direction": "reverse", "reverse_output": True, "clip": 2.0}])
    again = li.LSTM(m.weights, **m.options)
    xb = x64.transpose(1, 0, 2)
    np.testing.assert_array_equal(again(xb)[0], m(xb)[0])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(m))(xb)[0], m(xb)[0])
    assert again.config == m.config


@pytest.mark.parametrize("opts,exc,msg", [
    ({"direction": "bidirectional"}, ValueError, "direction must be one of"),
    ({"merge": "sum"}, ValueError, "needs a bidirectional layer"),
    ({"merge": "max"}, ValueError, "merge must be one of"),
    ({"reverse_output": True}, ValueError, "needs direction 'reverse'"),
    ({"bogus": 1}, ValueError, "unknown option"),
    ({"clip": -1}, ValueError, "clip must be a positive"),
    ({"activations": ("sigmoid", "tanh")}, ValueError, "3 functions"),
    ({"activations": "tanh"}, TypeError, "sequence of 3 activations"),
])
def test_bad_layer_options(opts, exc, msg):
    with pytest.raises(exc, match=msg):
        li.LSTM([_layer(5, 6, 1)], layer_options=[opts])
    with pytest.raises(TypeError, match="must be a dict"):
        li.LSTM([_layer(5, 6, 1)], layer_options=["forward"])
