"""Export to ONNX (`formats.onnx.to_onnx`, `model.to_onnx`) and Keras
(`formats.keras.to_keras_weights`, `model.to_keras` = `formats.keras_writer`): the
inverses of the ONNX and Keras loaders.

Every variant each target can express runs in the real framework -- the exported
graph in onnxruntime, the written ``.keras`` file through ``keras.saving.load_model``
(Keras 3 on the torch backend) -- and must match our model at 1e-5 (float32); our own
loader reads each file back. The refusals need no framework. Each test skips on its
own when the framework it uses is missing."""
from __future__ import annotations

import os
import re
import sys

if "keras" not in sys.modules:  # Keras 3 reads the backend once, at import
    os.environ["KERAS_BACKEND"] = "torch"

import numpy as np
import pytest

import lstm_infer as li
from conftest import assert_close
from lstm_infer import quantize, tolerances
from lstm_infer.formats._export import ExportError
from lstm_infer.formats.keras import to_keras_weights
from lstm_infer.formats.onnx import to_onnx

pytestmark = pytest.mark.filterwarnings(  # Keras 3 on numpy 2, not ours
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
TOL = tolerances.TOL_FRAMEWORK["float32"]
WEIGHT_ONLY = [m for m in quantize.MODES if m not in getattr(quantize, "COMPUTE_MODES",
                                                              ("int8",))]
KERAS_HS = ("hard_sigmoid", 1.0 / 6.0, 0.5)  # Keras 3's hard_sigmoid


def _model(**kw):
    kw = {"num_layers": 2, "bidirectional": True, "peephole": True, "seed": 3, **kw}
    return li.LSTM.random(5, 8, **kw)


def _stack(sizes, options, input_size=5, **kw):
    """A stack whose layers may differ: sizes [(H, directions)], per-layer options."""
    layers, I = [], input_size
    for k, ((H, D), opt) in enumerate(zip(sizes, options)):
        layers.append(li.LSTM.random(I, H, bidirectional=D == 2, seed=10 + k).weights[0])
        I = H * (2 if D == 2 and opt.get("merge", "concat") == "concat" else 1)
    return li.LSTM(layers, layer_options=options, **kw)


def _same_weights(a, b):
    for la, lb in zip(a.weights, b.weights):
        for da, db in zip(la, lb):
            assert da.keys() == db.keys() and all(np.array_equal(da[k], db[k]) for k in da)


def _f32(cfg, **overrides):
    """cfg.to_dict() with `overrides`, its floats (activation alpha/beta, clip) rounded to
    float32: ONNX attributes are float32."""
    def rnd(v):
        if isinstance(v, float):
            return float(np.float32(v))
        if isinstance(v, (list, tuple)):
            return [rnd(e) for e in v]
        if isinstance(v, dict):
            return {k: rnd(e) for k, e in v.items()}
        return v
    return rnd({**cfg.to_dict(), **overrides})


def _x(m, T=6, B=3, seed=0, dtype=np.float32):
    shape = (B, T) if m.config.batch_first else (T, B)
    return np.random.default_rng(seed).uniform(-1, 1, shape + (m.config.input_size,)) \
        .astype(dtype)


# ---------------------------------------------------------------------------- ONNX
ONNX_VARIANTS = {
    "bi-peephole": lambda: _model(),
    "batch_first-clip-cifg-activations": lambda: li.LSTM.random(
        5, 6, num_layers=3, batch_first=True, clip=1.5, input_forget=True,
        activations=[("hard_sigmoid", 0.3, 0.4), "relu", "linear"]),
    "per-direction-activations": lambda: li.LSTM(
        li.LSTM.random(5, 6, bidirectional=True).weights, layer_options=[{"activations": [
            ("sigmoid", "tanh", "relu"), ("hard_sigmoid", "linear", "tanh")]}]),
    "reverse-then-sizes-differ": lambda: _stack(
        [(8, 1), (4, 2), (3, 1)], [{"direction": "reverse"}, {}, {"clip": 0.5}]),
    "H1": lambda: li.LSTM.random(3, 1, bidirectional=True),
    "float64": lambda: _model(dtype="float64"),
}


def _ort(proto):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _check_ort(m, proto, x, state=None, lengths=None):
    sess = _ort(proto)
    feed = {"X": x.astype(np.float32)}
    if lengths is not None:
        feed["sequence_lens"] = np.asarray(lengths, np.int32)
    out, (h_n, c_n) = m(x, state=state, lengths=lengths)
    if m.config.uniform:
        if state is not None:
            feed.update(initial_h=state[0].astype(np.float32),
                        initial_c=state[1].astype(np.float32))
        names, want = ["Y", "Y_h", "Y_c"], [out, h_n, c_n]
    else:
        names, want = ["Y"], [out]
        for k in range(m.config.num_layers):
            names += [f"Y_h{k}", f"Y_c{k}"]
            want += [h_n[k], c_n[k]]
            if state is not None:
                feed.update({f"initial_h{k}": state[0][k].astype(np.float32),
                             f"initial_c{k}": state[1][k].astype(np.float32)})
    for name, got, w in zip(names, sess.run(names, feed), want):
        # relu / linear activations are unbounded: the tolerance scales with the values
        assert_close(got, w, TOL, name, scale_with_magnitude=True)


@pytest.mark.parametrize("name", list(ONNX_VARIANTS))
def test_to_onnx_runs_in_onnxruntime_like_ours(name):
    pytest.importorskip("onnx")
    m = ONNX_VARIANTS[name]()
    proto = to_onnx(m)
    _check_ort(m, proto, _x(m, dtype=m.dtype))
    # our loader: the same model, time-major (layout 0) and float32 (the graph's dtype)
    back = li.from_onnx(proto)
    assert _f32(back.config) == _f32(m.config, batch_first=False, dtype="float32")
    if m.dtype == np.float32:
        _same_weights(back, m)


@pytest.mark.parametrize("name", ["bi-peephole", "batch_first-clip-cifg-activations",
                                  "reverse-then-sizes-differ"])
def test_to_onnx_sequence_lens_and_initial_state(name):
    pytest.importorskip("onnx")
    m = ONNX_VARIANTS[name]()
    rng = np.random.default_rng(5)
    lengths = [6, 2, 5]  # no length 0: onnxruntime gives Y_h = 0 there, we the state
    specs = m.config.layers
    if m.config.uniform:
        D, L = specs[0].num_directions, len(specs)
        state = (rng.uniform(-1, 1, (D * L, 3, specs[0].output_size)).astype(np.float32),
                 rng.uniform(-1, 1, (D * L, 3, specs[0].hidden_size)).astype(np.float32))
    else:
        state = ([rng.uniform(-1, 1, (s.num_directions, 3, s.output_size)).astype(np.float32)
                  for s in specs],
                 [rng.uniform(-1, 1, (s.num_directions, 3, s.hidden_size)).astype(np.float32)
                  for s in specs])
    proto = to_onnx(m, sequence_lens=True, initial_state=True)
    assert {i.name for i in proto.graph.input} >= {"X", "sequence_lens"}
    _check_ort(m, proto, _x(m), state=state, lengths=lengths)


def test_to_onnx_layout_1_reads_back_batch_first(tmp_path):
    pytest.importorskip("onnx")
    m = li.LSTM.random(5, 6, num_layers=2, bidirectional=True, batch_first=True)
    m.to_onnx(tmp_path / "m.onnx", layout=1)
    back = li.load(tmp_path / "m.onnx")
    assert back.config == m.config
    _same_weights(back, m)
    # layout 0 (the default): Transposes around the nodes, read back time-major
    m.to_onnx(tmp_path / "m0.onnx")
    assert not li.load(tmp_path / "m0.onnx").config.batch_first
    assert li.load(tmp_path / "m0.onnx", batch_first=True).config == m.config
    with pytest.raises(ValueError, match="layout=1 .* time-major"):
        to_onnx(li.LSTM.random(5, 6), layout=1)


@pytest.mark.parametrize("name", ["bi-peephole-batch_first", "sizes-differ-batch_first"])
def test_to_onnx_layout_1_runs_in_the_onnx_reference(name):
    """onnxruntime refuses layout 1; onnx's own reference evaluator runs it."""
    pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    m = _model(batch_first=True) if name.startswith("bi") else _stack(
        [(8, 1), (4, 2)], [{"direction": "reverse"}, {}], batch_first=True)
    ev = ReferenceEvaluator(to_onnx(m, layout=1, initial_state=True))
    rng = np.random.default_rng(2)
    x = _x(m)
    if m.config.uniform:
        s = (rng.uniform(-1, 1, (4, 3, 8)).astype(np.float32),
             rng.uniform(-1, 1, (4, 3, 8)).astype(np.float32))
        feed, names = {"initial_h": s[0], "initial_c": s[1]}, ["Y", "Y_h", "Y_c"]
    else:
        s = ([rng.uniform(-1, 1, (1, 3, 8)).astype(np.float32),
              rng.uniform(-1, 1, (2, 3, 4)).astype(np.float32)],) * 2
        feed = {f"initial_{n}{k}": s[0][k] for n in "hc" for k in range(2)}
        names = ["Y", "Y_h0", "Y_h1"]
    out, (h_n, _) = m(x, state=s)
    want = [out, h_n, _] if m.config.uniform else [out, h_n[0], h_n[1]]
    for n, got, w in zip(names, ev.run(names, {"X": x, **feed}), want):
        assert_close(got, w, TOL, n)


@pytest.mark.parametrize("mode", WEIGHT_ONLY)
def test_to_onnx_quantized_needs_dequantize(mode):
    pytest.importorskip("onnx")
    q = _model(peephole=False).quantize(mode)
    with pytest.raises(ExportError, match=f"quantization='{mode}'"):
        to_onnx(q)
    _check_ort(q, to_onnx(q, dequantize=True), _x(q))


@pytest.mark.parametrize("make,says", [
    (lambda: li.LSTM.random(4, 8, proj_size=3), "layer 0: a projection (proj_size=3)"),
    (lambda: li.LSTM.random(4, 8, cell_clip=2.0), "layer 0: cell_clip=2"),
    (lambda: _stack([(6, 1)], [{"direction": "reverse", "reverse_output": True}]),
     "layer 0: a reverse-only direction with outputs reversed in time (Keras go_backwards)"),
    (lambda: _stack([(6, 2), (4, 2)], [{}, {"merge": "ave"}]), "layer 1: merge='ave'"),
    (lambda: li.LSTM.random(4, 8).quantize("int8"), "quantization='int8'"),
])
def test_to_onnx_refuses_what_it_cannot_express(make, says, tmp_path):
    # refused before onnx is imported: no framework needed
    with pytest.raises(ExportError, match="an ONNX LSTM cannot express this model: .*"
                                          + re.escape(says)):
        make().to_onnx(tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------- Keras
@pytest.fixture
def keras():
    pytest.importorskip("torch")  # Keras 3 runs on the torch backend here
    pytest.importorskip("h5py")
    return pytest.importorskip("keras")


KERAS_VARIANTS = {
    "bi-concat": lambda: _model(peephole=False, seed=2),
    "merge-sum-go_backwards-sizes-differ": lambda: _stack(
        [(8, 2), (6, 1), (4, 1)],
        [{"merge": "sum", "activations": [("sigmoid", "relu", "relu"), (KERAS_HS, "tanh",
                                                                         "tanh")]},
         {"direction": "reverse", "reverse_output": True}, {}],
        activations=[KERAS_HS, "tanh", "tanh"]),
    "merge-mul-ave": lambda: _stack([(6, 2), (5, 2)], [{"merge": "mul"}, {"merge": "ave"}],
                                    activations=["sigmoid", "linear", "linear"]),
    "time-major": lambda: li.LSTM.random(5, 7, num_layers=2, seed=8),
}


def _keras_out(keras, path, m, x):
    """What the .keras file computes, on our model's input layout."""
    km = keras.saving.load_model(path)
    xb = x if m.config.batch_first else x.transpose(1, 0, 2)  # Keras: (B, T, I)
    # a direct call: predict() feeds float32 whatever the model's dtype
    y = km(xb)
    y = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y)
    return y if m.config.batch_first else y.transpose(1, 0, 2)


@pytest.mark.parametrize("name", list(KERAS_VARIANTS))
def test_to_keras_loads_in_keras_and_runs_like_ours(keras, tmp_path, name):
    m = KERAS_VARIANTS[name]()
    p = tmp_path / "m.keras"
    m.to_keras(p)
    x = _x(m)
    assert_close(_keras_out(keras, p, m, x), m(x)[0], TOL, "out", scale_with_magnitude=True)
    back = li.load(p)  # our loader: batch_first (Keras' layout), the same weights
    assert back.config == li.LSTM(m.weights, **dict(m.options, batch_first=True)).config
    _same_weights(back, m)


def test_to_keras_float64(keras, tmp_path):
    m = _model(peephole=False, dtype="float64", batch_first=True)
    m.to_keras(tmp_path / "m.keras")
    x = _x(m, dtype=np.float64)
    got = _keras_out(keras, tmp_path / "m.keras", m, x)
    assert got.dtype == np.float64
    assert_close(got, m(x)[0], tolerances.TOL_FRAMEWORK["float64"], "out")
    assert li.load(tmp_path / "m.keras").dtype == np.float64


def test_to_keras_weights_layout():
    m = _model(peephole=False)
    ws = to_keras_weights(m)
    assert len(ws) == 2 and all(len(layer) == 6 for layer in ws)  # 2 directions x 3
    for layer, dirs in zip(ws, m.weights):
        for d, w in enumerate(dirs):
            kernel, recurrent, bias = layer[3 * d:3 * d + 3]
            assert kernel.dtype == np.float32 and kernel.flags.writeable
            np.testing.assert_array_equal(kernel, w["w_ih"].T)
            np.testing.assert_array_equal(recurrent, w["w_hh"].T)
            np.testing.assert_array_equal(bias, w["b"])
    assert to_keras_weights(m.canonical())[1][4].shape == (8, 32)


def test_to_keras_weights_set_on_keras_layers(keras):
    m = _model(peephole=False, seed=2)
    inp = keras.Input((None, 5))
    y, layers = inp, []
    for _ in range(2):
        layers.append(keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True)))
        y = layers[-1](y)
    net = keras.Model(inp, y)
    for lyr, ws in zip(layers, to_keras_weights(m)):
        lyr.set_weights(ws)
    x = _x(m)
    got = np.transpose(np.asarray(net.predict(np.transpose(x, (1, 0, 2)), verbose=0)),
                       (1, 0, 2))
    assert_close(got, m(x)[0], TOL, "out")


@pytest.mark.parametrize("mode", WEIGHT_ONLY[:1])
def test_to_keras_quantized_needs_dequantize(keras, tmp_path, mode):
    q = _model(peephole=False, batch_first=True).quantize(mode)
    with pytest.raises(ExportError, match=f"quantization='{mode}'"):
        q.to_keras(tmp_path / "q.keras")
    q.to_keras(tmp_path / "q.keras", dequantize=True)
    x = _x(q)
    assert_close(_keras_out(keras, tmp_path / "q.keras", q, x), q(x)[0], TOL, "out")


@pytest.mark.parametrize("make,says", [
    (lambda: li.LSTM.random(4, 8, peephole=True), "layer 0: peephole connections"),
    (lambda: li.LSTM.random(4, 8, proj_size=3), "layer 0: a projection (proj_size=3)"),
    (lambda: li.LSTM.random(4, 8, clip=1.0), "layer 0: clip=1"),
    (lambda: li.LSTM.random(4, 8, cell_clip=1.0), "layer 0: cell_clip=1"),
    (lambda: li.LSTM.random(4, 8, input_forget=True), "layer 0: input_forget (CIFG)"),
    (lambda: _stack([(6, 1)], [{"direction": "reverse"}]),
     "layer 0: a reverse-only direction with outputs in time order"),
    (lambda: li.LSTM.random(4, 8, activations=["hard_sigmoid", "tanh", "tanh"]),
     "hard_sigmoid(0.2,0.5) (Keras 3's hard_sigmoid is relu6(x + 3) / 6"),
    (lambda: li.LSTM.random(4, 8, activations=["sigmoid", "tanh", "relu"]),
     "activations sigmoid,tanh,relu: a cell activation other than the output one"),
    (lambda: li.LSTM.random(4, 8).quantize("int8"), "quantization='int8'"),
])
def test_to_keras_refuses_what_it_cannot_express(make, says, tmp_path):
    with pytest.raises(ExportError, match="a Keras LSTM stack cannot express this model: .*"
                                          + re.escape(says)):
        make().to_keras(tmp_path / "m.keras")
    assert not list(tmp_path.iterdir())


def test_to_keras_needs_the_keras_suffix(tmp_path):
    with pytest.raises(ValueError, match="must end in .keras"):
        li.LSTM.random(4, 8).to_keras(tmp_path / "m.h5")
